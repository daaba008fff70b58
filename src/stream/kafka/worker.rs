//! The pipeline thread: poll a batch, score it, hand the outputs to the producer, store the
//! offsets the broker has acknowledged.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Condvar, Mutex,
    },
    time::{Duration, Instant},
};

use prometheus::local::LocalHistogram;
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::{BorrowedMessage, Message},
    producer::{BaseRecord, Producer, ThreadedProducer},
    types::RDKafkaErrorCode,
    Offset, TopicPartitionList,
};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    callbacks::{
        commit, is_too_large, store_offsets, DeliveryContext, RebalanceContext, Shared,
        SHADOW_TOKEN,
    },
    group::GroupState,
    headers, options,
    tracker::{Token, Tracker},
    Error, KafkaConfig, Processing, ServeReport,
};
use crate::{
    stream::{
        metrics::{unix_ms, Metrics},
        output::{emit, Sink},
        record::{Origin, OutputShape, Source},
        Input, Rejection, RunStats, Scored, Scorer,
    },
    telemetry::ErrorChain,
};

type Record<'a> = BaseRecord<'a, [u8], [u8], Token>;

fn send(
    producer: &ThreadedProducer<DeliveryContext>,
    mut record: Record<'_>,
    queue_full: &mut u64,
) -> Result<(), Error> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                // The producer thread frees room as acknowledgements arrive.
                *queue_full += 1;
                record = back;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((err, back)) => {
                return Err(Error::Delivery {
                    topic: back.topic.to_string(),
                    source: err,
                })
            }
        }
    }
}

/// The pipeline thread's body.
pub(super) fn run(
    config: &KafkaConfig,
    scorer: &Scorer,
    group: &Arc<GroupState>,
    rt: &Handle,
    cancel: &CancellationToken,
) -> Result<ServeReport, Error> {
    let started = Instant::now();
    let drain_timeout = Duration::from_millis(config.drain_timeout_ms);
    let shared = Arc::new(Shared {
        tracker: Mutex::new(Tracker::default()),
        changed: Condvar::new(),
        waiters: AtomicUsize::new(0),
        fatal: Mutex::new(None),
        acknowledged: AtomicU64::new(0),
        epoch: AtomicU64::new(0),
        revoked: Mutex::new(Vec::new()),
        drain_timeout,
        closing: AtomicBool::new(false),
        metrics: Arc::clone(scorer.metrics()),
        group: Arc::clone(group),
        oversized: Mutex::default(),
        replacing: AtomicUsize::new(0),
        client_log: Default::default(),
        exactly_once: config.processing == Processing::ExactlyOnce,
    });
    let producer: ThreadedProducer<DeliveryContext> = options::producer_config(config)
        .create_with_context(DeliveryContext {
            shared: Arc::clone(&shared),
        })
        .map_err(|source| Error::Client {
            client: "producer",
            source,
        })?;
    if shared.exactly_once {
        // Fences an earlier producer with the same transactional id (a member that died) and
        // aborts its open transaction.
        producer
            .init_transactions(TRANSACTION_TIMEOUT)
            .map_err(Error::NoTransactions)?;
    }
    let labels_topic = scorer
        .quality()
        .and_then(|q| q.config().labels_topic.clone());
    let mut consumer_config = options::consumer_config(config);
    if labels_topic.is_some() {
        // Co-partitioning: the range assignor gives each member the same partition numbers of
        // every topic it subscribes to (same partition counts, checked below), so a label
        // reaches the member that scored its record. Other assignors do not promise that.
        match consumer_config.get("partition.assignment.strategy") {
            None | Some("range") => {
                consumer_config.set("partition.assignment.strategy", "range");
            }
            Some(other) => {
                return Err(Error::NotCoPartitioned(format!(
                "[quality] labels_topic needs partition.assignment.strategy = \"range\" (labels \
                 must reach the member that scored their record), not \"{other}\""
            )))
            }
        }
    }
    let consumer: BaseConsumer<RebalanceContext> = consumer_config
        .create_with_context(RebalanceContext {
            shared: Arc::clone(&shared),
        })
        .map_err(|source| Error::Client {
            client: "consumer",
            source,
        })?;
    let mut topics: Vec<&str> = config.input_topics.iter().map(String::as_str).collect();
    if let Some(labels) = &labels_topic {
        check_co_partitioned(&consumer, &config.input_topics, labels)?;
        topics.push(labels);
    }
    consumer
        .subscribe(&topics)
        .map_err(|source| Error::Subscribe {
            topics: config.input_topics.clone(),
            source,
        })?;
    info!(
        group = %config.group_id,
        topics = ?config.input_topics,
        output = %config.output_topic,
        dead_letters = %config.dead_letter_topic,
        "Joining the consumer group."
    );

    let mut pipeline = Pipeline {
        config,
        scorer,
        rt,
        shared: &shared,
        producer: &producer,
        report: ServeReport::default(),
        stats: RunStats::default(),
        encoded: Vec::with_capacity(1024),
        tokens: Vec::with_capacity(config.batch_size.max(1)),
        lag: shared.metrics.lag.local(),
        shadow_topic: config.shadow_topic(),
        labels_topic,
    };
    let result = pipeline.consume(&consumer, cancel);

    // Finish what is in flight (replacing outputs refused as too large meanwhile), commit it,
    // leave the group, flush.
    let deadline = Instant::now() + drain_timeout;
    let drained = loop {
        if let Err(err) = pipeline.replace_oversized() {
            warn!(error = %ErrorChain(&err), "Replacing an output refused as too large failed.");
        }
        let step = (Instant::now() + Duration::from_millis(100)).min(deadline);
        if shared.wait_drained(None, step) {
            break true;
        }
        if Instant::now() >= deadline || shared.fatal().is_some() {
            break false;
        }
    };
    store_offsets(&consumer, &shared);
    if !shared.exactly_once {
        commit(&consumer);
    }
    if !drained {
        warn!(
            in_flight = shared.in_flight(),
            "Stopped before every in-flight record was acknowledged; those are scored again after a restart."
        );
    }
    shared.closing.store(true, Ordering::SeqCst);
    drop(consumer);
    if let Err(err) = producer.flush(Duration::from_secs(5)) {
        warn!(error = %err, "Flushing the producer failed.");
    }
    let mut report = pipeline.report;
    report.scored = pipeline.stats.scored_total();
    report.dead = pipeline.stats.dead;
    report.latency = pipeline.stats.latency;
    report.acknowledged = shared.acknowledged.load(Ordering::Relaxed);
    report.elapsed = started.elapsed();
    info!(
        consumed = report.consumed,
        scored = report.scored,
        dead_letters = report.dead_total(),
        acknowledged = report.acknowledged,
        seconds = report.elapsed.as_secs_f64(),
        "Stopped."
    );
    result.map(|()| report)
}

struct Pipeline<'a> {
    config: &'a KafkaConfig,
    scorer: &'a Scorer,
    rt: &'a Handle,
    shared: &'a Shared,
    producer: &'a ThreadedProducer<DeliveryContext>,
    report: ServeReport,
    stats: RunStats,
    /// Scratch space for encoding outputs.
    encoded: Vec<u8>,
    /// The tracker tokens of the batch being produced.
    tokens: Vec<Token>,
    /// End-to-end lag observations of the batch, added to the metric once per batch.
    lag: LocalHistogram,
    shadow_topic: String,
    /// The topic labels arrive on (`[quality] labels_topic`), if any.
    labels_topic: Option<String>,
}

/// Refuses to start unless the labels topic has as many partitions as every input topic:
/// records and their labels, keyed alike, must land on partitions of the same number.
fn check_co_partitioned<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    inputs: &[String],
    labels: &str,
) -> Result<(), Error> {
    let count = |topic: &str| -> Result<usize, Error> {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|source| Error::Subscribe {
                topics: vec![topic.to_string()],
                source,
            })?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .filter(|t| t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        Ok(partitions)
    };
    let labelled = count(labels)?;
    if labelled == 0 {
        return Err(Error::NotCoPartitioned(format!(
            "the labels topic '{labels}' does not exist; create it with as many partitions as \
             the input topics"
        )));
    }
    for topic in inputs {
        let n = count(topic)?;
        if n != 0 && n != labelled {
            return Err(Error::NotCoPartitioned(format!(
                "the labels topic '{labels}' has {labelled} partitions and the input topic \
                 '{topic}' {n}: labels must be co-partitioned with the records they judge (keyed \
                 alike, the same number of partitions) to reach the member that scored them"
            )));
        }
    }
    Ok(())
}

const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// How long a transaction call (init, send offsets, commit, abort) may take.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

impl Pipeline<'_> {
    fn consume(
        &mut self,
        consumer: &BaseConsumer<RebalanceContext>,
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        let max_in_flight = self.config.max_in_flight.max(1);
        let batch_size = self.config.batch_size.max(1);
        let mut batch: Vec<BorrowedMessage<'_>> = Vec::with_capacity(batch_size);
        let mut seen_epoch = self.shared.epoch();
        let mut last_progress = Instant::now();
        loop {
            if cancel.is_cancelled() {
                info!("Stopping: finishing in-flight records.");
                return Ok(());
            }
            if let Some((topic, source)) = self.shared.fatal() {
                return Err(Error::Delivery { topic, source });
            }
            let in_flight = self.shared.in_flight();
            self.report.max_in_flight_seen = self.report.max_in_flight_seen.max(in_flight);

            // Flow control: at the bound, stop consuming until half of the in-flight records
            // are acknowledged. librdkafka keeps prefetching meanwhile, into its own queue
            // bounded by `queued.max.messages.kbytes`. If acknowledgements stall for a second,
            // take one record anyway so group events (rebalances) are still served: the bound
            // is exceeded by at most one record a second while the producer is stuck, until
            // `message.timeout.ms` fails the delivery.
            let mut room = max_in_flight.saturating_sub(in_flight).min(batch_size);
            if room == 0 {
                self.report.pauses += 1;
                debug!(in_flight, "Consumption waits for acknowledgements.");
                self.shared
                    .wait_at_most(max_in_flight / 2, Instant::now() + Duration::from_secs(1));
                let in_flight = self.shared.in_flight();
                room = max_in_flight.saturating_sub(in_flight).min(batch_size);
            }

            // Collect a batch. The first poll waits; the rest take what is already fetched.
            let mut polled = consumer.poll(Duration::from_millis(if room == 0 { 0 } else { 100 }));
            // When the poll returned the batch's first record: its residence starts there.
            let mut first_polled = Instant::now();
            loop {
                let now_epoch = self.shared.epoch();
                if now_epoch != seen_epoch {
                    // A rebalance ran inside that poll: drop what was collected for partitions
                    // given up; their new owner consumes them from the committed offset.
                    seen_epoch = now_epoch;
                    let revoked =
                        std::mem::take(&mut *self.shared.revoked.lock().expect("revoked lock"));
                    if !revoked.is_empty() {
                        batch.retain(|m| {
                            !revoked
                                .iter()
                                .any(|(t, p)| *p == m.partition() && t == m.topic())
                        });
                    }
                }
                match polled {
                    None => break,
                    Some(Ok(m)) => {
                        if batch.is_empty() {
                            first_polled = Instant::now();
                        }
                        batch.push(m)
                    }
                    Some(Err(KafkaError::MessageConsumptionFatal(code))) => {
                        return Err(Error::Consumer(code))
                    }
                    Some(Err(err)) => {
                        let kind = format!("consumer:poll:{:?}", err.rdkafka_error_code());
                        if let Some(left_out) = self.shared.client_log.admit(&kind, Instant::now())
                        {
                            warn!(error = %err, left_out, "Consumer error.");
                        }
                    }
                }
                if batch.len() >= room.max(1) {
                    break;
                }
                polled = consumer.poll(Duration::ZERO);
            }

            if !batch.is_empty() {
                // Records arrived: a broker connection is up.
                self.shared.group.brokers_up();
                match self.labels_topic.clone() {
                    None => self.process(consumer, &batch, &[], first_polled)?,
                    Some(labels) => {
                        let (labels, records): (Vec<_>, Vec<_>) =
                            batch.drain(..).partition(|m| m.topic() == labels.as_str());
                        self.process(consumer, &records, &labels, first_polled)?;
                    }
                }
                batch.clear();
            }
            self.replace_oversized()?;
            store_offsets(consumer, self.shared);

            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                info!(
                    consumed = self.report.consumed,
                    scored = self.stats.scored_total(),
                    dead_letters = self.stats.dead_total(),
                    acknowledged = self.shared.acknowledged.load(Ordering::Relaxed),
                    in_flight = self.shared.in_flight(),
                    "Scoring."
                );
            }
        }
    }

    /// Replaces each output the broker refused as too large by a dead letter carrying the
    /// source record's coordinates and no payload, with the same delivery token, so the
    /// record is acknowledged once that letter is. A record whose partition was revoked
    /// meanwhile is left to its new owner, which consumes it again.
    fn replace_oversized(&mut self) -> Result<(), Error> {
        let pending = std::mem::take(&mut self.shared.oversized().pending);
        for (token, size) in pending {
            let coordinates = self
                .shared
                .tracker()
                .coordinates(token)
                .map(|(t, p, o)| (t.to_string(), p, o));
            let Some((topic, partition, offset)) = coordinates else {
                continue;
            };
            if self.shared.oversized().replaced.insert(token) {
                self.shared.replacing.fetch_add(1, Ordering::Relaxed);
            }
            let message = too_large_message(size, "the broker");
            let record = BaseRecord::with_opaque_to(&self.config.dead_letter_topic, token).headers(
                headers::dead_because(
                    headers::OUTPUT_TOO_LARGE,
                    &message,
                    &topic,
                    partition,
                    offset,
                ),
            );
            warn!(
                topic = %topic,
                partition,
                offset,
                bytes = size,
                "An output was refused as too large; a dead letter with the source coordinates \
                 replaces it."
            );
            self.shared.group.too_large.inc();
            send(self.producer, record, &mut self.report.queue_full)?;
        }
        Ok(())
    }

    /// Scores a batch and hands its outputs to the producer (under exactly-once, in one
    /// transaction with the batch's input offsets), then joins the batch's labels: after the
    /// records, so a label may judge a record of its own batch.
    fn process(
        &mut self,
        consumer: &BaseConsumer<RebalanceContext>,
        batch: &[BorrowedMessage<'_>],
        labels: &[BorrowedMessage<'_>],
        polled: Instant,
    ) -> Result<(), Error> {
        if !self.shared.exactly_once {
            if !batch.is_empty() {
                self.produce(batch, polled)?;
            }
            self.join_labels(labels, polled);
            return Ok(());
        }
        // One transaction: the batch's outputs and its input offsets. An abort discards both;
        // the member then restarts from the committed offsets.
        let result = self
            .producer
            .begin_transaction()
            .map_err(Error::Transaction)
            .and_then(|()| match batch.is_empty() {
                true => Ok(()),
                false => self.produce(batch, polled),
            })
            .and_then(|()| {
                self.join_labels(labels, polled);
                let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
                for m in batch.iter().chain(labels) {
                    let at = next.entry((m.topic(), m.partition())).or_default();
                    *at = (*at).max(m.offset() + 1);
                }
                let mut offsets = TopicPartitionList::with_capacity(next.len());
                for ((topic, partition), offset) in next {
                    offsets
                        .add_partition_offset(topic, partition, Offset::Offset(offset))
                        .map_err(Error::Transaction)?;
                }
                let group = consumer
                    .group_metadata()
                    .ok_or_else(|| Error::Thread("no consumer group metadata".into()))?;
                self.producer
                    .send_offsets_to_transaction(&offsets, &group, TRANSACTION_TIMEOUT)
                    .map_err(Error::Transaction)
            })
            .and_then(|()| {
                self.producer
                    .commit_transaction(TRANSACTION_TIMEOUT)
                    .map_err(Error::Transaction)
            });
        if let Err(err) = &result {
            warn!(error = %ErrorChain(err), "Aborting the batch's transaction.");
            if let Err(abort) = self.producer.abort_transaction(TRANSACTION_TIMEOUT) {
                warn!(error = %abort, "Aborting the transaction failed.");
            }
        }
        result.map_err(|err| match err {
            // A broker without transactions (it accepts the transactional id, then refuses to
            // end a transaction): restarting cannot help.
            Error::Transaction(e)
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnsupportedFeature) =>
            {
                Error::NoTransactions(e)
            }
            other => other,
        })
    }

    /// Joins each label to the prediction it judges. A label has no output: its offset may be
    /// stored at once (after the records consumed before it, which the tracker sees to).
    fn join_labels(&mut self, labels: &[BorrowedMessage<'_>], polled: Instant) {
        let Some(quality) = self.scorer.quality() else {
            return;
        };
        if labels.is_empty() {
            return;
        }
        quality.labels(
            labels.iter().map(|m| m.payload().unwrap_or_default()),
            crate::quality::now_ms(),
        );
        let tokens: Vec<Token> = {
            let mut tracker = self.shared.tracker();
            labels
                .iter()
                .map(|m| tracker.register(m.topic(), m.partition(), m.offset(), polled))
                .collect()
        };
        for token in tokens {
            self.shared.acknowledge(token);
        }
    }

    /// Scores a batch and hands one output per record to the producer, in input order; the
    /// batch's first record was returned by the poll at `polled`.
    fn produce(&mut self, batch: &[BorrowedMessage<'_>], polled: Instant) -> Result<(), Error> {
        let inputs: Vec<Input<'_>> = batch
            .iter()
            .map(|m| Input {
                payload: m.payload().unwrap_or_default(),
                key: m.key(),
            })
            .collect();
        let scoring = self
            .rt
            .block_on(self.scorer.score(&inputs, Some(&mut self.stats)));
        let now_ms = unix_ms(std::time::SystemTime::now()) as i64;
        for m in batch {
            if let Some(ts) = m.timestamp().to_millis() {
                let lag_ms = u64::try_from(now_ms - ts).unwrap_or(0);
                self.lag.observe(lag_ms as f64 / 1e3);
            }
        }
        self.lag.flush();
        // Every record is registered before any output is handed to the producer, under one
        // lock for the batch.
        self.tokens.clear();
        {
            let mut tracker = self.shared.tracker();
            self.tokens.extend(
                batch
                    .iter()
                    .map(|m| tracker.register(m.topic(), m.partition(), m.offset(), polled)),
            );
        }
        self.report.consumed += batch.len() as u64;
        let mut sink = Producing {
            config: self.config,
            payload_limit: self.config.dead_letter_payload_limit(),
            group: &self.shared.group,
            batch,
            tokens: &self.tokens,
            producer: self.producer,
            shadow_topic: &self.shadow_topic,
            metrics: self.scorer.metrics(),
            queue_full: &mut self.report.queue_full,
            forward_headers: self.config.forward_headers
                || self.scorer.format().output.shape() == OutputShape::Enriched,
        };
        emit(
            &scoring,
            &self.scorer.format().output,
            &mut self.stats,
            &mut self.encoded,
            &mut sink,
            self.scorer.quality().map(|q| &**q),
        )?;
        // Every output of the batch is with the producer now.
        let handed = polled.elapsed().as_secs_f64();
        let residence = self.scorer.metrics().residence_handed.local();
        for _ in batch {
            residence.observe(handed);
        }
        residence.flush();
        Ok(())
    }
}

/// A batch's outputs, handed to the producer: scored records to the output topic, dead letters
/// (the input's bytes, with headers saying why) to the dead-letter topic, shadow outputs to the
/// shadow topic; each with the input's key.
struct Producing<'a, 'm> {
    config: &'a KafkaConfig,
    /// The most bytes of a record a dead letter carries.
    payload_limit: usize,
    group: &'a GroupState,
    batch: &'a [BorrowedMessage<'m>],
    tokens: &'a [Token],
    producer: &'a ThreadedProducer<DeliveryContext>,
    shadow_topic: &'a str,
    metrics: &'a Metrics,
    queue_full: &'a mut u64,
    /// Whether outputs carry their input's headers (`[kafka] forward_headers`, and always for
    /// the `enriched` shape).
    forward_headers: bool,
}

impl Producing<'_, '_> {
    fn send_keyed(&mut self, input: usize, record: Record<'_>) -> Result<(), Error> {
        let record = match self.batch[input].key() {
            Some(k) => record.key(k),
            None => record,
        };
        send(self.producer, record, self.queue_full)
    }

    /// The headers of input `input` to carry over to its outputs, if they are carried.
    fn input_headers(&self, input: usize) -> Option<&rdkafka::message::BorrowedHeaders> {
        if self.forward_headers {
            self.batch[input].headers()
        } else {
            None
        }
    }

    /// Hands `record` (an output of `size` bytes for input `input`) to the producer; when the
    /// producer refuses it as over its `message.max.bytes`, hands over a dead letter with the
    /// source coordinates instead, so one record never stops the partition.
    fn send_or_replace(
        &mut self,
        input: usize,
        record: Record<'_>,
        size: usize,
    ) -> Result<(), Error> {
        match self.send_keyed(input, record) {
            Err(Error::Delivery {
                source: KafkaError::MessageProduction(code),
                ..
            }) if is_too_large(code) => {
                let m = &self.batch[input];
                let message = too_large_message(size, "the producer");
                warn!(
                    topic = m.topic(),
                    partition = m.partition(),
                    offset = m.offset(),
                    bytes = size,
                    "An output was refused as too large; a dead letter with the source \
                     coordinates replaces it."
                );
                self.group.too_large.inc();
                let record =
                    BaseRecord::with_opaque_to(&self.config.dead_letter_topic, self.tokens[input])
                        .headers(headers::dead_because(
                            headers::OUTPUT_TOO_LARGE,
                            &message,
                            m.topic(),
                            m.partition(),
                            m.offset(),
                        ));
                self.send_keyed(input, record)
            }
            other => other,
        }
    }
}

/// The dead-letter message of an output of `size` bytes refused by `by`.
fn too_large_message(size: usize, by: &str) -> String {
    format!(
        "the output ({size} bytes) was refused as too large by {by}; this letter names the \
         source record and carries no payload"
    )
}

impl Sink for Producing<'_, '_> {
    type Error = Error;

    fn source(&self, input: usize) -> Source<'_> {
        let m = &self.batch[input];
        Source {
            payload: m.payload().unwrap_or_default(),
            origin: Origin::Kafka {
                topic: m.topic(),
                partition: m.partition(),
                offset: m.offset(),
            },
        }
    }

    fn scored(&mut self, input: usize, scored: &Scored, encoded: &[u8]) -> Result<(), Error> {
        let input_headers = self.input_headers(input);
        let record = BaseRecord::with_opaque_to(&self.config.output_topic, self.tokens[input])
            .payload(encoded)
            .headers(headers::scored(input_headers, scored));
        self.send_or_replace(input, record, encoded.len())
    }

    fn dead_letter(&mut self, input: usize, rejection: &Rejection) -> Result<(), Error> {
        let m = &self.batch[input];
        let mut headers = headers::dead(
            self.input_headers(input),
            rejection,
            m.topic(),
            m.partition(),
            m.offset(),
        );
        let payload = m.payload().map(|p| {
            if p.len() > self.payload_limit {
                // A record over the limit keeps its first bytes; the header gives its size.
                headers = headers::truncated(std::mem::take(&mut headers), p.len());
                self.group.truncated.inc();
                &p[..self.payload_limit]
            } else {
                p
            }
        });
        let size = payload.map_or(0, <[u8]>::len);
        let record = BaseRecord::with_opaque_to(&self.config.dead_letter_topic, self.tokens[input])
            .headers(headers);
        let record = match payload {
            Some(p) => record.payload(p),
            None => record,
        };
        self.send_or_replace(input, record, size)
    }

    fn shadow(&mut self, input: usize, scored: &Scored, encoded: &[u8]) -> Result<(), Error> {
        let input_headers = self.input_headers(input);
        let record = BaseRecord::with_opaque_to(self.shadow_topic, SHADOW_TOKEN)
            .payload(encoded)
            .headers(headers::scored(input_headers, scored));
        // Shadow outputs are best effort: a refused one is counted, never fatal.
        if let Err(err) = self.send_keyed(input, record) {
            self.metrics.shadow_delivery_failed();
            debug!(error = %ErrorChain(&err), "A shadow output could not be queued.");
        }
        Ok(())
    }
}
