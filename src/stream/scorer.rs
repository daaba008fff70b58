//! The scoring step shared by every source and sink.
//!
//! [`score_decoded`] is a pure function of a decoded record and the model resolved for its key,
//! so tests can feed it plain values. [`Scorer`] wraps it for batches: decode every record,
//! resolve each distinct key once through the [`ModelRegistry`], then score. A record whose key
//! has no usable model is scored by the first model along its fallback chain: the keys its
//! `[records] fallback_fields` name, in order, then the `[store] fallback_key`; every distinct
//! key of the chain is also looked up once per batch, together. Every input yields
//! exactly one [`Outcome`], so scored + dead letters = input. A key's canary version scores
//! its share of the key's records; a shadow version scores them again for the side output
//! (see [`crate::rollout`]). Every batch is counted in the scorer's [`Metrics`]; what becomes
//! of each outcome is [`super::output`]'s.

use std::{sync::Arc, time::Instant};

// Per-batch maps keyed by record keys: foldhash is several times faster than SipHash on short
// keys, and HashDoS resistance is kept by its per-map random seed.
use foldhash::{HashMap, HashMapExt};
use prometheus::IntCounter;

use super::{
    chain::{self, store_rejection, KeyModels, Pick},
    metrics::{score_value, BatchTally, KeyTally, Metrics},
    record::{
        decode, Decoded, FallbackCause, Level, OutputShape, Reason, RecordFormat, Rejection,
        Scored, ScoredAt,
    },
    report::RunStats,
};
use crate::{
    quality::{self, Arm, Quality},
    registry::{ModelRegistry, Resolved, ServedModel},
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
/// calls to hold the feature vector. A fallback model scores at the chain's `default` level.
pub fn score_decoded(decoded: &Decoded, resolved: &Resolved, scratch: &mut Vec<f64>) -> Outcome {
    let (model, level) = match resolved {
        Resolved::Own(m) => (m, Level::Own),
        Resolved::Fallback(m) => (m, Level::Default),
        Resolved::Missing(why) => {
            return Outcome::Rejected(Rejection::new(Reason::NoModel, why.to_string()))
        }
    };
    let cause = (level != Level::Own).then_some(FallbackCause::NoModel);
    score_with(decoded, model, level, cause, scratch, false)
}

/// Scores one decoded record with `model`, found at `level` of its fallback chain (for
/// `cause`). With `keep_inputs` the features read are kept in the output.
fn score_with(
    decoded: &Decoded,
    model: &Arc<ServedModel>,
    level: Level,
    fallback_cause: Option<FallbackCause>,
    scratch: &mut Vec<f64>,
    keep_inputs: bool,
) -> Outcome {
    if let Err(rejection) = decoded.read_model_features(&model.model, scratch) {
        return Outcome::Rejected(rejection);
    }
    match model.model.predict(scratch) {
        Ok(prediction) => Outcome::Scored(Scored {
            id: decoded.id.map(ToOwned::to_owned),
            key: decoded.key.clone(),
            prediction,
            model: Arc::clone(model),
            fallback: level != Level::Own,
            level,
            fallback_cause,
            canary: false,
            shadow: false,
            inputs: keep_inputs.then(|| scratch.as_slice().into()),
        }),
        Err(err) => Outcome::Rejected(Rejection::new(
            Reason::ModelError,
            format!("{} version {}: {err}", model.key, model.version),
        )),
    }
}

/// A scored batch: one outcome per input, and the shadow outputs.
#[derive(Debug, Clone, Default)]
pub struct Scoring {
    /// One outcome per input, in input order.
    pub outcomes: Vec<Outcome>,
    /// Shadow versions' outputs, each with the index of its input. They never go to the main
    /// output.
    pub shadows: Vec<(usize, Scored)>,
    /// When the batch was scored: every output's `scored_at`.
    pub scored_at: ScoredAt,
}

/// Scores batches of raw records against a registry.
#[derive(Debug, Clone)]
pub struct Scorer {
    registry: Arc<ModelRegistry>,
    format: RecordFormat,
    metrics: Arc<Metrics>,
    /// Records scored per level of the fallback chain, indexed by [`Scorer::level_index`].
    by_level: Arc<[IntCounter]>,
    /// Live quality and drift, when measured.
    quality: Option<Arc<Quality>>,
}

impl Scorer {
    /// A scorer reading records in `format`, with models from `registry`, counting into
    /// metrics of its own.
    pub fn new(registry: Arc<ModelRegistry>, format: RecordFormat) -> Self {
        Self::with_parts(registry, format, Arc::new(Metrics::default()))
    }

    fn with_parts(
        registry: Arc<ModelRegistry>,
        format: RecordFormat,
        metrics: Arc<Metrics>,
    ) -> Self {
        let n = format.fallback_fields.len();
        let levels = std::iter::once(Level::Own)
            .chain((0..n).map(|i| Level::Field(i as u8)))
            .chain(std::iter::once(Level::Default));
        let by_level = levels
            .map(|level| metrics.fallback_level(format.output.level_name(level)))
            .collect();
        Self {
            registry,
            format,
            metrics,
            by_level,
            quality: None,
        }
    }

    /// The same scorer, counting into `metrics`.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        let quality = self.quality.clone();
        Self {
            quality,
            ..Self::with_parts(self.registry, self.format, metrics)
        }
    }

    /// The same scorer, reporting every record a model scores or dead-letters to `quality`
    /// (features and predictions for drift, dead letters per version).
    pub fn with_quality(mut self, quality: Arc<Quality>) -> Self {
        self.quality = Some(quality);
        self
    }

    /// Where this scorer reports quality, if it does.
    pub fn quality(&self) -> Option<&Arc<Quality>> {
        self.quality.as_ref()
    }

    /// The record format: where keys, ids and fallback fields are, and how outputs are
    /// written.
    pub fn format(&self) -> &RecordFormat {
        &self.format
    }

    /// The index of `level` in `by_level`.
    fn level_index(&self, level: Level) -> usize {
        match level {
            Level::Own => 0,
            Level::Field(i) => 1 + usize::from(i),
            Level::Default => self.by_level.len() - 1,
        }
    }

    /// The registry models come from.
    pub fn registry(&self) -> &Arc<ModelRegistry> {
        &self.registry
    }

    /// The metrics this scorer counts into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Scores a batch: one outcome per input, in input order, and the shadow outputs. Scoring
    /// time per record is recorded in `stats` when given.
    pub async fn score(&self, inputs: &[Input<'_>], mut stats: Option<&mut RunStats>) -> Scoring {
        let decoded: Vec<Result<Decoded, Rejection>> = inputs
            .iter()
            .map(|i| decode(i.payload, &self.format, i.key))
            .collect();
        // Each distinct key is resolved once per batch (missing ones are loaded together);
        // a record refers to its key by the key's index in `keys`, so the rest of the batch
        // hashes no key again.
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(inputs.len());
        let mut keys: Vec<&str> = Vec::new();
        let key_of: Vec<usize> = decoded
            .iter()
            .map(|d| match d {
                Ok(d) => *index.entry(d.key.as_str()).or_insert_with(|| {
                    keys.push(d.key.as_str());
                    keys.len() - 1
                }),
                Err(_) => usize::MAX,
            })
            .collect();
        let looked = self.registry.lookup_many(&keys).await;
        let models: Vec<KeyModels> = keys
            .iter()
            .zip(looked)
            .map(|(key, looked)| match looked {
                Ok(own) => {
                    let rollout = match &own.model {
                        Some(_) => self.registry.rollout(key),
                        None => None,
                    };
                    Ok((own, rollout))
                }
                Err(err) => Err(store_rejection(&err)),
            })
            .collect();
        let picks = chain::fallbacks(
            &self.registry,
            &self.format.fallback_fields,
            &decoded,
            &key_of,
            &models,
            &index,
        )
        .await;
        drop(index);
        // Tallies of the keys scored by their own models, by key index; records scored by
        // the fallback model count under the fallback's key.
        let mut own_tally: Vec<KeyTally> = std::iter::repeat_with(KeyTally::default)
            .take(keys.len())
            .collect();
        // (The models of a chain's levels: a short list.)
        let mut fallback: Vec<(String, KeyTally)> = Vec::new();
        let mut scratch = Vec::with_capacity(32);
        let mut scoring = Scoring {
            outcomes: Vec::with_capacity(inputs.len()),
            shadows: Vec::new(),
            scored_at: ScoredAt::now(),
        };
        let keep_inputs = self.format.output.shape() == OutputShape::PredictionLog;
        let mut by_level = vec![0u64; self.by_level.len()];
        let mut tally = BatchTally {
            records: inputs.len() as u64,
            ..BatchTally::default()
        };
        let timings = self.metrics.scoring.local();
        // The quality stage, taken once for the batch.
        let mut observed = self.quality.as_deref().map(|q| q.batch(quality::now_ms()));
        // One clock read per record: a record's scoring time runs from the end of the previous
        // record's to the end of its own, so it covers its features, model and bookkeeping.
        let mut mark = Instant::now();
        for (i, d) in decoded.iter().enumerate() {
            let mut timed = false;
            let (outcome, own_key) = match d {
                Err(rejection) => (Outcome::Rejected(rejection.clone()), false),
                Ok(d) => match &models[key_of[i]] {
                    Err(rejection) => (Outcome::Rejected(rejection.clone()), false),
                    Ok((own, rollout)) => match &own.model {
                        None => {
                            // Every record whose key has no model has a pick.
                            let outcome = match picks.get(i).and_then(Option::as_ref) {
                                Some(Pick::Found(level, model)) => {
                                    timed = true;
                                    let cause = match own.refused {
                                        Some(_) => FallbackCause::Refused,
                                        None => FallbackCause::NoModel,
                                    };
                                    let outcome = score_with(
                                        d,
                                        model,
                                        *level,
                                        Some(cause),
                                        &mut scratch,
                                        keep_inputs,
                                    );
                                    if let Some(q) = observed.as_mut() {
                                        observe(q, model, Arm::Active, &outcome, &scratch);
                                    }
                                    outcome
                                }
                                Some(Pick::Missing(why)) => Outcome::Rejected(Rejection::new(
                                    Reason::NoModel,
                                    why.to_string(),
                                )),
                                Some(Pick::Failed(rejection)) => {
                                    Outcome::Rejected(rejection.clone())
                                }
                                None => Outcome::Rejected(Rejection::new(
                                    Reason::NoModel,
                                    format!("no active model for key '{}'", d.key),
                                )),
                            };
                            (outcome, false)
                        }
                        Some(model) => {
                            let canary = rollout
                                .as_ref()
                                .and_then(|r| r.canary.as_ref())
                                .filter(|c| c.takes(id_text(d, inputs[i].payload)));
                            let version = canary.map_or(model, |c| &c.model);
                            let mut outcome =
                                score_with(d, version, Level::Own, None, &mut scratch, keep_inputs);
                            timed = true;
                            if let Some(q) = observed.as_mut() {
                                let arm = if canary.is_some() {
                                    Arm::Canary
                                } else {
                                    Arm::Active
                                };
                                observe(q, version, arm, &outcome, &scratch);
                            }
                            if let (Outcome::Scored(s), Some(_)) = (&mut outcome, canary) {
                                s.canary = true;
                            }
                            let shadow = rollout.as_ref().and_then(|r| r.shadow.as_ref());
                            if let (Outcome::Scored(primary), Some(shadow)) = (&outcome, shadow) {
                                let tally_key = &mut own_tally[key_of[i]];
                                let shadowed = score_with(
                                    d,
                                    shadow,
                                    Level::Own,
                                    None,
                                    &mut scratch,
                                    keep_inputs,
                                );
                                if let Some(q) = observed.as_mut() {
                                    observe(q, shadow, Arm::Shadow, &shadowed, &scratch);
                                }
                                match shadowed {
                                    Outcome::Scored(mut s) => {
                                        s.shadow = true;
                                        tally_key.shadow.observe(
                                            &primary.prediction,
                                            &primary.model,
                                            &s.prediction,
                                            &s.model,
                                        );
                                        scoring.shadows.push((i, s));
                                    }
                                    Outcome::Rejected(_) => tally_key.shadow.failed += 1,
                                }
                            }
                            (outcome, true)
                        }
                    },
                },
            };
            match &outcome {
                Outcome::Scored(s) => {
                    tally.scored += 1;
                    by_level[self.level_index(s.level)] += 1;
                    let t = if s.fallback {
                        let at = match fallback.iter().position(|(k, _)| *k == s.model.key) {
                            Some(at) => at,
                            None => {
                                fallback.push((s.model.key.clone(), KeyTally::default()));
                                fallback.len() - 1
                            }
                        };
                        &mut fallback[at].1
                    } else {
                        &mut own_tally[key_of[i]]
                    };
                    t.scored += 1;
                    if s.canary {
                        tally.canary += 1;
                        t.canary += 1;
                    }
                    t.scores.push(score_value(&s.prediction));
                }
                Outcome::Rejected(r) => {
                    // Only keys with a model of their own are named: record keys are
                    // untrusted, and naming every one would grow the metrics without bound.
                    let key = d.as_ref().ok().filter(|_| own_key).map(|d| d.key.as_str());
                    if key.is_some() {
                        own_tally[key_of[i]].dead += 1;
                    }
                    let record = d.as_ref().ok().and_then(|d| d.id).map(|id| id.get());
                    tally.dead_letter(r.reason, key, record, &r.message);
                }
            }
            scoring.outcomes.push(outcome);
            let now = Instant::now();
            if timed {
                let took = now - mark;
                timings.observe(took.as_secs_f64());
                if let Some(stats) = stats.as_deref_mut() {
                    stats.latency.record(took);
                }
            }
            mark = now;
        }
        timings.flush();
        drop(observed);
        tally.keys.reserve(keys.len() + fallback.len());
        for (counter, n) in self.by_level.iter().zip(by_level) {
            if n > 0 {
                counter.inc_by(n);
            }
        }
        for (key, t) in keys.iter().zip(own_tally) {
            if t.scored > 0 || t.dead > 0 || t.shadow.compared > 0 || t.shadow.failed > 0 {
                tally.keys.push((key.to_string(), t));
            }
        }
        tally.keys.extend(fallback);
        tally.shadow = scoring.shadows.len() as u64;
        if let Some(stats) = stats {
            stats.shadow_outputs += scoring.shadows.len() as u64;
            for (key, t) in &tally.keys {
                if t.shadow.compared > 0 || t.shadow.failed > 0 {
                    stats
                        .shadow
                        .entry(key.clone())
                        .or_default()
                        .merge(&t.shadow);
                }
            }
        }
        self.metrics.record_batch(tally);
        scoring
    }
}

/// Reports one record `model` scored (or refused) for `arm` to the quality stage; `features`
/// holds what it read.
fn observe(
    q: &mut quality::Batch<'_>,
    model: &ServedModel,
    arm: Arm,
    outcome: &Outcome,
    features: &[f64],
) {
    match outcome {
        Outcome::Scored(s) => q.observe(model, arm, features, &s.prediction),
        Outcome::Rejected(_) => q.dead_letter(model, arm),
    }
}

/// The bytes a record's canary split is hashed from: its id's JSON text, else its payload.
fn id_text<'a>(d: &Decoded<'a>, payload: &'a [u8]) -> &'a [u8] {
    match d.id {
        Some(id) => id.get().as_bytes(),
        None => payload,
    }
}
