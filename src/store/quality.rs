//! Live model quality as stored: one [`QualityRow`] per window of a (key, version, arm), written
//! by serving processes with [`super::ModelStore::record_quality`] and read newest first with
//! [`super::ModelStore::quality`]. The check every backend runs before writing is here; what
//! computes the rows lives with the serving process.

use std::cmp::Ordering;

use super::{check_key, Error};

/// One window of a model version's live quality, as written by a serving process.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QualityRow {
    /// The model key.
    pub key: String,
    /// The model version.
    pub version: i64,
    /// "active", "canary" or "shadow": which arm scored the predictions.
    pub arm: String,
    /// End of the window, ms since the Unix epoch.
    pub window_end_ms: i64,
    /// The window's length in ms.
    pub window_ms: i64,
    /// Predictions made in the window.
    pub predictions: i64,
    /// Of the window's predictions, those with a label.
    pub labelled: i64,
    /// Regression: mean absolute error (None without labels / for classifiers).
    pub mae: Option<f64>,
    /// Regression: root mean squared error (None without labels / for classifiers).
    pub rmse: Option<f64>,
    /// Classification: accuracy (None without labels / for regressors).
    pub accuracy: Option<f64>,
    /// Classification: mean log loss.
    pub log_loss: Option<f64>,
    /// Classification: mean Brier score.
    pub brier: Option<f64>,
    /// Mean label lag (label timestamp − prediction time), ms.
    pub label_lag_ms: Option<f64>,
    /// Dead letters of this version in the window.
    pub dead_letters: i64,
    /// Population stability index of the predictions.
    pub prediction_psi: Option<f64>,
    /// The largest PSI over features.
    pub max_feature_psi: Option<f64>,
    /// PSI per feature, a JSON object `{"feature": psi}` as text.
    pub feature_psi: Option<String>,
    /// Share of feature values missing, over all features read.
    pub missing_share: Option<f64>,
    /// Share of feature values outside the training range, over all features read.
    pub out_of_range_share: Option<f64>,
    /// Who wrote it (the serving member, e.g. keyscore:serve@host).
    pub by: Option<String>,
}

/// The arms a quality row may name.
pub const QUALITY_ARMS: [&str; 3] = ["active", "canary", "shadow"];

/// The order [`super::ModelStore::quality`] answers in: newest window first, then version
/// descending, then arm ascending (`active`, `canary`, `shadow`).
pub fn newest_first(a: &QualityRow, b: &QualityRow) -> Ordering {
    b.window_end_ms
        .cmp(&a.window_end_ms)
        .then(b.version.cmp(&a.version))
        .then_with(|| a.arm.cmp(&b.arm))
}

/// Checks a quality row before it is stored: a usable key, a version from 1, a known arm, a
/// window of positive length, counts of at least 0 with no more labelled predictions than
/// predictions, finite metrics (errors, losses and PSIs of at least 0, accuracy and shares from
/// 0 to 1), and per-feature PSIs as a JSON object of numbers. The error names the field.
pub fn check_quality_row(row: &QualityRow) -> Result<(), Error> {
    check_key(&row.key)?;
    let refuse = |field: &'static str, problem: String| {
        Err(Error::InvalidQuality {
            row: format!(
                "{} v{} {} window ending {}",
                row.key.escape_debug(),
                row.version,
                row.arm.escape_debug(),
                row.window_end_ms
            ),
            field,
            problem,
        })
    };
    if row.version < 1 {
        return refuse(
            "version",
            format!("is {}; versions start at 1", row.version),
        );
    }
    if !QUALITY_ARMS.contains(&row.arm.as_str()) {
        return refuse(
            "arm",
            format!(
                "is '{}'; use one of {}",
                row.arm.escape_debug(),
                QUALITY_ARMS.join(", ")
            ),
        );
    }
    if row.window_ms <= 0 {
        return refuse(
            "window_ms",
            format!("is {}; a window lasts at least 1 ms", row.window_ms),
        );
    }
    for (field, count) in [
        ("predictions", row.predictions),
        ("labelled", row.labelled),
        ("dead_letters", row.dead_letters),
    ] {
        if count < 0 {
            return refuse(field, format!("is {count}; counts are at least 0"));
        }
    }
    if row.labelled > row.predictions {
        return refuse(
            "labelled",
            format!(
                "is {}, more than the window's {} predictions",
                row.labelled, row.predictions
            ),
        );
    }
    let at_least_zero = [
        ("mae", row.mae),
        ("rmse", row.rmse),
        ("log_loss", row.log_loss),
        ("brier", row.brier),
        ("prediction_psi", row.prediction_psi),
        ("max_feature_psi", row.max_feature_psi),
    ];
    for (field, value) in at_least_zero {
        if let Some(v) = value.filter(|v| !(v.is_finite() && *v >= 0.0)) {
            return refuse(field, format!("is {v}; use a finite number of at least 0"));
        }
    }
    let shares = [
        ("accuracy", row.accuracy),
        ("missing_share", row.missing_share),
        ("out_of_range_share", row.out_of_range_share),
    ];
    for (field, value) in shares {
        if let Some(v) = value.filter(|v| !(v.is_finite() && (0.0..=1.0).contains(v))) {
            return refuse(field, format!("is {v}; use a share from 0 to 1"));
        }
    }
    if let Some(v) = row.label_lag_ms.filter(|v| !v.is_finite()) {
        return refuse("label_lag_ms", format!("is {v}; use a finite number"));
    }
    if let Some(text) = &row.feature_psi {
        let numbers = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
            .is_ok_and(|map| map.values().all(serde_json::Value::is_number));
        if !numbers {
            return refuse(
                "feature_psi",
                "is not a JSON object of numbers; write {\"feature\": psi, ...}".to_string(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> QualityRow {
        QualityRow {
            key: "paris".into(),
            version: 2,
            arm: "canary".into(),
            window_end_ms: 1_700_000_060_000,
            window_ms: 60_000,
            predictions: 100,
            labelled: 40,
            mae: Some(0.5),
            rmse: Some(0.7),
            accuracy: None,
            log_loss: None,
            brier: None,
            label_lag_ms: Some(-3.0),
            dead_letters: 1,
            prediction_psi: Some(0.01),
            max_feature_psi: Some(0.2),
            feature_psi: Some(r#"{"temp": 0.2, "hour": 0.0}"#.into()),
            missing_share: Some(0.0),
            out_of_range_share: Some(0.05),
            by: Some("keyscore:serve@host".into()),
        }
    }

    #[test]
    fn a_row_is_checked_field_by_field() {
        check_quality_row(&row()).unwrap();
        let bad = |edit: fn(&mut QualityRow), field: &str| {
            let mut r = row();
            edit(&mut r);
            let err = check_quality_row(&r).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidQuality { field: f, .. } if *f == field),
                "{field}: {err:?}"
            );
            assert!(err.to_string().contains(field), "{err}");
        };
        bad(|r| r.version = 0, "version");
        bad(|r| r.arm = "blue".into(), "arm");
        bad(|r| r.window_ms = 0, "window_ms");
        bad(|r| r.predictions = -1, "predictions");
        bad(|r| r.labelled = 101, "labelled");
        bad(|r| r.dead_letters = -2, "dead_letters");
        bad(|r| r.rmse = Some(f64::NAN), "rmse");
        bad(|r| r.log_loss = Some(-0.1), "log_loss");
        bad(|r| r.accuracy = Some(1.2), "accuracy");
        bad(
            |r| r.out_of_range_share = Some(f64::INFINITY),
            "out_of_range_share",
        );
        bad(|r| r.label_lag_ms = Some(f64::NAN), "label_lag_ms");
        bad(|r| r.feature_psi = Some("[0.1]".into()), "feature_psi");
        bad(
            |r| r.feature_psi = Some(r#"{"a": "x"}"#.into()),
            "feature_psi",
        );
        let mut r = row();
        r.key = String::new();
        assert!(matches!(check_quality_row(&r), Err(Error::InvalidKey(_))));
    }

    #[test]
    fn rows_sort_newest_window_then_version_then_arm() {
        let at = |window_end_ms: i64, version: i64, arm: &str| QualityRow {
            window_end_ms,
            version,
            arm: arm.into(),
            ..row()
        };
        let mut rows = [
            at(1, 2, "active"),
            at(2, 1, "shadow"),
            at(2, 1, "active"),
            at(2, 3, "canary"),
        ];
        rows.sort_by(newest_first);
        let order: Vec<(i64, i64, &str)> = rows
            .iter()
            .map(|r| (r.window_end_ms, r.version, r.arm.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                (2, 3, "canary"),
                (2, 1, "active"),
                (2, 1, "shadow"),
                (1, 2, "active")
            ]
        );
    }
}
