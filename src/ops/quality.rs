//! Live quality series for `/metrics` and the quality part of `/status.json`.
//!
//! Per-(key, version, arm) series are bounded like the per-key ones: at each scrape the
//! `[ops] top_keys` windows with the most predictions get series
//! (`keyscore_quality_*{key,version,arm}`); everything else is in `keyscore quality` and the
//! store's quality rows.

use std::sync::Arc;

use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
    GaugeVec, Opts,
};
use serde_json::{json, Value};

use crate::quality::{now_ms, Quality, VersionFigures};

/// Reads one figure of a window.
type Read = fn(&VersionFigures) -> Option<f64>;

/// The gauges, by the figure they show.
pub(super) struct QualitySeries {
    quality: Arc<Quality>,
    top: usize,
    gauges: Vec<(GaugeVec, Read)>,
}

impl QualitySeries {
    pub(super) fn new(quality: Arc<Quality>, top: usize) -> prometheus::Result<Self> {
        let labels = ["key", "version", "arm"];
        let gauge = |name: &str, help: &str| GaugeVec::new(Opts::new(name, help), &labels);
        let figures: [(&str, &str, Read); 12] = [
            (
                "keyscore_quality_predictions",
                "Predictions in the window.",
                |f| Some(f.figures.sums.predictions as f64),
            ),
            (
                "keyscore_quality_labelled",
                "Predictions in the window joined to a label.",
                |f| Some(f.figures.sums.labelled as f64),
            ),
            (
                "keyscore_quality_mae",
                "Mean absolute error over the window (regression).",
                |f| f.figures.mae,
            ),
            (
                "keyscore_quality_rmse",
                "Root mean squared error over the window (regression).",
                |f| f.figures.rmse,
            ),
            (
                "keyscore_quality_accuracy",
                "Accuracy over the window (classification).",
                |f| f.figures.accuracy,
            ),
            (
                "keyscore_quality_log_loss",
                "Mean log loss over the window (classification).",
                |f| f.figures.log_loss,
            ),
            (
                "keyscore_quality_brier",
                "Mean Brier score over the window (classification).",
                |f| f.figures.brier,
            ),
            (
                "keyscore_quality_label_lag_seconds",
                "Mean label lag over the window.",
                |f| f.figures.label_lag_ms.map(|ms| ms / 1000.0),
            ),
            (
                "keyscore_quality_prediction_psi",
                "PSI of the predictions against training.",
                |f| f.figures.prediction_psi,
            ),
            (
                "keyscore_quality_max_feature_psi",
                "Largest feature PSI against training.",
                |f| f.figures.max_feature_psi(),
            ),
            (
                "keyscore_quality_missing_ratio",
                "Share of feature values missing.",
                |f| f.figures.missing_share,
            ),
            (
                "keyscore_quality_out_of_range_ratio",
                "Share of feature values outside the training range.",
                |f| f.figures.out_of_range_share,
            ),
        ];
        let gauges = figures
            .into_iter()
            .map(|(name, help, read)| gauge(name, help).map(|g| (g, read)))
            .collect::<prometheus::Result<_>>()?;
        Ok(QualitySeries {
            quality,
            top,
            gauges,
        })
    }
}

impl Collector for QualitySeries {
    fn desc(&self) -> Vec<&Desc> {
        self.gauges.iter().flat_map(|(g, _)| g.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut windows = self.quality.figures(now_ms());
        windows.sort_by_key(|w| std::cmp::Reverse(w.figures.sums.predictions));
        windows.truncate(self.top);
        for (g, _) in &self.gauges {
            g.reset();
        }
        for w in &windows {
            let version = w.version.to_string();
            let labels = [w.key.as_str(), version.as_str(), w.arm.as_str()];
            for (g, read) in &self.gauges {
                if let Some(v) = read(w).filter(|v| v.is_finite()) {
                    g.with_label_values(&labels).set(v);
                }
            }
        }
        self.gauges.iter().flat_map(|(g, _)| g.collect()).collect()
    }
}

/// A key's windows as `/status.json` lists them.
pub(super) fn key_status(quality: &Quality, key: &str) -> Value {
    let windows: Vec<Value> = quality
        .key_figures(key, now_ms())
        .iter()
        .map(|w| {
            let f = &w.figures;
            json!({
                "version": w.version,
                "arm": w.arm.as_str(),
                "window_ms": w.window_ms,
                "predictions": f.sums.predictions,
                "labelled": f.sums.labelled,
                "dead_letters": f.sums.dead_letters,
                "mae": f.mae,
                "rmse": f.rmse,
                "accuracy": f.accuracy,
                "log_loss": f.log_loss,
                "brier": f.brier,
                "label_lag_ms": f.label_lag_ms,
                "prediction_psi": f.prediction_psi,
                "max_feature_psi": f.max_feature_psi(),
                "feature_psi": f.feature_psi.iter().map(|(n, p)| json!({"feature": n, "psi": p})).collect::<Vec<_>>(),
                "missing_share": f.missing_share,
                "out_of_range_share": f.out_of_range_share,
            })
        })
        .collect();
    Value::Array(windows)
}
