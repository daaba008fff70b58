//! Models: untrusted [`ModelSpec`]s checked into immutable, shareable [`Model`]s, and scoring.
//!
//! The set of architectures is closed (linear, logistic, random forest, MLP), so a [`Model`] is
//! an enum over kinds rather than a trait object. A `Model` is `Send + Sync` and is shared as
//! `Arc<Model>`; scoring keeps its scratch space local to the call.

mod error;
mod forest;
mod linear;
mod mlp;
pub mod spec;
#[cfg(test)]
mod testing;

use ndarray::ArrayView2;

pub use error::Error;
pub use spec::{ModelSpec, FORMAT_VERSION};

use self::{
    forest::Forest,
    linear::{Linear, Logistic},
    mlp::Mlp,
};

/// The most numbers a spec may hold (features, scaler, weights, thresholds, leaf values, tree
/// node links and class labels together); [`ModelSpec::build`] refuses anything larger.
pub const MAX_PARAMETERS: usize = 50_000_000;

/// A checked, immutable model ready to score.
#[derive(Debug, Clone)]
pub struct Model {
    features: Vec<String>,
    scaler: Option<Scaler>,
    kind: Kind,
    output: Output,
    /// Round each (scaled) feature to `f32` before scoring (forests with `f32` thresholds).
    round_to_f32: bool,
    /// Scratch a call needs: the prepared input (when scaled or rounded) then the MLP buffers.
    scratch_len: usize,
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
        let spec: ModelSpec = serde_json::from_slice(bytes).map_err(Error::Json)?;
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

impl Model {
    /// Feature names in the order [`Model::predict`] expects them.
    pub fn features(&self) -> &[String] {
        &self.features
    }

    /// What the model predicts.
    pub fn output(&self) -> &Output {
        &self.output
    }

    /// The architecture's name as used in specs: `linear`, `logistic`, `random_forest`, `mlp`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Linear(_) => "linear",
            Kind::Logistic(_) => "logistic",
            Kind::Forest(_) => "random_forest",
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
/// spec's stored text.
pub fn spec_checksum(spec_text: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(spec_text.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}
