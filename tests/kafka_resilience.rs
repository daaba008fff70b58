//! What an operator meets running `serve`, on librdkafka's mock cluster: records that would
//! stop a partition (outputs over the producer's size limit: each still gets exactly one
//! output, a dead letter with its payload cut to the limit or replaced by the source
//! coordinates, and the member keeps consuming to the end of the input), readiness that
//! follows the brokers going down and coming back, a member that restarts itself after a
//! delivery fails for good, and input headers carried over. (An output the broker refuses as too large goes the
//! same way from the delivery report; the mock cluster's injected produce errors are retried
//! by librdkafka until the message times out, which does not make a deterministic test.)

use std::{sync::Arc, time::Duration};

use keyscore::{
    ops::{Ops, OpsConfig},
    registry::{ModelRegistry, RegistryConfig},
    store::{MemoryModelStore, ModelStore},
    stream::{
        kafka::{headers, GroupState, KafkaConfig, KafkaPipeline, ServeReport},
        RecordFormat, Scorer,
    },
};
use keyscore_testkit::broker::{self, Read};
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

const PARIS: &str = r#"{"format_version":1,"features":["distance_km","items"],"model":{"kind":"linear","coefficients":[2.0,0.5],"intercept":10.0},"output":{"type":"regression"}}"#;

async fn scorer() -> Scorer {
    let store = MemoryModelStore::new();
    store.put_version("paris", Some(1), PARIS).await.unwrap();
    store.activate("paris", 1).await.unwrap();
    let registry = ModelRegistry::new(
        Arc::new(store),
        RegistryConfig {
            fallback_key: None,
            ..RegistryConfig::default()
        },
    );
    Scorer::new(Arc::new(registry), RecordFormat::default())
}

fn setup(
    partitions: i32,
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    KafkaConfig,
) {
    let input = broker::unique_topic("poison");
    let mock = MockCluster::new(1).expect("mock cluster");
    let mut config = KafkaConfig {
        bootstrap_servers: mock.bootstrap_servers(),
        group_id: broker::unique_topic("g"),
        input_topics: vec![input.clone()],
        output_topic: format!("{input}-scored"),
        dead_letter_topic: format!("{input}-dead"),
        ..KafkaConfig::default()
    };
    config
        .consumer_options
        .insert("session.timeout.ms".into(), "6000".into());
    for t in [&input, &config.output_topic, &config.dead_letter_topic] {
        mock.create_topic(t, partitions, 1).expect("mock topic");
    }
    (mock, config)
}

fn valid(i: usize) -> (Option<String>, Vec<u8>) {
    (
        Some("paris".into()),
        format!(r#"{{"id":"r-{i}","city":"paris","distance_km":{i}.5,"items":2}}"#).into_bytes(),
    )
}

/// Runs the pipeline until `outputs` records are out, stops it, and returns its report and
/// every output.
async fn run(config: &KafkaConfig, outputs: usize) -> (ServeReport, Vec<Read>) {
    let cancel = CancellationToken::new();
    let mut task =
        tokio::spawn(KafkaPipeline::new(config.clone(), scorer().await).run(cancel.clone()));
    let bootstrap = config.bootstrap_servers.clone();
    let topics = [
        config.output_topic.clone(),
        config.dead_letter_topic.clone(),
    ];
    let reading = tokio::task::spawn_blocking(move || {
        broker::read_to_end(
            &bootstrap,
            &[&topics[0], &topics[1]],
            outputs,
            Duration::from_secs(60),
        )
    });
    let read = tokio::select! {
        read = reading => read.unwrap(),
        stopped = &mut task => panic!("the pipeline stopped before every output: {stopped:?}"),
    };
    cancel.cancel();
    let report = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the pipeline stops within 30 s of cancellation")
        .unwrap()
        .expect("the pipeline ends cleanly: no record stops it");
    (report, read)
}

fn assert_committed_to_the_end(config: &KafkaConfig) {
    let input = &config.input_topics[0];
    let committed = broker::committed(&config.bootstrap_servers, &config.group_id, input);
    for (partition, high) in broker::high_watermarks(&config.bootstrap_servers, input) {
        if high > 0 {
            assert_eq!(
                committed[&partition], high,
                "partition {partition} is past every record"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_dead_letter_limit_keeps_its_first_bytes_and_its_size() {
    let (_mock, mut config) = setup(2);
    // A producer limit of 40,000 bytes: dead letters carry at most 30,000 (a quarter is kept
    // for headers).
    config
        .producer_options
        .insert("message.max.bytes".into(), "40000".into());
    assert_eq!(config.dead_letter_payload_limit(), 30_000);
    let mut recs: Vec<_> = (0..200).map(valid).collect();
    let big = vec![b'x'; 100_000];
    recs.insert(100, (Some("paris".into()), big.clone()));
    broker::produce(&config.bootstrap_servers, &config.input_topics[0], &recs);

    let (report, out) = run(&config, recs.len()).await;
    assert_eq!(out.len(), recs.len(), "one output per input: {report:?}");
    assert_eq!(report.acknowledged, recs.len() as u64);
    let dead: Vec<&Read> = out
        .iter()
        .filter(|r| r.topic == config.dead_letter_topic)
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].header(headers::DEAD_REASON), "not_json");
    assert_eq!(dead[0].header(headers::PAYLOAD_TRUNCATED_FROM), "100000");
    assert_eq!(dead[0].payload, big[..30_000]);
    assert_committed_to_the_end(&config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_the_producer_refuses_becomes_a_dead_letter_naming_its_source() {
    let (_mock, mut config) = setup(1);
    config
        .producer_options
        .insert("message.max.bytes".into(), "20000".into());
    let mut recs: Vec<_> = (0..50).map(valid).collect();
    // A valid record whose id alone makes its scored output larger than the producer takes.
    let long_id = "i".repeat(30_000);
    recs.insert(
        25,
        (
            Some("paris".into()),
            format!(r#"{{"id":"{long_id}","city":"paris","distance_km":1.5,"items":2}}"#)
                .into_bytes(),
        ),
    );
    broker::produce(&config.bootstrap_servers, &config.input_topics[0], &recs);

    let (report, out) = run(&config, recs.len()).await;
    assert_eq!(out.len(), recs.len(), "one output per input: {report:?}");
    let dead: Vec<&Read> = out
        .iter()
        .filter(|r| r.topic == config.dead_letter_topic)
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let d = dead[0];
    assert_eq!(d.header(headers::DEAD_REASON), headers::OUTPUT_TOO_LARGE);
    assert!(d.payload.is_empty());
    assert_eq!(d.header(headers::SOURCE_TOPIC), config.input_topics[0]);
    assert_eq!(d.header(headers::SOURCE_OFFSET), "25");
    assert!(d
        .header(headers::DEAD_MESSAGE)
        .contains("refused as too large by the producer"));
    assert_committed_to_the_end(&config);
}

/// Waits until `ready` holds, failing with `what` after 30 s.
async fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(tokio::time::Instant::now() < deadline, "{what} within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_says_when_every_broker_is_down_and_recovers_with_them() {
    let (mock, config) = setup(1);
    broker::produce(
        &config.bootstrap_servers,
        &config.input_topics[0],
        &(0..10).map(valid).collect::<Vec<_>>(),
    );
    let scorer = scorer().await;
    let group = Arc::new(GroupState::default());
    let ops = Ops::new(
        Arc::clone(scorer.registry()),
        Arc::clone(scorer.metrics()),
        Some(Arc::clone(&group)),
        OpsConfig::default(),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(
        KafkaPipeline::new(config.clone(), scorer)
            .with_group(Arc::clone(&group))
            .run(cancel.clone()),
    );
    wait_until("the member joins and is ready", || {
        ops.readiness().is_empty()
    })
    .await;

    mock.broker_down(1).expect("broker down");
    wait_until("readiness names the lost brokers", || {
        ops.readiness()
            .iter()
            .any(|p| p.starts_with("no Kafka broker connection"))
    })
    .await;

    mock.broker_up(1).expect("broker up");
    wait_until("the member is ready again", || ops.readiness().is_empty()).await;
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the pipeline stops")
        .unwrap()
        .expect("the pipeline ends cleanly");
}

/// Produces `records` with the headers `headers` on each.
fn produce_with_headers(
    bootstrap: &str,
    topic: &str,
    records: &[(Option<String>, Vec<u8>)],
    headers: &[(&str, &str)],
) {
    use rdkafka::{
        message::{Header, OwnedHeaders},
        producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer},
        ClientConfig,
    };
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    for (key, payload) in records {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record: BaseRecord<'_, str, [u8]> =
            BaseRecord::to(topic).payload(&payload[..]).headers(h);
        if let Some(k) = key {
            record = record.key(k.as_str());
        }
        producer.send(record).map_err(|(e, _)| e).expect("queued");
    }
    producer.flush(Duration::from_secs(30)).expect("flushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_headers_are_carried_over_when_asked_and_never_shadow_keyscores() {
    for forward in [false, true] {
        let (_mock, mut config) = setup(1);
        config.forward_headers = forward;
        let mut recs: Vec<_> = (0..5).map(valid).collect();
        recs.push((Some("paris".into()), b"not json".to_vec()));
        produce_with_headers(
            &config.bootstrap_servers,
            &config.input_topics[0],
            &recs,
            &[
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
                (headers::MODEL_KEY, "spoofed"),
            ],
        );
        let (_report, out) = run(&config, recs.len()).await;
        assert_eq!(out.len(), recs.len());
        for r in &out {
            assert_eq!(
                r.headers.contains_key("traceparent"),
                forward,
                "forward_headers = {forward}: {r:?}"
            );
            if forward {
                assert_eq!(
                    r.header("traceparent"),
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                );
            }
            if r.topic == config.output_topic {
                assert_eq!(
                    r.header(headers::MODEL_KEY),
                    "paris",
                    "keyscore's own header"
                );
            } else {
                assert_eq!(r.header(headers::DEAD_REASON), "not_json");
                assert!(!r.headers.contains_key(headers::MODEL_KEY), "{r:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_fails_for_good_restarts_the_member_and_loses_nothing() {
    let (mock, config) = setup(2);
    let recs: Vec<_> = (0..200).map(valid).collect();
    broker::produce(&config.bootstrap_servers, &config.input_topics[0], &recs);
    // The broker refuses the member's first produce requests with an error no retry cures.
    mock.request_errors(
        rdkafka::types::RDKafkaApiKey::Produce,
        &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 3],
    );
    let group = Arc::new(GroupState::default());
    let cancel = CancellationToken::new();
    let mut task = tokio::spawn(
        KafkaPipeline::new(config.clone(), scorer().await)
            .with_group(Arc::clone(&group))
            .run(cancel.clone()),
    );
    let bootstrap = config.bootstrap_servers.clone();
    let topic = config.output_topic.clone();
    let ids = tokio::task::spawn_blocking(move || {
        let collector = broker::Collector::start(&bootstrap, &[&topic]);
        let seen = std::cell::RefCell::new(std::collections::BTreeSet::new());
        collector.wait_for(Duration::from_secs(60), "every record scored", |r| {
            *seen.borrow_mut() = r
                .iter()
                .map(|r| {
                    let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
                    v["id"].as_str().unwrap().to_string()
                })
                .collect();
            seen.borrow().len() >= 200
        });
        seen.into_inner()
    });
    let ids = tokio::select! {
        ids = ids => ids.unwrap(),
        stopped = &mut task => panic!("the member stopped instead of restarting: {stopped:?}"),
    };
    assert_eq!(ids.len(), recs.len(), "every record scored at least once");
    assert!(group.restarts() >= 1, "the member restarted itself");
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the pipeline stops")
        .unwrap()
        .expect("the pipeline ends cleanly");
}

/// Exactly-once on the mock cluster: each batch is one committed transaction and a reader sees
/// one output per input. (The mock answers a transaction's offset commit without storing it and
/// does not hide aborted outputs from `read_committed` readers, so neither is checked here;
/// Tansu has no transactions.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_commits_one_output_per_input_in_transactions() {
    let (_mock, mut config) = setup(2);
    config.processing = keyscore::stream::kafka::Processing::ExactlyOnce;
    config.transactional_id = broker::unique_topic("tx");
    let mut recs: Vec<_> = (0..400).map(valid).collect();
    recs.push((Some("paris".into()), b"not json".to_vec()));
    broker::produce(&config.bootstrap_servers, &config.input_topics[0], &recs);
    let (report, out) = run(&config, recs.len()).await;
    assert_eq!(out.len(), recs.len(), "one output per input: {report:?}");
    assert_eq!(report.acknowledged, recs.len() as u64);
    let dead = out
        .iter()
        .filter(|r| r.topic == config.dead_letter_topic)
        .count();
    assert_eq!(dead, 1);
}

/// On a broker without transactions (Tansu), `exactly_once` stops at once with a message
/// that says so, instead of restarting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_on_a_broker_without_transactions_stops_saying_so() {
    let tansu = broker::Broker::start();
    let input = broker::unique_topic("eos");
    let mut config = KafkaConfig {
        bootstrap_servers: tansu.bootstrap(),
        group_id: broker::unique_topic("g"),
        input_topics: vec![input.clone()],
        output_topic: format!("{input}-scored"),
        dead_letter_topic: format!("{input}-dead"),
        processing: keyscore::stream::kafka::Processing::ExactlyOnce,
        transactional_id: broker::unique_topic("tx"),
        ..KafkaConfig::default()
    };
    config
        .consumer_options
        .insert("session.timeout.ms".into(), "6000".into());
    broker::create_topics(
        &config.bootstrap_servers,
        &[
            (&input, 1),
            (&config.output_topic, 1),
            (&config.dead_letter_topic, 1),
        ],
    )
    .await;
    broker::produce(
        &config.bootstrap_servers,
        &input,
        &(0..10).map(valid).collect::<Vec<_>>(),
    );
    let group = Arc::new(GroupState::default());
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        KafkaPipeline::new(config, scorer().await)
            .with_group(Arc::clone(&group))
            .run(CancellationToken::new()),
    )
    .await
    .expect("the member stops within 60 s");
    let err = result.expect_err("exactly_once cannot run without transactions");
    assert!(
        err.to_string().contains("needs Kafka transactions"),
        "{err}"
    );
    assert_eq!(group.restarts(), 0, "no restart can cure it");
}
