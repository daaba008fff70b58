//! The headers keyscore writes on scored records and dead letters. Their names are stable:
//! downstream jobs and operators match on them. Numbers are written as decimal UTF-8 text.

use std::io::Write as _;

use rdkafka::message::{BorrowedHeaders, Header, Headers, OwnedHeaders};

use crate::stream::record::{Rejection, Scored};

/// Scored record: the key of the model that scored it (the fallback key when the fallback
/// model scored it).
pub const MODEL_KEY: &str = "keyscore-model-key";
/// Scored record: the model version.
pub const MODEL_VERSION: &str = "keyscore-model-version";
/// Scored record: the checksum of the model spec as stored.
pub const MODEL_CHECKSUM: &str = "keyscore-model-checksum";
/// Scored record: `true` when a canary version scored it (absent otherwise).
pub const CANARY: &str = "keyscore-canary";
/// Shadow output: `true` (shadow outputs only go to the shadow topic).
pub const SHADOW: &str = "keyscore-shadow";
/// Dead letter: the reason class (`not_json`, `missing_key`, `missing_feature`,
/// `non_numeric_feature`, `no_model`, `model_error`, `store_unavailable`).
pub const DEAD_REASON: &str = "keyscore-dead-reason";
/// Dead letter: a human-readable explanation.
pub const DEAD_MESSAGE: &str = "keyscore-dead-message";
/// Dead letter: the topic the record was read from.
pub const SOURCE_TOPIC: &str = "keyscore-source-topic";
/// Dead letter: the partition the record was read from.
pub const SOURCE_PARTITION: &str = "keyscore-source-partition";
/// Dead letter: the record's offset in its source partition.
pub const SOURCE_OFFSET: &str = "keyscore-source-offset";

/// Dead letter whose payload is only the first bytes of the record (it was larger than the
/// dead-letter payload limit): the record's whole size in bytes.
pub const PAYLOAD_TRUNCATED_FROM: &str = "keyscore-payload-truncated-from";
/// Dead-letter reason of an output the producer or the broker refused as too large: the dead
/// letter then carries the source coordinates and no payload.
pub const OUTPUT_TOO_LARGE: &str = "output_too_large";

/// Decimal text of `n` in a stack buffer.
struct IntText {
    buf: [u8; 20],
    len: usize,
}

impl IntText {
    fn new(n: i64) -> Self {
        let mut buf = [0u8; 20];
        let mut cursor = &mut buf[..];
        write!(cursor, "{n}").expect("20 bytes hold any i64");
        let len = 20 - cursor.len();
        Self { buf, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Headers of a scored record, after a copy of `input`'s headers when given (the `enriched`
/// shape keeps them).
pub(crate) fn scored(input: Option<&BorrowedHeaders>, s: &Scored) -> OwnedHeaders {
    let version = IntText::new(s.model.version);
    let headers = forwarded(input, 4)
        .insert(Header {
            key: MODEL_KEY,
            value: Some(s.model.key.as_bytes()),
        })
        .insert(Header {
            key: MODEL_VERSION,
            value: Some(version.as_bytes()),
        })
        .insert(Header {
            key: MODEL_CHECKSUM,
            value: Some(s.model.checksum.as_bytes()),
        });
    let headers = if s.canary {
        headers.insert(Header {
            key: CANARY,
            value: Some(b"true"),
        })
    } else {
        headers
    };
    if s.shadow {
        headers.insert(Header {
            key: SHADOW,
            value: Some(b"true"),
        })
    } else {
        headers
    }
}

/// The input's headers to carry over (none when `input` is `None`), leaving out any named
/// like keyscore's own (`keyscore-*`: keyscore's are the ones that count), with room for
/// `more`.
fn forwarded(input: Option<&BorrowedHeaders>, more: usize) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new_with_capacity(more + input.map_or(0, |h| h.count()));
    for h in input.into_iter().flat_map(|h| h.iter()) {
        if !h.key.starts_with("keyscore-") {
            headers = headers.insert(h);
        }
    }
    headers
}

/// Headers of a dead letter, after the input's headers `input` when they are carried over.
pub(crate) fn dead(
    input: Option<&BorrowedHeaders>,
    r: &Rejection,
    topic: &str,
    partition: i32,
    offset: i64,
) -> OwnedHeaders {
    dead_after(
        forwarded(input, 6),
        r.reason.as_str(),
        &r.message,
        topic,
        partition,
        offset,
    )
}

/// Headers of a dead letter whose payload is the first bytes of a record of `size` bytes.
pub(crate) fn truncated(headers: OwnedHeaders, size: usize) -> OwnedHeaders {
    let size = IntText::new(i64::try_from(size).unwrap_or(i64::MAX));
    headers.insert(Header {
        key: PAYLOAD_TRUNCATED_FROM,
        value: Some(size.as_bytes()),
    })
}

/// Headers of a dead letter of reason `reason` (a [`Rejection`]'s, or [`OUTPUT_TOO_LARGE`]).
pub(crate) fn dead_because(
    reason: &str,
    message: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> OwnedHeaders {
    dead_after(
        OwnedHeaders::new_with_capacity(6),
        reason,
        message,
        topic,
        partition,
        offset,
    )
}

/// `headers` followed by a dead letter's own.
fn dead_after(
    headers: OwnedHeaders,
    reason: &str,
    message: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> OwnedHeaders {
    let partition = IntText::new(i64::from(partition));
    let offset = IntText::new(offset);
    headers
        .insert(Header {
            key: DEAD_REASON,
            value: Some(reason.as_bytes()),
        })
        .insert(Header {
            key: DEAD_MESSAGE,
            value: Some(message.as_bytes()),
        })
        .insert(Header {
            key: SOURCE_TOPIC,
            value: Some(topic.as_bytes()),
        })
        .insert(Header {
            key: SOURCE_PARTITION,
            value: Some(partition.as_bytes()),
        })
        .insert(Header {
            key: SOURCE_OFFSET,
            value: Some(offset.as_bytes()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::record::Reason;
    use rdkafka::message::Headers;

    #[test]
    fn integers_are_decimal_text() {
        for n in [0, 7, -3, i64::MAX, i64::MIN] {
            assert_eq!(IntText::new(n).as_bytes(), n.to_string().as_bytes());
        }
    }

    #[test]
    fn dead_letter_headers_carry_reason_and_source() {
        let h = dead(
            None,
            &Rejection::new(Reason::MissingFeature, "feature 'items' is missing"),
            "orders",
            3,
            1234,
        );
        let got: Vec<(String, String)> = h
            .iter()
            .map(|h| {
                (
                    h.key.to_string(),
                    String::from_utf8_lossy(h.value.unwrap()).into_owned(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (DEAD_REASON, "missing_feature"),
                (DEAD_MESSAGE, "feature 'items' is missing"),
                (SOURCE_TOPIC, "orders"),
                (SOURCE_PARTITION, "3"),
                (SOURCE_OFFSET, "1234"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }
}
