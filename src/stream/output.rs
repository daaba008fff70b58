//! What becomes of a scored batch: one output per input, in input order, each input's shadow
//! outputs right after it, and every outcome counted once. The file, Kafka and demo pipelines
//! differ only in where outputs go, so each is a [`Sink`] and [`emit`] does the rest.

use std::borrow::Cow;

use super::{
    record::{Origin, OutputFormat, Rejection, Source},
    report::RunStats,
    scorer::Outcome,
    Scored, Scoring,
};
use crate::quality::{self, Arm, Made, Quality};

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
/// as `format` says. `buf` is scratch space for encoding, reused across calls. With `quality`,
/// each scored record's prediction (and its shadow's) is remembered by the record's id (its own
/// or the generated one) for its label to find.
pub fn emit<S: Sink>(
    scoring: &Scoring,
    format: &OutputFormat,
    stats: &mut RunStats,
    buf: &mut Vec<u8>,
    sink: &mut S,
    quality: Option<&Quality>,
) -> Result<(), S::Error> {
    let mut remember = quality
        .filter(|q| q.expects_labels())
        .map(|q| q.batch(quality::now_ms()));
    let mut shadows = scoring.shadows.iter().peekable();
    for (i, outcome) in scoring.outcomes.iter().enumerate() {
        count(stats, outcome);
        match outcome {
            Outcome::Scored(s) => {
                buf.clear();
                let source = sink.source(i);
                if let Some(q) = remember.as_mut() {
                    if let Some(id) = id_of(s, source.origin) {
                        let shadow = shadows
                            .peek()
                            .filter(|(at, _)| *at == i)
                            .map(|(_, s)| made(q, s));
                        let primary = made(q, s);
                        q.remember(&id, primary, shadow);
                    }
                }
                format.encode(s, &source, &scoring.scored_at, buf);
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

/// The id a label names a scored record by: its own id's text, else the one made from its
/// origin (`line-N`, `TOPIC-PARTITION-OFFSET`).
fn id_of<'s>(s: &'s Scored, origin: Origin<'_>) -> Option<Cow<'s, str>> {
    match &s.id {
        Some(raw) => {
            let text = raw.get();
            // A string without escapes (the common id) is its text between the quotes.
            match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
                Some(inner) if !inner.contains('\\') => Some(Cow::Borrowed(inner)),
                _ => quality::labels::id_text(text).map(Cow::Owned),
            }
        }
        None if origin == Origin::Unknown => None,
        None => Some(Cow::Owned(origin.to_string())),
    }
}

/// What the quality stage remembers of a scored record.
fn made(q: &quality::Batch<'_>, s: &Scored) -> Made {
    Made {
        key: q.key(&s.model.key),
        version: s.model.version,
        arm: if s.shadow {
            Arm::Shadow
        } else if s.canary {
            Arm::Canary
        } else {
            Arm::Active
        },
        predicted: quality::predicted(&s.prediction),
    }
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
