"""The Python baseline of the end-to-end benchmark: a Kafka scorer written the way a data team
would write one with confluent-kafka and scikit-learn.

It fits one scikit-learn model per city on synthetic data of the bench's shapes (16 features;
LinearRegression, RandomForestRegressor of 100 trees of depth 8, or MLPRegressor 16-64-64-1, the
linear and MLP models behind a StandardScaler), then consumes the input topic as a consumer
group, scores each record and produces scored JSON to the output topic, until SIGTERM.

--mode record calls predict once per record; --mode batch calls it once per key per poll of up
to 500 records. Both poll in batches of up to 500, so only the predict calls differ.

Driven by benches/e2e_kafka.rs, which measures throughput from the output topic's watermarks
and CPU from /proc.
"""

import argparse
import json
import signal
import sys

import numpy as np
from confluent_kafka import Consumer, Producer
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

FEATURES = [
    "distance_km", "items", "hour", "is_weekend", "rain_mm", "courier_rating",
    "traffic_index", "prep_time_min", "basket_eur", "restaurant_rating", "courier_load",
    "orders_last_hour", "temp_c", "wind_kmh", "customer_tenure_days", "promo_pct",
]
CITIES = ["paris", "london", "berlin", "madrid", "rome", "vienna", "lisbon", "amsterdam"]


def fit(kind, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4000, len(FEATURES)))
    y = x @ rng.normal(size=len(FEATURES)) + np.sin(3 * x[:, 0]) * x[:, 1] + 30
    if kind == "linear":
        model = make_pipeline(StandardScaler(), LinearRegression())
    elif kind == "forest":
        model = RandomForestRegressor(n_estimators=100, max_depth=8, random_state=seed)
    elif kind == "mlp":
        model = make_pipeline(
            StandardScaler(),
            MLPRegressor(hidden_layer_sizes=(64, 64), max_iter=30, random_state=seed),
        )
    else:
        raise SystemExit(f"unknown model kind {kind}")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--model", choices=["linear", "forest", "mlp"], required=True)
    ap.add_argument("--mode", choices=["record", "batch"], required=True)
    ap.add_argument("--poll", type=int, default=500)
    args = ap.parse_args()

    models = {city: fit(args.model, n) for n, city in enumerate(CITIES)}
    print(f"fitted {len(models)} {args.model} models", file=sys.stderr, flush=True)

    # keyscore's librdkafka settings (src/stream/kafka/options.rs).
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
        "fetch.wait.max.ms": 10,
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        "max.poll.interval.ms": 60000,
    })
    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "enable.idempotence": True,
        "partitioner": "murmur2_random",
        "linger.ms": 5,
    })
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    consumer.subscribe([args.input])

    def send(record, prediction):
        city = record["city"]
        out = json.dumps({
            "id": record["id"], "key": city, "prediction": {"value": float(prediction)},
            "model_key": city, "model_version": 1, "fallback": False,
        })
        while True:
            try:
                producer.produce(args.output, out.encode(), key=city)
                return
            except BufferError:
                producer.poll(0.005)

    while running[0]:
        messages = consumer.consume(num_messages=args.poll, timeout=0.1)
        if not messages:
            producer.poll(0)
            continue
        records = []
        for m in messages:
            if m.error():
                continue
            records.append(json.loads(m.value()))
        if args.mode == "record":
            for r in records:
                x = np.array([[r[f] for f in FEATURES]])
                send(r, models[r["city"]].predict(x)[0])
        else:
            by_city = {}
            for r in records:
                by_city.setdefault(r["city"], []).append(r)
            for city, rs in by_city.items():
                x = np.array([[r[f] for f in FEATURES] for r in rs])
                for r, y in zip(rs, models[city].predict(x)):
                    send(r, y)
        producer.poll(0)

    producer.flush(10)
    consumer.close()


if __name__ == "__main__":
    main()
