//! Operations: the metrics, health and status endpoints; canary and shadow versions through the
//! scorer and the CLI; secrets kept out of the logs.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use keyscore::{
    ops::{Ops, OpsConfig},
    registry::{ModelRegistry, RegistryConfig},
    rollout::in_canary,
    store::{Canary, EmbeddedModelStore, ModelStore},
    stream::{kafka::GroupState, Input, Metrics, Outcome, RecordFormat, Scorer},
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

fn spec(intercept: f64) -> String {
    format!(
        r#"{{"format_version":1,"features":["distance_km","items"],"model":{{"kind":"linear","coefficients":[2.0,0.5],"intercept":{intercept}}},"output":{{"type":"regression"}}}}"#
    )
}

fn record(i: usize, key: &str) -> String {
    format!(
        r#"{{"id":"r-{i}","city":"{key}","distance_km":{}.5,"items":{}}}"#,
        i % 13,
        i % 5
    )
}

struct Setup {
    dir: tempfile::TempDir,
    store: Arc<EmbeddedModelStore>,
}

impl Setup {
    /// A store where each key has v1 (intercept 10) active and v2 (intercept 13) stored.
    async fn new(keys: &[&str]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedModelStore::open(dir.path().join("models.db")).unwrap());
        for key in keys {
            store.put_version(key, Some(1), &spec(10.0)).await.unwrap();
            store.put_version(key, Some(2), &spec(13.0)).await.unwrap();
            store.activate(key, 1).await.unwrap();
        }
        Setup { dir, store }
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("models.db").display())
    }

    fn registry(&self) -> Arc<ModelRegistry> {
        Arc::new(ModelRegistry::new(
            self.store.clone() as Arc<dyn ModelStore>,
            RegistryConfig::default(),
        ))
    }
}

async fn score(scorer: &Scorer, lines: &[String]) -> keyscore::stream::Scoring {
    let inputs: Vec<Input<'_>> = lines
        .iter()
        .map(|l| Input {
            payload: l.as_bytes(),
            key: None,
        })
        .collect();
    scorer.score(&inputs, None).await
}

/// GET `path`: (status code, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the operations endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

fn status(addr: SocketAddr) -> Value {
    let (code, body) = get(addr, "/status.json");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn key<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == name)
        .unwrap_or_else(|| panic!("{name} not in {status:#}"))
}

async fn start_ops(
    registry: &Arc<ModelRegistry>,
    metrics: &Arc<Metrics>,
    top_keys: usize,
) -> (Arc<Ops>, SocketAddr, CancellationToken) {
    start_ops_with_group(registry, metrics, None, top_keys).await
}

async fn start_ops_with_group(
    registry: &Arc<ModelRegistry>,
    metrics: &Arc<Metrics>,
    group: Option<Arc<GroupState>>,
    top_keys: usize,
) -> (Arc<Ops>, SocketAddr, CancellationToken) {
    let ops = Arc::new(Ops::new(
        Arc::clone(registry),
        Arc::clone(metrics),
        group,
        OpsConfig {
            listen: String::new(),
            top_keys,
            // The tests scan explicitly.
            store_scan_interval_ms: 3_600_000,
        },
    ));
    let cancel = CancellationToken::new();
    let addr = ops.start("127.0.0.1:0", cancel.clone()).await.unwrap();
    (ops, addr, cancel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_status_report_what_was_scored_and_version_lag() {
    let s = Setup::new(&["paris", "rome"]).await;
    let registry = s.registry();
    let metrics = Arc::new(Metrics::default());
    let scorer = Scorer::new(Arc::clone(&registry), RecordFormat::default())
        .with_metrics(Arc::clone(&metrics));
    let (ops, addr, _cancel) = start_ops(&registry, &metrics, 20).await;

    let mut lines: Vec<String> = (0..10).map(|i| record(i, "paris")).collect();
    lines.extend((10..15).map(|i| record(i, "rome")));
    lines.push("not json".into());
    lines.push("{\"city\":".into());
    lines.push(r#"{"id":"r-99","city":"paris","items":2}"#.into());
    score(&scorer, &lines).await;
    ops.scan_store().await;

    assert_eq!(get(addr, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(get(addr, "/readyz"), (200, "ready\n".to_string()));
    assert_eq!(get(addr, "/nope").0, 404);
    let (code, text) = get(addr, "/metrics");
    assert_eq!(code, 200);
    for line in [
        "keyscore_records_in_total 18",
        "keyscore_records_scored_total 15",
        "keyscore_dead_letters_total{reason=\"not_json\"} 2",
        "keyscore_dead_letters_total{reason=\"missing_feature\"} 1",
        "keyscore_dead_letters_total{reason=\"no_model\"} 0",
        // Records that reached a model: the scored ones and the one missing a feature.
        "keyscore_scoring_duration_seconds_count 16",
        "keyscore_key_records_total{key=\"paris\"} 10",
        "keyscore_key_records_total{key=\"rome\"} 5",
        "keyscore_key_served_version{key=\"paris\"} 1",
        "keyscore_key_version_lag{key=\"paris\"} 0",
        "keyscore_keys_lagging 0",
        "keyscore_cache_keys 2",
        "keyscore_cache_misses_total 2",
        "keyscore_store_up 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }

    let st = status(addr);
    assert_eq!(st["ready"], true);
    assert_eq!(st["totals"]["scored"], 15);
    let paris = key(&st, "paris");
    assert_eq!(paris["active_version"], 1);
    assert_eq!(paris["served_version"], 1);
    assert_eq!(paris["records"], 10);
    assert_eq!(paris["dead_letters"], 1);
    assert_eq!(paris["scores"]["n"], 10);
    assert_eq!(
        paris["scores"]["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .sum::<u64>(),
        10
    );
    let reasons: Vec<&str> = st["recent_dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"not_json") && reasons.contains(&"missing_feature"));

    // The store says v2, this process still serves v1: the key lags until the watcher swaps.
    s.store.activate("paris", 2).await.unwrap();
    ops.scan_store().await;
    let (_, text) = get(addr, "/metrics");
    assert!(
        text.contains("keyscore_key_version_lag{key=\"paris\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("keyscore_key_active_version{key=\"paris\"} 2\n"));
    assert!(text.contains("keyscore_keys_lagging 1\n"));
    assert_eq!(key(&status(addr), "paris")["lagging"], true);
    registry.poll().await.unwrap();
    ops.scan_store().await;
    let (_, text) = get(addr, "/metrics");
    assert!(
        text.contains("keyscore_key_version_lag{key=\"paris\"} 0\n"),
        "{text}"
    );
    assert!(text.contains("keyscore_model_swaps_total 1\n"));
    let st = status(addr);
    let paris = key(&st, "paris");
    assert_eq!(paris["served_version"], 2);
    assert_eq!(paris["last_swap"]["from"], 1);
    assert_eq!(paris["last_swap"]["to"], 2);
    assert_eq!(st["swaps"][0]["key"], "paris");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_series_cover_only_the_top_keys_and_lagging_keys() {
    let keys = ["k0", "k1", "k2", "k3", "k4"];
    let s = Setup::new(&keys).await;
    let registry = s.registry();
    let metrics = Arc::new(Metrics::default());
    let scorer = Scorer::new(Arc::clone(&registry), RecordFormat::default())
        .with_metrics(Arc::clone(&metrics));
    let (ops, addr, _cancel) = start_ops(&registry, &metrics, 2).await;
    let mut lines = Vec::new();
    for (n, k) in keys.iter().enumerate() {
        lines.extend((0..(10 - n)).map(|i| record(i, k)));
    }
    score(&scorer, &lines).await;
    ops.scan_store().await;
    let (_, text) = get(addr, "/metrics");
    let labelled = |text: &str, k: &str| text.contains(&format!("{{key=\"{k}\"}}"));
    assert!(labelled(&text, "k0") && labelled(&text, "k1"), "{text}");
    for k in ["k2", "k3", "k4"] {
        assert!(!labelled(&text, k), "{k} has series:\n{text}");
    }
    // A lagging key is exported whatever its traffic.
    s.store.activate("k4", 2).await.unwrap();
    ops.scan_store().await;
    let (_, text) = get(addr, "/metrics");
    assert!(
        text.contains("keyscore_key_version_lag{key=\"k4\"} 1\n"),
        "{text}"
    );
    assert!(!labelled(&text, "k2") && !labelled(&text, "k3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_is_ready_only_while_it_holds_an_assignment() {
    let s = Setup::new(&["paris"]).await;
    let registry = s.registry();
    let metrics = Arc::new(Metrics::default());
    let (_ops, addr, _cancel) = start_ops(&registry, &metrics, 20).await;
    assert_eq!(get(addr, "/readyz").0, 200, "not a consumer: ready");
    let group = Arc::new(GroupState::default());
    let (_ops, addr, _cancel) =
        start_ops_with_group(&registry, &metrics, Some(Arc::clone(&group)), 20).await;
    let (code, body) = get(addr, "/readyz");
    assert_eq!(code, 503);
    assert!(body.contains("no partitions assigned"), "{body}");
    group.partitions_assigned(&[("records".into(), 0), ("records".into(), 1)]);
    group.set_consumer_lag([(("records".into(), 1), 42), (("other".into(), 0), 7)]);
    assert_eq!(get(addr, "/readyz").0, 200);
    let (_, text) = get(addr, "/metrics");
    assert!(text.contains("keyscore_partitions_assigned 2\n"), "{text}");
    assert!(
        text.contains("keyscore_consumer_lag{partition=\"1\",topic=\"records\"} 42\n"),
        "{text}"
    );
    assert!(
        !text.contains("topic=\"other\""),
        "lag of an unassigned partition"
    );
    group.partitions_revoked(&[("records".into(), 0), ("records".into(), 1)]);
    assert_eq!(get(addr, "/readyz").0, 503);
}

fn outputs(scoring: &keyscore::stream::Scoring) -> Vec<Value> {
    scoring
        .outcomes
        .iter()
        .map(|o| match o {
            Outcome::Scored(s) => {
                let mut out = Vec::new();
                s.encode_into(&mut out);
                serde_json::from_slice(&out).unwrap()
            }
            Outcome::Rejected(r) => panic!("rejected: {} {}", r.reason, r.message),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_scores_the_same_share_of_records_in_every_process_until_promoted() {
    const N: usize = 2000;
    let s = Setup::new(&["paris"]).await;
    let lines: Vec<String> = (0..N).map(|i| record(i, "paris")).collect();
    // Process A loaded paris before the canary started; it learns of it from the feed.
    let a = Scorer::new(s.registry(), RecordFormat::default());
    let before = outputs(&score(&a, &lines[..1]).await);
    assert_eq!(before[0]["model_version"], 1);
    a.registry().poll().await.unwrap();
    s.store
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
    a.registry().poll().await.unwrap();
    // Process B starts after the canary started.
    let b = Scorer::new(s.registry(), RecordFormat::default());
    let out_a = outputs(&score(&a, &lines).await);
    let out_b = outputs(&score(&b, &lines).await);
    let mut canaries = 0;
    for (i, (x, y)) in out_a.iter().zip(&out_b).enumerate() {
        let expected = in_canary(format!("\"r-{i}\"").as_bytes(), 0.3);
        for out in [x, y] {
            if expected {
                assert_eq!(out["model_version"], 2, "{out}");
                assert_eq!(out["canary"], true, "{out}");
            } else {
                assert_eq!(out["model_version"], 1, "{out}");
                assert!(out.get("canary").is_none(), "{out}");
            }
        }
        canaries += usize::from(expected);
    }
    assert!(
        (N * 25 / 100..N * 35 / 100).contains(&canaries),
        "{canaries} of {N} records went to a 30% canary"
    );

    s.store.promote("paris").await.unwrap();
    a.registry().poll().await.unwrap();
    for out in outputs(&score(&a, &lines).await) {
        assert_eq!(out["model_version"], 2);
        assert!(out.get("canary").is_none(), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_scores_the_same_records_on_the_side_and_reports_divergence() {
    let s = Setup::new(&["paris", "rome"]).await;
    let registry = s.registry();
    let metrics = Arc::new(Metrics::default());
    let scorer = Scorer::new(Arc::clone(&registry), RecordFormat::default())
        .with_metrics(Arc::clone(&metrics));
    s.store.set_shadow("paris", Some(2)).await.unwrap();
    let mut lines: Vec<String> = (0..100).map(|i| record(i, "paris")).collect();
    lines.extend((100..120).map(|i| record(i, "rome")));
    let scoring = score(&scorer, &lines).await;
    for out in outputs(&scoring) {
        assert_eq!(
            out["model_version"], 1,
            "a shadow output reached the main output"
        );
        assert!(out.get("shadow").is_none());
    }
    assert_eq!(scoring.shadows.len(), 100);
    for (i, shadow) in &scoring.shadows {
        assert!(*i < 100, "a rome record was shadowed");
        assert!(shadow.shadow);
        assert_eq!(shadow.model.version, 2);
        let mut text = Vec::new();
        shadow.encode_into(&mut text);
        assert!(String::from_utf8(text).unwrap().contains("\"shadow\":true"));
    }
    let (_ops, addr, _cancel) = start_ops(&registry, &metrics, 20).await;
    let st = status(addr);
    let paris = key(&st, "paris");
    assert_eq!(paris["shadow"]["version"], 2);
    assert_eq!(paris["shadow_divergence"]["compared"], 100);
    // v2's intercept is 3 above v1's, with the same coefficients.
    let mad = paris["shadow_divergence"]["mean_abs_diff"]
        .as_f64()
        .unwrap();
    assert!((mad - 3.0).abs() < 1e-9, "{mad}");
    assert!(key(&st, "rome")["shadow_divergence"].is_null());
    assert_eq!(st["totals"]["shadow"], 100);
    let (_, text) = get(addr, "/metrics");
    assert!(
        text.contains("keyscore_key_shadow_mean_abs_diff{key=\"paris\"} 3\n"),
        "{text}"
    );

    s.store.set_shadow("paris", None).await.unwrap();
    registry.poll().await.unwrap();
    registry.poll().await.unwrap();
    assert!(score(&scorer, &lines).await.shadows.is_empty());
}

fn keyscore(store_url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keyscore"))
        .args(args)
        .env("KEYSCORE_STORE", store_url)
        .env_remove("KEYSCORE_LOG")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_starts_and_ends_canaries_and_shadows_and_score_writes_shadows_aside() {
    let s = Setup::new(&["paris"]).await;
    let url = s.url();
    let ok = |args: &[&str]| {
        let out = keyscore(&url, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let refused = keyscore(
        &url,
        &["canary", "--key", "paris", "--version", "2", "--share", "2"],
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("invalid canary share"));
    ok(&[
        "canary",
        "--key",
        "paris",
        "--version",
        "2",
        "--share",
        "0.5",
    ]);
    let rollout = s.store.rollout("paris").await.unwrap().unwrap();
    assert_eq!(rollout.canary.map(|c| c.version), Some(2));
    // With a canary running, rollback ends it and keeps the active version.
    assert!(ok(&["rollback", "--key", "paris"]).contains("ended the canary"));
    assert_eq!(
        s.store.rollout("paris").await.unwrap().unwrap().canary,
        None
    );
    assert_eq!(
        s.store
            .active("paris")
            .await
            .unwrap()
            .unwrap()
            .model
            .version,
        1
    );
    ok(&[
        "canary",
        "--key",
        "paris",
        "--version",
        "2",
        "--share",
        "0.5",
    ]);
    ok(&["promote", "--key", "paris"]);
    assert_eq!(
        s.store
            .active("paris")
            .await
            .unwrap()
            .unwrap()
            .model
            .version,
        2
    );
    // Without a canary, rollback keeps its meaning.
    assert!(ok(&["rollback", "--key", "paris"]).contains("rolled back paris to v1"));

    ok(&["shadow", "--key", "paris", "--version", "2"]);
    let input = s.dir.path().join("in.jsonl");
    let lines: Vec<String> = (0..50).map(|i| record(i, "paris")).collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let (out, shadow) = (
        s.dir.path().join("out.jsonl"),
        s.dir.path().join("shadow.jsonl"),
    );
    let run = keyscore(
        &url,
        &[
            "score",
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--shadow-output",
            shadow.to_str().unwrap(),
            "--summary",
        ],
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let main = std::fs::read_to_string(&out).unwrap();
    assert_eq!(main.lines().count(), 50);
    assert!(!main.contains("shadow"), "{main}");
    let side = std::fs::read_to_string(&shadow).unwrap();
    assert_eq!(side.lines().count(), 50);
    assert!(side
        .lines()
        .all(|l| l.contains("\"shadow\":true") && l.contains("\"model_version\":2")));
    assert!(
        stderr.contains("paris") && stderr.contains("mean absolute difference 3.000000"),
        "{stderr}"
    );
    ok(&["shadow", "--key", "paris", "--clear"]);
    assert!(s.store.rollout("paris").await.unwrap().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs() {
    const CQL_SECRET: &str = "cql-Secret-7f3a";
    const SASL_SECRET: &str = "sasl-Secret-91bc";
    // A CQL store that cannot be reached: serve fails fast, at debug level, in JSON.
    let out = Command::new(env!("CARGO_BIN_EXE_keyscore"))
        .args(["--log-format", "json", "serve"])
        .env("KEYSCORE_STORE", "cql://127.0.0.1:1/keyscore")
        .env("KEYSCORE_CQL_USERNAME", "svc")
        .env("KEYSCORE_CQL_PASSWORD", CQL_SECRET)
        .env("KEYSCORE__KAFKA__OPTIONS__SASL.PASSWORD", SASL_SECRET)
        .env("KEYSCORE__OPS__LISTEN", "")
        .env("KEYSCORE_LOG", "debug")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Configuration."), "{stderr}");
    assert!(
        !stderr.contains(CQL_SECRET) && !stderr.contains(SASL_SECRET),
        "{stderr}"
    );

    // A SASL consumer against an address where no broker listens: it runs until stopped.
    let s = Setup::new(&["paris"]).await;
    let log = s.dir.path().join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyscore"))
        .args(["--log-format", "json", "serve"])
        .env("KEYSCORE_STORE", s.url())
        .env("KEYSCORE_CQL_PASSWORD", CQL_SECRET)
        .env("KEYSCORE__KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
        .env("KEYSCORE__KAFKA__CREATE_TOPICS", "false")
        .env(
            "KEYSCORE__KAFKA__OPTIONS__SECURITY.PROTOCOL",
            "SASL_PLAINTEXT",
        )
        .env("KEYSCORE__KAFKA__OPTIONS__SASL.MECHANISMS", "PLAIN")
        .env("KEYSCORE__KAFKA__OPTIONS__SASL.USERNAME", "svc")
        .env("KEYSCORE__KAFKA__OPTIONS__SASL.PASSWORD", SASL_SECRET)
        .env("KEYSCORE__OPS__LISTEN", "127.0.0.1:0")
        .env("KEYSCORE_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Wait until the consumer has joined and its SASL connection attempt has failed and been
    // reported through the pipeline: the paths that could log the options have run.
    let deadline = Instant::now() + Duration::from_secs(30);
    for needle in ["Joining the consumer group.", "Consumer error."] {
        while !std::fs::read_to_string(&log).unwrap().contains(needle) {
            assert!(child.try_wait().unwrap().is_none(), "serve exited early");
            assert!(
                Instant::now() < deadline,
                "serve did not log {needle:?}:\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    child.wait().unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("sasl.password"), "{stderr}");
    for line in stderr.lines() {
        assert!(
            !line.contains(CQL_SECRET) && !line.contains(SASL_SECRET),
            "a secret in the log: {line}"
        );
    }
}

/// The Python interpreter with the test suite's packages (`KEYSCORE_PYTHON`, as
/// `tests/run-all.sh` sets it), else `python3`.
fn python() -> String {
    std::env::var("KEYSCORE_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs `program args` with `input` on stdin: (success, stdout, stderr).
fn run_with_stdin(program: &str, args: &[&str], input: &str) -> (bool, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e}; tests/run-all.sh installs it (promtool comes with Debian's prometheus package)")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Parses Prometheus text with the Prometheus project's own Python parser and prints
/// `name type` per family and `sample labels value` per sample, one per line.
const PARSE_METRICS: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    print("family", family.name, family.type)
    for s in family.samples:
        print("sample", s.name, json.dumps(s.labels, sort_keys=True), float(s.value))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_scrape_passes_promtool_and_parses_with_the_prometheus_parser() {
    let s = Setup::new(&["paris", "rome"]).await;
    let registry = s.registry();
    let metrics = Arc::new(Metrics::default());
    let group = Arc::new(GroupState::default());
    let scorer = Scorer::new(Arc::clone(&registry), RecordFormat::default())
        .with_metrics(Arc::clone(&metrics));
    let (ops, addr, _cancel) =
        start_ops_with_group(&registry, &metrics, Some(Arc::clone(&group)), 20).await;
    group.partitions_assigned(&[("records".into(), 0)]);
    group.set_consumer_lag([(("records".into(), 0), 3)]);
    let mut lines: Vec<String> = (0..6).map(|i| record(i, "paris")).collect();
    lines.extend((6..9).map(|i| record(i, "rome")));
    lines.push("not json".into());
    score(&scorer, &lines).await;
    ops.scan_store().await;
    let (code, text) = get(addr, "/metrics");
    assert_eq!(code, 200);

    let (ok, stdout, stderr) = run_with_stdin("promtool", &["check", "metrics"], &text);
    assert!(
        ok && stdout.trim().is_empty(),
        "promtool check metrics found problems:\n{stdout}{stderr}\nin:\n{text}"
    );

    let (ok, parsed, stderr) = run_with_stdin(&python(), &["-c", PARSE_METRICS], &text);
    assert!(
        ok,
        "the Prometheus parser refused the scrape (is prometheus-client installed for it?):\n{stderr}"
    );
    // Every metric the shipped alert rules and dashboard name is in a real scrape.
    let rules = std::fs::read_to_string(alert_rules()).expect("deploy/prometheus/alerts.yml");
    let dashboard = std::fs::read_to_string(dashboard()).expect("deploy/grafana/keyscore.json");
    let named = metric_names(&rules);
    assert!(named.len() >= 5, "{named:?}");
    let on_dashboard = metric_names(&dashboard);
    assert!(on_dashboard.len() >= 15, "{on_dashboard:?}");
    for name in named.iter().chain(&on_dashboard) {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{"))),
            "alerts.yml or the dashboard names {name}, which the scrape does not have:\n{text}"
        );
    }

    for line in [
        "family keyscore_records_in counter",
        "sample keyscore_records_in_total {} 10.0",
        "sample keyscore_records_scored_total {} 9.0",
        r#"sample keyscore_dead_letters_total {"reason": "not_json"} 1.0"#,
        "family keyscore_scoring_duration_seconds histogram",
        "sample keyscore_scoring_duration_seconds_count {} 9.0",
        r#"sample keyscore_key_records_total {"key": "paris"} 6.0"#,
        r#"sample keyscore_consumer_lag {"partition": "0", "topic": "records"} 3.0"#,
        "sample keyscore_partitions_assigned {} 1.0",
        "sample keyscore_store_up {} 1.0",
    ] {
        assert!(
            parsed.lines().any(|l| l == line),
            "no {line:?} in the parsed scrape:\n{parsed}"
        );
    }
}

/// The shipped alert rules.
fn alert_rules() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml")
}

/// The `keyscore_*` metric names a text mentions, once each.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("keyscore_"))
        .map(str::to_string)
        .collect()
}

/// The alert rules the README recommends pass `promtool check rules` and their unit tests
/// (each fires on the series it is about, after its `for`, and not on a healthy instance).
#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let rules = alert_rules();
    let dir = rules.parent().unwrap();
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run promtool: {e}; tests/run-all.sh installs it"));
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The shipped Grafana dashboard.
fn dashboard() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/keyscore.json")
}

/// Every query of the Grafana dashboard is valid PromQL: each, with Grafana's
/// `$__rate_interval` given a value, is checked by `promtool` as a recording rule; every panel
/// has a query, a title and a unique id.
#[test]
fn dashboard_queries_are_valid_promql() {
    let text = std::fs::read_to_string(dashboard()).expect("deploy/grafana/keyscore.json");
    let json: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = json["panels"].as_array().expect("panels");
    let mut ids = std::collections::BTreeSet::new();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_i64().expect("an id")),
            "duplicate panel id"
        );
        assert!(!panel["title"].as_str().unwrap_or_default().is_empty());
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{panel}");
        for (i, target) in targets.iter().enumerate() {
            let expr = target["expr"].as_str().expect("expr");
            let expr = expr.replace("$__rate_interval", "5m");
            rules.push_str(&format!(
                "      - record: panel_{}_{i}\n        expr: {}\n",
                panel["id"],
                serde_json::to_string(&expr).unwrap()
            ));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard_rules.yml");
    std::fs::write(&path, &rules).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run promtool: {e}; tests/run-all.sh installs it"));
    assert!(
        out.status.success(),
        "promtool refused a dashboard query:\n{}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
