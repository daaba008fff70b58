//! Automatic canary verdicts: from a canary's and its active version's figures over the same
//! window, and the criteria stored with the canary, decide to wait, promote or roll back.
//!
//! The rules, in order: roll back a canary whose dead-letter rate over at least `min_labelled`
//! of its records exceeds `max_dead_letter_rate`, or whose prediction PSI over at least
//! `min_labelled` predictions exceeds `max_prediction_psi`; wait until both the canary and the
//! active version have `min_labelled` labelled predictions; then promote when the canary's
//! metric is no worse than the active version's by more than `margin` (in the metric's units;
//! lower is better but for `accuracy`), else roll back.

use serde_json::json;

use super::window::Figures;
use crate::store::AutoCriteria;

/// What to do with a canary.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Not enough evidence yet; why.
    Wait(String),
    /// Make the canary the active version.
    Promote(Evidence),
    /// End the canary; the active version stays.
    RollBack(Evidence),
}

/// Why a verdict was reached: a one-line reason and the numbers, as a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// One line, for logs and `keyscore history`.
    pub reason: String,
    /// Counts, metrics and thresholds.
    pub json: serde_json::Value,
}

/// Whether lower values of `metric` are better.
pub fn lower_is_better(metric: &str) -> bool {
    metric != "accuracy"
}

/// Decides the canary `canary_version` from its figures and the active version's.
pub fn decide(
    criteria: &AutoCriteria,
    canary_version: i64,
    canary: &Figures,
    active_version: i64,
    active: &Figures,
    window_ms: i64,
) -> Decision {
    let c = &canary.sums;
    let records = c.predictions + c.dead_letters;
    let evidence = |reason: String| Evidence {
        json: json!({
            "reason": reason,
            "metric": criteria.metric,
            "window_ms": window_ms,
            "criteria": criteria,
            "canary": arm_json(canary_version, canary, &criteria.metric),
            "active": arm_json(active_version, active, &criteria.metric),
        }),
        reason,
    };
    if records >= criteria.min_labelled && records > 0 {
        let rate = c.dead_letters as f64 / records as f64;
        if rate > criteria.max_dead_letter_rate {
            return Decision::RollBack(evidence(format!(
                "canary v{canary_version} dead-lettered {:.1}% of {records} records, over the \
                 limit of {:.1}%",
                rate * 100.0,
                criteria.max_dead_letter_rate * 100.0
            )));
        }
    }
    if c.predictions >= criteria.min_labelled {
        if let Some(psi) = canary.prediction_psi {
            if psi > criteria.max_prediction_psi {
                return Decision::RollBack(evidence(format!(
                    "canary v{canary_version}'s prediction PSI is {psi:.3}, over the limit of {}",
                    criteria.max_prediction_psi
                )));
            }
        }
    }
    let a = &active.sums;
    if c.labelled < criteria.min_labelled || a.labelled < criteria.min_labelled {
        return Decision::Wait(format!(
            "{} of {} labelled canary predictions, {} of the active version's",
            c.labelled, criteria.min_labelled, a.labelled
        ));
    }
    let metric = criteria.metric.as_str();
    let (Some(mc), Some(ma)) = (canary.metric(metric), active.metric(metric)) else {
        return Decision::Wait(format!(
            "no {metric} for this model's output (a regressor has mae and rmse; a \
             classifier accuracy, log_loss and brier)"
        ));
    };
    let worse_by = if lower_is_better(metric) {
        mc - ma
    } else {
        ma - mc
    };
    if worse_by <= criteria.margin {
        Decision::Promote(evidence(format!(
            "canary v{canary_version} {metric} {mc:.4} vs active v{active_version} {ma:.4} over \
             {} and {} labelled predictions: within the margin of {}",
            c.labelled, a.labelled, criteria.margin
        )))
    } else {
        Decision::RollBack(evidence(format!(
            "canary v{canary_version} {metric} {mc:.4} vs active v{active_version} {ma:.4} over \
             {} and {} labelled predictions: worse by {worse_by:.4}, over the margin of {}",
            c.labelled, a.labelled, criteria.margin
        )))
    }
}

/// The evidence for rolling back canary `version`, which this process refused because it does
/// not build (`why`).
pub fn refused(criteria: &AutoCriteria, version: i64, why: &str) -> Evidence {
    let reason = format!("canary v{version} does not build, so no process scores it: {why}");
    Evidence {
        json: json!({
            "reason": reason,
            "build_failure": why,
            "metric": criteria.metric,
            "criteria": criteria,
            "canary": {"version": version},
        }),
        reason,
    }
}

fn arm_json(version: i64, f: &Figures, metric: &str) -> serde_json::Value {
    json!({
        "version": version,
        "predictions": f.sums.predictions,
        "labelled": f.sums.labelled,
        "dead_letters": f.sums.dead_letters,
        metric: f.metric(metric),
        "prediction_psi": f.prediction_psi,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::window::Sums;

    fn criteria() -> AutoCriteria {
        AutoCriteria {
            min_labelled: 100,
            metric: "rmse".into(),
            margin: 0.05,
            max_dead_letter_rate: 0.02,
            max_prediction_psi: 0.25,
        }
    }

    fn figures(predictions: u64, labelled: u64, dead: u64, rmse: f64) -> Figures {
        Figures {
            sums: Sums {
                predictions,
                labelled,
                dead_letters: dead,
                ..Sums::default()
            },
            rmse: Some(rmse),
            prediction_psi: Some(0.01),
            ..Figures::default()
        }
    }

    #[test]
    fn waits_for_enough_labels_on_both_sides() {
        let d = decide(
            &criteria(),
            2,
            &figures(99, 99, 0, 1.0),
            1,
            &figures(900, 900, 0, 2.0),
            1,
        );
        assert!(
            matches!(d, Decision::Wait(ref why) if why.contains("99 of 100")),
            "{d:?}"
        );
    }

    #[test]
    fn promotes_a_better_or_equal_canary_and_rolls_back_a_worse_one() {
        let active = figures(900, 900, 0, 2.0);
        match decide(&criteria(), 2, &figures(100, 100, 0, 2.04), 1, &active, 1) {
            Decision::Promote(e) => {
                assert_eq!(e.json["canary"]["rmse"], 2.04);
                assert_eq!(e.json["active"]["labelled"], 900);
                assert_eq!(e.json["criteria"]["margin"], 0.05);
            }
            other => panic!("{other:?}"),
        }
        let d = decide(&criteria(), 2, &figures(100, 100, 0, 2.2), 1, &active, 1);
        assert!(
            matches!(d, Decision::RollBack(ref e) if e.reason.contains("worse by")),
            "{d:?}"
        );
    }

    #[test]
    fn accuracy_is_higher_is_better() {
        let mut c = criteria();
        c.metric = "accuracy".into();
        c.margin = 0.0;
        let with = |acc: f64| Figures {
            accuracy: Some(acc),
            ..figures(100, 100, 0, 0.0)
        };
        assert!(matches!(
            decide(&c, 2, &with(0.9), 1, &with(0.8), 1),
            Decision::Promote(_)
        ));
        assert!(matches!(
            decide(&c, 2, &with(0.7), 1, &with(0.8), 1),
            Decision::RollBack(_)
        ));
    }

    #[test]
    fn dead_letters_and_drift_roll_back_before_labels_arrive() {
        let active = figures(900, 0, 0, 2.0);
        let d = decide(&criteria(), 2, &figures(95, 0, 5, 0.0), 1, &active, 1);
        assert!(matches!(d, Decision::RollBack(ref e) if e.reason.contains("dead-lettered 5.0%")));
        let mut drifted = figures(100, 0, 0, 0.0);
        drifted.prediction_psi = Some(0.4);
        let d = decide(&criteria(), 2, &drifted, 1, &active, 1);
        assert!(matches!(d, Decision::RollBack(ref e) if e.reason.contains("PSI is 0.400")));
    }
}
