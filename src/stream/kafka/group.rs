//! This member's place in the consumer group, as the pipeline reports it: whether it holds an
//! assignment, which partitions, how far each lags behind its high watermark, and whether any
//! broker connection is up. Readiness and
//! the status page read it; its gauges are registered with the operations endpoint.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    time::SystemTime,
};

use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

/// A topic and partition.
pub type TopicPartition = (String, i32);

#[derive(Debug, Default)]
struct Assignment {
    assigned: BTreeSet<TopicPartition>,
    lag: BTreeMap<TopicPartition, i64>,
}

/// The consumer-group state of one `serve` member.
#[derive(Debug)]
pub struct GroupState {
    assignment: Mutex<Assignment>,
    joined: AtomicBool,
    /// Since when no broker connection is up, as librdkafka last reported (its error callback
    /// and statistics), if none is.
    brokers_down_since: Mutex<Option<SystemTime>>,
    partitions_gauge: IntGauge,
    lag_gauge: IntGaugeVec,
    /// Dead letters whose payload was cut to the dead-letter payload limit.
    pub(crate) truncated: IntCounter,
    /// Outputs refused as too large (by the producer or the broker), replaced by a dead letter
    /// with the source coordinates only.
    pub(crate) too_large: IntCounter,
    /// In-process restarts of the member after a delivery or consumer failure.
    pub(crate) restarts: IntCounter,
}

impl Default for GroupState {
    fn default() -> Self {
        Self {
            assignment: Mutex::default(),
            joined: AtomicBool::new(false),
            brokers_down_since: Mutex::new(None),
            partitions_gauge: IntGauge::with_opts(Opts::new(
                "keyscore_partitions_assigned",
                "Input partitions assigned to this member.",
            ))
            .expect("a valid gauge name"),
            lag_gauge: IntGaugeVec::new(
                Opts::new(
                    "keyscore_consumer_lag",
                    "Messages between the committed position and the high watermark, per \
                     assigned partition.",
                ),
                &["topic", "partition"],
            )
            .expect("a valid gauge name"),
            truncated: IntCounter::with_opts(Opts::new(
                "keyscore_dead_letter_payloads_truncated_total",
                "Dead letters whose payload was cut to [kafka] dead_letter_max_payload_bytes.",
            ))
            .expect("a valid counter name"),
            too_large: IntCounter::with_opts(Opts::new(
                "keyscore_outputs_too_large_total",
                "Outputs the producer or the broker refused as too large, each replaced by a \
                 dead letter carrying the source coordinates only.",
            ))
            .expect("a valid counter name"),
            restarts: IntCounter::with_opts(Opts::new(
                "keyscore_kafka_restarts_total",
                "In-process restarts of this member (new consumer and producer) after a delivery \
                 or consumer failure.",
            ))
            .expect("a valid counter name"),
        }
    }
}

impl GroupState {
    /// Registers the group gauges with `registry`, for exposition.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.partitions_gauge.clone()))?;
        registry.register(Box::new(self.truncated.clone()))?;
        registry.register(Box::new(self.too_large.clone()))?;
        registry.register(Box::new(self.restarts.clone()))?;
        registry.register(Box::new(self.lag_gauge.clone()))
    }

    fn assignment(&self) -> std::sync::MutexGuard<'_, Assignment> {
        self.assignment.lock().expect("group state lock")
    }

    /// Partitions were assigned to this member.
    pub fn partitions_assigned(&self, partitions: &[TopicPartition]) {
        let mut a = self.assignment();
        a.assigned.extend(partitions.iter().cloned());
        self.partitions_gauge.set(a.assigned.len() as i64);
        self.joined.store(true, Ordering::SeqCst);
    }

    /// Partitions were taken from this member (a rebalance or leaving the group).
    pub fn partitions_revoked(&self, partitions: &[TopicPartition]) {
        let mut a = self.assignment();
        for p in partitions {
            a.assigned.remove(p);
            if a.lag.remove(p).is_some() {
                let _ = self
                    .lag_gauge
                    .remove_label_values(&[&p.0, &p.1.to_string()]);
            }
        }
        self.partitions_gauge.set(a.assigned.len() as i64);
        self.joined.store(false, Ordering::SeqCst);
    }

    /// Whether the member holds an assignment (possibly empty, when the group has more members
    /// than partitions) since its last revocation.
    pub fn has_assignment(&self) -> bool {
        self.joined.load(Ordering::SeqCst)
    }

    /// Assigned partitions, sorted.
    pub fn assigned(&self) -> Vec<TopicPartition> {
        self.assignment().assigned.iter().cloned().collect()
    }

    /// Sets consumer lag (messages behind the high watermark) per assigned partition, from
    /// librdkafka's statistics. Partitions not assigned are ignored.
    pub fn set_consumer_lag(&self, lag: impl IntoIterator<Item = (TopicPartition, i64)>) {
        let mut a = self.assignment();
        for (tp, n) in lag {
            if a.assigned.contains(&tp) && n >= 0 {
                self.lag_gauge
                    .with_label_values(&[&tp.0, &tp.1.to_string()])
                    .set(n);
                a.lag.insert(tp, n);
            }
        }
    }

    /// No broker connection is up (librdkafka reported all brokers down, or its statistics
    /// show none up). Keeps the earliest time.
    pub fn brokers_down(&self) {
        self.brokers_down_since
            .lock()
            .expect("broker state lock")
            .get_or_insert_with(SystemTime::now);
    }

    /// A broker connection is up (a message arrived, or the statistics show one up).
    pub fn brokers_up(&self) {
        *self.brokers_down_since.lock().expect("broker state lock") = None;
    }

    /// Since when no broker connection is up, if none is.
    pub fn brokers_down_since(&self) -> Option<SystemTime> {
        *self.brokers_down_since.lock().expect("broker state lock")
    }

    /// In-process restarts of this member so far.
    pub fn restarts(&self) -> u64 {
        self.restarts.get()
    }

    /// Consumer lag per assigned partition, as last reported.
    pub fn consumer_lag(&self) -> BTreeMap<TopicPartition, i64> {
        self.assignment().lag.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_kept_for_assigned_partitions_only_and_dropped_on_revocation() {
        let g = GroupState::default();
        assert!(!g.has_assignment());
        g.partitions_assigned(&[("in".into(), 0), ("in".into(), 1)]);
        assert!(g.has_assignment());
        g.set_consumer_lag([(("in".into(), 0), 5), (("in".into(), 7), 9)]);
        assert_eq!(g.consumer_lag().len(), 1);
        g.partitions_revoked(&[("in".into(), 0)]);
        assert!(g.consumer_lag().is_empty());
        assert_eq!(g.assigned(), vec![("in".to_string(), 1)]);
        assert_eq!(g.partitions_gauge.get(), 1);
    }
}
