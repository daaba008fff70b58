//! The registry's hit path: from a record's key to its cached `Arc` model.
//!
//! Guards against regressions in `ModelRegistry::get` and `ModelRegistry::resolve` when the key
//! is cached, which every scored batch pays once per distinct key. They are compared, at 1 and
//! 2 threads over 1000 cached keys, with what the same lookup costs in structures built here:
//!
//! * `moka_future` / `moka_sync`: a bare `moka` cache of `Arc` models, to separate moka's own
//!   read path from what the registry adds around it;
//! * `snapshot`: an `arc_swap::ArcSwap<HashMap<String, Arc<_>>>`, loaded then looked up, the
//!   lock-free structure the hot path could read instead;
//! * `hashmap`: a plain `HashMap` lookup, the floor.
//!
//! Each measured iteration is one hit (the `Arc` clone included). Async lookups run inside
//! one `block_on` per sample on a current-thread tokio runtime, so the await is measured but
//! entering the runtime is not. At 2 threads each thread has its own runtime and does the same
//! number of hits while the other runs; the time per iteration is then the wall time per hit
//! on each thread.
//!
//! Issue 5's goal: serve hot reads from a faster structure if a moka hit costs more than about
//! 100 ns. After the criterion groups, `cargo bench` also prints medians of interleaved rounds
//! and each variant's ratio to `snapshot`, measured in the same process.
//!
//! Run with `cargo bench --bench registry`.

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use std::{
    collections::HashMap,
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use criterion::{criterion_group, BenchmarkId, Criterion};
use keyscore::{
    model::{
        spec::{OutputSpec, ParamsSpec, FORMAT_VERSION},
        ModelSpec,
    },
    registry::{ModelRegistry, RegistryConfig, Resolved, ServedModel},
    store::{MemoryModelStore, ModelStore},
    synth::Xoshiro256StarStar,
};
use keyscore_testkit::rounds::{self, Case};
use tokio::runtime::Runtime;

/// Cached keys.
const KEYS: usize = 1000;
/// Length of the pseudo-random key sequence the lookups walk.
const SEQUENCE: usize = 4096;

type Served = Arc<ServedModel>;

/// Everything a lookup variant reads, built once.
struct Fixture {
    keys: Vec<String>,
    /// Indices into `keys`, in the order lookups take them.
    sequence: Vec<usize>,
    registry: ModelRegistry,
    moka_future: moka::future::Cache<String, Served>,
    moka_sync: moka::sync::Cache<String, Served>,
    snapshot: ArcSwap<HashMap<String, Served>>,
    hashmap: HashMap<String, Served>,
    /// One current-thread runtime per thread.
    runtimes: [Runtime; 2],
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Variant {
    RegistryGet,
    RegistryResolve,
    MokaFuture,
    MokaSync,
    Snapshot,
    HashMap,
}

impl Variant {
    const ALL: [Variant; 6] = [
        Variant::RegistryGet,
        Variant::RegistryResolve,
        Variant::MokaFuture,
        Variant::MokaSync,
        Variant::Snapshot,
        Variant::HashMap,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::RegistryGet => "registry_get",
            Variant::RegistryResolve => "registry_resolve",
            Variant::MokaFuture => "moka_future",
            Variant::MokaSync => "moka_sync",
            Variant::Snapshot => "snapshot",
            Variant::HashMap => "hashmap",
        }
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A tiny linear model per key; only the lookup is measured, so the model's size is moot.
fn spec_json(k: usize) -> String {
    ModelSpec {
        format_version: FORMAT_VERSION,
        features: vec!["distance_km".into(), "items".into()],
        scaler: None,
        preprocess: None,
        model: ParamsSpec::Linear {
            coefficients: vec![1.5, k as f64],
            intercept: 12.0,
        },
        output: OutputSpec::Regression,
        metadata: None,
        reference: None,
    }
    .to_json()
}

fn fixture() -> Fixture {
    let keys: Vec<String> = (0..KEYS).map(|k| format!("city-{k:04}")).collect();
    // A fixed pseudo-random sequence of keys, repeats allowed, as records arrive.
    let mut rng = Xoshiro256StarStar::new(1);
    let sequence = (0..SEQUENCE).map(|_| rng.below(KEYS)).collect();
    let runtimes = [runtime(), runtime()];
    let store = Arc::new(MemoryModelStore::new());
    let registry = ModelRegistry::new(
        store.clone(),
        RegistryConfig {
            capacity: 10 * KEYS as u64,
            fallback_key: None,
            ..RegistryConfig::default()
        },
    );
    let served: Vec<Served> = runtimes[0].block_on(async {
        for (k, key) in keys.iter().enumerate() {
            let v = store.put_version(key, None, &spec_json(k)).await.unwrap();
            store.activate(key, v).await.unwrap();
        }
        let mut served = Vec::with_capacity(KEYS);
        for key in &keys {
            served.push(registry.get(key).await.unwrap().expect("key is active"));
        }
        served
    });
    let moka_future = moka::future::Cache::builder()
        .max_capacity(10 * KEYS as u64)
        .build();
    let moka_sync = moka::sync::Cache::builder()
        .max_capacity(10 * KEYS as u64)
        .build();
    runtimes[0].block_on(async {
        for (key, m) in keys.iter().zip(&served) {
            moka_future.insert(key.clone(), m.clone()).await;
            moka_sync.insert(key.clone(), m.clone());
        }
        moka_future.run_pending_tasks().await;
    });
    moka_sync.run_pending_tasks();
    let hashmap: HashMap<String, Served> = keys.iter().cloned().zip(served).collect();
    let fixture = Fixture {
        keys,
        sequence,
        registry,
        moka_future,
        moka_sync,
        snapshot: ArcSwap::from_pointee(hashmap.clone()),
        hashmap,
        runtimes,
    };
    // Every variant must hit, and return the same model, for every key.
    for (i, key) in fixture.keys.iter().enumerate() {
        let expect = &fixture.hashmap[key];
        for v in Variant::ALL {
            let got = fixture.lookup_once(v, i).expect("a hit");
            assert!(Arc::ptr_eq(&got, expect), "{} {key}", v.name());
        }
    }
    fixture
}

impl Fixture {
    /// One lookup of `keys[i]` outside the timed loops, for the fixture's self-check.
    fn lookup_once(&self, v: Variant, i: usize) -> Option<Served> {
        let key = self.keys[i].as_str();
        let rt = &self.runtimes[0];
        match v {
            Variant::RegistryGet => rt.block_on(self.registry.get(key)).unwrap(),
            Variant::RegistryResolve => match rt.block_on(self.registry.resolve(key)).unwrap() {
                Resolved::Own(m) => Some(m),
                _ => None,
            },
            Variant::MokaFuture => rt.block_on(self.moka_future.get(key)),
            Variant::MokaSync => self.moka_sync.get(key),
            Variant::Snapshot => self.snapshot.load().get(key).cloned(),
            Variant::HashMap => self.hashmap.get(key).cloned(),
        }
    }

    /// `n` hits on thread `t`, walking the key sequence from an offset that differs per thread.
    fn hits(&self, v: Variant, t: usize, n: u64) {
        let offset = t * SEQUENCE / 2;
        let keys =
            (0..n as usize).map(|i| self.keys[self.sequence[(offset + i) % SEQUENCE]].as_str());
        let rt = &self.runtimes[t];
        match v {
            Variant::RegistryGet => rt.block_on(async {
                for key in keys {
                    black_box(self.registry.get(black_box(key)).await.ok());
                }
            }),
            Variant::RegistryResolve => rt.block_on(async {
                for key in keys {
                    black_box(self.registry.resolve(black_box(key)).await.ok());
                }
            }),
            Variant::MokaFuture => rt.block_on(async {
                for key in keys {
                    black_box(self.moka_future.get(black_box(key)).await);
                }
            }),
            Variant::MokaSync => {
                for key in keys {
                    black_box(self.moka_sync.get(black_box(key)));
                }
            }
            Variant::Snapshot => {
                for key in keys {
                    black_box(self.snapshot.load().get(black_box(key)).cloned());
                }
            }
            Variant::HashMap => {
                for key in keys {
                    black_box(self.hashmap.get(black_box(key)).cloned());
                }
            }
        }
    }

    /// Wall time for each of `threads` threads to do `n` hits at once: from the first thread's
    /// start to the last thread's end, each timed by the thread itself (the spawning thread may
    /// not be scheduled when they start or finish).
    fn time(&self, v: Variant, threads: usize, n: u64) -> Duration {
        if threads == 1 {
            let start = Instant::now();
            self.hits(v, 0, n);
            return start.elapsed();
        }
        let barrier = std::sync::Barrier::new(threads);
        let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        let start = Instant::now();
                        self.hits(v, t, n);
                        (start, Instant::now())
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("lookup thread"))
                .collect()
        });
        let start = spans.iter().map(|s| s.0).min().expect("threads");
        let end = spans.iter().map(|s| s.1).max().expect("threads");
        end - start
    }
}

fn lookups(c: &mut Criterion) {
    let f = fixture();
    for threads in [1, 2] {
        let mut group = c.benchmark_group(format!(
            "hit_{threads}_thread{}",
            if threads > 1 { "s" } else { "" }
        ));
        for v in Variant::ALL {
            group.bench_function(BenchmarkId::from_parameter(v.name()), |b| {
                b.iter_custom(|iters| f.time(v, threads, iters))
            });
        }
        group.finish();
    }
}

/// Medians of interleaved rounds, and each variant's ratio to `snapshot` at the same thread
/// count: the variants share the machine's noise, so ratios hold better than absolute times.
fn summary() {
    const ROUNDS: usize = 21;
    let f = fixture();
    let mut cases = Vec::new();
    for threads in [1, 2] {
        for v in Variant::ALL {
            let f = &f;
            cases.push(Case::new(format!("{} x{threads}", v.name()), 1, move |n| {
                f.time(v, threads, n)
            }));
        }
    }
    let figures = rounds::run(&mut cases, ROUNDS, Duration::from_millis(20));
    let (one, two) = figures.split_at(Variant::ALL.len());
    let snapshot = Variant::ALL
        .iter()
        .position(|&v| v == Variant::Snapshot)
        .expect("snapshot is a variant");
    println!(
        "\nregistry hit path over {KEYS} cached keys: medians (best) of {ROUNDS} interleaved \
         rounds, ns per hit per thread"
    );
    println!("| lookup | 1 thread | / snapshot | 2 threads | / snapshot |");
    println!("|---|---|---|---|---|");
    for (i, v) in Variant::ALL.iter().enumerate() {
        println!(
            "| {} | {} ({}) | {:.1} | {} ({}) | {:.1} |",
            v.name(),
            rounds::ns(one[i].median),
            rounds::ns(one[i].best),
            one[i].median / one[snapshot].median,
            rounds::ns(two[i].median),
            rounds::ns(two[i].best),
            two[i].median / two[snapshot].median,
        );
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = lookups
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Only a real `cargo bench` run prints the ratios; `cargo test --benches` stays quick.
    if rounds::benching() {
        summary();
    }
}
