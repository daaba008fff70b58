//! Streams: record decoding and encoding, the pure scoring step, and the pipelines that move
//! records from a source to scored output and dead letters (files and stdin/stdout here; Kafka
//! in [`kafka`]).

pub mod file;
pub mod kafka;
pub mod pipeline;
pub mod record;

pub use pipeline::{score_decoded, Input, Outcome, Scorer, Scoring};
pub use record::{decode, Decoded, KeySource, Reason, RecordFormat, Rejection, Scored};

/// Stream errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading input or writing output failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read or written.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}
