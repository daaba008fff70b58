//! `/metrics`: every component's series, gathered from one `prometheus` registry and encoded in
//! the Prometheus text format by the library. The scorer, the registry and the Kafka pipeline
//! register the series they own; this file adds only the bounded per-key series, as a
//! collector that picks its keys at each scrape.
//!
//! Keys can number in the hundreds of thousands, so per-key series (`keyscore_key_*{key=..}`)
//! are exported for a bounded set: the `[ops] top_keys` keys with the most records scored, plus
//! up to `top_keys` more keys whose served version lags the store's active version. Everything
//! else is in the unlabelled totals and in `keyscore_keys_lagging`.

use std::sync::Arc;

use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
    Encoder, GaugeVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use super::keys::{KeyRow, KeyView};

/// The content type of [`encode`]'s text.
pub(super) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Encodes every series registered with `registry`.
pub(super) fn encode(registry: &Registry) -> String {
    let mut out = Vec::with_capacity(8 * 1024);
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("encoding metrics into memory");
    String::from_utf8(out).expect("the text format is UTF-8")
}

/// The per-key series and the count of lagging keys, recomputed at each scrape.
pub(super) struct KeySeries {
    keys: Arc<KeyView>,
    top_keys: usize,
    lagging: IntGauge,
    records: IntCounterVec,
    canary_records: IntCounterVec,
    active_version: GaugeVec,
    served_version: GaugeVec,
    version_lag: GaugeVec,
    shadow_mean_abs_diff: GaugeVec,
    shadow_agreement: GaugeVec,
}

impl KeySeries {
    pub(super) fn new(keys: Arc<KeyView>, top_keys: usize) -> prometheus::Result<Self> {
        let by_key = |name: &str, help: &str| GaugeVec::new(Opts::new(name, help), &["key"]);
        Ok(Self {
            keys,
            top_keys,
            lagging: IntGauge::with_opts(Opts::new(
                "keyscore_keys_lagging",
                "Keys whose served version differs from the store's active version.",
            ))?,
            records: IntCounterVec::new(
                Opts::new(
                    "keyscore_key_records_total",
                    "Records scored with the key's own models (top keys by traffic and lagging \
                     keys).",
                ),
                &["key"],
            )?,
            canary_records: IntCounterVec::new(
                Opts::new(
                    "keyscore_key_canary_records_total",
                    "Records of the key scored by its canary version.",
                ),
                &["key"],
            )?,
            active_version: by_key(
                "keyscore_key_active_version",
                "The version the store names active.",
            )?,
            served_version: by_key(
                "keyscore_key_served_version",
                "The version this process serves.",
            )?,
            version_lag: by_key(
                "keyscore_key_version_lag",
                "1 when the served version differs from the store's active version.",
            )?,
            shadow_mean_abs_diff: by_key(
                "keyscore_key_shadow_mean_abs_diff",
                "Mean absolute difference between primary and shadow regression outputs.",
            )?,
            shadow_agreement: by_key(
                "keyscore_key_shadow_agreement_ratio",
                "Share of records on which primary and shadow classifiers agree.",
            )?,
        })
    }

    /// The keys that get series: the busiest, then lagging ones, each group bounded.
    fn chosen(&self, rows: &[KeyRow]) -> Vec<usize> {
        let mut chosen: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].activity.scored > 0)
            .take(self.top_keys)
            .collect();
        let extra: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].lagging && !chosen.contains(&i))
            .take(self.top_keys)
            .collect();
        chosen.extend(extra);
        chosen
    }

    fn gauges(&self) -> [&GaugeVec; 5] {
        [
            &self.active_version,
            &self.served_version,
            &self.version_lag,
            &self.shadow_mean_abs_diff,
            &self.shadow_agreement,
        ]
    }
}

impl Collector for KeySeries {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.lagging.desc();
        d.extend(self.records.desc());
        d.extend(self.canary_records.desc());
        for g in self.gauges() {
            d.extend(g.desc());
        }
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let rows = self.keys.rows();
        self.lagging
            .set(rows.iter().filter(|r| r.lagging).count() as i64);
        self.records.reset();
        self.canary_records.reset();
        for g in self.gauges() {
            g.reset();
        }
        for i in self.chosen(&rows) {
            let row = &rows[i];
            let key = [row.key.as_str()];
            self.records
                .with_label_values(&key)
                .inc_by(row.activity.scored);
            self.canary_records
                .with_label_values(&key)
                .inc_by(row.activity.canary);
            let values = [
                row.active.map(|v| v as f64),
                row.served.map(|v| v as f64),
                Some(if row.lagging { 1.0 } else { 0.0 }),
                row.activity.shadow.mean_abs_diff(),
                row.activity.shadow.agreement(),
            ];
            for (g, v) in self.gauges().into_iter().zip(values) {
                if let Some(v) = v {
                    g.with_label_values(&key).set(v);
                }
            }
        }
        let mut families = self.lagging.collect();
        families.extend(self.records.collect());
        families.extend(self.canary_records.collect());
        for g in self.gauges() {
            families.extend(g.collect());
        }
        families
    }
}
