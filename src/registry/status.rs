//! What this process serves, for operators: per-key status, recent swaps, refused versions,
//! and the registry's counters.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use prometheus::{core::Collector, IntCounter, IntGauge, Opts, Registry};
use tracing::error;

use super::ModelRegistry;
use crate::telemetry::ErrorChain;

/// The most swaps remembered for the status page.
const MAX_SWAP_HISTORY: usize = 256;

/// One key as this process sees it, for status and version-lag reporting.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyStatus {
    /// The model key.
    pub key: String,
    /// The version this process scores with, if any.
    pub served_version: Option<i64>,
    /// The newest active version the store reported that this process refused, if any.
    pub refused_version: Option<i64>,
    /// Why it was refused.
    pub refused_reason: Option<String>,
    /// When this process built the version it serves.
    pub served_since: Option<SystemTime>,
}

/// A swap the watcher made: `key` moved from `from` to `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct Swap {
    /// The model key.
    pub key: String,
    /// The version served before, if any.
    pub from: Option<i64>,
    /// The version served now.
    pub to: i64,
    /// When the new version was swapped in.
    pub at: SystemTime,
}

/// The last [`MAX_SWAP_HISTORY`] swaps.
#[derive(Debug, Default)]
pub(super) struct SwapLog(Mutex<std::collections::VecDeque<Swap>>);

impl SwapLog {
    pub(super) fn push(&self, swap: Swap) {
        let mut swaps = self.0.lock().expect("swap log lock");
        if swaps.len() == MAX_SWAP_HISTORY {
            swaps.pop_front();
        }
        swaps.push_back(swap);
    }

    fn all(&self) -> Vec<Swap> {
        self.0
            .lock()
            .expect("swap log lock")
            .iter()
            .cloned()
            .collect()
    }
}

/// The newest refused (version, revision) per key.
pub(super) type Refused = Mutex<HashMap<String, (i64, i64, Arc<str>)>>;

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::with_opts(Opts::new(name, help)).expect("a valid counter name")
}

/// Counters for operators.
#[derive(Debug)]
pub struct RegistryStats {
    /// Lazy loads from the store.
    pub loads: IntCounter,
    /// Versions swapped in by the watcher.
    pub swaps: IntCounter,
    /// Versions refused because they did not build.
    pub build_failures: IntCounter,
    /// Failed store calls.
    pub store_errors: IntCounter,
    /// Completed watcher polls.
    pub polls: IntCounter,
    /// Lookups answered from the cache.
    pub hits: IntCounter,
    /// Lookups that found no cache entry and waited for a load (concurrent misses of one key
    /// share one load).
    pub misses: IntCounter,
}

impl Default for RegistryStats {
    fn default() -> Self {
        Self {
            loads: counter(
                "keyscore_model_loads_total",
                "Models loaded on a key's first use.",
            ),
            swaps: counter(
                "keyscore_model_swaps_total",
                "New versions swapped in by the watcher.",
            ),
            build_failures: counter(
                "keyscore_model_build_failures_total",
                "Versions refused because they did not build.",
            ),
            store_errors: counter("keyscore_store_errors_total", "Failed model store calls."),
            polls: counter(
                "keyscore_watcher_polls_total",
                "Completed polls of the store's change feed.",
            ),
            hits: counter(
                "keyscore_cache_hits_total",
                "Model lookups answered from the cache.",
            ),
            misses: counter(
                "keyscore_cache_misses_total",
                "Model lookups that waited for a load.",
            ),
        }
    }
}

/// The registry's gauges, read from its state at each scrape.
struct RegistryGauges {
    registry: std::sync::Arc<ModelRegistry>,
    cache_keys: IntGauge,
    store_up: IntGauge,
}

impl Collector for RegistryGauges {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut d = self.cache_keys.desc();
        d.extend(self.store_up.desc());
        d
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        // Counted by iterating: the cache's own count lags behind its pending maintenance.
        self.cache_keys
            .set(self.registry.cache.iter().count() as i64);
        self.store_up.set(i64::from(self.registry.store_healthy()));
        let mut families = self.cache_keys.collect();
        families.extend(self.store_up.collect());
        families
    }
}

impl ModelRegistry {
    /// Registers the registry's counters and gauges with `registry`, for exposition.
    pub fn register_metrics(
        self: &std::sync::Arc<Self>,
        registry: &Registry,
    ) -> prometheus::Result<()> {
        let s = &self.stats;
        for c in [
            &s.loads,
            &s.swaps,
            &s.build_failures,
            &s.store_errors,
            &s.polls,
            &s.hits,
            &s.misses,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(RegistryGauges {
            registry: std::sync::Arc::clone(self),
            cache_keys: IntGauge::with_opts(Opts::new(
                "keyscore_cache_keys",
                "Keys held in the model cache.",
            ))?,
            store_up: IntGauge::with_opts(Opts::new(
                "keyscore_store_up",
                "Whether the last model store call succeeded.",
            ))?,
        }))
    }

    /// Recent swaps, oldest first.
    pub fn swaps(&self) -> Vec<Swap> {
        self.swaps.all()
    }

    /// What this process serves per cached key, sorted by key.
    pub fn key_status(&self) -> Vec<KeyStatus> {
        let refused = self.refused.lock().expect("refused lock").clone();
        let mut out: Vec<KeyStatus> = self
            .cache
            .iter()
            .map(|(key, slot)| KeyStatus {
                key: (*key).clone(),
                served_version: slot.model.as_ref().map(|m| m.version),
                refused_version: refused
                    .get(key.as_str())
                    .filter(|(_, rev, _)| *rev > slot.revision)
                    .map(|(v, _, _)| *v),
                refused_reason: refused
                    .get(key.as_str())
                    .filter(|(_, rev, _)| *rev > slot.revision)
                    .map(|(_, _, why)| why.to_string()),
                served_since: slot.model.as_ref().map(|m| m.loaded_at),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    pub(super) fn is_refused(&self, key: &str, revision: i64) -> bool {
        self.refused
            .lock()
            .expect("refused lock")
            .get(key)
            .is_some_and(|(_, r, _)| *r == revision)
    }

    pub(super) fn note_refused(
        &self,
        key: &str,
        version: i64,
        revision: i64,
        err: &crate::model::Error,
    ) {
        self.stats.build_failures.inc();
        error!(key, version, error = %ErrorChain(err), "Refused model version: it does not build; the previous version keeps scoring.");
        self.refused.lock().expect("refused lock").insert(
            key.to_string(),
            (version, revision, Arc::from(ErrorChain(err).to_string())),
        );
    }
}
