//! Live model quality through `keyscore score --labels`, as a data team runs it: a canary that
//! is truly better is promoted and one that is truly worse is rolled back, each verdict written
//! once with its evidence; labels late, duplicated, for unknown ids and malformed are counted
//! and never stop the run; a feature that drifts shows in `keyscore quality`, `/metrics` and
//! `/status.json`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Arc,
};

use keyscore::{
    ops::{Ops, OpsConfig},
    quality::{Quality, QualityConfig},
    registry::{ModelRegistry, RegistryConfig},
    store::{EmbeddedModelStore, ModelStore},
    stream::{file, record::RecordsConfig, Scorer},
};
use serde_json::{json, Value};
use tokio::io::BufReader;

const BIN: &str = env!("CARGO_BIN_EXE_keyscore");

fn keyscore(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--store")
        .arg(format!("sqlite://{}", dir.join("models.db").display()))
        .args(args)
        .current_dir(dir)
        .env_remove("KEYSCORE_CONFIG")
        .env_remove("KEYSCORE_STORE")
        .env("KEYSCORE_LOG", "warn")
        .output()
        .expect("keyscore runs")
}

fn ok(out: Output) -> (String, String) {
    assert!(
        out.status.success(),
        "keyscore failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `y = slope · x`, with the training reference of `x` uniform on [0, 2] in four bins.
fn linear(slope: f64) -> Value {
    json!({
        "format_version": 1,
        "features": ["x"],
        "model": {"kind": "linear", "coefficients": [slope], "intercept": 0.0},
        "output": {"type": "regression"},
        "reference": {
            "rows": 1000,
            "features": [{"edges": [0.5, 1.0, 1.5], "shares": [0.25, 0.25, 0.25, 0.25],
                          "missing": 0.0, "min": 0.0, "max": 2.0}],
            "prediction": {"edges": [slope * 0.5, slope, slope * 1.5],
                           "shares": [0.25, 0.25, 0.25, 0.25]}
        }
    })
}

/// A store where `paris` has v1 (`y = 2x`, active) and v2 (`y = slope2 · x`).
fn store_with_two_versions(dir: &Path, slope2: f64) {
    ok(keyscore(dir, &["init"]));
    for (v, slope) in [(1, 2.0), (2, slope2)] {
        let file = dir.join(format!("v{v}.json"));
        std::fs::write(&file, linear(slope).to_string()).unwrap();
        ok(keyscore(
            dir,
            &["upload", "--key", "paris", file.to_str().unwrap()],
        ));
    }
    ok(keyscore(
        dir,
        &["activate", "--key", "paris", "--version", "1"],
    ));
}

/// `n` records of paris with `x` spread over [lo, hi), ids `r0`.., and their labels: the true
/// value `3x` plus a small deterministic wobble.
fn records_and_labels(dir: &Path, n: usize, lo: f64, hi: f64) -> (PathBuf, PathBuf) {
    let mut records = String::new();
    let mut labels = String::new();
    for i in 0..n {
        let x = lo + (hi - lo) * ((i * 7919) % n) as f64 / n as f64;
        records.push_str(&format!(
            "{}\n",
            json!({"id": format!("r{i}"), "city": "paris", "x": x})
        ));
        let wobble = if i % 2 == 0 { 0.05 } else { -0.05 };
        labels.push_str(&format!(
            "{}\n",
            json!({"id": format!("r{i}"), "label": 3.0 * x + wobble})
        ));
    }
    let (r, l) = (dir.join("records.jsonl"), dir.join("labels.jsonl"));
    std::fs::write(&r, records).unwrap();
    std::fs::write(&l, labels).unwrap();
    (r, l)
}

/// Runs `keyscore score --labels` over `records` and `labels`; its stderr.
fn score_with_labels(dir: &Path, records: &Path, labels: &Path) -> String {
    let (_, err) = ok(keyscore(
        dir,
        &[
            "score",
            "--input",
            records.to_str().unwrap(),
            "--output",
            "/dev/null",
            "--labels",
            labels.to_str().unwrap(),
        ],
    ));
    err
}

fn history(dir: &Path) -> Vec<Value> {
    let (out, _) = ok(keyscore(
        dir,
        &["history", "--key", "paris", "--format", "json"],
    ));
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn active_version(dir: &Path) -> i64 {
    let (out, _) = ok(keyscore(
        dir,
        &["show", "--key", "paris", "--format", "json"],
    ));
    let doc: Value = serde_json::from_str(&out).unwrap();
    doc["version"].as_i64().unwrap_or_else(|| panic!("{doc}"))
}

#[test]
fn a_truly_better_canary_is_promoted_with_its_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // v2 predicts 3x, the truth; v1 predicts 2x.
    store_with_two_versions(dir, 3.0);
    let (out, _) = ok(keyscore(
        dir,
        &[
            "canary",
            "--key",
            "paris",
            "--version",
            "2",
            "--share",
            "0.5",
            "--auto",
            "--min-labelled",
            "200",
            "--margin",
            "0",
        ],
    ));
    assert!(out.contains("decided automatically"), "{out}");
    let (records, labels) = records_and_labels(dir, 1000, 0.0, 2.0);
    let err = score_with_labels(dir, &records, &labels);
    assert!(
        err.contains("labels: 1000 matched, 0 duplicate, 0 unknown, 0 malformed"),
        "{err}"
    );
    assert!(
        err.contains("automatic verdict: promoted paris v2"),
        "{err}"
    );
    assert_eq!(active_version(dir), 2);
    let h = history(dir);
    let promoted = h
        .iter()
        .find(|e| e["action"] == "promote")
        .expect("a promotion");
    let evidence: Value = match &promoted["evidence"] {
        Value::String(text) => serde_json::from_str(text).unwrap(),
        other => other.clone(),
    };
    assert_eq!(evidence["metric"], "rmse");
    let canary_rmse = evidence["canary"]["rmse"].as_f64().unwrap();
    let active_rmse = evidence["active"]["rmse"].as_f64().unwrap();
    assert!((canary_rmse - 0.05).abs() < 1e-9, "{evidence}");
    assert!(active_rmse > 0.5, "{evidence}");
    assert!(evidence["canary"]["labelled"].as_u64().unwrap() >= 200);
    assert!(evidence["active"]["labelled"].as_u64().unwrap() >= 200);
    assert_eq!(evidence["criteria"]["min_labelled"], 200);
    let (text, _) = ok(keyscore(dir, &["history", "--key", "paris"]));
    assert!(
        text.contains("promoted v2 (was v1) (automatic: canary v2 rmse 0.0500 vs active v1"),
        "{text}"
    );
    // The verdict is one write: scoring the same records again decides nothing more.
    let err = score_with_labels(dir, &records, &labels);
    assert!(!err.contains("automatic verdict"), "{err}");
    assert_eq!(
        history(dir)
            .iter()
            .filter(|e| e["action"] == "promote")
            .count(),
        1
    );
}

#[test]
fn a_truly_worse_canary_is_rolled_back_and_the_active_version_stays() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // v2 predicts x: further from the truth (3x) than v1 (2x).
    store_with_two_versions(dir, 1.0);
    ok(keyscore(
        dir,
        &[
            "canary",
            "--key",
            "paris",
            "--version",
            "2",
            "--share",
            "0.3",
            "--auto",
            "--min-labelled",
            "100",
            "--margin",
            "0.1",
        ],
    ));
    let (records, labels) = records_and_labels(dir, 1000, 0.0, 2.0);
    let err = score_with_labels(dir, &records, &labels);
    assert!(
        err.contains("automatic verdict: rolled back paris v2"),
        "{err}"
    );
    assert!(err.contains("over the margin of 0.1"), "{err}");
    assert_eq!(active_version(dir), 1);
    let h = history(dir);
    let ended = h
        .iter()
        .find(|e| e["action"] == "canary_end")
        .expect("the canary ended");
    assert_eq!(ended["version"], 2);
    assert!(
        ended["evidence"].to_string().contains("worse by"),
        "{ended}"
    );
    // The rows of both arms are in the store, for CQL or sqlite3 users alike.
    let (out, _) = ok(keyscore(
        dir,
        &["quality", "--key", "paris", "--format", "json"],
    ));
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let arm = |name: &str| {
        rows.iter()
            .find(|r| r["arm"] == name)
            .unwrap_or_else(|| panic!("{out}"))
    };
    assert_eq!(arm("canary")["version"], 2);
    assert_eq!(arm("active")["version"], 1);
    let total = arm("canary")["predictions"].as_i64().unwrap()
        + arm("active")["predictions"].as_i64().unwrap();
    assert_eq!(total, 1000);
    assert!(arm("canary")["rmse"].as_f64().unwrap() > arm("active")["rmse"].as_f64().unwrap());
    let (text, _) = ok(keyscore(dir, &["quality", "--key", "paris"]));
    assert!(
        text.contains("v2 canary") && text.contains("rmse"),
        "{text}"
    );
}

#[test]
fn late_duplicated_unknown_and_malformed_labels_are_counted_never_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    store_with_two_versions(dir, 3.0);
    let (records, _) = records_and_labels(dir, 10, 0.0, 2.0);
    // Labels known an hour after scoring (late), one id twice, two ids never scored, and
    // three lines that are not labels.
    let hour_later = keyscore::quality::now_ms() + 3_600_000;
    let mut labels = String::new();
    for i in 0..10 {
        labels.push_str(&format!(
            "{}\n",
            json!({"id": format!("r{i}"), "label": 1.0, "ts": hour_later})
        ));
    }
    labels.push_str(&format!("{}\n", json!({"id": "r3", "label": 2.0})));
    labels.push_str(&format!("{}\n", json!({"id": "nobody", "label": 2.0})));
    labels.push_str(&format!("{}\n", json!({"id": 404, "label": 2.0})));
    labels.push_str("not json\n{\"label\": 1}\n{\"id\": \"r1\", \"label\": [1]}\n");
    let file = dir.join("labels.jsonl");
    std::fs::write(&file, labels).unwrap();
    let err = score_with_labels(dir, &records, &file);
    assert!(
        err.contains("labels: 10 matched, 1 duplicate, 2 unknown, 3 malformed"),
        "{err}"
    );
    let (out, _) = ok(keyscore(
        dir,
        &["quality", "--key", "paris", "--format", "json"],
    ));
    let row: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(row["labelled"], 10);
    let lag = row["label_lag_ms"].as_f64().unwrap();
    assert!((3_590_000.0..=3_600_000.0).contains(&lag), "{lag}");
}

/// The stage wired as `serve` wires it, in process: scorer, quality, operations endpoint.
async fn pipeline(dir: &Path) -> (Scorer, Arc<Ops>, Arc<Quality>) {
    let store: Arc<dyn ModelStore> =
        Arc::new(EmbeddedModelStore::open(dir.join("models.db")).unwrap());
    let registry = Arc::new(ModelRegistry::new(store, RegistryConfig::default()));
    let quality = Quality::new(QualityConfig::default());
    let scorer = Scorer::new(Arc::clone(&registry), RecordsConfig::default().format())
        .with_quality(Arc::clone(&quality));
    let ops = Arc::new(
        Ops::new(
            registry,
            Arc::clone(scorer.metrics()),
            None,
            OpsConfig::default(),
        )
        .with_quality(Arc::clone(&quality)),
    );
    (scorer, ops, quality)
}

async fn score(scorer: &Scorer, records: &Path) {
    let input = tokio::fs::File::open(records).await.unwrap();
    let (mut out, mut dead) = (Vec::new(), Vec::new());
    let stats = file::score_lines(scorer, BufReader::new(input), &mut out, &mut dead, 256)
        .await
        .unwrap();
    assert_eq!(stats.dead_total(), 0, "{}", String::from_utf8_lossy(&dead));
}

/// The value of `name{key="paris",version="1",arm="active"}` in the exposition.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| {
            l.starts_with(&format!("{name}{{"))
                && l.contains("key=\"paris\"")
                && l.contains("arm=\"active\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn a_drifting_feature_shows_in_the_metrics_the_status_and_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    store_with_two_versions(dir, 3.0);
    // As in training: x over [0, 2).
    let (steady, _) = records_and_labels(dir, 2000, 0.0, 2.0);
    let (scorer, ops, quality) = pipeline(dir).await;
    score(&scorer, &steady).await;
    let text = ops.prometheus();
    let psi = series(&text, "keyscore_quality_max_feature_psi").unwrap_or_else(|| panic!("{text}"));
    assert!(psi < 0.01, "no drift yet: {psi}");
    assert_eq!(
        series(&text, "keyscore_quality_out_of_range_ratio"),
        Some(0.0)
    );

    // The feature moves to [1.5, 3): every value in the last bin, two thirds out of range.
    let drifted = dir.join("drifted.jsonl");
    let lines: String = (0..2000)
        .map(|i| format!("{}\n", json!({"id": format!("d{i}"), "city": "paris", "x": 1.5 + 1.5 * (i as f64) / 2000.0})))
        .collect();
    std::fs::write(&drifted, lines).unwrap();
    score(&scorer, &drifted).await;
    let text = ops.prometheus();
    let psi = series(&text, "keyscore_quality_max_feature_psi").unwrap();
    assert!(psi > 0.25, "drift crosses the threshold: {psi}");
    let pred_psi = series(&text, "keyscore_quality_prediction_psi").unwrap();
    assert!(pred_psi > 0.25, "{pred_psi}");
    let out_of_range = series(&text, "keyscore_quality_out_of_range_ratio").unwrap();
    // Of the 4000 values in the window, those of the second run above the training maximum 2.
    let above = (0..2000)
        .filter(|i| 1.5 + 1.5 * (*i as f64) / 2000.0 > 2.0)
        .count();
    assert!(
        (out_of_range - above as f64 / 4000.0).abs() < 1e-9,
        "{out_of_range}"
    );
    let status = ops.status();
    let paris = status["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == "paris")
        .unwrap();
    let window = &paris["quality"][0];
    assert_eq!(window["arm"], "active");
    assert_eq!(window["predictions"], 4000);
    assert!(
        window["max_feature_psi"].as_f64().unwrap() > 0.25,
        "{window}"
    );
    assert_eq!(window["feature_psi"][0]["feature"], "x");
    // And the store keeps the window for sqlite3 and CQL users.
    let store = EmbeddedModelStore::open(dir.join("models.db")).unwrap();
    let flushed = keyscore::quality::task::flush(&quality, &store, keyscore::quality::now_ms())
        .await
        .unwrap();
    assert_eq!(flushed.rows, 1);
    let rows = store.quality("paris", Some(1), 10).await.unwrap();
    assert!(rows[0].max_feature_psi.unwrap() > 0.25);
    assert!(rows[0].feature_psi.as_deref().unwrap().contains("\"x\""));
}

#[tokio::test]
async fn an_automatic_canary_that_does_not_build_is_rolled_back_with_why() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    store_with_two_versions(dir, 3.0);
    // v3 written as a hand-written insert could: stored, never built (the CLI refuses to
    // make it a canary, so the store is driven directly).
    let store = EmbeddedModelStore::open(dir.join("models.db")).unwrap();
    let mut broken = linear(1.0);
    broken["model"]["coefficients"] = json!([1.0, 2.0]);
    store
        .insert_version("paris", Some(3), &broken.to_string())
        .await
        .unwrap();
    let criteria = keyscore::store::AutoCriteria {
        min_labelled: 100,
        metric: "rmse".into(),
        margin: 0.0,
        max_dead_letter_rate: 0.01,
        max_prediction_psi: 0.25,
    };
    store
        .set_canary(
            "paris",
            Some(keyscore::store::Canary {
                version: 3,
                share: 0.5,
                auto: Some(criteria),
            }),
        )
        .await
        .unwrap();
    let (records, _) = records_and_labels(dir, 100, 0.0, 2.0);
    let (_, err) = ok(keyscore(
        dir,
        &[
            "score",
            "--input",
            records.to_str().unwrap(),
            "--output",
            "/dev/null",
        ],
    ));
    assert!(
        err.contains("automatic verdict: rolled back paris v3: canary v3 does not build"),
        "{err}"
    );
    assert_eq!(active_version(dir), 1);
    assert_eq!(
        store.rollout("paris").await.unwrap().and_then(|r| r.canary),
        None
    );
    let h = history(dir);
    let ended = h
        .iter()
        .find(|e| e["action"] == "canary_end")
        .expect("the canary ended");
    assert!(
        ended["evidence"].to_string().contains("build_failure"),
        "{ended}"
    );
}
