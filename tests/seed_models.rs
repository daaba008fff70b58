//! The seed models in `seed/` build, score like the libraries that trained them, and come with
//! the sample records they claim. Regenerate everything with
//! `cargo run --release --example make_seed`; see `seed/README.md`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use approx::assert_relative_eq;
use keyscore::model::{Model, ModelSpec, Output, Prediction};
use keyscore::synth::{CITIES, FEATURES};
use serde_json::Value;

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("seed")
}

/// Every `seed/models/<key>/v<N>.json` as (key, version, path), sorted.
fn model_files() -> Vec<(String, u32, PathBuf)> {
    let mut files = Vec::new();
    for key_dir in fs::read_dir(seed_dir().join("models")).expect("seed/models exists") {
        let key_dir = key_dir.unwrap().path();
        let key = key_dir.file_name().unwrap().to_str().unwrap().to_string();
        for file in fs::read_dir(&key_dir).unwrap() {
            let path = file.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap();
            let version = name
                .strip_prefix('v')
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected file {}", path.display()));
            files.push((key.clone(), version, path));
        }
    }
    files.sort();
    files
}

fn load(key: &str, version: u32) -> Model {
    let path = seed_dir()
        .join("models")
        .join(key)
        .join(format!("v{version}.json"));
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ModelSpec::from_json(&bytes)
        .and_then(|spec| spec.build())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn features(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .expect("features are an array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

/// Rows of `seed/expected/<key>/v<version>.jsonl`.
fn expected_rows(key: &str, version: u32) -> Vec<Value> {
    let path = seed_dir()
        .join("expected")
        .join(key)
        .join(format!("v{version}.jsonl"));
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).expect("expected rows are JSON"))
        .collect()
}

/// Checks every expected row of every model of `kind`; returns how many rows were checked.
fn check_expected(kind: &str, check: impl Fn(&str, &Prediction, &Value)) -> usize {
    let mut checked = 0;
    for (key, version, _) in model_files() {
        let model = load(&key, version);
        if model.kind_name() != kind {
            continue;
        }
        let rows = expected_rows(&key, version);
        assert!(
            rows.len() >= 50,
            "{key} v{version}: only {} rows",
            rows.len()
        );
        for row in rows {
            let what = format!("{key} v{version} {}", row["id"]);
            let prediction = model
                .predict(&features(&row["features"]))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            check(&what, &prediction, &row);
            checked += 1;
        }
    }
    checked
}

fn value_of(what: &str, prediction: &Prediction) -> f64 {
    match prediction {
        Prediction::Value(v) => *v,
        other => panic!("{what}: expected a value, got {other:?}"),
    }
}

#[test]
fn every_seed_model_builds_with_the_eight_features_in_order() {
    let files = model_files();
    assert!(!files.is_empty());
    for (key, version, path) in &files {
        let model = load(key, *version);
        assert_eq!(model.features(), FEATURES, "{}", path.display());
    }
}

/// The training rows of a seed model, drawn again from the generator as `make_seed` drew them
/// (the seed and row counts are in its `metadata.training`; the first 80% trained).
fn training_rows(key: &str, version: u32) -> Vec<[f64; 8]> {
    let path = seed_dir()
        .join("models")
        .join(key)
        .join(format!("v{version}.json"));
    let spec: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let training = &spec["metadata"]["training"];
    let seed = training["generator_seed"].as_u64().unwrap();
    let rows = training["rows"].as_u64().unwrap() as usize;
    let held_out = training["held_out_rows"].as_u64().unwrap() as usize;
    // The rain surcharge of paris v2's world changes the targets, not the features.
    let mut generator = keyscore::synth::Generator::new(seed);
    (0..rows - held_out)
        .map(|_| {
            if key == "_default" {
                generator.next_record().features
            } else {
                generator.next_for_city(key).unwrap().features
            }
        })
        .collect()
}

#[test]
fn every_seed_model_carries_the_statistics_of_its_training_rows() {
    for (key, version, path) in model_files() {
        let model = load(&key, version);
        let reference = model
            .reference()
            .unwrap_or_else(|| panic!("{}: no reference", path.display()));
        let rows = training_rows(&key, version);
        assert_eq!(reference.rows, rows.len() as u64, "{}", path.display());
        let bins_hold = |bins: &keyscore::model::Bins, values: &[f64], what: &str| {
            let mut counts = vec![0usize; bins.len()];
            for &v in values {
                counts[bins.bin(v)] += 1;
            }
            let shares: Vec<f64> = counts
                .iter()
                .map(|&c| c as f64 / values.len() as f64)
                .collect();
            assert_eq!(shares, bins.shares, "{} {what}", path.display());
            // Decile bins: at most 10, none empty.
            assert!(bins.len() <= 10 && counts.iter().all(|&c| c > 0), "{what}");
        };
        for (j, f) in reference.features.iter().enumerate() {
            let values: Vec<f64> = rows.iter().map(|r| r[j]).collect();
            bins_hold(&f.bins, &values, FEATURES[j]);
            assert_eq!(f.missing, 0.0);
            assert_eq!(f.min, values.iter().copied().fold(f64::INFINITY, f64::min));
            assert_eq!(
                f.max,
                values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            );
        }
        let predictions: Vec<f64> = rows
            .iter()
            .map(|r| match model.predict(r).unwrap() {
                Prediction::Value(v) => v,
                Prediction::Class { probabilities, .. } => probabilities[1],
            })
            .collect();
        bins_hold(
            reference.prediction.as_ref().expect("prediction bins"),
            &predictions,
            "prediction",
        );
    }
}

#[test]
fn every_city_and_the_fallback_have_a_model_of_the_documented_kind() {
    let kinds: BTreeMap<(String, u32), &str> = model_files()
        .into_iter()
        .map(|(key, version, _)| {
            let kind = load(&key, version).kind_name();
            ((key, version), kind)
        })
        .collect();
    let documented = [
        ("paris", "linear"),
        ("london", "logistic"),
        ("berlin", "random_forest"),
        ("madrid", "linear"),
        ("rome", "logistic"),
        ("vienna", "random_forest"),
        ("lisbon", "mlp"),
        ("amsterdam", "mlp"),
        ("_default", "linear"),
    ];
    for (key, kind) in documented {
        assert_eq!(kinds.get(&(key.to_string(), 1)), Some(&kind), "{key} v1");
    }
    assert_eq!(kinds.get(&("paris".to_string(), 2)), Some(&"linear"));
    assert_eq!(kinds.len(), documented.len() + 1, "{kinds:?}");
    for city in CITIES {
        assert!(kinds.contains_key(&(city.to_string(), 1)), "{city}");
    }
}

#[test]
fn logistic_models_are_late_or_on_time_classifiers() {
    for key in ["london", "rome"] {
        let model = load(key, 1);
        assert_eq!(
            model.output(),
            &Output::Classification(vec!["on_time".into(), "late".into()])
        );
    }
}

#[test]
fn linear_models_match_smartcore() {
    let checked = check_expected("linear", |what, prediction, row| {
        let expected = row["value"].as_f64().expect("a value");
        assert_relative_eq!(value_of(what, prediction), expected, max_relative = 1e-9);
    });
    assert!(checked >= 4 * 50, "{checked}");
}

#[test]
fn logistic_models_match_smartcore() {
    let checked = check_expected("logistic", |what, prediction, row| {
        let Prediction::Class {
            index,
            probabilities,
        } = prediction
        else {
            panic!("{what}: expected a class, got {prediction:?}");
        };
        let class = ["on_time", "late"][*index];
        assert_eq!(class, row["class"], "{what}");
        let expected = features(&row["probabilities"]);
        assert_eq!(probabilities.len(), 2, "{what}");
        for (got, want) in probabilities.iter().zip(&expected) {
            assert_relative_eq!(*got, *want, max_relative = 1e-9);
        }
    });
    assert!(checked >= 2 * 50, "{checked}");
}

#[test]
fn forests_match_smartcore_exactly() {
    let checked = check_expected("random_forest", |what, prediction, row| {
        let expected = row["value"].as_f64().expect("a value");
        let got = value_of(what, prediction);
        assert_eq!(
            got.to_bits(),
            expected.to_bits(),
            "{what}: {got} != {expected}"
        );
    });
    assert!(checked >= 2 * 50, "{checked}");
}

#[test]
fn mlps_match_the_reference_forward_pass() {
    let checked = check_expected("mlp", |what, prediction, row| {
        let expected = row["value"].as_f64().expect("a value");
        let got = value_of(what, prediction);
        assert_relative_eq!(got, expected, max_relative = 1e-9);
    });
    assert!(checked >= 2 * 50, "{checked}");
}

/// Lines of `seed/records.jsonl`, parsed where they parse.
fn records() -> Vec<(String, Option<Value>)> {
    fs::read_to_string(seed_dir().join("records.jsonl"))
        .expect("seed/records.jsonl exists")
        .lines()
        .map(|line| (line.to_string(), serde_json::from_str(line).ok()))
        .collect()
}

fn manifest() -> Value {
    let text = fs::read_to_string(seed_dir().join("records.manifest.json"))
        .expect("seed/records.manifest.json exists");
    serde_json::from_str(&text).expect("the manifest is JSON")
}

/// The record's features in model order, if all eight are numbers.
fn record_features(record: &Value) -> Option<Vec<f64>> {
    FEATURES.iter().map(|name| record[*name].as_f64()).collect()
}

#[test]
fn expected_rows_are_seed_records() {
    let by_id: BTreeMap<String, Vec<f64>> = records()
        .into_iter()
        .filter_map(|(_, record)| {
            let record = record?;
            Some((
                record["id"].as_str()?.to_string(),
                record_features(&record)?,
            ))
        })
        .collect();
    for (key, version, _) in model_files() {
        for row in expected_rows(&key, version) {
            let id = row["id"].as_str().expect("an id");
            assert_eq!(
                by_id.get(id),
                Some(&features(&row["features"])),
                "{key} v{version} {id}"
            );
        }
    }
}

#[test]
fn paris_v2_predicts_differently_from_v1() {
    let (v1, v2) = (load("paris", 1), load("paris", 2));
    let (mut rainy, mut rain_shift) = (0, 0.0);
    for (line, record) in records() {
        let Some(record) = record else { continue };
        if record["city"] != "paris" {
            continue;
        }
        let Some(x) = record_features(&record) else {
            continue;
        };
        let (a, b) = (v1.predict(&x).unwrap(), v2.predict(&x).unwrap());
        assert_ne!(a, b, "{line}");
        if x[4] >= 2.0 {
            rainy += 1;
            rain_shift += value_of(&line, &b) - value_of(&line, &a);
        }
    }
    // v2 learnt the rain surcharge: in real rain it predicts clearly longer deliveries.
    assert!(rainy >= 10, "{rainy} rainy paris records");
    let mean_shift = rain_shift / rainy as f64;
    assert!(
        mean_shift > 3.0,
        "mean shift in the rain {mean_shift} minutes"
    );
}

#[test]
fn records_contain_the_special_lines_the_manifest_claims() {
    let manifest = manifest();
    let lines = records();
    assert_eq!(manifest["lines"].as_u64(), Some(lines.len() as u64));
    let special: BTreeMap<usize, String> = manifest["special"]
        .as_array()
        .expect("a list of special lines")
        .iter()
        .map(|s| {
            (
                s["line"].as_u64().unwrap() as usize,
                s["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let kinds: Vec<&str> = special.values().map(String::as_str).collect();
    for kind in [
        "truncated_json",
        "not_json",
        "missing_city",
        "missing_feature",
        "non_numeric_feature",
        "unknown_city",
    ] {
        assert!(kinds.contains(&kind), "no {kind} line");
    }

    let mut well_formed = 0;
    for (number, (line, record)) in (1..).zip(&lines) {
        let what = format!("line {number}: {line}");
        match special.get(&number).map(String::as_str) {
            Some("truncated_json") | Some("not_json") => assert!(record.is_none(), "{what}"),
            Some(kind) => {
                let record = record.as_ref().unwrap_or_else(|| panic!("{what}"));
                assert!(record["id"].is_string(), "{what}");
                match kind {
                    "missing_city" => assert!(record.get("city").is_none(), "{what}"),
                    "missing_feature" => {
                        let missing = FEATURES.iter().filter(|f| record.get(**f).is_none());
                        assert_eq!(missing.count(), 1, "{what}");
                    }
                    "non_numeric_feature" => {
                        let strings = FEATURES.iter().filter(|f| record[**f].is_string());
                        assert_eq!(strings.count(), 1, "{what}");
                    }
                    "unknown_city" => {
                        let city = record["city"].as_str().expect("a city");
                        assert!(!CITIES.contains(&city), "{what}");
                        assert!(record_features(record).is_some(), "{what}");
                    }
                    other => panic!("unknown kind {other}"),
                }
            }
            None => {
                let record = record.as_ref().unwrap_or_else(|| panic!("{what}"));
                assert!(record["id"].is_string(), "{what}");
                let city = record["city"].as_str().unwrap_or_default();
                assert!(CITIES.contains(&city), "{what}");
                assert!(record_features(record).is_some(), "{what}");
                well_formed += 1;
            }
        }
    }
    assert!(well_formed >= 2000, "{well_formed}");
}
