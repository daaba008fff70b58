//! How a spec is laid out in `model_versions` and `model_spec_chunks`, and checked when read.
//!
//! Small specs are stored inline as text (readable with cqlsh). Larger ones are compressed with
//! zstd and split into chunks of at most [`CHUNK_BYTES`], each its own row and its own request,
//! so no cell, mutation or request nears the servers' limits: Cassandra refuses a mutation over
//! half of `commitlog_segment_size` (16 MiB by default) and a native-protocol frame over
//! `native_transport_max_frame_size` (16 MiB); ScyllaDB warns about cells over 1 MB
//! (`compaction_large_cell_warning_threshold_mb`) and rows over 10 MB. Every stored spec
//! carries its text's size and SHA-256, checked on read.

use uuid::Uuid;

use crate::model::spec_sha256;
use crate::store::Error;

/// Specs up to this many bytes of text are stored inline.
pub(crate) const INLINE_MAX: usize = 256 * 1024;

/// The largest chunk of a compressed spec.
pub(crate) const CHUNK_BYTES: usize = 512 * 1024;

/// The zstd level: fast to write, and decompression speed does not depend on it.
const ZSTD_LEVEL: i32 = 3;

/// The largest spec text a reader decompresses, whatever a row claims: a bound on the memory
/// one corrupt or hostile row can take.
const MAX_TEXT_BYTES: i64 = 1 << 30;

/// The encoding name of chunked, zstd-compressed specs.
pub(crate) const ZSTD: &str = "zstd";

/// A spec ready to be written.
#[derive(Debug)]
pub(crate) struct EncodedSpec {
    /// The inline text, or the compressed chunks.
    pub(crate) body: Body,
    /// Bytes of the spec text.
    pub(crate) size: i64,
    /// Hex SHA-256 of the spec text.
    pub(crate) sha256: String,
}

/// Where the spec's bytes go.
#[derive(Debug)]
pub(crate) enum Body {
    /// In `model_versions.spec`.
    Inline(String),
    /// In `model_spec_chunks` under `spec_id`.
    Chunked { spec_id: Uuid, chunks: Vec<Vec<u8>> },
}

impl EncodedSpec {
    /// Lays out `text` for storage, refusing it with [`Error::SpecTooLarge`] when its stored
    /// size (compressed, for a chunked spec) exceeds `max_bytes`.
    pub(crate) fn new(text: &str, max_bytes: u64) -> Result<Self, Error> {
        let size = i64::try_from(text.len()).unwrap_or(i64::MAX);
        let sha256 = hex(&spec_sha256(text));
        let too_large = |bytes: usize| Error::SpecTooLarge {
            bytes: bytes as u64,
            limit: max_bytes,
        };
        if text.len() <= INLINE_MAX {
            if text.len() as u64 > max_bytes {
                return Err(too_large(text.len()));
            }
            return Ok(Self {
                body: Body::Inline(text.to_string()),
                size,
                sha256,
            });
        }
        if text.len() as i64 > MAX_TEXT_BYTES {
            return Err(too_large(text.len()));
        }
        let compressed = zstd::bulk::compress(text.as_bytes(), ZSTD_LEVEL)
            .map_err(|err| Error::corrupt_from("compressing the spec failed", err))?;
        if compressed.len() as u64 > max_bytes {
            return Err(too_large(compressed.len()));
        }
        Ok(Self {
            body: Body::Chunked {
                spec_id: Uuid::new_v4(),
                chunks: compressed.chunks(CHUNK_BYTES).map(<[u8]>::to_vec).collect(),
            },
            size,
            sha256,
        })
    }

    /// The `encoding` column.
    pub(crate) fn encoding(&self) -> &'static str {
        match self.body {
            Body::Inline(_) => "json",
            Body::Chunked { .. } => ZSTD,
        }
    }
}

/// The spec columns of a `model_versions` row, as read.
#[derive(Debug, Default)]
pub(crate) struct StoredSpec {
    /// `spec`: the inline text.
    pub(crate) spec: Option<String>,
    /// `encoding`: null or `json` for inline, `zstd` for chunks.
    pub(crate) encoding: Option<String>,
    /// `spec_id`: the chunks' partition.
    pub(crate) spec_id: Option<Uuid>,
    /// `chunks`: how many chunks.
    pub(crate) chunks: Option<i32>,
    /// `size`: bytes of the text.
    pub(crate) size: Option<i64>,
    /// `sha256`: hex SHA-256 of the text.
    pub(crate) sha256: Option<String>,
}

/// What reading a stored spec needs next.
#[derive(Debug)]
pub(crate) enum Layout {
    /// The text is in the row.
    Inline(String),
    /// The text is in `count` chunks under `spec_id`.
    Chunked { spec_id: Uuid, count: i32 },
}

impl StoredSpec {
    /// Where the text is, refusing rows keyscore cannot read.
    pub(crate) fn layout(&self, what: &str) -> Result<Layout, Error> {
        match self.encoding.as_deref() {
            None | Some("json") => {
                self.spec.clone().map(Layout::Inline).ok_or_else(|| {
                    Error::corrupt(format!("{what} has no spec; upload a new version"))
                })
            }
            Some(ZSTD) => match (self.spec_id, self.chunks) {
                (Some(spec_id), Some(count)) if count > 0 => Ok(Layout::Chunked { spec_id, count }),
                _ => Err(Error::corrupt(format!(
                    "{what} says its spec is in chunks but names no spec_id or chunk count; \
                     upload a new version"
                ))),
            },
            Some(other) => Err(Error::corrupt(format!(
                "{what} has a spec encoding '{other}' this keyscore does not know; use 'json' \
                 (or leave it null) for inline specs, or upgrade keyscore"
            ))),
        }
    }

    /// Checks an inline text against the row's size and checksum, when given.
    pub(crate) fn check(&self, what: &str, text: &str) -> Result<(), Error> {
        if let Some(size) = self.size {
            if size != text.len() as i64 {
                return Err(Error::corrupt(format!(
                    "{what}: the spec is {} bytes, the row says {size}; upload a new version",
                    text.len()
                )));
            }
        }
        if let Some(want) = &self.sha256 {
            if !want.eq_ignore_ascii_case(&hex(&spec_sha256(text))) {
                return Err(Error::corrupt(format!(
                    "{what}: the spec does not match its SHA-256; upload a new version"
                )));
            }
        }
        Ok(())
    }

    /// Reassembles chunked text from `chunks` (chunk number, bytes) in chunk order, then
    /// decompresses and checks it.
    pub(crate) fn assemble(
        &self,
        what: &str,
        count: i32,
        chunks: Vec<(i32, Vec<u8>)>,
    ) -> Result<String, Error> {
        let numbers: Vec<i32> = chunks.iter().map(|(n, _)| *n).collect();
        if numbers != (0..count).collect::<Vec<_>>() {
            return Err(Error::corrupt(format!(
                "{what}: expected chunks 0 to {} of the spec, found {} chunks; upload a new \
                 version",
                count - 1,
                numbers.len()
            )));
        }
        let size = self.size.ok_or_else(|| {
            Error::corrupt(format!(
                "{what}: a chunked spec without its size; upload a new version"
            ))
        })?;
        if !(0..=MAX_TEXT_BYTES).contains(&size) {
            return Err(Error::corrupt(format!(
                "{what}: the spec claims {size} bytes, more than keyscore reads ({MAX_TEXT_BYTES})"
            )));
        }
        let compressed: Vec<u8> = chunks.into_iter().flat_map(|(_, data)| data).collect();
        let text = zstd::bulk::decompress(&compressed, size as usize).map_err(|err| {
            Error::corrupt_from(format!("{what}: the spec's chunks do not decompress"), err)
        })?;
        let text = String::from_utf8(text).map_err(|err| {
            Error::corrupt_from(format!("{what}: the spec is not UTF-8 text"), err)
        })?;
        self.check(what, &text)?;
        Ok(text)
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(encoded: &EncodedSpec) -> StoredSpec {
        StoredSpec {
            spec: match &encoded.body {
                Body::Inline(text) => Some(text.clone()),
                Body::Chunked { .. } => None,
            },
            encoding: Some(encoded.encoding().to_string()),
            spec_id: match &encoded.body {
                Body::Chunked { spec_id, .. } => Some(*spec_id),
                Body::Inline(_) => None,
            },
            chunks: match &encoded.body {
                Body::Chunked { chunks, .. } => Some(chunks.len() as i32),
                Body::Inline(_) => None,
            },
            size: Some(encoded.size),
            sha256: Some(encoded.sha256.clone()),
        }
    }

    /// A text that compresses poorly: decimal digits of a simple generator.
    fn noisy_text(bytes: usize) -> String {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut out = String::with_capacity(bytes + 32);
        out.push('[');
        while out.len() < bytes {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.push_str(&format!("{},", state % 1_000_000_007));
        }
        out.push_str("0]");
        out
    }

    #[test]
    fn small_specs_stay_inline_and_read_back() {
        let encoded = EncodedSpec::new("{\"a\":1}", 1 << 20).unwrap();
        assert_eq!(encoded.encoding(), "json");
        let row = stored(&encoded);
        match row.layout("k v1").unwrap() {
            Layout::Inline(text) => {
                row.check("k v1", &text).unwrap();
                assert_eq!(text, "{\"a\":1}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn large_specs_are_compressed_into_bounded_chunks_and_reassembled() {
        let text = noisy_text(3 << 20);
        let encoded = EncodedSpec::new(&text, 8 << 20).unwrap();
        let Body::Chunked { chunks, .. } = &encoded.body else {
            panic!("not chunked")
        };
        assert!(chunks.len() >= 2, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|c| c.len() <= CHUNK_BYTES));
        let row = stored(&encoded);
        let numbered: Vec<(i32, Vec<u8>)> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| (i as i32, c.clone()))
            .collect();
        let Layout::Chunked { count, .. } = row.layout("k v1").unwrap() else {
            panic!("not chunked")
        };
        assert_eq!(row.assemble("k v1", count, numbered.clone()).unwrap(), text);

        // A missing chunk, a swapped chunk, a wrong checksum are refused.
        let err = row
            .assemble("k v1", count, numbered[1..].to_vec())
            .unwrap_err();
        assert!(err.to_string().contains("expected chunks 0 to"), "{err}");
        let mut swapped = numbered.clone();
        swapped.swap(0, 1);
        swapped[0].0 = 0;
        swapped[1].0 = 1;
        assert!(row.assemble("k v1", count, swapped).is_err());
        let mut wrong = stored(&encoded);
        wrong.sha256 = Some("00".repeat(32));
        let err = wrong.assemble("k v1", count, numbered).unwrap_err();
        assert!(err.to_string().contains("SHA-256"), "{err}");
    }

    #[test]
    fn specs_over_the_limit_are_refused_naming_size_and_limit() {
        let text = noisy_text(2 << 20);
        let err = EncodedSpec::new(&text, 64 * 1024).unwrap_err();
        let Error::SpecTooLarge { bytes, limit } = err else {
            panic!("{err}")
        };
        assert_eq!(limit, 64 * 1024);
        assert!(bytes > limit);
        let message = Error::SpecTooLarge { bytes, limit }.to_string();
        assert!(
            message.contains(&bytes.to_string()) && message.contains("65536"),
            "{message}"
        );
    }

    #[test]
    fn unknown_encodings_are_refused_by_name() {
        let row = StoredSpec {
            encoding: Some("brotli".into()),
            ..StoredSpec::default()
        };
        let err = row.layout("k v1").unwrap_err();
        assert!(err.to_string().contains("'brotli'"), "{err}");
    }
}
