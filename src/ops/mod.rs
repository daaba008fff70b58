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
//! The endpoint renders and serves; it owns no counter. Every series belongs to the component
//! that counts it and is registered here (see [`exposition`] for the bounded per-key series).
//!
//! # Version lag
//!
//! A key lags when this process serves a different version than the store names active: the
//! new version was refused (it does not build), or the watcher has not picked it up yet. The
//! store's side comes from the pointers of its keys re-read every `[ops] store_scan_interval_ms`; a key whose
//! model was swapped after the last scan is not judged until the next one.

mod auth;
mod config;
mod exposition;
pub(crate) mod http;
mod keys;
mod quality;
mod series;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use auth::TOKEN_ENV;
pub use config::OpsConfig;

use crate::{
    registry::ModelRegistry,
    stream::{
        kafka::GroupState,
        metrics::{unix_ms, KeyActivity},
        Metrics,
    },
};
use keys::{KeyView, StoreView};

/// The status page, served at `/`.
const STATUS_PAGE: &str = include_str!("status.html");

/// The most keys `/status.json` lists.
const MAX_STATUS_KEYS: usize = 500;

/// Bins of the per-key score histogram in `/status.json`.
const SCORE_BINS: usize = 10;

/// The operations endpoint's state: what it reads, and the Prometheus registry every
/// component's series are registered with.
pub struct Ops {
    keys: Arc<KeyView>,
    quality: Option<Arc<crate::quality::Quality>>,
    group: Option<Arc<GroupState>>,
    config: OpsConfig,
    exposition: prometheus::Registry,
    auth: auth::OpsAuth,
    series: Arc<series::Series>,
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Ops {
    /// Operations state over `registry`, reporting `metrics` and, for a Kafka consumer, the
    /// consumer-group state `group` (readiness then needs an assignment).
    pub fn new(
        registry: Arc<ModelRegistry>,
        metrics: Arc<Metrics>,
        group: Option<Arc<GroupState>>,
        config: OpsConfig,
    ) -> Self {
        let exposition = prometheus::Registry::new();
        let keys = Arc::new(KeyView {
            metrics: Arc::clone(&metrics),
            registry: Arc::clone(&registry),
            store_view: Mutex::new(StoreView::default()),
            scanning: tokio::sync::Mutex::new(()),
        });
        // Registration fails only on a name registered twice: a bug, caught by the tests.
        metrics
            .register(&exposition)
            .expect("scoring metrics register once");
        registry
            .register_metrics(&exposition)
            .expect("registry metrics register once");
        if let Some(group) = &group {
            group
                .register(&exposition)
                .expect("consumer-group metrics register once");
        }
        exposition
            .register(Box::new(
                exposition::KeySeries::new(Arc::clone(&keys), config.top_keys)
                    .expect("valid per-key series"),
            ))
            .expect("per-key series register once");
        Self {
            keys,
            quality: None,
            group,
            config,
            exposition,
            auth: auth::OpsAuth::from_env(),
            series: Arc::default(),
        }
    }

    /// The same endpoint, also showing live quality: its counters and the bounded
    /// per-(key, version, arm) series on `/metrics`, each key's windows in `/status.json`.
    pub fn with_quality(mut self, quality: Arc<crate::quality::Quality>) -> Self {
        quality
            .metrics()
            .register(&self.exposition)
            .expect("quality metrics register once");
        self.exposition
            .register(Box::new(
                quality::QualitySeries::new(Arc::clone(&quality), self.config.top_keys)
                    .expect("valid quality series"),
            ))
            .expect("quality series register once");
        self.quality = Some(quality);
        self
    }

    /// The metrics reported.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.keys.metrics
    }

    /// Listens on `listen` and serves until `cancel` fires; also re-reads the store's pointers
    /// every `store_scan_interval_ms`. Returns the bound address (useful with port 0).
    pub async fn start(
        self: &Arc<Self>,
        listen: &str,
        cancel: CancellationToken,
    ) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        info!(addr = %addr, token = self.auth.required(), "Operations endpoint listening.");
        if !addr.ip().is_loopback() {
            if self.auth.required() {
                info!(
                    addr = %addr,
                    "The operations endpoint listens beyond this machine; /metrics and \
                     /status.json need the bearer token from {}.",
                    auth::TOKEN_ENV
                );
            } else {
                warn!(
                    addr = %addr,
                    "The operations endpoint listens beyond this machine and anyone who reaches \
                     it can read /status.json (keys, versions, dead-letter messages) and \
                     /metrics; set {} to require a bearer token.",
                    auth::TOKEN_ENV
                );
            }
        }
        tokio::spawn(http::serve(listener, Arc::clone(self), cancel.clone()));
        let interval = Duration::from_millis(self.config.store_scan_interval_ms.max(100));
        // The charts' points: one per scan interval, the last series::SAMPLES kept.
        let (series, metrics) = (Arc::clone(&self.series), Arc::clone(self.metrics()));
        let sampling = cancel.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = sampling.cancelled() => break,
                    _ = tick.tick() => {
                        let t = metrics.totals();
                        series.sample((t.records_in, t.scored, t.dead_letters), &metrics.scoring);
                    }
                }
            }
        });
        let keys = Arc::clone(&self.keys);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => keys.scan_store().await,
                }
            }
        });
        Ok(addr)
    }

    /// Re-reads the store's pointers of the shown keys now.
    pub async fn scan_store(&self) {
        self.keys.scan_store().await;
    }

    /// The Prometheus exposition text, as `/metrics` serves it.
    pub fn prometheus(&self) -> String {
        exposition::encode(&self.exposition)
    }

    /// Answers one request for `path` with the request head `head` (checked for the bearer
    /// token when one is set).
    pub(crate) fn answer(&self, path: &str, head: &[u8]) -> http::Response {
        if self.auth.allows(path, head) {
            self.route(path)
        } else {
            http::Response::unauthorized()
        }
    }

    /// Answers one request path.
    pub(crate) fn route(&self, path: &str) -> http::Response {
        use http::Response;
        match path {
            "/" | "/index.html" => Response::new("200 OK", "text/html; charset=utf-8", STATUS_PAGE),
            "/metrics" => Response::new(
                "200 OK",
                exposition::CONTENT_TYPE,
                exposition::encode(&self.exposition),
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
            .keys
            .store_view
            .lock()
            .expect("store view lock")
            .error
            .clone();
        if !self.keys.registry.store_healthy() {
            problems.push("the model store is unreachable".to_string());
        } else if let Some(err) = scan_error {
            problems.push(format!("the model store failed: {err}"));
        }
        if let Some(since) = self.group.as_ref().and_then(|g| g.brokers_down_since()) {
            let secs = SystemTime::now()
                .duration_since(since)
                .map_or(0, |d| d.as_secs());
            problems.push(format!("no Kafka broker connection for {secs} s"));
        }
        if self.group.as_ref().is_some_and(|g| !g.has_assignment()) {
            problems.push("no partitions assigned yet (joining the consumer group)".to_string());
        }
        problems
    }

    /// The document `/status.json` serves.
    pub fn status(&self) -> Value {
        let now = SystemTime::now();
        let now_sec = unix_ms(now) / 1000;
        let rows = self.keys.rows();
        let (scan_at, scan_error) = {
            let view = self.keys.store_view.lock().expect("store view lock");
            (view.at, view.error.clone())
        };
        let keys: Vec<Value> = rows
            .iter()
            .take(MAX_STATUS_KEYS)
            .map(|r| {
                let rollout = self.keys.registry.rollout(&r.key);
                json!({
                    "key": r.key,
                    "active_version": r.active,
                    "served_version": r.served,
                    "refused_version": r.refused,
                    "refused_reason": r.refused_reason,
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
                    "quality": self.quality.as_deref().map(|q| quality::key_status(q, &r.key)),
                })
            })
            .collect();
        let swaps: Vec<Value> = self
            .keys
            .registry
            .swaps()
            .iter()
            .rev()
            .take(20)
            .map(|s| json!({"key": s.key, "from": s.from, "to": s.to, "at_ms": unix_ms(s.at)}))
            .collect();
        let problems = self.readiness();
        let lag: Vec<Value> = self
            .group
            .as_ref()
            .map(|g| g.consumer_lag())
            .unwrap_or_default()
            .into_iter()
            .map(|((topic, partition), lag)| {
                json!({"topic": topic, "partition": partition, "lag": lag})
            })
            .collect();
        json!({
            "now_ms": unix_ms(now),
            "started_ms": unix_ms(self.keys.metrics.started()),
            "ready": problems.is_empty(),
            "not_ready_because": problems,
            "store": {
                "url": self.keys.registry.store().describe(),
                "healthy": self.keys.registry.store_healthy(),
                "listed_at_ms": scan_at.map(unix_ms),
                "error": scan_error,
            },
            "totals": self.keys.metrics.totals(),
            "cache_keys": self.keys.registry.key_status().len(),
            "keys_total": rows.len(),
            "keys": keys,
            "swaps": swaps,
            "fallback_key": self.keys.registry.fallback_key(),
            "series": self.series.points(),
            "series_interval_ms": self.config.store_scan_interval_ms.max(100),
            "recent_dead_letters": self.keys.metrics.recent_dead_letters().into_iter().rev().collect::<Vec<_>>(),
            "kafka": self.group.as_ref().map(|g| json!({
                "has_assignment": g.has_assignment(),
                "partitions_assigned": g.assigned().len(),
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
