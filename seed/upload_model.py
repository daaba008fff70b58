"""Train a small model for one key, export it, upload it to keyscore's CQL store, and optionally
activate it.

    pip install -e ./python[cassandra]
    python seed/upload_model.py --hosts 127.0.0.1 --port 9042 --keyspace keyscore --key paris --activate

The keyspace and tables must exist (`keyscore init`). For a cluster with TLS, a local datacenter
or a login, set the KEYSCORE_CQL_* variables keyscore reads (KEYSCORE_CQL_TLS_CA_FILE, ...). The
model predicts a delivery time in minutes from `distance_km` and `items`, on data generated here.
"""

import argparse

import numpy as np
from sklearn.ensemble import RandomForestRegressor

import keyscore_sklearn


def main():
    parser = argparse.ArgumentParser(
        description="Train a small model for one key, export it, upload it and optionally activate it."
    )
    parser.add_argument("--hosts", default="127.0.0.1", help="comma-separated contact points")
    parser.add_argument("--port", type=int, default=9042)
    parser.add_argument("--keyspace", default="keyscore")
    parser.add_argument("--key", default="paris")
    parser.add_argument("--author", default=None)
    parser.add_argument("--activate", action="store_true", help="make the new version active")
    args = parser.parse_args()

    rng = np.random.default_rng(42)
    x = np.column_stack([rng.uniform(0.5, 15.0, 2000), rng.integers(1, 8, 2000)])
    y = 12.0 + 2.5 * x[:, 0] + 1.5 * x[:, 1] + rng.normal(0.0, 2.0, 2000)
    model = RandomForestRegressor(n_estimators=20, max_depth=8, random_state=0).fit(x, y)
    spec = keyscore_sklearn.export(
        model,
        ["distance_km", "items"],
        author=args.author,
        metrics={"r2_train": model.score(x, y)},
        reference=x,  # the training data's statistics, which live records are compared with
    )

    # TLS, the local datacenter and the login come from the KEYSCORE_CQL_* variables keyscore
    # reads too (see keyscore_sklearn.connection).
    session = keyscore_sklearn.connect(args.hosts, port=args.port)
    try:
        version = keyscore_sklearn.upload(session, args.key, spec, keyspace=args.keyspace)
        print(f"Uploaded {args.key} version {version}.")
        if args.activate:
            previous = keyscore_sklearn.activate(session, args.key, version, keyspace=args.keyspace)
            print(f"Activated {args.key} version {version} (previously {previous}).")
        else:
            print(f"Activate it with: keyscore activate --key {args.key} --version {version}")
    finally:
        session.cluster.shutdown()


if __name__ == "__main__":
    main()
