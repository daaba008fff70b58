//! Conformance checks of automatic canaries: the criteria stored with a canary, and
//! [`ModelStore::decide_canary`].

use keyscore::store::{
    AutoCriteria, Canary, CanaryChange, ChangeAction, Error, HistoryEntry, ModelStore, Verdict,
};

use super::{active_version, put};
use crate::specs::{VALID_SPEC, VALID_SPEC_2};
use crate::unique_key;

fn criteria() -> AutoCriteria {
    AutoCriteria {
        min_labelled: 500,
        metric: "rmse".to_string(),
        margin: 0.05,
        max_dead_letter_rate: 0.01,
        max_prediction_psi: 0.2,
    }
}

fn auto_canary(version: i64) -> Canary {
    Canary {
        version,
        share: 0.2,
        auto: Some(criteria()),
    }
}

/// A key with versions 1 (active) and 2 and 3, and an automatic canary of 2.
async fn key_with_canary(store: &dyn ModelStore, prefix: &str) -> String {
    let key = unique_key(prefix);
    put(store, &key, Some(1), VALID_SPEC).await;
    put(store, &key, Some(2), VALID_SPEC_2).await;
    put(store, &key, Some(3), VALID_SPEC).await;
    store.activate(&key, 1).await.unwrap();
    let started = store
        .change_canary(
            &key,
            CanaryChange::Start {
                canary: auto_canary(2),
                replace: false,
            },
        )
        .await
        .unwrap();
    assert!(started.changed, "{started:?}");
    key
}

/// What a verdict may change: the active pointer's revision and version, the rollout's
/// revision, and the history's length.
async fn footprint(store: &dyn ModelStore, key: &str) -> (Option<(i64, i64)>, i64, usize) {
    let active = store
        .active(key)
        .await
        .unwrap()
        .map(|a| (a.model.version, a.revision));
    let rollout = store.rollout(key).await.unwrap().map_or(0, |r| r.revision);
    (
        active,
        rollout,
        store.history(key, 1000).await.unwrap().len(),
    )
}

const EVIDENCE: &str = r#"{"labelled":1200,"metric":"rmse","canary":0.41,"active":0.44}"#;

/// A canary's automatic criteria are stored with it and read back with the rollout; a shadow
/// change keeps them; a canary without criteria has none; unusable criteria are refused,
/// naming the field, and write nothing.
pub async fn auto_criteria_are_stored_with_the_canary(store: &dyn ModelStore) {
    let key = key_with_canary(store, "auto-criteria").await;
    let canary = store.rollout(&key).await.unwrap().and_then(|r| r.canary);
    assert_eq!(canary, Some(auto_canary(2)), "criteria read back");
    let again = store
        .change_canary(
            &key,
            CanaryChange::Start {
                canary: auto_canary(2),
                replace: false,
            },
        )
        .await
        .unwrap();
    assert!(
        !again.changed,
        "the same automatic canary again wrote: {again:?}"
    );
    store.set_shadow(&key, Some(3)).await.unwrap();
    let rollout = store.rollout(&key).await.unwrap().unwrap();
    assert_eq!(
        rollout.canary,
        Some(auto_canary(2)),
        "a shadow change dropped the criteria"
    );

    let before = footprint(store, &key).await;
    type Edit = fn(&mut AutoCriteria);
    let bad: [(Edit, &str); 4] = [
        (|c| c.metric = "f1".into(), "metric"),
        (|c| c.margin = -1.0, "margin"),
        (|c| c.max_dead_letter_rate = 2.0, "max_dead_letter_rate"),
        (|c| c.max_prediction_psi = f64::NAN, "max_prediction_psi"),
    ];
    for (edit, field) in bad {
        let mut canary = auto_canary(3);
        edit(canary.auto.as_mut().unwrap());
        let err = store
            .change_canary(
                &key,
                CanaryChange::Start {
                    canary: canary.clone(),
                    replace: true,
                },
            )
            .await
            .expect_err("unusable criteria were stored");
        assert!(
            matches!(&err, Error::InvalidCriteria { field: f, .. } if *f == field),
            "{field}: {err:?}"
        );
        assert!(err.to_string().contains(field), "{err}");
        let err = store.set_canary(&key, Some(canary)).await.unwrap_err();
        assert!(matches!(err, Error::InvalidCriteria { .. }), "{err:?}");
    }
    assert_eq!(
        footprint(store, &key).await,
        before,
        "a refused canary wrote"
    );

    let manual = Canary {
        version: 3,
        share: 0.5,
        auto: None,
    };
    store
        .change_canary(
            &key,
            CanaryChange::Start {
                canary: manual.clone(),
                replace: true,
            },
        )
        .await
        .unwrap();
    let canary = store.rollout(&key).await.unwrap().and_then(|r| r.canary);
    assert_eq!(canary, Some(manual), "a canary without criteria has none");
}

/// A promotion verdict makes the canary's version active and ends the canary (rollback then
/// returns to the version before); the same call again writes nothing. A rollback verdict ends
/// the canary and leaves the active version.
pub async fn a_verdict_applies_once(store: &dyn ModelStore) {
    let key = key_with_canary(store, "verdict-promote").await;
    let decided = store
        .decide_canary(&key, 2, Verdict::Promote, EVIDENCE)
        .await
        .expect("decide_canary");
    assert!(decided.changed, "{decided:?}");
    assert_eq!(decided.before, Some(auto_canary(2)));
    assert_eq!(decided.after, None);
    assert_eq!(active_version(store, &key).await, Some(2));
    let rollout = store.rollout(&key).await.unwrap().unwrap();
    assert_eq!(rollout.canary, None, "the promoted canary still runs");
    let after = footprint(store, &key).await;
    let retry = store
        .decide_canary(&key, 2, Verdict::Promote, EVIDENCE)
        .await
        .unwrap();
    assert!(!retry.changed && retry.after.is_none(), "{retry:?}");
    assert_eq!(
        footprint(store, &key).await,
        after,
        "a retried verdict wrote"
    );
    assert_eq!(store.rollback(&key).await.unwrap(), 1);

    let key = key_with_canary(store, "verdict-rollback").await;
    let decided = store
        .decide_canary(&key, 2, Verdict::RollBack, EVIDENCE)
        .await
        .unwrap();
    assert!(decided.changed && decided.after.is_none(), "{decided:?}");
    assert_eq!(active_version(store, &key).await, Some(1));
    assert_eq!(store.rollout(&key).await.unwrap().unwrap().canary, None);
    let after = footprint(store, &key).await;
    for verdict in [Verdict::RollBack, Verdict::Promote] {
        let retry = store
            .decide_canary(&key, 2, verdict, EVIDENCE)
            .await
            .unwrap();
        assert!(!retry.changed, "{verdict:?} after a rollback: {retry:?}");
    }
    assert_eq!(
        footprint(store, &key).await,
        after,
        "a verdict after the end wrote"
    );
    assert_eq!(active_version(store, &key).await, Some(1));
}

/// A verdict on a version that is not (or no longer) the running canary writes nothing and
/// says which canary runs.
pub async fn a_verdict_on_a_version_no_longer_the_canary_writes_nothing(store: &dyn ModelStore) {
    let key = key_with_canary(store, "verdict-stale").await;
    let replacement = Canary {
        version: 3,
        share: 0.1,
        auto: None,
    };
    store
        .change_canary(
            &key,
            CanaryChange::Start {
                canary: replacement.clone(),
                replace: true,
            },
        )
        .await
        .unwrap();
    let before = footprint(store, &key).await;
    for verdict in [Verdict::Promote, Verdict::RollBack] {
        let stale = store
            .decide_canary(&key, 2, verdict, EVIDENCE)
            .await
            .unwrap();
        assert!(!stale.changed, "{verdict:?}: {stale:?}");
        assert_eq!(stale.before, Some(replacement.clone()));
        assert_eq!(stale.after, Some(replacement.clone()));
    }
    assert_eq!(
        footprint(store, &key).await,
        before,
        "a stale verdict wrote"
    );
    store
        .change_canary(&key, CanaryChange::End { version: 3 })
        .await
        .unwrap();
    let before = footprint(store, &key).await;
    let ended = store
        .decide_canary(&key, 3, Verdict::Promote, EVIDENCE)
        .await
        .unwrap();
    assert!(!ended.changed && ended.before.is_none(), "{ended:?}");
    assert_eq!(
        footprint(store, &key).await,
        before,
        "a verdict on an ended canary wrote"
    );
    assert_eq!(active_version(store, &key).await, Some(1));
}

/// The evidence of a verdict comes back from `history` on the rows the verdict wrote (the
/// promotion and the canary's end), with this process as who; other rows have none. Evidence
/// that is not a JSON object is refused and nothing is written.
pub async fn a_verdict_records_its_evidence_in_the_history(store: &dyn ModelStore) {
    let key = key_with_canary(store, "verdict-evidence").await;
    let before = footprint(store, &key).await;
    for bad in ["[1]", "not json", "\"text\""] {
        let err = store
            .decide_canary(&key, 2, Verdict::Promote, bad)
            .await
            .expect_err("evidence that is not an object was accepted");
        assert!(matches!(err, Error::InvalidEvidence(_)), "{bad}: {err:?}");
    }
    assert_eq!(
        footprint(store, &key).await,
        before,
        "refused evidence wrote"
    );
    store
        .decide_canary(&key, 2, Verdict::Promote, EVIDENCE)
        .await
        .unwrap();
    let history = store.history(&key, 100).await.unwrap();
    let verdict_rows: Vec<&HistoryEntry> =
        history.iter().filter(|e| e.evidence.is_some()).collect();
    let actions: Vec<(&str, Option<i64>)> = verdict_rows
        .iter()
        .map(|e| (e.action.as_str(), e.version))
        .collect();
    let promote = ChangeAction::Promote.as_str();
    let end = ChangeAction::CanaryEnd.as_str();
    assert!(
        actions.contains(&(promote, Some(2))) && actions.contains(&(end, Some(2))),
        "the verdict's rows carry the evidence: {history:#?}"
    );
    assert_eq!(actions.len(), 2, "{history:#?}");
    for e in verdict_rows {
        let stored: serde_json::Value =
            serde_json::from_str(e.evidence.as_deref().unwrap()).unwrap();
        let sent: serde_json::Value = serde_json::from_str(EVIDENCE).unwrap();
        assert_eq!(stored, sent);
        assert!(
            e.by.as_deref().is_some_and(|by| by.starts_with("keyscore")),
            "who: {e:?}"
        );
        assert!(e.at_ms.is_some());
    }
    let promoted = history.iter().find(|e| e.action == promote).unwrap();
    assert_eq!(promoted.previous, Some(1));

    let key = key_with_canary(store, "verdict-evidence-rollback").await;
    store
        .decide_canary(&key, 2, Verdict::RollBack, r#"{"dead_letter_rate":0.2}"#)
        .await
        .unwrap();
    let history = store.history(&key, 100).await.unwrap();
    let with: Vec<(&str, &str)> = history
        .iter()
        .filter_map(|e| Some((e.action.as_str(), e.evidence.as_deref()?)))
        .collect();
    assert_eq!(with.len(), 1, "{history:#?}");
    assert_eq!(with[0].0, end);
    let stored: serde_json::Value = serde_json::from_str(with[0].1).unwrap();
    assert_eq!(stored, serde_json::json!({"dead_letter_rate": 0.2}));
}

/// Two processes deciding the same canary at once, with the same or opposite verdicts:
/// exactly one call writes, and the store shows that one verdict.
pub async fn concurrent_verdicts_apply_exactly_once(store: &dyn ModelStore) {
    for (first, second) in [
        (Verdict::Promote, Verdict::Promote),
        (Verdict::Promote, Verdict::RollBack),
        (Verdict::RollBack, Verdict::RollBack),
    ] {
        let key = key_with_canary(store, "verdict-race").await;
        let (a, b) = tokio::join!(
            store.decide_canary(&key, 2, first, r#"{"by":"a"}"#),
            store.decide_canary(&key, 2, second, r#"{"by":"b"}"#),
        );
        let (a, b) = (a.expect("first decide"), b.expect("second decide"));
        assert!(
            a.changed != b.changed,
            "{first:?} and {second:?}: exactly one writes, got {a:?} and {b:?}"
        );
        let winner = if a.changed { first } else { second };
        let expected_active = match winner {
            Verdict::Promote => 2,
            Verdict::RollBack => 1,
        };
        assert_eq!(
            active_version(store, &key).await,
            Some(expected_active),
            "{winner:?} won"
        );
        assert_eq!(store.rollout(&key).await.unwrap().unwrap().canary, None);
        let history = store.history(&key, 100).await.unwrap();
        let ends = history
            .iter()
            .filter(|e| e.kind() == Some(ChangeAction::CanaryEnd))
            .count();
        let promotions = history
            .iter()
            .filter(|e| e.kind() == Some(ChangeAction::Promote))
            .count();
        assert_eq!(ends, 1, "one canary end: {history:#?}");
        assert_eq!(
            promotions,
            usize::from(winner == Verdict::Promote),
            "{history:#?}"
        );
    }
}
