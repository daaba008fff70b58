//! Store outages on the CQL backend, on the project's CQL test node: while the node is
//! unreachable (refusing connections, or stopped and restarted on the same port) a scorer goes
//! on scoring cached keys with the models it has, the registry reports the store unhealthy and
//! a watcher poll fails instead of hanging; an activation written while the scorer was cut
//! off is served within a few polls once the node is back, and the store is healthy again.
//! The same is checked on a `keyscore score` process through its operations endpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyscore::registry::{ModelRegistry, RegistryConfig};
use keyscore::store::{CqlModelStore, ModelStore};
use keyscore::stream::{Input, Outcome, Reason, RecordFormat, Scorer};
use keyscore_testkit::cqlnode::clients::{keyscore, repo_path, ScorerProcess};
use keyscore_testkit::cqlnode::{CqlTestNode, Fault};
use tokio_util::sync::CancellationToken;

/// The watcher's poll interval.
const REFRESH: Duration = Duration::from_millis(100);

/// How long anything the tests wait for may take before they fail: far beyond what it needs.
const DEADLINE: Duration = Duration::from_secs(30);

/// A poll during an outage must return (with an error) within this long rather than hang the
/// watcher: generous, as it is a deadline and not a performance figure.
const POLL_DEADLINE: Duration = Duration::from_secs(10);

const PARIS: &str = r#"{"id":"p","city":"paris","distance_km":3.5,"items":2,"hour":19,"is_weekend":0,"rain_mm":1.2,"courier_rating":4.8,"traffic_index":0.4,"prep_time_min":12}"#;
const BERLIN: &str = r#"{"id":"b","city":"berlin","distance_km":3.5,"items":2,"hour":19,"is_weekend":0,"rain_mm":1.2,"courier_rating":4.8,"traffic_index":0.4,"prep_time_min":12}"#;

/// How the node becomes unreachable.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// `Fault::Unavailable`: connections are closed as soon as they are accepted.
    Refusing,
    /// `stop()`, later `restart()` on the same port.
    Stopped,
}

struct Rig {
    node: CqlTestNode,
    registry: Arc<ModelRegistry>,
    scorer: Scorer,
    cancel: CancellationToken,
}

async fn rig() -> Rig {
    let node = CqlTestNode::start().await;
    let store = CqlModelStore::connect(&format!("{}/keyscore", node.addr()))
        .await
        .expect("the CQL store connects to the test node");
    store.init().await.expect("init");
    for (key, v) in [("paris", 1), ("paris", 2), ("_default", 1)] {
        let spec = std::fs::read_to_string(repo_path(&format!("seed/models/{key}/v{v}.json")))
            .expect("seed model");
        store
            .put_version(key, Some(v), &spec)
            .await
            .expect("upload");
    }
    store.activate("paris", 1).await.expect("activate");
    store.activate("_default", 1).await.expect("activate");
    let registry = Arc::new(ModelRegistry::new(
        Arc::new(store) as Arc<dyn ModelStore>,
        RegistryConfig {
            refresh_interval: REFRESH,
            // Catching up must come from the change feed, not from a periodic re-read.
            resync_every: 0,
            ..RegistryConfig::default()
        },
    ));
    let cancel = CancellationToken::new();
    registry.spawn_watcher(cancel.clone());
    let scorer = Scorer::new(Arc::clone(&registry), RecordFormat::default());
    Rig {
        node,
        registry,
        scorer,
        cancel,
    }
}

/// Scores one record; returns the version that scored it, or the dead-letter reason.
async fn score(scorer: &Scorer, record: &str) -> Result<i64, Reason> {
    let outcomes = scorer
        .score(
            &[Input {
                payload: record.as_bytes(),
                key: None,
            }],
            None,
        )
        .await
        .outcomes;
    match &outcomes[0] {
        Outcome::Scored(s) => Ok(s.model.version),
        Outcome::Rejected(r) => Err(r.reason),
    }
}

/// Waits until `check` holds, scoring a paris record every few milliseconds meanwhile (every
/// one must be scored); returns how long it took.
async fn scoring_until(rig: &Rig, what: &str, mut check: impl FnMut(i64) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let version = score(&rig.scorer, PARIS)
            .await
            .unwrap_or_else(|r| panic!("a cached paris record was dead-lettered: {r:?}"));
        if check(version) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what} did not happen within {DEADLINE:?} (healthy: {}, last version {version})",
            rig.registry.store_healthy()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn outage_is_ridden_out(outage: Outage) {
    let rig = rig().await;
    assert_eq!(score(&rig.scorer, PARIS).await, Ok(1));
    assert!(rig.registry.store_healthy());
    // Let the watcher take its first cursor before the outage.
    let polls = rig.registry.stats().polls.get();
    scoring_until(&rig, "a first watcher poll", |_| {
        rig.registry.stats().polls.get() > polls
    })
    .await;

    match outage {
        Outage::Refusing => rig.node.set_fault(Fault::Unavailable),
        Outage::Stopped => rig.node.stop(),
    }
    let to_unhealthy = scoring_until(&rig, "the store reported unhealthy", |v| {
        assert_eq!(v, 1, "paris keeps its model during the outage");
        !rig.registry.store_healthy()
    })
    .await;

    // A poll during the outage fails instead of hanging.
    let started = Instant::now();
    let poll = tokio::time::timeout(POLL_DEADLINE, rig.registry.poll())
        .await
        .unwrap_or_else(|_| {
            panic!("a poll during the outage still running after {POLL_DEADLINE:?}")
        });
    let poll_took = started.elapsed();
    assert!(poll.is_err(), "a poll during the outage fails");
    assert!(!rig.registry.store_healthy());

    // A key that is not cached cannot be loaded: its record is dead-lettered, not dropped.
    assert_eq!(
        score(&rig.scorer, BERLIN).await,
        Err(Reason::StoreUnavailable)
    );

    activate_paris_v2_behind_the_fault(&rig.node);
    // Several watcher polls fail; the scorer is cut off, so paris stays on v1 and nothing is
    // lost.
    let errors = || rig.registry.stats().store_errors.get();
    let before = errors();
    scoring_until(&rig, "ten failed watcher polls", |v| {
        assert_eq!(v, 1, "the scorer cannot see v2 while cut off");
        errors() >= before + 10
    })
    .await;
    assert!(!rig.registry.store_healthy());

    let back = Instant::now();
    match outage {
        Outage::Refusing => rig.node.clear_fault(),
        Outage::Stopped => rig.node.restart().await.expect("restart on the same port"),
    }
    let mut healthy_after = None;
    let to_v2 = scoring_until(&rig, "serving paris v2 after the node came back", |v| {
        if healthy_after.is_none() && rig.registry.store_healthy() {
            healthy_after = Some(back.elapsed());
        }
        v == 2
    })
    .await;
    let to_healthy = match healthy_after {
        Some(d) => d,
        None => {
            scoring_until(&rig, "the store reported healthy", |_| {
                rig.registry.store_healthy()
            })
            .await;
            back.elapsed()
        }
    };
    eprintln!(
        "{outage:?}: unhealthy {to_unhealthy:?} after the outage began; a poll during it failed \
         in {poll_took:?}; after the node came back: healthy in {to_healthy:?}, paris v2 served \
         in {to_v2:?} (refresh interval {REFRESH:?})"
    );
    // Once v2 is served it stays; uncached keys load again.
    for _ in 0..50 {
        assert_eq!(score(&rig.scorer, PARIS).await, Ok(2));
    }
    assert_eq!(
        score(&rig.scorer, BERLIN).await,
        Ok(1),
        "berlin on _default v1"
    );
    assert!(rig.registry.store_healthy());
    rig.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scorer_rides_out_a_node_refusing_connections() {
    outage_is_ridden_out(Outage::Refusing).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scorer_rides_out_a_node_stop_and_restart() {
    outage_is_ridden_out(Outage::Stopped).await;
}

/// A data scientist who still reaches the cluster activates paris v2 while the scorer is cut
/// off: written on the node directly, past its fault.
fn activate_paris_v2_behind_the_fault(node: &CqlTestNode) {
    // The plain-CQL protocol (seed/activate.cql): compare-and-set on the revision, then the
    // feed row.
    node.execute_local(
        "UPDATE keyscore.active_models SET version = 2, previous_version = 1, revision = 2 \
         WHERE key = 'paris' IF revision = 1",
    )
    .expect("the activation is written on the node");
    node.execute_local(
        "INSERT INTO keyscore.model_changes (day, bucket, changed_at, key, version, revision) \
         VALUES (currentDate(), 0, currentTimestamp(), 'paris', 2, 2)",
    )
    .expect("the feed row is written on the node");
}

/// Sends a paris record to a `keyscore score` process; returns the version that scored it.
async fn score_paris(scorer: &mut ScorerProcess) -> i64 {
    scorer.send(PARIS).await;
    let line = scorer.next_line(DEADLINE).await;
    let scored: serde_json::Value = serde_json::from_str(&line).unwrap();
    scored["model_version"]
        .as_i64()
        .unwrap_or_else(|| panic!("not a scored record: {line}"))
}

/// `GET path` on the operations endpoint: (status code, body).
async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connecting to the operations endpoint {addr}: {e}"));
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Polls `GET path` until `check(status, body)` holds, sending a paris record to the scorer on
/// every round and checking it scores with `version`.
async fn until_endpoint(
    scorer: &mut ScorerProcess,
    addr: &str,
    path: &str,
    version: i64,
    what: &str,
    check: impl Fn(u16, &str) -> bool,
) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert_eq!(score_paris(scorer).await, version);
        let (status, body) = http_get(addr, path).await;
        if check(status, &body) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen within {DEADLINE:?}: {status} {body}"
        );
        tokio::time::sleep(REFRESH).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_score_process_reports_the_outage_on_its_endpoint_and_catches_up() {
    let node = CqlTestNode::start().await;
    let store = format!("cql://{}/keyscore", node.addr());
    keyscore(&store, &["init"]).await;
    for (key, v) in [("paris", 1), ("paris", 2), ("_default", 1)] {
        let file = repo_path(&format!("seed/models/{key}/v{v}.json"));
        keyscore(
            &store,
            &[
                "upload",
                "--key",
                key,
                "--version",
                &v.to_string(),
                file.to_str().unwrap(),
            ],
        )
        .await;
    }
    keyscore(&store, &["activate", "--key", "paris", "--version", "1"]).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ops = format!("127.0.0.1:{port}");
    let mut scorer =
        ScorerProcess::start_with(&store, REFRESH.as_millis() as u64, &["--ops-listen", &ops]);
    until_endpoint(&mut scorer, &ops, "/readyz", 1, "ready", |status, _| {
        status == 200
    })
    .await;

    node.set_fault(Fault::Unavailable);
    until_endpoint(
        &mut scorer,
        &ops,
        "/readyz",
        1,
        "not ready during the outage",
        |status, _| status == 503,
    )
    .await;
    let (_, metrics) = http_get(&ops, "/metrics").await;
    assert!(metrics.contains("keyscore_store_up 0"), "{metrics}");

    activate_paris_v2_behind_the_fault(&node);
    node.clear_fault();
    let deadline = Instant::now() + DEADLINE;
    while score_paris(&mut scorer).await != 2 {
        assert!(
            Instant::now() < deadline,
            "paris v2 never served after the outage"
        );
        tokio::time::sleep(REFRESH).await;
    }
    until_endpoint(
        &mut scorer,
        &ops,
        "/readyz",
        2,
        "ready again",
        |status, _| status == 200,
    )
    .await;
    let (_, metrics) = http_get(&ops, "/metrics").await;
    assert!(metrics.contains("keyscore_store_up 1"), "{metrics}");
    assert!(
        scorer.dead_letters().is_empty(),
        "{:?}",
        scorer.dead_letters()
    );
    scorer.finish().await;
}
