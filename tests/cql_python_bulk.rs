//! The Python package's bulk path, with the real clients: `upload_many` and `activate_many`
//! (cassandra-driver, concurrent) on the project's CQL test node, read back with the `keyscore`
//! CLI, the scylla driver and a running `keyscore score`; and `upload_many_embedded` (the
//! `keyscore upload --jsonl` CLI) on a fresh embedded store. The Python side is
//! `tests/data/python_bulk.py`, run with this checkout's `python/` package.
//!
//! Needs a Python with the project's packages: `KEYSCORE_PYTHON` (see `tests/run-all.sh`); the
//! tests fail naming it when it is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keyscore::model::spec_sha256;
use keyscore_testkit::cqlnode::clients::{self, keyscore, keyscore_bin, repo_path, ScorerProcess};
use keyscore_testkit::cqlnode::CqlTestNode;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::value::{CqlDate, CqlTimestamp};
use serde_json::Value;

/// Keys of the first bulk upload, `k0000` to `k1999`.
const KEYS: usize = 2000;
/// The keys with bad specs in it, which the package refuses.
const BAD: [&str; 2] = ["k0700", "k1300"];
/// The key whose spec is over 1 MiB, stored in chunks.
const BIG: &str = "k1000";
/// Keys moved to v2 by `activate_many`: `k0000` to `k0499`.
const MOVED: usize = 500;

/// The watcher's poll interval in the scorer process.
const REFRESH_MS: u64 = 200;
/// How long a change may take to reach the running scorer: many polls.
const SWAP_DEADLINE: Duration = Duration::from_secs(30);
/// How long the scorer may take to answer one record.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// What one Python call reported.
#[derive(Debug)]
struct Report {
    stored: BTreeMap<String, i64>,
    activated: BTreeMap<String, i64>,
    failures: BTreeMap<String, String>,
    raw: Value,
}

/// Runs `tests/data/python_bulk.py ARGS` with this checkout's package and parses its report.
async fn python_bulk(args: &[&str]) -> Report {
    let script = repo_path("tests/data/python_bulk.py");
    let package = repo_path("python");
    let mut all = vec![script.to_str().expect("a UTF-8 path")];
    all.extend_from_slice(args);
    let out = clients::run_ok(
        &clients::python(),
        &all,
        &[("PYTHONPATH", package.to_str().expect("a UTF-8 path"))],
    )
    .await;
    let raw: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("python_bulk.py {args:?} printed no report ({e}):\n{out}"));
    let map = |name: &str| -> BTreeMap<String, Value> {
        serde_json::from_value(raw[name].clone())
            .unwrap_or_else(|e| panic!("report field {name} ({e}): {raw}"))
    };
    let versions = |name: &str| {
        map(name)
            .into_iter()
            .map(|(k, v)| (k, v.as_i64().expect("a version number")))
            .collect()
    };
    Report {
        stored: versions("stored"),
        activated: versions("activated"),
        failures: map("failures")
            .into_iter()
            .map(|(k, v)| (k, v.as_str().expect("a reason").to_string()))
            .collect(),
        raw,
    }
}

fn key(i: usize) -> String {
    format!("k{i:04}")
}

/// `keyscore list` as key -> (active version, stored versions), e.g. `("v1", "v1 v2")`.
fn parse_list(list: &str) -> BTreeMap<String, (String, String)> {
    let mut lines = list.lines();
    let header = lines.next().expect("a header line");
    assert!(header.starts_with("key"), "{header}");
    lines
        .map(|line| {
            let mut parts = line.split_whitespace();
            let key = parts.next().expect("a key").to_string();
            let active = parts.next().expect("the active version").to_string();
            (key, (active, parts.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

/// Every pointer: key -> (version, previous_version, revision).
async fn pointers(session: &Session) -> BTreeMap<String, (Option<i64>, Option<i64>, Option<i64>)> {
    let rows = session
        .query_unpaged(
            "SELECT key, version, previous_version, revision FROM keyscore.active_models",
            (),
        )
        .await
        .expect("reading active_models")
        .into_rows_result()
        .expect("rows");
    rows.rows::<(String, Option<i64>, Option<i64>, Option<i64>)>()
        .expect("typed rows")
        .map(|row| {
            let (key, version, previous, revision) = row.expect("a row");
            (key, (version, previous, revision))
        })
        .collect()
}

/// Every change-feed row of yesterday to tomorrow (UTC): (key, version, revision), sorted.
async fn feed(session: &Session) -> Vec<(String, i64, i64)> {
    let today = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as i64
        / 86_400_000;
    let mut out = Vec::new();
    for day in today - 1..=today + 1 {
        for bucket in 0..16 {
            let rows = session
                .query_unpaged(
                    "SELECT changed_at, key, version, revision FROM keyscore.model_changes \
                     WHERE day = ? AND bucket = ?",
                    (CqlDate(((1i64 << 31) + day) as u32), bucket),
                )
                .await
                .expect("reading model_changes")
                .into_rows_result()
                .expect("rows");
            for row in rows
                .rows::<(CqlTimestamp, String, i64, Option<i64>)>()
                .expect("typed rows")
            {
                let (_, key, version, revision) = row.expect("a row");
                out.push((
                    key,
                    version,
                    revision.expect("the package stamps revisions"),
                ));
            }
        }
    }
    out.sort();
    out
}

/// Fails unless `got` and `want` hold the same items (rows, keys, key-version pairs), naming
/// a few of those that differ rather than printing thousands.
fn assert_same<T: Ord + std::fmt::Debug>(
    got: impl IntoIterator<Item = T>,
    want: impl IntoIterator<Item = T>,
    what: &str,
) {
    let (got, want): (Vec<T>, Vec<T>) = (got.into_iter().collect(), want.into_iter().collect());
    let (got_set, want_set): (BTreeSet<&T>, BTreeSet<&T>) =
        (got.iter().collect(), want.iter().collect());
    if got_set == want_set && got.len() == want.len() {
        return;
    }
    let missing: Vec<_> = want_set.difference(&got_set).take(5).collect();
    let extra: Vec<_> = got_set.difference(&want_set).take(5).collect();
    panic!(
        "{what}: {} items where {} were expected; missing (first 5): {missing:?}; \
         unexpected (first 5): {extra:?}",
        got.len(),
        want.len()
    );
}

/// A record for `key` whose prediction by a spec of `python_bulk.py` is `intercept + 5`.
fn record(key: &str, n: usize) -> String {
    format!(r#"{{"id":"{key}-{n}","city":"{key}","a":1.0,"b":2.0}}"#)
}

/// Sends records of `key` until the scorer scores one with `version`; returns that line.
async fn scored_by(scorer: &mut ScorerProcess, key: &str, version: i64, n: &mut usize) -> Value {
    let deadline = Instant::now() + SWAP_DEADLINE;
    loop {
        *n += 1;
        scorer.send(&record(key, *n)).await;
        let line: Value =
            serde_json::from_str(&scorer.next_line(LINE_TIMEOUT).await).expect("a JSON line");
        assert_eq!(line["model_key"], key, "{line}");
        if line["model_version"].as_i64() == Some(version) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "the running scorer still serves {key} v{} after {SWAP_DEADLINE:?}, not v{version}; \
             its log:\n{}",
            line["model_version"],
            scorer.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn prediction(line: &Value) -> f64 {
    line["prediction"]["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("no prediction value: {line}"))
}

/// `upload_many` of 2,000 keys with `activate=True`: every good key is active at v1 (the
/// one over 1 MiB through chunks), the two bad ones are reported by key and absent, each key
/// has one feed row. A running scorer serves them; `activate_many` then moves 500 keys to v2
/// (the scorer follows), reports the versions that are not stored by key, and the same call
/// again changes nothing: no revision, no feed row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_upload_and_activation_reach_the_store_and_a_running_scorer() {
    let node = CqlTestNode::start().await;
    let store = format!("cql://{}/keyscore", node.addr());
    keyscore(&store, &["init"]).await;
    let port = node.addr().port().to_string();
    let session = SessionBuilder::new()
        .known_node(node.addr().to_string())
        .build()
        .await
        .expect("the scylla driver connects to the test node");

    // upload_many of 2,000 keys, activated.
    let report = python_bulk(&["cql", "127.0.0.1", &port, "upload"]).await;
    let good: BTreeSet<String> = (0..KEYS)
        .map(key)
        .filter(|k| !BAD.contains(&k.as_str()))
        .collect();
    eprintln!(
        "upload_many of {KEYS} keys with activate=True: {}s",
        report.raw["seconds"]
    );
    assert_eq!(
        report
            .failures
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        BAD,
        "exactly the bad specs are reported: {:?}",
        report.failures
    );
    assert!(
        report.failures["k0700"].contains("missing output"),
        "{:?}",
        report.failures
    );
    assert!(
        report.failures["k1300"].contains("format_version 2"),
        "{:?}",
        report.failures
    );
    let v1: BTreeMap<String, i64> = good.iter().map(|k| (k.clone(), 1)).collect();
    assert_same(&report.stored, &v1, "every good key stored at v1");
    assert_same(&report.activated, &v1, "every good key activated at v1");

    // The CLI sees every good key active at v1, and no bad one.
    let list = parse_list(&keyscore(&store, &["list", "--all"]).await);
    assert_same(list.keys(), &good, "keyscore list shows the good keys only");
    for (k, (active, versions)) in &list {
        assert_eq!(
            (active.as_str(), versions.as_str()),
            ("v1", "v1"),
            "keyscore list: {k}"
        );
    }
    // The big spec went through chunks and reads back whole.
    let (encoding, chunks): (Option<String>, Option<i32>) = session
        .query_unpaged(
            "SELECT encoding, chunks FROM keyscore.model_versions WHERE key = ? AND version = 1",
            (BIG,),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!(encoding.as_deref(), Some("zstd"));
    assert!(
        chunks.is_some_and(|c| c >= 2),
        "over 1 MiB of hex is more than one 512 KiB chunk: {chunks:?}"
    );
    let text = keyscore(&store, &["show", "--key", BIG, "--json"]).await;
    let sha: String = spec_sha256(text.trim_end_matches('\n'))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        sha, report.raw["big_sha256"],
        "keyscore reads the big spec as uploaded"
    );
    // One feed row per activation.
    let feed_after_upload = feed(&session).await;
    let want: Vec<(String, i64, i64)> = good.iter().map(|k| (k.clone(), 1, 1)).collect();
    assert_same(
        &feed_after_upload,
        &want,
        "one feed row (v1, revision 1) per good key",
    );

    // A running scorer serves the new keys with the uploaded specs.
    let mut scorer = ScorerProcess::start(&store, REFRESH_MS);
    let mut n = 0;
    for i in [1, 499, 1000, 1999] {
        let line = scored_by(&mut scorer, &key(i), 1, &mut n).await;
        assert_eq!(prediction(&line), i as f64 + 5.0, "{line}");
    }

    // v2 of 500 keys, not activated.
    let report = python_bulk(&["cql", "127.0.0.1", &port, "upload-v2"]).await;
    let v2: BTreeMap<String, i64> = (0..MOVED).map(|i| (key(i), 2)).collect();
    assert_same(&report.stored, &v2, "v2 of the first 500 keys stored");
    assert!(report.activated.is_empty() && report.failures.is_empty());
    let list = parse_list(&keyscore(&store, &["list", "--all"]).await);
    assert_eq!(list[&key(0)], ("v1".to_string(), "v1 v2".to_string()));
    assert_eq!(list[&key(MOVED)], ("v1".to_string(), "v1".to_string()));

    // activate_many moves them; the versions that are not stored are reported by key.
    let before = pointers(&session).await;
    let report = python_bulk(&["cql", "127.0.0.1", &port, "activate"]).await;
    eprintln!(
        "activate_many of {} keys: {}s",
        MOVED + 2,
        report.raw["seconds"]
    );
    assert_same(&report.activated, &v2, "every stored version activated");
    assert_eq!(
        report
            .failures
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["k0700", "k1999"],
        "{:?}",
        report.failures
    );
    assert!(report.failures["k1999"].contains("has no version 9"));
    assert!(report.failures["k0700"].contains("has no version 1"));
    let after = pointers(&session).await;
    for (k, pointer) in &after {
        let want = if v2.contains_key(k) {
            (Some(2), Some(1), Some(2))
        } else {
            before[k]
        };
        assert_eq!(*pointer, want, "the pointer of {k}");
    }
    let feed_after_activation = feed(&session).await;
    let mut want = feed_after_upload.clone();
    want.extend(v2.keys().map(|k| (k.clone(), 2, 2)));
    want.sort();
    assert_same(
        &feed_after_activation,
        &want,
        "one feed row per moved key (v2, revision 2)",
    );

    // The running scorer follows the feed to v2 of the moved keys only.
    for i in [1, 499] {
        let line = scored_by(&mut scorer, &key(i), 2, &mut n).await;
        assert_eq!(prediction(&line), -(i as f64) + 5.0, "{line}");
    }
    let line = scored_by(&mut scorer, &key(1000), 1, &mut n).await;
    assert_eq!(prediction(&line), 1005.0, "{line}");

    // The same call again changes nothing.
    let again = python_bulk(&["cql", "127.0.0.1", &port, "activate"]).await;
    assert_same(
        &again.activated,
        &v2,
        "the repeat reports the same activations",
    );
    assert_eq!(
        again.failures.keys().collect::<Vec<_>>(),
        ["k0700", "k1999"]
    );
    let repeated = pointers(&session).await;
    for (k, pointer) in &after {
        assert_eq!(
            repeated.get(k),
            Some(pointer),
            "the repeat moved no pointer: {k}"
        );
    }
    assert_eq!(repeated.len(), after.len());
    assert_same(
        &feed(&session).await,
        &feed_after_activation,
        "no feed row was written by the repeat",
    );
    let list = parse_list(&keyscore(&store, &["list", "--all"]).await);
    assert_eq!(
        list[&key(MOVED - 1)],
        ("v2".to_string(), "v1 v2".to_string())
    );

    let rest = scorer.finish().await;
    assert!(rest.is_empty(), "every record was answered: {rest:?}");
    assert!(
        scorer.dead_letters().is_empty(),
        "{:?}",
        scorer.dead_letters()
    );
}

/// `upload_many_embedded` on a fresh embedded store: keyscore stores the good specs (activated
/// at v1, one at its explicit v7); the package reports by key the specs it refuses itself and
/// every one keyscore refuses, more than the CLI lists by name. Uploading again stores v2 of
/// each key, reports the explicit version that exists, and activates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_upload_through_the_cli_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("models.db").display());
    keyscore(&store, &["init"]).await;
    let bin = keyscore_bin();
    let bin = bin.to_str().expect("a UTF-8 path");

    let report = python_bulk(&["embedded", &store, bin, "activate"]).await;
    let keys: Vec<String> = (0..300).map(|i| format!("e{i:03}")).collect();
    let refused_here = ["e010", "e020"];
    let refused_by_keyscore: Vec<String> = (100..125).map(|i| format!("e{i:03}")).collect();
    let good: Vec<&String> = keys
        .iter()
        .filter(|k| !refused_here.contains(&k.as_str()) && !refused_by_keyscore.contains(k))
        .collect();
    let failed: BTreeSet<&str> = report.failures.keys().map(String::as_str).collect();
    let mut want_failed: BTreeSet<&str> = refused_here.into_iter().collect();
    want_failed.extend(refused_by_keyscore.iter().map(String::as_str));
    assert_eq!(failed, want_failed, "{:?}", report.failures);
    assert!(report.failures["e010"].contains("missing model, output"));
    for k in &refused_by_keyscore {
        assert!(
            report.failures[k].contains("coefficients"),
            "{k}: {}",
            report.failures[k]
        );
    }
    let want: BTreeMap<String, i64> = good
        .iter()
        .map(|k| ((*k).clone(), if *k == "e299" { 7 } else { 1 }))
        .collect();
    assert_same(&report.stored, &want, "the good specs stored");
    assert_same(&report.activated, &want, "the good specs activated");

    let list = parse_list(&keyscore(&store, &["list", "--all"]).await);
    assert_eq!(
        list.len(),
        good.len(),
        "keyscore list shows the good keys only"
    );
    for (k, version) in &want {
        let v = format!("v{version}");
        assert_eq!(list[k], (v.clone(), v), "keyscore list: {k}");
    }
    let show = keyscore(&store, &["show", "--key", "e299"]).await;
    assert!(show.contains("version:   7"), "{show}");

    // Again, not activated: v2 of every key; e299's v7 exists.
    let again = python_bulk(&["embedded", &store, bin, "no"]).await;
    assert!(again.activated.is_empty());
    let want2: BTreeMap<String, i64> = good
        .iter()
        .filter(|k| **k != "e299")
        .map(|k| ((*k).clone(), 2))
        .collect();
    assert_same(&again.stored, &want2, "v2 of every key but e299 stored");
    assert!(
        again.failures["e299"].contains("already exists"),
        "{:?}",
        again.failures.get("e299")
    );
    let list = parse_list(&keyscore(&store, &["list", "--all"]).await);
    assert_eq!(list["e001"], ("v1".to_string(), "v1 v2".to_string()));
    assert_eq!(list["e299"], ("v7".to_string(), "v7".to_string()));
}
