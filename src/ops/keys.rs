//! The keys as the operations endpoint shows them: the store's active pointers of the keys this
//! process works with (re-read every `[ops] store_scan_interval_ms`), what the registry serves,
//! and what the scorer counted, joined per key. The status page and the per-key metric series
//! read the same rows.
//!
//! The scan never lists the whole store: it reads the pointers (no specs) of at most
//! [`SCAN_KEYS`] keys this process works with (any whose newest version it refused, then the
//! busiest it scored), in the store's batched pointer reads, and the first [`SCAN_KEYS`] keys
//! of the store in one bounded read (so a small store shows all its keys). Its cost per scan is
//! bounded by that, whether the store holds 10 keys or 10^6.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use tracing::warn;

use crate::{
    registry::{ModelRegistry, Swap},
    stream::{metrics::KeyActivity, Metrics},
    telemetry::ErrorChain,
};

/// The most keys one scan reads pointers for.
pub(super) const SCAN_KEYS: usize = 1_000;

/// What the store's pointers said, and when.
#[derive(Debug, Default)]
pub(super) struct StoreView {
    pub(super) at: Option<SystemTime>,
    pub(super) active: BTreeMap<String, Option<i64>>,
    pub(super) error: Option<String>,
}

/// One key as `/status.json` and the per-key metrics see it.
#[derive(Debug, Clone, Default)]
pub(super) struct KeyRow {
    pub(super) key: String,
    pub(super) active: Option<i64>,
    pub(super) served: Option<i64>,
    pub(super) refused: Option<i64>,
    pub(super) refused_reason: Option<String>,
    pub(super) served_since: Option<SystemTime>,
    pub(super) lagging: bool,
    pub(super) activity: KeyActivity,
    pub(super) last_swap: Option<Swap>,
}

/// The sources the key rows are joined from.
#[derive(Debug)]
pub(super) struct KeyView {
    pub(super) metrics: Arc<Metrics>,
    pub(super) registry: Arc<ModelRegistry>,
    pub(super) store_view: Mutex<StoreView>,
    /// Held while a scan runs.
    pub(super) scanning: tokio::sync::Mutex<()>,
}

impl KeyView {
    /// Re-reads the active pointers of the keys this process works with (see the module
    /// documentation).
    pub(super) async fn scan_store(&self) {
        // One scan at a time, so an older view never overwrites a newer one.
        let _scanning = self.scanning.lock().await;
        let keys = self.scan_keys();
        let store = self.registry.store();
        let result = match store.pointers(&keys).await {
            Ok(pointers) => store
                .key_page(None, SCAN_KEYS)
                .await
                .map(|first| (pointers, first.keys)),
            Err(err) => Err(err),
        };
        let mut view = self.store_view.lock().expect("store view lock");
        match result {
            Ok((pointers, first)) => {
                view.active = first.into_iter().collect();
                view.active.extend(
                    keys.into_iter()
                        .zip(pointers)
                        .map(|(key, pointer)| (key, pointer.map(|p| p.version))),
                );
                view.at = Some(SystemTime::now());
                view.error = None;
            }
            Err(err) => {
                if view.error.is_none() {
                    warn!(error = %ErrorChain(&err), "Reading the model store's pointers for the status view failed.");
                }
                view.error = Some(ErrorChain(&err).to_string());
            }
        }
    }

    /// The keys a scan reads: those whose newest version this process refused, then the
    /// busiest it scored, then the others it serves, at most [`SCAN_KEYS`].
    fn scan_keys(&self) -> Vec<String> {
        let status = self.registry.key_status();
        let mut keys: Vec<String> = status
            .iter()
            .filter(|s| s.refused_version.is_some())
            .map(|s| s.key.clone())
            .collect();
        let mut busiest: Vec<(String, u64)> = self
            .metrics
            .key_activity()
            .into_iter()
            .map(|(key, activity)| (key, activity.scored))
            .collect();
        busiest.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        keys.extend(busiest.into_iter().map(|(key, _)| key));
        keys.extend(status.into_iter().map(|s| s.key));
        let mut seen = std::collections::HashSet::new();
        keys.retain(|key| seen.insert(key.clone()));
        keys.truncate(SCAN_KEYS);
        keys
    }

    /// Every key known to the store scan, the registry or the metrics, busiest first.
    pub(super) fn rows(&self) -> Vec<KeyRow> {
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
            row.refused_reason = status.refused_reason;
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
}
