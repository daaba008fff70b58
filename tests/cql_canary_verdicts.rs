//! What the CQL store does for automatic canaries beyond the conformance suite, on the project's
//! CQL test node: a promotion whose writer stopped between its two compare-and-sets is finished
//! by a retry and never lands over a pointer moved since; criteria left behind by a writer that
//! does not know them are void; a keyspace made before the new columns keeps serving and `init`
//! adds them.

use keyscore::store::{
    AutoCriteria, Canary, CanaryChange, ChangeAction, CqlModelStore, Error, ModelStore, Verdict,
};
use keyscore_testkit::cqlnode::{self, CqlTestNode};
use keyscore_testkit::specs::{VALID_SPEC, VALID_SPEC_2};
use scylla::client::session::Session;

async fn store(node: &CqlTestNode, keyspace: &str) -> CqlModelStore {
    CqlModelStore::connect(&format!("{}/{keyspace}", node.addr()))
        .await
        .expect("connects")
}

fn criteria() -> AutoCriteria {
    AutoCriteria {
        min_labelled: 100,
        metric: "log_loss".to_string(),
        margin: 0.01,
        max_dead_letter_rate: 0.05,
        max_prediction_psi: 0.25,
    }
}

fn auto_canary(version: i64) -> Canary {
    Canary {
        version,
        share: 0.1,
        auto: Some(criteria()),
    }
}

/// A fresh node with keyspace `ks` initialised, a raw session, and key `paris` with versions 1
/// (active) and 2 (an automatic canary).
async fn setup() -> (CqlTestNode, CqlModelStore, Session) {
    let node = CqlTestNode::start().await;
    let ks = store(&node, "ks").await;
    ks.init().await.expect("init");
    ks.put_version("paris", Some(1), VALID_SPEC).await.unwrap();
    ks.put_version("paris", Some(2), VALID_SPEC_2)
        .await
        .unwrap();
    ks.activate("paris", 1).await.unwrap();
    ks.change_canary(
        "paris",
        CanaryChange::Start {
            canary: auto_canary(2),
            replace: false,
        },
    )
    .await
    .unwrap();
    let raw = node.session().await;
    (node, ks, raw)
}

/// Writes what the verdict's first compare-and-set writes for a promotion of `version` (the
/// canary ended, the promotion recorded against the pointer's revision now), as a writer that
/// stopped right after it left the row.
async fn decided_but_not_landed(ks: &CqlModelStore, raw: &Session, version: i64) {
    let pointer_revision = ks.active("paris").await.unwrap().unwrap().revision;
    let rollout_revision = ks.rollout("paris").await.unwrap().unwrap().revision;
    raw.query_unpaged(
        "UPDATE ks.model_rollouts SET canary_version = null, canary_share = null, \
         canary_auto = null, promote_version = ?, promote_from_revision = ?, revision = ? \
         WHERE key = 'paris' IF revision = ?",
        (
            version,
            pointer_revision,
            rollout_revision + 1,
            rollout_revision,
        ),
    )
    .await
    .unwrap();
}

/// A promotion decided by a writer that stopped before moving the pointer is finished by the
/// next promotion verdict for that version, which says it did not decide; a retry after that
/// writes nothing.
#[tokio::test]
async fn a_promotion_left_half_way_is_finished_by_a_retry() {
    let (_node, ks, raw) = setup().await;
    decided_but_not_landed(&ks, &raw, 2).await;
    assert_eq!(ks.active("paris").await.unwrap().unwrap().model.version, 1);

    let retry = ks
        .decide_canary("paris", 2, Verdict::Promote, r#"{"retry":1}"#)
        .await
        .unwrap();
    assert!(!retry.changed && retry.before.is_none(), "{retry:?}");
    let active = ks.active("paris").await.unwrap().unwrap();
    assert_eq!(active.model.version, 2, "the retry landed the promotion");
    let history = ks.history("paris", 10).await.unwrap();
    let promoted = history
        .iter()
        .find(|e| e.kind() == Some(ChangeAction::Promote))
        .expect("a promote row");
    assert_eq!(promoted.evidence.as_deref(), Some(r#"{"retry":1}"#));
    assert_eq!(promoted.previous, Some(1));

    let again = ks
        .decide_canary("paris", 2, Verdict::Promote, r#"{"retry":2}"#)
        .await
        .unwrap();
    assert!(!again.changed, "{again:?}");
    assert_eq!(
        ks.active("paris").await.unwrap().unwrap().revision,
        active.revision,
        "a second retry moved the pointer"
    );
    // A rollback verdict never lands a recorded promotion.
    let (_node, ks, raw) = setup().await;
    decided_but_not_landed(&ks, &raw, 2).await;
    let other = ks
        .decide_canary("paris", 2, Verdict::RollBack, "{}")
        .await
        .unwrap();
    assert!(!other.changed, "{other:?}");
    assert_eq!(ks.active("paris").await.unwrap().unwrap().model.version, 1);
}

/// A recorded promotion never lands over a pointer moved since it was decided, nor after a
/// later change of the rollout.
#[tokio::test]
async fn a_recorded_promotion_never_lands_over_a_later_change() {
    let (_node, ks, raw) = setup().await;
    decided_but_not_landed(&ks, &raw, 2).await;
    // Someone activates version 1 again (a new revision) before the retry.
    ks.activate("paris", 1).await.unwrap();
    let revision = ks.active("paris").await.unwrap().unwrap().revision;
    let retry = ks
        .decide_canary("paris", 2, Verdict::Promote, "{}")
        .await
        .unwrap();
    assert!(!retry.changed, "{retry:?}");
    let active = ks.active("paris").await.unwrap().unwrap();
    assert_eq!((active.model.version, active.revision), (1, revision));

    let (_node, ks, raw) = setup().await;
    decided_but_not_landed(&ks, &raw, 2).await;
    // A person starts the canary again: the recorded promotion is cleared.
    ks.set_canary("paris", Some(auto_canary(2))).await.unwrap();
    ks.set_canary("paris", None).await.unwrap();
    ks.decide_canary("paris", 2, Verdict::Promote, "{}")
        .await
        .unwrap();
    assert_eq!(ks.active("paris").await.unwrap().unwrap().model.version, 1);
}

/// Criteria of an automatic canary are void once a writer that does not know the column (the
/// Python package, plain CQL) changes the rollout: the canary it leaves is decided by a person.
#[tokio::test]
async fn criteria_left_behind_by_a_plain_cql_writer_are_void() {
    let (_node, ks, raw) = setup().await;
    ks.put_version("paris", Some(3), VALID_SPEC).await.unwrap();
    let revision = ks.rollout("paris").await.unwrap().unwrap().revision;
    raw.query_unpaged(
        "UPDATE ks.model_rollouts SET canary_version = 3, canary_share = 0.5, revision = ? \
         WHERE key = 'paris' IF revision = ?",
        (revision + 1, revision),
    )
    .await
    .unwrap();
    let canary = ks.rollout("paris").await.unwrap().unwrap().canary;
    assert_eq!(
        canary,
        Some(Canary {
            version: 3,
            share: 0.5,
            auto: None
        })
    );
}

/// The tables of a keyspace made before the columns of automatic canaries (as keyscore created
/// them then).
const OLD_TABLES: &str = "
CREATE TABLE old.model_rollouts (
    key text PRIMARY KEY, canary_version bigint, canary_share double, shadow_version bigint,
    revision bigint, changed_at timestamp);
CREATE TABLE old.model_history (
    key text, pointer text, revision bigint, action text, version bigint,
    previous_version bigint, canary_share double, changed_by text, changed_at timestamp,
    PRIMARY KEY ((key), pointer, revision)) WITH CLUSTERING ORDER BY (pointer ASC, revision DESC);
";

/// A keyspace made before the new columns keeps serving canaries and history; criteria and
/// verdicts are refused with what to do; `init` adds the columns (and runs again without
/// error), after which they work, in the process that ran before too.
#[tokio::test]
async fn an_older_keyspace_serves_and_init_adds_the_columns() {
    let node = CqlTestNode::start().await;
    let raw = node.session().await;
    raw.query_unpaged(
        "CREATE KEYSPACE old WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        (),
    )
    .await
    .unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cql");
    let mut script = OLD_TABLES.to_string();
    for file in [
        "010_model_versions.cql",
        "020_active_models.cql",
        "030_model_changes.cql",
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        script.push_str(&text.replace("keyscore.", "old."));
    }
    for statement in cqlnode::split_script(&script) {
        raw.query_unpaged(statement.as_str(), ())
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }

    let ks = store(&node, "old").await;
    ks.put_version("paris", Some(1), VALID_SPEC).await.unwrap();
    ks.put_version("paris", Some(2), VALID_SPEC_2)
        .await
        .unwrap();
    ks.activate("paris", 1).await.unwrap();
    let manual = Canary {
        version: 2,
        share: 0.3,
        auto: None,
    };
    ks.set_canary("paris", Some(manual.clone())).await.unwrap();
    assert_eq!(
        ks.rollout("paris").await.unwrap().unwrap().canary,
        Some(manual.clone())
    );
    let err = ks
        .set_canary("paris", Some(auto_canary(2)))
        .await
        .expect_err("criteria stored without their column");
    assert!(
        matches!(err, Error::Rejected { .. }) && err.to_string().contains("keyscore init"),
        "{err}"
    );
    let err = ks
        .decide_canary("paris", 2, Verdict::RollBack, "{}")
        .await
        .expect_err("a verdict without its columns");
    assert!(err.to_string().contains("keyscore init"), "{err}");
    assert_eq!(ks.history("paris", 10).await.unwrap().len(), 2);

    ks.init().await.expect("init adds the columns");
    ks.init().await.expect("init runs again");
    // The same process uses the columns once init added them, without a restart.
    assert_eq!(
        ks.rollout("paris").await.unwrap().unwrap().canary,
        Some(manual),
        "the canary started before init"
    );
    ks.set_canary("paris", Some(auto_canary(2))).await.unwrap();
    assert_eq!(
        ks.rollout("paris").await.unwrap().unwrap().canary,
        Some(auto_canary(2))
    );
    let decided = ks
        .decide_canary("paris", 2, Verdict::Promote, r#"{"n":1}"#)
        .await
        .unwrap();
    assert!(decided.changed, "{decided:?}");
    assert_eq!(ks.active("paris").await.unwrap().unwrap().model.version, 2);
    let history = ks.history("paris", 10).await.unwrap();
    assert!(
        history
            .iter()
            .any(|e| e.evidence.as_deref() == Some(r#"{"n":1}"#)),
        "{history:#?}"
    );
    ks.record_quality(&[]).await.unwrap();
    assert!(ks.quality("paris", None, 10).await.unwrap().is_empty());
}
