//! Models: untrusted [`ModelSpec`]s checked into immutable, shareable [`Model`]s, and scoring.
//!
//! The set of architectures is closed (linear, logistic, random forest, boosted trees, MLP), so a [`Model`] is
//! an enum over kinds rather than a trait object. A `Model` is `Send + Sync` and is shared as
//! `Arc<Model>`; scoring keeps its scratch space local to the call.

mod boosted;
mod error;
mod forest;
mod json_error;
mod linear;
mod mlp;
mod preprocess;
mod reference;
pub mod spec;
#[cfg(test)]
mod testing;

use std::{collections::HashSet, sync::Arc};

use ndarray::ArrayView2;

pub use error::Error;
pub use preprocess::Categories;
pub use reference::{Bins, FeatureReference, Reference, MAX_BIN_EDGES};
pub use spec::{ModelSpec, FORMAT_VERSION};

use self::{
    boosted::Boosted,
    forest::Forest,
    linear::{Linear, Logistic},
    mlp::Mlp,
    preprocess::Preprocess,
};

/// The most numbers a spec may hold (features, scaler, weights, thresholds, leaf values, tree
/// node links and class labels together); [`ModelSpec::build`] refuses anything larger.
pub const MAX_PARAMETERS: usize = 50_000_000;

/// A checked, immutable model ready to score.
#[derive(Debug, Clone)]
pub struct Model {
    /// Shared by every model with the same feature list (see [`intern_features`]).
    features: Arc<[String]>,
    scaler: Option<Scaler>,
    /// Encoding, imputation and scaling from the features to the model's inputs.
    preprocess: Option<Preprocess>,
    kind: Kind,
    output: Output,
    /// Round each (scaled) feature to `f32` before scoring (forests with `f32` thresholds).
    round_to_f32: bool,
    /// A missing feature (NaN) is scored rather than refused.
    handles_missing: bool,
    /// Scratch a call needs: the prepared input (when scaled or rounded) then the MLP buffers.
    scratch_len: usize,
    /// The training data's statistics, shared by clones.
    reference: Option<Arc<Reference>>,
}

/// Standardisation applied to features before the model.
#[derive(Debug, Clone)]
struct Scaler {
    mean: Vec<f64>,
    scale: Vec<f64>,
}

#[derive(Debug, Clone)]
enum Kind {
    Linear(Linear),
    Logistic(Logistic),
    Forest(Forest),
    Boosted(Boosted),
    Mlp(Mlp),
}

/// What a model predicts, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A single real value.
    Regression,
    /// One class out of these labels, with probabilities in this order.
    Classification(Vec<String>),
}

/// One record's prediction.
#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    /// A regression value.
    Value(f64),
    /// A classification: the index of the most probable class and every class's probability.
    Class {
        /// Index into the model's class labels of the most probable class (first on ties).
        index: usize,
        /// One probability per class, in label order; they sum to 1.
        probabilities: Vec<f64>,
    },
}

impl ModelSpec {
    /// Decodes a spec from JSON bytes. Never panics, whatever the bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        let spec: ModelSpec =
            serde_json::from_slice(bytes).map_err(|err| json_error::spec_json_error(bytes, err))?;
        if spec.format_version == 0 || spec.format_version > FORMAT_VERSION {
            return Err(Error::UnsupportedFormat {
                found: spec.format_version,
                supported: FORMAT_VERSION,
            });
        }
        Ok(spec)
    }

    /// Encodes the spec as compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a spec always serialises")
    }

    /// Checks the spec and builds the model. The error names the first problem found.
    pub fn build(&self) -> Result<Model, Error> {
        build::build(self)
    }
}

mod build;

/// Distinct feature lists interned, at most; beyond that a model keeps its own copy.
const MAX_INTERNED_FEATURE_LISTS: usize = 4096;

/// The one shared copy of a feature list. Per-key models usually share their feature list
/// (one model architecture, many keys), so 10^6 models hold one list, not 10^6: less memory,
/// and a list that stays in the CPU cache while records of many keys are scored.
fn intern_features(features: &[String]) -> Arc<[String]> {
    static INTERNED: std::sync::OnceLock<std::sync::Mutex<HashSet<Arc<[String]>>>> =
        std::sync::OnceLock::new();
    let mut interned = INTERNED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(shared) = interned.get(features) {
        return Arc::clone(shared);
    }
    let list: Arc<[String]> = features.into();
    if interned.len() < MAX_INTERNED_FEATURE_LISTS {
        interned.insert(Arc::clone(&list));
    }
    list
}

/// Heap bytes of a vector's allocation.
fn vec_bytes<T>(v: &[T]) -> usize {
    std::mem::size_of_val(v)
}

impl Model {
    /// Bytes this model holds, its own struct and its heap allocations: what a cache of built
    /// models weighs it at.
    pub fn heap_bytes(&self) -> usize {
        let strings = |v: &[String]| vec_bytes(v) + v.iter().map(String::len).sum::<usize>();
        let kind = match &self.kind {
            Kind::Linear(m) => m.heap_bytes(),
            Kind::Logistic(m) => m.heap_bytes(),
            Kind::Forest(m) => m.heap_bytes(),
            Kind::Boosted(m) => m.heap_bytes(),
            Kind::Mlp(m) => m.heap_bytes(),
        };
        let output = match &self.output {
            Output::Regression => 0,
            Output::Classification(classes) => strings(classes),
        };
        // The feature list is shared with every model that has the same one (interned), so
        // it is not counted per model.
        std::mem::size_of::<Self>()
            + self
                .scaler
                .as_ref()
                .map_or(0, |s| vec_bytes(&s.mean) + vec_bytes(&s.scale))
            + self.preprocess.as_ref().map_or(0, Preprocess::heap_bytes)
            + kind
            + output
            + self.reference.as_deref().map_or(0, Reference::heap_bytes)
    }

    /// Feature names in the order [`Model::predict`] expects them.
    pub fn features(&self) -> &[String] {
        &self.features
    }

    /// What the model predicts.
    pub fn output(&self) -> &Output {
        &self.output
    }

    /// Whether the model scores records with missing features: each is given as NaN to
    /// [`Model::predict`], and a record field that is absent or `null` is not a dead letter.
    /// True for boosted trees with a default direction for missing values at every node.
    pub fn handles_missing(&self) -> bool {
        self.handles_missing
    }

    /// Whether a missing value (NaN) of feature `i` is scored: the model handles missing
    /// values, or a preprocess column imputes or encodes it. A record field that is absent or
    /// `null` is then not a dead letter.
    pub fn accepts_missing(&self, i: usize) -> bool {
        match &self.preprocess {
            Some(p) => p.accepts_missing(i),
            None => self.handles_missing,
        }
    }

    /// The categories of feature `i` when a preprocess encoder reads it as a string. Such a
    /// feature is given to [`Model::predict`] as its category code ([`Categories::code`]),
    /// NaN when missing and -1 when unknown.
    pub fn categories(&self, i: usize) -> Option<&Categories> {
        self.preprocess.as_ref().and_then(|p| p.categories(i))
    }

    /// The reference statistics of the data the model was trained on, when its spec has
    /// them: per feature, quantile bins of the values [`Model::predict`] takes, the share of
    /// missing values and the range; and the distribution of the model's predictions.
    pub fn reference(&self) -> Option<&Reference> {
        self.reference.as_deref()
    }

    /// The architecture's name as used in specs: `linear`, `logistic`, `random_forest`,
    /// `boosted_trees`, `mlp`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Linear(_) => "linear",
            Kind::Logistic(_) => "logistic",
            Kind::Forest(_) => "random_forest",
            Kind::Boosted(_) => "boosted_trees",
            Kind::Mlp(_) => "mlp",
        }
    }

    /// Scores one record whose features are given in [`Model::features`] order.
    pub fn predict(&self, x: &[f64]) -> Result<Prediction, Error> {
        score::predict(self, x)
    }

    /// Scores a batch, one row per record; equal to calling [`Model::predict`] row by row.
    pub fn predict_batch(&self, x: ArrayView2<'_, f64>) -> Result<Vec<Prediction>, Error> {
        score::predict_batch(self, x)
    }
}

mod score;

/// The checksum keyscore reports for a spec: the first 16 hex digits of the SHA-256 of the
/// spec's canonical text ([`canonical_spec_text`]), so the same spec has the same checksum
/// whether it was stored compact by keyscore or the Python package, or pretty-printed by hand.
pub fn spec_checksum(spec_text: &str) -> String {
    let digest = spec_sha256(&canonical_spec_text(spec_text));
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of `text`'s bytes.
pub fn spec_sha256(text: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes()).into()
}

/// A spec's canonical text: the JSON with every whitespace character outside strings removed.
/// Key order, number spelling and string contents are kept as written, so any writer (this
/// crate, the Python package, a hand-written CQL insert) can produce the same text with a
/// few lines of code and no JSON re-serialisation. Meant for valid JSON; other text is
/// compacted the same way and stays invalid.
pub fn canonical_spec_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{spec::*, testing::*, Error, Model, ModelSpec, Prediction};

    /// The example of the spec format's documentation.
    const DOC_EXAMPLE: &str = r#"{
      "format_version": 1,
      "features": ["distance_km", "items"],
      "scaler": {"mean": [5.0, 3.0], "scale": [2.0, 1.5]},
      "model": {"kind": "linear", "coefficients": [1.5, -0.25], "intercept": 12.0},
      "output": {"type": "regression"},
      "metadata": {"trained_at": "2026-11-01T10:00:00Z", "author": "ana", "metrics": {"r2": 0.91}}
    }"#;

    #[test]
    fn models_are_send_and_sync() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Model>();
        send_sync::<std::sync::Arc<Model>>();
    }

    #[test]
    fn the_documented_example_builds_and_scores() {
        let m = ModelSpec::from_json(DOC_EXAMPLE.as_bytes())
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(m.features(), ["distance_km", "items"]);
        assert_eq!(m.output(), &super::Output::Regression);
        // x' = [(7 - 5) / 2, (4.5 - 3) / 1.5] = [1, 1]; 1.5 - 0.25 + 12
        assert_eq!(m.predict(&[7.0, 4.5]).unwrap(), Prediction::Value(13.25));
    }

    #[test]
    fn every_kind_round_trips_through_json() {
        for mut s in one_of_each_kind() {
            s.metadata = Some(Metadata {
                trained_at: Some("2026-11-01T10:00:00Z".into()),
                author: Some("ana".into()),
                metrics: [("auc".to_string(), 0.875)].into(),
                extra: [("run".to_string(), serde_json::json!({"id": 7}))].into(),
            });
            let back = ModelSpec::from_json(s.to_json().as_bytes()).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn unsupported_format_versions_are_refused() {
        for v in [0, FORMAT_VERSION + 1] {
            let text =
                DOC_EXAMPLE.replace("\"format_version\": 1", &format!("\"format_version\": {v}"));
            assert!(matches!(
                ModelSpec::from_json(text.as_bytes()),
                Err(Error::UnsupportedFormat { found, supported: FORMAT_VERSION }) if found == v
            ));
        }
    }

    #[test]
    fn numbers_beyond_f64_and_unknown_fields_are_json_errors() {
        let text = DOC_EXAMPLE.replace("12.0", "1e400");
        assert!(matches!(
            ModelSpec::from_json(text.as_bytes()),
            Err(Error::Json(_))
        ));
        let text = DOC_EXAMPLE.replace("\"intercept\"", "\"bias\": 1, \"intercept\"");
        assert!(matches!(
            ModelSpec::from_json(text.as_bytes()),
            Err(Error::Json(_))
        ));
    }

    /// Builds and, when it builds, scores a spec: none of it may panic.
    fn exercise(bytes: &[u8]) {
        if let Ok(spec) = ModelSpec::from_json(bytes) {
            if let Ok(model) = spec.build() {
                let n = model.features().len();
                let _ = model.predict(&vec![0.5; n]);
                let _ = model.predict(&vec![-1e300; n]);
            }
        }
    }

    /// One edit of a text: overwrite, insert or delete a byte at a position.
    #[derive(Debug, Clone)]
    enum Edit {
        Set(prop::sample::Index, u8),
        Insert(prop::sample::Index, u8),
        Delete(prop::sample::Index),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        // Bytes that keep JSON nearly valid are the interesting ones.
        let byte = prop_oneof![
            prop::sample::select(b"0123456789-+.eE,:[]{}\" ntrufals".to_vec()),
            any::<u8>(),
        ];
        prop_oneof![
            (any::<prop::sample::Index>(), byte.clone()).prop_map(|(i, b)| Edit::Set(i, b)),
            (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Edit::Insert(i, b)),
            any::<prop::sample::Index>().prop_map(Edit::Delete),
        ]
    }

    proptest! {
        #[test]
        fn from_json_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            exercise(&bytes);
        }

        #[test]
        fn from_json_and_build_never_panic_on_mutated_specs(
            which in 0usize..11,
            edits in prop::collection::vec(edit(), 1..6),
        ) {
            let mut text = one_of_each_kind()[which].to_json().into_bytes();
            for e in edits {
                match e {
                    Edit::Set(i, b) => {
                        let i = i.index(text.len());
                        text[i] = b;
                    }
                    Edit::Insert(i, b) => {
                        let i = i.index(text.len() + 1);
                        text.insert(i, b);
                    }
                    Edit::Delete(i) => {
                        let i = i.index(text.len());
                        text.remove(i);
                    }
                }
            }
            exercise(&text);
        }

        #[test]
        fn build_never_panics_on_arbitrary_trees(
            nodes in prop::collection::vec(
                (-1i64..4, -2.0f64..2.0, -2i64..10, -2i64..10, prop::collection::vec(0.0f64..1.0, 0..3)),
                0..10,
            ),
            x in prop::collection::vec(-3.0f64..3.0, 3),
        ) {
            let s = spec(3, forest(vec![tree(&nodes)]), classes(&["a", "b"]));
            if let Ok(m) = s.build() {
                // A checked tree always reaches a leaf.
                let (_, p) = class(m.predict(&x).unwrap());
                prop_assert_eq!(p.len(), 2);
            }
        }

        #[test]
        fn build_never_panics_on_arbitrary_boosted_trees(
            nodes in prop::collection::vec(
                (
                    (-1i64..4, -2.0f64..2.0, -2i64..10, -2i64..10, -1.0f64..1.0),
                    any::<bool>(),
                    prop::collection::vec(any::<u32>(), 0..3),
                ),
                0..10,
            ),
            output in 0u32..4,
            link in prop::sample::select(vec!["identity", "logistic", "softmax", "log"]),
            f32_precision in any::<bool>(),
            x in prop::collection::vec(prop_oneof![-3.0f64..40.0, Just(f64::NAN)], 3),
        ) {
            let tree = BoostedTreeSpec {
                output,
                feature: nodes.iter().map(|n| n.0 .0).collect(),
                threshold: nodes.iter().map(|n| n.0 .1).collect(),
                left: nodes.iter().map(|n| n.0 .2).collect(),
                right: nodes.iter().map(|n| n.0 .3).collect(),
                value: nodes.iter().map(|n| n.0 .4).collect(),
                default_left: Some(nodes.iter().map(|n| n.1).collect()),
                categories: Some(nodes.iter().map(|n| n.2.clone()).collect()),
            };
            let output_spec = if link == "identity" {
                OutputSpec::Regression
            } else {
                classes(&["a", "b", "c"][..if link == "logistic" { 2 } else { 3 }])
            };
            let s = spec(3, ParamsSpec::BoostedTrees(BoostedTreesSpec {
                trees: vec![tree],
                base_score: vec![0.0; if link == "softmax" { 3 } else { 1 }],
                link: link.into(),
                threshold_precision: if f32_precision { ThresholdPrecision::F32 } else { ThresholdPrecision::F64 },
                accumulation: if f32_precision { Accumulation::F32 } else { Accumulation::F64 },
                split: SplitRule::Less,
                known_categories: Some(vec![vec![0b1011], vec![], vec![u32::MAX]]),
            }), output_spec);
            if let Ok(m) = s.build() {
                // A checked tree always reaches a leaf, missing values included.
                prop_assert!(m.handles_missing());
                prop_assert!(m.predict(&x).is_ok());
            }
        }

        #[test]
        fn specs_round_trip_through_json(
            coefficients in prop::collection::vec(any::<f64>().prop_filter("finite", |v| v.is_finite()), 1..8),
            intercept in any::<f64>().prop_filter("finite", |v| v.is_finite()),
        ) {
            let s = spec(
                coefficients.len(),
                ParamsSpec::Linear { coefficients, intercept },
                OutputSpec::Regression,
            );
            let back = ModelSpec::from_json(s.to_json().as_bytes()).unwrap();
            prop_assert_eq!(back, s);
        }
    }

    #[test]
    fn canonical_text_drops_whitespace_outside_strings_only() {
        let pretty =
            "{\n  \"features\": [\"a b\", \"c\\\"\\t d\"],\r\n\t\"x\": 1.000 , \"é\": \" \"\n}\n";
        assert_eq!(
            super::canonical_spec_text(pretty),
            "{\"features\":[\"a b\",\"c\\\"\\t d\"],\"x\":1.000,\"é\":\" \"}"
        );
        // The canonical text means the same JSON.
        let a: serde_json::Value = serde_json::from_str(pretty).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(&super::canonical_spec_text(pretty)).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn the_checksum_is_the_same_for_pretty_and_compact_text() {
        let pretty = "{\n  \"a\": [1, 2]\n}\n";
        assert_eq!(
            super::spec_checksum(pretty),
            super::spec_checksum("{\"a\":[1,2]}")
        );
        assert_ne!(
            super::spec_checksum("{\"a\":[1,2]}"),
            super::spec_checksum("{\"a\":[2,1]}")
        );
    }
}
