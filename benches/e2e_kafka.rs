//! End-to-end benchmark of `keyscore serve` on a real broker (Tansu on loopback).
//!
//! Guards against regressions of the whole Kafka path (consume, decode, score, encode, produce,
//! acknowledge, store offsets) that the micro-benchmarks in `benches/{models,registry,codec}.rs`
//! cannot see. In one run it:
//!
//! 1. starts Tansu (in-memory storage unless `--engine` says otherwise) and pre-fills an input
//!    topic with synthetic delivery records (~460-byte JSON, 16 numeric features, keyed by city);
//! 2. writes 16-feature model specs for eight cities (linear; random forest of 100 trees of
//!    depth 8; MLP 16-64-64-1) and uploads them with `keyscore upload` into fresh embedded
//!    stores;
//! 3. measures throughput and CPU per record of a passthrough (an rdkafka consumer-to-producer
//!    loop with keyscore's librdkafka settings, no parsing or scoring), of `keyscore serve` with
//!    each model kind, and optionally of a Python scorer (`benches/e2e/py_scorer.py`); each
//!    consumes the whole topic with a fresh group and stops once the output topic holds every
//!    record (read from its high watermarks);
//! 4. offers a paced load (half of the linear throughput, by default) to `keyscore serve` and
//!    reports latency percentiles corrected for coordinated omission, with a model activation in
//!    the middle to show what a hot swap costs.
//!
//! Not part of `cargo test` (`test = false` in `Cargo.toml`): it takes minutes. Run it with
//! `benches/e2e/run.sh` or `cargo bench --bench e2e_kafka -- --help`.

// Shared with benches/e2e_latency.rs; each target uses part of it.
#[allow(dead_code)]
#[path = "e2e/common.rs"]
mod common;
#[path = "e2e/residence.rs"]
mod residence;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, ensure, Context as _};
use clap::Parser;
use common::{
    client, clock_ticks, cpu_seconds, create_topics, free_port, kafka_config, passthrough_child,
    percentiles, run_keyscore, send_retrying, spawn_passthrough, terminate, unique, Delivered,
    Engine, Percentiles, Tansu,
};
use keyscore::{
    stream::kafka::{headers, options},
    synth::{Generator, Xoshiro256StarStar as Rng, CITIES, FEATURES},
};
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::{Headers, Message},
    producer::{BaseProducer, BaseRecord, Producer},
    Offset, TopicPartitionList,
};
use residence::{residence, scrape_residence, Residence};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "End-to-end throughput, latency and hot-swap benchmark of keyscore serve")]
struct Args {
    /// Records pre-filled into the input topic.
    #[arg(long, default_value_t = 2_000_000)]
    records: u64,
    /// Partitions of every topic the bench creates.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Throughput runs, in order: passthrough, linear, forest, mlp.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "passthrough,linear,forest,mlp"
    )]
    runs: Vec<String>,
    /// How many times to repeat each throughput run.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// A Python interpreter with confluent-kafka, scikit-learn and numpy: runs the Python
    /// baseline (`benches/e2e/py_scorer.py`) when given.
    #[arg(long, env = "KEYSCORE_BENCH_PYTHON")]
    python: Option<PathBuf>,
    /// Python baseline runs, each `MODEL-MODE` with MODE `record` (one `predict` per record) or
    /// `batch` (one `predict` per key per poll of up to 500 records).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "linear-record,linear-batch,forest-batch,mlp-batch"
    )]
    python_runs: Vec<String>,
    /// A Python run stops after this many seconds if it has not scored every record.
    #[arg(long, default_value_t = 25)]
    python_seconds: u64,
    /// Length of the paced latency run, in seconds (0 skips it).
    #[arg(long, default_value_t = 30)]
    latency_seconds: u64,
    /// Offered load of the latency run in records/s (default: half the linear throughput
    /// measured in this run, else 50000).
    #[arg(long)]
    rate: Option<u64>,
    /// Model kind served in the latency run.
    #[arg(long, default_value = "linear")]
    latency_model: String,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Tansu's storage engine (`sqlite` and `postgres` need the build of
    /// `benches/e2e/install-tansu-engines.sh`).
    #[arg(long, value_enum, default_value = "memory")]
    engine: Engine,
    /// A PostgreSQL setting `name=value` for the postgres engine's private server (repeatable).
    #[arg(long)]
    pg_setting: Vec<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    /// Internal: run as the passthrough child `BOOTSTRAP,INPUT,OUTPUT,GROUP`.
    #[arg(long, hide = true)]
    passthrough_child: Option<String>,
}

/// Sixteen features: the synthetic generator's eight and eight more a delivery platform has.
const EXTRA_FEATURES: [&str; 8] = [
    "basket_eur",
    "restaurant_rating",
    "courier_load",
    "orders_last_hour",
    "temp_c",
    "wind_kmh",
    "customer_tenure_days",
    "promo_pct",
];

fn feature_names() -> Vec<&'static str> {
    FEATURES
        .iter()
        .chain(EXTRA_FEATURES.iter())
        .copied()
        .collect()
}

fn round_to(x: f64, per_unit: f64) -> f64 {
    (x * per_unit).round() / per_unit
}

/// Makes records: `{"id":"{prefix}{seq}", "city":..., 16 features, and the descriptive fields a
/// real order event carries}`, about 460 bytes each.
struct RecordMaker {
    gen: Generator,
    rng: Rng,
}

impl RecordMaker {
    fn new(seed: u64) -> Self {
        Self {
            gen: Generator::new(seed),
            rng: Rng::new(seed ^ 0x5EED),
        }
    }

    /// The next record's city and its sixteen feature values.
    fn next_features(&mut self) -> (&'static str, [f64; 16]) {
        let d = self.gen.next_record();
        let r = &mut self.rng;
        let mut f = [0.0; 16];
        f[..8].copy_from_slice(&d.features);
        f[8] = round_to(8.0 + 4.0 * d.features[1] + 6.0 * r.normal().abs(), 100.0);
        f[9] = round_to(3.5 + 1.5 * r.uniform(), 10.0);
        f[10] = r.below(6) as f64;
        f[11] = r.below(40) as f64;
        f[12] = round_to(14.0 + 8.0 * r.normal(), 10.0);
        f[13] = round_to(12.0 * r.uniform(), 10.0);
        f[14] = r.below(2000) as f64;
        f[15] = [0.0, 0.0, 0.0, 10.0, 20.0][r.below(5)];
        (d.city, f)
    }

    fn next_json(&mut self, id: &str) -> (&'static str, String) {
        let (city, f) = self.next_features();
        let r = &mut self.rng;
        let (ms, order, customer, restaurant) = (
            r.next_u64() % 86_400_000,
            r.next_u64() % 10_000_000_000,
            r.next_u64() % 100_000_000,
            r.next_u64() % 1_000_000,
        );
        let mut s = String::with_capacity(512);
        write!(
            s,
            r#"{{"id":"{id}","city":"{city}","ts":"2026-03-14T{:02}:{:02}:{:02}.{:03}Z","order_id":"o-{order:010}","customer_id":"c-{customer:08}","restaurant_id":"rst-{restaurant:06}","zone":"{city}-{:02}","channel":"{}""#,
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000,
            r.below(20),
            ["ios", "android", "web"][r.below(3)],
        )
        .expect("writing to a String");
        for (name, v) in feature_names().iter().zip(f) {
            write!(s, r#","{name}":{v}"#).expect("writing to a String");
        }
        s.push('}');
        (city, s)
    }
}

// ---------------------------------------------------------------------------------------------
// Model specs

fn feature_sample(n: usize) -> Vec<[f64; 16]> {
    let mut maker = RecordMaker::new(99);
    (0..n).map(|_| maker.next_features().1).collect()
}

fn scaler(sample: &[[f64; 16]]) -> serde_json::Value {
    let n = sample.len() as f64;
    let mean: Vec<f64> = (0..16)
        .map(|j| sample.iter().map(|x| x[j]).sum::<f64>() / n)
        .collect();
    let scale: Vec<f64> = (0..16)
        .map(|j| {
            let var = sample.iter().map(|x| (x[j] - mean[j]).powi(2)).sum::<f64>() / n;
            var.sqrt().max(1e-6)
        })
        .collect();
    json!({"mean": mean, "scale": scale})
}

/// A model spec of `kind` with weights drawn from `seed`: the shapes matter here, not the fit.
fn model_spec(kind: &str, seed: u64, sample: &[[f64; 16]]) -> serde_json::Value {
    let mut r = Rng::new(seed);
    let features = feature_names();
    let model = match kind {
        "linear" => json!({
            "kind": "linear",
            "coefficients": (0..16).map(|_| r.normal()).collect::<Vec<_>>(),
            "intercept": 30.0 + r.normal(),
        }),
        "forest" => {
            // Full trees of depth 8 (511 nodes), splitting on a random feature at the value it
            // takes in a random sample record, so records take varied paths to the leaves.
            let trees: Vec<serde_json::Value> = (0..100)
                .map(|_| {
                    let nodes = (1usize << 9) - 1;
                    let inner = (1usize << 8) - 1;
                    let (mut feature, mut threshold, mut left, mut right, mut value) =
                        (vec![], vec![], vec![], vec![], vec![]);
                    for i in 0..nodes {
                        if i < inner {
                            let j = r.below(16);
                            feature.push(j as i64);
                            threshold.push(sample[r.below(sample.len())][j]);
                            left.push((2 * i + 1) as i64);
                            right.push((2 * i + 2) as i64);
                        } else {
                            feature.push(-2);
                            threshold.push(-2.0);
                            left.push(-1);
                            right.push(-1);
                        }
                        value.push(vec![round_to(20.0 + 10.0 * r.normal(), 1000.0)]);
                    }
                    json!({"feature": feature, "threshold": threshold, "left": left,
                           "right": right, "value": value})
                })
                .collect();
            json!({"kind": "random_forest", "trees": trees, "threshold_precision": "f32"})
        }
        "mlp" => {
            let mut layer = |inputs: usize, outputs: usize| {
                let sd = (2.0 / inputs as f64).sqrt();
                let weights: Vec<Vec<f64>> = (0..inputs)
                    .map(|_| (0..outputs).map(|_| sd * r.normal()).collect())
                    .collect();
                let biases: Vec<f64> = (0..outputs).map(|_| 0.1 * r.normal()).collect();
                json!({"weights": weights, "biases": biases})
            };
            let layers = vec![layer(16, 64), layer(64, 64), layer(64, 1)];
            json!({"kind": "mlp", "layers": layers, "hidden_activation": "relu",
                   "output_activation": "identity"})
        }
        other => panic!("unknown model kind {other}"),
    };
    let mut spec = json!({
        "format_version": 1,
        "features": features,
        "model": model,
        "output": {"type": "regression"},
        "metadata": {"author": "keyscore e2e bench", "trained_at": "2026-03-14T00:00:00Z"},
    });
    if kind != "forest" {
        spec["scaler"] = scaler(sample);
    }
    spec
}

/// Writes each city's spec (v1, and v2 for the swap) and uploads them into a fresh store.
fn prepare_store(
    keyscore: &Path,
    dir: &Path,
    kind: &str,
    sample: &[[f64; 16]],
) -> anyhow::Result<String> {
    let db = dir.join(format!("{kind}.db"));
    let url = format!("sqlite://{}", db.display());
    let models = dir.join("models").join(kind);
    std::fs::create_dir_all(&models)?;
    run_keyscore(keyscore, &["--store", &url, "init"])?;
    for (n, city) in CITIES.iter().enumerate() {
        for version in [1u64, 2] {
            let path = models.join(format!("{city}-v{version}.json"));
            let seed = 1000 * version + n as u64;
            std::fs::write(&path, model_spec(kind, seed, sample).to_string())?;
            let mut args = vec!["--store", &url, "upload", "--key", city];
            if version == 1 {
                args.push("--activate");
            }
            let p = path.to_str().expect("UTF-8 temp path");
            args.push(p);
            run_keyscore(keyscore, &args)?;
        }
    }
    Ok(url)
}

// ---------------------------------------------------------------------------------------------
// Topics

/// Reads the sum of a topic's high watermarks.
struct Watermarks {
    consumer: BaseConsumer,
    bootstrap: String,
}

impl Watermarks {
    fn new(bootstrap: &str) -> anyhow::Result<Self> {
        Ok(Self {
            consumer: client(bootstrap).create()?,
            bootstrap: bootstrap.to_string(),
        })
    }

    fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    fn total(&self, topic: &str, partitions: i32) -> anyhow::Result<u64> {
        let mut sum = 0;
        for p in 0..partitions {
            let (_, high) = self
                .consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .with_context(|| format!("watermarks of {topic}/{p}"))?;
            sum += high.max(0) as u64;
        }
        Ok(sum)
    }
}

/// Counts a topic's records by reading it from the beginning until nothing more arrives for two
/// seconds (its watermarks can fall short; see [`measure`]).
fn count_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<u64> {
    let consumer: BaseConsumer = client(bootstrap)
        .set("group.id", format!("count-{topic}"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let (mut n, mut last) = (0u64, Instant::now());
    while last.elapsed() < Duration::from_secs(2) {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            m?;
            n += 1;
            last = Instant::now();
        }
    }
    Ok(n)
}

/// How many dead letters `topic` (one partition) holds, and the first one's reason.
fn first_dead_letter(bootstrap: &str, topic: &str) -> anyhow::Result<(u64, String)> {
    let consumer: BaseConsumer = client(bootstrap)
        .set("group.id", format!("count-{topic}"))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let (mut n, mut why, started) = (0u64, String::new(), Instant::now());
    while started.elapsed() < Duration::from_secs(2) {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            if n == 0 {
                for h in m.headers().iter().flat_map(|hs| hs.iter()) {
                    let v = String::from_utf8_lossy(h.value.unwrap_or_default());
                    write!(why, "{}={v} ", h.key).ok();
                }
                write!(
                    why,
                    "{}",
                    String::from_utf8_lossy(m.payload().unwrap_or_default())
                )
                .ok();
            }
            n += 1;
        }
    }
    Ok((n, why))
}

/// Pre-fills `topic` with `n` records keyed by city, with keyscore's producer settings.
fn prefill(bootstrap: &str, topic: &str, n: u64) -> anyhow::Result<(f64, f64)> {
    let cfg = kafka_config(bootstrap, "unused", topic, topic);
    let producer: BaseProducer<Delivered> =
        options::producer_config(&cfg).create_with_context(Delivered::default())?;
    let mut maker = RecordMaker::new(7);
    let started = Instant::now();
    let mut bytes = 0u64;
    for i in 0..n {
        let (city, line) = maker.next_json(&format!("r-{i:09}"));
        bytes += line.len() as u64;
        send_retrying(
            &producer,
            BaseRecord::to(topic).key(city).payload(line.as_bytes()),
        )?;
        if i % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let failed = producer.context().failed.load(Ordering::Relaxed);
    ensure!(
        failed == 0,
        "{failed} records were not delivered: {}",
        producer.context().error.lock().expect("error lock")
    );
    Ok((bytes as f64 / n as f64, started.elapsed().as_secs_f64()))
}

// ---------------------------------------------------------------------------------------------
// Measuring a scorer process

#[derive(Debug, Clone, serde::Serialize)]
struct Throughput {
    name: String,
    records: u64,
    seconds: f64,
    records_per_s: f64,
    cpu_us_per_record: f64,
    broker_cpu_us_per_record: f64,
    startup_s: f64,
    /// Whether the output reached every input record.
    complete: bool,
    /// Input records missing from the output at the end.
    missing: u64,
}

/// Waits for the output topic to hold `target` records (or `max` to pass), then stops the
/// child. Throughput and CPU are taken between the first output seen and the last.
#[allow(clippy::too_many_arguments)]
fn measure(
    name: &str,
    mut child: Child,
    broker_pid: u32,
    marks: &Watermarks,
    output: &str,
    partitions: i32,
    target: u64,
    max: Duration,
) -> anyhow::Result<Throughput> {
    let ticks = clock_ticks();
    let pid = child.id();
    let spawned = Instant::now();
    let mut first: Option<(Instant, u64, f64, f64)> = None;
    // The sample at which the count last changed. Tansu 0.6's high watermark leaves out each
    // partition's newest batch, so the count may stop a little short of `target`; it is then
    // complete once it has not moved for two seconds, and checked by reading the topic.
    let mut changed = (Instant::now(), 0u64, 0.0, 0.0);
    let last = loop {
        if let Some(status) = child.try_wait()? {
            bail!("{name}: the scorer exited early ({status})");
        }
        let count = marks.total(output, partitions)?;
        let now = Instant::now();
        let (cpu, bcpu) = (cpu_seconds(pid, ticks), cpu_seconds(broker_pid, ticks));
        if count > 0 && first.is_none() {
            first = Some((now, count, cpu, bcpu));
        }
        if count != changed.1 {
            changed = (now, count, cpu, bcpu);
        }
        // Watermarks that stop moving further short (seen at times) are read out after 10 s.
        let still = now - changed.0;
        let settled = count > 0
            && (count + 1000 * partitions as u64 >= target && still >= Duration::from_secs(2)
                || still >= Duration::from_secs(10));
        let timed_out = first.is_some_and(|f| now - f.0 >= max)
            || spawned.elapsed() >= max + Duration::from_secs(120);
        if count >= target || settled {
            break changed;
        }
        if timed_out {
            break (now, count, cpu, bcpu);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    terminate(&mut child);
    let (t0, n0, c0, b0) = first.context("no output at all")?;
    let (t1, mut n1, c1, b1) = last;
    if n1 < target {
        let read = count_topic(marks.bootstrap(), output, partitions)?;
        eprintln!("{name}: watermarks say {n1}, reading the topic counts {read}");
        n1 = read;
    }
    let records = n1 - n0;
    let seconds = (t1 - t0).as_secs_f64();
    ensure!(records > 0, "{name}: no progress after the first output");
    let result = Throughput {
        name: name.to_string(),
        records,
        seconds,
        records_per_s: records as f64 / seconds,
        cpu_us_per_record: (c1 - c0) * 1e6 / records as f64,
        broker_cpu_us_per_record: (b1 - b0) * 1e6 / records as f64,
        startup_s: (t0 - spawned).as_secs_f64(),
        complete: n1 >= target,
        missing: target.saturating_sub(n1),
    };
    eprintln!(
        "{name}: {} records in {:.2} s: {:.0} records/s, {:.2} CPU-us/record (broker {:.2}), first output after {:.1} s{}",
        result.records,
        result.seconds,
        result.records_per_s,
        result.cpu_us_per_record,
        result.broker_cpu_us_per_record,
        result.startup_s,
        if result.complete {
            String::new()
        } else {
            format!(" ({} input records missing from the output)", result.missing)
        }
    );
    Ok(result)
}

struct Env {
    keyscore: PathBuf,
    dir: PathBuf,
    bootstrap: String,
    broker_pid: u32,
    partitions: i32,
    stores: BTreeMap<String, String>,
}

impl Env {
    /// A serve config; with `ops`, keyscore's ops endpoint (`/metrics`) listens there.
    fn serve_config(
        &self,
        store: &str,
        group: &str,
        input: &str,
        output: &str,
        ops: Option<&str>,
    ) -> PathBuf {
        let path = self.dir.join(format!("{output}.toml"));
        let mut text = format!(
            "[store]\nurl = \"{store}\"\n\n[kafka]\nbootstrap_servers = \"{}\"\ngroup_id = \"{group}\"\n\
             input_topics = [\"{input}\"]\noutput_topic = \"{output}\"\ndead_letter_topic = \"{output}-dead\"\n\
             create_topics = false\n",
            self.bootstrap
        );
        if let Some(ops) = ops {
            text.push_str(&format!("\n[ops]\nlisten = \"{ops}\"\n"));
        }
        std::fs::write(&path, text).expect("writing the serve config");
        path
    }

    fn spawn_serve(
        &self,
        kind: &str,
        input: &str,
        output: &str,
        ops: Option<&str>,
    ) -> anyhow::Result<Child> {
        let config = self.serve_config(
            &self.stores[kind],
            &format!("g-{output}"),
            input,
            output,
            ops,
        );
        let log = std::fs::File::create(self.dir.join(format!("{output}.log")))?;
        Ok(Command::new(&self.keyscore)
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env("RUST_LOG", "info")
            .env_remove("KEYSCORE_OPS_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?)
    }

    fn fresh_output(&self, name: &str) -> anyhow::Result<String> {
        let output = format!("{name}-{}", unique());
        create_topics(&self.bootstrap, &[&output], self.partitions)?;
        create_topics(&self.bootstrap, &[&format!("{output}-dead")], 1)?;
        Ok(output)
    }
}

fn throughput_run(
    env: &Env,
    run: &str,
    input: &str,
    records: u64,
    marks: &Watermarks,
) -> anyhow::Result<Throughput> {
    let output = env.fresh_output(&format!("out-{run}"))?;
    let child = match run {
        "passthrough" => spawn_passthrough(&env.bootstrap, input, &output, None)?,
        kind => env.spawn_serve(kind, input, &output, None)?,
    };
    let result = measure(
        run,
        child,
        env.broker_pid,
        marks,
        &output,
        env.partitions,
        records,
        Duration::from_secs(600),
    )?;
    let (dead, why) = first_dead_letter(&env.bootstrap, &format!("{output}-dead"))?;
    ensure!(dead == 0, "{run}: {dead} dead letters, the first: {why}");
    Ok(result)
}

fn python_run(
    env: &Env,
    python: &Path,
    run: &str,
    input: &str,
    records: u64,
    marks: &Watermarks,
    seconds: u64,
) -> anyhow::Result<Throughput> {
    let (model, mode) = run
        .split_once('-')
        .with_context(|| format!("python run {run}: want MODEL-MODE"))?;
    let output = env.fresh_output(&format!("out-py-{run}"))?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/e2e/py_scorer.py");
    let log = std::fs::File::create(env.dir.join(format!("{output}.log")))?;
    let child = Command::new(python)
        .arg(&script)
        .args(["--bootstrap", &env.bootstrap, "--input", input, "--output"])
        .arg(&output)
        .args(["--group", &format!("g-{output}"), "--model", model])
        .args(["--mode", mode])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    measure(
        &format!("python {run}"),
        child,
        env.broker_pid,
        marks,
        &output,
        env.partitions,
        records,
        Duration::from_secs(seconds),
    )
}

// ---------------------------------------------------------------------------------------------
// Latency at a fixed offered load, with a hot swap in the middle

#[derive(Debug, Clone, serde::Serialize)]
struct Latency {
    model: String,
    rate: u64,
    seconds: u64,
    sent: u64,
    received: u64,
    producer_max_behind_ms: f64,
    cpu_us_per_record: f64,
    /// Output record timestamp (set by keyscore's producer when it hands the scored record
    /// over, ms resolution) minus the intended send time.
    scored_steady: Percentiles,
    /// Receipt by the bench's consumer of the output topic minus the intended send time.
    received_steady: Percentiles,
    scored_swap: Option<Percentiles>,
    received_swap: Option<Percentiles>,
    activate_at_s: f64,
    swap_seen_at_s: Option<f64>,
    per_second_p99_ms: Vec<f64>,
    /// keyscore's own residence time over the paced phase, per stage (`handed`: polled to
    /// handed to the producer; `acked`: polled to acknowledged by the broker).
    residence: Vec<Residence>,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64
}

/// The `n` of `"id":"l-{n}"` in a scored record.
fn seq_of(payload: &[u8]) -> Option<u64> {
    let at = payload.windows(7).position(|w| w == b"\"id\":\"l")?;
    let digits = payload[at + 8..].iter().take_while(|b| b.is_ascii_digit());
    Some(digits.fold(0, |n, b| n * 10 + u64::from(b - b'0')))
}

struct Seen {
    seq: u64,
    ts_ms: i64,
    received_us: i64,
    swapped: bool,
}

fn latency_run(env: &Env, kind: &str, rate: u64, seconds: u64) -> anyhow::Result<Latency> {
    let ticks = clock_ticks();
    let input = format!("lat-in-{}", unique());
    create_topics(&env.bootstrap, &[&input], env.partitions)?;
    let output = env.fresh_output("lat-out")?;
    let ops = format!("127.0.0.1:{}", free_port()?);
    let mut child = env.spawn_serve(kind, &input, &output, Some(&ops))?;
    let pid = child.id();
    let swap_key = CITIES[0];

    // Warm up: wait until serve has joined and scores.
    let cfg = kafka_config(&env.bootstrap, "unused", &input, &output);
    let mut pcfg = options::producer_config(&cfg);
    pcfg.set("linger.ms", "1");
    let producer: BaseProducer = pcfg.create()?;
    let mut maker = RecordMaker::new(11);
    for i in 0..200 {
        let (city, line) = maker.next_json(&format!("w-{i}"));
        send_retrying(
            &producer,
            BaseRecord::to(&input).key(city).payload(line.as_bytes()),
        )?;
    }
    producer.flush(Duration::from_secs(10))?;
    // The output reader.
    let reader: BaseConsumer = client(&env.bootstrap)
        .set("group.id", format!("reader-{output}"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..env.partitions {
        tpl.add_partition_offset(&output, p, Offset::Beginning)?;
    }
    reader.assign(&tpl)?;
    let total = rate * seconds;
    let seen = Arc::new(Mutex::new(Vec::<Seen>::with_capacity(total as usize)));
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let any = Arc::new(AtomicU64::new(0));
    let reader_thread = {
        let (seen, stop, received, any) =
            (seen.clone(), stop.clone(), received.clone(), any.clone());
        std::thread::spawn(move || {
            let mut local = Vec::with_capacity(total as usize);
            while !stop.load(Ordering::Relaxed) {
                let Some(Ok(m)) = reader.poll(Duration::from_millis(20)) else {
                    continue;
                };
                let received_us = now_us();
                any.fetch_add(1, Ordering::Relaxed);
                let Some(seq) = m.payload().and_then(seq_of) else {
                    continue;
                };
                let swapped = m.headers().is_some_and(|hs| {
                    hs.iter().any(|h| {
                        h.key == headers::MODEL_KEY && h.value == Some(swap_key.as_bytes())
                    }) && hs
                        .iter()
                        .any(|h| h.key == headers::MODEL_VERSION && h.value == Some("2".as_bytes()))
                });
                local.push(Seen {
                    seq,
                    ts_ms: m.timestamp().to_millis().unwrap_or(0),
                    received_us,
                    swapped,
                });
                received.fetch_add(1, Ordering::Relaxed);
            }
            *seen.lock().expect("seen lock") = local;
        })
    };

    let deadline = Instant::now() + Duration::from_secs(60);
    while any.load(Ordering::Relaxed) < 200 {
        ensure!(
            Instant::now() < deadline,
            "latency run: serve did not start"
        );
        ensure!(child.try_wait()?.is_none(), "latency run: serve exited");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The paced producer: record i is due at start + i / rate.
    let residence_before = scrape_residence(&ops)?;
    let cpu0 = cpu_seconds(pid, ticks);
    let activate_at = Duration::from_secs_f64(seconds as f64 * 0.6);
    let mut activated = false;
    let start_us = now_us() + 200_000;
    let start = Instant::now() + Duration::from_millis(200);
    let mut max_behind = Duration::ZERO;
    for i in 0..total {
        let due = Duration::from_nanos(i * 1_000_000_000 / rate);
        let now = Instant::now();
        if now < start + due {
            // Sleep rather than spin: the machine's cores are the scorer's and the broker's.
            // Waking late only delays sends, which the latency (from the due time) includes.
            producer.poll(Duration::ZERO);
            std::thread::sleep(start + due - now);
        } else {
            max_behind = max_behind.max(now - (start + due));
        }
        if !activated && due >= activate_at {
            activated = true;
            let store = env.stores[kind].clone();
            let keyscore = env.keyscore.clone();
            std::thread::spawn(move || {
                if let Err(err) = run_keyscore(
                    &keyscore,
                    &[
                        "--store",
                        &store,
                        "activate",
                        "--key",
                        swap_key,
                        "--version",
                        "2",
                    ],
                ) {
                    eprintln!("latency: activating {swap_key} v2 failed: {err:#}");
                }
            });
        }
        let (city, line) = maker.next_json(&format!("l-{i}"));
        let ts = (start_us + due.as_micros() as i64) / 1000;
        send_retrying(
            &producer,
            BaseRecord::to(&input)
                .key(city)
                .payload(line.as_bytes())
                .timestamp(ts),
        )?;
        if i % 64 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(30))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let cpu1 = cpu_seconds(pid, ticks);
    let residence = residence(&residence_before, &scrape_residence(&ops)?);
    stop.store(true, Ordering::Relaxed);
    reader_thread.join().expect("reader thread");
    terminate(&mut child);
    let got = received.load(Ordering::Relaxed);
    ensure!(got >= total, "latency run: {got} of {total} outputs");

    let seen = std::mem::take(&mut *seen.lock().expect("seen lock"));
    let due_us = |seq: u64| start_us + (seq * 1_000_000 / rate) as i64;
    let swap_seen_us = seen
        .iter()
        .filter(|s| s.swapped)
        .map(|s| s.ts_ms * 1000)
        .min();
    let activate_us = start_us + activate_at.as_micros() as i64;
    let steady_from = start_us + 2_000_000;
    let quiet_until = swap_seen_us.unwrap_or(activate_us) + 2_000_000;
    let in_steady = |s: &Seen| {
        let d = due_us(s.seq);
        d >= steady_from && (d < activate_us - 1_000_000 || d >= quiet_until)
    };
    let in_swap = |s: &Seen, at: i64| (due_us(s.seq) - at).abs() <= 500_000;
    let scored = |s: &Seen| s.ts_ms * 1000 - due_us(s.seq);
    let recv = |s: &Seen| s.received_us - due_us(s.seq);
    let mut per_second: Vec<Vec<i64>> = vec![Vec::new(); seconds as usize];
    for s in &seen {
        let sec = ((due_us(s.seq) - start_us) / 1_000_000) as usize;
        if let Some(b) = per_second.get_mut(sec) {
            b.push(scored(s));
        }
    }
    let result = Latency {
        model: kind.to_string(),
        rate,
        seconds,
        sent: total,
        received: seen.len() as u64,
        producer_max_behind_ms: max_behind.as_secs_f64() * 1000.0,
        cpu_us_per_record: (cpu1 - cpu0) * 1e6 / total as f64,
        scored_steady: percentiles(seen.iter().filter(|s| in_steady(s)).map(scored).collect()),
        received_steady: percentiles(seen.iter().filter(|s| in_steady(s)).map(recv).collect()),
        scored_swap: swap_seen_us
            .map(|at| percentiles(seen.iter().filter(|s| in_swap(s, at)).map(scored).collect())),
        received_swap: swap_seen_us
            .map(|at| percentiles(seen.iter().filter(|s| in_swap(s, at)).map(recv).collect())),
        activate_at_s: activate_at.as_secs_f64(),
        swap_seen_at_s: swap_seen_us.map(|at| (at - start_us) as f64 / 1e6),
        per_second_p99_ms: per_second
            .into_iter()
            .map(|b| percentiles(b).p99_ms)
            .collect(),
        residence,
    };
    eprintln!("latency: {}", serde_json::to_string_pretty(&result)?);
    Ok(result)
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, serde::Serialize)]
struct Report {
    records: u64,
    record_bytes: f64,
    partitions: i32,
    throughput: Vec<Throughput>,
    latency: Option<Latency>,
}

fn markdown(report: &Report) -> String {
    let mut s = String::new();
    let best = |name: &str| {
        report
            .throughput
            .iter()
            .filter(|t| t.name == name)
            .map(|t| t.records_per_s)
            .fold(f64::NAN, f64::max)
    };
    let ceiling = best("passthrough");
    writeln!(
        s,
        "| run | records | records/s | ratio to passthrough | scorer CPU-us/record | broker CPU-us/record |"
    )
    .ok();
    writeln!(s, "|---|---:|---:|---:|---:|---:|").ok();
    for t in &report.throughput {
        writeln!(
            s,
            "| {} | {}{} | {:.0} | {:.2} | {:.2} | {:.2} |",
            t.name,
            t.records,
            if t.complete {
                String::new()
            } else {
                format!(" ({} short)", t.missing)
            },
            t.records_per_s,
            t.records_per_s / ceiling,
            t.cpu_us_per_record,
            t.broker_cpu_us_per_record
        )
        .ok();
    }
    if let Some(l) = &report.latency {
        writeln!(
            s,
            "\nLatency, {} model, {} records/s offered for {} s (ms):\n",
            l.model, l.rate, l.seconds
        )
        .ok();
        writeln!(
            s,
            "| window | measured at | count | p50 | p99 | p99.9 | max |"
        )
        .ok();
        writeln!(s, "|---|---|---:|---:|---:|---:|---:|").ok();
        let rows = [
            (
                "steady",
                "scored (output timestamp)",
                Some(&l.scored_steady),
            ),
            ("steady", "received", Some(&l.received_steady)),
            (
                "swap ±0.5 s",
                "scored (output timestamp)",
                l.scored_swap.as_ref(),
            ),
            ("swap ±0.5 s", "received", l.received_swap.as_ref()),
        ];
        for (w, at, p) in rows {
            if let Some(p) = p {
                writeln!(
                    s,
                    "| {w} | {at} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    p.count, p.p50_ms, p.p99_ms, p.p999_ms, p.max_ms
                )
                .ok();
            }
        }
        s.push_str(&residence::markdown(&l.residence));
    }
    s
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(spec) = &args.passthrough_child {
        return passthrough_child(spec);
    }
    // KEYSCORE_BIN runs another build of keyscore (an A/B of two builds, say).
    let keyscore = std::env::var_os("KEYSCORE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_keyscore")));
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().to_path_buf();
    eprintln!("e2e: working in {}", dir.display());
    let tansu = Tansu::start(&dir, args.engine, &args.pg_setting)?;
    let bootstrap = tansu.bootstrap();

    let sample = feature_sample(4096);
    let mut kinds: Vec<String> = args
        .runs
        .iter()
        .filter(|r| *r != "passthrough")
        .cloned()
        .collect();
    if args.latency_seconds > 0 && !kinds.contains(&args.latency_model) {
        kinds.push(args.latency_model.clone());
    }
    let mut stores = BTreeMap::new();
    for kind in &kinds {
        let t = Instant::now();
        stores.insert(kind.clone(), prepare_store(&keyscore, &dir, kind, &sample)?);
        eprintln!(
            "e2e: {kind} models uploaded in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }

    let input = format!("e2e-in-{}", unique());
    create_topics(&bootstrap, &[&input], args.partitions)?;
    let (record_bytes, secs) = prefill(&bootstrap, &input, args.records)?;
    let marks = Watermarks::new(&bootstrap)?;
    let held = count_topic(&bootstrap, &input, args.partitions)?;
    ensure!(
        held == args.records,
        "the input topic holds {held} records, not {}",
        args.records
    );
    eprintln!(
        "e2e: pre-filled {} records of {record_bytes:.0} bytes on average in {secs:.1} s",
        args.records
    );
    let env = Env {
        keyscore,
        dir: dir.clone(),
        bootstrap,
        broker_pid: tansu.pid(),
        partitions: args.partitions,
        stores,
    };

    let mut throughput = Vec::new();
    for _ in 0..args.repeat {
        for run in &args.runs {
            throughput.push(throughput_run(&env, run, &input, args.records, &marks)?);
        }
    }
    if let Some(python) = &args.python {
        for run in &args.python_runs {
            throughput.push(python_run(
                &env,
                python,
                run,
                &input,
                args.records,
                &marks,
                args.python_seconds,
            )?);
        }
    }
    let latency = if args.latency_seconds > 0 {
        let rate = args.rate.unwrap_or_else(|| {
            throughput
                .iter()
                .filter(|t| t.name == args.latency_model)
                .map(|t| (t.records_per_s / 2.0) as u64)
                .max()
                .unwrap_or(50_000)
        });
        Some(latency_run(
            &env,
            &args.latency_model,
            rate,
            args.latency_seconds,
        )?)
    } else {
        None
    };
    let report = Report {
        records: args.records,
        record_bytes,
        partitions: args.partitions,
        throughput,
        latency,
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    let table = markdown(&report);
    std::io::stdout().write_all(table.as_bytes())?;
    Ok(())
}
