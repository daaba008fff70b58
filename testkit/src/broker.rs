//! A Kafka-compatible broker for tests (Tansu, started in a temp dir on a free loopback port and
//! killed on drop), and small Kafka client helpers shared by the `kafka_*` tests.
//!
//! The Tansu binary comes from `KEYSCORE_TANSU`, else `$KEYSCORE_TOOLS/bin/tansu` (default
//! `~/.cache/keyscore/tools/bin/tansu`). Install it once with `tests/tools/install-tansu.sh`.
//!
//! # What Tansu does not do as Kafka does
//!
//! These are the broker's, seen running `keyscore serve` on it; the tests that meet them work
//! around them where they say so, and none of keyscore's guarantees rests on them (each
//! guarantee is also what Kafka's protocol promises):
//!
//! * No transactions: it accepts a transactional id, then refuses to end a transaction
//!   (`EndTxn` unsupported). `processing = "exactly_once"` is therefore tested on librdkafka's
//!   mock cluster, and on Tansu only for its refusal (`tests/kafka_resilience.rs`).
//! * A member killed and restarted before its session timed out may leave its partitions
//!   unassigned until it restarts again; `tests/kafka_serve.rs` waits for the survivor's
//!   takeover before restarting.
//! * Its in-memory storage slows down as a topic grows, so no latency figure is read without
//!   the broker's own floor measured in the same run.
//! * Its SQLite storage (not used by the tests) has no index on its `header` table: fetching
//!   records that carry headers, as keyscore's outputs do, scans every header stored so far and
//!   stalls the broker as the topic grows. The latency bench adds the index
//!   (`--sqlite-header-index`).
//! * Also seen: a group that does not recover after the broker is paused, batches stored twice
//!   despite the idempotent producer, end offsets reported too low. Tests read topics to the
//!   records they expect (by id), never to a reported end alone.

use std::{
    collections::HashMap,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    message::{Header, Headers, Message, OwnedHeaders},
    producer::{BaseProducer, BaseRecord, Producer},
    ClientConfig, Offset, TopicPartitionList,
};

/// A running Tansu broker; killed on drop.
pub struct Broker {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("KEYSCORE_TANSU") {
        return PathBuf::from(p);
    }
    let root = std::env::var("KEYSCORE_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME is set")).join(".cache/keyscore/tools")
        });
    root.join("bin/tansu")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("binding a loopback port")
        .local_addr()
        .expect("local address")
        .port()
}

impl Broker {
    /// Starts a broker and waits until it answers metadata requests. Panics, saying what to
    /// do, when the binary is missing or the broker does not come up.
    pub fn start() -> Broker {
        let bin = tansu_binary();
        assert!(
            bin.exists(),
            "the Tansu broker is not installed at {}: run tests/tools/install-tansu.sh (or set KEYSCORE_TANSU)",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("tansu.log")).expect("log file");
        let child = Command::new(&bin)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut broker = Broker {
            child,
            port,
            _dir: dir,
        };
        broker.wait_ready(Duration::from_secs(30));
        broker
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("metadata client");
        loop {
            if let Some(status) = self.child.try_wait().expect("broker status") {
                let log =
                    std::fs::read_to_string(self._dir.path().join("tansu.log")).unwrap_or_default();
                panic!("the broker exited ({status}) at start:\n{log}");
            }
            if consumer
                .fetch_metadata(None, Duration::from_secs(1))
                .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the broker did not answer metadata within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `bootstrap.servers` for clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A topic name no other test uses.
pub fn unique_topic(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    format!(
        "{prefix}-{}-{t}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates topics with the given partition counts (one replica).
pub async fn create_topics(bootstrap: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// Produces `(key, payload)` records with the Java-compatible key partitioner and waits for
/// every acknowledgement.
pub fn produce(bootstrap: &str, topic: &str, records: &[(Option<String>, Vec<u8>)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for (key, payload) in records {
        let mut rec: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic).payload(&payload[..]);
        if let Some(k) = key {
            rec = rec.key(k.as_str());
        }
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    producer.poll(Duration::from_millis(20));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("every test record acknowledged");
}

/// A record read back by [`read_topic`].
#[derive(Debug, Clone)]
pub struct Read {
    /// The topic it was read from.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// The record's key, if it has one.
    pub key: Option<Vec<u8>>,
    /// The record's value (an empty one for a tombstone).
    pub payload: Vec<u8>,
    /// The record's headers, values as text (lossy for non-UTF-8 bytes).
    pub headers: HashMap<String, String>,
    /// The record's timestamp, in ms since the Unix epoch.
    pub timestamp_ms: Option<i64>,
}

impl Read {
    fn from_message(m: &rdkafka::message::BorrowedMessage<'_>) -> Read {
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Read {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers,
            timestamp_ms: m.timestamp().to_millis(),
        }
    }

    /// The value of header `name`; panics, showing the record, when it has none.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("header {name} missing on {self:?}"))
    }
}

/// Reads `topic` from the beginning until `done` says the records read so far are enough and
/// nothing new arrived for `settle`; panics if `done` is not reached within `timeout`.
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
    settle: Duration,
    done: impl Fn(&[Read]) -> bool,
) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique_topic("reader"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("consumer");
    let deadline = Instant::now() + timeout;
    // The topic may be created by the process under test: wait for it.
    let tpl = loop {
        let mut tpl = TopicPartitionList::new();
        if let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            for t in md.topics().iter().filter(|t| t.error().is_none()) {
                for p in t.partitions() {
                    tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                        .expect("partition");
                }
            }
        }
        if tpl.count() > 0 {
            break tpl;
        }
        assert!(Instant::now() < deadline, "topic {topic} does not exist");
        std::thread::sleep(Duration::from_millis(200));
    };
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut reached: Option<Instant> = None;
    let mut last_new = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) if is_end_marker(&m) => {}
            Some(Ok(m)) => {
                out.push(Read::from_message(&m));
                last_new = Instant::now();
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
        if reached.is_none() && done(&out) {
            reached = Some(Instant::now());
        }
        if reached.is_some() && last_new.elapsed() >= settle {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "reading {topic}: condition not reached within {timeout:?} ({} records read)",
            out.len()
        );
    }
}

/// The header of the end markers [`read_to_end`] appends.
const END_MARKER: &str = "keyscore-test-end";

/// Whether `m` is an end marker [`read_to_end`] appended: readers skip them.
fn is_end_marker(m: &rdkafka::message::BorrowedMessage<'_>) -> bool {
    m.headers()
        .is_some_and(|hs| hs.iter().any(|h| h.key == END_MARKER))
}

/// Reads `topics` from the beginning to their ends, once whatever wrote to them has stopped:
/// every record up to every partition's high watermark, and at least `at_least` records in
/// all. Panics, saying which partitions fell short, if that is not reached within `timeout`.
///
/// Tansu 0.6 reports a partition's high watermark without its newest batch (see
/// `benches/e2e/README.md`; 1000 records produced in two batches showed watermarks summing to
/// 504), so reading to the watermarks alone would miss the last batch, and a duplicate in it.
/// Before taking the watermarks this appends an end marker to every partition, which makes
/// the marker the newest batch: every record written before it is below the watermark. The markers are not
/// returned. Reading until `at_least` records also keeps the check whole should the watermarks
/// fall shorter still.
pub fn read_to_end(
    bootstrap: &str,
    topics: &[&str],
    at_least: usize,
    timeout: Duration,
) -> Vec<Read> {
    let deadline = Instant::now() + timeout;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique_topic("reader"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("consumer");
    let mut partitions: Vec<(String, i32)> = Vec::new();
    for topic in topics {
        loop {
            let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5));
            let found: Vec<i32> = md
                .iter()
                .flat_map(|md| md.topics().iter().filter(|t| t.error().is_none()))
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            if !found.is_empty() {
                partitions.extend(found.into_iter().map(|p| (topic.to_string(), p)));
                break;
            }
            assert!(Instant::now() < deadline, "topic {topic} does not exist");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    for (topic, partition) in &partitions {
        let headers = OwnedHeaders::new().insert(Header {
            key: END_MARKER,
            value: Some(""),
        });
        producer
            .send(
                BaseRecord::<'_, (), [u8]>::to(topic)
                    .partition(*partition)
                    .payload(&[][..])
                    .headers(headers),
            )
            .map_err(|(e, _)| e)
            .unwrap_or_else(|e| panic!("end marker on {topic}/{partition}: {e}"));
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("every end marker acknowledged");

    // The next offset to read on each partition, and the offset to read up to.
    let mut next: HashMap<(String, i32), i64> = HashMap::new();
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *partition, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("watermarks of {topic}/{partition}: {e}"));
        next.insert((topic.clone(), *partition), low);
        ends.insert((topic.clone(), *partition), high);
        tpl.add_partition_offset(topic, *partition, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");

    let mut out = Vec::new();
    let short = |next: &HashMap<(String, i32), i64>| -> Vec<String> {
        ends.iter()
            .filter(|(tp, end)| next[*tp] < **end)
            .map(|((t, p), end)| format!("{t}/{p} at {} of {end}", next[&(t.clone(), *p)]))
            .collect()
    };
    loop {
        let behind = short(&next);
        if behind.is_empty() && out.len() >= at_least {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "reading {topics:?} to the end: {} records read (at least {at_least} expected) \
             within {timeout:?}; partitions short of their high watermark: {behind:?}",
            out.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let at = next
                    .get_mut(&(m.topic().to_string(), m.partition()))
                    .expect("an assigned partition");
                *at = (*at).max(m.offset() + 1);
                if !is_end_marker(&m) {
                    out.push(Read::from_message(&m));
                }
            }
            Some(Err(e)) => panic!("reading {topics:?}: {e}"),
            None => {}
        }
    }
}

/// The committed offset of every partition of `topic` for `group`.
pub fn committed(bootstrap: &str, group: &str, topic: &str) -> HashMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("topic metadata");
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition(topic, p.id());
        }
    }
    consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets")
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset().to_raw().unwrap_or(-1)))
        .collect()
}

/// The high watermark of every partition of `topic`.
pub fn high_watermarks(bootstrap: &str, topic: &str) -> HashMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("topic metadata");
    md.topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            (p, high)
        })
        .collect()
}

/// Reads topics from the beginning on a background thread, collecting every record, until
/// dropped.
pub struct Collector {
    records: std::sync::Arc<std::sync::Mutex<Vec<Read>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    /// Starts collecting `topics` (waiting for them to exist).
    pub fn start(bootstrap: &str, topics: &[&str]) -> Collector {
        let records = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", unique_topic("collector"))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .create()
            .expect("consumer");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut tpl = TopicPartitionList::new();
        for topic in topics {
            loop {
                let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5));
                let parts: Vec<i32> = md
                    .iter()
                    .flat_map(|md| md.topics().iter().filter(|t| t.error().is_none()))
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect();
                if !parts.is_empty() {
                    for p in parts {
                        tpl.add_partition_offset(topic, p, Offset::Beginning)
                            .expect("partition");
                    }
                    break;
                }
                assert!(Instant::now() < deadline, "topic {topic} does not exist");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        consumer.assign(&tpl).expect("assign");
        let (r, s) = (records.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) if is_end_marker(&m) => {}
                    Some(Ok(m)) => r.lock().unwrap().push(Read::from_message(&m)),
                    Some(Err(e)) => eprintln!("collector: {e}"),
                    None => {}
                }
            }
        });
        Collector {
            records,
            stop,
            thread: Some(thread),
        }
    }

    /// A copy of what was collected so far.
    pub fn snapshot(&self) -> Vec<Read> {
        self.records.lock().unwrap().clone()
    }

    /// How many records were collected so far.
    pub fn len(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    /// Whether nothing was collected so far.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until `done` holds for the records collected; panics after `timeout`.
    pub fn wait_for(&self, timeout: Duration, what: &str, done: impl Fn(&[Read]) -> bool) {
        self.wait_or(timeout, what, done, String::new);
    }

    /// Like [`Collector::wait_for`], adding `context()` (logs, say) to the panic message.
    pub fn wait_or(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Read]) -> bool,
        context: impl Fn() -> String,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.records.lock().unwrap()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what} ({} records collected)\n{}",
                self.len(),
                context()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
