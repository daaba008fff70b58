//! Which consumed records are still waiting for the broker, and which offsets may be stored.
//!
//! Every record is registered, in consumption order, before its output is handed to the
//! producer; the delivery callback acknowledges it by the [`Token`] it got. A partition's
//! stored offset only moves past a record once that record and every earlier one of the same
//! partition are acknowledged, so a committed offset never skips an unfinished record, however
//! the broker orders acknowledgements across output partitions and topics.
//!
//! A partition is tracked from its first registered record until it is revoked. Each time it
//! is tracked anew it gets a fresh slot id, so a late acknowledgement for a record of an earlier
//! assignment is recognised and ignored.

use std::{
    collections::{HashMap, VecDeque},
    time::Instant,
};

/// Identifies one registered record: its slot id in the high 24 bits, its sequence number
/// within the slot in the low 40.
pub(crate) type Token = usize;

const SEQ_BITS: u32 = 40;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
const SLOT_MASK: u64 = (1 << 24) - 1;

const _: () = assert!(usize::BITS >= 64, "delivery tokens need a 64-bit usize");

/// A topic and partition.
pub(crate) type TopicPartition = (String, i32);

#[derive(Debug)]
struct Slot {
    topic: String,
    partition: i32,
    /// Sequence number of `entries[0]`.
    front_seq: u64,
    /// Offsets of registered records not yet passed by the watermark, whether each is
    /// acknowledged, and when the poll returned it.
    entries: VecDeque<(i64, bool, Instant)>,
    unacked: usize,
    /// The next offset to store (one past the last contiguously acknowledged record).
    next_store: Option<i64>,
    /// The offset last handed out by [`Tracker::take_stores`].
    stored: Option<i64>,
}

/// In-flight records per partition.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    slots: HashMap<u32, Slot>,
    by_partition: HashMap<TopicPartition, u32>,
    next_slot: u32,
    in_flight: usize,
    /// The slot of the last registration, checked first (records come in runs per partition).
    last: Option<u32>,
}

impl Tracker {
    /// Registers the record at `offset` of a partition, returned by a poll at `polled`; it
    /// counts as in flight until acknowledged. Offsets of one partition must be registered in
    /// increasing order.
    pub(crate) fn register(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        polled: Instant,
    ) -> Token {
        let id = match self.last.filter(|id| {
            self.slots
                .get(id)
                .is_some_and(|s| s.partition == partition && s.topic == topic)
        }) {
            Some(id) => id,
            None => {
                let id = match self.by_partition.get(&(topic.to_string(), partition)) {
                    Some(id) => *id,
                    None => self.new_slot(topic, partition),
                };
                self.last = Some(id);
                id
            }
        };
        let slot = self.slots.get_mut(&id).expect("slot ids point at slots");
        let seq = slot.front_seq + slot.entries.len() as u64;
        slot.entries.push_back((offset, false, polled));
        slot.unacked += 1;
        self.in_flight += 1;
        ((u64::from(id) << SEQ_BITS) | (seq & SEQ_MASK)) as Token
    }

    fn new_slot(&mut self, topic: &str, partition: i32) -> u32 {
        let id = self.next_slot;
        self.next_slot = (self.next_slot + 1) & SLOT_MASK as u32;
        self.slots.insert(
            id,
            Slot {
                topic: topic.to_string(),
                partition,
                front_seq: 0,
                entries: VecDeque::new(),
                unacked: 0,
                next_store: None,
                stored: None,
            },
        );
        self.by_partition.insert((topic.to_string(), partition), id);
        id
    }

    /// Acknowledges a record; returns when the poll returned it. `None` when the token belongs
    /// to a partition no longer tracked (revoked since), or was acknowledged before.
    pub(crate) fn ack(&mut self, token: Token) -> Option<Instant> {
        let token = token as u64;
        let id = (token >> SEQ_BITS) as u32;
        let seq = token & SEQ_MASK;
        let slot = self.slots.get_mut(&id)?;
        let index = seq.checked_sub(slot.front_seq)?;
        let entry = slot.entries.get_mut(index as usize)?;
        if entry.1 {
            return None;
        }
        entry.1 = true;
        let polled = entry.2;
        slot.unacked -= 1;
        self.in_flight -= 1;
        while let Some(&(offset, true, _)) = slot.entries.front() {
            slot.entries.pop_front();
            slot.front_seq += 1;
            slot.next_store = Some(offset + 1);
        }
        Some(polled)
    }

    /// The source topic, partition and offset of the record of `token`, while its partition
    /// is tracked and the record unacknowledged.
    pub(crate) fn coordinates(&self, token: Token) -> Option<(&str, i32, i64)> {
        let token = token as u64;
        let slot = self.slots.get(&((token >> SEQ_BITS) as u32))?;
        let index = (token & SEQ_MASK).checked_sub(slot.front_seq)?;
        let (offset, acked, _) = slot.entries.get(index as usize)?;
        (!acked).then_some((slot.topic.as_str(), slot.partition, *offset))
    }

    /// Records registered and not yet acknowledged, over all partitions.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Records of the given partitions not yet acknowledged.
    pub(crate) fn in_flight_of(&self, partitions: &[TopicPartition]) -> usize {
        partitions
            .iter()
            .filter_map(|tp| self.by_partition.get(tp))
            .filter_map(|id| self.slots.get(id))
            .map(|s| s.unacked)
            .sum()
    }

    /// Offsets that may be stored and were not handed out before: `(topic, partition, next
    /// offset to consume)`.
    pub(crate) fn take_stores(&mut self) -> Vec<(String, i32, i64)> {
        let mut out = Vec::new();
        for slot in self.slots.values_mut() {
            if let Some(next) = slot.next_store.filter(|n| slot.stored != Some(*n)) {
                slot.stored = Some(next);
                out.push((slot.topic.clone(), slot.partition, next));
            }
        }
        out
    }

    /// Stops tracking the given partitions; their unacknowledged records no longer count as
    /// in flight and their late acknowledgements are ignored.
    pub(crate) fn remove(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if let Some(id) = self.by_partition.remove(tp) {
                if let Some(slot) = self.slots.remove(&id) {
                    self.in_flight -= slot.unacked;
                }
                if self.last == Some(id) {
                    self.last = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tp(t: &str, p: i32) -> TopicPartition {
        (t.to_string(), p)
    }

    #[test]
    fn a_token_names_its_record_until_acknowledged() {
        let mut t = Tracker::default();
        let a = t.register("in", 3, 41, Instant::now());
        let b = t.register("in", 3, 42, Instant::now());
        assert_eq!(t.coordinates(b), Some(("in", 3, 42)));
        assert!(t.ack(a).is_some());
        assert_eq!(t.coordinates(b), Some(("in", 3, 42)));
        assert!(t.ack(b).is_some());
        assert_eq!(t.coordinates(b), None);
        assert_eq!(t.coordinates(usize::MAX >> 1), None);
    }

    #[test]
    fn stores_only_the_contiguous_acknowledged_prefix() {
        let mut t = Tracker::default();
        let a: Vec<Token> = (10..15)
            .map(|o| t.register("in", 0, o, Instant::now()))
            .collect();
        assert_eq!(t.in_flight(), 5);
        assert!(t.ack(a[1]).is_some());
        assert!(t.ack(a[2]).is_some());
        assert!(
            t.take_stores().is_empty(),
            "offset 10 is not acknowledged yet"
        );
        assert!(t.ack(a[0]).is_some());
        assert_eq!(t.take_stores(), vec![("in".to_string(), 0, 13)]);
        assert!(t.take_stores().is_empty(), "handed out once");
        assert!(t.ack(a[4]).is_some());
        assert!(t.take_stores().is_empty());
        assert!(t.ack(a[3]).is_some());
        assert_eq!(t.take_stores(), vec![("in".to_string(), 0, 15)]);
        assert_eq!(t.in_flight(), 0);
        assert!(t.ack(a[3]).is_none(), "a second acknowledgement is refused");
    }

    #[test]
    fn partitions_are_independent_and_gaps_in_offsets_are_fine() {
        let mut t = Tracker::default();
        let x = t.register("in", 0, 5, Instant::now());
        let y = t.register("in", 1, 100, Instant::now());
        let z = t.register("in", 0, 9, Instant::now());
        assert_eq!(t.in_flight_of(&[tp("in", 0)]), 2);
        t.ack(y);
        t.ack(z);
        assert_eq!(t.take_stores(), vec![("in".to_string(), 1, 101)]);
        t.ack(x);
        assert_eq!(t.take_stores(), vec![("in".to_string(), 0, 10)]);
    }

    #[test]
    fn revoked_partitions_leave_the_count_and_ignore_late_acks() {
        let mut t = Tracker::default();
        let old = t.register("in", 3, 1, Instant::now());
        t.register("in", 4, 1, Instant::now());
        t.remove(&[tp("in", 3)]);
        assert_eq!(t.in_flight(), 1);
        let new = t.register("in", 3, 1, Instant::now());
        assert_ne!(old, new);
        assert!(
            t.ack(old).is_none(),
            "an acknowledgement from the earlier assignment"
        );
        assert_eq!(t.in_flight_of(&[tp("in", 3)]), 1);
        assert!(t.ack(new).is_some());
        assert_eq!(t.take_stores(), vec![("in".to_string(), 3, 2)]);
    }

    proptest! {
        /// Whatever order acknowledgements arrive in, the stored offset is one past the longest
        /// acknowledged prefix, and never moves back.
        #[test]
        fn stored_offset_is_the_acknowledged_prefix(order in Just((0..40usize).collect::<Vec<_>>()).prop_shuffle()) {
            let mut t = Tracker::default();
            let tokens: Vec<Token> = (0..40).map(|o| t.register("in", 0, o, Instant::now())).collect();
            let mut acked = [false; 40];
            let mut last = 0;
            for i in order {
                t.ack(tokens[i]);
                acked[i] = true;
                let prefix = acked.iter().take_while(|a| **a).count() as i64;
                if let Some((_, _, off)) = t.take_stores().pop() {
                    prop_assert_eq!(off, prefix);
                    prop_assert!(off > last);
                    last = off;
                }
                prop_assert_eq!(last, prefix);
            }
            prop_assert_eq!(t.in_flight(), 0);
        }
    }
}
