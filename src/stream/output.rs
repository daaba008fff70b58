//! What becomes of a scored batch: one output per input, in input order, each input's shadow
//! outputs right after it, and every outcome counted once. The file, Kafka and demo pipelines
//! differ only in where outputs go, so each is a [`Sink`] and [`emit`] does the rest.

use super::{
    record::{OutputFormat, Rejection, Source},
    report::RunStats,
    scorer::Outcome,
    Scored, Scoring,
};

/// Where a pipeline's outputs go. Each call names the index of the input in the batch.
pub trait Sink {
    /// Why an output could not be taken.
    type Error;

    /// The input at `input`: its bytes (the `enriched` shape copies them) and where it came
    /// from (a record without an id gets one made from it).
    fn source(&self, input: usize) -> Source<'_>;

    /// A scored record; `encoded` is its JSON (see [`OutputFormat::encode`]).
    fn scored(&mut self, input: usize, scored: &Scored, encoded: &[u8]) -> Result<(), Self::Error>;

    /// A record that was not scored.
    fn dead_letter(&mut self, input: usize, rejection: &Rejection) -> Result<(), Self::Error>;

    /// A shadow version's output for the input; never part of the main output. Dropped unless
    /// the sink has somewhere to put it.
    fn shadow(&mut self, input: usize, scored: &Scored, encoded: &[u8]) -> Result<(), Self::Error> {
        let _ = (input, scored, encoded);
        Ok(())
    }
}

/// Hands every outcome of `scoring` to `sink` in input order, each input's shadow outputs
/// right after its own output, and counts each outcome in `stats`. Scored records are encoded
/// as `format` says. `buf` is scratch space for encoding, reused across calls.
pub fn emit<S: Sink>(
    scoring: &Scoring,
    format: &OutputFormat,
    stats: &mut RunStats,
    buf: &mut Vec<u8>,
    sink: &mut S,
) -> Result<(), S::Error> {
    let mut shadows = scoring.shadows.iter().peekable();
    for (i, outcome) in scoring.outcomes.iter().enumerate() {
        count(stats, outcome);
        match outcome {
            Outcome::Scored(s) => {
                buf.clear();
                format.encode(s, &sink.source(i), &scoring.scored_at, buf);
                sink.scored(i, s, buf)?;
            }
            Outcome::Rejected(r) => sink.dead_letter(i, r)?,
        }
        while let Some((_, shadow)) = shadows.next_if(|(at, _)| *at == i) {
            buf.clear();
            format.encode(shadow, &sink.source(i), &scoring.scored_at, buf);
            sink.shadow(i, shadow, buf)?;
        }
    }
    Ok(())
}

/// Counts one outcome in the run's statistics.
fn count(stats: &mut RunStats, outcome: &Outcome) {
    match outcome {
        Outcome::Scored(s) => {
            *stats
                .scored
                .entry((s.model.key.clone(), s.model.version))
                .or_default() += 1;
            if s.fallback {
                stats.fallback += 1;
            }
            if s.canary {
                stats.canary += 1;
            }
        }
        Outcome::Rejected(r) => *stats.dead.entry(r.reason).or_default() += 1,
    }
}
