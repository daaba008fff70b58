//! What the pipeline thread shares with librdkafka's callbacks: the in-flight tracker behind a
//! lock, delivery failures, rebalance epochs; and the callbacks themselves (delivery reports
//! acknowledge records, revocations finish and commit the revoked partitions first).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use rdkafka::{
    config::RDKafkaLogLevel,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance},
    error::{KafkaError, KafkaResult},
    message::Message,
    producer::{DeliveryResult, ProducerContext},
    types::RDKafkaErrorCode,
    ClientContext, Offset, TopicPartitionList,
};
use tracing::{debug, info, warn};

use super::client_log::ClientLog;
use super::{
    group::GroupState,
    tracker::{Token, TopicPartition, Tracker},
};
use crate::stream::Metrics;

/// Whether `code` says a message is over a size limit (the producer's or the broker's).
pub(super) fn is_too_large(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge
    )
}

/// The delivery token of shadow outputs: they are not tracked for offsets (shadow outputs are
/// best effort), only counted. Tracker tokens never reach it (it would need 2^24 partitions).
pub(super) const SHADOW_TOKEN: Token = usize::MAX;

/// State shared by the pipeline thread and the librdkafka callbacks.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) tracker: Mutex<Tracker>,
    /// Signalled on acknowledgements while a thread waits on it, and on a delivery failure.
    pub(super) changed: Condvar,
    /// Threads waiting on `changed`; only changed with the tracker lock held, so an
    /// acknowledgement (made under that lock) never misses a waiter, and needs no wake-up
    /// system call when there is none.
    pub(super) waiters: AtomicUsize,
    /// The first delivery that failed for good: its topic and the error.
    pub(super) fatal: Mutex<Option<(String, KafkaError)>>,
    pub(super) acknowledged: AtomicU64,
    /// Bumped on every rebalance.
    pub(super) epoch: AtomicU64,
    /// Partitions revoked since the pipeline thread last looked.
    pub(super) revoked: Mutex<Vec<TopicPartition>>,
    pub(super) drain_timeout: Duration,
    /// Set once the pipeline is leaving the group: revocations then do not wait again.
    pub(super) closing: AtomicBool,
    pub(super) metrics: Arc<Metrics>,
    pub(super) group: Arc<GroupState>,
    /// Outputs the broker refused as too large, for the pipeline thread to replace.
    pub(super) oversized: Mutex<Oversized>,
    /// How many replacements of such outputs await their delivery (`oversized.replaced`'s
    /// size), so a delivery report takes the lock only while there are some.
    pub(super) replacing: AtomicUsize,
    /// librdkafka's errors and log lines already said.
    pub(super) client_log: ClientLog,
    /// `[kafka] processing = "exactly_once"`: offsets are committed in transactions only.
    pub(super) exactly_once: bool,
}

/// Outputs refused as too large: waiting to be replaced by a dead letter with the source
/// coordinates only, and those replaced whose delivery is awaited. Both hold only in-flight
/// tokens, so they are bounded by `max_in_flight`.
#[derive(Debug, Default)]
pub(super) struct Oversized {
    /// Tokens with the refused output's size in bytes.
    pub(super) pending: Vec<(Token, usize)>,
    /// Tokens whose replacement was produced.
    pub(super) replaced: std::collections::HashSet<Token>,
}

impl Shared {
    pub(super) fn tracker(&self) -> MutexGuard<'_, Tracker> {
        self.tracker.lock().expect("tracker lock")
    }

    pub(super) fn oversized(&self) -> MutexGuard<'_, Oversized> {
        self.oversized.lock().expect("oversized lock")
    }

    pub(super) fn in_flight(&self) -> usize {
        self.tracker().in_flight()
    }

    pub(super) fn fatal(&self) -> Option<(String, KafkaError)> {
        self.fatal.lock().expect("fatal lock").clone()
    }

    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    pub(super) fn acknowledge(&self, token: Token) {
        let (waiting, polled) = {
            let mut tracker = self.tracker();
            let polled = tracker.ack(token);
            if polled.is_some() {
                self.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            (self.waiters.load(Ordering::Relaxed) > 0, polled)
        };
        if let Some(polled) = polled {
            self.metrics
                .residence_acked
                .observe(polled.elapsed().as_secs_f64());
        }
        if waiting {
            self.changed.notify_all();
        }
    }

    /// Waits on `changed` for at most `timeout`, counted as a waiter meanwhile.
    pub(super) fn wait_changed<'a>(
        &self,
        tracker: MutexGuard<'a, Tracker>,
        timeout: Duration,
    ) -> MutexGuard<'a, Tracker> {
        self.waiters.fetch_add(1, Ordering::Relaxed);
        let tracker = self
            .changed
            .wait_timeout(tracker, timeout)
            .expect("tracker lock")
            .0;
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        tracker
    }

    /// Wakes the threads waiting on `changed` (taking the tracker lock first, so a waiter that
    /// just checked its condition is already waiting).
    pub(super) fn wake(&self) {
        drop(self.tracker());
        self.changed.notify_all();
    }

    pub(super) fn fail(&self, topic: &str, err: KafkaError) {
        self.fatal
            .lock()
            .expect("fatal lock")
            .get_or_insert_with(|| (topic.to_string(), err));
        self.changed.notify_all();
    }

    /// Waits until at most `limit` records are in flight. False when the deadline passed first,
    /// a delivery failed, or an output refused as too large waits to be replaced.
    pub(super) fn wait_at_most(&self, limit: usize, deadline: Instant) -> bool {
        let mut tracker = self.tracker();
        loop {
            if tracker.in_flight() <= limit {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || self.fatal().is_some() || !self.oversized().pending.is_empty() {
                return false;
            }
            tracker = self.wait_changed(tracker, deadline - now);
        }
    }

    /// Waits until the given partitions (all when `None`) have nothing in flight. False when
    /// the deadline passed first or a delivery failed.
    pub(super) fn wait_drained(
        &self,
        partitions: Option<&[TopicPartition]>,
        deadline: Instant,
    ) -> bool {
        let mut tracker = self.tracker();
        loop {
            let n = match partitions {
                Some(p) => tracker.in_flight_of(p),
                None => tracker.in_flight(),
            };
            if n == 0 {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || self.fatal().is_some() {
                return false;
            }
            tracker = self.wait_changed(tracker, deadline - now);
        }
    }
}

/// Receives delivery reports on the producer's polling thread.
pub(super) struct DeliveryContext {
    pub(super) shared: Arc<Shared>,
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        client_error(&self.shared, "producer", &error, reason);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        client_log(&self.shared, "producer", level, fac, message);
    }
}

/// A librdkafka client error: all brokers down marks the member not ready; each kind of error
/// is logged once per [`QUIET`](super::client_log::QUIET) with the count left out.
fn client_error(shared: &Shared, client: &str, error: &KafkaError, reason: &str) {
    let code = error.rdkafka_error_code();
    if code == Some(RDKafkaErrorCode::AllBrokersDown) {
        shared.group.brokers_down();
    }
    let kind = format!("{client}:{code:?}");
    if let Some(left_out) = shared.client_log.admit(&kind, Instant::now()) {
        warn!(client, error = %error, reason, left_out, "Kafka client error.");
    }
}

/// A librdkafka log line: the serious ones once per kind and quiet period, the rest at debug
/// (failures that matter also come as client errors, which are logged).
fn client_log(shared: &Shared, client: &str, level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
            let kind = format!("{client}:log:{fac}");
            if let Some(left_out) = shared.client_log.admit(&kind, Instant::now()) {
                warn!(client, facility = fac, left_out, "librdkafka: {message}");
            }
        }
        _ => debug!(client, facility = fac, "librdkafka: {message}"),
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Token;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Token) {
        if token == SHADOW_TOKEN {
            match result {
                Ok(_) => self.shared.metrics.add_shadow_out(1),
                Err((err, _)) => {
                    self.shared.metrics.shadow_delivery_failed();
                    debug!(error = %err, "A shadow output was not accepted.");
                }
            }
            return;
        }
        match result {
            Ok(_) => {
                // Checked without the lock: replacements are rare, deliveries are not.
                if self.shared.replacing.load(Ordering::Relaxed) > 0
                    && self.shared.oversized().replaced.remove(&token)
                {
                    self.shared.replacing.fetch_sub(1, Ordering::Relaxed);
                }
                self.shared.metrics.add_out(1);
                self.shared.acknowledge(token)
            }
            Err((KafkaError::MessageProduction(code), msg))
                if is_too_large(*code) && !self.shared.oversized().replaced.contains(&token) =>
            {
                // One record the broker will never take must not stop the partition: the
                // pipeline thread replaces it with a dead letter naming the source record.
                let size = msg.payload_len();
                self.shared.oversized().pending.push((token, size));
                self.shared.wake();
            }
            Err((err, msg)) => self.shared.fail(msg.topic(), err.clone()),
        }
    }
}

/// Runs on the pipeline thread inside `poll`: finishes revoked partitions before they go.
pub(super) struct RebalanceContext {
    pub(super) shared: Arc<Shared>,
}

impl ClientContext for RebalanceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        client_error(&self.shared, "consumer", &error, reason);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        client_log(&self.shared, "consumer", level, fac, message);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        // Readiness: some broker connection up, or none (bootstrap placeholders, id -1, aside).
        let mut brokers = statistics
            .brokers
            .values()
            .filter(|b| b.nodeid >= 0)
            .peekable();
        if brokers.peek().is_some() {
            if brokers.any(|b| b.state == "UP") {
                self.shared.group.brokers_up();
            } else {
                self.shared.group.brokers_down();
            }
        }
        let lag = statistics.topics.into_iter().flat_map(|(topic, t)| {
            t.partitions
                .into_iter()
                .filter(|(p, _)| *p >= 0)
                .map(move |(p, s)| ((topic.clone(), p), s.consumer_lag))
        });
        self.shared.group.set_consumer_lag(lag);
    }
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let parts: Vec<TopicPartition> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                self.shared
                    .revoked
                    .lock()
                    .expect("revoked lock")
                    .extend(parts.iter().cloned());
                self.shared.group.partitions_revoked(&parts);
                self.shared.epoch.fetch_add(1, Ordering::SeqCst);
                let wait = if self.shared.closing.load(Ordering::SeqCst) {
                    Duration::ZERO
                } else {
                    self.shared.drain_timeout
                };
                let drained = self
                    .shared
                    .wait_drained(Some(&parts), Instant::now() + wait);
                store_offsets(consumer, &self.shared);
                if !consumer.assignment_lost() && !self.shared.exactly_once {
                    commit(consumer);
                }
                let abandoned = self.shared.tracker().in_flight_of(&parts);
                self.shared.tracker().remove(&parts);
                if drained {
                    info!(
                        partitions = parts.len(),
                        "Partitions revoked; their in-flight records were finished and committed."
                    );
                } else if abandoned > 0 {
                    warn!(
                        partitions = parts.len(),
                        in_flight = abandoned,
                        "Partitions revoked before their in-flight records were acknowledged; the new owner scores those again."
                    );
                }
            }
            Rebalance::Assign(tpl) => {
                self.shared.epoch.fetch_add(1, Ordering::SeqCst);
                let parts: Vec<TopicPartition> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                self.shared.group.partitions_assigned(&parts);
                info!(partitions = tpl.count(), "Partitions assigned.");
            }
            Rebalance::Error(err) => warn!(error = %err, "Rebalance failed."),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => debug!(partitions = offsets.count(), "Committed offsets."),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(err) => {
                warn!(error = %err, "Committing offsets failed; they are committed again with the next ones.")
            }
        }
    }
}

/// Hands acknowledged offsets to the consumer's offset store.
pub(super) fn store_offsets<C: ConsumerContext>(consumer: &BaseConsumer<C>, shared: &Shared) {
    let stores = shared.tracker().take_stores();
    if stores.is_empty() || shared.exactly_once {
        // Under exactly-once the offsets go into each batch's transaction instead.
        return;
    }
    let mut tpl = TopicPartitionList::with_capacity(stores.len());
    for (topic, partition, offset) in &stores {
        if let Err(err) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
            warn!(topic, partition, error = %err, "Cannot store offset.");
        }
    }
    if let Err(err) = consumer.store_offsets(&tpl) {
        // Partitions revoked since: their new owner resumes from the last commit.
        debug!(error = %err, "Some offsets were not stored.");
    }
}

pub(super) fn commit<C: ConsumerContext>(consumer: &BaseConsumer<C>) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(err) => {
            warn!(error = %err, "Committing offsets failed; records since the last commit may be scored again.")
        }
    }
}
