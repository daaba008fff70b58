//! The operations endpoint: Prometheus metrics, health and readiness, and a status page, on
//! one small HTTP listener (`[ops] listen`, default `127.0.0.1:9464`; on for `serve`, off for
//! `score` unless `--ops-listen` is given).
//!
//! | path | what |
//! |---|---|
//! | `/metrics` | Prometheus text format |
//! | `/healthz` | 200 while the process runs |
//! | `/readyz` | 200 when the model store answers and, for `serve`, the consumer holds an assignment; else 503 with the reasons |
//! | `/status.json` | keys, versions, swaps, throughput, recent scores, dead letters, canaries, shadows |
//! | `/` | the status page: one static HTML file that polls `/status.json` |
//!
//! # Per-key series
//!
//! Keys can number in the hundreds of thousands, so per-key series (`keyscore_key_*{key=..}`)
//! are exported for a bounded set: the `[ops] top_keys` keys (default 20) with the most records
//! scored, plus up to `top_keys` more keys whose served version lags the store's active version.
//! Everything else is in the unlabelled totals and in `keyscore_keys_lagging`.
//!
//! # Version lag
//!
//! A key lags when this process serves a different version than the store names active: the
//! new version was refused (it does not build), or the watcher has not picked it up yet. The
//! store's side comes from a listing re-read every `[ops] store_scan_interval_ms`; a key whose
//! model was swapped after the last listing is not judged until the next one.

pub(crate) mod http;
pub mod metrics;

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{atomic::Ordering, Arc, Mutex},
    time::{Duration, SystemTime},
};

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use metrics::Metrics;

use crate::{
    config::OpsConfig,
    registry::{ModelRegistry, Swap},
};
use metrics::{escape_label, unix_ms, KeyActivity};

/// The status page, served at `/`.
const STATUS_PAGE: &str = include_str!("status.html");

/// The most keys `/status.json` lists.
const MAX_STATUS_KEYS: usize = 500;

/// Bins of the per-key score histogram in `/status.json`.
const SCORE_BINS: usize = 10;

/// What the store's key listing said, and when.
#[derive(Debug, Default)]
struct StoreView {
    at: Option<SystemTime>,
    active: BTreeMap<String, Option<i64>>,
    error: Option<String>,
}

/// One key as `/status.json` and the per-key metrics see it.
#[derive(Debug, Clone, Default)]
struct KeyRow {
    key: String,
    active: Option<i64>,
    served: Option<i64>,
    refused: Option<i64>,
    served_since: Option<SystemTime>,
    lagging: bool,
    activity: KeyActivity,
    last_swap: Option<Swap>,
}

/// The operations endpoint's state: metrics, the registry, and the store listing.
#[derive(Debug)]
pub struct Ops {
    metrics: Arc<Metrics>,
    registry: Arc<ModelRegistry>,
    config: OpsConfig,
    store_view: Mutex<StoreView>,
}

impl Ops {
    /// Operations state over `registry`, reporting `metrics`.
    pub fn new(registry: Arc<ModelRegistry>, metrics: Arc<Metrics>, config: OpsConfig) -> Self {
        Self {
            metrics,
            registry,
            config,
            store_view: Mutex::new(StoreView::default()),
        }
    }

    /// The metrics reported.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Listens on `listen` and serves until `cancel` fires; also re-reads the store listing
    /// every `store_scan_interval_ms`. Returns the bound address (useful with port 0).
    pub async fn start(
        self: &Arc<Self>,
        listen: &str,
        cancel: CancellationToken,
    ) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        info!(addr = %addr, "Operations endpoint listening.");
        tokio::spawn(http::serve(listener, Arc::clone(self), cancel.clone()));
        let ops = Arc::clone(self);
        let interval = Duration::from_millis(self.config.store_scan_interval_ms.max(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => ops.scan_store().await,
                }
            }
        });
        Ok(addr)
    }

    /// Re-reads the store's key listing.
    pub async fn scan_store(&self) {
        let result = self.registry.store().list().await;
        let mut view = self.store_view.lock().expect("store view lock");
        match result {
            Ok(keys) => {
                view.active = keys.into_iter().map(|k| (k.key, k.active)).collect();
                view.at = Some(SystemTime::now());
                view.error = None;
            }
            Err(err) => {
                if view.error.is_none() {
                    warn!(error = %err, "Listing the model store for the status view failed.");
                }
                view.error = Some(err.to_string());
            }
        }
    }

    /// Answers one request path.
    pub(crate) fn route(&self, path: &str) -> http::Response {
        use http::Response;
        match path {
            "/" | "/index.html" => Response::new("200 OK", "text/html; charset=utf-8", STATUS_PAGE),
            "/metrics" => Response::new(
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                self.prometheus(),
            ),
            "/healthz" => Response::new("200 OK", "text/plain", "ok\n"),
            "/readyz" => {
                let problems = self.readiness();
                if problems.is_empty() {
                    Response::new("200 OK", "text/plain", "ready\n")
                } else {
                    Response::new(
                        "503 Service Unavailable",
                        "text/plain",
                        format!("not ready: {}\n", problems.join("; ")),
                    )
                }
            }
            "/status.json" => Response::new(
                "200 OK",
                "application/json",
                serde_json::to_vec(&self.status()).expect("status JSON serializes"),
            ),
            _ => Response::new("404 Not Found", "text/plain", "not found\n"),
        }
    }

    /// Why the process is not ready; empty when it is.
    pub fn readiness(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let scan_error = self
            .store_view
            .lock()
            .expect("store view lock")
            .error
            .clone();
        if !self.registry.store_healthy() {
            problems.push("the model store is unreachable".to_string());
        } else if let Some(err) = scan_error {
            problems.push(format!("the model store failed: {err}"));
        }
        if self.metrics.is_kafka() && !self.metrics.has_assignment() {
            problems.push("no partitions assigned yet (joining the consumer group)".to_string());
        }
        problems
    }

    fn key_rows(&self) -> Vec<KeyRow> {
        let (scan_at, active) = {
            let view = self.store_view.lock().expect("store view lock");
            (view.at, view.active.clone())
        };
        let mut rows: HashMap<String, KeyRow> = HashMap::new();
        for (key, version) in &active {
            rows.entry(key.clone()).or_default().active = *version;
        }
        for status in self.registry.key_status() {
            let row = rows.entry(status.key.clone()).or_default();
            row.served = status.served_version;
            row.refused = status.refused_version;
            row.served_since = status.served_since;
            let judged = match (scan_at, status.served_since) {
                (Some(scan), Some(since)) => scan > since,
                (Some(_), None) => true,
                (None, _) => false,
            };
            row.lagging = status.refused_version.is_some()
                || (judged && row.active.is_some() && row.active != status.served_version);
        }
        for (key, activity) in self.metrics.key_activity() {
            rows.entry(key).or_default().activity = activity;
        }
        for swap in self.registry.swaps() {
            if let Some(row) = rows.get_mut(&swap.key) {
                row.last_swap = Some(swap);
            }
        }
        let mut rows: Vec<KeyRow> = rows
            .into_iter()
            .map(|(key, mut row)| {
                row.key = key;
                row
            })
            .collect();
        rows.sort_by(|a, b| {
            b.activity
                .scored
                .cmp(&a.activity.scored)
                .then_with(|| a.key.cmp(&b.key))
        });
        rows
    }

    /// The Prometheus exposition text.
    pub fn prometheus(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(8 * 1024);
        self.metrics.render(&mut out);
        let stats = self.registry.stats();
        for (name, help, value) in [
            (
                "keyscore_model_loads_total",
                "Models loaded on a key's first use.",
                stats.loads.load(Ordering::Relaxed),
            ),
            (
                "keyscore_model_swaps_total",
                "New versions swapped in by the watcher.",
                stats.swaps.load(Ordering::Relaxed),
            ),
            (
                "keyscore_model_build_failures_total",
                "Versions refused because they did not build.",
                stats.build_failures.load(Ordering::Relaxed),
            ),
            (
                "keyscore_store_errors_total",
                "Failed model store calls.",
                stats.store_errors.load(Ordering::Relaxed),
            ),
            (
                "keyscore_cache_hits_total",
                "Model lookups answered from the cache.",
                stats.hits.load(Ordering::Relaxed),
            ),
            (
                "keyscore_cache_misses_total",
                "Model lookups that waited for a load.",
                stats.misses.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP keyscore_cache_keys Keys held in the model cache.\n# TYPE keyscore_cache_keys gauge\nkeyscore_cache_keys {}",
            // Counted by iterating: the cache's own count lags behind its pending maintenance.
            self.registry.key_status().len()
        );
        let _ = writeln!(
            out,
            "# HELP keyscore_store_up Whether the last model store call succeeded.\n# TYPE keyscore_store_up gauge\nkeyscore_store_up {}",
            u8::from(self.registry.store_healthy())
        );

        let rows = self.key_rows();
        let lagging = rows.iter().filter(|r| r.lagging).count();
        let _ = writeln!(
            out,
            "# HELP keyscore_keys_lagging Keys whose served version differs from the store's active version.\n# TYPE keyscore_keys_lagging gauge\nkeyscore_keys_lagging {lagging}"
        );
        let top = self.config.top_keys;
        let mut chosen: Vec<&KeyRow> = rows
            .iter()
            .filter(|r| r.activity.scored > 0)
            .take(top)
            .collect();
        let extra: Vec<&KeyRow> = rows
            .iter()
            .filter(|r| r.lagging && !chosen.iter().any(|c| c.key == r.key))
            .take(top)
            .collect();
        chosen.extend(extra);
        type Series = (&'static str, &'static str, &'static str);
        let series: [Series; 7] = [
            (
                "keyscore_key_records_total",
                "counter",
                "Records scored with the key's own models (top keys by traffic and lagging keys).",
            ),
            (
                "keyscore_key_canary_records_total",
                "counter",
                "Records of the key scored by its canary version.",
            ),
            (
                "keyscore_key_active_version",
                "gauge",
                "The version the store names active.",
            ),
            (
                "keyscore_key_served_version",
                "gauge",
                "The version this process serves.",
            ),
            (
                "keyscore_key_version_lag",
                "gauge",
                "1 when the served version differs from the store's active version.",
            ),
            (
                "keyscore_key_shadow_mean_abs_diff",
                "gauge",
                "Mean absolute difference between primary and shadow regression outputs.",
            ),
            (
                "keyscore_key_shadow_agreement_ratio",
                "gauge",
                "Share of records on which primary and shadow classifiers agree.",
            ),
        ];
        for (i, (name, kind, help)) in series.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for row in &chosen {
                let value = match i {
                    0 => Some(row.activity.scored as f64),
                    1 => Some(row.activity.canary as f64),
                    2 => row.active.map(|v| v as f64),
                    3 => row.served.map(|v| v as f64),
                    4 => Some(if row.lagging { 1.0 } else { 0.0 }),
                    5 => row.activity.shadow.mean_abs_diff(),
                    _ => row.activity.shadow.agreement(),
                };
                if let Some(v) = value {
                    let _ = writeln!(out, "{name}{{key=\"{}\"}} {v}", escape_label(&row.key));
                }
            }
        }
        out
    }

    /// The document `/status.json` serves.
    pub fn status(&self) -> Value {
        let now = SystemTime::now();
        let now_sec = unix_ms(now) / 1000;
        let rows = self.key_rows();
        let (scan_at, scan_error) = {
            let view = self.store_view.lock().expect("store view lock");
            (view.at, view.error.clone())
        };
        let keys: Vec<Value> = rows
            .iter()
            .take(MAX_STATUS_KEYS)
            .map(|r| {
                let rollout = self.registry.rollout(&r.key);
                json!({
                    "key": r.key,
                    "active_version": r.active,
                    "served_version": r.served,
                    "refused_version": r.refused,
                    "lagging": r.lagging,
                    "served_since_ms": r.served_since.map(unix_ms),
                    "last_swap": r.last_swap.as_ref().map(|s| json!({
                        "from": s.from, "to": s.to, "at_ms": unix_ms(s.at),
                    })),
                    "canary": rollout.as_ref().and_then(|ro| ro.canary.as_ref()).map(|c| json!({
                        "version": c.model.version, "share": c.share,
                    })),
                    "shadow": rollout.as_ref().and_then(|ro| ro.shadow.as_ref()).map(|m| json!({
                        "version": m.version,
                    })),
                    "records": r.activity.scored,
                    "records_per_s": r.activity.rate(now_sec),
                    "canary_records": r.activity.canary,
                    "dead_letters": r.activity.dead,
                    "scores": score_histogram(&r.activity),
                    "shadow_divergence": (r.activity.shadow.compared > 0 || r.activity.shadow.failed > 0).then(|| json!({
                        "compared": r.activity.shadow.compared,
                        "mean_abs_diff": r.activity.shadow.mean_abs_diff(),
                        "agreement": r.activity.shadow.agreement(),
                        "shadow_failed": r.activity.shadow.failed,
                    })),
                })
            })
            .collect();
        let swaps: Vec<Value> = self
            .registry
            .swaps()
            .iter()
            .rev()
            .take(20)
            .map(|s| json!({"key": s.key, "from": s.from, "to": s.to, "at_ms": unix_ms(s.at)}))
            .collect();
        let problems = self.readiness();
        let lag: Vec<Value> = self
            .metrics
            .consumer_lag()
            .into_iter()
            .map(|((topic, partition), lag)| {
                json!({"topic": topic, "partition": partition, "lag": lag})
            })
            .collect();
        json!({
            "now_ms": unix_ms(now),
            "started_ms": unix_ms(self.metrics.started()),
            "ready": problems.is_empty(),
            "not_ready_because": problems,
            "store": {
                "url": self.registry.store().describe(),
                "healthy": self.registry.store_healthy(),
                "listed_at_ms": scan_at.map(unix_ms),
                "error": scan_error,
            },
            "totals": self.metrics.totals(),
            "cache_keys": self.registry.key_status().len(),
            "keys_total": rows.len(),
            "keys": keys,
            "swaps": swaps,
            "recent_dead_letters": self.metrics.recent_dead_letters().into_iter().rev().collect::<Vec<_>>(),
            "kafka": self.metrics.is_kafka().then(|| json!({
                "has_assignment": self.metrics.has_assignment(),
                "partitions_assigned": self.metrics.assigned().len(),
                "consumer_lag": lag,
            })),
        })
    }
}

/// A histogram of a key's recent scores: equal-width bins between the smallest and largest.
fn score_histogram(a: &KeyActivity) -> Value {
    let finite: Vec<f64> = a.recent.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return Value::Null;
    }
    let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut counts = [0u64; SCORE_BINS];
    let width = (max - min) / SCORE_BINS as f64;
    for v in &finite {
        let i = if width > 0.0 {
            (((v - min) / width) as usize).min(SCORE_BINS - 1)
        } else {
            0
        };
        counts[i] += 1;
    }
    json!({"min": min, "max": max, "counts": counts, "n": finite.len()})
}
