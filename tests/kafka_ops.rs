//! `keyscore serve` on a real broker (Tansu) with a canary and a shadow running: canary outputs
//! carry the header and the version their id selects, shadow outputs reach the shadow topic
//! only, and the operations endpoint reports readiness, assignment, lag and deliveries.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use keyscore::{
    rollout::in_canary,
    store::{Canary, EmbeddedModelStore, ModelStore},
    stream::kafka::headers,
};
use keyscore_testkit::broker::{self, Broker, Collector, Read};

fn spec(intercept: f64) -> String {
    format!(
        r#"{{"format_version":1,"features":["distance_km","items"],"model":{{"kind":"linear","coefficients":[2.0,0.5],"intercept":{intercept}}},"output":{{"type":"regression"}}}}"#
    )
}

fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.into(),
    )
}

/// The `i` of the `"id":"r-{i}"` in a payload.
fn id_of(r: &Read) -> usize {
    let text = String::from_utf8_lossy(&r.payload);
    let at = text.find("\"r-").expect("an id") + 3;
    text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_applies_canary_and_shadow_and_reports_on_the_operations_endpoint() {
    const N: usize = 1000;
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("models.db");
    let store = EmbeddedModelStore::open(&db).unwrap();
    for key in ["paris", "rome"] {
        store.put_version(key, Some(1), &spec(10.0)).await.unwrap();
        store.put_version(key, Some(2), &spec(13.0)).await.unwrap();
        store.activate(key, 1).await.unwrap();
    }
    store
        .set_canary(
            "paris",
            Some(Canary {
                version: 2,
                share: 0.3,
                auto: None,
            }),
        )
        .await
        .unwrap();
    store.set_shadow("rome", Some(2)).await.unwrap();
    let input = broker::unique_topic("records");
    broker::create_topics(&broker.bootstrap(), &[(&input, 2)]).await;
    let (output, dead, shadow) = (
        format!("{input}-scored"),
        format!("{input}-dead"),
        format!("{input}-scored-shadow"),
    );

    let log = dir.path().join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyscore"))
        .args(["--log-format", "json", "serve"])
        .env("KEYSCORE_STORE", format!("sqlite://{}", db.display()))
        .env("KEYSCORE_LOG", "info")
        .env("KEYSCORE__KAFKA__BOOTSTRAP_SERVERS", broker.bootstrap())
        .env("KEYSCORE__KAFKA__GROUP_ID", broker::unique_topic("group"))
        .env("KEYSCORE__KAFKA__INPUT_TOPICS", format!(r#"["{input}"]"#))
        .env("KEYSCORE__KAFKA__OUTPUT_TOPIC", &output)
        .env("KEYSCORE__KAFKA__DEAD_LETTER_TOPIC", &dead)
        .env(
            "KEYSCORE__KAFKA__CONSUMER_OPTIONS__STATISTICS.INTERVAL.MS",
            "500",
        )
        .env("KEYSCORE__OPS__LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !read_log().contains("Partitions assigned.") {
        assert!(
            child.try_wait().unwrap().is_none(),
            "serve exited:\n{}",
            read_log()
        );
        assert!(Instant::now() < deadline, "no assignment:\n{}", read_log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = read_log();
    let at = text
        .find("\"addr\":\"")
        .expect("the operations address is logged")
        + 8;
    let addr = text[at..at + text[at..].find('"').unwrap()].to_string();
    assert_eq!(get(&addr, "/readyz").0, 200);

    let collector = Collector::start(&broker.bootstrap(), &[&output, &dead, &shadow]);
    let records: Vec<(Option<String>, Vec<u8>)> = (0..N)
        .map(|i| {
            let key = if i % 2 == 0 { "paris" } else { "rome" };
            let payload = format!(
                r#"{{"id":"r-{i}","city":"{key}","distance_km":{}.5,"items":{}}}"#,
                i % 11,
                i % 4
            );
            (Some(key.to_string()), payload.into_bytes())
        })
        .collect();
    broker::produce(&broker.bootstrap(), &input, &records);
    collector.wait_for(Duration::from_secs(60), "every output and shadow", |r| {
        r.iter().filter(|r| r.topic == output).count() >= N
            && r.iter().filter(|r| r.topic == shadow).count() >= N / 2
    });
    let out = collector.snapshot();
    let mut canaries = 0;
    for r in out.iter().filter(|r| r.topic == output) {
        let i = id_of(r);
        let canary = r.headers.get(headers::CANARY).map(String::as_str);
        assert!(
            !r.headers.contains_key(headers::SHADOW),
            "shadow output in the output topic"
        );
        let payload = String::from_utf8_lossy(&r.payload);
        if i % 2 == 0 && in_canary(format!("\"r-{i}\"").as_bytes(), 0.3) {
            canaries += 1;
            assert_eq!(canary, Some("true"), "{payload}");
            assert_eq!(r.header(headers::MODEL_VERSION), "2");
            assert!(payload.contains("\"canary\":true"), "{payload}");
        } else {
            assert_eq!(canary, None, "{payload}");
            assert_eq!(r.header(headers::MODEL_VERSION), "1");
        }
    }
    assert!(
        canaries > 100 && canaries < 200,
        "{canaries} paris canaries of 500"
    );
    let shadows: Vec<&Read> = out.iter().filter(|r| r.topic == shadow).collect();
    assert_eq!(shadows.len(), N / 2);
    for r in &shadows {
        assert_eq!(r.key.as_deref(), Some(&b"rome"[..]));
        assert_eq!(r.header(headers::SHADOW), "true");
        assert_eq!(r.header(headers::MODEL_VERSION), "2");
    }
    assert!(out.iter().all(|r| r.topic != dead));

    // The endpoint saw the same.
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let (_, text) = get(&addr, "/metrics");
        if text.contains("keyscore_consumer_lag{")
            && text.contains(&format!("keyscore_shadow_records_out_total {}\n", N / 2))
            && text.contains(&format!(
                "keyscore_residence_seconds_count{{stage=\"acked\"}} {N}\n"
            ))
        {
            break text;
        }
        assert!(Instant::now() < deadline, "metrics incomplete:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for line in [
        format!("keyscore_records_in_total {N}"),
        format!("keyscore_records_out_total {N}"),
        format!("keyscore_records_canary_total {canaries}"),
        format!("keyscore_end_to_end_lag_seconds_count {N}"),
        // keyscore's own residence time, poll to producer and poll to acknowledgement: one
        // observation per record.
        format!("keyscore_residence_seconds_count{{stage=\"handed\"}} {N}"),
        format!("keyscore_residence_seconds_count{{stage=\"acked\"}} {N}"),
        "keyscore_partitions_assigned 2".to_string(),
        "keyscore_key_shadow_mean_abs_diff{key=\"rome\"} 3".to_string(),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in:\n{metrics}"
        );
    }
    let (_, status) = get(&addr, "/status.json");
    assert!(
        status.contains(r#""canary":{"share":0.3,"version":2}"#),
        "{status}"
    );

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", read_log());
}
