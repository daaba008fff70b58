//! Records in, records out: the fallback chain a record's fields describe (each level, a key
//! whose own version is refused, a key that gains a model mid-stream, the per-level metric,
//! one lookup per key per batch), and every output shape through `keyscore score` for a
//! regressor and a classifier, with generated ids, checked against the JSON Schema in
//! `seed/schema/` by Python's `jsonschema`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Arc,
    time::Duration,
};

use keyscore::{
    registry::{ModelRegistry, RegistryConfig},
    store::{EmbeddedModelStore, MemoryModelStore, ModelStore},
    stream::{
        record::RecordsConfig, FallbackCause, Input, Level, Metrics, Outcome, OutputShape, Reason,
        Scorer,
    },
};
use keyscore_testkit::cqlnode::clients::python;
use serde_json::Value;

/// A linear model over features a and b: `a + 2b + intercept`.
fn linear(intercept: f64) -> String {
    format!(
        r#"{{"format_version":1,"features":["a","b"],"model":{{"kind":"linear","coefficients":[1.0,2.0],"intercept":{intercept}}},"output":{{"type":"regression"}}}}"#
    )
}

fn registry_config(fallback: Option<&str>) -> RegistryConfig {
    RegistryConfig {
        capacity: 1000,
        max_bytes: 1 << 30,
        fallback_key: fallback.map(str::to_string),
        refresh_interval: Duration::from_millis(20),
        resync_every: 0,
    }
}

/// A store with models for a city (paris), a country (fr), a region (south) and the default;
/// nice's active version does not build.
async fn chain_store() -> Arc<MemoryModelStore> {
    let store = Arc::new(MemoryModelStore::default());
    for (key, intercept) in [
        ("paris", 100.0),
        ("fr", 10.0),
        ("south", 20.0),
        ("_default", 0.0),
    ] {
        store
            .put_version(key, Some(1), &linear(intercept))
            .await
            .unwrap();
        store.activate(key, 1).await.unwrap();
    }
    // Three coefficients for two features: refused when built.
    let broken = r#"{"format_version":1,"features":["a","b"],"model":{"kind":"linear","coefficients":[1.0,2.0,3.0],"intercept":0.0},"output":{"type":"regression"}}"#;
    store.insert_version("nice", Some(1), broken).await.unwrap();
    store.activate("nice", 1).await.unwrap();
    store
}

fn records_config(fields: &[&str]) -> RecordsConfig {
    RecordsConfig {
        fallback_fields: fields.iter().map(|f| f.to_string()).collect(),
        ..RecordsConfig::default()
    }
}

fn inputs<'a>(records: &'a [String]) -> Vec<Input<'a>> {
    records
        .iter()
        .map(|r| Input {
            payload: r.as_bytes(),
            key: None,
        })
        .collect()
}

fn record(id: usize, city: &str, extra: &str) -> String {
    format!(r#"{{"id":{id},"city":"{city}","a":1,"b":2{extra}}}"#)
}

/// (level name, model key, fallback cause) of a scored outcome.
fn level_of(scorer: &Scorer, o: &Outcome) -> (String, String, Option<FallbackCause>) {
    match o {
        Outcome::Scored(s) => {
            assert_eq!(s.fallback, s.level != Level::Own);
            (
                scorer.format().output.level_name(s.level).to_string(),
                s.model.key.clone(),
                s.fallback_cause,
            )
        }
        Outcome::Rejected(r) => panic!("rejected: {} {}", r.reason, r.message),
    }
}

/// The per-level counter values in a Prometheus exposition of `metrics`.
fn level_counts(metrics: &Metrics) -> BTreeMap<String, u64> {
    let registry = prometheus::Registry::new();
    metrics.register(&registry).unwrap();
    let mut out = BTreeMap::new();
    for family in registry.gather() {
        if family.name() != "keyscore_records_by_fallback_level_total" {
            continue;
        }
        for m in family.get_metric() {
            let level = m.get_label()[0].value().to_string();
            out.insert(level, m.get_counter().get_value() as u64);
        }
    }
    out
}

#[tokio::test]
async fn each_level_of_the_chain_scores_and_says_which_and_why() {
    let store = chain_store().await;
    let registry = Arc::new(ModelRegistry::new(
        store as Arc<dyn ModelStore>,
        registry_config(Some("_default")),
    ));
    let metrics = Arc::new(Metrics::default());
    let scorer = Scorer::new(registry, records_config(&["country", "region"]).format())
        .with_metrics(Arc::clone(&metrics));
    let records = [
        record(1, "paris", r#","country":"fr","region":"south""#),
        record(2, "lyon", r#","country":"fr","region":"south""#),
        record(3, "porto", r#","country":"pt","region":"south""#),
        record(4, "oslo", r#","country":"no","region":"nordic""#),
        record(5, "nice", r#","country":"fr""#),
        record(6, "lima", ""),
        // A chain field holding the record's own key, or no key, is skipped.
        record(7, "quito", r#","country":"quito","region":7.5"#),
    ];
    let out = scorer.score(&inputs(&records), None).await.outcomes;
    let got: Vec<_> = out.iter().map(|o| level_of(&scorer, o)).collect();
    let want = [
        ("own", "paris", None),
        ("country", "fr", Some(FallbackCause::NoModel)),
        ("region", "south", Some(FallbackCause::NoModel)),
        ("default", "_default", Some(FallbackCause::NoModel)),
        ("country", "fr", Some(FallbackCause::Refused)),
        ("default", "_default", Some(FallbackCause::NoModel)),
        ("default", "_default", Some(FallbackCause::NoModel)),
    ];
    for (i, (got, want)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            (got.0.as_str(), got.1.as_str(), got.2),
            want,
            "record {}",
            records[i]
        );
    }
    // The model that scored is the one its level names: a + 2b + its intercept.
    let Outcome::Scored(lyon) = &out[1] else {
        unreachable!()
    };
    assert_eq!(lyon.prediction, keyscore::model::Prediction::Value(15.0));
    assert_eq!(
        level_counts(&metrics),
        BTreeMap::from([
            ("own".to_string(), 1),
            ("country".to_string(), 2),
            ("region".to_string(), 1),
            ("default".to_string(), 3),
        ])
    );
}

#[tokio::test]
async fn without_a_model_anywhere_on_the_chain_a_record_is_a_dead_letter_naming_the_chain() {
    let store = chain_store().await;
    let registry = Arc::new(ModelRegistry::new(
        store as Arc<dyn ModelStore>,
        registry_config(None),
    ));
    let scorer = Scorer::new(registry, records_config(&["country", "region"]).format());
    let records = [
        record(1, "oslo", r#","country":"no","region":"nordic""#),
        record(2, "nice", r#","country":"it""#),
    ];
    let out = scorer.score(&inputs(&records), None).await.outcomes;
    match &out[0] {
        Outcome::Rejected(r) => {
            assert_eq!(r.reason, Reason::NoModel);
            assert!(r.message.contains("oslo"), "{}", r.message);
            assert!(r.message.contains("country, region"), "{}", r.message);
        }
        other => panic!("{other:?}"),
    }
    match &out[1] {
        Outcome::Rejected(r) => {
            assert_eq!(r.reason, Reason::NoModel);
            assert!(r.message.contains("nice version 1"), "{}", r.message);
            assert!(r.message.contains("refused"), "{}", r.message);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_key_that_gains_a_model_mid_stream_scores_with_it_after_the_next_poll() {
    let store = chain_store().await;
    let registry = Arc::new(ModelRegistry::new(
        Arc::clone(&store) as Arc<dyn ModelStore>,
        registry_config(Some("_default")),
    ));
    let scorer = Scorer::new(
        Arc::clone(&registry),
        records_config(&["country", "region"]).format(),
    );
    // A first poll reads the feed's cursor, as the watcher does when it starts.
    registry.poll().await.unwrap();
    let records: Vec<String> = (0..100)
        .map(|i| record(i, "lyon", r#","country":"fr","region":"south""#))
        .collect();
    let loads = registry.stats().loads.get();
    let out = scorer.score(&inputs(&records), None).await.outcomes;
    assert!(out.iter().all(|o| level_of(&scorer, o).0 == "country"));
    // One lookup per distinct key of the batch's chains: lyon, fr, south, _default.
    assert_eq!(registry.stats().loads.get() - loads, 4);
    // Negative results are cached: the same batch again reads nothing from the store.
    let (loads, misses) = (registry.stats().loads.get(), registry.stats().misses.get());
    scorer.score(&inputs(&records), None).await;
    assert_eq!(registry.stats().loads.get(), loads);
    assert_eq!(registry.stats().misses.get(), misses);

    store
        .put_version("lyon", Some(1), &linear(50.0))
        .await
        .unwrap();
    store.activate("lyon", 1).await.unwrap();
    // Until the watcher sees the activation, the cached answer stands.
    let before = scorer.score(&inputs(&records[..1]), None).await.outcomes;
    assert_eq!(level_of(&scorer, &before[0]).0, "country");
    registry.poll().await.unwrap();
    let after = scorer.score(&inputs(&records), None).await.outcomes;
    for o in &after {
        assert_eq!(
            level_of(&scorer, o),
            ("own".to_string(), "lyon".to_string(), None)
        );
    }
}

// ---- every output shape through `keyscore score`, checked against the JSON Schema ----

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn keyscore(store: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyscore"));
    cmd.arg("--store")
        .arg(format!("sqlite://{}", store.display()))
        .args(args)
        .env_remove("KEYSCORE_CONFIG")
        .env("KEYSCORE_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("keyscore runs")
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

/// Validates every line of `path` against `shape` of the repository's output schema with
/// Python's `jsonschema`; returns how many lines it validated.
fn validate(shape: &str, path: &Path) -> usize {
    let out = Command::new(python())
        .arg(repo("tests/data/validate_outputs.py"))
        .arg(repo("seed/schema/output.schema.json"))
        .arg(shape)
        .arg(path)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{shape} outputs do not match the schema:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// A SQLite store with the seed's paris (a regressor), london (a binary classifier) and
/// _default models active, and a country model `uk`.
async fn seed_store(dir: &Path) -> PathBuf {
    let path = dir.join("models.db");
    let store = EmbeddedModelStore::open(path.to_str().unwrap()).unwrap();
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
    path
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The input: seed records of paris and london, each city once without an id (and once with
/// a null one), and a city without a model in the uk.
fn input_lines() -> Vec<String> {
    let seed = std::fs::read_to_string(repo("seed/records.jsonl")).unwrap();
    let mut out: Vec<String> = seed
        .lines()
        .filter(|l| l.contains(r#""city":"paris""#) || l.contains(r#""city":"london""#))
        .filter(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["id"].is_string()))
        .take(60)
        .map(str::to_string)
        .collect();
    assert!(out.iter().any(|l| l.contains("london")) && out.iter().any(|l| l.contains("paris")));
    let first_of = |out: &[String], city: &str| -> Value {
        serde_json::from_str(out.iter().find(|l| l.contains(city)).unwrap()).unwrap()
    };
    for city in ["paris", "london"] {
        let mut v = first_of(&out, city);
        v.as_object_mut().unwrap().remove("id");
        out.insert(3, v.to_string());
        v["id"] = Value::Null;
        out.push(v.to_string());
    }
    let mut leeds = first_of(&out, "london");
    leeds["city"] = "leeds".into();
    leeds["id"] = "leeds-1".into();
    leeds["country"] = "uk".into();
    out.push(leeds.to_string());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_output_shape_of_score_matches_the_schema_for_a_regressor_and_a_classifier() {
    let dir = tempfile::tempdir().unwrap();
    let store = seed_store(dir.path()).await;
    let input_lines = input_lines();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, input_lines.join("\n") + "\n").unwrap();
    let inputs: Vec<Value> = input_lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let london: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("seed/models/london/v1.json")).unwrap())
            .unwrap();
    let classes: Vec<&str> = london["output"]["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();

    let mut by_shape: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for shape in ["scored", "enriched", "prediction_log"] {
        let out = dir.path().join(format!("{shape}.jsonl"));
        let dead = dir.path().join(format!("{shape}-dead.jsonl"));
        ok(keyscore(
            &store,
            &[
                ("KEYSCORE__RECORDS__OUTPUT", shape),
                ("KEYSCORE__RECORDS__FALLBACK_FIELDS", r#"["country"]"#),
            ],
            &[
                "score",
                "--input",
                input.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
                "--dead-letters",
                dead.to_str().unwrap(),
            ],
        ));
        assert_eq!(std::fs::read_to_string(&dead).unwrap(), "", "{shape}");
        assert_eq!(validate(shape, &out), inputs.len(), "{shape}");
        let text = std::fs::read_to_string(&out).unwrap();
        if shape == "enriched" {
            // The input's bytes, in order, then keyscore's fields.
            for (line, input) in text.lines().zip(&input_lines) {
                let close = input.rfind('}').unwrap();
                assert_eq!(&line[..close], &input[..close]);
                assert!(line[close..].starts_with(r#","keyscore":{"#), "{line}");
            }
        }
        by_shape.insert(shape, lines(&out));
    }

    let scored = &by_shape["scored"];
    let enriched = &by_shape["enriched"];
    let log = &by_shape["prediction_log"];
    let (mut regression, mut classification) = (0, 0);
    for (n, input) in inputs.iter().enumerate() {
        let (s, e, l) = (&scored[n], &enriched[n]["keyscore"], &log[n]);
        // Every shape has the record's id, or line-N for a record without one.
        let generated = input["id"].is_null();
        let id = if generated {
            Value::from(format!("line-{}", n + 1))
        } else {
            input["id"].clone()
        };
        for (shape, out) in [("scored", s), ("enriched", e), ("prediction_log", l)] {
            assert_eq!(out["id"], id, "{shape} line {}", n + 1);
            assert_eq!(out["id_generated"], generated, "{shape} line {}", n + 1);
            assert_eq!(out["key"], input["city"], "{shape}");
            assert_eq!(out["model_checksum"], s["model_checksum"], "{shape}");
            assert_eq!(out["fallback_level"], s["fallback_level"], "{shape}");
        }
        // The enriched record is the input plus one field.
        let mut without = enriched[n].clone();
        without.as_object_mut().unwrap().remove("keyscore");
        assert_eq!(&without, input);
        for field in ["prediction", "model_key", "model_version", "fallback"] {
            assert_eq!(e[field], s[field], "{field}");
        }
        // The prediction log names the model and what it read and produced.
        assert_eq!(l["model_name"], s["model_key"]);
        assert_eq!(l["model_version"], s["model_version"]);
        assert_eq!(l["outputs"], s["prediction"]);
        assert_eq!(l["timestamp"], l["scored_at"]);
        let model_key = s["model_key"].as_str().unwrap();
        let file = if model_key == "uk" {
            "london"
        } else {
            model_key
        };
        let spec: Value = serde_json::from_str(
            &std::fs::read_to_string(repo(&format!("seed/models/{file}/v1.json"))).unwrap(),
        )
        .unwrap();
        let mut read: Vec<&String> = l["inputs"].as_object().unwrap().keys().collect();
        read.sort();
        let mut features: Vec<&str> = spec["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        features.sort();
        assert_eq!(read, features);
        for f in features {
            assert_eq!(l["inputs"][f].as_f64(), input[f].as_f64(), "{f}");
        }

        let p = &s["prediction"];
        match p.get("class") {
            None => {
                regression += 1;
                assert!(p["value"].is_f64());
            }
            Some(class) => {
                classification += 1;
                // value is the probability of the second class.
                assert_eq!(p["value"], p["probabilities"][classes[1]]);
                let best = classes
                    .iter()
                    .max_by(|a, b| {
                        p["probabilities"][**a]
                            .as_f64()
                            .partial_cmp(&p["probabilities"][**b].as_f64())
                            .unwrap()
                    })
                    .unwrap();
                assert_eq!(class, best);
            }
        }
    }
    assert!(
        regression > 10 && classification > 10,
        "{regression} {classification}"
    );
    // The city without a model was scored by its country's.
    let leeds = scored.iter().find(|s| s["key"] == "leeds").unwrap();
    assert_eq!(leeds["fallback_level"], "country");
    assert_eq!(leeds["model_key"], "uk");
    assert_eq!(leeds["fallback_cause"], "no_model");
}

#[test]
fn the_example_configs_in_seed_parse_and_name_their_shape() {
    for (file, shape) in [
        ("seed/keyscore.toml", OutputShape::Scored),
        ("seed/keyscore-enriched.toml", OutputShape::Enriched),
        (
            "seed/keyscore-prediction-log.toml",
            OutputShape::PredictionLog,
        ),
    ] {
        let config = keyscore::config::Config::from_toml_with_env(
            &std::fs::read_to_string(repo(file)).unwrap(),
            file,
            std::iter::empty(),
        )
        .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(config.records.output, shape, "{file}");
    }
}

#[test]
fn the_demo_prints_an_enriched_example_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyscore"))
        .args(["demo", "--seconds", "0", "--seed-dir"])
        .arg(repo("seed"))
        .arg("--db")
        .arg(dir.path().join("demo.db"))
        .env_remove("KEYSCORE_CONFIG")
        .env("KEYSCORE_LOG", "warn")
        .output()
        .expect("keyscore runs");
    let text = ok(out);
    let heading = text
        .lines()
        .position(|l| l.contains(r#"output = "enriched""#))
        .unwrap_or_else(|| panic!("no enriched example in:\n{text}"));
    let line = text.lines().nth(heading + 1).unwrap().trim();
    let enriched: Value = serde_json::from_str(line).unwrap();
    // The first seed record that scores, unchanged, plus keyscore's fields.
    let seed = std::fs::read_to_string(repo("seed/records.jsonl")).unwrap();
    let id = enriched["keyscore"]["id"].as_str().unwrap();
    let input = seed
        .lines()
        .find(|l| l.contains(&format!(r#""id":"{id}""#)))
        .unwrap();
    let close = input.rfind('}').unwrap();
    assert_eq!(&line[..close], &input[..close]);
    assert_eq!(enriched["keyscore"]["key"], enriched["city"]);
    assert!(enriched["keyscore"]["prediction"]["value"].is_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_score_scores_a_city_by_its_own_model_once_it_gains_one() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    let db = seed_store(dir.path()).await;
    // leeds has no model of its own: its country's (uk) scores it until it gets one.
    let record = r#"{"city":"leeds","country":"uk","distance_km":3.1,"items":2,"hour":12,"is_weekend":0,"rain_mm":4.0,"courier_rating":4.5,"traffic_index":0.5,"prep_time_min":12}"#;
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyscore"))
        .arg("--store")
        .arg(format!("sqlite://{}", db.display()))
        .arg("score")
        .env_remove("KEYSCORE_CONFIG")
        .env("KEYSCORE__STORE__REFRESH_INTERVAL_MS", "100")
        .env("KEYSCORE__RECORDS__FALLBACK_FIELDS", r#"["country"]"#)
        .env("KEYSCORE__RECORDS__OUTPUT", "enriched")
        .env("KEYSCORE_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut n = 0u64;
    // One record in, its output out; the output says which line it was.
    let mut next = |stdin: &mut std::process::ChildStdin| -> Value {
        n += 1;
        writeln!(stdin, "{record}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let out: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert_eq!(out["keyscore"]["id"], format!("line-{n}"));
        assert_eq!(out["keyscore"]["id_generated"], true);
        out["keyscore"].clone()
    };
    for _ in 0..5 {
        let out = next(&mut stdin);
        assert_eq!(out["fallback_level"], "country");
        assert_eq!(out["model_key"], "uk");
    }
    let store = EmbeddedModelStore::open(db.to_str().unwrap()).unwrap();
    let spec = std::fs::read_to_string(repo("seed/models/paris/v1.json")).unwrap();
    store.put_version("leeds", Some(1), &spec).await.unwrap();
    store.activate("leeds", 1).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = next(&mut stdin);
        if out["fallback_level"] == "own" {
            assert_eq!(out["model_key"], "leeds");
            assert_eq!(out["fallback"], false);
            assert!(out.get("fallback_cause").is_none());
            break;
        }
        assert_eq!(out["model_key"], "uk");
        assert!(
            std::time::Instant::now() < deadline,
            "the running scorer never served leeds's own model"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..20 {
        assert_eq!(next(&mut stdin)["model_key"], "leeds", "never back to uk");
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}
