//! The data scientist's path on the CQL store, with the real clients: `cqlsh -f
//! seed/activate.cql` and `seed/upload_model.py` (Python `cassandra-driver`) change the models
//! of a running `keyscore score` process, on the project's CQL test node.
//!
//! Needs `cqlsh` and a Python with the project's packages: `KEYSCORE_PYTHON_BIN` and
//! `KEYSCORE_PYTHON` (see `tests/run-all.sh`); the tests fail naming them when they are missing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keyscore::model::spec_checksum;
use keyscore_testkit::cqlnode::clients::{self, keyscore, repo_path, ScorerProcess};
use keyscore_testkit::cqlnode::CqlTestNode;
use scylla::value::{CqlDate, CqlTimestamp};
use serde_json::Value;

/// The features of every seed model.
use keyscore::synth::FEATURES;

/// The watcher's poll interval in the scorer processes.
const REFRESH_MS: u64 = 200;

/// How long a change may take to reach a running scorer before the test fails: many polls.
const SWAP_DEADLINE: Duration = Duration::from_secs(30);

/// How long the scorer may take to answer one record.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// A node with the keyscore schema (`keyscore init`) and the store URL for it.
async fn node_with_store() -> (CqlTestNode, String) {
    let node = CqlTestNode::start().await;
    let store = format!("cql://{}/keyscore", node.addr());
    keyscore(&store, &["init"]).await;
    (node, store)
}

/// Uploads the seed models of `key` (versions `versions`) and activates `active`; uploads and
/// activates `_default`.
async fn seed(store: &str, key: &str, versions: &[i64], active: i64) {
    for v in versions {
        let file = repo_path(&format!("seed/models/{key}/v{v}.json"));
        let out = keyscore(store, &["upload", "--key", key, &file.to_string_lossy()]).await;
        assert!(out.contains(&format!("uploaded {key} v{v}")), "{out}");
    }
    keyscore(
        store,
        &["activate", "--key", key, "--version", &active.to_string()],
    )
    .await;
    let default = repo_path("seed/models/_default/v1.json");
    keyscore(
        store,
        &[
            "upload",
            "--key",
            "_default",
            "--activate",
            &default.to_string_lossy(),
        ],
    )
    .await;
}

/// The sample records of `city` from `seed/records.jsonl` whose eight features are numbers
/// (the file also holds deliberately bad records).
fn records_of(city: &str) -> Vec<serde_json::Map<String, Value>> {
    let text = std::fs::read_to_string(repo_path("seed/records.jsonl")).expect("seed records");
    let out: Vec<_> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| match v {
            Value::Object(m)
                if m.get("city") == Some(&Value::from(city))
                    && FEATURES
                        .iter()
                        .all(|f| m.get(*f).is_some_and(Value::is_number)) =>
            {
                Some(m)
            }
            _ => None,
        })
        .collect();
    assert!(out.len() > 100, "seed/records.jsonl has {city} records");
    out
}

/// Sends records of one city with fresh ids, remembering what was sent.
struct Feeder {
    records: Vec<serde_json::Map<String, Value>>,
    sent: BTreeMap<String, serde_json::Map<String, Value>>,
    prefix: &'static str,
}

impl Feeder {
    fn new(city: &str, prefix: &'static str) -> Feeder {
        Feeder {
            records: records_of(city),
            sent: BTreeMap::new(),
            prefix,
        }
    }

    async fn send(&mut self, scorer: &mut ScorerProcess) {
        let n = self.sent.len();
        let mut record = self.records[n % self.records.len()].clone();
        let id = format!("{}-{n:06}", self.prefix);
        record.insert("id".into(), Value::from(id.clone()));
        scorer
            .send(&Value::Object(record.clone()).to_string())
            .await;
        self.sent.insert(id, record);
    }
}

/// One scored line, as the tests read it.
#[derive(Debug, Clone)]
struct ScoredLine {
    id: String,
    key: String,
    version: i64,
    checksum: String,
    value: f64,
    /// When the test read it.
    seen_at: SystemTime,
    seen: Instant,
}

fn parse_scored(line: &str) -> ScoredLine {
    let v: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not a scored line ({e}): {line}"));
    let field = |name: &str| {
        v.get(name)
            .unwrap_or_else(|| panic!("scored line has no {name}: {line}"))
            .clone()
    };
    ScoredLine {
        id: field("id").as_str().expect("id is text").to_string(),
        key: field("model_key").as_str().expect("model_key").to_string(),
        version: field("model_version").as_i64().expect("model_version"),
        checksum: field("model_checksum")
            .as_str()
            .expect("model_checksum")
            .to_string(),
        value: v["prediction"]["value"].as_f64().unwrap_or(f64::NAN),
        seen_at: SystemTime::now(),
        seen: Instant::now(),
    }
}

/// Checks that every record sent came out once, scored or dead-lettered.
fn assert_nothing_lost(feeder: &Feeder, scored: &[ScoredLine], dead: &[String]) {
    let mut out: BTreeSet<String> = BTreeSet::new();
    for s in scored {
        assert!(out.insert(s.id.clone()), "record {} scored twice", s.id);
    }
    for d in dead {
        let v: Value = serde_json::from_str(d).expect("dead letters are JSON lines");
        let input: Value =
            serde_json::from_str(v["input"].as_str().expect("dead letter input")).unwrap();
        let id = input["id"]
            .as_str()
            .expect("dead-lettered record id")
            .to_string();
        assert!(out.insert(id.clone()), "record {id} came out twice");
    }
    let sent: BTreeSet<String> = feeder.sent.keys().cloned().collect();
    assert_eq!(
        out.len(),
        sent.len(),
        "records in = scored + dead letters ({} scored, {} dead)",
        scored.len(),
        dead.len()
    );
    assert_eq!(out, sent, "the ids out are the ids in");
}

/// The spec literal of `seed/activate.cql`'s INSERT, as the store holds it.
fn activation_spec() -> String {
    let cql = std::fs::read_to_string(repo_path("seed/activate.cql")).expect("seed/activate.cql");
    let start = cql
        .find("'{")
        .expect("a spec literal '{...}' in seed/activate.cql")
        + 1;
    let end = start
        + cql[start..]
            .find("}'")
            .expect("the spec literal ends with }'")
        + 1;
    cql[start..end].replace("''", "'")
}

/// What a linear spec predicts for a record.
fn linear_prediction(spec: &Value, record: &serde_json::Map<String, Value>) -> f64 {
    let features = spec["features"].as_array().expect("features");
    let coefficients = spec["model"]["coefficients"]
        .as_array()
        .expect("coefficients");
    let mut y = spec["model"]["intercept"].as_f64().expect("intercept");
    for (name, c) in features.iter().zip(coefficients) {
        let x = record[name.as_str().expect("feature name")]
            .as_f64()
            .expect("numeric feature");
        y += c.as_f64().expect("coefficient") * x;
    }
    y
}

/// The data scientist's CQL file, run with cqlsh while `keyscore score` is scoring paris
/// records: the scorer switches from v2 to v3 within a few polls, never goes back, scores with
/// exactly the spec in the file, and loses nothing. `keyscore rollback` then returns to v2,
/// the `previous_version` the file wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cqlsh_activation_reaches_a_running_scorer() {
    let cqlsh = clients::python_tool("cqlsh");
    let (node, store) = node_with_store().await;
    seed(&store, "paris", &[1, 2], 2).await;
    let session = node.session().await;

    let mut scorer = ScorerProcess::start(&store, REFRESH_MS);
    let mut feeder = Feeder::new("paris", "ds");
    let mut scored: Vec<ScoredLine> = Vec::new();
    // Warm up: paris and the watcher are loaded and scoring v2.
    for _ in 0..20 {
        feeder.send(&mut scorer).await;
        scored.push(parse_scored(&scorer.next_line(LINE_TIMEOUT).await));
    }
    assert!(scored.iter().all(|s| s.key == "paris" && s.version == 2));

    // cqlsh runs while records keep flowing.
    let file = repo_path("seed/activate.cql");
    let port = node.addr().port().to_string();
    let cqlsh_started = Instant::now();
    let cqlsh_run = tokio::spawn({
        let cqlsh = cqlsh.clone();
        let file = file.to_string_lossy().to_string();
        async move { clients::run_ok(&cqlsh, &["127.0.0.1", &port, "-f", &file], &[]).await }
    });
    let mut cqlsh_run = Some(cqlsh_run);
    let mut cqlsh_done: Option<Instant> = None;
    let mut first_v3: Option<usize> = None;
    let deadline = Instant::now() + clients::CLIENT_TIMEOUT;
    while first_v3.is_none() {
        assert!(
            Instant::now() < deadline,
            "no record was scored by paris v3 within {:?} of starting cqlsh; \
             scorer log:\n{}",
            clients::CLIENT_TIMEOUT,
            scorer.log()
        );
        feeder.send(&mut scorer).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        for line in scorer.ready_lines() {
            let s = parse_scored(&line);
            if s.version == 3 && first_v3.is_none() {
                first_v3 = Some(scored.len());
            }
            scored.push(s);
        }
        if cqlsh_run.as_ref().is_some_and(|t| t.is_finished()) {
            cqlsh_run.take().unwrap().await.expect("cqlsh task");
            cqlsh_done = Some(Instant::now());
        }
    }
    if let Some(t) = cqlsh_run.take() {
        t.await.expect("cqlsh task");
        cqlsh_done = Some(Instant::now());
    }
    let first_v3 = first_v3.unwrap();
    // The activation's own time: the feed row's changed_at (the node's now()).
    let v3 = scored[first_v3].clone();
    let seen_ms = v3.seen_at.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let feed = session
        .query_unpaged(
            "SELECT changed_at, key, version FROM keyscore.model_changes \
             WHERE day = ? AND bucket = 0",
            (CqlDate(
                ((1i64 << 31) + seen_ms.div_euclid(86_400_000)) as u32,
            ),),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let changed_at = feed
        .rows::<(CqlTimestamp, String, i64)>()
        .unwrap()
        .map(Result::unwrap)
        .find(|(_, key, version)| key == "paris" && *version == 3)
        .map(|(at, _, _)| at)
        .expect("the file wrote a change-feed row for paris v3 today");
    let lag_ms = seen_ms - changed_at.0;
    eprintln!(
        "cqlsh ran {:?}; from the activation (the feed row's changed_at) to the first record \
         scored by v3: {lag_ms} ms (refresh interval {REFRESH_MS} ms); from starting cqlsh: {:?}",
        cqlsh_done.map(|d| d - cqlsh_started),
        v3.seen - cqlsh_started,
    );
    assert!(
        (0..SWAP_DEADLINE.as_millis() as i64).contains(&lag_ms),
        "v3 was first served {lag_ms} ms after its activation"
    );

    // Records keep flowing on v3.
    for _ in 0..100 {
        feeder.send(&mut scorer).await;
    }
    // Rollback with keyscore returns to the previous_version the file wrote.
    let out = keyscore(&store, &["rollback", "--key", "paris"]).await;
    let rollback_started = scored.len();
    let deadline = Instant::now() + SWAP_DEADLINE;
    loop {
        for line in scorer.ready_lines() {
            scored.push(parse_scored(&line));
        }
        if scored[rollback_started..].iter().any(|s| s.version == 2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rollback ({out}) did not reach the scorer in {SWAP_DEADLINE:?}"
        );
        feeder.send(&mut scorer).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for line in scorer.finish().await {
        scored.push(parse_scored(&line));
    }
    let dead = scorer.dead_letters();
    assert!(
        dead.is_empty(),
        "no paris record is dead-lettered: {dead:?}"
    );
    assert_nothing_lost(&feeder, &scored, &dead);

    // Versions in output order: v2, then v3 from the first v3 on, then v2 after the rollback.
    let versions: Vec<i64> = scored.iter().map(|s| s.version).collect();
    let last_v3 = versions.iter().rposition(|v| *v == 3).unwrap();
    assert!(
        versions[..first_v3].iter().all(|v| *v == 2),
        "before the activation every record is scored by v2"
    );
    assert!(
        versions[first_v3..=last_v3].iter().all(|v| *v == 3),
        "once v3 scored a record, every later record is scored by v3 until the rollback: \
         {:?}",
        &versions[first_v3..=last_v3]
    );
    assert!(
        last_v3 - first_v3 >= 100,
        "v3 scored the 100 records sent before the rollback"
    );
    assert!(versions[last_v3 + 1..].iter().all(|v| *v == 2));

    // v3 scores with exactly the spec in the file.
    let spec_text = activation_spec();
    let spec: Value = serde_json::from_str(&spec_text).expect("the file's spec is JSON");
    for s in scored.iter().filter(|s| s.version == 3) {
        assert_eq!(
            s.checksum,
            spec_checksum(&spec_text),
            "checksum of {}",
            s.id
        );
        let want = linear_prediction(&spec, &feeder.sent[&s.id]);
        assert!(
            (s.value - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{}: v3 predicted {} but the file's spec gives {want}",
            s.id,
            s.value
        );
    }

    // The CLI sees what cqlsh wrote.
    let list = keyscore(&store, &["list"]).await;
    let paris = list
        .lines()
        .find(|l| l.starts_with("paris "))
        .unwrap_or_else(|| panic!("keyscore list shows paris:\n{list}"));
    assert!(
        paris.contains(" v2 ") && paris.ends_with("v1 v2 v3"),
        "paris is back on v2 with versions 1-3: {paris}"
    );
    let show = keyscore(&store, &["show", "--key", "paris", "--version", "3"]).await;
    assert!(show.contains("kind:      linear"), "{show}");
    assert!(show.contains(&spec_checksum(&spec_text)), "{show}");

    // The file moved the pointer without a history row: history says so, between keyscore's
    // own changes.
    let described = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| {
                l.split("  ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .nth(1)
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    let history = keyscore(&store, &["history", "--key", "paris"]).await;
    assert_eq!(
        described(&history)[..2],
        [
            "rolled back to v2 (was v3)",
            "revision 2 changed without a history row"
        ],
        "{history}"
    );
    // Step 4 of the file, run after cqlsh said [applied] True, records it.
    let port = node.addr().port().to_string();
    let insert = activation_history_insert();
    clients::run_ok(&cqlsh, &["127.0.0.1", &port, "-e", &insert], &[]).await;
    let history = keyscore(&store, &["history", "--key", "paris"]).await;
    assert_eq!(
        described(&history)[..2],
        ["rolled back to v2 (was v3)", "activated v3 (was v2)"],
        "{history}"
    );
    let by_ana = history.lines().nth(1).unwrap();
    assert!(by_ana.trim_end().ends_with("ana"), "{history}");
}

/// The history INSERT that `seed/activate.cql` shows in step 4's comment.
fn activation_history_insert() -> String {
    let cql = std::fs::read_to_string(repo_path("seed/activate.cql")).expect("seed/activate.cql");
    let start = cql
        .find("INSERT INTO keyscore.model_history")
        .expect("step 4 of seed/activate.cql names the history INSERT");
    let end = start + cql[start..].find(';').expect("the INSERT ends with ;") + 1;
    cql[start..end]
        .lines()
        .map(|l| l.trim_start_matches("--").trim())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The file is a compare-and-set: run against a pointer that moved since the revision it
/// names, cqlsh reports `[applied] False` and paris keeps the version another writer set; the
/// feed row it still writes changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_activation_file_is_not_applied() {
    let cqlsh = clients::python_tool("cqlsh");
    let (node, store) = node_with_store().await;
    seed(&store, "paris", &[1, 2], 2).await;
    // Another writer moves paris first: revision 2 (v1), then the file expects revision 1.
    keyscore(&store, &["activate", "--key", "paris", "--version", "1"]).await;
    let port = node.addr().port().to_string();
    let file = repo_path("seed/activate.cql");
    let out = clients::run_client(
        &cqlsh,
        &["127.0.0.1", &port, "-f", &file.to_string_lossy()],
        &[],
    )
    .await;
    assert!(out.success, "cqlsh ran the file: {}", out.stderr);
    assert!(
        out.stdout.contains("False"),
        "cqlsh shows the update did not apply:\n{}",
        out.stdout
    );
    let list = keyscore(&store, &["list"]).await;
    let paris = list.lines().find(|l| l.starts_with("paris ")).unwrap();
    assert!(paris.contains(" v1 "), "paris is still on v1: {paris}");
    let session = node.session().await;
    let (version, previous, revision): (Option<i64>, Option<i64>, Option<i64>) = session
        .query_unpaged(
            "SELECT version, previous_version, revision FROM keyscore.active_models \
             WHERE key = 'paris'",
            (),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!(
        (version, previous, revision),
        (Some(1), Some(2), Some(2)),
        "the pointer is the other writer's, whole"
    );
}

/// `seed/upload_model.py` (Python cassandra-driver and `keyscore_sklearn`) trains, uploads and
/// activates a new paris version while `keyscore score` runs: `keyscore list` and `show` see it
/// and the running scorer switches to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_script_version_reaches_cli_and_running_scorer() {
    let python = clients::python();
    let (node, store) = node_with_store().await;
    seed(&store, "paris", &[1], 1).await;
    let mut scorer = ScorerProcess::start(&store, REFRESH_MS);
    let mut feeder = Feeder::new("paris", "py");
    let mut scored: Vec<ScoredLine> = Vec::new();
    for _ in 0..10 {
        feeder.send(&mut scorer).await;
        scored.push(parse_scored(&scorer.next_line(LINE_TIMEOUT).await));
    }
    assert!(scored.iter().all(|s| s.version == 1));

    let port = node.addr().port().to_string();
    let script = repo_path("seed/upload_model.py");
    let out = clients::run_ok(
        &python,
        &[
            &script.to_string_lossy(),
            "--hosts",
            "127.0.0.1",
            "--port",
            &port,
            "--keyspace",
            "keyscore",
            "--key",
            "paris",
            "--author",
            "ana",
            "--activate",
        ],
        &[],
    )
    .await;
    assert!(
        out.contains("Activated paris version 2 (previously 1)"),
        "{out}"
    );

    let list = keyscore(&store, &["list"]).await;
    let paris = list.lines().find(|l| l.starts_with("paris ")).unwrap();
    assert!(
        paris.contains(" v2 ") && paris.ends_with("v1 v2"),
        "keyscore list: {paris}"
    );
    let show = keyscore(&store, &["show", "--key", "paris"]).await;
    assert!(show.contains("version:   2"), "{show}");
    assert!(show.contains("kind:      random_forest"), "{show}");
    assert!(show.contains("features:  distance_km, items"), "{show}");
    assert!(show.contains("\"author\":\"ana\""), "{show}");
    let spec = keyscore(&store, &["show", "--key", "paris", "--json"]).await;
    let checksum = spec_checksum(spec.trim_end_matches('\n'));

    let deadline = Instant::now() + SWAP_DEADLINE;
    let first_v2 = loop {
        if let Some(i) = scored.iter().position(|s| s.version == 2) {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "the running scorer did not switch to v2 in {SWAP_DEADLINE:?}; its log:\n{}",
            scorer.log()
        );
        feeder.send(&mut scorer).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        scored.extend(scorer.ready_lines().iter().map(|l| parse_scored(l)));
    };
    for _ in 0..50 {
        feeder.send(&mut scorer).await;
    }
    scored.extend(scorer.finish().await.iter().map(|l| parse_scored(l)));
    let dead = scorer.dead_letters();
    assert_nothing_lost(&feeder, &scored, &dead);
    assert!(dead.is_empty(), "{dead:?}");
    assert!(scored[first_v2..].iter().all(|s| s.version == 2));
    assert!(scored[first_v2..].iter().all(|s| s.checksum == checksum));
    assert!(scored.len() - first_v2 >= 50);
}
