//! Label records: the outcome of a scored record, arriving later.
//!
//! A label is a JSON object with the scored record's id, the true value (a number for a
//! regressor) or class (a string, number or boolean matched against the classifier's class
//! labels as text) and optionally when the outcome was known: `{"id": "order-17", "label": 31.5,
//! "ts": "2026-12-03T10:00:00Z"}`. The field names are `[quality]` settings. `ts` is RFC 3339
//! text or milliseconds since the Unix epoch; without it the label's arrival time is used.

use serde_json::value::RawValue;

/// The field names a label is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelFields {
    /// The scored record's id (default `id`).
    pub id: String,
    /// The outcome (default `label`).
    pub label: String,
    /// When the outcome was known (default `ts`); optional in records.
    pub time: String,
}

impl Default for LabelFields {
    fn default() -> Self {
        LabelFields {
            id: "id".into(),
            label: "label".into(),
            time: "ts".into(),
        }
    }
}

/// The outcome a label carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A number: a regressor's true value, or a class written as a number.
    Number(f64),
    /// A class written as text (a boolean as `true`/`false`).
    Text(String),
}

impl Outcome {
    /// The index of this outcome among `classes`, compared as text (`1`, `1.0` and `"1"` all
    /// name class `"1"`).
    pub fn class_index(&self, classes: &[String]) -> Option<usize> {
        match self {
            Outcome::Text(t) => classes.iter().position(|c| c == t),
            Outcome::Number(n) => classes
                .iter()
                .position(|c| c.parse::<f64>().is_ok_and(|v| v == *n)),
        }
    }
}

/// A decoded label.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// The scored record's id, as the join compares it (see [`id_text`]).
    pub id: String,
    /// The outcome.
    pub outcome: Outcome,
    /// When the outcome was known, ms since the Unix epoch.
    pub at_ms: Option<i64>,
}

/// Why a label was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// Reads one label record.
pub fn decode(payload: &[u8], fields: &LabelFields) -> Result<Label, Malformed> {
    let object: std::collections::HashMap<String, &RawValue> = serde_json::from_slice(payload)
        .map_err(|e| Malformed(format!("not a JSON object: {e}")))?;
    let id = object
        .get(&fields.id)
        .and_then(|raw| id_text(raw.get()))
        .ok_or_else(|| Malformed(format!("no '{}' field (a string or number)", fields.id)))?;
    let raw = object
        .get(&fields.label)
        .ok_or_else(|| Malformed(format!("no '{}' field", fields.label)))?;
    let outcome = match serde_json::from_str::<serde_json::Value>(raw.get()) {
        Ok(serde_json::Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() => Outcome::Number(v),
            _ => {
                return Err(Malformed(format!(
                    "'{}' is not a finite number",
                    fields.label
                )))
            }
        },
        Ok(serde_json::Value::String(s)) => Outcome::Text(s),
        Ok(serde_json::Value::Bool(b)) => Outcome::Text(b.to_string()),
        _ => {
            return Err(Malformed(format!(
                "'{}' must be a number, a string or a boolean",
                fields.label
            )))
        }
    };
    let at_ms = match object.get(&fields.time).map(|r| r.get()) {
        None | Some("null") => None,
        Some(text) => Some(parse_time(text).ok_or_else(|| {
            Malformed(format!(
                "'{}' must be RFC 3339 text or milliseconds since the Unix epoch, not {text}",
                fields.time
            ))
        })?),
    };
    Ok(Label { id, outcome, at_ms })
}

/// The text an id is joined by, from its JSON text: a string's contents, a number's text.
/// Other JSON values are not ids.
pub fn id_text(json: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(json).ok()? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Milliseconds since the Unix epoch, from a JSON number or RFC 3339 text.
fn parse_time(json: &str) -> Option<i64> {
    match serde_json::from_str::<serde_json::Value>(json).ok()? {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => parse_rfc3339(&s),
        _ => None,
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` as ms since the Unix epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                ms = ms * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..3 {
            ms *= 10;
        }
    }
    let offset_min = match &s[i..] {
        "Z" | "z" => 0,
        rest if rest.len() == 6 && matches!(&rest[..1], "+" | "-") && &rest[3..4] == ":" => {
            let h: i64 = rest[1..3].parse().ok()?;
            let m: i64 = rest[4..6].parse().ok()?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (h * 60 + m)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_min * 60;
    Some(secs * 1000 + ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_read_with_their_id_outcome_and_time() {
        let f = LabelFields::default();
        let l = decode(
            br#"{"id":"r1","label":31.5,"ts":"2026-12-03T10:00:00.250Z"}"#,
            &f,
        )
        .unwrap();
        assert_eq!(l.id, "r1");
        assert_eq!(l.outcome, Outcome::Number(31.5));
        assert_eq!(l.at_ms, Some(1_796_292_000_250));
        let l = decode(br#"{"id":17,"label":"late","ts":1000}"#, &f).unwrap();
        assert_eq!((l.id.as_str(), l.at_ms), ("17", Some(1000)));
        assert_eq!(l.outcome, Outcome::Text("late".into()));
        let l = decode(br#"{"id":"x","label":true}"#, &f).unwrap();
        assert_eq!((l.outcome, l.at_ms), (Outcome::Text("true".into()), None));
    }

    #[test]
    fn malformed_labels_say_what_is_wrong() {
        let f = LabelFields::default();
        for (input, says) in [
            (&b"nope"[..], "not a JSON object"),
            (br#"{"label":1}"#, "no 'id' field"),
            (br#"{"id":[1],"label":1}"#, "no 'id' field"),
            (br#"{"id":"a"}"#, "no 'label' field"),
            (br#"{"id":"a","label":null}"#, "must be a number"),
            (br#"{"id":"a","label":1,"ts":"yesterday"}"#, "RFC 3339"),
        ] {
            let err = decode(input, &f).unwrap_err().0;
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn rfc3339_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(parse_rfc3339("2000-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2000-01-01T00:00:00"), None);
    }

    #[test]
    fn classes_match_as_text() {
        let classes = vec!["0".to_string(), "1".to_string()];
        assert_eq!(Outcome::Number(1.0).class_index(&classes), Some(1));
        assert_eq!(Outcome::Text("0".into()).class_index(&classes), Some(0));
        assert_eq!(Outcome::Text("2".into()).class_index(&classes), None);
    }
}
