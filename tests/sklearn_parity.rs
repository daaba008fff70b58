//! scikit-learn parity: a model exported with `keyscore_sklearn` predicts in keyscore what it
//! predicts in scikit-learn.
//!
//! The test runs `tests/data/make_parity_fixtures.py` with the Python interpreter named by
//! `KEYSCORE_PYTHON` (default `python3`; it needs scikit-learn, and the repository's
//! `python/` directory is put first on `PYTHONPATH` so the exporter under test is this
//! checkout's; XGBoost and LightGBM are needed too). The script fits every supported estimator on
//! datasets shipped with scikit-learn, and boosted models also on seeded synthetic frames with
//! missing values and integer-coded categories, and writes, per estimator, the exported spec and scikit-learn's predictions
//! for held-out rows. Each spec is built with [`ModelSpec::build`] and every row is scored:
//!
//! * trees, forests and boosted trees must match bit for bit (values and probabilities):
//!   scikit-learn's `GradientBoosting*` and `HistGradientBoosting*`, XGBoost and LightGBM sum
//!   leaves in tree order and keyscore does the same, in the same precision, with the same
//!   `exp`; the exception is scikit-learn's multiclass boosting probabilities, whose softmax
//!   runs through numpy's vectorised `exp`, checked within `1e-12 * max(1, |sklearn|)` (a
//!   fixture's `tolerance`);
//! * linear, logistic and MLP models must satisfy `|keyscore - sklearn| <= 1e-9 * max(1,
//!   |sklearn|)`: relative error for values above 1 in magnitude, absolute error below;
//! * a classifier's predicted class must be scikit-learn's `predict`.
//!
//! `Pipeline([('prep', ColumnTransformer(...)), ('model', ...)])` cases are fitted on a seeded
//! frame with string categories, a nested field (`user.age`) and missing values; their held-out
//! rows are JSON records (with categories unseen in training, missing values absent or `null`)
//! read as the scorer reads them, and compared with the pipeline's own `predict` and
//! `predict_proba`. The encoders, the imputer and the scaler compute the model's inputs with
//! the same `f64` operations as scikit-learn (`(x - mean_) / scale_`, 0/1, category codes), so
//! boosted models match bit for bit; logistic regression and multiclass probabilities keep the
//! `1e-12` bound of their summation order and vectorised `exp`.
//!
//! Every spec is exported with its training rows as reference data (`reference=`), and the
//! fixture holds those rows: keyscore bins them with [`Bins::bin`] and must find the exported
//! shares exactly (the same rule, `number of edges <= v`, on both sides), the same missing
//! shares and ranges, and the same prediction distribution (exactly for bit-for-bit models).
//!
//! `cargo test --test sklearn_parity -- --nocapture` prints the largest absolute and relative
//! error per estimator and per model kind.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use keyscore::{
    model::{Bins, Model, ModelSpec, Output, Prediction},
    stream::record::{decode, RecordFormat},
};
use serde::Deserialize;

/// Bound on `|keyscore - sklearn| / max(1, |sklearn|)` for the non-exact kinds.
const TOLERANCE: f64 = 1e-9;
/// Mismatches reported per estimator before the rest are only counted.
const MAX_REPORTED: usize = 5;

/// One estimator's expected behaviour, written by the fixture script.
#[derive(Debug, Deserialize)]
struct Fixture {
    case: String,
    estimator: String,
    exact: bool,
    /// The bound on `|keyscore - library| / max(1, |library|)` when not exact; default
    /// [`TOLERANCE`].
    #[serde(default)]
    tolerance: Option<f64>,
    /// Rows of feature values as IEEE-754 bits in hex.
    x: Vec<Vec<String>>,
    /// Instead of `x`: the rows as JSON records (string categories, nested fields, missing
    /// values absent or null), read as the scorer reads them.
    #[serde(default)]
    records: Option<Vec<String>>,
    /// Class labels (classifiers) or regression values as bits in hex.
    predict: Vec<String>,
    /// Class probabilities as bits in hex; classifiers only.
    proba: Option<Vec<Vec<String>>>,
    /// The training rows the spec's `reference` was computed on, as bits in hex.
    #[serde(default)]
    reference_x: Vec<Vec<String>>,
    /// Instead of `reference_x`: the training rows as JSON records.
    #[serde(default)]
    reference_records: Option<Vec<String>>,
}

/// An estimator the exporter must refuse.
#[derive(Debug, Deserialize)]
struct Refusal {
    estimator: String,
    expect: String,
    message: Option<String>,
}

/// Largest errors seen, and how many values were compared.
#[derive(Debug, Default, Clone, Copy)]
struct Errors {
    values: usize,
    max_abs: f64,
    max_rel: f64,
}

impl Errors {
    fn add(&mut self, other: Errors) {
        self.values += other.values;
        self.max_abs = self.max_abs.max(other.max_abs);
        self.max_rel = self.max_rel.max(other.max_rel);
    }
}

fn python() -> OsString {
    std::env::var_os("KEYSCORE_PYTHON").unwrap_or_else(|| "python3".into())
}

fn python_command(repo: &Path) -> Command {
    let mut path = vec![repo.join("python")];
    if let Some(existing) = std::env::var_os("PYTHONPATH") {
        path.extend(std::env::split_paths(&existing));
    }
    let mut command = Command::new(python());
    command.env(
        "PYTHONPATH",
        std::env::join_paths(path).expect("PYTHONPATH is joinable"),
    );
    command
}

/// Runs the fixture script into `out`, failing loudly when Python or scikit-learn is missing.
fn make_fixtures(repo: &Path, out: &Path) {
    let how = "set KEYSCORE_PYTHON to a Python interpreter with scikit-learn, XGBoost and \
               LightGBM installed, for example: python3 -m venv .venv && .venv/bin/pip install \
               -r tests/requirements.txt -e ./python && KEYSCORE_PYTHON=.venv/bin/python cargo \
               test --test sklearn_parity";
    let probe = python_command(repo)
        .args(["-c", "import sklearn, xgboost, lightgbm, keyscore_sklearn"])
        .output()
        .unwrap_or_else(|err| panic!("cannot run {:?} ({err}); {how}", python()));
    assert!(
        probe.status.success(),
        "{:?} cannot import scikit-learn and keyscore_sklearn:\n{}\n{how}",
        python(),
        String::from_utf8_lossy(&probe.stderr)
    );
    let run = python_command(repo)
        .arg(repo.join("tests/data/make_parity_fixtures.py"))
        .arg(out)
        .output()
        .expect("the fixture script starts");
    assert!(
        run.status.success(),
        "make_parity_fixtures.py failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

fn float(hex: &str) -> f64 {
    f64::from_bits(u64::from_str_radix(hex, 16).expect("fixture floats are 16 hex digits"))
}

fn floats(hex: &[String]) -> Vec<f64> {
    hex.iter().map(|h| float(h)).collect()
}

/// Compares keyscore's `got` with scikit-learn's `want`: the errors, and a description of the
/// mismatch if it is one.
fn compare(got: f64, want: f64, exact: bool, tolerance: f64) -> (Errors, Option<String>) {
    let abs = (got - want).abs();
    let rel = if want != 0.0 {
        abs / want.abs()
    } else if got == 0.0 {
        0.0
    } else {
        f64::INFINITY
    };
    let errors = Errors {
        values: 1,
        max_abs: abs,
        max_rel: rel,
    };
    let mismatch = if exact {
        (got.to_bits() != want.to_bits())
            .then(|| format!("got {got:e}, scikit-learn {want:e} (must be bitwise equal)"))
    } else {
        (abs.is_nan() || abs > tolerance * want.abs().max(1.0)).then(|| {
            format!(
                "got {got:e}, scikit-learn {want:e}, error {abs:e} exceeds \
                 {tolerance:e} * max(1, |sklearn|)"
            )
        })
    };
    (errors, mismatch)
}

/// Reads JSON records as the scorer does; checks that some hold categories unseen in training
/// and missing values, so the fixture covers both.
fn records_as_rows(case: &str, model: &Model, records: &[String]) -> Vec<Vec<f64>> {
    let format = RecordFormat::default();
    let (mut unknown, mut missing) = (0, 0);
    let rows: Vec<Vec<f64>> = records
        .iter()
        .map(|text| {
            let record = decode(text.as_bytes(), &format, None)
                .unwrap_or_else(|r| panic!("{case}: record {text} does not decode: {r:?}"));
            let mut x = Vec::new();
            record
                .read_model_features(model, &mut x)
                .unwrap_or_else(|r| panic!("{case}: record {text} is refused: {r:?}"));
            for (i, v) in x.iter().enumerate() {
                missing += usize::from(v.is_nan());
                unknown += usize::from(model.categories(i).is_some() && *v == -1.0);
            }
            x
        })
        .collect();
    assert!(
        unknown > 0 && missing > 0,
        "{case}: the records hold {unknown} unseen categories and {missing} missing values; \
         the fixture must have both"
    );
    rows
}

/// Reads JSON records as the scorer does, with no checks on what they hold.
fn records_as_plain_rows(case: &str, model: &Model, records: &[String]) -> Vec<Vec<f64>> {
    let format = RecordFormat::default();
    records
        .iter()
        .map(|text| {
            let record = decode(text.as_bytes(), &format, None)
                .unwrap_or_else(|r| panic!("{case}: record {text} does not decode: {r:?}"));
            let mut x = Vec::new();
            record
                .read_model_features(model, &mut x)
                .unwrap_or_else(|r| panic!("{case}: record {text} is refused: {r:?}"));
            x
        })
        .collect()
}

/// The share of `values` in each bin of `bins`, binned with [`Bins::bin`].
fn shares(bins: &Bins, values: &[f64]) -> Vec<f64> {
    let mut counts = vec![0usize; bins.len()];
    for &v in values {
        counts[bins.bin(v)] += 1;
    }
    counts
        .iter()
        .map(|&c| c as f64 / values.len() as f64)
        .collect()
}

/// The model's value that reference statistics bin: the regression value, a binary
/// classifier's probability of its second class, a multiclass classifier's class index.
fn binned_value(prediction: &Prediction) -> f64 {
    match prediction {
        Prediction::Value(v) => *v,
        Prediction::Class { probabilities, .. } if probabilities.len() == 2 => probabilities[1],
        Prediction::Class { index, .. } => *index as f64,
    }
}

/// Checks the spec's reference statistics against its training rows binned by keyscore: the
/// feature shares, missing shares and ranges exactly; the prediction shares exactly for a
/// bit-for-bit model, and otherwise up to the rows whose value lies within the tolerance of an
/// edge. Returns the mismatches.
fn check_reference(model: &Model, fixture: &Fixture) -> Vec<String> {
    let case = &fixture.case;
    let Some(reference) = model.reference() else {
        return vec![format!("{case}: the spec has no reference")];
    };
    let rows: Vec<Vec<f64>> = match &fixture.reference_records {
        None => fixture.reference_x.iter().map(|x| floats(x)).collect(),
        Some(records) => records_as_plain_rows(case, model, records),
    };
    let mut failures = Vec::new();
    if reference.rows != rows.len() as u64 {
        failures.push(format!(
            "{case}: reference.rows is {}, the fixture has {} training rows",
            reference.rows,
            rows.len()
        ));
    }
    for (j, (name, f)) in model.features().iter().zip(&reference.features).enumerate() {
        let present: Vec<f64> = rows.iter().map(|r| r[j]).filter(|v| !v.is_nan()).collect();
        let missing = (rows.len() - present.len()) as f64 / rows.len() as f64;
        let min = present.iter().copied().fold(f64::INFINITY, f64::min);
        let max = present.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let binned = shares(&f.bins, &present);
        if binned != f.bins.shares || missing != f.missing || min != f.min || max != f.max {
            failures.push(format!(
                "{case}: feature {name}: keyscore bins the training rows as shares {binned:?},                  missing {missing}, range [{min}, {max}]; the exporter wrote {f:?}"
            ));
        }
    }
    let Some(exported) = &reference.prediction else {
        failures.push(format!("{case}: the reference has no prediction bins"));
        return failures;
    };
    let values: Vec<f64> = rows
        .iter()
        .map(|r| binned_value(&model.predict(r).expect("a training row scores")))
        .collect();
    let binned = shares(exported, &values);
    let tolerance = if fixture.exact {
        0.0
    } else {
        fixture.tolerance.unwrap_or(TOLERANCE)
    };
    // Rows whose value is within the tolerance of an edge may fall either side of it.
    let ambiguous = values
        .iter()
        .filter(|&&v| {
            let d = tolerance * v.abs().max(1.0);
            exported.bin(v - d) != exported.bin(v + d)
        })
        .count() as f64
        / values.len() as f64;
    let off = binned
        .iter()
        .zip(&exported.shares)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    if off > ambiguous {
        failures.push(format!(
            "{case}: keyscore's predictions on the training rows bin as {binned:?}; the exporter              wrote {:?} (edges {:?})",
            exported.shares, exported.edges
        ));
    }
    failures
}

/// Checks every row of one fixture; returns the kind, the errors and the mismatches.
fn check(dir: &Path, fixture: &Fixture) -> (String, Errors, Vec<String>) {
    let case = &fixture.case;
    let text = std::fs::read(dir.join(format!("{case}.spec.json"))).expect("spec file exists");
    let spec = ModelSpec::from_json(&text)
        .unwrap_or_else(|err| panic!("{case}: spec does not decode: {err}"));
    let model = spec
        .build()
        .unwrap_or_else(|err| panic!("{case}: spec does not build: {err}"));
    assert_eq!(
        model.features(),
        spec.features.as_slice(),
        "{case}: feature order"
    );

    let tolerance = fixture.tolerance.unwrap_or(TOLERANCE);
    let mut errors = Errors::default();
    let mut failures = Vec::new();
    let mut fail = |row: usize, what: String| {
        failures.push(format!("{case} ({}) row {row}: {what}", fixture.estimator))
    };
    let rows: Vec<Vec<f64>> = match &fixture.records {
        None => fixture.x.iter().map(|x| floats(x)).collect(),
        Some(records) => records_as_rows(case, &model, records),
    };
    for (row, x) in rows.iter().enumerate() {
        let prediction = match model.predict(x) {
            Ok(p) => p,
            Err(err) => {
                fail(row, format!("scoring failed: {err}"));
                continue;
            }
        };
        match (&prediction, model.output(), &fixture.proba) {
            (Prediction::Value(got), Output::Regression, None) => {
                let (e, mismatch) =
                    compare(*got, float(&fixture.predict[row]), fixture.exact, tolerance);
                errors.add(e);
                if let Some(msg) = mismatch {
                    fail(row, msg);
                }
            }
            (
                Prediction::Class {
                    index,
                    probabilities,
                },
                Output::Classification(labels),
                Some(proba),
            ) => {
                let want = floats(&proba[row]);
                if probabilities.len() != want.len() {
                    fail(
                        row,
                        format!(
                            "{} probabilities, scikit-learn has {}",
                            probabilities.len(),
                            want.len()
                        ),
                    );
                    continue;
                }
                for (class, (got, want)) in probabilities.iter().zip(&want).enumerate() {
                    let (e, mismatch) = compare(*got, *want, fixture.exact, tolerance);
                    errors.add(e);
                    if let Some(msg) = mismatch {
                        fail(
                            row,
                            format!("probability of class {}: {msg}", labels[class]),
                        );
                    }
                }
                if labels[*index] != fixture.predict[row] {
                    fail(
                        row,
                        format!(
                            "predicted class {:?}, scikit-learn predicts {:?}",
                            labels[*index], fixture.predict[row]
                        ),
                    );
                }
            }
            (prediction, output, _) => fail(
                row,
                format!("unexpected {prediction:?} for output {output:?}"),
            ),
        }
    }
    failures.extend(check_reference(&model, fixture));
    (model.kind_name().to_string(), errors, failures)
}

#[test]
fn exported_models_predict_what_scikit_learn_predicts() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    make_fixtures(&repo, dir.path());

    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .expect("fixture dir")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.ends_with(".json") && !name.ends_with(".spec.json") && name != "refusals.json"
        })
        .collect();
    paths.sort();

    let mut by_kind: BTreeMap<String, Errors> = BTreeMap::new();
    let mut covered = std::collections::BTreeSet::new();
    let mut preprocessed = 0;
    let mut failures = Vec::new();
    println!(
        "\n{:<40} {:<48} {:<14} {:>5} {:>8} {:>12} {:>12}",
        "case", "estimator", "kind", "rows", "check", "max abs err", "max rel err"
    );
    for path in &paths {
        let fixture: Fixture =
            serde_json::from_slice(&std::fs::read(path).expect("fixture readable"))
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        let (kind, errors, mut case_failures) = check(dir.path(), &fixture);
        println!(
            "{:<40} {:<48} {:<14} {:>5} {:>8} {:>12.3e} {:>12.3e}{}",
            fixture.case,
            fixture.estimator,
            kind,
            fixture.predict.len(),
            if fixture.exact {
                "exact".to_string()
            } else {
                format!("{:.0e}", fixture.tolerance.unwrap_or(TOLERANCE))
            },
            errors.max_abs,
            errors.max_rel,
            if case_failures.is_empty() {
                String::new()
            } else {
                format!("  {} MISMATCHES", case_failures.len())
            },
        );
        covered.insert((kind.clone(), fixture.proba.is_some()));
        preprocessed += usize::from(fixture.records.is_some());
        by_kind.entry(kind).or_default().add(errors);
        let total = case_failures.len();
        case_failures.truncate(MAX_REPORTED);
        if total > MAX_REPORTED {
            case_failures.push(format!(
                "{}: ... and {} more mismatches",
                fixture.case,
                total - MAX_REPORTED
            ));
        }
        failures.extend(case_failures);
    }
    println!(
        "\n{:<14} {:>8} {:>12} {:>12}",
        "kind", "values", "max abs err", "max rel err"
    );
    for (kind, errors) in &by_kind {
        println!(
            "{kind:<14} {:>8} {:>12.3e} {:>12.3e}",
            errors.values, errors.max_abs, errors.max_rel
        );
    }

    assert!(
        failures.is_empty(),
        "keyscore disagrees with scikit-learn:\n{}",
        failures.join("\n")
    );
    assert!(
        preprocessed >= 4,
        "only {preprocessed} ColumnTransformer pipelines were checked"
    );
    for kind in [
        "linear",
        "logistic",
        "random_forest",
        "boosted_trees",
        "mlp",
    ] {
        assert!(
            by_kind.contains_key(kind),
            "no fixture exercised {kind} models"
        );
    }
    for (kind, classifier) in [
        ("random_forest", false),
        ("random_forest", true),
        ("mlp", false),
        ("mlp", true),
        ("boosted_trees", false),
        ("boosted_trees", true),
    ] {
        assert!(
            covered.contains(&(kind.to_string(), classifier)),
            "no {kind} fixture with classifier={classifier}"
        );
    }

    let refusals: Vec<Refusal> = serde_json::from_slice(
        &std::fs::read(dir.path().join("refusals.json")).expect("refusals.json"),
    )
    .expect("refusals decode");
    assert!(!refusals.is_empty(), "no refusal cases");
    for refusal in &refusals {
        let message = refusal.message.as_deref().unwrap_or_else(|| {
            panic!(
                "the exporter accepted {}, which keyscore cannot score",
                refusal.estimator
            )
        });
        let class = refusal
            .estimator
            .split(['(', ' '])
            .next()
            .unwrap_or_default();
        assert!(
            message.contains(&refusal.expect) && message.contains(class),
            "refusing {} must name {:?} and {class:?}; the message was: {message}",
            refusal.estimator,
            refusal.expect
        );
    }
}

/// The exporter writes each double as the shortest decimal that reads back as the same double
/// (Python's `repr`); keyscore must read every such decimal back to that double, or leaf values
/// and thresholds drift by an ulp and trees stop matching scikit-learn.
#[test]
fn spec_numbers_decode_to_the_doubles_that_were_written() {
    let written: Vec<f64> = (1..=4000)
        .map(|i| f64::from(i) / 3.0 * 1.37e-3 * f64::from(i % 17 + 1))
        .chain([
            181.333_333_333_333_34,
            101.333_333_333_333_33,
            94.333_333_333_333_33,
        ])
        .collect();
    let decimals: Vec<String> = written.iter().map(|v| format!("{v:?}")).collect();
    let json = format!(
        r#"{{"format_version": 1, "features": [{}], "model": {{"kind": "linear", "coefficients": [{}], "intercept": 0.0}}, "output": {{"type": "regression"}}}}"#,
        (0..written.len())
            .map(|i| format!("\"f{i}\""))
            .collect::<Vec<_>>()
            .join(","),
        decimals.join(",")
    );
    let spec = ModelSpec::from_json(json.as_bytes()).expect("spec decodes");
    let keyscore::model::spec::ParamsSpec::Linear { coefficients, .. } = &spec.model else {
        panic!("a linear spec decodes as linear");
    };
    let drifted: Vec<String> = written
        .iter()
        .zip(coefficients)
        .zip(&decimals)
        .filter(|((w, r), _)| w.to_bits() != r.to_bits())
        .map(|((w, r), d)| {
            format!(
                "{d} read as {r:?} ({:016x}, written {:016x})",
                r.to_bits(),
                w.to_bits()
            )
        })
        .collect();
    assert!(
        drifted.is_empty(),
        "{} of {} spec numbers decode to a neighbouring double (serde_json needs its \
         `float_roundtrip` feature for exact decimal parsing), e.g.:\n{}",
        drifted.len(),
        written.len(),
        drifted[..drifted.len().min(5)].join("\n")
    );
}
