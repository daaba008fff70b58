//! The Kafka pipeline behind `keyscore serve`: consume records from input topics as a member of
//! a consumer group, score each with its key's model, and produce one output per input: the
//! scored record to the output topic, or the original bytes to the dead-letter topic.
//!
//! # Records written
//!
//! * Scored records carry the JSON body of
//!   [`OutputFormat::encode`](crate::stream::OutputFormat::encode) in the `[records] output`
//!   shape (a record without an id gets `TOPIC-PARTITION-OFFSET`), the input's Kafka key (so
//!   downstream partitioning follows the input's), and the headers [`headers::MODEL_KEY`],
//!   [`headers::MODEL_VERSION`] and [`headers::MODEL_CHECKSUM`]; records scored by a canary
//!   version also carry [`headers::CANARY`] (`true`). The `enriched` shape keeps the input's
//!   headers too, before keyscore's.
//! * A key's shadow version scores the same records; its outputs go to the shadow topic
//!   (`[kafka] shadow_topic`, default the output topic plus `-shadow`) with the same key and
//!   headers plus [`headers::SHADOW`], never to the output topic. They are best effort: not
//!   tracked for offsets, and a refused one is counted
//!   (`keyscore_shadow_delivery_failures_total`), not retried.
//! * Dead letters carry the input's bytes unchanged and its key, with the headers
//!   [`headers::DEAD_REASON`] (the [`Reason`](crate::stream::Reason) class),
//!   [`headers::DEAD_MESSAGE`], and [`headers::SOURCE_TOPIC`], [`headers::SOURCE_PARTITION`]
//!   and [`headers::SOURCE_OFFSET`].
//!
//! # Delivery guarantees
//!
//! **At least once.** The consumer runs with `enable.auto.offset.store=false`. An input's
//! offset is stored only after the broker acknowledged its output, and per partition only
//! contiguously: offset N+1 is stored once every record up to N is acknowledged, whatever order
//! the acknowledgements arrive in (see the tracker). Stored offsets are committed every
//! `auto.commit.interval.ms` (keyscore default 1 s), on every partition revocation, and on
//! shutdown. A crash therefore loses nothing: whoever takes over a partition resumes at its
//! last committed offset.
//!
//! **The duplicate window.** Records whose output was acknowledged but whose offset was not yet
//! committed are scored and produced again by the member that resumes their partition. After a
//! crash (`kill -9`, out of memory, a lost host) that is at most the records acknowledged in the
//! last `auto.commit.interval.ms` before it, plus records acknowledged behind a still-pending
//! earlier record of the same partition (bounded by `max_in_flight`). A member that loses its
//! partitions without a revocation (it stalled past `session.timeout.ms` or
//! `max.poll.interval.ms`) has the same window. Clean shutdowns (SIGINT, SIGTERM) and ordinary
//! rebalances produce no duplicates: in-flight records are finished and offsets committed before
//! partitions are given up, unless that takes longer than `drain_timeout_ms`. A replayed record
//! is scored again with the model active at that time, which may be a newer version than the
//! first time. Consumers that need exactly-once effects deduplicate on the input's `id` (or on
//! the dead-letter source topic, partition and offset).
//!
//! **A failed delivery stops the process.** The idempotent producer retries on its own until
//! `message.timeout.ms`; a record that still fails is not acknowledged, so its offset and every
//! later one of its partition stay uncommitted. `serve` then stops consuming, commits what was
//! acknowledged before it, and exits with an error so a supervisor restarts it; the record is
//! scored again after the restart.
//!
//! **Order.** Records of one input partition are handed to the producer in input order, and the
//! idempotent producer (`enable.idempotence=true`, at most five requests in flight) keeps the
//! order of each output partition through retries. So two records of one input partition with
//! the same Kafka key (hence the same output partition) appear in the output in input order;
//! the same holds for dead letters. Records that go to different output partitions or topics
//! have no relative order. Replays after a crash re-append records that were already written.
//!
//! # Flow control
//!
//! At most `max_in_flight` records are consumed and not yet acknowledged. At the bound the
//! pipeline stops taking records from the consumer until half of them are acknowledged;
//! librdkafka keeps prefetching meanwhile into its own queue, bounded by
//! `queued.max.messages.kbytes` (keyscore default 32 MiB). If acknowledgements stall for a
//! second, one record is taken anyway so group events (rebalances) are still served, so the
//! bound is soft by one record a second while the producer is stuck, until
//! `message.timeout.ms` fails the delivery. (Pausing partitions was tried first: with Tansu,
//! resumed partitions stopped fetching before their end, so a backlog larger than the bound
//! stalled; `tests/kafka_pipeline.rs` keeps a test for it.) When the producer's queue is full
//! the pipeline waits for room and retries the same record. Scoring runs on the pipeline's own
//! thread, never on the async reactor.
//!
//! # Rebalances and shutdown
//!
//! On revocation the pipeline waits (up to `drain_timeout_ms`) until the revoked partitions'
//! in-flight records are acknowledged, stores their offsets and commits synchronously, then
//! lets the partitions go. Records it had consumed but not yet produced for a revoked partition
//! are dropped unproduced, to be consumed by the new owner. On cancellation it stops consuming,
//! waits for in-flight records, commits, leaves the group and flushes the producer.
//!
//! librdkafka settings and keyscore's defaults are described in [`options`].

mod callbacks;
mod client_log;
mod config;
mod group;
pub mod headers;
pub mod options;
mod topics;
mod tracker;
mod worker;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

pub use config::{is_secret_option, KafkaConfig, Processing};
pub use group::{GroupState, TopicPartition};
pub use topics::ensure_topics;

use crate::stream::{report::LatencyHistogram, Reason, Scorer};

/// Kafka pipeline errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Kafka client could not be created: usually an invalid librdkafka option.
    #[error("cannot create the Kafka {client}; check the [kafka] options")]
    Client {
        /// Which client.
        client: &'static str,
        /// The librdkafka error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Subscribing to the input topics failed.
    #[error("cannot subscribe to {topics:?}")]
    Subscribe {
        /// The topics.
        topics: Vec<String>,
        /// The librdkafka error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A topic could not be created or checked.
    #[error("cannot create topic '{topic}': {message}")]
    Topic {
        /// The topic.
        topic: String,
        /// What went wrong.
        message: String,
    },
    /// The broker did not accept an output record after the producer's retries; nothing after
    /// it was committed, and a restart scores it again.
    #[error("delivery to Kafka topic '{topic}' failed; records from the failed one on were not committed and are scored again on restart")]
    Delivery {
        /// The topic the record was for.
        topic: String,
        /// The producer's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A Kafka transaction (`exactly_once`) failed and was aborted: none of its outputs or
    /// offsets count, and the batch is consumed again.
    #[error("a Kafka transaction failed and was aborted; its records are scored again")]
    Transaction(#[source] rdkafka::error::KafkaError),
    /// `exactly_once` was asked for and the producer could not start transactions (the broker
    /// does not support them, or refused the transactional id).
    #[error(
        "processing = \"exactly_once\" needs Kafka transactions (KIP-98), and starting them \
         failed; use a broker that supports them, or processing = \"at_least_once\""
    )]
    NoTransactions(#[source] rdkafka::error::KafkaError),
    /// `[quality] labels_topic` is not co-partitioned with the input topics.
    #[error("{0}")]
    NotCoPartitioned(String),
    /// The consumer reported a fatal error.
    #[error("the Kafka consumer failed")]
    Consumer(#[source] rdkafka::types::RDKafkaErrorCode),
    /// The pipeline thread ended unexpectedly.
    #[error("the scoring pipeline thread failed: {0}")]
    Thread(String),
    /// Restarting the member in-process after delivery or consumer failures did not help.
    #[error(
        "the Kafka member failed {failures} times within {window_s} s and restarting it did not \
         help; stopping (records not acknowledged are scored again on the next start)"
    )]
    GaveUp {
        /// Failures within the window.
        failures: usize,
        /// The window, in seconds.
        window_s: u64,
        /// The last failure.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// Whether a new consumer and producer may cure it: a delivery that failed for good (an
    /// outage longer than the producer's timeout, a fatal idempotent-producer error after a
    /// broker restart) or a fatal consumer error. Configuration errors are not.
    fn is_recoverable(&self) -> bool {
        matches!(
            self,
            Error::Delivery { .. } | Error::Consumer(_) | Error::Transaction(_)
        )
    }
}

/// How many failures within [`RECOVERY_WINDOW`] the member restarts from before it stops.
const MAX_FAILURES: usize = 5;
/// The window failures are counted in.
const RECOVERY_WINDOW: Duration = Duration::from_secs(300);

impl ServeReport {
    /// Adds the counts of `other`, a later run of the same member.
    fn absorb(&mut self, other: ServeReport) {
        self.consumed += other.consumed;
        self.scored += other.scored;
        for (reason, n) in other.dead {
            *self.dead.entry(reason).or_default() += n;
        }
        self.acknowledged += other.acknowledged;
        self.latency.merge(&other.latency);
        self.max_in_flight_seen = self.max_in_flight_seen.max(other.max_in_flight_seen);
        self.pauses += other.pauses;
        self.queue_full += other.queue_full;
        self.elapsed += other.elapsed;
    }
}

/// Runs the member; after a recoverable failure, logs it once, counts it and starts again with
/// a new consumer and producer, which resume from the committed offsets, so records whose
/// outputs were not acknowledged are scored again and nothing is lost. Stops with
/// [`Error::GaveUp`] after [`MAX_FAILURES`] failures within [`RECOVERY_WINDOW`].
fn run_recovering(
    config: &KafkaConfig,
    scorer: &Scorer,
    group: &Arc<GroupState>,
    rt: &tokio::runtime::Handle,
    cancel: &CancellationToken,
) -> Result<ServeReport, Error> {
    let mut total = ServeReport::default();
    let mut failures: std::collections::VecDeque<std::time::Instant> = Default::default();
    loop {
        let err = match worker::run(config, scorer, group, rt, cancel) {
            Ok(report) => {
                total.absorb(report);
                return Ok(total);
            }
            Err(err) if err.is_recoverable() && !cancel.is_cancelled() => err,
            Err(err) => return Err(err),
        };
        let now = std::time::Instant::now();
        failures.retain(|t| now.duration_since(*t) < RECOVERY_WINDOW);
        failures.push_back(now);
        if failures.len() >= MAX_FAILURES {
            return Err(Error::GaveUp {
                failures: failures.len(),
                window_s: RECOVERY_WINDOW.as_secs(),
                source: Box::new(err),
            });
        }
        group.restarts.inc();
        let pause = Duration::from_millis(500 << failures.len().min(5));
        tracing::error!(
            error = %crate::telemetry::ErrorChain(&err),
            failures = failures.len(),
            restart_in_ms = pause.as_millis() as u64,
            "The Kafka member failed; restarting it with a new consumer and producer, which \
             resume from the committed offsets (records not acknowledged are scored again)."
        );
        rt.block_on(async {
            let _ = tokio::time::timeout(pause, cancel.cancelled()).await;
        });
        if cancel.is_cancelled() {
            return Ok(total);
        }
    }
}

/// What a [`KafkaPipeline`] run did.
#[derive(Debug, Clone, Default)]
pub struct ServeReport {
    /// Input records consumed and handed to the producer.
    pub consumed: u64,
    /// Records produced to the output topic.
    pub scored: u64,
    /// Records produced to the dead-letter topic, by reason.
    pub dead: BTreeMap<Reason, u64>,
    /// Outputs acknowledged by the broker.
    pub acknowledged: u64,
    /// Per-record scoring time.
    pub latency: LatencyHistogram,
    /// The most records in flight at once.
    pub max_in_flight_seen: usize,
    /// How often consumption paused because `max_in_flight` was reached.
    pub pauses: u64,
    /// How often the producer's queue was full.
    pub queue_full: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl ServeReport {
    /// Dead letters over all reasons.
    pub fn dead_total(&self) -> u64 {
        self.dead.values().sum()
    }
}

/// Consumes, scores and produces, as one member of the configured consumer group.
#[derive(Debug, Clone)]
pub struct KafkaPipeline {
    config: KafkaConfig,
    scorer: Scorer,
    group: Arc<GroupState>,
}

impl KafkaPipeline {
    /// A pipeline with the `[kafka]` settings `config`, scoring with `scorer`.
    pub fn new(config: KafkaConfig, scorer: Scorer) -> Self {
        Self {
            config,
            scorer,
            group: Arc::default(),
        }
    }

    /// The same pipeline, reporting its consumer-group state into `group` (which the operations
    /// endpoint reads for readiness).
    pub fn with_group(mut self, group: Arc<GroupState>) -> Self {
        self.group = group;
        self
    }

    /// Runs until `cancel` fires (then drains, commits and returns the report) or an error
    /// that restarting the member in-process does not cure (see [`Error::GaveUp`]). The consumer, scoring and producing run on a dedicated thread; this future only
    /// waits for it. Must be called within a Tokio runtime.
    pub async fn run(self, cancel: CancellationToken) -> Result<ServeReport, Error> {
        let handle = tokio::runtime::Handle::current();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("keyscore-kafka".into())
            .spawn(move || {
                let result =
                    run_recovering(&self.config, &self.scorer, &self.group, &handle, &cancel);
                let _ = tx.send(result);
            })
            .map_err(|err| Error::Thread(err.to_string()))?;
        rx.await
            .map_err(|_| Error::Thread("it panicked; see the log".into()))?
    }
}
