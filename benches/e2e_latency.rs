//! Latency of `keyscore serve` against the broker's own floor, on Tansu with a choice of storage
//! engine (memory, SQLite, PostgreSQL).
//!
//! For each engine and offered rate it runs, one after another against the same broker:
//!
//! * **broker**: one hop, the bench's producer -> topic -> the bench's reader: the floor;
//! * **passthrough**: two hops through an rdkafka consumer-to-producer loop with keyscore's
//!   librdkafka settings and no parsing (a child process of this bench);
//! * **keyscore**: two hops through `keyscore serve` scoring with a per-key MLP of
//!   `--features` inputs and two hidden layers of `--hidden` (relu, one output), v1 and v2 of
//!   each key's model uploaded with `keyscore upload` into a fresh embedded store; at
//!   `--swap-at` of the run `keyscore activate` switches one key to v2.
//!
//! Records carry `--features` numeric fields and an id `SEQ@DUE`: record `SEQ` is due at
//! `start + SEQ / rate`, DUE is that time in microseconds. Its latency is measured from DUE to
//! its receipt by the bench's reader of the final topic, so a late send counts (corrected for
//! coordinated omission). Reported per run: p50/p95/p99/p99.9/max after the warm-up, p50 and
//! p99 of every `--slice-seconds` slice (drift), and for keyscore the second centred on the
//! first output scored by v2 against the steady state, and keyscore's own residence time from
//! its `keyscore_residence_seconds` histogram (bucket estimates over the paced phase).
//!
//! Not part of `cargo test` (`test = false` in `Cargo.toml`). Run it with
//! `benches/e2e/latency.sh` or `cargo bench --bench e2e_latency -- --help`; see
//! `benches/e2e/README.md`.

#[allow(dead_code)]
#[path = "e2e/common.rs"]
mod common;
#[path = "e2e/residence.rs"]
mod residence;

use std::{
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, LazyLock,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, ensure, Context as _};
use clap::Parser;
use common::{
    clock_ticks, cpu_seconds, create_topics, free_port, kafka_config, passthrough_child,
    percentiles, run_keyscore, send_retrying, spawn_passthrough, terminate, unique, Delivered,
    Engine, Percentiles, Tansu,
};
use keyscore::{
    stream::kafka::{headers, options},
    synth::{Xoshiro256StarStar as Rng, CITIES},
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
#[command(
    about = "Latency of keyscore serve against the broker's floor (one hop) and a passthrough \
             (two hops), per Tansu storage engine and offered rate"
)]
struct Args {
    /// Tansu storage engines, each with a fresh broker: memory, sqlite, postgres.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "memory")]
    engine: Vec<Engine>,
    /// Offered loads in records/s, each a set of runs.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    rate: Vec<u64>,
    /// Length of each paced run, in seconds.
    #[arg(long, default_value_t = 300)]
    seconds: u64,
    /// Runs at each rate, in order: broker (one hop), passthrough (two hops), keyscore.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "broker,passthrough,keyscore"
    )]
    modes: Vec<Mode>,
    /// Length of the slices whose p50 and p99 show drift, in seconds.
    #[arg(long, default_value_t = 30)]
    slice_seconds: u64,
    /// Records due in the first this many seconds are left out of a run's percentiles (they
    /// are in the slices).
    #[arg(long, default_value_t = 2)]
    warmup_seconds: u64,
    /// Partitions of every topic the bench creates.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Numeric features per record (and inputs of the MLP).
    #[arg(long, default_value_t = 128)]
    features: usize,
    /// Width of each of the MLP's two hidden layers.
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    /// When, as a fraction of the keyscore run, one key is switched to v2.
    #[arg(long, default_value_t = 0.6)]
    swap_at: f64,
    /// `linger.ms` of the bench's own producer (its other settings are keyscore's); 0 so the
    /// bench's hop adds no batching delay of its own.
    #[arg(long, default_value_t = 0)]
    bench_linger_ms: u32,
    /// A run stops sending once its sender is this many seconds behind schedule (the broker or
    /// the scorer cannot take the rate); what was sent is still measured.
    #[arg(long, default_value_t = 30)]
    give_up_behind_seconds: u64,
    /// Start a fresh broker for every run instead of one per engine and rate (the memory
    /// engine keeps every topic in memory and slows as it grows).
    #[arg(long)]
    broker_per_run: bool,
    /// A PostgreSQL setting `name=value` for the postgres engine's private server, e.g.
    /// `synchronous_commit=off` (repeatable).
    #[arg(long)]
    pg_setting: Vec<String>,
    /// Index the SQLite engine's `header` table by record once the broker is up (Tansu 0.6
    /// has no index there, so fetching records that carry headers slows the broker down as
    /// the topic grows; see `Tansu::index_sqlite_headers`).
    #[arg(long)]
    sqlite_header_index: bool,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    /// Internal: run as the passthrough child `BOOTSTRAP,INPUT,OUTPUT,GROUP`.
    #[arg(long, hide = true)]
    passthrough_child: Option<String>,
}

/// What sits between the bench's producer and its reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// Nothing: one hop through the broker.
    Broker,
    /// The passthrough child: two hops.
    Passthrough,
    /// `keyscore serve` with the MLP: two hops.
    Keyscore,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Broker => "broker alone",
            Mode::Passthrough => "passthrough",
            Mode::Keyscore => "keyscore",
        }
    }

    fn hops(self) -> u32 {
        match self {
            Mode::Broker => 1,
            _ => 2,
        }
    }
}

/// The key switched to v2 in the middle of a keyscore run.
const SWAP_KEY: &str = CITIES[0];

/// Warm-up records sent (and received) before a paced run starts.
const WARM_RECORDS: u64 = 200;

// ---------------------------------------------------------------------------------------------
// Clock and records

/// Microseconds since the epoch on one monotonic clock: the wall time at the first call plus
/// the monotonic time since, so due and receipt times are comparable even if the wall clock is
/// stepped during a run.
fn now_us() -> i64 {
    static ORIGIN: LazyLock<(i64, Instant)> = LazyLock::new(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_micros() as i64;
        (wall, Instant::now())
    });
    ORIGIN.0 + ORIGIN.1.elapsed().as_micros() as i64
}

/// The feature names: `f0` ... `f{n-1}`.
fn feature_names(n: usize) -> Vec<String> {
    (0..n).map(|j| format!("f{j}")).collect()
}

/// Pre-rendered feature lists (`"f0":0.123,"f1":-1.5,...`), so making a record at 10,000/s is
/// a concatenation rather than 128 float formats.
fn feature_bodies(features: usize, count: usize) -> Vec<String> {
    let mut r = Rng::new(42);
    let names = feature_names(features);
    (0..count)
        .map(|_| {
            let mut s = String::with_capacity(features * 14);
            for (j, name) in names.iter().enumerate() {
                if j > 0 {
                    s.push(',');
                }
                let v = (r.normal() * 1000.0).round() / 1000.0;
                write!(s, r#""{name}":{v}"#).expect("writing to a String");
            }
            s
        })
        .collect()
}

/// Makes the records of a run: `{"id":ID,"city":KEY,FEATURES}`, the key drawn at random from
/// the eight cities.
struct Records {
    bodies: Arc<Vec<String>>,
    rng: Rng,
    buf: String,
}

impl Records {
    fn new(bodies: Arc<Vec<String>>, seed: u64) -> Self {
        Self {
            bodies,
            rng: Rng::new(seed),
            buf: String::with_capacity(4096),
        }
    }

    /// The next record with `id`: its key and JSON.
    fn next(&mut self, id: std::fmt::Arguments<'_>) -> (&'static str, &[u8]) {
        let city = CITIES[self.rng.below(CITIES.len())];
        let body = &self.bodies[self.rng.below(self.bodies.len())];
        self.buf.clear();
        write!(self.buf, r#"{{"id":"{id}","city":"{city}",{body}}}"#).expect("writing");
        (city, self.buf.as_bytes())
    }
}

/// The `"id"` string of a record (input, passthrough copy or keyscore's scored output).
fn id_of(payload: &[u8]) -> Option<&[u8]> {
    const FIELD: &[u8] = b"\"id\":\"";
    let at = payload.windows(FIELD.len()).position(|w| w == FIELD)? + FIELD.len();
    let rest = &payload[at..];
    let end = rest.iter().position(|&b| b == b'"')?;
    Some(&rest[..end])
}

/// `SEQ@DUE` -> `(SEQ, DUE)`.
fn seq_due(id: &[u8]) -> Option<(u64, i64)> {
    let at = id.iter().position(|&b| b == b'@')?;
    let num = |digits: &[u8]| -> Option<u64> {
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(
            digits
                .iter()
                .fold(0u64, |n, b| n * 10 + u64::from(b - b'0')),
        )
    };
    Some((num(&id[..at])?, num(&id[at + 1..])? as i64))
}

// ---------------------------------------------------------------------------------------------
// Models

/// An MLP spec: `features` inputs, two relu layers of `hidden`, one identity output; weights
/// drawn from `seed` (the shape matters here, not the fit).
fn mlp_spec(features: usize, hidden: usize, seed: u64) -> serde_json::Value {
    let mut r = Rng::new(seed);
    let mut layer = |inputs: usize, outputs: usize| {
        let sd = (2.0 / inputs as f64).sqrt();
        let weights: Vec<Vec<f64>> = (0..inputs)
            .map(|_| {
                (0..outputs)
                    .map(|_| (sd * r.normal() * 1e6).round() / 1e6)
                    .collect()
            })
            .collect();
        let biases: Vec<f64> = (0..outputs)
            .map(|_| (0.1 * r.normal() * 1e6).round() / 1e6)
            .collect();
        json!({"weights": weights, "biases": biases})
    };
    let layers = vec![
        layer(features, hidden),
        layer(hidden, hidden),
        layer(hidden, 1),
    ];
    json!({
        "format_version": 1,
        "features": feature_names(features),
        "model": {"kind": "mlp", "layers": layers, "hidden_activation": "relu",
                  "output_activation": "identity"},
        "output": {"type": "regression"},
        "metadata": {"author": "keyscore latency bench", "trained_at": "2026-03-14T00:00:00Z"},
    })
}

/// Writes v1 and v2 of every city's MLP into `dir/models` (once per bench process).
fn write_models(dir: &Path, features: usize, hidden: usize) -> anyhow::Result<PathBuf> {
    let models = dir.join("models");
    std::fs::create_dir_all(&models)?;
    for (n, city) in CITIES.iter().enumerate() {
        for version in [1u64, 2] {
            let spec = mlp_spec(features, hidden, 1000 * version + n as u64);
            std::fs::write(
                models.join(format!("{city}-v{version}.json")),
                spec.to_string(),
            )?;
        }
    }
    Ok(models)
}

/// A fresh embedded store at `db` holding v1 (active) and v2 of every city's MLP.
fn prepare_store(keyscore: &Path, models: &Path, db: &Path) -> anyhow::Result<String> {
    let url = format!("sqlite://{}", db.display());
    run_keyscore(keyscore, &["--store", &url, "init"])?;
    for city in CITIES {
        for version in [1u64, 2] {
            let path = models.join(format!("{city}-v{version}.json"));
            let path = path.to_str().context("a UTF-8 temporary path")?;
            let mut args = vec!["--store", &url, "upload", "--key", city];
            if version == 1 {
                args.push("--activate");
            }
            args.push(path);
            run_keyscore(keyscore, &args)?;
        }
    }
    Ok(url)
}

// ---------------------------------------------------------------------------------------------
// One run

/// A received record.
#[derive(Debug, Clone, Copy)]
struct Sample {
    due_us: i64,
    recv_us: i64,
    /// keyscore's output scored by v2 of [`SWAP_KEY`].
    v2: bool,
}

/// What the reader of the final topic collected.
struct ReaderOut {
    samples: Vec<Sample>,
    duplicates: u64,
}

/// Counters the reader shares while it runs.
#[derive(Default)]
struct ReaderLive {
    stop: AtomicBool,
    warm: AtomicU64,
    distinct: AtomicU64,
}

/// Reads `topic` from the beginning with keyscore's consumer settings (assigned, not
/// subscribed, no commits) and records each paced record's receipt time.
fn spawn_reader(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    total: u64,
    live: Arc<ReaderLive>,
) -> anyhow::Result<JoinHandle<ReaderOut>> {
    let cfg = kafka_config(bootstrap, &format!("reader-{topic}"), topic, topic);
    let mut ccfg = options::consumer_config(&cfg);
    ccfg.set("enable.auto.commit", "false");
    let reader: BaseConsumer = ccfg.create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    reader.assign(&tpl)?;
    Ok(std::thread::spawn(move || {
        let mut samples = Vec::with_capacity(total as usize);
        let mut seen = vec![false; total as usize];
        let mut duplicates = 0;
        while !live.stop.load(Ordering::Relaxed) {
            let Some(Ok(m)) = reader.poll(Duration::from_millis(20)) else {
                continue;
            };
            let recv_us = now_us();
            let Some(id) = m.payload().and_then(id_of) else {
                continue;
            };
            if id.first() == Some(&b'w') {
                live.warm.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Some((seq, due_us)) = seq_due(id) else {
                continue;
            };
            match seen.get_mut(seq as usize) {
                Some(s) if !*s => *s = true,
                _ => {
                    duplicates += 1;
                    continue;
                }
            }
            let v2 = m.headers().is_some_and(|hs| {
                hs.iter()
                    .any(|h| h.key == headers::MODEL_KEY && h.value == Some(SWAP_KEY.as_bytes()))
                    && hs
                        .iter()
                        .any(|h| h.key == headers::MODEL_VERSION && h.value == Some("2".as_bytes()))
            });
            samples.push(Sample {
                due_us,
                recv_us,
                v2,
            });
            live.distinct.fetch_add(1, Ordering::Relaxed);
        }
        ReaderOut {
            samples,
            duplicates,
        }
    }))
}

/// p50 and p99 of one slice of a run (by due time).
#[derive(Debug, Clone, serde::Serialize)]
struct Slice {
    from_s: u64,
    count: usize,
    p50_ms: f64,
    p99_ms: f64,
}

/// The hot swap of a keyscore run.
#[derive(Debug, Clone, serde::Serialize)]
struct Swap {
    /// When `keyscore activate` was started and when it returned, seconds into the run.
    activate_started_s: f64,
    activate_done_s: Option<f64>,
    /// The first output scored by v2: when it was received, and when its record was due.
    first_v2_received_s: Option<f64>,
    first_v2_due_s: Option<f64>,
    /// Records due within 0.5 s of the first v2 output's due time.
    swap_second: Option<Percentiles>,
    /// After the warm-up, leaving out records due from 1 s before the activation to 2 s after
    /// the first v2 output was received.
    steady: Percentiles,
}

/// One run's results.
#[derive(Debug, Clone, serde::Serialize)]
struct Run {
    engine: Engine,
    mode: Mode,
    rate: u64,
    seconds: u64,
    /// Records due in the run (rate times seconds).
    offered: u64,
    /// Records sent: fewer than offered when the sender gave up.
    sent: u64,
    received: u64,
    duplicates: u64,
    /// Records received only after the bench sent flush records behind the last one.
    received_after_flush: u64,
    producer_max_behind_ms: f64,
    scorer_cpu_us_per_record: f64,
    broker_cpu_us_per_record: f64,
    /// Records due after the warm-up.
    latency: Percentiles,
    slices: Vec<Slice>,
    swap: Option<Swap>,
    residence: Vec<Residence>,
}

/// What runs share: the bench's settings, the broker, the models.
struct Ctx<'a> {
    args: &'a Args,
    keyscore: PathBuf,
    dir: PathBuf,
    models: PathBuf,
    bodies: Arc<Vec<String>>,
}

/// A scorer under test: the passthrough child or `keyscore serve`.
struct Scorer {
    child: Child,
    /// keyscore's ops endpoint and store.
    ops: Option<String>,
    store: Option<String>,
    log: PathBuf,
}

impl Scorer {
    fn check(&mut self, what: &str) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{what} exited ({status}); its log:\n{}",
                common::tail(&self.log, 20)
            );
        }
        Ok(())
    }
}

fn spawn_keyscore(
    ctx: &Ctx<'_>,
    bootstrap: &str,
    input: &str,
    output: &str,
) -> anyhow::Result<Scorer> {
    let run_dir = ctx.dir.join(format!("keyscore-{output}"));
    std::fs::create_dir_all(&run_dir)?;
    let t = Instant::now();
    let store = prepare_store(&ctx.keyscore, &ctx.models, &run_dir.join("models.db"))?;
    eprintln!("  models uploaded in {:.1} s", t.elapsed().as_secs_f64());
    let ops = format!("127.0.0.1:{}", free_port()?);
    let config = run_dir.join("keyscore.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{store}\"\n\n[kafka]\nbootstrap_servers = \"{bootstrap}\"\n\
             group_id = \"g-{output}\"\ninput_topics = [\"{input}\"]\noutput_topic = \"{output}\"\n\
             dead_letter_topic = \"{output}-dead\"\ncreate_topics = false\n\n[ops]\nlisten = \"{ops}\"\n"
        ),
    )?;
    let log = run_dir.join("serve.log");
    let f = std::fs::File::create(&log)?;
    let child = Command::new(&ctx.keyscore)
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("RUST_LOG", "info")
        .env_remove("KEYSCORE_OPS_TOKEN")
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .spawn()
        .with_context(|| format!("spawning {} serve", ctx.keyscore.display()))?;
    Ok(Scorer {
        child,
        ops: Some(ops),
        store: Some(store),
        log,
    })
}

/// Runs `keyscore activate --key SWAP_KEY --version 2` on a thread; returns when it started
/// and a handle yielding when it returned.
fn activate_v2(keyscore: &Path, store: &str) -> (i64, JoinHandle<anyhow::Result<i64>>) {
    let (keyscore, store) = (keyscore.to_path_buf(), store.to_string());
    let started = now_us();
    let handle = std::thread::spawn(move || {
        run_keyscore(
            &keyscore,
            &[
                "--store",
                &store,
                "activate",
                "--key",
                SWAP_KEY,
                "--version",
                "2",
            ],
        )?;
        Ok(now_us())
    });
    (started, handle)
}

fn run_one(
    ctx: &Ctx<'_>,
    tansu: &mut Tansu,
    engine: Engine,
    mode: Mode,
    rate: u64,
) -> anyhow::Result<Run> {
    let args = ctx.args;
    let bootstrap = tansu.bootstrap();
    let seconds = args.seconds;
    let total = rate * seconds;
    let tag = format!("{}-{}", mode.label().replace(' ', "-"), unique());
    let input = format!("lat-in-{tag}");
    create_topics(&bootstrap, &[&input], args.partitions)?;
    let final_topic = match mode {
        Mode::Broker => input.clone(),
        _ => {
            let output = format!("lat-out-{tag}");
            create_topics(&bootstrap, &[&output], args.partitions)?;
            create_topics(&bootstrap, &[&format!("{output}-dead")], 1)?;
            output
        }
    };
    let mut scorer = match mode {
        Mode::Broker => None,
        Mode::Passthrough => {
            let log = ctx.dir.join(format!("passthrough-{tag}.log"));
            Some(Scorer {
                child: spawn_passthrough(&bootstrap, &input, &final_topic, Some(&log))?,
                ops: None,
                store: None,
                log,
            })
        }
        Mode::Keyscore => Some(spawn_keyscore(ctx, &bootstrap, &input, &final_topic)?),
    };
    // Whatever happens below, the scorer is stopped.
    struct Stop<'a>(&'a mut Option<Scorer>);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            if let Some(s) = self.0.as_mut() {
                terminate(&mut s.child);
            }
        }
    }
    let scorer = Stop(&mut scorer);

    let live = Arc::new(ReaderLive::default());
    let reader = spawn_reader(
        &bootstrap,
        &final_topic,
        args.partitions,
        total,
        live.clone(),
    )?;
    let cfg = kafka_config(&bootstrap, "unused", &input, &input);
    let mut pcfg = options::producer_config(&cfg);
    pcfg.set("linger.ms", args.bench_linger_ms.to_string());
    let producer: BaseProducer<Delivered> = pcfg.create_with_context(Delivered::default())?;
    let mut records = Records::new(ctx.bodies.clone(), rate ^ seconds);

    // Warm-up: the scorer has joined its group and loaded every key's model once these are
    // through.
    for i in 0..WARM_RECORDS {
        let (city, payload) = records.next(format_args!("w-{i}"));
        send_retrying(&producer, BaseRecord::to(&input).key(city).payload(payload))?;
    }
    producer.flush(Duration::from_secs(30))?;
    let deadline = Instant::now() + Duration::from_secs(90);
    while live.warm.load(Ordering::Relaxed) < WARM_RECORDS {
        ensure!(
            Instant::now() < deadline,
            "{}: {} of {WARM_RECORDS} warm-up records came through in 90 s",
            mode.label(),
            live.warm.load(Ordering::Relaxed)
        );
        if let Some(s) = scorer.0.as_mut() {
            s.check(mode.label())?;
        }
        tansu.check_alive()?;
        std::thread::sleep(Duration::from_millis(50));
    }
    let ops = scorer.0.as_ref().and_then(|s| s.ops.clone());
    let store = scorer.0.as_ref().and_then(|s| s.store.clone());
    let residence_before = match &ops {
        Some(addr) => Some(scrape_residence(addr)?),
        None => None,
    };

    // The paced phase: record i is due at start + i / rate.
    let ticks = clock_ticks();
    let scorer_pid = scorer.0.as_ref().map(|s| s.child.id());
    let cpu0 = (
        scorer_pid.map_or(f64::NAN, |p| cpu_seconds(p, ticks)),
        cpu_seconds(tansu.pid(), ticks),
    );
    let start = Instant::now() + Duration::from_millis(100);
    let start_us = now_us() + 100_000;
    let swap_due = Duration::from_secs_f64(seconds as f64 * args.swap_at);
    let mut swap: Option<(i64, JoinHandle<anyhow::Result<i64>>)> = None;
    let mut max_behind = Duration::ZERO;
    let slice = Duration::from_secs(args.slice_seconds.max(1));
    let mut next_report = slice;
    let give_up = Duration::from_secs(args.give_up_behind_seconds);
    let mut sent = total;
    for i in 0..total {
        let due = Duration::from_nanos(i * 1_000_000_000 / rate);
        let now = Instant::now();
        if now > start + due + give_up {
            eprintln!(
                "  giving up at {i} of {total} records: the sender is more than {} s behind",
                give_up.as_secs()
            );
            sent = i;
            break;
        }
        if now < start + due {
            // Sleep rather than spin: the two cores are the broker's and the scorer's. Waking
            // late only delays sends, which the latency (from the due time) includes.
            producer.poll(Duration::ZERO);
            std::thread::sleep(start + due - now);
        } else {
            max_behind = max_behind.max(now - (start + due));
        }
        if mode == Mode::Keyscore && swap.is_none() && due >= swap_due {
            if let Some(store) = &store {
                swap = Some(activate_v2(&ctx.keyscore, store));
            }
        }
        if due >= next_report {
            next_report += slice;
            eprintln!(
                "  {} s: sent {i}, received {}, sender at most {:.1} ms behind",
                due.as_secs(),
                live.distinct.load(Ordering::Relaxed),
                max_behind.as_secs_f64() * 1000.0
            );
            if let Some(s) = scorer.0.as_mut() {
                s.check(mode.label())?;
            }
            tansu.check_alive()?;
        }
        let due_us = start_us + due.as_micros() as i64;
        let (city, payload) = records.next(format_args!("{i}@{due_us}"));
        send_retrying(&producer, BaseRecord::to(&input).key(city).payload(payload))?;
        if i % 64 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(60))?;
    let failed = producer.context().failed.load(Ordering::Relaxed);
    ensure!(
        failed == 0,
        "{failed} records were not delivered to {input}: {}",
        producer.context().error.lock().expect("error lock")
    );

    // Wait for the rest; should the broker hold a partition's newest batch back, records sent
    // behind the last one (ids `x-...`, not counted) push it out.
    let mut received_at_flush = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut next_flush = Instant::now() + Duration::from_secs(5);
    let mut flushes = 0u64;
    while live.distinct.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
        if Instant::now() >= next_flush {
            received_at_flush.get_or_insert(live.distinct.load(Ordering::Relaxed));
            for (p, city) in CITIES.iter().enumerate() {
                let (_, payload) = records.next(format_args!("x-{flushes}-{p}"));
                let mut rec = BaseRecord::to(&input).key(*city).payload(payload);
                if mode == Mode::Broker {
                    rec = rec.partition(p as i32 % args.partitions);
                }
                send_retrying(&producer, rec)?;
            }
            flushes += 1;
            producer.flush(Duration::from_secs(5))?;
            next_flush = Instant::now() + Duration::from_millis(200);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let cpu1 = (
        scorer_pid.map_or(f64::NAN, |p| cpu_seconds(p, ticks)),
        cpu_seconds(tansu.pid(), ticks),
    );
    let residence = match (&ops, &residence_before) {
        (Some(addr), Some(before)) => residence(before, &scrape_residence(addr)?),
        _ => Vec::new(),
    };
    live.stop.store(true, Ordering::Relaxed);
    let ReaderOut {
        samples,
        duplicates,
    } = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))?;
    drop(scorer);
    let swap_times = match swap {
        Some((started, handle)) => {
            let done = match handle.join() {
                Ok(Ok(done)) => Some(done),
                Ok(Err(err)) => {
                    eprintln!("  activating {SWAP_KEY} v2 failed: {err:#}");
                    None
                }
                Err(_) => None,
            };
            Some((started, done))
        }
        None => None,
    };
    let received = samples.len() as u64;
    if received < sent {
        eprintln!(
            "  {} of {sent} records sent did not come through (see the logs in {})",
            sent - received,
            ctx.dir.display()
        );
    }

    let rel = |us: i64| (us - start_us) as f64 / 1e6;
    let lat = |s: &Sample| s.recv_us - s.due_us;
    let warm_until = start_us + (args.warmup_seconds * 1_000_000) as i64;
    let after_warmup: Vec<&Sample> = samples.iter().filter(|s| s.due_us >= warm_until).collect();
    let slice_us = (args.slice_seconds.max(1) * 1_000_000) as i64;
    let n_slices = seconds.div_ceil(args.slice_seconds.max(1)) as usize;
    let mut by_slice: Vec<Vec<i64>> = vec![Vec::new(); n_slices];
    for s in &samples {
        let k = ((s.due_us - start_us).max(0) / slice_us) as usize;
        if let Some(b) = by_slice.get_mut(k) {
            b.push(lat(s));
        }
    }
    let slices = by_slice
        .into_iter()
        .enumerate()
        .map(|(k, v)| {
            let p = percentiles(v);
            Slice {
                from_s: k as u64 * args.slice_seconds.max(1),
                count: p.count,
                p50_ms: p.p50_ms,
                p99_ms: p.p99_ms,
            }
        })
        .collect();
    let swap = swap_times.map(|(started, done)| {
        let first_v2 = samples.iter().filter(|s| s.v2).min_by_key(|s| s.recv_us);
        let quiet_from = started - 1_000_000;
        let quiet_until = first_v2.map_or(started, |s| s.recv_us) + 2_000_000;
        let steady = after_warmup
            .iter()
            .filter(|s| s.due_us < quiet_from || s.due_us >= quiet_until)
            .map(|s| lat(s))
            .collect();
        Swap {
            activate_started_s: rel(started),
            activate_done_s: done.map(rel),
            first_v2_received_s: first_v2.map(|s| rel(s.recv_us)),
            first_v2_due_s: first_v2.map(|s| rel(s.due_us)),
            swap_second: first_v2.map(|f| {
                percentiles(
                    samples
                        .iter()
                        .filter(|s| (s.due_us - f.due_us).abs() <= 500_000)
                        .map(lat)
                        .collect(),
                )
            }),
            steady: percentiles(steady),
        }
    });
    let run = Run {
        engine,
        mode,
        rate,
        seconds,
        offered: total,
        sent,
        received,
        duplicates,
        received_after_flush: received_at_flush.map_or(0, |at| received.saturating_sub(at)),
        producer_max_behind_ms: max_behind.as_secs_f64() * 1000.0,
        scorer_cpu_us_per_record: (cpu1.0 - cpu0.0) * 1e6 / sent.max(1) as f64,
        broker_cpu_us_per_record: (cpu1.1 - cpu0.1) * 1e6 / sent.max(1) as f64,
        latency: percentiles(after_warmup.iter().map(|s| lat(s)).collect()),
        slices,
        swap,
        residence,
    };
    eprintln!(
        "  {}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} of {} sent received)",
        mode.label(),
        run.latency.p50_ms,
        run.latency.p99_ms,
        run.latency.max_ms,
        run.received,
        run.sent
    );
    Ok(run)
}

// ---------------------------------------------------------------------------------------------
// Report

fn ms(x: f64) -> String {
    if x.is_nan() {
        "-".to_string()
    } else if x.is_infinite() {
        "inf".to_string()
    } else {
        format!("{x:.2}")
    }
}

fn run_label(args: &Args, mode: Mode) -> String {
    match mode {
        Mode::Keyscore => format!(
            "keyscore (MLP {}-{}-{}-1)",
            args.features, args.hidden, args.hidden
        ),
        m => m.label().to_string(),
    }
}

/// The markdown report of one engine at one rate.
fn markdown(args: &Args, runs: &[&Run]) -> String {
    let mut s = String::new();
    let Some(first) = runs.first() else {
        return s;
    };
    writeln!(
        s,
        "\n### {} engine, {} records/s offered for {} s\n",
        first.engine.name(),
        first.rate,
        first.seconds
    )
    .ok();
    writeln!(
        s,
        "Latency from each record's due time to its receipt by the bench's reader, ms \
         (records due after the first {} s):\n",
        args.warmup_seconds
    )
    .ok();
    writeln!(
        s,
        "| run | hops | received | p50 | p95 | p99 | p99.9 | max | sender behind (ms) | scorer CPU-us/record | broker CPU-us/record |"
    )
    .ok();
    writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|").ok();
    for r in runs {
        let l = &r.latency;
        writeln!(
            s,
            "| {} | {} | {} of {}{}{} | {} | {} | {} | {} | {} | {:.1} | {} | {} |",
            run_label(args, r.mode),
            r.mode.hops(),
            r.received,
            r.sent,
            if r.sent < r.offered {
                format!(" (gave up: {} offered)", r.offered)
            } else {
                String::new()
            },
            if r.received_after_flush > 0 {
                format!(" ({} after flushing)", r.received_after_flush)
            } else {
                String::new()
            },
            ms(l.p50_ms),
            ms(l.p95_ms),
            ms(l.p99_ms),
            ms(l.p999_ms),
            ms(l.max_ms),
            r.producer_max_behind_ms,
            ms(r.scorer_cpu_us_per_record),
            ms(r.broker_cpu_us_per_record),
        )
        .ok();
    }
    let p99 = |m: Mode| runs.iter().find(|r| r.mode == m).map(|r| r.latency.p99_ms);
    if let (Some(k), Some(p)) = (p99(Mode::Keyscore), p99(Mode::Passthrough)) {
        writeln!(
            s,
            "\nGoal, keyscore p99 <= passthrough p99 + 1 ms: {} <= {} + 1: **{}** ({:+.2} ms).",
            ms(k),
            ms(p),
            if k <= p + 1.0 { "met" } else { "not met" },
            k - p - 1.0
        )
        .ok();
    }
    if let Some(r) = runs.first() {
        writeln!(
            s,
            "\np50 / p99 of each {} s slice (by due time), ms:\n",
            args.slice_seconds
        )
        .ok();
        let mut head = "| run |".to_string();
        let mut rule = "|---|".to_string();
        for sl in &r.slices {
            write!(
                head,
                " {}-{} s |",
                sl.from_s,
                sl.from_s + args.slice_seconds
            )
            .ok();
            rule.push_str("---:|");
        }
        writeln!(s, "{head}\n{rule}").ok();
        for r in runs {
            write!(s, "| {} |", r.mode.label()).ok();
            for sl in &r.slices {
                write!(s, " {} / {} |", ms(sl.p50_ms), ms(sl.p99_ms)).ok();
            }
            writeln!(s).ok();
        }
    }
    for r in runs {
        if let Some(sw) = &r.swap {
            writeln!(
                s,
                "\nHot swap: `keyscore activate --key {SWAP_KEY} --version 2` started at {:.1} s, \
                 returned at {}; first output scored by v2 received at {}, due at {}.\n",
                sw.activate_started_s,
                sw.activate_done_s
                    .map_or("-".into(), |x| format!("{x:.1} s")),
                sw.first_v2_received_s
                    .map_or("-".into(), |x| format!("{x:.2} s")),
                sw.first_v2_due_s
                    .map_or("-".into(), |x| format!("{x:.2} s")),
            )
            .ok();
            writeln!(s, "| window | count | p50 | p99 | p99.9 | max |").ok();
            writeln!(s, "|---|---:|---:|---:|---:|---:|").ok();
            let mut rows = vec![("steady", &sw.steady)];
            if let Some(p) = &sw.swap_second {
                rows.push(("second centred on the first v2 output", p));
            }
            for (w, p) in rows {
                writeln!(
                    s,
                    "| {w} | {} | {} | {} | {} | {} |",
                    p.count,
                    ms(p.p50_ms),
                    ms(p.p99_ms),
                    ms(p.p999_ms),
                    ms(p.max_ms)
                )
                .ok();
            }
        }
        s.push_str(&residence::markdown(&r.residence));
    }
    s
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(spec) = &args.passthrough_child {
        return passthrough_child(spec);
    }
    ensure!(
        args.seconds > 0 && !args.rate.is_empty() && args.rate.iter().all(|&r| r > 0),
        "--seconds and every --rate must be positive"
    );
    ensure!(
        (0.0..1.0).contains(&args.swap_at),
        "--swap-at is a fraction of the run, in [0, 1)"
    );
    // `KEYSCORE_BIN` runs another build (say, a copy of one commit's binary for an A/B).
    let keyscore = std::env::var_os("KEYSCORE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_keyscore")));
    ensure!(
        keyscore.exists(),
        "no keyscore binary at {}",
        keyscore.display()
    );
    let tmp = tempfile::Builder::new()
        .prefix("keyscore-latency-")
        .tempdir()?;
    let dir = tmp.path().to_path_buf();
    eprintln!("latency: working in {}", dir.display());
    let models = if args.modes.contains(&Mode::Keyscore) {
        write_models(&dir, args.features, args.hidden)?
    } else {
        dir.join("models")
    };
    let ctx = Ctx {
        args: &args,
        keyscore,
        dir: dir.clone(),
        models,
        bodies: Arc::new(feature_bodies(args.features, 1024)),
    };
    let mut runs: Vec<Run> = Vec::new();
    let mut report = String::new();
    for &engine in &args.engine {
        for &rate in &args.rate {
            let mut tansu: Option<Tansu> = None;
            let first = runs.len();
            let mut failed: Vec<String> = Vec::new();
            for &mode in &args.modes {
                if tansu.is_none() || args.broker_per_run {
                    drop(tansu.take());
                    let broker = Tansu::start(&dir, engine, &args.pg_setting)?;
                    if args.sqlite_header_index {
                        broker.index_sqlite_headers()?;
                    }
                    tansu = Some(broker);
                }
                let broker = tansu.as_mut().expect("started above");
                eprintln!(
                    "latency: {} engine, {rate} records/s for {} s: {}",
                    engine.name(),
                    args.seconds,
                    mode.label()
                );
                // A run that fails (the broker cannot take the rate, say) is reported, and the
                // next run gets a fresh broker.
                match run_one(&ctx, broker, engine, mode, rate) {
                    Ok(run) => runs.push(run),
                    Err(err) => {
                        let line = format!(
                            "{} engine, {rate} records/s: {} failed: {err:#}",
                            engine.name(),
                            mode.label()
                        );
                        eprintln!("  {line}");
                        failed.push(line);
                        drop(tansu.take());
                    }
                }
            }
            let these: Vec<&Run> = runs[first..].iter().collect();
            let mut table = markdown(&args, &these);
            for line in &failed {
                table.push_str(&format!("\n**Failed:** {line}\n"));
            }
            eprint!("{table}");
            report.push_str(&table);
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&runs)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    std::io::stdout().write_all(report.as_bytes())?;
    Ok(())
}
