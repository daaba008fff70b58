//! Every output shape through `keyscore serve` on a real broker (Tansu, started by the
//! harness), for a regressor and a classifier: outputs validated against the JSON Schema in
//! `seed/schema/` by Python's `jsonschema`, keyscore's headers on every output, the input's
//! headers kept by `enriched` only, and a record without an id given `TOPIC-PARTITION-OFFSET`.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use keyscore::{
    store::{EmbeddedModelStore, ModelStore},
    stream::kafka::headers,
};
use keyscore_testkit::{
    broker::{self, Broker, Read},
    cqlnode::clients::python,
};
use rdkafka::{
    config::ClientConfig,
    message::{Header, OwnedHeaders},
    producer::{BaseProducer, BaseRecord, Producer},
};
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The input: (key, payload) of seed records of paris (a regressor) and london (a binary
/// classifier), one of each without an id, and leeds, a city without a model whose country
/// (uk) has one.
fn input_records() -> Vec<(String, String)> {
    let seed = std::fs::read_to_string(repo("seed/records.jsonl")).unwrap();
    let mut out: Vec<Value> = seed
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["id"].is_string()
                && (v["city"] == "paris" || v["city"] == "london")
                && v.as_object().unwrap().len() > 5
        })
        .take(40)
        .collect();
    for city in ["paris", "london"] {
        let mut v = out.iter().find(|v| v["city"] == city).unwrap().clone();
        v.as_object_mut().unwrap().remove("id");
        out.push(v);
    }
    let mut leeds = out.iter().find(|v| v["city"] == "london").unwrap().clone();
    leeds["city"] = "leeds".into();
    leeds["id"] = "leeds-1".into();
    leeds["country"] = "uk".into();
    out.push(leeds);
    out.into_iter()
        .map(|v| (v["city"].as_str().unwrap().to_string(), v.to_string()))
        .collect()
}

/// Produces the records, each with a `trace` header naming its index and a constant `origin`
/// header.
fn produce_with_headers(bootstrap: &str, topic: &str, records: &[(String, String)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    for (i, (key, payload)) in records.iter().enumerate() {
        let trace = format!("t-{i}");
        let hs = OwnedHeaders::new()
            .insert(Header {
                key: "trace",
                value: Some(trace.as_bytes()),
            })
            .insert(Header {
                key: "origin",
                value: Some(&b"checkout"[..]),
            });
        let mut rec: BaseRecord<'_, str, str> = BaseRecord::to(topic)
            .key(key.as_str())
            .payload(payload.as_str())
            .headers(hs);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    producer.poll(Duration::from_millis(20));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("every test record acknowledged");
}

struct Serve {
    child: Child,
    log: PathBuf,
}

impl Serve {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait for a clean exit (at most `timeout`).
    fn terminate(&mut self, timeout: Duration) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "serve exited with {status}:\n{}",
                    self.log()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not exit within {timeout:?} of SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Validates each payload against `shape` of the repository's output schema.
fn validate(dir: &Path, shape: &str, payloads: &[&[u8]]) {
    let file = dir.join(format!("{shape}-serve.jsonl"));
    let mut text = Vec::new();
    for p in payloads {
        text.extend_from_slice(p);
        text.push(b'\n');
    }
    std::fs::write(&file, text).unwrap();
    let out = Command::new(python())
        .arg(repo("tests/data/validate_outputs.py"))
        .arg(repo("seed/schema/output.schema.json"))
        .arg(shape)
        .arg(&file)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{shape} outputs of serve do not match the schema:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let validated: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(validated, payloads.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_output_shape_of_serve_matches_the_schema_and_keeps_headers_as_documented() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("models.db");
    let store = EmbeddedModelStore::open(db.to_str().unwrap()).unwrap();
    store.init().await.unwrap();
    for (key, file) in [
        ("paris", "paris"),
        ("london", "london"),
        ("_default", "_default"),
        ("uk", "london"),
    ] {
        let spec = std::fs::read_to_string(repo(&format!("seed/models/{file}/v1.json"))).unwrap();
        store.put_version(key, Some(1), &spec).await.unwrap();
        store.activate(key, 1).await.unwrap();
    }
    let input = broker::unique_topic("records");
    broker::create_topics(&broker.bootstrap(), &[(&input, 2)]).await;
    let records = input_records();
    produce_with_headers(&broker.bootstrap(), &input, &records);
    // Where each record landed, for the ids of the records without one.
    let written = broker::read_topic(
        &broker.bootstrap(),
        &input,
        Duration::from_secs(60),
        Duration::from_millis(200),
        |r| r.len() >= records.len(),
    );
    assert_eq!(written.len(), records.len());
    let by_position: HashMap<(i32, i64), &Read> = written
        .iter()
        .map(|r| ((r.partition, r.offset), r))
        .collect();
    let by_id: HashMap<String, &Read> = written
        .iter()
        .filter_map(|r| {
            let v: Value = serde_json::from_slice(&r.payload).unwrap();
            v["id"].as_str().map(|id| (id.to_string(), r))
        })
        .collect();

    for shape in ["scored", "enriched", "prediction_log"] {
        let output = format!("{input}-{shape}");
        let dead = format!("{input}-{shape}-dead");
        let log = dir.path().join(format!("{shape}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_keyscore"))
            .arg("serve")
            .env_remove("KEYSCORE_CONFIG")
            .env("KEYSCORE_STORE", format!("sqlite://{}", db.display()))
            .env("KEYSCORE_LOG", "info")
            .env("KEYSCORE__KAFKA__BOOTSTRAP_SERVERS", broker.bootstrap())
            .env(
                "KEYSCORE__KAFKA__GROUP_ID",
                broker::unique_topic("keyscore"),
            )
            .env("KEYSCORE__KAFKA__INPUT_TOPICS", format!(r#"["{input}"]"#))
            .env("KEYSCORE__KAFKA__OUTPUT_TOPIC", &output)
            .env("KEYSCORE__KAFKA__DEAD_LETTER_TOPIC", &dead)
            .env("KEYSCORE__OPS__LISTEN", "127.0.0.1:0")
            .env("KEYSCORE__RECORDS__OUTPUT", shape)
            .env("KEYSCORE__RECORDS__FALLBACK_FIELDS", r#"["country"]"#)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting keyscore serve");
        let mut serve = Serve { child, log };
        let out = broker::read_topic(
            &broker.bootstrap(),
            &output,
            Duration::from_secs(90),
            Duration::from_millis(500),
            |r| r.len() >= records.len(),
        );
        serve.terminate(Duration::from_secs(30));
        assert_eq!(out.len(), records.len(), "{shape}:\n{}", serve.log());
        let payloads: Vec<&[u8]> = out.iter().map(|r| r.payload.as_slice()).collect();
        validate(dir.path(), shape, &payloads);

        let (mut regression, mut classification, mut generated) = (0, 0, 0);
        for r in &out {
            let body: Value = serde_json::from_slice(&r.payload).unwrap();
            let fields = if shape == "enriched" {
                &body["keyscore"]
            } else {
                &body
            };
            let (model_key, prediction) = if shape == "prediction_log" {
                (&fields["model_name"], &fields["outputs"])
            } else {
                (&fields["model_key"], &fields["prediction"])
            };
            // keyscore's headers, as before, on every shape.
            assert_eq!(r.header(headers::MODEL_KEY), model_key.as_str().unwrap());
            assert_eq!(
                r.header(headers::MODEL_VERSION),
                fields["model_version"].to_string()
            );
            assert_eq!(
                r.header(headers::MODEL_CHECKSUM),
                fields["model_checksum"].as_str().unwrap()
            );
            // The input it came from: by its id, or by the position its generated id names.
            let id = fields["id"].as_str().unwrap();
            let source = if fields["id_generated"] == true {
                generated += 1;
                let (rest, offset) = id.rsplit_once('-').unwrap();
                let (topic, partition) = rest.rsplit_once('-').unwrap();
                assert_eq!(topic, input);
                let source = by_position[&(partition.parse().unwrap(), offset.parse().unwrap())];
                let v: Value = serde_json::from_slice(&source.payload).unwrap();
                assert!(v.get("id").is_none(), "{id} names a record with an id");
                source
            } else {
                by_id[id]
            };
            assert_eq!(r.key, source.key, "the output keeps the input's key");
            if shape == "enriched" {
                let close = source.payload.iter().rposition(|b| *b == b'}').unwrap();
                assert_eq!(&r.payload[..close], &source.payload[..close]);
                for h in ["trace", "origin"] {
                    assert_eq!(r.header(h), source.header(h), "{h}");
                }
            } else {
                assert!(!r.headers.contains_key("trace"), "{shape} copied headers");
            }
            match prediction.get("class") {
                None => regression += 1,
                Some(_) => classification += 1,
            }
            if source.key.as_deref() == Some(&b"leeds"[..]) {
                assert_eq!(fields["fallback_level"], "country");
                assert_eq!(model_key, "uk");
            }
        }
        assert_eq!(generated, 2, "{shape}");
        assert!(regression > 5 && classification > 5, "{shape}");
    }
}
