//! The model spec: the untrusted, serde-decoded description of a model that arrives from the
//! store, the CLI or the scikit-learn exporter.
//!
//! A [`ModelSpec`] is only data. [`ModelSpec::build`](crate::model::ModelSpec::build) checks it
//! (shapes agree, every number is finite, tree child indices are in range and acyclic, category
//! bitsets are well formed, feature names are unique) and turns it into an immutable [`Model`](crate::model::Model).
//!
//! # JSON format (format_version 1)
//!
//! ```json
//! {
//!   "format_version": 1,
//!   "features": ["distance_km", "items"],
//!   "scaler": {"mean": [5.0, 3.0], "scale": [2.0, 1.5]},
//!   "model": {"kind": "linear", "coefficients": [1.5, -0.25], "intercept": 12.0},
//!   "output": {"type": "regression"},
//!   "metadata": {"trained_at": "2026-11-01T10:00:00Z", "author": "ana", "metrics": {"r2": 0.91}}
//! }
//! ```
//!
//! `scaler` is optional: when present each feature is standardised as `(x - mean) / scale`
//! before the model sees it (a scikit-learn `StandardScaler` stage). `metadata` is optional and
//! free-form apart from the three named fields.
//!
//! A feature name is read from the record's top-level field of that name; when there is none
//! and the name holds dots, it is a path of object keys: `"user.age"` reads the `age` field of
//! the `user` object. A key that itself holds a dot can only be read at the top level (no
//! escape is supported), and a path through a value that is not an object finds nothing
//! (the feature is missing).
//!
//! ## Preprocessing
//!
//! `preprocess` (optional, not with `scaler`) turns the features into the model's inputs, as a
//! scikit-learn `ColumnTransformer` does; the model is checked against the number of inputs
//! its columns write, not the number of features:
//!
//! ```json
//! "preprocess": {"columns": [
//!   {"op": "one_hot", "feature": 0, "categories": ["blue", "red"], "handle_unknown": "ignore"},
//!   {"op": "numeric", "feature": 1, "impute": 39.5, "mean": 40.1, "scale": 11.6},
//!   {"op": "ordinal", "feature": 2, "categories": ["s0", "s1"],
//!    "handle_unknown": "use_encoded_value", "unknown_value": -1,
//!    "missing_is_category": true, "encoded_missing_value": -2},
//!   {"op": "numeric", "feature": 3}
//! ]}
//! ```
//!
//! Columns write their inputs in order (scikit-learn: the transformers in order, then the
//! `remainder` when it is `passthrough`); `feature` is an index into `features`, and every
//! feature is read by at least one column (a dropped column is not listed).
//!
//! * `numeric`: one input, `(v - mean) / scale` where `v` is the feature, or `impute` when it is
//!   missing (`SimpleImputer.statistics_`, then `StandardScaler`). `mean` defaults to 0,
//!   `scale` to 1; no `impute`: a missing value stays missing (NaN), which only a model that
//!   scores missing values accepts.
//! * `one_hot`: one input per category, 1 for the record's category and 0 for the others;
//!   `handle_unknown` is `error` (an unknown category is refused) or `ignore` (all zeros).
//!   With `missing_is_category` a missing value was a category in training and sets one more
//!   input, after the categories'; otherwise a missing value is an unknown one.
//! * `ordinal`: one input, the category's index in `categories`; `handle_unknown` is `error` or
//!   `use_encoded_value` (an unknown category takes `unknown_value`; absent or `null`: NaN).
//!   With `missing_is_category` a missing value takes `encoded_missing_value` (absent or
//!   `null`: NaN); otherwise it is an unknown one.
//!
//! A feature a `one_hot` or `ordinal` column reads is a string in records (any other JSON
//! type is a dead letter), resolved against the categories, which are compared as exact
//! strings; each encoded feature is read by one column only. [`Model::predict`] takes it as its
//! category code: the index in `categories`, NaN when missing, -1 when unknown. The checker
//! refuses an empty `columns`, indices out of range, empty or repeated categories, any other
//! `handle_unknown` (scikit-learn's `infrequent_if_exist` included), non-finite numbers, a
//! zero `scale`, and columns that give NaN to a model that does not score missing values.
//!
//! [`Model::predict`]: crate::model::Model::predict
//!
//! Model parameters by `kind`:
//!
//! * `linear`: `coefficients` (one per feature) and `intercept`; output `regression`.
//! * `logistic`: `coefficients` as rows of one per feature and `intercepts`, one per row. One row
//!   is a binary model (probability of the second class is `sigmoid(row·x + b)`); `k > 2` rows
//!   are a multinomial model scored with softmax. Output `classification`.
//! * `random_forest`: `trees`, each a set of flat node arrays of equal length (`feature`,
//!   `threshold`, `left`, `right`, `value`); a node with `left == -1` and `right == -1` is a
//!   leaf. A record goes left when `x[feature] <= threshold`. `value[i]` holds one number for a
//!   regression forest (the leaf's prediction) or one probability per class for a classifier.
//!   The forest's output is the mean over trees. `threshold_precision: "f32"` compares the
//!   feature after rounding it to `f32`, exactly as scikit-learn's trees do.
//! * `boosted_trees`: an additive tree ensemble (scikit-learn `GradientBoosting*` and
//!   `HistGradientBoosting*`, XGBoost `gbtree`, LightGBM). Fields:
//!   - `trees`: flat node arrays like `random_forest`'s (`feature`, `threshold`, `left`,
//!     `right`), with `value` one number per node (read at leaves) **already multiplied by the
//!     learning rate**; `output` (default 0) is the output the tree adds to (its class, for
//!     `softmax`); optional `default_left`, one boolean per node: where a missing value goes;
//!     optional `categories`, one bitset per node: empty for a numeric split or a leaf,
//!     otherwise the categories that go left as `u32` words (category `c` is bit `c % 32` of
//!     word `c / 32`; `[0]` is a categorical split that sends only missing and unknown values
//!     left).
//!   - `base_score`: the starting value of each output (one, or one per class for `softmax`).
//!   - `link`: `identity` (regression), `logistic` (2 classes: `p = 1 / (1 + e^-z)` is the
//!     second class's probability, `1 - p` the first's) or `softmax` (one output per class);
//!     any other name is refused.
//!   - `threshold_precision` (default `f64`): `f32` rounds each feature to `f32` before
//!     comparing (scikit-learn's `GradientBoosting*`, XGBoost).
//!   - `accumulation` (default `f64`): `f32` sums the outputs and computes the link in `f32`,
//!     as XGBoost does (its logistic `1 / (1 + e^min(-z, 88.7))`, its softmax with the sum of
//!     exponentials taken in `f64`); base scores and leaf values must then be `f32` values.
//!   - `split` (default `less_or_equal`): a record goes left when `x <= threshold`; `less`
//!     (XGBoost) when `x < threshold`.
//!   - `known_categories` (optional): per feature, a bitset of the categories seen in training
//!     (empty: no such set); a category outside it goes the node's missing direction.
//!
//!   Scoring: each output starts at its base score and adds, in tree order, the value of the
//!   leaf each of its trees sends the record to. A missing value (absent or `null` in a
//!   record) goes its node's `default_left` direction. A categorical split reads the integer
//!   part of the value as the category; negative values and unknown categories go the missing
//!   direction, a category whose bit is set goes left, any other right. A model scores missing
//!   features only when every tree has `default_left`. The checker refuses trees whose
//!   `output` is not below the output count, arrays of different lengths, children out of
//!   range, cycles and shared children, bitsets on leaves, bitsets longer than 32768 words and
//!   `known_categories` without one entry per feature.
//! * `mlp`: `layers`, each with `weights` (rows = inputs, columns = outputs, as scikit-learn's
//!   `coefs_`) and `biases`; `hidden_activation` (`relu`, `tanh`, `logistic`, `identity`) and
//!   `output_activation` (`identity`, `logistic`, `softmax`).
//!
//! `output` is `{"type": "regression"}` or `{"type": "classification", "classes": [..]}`; a
//! classifier's class labels are strings, in the order of its probability columns.
//!
//! ## Reference statistics
//!
//! `reference` (optional) describes the data the model was trained on, so that live data can
//! be compared with it (population stability per feature and for the predictions):
//!
//! ```json
//! "reference": {
//!   "rows": 5000,
//!   "features": [
//!     {"edges": [1.2, 2.5, 3.9], "shares": [0.25, 0.25, 0.25, 0.25], "missing": 0.01, "min": 0.1, "max": 9.7},
//!     {"edges": [-0.5, 0.5, 1.5], "shares": [0.0, 0.5, 0.3, 0.2], "missing": 0.0, "min": 0.0, "max": 2.0}
//!   ],
//!   "prediction": {"edges": [0.2, 0.5], "shares": [0.3, 0.4, 0.3]}
//! }
//! ```
//!
//! * `rows`: how many rows the statistics come from (at least 1).
//! * `features`: one entry per feature, in the order of `features`. A value is binned as
//!   [`Model::predict`] takes it: the number read from the record, or for a feature a `one_hot`
//!   or `ordinal` column encodes its category code (index in `categories`, -1 when unknown).
//!   `edges` are finite and strictly increasing, at most 100 ([`MAX_BIN_EDGES`]); they make
//!   `edges.len() + 1` bins, and a value `v` falls in bin "number of edges `<= v`" (below the
//!   first edge: bin 0; at or above the last: the last bin; see [`Bins::bin`]). `shares` holds
//!   one share per bin, each in [0, 1], summing to 1 (within 1e-6), over the rows where the
//!   feature was present; `missing` is the share of rows where it was missing (absent, `null`,
//!   NaN), in [0, 1]; `min <= max` are the smallest and largest present values. The exporter
//!   writes deciles (at most 10 bins; a constant feature has no edges and one share of 1) and
//!   for an encoded feature one bin per code, unknown first (`[-0.5, 0.5, 1.5, ...]`).
//! * `prediction` (optional): the same bins over the model's value on the reference rows: the
//!   regression value, a binary classifier's probability of its second class, a multiclass
//!   classifier's predicted class index (edges `[0.5, 1.5, ...]`, one bin per class).
//!
//! The checker refuses a reference without one entry per feature, bins that break these rules,
//! shares outside [0, 1], `min > max` and `rows` 0, naming the field
//! (`reference.features[3].edges: not strictly increasing ...`). The statistics are never used
//! for scoring; a built model keeps them ([`Model::reference`]).
//!
//! [`MAX_BIN_EDGES`]: crate::model::MAX_BIN_EDGES
//! [`Model::reference`]: crate::model::Model::reference

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::reference::{Bins, FeatureReference, Reference};

/// The spec format this build writes and the newest one it reads.
pub const FORMAT_VERSION: u32 = 1;

/// An untrusted model description. Decode it with [`ModelSpec::from_json`], check it with
/// [`ModelSpec::build`](crate::model::ModelSpec::build).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Spec format version; this build reads versions up to [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Ordered, unique feature names, read by name from each record.
    pub features: Vec<String>,
    /// Optional standardisation applied to the features before the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaler: Option<ScalerSpec>,
    /// Optional preprocessing (encoding, imputation, scaling) turning the features into the
    /// model's inputs; exclusive with `scaler`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<PreprocessSpec>,
    /// The model's parameters, by kind.
    pub model: ParamsSpec,
    /// What the model predicts.
    pub output: OutputSpec,
    /// Optional provenance: who trained it, when, and how well it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// Optional reference statistics of the training data (per-feature bins, missing shares
    /// and ranges, the distribution of predictions), which live data is compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
}

/// A `StandardScaler` stage: `x' = (x - mean) / scale`, per feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalerSpec {
    /// Per-feature mean subtracted first.
    pub mean: Vec<f64>,
    /// Per-feature divisor; must be non-zero.
    pub scale: Vec<f64>,
}

/// A preprocessing stage: each column writes one or more of the model's inputs, in order
/// (scikit-learn's `ColumnTransformer` output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessSpec {
    /// The output columns' producers, in output order.
    pub columns: Vec<ColumnSpec>,
}

/// One producer of model inputs from one feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ColumnSpec {
    /// A numeric feature, optionally imputed then standardised: one input.
    Numeric {
        /// Index into `features`.
        feature: u32,
        /// The value a missing feature takes (`SimpleImputer.statistics_`); absent: a missing
        /// value stays missing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        impute: Option<f64>,
        /// Subtracted after imputation (`StandardScaler.mean_`); default 0.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mean: Option<f64>,
        /// Divides after the mean is subtracted (`StandardScaler.scale_`); default 1.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scale: Option<f64>,
    },
    /// A string feature one-hot encoded: one input per category.
    OneHot {
        /// Index into `features`.
        feature: u32,
        /// The known categories, in output order.
        categories: Vec<String>,
        /// `error` (an unknown value is refused) or `ignore` (all zeros).
        handle_unknown: String,
        /// Whether a missing value is a category of its own (it was seen in training), with
        /// one more input after the listed categories'; otherwise (default) it is an unknown
        /// value.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        missing_is_category: bool,
    },
    /// A string feature ordinal encoded: one input, the category's index.
    Ordinal {
        /// Index into `features`.
        feature: u32,
        /// The known categories; the code of each is its index.
        categories: Vec<String>,
        /// `error` (an unknown value is refused) or `use_encoded_value` (it takes
        /// `unknown_value`).
        handle_unknown: String,
        /// The code of an unknown value with `use_encoded_value`; `null` or absent: missing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unknown_value: Option<f64>,
        /// Whether a missing value is a category of its own (it was seen in training) and
        /// takes `encoded_missing_value`; otherwise (default) it is an unknown value.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        missing_is_category: bool,
        /// The code of a missing value when `missing_is_category`; `null` or absent: missing
        /// (NaN).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encoded_missing_value: Option<f64>,
    },
}

/// Model parameters, one variant per supported architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ParamsSpec {
    /// Linear regression: `y = coefficients · x + intercept`.
    Linear {
        /// One coefficient per feature.
        coefficients: Vec<f64>,
        /// The bias term.
        intercept: f64,
    },
    /// Logistic regression, binary (one row) or multinomial (one row per class).
    Logistic {
        /// One row per decision function, each with one coefficient per feature.
        coefficients: Vec<Vec<f64>>,
        /// One intercept per row.
        intercepts: Vec<f64>,
    },
    /// A random forest (or a single decision tree: a forest of one).
    RandomForest {
        /// The trees; the forest predicts the mean of their outputs.
        trees: Vec<TreeSpec>,
        /// Whether to round the feature to `f32` before comparing (scikit-learn does).
        #[serde(default)]
        threshold_precision: ThresholdPrecision,
    },
    /// An additive ensemble of boosted regression trees (gradient boosting).
    BoostedTrees(BoostedTreesSpec),
    /// A multi-layer perceptron of dense layers.
    Mlp {
        /// The layers from input to output.
        layers: Vec<LayerSpec>,
        /// Activation of every hidden layer.
        hidden_activation: Activation,
        /// Activation of the output layer.
        output_activation: Activation,
    },
}

/// One decision tree as flat node arrays, indexed by node id; node 0 is the root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeSpec {
    /// Feature index tested at each split node (ignored at leaves, conventionally -2 or -1).
    pub feature: Vec<i64>,
    /// Split threshold: go left when `x <= threshold` (ignored at leaves).
    pub threshold: Vec<f64>,
    /// Left child id, or -1 at a leaf.
    pub left: Vec<i64>,
    /// Right child id, or -1 at a leaf.
    pub right: Vec<i64>,
    /// Per node: the regression value (one number) or class probabilities (one per class).
    pub value: Vec<Vec<f64>>,
}

/// How a tree compares a feature with a split threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdPrecision {
    /// Compare the feature as given, in `f64`.
    #[default]
    F64,
    /// Round the feature to `f32` first, as scikit-learn's trees do.
    F32,
}

/// A boosted tree ensemble: per output, the base score plus the leaf values the record reaches,
/// summed in tree order, then the link. See the module documentation for the exact rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoostedTreesSpec {
    /// The trees, in the order their leaves are added.
    pub trees: Vec<BoostedTreeSpec>,
    /// The starting value of each output: one for `identity` and `logistic`, one per class for
    /// `softmax`.
    pub base_score: Vec<f64>,
    /// How the summed outputs become a prediction: `identity`, `logistic` or `softmax`.
    pub link: String,
    /// Whether features are rounded to `f32` before comparing (scikit-learn's
    /// `GradientBoosting*`, XGBoost) or compared as given (`f64`).
    #[serde(default)]
    pub threshold_precision: ThresholdPrecision,
    /// The type outputs are summed and linked in: `f64`, or `f32` as XGBoost does.
    #[serde(default)]
    pub accumulation: Accumulation,
    /// Which side of a numeric split the threshold itself falls on.
    #[serde(default)]
    pub split: SplitRule,
    /// Per feature, the categories seen in training as a bitset (empty for a feature without
    /// one); a category outside a feature's set takes the node's missing-value direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_categories: Option<Vec<Vec<u32>>>,
}

/// One boosted tree as flat node arrays indexed by node id; node 0 is the root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoostedTreeSpec {
    /// The output (class, for `softmax`) this tree adds to; 0 otherwise.
    #[serde(default)]
    pub output: u32,
    /// Feature index tested at each split node (ignored at leaves).
    pub feature: Vec<i64>,
    /// Numeric split threshold (ignored at leaves and categorical splits).
    pub threshold: Vec<f64>,
    /// Left child id, or -1 at a leaf.
    pub left: Vec<i64>,
    /// Right child id, or -1 at a leaf.
    pub right: Vec<i64>,
    /// The leaf values, already scaled by the learning rate (ignored at splits).
    pub value: Vec<f64>,
    /// Per node: whether a missing value goes left. Absent: the model does not score missing
    /// values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_left: Option<Vec<bool>>,
    /// Per node: empty for a numeric split or a leaf, otherwise the bitset of the categories
    /// that go left (bit `c % 32` of word `c / 32` for category `c`; all zero when only missing
    /// and unknown values go left).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<Vec<u32>>>,
}

/// The floating-point type a boosted model sums its outputs in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accumulation {
    /// Sum and link in `f64` (scikit-learn, LightGBM).
    #[default]
    F64,
    /// Sum and link in `f32` (XGBoost); base scores and leaf values must be `f32` values.
    F32,
}

/// Which way a numeric split sends a value equal to its threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitRule {
    /// Left when `x <= threshold` (scikit-learn, LightGBM).
    #[default]
    LessOrEqual,
    /// Left when `x < threshold` (XGBoost).
    Less,
}

/// One dense layer: `out = activation(in · weights + biases)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// `inputs x outputs` matrix as rows of equal length.
    pub weights: Vec<Vec<f64>>,
    /// One bias per output.
    pub biases: Vec<f64>,
}

/// Activation functions an MLP layer may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `f(x) = x`.
    Identity,
    /// `max(0, x)`.
    Relu,
    /// Hyperbolic tangent.
    Tanh,
    /// The logistic sigmoid `1 / (1 + e^-x)`.
    Logistic,
    /// Normalised exponentials across the layer (output layer only).
    Softmax,
}

/// What a model predicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OutputSpec {
    /// A single real value.
    Regression,
    /// One of `classes`, with a probability for each.
    Classification {
        /// Class labels in the order of the probability columns.
        classes: Vec<String>,
    },
}

/// Provenance carried with a spec; never used for scoring.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// When the model was trained (free text, RFC 3339 recommended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_at: Option<String>,
    /// Who trained or uploaded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Training or validation metrics by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// Any other fields, kept as given.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}
