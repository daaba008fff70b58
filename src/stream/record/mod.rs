//! Records: the `[records]` settings (where a record keeps its key and id, the fallback chain
//! its fields describe, the output shape), and why a record was not scored. Decoding input
//! lives in [`decode`](self::decode), encoding scored records in [`encode`](self::encode), the
//! scoring time's RFC 3339 text in [`time`](self::time).
//!
//! A record's key comes from a configured field (for example `city`) or from the Kafka message
//! key; its features are read by name, in the order of the scoring model's feature list. A
//! record that cannot be scored becomes a [`Rejection`] with a typed [`Reason`]: never a panic,
//! never a silent drop.

mod decode;
mod encode;
mod time;

use std::{fmt, sync::Arc};

use serde::{Deserialize, Serialize};

pub use decode::{decode, Decoded};
pub use encode::{FallbackCause, Level, Origin, OutputFormat, Scored, Source};
pub use time::ScoredAt;

/// `[records]`: where a record keeps its key and id, the fallback chain its fields describe,
/// and the shape of the scored output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordsConfig {
    /// The JSON field holding the model key (default `city`); not empty.
    #[serde(deserialize_with = "non_empty_field")]
    pub key_field: String,
    /// Take the model key from the Kafka message key instead of a field (default false).
    pub key_from_message: bool,
    /// The JSON field copied to the output as `id` (default `id`). A record without it (or
    /// with `null`) gets a generated id: `TOPIC-PARTITION-OFFSET` from Kafka, `line-N` from a
    /// file, and the output says `"id_generated":true`.
    pub id_field: String,
    /// The shape of each scored record (default `scored`): `scored`, `enriched` or
    /// `prediction_log` (see [`OutputShape`]).
    pub output: OutputShape,
    /// The field that holds keyscore's fields in an `enriched` output (default `keyscore`);
    /// not empty.
    #[serde(deserialize_with = "non_empty_name")]
    pub enriched_field: String,
    /// Fields of the record naming the keys to try, in order, when the record's own key has no
    /// usable model (default none): with `["country", "region"]` a record is scored by its
    /// city's model, else its country's, else its region's, else the `[store] fallback_key`'s.
    /// Each must be a distinct, non-empty name other than `own` and `default` (the names of
    /// the chain's first and last levels).
    #[serde(deserialize_with = "fallback_field_names")]
    pub fallback_fields: Vec<String>,
}

impl Default for RecordsConfig {
    fn default() -> Self {
        Self {
            key_field: "city".into(),
            key_from_message: false,
            id_field: "id".into(),
            output: OutputShape::Scored,
            enriched_field: "keyscore".into(),
            fallback_fields: Vec::new(),
        }
    }
}

/// The shape of a scored record. Every shape carries the record's id (generated when it has
/// none), `scored_at` and the same prediction object; `seed/schema/` holds a JSON Schema of
/// each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputShape {
    /// keyscore's fields only: id, key, prediction, the model, the fallback level, `scored_at`.
    #[default]
    Scored,
    /// The input object, byte for byte and in its field order, with keyscore's fields added
    /// under `[records] enriched_field`.
    Enriched,
    /// A prediction log row: id, model_name, model_version, inputs (the features the model
    /// read), outputs, timestamp, and keyscore's checksum and fallback level.
    PredictionLog,
}

impl OutputShape {
    /// The shape's name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputShape::Scored => "scored",
            OutputShape::Enriched => "enriched",
            OutputShape::PredictionLog => "prediction_log",
        }
    }
}

/// A field name that is not empty.
fn non_empty_name<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let name = String::deserialize(deserializer)?;
    if name.is_empty() {
        return Err(serde::de::Error::custom(
            "must name a JSON field (e.g. \"keyscore\"), not be empty",
        ));
    }
    Ok(name)
}

/// Distinct, non-empty field names, none of them a level name of the chain's own.
fn fallback_field_names<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(deserializer)?;
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() || name == "own" || name == "default" {
            return Err(serde::de::Error::custom(format!(
                "'{name}' cannot be a fallback field: name the record fields holding the keys \
                 to try (e.g. [\"country\", \"region\"]); 'own' and 'default' name the chain's \
                 first and last levels"
            )));
        }
        if names[..i].contains(name) {
            return Err(serde::de::Error::custom(format!(
                "fallback field '{name}' is listed twice"
            )));
        }
    }
    if names.len() > usize::from(u8::MAX - 1) {
        return Err(serde::de::Error::custom("too many fallback fields"));
    }
    Ok(names)
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
            fallback_fields: self.fallback_fields.clone().into(),
            output: OutputFormat::new(
                self.output,
                &self.enriched_field,
                self.fallback_fields.clone().into(),
            ),
        }
    }
}

/// Where records keep their key, id and fallback chain, and how scored records are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFormat {
    /// Where the model key comes from.
    pub key: KeySource,
    /// The field copied to the output as `id`, when present.
    pub id_field: String,
    /// The fields naming the keys to try when the record's own key has no usable model.
    pub fallback_fields: Arc<[String]>,
    /// How scored records are encoded.
    pub output: OutputFormat,
}

impl Default for RecordFormat {
    fn default() -> Self {
        Self {
            key: KeySource::Field("city".into()),
            id_field: "id".into(),
            fallback_fields: Arc::new([]),
            output: OutputFormat::default(),
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
    /// A feature is present but not a finite number (or, for a feature a preprocess encoder
    /// reads, not a string, or a category its encoder refuses).
    NonNumericFeature,
    /// Neither the key nor any key along its fallback chain has a usable model.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RecordsConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn output_shapes_and_fallback_fields_parse_and_name_their_levels() {
        let c = parse(
            "output = \"prediction_log\"\nenriched_field = \"ks\"\nfallback_fields = [\"country\", \"region\"]\n",
        )
        .unwrap();
        assert_eq!(c.output, OutputShape::PredictionLog);
        let f = c.format();
        assert_eq!(f.output.shape(), OutputShape::PredictionLog);
        let names: Vec<&str> = [Level::Own, Level::Field(0), Level::Field(1), Level::Default]
            .into_iter()
            .map(|l| f.output.level_name(l))
            .collect();
        assert_eq!(names, ["own", "country", "region", "default"]);
        assert_eq!(parse("").unwrap(), RecordsConfig::default());
        assert_eq!(
            parse("output = \"enriched\"").unwrap().output,
            OutputShape::Enriched
        );
    }

    #[test]
    fn bad_output_settings_are_refused_with_what_to_write() {
        for (text, says) in [
            ("output = \"json\"", "scored"),
            ("enriched_field = \"\"", "keyscore"),
            ("fallback_fields = [\"country\", \"country\"]", "twice"),
            ("fallback_fields = [\"default\"]", "'default'"),
            ("fallback_fields = [\"\"]", "country"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
