//! `[ops]`: the operations endpoint's settings.

use serde::{Deserialize, Serialize};

/// `[ops]`: the HTTP endpoint for operators (`/metrics`, `/healthz`, `/readyz`, `/status.json`
/// and the status page at `/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsConfig {
    /// Address `keyscore serve` listens on (default `127.0.0.1:9464`; empty turns it off).
    /// `keyscore score` listens only when given `--ops-listen`.
    pub listen: String,
    /// Per-key metric series are exported for at most this many keys by traffic, plus at most
    /// this many more keys whose served version lags the store (default 20).
    pub top_keys: usize,
    /// How often the status view re-reads the active pointers of the keys it shows (at most
    /// 1,000: the busiest and any refused), in ms (default 5000).
    pub store_scan_interval_ms: u64,
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
            top_keys: 20,
            store_scan_interval_ms: 5000,
        }
    }
}
