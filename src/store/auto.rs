//! Automatic canaries: the criteria stored with a canary (`keyscore canary --auto`), the
//! verdict that decides it, and the checks every backend runs before writing either.
//!
//! The criteria are only stored here; what weighs a canary's live quality against them lives
//! with the serving process. A verdict is written with [`super::ModelStore::decide_canary`]:
//! it applies only while its version is still the running canary, so two processes deciding
//! at once, or a retry, apply it once.

use serde::{Deserialize, Serialize};

use super::{plan_canary, plan_move, Canary, CanaryChange, ChangeAction, Error, MovePlan};
use super::{PointerMove, Rollout};

/// What decides a canary automatically (`keyscore canary --auto`). Stored as JSON; fields a
/// newer keyscore adds are ignored when read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoCriteria {
    /// Labelled canary predictions needed before a verdict.
    pub min_labelled: u64,
    /// The metric compared: "rmse", "mae", "log_loss", "brier" or "accuracy" (higher is better
    /// only for accuracy).
    pub metric: String,
    /// How much worse than the active version the canary may be and still be promoted, in the
    /// metric's units.
    pub margin: f64,
    /// Roll back when the canary's dead-letter rate exceeds this share of its records.
    pub max_dead_letter_rate: f64,
    /// Roll back when the canary's prediction PSI exceeds this.
    pub max_prediction_psi: f64,
}

impl AutoCriteria {
    /// The metrics a criterion may compare.
    pub const METRICS: [&'static str; 5] = ["rmse", "mae", "log_loss", "brier", "accuracy"];

    /// Whether a higher value of the metric is better (accuracy); lower is better for the
    /// others.
    pub fn higher_is_better(&self) -> bool {
        self.metric == "accuracy"
    }
}

/// Checks automatic canary criteria: a known metric, a finite margin and PSI limit of at least
/// 0, and a dead-letter rate from 0 to 1. The error names the field.
pub fn check_criteria(criteria: &AutoCriteria) -> Result<(), Error> {
    let refuse =
        |field: &'static str, problem: String| Err(Error::InvalidCriteria { field, problem });
    if !AutoCriteria::METRICS.contains(&criteria.metric.as_str()) {
        return refuse(
            "metric",
            format!(
                "is '{}'; use one of {}",
                criteria.metric.escape_debug(),
                AutoCriteria::METRICS.join(", ")
            ),
        );
    }
    for (field, value) in [
        ("margin", criteria.margin),
        ("max_prediction_psi", criteria.max_prediction_psi),
    ] {
        if !(value.is_finite() && value >= 0.0) {
            return refuse(
                field,
                format!("is {value}; use a finite number of at least 0"),
            );
        }
    }
    let rate = criteria.max_dead_letter_rate;
    if !(rate.is_finite() && (0.0..=1.0).contains(&rate)) {
        return refuse(
            "max_dead_letter_rate",
            format!("is {rate}; use a share from 0 to 1, e.g. 0.01 for 1% of records"),
        );
    }
    Ok(())
}

/// Checks a canary before it is stored: its share ([`super::check_share`]) and its criteria,
/// when it has some ([`check_criteria`]).
pub fn check_canary(canary: &Canary) -> Result<(), Error> {
    super::check_share(canary.share)?;
    canary.auto.as_ref().map_or(Ok(()), check_criteria)
}

/// Checks a verdict's evidence: the text of a JSON object.
pub fn check_evidence(evidence: &str) -> Result<(), Error> {
    match serde_json::from_str::<serde_json::Value>(evidence) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(other) => Err(Error::InvalidEvidence(format!(
            "it is a JSON {}, not an object",
            json_kind(&other)
        ))),
        Err(err) => Err(Error::InvalidEvidence(format!("it is not JSON ({err})"))),
    }
}

/// The name of a JSON value's kind, for messages.
fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// An automatic canary verdict (see [`super::ModelStore::decide_canary`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Make the canary's version the active version and end the canary, as `promote` does.
    Promote,
    /// End the canary (roll back to the active version, which stays).
    RollBack,
}

impl Verdict {
    /// The action the key's history records for the verdict: [`ChangeAction::Promote`] or
    /// [`ChangeAction::CanaryEnd`].
    pub fn action(self) -> ChangeAction {
        match self {
            Verdict::Promote => ChangeAction::Promote,
            Verdict::RollBack => ChangeAction::CanaryEnd,
        }
    }
}

/// What a backend writes for a verdict, decided by [`plan_verdict`]: the canary ends, and for
/// a promotion the active pointer moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VerdictPlan {
    /// The pointer to write, `(version, previous)`, when the verdict moves it (a promotion of
    /// a version that is not active already).
    pub(crate) pointer: Option<(i64, Option<i64>)>,
}

/// The pointer move a promotion of `version` makes against the active version `active`:
/// [`PointerMove::Promote`] from it, or, for a key never activated, an activation that expects
/// nothing. Recorded as a promotion either way.
pub(crate) fn promotion(version: i64, active: Option<i64>) -> PointerMove {
    match active {
        Some(from) => PointerMove::Promote { version, from },
        None => PointerMove::Activate {
            version,
            expect: None,
        },
    }
}

/// Decides a verdict on the canary of `version` of `key` against the canary that runs and the
/// active pointer `(version, previous)`: `None` when `version` is not the running canary (write
/// nothing), else what to write. Every backend that writes a verdict in one transaction calls
/// this between its reads and its writes; the rules are [`plan_canary`]'s (ending the canary of
/// `version`) and [`plan_move`]'s (a promotion).
pub(crate) fn plan_verdict(
    key: &str,
    running: Option<&Canary>,
    active: Option<(i64, Option<i64>)>,
    version: i64,
    verdict: Verdict,
) -> Result<Option<VerdictPlan>, Error> {
    if running.is_none_or(|c| c.version != version) {
        return Ok(None);
    }
    if plan_canary(key, running.cloned(), CanaryChange::End { version })? != Some(None) {
        return Ok(None);
    }
    let pointer = match verdict {
        Verdict::RollBack => None,
        Verdict::Promote => {
            match plan_move(key, active, promotion(version, active.map(|(v, _)| v)))? {
                MovePlan::Write {
                    version, previous, ..
                } => Some((version, previous)),
                MovePlan::Done(_) => None,
            }
        }
    };
    Ok(Some(VerdictPlan { pointer }))
}

/// How criteria are stored beside a rollout (SQLite `model_rollouts.canary_auto`, CQL
/// likewise): their JSON with the rollout revision they were written at. Criteria read at
/// another revision were left behind by a writer that does not know the column (an older
/// keyscore, the Python package, plain CQL) when it changed the rollout, and are void: a
/// canary is never decided by criteria given for another one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredCriteria {
    revision: i64,
    #[serde(flatten)]
    criteria: AutoCriteria,
}

/// The stored text of `criteria` written with the rollout revision `revision`.
pub(crate) fn criteria_text(criteria: &AutoCriteria, revision: i64) -> String {
    serde_json::to_string(&StoredCriteria {
        revision,
        criteria: criteria.clone(),
    })
    .expect("criteria serialize")
}

/// The criteria of `key`'s rollout row read at `revision`, from its stored text: `None` when
/// there is none or it was written at another revision. Text that is not criteria (written by
/// hand) is void too, with a warning: the canary still scores, decided by a person.
pub(crate) fn criteria_from_text(
    key: &str,
    text: Option<&str>,
    revision: Option<i64>,
) -> Option<AutoCriteria> {
    let text = text?;
    match serde_json::from_str::<StoredCriteria>(text) {
        Ok(stored) => (Some(stored.revision) == revision).then_some(stored.criteria),
        Err(err) => {
            tracing::warn!(
                key,
                error = %err,
                "The canary's stored criteria are not readable; it is not decided \
                 automatically. Start it again with `keyscore canary --replace`."
            );
            None
        }
    }
}

/// The rollout a backend read, with its canary's criteria attached from their stored text.
pub(crate) fn with_criteria(key: &str, mut rollout: Rollout, text: Option<&str>) -> Rollout {
    if let Some(canary) = rollout.canary.as_mut() {
        canary.auto = criteria_from_text(key, text, Some(rollout.revision));
    }
    rollout
}

#[cfg(test)]
mod tests {
    use super::*;

    fn criteria() -> AutoCriteria {
        AutoCriteria {
            min_labelled: 500,
            metric: "rmse".to_string(),
            margin: 0.05,
            max_dead_letter_rate: 0.01,
            max_prediction_psi: 0.2,
        }
    }

    #[test]
    fn criteria_checks_name_the_field() {
        check_criteria(&criteria()).unwrap();
        let bad = |edit: fn(&mut AutoCriteria), field: &str| {
            let mut c = criteria();
            edit(&mut c);
            let err = check_criteria(&c).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidCriteria { field: f, .. } if *f == field),
                "{err:?}"
            );
            assert!(err.to_string().contains(field), "{err}");
        };
        bad(|c| c.metric = "f1".into(), "metric");
        bad(|c| c.margin = -0.1, "margin");
        bad(|c| c.margin = f64::NAN, "margin");
        bad(
            |c| c.max_prediction_psi = f64::INFINITY,
            "max_prediction_psi",
        );
        bad(|c| c.max_dead_letter_rate = 1.5, "max_dead_letter_rate");
        bad(|c| c.max_dead_letter_rate = -0.0001, "max_dead_letter_rate");
        let mut accuracy = criteria();
        accuracy.metric = "accuracy".into();
        assert!(accuracy.higher_is_better() && !criteria().higher_is_better());
    }

    #[test]
    fn evidence_is_a_json_object() {
        check_evidence(r#"{"labelled": 1200, "rmse": {"canary": 0.4}}"#).unwrap();
        for bad in ["[1, 2]", "\"text\"", "{not json", ""] {
            let err = check_evidence(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidEvidence(_)), "{bad}: {err:?}");
        }
    }

    #[test]
    fn stored_criteria_hold_only_at_their_revision() {
        let text = criteria_text(&criteria(), 7);
        assert_eq!(
            criteria_from_text("k", Some(&text), Some(7)),
            Some(criteria())
        );
        assert_eq!(criteria_from_text("k", Some(&text), Some(8)), None);
        assert_eq!(criteria_from_text("k", None, Some(7)), None);
        assert_eq!(criteria_from_text("k", Some("{"), Some(7)), None);
        let newer = text.replacen('{', r#"{"min_windows":3,"#, 1);
        assert_eq!(
            criteria_from_text("k", Some(&newer), Some(7)),
            Some(criteria()),
            "a field a newer keyscore adds is ignored"
        );
    }

    #[test]
    fn a_verdict_plans_only_for_the_running_canary() {
        let canary = Canary {
            version: 3,
            share: 0.1,
            auto: None,
        };
        let active = Some((2, Some(1)));
        assert_eq!(
            plan_verdict("k", None, active, 3, Verdict::Promote).unwrap(),
            None
        );
        assert_eq!(
            plan_verdict("k", Some(&canary), active, 4, Verdict::RollBack).unwrap(),
            None
        );
        assert_eq!(
            plan_verdict("k", Some(&canary), active, 3, Verdict::RollBack).unwrap(),
            Some(VerdictPlan { pointer: None })
        );
        assert_eq!(
            plan_verdict("k", Some(&canary), active, 3, Verdict::Promote).unwrap(),
            Some(VerdictPlan {
                pointer: Some((3, Some(2)))
            })
        );
        assert_eq!(
            plan_verdict("k", Some(&canary), None, 3, Verdict::Promote).unwrap(),
            Some(VerdictPlan {
                pointer: Some((3, None))
            })
        );
        assert_eq!(
            plan_verdict("k", Some(&canary), Some((3, Some(2))), 3, Verdict::Promote).unwrap(),
            Some(VerdictPlan { pointer: None }),
            "a canary of the active version only ends"
        );
    }
}
