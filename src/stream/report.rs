//! What a scoring run reports when it ends: records per (model key, version), dead letters by
//! reason, a latency histogram, canary counts and shadow divergence, for summaries and tests.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use serde::Serialize;

use super::record::Reason;
use crate::{
    model::{Output, Prediction},
    registry::ServedModel,
};

/// A log-linear histogram of durations: 16 buckets per power of two, so any quantile is within
/// about 6% of the true value. Fixed size, no allocation per sample.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    buckets: Vec<u64>,
    count: u64,
    max_ns: u64,
}

const SUB: u64 = 16;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; (64 * SUB) as usize],
            count: 0,
            max_ns: 0,
        }
    }
}

impl LatencyHistogram {
    fn index(ns: u64) -> usize {
        if ns < SUB {
            return ns as usize;
        }
        let msb = 63 - u64::from(ns.leading_zeros());
        let shift = msb - 4;
        ((shift + 1) * SUB + ((ns >> shift) & (SUB - 1))) as usize
    }

    fn lower_bound(index: usize) -> u64 {
        let index = index as u64;
        if index < SUB {
            return index;
        }
        let shift = index / SUB - 1;
        (SUB + index % SUB) << shift
    }

    /// Records one sample.
    pub fn record(&mut self, d: Duration) {
        self.record_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records one sample in nanoseconds.
    pub fn record_ns(&mut self, ns: u64) {
        self.buckets[Self::index(ns)] += 1;
        self.count += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// The `q` quantile (0..=1), as the midpoint of its bucket; zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let lo = Self::lower_bound(i);
                let hi = Self::lower_bound(i + 1);
                return Duration::from_nanos((lo + hi) / 2).min(Duration::from_nanos(self.max_ns));
            }
        }
        Duration::from_nanos(self.max_ns)
    }
}

/// How a shadow version's outputs compare with the primary's, over the records both scored.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Divergence {
    /// Records scored by both the primary and the shadow version.
    pub compared: u64,
    /// Of those, records with regression outputs on both sides.
    pub regression: u64,
    /// Sum of |primary - shadow| over the regression records.
    pub abs_diff_sum: f64,
    /// Of those, records with classification outputs on both sides.
    pub classified: u64,
    /// Classification records where both picked the same class label.
    pub agreed: u64,
    /// Records the primary scored but the shadow could not (a missing feature, a model error).
    pub failed: u64,
}

impl Divergence {
    /// Compares one primary output with the shadow's output for the same record.
    pub fn observe(
        &mut self,
        primary: &Prediction,
        primary_model: &ServedModel,
        shadow: &Prediction,
        shadow_model: &ServedModel,
    ) {
        self.compared += 1;
        match (primary, shadow) {
            (Prediction::Value(a), Prediction::Value(b)) => {
                self.regression += 1;
                self.abs_diff_sum += (a - b).abs();
            }
            (Prediction::Class { index: a, .. }, Prediction::Class { index: b, .. }) => {
                self.classified += 1;
                if class_label(primary_model, *a) == class_label(shadow_model, *b) {
                    self.agreed += 1;
                }
            }
            // Different output kinds never agree.
            _ => self.classified += 1,
        }
    }

    /// Mean absolute difference of regression outputs, if any were compared.
    pub fn mean_abs_diff(&self) -> Option<f64> {
        (self.regression > 0).then(|| self.abs_diff_sum / self.regression as f64)
    }

    /// Share of classification records on which both versions agree, if any were compared.
    pub fn agreement(&self) -> Option<f64> {
        (self.classified > 0).then(|| self.agreed as f64 / self.classified as f64)
    }

    /// Adds another tally.
    pub fn merge(&mut self, other: &Divergence) {
        self.compared += other.compared;
        self.regression += other.regression;
        self.abs_diff_sum += other.abs_diff_sum;
        self.classified += other.classified;
        self.agreed += other.agreed;
        self.failed += other.failed;
    }
}

fn class_label(model: &ServedModel, index: usize) -> Option<&str> {
    match model.model.output() {
        Output::Classification(classes) => classes.get(index).map(String::as_str),
        Output::Regression => None,
    }
}

/// (key, version) pairs a summary names, at most; the rest are counted together.
const SUMMARY_KEYS: usize = 20;

/// Counts of a scoring run.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    /// Records scored per (model key, model version).
    pub scored: BTreeMap<(String, i64), u64>,
    /// Records scored by the fallback model.
    pub fallback: u64,
    /// Dead letters per reason.
    pub dead: BTreeMap<Reason, u64>,
    /// Per-record scoring time (feature extraction and model).
    pub latency: LatencyHistogram,
    /// Records scored by a canary version.
    pub canary: u64,
    /// Shadow outputs written.
    pub shadow_outputs: u64,
    /// Shadow divergence per key.
    pub shadow: BTreeMap<String, Divergence>,
}

impl RunStats {
    /// Records scored.
    pub fn scored_total(&self) -> u64 {
        self.scored.values().sum()
    }

    /// Dead letters.
    pub fn dead_total(&self) -> u64 {
        self.dead.values().sum()
    }

    /// A human-readable summary.
    pub fn summary(&self, elapsed: Duration) -> String {
        let total = self.scored_total() + self.dead_total();
        let mut s = String::new();
        let secs = elapsed.as_secs_f64().max(1e-9);
        let _ = writeln!(
            s,
            "records: {total} in {:.2} s ({:.0} records/s): {} scored ({} by the fallback model), {} dead letters",
            elapsed.as_secs_f64(),
            total as f64 / secs,
            self.scored_total(),
            self.fallback,
            self.dead_total()
        );
        if self.canary > 0 {
            let _ = writeln!(s, "scored by canary versions: {}", self.canary);
        }
        // The busiest (key, version) pairs by name; with many keys, the rest as one count.
        let mut busiest: Vec<(&(String, i64), &u64)> = self.scored.iter().collect();
        if busiest.len() > SUMMARY_KEYS {
            busiest.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
            let _ = writeln!(
                s,
                "scored per model key and version (the {SUMMARY_KEYS} busiest of {}):",
                busiest.len()
            );
        } else {
            let _ = writeln!(s, "scored per model key and version:");
        }
        for ((key, version), n) in busiest.iter().take(SUMMARY_KEYS) {
            let _ = writeln!(s, "  {key:<12} v{version:<4} {n:>9}");
        }
        if busiest.len() > SUMMARY_KEYS {
            let rest: u64 = busiest[SUMMARY_KEYS..].iter().map(|(_, n)| **n).sum();
            let _ = writeln!(
                s,
                "  ... {} more (key, version) pairs: {rest} records",
                busiest.len() - SUMMARY_KEYS
            );
        }
        if !self.dead.is_empty() {
            let _ = writeln!(s, "dead letters by reason:");
            for (reason, n) in &self.dead {
                let _ = writeln!(s, "  {:<20} {n:>9}", reason.as_str());
            }
        }
        if !self.shadow.is_empty() {
            let _ = writeln!(
                s,
                "shadow versions ({} outputs): divergence from the primary per key:",
                self.shadow_outputs
            );
            for (key, d) in &self.shadow {
                let _ = write!(s, "  {key:<12} {:>9} compared", d.compared);
                if let Some(m) = d.mean_abs_diff() {
                    let _ = write!(s, ", mean absolute difference {m:.6}");
                }
                if let Some(a) = d.agreement() {
                    let _ = write!(s, ", class agreement {:.2}%", a * 100.0);
                }
                if d.failed > 0 {
                    let _ = write!(s, ", {} not scored by the shadow", d.failed);
                }
                let _ = writeln!(s);
            }
        }
        let _ = writeln!(
            s,
            "per-record scoring latency: p50 {:?}, p99 {:?}, p99.9 {:?}",
            self.latency.quantile(0.5),
            self.latency.quantile(0.99),
            self.latency.quantile(0.999)
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_names_the_busiest_keys_and_counts_the_rest() {
        let mut stats = RunStats::default();
        for i in 0..1000u64 {
            stats.scored.insert((format!("k{i:04}"), 1), i + 1);
        }
        let text = stats.summary(Duration::from_secs(1));
        assert!(text.contains("the 20 busiest of 1000"), "{text}");
        assert!(text.contains("k0999"), "{text}");
        assert!(!text.contains("k0000 "), "{text}");
        let rest: u64 = (1..=980).sum();
        assert!(
            text.contains(&format!("980 more (key, version) pairs: {rest} records")),
            "{text}"
        );
        assert!(text.lines().count() < 30, "{text}");
    }

    #[test]
    fn quantiles_are_within_a_bucket() {
        let mut h = LatencyHistogram::default();
        for ns in 1..=10_000u64 {
            h.record_ns(ns);
        }
        for (q, exact) in [(0.5, 5_000.0), (0.99, 9_900.0), (0.999, 9_990.0)] {
            let got = h.quantile(q).as_nanos() as f64;
            assert!((got - exact).abs() / exact < 0.07, "q{q}: {got} vs {exact}");
        }
        assert_eq!(h.count(), 10_000);
    }

    #[test]
    fn bucket_bounds_are_monotonic_and_cover_their_values() {
        for ns in [0u64, 1, 15, 16, 17, 31, 32, 1000, 123_456_789, u64::MAX / 2] {
            let i = LatencyHistogram::index(ns);
            assert!(LatencyHistogram::lower_bound(i) <= ns, "{ns}");
            assert!(LatencyHistogram::lower_bound(i + 1) > ns, "{ns}");
        }
    }
}
