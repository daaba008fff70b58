//! Model quality in production: delayed labels joined to the predictions they judge, live
//! metrics and drift per (key, version, arm) over sliding windows, and automatic canary
//! verdicts.
//!
//! * [`labels`]: reading label records.
//! * [`join`]: the bounded memory of predictions awaiting their labels.
//! * [`window`]: one version's sliding window of errors, dead letters and drift.
//! * [`psi`]: the population stability index.
//! * [`verdict`]: the automatic canary decision.
//! * [`task`]: the periodic writer of quality rows to the store, which also applies verdicts.
//!
//! [`Quality`] ties them together for a process. The scorer reports every record a model
//! scored or dead-lettered ([`Quality::batch`]), the pipelines report every output with its
//! id ([`Batch::remember`]) and every label ([`Quality::label`]). Memory is bounded twice: at
//! most `max_remembered` predictions wait for labels, and at most `max_tracked` (key, version,
//! arm) windows are kept (an idle one is dropped for a new one; past the cap a version is not
//! tracked and that is counted).

pub mod config;
pub mod join;
pub mod labels;
pub mod psi;
pub mod task;
pub mod verdict;
pub mod window;

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{SystemTime, UNIX_EPOCH},
};

use foldhash::{HashMap, HashMapExt};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub use config::QualityConfig;
pub use join::{Arm, Made, Predicted};
pub use window::{Figures, Track};

use self::{
    join::{Joined, Memory},
    labels::{LabelFields, Outcome},
    window::{Baseline, Binned, FeatureStats, Task},
};
use crate::{
    model::{Model, Output, Prediction},
    registry::ServedModel,
    store::QualityRow,
};

/// Now, in ms since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The number drift bins a prediction by: a regression's value, a binary classifier's
/// probability of its second class, a multiclass classifier's top class index.
pub fn prediction_value(prediction: &Prediction) -> f64 {
    match prediction {
        Prediction::Value(v) => *v,
        Prediction::Class {
            index,
            probabilities,
        } => {
            if probabilities.len() == 2 {
                probabilities[1]
            } else {
                *index as f64
            }
        }
    }
}

/// What became of a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelResult {
    /// Joined to its prediction.
    Matched = 0,
    /// Its id's label had already arrived.
    Duplicate = 1,
    /// No remembered prediction has its id.
    Unknown = 2,
    /// Not a label record.
    Malformed = 3,
}

/// Labels counted by what became of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LabelCounts([u64; 4]);

impl LabelCounts {
    /// How many labels had `result`.
    pub fn get(&self, result: LabelResult) -> u64 {
        self.0[result as usize]
    }

    /// The sum of two counts.
    pub fn add(&self, other: &LabelCounts) -> LabelCounts {
        let mut sum = *self;
        for (a, b) in sum.0.iter_mut().zip(other.0) {
            *a += b;
        }
        sum
    }

    /// The counts as `3 matched, 0 duplicate, ...`.
    pub fn summary(&self) -> String {
        let said: Vec<String> = LabelResult::ALL
            .iter()
            .map(|r| format!("{} {}", self.get(*r), r.as_str()))
            .collect();
        said.join(", ")
    }
}

impl LabelResult {
    /// Every result, in a stable order.
    pub const ALL: [LabelResult; 4] = [
        LabelResult::Matched,
        LabelResult::Duplicate,
        LabelResult::Unknown,
        LabelResult::Malformed,
    ];

    /// The result's name, as counted.
    pub fn as_str(self) -> &'static str {
        match self {
            LabelResult::Matched => "matched",
            LabelResult::Duplicate => "duplicate",
            LabelResult::Unknown => "unknown",
            LabelResult::Malformed => "malformed",
        }
    }
}

/// The process-wide counters of the quality stage.
#[derive(Debug, Clone)]
pub struct QualityMetrics {
    /// `keyscore_labels_total{result}`.
    pub labels: IntCounterVec,
    /// `keyscore_predictions_forgotten_total{why}`: left the join without a label.
    pub forgotten: IntCounterVec,
    /// `keyscore_predictions_awaiting_labels`.
    pub remembered: IntGauge,
    /// `keyscore_quality_windows`: (key, version, arm) windows held.
    pub tracked: IntGauge,
    /// `keyscore_quality_untracked_total`: records of versions not tracked (over the cap).
    pub untracked: IntCounter,
    /// `keyscore_canary_verdicts_total{verdict}`: automatic verdicts this process wrote.
    pub verdicts: IntCounterVec,
}

impl Default for QualityMetrics {
    fn default() -> Self {
        QualityMetrics {
            labels: IntCounterVec::new(
                Opts::new(
                    "keyscore_labels_total",
                    "Labels read, by what became of them",
                ),
                &["result"],
            )
            .expect("valid metric"),
            forgotten: IntCounterVec::new(
                Opts::new(
                    "keyscore_predictions_forgotten_total",
                    "Predictions that left the label join without a label: expired (older than \
                     the join window) or evicted (over the cap)",
                ),
                &["why"],
            )
            .expect("valid metric"),
            remembered: IntGauge::new(
                "keyscore_predictions_awaiting_labels",
                "Predictions held in memory awaiting their labels",
            )
            .expect("valid metric"),
            tracked: IntGauge::new(
                "keyscore_quality_windows",
                "(key, version, arm) quality windows held",
            )
            .expect("valid metric"),
            untracked: IntCounter::new(
                "keyscore_quality_untracked_total",
                "Records of versions whose quality is not tracked (over [quality] max_tracked)",
            )
            .expect("valid metric"),
            verdicts: IntCounterVec::new(
                Opts::new(
                    "keyscore_canary_verdicts_total",
                    "Automatic canary verdicts written by this process",
                ),
                &["verdict"],
            )
            .expect("valid metric"),
        }
    }
}

impl QualityMetrics {
    /// Registers every series with `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.labels.clone()))?;
        registry.register(Box::new(self.forgotten.clone()))?;
        registry.register(Box::new(self.remembered.clone()))?;
        registry.register(Box::new(self.tracked.clone()))?;
        registry.register(Box::new(self.untracked.clone()))?;
        registry.register(Box::new(self.verdicts.clone()))?;
        Ok(())
    }
}

/// One (key, version, arm)'s window, as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionFigures {
    /// The model key.
    pub key: String,
    /// The version.
    pub version: i64,
    /// The arm.
    pub arm: Arm,
    /// End of the window and its length, ms.
    pub window_end_ms: i64,
    /// See `window_end_ms`.
    pub window_ms: i64,
    /// The figures.
    pub figures: Figures,
}

impl VersionFigures {
    /// The row the store keeps, written by `by`.
    pub fn row(&self, by: Option<&str>) -> QualityRow {
        let f = &self.figures;
        QualityRow {
            key: self.key.clone(),
            version: self.version,
            arm: self.arm.as_str().to_string(),
            window_end_ms: self.window_end_ms,
            window_ms: self.window_ms,
            predictions: f.sums.predictions as i64,
            labelled: f.sums.labelled as i64,
            mae: f.mae,
            rmse: f.rmse,
            accuracy: f.accuracy,
            log_loss: f.log_loss,
            brier: f.brier,
            label_lag_ms: f.label_lag_ms,
            dead_letters: f.sums.dead_letters as i64,
            prediction_psi: f.prediction_psi,
            max_feature_psi: f.max_feature_psi(),
            feature_psi: (!f.feature_psi.is_empty()).then(|| {
                let map: serde_json::Map<String, serde_json::Value> = f
                    .feature_psi
                    .iter()
                    .map(|(name, psi)| (name.clone(), serde_json::json!(psi)))
                    .collect();
                serde_json::Value::Object(map).to_string()
            }),
            missing_share: f.missing_share,
            out_of_range_share: f.out_of_range_share,
            by: by.map(str::to_string),
        }
    }
}

/// Windows of one key: a short list of (version, arm).
type KeyTracks = Vec<(i64, Arm, Track)>;

#[derive(Debug)]
struct State {
    memory: Memory,
    /// By key; the key's `Arc` is shared with the predictions remembered for it.
    tracks: HashMap<Arc<str>, KeyTracks>,
    tracked: usize,
    /// When idle windows were last looked for, ms.
    swept_ms: i64,
}

/// A process's quality stage. Cheap to share (`Arc`); one mutex, taken once per batch.
#[derive(Debug)]
pub struct Quality {
    config: QualityConfig,
    /// Whether labels will come: only then are predictions remembered for them.
    labels: bool,
    fields: LabelFields,
    state: Mutex<State>,
    metrics: QualityMetrics,
}

impl Quality {
    /// A quality stage with `config`, expecting labels when it names a labels topic.
    pub fn new(config: QualityConfig) -> Arc<Quality> {
        let labels = config.labels_topic.is_some();
        Self::build(config, labels)
    }

    /// A quality stage with `config` that expects labels from elsewhere (`score --labels`).
    pub fn with_labels(config: QualityConfig) -> Arc<Quality> {
        Self::build(config, true)
    }

    fn build(config: QualityConfig, labels: bool) -> Arc<Quality> {
        let memory = Memory::new(config.max_remembered, config.join_window_ms());
        Arc::new(Quality {
            labels,
            fields: config.label_fields(),
            state: Mutex::new(State {
                memory,
                tracks: HashMap::new(),
                tracked: 0,
                swept_ms: 0,
            }),
            config,
            metrics: QualityMetrics::default(),
        })
    }

    /// Whether labels are expected, so predictions are remembered for them. Without labels
    /// only drift and dead letters are measured, at no memory cost per record.
    pub fn expects_labels(&self) -> bool {
        self.labels
    }

    /// The configuration.
    pub fn config(&self) -> &QualityConfig {
        &self.config
    }

    /// The counters.
    pub fn metrics(&self) -> &QualityMetrics {
        &self.metrics
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the stage for one batch's observations, at `now_ms`.
    pub fn batch(&self, now_ms: i64) -> Batch<'_> {
        Batch {
            quality: self,
            state: self.lock(),
            now_ms,
            untracked: 0,
        }
    }

    /// Reads label records arriving at `now_ms` and joins each, taking the stage once for
    /// all of them; counts what became of them.
    pub fn labels<'p>(
        &self,
        payloads: impl IntoIterator<Item = &'p [u8]>,
        now_ms: i64,
    ) -> LabelCounts {
        let mut counts = LabelCounts::default();
        let mut batch = self.batch(now_ms);
        for payload in payloads {
            let result = match labels::decode(payload, &self.fields) {
                Err(_) => LabelResult::Malformed,
                Ok(label) => batch.join(&label.id, &label.outcome, label.at_ms),
            };
            counts.0[result as usize] += 1;
        }
        drop(batch);
        for result in LabelResult::ALL {
            let n = counts.get(result);
            if n > 0 {
                self.metrics
                    .labels
                    .with_label_values(&[result.as_str()])
                    .inc_by(n);
            }
        }
        counts
    }

    /// Every held window's figures at `now_ms`, ordered by key, version and arm. Windows idle
    /// for longer than a window are left out.
    pub fn figures(&self, now_ms: i64) -> Vec<VersionFigures> {
        let mut state = self.lock();
        let mut out = Vec::new();
        for (key, tracks) in state.tracks.iter_mut() {
            for (version, arm, track) in tracks.iter_mut() {
                if now_ms - track.touched_ms > track.window_ms() {
                    continue;
                }
                out.push(version_figures(key, *version, *arm, track, now_ms));
            }
        }
        out.sort_by(|a, b| (&a.key, a.version, a.arm).cmp(&(&b.key, b.version, b.arm)));
        out
    }

    /// One key's windows at `now_ms` (idle ones included), by version and arm.
    pub fn key_figures(&self, key: &str, now_ms: i64) -> Vec<VersionFigures> {
        let mut state = self.lock();
        let mut out: Vec<VersionFigures> = state
            .tracks
            .get_mut(key)
            .into_iter()
            .flatten()
            .map(|(version, arm, track)| version_figures(key, *version, *arm, track, now_ms))
            .collect();
        out.sort_by_key(|f| (f.version, f.arm));
        out
    }

    /// Predictions awaiting labels now.
    pub fn awaiting(&self) -> usize {
        self.lock().memory.len()
    }
}

fn version_figures(
    key: &str,
    version: i64,
    arm: Arm,
    track: &mut Track,
    now_ms: i64,
) -> VersionFigures {
    VersionFigures {
        key: key.to_string(),
        version,
        arm,
        figures: track.figures(now_ms),
        window_end_ms: track.window_end_ms(),
        window_ms: track.window_ms(),
    }
}

/// The quality stage held for one batch.
#[derive(Debug)]
pub struct Batch<'a> {
    quality: &'a Quality,
    state: MutexGuard<'a, State>,
    now_ms: i64,
    untracked: u64,
}

impl Batch<'_> {
    /// The window of `model`'s version for `arm`, made when missing and under the cap.
    fn track(&mut self, model: &ServedModel, arm: Arm) -> Option<&mut Track> {
        let config = &self.quality.config;
        let now_ms = self.now_ms;
        let state = &mut *self.state;
        if !state.tracks.contains_key(model.key.as_str()) {
            if state.tracked >= config.max_tracked && now_ms - state.swept_ms >= config.slice_ms() {
                sweep(state, now_ms);
                if state.tracked >= config.max_tracked {
                    self.untracked += 1;
                    return None;
                }
            }
            state
                .tracks
                .insert(Arc::from(model.key.as_str()), Vec::new());
        }
        let tracks = state.tracks.get_mut(model.key.as_str()).expect("inserted");
        let at = match tracks
            .iter()
            .position(|(v, a, _)| *v == model.version && *a == arm)
        {
            Some(at) => at,
            None => {
                if state.tracked >= config.max_tracked {
                    self.untracked += 1;
                    return None;
                }
                let track = Track::new(
                    task_of(&model.model),
                    baseline(&model.model),
                    config.slices,
                    config.slice_ms(),
                    now_ms,
                );
                tracks.push((model.version, arm, track));
                state.tracked += 1;
                tracks.len() - 1
            }
        };
        Some(&mut tracks[at].2)
    }

    /// Counts a record `model` scored for `arm`: the features it read (NaN for missing) and
    /// its prediction.
    pub fn observe(
        &mut self,
        model: &ServedModel,
        arm: Arm,
        features: &[f64],
        prediction: &Prediction,
    ) {
        let now_ms = self.now_ms;
        if let Some(t) = self.track(model, arm) {
            t.observe(now_ms, features, prediction_value(prediction));
        }
    }

    /// Counts a dead letter of a record `model` was to score for `arm`.
    pub fn dead_letter(&mut self, model: &ServedModel, arm: Arm) {
        let now_ms = self.now_ms;
        if let Some(t) = self.track(model, arm) {
            t.dead_letter(now_ms);
        }
    }

    /// `key` as a shared string: the one its windows are held under when there are (no
    /// allocation), else a new one.
    pub fn key(&self, key: &str) -> Arc<str> {
        match self.state.tracks.get_key_value(key) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(key),
        }
    }

    /// Remembers the prediction answering record `id`, and the shadow version's.
    pub fn remember(&mut self, id: &str, made: Made, shadow: Option<Made>) {
        let now_ms = self.now_ms;
        self.state.memory.remember(id, now_ms, made, shadow);
    }

    /// Joins a label for `id` with `outcome`, known at `at_ms` (else now).
    fn join(&mut self, id: &str, outcome: &Outcome, at_ms: Option<i64>) -> LabelResult {
        let now_ms = self.now_ms;
        match self.state.memory.join(id, now_ms) {
            Joined::Unknown => LabelResult::Unknown,
            Joined::Duplicate => LabelResult::Duplicate,
            Joined::Matched {
                at_ms: scored_ms,
                made,
                shadow,
            } => {
                let lag = at_ms.unwrap_or(now_ms) - scored_ms;
                for made in std::iter::once(made).chain(shadow) {
                    self.apply_label(&made, outcome, lag.max(0));
                }
                LabelResult::Matched
            }
        }
    }

    fn apply_label(&mut self, made: &Made, outcome: &Outcome, lag_ms: i64) {
        let now_ms = self.now_ms;
        let Some(track) = find(&mut self.state, made) else {
            return;
        };
        match (&made.predicted, track.task().clone()) {
            (Predicted::Value(p), Task::Regression) => match outcome {
                Outcome::Number(truth) => track.label_value(now_ms, *p, *truth, lag_ms),
                Outcome::Text(t) => match t.parse::<f64>() {
                    Ok(truth) if truth.is_finite() => track.label_value(now_ms, *p, truth, lag_ms),
                    _ => track.label_class(now_ms, &[], None, lag_ms),
                },
            },
            (Predicted::Classes(probabilities), Task::Classification(classes)) => {
                let truth = outcome.class_index(&classes);
                track.label_class(now_ms, probabilities, truth, lag_ms);
            }
            _ => {}
        }
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        let now_ms = self.now_ms;
        let forgotten = self.state.memory.take_forgotten();
        for (made, expired) in &forgotten {
            let why = if *expired { "expired" } else { "evicted" };
            self.quality
                .metrics
                .forgotten
                .with_label_values(&[why])
                .inc();
            if let Some(track) = find(&mut self.state, made) {
                track.forgotten(now_ms, 1);
            }
        }
        if self.untracked > 0 {
            self.quality.metrics.untracked.inc_by(self.untracked);
        }
        self.quality
            .metrics
            .remembered
            .set(self.state.memory.len() as i64);
        self.quality.metrics.tracked.set(self.state.tracked as i64);
    }
}

fn find<'s>(state: &'s mut State, made: &Made) -> Option<&'s mut Track> {
    state
        .tracks
        .get_mut(&*made.key)?
        .iter_mut()
        .find(|(v, a, _)| *v == made.version && *a == made.arm)
        .map(|(_, _, t)| t)
}

/// Drops windows idle for longer than their window; at most once per slice.
fn sweep(state: &mut State, now_ms: i64) {
    let mut dropped = 0;
    state.tracks.retain(|_, tracks| {
        tracks.retain(|(_, _, t)| {
            let keep = now_ms - t.touched_ms <= t.window_ms();
            if !keep {
                dropped += 1;
            }
            keep
        });
        !tracks.is_empty()
    });
    state.tracked -= dropped;
    state.swept_ms = now_ms;
}

/// What the model predicts.
fn task_of(model: &Model) -> Task {
    match model.output() {
        Output::Regression => Task::Regression,
        Output::Classification(classes) => Task::Classification(classes.clone()),
    }
}

/// The model's training statistics, from its spec's `reference` (none: no drift figures).
fn baseline(model: &Model) -> Baseline {
    let Some(reference) = model.reference() else {
        return Baseline::default();
    };
    let binned = |b: &crate::model::Bins| Binned {
        edges: b.edges.clone().into(),
        shares: b.shares.clone().into(),
    };
    Baseline {
        features: model
            .features()
            .iter()
            .zip(&reference.features)
            .map(|(name, f)| FeatureStats {
                name: name.clone(),
                binned: binned(&f.bins),
                min: f.min,
                max: f.max,
            })
            .collect(),
        prediction: reference.prediction.as_ref().map(binned),
    }
}

/// What `prediction` is remembered as.
pub fn predicted(prediction: &Prediction) -> Predicted {
    match prediction {
        Prediction::Value(v) => Predicted::Value(*v),
        Prediction::Class { probabilities, .. } => {
            Predicted::Classes(probabilities.as_slice().into())
        }
    }
}
