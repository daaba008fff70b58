//! Labels on a broker (Tansu, started by the harness): two members of one consumer group score
//! records keyed by city, labels keyed alike arrive on a co-partitioned topic, and each label
//! reaches the member that scored its record (every label is joined; the store's quality rows
//! count them per key). A labels topic with another partition count is refused at start.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use keyscore::store::{EmbeddedModelStore, ModelStore};
use keyscore_testkit::broker::{self, Broker};
use serde_json::json;

const KEYS: [&str; 8] = [
    "paris", "lyon", "nice", "lille", "nantes", "rennes", "brest", "metz",
];

struct Member {
    child: Child,
    log: PathBuf,
}

impl Member {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(
    dir: &Path,
    name: &str,
    broker: &Broker,
    group: &str,
    input: &str,
    labels: &str,
) -> Member {
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_keyscore"))
        .arg("serve")
        .env_remove("KEYSCORE_CONFIG")
        .env(
            "KEYSCORE_STORE",
            format!("sqlite://{}", dir.join("models.db").display()),
        )
        .env("KEYSCORE_LOG", "info")
        .env("KEYSCORE__KAFKA__BOOTSTRAP_SERVERS", broker.bootstrap())
        .env("KEYSCORE__KAFKA__GROUP_ID", group)
        .env("KEYSCORE__KAFKA__INPUT_TOPICS", format!(r#"["{input}"]"#))
        .env("KEYSCORE__KAFKA__OUTPUT_TOPIC", format!("{input}-out"))
        .env(
            "KEYSCORE__KAFKA__DEAD_LETTER_TOPIC",
            format!("{input}-dead"),
        )
        .env("KEYSCORE__OPS__LISTEN", "127.0.0.1:0")
        .env("KEYSCORE__QUALITY__LABELS_TOPIC", labels)
        .env("KEYSCORE__QUALITY__WINDOW_SECS", "120")
        .env("KEYSCORE__QUALITY__SLICES", "60")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting keyscore serve");
    Member { child, log }
}

async fn store_with_keys(dir: &Path) -> EmbeddedModelStore {
    let store = EmbeddedModelStore::open(dir.join("models.db")).unwrap();
    store.init().await.unwrap();
    let spec = json!({
        "format_version": 1,
        "features": ["x"],
        "model": {"kind": "linear", "coefficients": [2.0], "intercept": 0.0},
        "output": {"type": "regression"}
    })
    .to_string();
    for key in KEYS {
        store.put_version(key, Some(1), &spec).await.unwrap();
        store.activate(key, 1).await.unwrap();
    }
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_reach_the_member_that_scored_their_record() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_keys(dir.path()).await;
    let input = broker::unique_topic("records");
    let labels = format!("{input}-labels");
    broker::create_topics(&broker.bootstrap(), &[(&input, 4), (&labels, 4)]).await;
    let group = broker::unique_topic("keyscore");
    let mut a = serve(dir.path(), "a", &broker, &group, &input, &labels);
    let mut b = serve(dir.path(), "b", &broker, &group, &input, &labels);
    // Both members hold partitions before records arrive.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !(a.log().contains("Partitions assigned") && b.log().contains("Partitions assigned")) {
        let exited = [&mut a, &mut b]
            .into_iter()
            .any(|m| m.child.try_wait().unwrap().is_some());
        assert!(
            Instant::now() < deadline && !exited,
            "both members join:\n{}\n{}",
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let n = 400;
    let records: Vec<(Option<String>, Vec<u8>)> = (0..n)
        .map(|i| {
            let key = KEYS[i % KEYS.len()];
            let body = json!({"id": format!("r{i}"), "city": key, "x": (i % 10) as f64});
            (Some(key.to_string()), body.to_string().into_bytes())
        })
        .collect();
    broker::produce(&broker.bootstrap(), &input, &records);
    let out = broker::read_topic(
        &broker.bootstrap(),
        &format!("{input}-out"),
        Duration::from_secs(90),
        Duration::from_millis(300),
        |r| r.len() >= n,
    );
    assert!(out.len() >= n, "{}\n{}", a.log(), b.log());
    // Labels keyed like the records: the truth is 2x + 1, so every error is 1.
    let label_records: Vec<(Option<String>, Vec<u8>)> = (0..n)
        .map(|i| {
            let key = KEYS[i % KEYS.len()];
            let body = json!({"id": format!("r{i}"), "label": 2.0 * (i % 10) as f64 + 1.0});
            (Some(key.to_string()), body.to_string().into_bytes())
        })
        .collect();
    broker::produce(&broker.bootstrap(), &labels, &label_records);
    // Each key's row (written at the end of every 2 s slice) counts every label of the key.
    let want: HashMap<&str, i64> = KEYS.iter().map(|k| (*k, (n / KEYS.len()) as i64)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut got = HashMap::new();
        for key in KEYS {
            let labelled: i64 = store
                .quality(key, Some(1), 1)
                .await
                .unwrap()
                .first()
                .map_or(0, |r| {
                    if r.labelled > 0 {
                        assert_eq!(r.mae, Some(1.0), "{r:?}");
                    }
                    r.labelled
                });
            got.insert(key, labelled);
        }
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "every label joined on the member that scored it: {got:?}\n--- a\n{}\n--- b\n{}",
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Both members scored (and so joined) some of the keys.
    let writers: std::collections::BTreeSet<String> = {
        let mut w = std::collections::BTreeSet::new();
        for key in KEYS {
            for r in store.quality(key, Some(1), 1).await.unwrap() {
                w.insert(format!("{:?}", r.by));
            }
        }
        w
    };
    assert!(!writers.is_empty());
    for m in [&a, &b] {
        assert!(!m.log().contains("not co-partitioned"), "{}", m.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labels_topic_that_is_not_co_partitioned_is_refused_at_start() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    store_with_keys(dir.path()).await;
    let input = broker::unique_topic("records");
    let labels = format!("{input}-labels");
    broker::create_topics(&broker.bootstrap(), &[(&input, 4), (&labels, 1)]).await;
    let mut m = serve(dir.path(), "a", &broker, "g", &input, &labels);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = m.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "serve keeps running:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    let log = m.log();
    assert!(
        log.contains(&format!(
            "the labels topic '{labels}' has 1 partitions and the input topic '{input}' 4"
        )),
        "{log}"
    );
}
