//! The process's counters, histograms and per-key activity, shared by the scoring pipeline
//! (which writes them once per batch) and the operations endpoint (which reads them).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{model::Prediction, stats::Divergence, stream::Reason};

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

/// Upper bounds (seconds) of the end-to-end lag histogram buckets.
pub const LAG_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];

/// A Prometheus histogram with fixed buckets, updated lock-free.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// An empty histogram with the given bucket upper bounds (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.bounds.partition_point(|b| *b < secs);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A local, unshared tally with this histogram's buckets: observe into it per record and
    /// [`Histogram::add`] it once per batch, instead of three atomic adds per record.
    pub fn local(&self) -> LocalHistogram {
        LocalHistogram {
            bounds: self.bounds,
            counts: vec![0; self.counts.len()],
            sum_ns: 0,
            count: 0,
        }
    }

    /// Adds a local tally's observations and empties it.
    pub fn add(&self, local: &mut LocalHistogram) {
        if local.count == 0 {
            return;
        }
        for (shared, n) in self.counts.iter().zip(&mut local.counts) {
            if *n > 0 {
                shared.fetch_add(std::mem::take(n), Ordering::Relaxed);
            }
        }
        self.sum_ns
            .fetch_add(std::mem::take(&mut local.sum_ns), Ordering::Relaxed);
        self.count
            .fetch_add(std::mem::take(&mut local.count), Ordering::Relaxed);
    }

    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        use std::fmt::Write as _;
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// Observations not yet added to a [`Histogram`]: see [`Histogram::local`].
#[derive(Debug, Clone)]
pub struct LocalHistogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum_ns: u64,
    count: u64,
}

impl LocalHistogram {
    /// Records one observation.
    pub fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.bounds.partition_point(|b| *b < secs);
        self.counts[i] += 1;
        self.sum_ns = self
            .sum_ns
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.count += 1;
    }
}

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
    /// Per key.
    pub keys: HashMap<String, KeyTally>,
    /// A few of the batch's dead letters.
    pub dead_notes: Vec<DeadNote>,
}

impl BatchTally {
    /// Counts a dead letter, keeping a note of the first few.
    pub fn dead_letter(&mut self, reason: Reason, key: Option<&str>, message: &str) {
        self.dead[reason_index(reason)] += 1;
        if let Some(key) = key {
            self.keys.entry(key.to_string()).or_default().dead += 1;
        }
        if self.dead_notes.len() < DEAD_NOTES_PER_BATCH {
            self.dead_notes.push(DeadNote {
                at_ms: unix_ms(SystemTime::now()),
                reason: reason.as_str(),
                key: key.map(str::to_string),
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

/// Unix milliseconds of `t` (0 before the epoch).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Consumer-group state reported by the Kafka pipeline.
#[derive(Debug, Default)]
struct KafkaState {
    assigned: BTreeSet<(String, i32)>,
    lag: BTreeMap<(String, i32), i64>,
}

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    started: SystemTime,
    records_in: AtomicU64,
    scored: AtomicU64,
    canary: AtomicU64,
    out: AtomicU64,
    dead: [AtomicU64; Reason::ALL.len()],
    shadow: AtomicU64,
    shadow_out: AtomicU64,
    shadow_failed_deliveries: AtomicU64,
    /// Per-record scoring time.
    pub scoring: Histogram,
    /// Now minus the record's timestamp, when scored (Kafka records).
    pub lag: Histogram,
    keys: Mutex<HashMap<String, KeyActivity>>,
    recent_dead: Mutex<VecDeque<DeadNote>>,
    kafka: Mutex<Option<KafkaState>>,
    joined: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            started: SystemTime::now(),
            records_in: AtomicU64::new(0),
            scored: AtomicU64::new(0),
            canary: AtomicU64::new(0),
            out: AtomicU64::new(0),
            dead: std::array::from_fn(|_| AtomicU64::new(0)),
            shadow: AtomicU64::new(0),
            shadow_out: AtomicU64::new(0),
            shadow_failed_deliveries: AtomicU64::new(0),
            scoring: Histogram::new(SCORING_BUCKETS),
            lag: Histogram::new(LAG_BUCKETS),
            keys: Mutex::new(HashMap::new()),
            recent_dead: Mutex::new(VecDeque::new()),
            kafka: Mutex::new(None),
            joined: AtomicBool::new(false),
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
    pub dead_by_reason: BTreeMap<&'static str, u64>,
    /// Shadow outputs produced.
    pub shadow: u64,
    /// Shadow outputs the sink accepted.
    pub shadow_out: u64,
}

impl Metrics {
    /// When this process started counting.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// Applies one batch.
    pub fn record_batch(&self, tally: BatchTally) {
        self.records_in.fetch_add(tally.records, Ordering::Relaxed);
        self.scored.fetch_add(tally.scored, Ordering::Relaxed);
        self.canary.fetch_add(tally.canary, Ordering::Relaxed);
        self.shadow.fetch_add(tally.shadow, Ordering::Relaxed);
        for (counter, n) in self.dead.iter().zip(tally.dead) {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
        let sec = unix_ms(SystemTime::now()) / 1000;
        {
            let mut keys = self.keys.lock().expect("metrics lock");
            for (key, t) in tally.keys {
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

    /// Counts outputs (scored records or dead letters) the sink accepted.
    pub fn add_out(&self, n: u64) {
        self.out.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts shadow outputs the sink accepted.
    pub fn add_shadow_out(&self, n: u64) {
        self.shadow_out.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a shadow output the sink refused (shadow outputs are best effort).
    pub fn shadow_delivery_failed(&self) {
        self.shadow_failed_deliveries
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn totals(&self) -> Totals {
        let dead_by_reason: BTreeMap<&'static str, u64> = Reason::ALL
            .iter()
            .zip(&self.dead)
            .map(|(r, c)| (r.as_str(), c.load(Ordering::Relaxed)))
            .collect();
        Totals {
            records_in: self.records_in.load(Ordering::Relaxed),
            scored: self.scored.load(Ordering::Relaxed),
            canary: self.canary.load(Ordering::Relaxed),
            records_out: self.out.load(Ordering::Relaxed),
            dead_letters: dead_by_reason.values().sum(),
            dead_by_reason,
            shadow: self.shadow.load(Ordering::Relaxed),
            shadow_out: self.shadow_out.load(Ordering::Relaxed),
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

    /// Marks this process as a consumer-group member (readiness then needs an assignment).
    pub fn kafka_started(&self) {
        self.kafka
            .lock()
            .expect("metrics lock")
            .get_or_insert_with(KafkaState::default);
    }

    /// Whether this process consumes from Kafka.
    pub fn is_kafka(&self) -> bool {
        self.kafka.lock().expect("metrics lock").is_some()
    }

    /// Partitions were assigned to this member.
    pub fn partitions_assigned(&self, partitions: &[(String, i32)]) {
        let mut kafka = self.kafka.lock().expect("metrics lock");
        let state = kafka.get_or_insert_with(KafkaState::default);
        state.assigned.extend(partitions.iter().cloned());
        self.joined.store(true, Ordering::SeqCst);
    }

    /// Partitions were taken from this member (a rebalance or leaving the group).
    pub fn partitions_revoked(&self, partitions: &[(String, i32)]) {
        let mut kafka = self.kafka.lock().expect("metrics lock");
        let state = kafka.get_or_insert_with(KafkaState::default);
        for p in partitions {
            state.assigned.remove(p);
            state.lag.remove(p);
        }
        self.joined.store(false, Ordering::SeqCst);
    }

    /// Whether the member holds an assignment (possibly empty, when the group has more members
    /// than partitions) since its last revocation.
    pub fn has_assignment(&self) -> bool {
        self.joined.load(Ordering::SeqCst)
    }

    /// Assigned partitions, sorted.
    pub fn assigned(&self) -> Vec<(String, i32)> {
        self.kafka
            .lock()
            .expect("metrics lock")
            .as_ref()
            .map(|k| k.assigned.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Sets consumer lag (messages behind the high watermark) per assigned partition, from
    /// librdkafka's statistics. Partitions not assigned are ignored.
    pub fn set_consumer_lag(&self, lag: impl IntoIterator<Item = ((String, i32), i64)>) {
        let mut kafka = self.kafka.lock().expect("metrics lock");
        let state = kafka.get_or_insert_with(KafkaState::default);
        for (tp, n) in lag {
            if state.assigned.contains(&tp) && n >= 0 {
                state.lag.insert(tp, n);
            }
        }
    }

    /// Consumer lag per assigned partition, as last reported.
    pub fn consumer_lag(&self) -> BTreeMap<(String, i32), i64> {
        self.kafka
            .lock()
            .expect("metrics lock")
            .as_ref()
            .map(|k| k.lag.clone())
            .unwrap_or_default()
    }

    /// Appends the process-wide series (not the per-key or registry ones) in Prometheus text
    /// format.
    pub(crate) fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let t = self.totals();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            out,
            "keyscore_records_in_total",
            "Input records read.",
            t.records_in,
        );
        counter(
            out,
            "keyscore_records_scored_total",
            "Records scored (by a key's own model or the fallback).",
            t.scored,
        );
        counter(
            out,
            "keyscore_records_canary_total",
            "Records scored by a canary version.",
            t.canary,
        );
        counter(
            out,
            "keyscore_records_out_total",
            "Outputs (scored records and dead letters) the sink accepted.",
            t.records_out,
        );
        let _ = writeln!(
            out,
            "# HELP keyscore_dead_letters_total Records not scored, by reason.\n# TYPE keyscore_dead_letters_total counter"
        );
        for (reason, n) in &t.dead_by_reason {
            let _ = writeln!(
                out,
                "keyscore_dead_letters_total{{reason=\"{reason}\"}} {n}"
            );
        }
        counter(
            out,
            "keyscore_shadow_records_total",
            "Outputs of shadow versions produced.",
            t.shadow,
        );
        counter(
            out,
            "keyscore_shadow_records_out_total",
            "Outputs of shadow versions the sink accepted.",
            t.shadow_out,
        );
        counter(
            out,
            "keyscore_shadow_delivery_failures_total",
            "Outputs of shadow versions the sink refused (best effort, not retried).",
            self.shadow_failed_deliveries.load(Ordering::Relaxed),
        );
        self.scoring.render(
            out,
            "keyscore_scoring_duration_seconds",
            "Per-record scoring time: feature extraction and model.",
        );
        self.lag.render(
            out,
            "keyscore_end_to_end_lag_seconds",
            "Time from a record's timestamp to its scoring (Kafka records).",
        );
        if self.is_kafka() {
            let assigned = self.assigned();
            let _ = writeln!(
                out,
                "# HELP keyscore_partitions_assigned Input partitions assigned to this member.\n# TYPE keyscore_partitions_assigned gauge\nkeyscore_partitions_assigned {}",
                assigned.len()
            );
            let _ = writeln!(
                out,
                "# HELP keyscore_consumer_lag Messages between the committed position and the high watermark, per assigned partition.\n# TYPE keyscore_consumer_lag gauge"
            );
            for ((topic, partition), n) in self.consumer_lag() {
                let _ = writeln!(
                    out,
                    "keyscore_consumer_lag{{topic=\"{}\",partition=\"{partition}\"}} {n}",
                    escape_label(&topic)
                );
            }
        }
    }
}

/// Escapes a Prometheus label value.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(1));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.01\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count 4\n"), "{out}");
        assert!(out.contains("x_sum 1.0105\n"), "{out}");
    }

    #[test]
    fn a_local_tally_adds_up_like_direct_observations() {
        let direct = Histogram::new(&[0.001, 0.01]);
        let batched = Histogram::new(&[0.001, 0.01]);
        let mut local = batched.local();
        for d in [500, 5_000, 5_000, 1_000_000].map(Duration::from_micros) {
            direct.observe(d);
            local.observe(d);
        }
        batched.add(&mut local);
        batched.add(&mut local); // emptied by the first add
        let (mut a, mut b) = (String::new(), String::new());
        direct.render(&mut a, "x", "help");
        batched.render(&mut b, "x", "help");
        assert_eq!(a, b);
    }

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
    fn labels_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn batches_add_up_and_keep_recent_dead_letters() {
        let m = Metrics::default();
        let mut t = BatchTally {
            records: 3,
            scored: 2,
            ..BatchTally::default()
        };
        t.keys.insert(
            "paris".into(),
            KeyTally {
                scored: 2,
                scores: vec![1.0, 2.0],
                ..KeyTally::default()
            },
        );
        t.dead_letter(
            Reason::MissingFeature,
            Some("paris"),
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
    }
}
