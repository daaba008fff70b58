//! One model version's quality over a sliding window: the labelled predictions' errors, the
//! dead letters, and the distribution of its features and predictions against training.
//!
//! The window is cut into slices of equal length aligned on the Unix epoch (so every process's
//! windows line up); the live figures are the sum of the last slices, and a slice that ends is
//! reused, zeroed, for the next. Observing a record costs one binary search per feature over at
//! most 100 bin edges and allocates nothing; a [`Track`] holds `slices × (Σ bins + prediction
//! bins)` counters of 4 bytes (10 slices × 10 features × 10 bins: 4 KB) besides its reference.

use super::psi::psi;

/// The training distribution of one feature or of the predictions.
#[derive(Debug, Clone, PartialEq)]
pub struct Binned {
    /// Interior bin edges: bin `i` holds the values with `i` edges at or below them.
    pub edges: Box<[f64]>,
    /// Training share of each bin (one more than the edges).
    pub shares: Box<[f64]>,
}

impl Binned {
    fn bin(&self, v: f64) -> usize {
        self.edges.partition_point(|e| *e <= v)
    }
}

/// One feature's training statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStats {
    /// The feature's name.
    pub name: String,
    /// Its distribution over bins.
    pub binned: Binned,
    /// Its training range: a value outside it is counted as out of range.
    pub min: f64,
    /// See `min`.
    pub max: f64,
}

/// What a version's drift is measured against: its training statistics, from the spec's
/// `reference`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Baseline {
    /// One per model feature, in the model's order.
    pub features: Vec<FeatureStats>,
    /// The distribution of the model's own predictions on the training data.
    pub prediction: Option<Binned>,
}

/// What a model predicts, as the metrics need it.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// A regressor.
    Regression,
    /// A classifier with these class labels.
    Classification(Vec<String>),
}

/// Sums over one slice.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sums {
    /// Predictions made.
    pub predictions: u64,
    /// Labels joined to them.
    pub labelled: u64,
    /// Dead letters of records this version was to score.
    pub dead_letters: u64,
    /// Predictions forgotten without their label (expired or pushed out).
    pub unlabelled_forgotten: u64,
    /// Regression: Σ|error| and Σerror².
    pub abs_error: f64,
    /// See `abs_error`.
    pub sq_error: f64,
    /// Classification: correct top classes, Σ log loss, Σ Brier score.
    pub correct: u64,
    /// See `correct`.
    pub log_loss: f64,
    /// See `correct`.
    pub brier: f64,
    /// Labels whose class is not one of the model's.
    pub unknown_class: u64,
    /// Σ label lag, ms.
    pub lag_ms: f64,
    /// Feature values read, of them missing, and outside the training range.
    pub values: u64,
    /// See `values`.
    pub missing: u64,
    /// See `values`.
    pub out_of_range: u64,
}

impl Sums {
    fn add(&mut self, o: &Sums) {
        self.predictions += o.predictions;
        self.labelled += o.labelled;
        self.dead_letters += o.dead_letters;
        self.unlabelled_forgotten += o.unlabelled_forgotten;
        self.abs_error += o.abs_error;
        self.sq_error += o.sq_error;
        self.correct += o.correct;
        self.log_loss += o.log_loss;
        self.brier += o.brier;
        self.unknown_class += o.unknown_class;
        self.lag_ms += o.lag_ms;
        self.values += o.values;
        self.missing += o.missing;
        self.out_of_range += o.out_of_range;
    }
}

/// One slice: its sums and its bin counters.
#[derive(Debug, Clone)]
struct Slice {
    sums: Sums,
    /// Per feature, its bins' counts, laid out feature after feature; then the prediction's.
    counts: Box<[u32]>,
}

/// The figures of a version over the window, as shown and stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Figures {
    /// The window's sums.
    pub sums: Sums,
    /// Mean absolute and root mean squared error (regression, with labels).
    pub mae: Option<f64>,
    /// See `mae`.
    pub rmse: Option<f64>,
    /// Accuracy, mean log loss and mean Brier score (classification, with labels).
    pub accuracy: Option<f64>,
    /// See `accuracy`.
    pub log_loss: Option<f64>,
    /// See `accuracy`.
    pub brier: Option<f64>,
    /// Mean label lag, ms.
    pub label_lag_ms: Option<f64>,
    /// PSI of the predictions against training (needs a reference).
    pub prediction_psi: Option<f64>,
    /// PSI per feature, in the model's order (features with values only).
    pub feature_psi: Vec<(String, f64)>,
    /// Share of feature values missing, and outside the training range.
    pub missing_share: Option<f64>,
    /// See `missing_share`.
    pub out_of_range_share: Option<f64>,
}

impl Figures {
    /// The largest feature PSI.
    pub fn max_feature_psi(&self) -> Option<f64> {
        self.feature_psi.iter().map(|(_, p)| *p).reduce(f64::max)
    }

    /// The value of a metric by its name (`mae`, `rmse`, `accuracy`, `log_loss`, `brier`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        match name {
            "mae" => self.mae,
            "rmse" => self.rmse,
            "accuracy" => self.accuracy,
            "log_loss" => self.log_loss,
            "brier" => self.brier,
            _ => None,
        }
    }
}

/// A version's sliding window.
#[derive(Debug, Clone)]
pub struct Track {
    task: Task,
    baseline: Baseline,
    /// Where each feature's counters start in a slice's `counts`; the prediction's start at
    /// the last entry.
    offsets: Box<[usize]>,
    slices: Box<[Slice]>,
    slice_ms: i64,
    /// Start of the current slice (a multiple of `slice_ms`) and its index.
    head_start: i64,
    head: usize,
    /// Last time anything was observed, ms.
    pub touched_ms: i64,
}

impl Track {
    /// A window of `slices` slices of `slice_ms` each, starting empty at `now_ms`.
    pub fn new(task: Task, baseline: Baseline, slices: usize, slice_ms: i64, now_ms: i64) -> Track {
        let mut offsets = Vec::with_capacity(baseline.features.len() + 1);
        let mut at = 0;
        for f in &baseline.features {
            offsets.push(at);
            at += f.binned.shares.len();
        }
        offsets.push(at);
        at += baseline.prediction.as_ref().map_or(0, |p| p.shares.len());
        let slice = Slice {
            sums: Sums::default(),
            counts: vec![0u32; at].into_boxed_slice(),
        };
        let slice_ms = slice_ms.max(1);
        Track {
            task,
            baseline,
            offsets: offsets.into_boxed_slice(),
            slices: vec![slice; slices.max(1)].into_boxed_slice(),
            slice_ms,
            head_start: now_ms - now_ms.rem_euclid(slice_ms),
            head: 0,
            touched_ms: now_ms,
        }
    }

    /// What the model predicts.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// Heap bytes held (counters and reference).
    pub fn heap_bytes(&self) -> usize {
        let counters: usize = self.slices.iter().map(|s| s.counts.len() * 4).sum();
        let reference: usize = self
            .baseline
            .features
            .iter()
            .map(|f| f.name.len() + 8 * (f.binned.edges.len() + f.binned.shares.len()))
            .sum();
        counters + reference + self.slices.len() * std::mem::size_of::<Slice>()
    }

    /// Moves the window to `now_ms`: slices that ended are zeroed for reuse.
    fn advance(&mut self, now_ms: i64) {
        let n = self.slices.len() as i64;
        let behind = (now_ms - self.head_start).div_euclid(self.slice_ms);
        if behind <= 0 {
            return;
        }
        for _ in 0..behind.min(n) {
            self.head = (self.head + 1) % self.slices.len();
            let s = &mut self.slices[self.head];
            s.sums = Sums::default();
            s.counts.fill(0);
        }
        self.head_start += behind * self.slice_ms;
    }

    fn current(&mut self, now_ms: i64) -> &mut Slice {
        self.advance(now_ms);
        self.touched_ms = self.touched_ms.max(now_ms);
        &mut self.slices[self.head]
    }

    /// Counts a record this version scored at `now_ms`: the features it read (in the model's
    /// order, NaN for missing) and its prediction's value (see [`super::prediction_value`]).
    pub fn observe(&mut self, now_ms: i64, features: &[f64], prediction: f64) {
        self.advance(now_ms);
        self.touched_ms = self.touched_ms.max(now_ms);
        let (baseline, offsets, slice) =
            (&self.baseline, &self.offsets, &mut self.slices[self.head]);
        slice.sums.predictions += 1;
        for (i, (f, &v)) in baseline.features.iter().zip(features).enumerate() {
            slice.sums.values += 1;
            if v.is_nan() {
                slice.sums.missing += 1;
                continue;
            }
            if v < f.min || v > f.max {
                slice.sums.out_of_range += 1;
            }
            slice.counts[offsets[i] + f.binned.bin(v)] += 1;
        }
        if let Some(p) = &baseline.prediction {
            if prediction.is_finite() {
                slice.counts[offsets[offsets.len() - 1] + p.bin(prediction)] += 1;
            }
        }
    }

    /// Counts a dead letter of a record this version was to score.
    pub fn dead_letter(&mut self, now_ms: i64) {
        self.current(now_ms).sums.dead_letters += 1;
    }

    /// Counts predictions forgotten without a label.
    pub fn forgotten(&mut self, now_ms: i64, n: u64) {
        self.current(now_ms).sums.unlabelled_forgotten += n;
    }

    /// Counts a label for a regression value `predicted`, true value `truth`, `lag_ms` after
    /// the prediction.
    pub fn label_value(&mut self, now_ms: i64, predicted: f64, truth: f64, lag_ms: i64) {
        let s = &mut self.current(now_ms).sums;
        let e = truth - predicted;
        s.labelled += 1;
        s.abs_error += e.abs();
        s.sq_error += e * e;
        s.lag_ms += lag_ms as f64;
    }

    /// Counts a label of class `truth` (an index into the classes; `None`: not one of them)
    /// for `probabilities`. Log loss floors the true class's probability at 1e-15 (as
    /// scikit-learn does); Brier is `(p₁ − y)²` for two classes (scikit-learn's
    /// `brier_score_loss`) and `Σₖ (pₖ − yₖ)²` for more.
    pub fn label_class(
        &mut self,
        now_ms: i64,
        probabilities: &[f64],
        truth: Option<usize>,
        lag_ms: i64,
    ) {
        let s = &mut self.current(now_ms).sums;
        let Some(c) = truth.filter(|c| *c < probabilities.len()) else {
            s.unknown_class += 1;
            return;
        };
        s.labelled += 1;
        s.lag_ms += lag_ms as f64;
        let top = argmax(probabilities);
        if top == c {
            s.correct += 1;
        }
        s.log_loss -= probabilities[c].clamp(1e-15, 1.0).ln();
        s.brier += if probabilities.len() == 2 {
            let y = if c == 1 { 1.0 } else { 0.0 };
            (probabilities[1] - y).powi(2)
        } else {
            probabilities
                .iter()
                .enumerate()
                .map(|(k, p)| (p - if k == c { 1.0 } else { 0.0 }).powi(2))
                .sum()
        };
    }

    /// The window's figures at `now_ms`.
    pub fn figures(&mut self, now_ms: i64) -> Figures {
        self.advance(now_ms);
        let mut sums = Sums::default();
        let width = self.slices[0].counts.len();
        let mut counts = vec![0u32; width];
        for s in self.slices.iter() {
            sums.add(&s.sums);
            for (a, b) in counts.iter_mut().zip(s.counts.iter()) {
                *a = a.saturating_add(*b);
            }
        }
        let n = sums.labelled as f64;
        let labelled = sums.labelled > 0;
        let (mut mae, mut rmse, mut accuracy, mut log_loss, mut brier) =
            (None, None, None, None, None);
        if labelled {
            match self.task {
                Task::Regression => {
                    mae = Some(sums.abs_error / n);
                    rmse = Some((sums.sq_error / n).sqrt());
                }
                Task::Classification(_) => {
                    accuracy = Some(sums.correct as f64 / n);
                    log_loss = Some(sums.log_loss / n);
                    brier = Some(sums.brier / n);
                }
            }
        }
        let feature_psi = self
            .baseline
            .features
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                let c = &counts[self.offsets[i]..self.offsets[i + 1]];
                psi(&f.binned.shares, c).map(|p| (f.name.clone(), p))
            })
            .collect();
        let prediction_psi = self.baseline.prediction.as_ref().and_then(|p| {
            let from = self.offsets[self.offsets.len() - 1];
            psi(&p.shares, &counts[from..])
        });
        let share = |part: u64| (sums.values > 0).then(|| part as f64 / sums.values as f64);
        Figures {
            mae,
            rmse,
            accuracy,
            log_loss,
            brier,
            label_lag_ms: labelled.then(|| sums.lag_ms / n),
            prediction_psi,
            feature_psi,
            missing_share: share(sums.missing),
            out_of_range_share: share(sums.out_of_range),
            sums,
        }
    }

    /// The window's length, ms.
    pub fn window_ms(&self) -> i64 {
        self.slice_ms * self.slices.len() as i64
    }

    /// The end of the current slice: the end of the window the figures cover.
    pub fn window_end_ms(&self) -> i64 {
        self.head_start + self.slice_ms
    }
}

fn argmax(p: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in p.iter().enumerate() {
        if *v > p[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline() -> Baseline {
        Baseline {
            features: vec![FeatureStats {
                name: "x".into(),
                binned: Binned {
                    edges: vec![0.0].into(),
                    shares: vec![0.5, 0.5].into(),
                },
                min: -1.0,
                max: 1.0,
            }],
            prediction: Some(Binned {
                edges: vec![10.0].into(),
                shares: vec![0.5, 0.5].into(),
            }),
        }
    }

    #[test]
    fn regression_errors_over_the_window() {
        let mut t = Track::new(Task::Regression, Baseline::default(), 4, 1000, 0);
        t.label_value(10, 1.0, 2.0, 100);
        t.label_value(20, 1.0, 4.0, 300);
        let f = t.figures(30);
        assert_eq!(f.sums.labelled, 2);
        assert_eq!(f.mae, Some(2.0));
        assert_eq!(f.rmse, Some(5f64.sqrt()));
        assert_eq!(f.label_lag_ms, Some(200.0));
        assert_eq!(f.accuracy, None);
    }

    #[test]
    fn slices_slide_out_of_the_window() {
        let mut t = Track::new(Task::Regression, Baseline::default(), 3, 1000, 0);
        t.label_value(500, 0.0, 1.0, 0);
        t.label_value(1500, 0.0, 3.0, 0);
        assert_eq!(t.figures(2999).sums.labelled, 2);
        // At 3000 the first slice (0..1000) leaves a window of 1000..4000.
        let f = t.figures(3000);
        assert_eq!(f.sums.labelled, 1);
        assert_eq!(f.mae, Some(3.0));
        // Long idle: everything leaves.
        assert_eq!(t.figures(1_000_000).sums.labelled, 0);
        assert_eq!(t.window_ms(), 3000);
    }

    #[test]
    fn classification_metrics_match_their_definitions() {
        let classes = vec!["no".to_string(), "yes".to_string()];
        let mut t = Track::new(
            Task::Classification(classes),
            Baseline::default(),
            1,
            1000,
            0,
        );
        t.label_class(0, &[0.2, 0.8], Some(1), 0);
        t.label_class(0, &[0.6, 0.4], Some(1), 0);
        t.label_class(0, &[0.6, 0.4], None, 0);
        let f = t.figures(0);
        assert_eq!(f.sums.labelled, 2);
        assert_eq!(f.sums.unknown_class, 1);
        assert_eq!(f.accuracy, Some(0.5));
        let ll = (-(0.8f64).ln() - (0.4f64).ln()) / 2.0;
        assert!((f.log_loss.unwrap() - ll).abs() < 1e-12);
        let brier = ((0.8f64 - 1.0).powi(2) + (0.4f64 - 1.0).powi(2)) / 2.0;
        assert!((f.brier.unwrap() - brier).abs() < 1e-12);
    }

    #[test]
    fn drift_counts_bins_missing_and_out_of_range() {
        let mut t = Track::new(Task::Regression, baseline(), 2, 1000, 0);
        // Training: half below 0, half above; production: all above, some out of range.
        for v in [0.5, 0.7, 2.0, f64::NAN] {
            t.observe(1, &[v], 20.0);
        }
        let f = t.figures(1);
        assert_eq!(f.sums.predictions, 4);
        assert_eq!(f.missing_share, Some(0.25));
        assert_eq!(f.out_of_range_share, Some(0.25));
        let (name, p) = &f.feature_psi[0];
        assert_eq!(name, "x");
        assert!(*p > 0.25, "all values in one bin is a large shift: {p}");
        assert!(f.prediction_psi.unwrap() > 0.25);
        let mut stable = Track::new(Task::Regression, baseline(), 2, 1000, 0);
        for v in [-0.5, 0.5, -0.2, 0.2] {
            stable.observe(1, &[v], if v < 0.0 { 5.0 } else { 15.0 });
        }
        let f = stable.figures(1);
        assert!(f.feature_psi[0].1.abs() < 1e-12);
        assert!(f.prediction_psi.unwrap().abs() < 1e-12);
        assert_eq!(f.max_feature_psi(), Some(f.feature_psi[0].1));
    }
}
