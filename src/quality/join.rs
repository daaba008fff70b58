//! The predictions waiting for their labels: a bounded map from record id to what was predicted,
//! oldest first out.
//!
//! Each remembered prediction costs its id, its key and (for classifiers) its probabilities on
//! the heap plus about 100 bytes; [`Memory::new`]'s cap bounds how many are held. A prediction
//! leaves when its label arrives (it stays as a joined marker so a second label for the same id
//! is told apart from an unknown one), when it is older than the join window, or when the cap
//! pushes it out; those that leave without a label are counted, never dropped silently.

use std::{collections::VecDeque, sync::Arc};

use foldhash::{HashMap, HashMapExt};

/// Which version of a key scored a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arm {
    /// The key's active version.
    Active,
    /// The key's canary version, for its share of the records.
    Canary,
    /// The key's shadow version, scoring the same records on the side.
    Shadow,
}

impl Arm {
    /// The arm's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Active => "active",
            Arm::Canary => "canary",
            Arm::Shadow => "shadow",
        }
    }

    /// The arm of a name written by [`Arm::as_str`].
    pub fn parse(name: &str) -> Option<Arm> {
        match name {
            "active" => Some(Arm::Active),
            "canary" => Some(Arm::Canary),
            "shadow" => Some(Arm::Shadow),
            _ => None,
        }
    }
}

/// What a version predicted.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicted {
    /// A regression value.
    Value(f64),
    /// A classifier's probabilities, one per class in label order.
    Classes(Box<[f64]>),
}

/// One version's prediction for a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Made {
    /// The model key of the version.
    pub key: Arc<str>,
    /// The version.
    pub version: i64,
    /// Which arm it scored for.
    pub arm: Arm,
    /// What it predicted.
    pub predicted: Predicted,
}

/// A remembered record: when it was scored, the prediction it was answered with and the shadow
/// version's, if one ran.
#[derive(Debug, Clone)]
struct Entry {
    at_ms: i64,
    made: Made,
    shadow: Option<Made>,
    /// The label arrived; kept only to recognise a duplicate.
    joined: bool,
    /// Insertion number, to match the entry with its place in the queue.
    seq: u64,
}

/// What became of a label.
#[derive(Debug, Clone, PartialEq)]
pub enum Joined {
    /// The label judged these predictions, made at `at_ms`.
    Matched {
        /// When the record was scored, ms since the Unix epoch.
        at_ms: i64,
        /// The prediction the record was answered with.
        made: Made,
        /// The shadow version's prediction, if one ran.
        shadow: Option<Made>,
    },
    /// The id's label already arrived.
    Duplicate,
    /// No prediction with that id is remembered: never scored here, or forgotten (older than
    /// the join window or pushed out by the cap).
    Unknown,
}

/// Predictions forgotten without a label, by why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Older than the join window.
    pub expired: u64,
    /// Pushed out by the cap on remembered predictions.
    pub evicted: u64,
}

/// The bounded map of predictions awaiting labels.
#[derive(Debug)]
pub struct Memory {
    entries: HashMap<Arc<str>, Entry>,
    /// Ids in insertion order with their insertion numbers and times; an id whose entry has
    /// another number was remembered again later and is skipped.
    order: VecDeque<(Arc<str>, u64, i64)>,
    cap: usize,
    window_ms: i64,
    next_seq: u64,
    /// Forgotten without a label since the last [`Memory::take_forgotten`], with the
    /// (key, version, arm) they were made by.
    forgotten: Vec<(Made, bool)>,
}

impl Memory {
    /// Remembers at most `cap` predictions, each for at most `window_ms`.
    pub fn new(cap: usize, window_ms: i64) -> Memory {
        Memory {
            entries: HashMap::with_capacity(cap.min(1 << 16)),
            order: VecDeque::new(),
            cap: cap.max(1),
            window_ms,
            next_seq: 0,
            forgotten: Vec::new(),
        }
    }

    /// Predictions (joined or not) held now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Remembers the prediction answering record `id`, scored at `at_ms`. A second prediction
    /// for the same id (a record scored again, say after a restart) replaces the first.
    pub fn remember(&mut self, id: &str, at_ms: i64, made: Made, shadow: Option<Made>) {
        self.expire(at_ms);
        while self.entries.len() >= self.cap {
            if !self.pop_oldest(false) {
                break;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let id: Arc<str> = Arc::from(id);
        self.order.push_back((Arc::clone(&id), seq, at_ms));
        let entry = Entry {
            at_ms,
            made,
            shadow,
            joined: false,
            seq,
        };
        self.entries.insert(id, entry);
        // Replaced ids leave stale queue entries behind; compact when they dominate.
        if self.order.len() > 2 * self.cap.max(1024) {
            let entries = &self.entries;
            self.order
                .retain(|(id, seq, _)| entries.get(id).is_some_and(|e| e.seq == *seq));
        }
    }

    /// Joins a label for record `id`, arriving at `now_ms`.
    pub fn join(&mut self, id: &str, now_ms: i64) -> Joined {
        self.expire(now_ms);
        match self.entries.get_mut(id) {
            None => Joined::Unknown,
            Some(e) if e.joined => Joined::Duplicate,
            Some(e) => {
                e.joined = true;
                // The predictions move to the caller; the entry stays as a marker.
                let made = e.made.clone();
                Joined::Matched {
                    at_ms: e.at_ms,
                    made,
                    shadow: e.shadow.take(),
                }
            }
        }
    }

    /// Forgets predictions older than the join window at `now_ms`. The queue's times are
    /// in insertion order, so the common case (nothing to forget) reads the front only.
    pub fn expire(&mut self, now_ms: i64) {
        while let Some((id, seq, at_ms)) = self.order.front() {
            if now_ms - *at_ms <= self.window_ms {
                break;
            }
            if self.entries.get(id).is_some_and(|e| e.seq == *seq) {
                self.pop_oldest(true);
            } else {
                // Remembered again later: its newer place in the queue decides.
                self.order.pop_front();
            }
        }
    }

    /// Removes the oldest live entry; false when there is none.
    fn pop_oldest(&mut self, expired: bool) -> bool {
        while let Some((id, seq, _)) = self.order.pop_front() {
            if self.entries.get(&id).is_some_and(|e| e.seq == seq) {
                let e = self.entries.remove(&id).expect("just found");
                if !e.joined {
                    self.forgotten.push((e.made, expired));
                    if let Some(shadow) = e.shadow {
                        self.forgotten.push((shadow, expired));
                    }
                }
                return true;
            }
        }
        false
    }

    /// The predictions forgotten without a label since the last call, each with whether it
    /// expired (true) or was evicted by the cap (false).
    pub fn take_forgotten(&mut self) -> Vec<(Made, bool)> {
        std::mem::take(&mut self.forgotten)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made(v: f64) -> Made {
        Made {
            key: Arc::from("paris"),
            version: 1,
            arm: Arm::Active,
            predicted: Predicted::Value(v),
        }
    }

    #[test]
    fn a_label_joins_once_then_is_a_duplicate() {
        let mut m = Memory::new(10, 1_000);
        m.remember("r1", 0, made(1.0), None);
        match m.join("r1", 10) {
            Joined::Matched {
                at_ms, made: got, ..
            } => {
                assert_eq!(at_ms, 0);
                assert_eq!(got, made(1.0));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(m.join("r1", 20), Joined::Duplicate);
        assert_eq!(m.join("nope", 20), Joined::Unknown);
        assert!(m.take_forgotten().is_empty());
    }

    #[test]
    fn the_cap_pushes_the_oldest_out_and_counts_it() {
        let mut m = Memory::new(3, 1_000_000);
        for i in 0..5 {
            m.remember(&format!("r{i}"), i, made(i as f64), None);
        }
        assert_eq!(m.len(), 3);
        assert_eq!(m.join("r0", 10), Joined::Unknown);
        assert!(matches!(m.join("r4", 10), Joined::Matched { .. }));
        let forgotten = m.take_forgotten();
        assert_eq!(forgotten.len(), 2);
        assert!(forgotten.iter().all(|(_, expired)| !expired));
    }

    #[test]
    fn predictions_older_than_the_window_expire_and_are_counted() {
        let mut m = Memory::new(100, 50);
        m.remember("old", 0, made(1.0), Some(made(2.0)));
        m.remember("new", 40, made(1.0), None);
        assert_eq!(m.join("old", 60), Joined::Unknown);
        assert!(matches!(m.join("new", 60), Joined::Matched { .. }));
        let forgotten = m.take_forgotten();
        assert_eq!(forgotten.len(), 2, "the prediction and its shadow");
        assert!(forgotten.iter().all(|(_, expired)| *expired));
    }

    #[test]
    fn the_stale_place_of_a_record_scored_again_expires_nothing_live() {
        let mut m = Memory::new(100, 50);
        m.remember("again", 0, made(1.0), None);
        m.remember("other", 10, made(2.0), None);
        m.remember("again", 40, made(3.0), None);
        // At 55 the first place of "again" (0) is past the window, but "again" was scored
        // again at 40: only the stale place goes, and "other" (10) stays.
        m.expire(55);
        assert_eq!(m.len(), 2);
        assert!(m.take_forgotten().is_empty());
        assert!(matches!(m.join("other", 55), Joined::Matched { .. }));
        assert!(matches!(m.join("again", 55), Joined::Matched { .. }));
    }

    #[test]
    fn a_record_scored_again_replaces_its_prediction_without_leaking() {
        let mut m = Memory::new(4, 1_000_000);
        for round in 0..10_000 {
            m.remember("same", round, made(round as f64), None);
        }
        assert_eq!(m.len(), 1);
        assert!(m.order.len() <= 2 * 1024 + 1);
        match m.join("same", 10_000) {
            Joined::Matched { made: got, .. } => assert_eq!(got, made(9_999.0)),
            other => panic!("{other:?}"),
        }
    }
}
