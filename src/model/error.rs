//! Errors from decoding, checking and scoring models.

/// Why a spec was refused or a record could not be scored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The spec is not valid JSON for the spec format.
    #[error("model spec is not valid: {0}; see the spec format in the README")]
    Json(serde_json::Error),
    /// The spec holds `NaN` or `Infinity`, which JSON does not have.
    #[error(
        "model spec is not valid: {token} at line {line} column {column}, in {path}: JSON has no \
         NaN or Infinity, every number must be finite (a model exported with NaN weights did \
         not train); see the spec format in the README"
    )]
    NonFiniteNumber {
        /// The token as written (`NaN`, `-Infinity`, ...).
        token: String,
        /// Where it sits, as `model.coefficients[1]`.
        path: String,
        /// Its line, from 1.
        line: usize,
        /// Its column, from 1.
        column: usize,
    },
    /// The spec's `format_version` is newer than this build understands.
    #[error("model spec format_version {found} is not supported (this build reads 1..={supported}); upgrade keyscore or re-export the model")]
    UnsupportedFormat {
        /// The version found in the spec.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The spec decoded but does not describe a valid model.
    #[error("invalid model: {0}")]
    Invalid(String),
    /// A record had the wrong number of features.
    #[error("model expects {expected} features, got {got}")]
    FeatureCount {
        /// Features the model expects.
        expected: usize,
        /// Features given.
        got: usize,
    },
    /// A feature value is NaN or infinite.
    #[error("feature '{0}' is not a finite number")]
    NonFiniteFeature(String),
    /// An encoded feature's value is not one of its categories and the encoder refuses
    /// unknown values.
    #[error("feature '{0}' is not one of its encoder's categories")]
    UnknownCategory(String),
    /// Scoring produced NaN or an infinity (for example an overflow in an activation).
    #[error("model produced a non-finite output")]
    NonFiniteOutput,
}
