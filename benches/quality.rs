//! Live quality's costs, as ratios against runs made in the same process:
//!
//! * the label join's memory: bytes per prediction awaiting its label, at 10^5 and 10^6
//!   predictions, and that the cap holds memory flat when more arrive;
//! * the scoring path with the quality stage on (drift counters over 16 features, predictions
//!   remembered by id) against the same records with it off, over 1,000 keys.
//!
//! ```text
//! cargo bench --bench quality               # both (a minute or two)
//! cargo bench --bench quality -- --quick    # smaller sizes, a smoke run
//! ```

use std::{sync::Arc, time::Instant};

use keyscore::{
    quality::{now_ms, Arm, Made, Predicted, Quality, QualityConfig},
    registry::{ModelRegistry, RegistryConfig},
    store::{MemoryModelStore, ModelStore},
    stream::{file, RecordFormat, Scorer},
};
use serde_json::json;
use tokio::io::BufReader;

const FEATURES: usize = 16;
const KEYS: usize = 1000;

/// Resident memory of this process, bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn made(i: usize) -> Made {
    Made {
        key: Arc::from(format!("city-{}", i % KEYS).as_str()),
        version: 1,
        arm: Arm::Active,
        predicted: Predicted::Value(i as f64),
    }
}

/// Bytes per remembered prediction with `n` remembered (cap `n`), and the resident memory
/// after each of four more rounds of `n` arriving past the cap, relative to the first round's
/// (the allocator settles after the first; bounded means flat from then on).
fn join_memory(n: usize) -> (f64, Vec<f64>) {
    let q = Quality::new(QualityConfig {
        max_remembered: n,
        ..QualityConfig::default()
    });
    let before = rss_bytes();
    let now = now_ms();
    {
        let mut b = q.batch(now);
        for i in 0..n {
            b.remember(&format!("order-{i:012}"), made(i), None);
        }
    }
    let full = rss_bytes();
    let mut rounds = Vec::new();
    for round in 1..=4 {
        let mut b = q.batch(now);
        for i in round * n..(round + 1) * n {
            b.remember(&format!("order-{i:012}"), made(i), None);
        }
        drop(b);
        rounds.push(rss_bytes() as f64);
    }
    assert_eq!(q.awaiting(), n);
    let per = (full.saturating_sub(before)) as f64 / n as f64;
    let first = rounds[0];
    drop(q);
    (per, rounds.into_iter().map(|r| r / first).collect())
}

fn spec(with_reference: bool) -> String {
    let features: Vec<String> = (0..FEATURES).map(|i| format!("f{i}")).collect();
    let mut spec = json!({
        "format_version": 1,
        "features": features,
        "model": {"kind": "linear", "coefficients": vec![0.5; FEATURES], "intercept": 1.0},
        "output": {"type": "regression"},
    });
    if with_reference {
        let edges: Vec<f64> = (1..10).map(|i| i as f64 / 10.0).collect();
        let feature = json!({"edges": edges, "shares": vec![0.1; 10], "missing": 0.0, "min": 0.0, "max": 1.0});
        spec["reference"] = json!({
            "rows": 1000,
            "features": vec![feature; FEATURES],
            "prediction": {"edges": [2.0, 4.0, 6.0], "shares": [0.25, 0.25, 0.25, 0.25]},
        });
    }
    spec.to_string()
}

fn input(records: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(records * 300);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..records {
        let mut rec = serde_json::Map::new();
        rec.insert("id".into(), json!(format!("r{i}")));
        rec.insert("city".into(), json!(format!("city-{}", i % KEYS)));
        for f in 0..FEATURES {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            rec.insert(format!("f{f}"), json!((x % 1000) as f64 / 1000.0));
        }
        out.extend_from_slice(serde_json::Value::Object(rec).to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// Records per second scored from `input`, with the quality stage on or off.
/// How the quality stage runs.
#[derive(Clone, Copy)]
enum Stage {
    Off,
    /// Drift and dead letters only (no labels expected).
    Drift,
    /// Drift, and every prediction remembered for its label.
    Labels,
}

async fn throughput(store: Arc<dyn ModelStore>, input: &[u8], stage: Stage) -> f64 {
    let registry = Arc::new(ModelRegistry::new(store, RegistryConfig::default()));
    let mut scorer = Scorer::new(registry, RecordFormat::default());
    match stage {
        Stage::Off => {}
        Stage::Drift => scorer = scorer.with_quality(Quality::new(QualityConfig::default())),
        Stage::Labels => {
            scorer = scorer.with_quality(Quality::with_labels(QualityConfig::default()))
        }
    }
    // Warm the cache, then time.
    let (mut out, mut dead) = (Vec::new(), Vec::new());
    file::score_lines(&scorer, BufReader::new(input), &mut out, &mut dead, 1000)
        .await
        .unwrap();
    let started = Instant::now();
    let (mut out, mut dead) = (Vec::with_capacity(input.len()), Vec::new());
    let stats = file::score_lines(&scorer, BufReader::new(input), &mut out, &mut dead, 1000)
        .await
        .unwrap();
    assert_eq!(stats.dead_total(), 0);
    stats.scored_total() as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    println!("| case | figure | goal |");
    println!("|---|---|---|");
    for n in if quick {
        vec![100_000]
    } else {
        vec![100_000, 1_000_000]
    } {
        let (per, rounds) = join_memory(n);
        let rounds: Vec<String> = rounds.iter().map(|r| format!("x{r:.3}")).collect();
        println!(
            "| label join, cap {n} | {per:.0} bytes per prediction awaiting its label; RSS after 1..4 more rounds of {n} past the cap: {} | flat past the cap |",
            rounds.join(" ")
        );
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store: Arc<dyn ModelStore> = Arc::new(MemoryModelStore::new());
        let spec = spec(true);
        for k in 0..KEYS {
            let key = format!("city-{k}");
            store.put_version(&key, Some(1), &spec).await.unwrap();
            store.activate(&key, 1).await.unwrap();
        }
        let records = if quick { 50_000 } else { 300_000 };
        let input = input(records);
        for (stage, name, goal) in [
            (Stage::Drift, "drift only (no labels expected)", "≥ 0.8"),
            (Stage::Labels, "drift and every prediction remembered for its label", "≥ 0.6"),
        ] {
            let mut ratios = Vec::new();
            for _ in 0..3 {
                let off = throughput(Arc::clone(&store), &input, Stage::Off).await;
                let on = throughput(Arc::clone(&store), &input, stage).await;
                ratios.push((on / off, off, on));
            }
            ratios.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (ratio, off, on) = ratios[1];
            println!(
                "| scoring {records} records over {KEYS} keys, {FEATURES} features: {name}, against the stage off (median of 3) | x{ratio:.2} ({on:.0} vs {off:.0} records/s) | {goal} |"
            );
        }
    });
}
