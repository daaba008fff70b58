//! The keys as the operations endpoint shows them: the store's listing (re-read every
//! `[ops] store_scan_interval_ms`), what the registry serves, and what the scorer counted, joined
//! per key. The status page and the per-key metric series read the same rows.

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

/// What the store's key listing said, and when.
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
    /// Re-reads the store's key listing.
    pub(super) async fn scan_store(&self) {
        // One scan at a time, so an older listing never overwrites a newer one.
        let _scanning = self.scanning.lock().await;
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
                    warn!(error = %ErrorChain(&err), "Listing the model store for the status view failed.");
                }
                view.error = Some(ErrorChain(&err).to_string());
            }
        }
    }

    /// Every key known to the store listing, the registry or the metrics, busiest first.
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
