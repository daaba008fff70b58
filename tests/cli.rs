//! The `keyscore` binary as a user drives it on the embedded store: upload (and refusal of an
//! invalid model), activate, rollback, list, show, `score` over the seed records against the
//! seed's independently computed expected outputs, a hot swap in a running `score`, and `demo`.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_keyscore");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn keyscore(store: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--store")
        .arg(format!("sqlite://{}", store.display()))
        .args(args)
        .env_remove("KEYSCORE_CONFIG")
        .env("KEYSCORE_LOG", "warn")
        .output()
        .expect("keyscore runs")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "keyscore failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A line of tabular output split into its whitespace-separated columns.
fn columns(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// The columns of the first row of `table` whose first column is `key`.
fn row<'a>(table: &'a str, key: &str) -> Option<Vec<&'a str>> {
    table.lines().map(columns).find(|c| c.first() == Some(&key))
}

/// A store holding every seed model, the first version of each key active.
fn seeded_store(dir: &Path) -> PathBuf {
    let store = dir.join("models.db");
    ok(keyscore(&store, &["init"]));
    let mut keys: Vec<_> = std::fs::read_dir(repo("seed/models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    keys.sort();
    for key in keys {
        let mut versions: Vec<_> = std::fs::read_dir(repo(&format!("seed/models/{key}")))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        versions.sort();
        for (i, path) in versions.iter().enumerate() {
            let path = path.to_str().unwrap();
            let out = ok(keyscore(&store, &["upload", "--key", &key, path]));
            assert!(out.contains(&format!("{key} v{}", i + 1)), "{out}");
        }
        ok(keyscore(
            &store,
            &["activate", "--key", &key, "--version", "1"],
        ));
    }
    store
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn score_over_the_seed_accounts_for_every_record_and_matches_the_references() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded_store(dir.path());
    let scored = dir.path().join("scored.jsonl");
    let dead = dir.path().join("dead.jsonl");
    ok(keyscore(
        &store,
        &[
            "score",
            "--input",
            repo("seed/records.jsonl").to_str().unwrap(),
            "--output",
            scored.to_str().unwrap(),
            "--dead-letters",
            dead.to_str().unwrap(),
        ],
    ));
    let scored = lines(&scored);
    let dead = lines(&dead);
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("seed/records.manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        (scored.len() + dead.len()) as u64,
        manifest["lines"].as_u64().unwrap(),
        "scored + dead letters = input"
    );

    // Every malformed line the manifest lists is a dead letter with the matching reason, at its
    // line; the unknown city is scored by the fallback.
    let dead_by_line: BTreeMap<u64, &str> = dead
        .iter()
        .map(|d| (d["line"].as_u64().unwrap(), d["reason"].as_str().unwrap()))
        .collect();
    for special in manifest["special"].as_array().unwrap() {
        let line = special["line"].as_u64().unwrap();
        let expected = match special["kind"].as_str().unwrap() {
            "truncated_json" | "not_json" => Some("not_json"),
            "missing_city" => Some("missing_key"),
            "missing_feature" => Some("missing_feature"),
            "non_numeric_feature" => Some("non_numeric_feature"),
            "unknown_city" => None,
            other => panic!("manifest kind {other} is not covered by this test"),
        };
        assert_eq!(dead_by_line.get(&line).copied(), expected, "line {line}");
    }
    let oslo: Vec<_> = scored.iter().filter(|s| s["key"] == "oslo").collect();
    assert_eq!(oslo.len(), 1);
    assert_eq!(oslo[0]["fallback"], true);
    assert_eq!(oslo[0]["model_key"], "_default");

    // Outputs equal the seed's reference predictions (computed by smartcore and the training
    // code, not by keyscore): exactly for forests, within 1e-9 relative otherwise.
    let by_id: BTreeMap<&str, &Value> = scored
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s))
        .collect();
    let mut checked = 0;
    for key in [
        "paris",
        "madrid",
        "london",
        "rome",
        "berlin",
        "vienna",
        "lisbon",
        "amsterdam",
        "_default",
    ] {
        for reference in lines(&repo(&format!("seed/expected/{key}/v1.jsonl"))) {
            let out = by_id[reference["id"].as_str().unwrap()];
            if key == "_default" && out["key"] != "oslo" {
                // The fallback's references cover city records too; only the unknown city is
                // scored by it in the stream.
                continue;
            }
            assert_eq!(out["model_key"], key);
            assert_eq!(out["model_version"], 1);
            let p = &out["prediction"];
            if let Some(v) = reference["value"].as_f64() {
                let got = p["value"].as_f64().unwrap();
                if matches!(key, "berlin" | "vienna") {
                    assert_eq!(got, v, "{key} {}", reference["id"]);
                } else {
                    assert!(
                        (got - v).abs() <= 1e-9 * v.abs().max(1.0),
                        "{key}: {got} vs {v}"
                    );
                }
            } else {
                assert_eq!(p["class"], reference["class"]);
                let probs = reference["probabilities"].as_array().unwrap();
                for (class, want) in ["on_time", "late"].iter().zip(probs) {
                    let got = p["probabilities"][class].as_f64().unwrap();
                    assert!((got - want.as_f64().unwrap()).abs() <= 1e-9);
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 400, "only {checked} reference rows checked");
    let checksums: BTreeSet<&str> = scored
        .iter()
        .map(|s| s["model_checksum"].as_str().unwrap())
        .collect();
    assert_eq!(checksums.len(), 9, "one checksum per served model");
}

#[test]
fn an_invalid_model_is_refused_with_the_problem_named_and_nothing_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("models.db");
    ok(keyscore(&store, &["init"]));
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"format_version":1,"features":["a","b","c"],"model":{"kind":"linear","coefficients":[1.0,2.0],"intercept":0.5},"output":{"type":"regression"}}"#,
    )
    .unwrap();
    let out = keyscore(&store, &["upload", "--key", "paris", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("coefficients") && err.contains('3'), "{err}");
    let list = ok(keyscore(&store, &["list"]));
    assert!(!list.contains("paris"), "{list}");

    // Nothing of paris was stored: the key is unknown.
    let out = keyscore(&store, &["activate", "--key", "paris", "--version", "4"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown key 'paris'"), "{err}");
}

#[test]
fn activate_rollback_list_and_show() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded_store(dir.path());
    let list = ok(keyscore(&store, &["list"]));
    let paris = row(&list, "paris").unwrap_or_else(|| panic!("no paris row in\n{list}"));
    assert!(
        paris[2..].contains(&"v1") && paris[2..].contains(&"v2"),
        "paris stores v1 and v2: {paris:?}"
    );
    ok(keyscore(
        &store,
        &["activate", "--key", "paris", "--version", "2"],
    ));
    let show = ok(keyscore(&store, &["show", "--key", "paris"]));
    assert!(show.contains("version:   2"), "{show}");
    assert!(show.contains("kind:      linear"), "{show}");
    let out = ok(keyscore(&store, &["rollback", "--key", "paris"]));
    assert!(out.contains("v1"), "{out}");
    let show = ok(keyscore(&store, &["show", "--key", "paris", "--json"]));
    let spec: Value = serde_json::from_str(&show).unwrap();
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("seed/models/paris/v1.json")).unwrap())
            .unwrap();
    assert_eq!(spec, file, "show --json returns the stored spec");
}

#[test]
fn a_running_score_picks_up_an_activation_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded_store(dir.path());
    let record = |n: usize| {
        format!(
            r#"{{"id":"p{n}","city":"paris","distance_km":3.1,"items":2,"hour":12,"is_weekend":0,"rain_mm":4.0,"courier_rating":4.5,"traffic_index":0.5,"prep_time_min":12}}"#
        )
    };
    let mut child = Command::new(BIN)
        .arg("--store")
        .arg(format!("sqlite://{}", store.display()))
        .arg("score")
        .env("KEYSCORE__STORE__REFRESH_INTERVAL_MS", "100")
        .env("KEYSCORE_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut n = 0;
    let mut next = |stdin: &mut std::process::ChildStdin| -> Value {
        n += 1;
        writeln!(stdin, "{}", record(n)).unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    };
    for _ in 0..5 {
        assert_eq!(next(&mut stdin)["model_version"], 1);
    }
    let before = next(&mut stdin)["prediction"]["value"].as_f64().unwrap();
    ok(keyscore(
        &store,
        &["activate", "--key", "paris", "--version", "2"],
    ));
    let activated = Instant::now();
    let mut after = None;
    while activated.elapsed() < Duration::from_secs(20) {
        let out = next(&mut stdin);
        if out["model_version"] == 2 {
            after = Some(out["prediction"]["value"].as_f64().unwrap());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = after.expect("the running scorer never served paris v2");
    assert_ne!(before, after, "v2 predicts differently for a rainy record");
    for _ in 0..20 {
        assert_eq!(next(&mut stdin)["model_version"], 2, "never back to v1");
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn demo_prints_a_summary_with_the_swap_and_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["demo", "--seconds", "3", "--db"])
        .arg(dir.path().join("demo.db"))
        .env_remove("KEYSCORE_CONFIG")
        .env("KEYSCORE__STORE__REFRESH_INTERVAL_MS", "200")
        .output()
        .unwrap();
    let stdout = ok(out);
    assert!(stdout.contains("accounted for: 2006 of 2006"), "{stdout}");
    let paris_v2 = stdout
        .lines()
        .skip_while(|l| !l.starts_with("scored per model key and version:"))
        .skip(1)
        .map(columns)
        .take_while(|c| c.len() == 3)
        .find(|c| c[..2] == ["paris", "v2"])
        .unwrap_or_else(|| {
            panic!("no paris v2 row among the counts per key and version:\n{stdout}")
        });
    assert!(
        paris_v2[2].parse::<u64>().is_ok_and(|n| n > 0),
        "paris v2 scored records: {paris_v2:?}"
    );
    assert!(
        stdout.contains("0 records of paris scored by the old version after that"),
        "{stdout}"
    );
    for reason in [
        "not_json",
        "missing_key",
        "missing_feature",
        "non_numeric_feature",
    ] {
        assert!(stdout.contains(reason), "{reason} missing from\n{stdout}");
    }
}

/// A linear spec over two features whose intercept tells the key apart.
fn linear_spec(intercept: usize) -> Value {
    serde_json::json!({
        "format_version": 1,
        "features": ["a", "b"],
        "model": {"kind": "linear", "coefficients": [1.0, 2.0], "intercept": intercept},
        "output": {"type": "regression"}
    })
}

#[test]
fn bulk_upload_reports_bad_specs_by_key_and_stores_the_rest_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("models.db");
    ok(keyscore(&store, &["init"]));
    let jsonl = dir.path().join("models.jsonl");
    let mut text = String::new();
    for i in 0..1000 {
        let spec = if i == 500 {
            // Two features, one coefficient: decodes, does not build.
            serde_json::json!({"format_version": 1, "features": ["a", "b"],
                "model": {"kind": "linear", "coefficients": [1.0], "intercept": 0.0},
                "output": {"type": "regression"}})
        } else {
            linear_spec(i)
        };
        text.push_str(&serde_json::json!({"key": format!("k{i:04}"), "spec": spec}).to_string());
        text.push('\n');
    }
    std::fs::write(&jsonl, text).unwrap();
    let jsonl = jsonl.to_str().unwrap();

    // All or nothing: one bad spec, nothing stored, the bad key named once with its reason.
    let out = keyscore(&store, &["upload", "--jsonl", jsonl, "--all-or-nothing"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("refused k0500").count(), 1, "{err}");
    assert!(err.contains("coefficients"), "{err}");
    assert!(err.contains("nothing was stored"), "{err}");
    assert_eq!(
        ok(keyscore(&store, &["list"])).lines().count(),
        1,
        "only the header"
    );

    // Default: the other 999 go in and are activated; the run still fails, naming the key.
    let out = keyscore(&store, &["upload", "--jsonl", jsonl, "--activate"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("uploaded 999 of 1000 specs, 999 activated; 1 refused"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused k0500"));
    let list = ok(keyscore(&store, &["list"]));
    assert_eq!(list.lines().count(), 1 + 999, "{list}");
    assert_eq!(row(&list, "k0499").unwrap()[1], "v1");
    assert!(row(&list, "k0500").is_none());
    // Pages: 400 at a time, each ending with the command for the next; together every key once.
    let mut listed = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut args = vec!["list", "--limit", "400"];
        if let Some(token) = &after {
            args.extend(["--after", token.as_str()]);
        }
        let out = keyscore(&store, &args);
        assert!(out.status.success());
        let page = String::from_utf8_lossy(&out.stdout).to_string();
        let rows: Vec<String> = page.lines().skip(1).map(|l| l.to_string()).collect();
        assert!(rows.len() <= 400, "{page}");
        listed.extend(rows);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        match err.split("keyscore list --after ").nth(1) {
            Some(rest) => after = rest.split_whitespace().next().map(str::to_string),
            None => break,
        }
    }
    assert_eq!(listed.len(), 999);
    assert_eq!(
        listed,
        ok(keyscore(&store, &["list", "--limit", "7", "--all"]))
            .lines()
            .skip(1)
            .map(str::to_string)
            .collect::<Vec<_>>(),
        "--all pages through the same rows"
    );
    let shown = ok(keyscore(&store, &["show", "--key", "k0999"]));
    assert!(shown.contains("999"), "{shown}");

    // A directory of <key>.json files, the same checks.
    let models = dir.path().join("dir");
    std::fs::create_dir_all(models.join("paris")).unwrap();
    std::fs::write(models.join("rome.json"), linear_spec(7).to_string()).unwrap();
    std::fs::write(models.join("paris/3.json"), linear_spec(3).to_string()).unwrap();
    let out = ok(keyscore(
        &store,
        &["upload", "--dir", models.to_str().unwrap(), "--activate"],
    ));
    assert!(
        out.contains("uploaded 2 of 2 specs, 2 activated; 0 refused"),
        "{out}"
    );
    // 1,001 keys now: past the default page of 1,000.
    let list = ok(keyscore(&store, &["list", "--all"]));
    assert_eq!(row(&list, "paris").unwrap()[1], "v3");
    assert_eq!(row(&list, "rome").unwrap()[1], "v1");
}

/// `prune` keeps the newest versions and those in use, says what it removes, removes nothing
/// on a dry run, and a retry removes nothing more.
#[test]
fn prune_keeps_the_newest_and_those_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("models.db");
    ok(keyscore(&store, &["init"]));
    for v in 1..=5 {
        let file = dir.path().join(format!("v{v}.json"));
        std::fs::write(&file, linear_spec(v).to_string()).unwrap();
        ok(keyscore(
            &store,
            &["upload", "--key", "rome", &file.to_string_lossy()],
        ));
    }
    ok(keyscore(
        &store,
        &["activate", "--key", "rome", "--version", "1"],
    ));
    ok(keyscore(
        &store,
        &["activate", "--key", "rome", "--version", "2"],
    ));
    let dry = ok(keyscore(
        &store,
        &["prune", "--key", "rome", "--keep", "1", "--dry-run"],
    ));
    assert!(
        dry.contains("rome: would remove v3 v4; kept v1 v2 v5 (v1 v2 in use"),
        "{dry}"
    );
    assert!(dry.contains("nothing was changed"), "{dry}");
    let list = ok(keyscore(&store, &["list"]));
    assert!(
        row(&list, "rome")
            .unwrap()
            .ends_with(&["v1", "v2", "v3", "v4", "v5"]),
        "{list}"
    );
    let out = ok(keyscore(&store, &["prune", "--key", "rome", "--keep", "1"]));
    assert!(out.contains("rome: removed v3 v4"), "{out}");
    let list = ok(keyscore(&store, &["list"]));
    assert!(
        row(&list, "rome").unwrap().ends_with(&["v1", "v2", "v5"]),
        "{list}"
    );
    let again = ok(keyscore(&store, &["prune", "--all-keys", "--keep", "1"]));
    assert!(again.contains("rome: removed nothing"), "{again}");
    // Without a key or --all-keys, clap refuses.
    let out = keyscore(&store, &["prune", "--keep", "1"]);
    assert!(!out.status.success());
}

#[test]
fn score_reads_absent_and_null_features_as_missing_only_for_models_that_handle_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("models.db");
    ok(keyscore(&store, &["init"]));
    // Boosted trees: b <= 0.5 (missing goes left) adds 1 or 2; a <= 0 (missing goes right)
    // adds 10 or 20.
    let stump = |feature: i64, threshold: f64, left: f64, right: f64, default_left: bool| {
        serde_json::json!({
            "feature": [feature, -2, -2], "threshold": [threshold, 0.0, 0.0],
            "left": [1, -1, -1], "right": [2, -1, -1], "value": [0.0, left, right],
            "default_left": [default_left, false, false]
        })
    };
    let boosted = serde_json::json!({
        "format_version": 1,
        "features": ["a", "b"],
        "model": {"kind": "boosted_trees", "link": "identity", "base_score": [0.5], "trees": [
            stump(1, 0.5, 1.0, 2.0, true), stump(0, 0.0, 10.0, 20.0, false)
        ]},
        "output": {"type": "regression"}
    });
    for (key, spec) in [("t", boosted), ("lin", linear_spec(0))] {
        let path = dir.path().join(format!("{key}.json"));
        std::fs::write(&path, spec.to_string()).unwrap();
        ok(keyscore(
            &store,
            &["upload", "--key", key, path.to_str().unwrap()],
        ));
        ok(keyscore(
            &store,
            &["activate", "--key", key, "--version", "1"],
        ));
    }
    let input = dir.path().join("records.jsonl");
    std::fs::write(
        &input,
        [
            r#"{"id":1,"city":"t","a":1,"b":null}"#,
            r#"{"id":2,"city":"t","a":-1}"#,
            r#"{"id":3,"city":"t","b":1}"#,
            r#"{"id":4,"city":"lin","a":1,"b":null}"#,
            r#"{"id":5,"city":"lin","a":1}"#,
            r#"{"id":6,"city":"t","a":"x","b":1}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let (scored, dead) = (dir.path().join("scored"), dir.path().join("dead"));
    ok(keyscore(
        &store,
        &[
            "score",
            "--input",
            input.to_str().unwrap(),
            "--output",
            scored.to_str().unwrap(),
            "--dead-letters",
            dead.to_str().unwrap(),
        ],
    ));
    let values: BTreeMap<u64, f64> = lines(&scored)
        .iter()
        .map(|s| {
            (
                s["id"].as_u64().unwrap(),
                s["prediction"]["value"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        values,
        BTreeMap::from([
            (1, 0.5 + 1.0 + 20.0),
            (2, 0.5 + 1.0 + 10.0),
            (3, 0.5 + 2.0 + 20.0)
        ])
    );
    let dead: BTreeMap<u64, (String, String)> = lines(&dead)
        .iter()
        .map(|d| {
            (
                d["line"].as_u64().unwrap(),
                (
                    d["reason"].as_str().unwrap().to_string(),
                    d["message"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    let reason = |line: u64| dead[&line].0.as_str();
    let message = |line: u64| dead[&line].1.as_str();
    assert_eq!(dead.len(), 3, "{dead:?}");
    assert_eq!(reason(4), "missing_feature");
    assert!(
        message(4).contains("'b' is missing (null)"),
        "{}",
        message(4)
    );
    assert_eq!(reason(5), "missing_feature");
    assert!(
        message(5).contains("'b' is missing (absent"),
        "{}",
        message(5)
    );
    // A string where a number is expected stays a dead letter, whatever the model.
    assert_eq!(reason(6), "non_numeric_feature");
}
