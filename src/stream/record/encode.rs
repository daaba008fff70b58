//! Encoding a scored record as one JSON object.

use std::sync::Arc;

use serde::{ser::SerializeMap, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::{model::Prediction, registry::ServedModel};

/// A scored record, ready to encode.
#[derive(Debug, Clone)]
pub struct Scored {
    /// The input's id, if it had one.
    pub id: Option<Box<RawValue>>,
    /// The input's key.
    pub key: String,
    /// The prediction.
    pub prediction: Prediction,
    /// The model that scored it.
    pub model: Arc<ServedModel>,
    /// Whether the fallback key's model scored it because its own key has none.
    pub fallback: bool,
    /// Whether a canary version of the key scored it (see [`crate::rollout`]).
    pub canary: bool,
    /// Whether this is a shadow version's output, which never goes to the main output.
    pub shadow: bool,
}

impl Scored {
    /// Appends the scored record as one JSON object (no newline) to `out`.
    ///
    /// `{"id":..,"key":..,"prediction":{"value":..} | {"class":..,"probabilities":{..}},
    /// "model_key":..,"model_version":..,"model_checksum":..,"fallback":..}`, followed by
    /// `"canary":true` for a canary version's output and `"shadow":true` for a shadow's.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(&mut *out, self).expect("writing JSON to memory cannot fail");
    }
}

impl Serialize for Scored {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        if let Some(id) = &self.id {
            map.serialize_entry("id", id)?;
        }
        map.serialize_entry("key", &self.key)?;
        map.serialize_entry(
            "prediction",
            &PredictionJson {
                prediction: &self.prediction,
                model: &self.model,
            },
        )?;
        map.serialize_entry("model_key", &self.model.key)?;
        map.serialize_entry("model_version", &self.model.version)?;
        map.serialize_entry("model_checksum", &self.model.checksum)?;
        map.serialize_entry("fallback", &self.fallback)?;
        if self.canary {
            map.serialize_entry("canary", &true)?;
        }
        if self.shadow {
            map.serialize_entry("shadow", &true)?;
        }
        map.end()
    }
}

struct PredictionJson<'a> {
    prediction: &'a Prediction,
    model: &'a ServedModel,
}

impl Serialize for PredictionJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        match self.prediction {
            Prediction::Value(v) => map.serialize_entry("value", v)?,
            Prediction::Class {
                index,
                probabilities,
            } => {
                let classes = match self.model.model.output() {
                    crate::model::Output::Classification(c) => c.as_slice(),
                    crate::model::Output::Regression => &[],
                };
                map.serialize_entry("class", &classes.get(*index))?;
                map.serialize_entry(
                    "probabilities",
                    &Probabilities {
                        classes,
                        probabilities,
                    },
                )?;
            }
        }
        map.end()
    }
}

struct Probabilities<'a> {
    classes: &'a [String],
    probabilities: &'a [f64],
}

impl Serialize for Probabilities<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.classes.len()))?;
        for (class, p) in self.classes.iter().zip(self.probabilities) {
            map.serialize_entry(class, p)?;
        }
        map.end()
    }
}
