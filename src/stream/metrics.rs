//! The scoring pipeline's counters, histograms and per-key activity. The scorer and the sinks
//! write them (once per batch on the hot path); the operations endpoint registers them with
//! its Prometheus registry and reads them for the status page, and owns none of them.
//!
//! Process-wide series are `prometheus` counters and histograms, so their exposition is the
//! library's. Per-key activity is kept here for every key that has a model of its own; which
//! keys become labelled series is the endpoint's choice (a bounded set; see the `ops` module).

use std::{
    collections::VecDeque,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use foldhash::{HashMap, HashMapExt};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

use super::{record::Reason, report::Divergence};
use crate::model::Prediction;

/// Keys whose activity is kept one by one, at most. Past it, the least busy half is dropped
/// (their records stay in the totals), so memory stays bounded at 10^6 keys while the busiest
/// keys, the ones the status page and the per-key series show, are kept.
const MAX_TRACKED_KEYS: usize = 20_000;

/// Recent scores kept per key for the status page's histogram.
const RECENT_SCORES: usize = 256;

/// Recent dead letters kept for the status page.
const RECENT_DEAD: usize = 50;

/// Dead-letter notes kept from one batch, at most.
const DEAD_NOTES_PER_BATCH: usize = 8;

/// Seconds of per-key throughput history.
const WINDOW_SECS: usize = 10;

/// Upper bounds (seconds) of the scoring-latency histogram buckets.
pub const SCORING_BUCKETS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2, 0.1,
];

/// Upper bounds (seconds) of the residence-time histogram buckets: fine below a millisecond,
/// where keyscore's own share of the latency lies.
pub const RESIDENCE_BUCKETS: &[f64] = &[
    2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Upper bounds (seconds) of the end-to-end lag histogram buckets.
pub const LAG_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];

/// What one key did, as the status page and per-key metrics show it.
#[derive(Debug, Clone, Default)]
pub struct KeyActivity {
    /// Records scored with this key's own models (primary or canary).
    pub scored: u64,
    /// Of those, records scored by a canary version.
    pub canary: u64,
    /// Dead letters of records with this key.
    pub dead: u64,
    /// Per-second scored counts: (unix second, count).
    window: [(u64, u64); WINDOW_SECS],
    /// The most recent scores (see [`score_value`]).
    pub recent: VecDeque<f64>,
    /// Shadow divergence since start.
    pub shadow: Divergence,
}

impl KeyActivity {
    /// Records scored per second over the last complete seconds of the window.
    pub fn rate(&self, now_sec: u64) -> f64 {
        let from = now_sec.saturating_sub(WINDOW_SECS as u64);
        let n: u64 = self
            .window
            .iter()
            .filter(|(s, _)| *s >= from && *s < now_sec)
            .map(|(_, n)| n)
            .sum();
        n as f64 / WINDOW_SECS as f64
    }

    fn add_to_window(&mut self, sec: u64, n: u64) {
        let slot = &mut self.window[(sec % WINDOW_SECS as u64) as usize];
        if slot.0 != sec {
            *slot = (sec, 0);
        }
        slot.1 += n;
    }
}

/// The number a prediction is shown as in score histograms: a regression's value; a binary
/// classifier's probability of its second class (the positive one); otherwise the probability
/// of the predicted class.
pub fn score_value(prediction: &Prediction) -> f64 {
    match prediction {
        Prediction::Value(v) => *v,
        Prediction::Class {
            index,
            probabilities,
        } => {
            if probabilities.len() == 2 {
                probabilities[1]
            } else {
                probabilities.get(*index).copied().unwrap_or(f64::NAN)
            }
        }
    }
}

/// A dead letter as the status page lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadNote {
    /// When, in Unix milliseconds.
    pub at_ms: u64,
    /// The reason class.
    pub reason: &'static str,
    /// The record's key, when it had one.
    pub key: Option<String>,
    /// The record's id (its JSON text), when it could be read.
    pub record: Option<String>,
    /// The explanation.
    pub message: String,
}

/// One key's part of a batch.
#[derive(Debug, Default)]
pub struct KeyTally {
    /// Records scored with the key's own models.
    pub scored: u64,
    /// Of those, by a canary version.
    pub canary: u64,
    /// Dead letters.
    pub dead: u64,
    /// Scores of this batch (at most the last [`RECENT_SCORES`] are kept).
    pub scores: Vec<f64>,
    /// Shadow comparisons of this batch.
    pub shadow: Divergence,
}

/// What one scored batch adds to the metrics, gathered without locks and applied at once.
#[derive(Debug, Default)]
pub struct BatchTally {
    /// Input records.
    pub records: u64,
    /// Records scored (by any model, including the fallback).
    pub scored: u64,
    /// Records scored by a canary version.
    pub canary: u64,
    /// Shadow outputs produced.
    pub shadow: u64,
    /// Dead letters by reason, indexed like [`Reason::ALL`].
    pub dead: [u64; Reason::ALL.len()],
    /// Per key. A key may appear more than once; its parts add up.
    pub keys: Vec<(String, KeyTally)>,
    /// A few of the batch's dead letters.
    pub dead_notes: Vec<DeadNote>,
}

impl BatchTally {
    /// Counts a dead letter by reason, keeping a note of the first few naming `key` and the
    /// record's id `record`. A key's own dead-letter count is its [`KeyTally::dead`], which
    /// the caller keeps.
    pub fn dead_letter(
        &mut self,
        reason: Reason,
        key: Option<&str>,
        record: Option<&str>,
        message: &str,
    ) {
        self.dead[reason_index(reason)] += 1;
        if self.dead_notes.len() < DEAD_NOTES_PER_BATCH {
            self.dead_notes.push(DeadNote {
                at_ms: unix_ms(SystemTime::now()),
                reason: reason.as_str(),
                key: key.map(str::to_string),
                record: record.map(str::to_string),
                message: message.to_string(),
            });
        }
    }
}

fn reason_index(reason: Reason) -> usize {
    Reason::ALL
        .iter()
        .position(|r| *r == reason)
        .expect("every reason is in Reason::ALL")
}

/// Drops all but the `keep` busiest keys (by records scored and dead letters).
fn keep_busiest(keys: &mut HashMap<String, KeyActivity>, keep: usize) {
    let mut counts: Vec<u64> = keys.values().map(|a| a.scored + a.dead).collect();
    if counts.len() <= keep {
        return;
    }
    let cut = counts.len() - keep;
    let (_, threshold, _) = counts.select_nth_unstable(cut);
    let threshold = *threshold;
    // Keys above the threshold stay; ties at it are dropped, so at most `keep` stay.
    keys.retain(|_, a| a.scored + a.dead > threshold);
}

/// Unix milliseconds of `t` (0 before the epoch).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Every scoring metric of the process.
#[derive(Debug)]
pub struct Metrics {
    started: SystemTime,
    records_in: IntCounter,
    scored: IntCounter,
    canary: IntCounter,
    out: IntCounter,
    dead: IntCounterVec,
    /// `dead` per reason, indexed like [`Reason::ALL`], so a batch adds without a label lookup.
    dead_by_reason: Vec<IntCounter>,
    shadow: IntCounter,
    /// Records scored, by the level of the fallback chain whose model scored them.
    by_level: IntCounterVec,
    shadow_out: IntCounter,
    shadow_failed_deliveries: IntCounter,
    /// Per-record scoring time.
    pub scoring: Histogram,
    /// Now minus the record's timestamp, when scored (Kafka records).
    pub lag: Histogram,
    /// keyscore's own residence time of a Kafka record, from the poll that returned it: to its
    /// output handed to the producer (`handed`) and to the broker's acknowledgement (`acked`).
    pub residence: HistogramVec,
    /// `residence{stage="handed"}`.
    pub residence_handed: Histogram,
    /// `residence{stage="acked"}`.
    pub residence_acked: Histogram,
    keys: Mutex<HashMap<String, KeyActivity>>,
    recent_dead: Mutex<VecDeque<DeadNote>>,
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::with_opts(Opts::new(name, help)).expect("a valid counter name")
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("valid histogram buckets")
}

impl Default for Metrics {
    fn default() -> Self {
        let dead = IntCounterVec::new(
            Opts::new(
                "keyscore_dead_letters_total",
                "Records not scored, by reason.",
            ),
            &["reason"],
        )
        .expect("a valid counter name");
        // Every reason is exported from the start, at zero.
        let dead_by_reason = Reason::ALL
            .iter()
            .map(|r| dead.with_label_values(&[r.as_str()]))
            .collect();
        let residence = HistogramVec::new(
            HistogramOpts::new(
                "keyscore_residence_seconds",
                "Time a Kafka record spends in keyscore: from the poll that returned it to \
                     its output handed to the producer (stage=\"handed\") and to the broker's \
                     acknowledgement of its output (stage=\"acked\").",
            )
            .buckets(RESIDENCE_BUCKETS.to_vec()),
            &["stage"],
        )
        .expect("valid histogram buckets");
        Self {
            started: SystemTime::now(),
            records_in: counter("keyscore_records_in_total", "Input records read."),
            scored: counter(
                "keyscore_records_scored_total",
                "Records scored (by a key's own model or the fallback).",
            ),
            canary: counter(
                "keyscore_records_canary_total",
                "Records scored by a canary version.",
            ),
            out: counter(
                "keyscore_records_out_total",
                "Outputs (scored records and dead letters) the sink accepted.",
            ),
            dead,
            dead_by_reason,
            by_level: IntCounterVec::new(
                Opts::new(
                    "keyscore_records_by_fallback_level_total",
                    "Records scored, by the level of the fallback chain whose model scored \
                     them: own (the record's key), a [records] fallback_fields name, or \
                     default (the fallback key).",
                ),
                &["level"],
            )
            .expect("a valid counter name"),
            shadow: counter(
                "keyscore_shadow_records_total",
                "Outputs of shadow versions produced.",
            ),
            shadow_out: counter(
                "keyscore_shadow_records_out_total",
                "Outputs of shadow versions the sink accepted.",
            ),
            shadow_failed_deliveries: counter(
                "keyscore_shadow_delivery_failures_total",
                "Outputs of shadow versions the sink refused (best effort, not retried).",
            ),
            scoring: histogram(
                "keyscore_scoring_duration_seconds",
                "Per-record scoring time: feature extraction and model.",
                SCORING_BUCKETS,
            ),
            lag: histogram(
                "keyscore_end_to_end_lag_seconds",
                "Time from a record's timestamp to its scoring (Kafka records).",
                LAG_BUCKETS,
            ),
            residence_handed: residence.with_label_values(&["handed"]),
            residence_acked: residence.with_label_values(&["acked"]),
            residence,
            keys: Mutex::new(HashMap::new()),
            recent_dead: Mutex::new(VecDeque::new()),
        }
    }
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Totals {
    /// Input records.
    pub records_in: u64,
    /// Records scored.
    pub scored: u64,
    /// Records scored by canary versions.
    pub canary: u64,
    /// Outputs (scored records and dead letters) the sink accepted.
    pub records_out: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Dead letters by reason.
    pub dead_by_reason: std::collections::BTreeMap<&'static str, u64>,
    /// Shadow outputs produced.
    pub shadow: u64,
    /// Shadow outputs the sink accepted.
    pub shadow_out: u64,
}

impl Metrics {
    /// Registers every process-wide series with `registry`, for exposition.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        for c in [
            &self.records_in,
            &self.scored,
            &self.canary,
            &self.out,
            &self.shadow,
            &self.shadow_out,
            &self.shadow_failed_deliveries,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(self.dead.clone()))?;
        registry.register(Box::new(self.by_level.clone()))?;
        registry.register(Box::new(self.scoring.clone()))?;
        registry.register(Box::new(self.lag.clone()))?;
        registry.register(Box::new(self.residence.clone()))?;
        Ok(())
    }

    /// When this process started counting.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// Applies one batch.
    pub fn record_batch(&self, tally: BatchTally) {
        self.records_in.inc_by(tally.records);
        self.scored.inc_by(tally.scored);
        self.canary.inc_by(tally.canary);
        self.shadow.inc_by(tally.shadow);
        for (counter, n) in self.dead_by_reason.iter().zip(tally.dead) {
            if n > 0 {
                counter.inc_by(n);
            }
        }
        let sec = unix_ms(SystemTime::now()) / 1000;
        {
            let mut keys = self.keys.lock().expect("metrics lock");
            for (key, t) in tally.keys {
                if keys.len() >= MAX_TRACKED_KEYS && !keys.contains_key(&key) {
                    keep_busiest(&mut keys, MAX_TRACKED_KEYS / 2);
                }
                let a = keys.entry(key).or_default();
                a.scored += t.scored;
                a.canary += t.canary;
                a.dead += t.dead;
                if t.scored > 0 {
                    a.add_to_window(sec, t.scored);
                }
                let skip = t.scores.len().saturating_sub(RECENT_SCORES);
                for v in t.scores.into_iter().skip(skip) {
                    if a.recent.len() == RECENT_SCORES {
                        a.recent.pop_front();
                    }
                    a.recent.push_back(v);
                }
                a.shadow.merge(&t.shadow);
            }
        }
        if !tally.dead_notes.is_empty() {
            let mut recent = self.recent_dead.lock().expect("metrics lock");
            for note in tally.dead_notes {
                if recent.len() == RECENT_DEAD {
                    recent.pop_front();
                }
                recent.push_back(note);
            }
        }
    }

    /// The counter of records scored at the fallback chain's level `name` (`own`, a fallback
    /// field, `default`): exported from now on, at zero until counted. Levels come from the
    /// configuration, never from records, so their number is bounded.
    pub fn fallback_level(&self, name: &str) -> IntCounter {
        self.by_level.with_label_values(&[name])
    }

    /// Counts outputs (scored records or dead letters) the sink accepted.
    pub fn add_out(&self, n: u64) {
        self.out.inc_by(n);
    }

    /// Counts shadow outputs the sink accepted.
    pub fn add_shadow_out(&self, n: u64) {
        self.shadow_out.inc_by(n);
    }

    /// Counts a shadow output the sink refused (shadow outputs are best effort).
    pub fn shadow_delivery_failed(&self) {
        self.shadow_failed_deliveries.inc();
    }

    /// The counters now.
    pub fn totals(&self) -> Totals {
        let dead_by_reason: std::collections::BTreeMap<&'static str, u64> = Reason::ALL
            .iter()
            .zip(&self.dead_by_reason)
            .map(|(r, c)| (r.as_str(), c.get()))
            .collect();
        Totals {
            records_in: self.records_in.get(),
            scored: self.scored.get(),
            canary: self.canary.get(),
            records_out: self.out.get(),
            dead_letters: dead_by_reason.values().sum(),
            dead_by_reason,
            shadow: self.shadow.get(),
            shadow_out: self.shadow_out.get(),
        }
    }

    /// A copy of every key's activity.
    pub fn key_activity(&self) -> HashMap<String, KeyActivity> {
        self.keys.lock().expect("metrics lock").clone()
    }

    /// The most recent dead letters, oldest first.
    pub fn recent_dead_letters(&self) -> Vec<DeadNote> {
        self.recent_dead
            .lock()
            .expect("metrics lock")
            .iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throughput_window_counts_recent_complete_seconds() {
        let mut a = KeyActivity::default();
        a.add_to_window(101, 30);
        a.add_to_window(105, 20);
        a.add_to_window(109, 50);
        a.add_to_window(110, 1000); // the current, incomplete second
        assert!((a.rate(110) - 10.0).abs() < 1e-9);
        // A slot is reused once its second is a window old.
        a.add_to_window(120, 5);
        assert!((a.rate(121) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_batch_tally_of_timings_adds_up_like_direct_observations() {
        let direct = Metrics::default();
        let batched = Metrics::default();
        let local = batched.scoring.local();
        for secs in [0.0005, 0.005, 0.005, 1.0] {
            direct.scoring.observe(secs);
            local.observe(secs);
        }
        local.flush();
        local.flush(); // emptied by the first flush
        assert_eq!(
            direct.scoring.get_sample_count(),
            batched.scoring.get_sample_count()
        );
        assert_eq!(batched.scoring.get_sample_count(), 4);
        assert!((direct.scoring.get_sample_sum() - batched.scoring.get_sample_sum()).abs() < 1e-12);
    }

    #[test]
    fn per_key_activity_stays_bounded_and_keeps_the_busiest_keys() {
        let m = Metrics::default();
        // One busy key, then many keys seen once each.
        let mut busy = BatchTally::default();
        busy.keys.push((
            "busy".into(),
            KeyTally {
                scored: 1000,
                ..KeyTally::default()
            },
        ));
        m.record_batch(busy);
        for batch in 0..50 {
            let mut t = BatchTally::default();
            for i in 0..1000 {
                t.keys.push((
                    format!("k{batch}-{i}"),
                    KeyTally {
                        scored: 1,
                        ..KeyTally::default()
                    },
                ));
            }
            m.record_batch(t);
        }
        let keys = m.key_activity();
        assert!(
            keys.len() <= MAX_TRACKED_KEYS,
            "{} keys tracked",
            keys.len()
        );
        assert_eq!(keys["busy"].scored, 1000);
    }

    #[test]
    fn batches_add_up_and_keep_recent_dead_letters() {
        let m = Metrics::default();
        let mut t = BatchTally {
            records: 3,
            scored: 2,
            ..BatchTally::default()
        };
        t.keys.push((
            "paris".into(),
            KeyTally {
                scored: 2,
                dead: 1,
                scores: vec![1.0, 2.0],
                ..KeyTally::default()
            },
        ));
        t.dead_letter(
            Reason::MissingFeature,
            Some("paris"),
            Some("\"r-7\""),
            "feature 'items' is missing",
        );
        m.record_batch(t);
        let totals = m.totals();
        assert_eq!(totals.records_in, 3);
        assert_eq!(totals.dead_letters, 1);
        assert_eq!(totals.dead_by_reason["missing_feature"], 1);
        let keys = m.key_activity();
        assert_eq!(keys["paris"].scored, 2);
        assert_eq!(keys["paris"].dead, 1);
        assert_eq!(keys["paris"].recent, [1.0, 2.0]);
        assert_eq!(m.recent_dead_letters()[0].reason, "missing_feature");
        assert_eq!(
            m.recent_dead_letters()[0].record.as_deref(),
            Some("\"r-7\"")
        );
    }
}
