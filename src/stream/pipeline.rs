//! The scoring step shared by every source and sink.
//!
//! [`score_decoded`] is a pure function of a decoded record and the model resolved for its key,
//! so tests can feed it plain values. [`Scorer`] wraps it for batches: decode every record,
//! resolve each distinct key once through the [`ModelRegistry`], then score. Every input yields
//! exactly one [`Outcome`], so scored + dead letters = input.

use std::{collections::HashMap, sync::Arc, time::Instant};

use crate::{
    registry::{self, ModelRegistry, Resolved},
    stats::RunStats,
    stream::record::{decode, Decoded, Reason, RecordFormat, Rejection, Scored},
};

/// What became of one input record.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Scored.
    Scored(Scored),
    /// Not scored; goes to the dead letters.
    Rejected(Rejection),
}

/// One input: the payload and, from Kafka, the message key.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The record bytes.
    pub payload: &'a [u8],
    /// The message key, if the source has one.
    pub key: Option<&'a [u8]>,
}

/// Scores one decoded record with the model resolved for its key. `scratch` is reused across
/// calls to hold the feature vector.
pub fn score_decoded(decoded: &Decoded, resolved: &Resolved, scratch: &mut Vec<f64>) -> Outcome {
    let (model, fallback) = match resolved {
        Resolved::Own(m) => (m, false),
        Resolved::Fallback(m) => (m, true),
        Resolved::Missing(why) => {
            return Outcome::Rejected(Rejection::new(Reason::NoModel, why.to_string()))
        }
    };
    if let Err(rejection) = decoded.features_into(model.model.features(), scratch) {
        return Outcome::Rejected(rejection);
    }
    match model.model.predict(scratch) {
        Ok(prediction) => Outcome::Scored(Scored {
            id: decoded.id.clone(),
            key: decoded.key.clone(),
            prediction,
            model: Arc::clone(model),
            fallback,
        }),
        Err(err) => Outcome::Rejected(Rejection::new(
            Reason::ModelError,
            format!("{} version {}: {err}", model.key, model.version),
        )),
    }
}

/// Scores batches of raw records against a registry.
#[derive(Debug, Clone)]
pub struct Scorer {
    registry: Arc<ModelRegistry>,
    format: RecordFormat,
}

impl Scorer {
    /// A scorer reading records in `format`, with models from `registry`.
    pub fn new(registry: Arc<ModelRegistry>, format: RecordFormat) -> Self {
        Self { registry, format }
    }

    /// The registry models come from.
    pub fn registry(&self) -> &Arc<ModelRegistry> {
        &self.registry
    }

    /// Scores a batch: one outcome per input, in input order. Scoring time per record is
    /// recorded in `stats` when given.
    pub async fn score_batch(
        &self,
        inputs: &[Input<'_>],
        mut stats: Option<&mut RunStats>,
    ) -> Vec<Outcome> {
        let decoded: Vec<Result<Decoded, Rejection>> = inputs
            .iter()
            .map(|i| decode(i.payload, &self.format, i.key))
            .collect();
        let mut models: HashMap<&str, Result<Resolved, Rejection>> = HashMap::new();
        for d in decoded.iter().flatten() {
            if !models.contains_key(d.key.as_str()) {
                let resolved = self.registry.resolve(&d.key).await.map_err(store_rejection);
                models.insert(d.key.as_str(), resolved);
            }
        }
        let mut scratch = Vec::with_capacity(32);
        let mut out = Vec::with_capacity(inputs.len());
        for d in &decoded {
            let outcome = match d {
                Err(rejection) => Outcome::Rejected(rejection.clone()),
                Ok(d) => match &models[d.key.as_str()] {
                    Err(rejection) => Outcome::Rejected(rejection.clone()),
                    Ok(resolved) => match stats.as_deref_mut() {
                        Some(stats) => {
                            let start = Instant::now();
                            let o = score_decoded(d, resolved, &mut scratch);
                            stats.latency.record(start.elapsed());
                            o
                        }
                        None => score_decoded(d, resolved, &mut scratch),
                    },
                },
            };
            out.push(outcome);
        }
        out
    }
}

fn store_rejection(err: registry::Error) -> Rejection {
    Rejection::new(
        Reason::StoreUnavailable,
        format!("could not load the model for this key: {err}"),
    )
}
