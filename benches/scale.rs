//! Many keys: what 10^5 and 10^6 per-key models cost, end to end on the embedded store.
//!
//! Guards the regressions of the "many keys" work: a batch's missing keys loaded together,
//! a hit path whose cost does not grow with the number of keys, a watcher that reads pointers
//! rather than specs, bulk uploads in large transactions, a cache bounded in bytes. Prints one
//! table; throughput over many keys is given as a ratio to the 8-key run made in the same
//! process, so the figures hold on a noisy machine.
//!
//! ```text
//! cargo bench --bench scale                      # 10^5 and 10^6 keys (several minutes)
//! cargo bench --bench scale -- --keys 100000     # one size
//! cargo bench --bench scale -- --quick           # 10^4 keys, a smoke run
//! cargo bench --bench scale -- --keys 100000 --warm-only   # the warm phase alone, to profile
//! ```

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use keyscore::{
    model::{
        spec::{Activation, LayerSpec, OutputSpec, ParamsSpec, ThresholdPrecision},
        ModelSpec,
    },
    registry::{ModelRegistry, RegistryConfig},
    store::{EmbeddedModelStore, ModelStore, NewVersion},
    stream::{Input, Outcome, RecordFormat, Scorer},
    synth::Xoshiro256StarStar,
};

/// Features of the benchmark's linear models and records.
const FEATURES: usize = 16;

/// Records scored together, as `serve` batches them.
const BATCH: usize = 1000;

/// Records per throughput phase.
const RECORDS: usize = 1_000_000;

fn feature_names() -> Vec<String> {
    (0..FEATURES).map(|i| format!("f{i}")).collect()
}

fn spec(model: ParamsSpec, output: OutputSpec) -> String {
    serde_json::to_string(&ModelSpec {
        format_version: 1,
        features: feature_names(),
        scaler: None,
        preprocess: None,
        model,
        output,
        metadata: None,
        reference: None,
    })
    .expect("a spec serializes")
}

/// A linear regression over [`FEATURES`] features with coefficients drawn from `rng`.
fn linear_spec(rng: &mut Xoshiro256StarStar) -> String {
    spec(
        ParamsSpec::Linear {
            coefficients: (0..FEATURES).map(|_| rng.range(-2.0, 2.0)).collect(),
            intercept: rng.range(0.0, 50.0),
        },
        OutputSpec::Regression,
    )
}

fn logistic_spec(rng: &mut Xoshiro256StarStar) -> String {
    spec(
        ParamsSpec::Logistic {
            coefficients: vec![(0..FEATURES).map(|_| rng.range(-1.0, 1.0)).collect()],
            intercepts: vec![0.1],
        },
        OutputSpec::Classification {
            classes: vec!["no".into(), "yes".into()],
        },
    )
}

/// A forest of `trees` full trees of depth `depth`.
fn forest_spec(
    rng: &mut Xoshiro256StarStar,
    trees: usize,
    depth: u32,
    precision: ThresholdPrecision,
) -> String {
    let tree = |rng: &mut Xoshiro256StarStar| {
        keyscore_testkit::specs::full_tree(rng, FEATURES, depth, |r, _| r.range(-1.0, 1.0), 10.0)
    };
    spec(
        ParamsSpec::RandomForest {
            trees: (0..trees).map(|_| tree(rng)).collect(),
            threshold_precision: precision,
        },
        OutputSpec::Regression,
    )
}

fn mlp_spec(rng: &mut Xoshiro256StarStar) -> String {
    let mut layer = |inputs: usize, outputs: usize| LayerSpec {
        weights: (0..inputs)
            .map(|_| (0..outputs).map(|_| rng.range(-0.3, 0.3)).collect())
            .collect(),
        biases: (0..outputs).map(|_| rng.range(-0.1, 0.1)).collect(),
    };
    let layers = vec![layer(FEATURES, 64), layer(64, 64), layer(64, 1)];
    spec(
        ParamsSpec::Mlp {
            layers,
            hidden_activation: Activation::Relu,
            output_activation: Activation::Identity,
        },
        OutputSpec::Regression,
    )
}

fn key(i: usize) -> String {
    format!("k{i:07}")
}

/// One record for `key`, about 400 bytes: an id, the key, [`FEATURES`] numbers.
fn record(rng: &mut Xoshiro256StarStar, id: usize, key: &str) -> Vec<u8> {
    let mut s = format!("{{\"id\":\"r-{id}\",\"city\":\"{key}\"");
    for f in 0..FEATURES {
        // A number in [-3, 3) with four decimals, written without float formatting (which
        // would cost more than scoring the record).
        let n = rng.below(60_000) as i64 - 30_000;
        let sign = if n < 0 { "-" } else { "" };
        let n = n.unsigned_abs();
        s.push_str(&format!(",\"f{f}\":{sign}{}.{:04}", n / 10_000, n % 10_000));
    }
    s.push('}');
    s.into_bytes()
}

/// Draws key indexes in `0..n`: uniform, or Zipf with exponent `s` through an inverse-CDF
/// table (one binary search per draw).
enum Keys {
    Uniform(usize),
    Zipf(Vec<f64>),
}

impl Keys {
    fn zipf(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += (k as f64).powf(-s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Keys::Zipf(cdf)
    }

    fn draw(&self, rng: &mut Xoshiro256StarStar) -> usize {
        match self {
            Keys::Uniform(n) => rng.below(*n),
            Keys::Zipf(cdf) => {
                let u = rng.uniform();
                cdf.partition_point(|c| *c < u).min(cdf.len() - 1)
            }
        }
    }
}

/// Resident set size of this process, in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

struct Bench {
    rt: tokio::runtime::Runtime,
    rows: Vec<(String, String, String)>,
    /// Records/s of the 8-key run.
    baseline: Option<f64>,
    /// Records per throughput phase.
    records: usize,
    /// Only the warm phase (`--warm-only`).
    warm_only: bool,
}

impl Bench {
    fn row(&mut self, case: impl Into<String>, figure: impl Into<String>, goal: impl Into<String>) {
        let (case, figure, goal) = (case.into(), figure.into(), goal.into());
        eprintln!("  {case}: {figure}");
        self.rows.push((case, figure, goal));
    }

    /// A store with `n` linear-16 keys, bulk-uploaded and activated; returns it with the
    /// upload's models/s.
    fn store_with(&self, dir: &std::path::Path, n: usize) -> (Arc<EmbeddedModelStore>, f64) {
        let store = Arc::new(EmbeddedModelStore::open(dir.join(format!("scale-{n}.db"))).unwrap());
        let mut rng = Xoshiro256StarStar::new(7);
        let started = Instant::now();
        for chunk_start in (0..n).step_by(10_000) {
            let items: Vec<NewVersion> = (chunk_start..(chunk_start + 10_000).min(n))
                .map(|i| NewVersion {
                    key: key(i),
                    version: Some(1),
                    spec_json: linear_spec(&mut rng),
                })
                .collect();
            let stored = self.rt.block_on(store.put_versions(&items)).unwrap();
            let pairs: Vec<(String, i64)> = items
                .iter()
                .zip(stored)
                .map(|(item, v)| (item.key.clone(), v.expect("a valid spec")))
                .collect();
            for r in self.rt.block_on(store.activate_many(&pairs)).unwrap() {
                r.unwrap();
            }
        }
        let rate = n as f64 / started.elapsed().as_secs_f64();
        (store, rate)
    }

    fn registry(&self, store: &Arc<EmbeddedModelStore>, n: usize) -> Arc<ModelRegistry> {
        Arc::new(ModelRegistry::new(
            Arc::clone(store) as Arc<dyn ModelStore>,
            RegistryConfig {
                capacity: (n as u64).max(16) * 2,
                max_bytes: 16 << 30,
                fallback_key: None,
                refresh_interval: Duration::from_secs(3600),
                resync_every: 0,
            },
        ))
    }

    /// Scores [`Bench::records`] records whose keys come from `keys`, in batches; records/s.
    fn throughput(&self, scorer: &Scorer, keys: &Keys, seed: u64) -> f64 {
        let mut rng = Xoshiro256StarStar::new(seed);
        // Records are made before the clock starts; one batch at a time, so memory stays small.
        let batches: Vec<Vec<Vec<u8>>> = (0..self.records / BATCH)
            .map(|b| {
                (0..BATCH)
                    .map(|i| {
                        let k = key(keys.draw(&mut rng));
                        record(&mut rng, b * BATCH + i, &k)
                    })
                    .collect()
            })
            .collect();
        let started = Instant::now();
        let mut scored = 0usize;
        for batch in &batches {
            let inputs: Vec<Input<'_>> = batch
                .iter()
                .map(|p| Input {
                    payload: p,
                    key: None,
                })
                .collect();
            let scoring = self.rt.block_on(scorer.score(&inputs, None));
            scored += scoring
                .outcomes
                .iter()
                .filter(|o| matches!(o, Outcome::Scored(_)))
                .count();
        }
        let elapsed = started.elapsed();
        assert_eq!(scored, self.records, "every record scores");
        self.records as f64 / elapsed.as_secs_f64()
    }

    fn many_keys(&mut self, dir: &std::path::Path, n: usize) {
        eprintln!("{n} keys:");
        let (store, upload_rate) = self.store_with(dir, n);
        if self.warm_only {
            return self.warm_only(&store, n);
        }
        self.row(
            format!("bulk upload + activate, {n} linear-16 models (embedded)"),
            format!(
                "{upload_rate:.0} models/s ({:.1} s)",
                n as f64 / upload_rate
            ),
            if n == 1_000_000 {
                "10^6 in <= 120 s"
            } else {
                ""
            },
        );

        // Cold load: every key once, in batches of distinct keys.
        let registry = self.registry(&store, n);
        let keys: Vec<String> = (0..n).map(key).collect();
        let rss_before = rss_bytes();
        let started = Instant::now();
        for chunk in keys.chunks(BATCH) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            for r in self.rt.block_on(registry.resolve_many(&refs)) {
                r.unwrap();
            }
        }
        let cold = n as f64 / started.elapsed().as_secs_f64();
        let rss = rss_bytes().saturating_sub(rss_before);
        self.row(
            format!("cold load, {n} keys in batches of {BATCH} (embedded, linear-16)"),
            format!("{cold:.0} keys/s"),
            ">= 50,000 keys/s",
        );
        self.row(
            format!("RSS growth per 10^5 cached linear-16 models ({n} cached)"),
            format!(
                "{:.1} MB ({:.0} B per model)",
                rss as f64 * 1e5 / n as f64 / 1e6,
                rss as f64 / n as f64
            ),
            "<= 2 KB per model",
        );

        // Watcher: a poll with nothing changed, a resync, a poll after 10^4 activations.
        self.rt.block_on(registry.poll()).unwrap(); // takes the cursor (and resyncs once)
        let polls = 20;
        let started = Instant::now();
        for _ in 0..polls {
            self.rt.block_on(registry.poll()).unwrap();
        }
        let idle = started.elapsed() / polls;
        self.row(
            format!("watcher poll, nothing changed, {n} keys cached"),
            format!("{:.2} ms", idle.as_secs_f64() * 1e3),
            "<= 10 ms",
        );
        let started = Instant::now();
        self.rt.block_on(registry.resync()).unwrap();
        self.row(
            format!("resync (batched pointer reads), {n} keys cached"),
            format!("{:.2} s", started.elapsed().as_secs_f64()),
            "",
        );
        let changed = 10_000.min(n);
        let mut rng = Xoshiro256StarStar::new(99);
        let items: Vec<NewVersion> = (0..changed)
            .map(|i| NewVersion {
                key: key(i * (n / changed)),
                version: Some(2),
                spec_json: linear_spec(&mut rng),
            })
            .collect();
        let stored = self.rt.block_on(store.put_versions(&items)).unwrap();
        let pairs: Vec<(String, i64)> = items
            .iter()
            .zip(stored)
            .map(|(item, v)| (item.key.clone(), v.unwrap()))
            .collect();
        self.rt.block_on(store.activate_many(&pairs)).unwrap();
        let started = Instant::now();
        let seen = self.rt.block_on(registry.poll()).unwrap();
        let swap_poll = started.elapsed();
        assert_eq!(seen, changed);
        self.row(
            format!("watcher poll picking up {changed} activations, {n} keys cached"),
            format!("{:.0} ms", swap_poll.as_secs_f64() * 1e3),
            "",
        );
        drop(registry);

        // Throughput: cold (a fresh registry, keys loaded as records need them) then warm
        // (every key cached), uniform and Zipf(0.9).
        for (label, dist) in [
            ("uniform", Keys::Uniform(n)),
            ("Zipf(0.9)", Keys::zipf(n, 0.9)),
        ] {
            let registry = self.registry(&store, n);
            let scorer = Scorer::new(Arc::clone(&registry), RecordFormat::default());
            let cold = self.throughput(&scorer, &dist, 1);
            // Warm: every key cached first.
            for chunk in keys.chunks(BATCH) {
                let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                self.rt.block_on(registry.resolve_many(&refs));
            }
            let warm = self.throughput(&scorer, &dist, 2);
            let base = self.baseline.expect("the 8-key run comes first");
            self.row(
                format!("records/s over {n} keys, {label}, cold"),
                format!("{cold:.0} ({:.2}x the 8-key run)", cold / base),
                "",
            );
            self.row(
                format!("records/s over {n} keys, {label}, warm"),
                format!("{warm:.0} ({:.2}x the 8-key run)", warm / base),
                if n == 100_000 { ">= 0.8x" } else { "" },
            );
        }
    }
}

/// Bytes per built model by kind: the model's own accounting and the process's RSS growth.
fn bytes_per_model(bench: &mut Bench) {
    let mut rng = Xoshiro256StarStar::new(5);
    type Make = fn(&mut Xoshiro256StarStar) -> String;
    let kinds: [(&str, Make, usize); 5] = [
        ("linear-16", linear_spec, 100_000),
        ("logistic-16", logistic_spec, 100_000),
        (
            "forest 100 trees x depth 8, f64 thresholds",
            |r| forest_spec(r, 100, 8, ThresholdPrecision::F64),
            200,
        ),
        (
            "forest 100 trees x depth 8, f32 thresholds (as scikit-learn exports)",
            |r| forest_spec(r, 100, 8, ThresholdPrecision::F32),
            200,
        ),
        ("MLP 16-64-64-1", mlp_spec, 10_000),
    ];
    for (name, make, count) in kinds {
        let text = make(&mut rng);
        let before = rss_bytes();
        let models: Vec<_> = (0..count)
            .map(|_| {
                ModelSpec::from_json(text.as_bytes())
                    .unwrap()
                    .build()
                    .unwrap()
            })
            .collect();
        let rss = rss_bytes().saturating_sub(before) as f64 / count as f64;
        let own = models[0].heap_bytes();
        drop(models);
        bench.row(
            format!("bytes per built model, {name}"),
            format!("{own} B (RSS growth over {count}: {rss:.0} B)"),
            if name == "linear-16" { "<= 2 KB" } else { "" },
        );
    }
}

impl Bench {
    /// Records/s over 8 keys: the baseline every many-key run is compared with.
    /// Only the warm uniform phase, three times: for profiling the hit path.
    fn warm_only(&mut self, store: &Arc<EmbeddedModelStore>, n: usize) {
        let registry = self.registry(store, n);
        let scorer = Scorer::new(Arc::clone(&registry), RecordFormat::default());
        let keys: Vec<String> = (0..n).map(key).collect();
        let started = Instant::now();
        for chunk in keys.chunks(BATCH) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            self.rt.block_on(registry.resolve_many(&refs));
        }
        let cold = n as f64 / started.elapsed().as_secs_f64();
        self.row(
            format!("cold load, {n} keys"),
            format!("{cold:.0} keys/s"),
            "",
        );
        let base = self.baseline.expect("the 8-key run comes first");
        for round in 0..3 {
            let warm = self.throughput(&scorer, &Keys::Uniform(n), 10 + round);
            self.row(
                format!("records/s over {n} keys, uniform, warm (round {round})"),
                format!("{warm:.0} ({:.2}x the 8-key run)", warm / base),
                "",
            );
        }
    }

    fn eight_keys(&mut self, dir: &std::path::Path) {
        let (store, _) = self.store_with(dir, 8);
        let registry = self.registry(&store, 8);
        let scorer = Scorer::new(Arc::clone(&registry), RecordFormat::default());
        self.throughput(&scorer, &Keys::Uniform(8), 3); // warm up
        let rate = self.throughput(&scorer, &Keys::Uniform(8), 4);
        self.baseline = Some(rate);
        self.row("records/s over 8 keys (baseline)", format!("{rate:.0}"), "");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<usize> = if args.iter().any(|a| a == "--quick") {
        vec![10_000]
    } else if let Some(i) = args.iter().position(|a| a == "--keys") {
        vec![args[i + 1].parse().expect("--keys N")]
    } else {
        vec![100_000, 1_000_000]
    };
    // `cargo test --benches` runs bench binaries with `--test`: keep that to a smoke run.
    let smoke = args.iter().any(|a| a == "--test");
    let sizes = if smoke { vec![2_000] } else { sizes };
    let records = if smoke || args.iter().any(|a| a == "--quick") {
        20_000
    } else {
        RECORDS
    };
    let dir = tempfile::tempdir().unwrap();
    let mut bench = Bench {
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
        rows: Vec::new(),
        baseline: None,
        records,
        warm_only: args.iter().any(|a| a == "--warm-only"),
    };
    // First, while the heap is fresh: RSS growth is only meaningful before big phases free
    // memory the allocator then reuses.
    if !bench.warm_only {
        bytes_per_model(&mut bench);
    }
    bench.eight_keys(dir.path());
    for n in sizes {
        bench.many_keys(dir.path(), n);
    }
    println!("\n| case | measured | goal |\n|---|---:|---|");
    for (case, figure, goal) in &bench.rows {
        println!("| {case} | {figure} | {goal} |");
    }
}
