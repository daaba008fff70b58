//! Streams: record decoding and encoding, the pure scoring step, what becomes of each outcome,
//! the counters the pipeline keeps, and the pipelines that move records from a source to
//! scored output and dead letters (files and stdin/stdout here; Kafka in [`kafka`]).

mod chain;
pub mod file;
pub mod kafka;
pub mod metrics;
pub mod output;
pub mod record;
pub mod report;
pub mod scorer;

pub use metrics::Metrics;
pub use output::{emit, Sink};
pub use record::{
    decode, Decoded, FallbackCause, KeySource, Level, OutputFormat, OutputShape, Reason,
    RecordFormat, Rejection, Scored, ScoredAt, Source,
};
pub use report::RunStats;
pub use scorer::{score_decoded, Input, Outcome, Scorer, Scoring};

/// Stream errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading input or writing output failed.
    #[error("{what}")]
    Io {
        /// What was being read or written.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}
