//! `[quality]`: the label join, the windows live quality is measured over, and where labels
//! come from.

use serde::{Deserialize, Serialize};

use super::labels::LabelFields;

/// `[quality]` settings. Every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityConfig {
    /// Measure live quality and drift (default true). Off: no predictions are remembered, no
    /// windows kept, and `keyscore canary --auto` canaries are never decided by this process.
    pub enabled: bool,
    /// The length of the sliding window live figures cover, seconds (default 300).
    pub window_secs: u64,
    /// Slices the window is cut into (default 10): the window slides by one slice at a time,
    /// and a row per (key, version, arm) is written to the store at the end of each slice.
    pub slices: usize,
    /// How long a prediction waits for its label, seconds (default 3600).
    pub join_window_secs: u64,
    /// Predictions held awaiting labels, at most (default 1,000,000; about 150 bytes each plus
    /// the record id). Past it the oldest leave, counted in
    /// `keyscore_predictions_forgotten_total{why="evicted"}`.
    pub max_remembered: usize,
    /// (key, version, arm) windows held, at most (default 10,000). Past it, windows idle for a
    /// whole window are dropped; versions still beyond it are not tracked, counted in
    /// `keyscore_quality_untracked_total`.
    pub max_tracked: usize,
    /// The label field holding the scored record's id (default `id`).
    pub label_id_field: String,
    /// The label field holding the outcome (default `label`).
    pub label_field: String,
    /// The label field holding when the outcome was known (default `ts`): RFC 3339 text or
    /// ms since the Unix epoch; optional in records.
    pub label_time_field: String,
    /// The Kafka topic labels arrive on (`keyscore serve`; default none). It must be
    /// co-partitioned with the input topic: labels keyed like the records they judge, and the
    /// same number of partitions, so a label reaches the member that scored its record.
    pub labels_topic: Option<String>,
}

impl Default for QualityConfig {
    fn default() -> Self {
        let fields = LabelFields::default();
        QualityConfig {
            enabled: true,
            window_secs: 300,
            slices: 10,
            join_window_secs: 3600,
            max_remembered: 1_000_000,
            max_tracked: 10_000,
            label_id_field: fields.id,
            label_field: fields.label,
            label_time_field: fields.time,
            labels_topic: None,
        }
    }
}

impl QualityConfig {
    /// Checks the settings, naming the field at fault.
    pub fn check(&self) -> Result<(), String> {
        if self.window_secs == 0 {
            return Err("quality.window_secs must be at least 1".into());
        }
        if !(1..=120).contains(&self.slices) {
            return Err("quality.slices must be between 1 and 120".into());
        }
        if self.window_secs * 1000 < self.slices as u64 {
            return Err("quality.window_secs is too short for quality.slices slices".into());
        }
        if self.join_window_secs == 0 {
            return Err("quality.join_window_secs must be at least 1".into());
        }
        if self.max_remembered == 0 || self.max_tracked == 0 {
            return Err("quality.max_remembered and quality.max_tracked must be at least 1".into());
        }
        for (name, value) in [
            ("label_id_field", &self.label_id_field),
            ("label_field", &self.label_field),
            ("label_time_field", &self.label_time_field),
        ] {
            if value.is_empty() {
                return Err(format!(
                    "quality.{name} must name a JSON field, not be empty"
                ));
            }
        }
        if self.labels_topic.as_deref() == Some("") {
            return Err("quality.labels_topic must name a topic, not be empty".into());
        }
        Ok(())
    }

    /// The length of one slice, ms.
    pub fn slice_ms(&self) -> i64 {
        (self.window_secs as i64 * 1000 / self.slices.max(1) as i64).max(1)
    }

    /// The join window, ms.
    pub fn join_window_ms(&self) -> i64 {
        self.join_window_secs as i64 * 1000
    }

    /// The label fields.
    pub fn label_fields(&self) -> LabelFields {
        LabelFields {
            id: self.label_id_field.clone(),
            label: self.label_field.clone(),
            time: self.label_time_field.clone(),
        }
    }
}
