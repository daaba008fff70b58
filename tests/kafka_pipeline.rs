//! The Kafka pipeline driven in-process ([`KafkaPipeline`]) against a model store the test
//! controls: on librdkafka's mock cluster (fast plumbing checks: one output per input, offsets,
//! flow control, restarts) and on a real broker (dead letters per reason class).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use keyscore::{
    registry::{ModelRegistry, RegistryConfig},
    store::{MemoryModelStore, ModelStore},
    stream::kafka::KafkaConfig,
    stream::{
        kafka::{headers, KafkaPipeline, ServeReport},
        RecordFormat, Scorer,
    },
};
use keyscore_testkit::{
    broker::{self, Read},
    faulty::FaultyStore,
};
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

fn scorer(store: impl ModelStore + 'static) -> Scorer {
    let registry = ModelRegistry::new(
        Arc::new(store),
        RegistryConfig {
            fallback_key: None,
            ..RegistryConfig::default()
        },
    );
    Scorer::new(Arc::new(registry), RecordFormat::default())
}

fn kafka_config(bootstrap: &str, input: &str, group: &str) -> KafkaConfig {
    let mut k = KafkaConfig {
        bootstrap_servers: bootstrap.to_string(),
        group_id: group.to_string(),
        input_topics: vec![input.to_string()],
        output_topic: format!("{input}-scored"),
        dead_letter_topic: format!("{input}-dead"),
        ..KafkaConfig::default()
    };
    k.consumer_options
        .insert("session.timeout.ms".into(), "6000".into());
    k
}

/// Records `r-{i}` across `keys`, keyed by their city.
fn records(range: std::ops::Range<usize>, keys: &[&str]) -> Vec<(Option<String>, Vec<u8>)> {
    range
        .map(|i| {
            let city = keys[i % keys.len()];
            (
                Some(city.to_string()),
                format!(
                    r#"{{"id":"r-{i}","city":"{city}","distance_km":{}.5,"items":{}}}"#,
                    i % 17,
                    i % 5
                )
                .into_bytes(),
            )
        })
        .collect()
}

fn id_of(r: &Read) -> String {
    let v: serde_json::Value = serde_json::from_slice(&r.payload).expect("JSON output");
    v["id"].as_str().expect("id").to_string()
}

/// Runs a pipeline until `outputs` records are on the output and dead-letter topics, then
/// cancels it and returns its report and everything it wrote (read once it has stopped, so a
/// late duplicate is counted too).
async fn run_until(
    config: KafkaConfig,
    scorer: Scorer,
    outputs: usize,
) -> (ServeReport, Vec<Read>) {
    let cancel = CancellationToken::new();
    let task = tokio::spawn(KafkaPipeline::new(config.clone(), scorer).run(cancel.clone()));
    let bootstrap = config.bootstrap_servers.clone();
    let topics = [
        config.output_topic.clone(),
        config.dead_letter_topic.clone(),
    ];
    let read = tokio::task::spawn_blocking(move || {
        let collector = broker::Collector::start(&bootstrap, &[&topics[0], &topics[1]]);
        collector.wait_for(Duration::from_secs(60), "every output", |r| {
            r.len() >= outputs
        });
    });
    read.await.unwrap();
    cancel.cancel();
    let report = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the pipeline stops within 30 s of cancellation")
        .unwrap()
        .expect("the pipeline ends cleanly");
    let bootstrap = config.bootstrap_servers.clone();
    let topics = [
        config.output_topic.clone(),
        config.dead_letter_topic.clone(),
    ];
    let read = tokio::task::spawn_blocking(move || {
        broker::read_to_end(
            &bootstrap,
            &[&topics[0], &topics[1]],
            outputs,
            Duration::from_secs(60),
        )
    })
    .await
    .unwrap();
    (report, read)
}

fn mock_with_topics(
    input: &str,
    partitions: i32,
) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let mock = MockCluster::new(1).expect("mock cluster");
    for (t, p) in [
        (input.to_string(), partitions),
        (format!("{input}-scored"), 4),
        (format!("{input}-dead"), 4),
    ] {
        mock.create_topic(&t, p, 1).expect("mock topic");
    }
    mock
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_every_input_gets_one_output_and_its_offset_is_committed() {
    let input = broker::unique_topic("in");
    let mock = mock_with_topics(&input, 4);
    let bootstrap = mock.bootstrap_servers();
    let mut recs = records(0..2000, &["paris", "rome", "oslo"]);
    recs.push((Some("paris".into()), b"not json at all".to_vec()));
    recs.push((None, br#"{"id":"nokey"}"#.to_vec()));
    broker::produce(&bootstrap, &input, &recs);

    let config = kafka_config(&bootstrap, &input, "g1");
    let (report, out) = run_until(config, scorer(MemoryModelStore::new()), recs.len()).await;

    assert_eq!(out.len(), recs.len(), "exactly one output per input");
    assert_eq!(report.consumed, recs.len() as u64);
    assert_eq!(report.acknowledged, recs.len() as u64);
    // No model in this store: every record is a dead letter with its bytes and key unchanged.
    let by_payload: HashMap<&[u8], &Option<String>> =
        recs.iter().map(|(k, p)| (&p[..], k)).collect();
    for r in &out {
        let key = by_payload
            .get(&r.payload[..])
            .unwrap_or_else(|| panic!("unexpected output {r:?}"));
        assert_eq!(r.key.as_deref(), key.as_deref().map(str::as_bytes));
        assert_eq!(r.header(headers::SOURCE_TOPIC), input);
        let reason = r.header(headers::DEAD_REASON);
        match &r.payload[..] {
            b"not json at all" => assert_eq!(reason, "not_json"),
            br#"{"id":"nokey"}"# => assert_eq!(reason, "missing_key"),
            _ => assert_eq!(reason, "no_model"),
        }
    }
    // Every partition's committed offset is its end: a restart would replay nothing.
    let committed = broker::committed(&bootstrap, "g1", &input);
    for (partition, high) in broker::high_watermarks(&bootstrap, &input) {
        if high > 0 {
            assert_eq!(committed[&partition], high, "partition {partition}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_in_flight_records_stay_under_the_bound_and_none_is_lost() {
    let input = broker::unique_topic("in");
    let mock = mock_with_topics(&input, 2);
    let bootstrap = mock.bootstrap_servers();
    let recs = records(0..1500, &["paris"]);
    broker::produce(&bootstrap, &input, &recs);
    // Slow acknowledgements: consumption must pause rather than queue without bound.
    mock.broker_round_trip_time(1, Duration::from_millis(40))
        .expect("rtt");
    let mut config = kafka_config(&bootstrap, &input, "g-bp");
    config.max_in_flight = 64;
    config.batch_size = 1000;
    let (report, out) = run_until(config, scorer(MemoryModelStore::new()), recs.len()).await;

    assert!(
        report.max_in_flight_seen <= 64,
        "in flight reached {}",
        report.max_in_flight_seen
    );
    assert!(report.pauses > 0, "consumption never paused: {report:?}");
    let ids: HashSet<String> = out.iter().map(id_of).collect();
    assert_eq!(ids.len(), recs.len(), "every input exactly once");
    assert_eq!(out.len(), recs.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_a_restart_resumes_after_the_committed_offsets_without_duplicates() {
    let input = broker::unique_topic("in");
    let mock = mock_with_topics(&input, 3);
    let bootstrap = mock.bootstrap_servers();
    broker::produce(&bootstrap, &input, &records(0..500, &["a", "b"]));
    let config = kafka_config(&bootstrap, &input, "g-restart");
    let (first, _) = run_until(config.clone(), scorer(MemoryModelStore::new()), 500).await;
    assert_eq!(first.consumed, 500);

    broker::produce(&bootstrap, &input, &records(500..800, &["a", "b"]));
    let (second, out) = run_until(config, scorer(MemoryModelStore::new()), 800).await;
    assert_eq!(second.consumed, 300, "only the new records are consumed");
    let ids: HashSet<String> = out.iter().map(id_of).collect();
    assert_eq!((ids.len(), out.len()), (800, 800));
}

const PARIS_V1: &str = r#"{"format_version":1,"features":["distance_km","items"],"model":{"kind":"linear","coefficients":[2.0,0.5],"intercept":10.0},"output":{"type":"regression"}}"#;
const OVERFLOW: &str = r#"{"format_version":1,"features":["distance_km","items"],"model":{"kind":"linear","coefficients":[1e308,1e308],"intercept":0.0},"output":{"type":"regression"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_dead_letters_keep_bytes_and_key_and_say_why() {
    let broker = broker::Broker::start();
    let bootstrap = broker.bootstrap();
    let input = broker::unique_topic("dl");
    let config = kafka_config(&bootstrap, &input, &broker::unique_topic("g"));
    broker::create_topics(
        &bootstrap,
        &[
            (&input, 2),
            (&config.output_topic, 2),
            (&config.dead_letter_topic, 2),
        ],
    )
    .await;
    let cases: [(&str, Option<&str>, &[u8]); 8] = [
        (
            "scored",
            Some("paris"),
            br#"{"id":"ok","city":"paris","distance_km":3.0,"items":2}"#,
        ),
        (
            "not_json",
            Some("paris"),
            b"{\"id\":\"bad\",\"city\":\"paris\",\xff",
        ),
        (
            "missing_key",
            Some("k1"),
            br#"{"id":"nokey","distance_km":3.0,"items":2}"#,
        ),
        (
            "missing_feature",
            Some("paris"),
            br#"{"id":"mf","city":"paris","items":2}"#,
        ),
        (
            "non_numeric_feature",
            None,
            br#"{"id":"nn","city":"paris","distance_km":"far","items":2}"#,
        ),
        (
            "no_model",
            Some("atlantis"),
            br#"{"id":"nm","city":"atlantis","distance_km":1,"items":1}"#,
        ),
        (
            "model_error",
            Some("overflow"),
            br#"{"id":"me","city":"overflow","distance_km":1e308,"items":1e308}"#,
        ),
        (
            "store_unavailable",
            Some("down"),
            br#"{"id":"su","city":"down","distance_km":1,"items":1}"#,
        ),
    ];
    let recs: Vec<(Option<String>, Vec<u8>)> = cases
        .iter()
        .map(|(_, k, p)| (k.map(str::to_string), p.to_vec()))
        .collect();
    broker::produce(&bootstrap, &input, &recs);

    let store = FaultyStore::new().with_down_keys(["down"]);
    for (key, version, spec) in [("paris", 3, PARIS_V1), ("overflow", 1, OVERFLOW)] {
        store.put_version(key, Some(version), spec).await.unwrap();
        store.activate(key, version).await.unwrap();
    }
    let (report, out) = run_until(config.clone(), scorer(store), cases.len()).await;
    assert_eq!(out.len(), cases.len(), "{out:#?}");
    assert_eq!(report.scored, 1);

    let scored: Vec<&Read> = out
        .iter()
        .filter(|r| r.topic == config.output_topic)
        .collect();
    assert_eq!(scored.len(), 1);
    let s = scored[0];
    assert_eq!(s.key.as_deref(), Some(&b"paris"[..]));
    assert_eq!(s.header(headers::MODEL_KEY), "paris");
    assert_eq!(s.header(headers::MODEL_VERSION), "3");
    assert_eq!(
        s.header(headers::MODEL_CHECKSUM),
        keyscore::model::spec_checksum(PARIS_V1)
    );
    let body: serde_json::Value = serde_json::from_slice(&s.payload).unwrap();
    assert_eq!(body["id"], "ok");
    assert_eq!(body["model_version"], 3);
    assert!((body["prediction"]["value"].as_f64().unwrap() - 17.0).abs() < 1e-9);

    for (reason, key, payload) in &cases[1..] {
        let d = out
            .iter()
            .find(|r| r.topic == config.dead_letter_topic && r.payload == *payload)
            .unwrap_or_else(|| panic!("no dead letter with the unchanged bytes for {reason}"));
        assert_eq!(d.header(headers::DEAD_REASON), *reason);
        assert!(!d.header(headers::DEAD_MESSAGE).is_empty());
        assert_eq!(d.key.as_deref(), key.map(str::as_bytes), "{reason}");
        assert_eq!(d.header(headers::SOURCE_TOPIC), input);
        // The source coordinates point back at the input record.
        let src = broker::read_topic(
            &bootstrap,
            &input,
            Duration::from_secs(20),
            Duration::from_millis(100),
            |r| r.len() >= cases.len(),
        );
        let partition: i32 = d.header(headers::SOURCE_PARTITION).parse().unwrap();
        let offset: i64 = d.header(headers::SOURCE_OFFSET).parse().unwrap();
        let original = src
            .iter()
            .find(|r| r.partition == partition && r.offset == offset)
            .expect("source record");
        assert_eq!(&original.payload, payload, "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_a_backlog_far_above_the_in_flight_bound_is_scored_while_running() {
    // A pre-filled topic many times the in-flight bound: flow control must keep consuming to
    // the end of every partition while the pipeline runs (not only when it drains at shutdown).
    let broker = broker::Broker::start();
    let bootstrap = broker.bootstrap();
    let input = broker::unique_topic("backlog");
    let mut config = kafka_config(&bootstrap, &input, &broker::unique_topic("g"));
    config.max_in_flight = 256;
    config.batch_size = 200;
    broker::create_topics(
        &bootstrap,
        &[
            (&input, 8),
            (&config.output_topic, 4),
            (&config.dead_letter_topic, 1),
        ],
    )
    .await;
    let recs = records(0..30_000, &["paris", "lyon", "rome", "oslo"]);
    broker::produce(&bootstrap, &input, &recs);
    let (report, out) = run_until(config, scorer(MemoryModelStore::new()), recs.len()).await;
    let ids: HashSet<String> = out.iter().map(id_of).collect();
    assert_eq!(
        ids.len(),
        recs.len(),
        "every input scored while running: {} outputs, {} consumed, {} waits at the bound",
        out.len(),
        report.consumed,
        report.pauses
    );
    assert!(report.pauses > 0, "the bound was never reached");
    assert!(
        report.max_in_flight_seen <= 256,
        "in flight reached {}",
        report.max_in_flight_seen
    );
}
