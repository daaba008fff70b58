//! Records: the `[records]` settings, where a record keeps its key and id, and why a record
//! was not scored. Decoding input lives in [`decode`](self::decode), encoding scored records
//! in [`encode`](self::encode).
//!
//! A record's key comes from a configured field (for example `city`) or from the Kafka message
//! key; its features are read by name, in the order of the scoring model's feature list. A
//! record that cannot be scored becomes a [`Rejection`] with a typed [`Reason`]: never a panic,
//! never a silent drop.

mod decode;
mod encode;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use decode::{decode, Decoded};
pub use encode::Scored;

/// `[records]`: where a record keeps its key and id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordsConfig {
    /// The JSON field holding the model key (default `city`); not empty.
    #[serde(deserialize_with = "non_empty_field")]
    pub key_field: String,
    /// Take the model key from the Kafka message key instead of a field (default false).
    pub key_from_message: bool,
    /// The JSON field copied to the output as `id` (default `id`).
    pub id_field: String,
}

impl Default for RecordsConfig {
    fn default() -> Self {
        Self {
            key_field: "city".into(),
            key_from_message: false,
            id_field: "id".into(),
        }
    }
}

/// A field name that is not empty.
fn non_empty_field<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let name = String::deserialize(deserializer)?;
    if name.is_empty() {
        return Err(serde::de::Error::custom(
            "must name the JSON field holding the model key (e.g. \"city\"), not be empty; \
             set key_from_message = true to take the key from the Kafka message key",
        ));
    }
    Ok(name)
}

impl RecordsConfig {
    /// The record format this section describes.
    pub fn format(&self) -> RecordFormat {
        RecordFormat {
            key: if self.key_from_message {
                KeySource::MessageKey
            } else {
                KeySource::Field(self.key_field.clone())
            },
            id_field: self.id_field.clone(),
        }
    }
}

/// Where records keep their key and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFormat {
    /// Where the model key comes from.
    pub key: KeySource,
    /// The field copied to the output as `id`, when present.
    pub id_field: String,
}

impl Default for RecordFormat {
    fn default() -> Self {
        Self {
            key: KeySource::Field("city".into()),
            id_field: "id".into(),
        }
    }
}

/// Where a record's model key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A top-level field of the JSON object (a string, or an integer used as text).
    Field(String),
    /// The Kafka message key, as UTF-8.
    MessageKey,
}

/// Why a record was not scored. The names are stable: they appear in dead letters and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Reason {
    /// The payload is not a JSON object.
    NotJson,
    /// The key field (or message key) is absent, empty or not text.
    MissingKey,
    /// A feature the model needs is absent or null.
    MissingFeature,
    /// A feature is present but not a finite number.
    NonNumericFeature,
    /// Neither the key nor the fallback key has a usable model.
    NoModel,
    /// The model failed on this record (for example a non-finite output).
    ModelError,
    /// The model store could not be reached to load this key's model.
    StoreUnavailable,
}

impl Reason {
    /// Every reason, in a stable order.
    pub const ALL: [Reason; 7] = [
        Reason::NotJson,
        Reason::MissingKey,
        Reason::MissingFeature,
        Reason::NonNumericFeature,
        Reason::NoModel,
        Reason::ModelError,
        Reason::StoreUnavailable,
    ];

    /// The reason's stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotJson => "not_json",
            Reason::MissingKey => "missing_key",
            Reason::MissingFeature => "missing_feature",
            Reason::NonNumericFeature => "non_numeric_feature",
            Reason::NoModel => "no_model",
            Reason::ModelError => "model_error",
            Reason::StoreUnavailable => "store_unavailable",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record that was not scored, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The reason class.
    pub reason: Reason,
    /// A human-readable explanation naming the field or model involved.
    pub message: String,
}

impl Rejection {
    /// A rejection of class `reason`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}
