//! Decoding an input payload: validate the JSON, find the key and id, and parse features on
//! demand, borrowing from the payload.

use std::{borrow::Cow, fmt};

use serde::{
    de::{DeserializeSeed, MapAccess, Visitor},
    Deserialize,
};
use serde_json::{value::RawValue, Value};

use super::{KeySource, Reason, RecordFormat, Rejection};
use crate::model::Model;

/// A decoded input record: its key, its id and its fields, borrowed from the payload.
///
/// Decoding validates the whole payload as JSON but parses only what scoring reads: the key,
/// and each feature the model asks for, on demand. A field named twice takes its last value,
/// as in a JSON object.
#[derive(Debug, Clone)]
pub struct Decoded<'a> {
    /// The model key.
    pub key: String,
    /// The id field's JSON text, if present.
    pub id: Option<&'a RawValue>,
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
}

/// The top-level fields of a JSON object, values left as raw JSON text.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(24));
                while let Some(name) = map.next_key_seed(FieldName)? {
                    fields.push((name, map.next_value::<&'de RawValue>()?));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(ObjectVisitor)
    }
}

/// A field name: borrowed from the payload unless it holds escapes.
struct FieldName;

impl<'de> DeserializeSeed<'de> for FieldName {
    type Value = Cow<'de, str>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
        }
        d.deserialize_str(NameVisitor)
    }
}

/// The JSON kind of a raw value, from its first character (the text is valid JSON).
fn raw_kind(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ => "a number",
    }
}

/// Decodes one payload. `message_key` is used when the format takes keys from messages.
/// Never panics, whatever the bytes.
pub fn decode<'a>(
    payload: &'a [u8],
    format: &RecordFormat,
    message_key: Option<&[u8]>,
) -> Result<Decoded<'a>, Rejection> {
    // UTF-8 is checked once for the whole payload (a fast scan for ASCII text), so the parser
    // reads a `str` and does not check each string and raw value again.
    let parsed = match std::str::from_utf8(payload) {
        Ok(text) => serde_json::from_str::<Fields<'a>>(text).map_err(drop),
        Err(_) => Err(()),
    };
    let fields = match parsed {
        Ok(Fields(fields)) => fields,
        // The error path re-reads the payload to say exactly what is wrong with it.
        Err(_) => {
            return Err(match serde_json::from_slice::<Value>(payload) {
                Ok(other) => Rejection::new(
                    Reason::NotJson,
                    format!(
                        "record is JSON but not an object (found {})",
                        json_kind(&other)
                    ),
                ),
                Err(err) => {
                    Rejection::new(Reason::NotJson, format!("record is not valid JSON: {err}"))
                }
            })
        }
    };
    let get = |name: &str| {
        fields
            .iter()
            .rev()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, v)| *v)
    };
    let key = match &format.key {
        KeySource::Field(name) => {
            let raw = get(name);
            match (raw.and_then(key_text), raw) {
                (Some(k), _) => k.into_owned(),
                (_, None) => {
                    return Err(Rejection::new(
                        Reason::MissingKey,
                        format!("key field '{name}' is missing"),
                    ))
                }
                (_, Some(raw)) if raw.get() == "null" => {
                    return Err(Rejection::new(
                        Reason::MissingKey,
                        format!("key field '{name}' is missing"),
                    ))
                }
                (_, Some(raw)) => {
                    return Err(Rejection::new(
                        Reason::MissingKey,
                        format!(
                            "key field '{name}' must be a non-empty string or an integer, found {}",
                            if raw.get().starts_with('"') {
                                "an empty string"
                            } else {
                                raw_kind(raw)
                            }
                        ),
                    ))
                }
            }
        }
        KeySource::MessageKey => match message_key.map(std::str::from_utf8) {
            Some(Ok(k)) if !k.is_empty() => k.to_string(),
            Some(Err(_)) => {
                return Err(Rejection::new(
                    Reason::MissingKey,
                    "message key is not UTF-8 text",
                ))
            }
            _ => return Err(Rejection::new(Reason::MissingKey, "message has no key")),
        },
    };
    // A null id is no id: the output gets a generated one.
    let id = get(&format.id_field).filter(|id| id.get() != "null");
    Ok(Decoded { key, id, fields })
}

/// A field's value as a model key: a non-empty string, or an integer as text. Borrowed from
/// the payload unless the string holds escapes.
fn key_text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    let key = match text.as_bytes().first() {
        Some(b'"') if !text.contains('\\') => Some(Cow::Borrowed(&text[1..text.len() - 1])),
        Some(b'"') => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
        Some(b'-' | b'0'..=b'9') if text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok() => {
            Some(Cow::Borrowed(text))
        }
        _ => None,
    };
    key.filter(|k| !k.is_empty())
}

impl<'a> Decoded<'a> {
    /// The raw JSON text of a field, the last one when it is named twice.
    fn field(&self, name: &str) -> Option<&'a RawValue> {
        self.fields
            .iter()
            .rev()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, v)| *v)
    }

    /// The model key a field names (a non-empty string, or an integer as text), if it holds
    /// one: how a record names the keys of its fallback chain.
    pub fn key_field(&self, name: &str) -> Option<Cow<'a, str>> {
        self.field(name).and_then(key_text)
    }

    /// Reads the named features in order into `out` (cleared first). A feature that is absent
    /// or `null` is refused as [`Reason::MissingFeature`].
    pub fn features_into(&self, names: &[String], out: &mut Vec<f64>) -> Result<(), Rejection> {
        self.read_features(names, false, out)
    }

    /// The raw JSON of a feature: the top-level field named `name`, else, when `name` holds
    /// dots, the value at the path of object keys it spells (`"user.age"` is the `age` field
    /// of the `user` object). A path through a value that is not an object finds nothing.
    fn feature_field(&self, name: &str) -> Option<&'a RawValue> {
        if let Some(raw) = self.field(name) {
            return Some(raw);
        }
        let (first, rest) = name.split_once('.')?;
        let mut raw = self.field(first)?;
        for key in rest.split('.') {
            raw = member(raw, key)?;
        }
        Some(raw)
    }

    /// Reads the named features in order into `out` (cleared first). A feature that is absent
    /// or `null` is missing: with `allow_missing` (a model that scores missing values, see
    /// [`Model::handles_missing`](crate::model::Model::handles_missing)) it is read as NaN,
    /// otherwise refused as [`Reason::MissingFeature`] with a message saying which.
    pub fn read_features(
        &self,
        names: &[String],
        allow_missing: bool,
        out: &mut Vec<f64>,
    ) -> Result<(), Rejection> {
        out.clear();
        for name in names {
            out.push(read_number(name, self.feature_field(name), allow_missing)?);
        }
        Ok(())
    }

    /// Reads `model`'s features in order into `out` (cleared first), as
    /// [`Model::predict`](crate::model::Model::predict) takes them: numbers, NaN for a missing
    /// value the model accepts ([`Model::accepts_missing`](crate::model::Model::accepts_missing)),
    /// and for a feature a preprocess encoder reads, its string resolved to its category code
    /// (-1 when unknown). A string with no escapes is resolved without allocating. An unknown
    /// category the encoder refuses, and a string where a number is expected (or the reverse),
    /// are [`Reason::NonNumericFeature`]; a missing value the model does not accept is
    /// [`Reason::MissingFeature`].
    pub fn read_model_features(&self, model: &Model, out: &mut Vec<f64>) -> Result<(), Rejection> {
        out.clear();
        for (i, name) in model.features().iter().enumerate() {
            let raw = self.feature_field(name);
            let allow_missing = model.accepts_missing(i);
            let Some(categories) = model.categories(i) else {
                out.push(read_number(name, raw, allow_missing)?);
                continue;
            };
            let Some(raw) = raw.filter(|r| r.get() != "null") else {
                out.push(read_number(name, raw, allow_missing)?);
                continue;
            };
            let Some(value) = string_text(raw) else {
                return Err(Rejection::new(
                    Reason::NonNumericFeature,
                    format!(
                        "feature '{name}' must be a string (a category), found {}",
                        raw_kind(raw)
                    ),
                ));
            };
            out.push(match categories.code(&value) {
                Some(code) => code as f64,
                None if categories.refuses_unknown() => {
                    return Err(Rejection::new(
                        Reason::NonNumericFeature,
                        format!(
                            "feature '{name}' has the unknown category {}, which its encoder \
                             refuses",
                            shorten(raw.get())
                        ),
                    ))
                }
                None => -1.0,
            });
        }
        Ok(())
    }
}

/// A feature read as a number: NaN when missing and `allow_missing`.
fn read_number(name: &str, raw: Option<&RawValue>, allow_missing: bool) -> Result<f64, Rejection> {
    let Some(raw) = raw else {
        if allow_missing {
            return Ok(f64::NAN);
        }
        return Err(Rejection::new(
            Reason::MissingFeature,
            format!("feature '{name}' is missing (absent from the record)"),
        ));
    };
    let text = raw.get();
    match text.as_bytes().first() {
        // Valid JSON number syntax is a subset of what `f64::from_str` reads, and both round
        // correctly.
        Some(b'-' | b'0'..=b'9') => match text.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(x),
            _ => Err(Rejection::new(
                Reason::NonNumericFeature,
                format!("feature '{name}' is not a finite number"),
            )),
        },
        Some(b'n') if allow_missing => Ok(f64::NAN),
        Some(b'n') => Err(Rejection::new(
            Reason::MissingFeature,
            format!("feature '{name}' is missing (null)"),
        )),
        _ => Err(Rejection::new(
            Reason::NonNumericFeature,
            format!("feature '{name}' must be a number, found {}", raw_kind(raw)),
        )),
    }
}

/// A JSON string's contents: borrowed from the payload unless it holds escapes.
fn string_text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') if !text.contains('\\') => Some(Cow::Borrowed(&text[1..text.len() - 1])),
        Some(b'"') => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
        _ => None,
    }
}

/// A JSON text cut to at most 64 bytes (at a character boundary) for a message.
fn shorten(text: &str) -> Cow<'_, str> {
    const MAX: usize = 64;
    if text.len() <= MAX {
        return Cow::Borrowed(text);
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}...", &text[..end]))
}

/// The value of `key` in the JSON object `raw` (its last one when named twice), borrowed; none
/// when `raw` is not an object or has no such key.
fn member<'a>(raw: &'a RawValue, key: &str) -> Option<&'a RawValue> {
    struct Member<'k>(&'k str);
    impl<'de> DeserializeSeed<'de> for Member<'_> {
        type Value = Option<&'de RawValue>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Member<'_> {
        type Value = Option<&'de RawValue>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(name) = map.next_key_seed(FieldName)? {
                if name == self.0 {
                    found = Some(map.next_value::<&'de RawValue>()?);
                } else {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            Ok(found)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    let mut d = serde_json::Deserializer::from_str(raw.get());
    Member(key).deserialize(&mut d).ok().flatten()
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::record::{KeySource, Reason, RecordFormat};
    use proptest::prelude::*;

    fn fmt() -> RecordFormat {
        RecordFormat::default()
    }

    #[test]
    fn decodes_key_id_and_features_by_name() {
        let d = decode(br#"{"id":"r1","city":"paris","b":2,"a":1.5}"#, &fmt(), None).unwrap();
        assert_eq!(d.key, "paris");
        assert_eq!(d.id.map(RawValue::get), Some(r#""r1""#));
        let mut x = Vec::new();
        d.features_into(&["a".into(), "b".into()], &mut x).unwrap();
        assert_eq!(x, vec![1.5, 2.0]);
    }

    #[test]
    fn a_field_named_twice_takes_its_last_value_and_escaped_names_match() {
        let d = decode(
            br#"{"city":"rome","a":1,"a":2,"\u0062":3,"city":"paris"}"#,
            &fmt(),
            None,
        )
        .unwrap();
        assert_eq!(d.key, "paris");
        let mut x = Vec::new();
        d.features_into(&["a".into(), "b".into()], &mut x).unwrap();
        assert_eq!(x, vec![2.0, 3.0]);
    }

    #[test]
    fn numbers_read_exactly_and_out_of_range_ones_are_refused() {
        let d = decode(
            br#"{"city":"x","a":0.1,"b":-2.5e-3,"c":1e400,"d":true,"e":[1]}"#,
            &fmt(),
            None,
        )
        .unwrap();
        let mut x = Vec::new();
        d.features_into(&["a".into(), "b".into()], &mut x).unwrap();
        assert_eq!(x, vec![0.1, -2.5e-3]);
        for (name, reason) in [
            ("c", Reason::NonNumericFeature),
            ("d", Reason::NonNumericFeature),
            ("e", Reason::NonNumericFeature),
        ] {
            let err = d.features_into(&[name.into()], &mut x).unwrap_err();
            assert_eq!(err.reason, reason, "{name}");
        }
    }

    #[test]
    fn integer_keys_are_text() {
        let d = decode(br#"{"city":42}"#, &fmt(), None).unwrap();
        assert_eq!(d.key, "42");
    }

    #[test]
    fn fallback_fields_name_keys_like_the_key_field_and_a_null_id_is_none() {
        let d = decode(
            br#"{"city":"lyon","id":null,"country":"fr","region":"e\u0075","zone":7,"x":"","y":true}"#,
            &fmt(),
            None,
        )
        .unwrap();
        assert!(d.id.is_none());
        assert_eq!(d.key_field("country").as_deref(), Some("fr"));
        assert_eq!(d.key_field("region").as_deref(), Some("eu"));
        assert_eq!(d.key_field("zone").as_deref(), Some("7"));
        for absent in ["x", "y", "nope"] {
            assert_eq!(d.key_field(absent), None, "{absent}");
        }
    }

    #[test]
    fn each_bad_input_gets_its_reason() {
        let cases: [(&[u8], Reason); 6] = [
            (b"not json", Reason::NotJson),
            (b"[1,2]", Reason::NotJson),
            (br#"{"id":1}"#, Reason::MissingKey),
            (br#"{"city":""}"#, Reason::MissingKey),
            (br#"{"city":true}"#, Reason::MissingKey),
            (br#"{"city":null}"#, Reason::MissingKey),
        ];
        for (input, reason) in cases {
            let err = decode(input, &fmt(), None).unwrap_err();
            assert_eq!(err.reason, reason, "{}", String::from_utf8_lossy(input));
        }
        let d = decode(br#"{"city":"x","a":"7","b":null}"#, &fmt(), None).unwrap();
        let mut x = Vec::new();
        let err = d.features_into(&["a".into()], &mut x).unwrap_err();
        assert_eq!(err.reason, Reason::NonNumericFeature);
        assert!(err.message.contains("'a'"), "{}", err.message);
        for missing in ["b", "c"] {
            let err = d.features_into(&[missing.into()], &mut x).unwrap_err();
            assert_eq!(err.reason, Reason::MissingFeature);
            assert!(err.message.contains(missing));
        }
    }

    #[test]
    fn absent_and_null_features_are_missing_and_say_which() {
        let d = decode(br#"{"city":"x","a":1.5,"b":null,"c":"7"}"#, &fmt(), None).unwrap();
        let mut x = Vec::new();
        let err = d.features_into(&["b".into()], &mut x).unwrap_err();
        assert_eq!(err.reason, Reason::MissingFeature);
        assert_eq!(err.message, "feature 'b' is missing (null)");
        let err = d.features_into(&["z".into()], &mut x).unwrap_err();
        assert_eq!(err.reason, Reason::MissingFeature);
        assert_eq!(
            err.message,
            "feature 'z' is missing (absent from the record)"
        );
        // A model that scores missing values reads them as NaN, and nothing else changes.
        let names: Vec<String> = ["z", "a", "b"].map(String::from).to_vec();
        d.read_features(&names, true, &mut x).unwrap();
        assert!(x[0].is_nan() && x[2].is_nan());
        assert_eq!(x[1], 1.5);
        let err = d.read_features(&["c".into()], true, &mut x).unwrap_err();
        assert_eq!(err.reason, Reason::NonNumericFeature);
    }

    #[test]
    fn message_key_source() {
        let f = RecordFormat {
            key: KeySource::MessageKey,
            ..RecordFormat::default()
        };
        assert_eq!(decode(b"{}", &f, Some(b"rome")).unwrap().key, "rome");
        assert_eq!(
            decode(b"{}", &f, None).unwrap_err().reason,
            Reason::MissingKey
        );
        assert_eq!(
            decode(b"{}", &f, Some(&[0xff, 0xfe])).unwrap_err().reason,
            Reason::MissingKey
        );
    }

    /// A logistic model behind a preprocess stage: `color` one-hot (`red`, `blue`; unknown
    /// refused), `user.age` imputed with 40, `shop` ordinal (unknown -1, missing unknown).
    fn preprocessed() -> crate::model::Model {
        let text = r#"{"format_version": 1, "features": ["color", "user.age", "shop"],
          "preprocess": {"columns": [
            {"op": "one_hot", "feature": 0, "categories": ["red", "blue"], "handle_unknown": "error"},
            {"op": "numeric", "feature": 1, "impute": 40.0},
            {"op": "ordinal", "feature": 2, "categories": ["s1", "s0", "s\"2"],
             "handle_unknown": "use_encoded_value", "unknown_value": -1}]},
          "model": {"kind": "logistic", "coefficients": [[1, 2, 0.1, 0.5]], "intercepts": [0]},
          "output": {"type": "classification", "classes": ["no", "yes"]}}"#;
        crate::model::ModelSpec::from_json(text.as_bytes())
            .unwrap()
            .build()
            .unwrap()
    }

    #[test]
    fn encoded_features_read_strings_as_category_codes() {
        let m = preprocessed();
        let mut x = Vec::new();
        let d = decode(
            br#"{"city":"p","color":"blue","user":{"name":"x","age":31.5},"shop":"s0"}"#,
            &fmt(),
            None,
        )
        .unwrap();
        d.read_model_features(&m, &mut x).unwrap();
        assert_eq!(x, vec![1.0, 31.5, 1.0]);
        // Escaped strings, an unknown shop (-1), a missing age (NaN, imputed by the model).
        let d = decode(
            br#"{"city":"p","color":"r\u0065d","user":{"age":null},"shop":"s\"2"}"#,
            &fmt(),
            None,
        )
        .unwrap();
        d.read_model_features(&m, &mut x).unwrap();
        assert_eq!(x[0], 0.0);
        assert!(x[1].is_nan());
        assert_eq!(x[2], 2.0);
        assert!(m.predict(&x).is_ok());
        let d = decode(
            br#"{"city":"p","color":"red","shop":"elsewhere"}"#,
            &fmt(),
            None,
        )
        .unwrap();
        d.read_model_features(&m, &mut x).unwrap();
        assert_eq!(x[2], -1.0);
        let unknown = m.predict(&x).unwrap();
        // A missing shop is read as missing and scored as an unknown one.
        let d = decode(br#"{"city":"p","color":"red","shop":null}"#, &fmt(), None).unwrap();
        d.read_model_features(&m, &mut x).unwrap();
        assert!(x[2].is_nan());
        assert_eq!(m.predict(&x).unwrap(), unknown);
    }

    #[test]
    fn encoded_features_refuse_what_their_encoder_refuses() {
        let m = preprocessed();
        let mut x = Vec::new();
        let refuse = |rec: &str| {
            let d = decode(rec.as_bytes(), &fmt(), None).unwrap();
            d.read_model_features(&m, &mut Vec::new()).unwrap_err()
        };
        let err = refuse(r#"{"city":"p","color":"green","shop":"s1"}"#);
        assert_eq!(err.reason, Reason::NonNumericFeature);
        assert_eq!(
            err.message,
            "feature 'color' has the unknown category \"green\", which its encoder refuses"
        );
        let err = refuse(r#"{"city":"p","color":3,"shop":"s1"}"#);
        assert_eq!(err.reason, Reason::NonNumericFeature);
        assert_eq!(
            err.message,
            "feature 'color' must be a string (a category), found a number"
        );
        // `handle_unknown = "error"`: a missing value is not scored.
        let err = refuse(r#"{"city":"p","shop":"s1"}"#);
        assert_eq!(err.reason, Reason::MissingFeature);
        assert_eq!(
            err.message,
            "feature 'color' is missing (absent from the record)"
        );
        // A string where a number is expected is refused as before.
        let err = refuse(r#"{"city":"p","color":"red","user":{"age":"old"},"shop":"s1"}"#);
        assert_eq!(
            err.message,
            "feature 'user.age' must be a number, found a string"
        );
        let long = "x".repeat(200);
        let err = refuse(&format!(r#"{{"city":"p","color":"{long}"}}"#));
        assert!(err.message.len() < 160, "{}", err.message);
        let d = decode(br#"{"city":"p","color":"red","shop":"s1"}"#, &fmt(), None).unwrap();
        d.read_model_features(&m, &mut x).unwrap();
        assert_eq!(x[0], 0.0);
    }

    #[test]
    fn dotted_feature_names_read_nested_fields_after_top_level_ones() {
        let names = ["user.age".to_string(), "a.b.c".to_string()];
        let mut x = Vec::new();
        let d = decode(
            br#"{"city":"p","user":{"age":1,"age":2},"a":{"b":{"c":3}}}"#,
            &fmt(),
            None,
        )
        .unwrap();
        d.read_features(&names, false, &mut x).unwrap();
        assert_eq!(x, vec![2.0, 3.0]);
        // A top-level field named with the dot wins over the path.
        let d = decode(
            br#"{"city":"p","user.age":7,"user":{"age":1},"a":{"b":[1]}}"#,
            &fmt(),
            None,
        )
        .unwrap();
        let err = d.read_features(&names, false, &mut x).unwrap_err();
        assert_eq!(
            err.message,
            "feature 'a.b.c' is missing (absent from the record)"
        );
        d.read_features(&names, true, &mut x).unwrap();
        assert_eq!(x[0], 7.0);
        assert!(x[1].is_nan());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes, &fmt(), Some(&bytes));
        }

        #[test]
        fn decode_never_panics_on_mutated_records(pos in 0usize..60, byte in any::<u8>()) {
            let mut rec = br#"{"id":"r1","city":"paris","distance_km":3.5,"items":2}"#.to_vec();
            let pos = pos % rec.len();
            rec[pos] = byte;
            if let Ok(d) = decode(&rec, &fmt(), None) {
                let mut x = Vec::new();
                let names = ["distance_km".into(), "items".into()];
                let _ = d.features_into(&names, &mut x);
                if d.read_features(&names, true, &mut x).is_ok() {
                    // Every feature is read, as a number or as missing (NaN), never infinite.
                    prop_assert_eq!(x.len(), 2);
                    prop_assert!(x.iter().all(|v| !v.is_infinite()));
                }
            }
        }

        #[test]
        fn encoded_and_nested_features_never_panic_on_mutated_records(
            pos in 0usize..80,
            byte in any::<u8>(),
        ) {
            let model = preprocessed();
            let mut rec = br#"{"city":"p","color":"blue","user":{"age":3},"shop":"s\"2"}"#.to_vec();
            let pos = pos % rec.len();
            rec[pos] = byte;
            if let Ok(d) = decode(&rec, &fmt(), None) {
                let mut x = Vec::new();
                if d.read_model_features(&model, &mut x).is_ok() {
                    prop_assert_eq!(x.len(), 3);
                    prop_assert!(model.predict(&x).is_ok());
                }
            }
        }
    }
}
