//! Encoding a scored record as one JSON object, in the shape `[records] output` names.
//!
//! Every shape is written straight into the caller's buffer with `serde_json`'s writer: no
//! intermediate `Value`, no per-record allocation. `enriched` copies the input's bytes up to
//! its closing brace and appends keyscore's fields there, so the input is neither parsed again
//! nor re-ordered.
//!
//! The prediction object is the same in every shape: `value` is always present (the
//! regression output; for a classifier of two classes, the probability of its second class;
//! for more classes, the index of the predicted class in the model's class list), and a
//! classifier adds `class` (the predicted class) and `probabilities` (class to probability).

use std::{fmt, sync::Arc};

use serde::{ser::SerializeMap, Serialize, Serializer};
use serde_json::value::RawValue;

use super::{time::ScoredAt, OutputShape};
use crate::{
    model::{Output, Prediction},
    registry::ServedModel,
};

/// The level of the fallback chain whose model scored a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// The record's own key (`own`).
    Own,
    /// The key named by the record's `[records] fallback_fields[i]` (named after the field).
    Field(u8),
    /// The `[store] fallback_key` (`default`).
    Default,
}

impl Level {
    /// The level's name: `own`, the fallback field's name, or `default`.
    pub fn name<'a>(&self, fields: &'a [String]) -> &'a str {
        match self {
            Level::Own => "own",
            Level::Field(i) => fields.get(usize::from(*i)).map_or("field", String::as_str),
            Level::Default => "default",
        }
    }
}

/// Why a record was scored by a model other than its own key's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FallbackCause {
    /// The key has no active version (`no_model`).
    NoModel,
    /// The key's active version does not build and was refused (`refused`).
    Refused,
}

impl FallbackCause {
    /// The cause's stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackCause::NoModel => "no_model",
            FallbackCause::Refused => "refused",
        }
    }
}

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
    /// Whether a model other than its own key's scored it (`level` is not [`Level::Own`]).
    pub fallback: bool,
    /// The level of the fallback chain whose model scored it.
    pub level: Level,
    /// Why its own key's model did not score it, when another did.
    pub fallback_cause: Option<FallbackCause>,
    /// Whether a canary version of the key scored it (see [`crate::rollout`]).
    pub canary: bool,
    /// Whether this is a shadow version's output, which never goes to the main output.
    pub shadow: bool,
    /// The features the model read, in the order of its feature list; kept only for the
    /// `prediction_log` shape.
    pub inputs: Option<Box<[f64]>>,
}

/// Where an input record came from: what a generated id is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    /// Line `N` (from 1) of a file or stdin: id `line-N`.
    Line(u64),
    /// A Kafka message: id `TOPIC-PARTITION-OFFSET`.
    Kafka {
        /// The topic.
        topic: &'a str,
        /// The partition.
        partition: i32,
        /// The offset.
        offset: i64,
    },
    /// Unknown: a record without an id gets none.
    Unknown,
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Line(n) => write!(f, "line-{n}"),
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => write!(f, "{topic}-{partition}-{offset}"),
            Origin::Unknown => Ok(()),
        }
    }
}

/// An input record as the encoder sees it: its bytes and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The record bytes, as decoded.
    pub payload: &'a [u8],
    /// Where it came from.
    pub origin: Origin<'a>,
}

impl Source<'_> {
    /// A source of unknown origin without bytes (the `scored` shape needs neither).
    pub const UNKNOWN: Source<'static> = Source {
        payload: b"",
        origin: Origin::Unknown,
    };
}

/// How scored records are encoded: the `[records]` output settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFormat {
    shape: OutputShape,
    /// The enriched field's name as JSON text, quotes and escapes included.
    enriched_field: Box<str>,
    /// The fallback fields, naming the chain's levels.
    levels: Arc<[String]>,
}

impl Default for OutputFormat {
    fn default() -> Self {
        Self::new(OutputShape::Scored, "keyscore", Arc::new([]))
    }
}

impl OutputFormat {
    /// Records of `shape`; `enriched_field` holds keyscore's fields in the `enriched` shape;
    /// `fallback_fields` name the levels of the fallback chain.
    pub fn new(shape: OutputShape, enriched_field: &str, fallback_fields: Arc<[String]>) -> Self {
        Self {
            shape,
            enriched_field: serde_json::to_string(enriched_field)
                .expect("a string encodes")
                .into(),
            levels: fallback_fields,
        }
    }

    /// The shape.
    pub fn shape(&self) -> OutputShape {
        self.shape
    }

    /// The name of `level` in outputs and metrics.
    pub fn level_name(&self, level: Level) -> &str {
        level.name(&self.levels)
    }

    /// Appends `scored` as one JSON object (no newline) to `out`, in this format's shape.
    /// `source` is the input it was scored from; `scored_at` the batch's scoring time.
    ///
    /// * `scored`: `{"id","id_generated","key","prediction","model_key","model_version",
    ///   "model_checksum","fallback","fallback_level","scored_at"}`, plus `"fallback_cause"`
    ///   when another level scored it, `"canary":true` for a canary version's output and
    ///   `"shadow":true` for a shadow's.
    /// * `enriched`: the input object with those fields added as one object under the
    ///   enriched field.
    /// * `prediction_log`: `{"id","id_generated","model_name","model_version","inputs",
    ///   "outputs","timestamp","scored_at","key","model_checksum","fallback_level"}` (plus
    ///   `fallback_cause`, `canary`, `shadow` as above); `outputs` is the prediction object and
    ///   `timestamp` equals `scored_at`.
    ///
    /// A record without an id gets one made from its origin, with `"id_generated":true`.
    pub fn encode(
        &self,
        scored: &Scored,
        source: &Source<'_>,
        scored_at: &ScoredAt,
        out: &mut Vec<u8>,
    ) {
        let fields = Fields {
            s: scored,
            origin: source.origin,
            scored_at: scored_at.as_str(),
            levels: &self.levels,
        };
        match self.shape {
            OutputShape::Scored => write(out, &fields),
            OutputShape::PredictionLog => write(out, &LogRow(fields)),
            OutputShape::Enriched => {
                let payload = source.payload;
                // A scored input is a valid JSON object: its last `}` closes it.
                let Some(close) = payload.iter().rposition(|b| *b == b'}') else {
                    return write(out, &fields);
                };
                let empty = payload[..close]
                    .iter()
                    .rev()
                    .find(|b| !b.is_ascii_whitespace())
                    == Some(&b'{');
                out.extend_from_slice(&payload[..close]);
                if !empty {
                    out.push(b',');
                }
                out.extend_from_slice(self.enriched_field.as_bytes());
                out.push(b':');
                write(out, &fields);
                out.push(b'}');
            }
        }
    }
}

fn write<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(&mut *out, value).expect("writing JSON to memory cannot fail");
}

impl Scored {
    /// Appends the scored record as one JSON object (no newline) to `out`, in the `scored`
    /// shape, scored now, without an origin (a record without id gets none). Pipelines use
    /// [`OutputFormat::encode`].
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        OutputFormat::default().encode(self, &Source::UNKNOWN, &ScoredAt::now(), out);
    }
}

/// The record's id: its own, or one made from its origin.
struct Id<'a>(&'a Scored, Origin<'a>);

impl Id<'_> {
    fn generated(&self) -> bool {
        self.0.id.is_none() && self.1 != Origin::Unknown
    }

    /// Writes `"id"` (when there is one) and `"id_generated"`.
    fn entries<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        match (&self.0.id, self.1) {
            (Some(id), _) => map.serialize_entry("id", id)?,
            (None, Origin::Unknown) => {}
            (None, origin) => map.serialize_entry("id", &Display(origin))?,
        }
        map.serialize_entry("id_generated", &self.generated())
    }
}

/// Serializes as a JSON string through `Display`, without an intermediate `String`.
struct Display<T>(T);

impl<T: fmt::Display> Serialize for Display<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// keyscore's fields: the whole `scored` shape, and the object `enriched` adds.
struct Fields<'a> {
    s: &'a Scored,
    origin: Origin<'a>,
    scored_at: &'a str,
    levels: &'a [String],
}

impl Fields<'_> {
    /// `fallback_cause`, `canary` and `shadow`, each only when it applies.
    fn flags<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        if let Some(cause) = self.s.fallback_cause {
            map.serialize_entry("fallback_cause", cause.as_str())?;
        }
        if self.s.canary {
            map.serialize_entry("canary", &true)?;
        }
        if self.s.shadow {
            map.serialize_entry("shadow", &true)?;
        }
        Ok(())
    }
}

impl Serialize for Fields<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let s = self.s;
        let mut map = ser.serialize_map(None)?;
        Id(s, self.origin).entries(&mut map)?;
        map.serialize_entry("key", &s.key)?;
        map.serialize_entry("prediction", &PredictionJson(s))?;
        map.serialize_entry("model_key", &s.model.key)?;
        map.serialize_entry("model_version", &s.model.version)?;
        map.serialize_entry("model_checksum", &s.model.checksum)?;
        map.serialize_entry("fallback", &s.fallback)?;
        map.serialize_entry("fallback_level", s.level.name(self.levels))?;
        map.serialize_entry("scored_at", self.scored_at)?;
        self.flags(&mut map)?;
        map.end()
    }
}

/// The `prediction_log` shape.
struct LogRow<'a>(Fields<'a>);

impl Serialize for LogRow<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let f = &self.0;
        let s = f.s;
        let mut map = ser.serialize_map(None)?;
        Id(s, f.origin).entries(&mut map)?;
        map.serialize_entry("model_name", &s.model.key)?;
        map.serialize_entry("model_version", &s.model.version)?;
        map.serialize_entry("inputs", &Inputs(s))?;
        map.serialize_entry("outputs", &PredictionJson(s))?;
        map.serialize_entry("timestamp", f.scored_at)?;
        map.serialize_entry("scored_at", f.scored_at)?;
        map.serialize_entry("key", &s.key)?;
        map.serialize_entry("model_checksum", &s.model.checksum)?;
        map.serialize_entry("fallback_level", s.level.name(f.levels))?;
        f.flags(&mut map)?;
        map.end()
    }
}

/// The features the model read, by name.
struct Inputs<'a>(&'a Scored);

impl Serialize for Inputs<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let names = self.0.model.model.features();
        let values = self.0.inputs.as_deref().unwrap_or_default();
        let mut map = ser.serialize_map(Some(values.len()))?;
        for (name, value) in names.iter().zip(values) {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// The prediction object (see the module documentation).
struct PredictionJson<'a>(&'a Scored);

impl Serialize for PredictionJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        match &self.0.prediction {
            Prediction::Value(v) => map.serialize_entry("value", v)?,
            Prediction::Class {
                index,
                probabilities,
            } => {
                let classes = match self.0.model.model.output() {
                    Output::Classification(c) => c.as_slice(),
                    Output::Regression => &[],
                };
                match probabilities.as_slice() {
                    [_, positive] => map.serialize_entry("value", positive)?,
                    _ => map.serialize_entry("value", index)?,
                }
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

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use serde_json::Value;

    use super::*;
    use crate::model::ModelSpec;

    fn served(spec: &str) -> Arc<ServedModel> {
        Arc::new(ServedModel {
            key: "paris".into(),
            version: 3,
            revision: 1,
            checksum: "abc".into(),
            model: ModelSpec::from_json(spec.as_bytes())
                .unwrap()
                .build()
                .unwrap(),
            loaded_at: SystemTime::now(),
        })
    }

    fn regression() -> Arc<ServedModel> {
        served(
            r#"{"format_version":1,"features":["a","b"],"model":{"kind":"linear","coefficients":[1.0,2.0],"intercept":0.5},"output":{"type":"regression"}}"#,
        )
    }

    fn classifier(rows: usize) -> Arc<ServedModel> {
        let classes: Vec<String> = (0..rows.max(2)).map(|i| format!("\"c{i}\"")).collect();
        let coefficients: Vec<&str> = (0..rows).map(|_| "[0.1,0.2]").collect();
        let intercepts: Vec<String> = (0..rows).map(|i| format!("{}.0", i)).collect();
        served(&format!(
            r#"{{"format_version":1,"features":["a","b"],"model":{{"kind":"logistic","coefficients":[{}],"intercepts":[{}]}},"output":{{"type":"classification","classes":[{}]}}}}"#,
            coefficients.join(","),
            intercepts.join(","),
            classes.join(",")
        ))
    }

    fn scored(model: Arc<ServedModel>, id: Option<&str>) -> Scored {
        let x = [1.0, 2.0];
        Scored {
            id: id.map(|t| RawValue::from_string(t.to_string()).unwrap()),
            key: "paris".into(),
            prediction: model.model.predict(&x).unwrap(),
            model,
            fallback: false,
            level: Level::Own,
            fallback_cause: None,
            canary: false,
            shadow: false,
            inputs: Some(x.into()),
        }
    }

    fn encode(format: &OutputFormat, s: &Scored, source: Source<'_>) -> (Vec<u8>, Value) {
        let mut out = Vec::new();
        format.encode(
            s,
            &source,
            &ScoredAt::from_unix_ms(1_796_300_000_123),
            &mut out,
        );
        let json = serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
        (out, json)
    }

    fn format(shape: OutputShape) -> OutputFormat {
        OutputFormat::new(shape, "keyscore", Arc::from(vec!["country".to_string()]))
    }

    const LINE: Source<'static> = Source {
        payload: br#"{"id":"r1","city":"paris","a":1,"b":2}"#,
        origin: Origin::Line(7),
    };

    #[test]
    fn value_is_always_present_and_classifiers_add_class_and_probabilities() {
        let f = format(OutputShape::Scored);
        let (_, r) = encode(&f, &scored(regression(), Some("1")), LINE);
        assert_eq!(r["prediction"], serde_json::json!({"value": 5.5}));

        let binary = scored(classifier(1), Some("1"));
        let Prediction::Class { probabilities, .. } = &binary.prediction else {
            panic!()
        };
        let (_, b) = encode(&f, &binary, LINE);
        assert_eq!(b["prediction"]["value"], probabilities[1]);
        assert_eq!(b["prediction"]["probabilities"]["c1"], probabilities[1]);
        assert_eq!(b["prediction"]["class"], "c1");

        let multi = scored(classifier(3), Some("1"));
        let Prediction::Class { index, .. } = &multi.prediction else {
            panic!()
        };
        let (_, m) = encode(&f, &multi, LINE);
        assert_eq!(m["prediction"]["value"], *index as u64);
        assert_eq!(m["prediction"]["class"], format!("c{index}"));
        assert_eq!(
            m["prediction"]["probabilities"].as_object().unwrap().len(),
            3
        );
    }

    #[test]
    fn the_scored_shape_names_id_model_level_and_time() {
        let mut s = scored(regression(), Some(r#""r1""#));
        s.fallback = true;
        s.level = Level::Field(0);
        s.fallback_cause = Some(FallbackCause::Refused);
        let (_, j) = encode(&format(OutputShape::Scored), &s, LINE);
        assert_eq!(j["id"], "r1");
        assert_eq!(j["id_generated"], false);
        assert_eq!(j["key"], "paris");
        assert_eq!(j["model_key"], "paris");
        assert_eq!(j["model_version"], 3);
        assert_eq!(j["model_checksum"], "abc");
        assert_eq!(j["fallback"], true);
        assert_eq!(j["fallback_level"], "country");
        assert_eq!(j["fallback_cause"], "refused");
        assert_eq!(j["scored_at"], "2026-12-03T12:13:20.123Z");
        assert!(j.get("canary").is_none() && j.get("shadow").is_none());
    }

    #[test]
    fn a_record_without_id_gets_one_from_its_origin_and_says_so() {
        let s = scored(regression(), None);
        for (origin, id) in [
            (Origin::Line(12), "line-12"),
            (
                Origin::Kafka {
                    topic: "orders",
                    partition: 3,
                    offset: 99,
                },
                "orders-3-99",
            ),
        ] {
            for shape in [
                OutputShape::Scored,
                OutputShape::PredictionLog,
                OutputShape::Enriched,
            ] {
                let (_, j) = encode(
                    &format(shape),
                    &s,
                    Source {
                        payload: br#"{"city":"paris","a":1,"b":2}"#,
                        origin,
                    },
                );
                let fields = if shape == OutputShape::Enriched {
                    &j["keyscore"]
                } else {
                    &j
                };
                assert_eq!(fields["id"], id, "{shape:?}");
                assert_eq!(fields["id_generated"], true, "{shape:?}");
            }
        }
    }

    #[test]
    fn enriched_keeps_the_input_bytes_and_order_and_adds_one_field() {
        let s = scored(regression(), Some(r#""r1""#));
        let payload =
            br#"{"zeta":1, "id":"r1","city":"paris","nested":{"x":[1,{"}":"}"}]},"a":1,"b":2 }"#;
        let f = OutputFormat::new(OutputShape::Enriched, "ks\"x", Arc::new([]));
        let (out, j) = encode(
            &f,
            &s,
            Source {
                payload,
                origin: Origin::Line(1),
            },
        );
        let close = payload.len() - 1;
        assert_eq!(&out[..close], &payload[..close], "input bytes unchanged");
        let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
        // serde_json's map sorts keys unless preserve_order is on, so compare the text.
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains(r#"2 ,"ks\"x":{"id":"r1""#), "{text}");
        assert!(keys.contains(&"ks\"x"));
        assert_eq!(j["ks\"x"]["prediction"]["value"], 5.5);
        assert_eq!(j["nested"]["x"][1]["}"], "}");

        // An empty object gets no comma.
        let (out, j) = encode(
            &f,
            &s,
            Source {
                payload: b" { } ",
                origin: Origin::Line(1),
            },
        );
        assert_eq!(
            j.as_object().unwrap().len(),
            1,
            "{}",
            String::from_utf8_lossy(&out)
        );
    }

    #[test]
    fn the_prediction_log_names_inputs_outputs_and_timestamp() {
        let s = scored(classifier(1), Some("42"));
        let (_, j) = encode(&format(OutputShape::PredictionLog), &s, LINE);
        assert_eq!(j["id"], 42);
        assert_eq!(j["model_name"], "paris");
        assert_eq!(j["model_version"], 3);
        assert_eq!(j["inputs"], serde_json::json!({"a": 1.0, "b": 2.0}));
        assert_eq!(j["outputs"]["class"], "c1");
        assert_eq!(j["timestamp"], j["scored_at"]);
        assert_eq!(j["model_checksum"], "abc");
        assert_eq!(j["fallback_level"], "own");
    }
}
