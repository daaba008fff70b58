//! Regenerates `seed/`: the per-city models, the sample records and the expected outputs.
//!
//! ```text
//! cargo run --release --example make_seed
//! ```
//!
//! Every file is a pure function of this program and [`keyscore::synth`]: running it twice
//! gives the same bytes. For each model key it draws training rows from the synthetic
//! generator, trains with smartcore (linear regression, logistic regression, random forest) or
//! with the small Adam trainer below (MLP), converts the trained model to a keyscore spec, and
//! records reference predictions for a sample of `seed/records.jsonl`:
//!
//! * linear regression and random forest: smartcore's own `predict`;
//! * logistic regression: the class from smartcore's `predict`, the probabilities from the
//!   sigmoid of smartcore's coefficients (smartcore has no `predict_proba`), computed here;
//! * MLP: the forward pass in this file, over the weights written to the spec.
//!
//! `seed/README.md` describes the layout.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use keyscore::model::spec::{
    Activation, LayerSpec, Metadata, ModelSpec, OutputSpec, ParamsSpec, ScalerSpec,
    ThresholdPrecision, TreeSpec,
};
use keyscore::model::{
    Bins, FeatureReference, Model, Prediction, Reference as DataReference, FORMAT_VERSION,
};
use keyscore::synth::{Generator, SplitMix64, CITIES, FEATURES};
use serde_json::{json, Value};
use smartcore::ensemble::random_forest_regressor::{
    RandomForestRegressor, RandomForestRegressorParameters,
};
use smartcore::linalg::basic::arrays::Array;
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linear::linear_regression::{LinearRegression, LinearRegressionParameters};
use smartcore::linear::logistic_regression::{LogisticRegression, LogisticRegressionParameters};

/// Fixed so that regenerating the seed gives identical files.
const TRAINED_AT: &str = "2026-01-15T09:00:00Z";
const AUTHOR: &str = "keyscore seed";
/// Rows drawn per city model; the first 80% train, the rest measure.
const TRAINING_ROWS: usize = 4000;
/// Seed of `seed/records.jsonl`, distinct from every training seed.
const RECORDS_SEED: u64 = 7;
/// Well-formed records in `seed/records.jsonl`, besides the special lines.
const RECORDS: usize = 2000;
/// Expected-output rows per model.
const EXPECTED_ROWS: usize = 50;
/// Rain surcharge of the later world paris v2 is trained on, in minutes per mm.
const PARIS_V2_RAIN_SURCHARGE: f64 = 1.5;

/// Lines of `seed/records.jsonl` (1-based) that are not ordinary records.
const SPECIAL_LINES: [(usize, &str); 6] = [
    (101, "truncated_json"),
    (401, "missing_city"),
    (701, "missing_feature"),
    (1001, "non_numeric_feature"),
    (1301, "unknown_city"),
    (1601, "not_json"),
];

#[derive(Clone, Copy)]
enum Kind {
    Linear,
    Logistic,
    Forest,
    Mlp,
}

/// A row of features with both targets.
struct Rows {
    x: Vec<[f64; 8]>,
    minutes: Vec<f64>,
    late: Vec<bool>,
}

impl Rows {
    fn draw(generator: &mut Generator, city: Option<&str>, n: usize) -> Self {
        let mut rows = Rows {
            x: Vec::with_capacity(n),
            minutes: Vec::with_capacity(n),
            late: Vec::with_capacity(n),
        };
        for _ in 0..n {
            let d = match city {
                Some(city) => generator.next_for_city(city).expect("a known city"),
                None => generator.next_record(),
            };
            rows.x.push(d.features);
            rows.minutes.push(d.minutes);
            rows.late.push(d.late);
        }
        rows
    }

    /// The first 80% for training and the rest held out.
    fn split(self) -> (Rows, Rows) {
        let cut = self.x.len() * 4 / 5;
        let mut train = self;
        let test = Rows {
            x: train.x.split_off(cut),
            minutes: train.minutes.split_off(cut),
            late: train.late.split_off(cut),
        };
        (train, test)
    }
}

/// A record of `seed/records.jsonl` that a model will be checked on.
struct Sample {
    id: String,
    city: String,
    x: [f64; 8],
}

fn matrix(x: &[[f64; 8]]) -> DenseMatrix<f64> {
    DenseMatrix::from_2d_vec(&x.iter().map(|r| r.to_vec()).collect()).expect("rows of 8")
}

fn main() {
    let seed_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seed");
    let samples = write_records(&seed_dir);

    let plan: [(&str, Kind); 9] = [
        ("paris", Kind::Linear),
        ("london", Kind::Logistic),
        ("berlin", Kind::Forest),
        ("madrid", Kind::Linear),
        ("rome", Kind::Logistic),
        ("vienna", Kind::Forest),
        ("lisbon", Kind::Mlp),
        ("amsterdam", Kind::Mlp),
        ("_default", Kind::Linear),
    ];
    for (i, (key, kind)) in plan.into_iter().enumerate() {
        let training_seed = 1000 + i as u64;
        let mut generator = Generator::new(training_seed);
        let (city, n) = match key {
            "_default" => (None, 2 * TRAINING_ROWS),
            city => (Some(city), TRAINING_ROWS),
        };
        let rows = Rows::draw(&mut generator, city, n);
        let description = match city {
            Some(city) => format!("Delivery model for {city}."),
            None => "Fallback for cities without their own model, trained on all cities.".into(),
        };
        let check_on = pick(&samples, city);
        train_and_write(
            &seed_dir,
            key,
            1,
            kind,
            rows,
            training_seed,
            description,
            &check_on,
        );
    }

    // Paris v2: more rows, from the later world where rain slows deliveries down more.
    let training_seed = 2000;
    let mut generator = Generator::new(training_seed).with_rain_surcharge(PARIS_V2_RAIN_SURCHARGE);
    let rows = Rows::draw(&mut generator, Some("paris"), 3 * TRAINING_ROWS / 2);
    train_and_write(
        &seed_dir,
        "paris",
        2,
        Kind::Linear,
        rows,
        training_seed,
        format!(
            "Delivery model for paris, retrained on later data with a rain surcharge of \
             {PARIS_V2_RAIN_SURCHARGE} minutes per mm."
        ),
        &pick(&samples, Some("paris")),
    );
}

/// The first [`EXPECTED_ROWS`] samples of `city`, or for the fallback the first ones of any
/// city plus every record of an unknown city.
fn pick<'a>(samples: &'a [Sample], city: Option<&str>) -> Vec<&'a Sample> {
    match city {
        Some(city) => samples
            .iter()
            .filter(|s| s.city == city)
            .take(EXPECTED_ROWS)
            .collect(),
        None => {
            let mut picked: Vec<&Sample> = samples.iter().take(EXPECTED_ROWS).collect();
            picked.extend(
                samples
                    .iter()
                    .filter(|s| !CITIES.contains(&s.city.as_str())),
            );
            picked
        }
    }
}

/// Writes `seed/records.jsonl` and `seed/records.manifest.json`; returns the scorable records.
fn write_records(seed_dir: &Path) -> Vec<Sample> {
    let mut generator = Generator::new(RECORDS_SEED);
    let mut lines = Vec::new();
    let mut samples = Vec::new();
    let mut special = Vec::new();
    let total = RECORDS + SPECIAL_LINES.len();
    for line_no in 1..=total {
        let d = generator.next_record();
        let kind = SPECIAL_LINES
            .iter()
            .find(|(n, _)| *n == line_no)
            .map(|(_, kind)| *kind);
        let (line, detail) = match kind {
            None => {
                samples.push(Sample {
                    id: d.id.clone(),
                    city: d.city.into(),
                    x: d.features,
                });
                (d.to_json(), String::new())
            }
            Some("truncated_json") => {
                let full = d.to_json();
                let cut = full.find("\"hour\"").expect("hour is written");
                (
                    full[..cut + 8].to_string(),
                    "JSON object cut off mid-line".into(),
                )
            }
            Some("not_json") => ("ping".to_string(), "a line that is not JSON".into()),
            Some("missing_city") => (
                d.to_json().replace(&format!(r#","city":"{}""#, d.city), ""),
                "no \"city\" field".into(),
            ),
            Some("missing_feature") => {
                let needle = format!(r#","rain_mm":{}"#, d.features[4]);
                (
                    d.to_json().replace(&needle, ""),
                    "no \"rain_mm\" field".into(),
                )
            }
            Some("non_numeric_feature") => {
                let needle = format!(r#""items":{}"#, d.features[1]);
                (
                    d.to_json().replace(&needle, r#""items":"three""#),
                    "\"items\" is a string".into(),
                )
            }
            Some("unknown_city") => {
                samples.push(Sample {
                    id: d.id.clone(),
                    city: "oslo".into(),
                    x: d.features,
                });
                (
                    d.to_json()
                        .replace(&format!(r#""city":"{}""#, d.city), r#""city":"oslo""#),
                    "city \"oslo\" has no model: scored by \"_default\"".into(),
                )
            }
            Some(other) => unreachable!("unknown special line kind {other}"),
        };
        if let Some(kind) = kind {
            special.push(json!({"line": line_no, "id": d.id, "kind": kind, "detail": detail}));
        }
        lines.push(line);
    }
    fs::create_dir_all(seed_dir).expect("seed/ is writable");
    fs::write(seed_dir.join("records.jsonl"), lines.join("\n") + "\n").expect("write records");

    let mut per_city = BTreeMap::new();
    for s in &samples {
        *per_city.entry(s.city.clone()).or_insert(0usize) += 1;
    }
    let manifest = json!({
        "lines": total,
        "seed": RECORDS_SEED,
        "well_formed": samples.len(),
        "per_city": per_city,
        "special": special,
    });
    write_json(&seed_dir.join("records.manifest.json"), &manifest);
    samples
}

/// Trains one model, checks the conversion, writes its spec and expected outputs.
#[allow(clippy::too_many_arguments)]
fn train_and_write(
    seed_dir: &Path,
    key: &str,
    version: u32,
    kind: Kind,
    rows: Rows,
    training_seed: u64,
    description: String,
    check_on: &[&Sample],
) {
    let n_rows = rows.x.len();
    let (train, test) = rows.split();
    let check_x: Vec<[f64; 8]> = check_on.iter().map(|s| s.x).collect();
    let trained = match kind {
        Kind::Linear => linear(&train, &test, &check_x),
        Kind::Logistic => logistic(&train, &test, &check_x),
        Kind::Forest => forest(&train, &test, &check_x, training_seed),
        Kind::Mlp => mlp(&train, &test, &check_x, training_seed),
    };

    let mut extra = BTreeMap::new();
    extra.insert("description".into(), json!(description));
    extra.insert(
        "training".into(),
        json!({
            "generator_seed": training_seed,
            "rows": n_rows,
            "held_out_rows": test.x.len(),
            "trainer": trained.trainer,
        }),
    );
    let mut spec = ModelSpec {
        format_version: FORMAT_VERSION,
        features: FEATURES.iter().map(|f| f.to_string()).collect(),
        scaler: trained.scaler,
        preprocess: None,
        model: trained.params,
        output: trained.output,
        metadata: Some(Metadata {
            trained_at: Some(TRAINED_AT.into()),
            author: Some(AUTHOR.into()),
            metrics: trained.metrics,
            extra,
        }),
        reference: None,
    };
    let model = spec.build().expect("the trained model builds");
    spec.reference = Some(reference(&model, &train.x));
    let text = serde_json::to_string_pretty(&spec).expect("a spec serialises") + "\n";
    let reread = ModelSpec::from_json(text.as_bytes()).expect("the spec reads back");
    assert!(
        reread == spec,
        "{key} v{version}: the spec does not survive a trip through JSON"
    );
    let model_dir = seed_dir.join("models").join(key);
    fs::create_dir_all(&model_dir).expect("create model dir");
    let path = model_dir.join(format!("v{version}.json"));
    fs::write(&path, &text).expect("write spec");

    let mut lines = String::new();
    for (sample, reference) in check_on.iter().zip(&trained.reference) {
        let mut row = json!({"id": sample.id, "city": sample.city, "features": sample.x});
        let object = row.as_object_mut().expect("an object");
        match reference {
            Reference::Value(v) => {
                object.insert("value".into(), json!(v));
            }
            Reference::Class {
                class,
                probabilities,
            } => {
                object.insert("class".into(), json!(class));
                object.insert("probabilities".into(), json!(probabilities));
            }
        }
        lines.push_str(&serde_json::to_string(&row).expect("a row serialises"));
        lines.push('\n');
    }
    let expected_dir = seed_dir.join("expected").join(key);
    fs::create_dir_all(&expected_dir).expect("create expected dir");
    fs::write(expected_dir.join(format!("v{version}.jsonl")), lines).expect("write expected");
    println!(
        "{key} v{version}: {} ({} bytes), metrics {:?}",
        spec_kind(&spec.model),
        text.len(),
        spec.metadata.as_ref().map(|m| &m.metrics)
    );
}

/// The reference statistics of the training rows, as `keyscore_sklearn.export(...,
/// reference=X)` writes them: per feature, bins at the deciles of the values (the distinct
/// values at positions `n * k / 10` of the sorted values, k = 1..9, above the minimum), no
/// missing values, the range; and the same bins over the model's predictions (the value, or a
/// classifier's probability of `late`), computed by keyscore itself.
fn reference(model: &Model, x: &[[f64; 8]]) -> DataReference {
    let features = (0..FEATURES.len())
        .map(|j| {
            let values: Vec<f64> = x.iter().map(|row| row[j]).collect();
            FeatureReference {
                bins: deciles(&values),
                missing: 0.0,
                min: values.iter().copied().fold(f64::INFINITY, f64::min),
                max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            }
        })
        .collect();
    let predictions: Vec<f64> = x
        .iter()
        .map(
            |row| match model.predict(row).expect("a training row scores") {
                Prediction::Value(v) => v,
                Prediction::Class { probabilities, .. } => probabilities[1],
            },
        )
        .collect();
    DataReference {
        rows: x.len() as u64,
        features,
        prediction: Some(deciles(&predictions)),
    }
}

/// Bins at the deciles of `values`, with the share of `values` in each.
fn deciles(values: &[f64]) -> Bins {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let mut edges: Vec<f64> = (1..10)
        .map(|k| sorted[n * k / 10])
        .filter(|&e| e > sorted[0])
        .collect();
    edges.dedup();
    let mut bins = Bins {
        shares: vec![0.0; edges.len() + 1],
        edges,
    };
    let mut counts = vec![0usize; bins.len()];
    for &v in values {
        counts[bins.bin(v)] += 1;
    }
    bins.shares = counts.iter().map(|&c| c as f64 / n as f64).collect();
    bins
}

fn spec_kind(params: &ParamsSpec) -> &'static str {
    match params {
        ParamsSpec::Linear { .. } => "linear",
        ParamsSpec::Logistic { .. } => "logistic",
        ParamsSpec::RandomForest { .. } => "random_forest",
        ParamsSpec::BoostedTrees(_) => "boosted_trees",
        ParamsSpec::Mlp { .. } => "mlp",
    }
}

/// A trained model as keyscore spec parts, with reference outputs for the check rows.
struct Trained {
    scaler: Option<ScalerSpec>,
    params: ParamsSpec,
    output: OutputSpec,
    metrics: BTreeMap<String, f64>,
    reference: Vec<Reference>,
    trainer: &'static str,
}

enum Reference {
    Value(f64),
    Class {
        class: &'static str,
        probabilities: [f64; 2],
    },
}

fn regression_metrics(truth: &[f64], predicted: &[f64]) -> BTreeMap<String, f64> {
    let n = truth.len() as f64;
    let mean = truth.iter().sum::<f64>() / n;
    let ss_tot: f64 = truth.iter().map(|y| (y - mean).powi(2)).sum();
    let ss_res: f64 = truth
        .iter()
        .zip(predicted)
        .map(|(y, p)| (y - p).powi(2))
        .sum();
    let mae = truth
        .iter()
        .zip(predicted)
        .map(|(y, p)| (y - p).abs())
        .sum::<f64>()
        / n;
    BTreeMap::from([
        ("r2".to_string(), round_metric(1.0 - ss_res / ss_tot)),
        ("mae_minutes".to_string(), round_metric(mae)),
    ])
}

fn round_metric(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

fn linear(train: &Rows, test: &Rows, check_x: &[[f64; 8]]) -> Trained {
    let model = LinearRegression::fit(
        &matrix(&train.x),
        &train.minutes,
        LinearRegressionParameters::default(),
    )
    .expect("linear regression fits");
    let predicted: Vec<f64> = model.predict(&matrix(&test.x)).expect("predict");
    let coefficients = (0..FEATURES.len())
        .map(|i| *model.coefficients().get((i, 0)))
        .collect();
    let reference = model
        .predict(&matrix(check_x))
        .expect("predict")
        .into_iter()
        .map(Reference::Value)
        .collect();
    Trained {
        scaler: None,
        params: ParamsSpec::Linear {
            coefficients,
            intercept: *model.intercept(),
        },
        output: OutputSpec::Regression,
        metrics: regression_metrics(&test.minutes, &predicted),
        reference,
        trainer: "smartcore 0.7 LinearRegression (SVD)",
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn logistic(train: &Rows, test: &Rows, check_x: &[[f64; 8]]) -> Trained {
    let labels: Vec<i32> = train.late.iter().map(|&l| i32::from(l)).collect();
    // A little L2 keeps LBFGS well conditioned on the unscaled features.
    let model = LogisticRegression::fit(
        &matrix(&train.x),
        &labels,
        LogisticRegressionParameters::default().with_alpha(0.1),
    )
    .expect("logistic regression fits");
    assert_eq!(
        model.classes(),
        &vec![0, 1],
        "both classes in training data"
    );
    let coefficients: Vec<f64> = (0..FEATURES.len())
        .map(|i| *model.coefficients().get((0, i)))
        .collect();
    let intercept = *model.intercept().get((0, 0));
    let probability = |x: &[f64; 8]| {
        let z: f64 = x.iter().zip(&coefficients).map(|(x, w)| x * w).sum();
        sigmoid(z + intercept)
    };

    let predicted: Vec<i32> = model.predict(&matrix(&test.x)).expect("predict");
    let correct = predicted
        .iter()
        .zip(&test.late)
        .filter(|(p, l)| (**p == 1) == **l)
        .count();
    let log_loss = test
        .x
        .iter()
        .zip(&test.late)
        .map(|(x, &late)| {
            let p = probability(x).clamp(1e-15, 1.0 - 1e-15);
            -if late { p.ln() } else { (1.0 - p).ln() }
        })
        .sum::<f64>()
        / test.x.len() as f64;
    let late_share = test.late.iter().filter(|l| **l).count() as f64 / test.late.len() as f64;

    let classes: Vec<i32> = model.predict(&matrix(check_x)).expect("predict");
    let reference = check_x
        .iter()
        .zip(classes)
        .map(|(x, class)| {
            let p = probability(x);
            Reference::Class {
                class: if class == 1 { "late" } else { "on_time" },
                probabilities: [1.0 - p, p],
            }
        })
        .collect();
    Trained {
        scaler: None,
        params: ParamsSpec::Logistic {
            coefficients: vec![coefficients.clone()],
            intercepts: vec![intercept],
        },
        output: OutputSpec::Classification {
            classes: vec!["on_time".into(), "late".into()],
        },
        metrics: BTreeMap::from([
            (
                "accuracy".to_string(),
                round_metric(correct as f64 / test.x.len() as f64),
            ),
            ("log_loss".to_string(), round_metric(log_loss)),
            ("late_share".to_string(), round_metric(late_share)),
        ]),
        reference,
        trainer: "smartcore 0.7 LogisticRegression (LBFGS, alpha 0.1)",
    }
}

fn forest(train: &Rows, test: &Rows, check_x: &[[f64; 8]], seed: u64) -> Trained {
    let parameters = RandomForestRegressorParameters::default()
        .with_n_trees(30)
        .with_max_depth(8)
        .with_min_samples_leaf(5)
        .with_m(FEATURES.len())
        .with_seed(seed);
    let model = RandomForestRegressor::fit(&matrix(&train.x), &train.minutes, parameters)
        .expect("random forest fits");
    let trees = forest_trees(&model);

    // The conversion must reproduce smartcore bit for bit, on every row we have.
    let all: Vec<[f64; 8]> = train
        .x
        .iter()
        .chain(&test.x)
        .chain(check_x)
        .copied()
        .collect();
    let smartcore: Vec<f64> = model.predict(&matrix(&all)).expect("predict");
    for (x, expected) in all.iter().zip(&smartcore) {
        let ours = forest_predict(&trees, x);
        assert_eq!(
            ours.to_bits(),
            expected.to_bits(),
            "{x:?}: {ours} != {expected}"
        );
    }

    let predicted: Vec<f64> = model.predict(&matrix(&test.x)).expect("predict");
    let reference = model
        .predict(&matrix(check_x))
        .expect("predict")
        .into_iter()
        .map(Reference::Value)
        .collect();
    Trained {
        scaler: None,
        params: ParamsSpec::RandomForest {
            trees,
            threshold_precision: ThresholdPrecision::F64,
        },
        output: OutputSpec::Regression,
        metrics: regression_metrics(&test.minutes, &predicted),
        reference,
        trainer: "smartcore 0.7 RandomForestRegressor (30 trees, max depth 8, min 5 per leaf, all features per split)",
    }
}

/// Converts smartcore's trees to keyscore's flat node arrays, through smartcore's serde form.
///
/// smartcore 0.7 stores each tree as `nodes`, a vector indexed by node id with the root at 0.
/// A node has `split_feature`, `split_value` (`None` at a leaf), `true_child` and
/// `false_child` (`None` at a leaf), and `output`, the mean target of its training rows.
/// Its `predict` follows `true_child` when `x[split_feature] <= split_value`, compared in
/// f64, so the true child is keyscore's left child and the threshold carries over unchanged:
/// no nudging is needed. Node ids carry over too. Leaves get feature and threshold -2 (the
/// scikit-learn convention). The forest predicts the mean of its trees, summed in tree order.
fn forest_trees(model: &impl serde::Serialize) -> Vec<TreeSpec> {
    let value = serde_json::to_value(model).expect("smartcore forests serialise");
    let trees = value["forest_regressor"]["trees"]
        .as_array()
        .expect("a fitted forest has trees");
    let index = |v: &Value| v.as_u64().map_or(-1, |i| i as i64);
    trees
        .iter()
        .map(|tree| {
            let nodes = tree["nodes"].as_array().expect("a tree has nodes");
            let mut spec = TreeSpec {
                feature: Vec::new(),
                threshold: Vec::new(),
                left: Vec::new(),
                right: Vec::new(),
                value: Vec::new(),
            };
            for node in nodes {
                let left = index(&node["true_child"]);
                let right = index(&node["false_child"]);
                assert_eq!(left == -1, right == -1, "a node has both children or none");
                let leaf = left == -1;
                spec.feature.push(if leaf {
                    -2
                } else {
                    node["split_feature"].as_i64().expect("feature index")
                });
                spec.threshold.push(if leaf {
                    -2.0
                } else {
                    node["split_value"].as_f64().expect("a split has a value")
                });
                spec.left.push(left);
                spec.right.push(right);
                spec.value
                    .push(vec![node["output"].as_f64().expect("a node has an output")]);
            }
            spec
        })
        .collect()
}

/// Keyscore's forest rule, written out independently: left when `x <= threshold`, mean of
/// the leaves summed in tree order.
fn forest_predict(trees: &[TreeSpec], x: &[f64; 8]) -> f64 {
    let mut sum = 0.0;
    for tree in trees {
        let mut node = 0usize;
        while tree.left[node] != -1 {
            node = if x[tree.feature[node] as usize] <= tree.threshold[node] {
                tree.left[node] as usize
            } else {
                tree.right[node] as usize
            };
        }
        sum += tree.value[node][0];
    }
    sum / trees.len() as f64
}

/// Dense layers as keyscore stores them: `weights[input][output]`, then biases.
struct Net {
    weights: Vec<Vec<Vec<f64>>>,
    biases: Vec<Vec<f64>>,
}

const MLP_SIZES: [usize; 4] = [8, 16, 8, 1];

impl Net {
    fn new(rng: &mut SplitMix64) -> Self {
        let mut weights = Vec::new();
        let mut biases = Vec::new();
        for pair in MLP_SIZES.windows(2) {
            let (fan_in, fan_out) = (pair[0], pair[1]);
            let std = (2.0 / fan_in as f64).sqrt();
            weights.push(
                (0..fan_in)
                    .map(|_| (0..fan_out).map(|_| std * rng.normal()).collect())
                    .collect(),
            );
            biases.push(vec![0.0; fan_out]);
        }
        Net { weights, biases }
    }

    /// Activations of every layer, input first: relu hidden layers, identity output.
    fn forward(&self, input: &[f64]) -> Vec<Vec<f64>> {
        let mut activations = vec![input.to_vec()];
        let last = self.weights.len() - 1;
        for (l, (w, b)) in self.weights.iter().zip(&self.biases).enumerate() {
            let a = activations.last().expect("input");
            let mut out = b.clone();
            for (i, ai) in a.iter().enumerate() {
                for (o, wij) in out.iter_mut().zip(&w[i]) {
                    *o += ai * wij;
                }
            }
            if l < last {
                out.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            activations.push(out);
        }
        activations
    }
}

/// Adam state for one parameter array.
struct Adam {
    m: Vec<f64>,
    v: Vec<f64>,
}

fn mlp(train: &Rows, test: &Rows, check_x: &[[f64; 8]], seed: u64) -> Trained {
    const EPOCHS: usize = 120;
    const BATCH: usize = 32;
    const LEARNING_RATE: f64 = 0.003;
    const BETA1: f64 = 0.9;
    const BETA2: f64 = 0.999;

    // Standardise features (this stage becomes the spec's scaler) and the target (folded
    // back into the output layer after training).
    let n = train.x.len() as f64;
    let mut mean = [0.0; 8];
    let mut scale = [0.0; 8];
    for j in 0..8 {
        mean[j] = train.x.iter().map(|r| r[j]).sum::<f64>() / n;
        let var = train
            .x
            .iter()
            .map(|r| (r[j] - mean[j]).powi(2))
            .sum::<f64>()
            / n;
        scale[j] = if var > 0.0 { var.sqrt() } else { 1.0 };
    }
    let standardise = |x: &[f64; 8]| -> Vec<f64> {
        x.iter()
            .zip(mean.iter().zip(&scale))
            .map(|(x, (m, s))| (x - m) / s)
            .collect()
    };
    let y_mean = train.minutes.iter().sum::<f64>() / n;
    let y_scale = (train
        .minutes
        .iter()
        .map(|y| (y - y_mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    let inputs: Vec<Vec<f64>> = train.x.iter().map(standardise).collect();
    let targets: Vec<f64> = train
        .minutes
        .iter()
        .map(|y| (y - y_mean) / y_scale)
        .collect();

    // Initial weights and minibatch order: splitmix64, the sequence seed/'s MLPs were trained on.
    let mut rng = SplitMix64::new(seed);
    let mut net = Net::new(&mut rng);
    let mut adam_w: Vec<Adam> = net
        .weights
        .iter()
        .map(|w| Adam {
            m: vec![0.0; w.len() * w[0].len()],
            v: vec![0.0; w.len() * w[0].len()],
        })
        .collect();
    let mut adam_b: Vec<Adam> = net
        .biases
        .iter()
        .map(|b| Adam {
            m: vec![0.0; b.len()],
            v: vec![0.0; b.len()],
        })
        .collect();
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    let mut step = 0i32;
    for _ in 0..EPOCHS {
        // Fisher-Yates shuffle.
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for batch in order.chunks(BATCH) {
            let mut grad_w: Vec<Vec<Vec<f64>>> = net
                .weights
                .iter()
                .map(|w| vec![vec![0.0; w[0].len()]; w.len()])
                .collect();
            let mut grad_b: Vec<Vec<f64>> = net.biases.iter().map(|b| vec![0.0; b.len()]).collect();
            for &row in batch {
                let activations = net.forward(&inputs[row]);
                // d(0.5 (y_hat - y)^2) / d y_hat, averaged over the batch.
                let mut delta =
                    vec![(activations[MLP_SIZES.len() - 1][0] - targets[row]) / batch.len() as f64];
                for l in (0..net.weights.len()).rev() {
                    let a = &activations[l];
                    for (i, ai) in a.iter().enumerate() {
                        for (o, d) in delta.iter().enumerate() {
                            grad_w[l][i][o] += ai * d;
                        }
                    }
                    for (o, d) in delta.iter().enumerate() {
                        grad_b[l][o] += d;
                    }
                    if l > 0 {
                        delta = (0..a.len())
                            .map(|i| {
                                if a[i] > 0.0 {
                                    net.weights[l][i]
                                        .iter()
                                        .zip(&delta)
                                        .map(|(w, d)| w * d)
                                        .sum()
                                } else {
                                    0.0
                                }
                            })
                            .collect();
                    }
                }
            }
            step += 1;
            let correction1 = 1.0 - BETA1.powi(step);
            let correction2 = 1.0 - BETA2.powi(step);
            let update = |param: &mut f64, grad: f64, m: &mut f64, v: &mut f64| {
                *m = BETA1 * *m + (1.0 - BETA1) * grad;
                *v = BETA2 * *v + (1.0 - BETA2) * grad * grad;
                *param -= LEARNING_RATE * (*m / correction1) / ((*v / correction2).sqrt() + 1e-8);
            };
            for l in 0..net.weights.len() {
                // Adam state is flat, row-major over `weights[input][output]`.
                let Adam { m, v } = &mut adam_w[l];
                let flat_params = net.weights[l].iter_mut().flatten();
                let flat_grads = grad_w[l].iter().flatten();
                for (k, (param, grad)) in flat_params.zip(flat_grads).enumerate() {
                    update(param, *grad, &mut m[k], &mut v[k]);
                }
                let Adam { m, v } = &mut adam_b[l];
                for (k, (param, grad)) in net.biases[l].iter_mut().zip(&grad_b[l]).enumerate() {
                    update(param, *grad, &mut m[k], &mut v[k]);
                }
            }
        }
    }

    // Fold the target standardisation into the output layer: the spec predicts minutes.
    let last = net.weights.len() - 1;
    for row in net.weights[last].iter_mut() {
        row[0] *= y_scale;
    }
    net.biases[last][0] = net.biases[last][0] * y_scale + y_mean;

    let predict = |x: &[f64; 8]| net.forward(&standardise(x))[MLP_SIZES.len() - 1][0];
    let predicted: Vec<f64> = test.x.iter().map(predict).collect();
    let reference = check_x
        .iter()
        .map(|x| Reference::Value(predict(x)))
        .collect();
    let layers = net
        .weights
        .iter()
        .zip(&net.biases)
        .map(|(w, b)| LayerSpec {
            weights: w.clone(),
            biases: b.clone(),
        })
        .collect();
    Trained {
        scaler: Some(ScalerSpec {
            mean: mean.to_vec(),
            scale: scale.to_vec(),
        }),
        params: ParamsSpec::Mlp {
            layers,
            hidden_activation: Activation::Relu,
            output_activation: Activation::Identity,
        },
        output: OutputSpec::Regression,
        metrics: regression_metrics(&test.minutes, &predicted),
        reference,
        trainer: "make_seed MLP 8-16-8-1 (relu, Adam, 120 epochs, batch 32)",
    }
}

fn write_json(path: &Path, value: &Value) {
    let text = serde_json::to_string_pretty(value).expect("JSON serialises") + "\n";
    fs::write(path, text).expect("write JSON");
}
