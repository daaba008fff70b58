//! Spec builders shared by the model tests.

use super::{spec::*, Error, ModelSpec, Prediction};

pub(super) fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("f{i}")).collect()
}

pub(super) fn classes(labels: &[&str]) -> OutputSpec {
    OutputSpec::Classification {
        classes: labels.iter().map(|c| c.to_string()).collect(),
    }
}

pub(super) fn spec(n_features: usize, model: ParamsSpec, output: OutputSpec) -> ModelSpec {
    ModelSpec {
        format_version: FORMAT_VERSION,
        features: names(n_features),
        scaler: None,
        preprocess: None,
        model,
        output,
        metadata: None,
        reference: None,
    }
}

/// A leaf.
pub(super) fn leaf(value: &[f64]) -> (i64, f64, i64, i64, Vec<f64>) {
    (-2, -2.0, -1, -1, value.to_vec())
}

/// A split on `feature` at `threshold`.
pub(super) fn split(
    feature: i64,
    threshold: f64,
    left: i64,
    right: i64,
) -> (i64, f64, i64, i64, Vec<f64>) {
    (feature, threshold, left, right, vec![])
}

/// A tree from `(feature, threshold, left, right, value)` nodes.
pub(super) fn tree(nodes: &[(i64, f64, i64, i64, Vec<f64>)]) -> TreeSpec {
    TreeSpec {
        feature: nodes.iter().map(|n| n.0).collect(),
        threshold: nodes.iter().map(|n| n.1).collect(),
        left: nodes.iter().map(|n| n.2).collect(),
        right: nodes.iter().map(|n| n.3).collect(),
        value: nodes.iter().map(|n| n.4.clone()).collect(),
    }
}

pub(super) fn forest(trees: Vec<TreeSpec>) -> ParamsSpec {
    ParamsSpec::RandomForest {
        trees,
        threshold_precision: ThresholdPrecision::F64,
    }
}

pub(super) fn layer(weights: &[&[f64]], biases: &[f64]) -> LayerSpec {
    LayerSpec {
        weights: weights.iter().map(|r| r.to_vec()).collect(),
        biases: biases.to_vec(),
    }
}

pub(super) fn mlp(layers: Vec<LayerSpec>, hidden: Activation, output: Activation) -> ParamsSpec {
    ParamsSpec::Mlp {
        layers,
        hidden_activation: hidden,
        output_activation: output,
    }
}

/// The message of the [`Error::Invalid`] that building `spec` must give.
pub(super) fn invalid_msg(spec: &ModelSpec) -> String {
    match spec.build() {
        Err(Error::Invalid(m)) => m,
        other => panic!("expected an invalid-model error, got {other:?}"),
    }
}

/// The index and probabilities of a class prediction.
pub(super) fn class(p: Prediction) -> (usize, Vec<f64>) {
    match p {
        Prediction::Class {
            index,
            probabilities,
        } => (index, probabilities),
        other => panic!("expected a class, got {other:?}"),
    }
}

/// One valid model of every kind and output, all on 3 features, with a scaler on some.
pub(super) fn one_of_each_kind() -> Vec<ModelSpec> {
    let scaler = Some(ScalerSpec {
        mean: vec![0.5, -1.0, 2.0],
        scale: vec![2.0, 0.5, 3.0],
    });
    let mut linear = spec(
        3,
        ParamsSpec::Linear {
            coefficients: vec![0.3, -1.7, 2.25],
            intercept: 0.1,
        },
        OutputSpec::Regression,
    );
    linear.scaler = scaler.clone();
    linear.reference = Some(reference(
        3,
        Some(Bins {
            edges: vec![-1.5, 0.0, 2.25],
            shares: vec![0.125, 0.375, 0.25, 0.25],
        }),
    ));
    let binary = spec(
        3,
        ParamsSpec::Logistic {
            coefficients: vec![vec![0.4, -0.2, 0.9]],
            intercepts: vec![-0.3],
        },
        classes(&["no", "yes"]),
    );
    let mut multinomial = spec(
        3,
        ParamsSpec::Logistic {
            coefficients: vec![
                vec![0.4, -0.2, 0.9],
                vec![-1.1, 0.5, 0.05],
                vec![0.0, 0.3, -0.6],
            ],
            intercepts: vec![0.1, -0.2, 0.3],
        },
        classes(&["a", "b", "c"]),
    );
    multinomial.scaler = scaler.clone();
    let t0 = tree(&[
        split(0, 0.25, 1, 2),
        split(2, -1.5, 3, 4),
        leaf(&[7.5]),
        leaf(&[-1.25]),
        leaf(&[3.0]),
    ]);
    let t1 = tree(&[split(1, 0.1, 1, 2), leaf(&[0.5]), leaf(&[2.0])]);
    let regression_forest = spec(3, forest(vec![t0, t1]), OutputSpec::Regression);
    let c0 = tree(&[
        split(1, 0.3, 1, 2),
        leaf(&[0.2, 0.8]),
        split(0, -0.7, 3, 4),
        leaf(&[1.0, 0.0]),
        leaf(&[0.5, 0.5]),
    ]);
    let c1 = tree(&[split(2, 1.1, 1, 2), leaf(&[0.6, 0.4]), leaf(&[0.1, 0.9])]);
    let mut classifier_forest = spec(
        3,
        ParamsSpec::RandomForest {
            trees: vec![c0, c1],
            threshold_precision: ThresholdPrecision::F32,
        },
        classes(&["lo", "hi"]),
    );
    classifier_forest.scaler = scaler.clone();
    let hidden = layer(
        &[&[0.5, -0.3, 0.8], &[-0.2, 0.9, 0.1], &[0.7, 0.4, -0.6]],
        &[0.1, -0.1, 0.05],
    );
    let mut mlp_regression = spec(
        3,
        mlp(
            vec![hidden.clone(), layer(&[&[1.2], &[-0.7], &[0.4]], &[0.3])],
            Activation::Relu,
            Activation::Identity,
        ),
        OutputSpec::Regression,
    );
    mlp_regression.scaler = scaler.clone();
    let mut mlp_binary = spec(
        3,
        mlp(
            vec![hidden.clone(), layer(&[&[1.2], &[-0.7], &[0.4]], &[0.3])],
            Activation::Tanh,
            Activation::Logistic,
        ),
        classes(&["no", "yes"]),
    );
    mlp_binary.reference = Some(reference(3, None));
    let mlp_softmax = spec(
        3,
        mlp(
            vec![
                hidden,
                layer(
                    &[&[1.2, 0.1, -0.5], &[-0.7, 0.8, 0.2], &[0.4, -0.3, 0.9]],
                    &[0.3, 0.0, -0.2],
                ),
            ],
            Activation::Logistic,
            Activation::Softmax,
        ),
        classes(&["a", "b", "c"]),
    );
    let boosted_tree = |output: u32, f: i64, t: f64, left: f64, right: f64| BoostedTreeSpec {
        output,
        feature: vec![f, -2, -2],
        threshold: vec![t, 0.0, 0.0],
        left: vec![1, -1, -1],
        right: vec![2, -1, -1],
        value: vec![0.0, left, right],
        default_left: None,
        categories: None,
    };
    let mut boosted_regression = spec(
        3,
        ParamsSpec::BoostedTrees(BoostedTreesSpec {
            trees: vec![
                boosted_tree(0, 0, 0.25, -0.5, 1.5),
                boosted_tree(0, 2, -1.0, 0.25, 0.125),
            ],
            base_score: vec![3.0],
            link: "identity".into(),
            threshold_precision: ThresholdPrecision::F64,
            accumulation: Accumulation::F64,
            split: SplitRule::LessOrEqual,
            known_categories: None,
        }),
        OutputSpec::Regression,
    );
    boosted_regression.scaler = scaler.clone();
    let mut categorical = boosted_tree(2, 1, 0.0, 0.5, -0.5);
    categorical.categories = Some(vec![vec![0b101], vec![], vec![]]);
    let boosted_softmax = spec(
        3,
        ParamsSpec::BoostedTrees(BoostedTreesSpec {
            trees: vec![
                boosted_tree(0, 0, 0.25, -0.5, 1.5),
                boosted_tree(1, 1, 0.5, 0.25, -0.75),
                categorical,
                boosted_tree(0, 2, 1.0, 0.5, 0.25),
            ],
            base_score: vec![0.0, 0.5, -0.25],
            link: "softmax".into(),
            threshold_precision: ThresholdPrecision::F32,
            accumulation: Accumulation::F32,
            split: SplitRule::Less,
            known_categories: None,
        }),
        classes(&["a", "b", "c"]),
    );
    vec![
        preprocessed(),
        linear,
        binary,
        multinomial,
        regression_forest,
        classifier_forest,
        mlp_regression,
        mlp_binary,
        mlp_softmax,
        boosted_regression,
        boosted_softmax,
    ]
}

/// Valid reference statistics for `n` features, with the given prediction bins.
pub(super) fn reference(n: usize, prediction: Option<Bins>) -> Reference {
    let feature = |i: usize| FeatureReference {
        bins: Bins {
            edges: (0..i).map(|e| e as f64 - 0.5).collect(),
            shares: vec![1.0 / (i + 1) as f64; i + 1],
        },
        missing: 0.0625 * i as f64,
        min: -1.0,
        max: 0.5 * i as f64,
    };
    Reference {
        rows: 800,
        features: (0..n).map(feature).collect(),
        prediction,
    }
}

/// A binary logistic model behind a preprocess stage on 3 features: `f0` one-hot encoded
/// (`a`, `b`; unknown ignored), `f1` imputed with 2 then scaled as `(x - 1) / 2`, `f2` ordinal
/// encoded (`x`, `y`, `z`; unknown -1, missing a category coded -2). Its 4 inputs are
/// `[f0 == a, f0 == b, (f1 - 1) / 2, code(f2)]`.
pub(super) fn preprocessed() -> ModelSpec {
    let mut s = spec(
        3,
        ParamsSpec::Logistic {
            coefficients: vec![vec![1.0, -1.0, 0.5, 0.25]],
            intercepts: vec![0.125],
        },
        classes(&["no", "yes"]),
    );
    let strings = |v: &[&str]| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    s.preprocess = Some(PreprocessSpec {
        columns: vec![
            ColumnSpec::OneHot {
                feature: 0,
                categories: strings(&["a", "b"]),
                handle_unknown: "ignore".into(),
                missing_is_category: false,
            },
            ColumnSpec::Numeric {
                feature: 1,
                impute: Some(2.0),
                mean: Some(1.0),
                scale: Some(2.0),
            },
            ColumnSpec::Ordinal {
                feature: 2,
                categories: strings(&["x", "y", "z"]),
                handle_unknown: "use_encoded_value".into(),
                unknown_value: Some(-1.0),
                missing_is_category: true,
                encoded_missing_value: Some(-2.0),
            },
        ],
    });
    s
}
