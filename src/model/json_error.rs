//! Saying where a spec's JSON is wrong when the decoder's message does not: a `NaN` or
//! `Infinity` (which JSON does not have, though Python's `json.dumps` writes them) is named
//! with the field it stands in.

use super::Error;

/// The error for spec bytes `bytes` that failed to decode with `err`: a
/// [`Error::NonFiniteNumber`] naming the token and its field when a non-finite number is what
/// the decoder stopped at, else the decoder's own error.
pub(super) fn spec_json_error(bytes: &[u8], err: serde_json::Error) -> Error {
    let (line, column) = (err.line(), err.column());
    // The decoder's position is at or just after the start of the token it stopped at.
    let Some(offset) = offset_of(bytes, line, column) else {
        return Error::Json(err);
    };
    let token_char = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'+' || b == b'.';
    let mut start = offset.min(bytes.len());
    while start > 0 && token_char(bytes[start - 1]) {
        start -= 1;
    }
    let end = start
        + bytes[start..]
            .iter()
            .take_while(|b| token_char(**b))
            .count();
    let token = String::from_utf8_lossy(&bytes[start..end]).into_owned();
    let bare = token.trim_start_matches(['-', '+']).to_ascii_lowercase();
    if !matches!(bare.as_str(), "nan" | "infinity" | "inf") {
        return Error::Json(err);
    }
    let line_start = bytes[..start]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    Error::NonFiniteNumber {
        token,
        path: path_at(&bytes[..start]),
        line,
        column: start - line_start + 1,
    }
}

/// The byte offset of 1-based `line` and `column` (the decoder's position), if in `bytes`.
fn offset_of(bytes: &[u8], line: usize, column: usize) -> Option<usize> {
    let line_start = if line <= 1 {
        0
    } else {
        bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(line - 2)
            .map(|(i, _)| i + 1)?
    };
    Some(line_start + column.saturating_sub(1))
}

/// Where the value that starts after `prefix` sits in the document, as `model.coefficients[1]`.
fn path_at(prefix: &[u8]) -> String {
    enum Frame {
        Object { key: Option<String>, in_key: bool },
        Array(usize),
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut string: Option<Vec<u8>> = None;
    let mut escaped = false;
    for &b in prefix {
        if let Some(text) = string.as_mut() {
            if escaped {
                escaped = false;
                text.push(b);
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                let text = string.take().unwrap_or_default();
                if let Some(Frame::Object { key, in_key }) = stack.last_mut() {
                    if *in_key {
                        *key = Some(String::from_utf8_lossy(&text).into_owned());
                        *in_key = false;
                    }
                }
            } else {
                text.push(b);
            }
            continue;
        }
        match b {
            b'"' => string = Some(Vec::new()),
            b'{' => stack.push(Frame::Object {
                key: None,
                in_key: true,
            }),
            b'[' => stack.push(Frame::Array(0)),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Array(index)) => *index += 1,
                Some(Frame::Object { in_key, .. }) => *in_key = true,
                None => {}
            },
            _ => {}
        }
    }
    let mut path = String::new();
    for frame in &stack {
        match frame {
            Frame::Object { key: Some(key), .. } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Frame::Object { key: None, .. } => {}
            Frame::Array(index) => path.push_str(&format!("[{index}]")),
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use crate::model::{Error, ModelSpec};

    #[test]
    fn a_nan_is_named_with_its_field() {
        let text = r#"{"format_version":1,"features":["a","b"],"model":{"kind":"linear","coefficients":[1.0,NaN],"intercept":0.5},"output":{"type":"regression"}}"#;
        let err = ModelSpec::from_json(text.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, Error::NonFiniteNumber { token, path, .. }
                if token == "NaN" && path == "model.coefficients[1]"),
            "{err:?}"
        );
        assert_eq!(text.find("NaN"), Some(86), "the test's column");
        assert_eq!(
            err.to_string(),
            "model spec is not valid: NaN at line 1 column 87, in model.coefficients[1]: JSON \
             has no NaN or Infinity, every number must be finite (a model exported with NaN \
             weights did not train); see the spec format in the README"
        );
    }

    #[test]
    fn an_infinity_on_a_later_line_is_named_with_its_field() {
        let text = "{\n  \"format_version\": 1,\n  \"features\": [\"a\"],\n  \"model\": {\"kind\": \"linear\", \"coefficients\": [2.0], \"intercept\": -Infinity},\n  \"output\": {\"type\": \"regression\"}\n}";
        let err = ModelSpec::from_json(text.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, Error::NonFiniteNumber { token, path, line: 4, column: 67 }
                if token == "-Infinity" && path == "model.intercept"),
            "{err:?}"
        );
    }

    #[test]
    fn other_errors_keep_the_decoder_message() {
        let err =
            ModelSpec::from_json(b"{\"format_version\": 1, \"features\": [tru]}").unwrap_err();
        assert!(matches!(err, Error::Json(_)), "{err:?}");
    }
}
