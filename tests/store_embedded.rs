//! The embedded SQLite store: the conformance suite, durability across reopening, and
//! behaviour specific to a local file.

use std::path::Path;

use keyscore::store::{self, Canary, EmbeddedModelStore, Error, ModelStore, Verdict};
use keyscore_testkit::specs::{VALID_SPEC, VALID_SPEC_2};
use keyscore_testkit::unique_key;
use tempfile::TempDir;

fn fresh_store() -> (TempDir, EmbeddedModelStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedModelStore::open(dir.path().join("models.db")).expect("open store");
    (dir, store)
}

// One test per check, each on a fresh file.
keyscore_testkit::conformance_tests!(conformance, async { fresh_store() });

#[tokio::test]
async fn data_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("models.db");
    let key = unique_key("durable");
    let (revision, cursor) = {
        let store = EmbeddedModelStore::open(&path).unwrap();
        store.put_version(&key, None, VALID_SPEC).await.unwrap();
        store.put_version(&key, None, VALID_SPEC_2).await.unwrap();
        store.activate(&key, 1).await.unwrap();
        store.activate(&key, 2).await.unwrap();
        let revision = store.active(&key).await.unwrap().unwrap().revision;
        (revision, store.cursor().await.unwrap())
    };

    let store = EmbeddedModelStore::open(&path).unwrap();
    let active = store
        .active(&key)
        .await
        .unwrap()
        .expect("active version lost");
    assert_eq!(active.model.version, 2);
    assert_eq!(active.model.spec_json, VALID_SPEC_2);
    assert_eq!(active.revision, revision);
    assert_eq!(store.cursor().await.unwrap(), cursor);
    assert_eq!(
        store.version(&key, 1).await.unwrap().unwrap().spec_json,
        VALID_SPEC
    );
    // The rollback target and the feed position survive too.
    assert_eq!(store.rollback(&key).await.unwrap(), 1);
    assert!(store.active(&key).await.unwrap().unwrap().revision > revision);
    let changes = store.changes_since(cursor.clone()).await.unwrap();
    assert_eq!(changes.keys, [key.as_str()]);
    assert!(changes.next > cursor);
}

#[tokio::test]
async fn two_handles_on_one_file_see_each_others_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("models.db");
    let service = EmbeddedModelStore::open(&path).unwrap();
    let cli = EmbeddedModelStore::open(&path).unwrap();
    let key = unique_key("shared");
    let cursor = service.cursor().await.unwrap();
    cli.put_version(&key, None, VALID_SPEC).await.unwrap();
    cli.activate(&key, 1).await.unwrap();
    let changes = service.changes_since(cursor).await.unwrap();
    assert_eq!(changes.keys, [key.as_str()]);
    assert_eq!(
        service.active(&key).await.unwrap().unwrap().model.version,
        1
    );
}

#[tokio::test]
async fn concurrent_puts_without_version_get_distinct_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("models.db");
    let key = unique_key("concurrent");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        // Separate connections, as separate processes would have.
        let store = EmbeddedModelStore::open(&path).unwrap();
        let key = key.clone();
        tasks.spawn(async move { store.put_version(&key, None, VALID_SPEC).await });
    }
    let mut versions: Vec<i64> = tasks
        .join_all()
        .await
        .into_iter()
        .map(|r| r.expect("a concurrent put failed"))
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=8).collect::<Vec<_>>());
}

#[tokio::test]
async fn the_cursor_of_an_empty_store_is_the_start_and_nothing_changed() {
    let (_dir, store) = fresh_store();
    let cursor = store.cursor().await.unwrap();
    let changes = store.changes_since(cursor.clone()).await.unwrap();
    assert!(changes.keys.is_empty());
    assert_eq!(changes.next, cursor);
}

#[tokio::test]
async fn open_by_url_accepts_sqlite_scheme_and_bare_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("models.db");
    let path = path.to_str().unwrap();
    let store = store::open(&format!("sqlite://{path}")).await.unwrap();
    assert_eq!(store.describe(), format!("sqlite://{path}"));
    let key = unique_key("url");
    store.put_version(&key, None, VALID_SPEC).await.unwrap();
    let again = store::open(path).await.unwrap();
    assert!(again.version(&key, 1).await.unwrap().is_some());
    assert!(Path::new(path).is_file());
}

#[tokio::test]
async fn open_refuses_a_missing_directory_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("models.db");
    let err = store::open(&format!("sqlite://{}", missing.display()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Url(_)), "{err:?}");
    assert!(err.to_string().contains("no-such-dir"), "{err}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn open_refuses_an_unknown_scheme() {
    let err = store::open("postgres://user:pw@db/models")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Url(_)), "{err:?}");
    assert!(!err.to_string().contains("pw"), "{err}");
}

/// A file written before quality rows, canary criteria and verdict evidence existed (schema as
/// keyscore wrote it then, with a canary running) opens: the table and columns are added, the
/// canary reads back without criteria, and the new calls work on it.
#[tokio::test]
async fn a_file_from_before_automatic_canaries_gets_their_table_and_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("models.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE model_versions (key TEXT NOT NULL, version INTEGER NOT NULL, \
               spec TEXT NOT NULL, author TEXT, created_at INTEGER NOT NULL, \
               PRIMARY KEY (key, version)) WITHOUT ROWID;
             CREATE TABLE active_models (key TEXT NOT NULL PRIMARY KEY, version INTEGER NOT NULL, \
               previous_version INTEGER, revision INTEGER NOT NULL);
             CREATE TABLE model_changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
               key TEXT NOT NULL, version INTEGER NOT NULL, at INTEGER NOT NULL, \
               changed_by TEXT, action TEXT, previous_version INTEGER, canary_share REAL);
             CREATE TABLE model_rollouts (key TEXT NOT NULL PRIMARY KEY, canary_version INTEGER, \
               canary_share REAL, shadow_version INTEGER, revision INTEGER NOT NULL);
             INSERT INTO model_versions VALUES ('paris', 1, '{VALID_SPEC}', NULL, 1), \
               ('paris', 2, '{VALID_SPEC_2}', NULL, 2);
             INSERT INTO model_changes (key, version, at, action) VALUES ('paris', 1, 3, 'activate'), \
               ('paris', 2, 4, 'canary');
             INSERT INTO active_models VALUES ('paris', 1, NULL, 1);
             INSERT INTO model_rollouts VALUES ('paris', 2, 0.5, NULL, 2);
             PRAGMA user_version = 2;"
        ))
        .unwrap();
    }
    let store = EmbeddedModelStore::open(&path).unwrap();
    let canary = store.rollout("paris").await.unwrap().unwrap().canary;
    assert_eq!(
        canary,
        Some(Canary {
            version: 2,
            share: 0.5,
            auto: None
        })
    );
    let history = store.history("paris", 10).await.unwrap();
    assert!(history.iter().all(|e| e.evidence.is_none()), "{history:?}");
    let decided = store
        .decide_canary("paris", 2, Verdict::RollBack, r#"{"psi":0.4}"#)
        .await
        .unwrap();
    assert!(decided.changed);
    let history = store.history("paris", 10).await.unwrap();
    assert_eq!(history[0].evidence.as_deref(), Some(r#"{"psi":0.4}"#));
    assert!(store.quality("paris", None, 10).await.unwrap().is_empty());
    // Reopening (the columns are there now) changes nothing.
    drop(store);
    let store = EmbeddedModelStore::open(&path).unwrap();
    assert_eq!(store.history("paris", 10).await.unwrap(), history);
}

/// Criteria of an automatic canary are void once an older keyscore (which does not know
/// `canary_auto`) changes the rollout: the canary it leaves is decided by a person.
#[tokio::test]
async fn criteria_left_behind_by_an_older_writer_are_void() {
    let (dir, store) = fresh_store();
    let key = unique_key("void");
    store.put_version(&key, None, VALID_SPEC).await.unwrap();
    store.put_version(&key, None, VALID_SPEC_2).await.unwrap();
    store.activate(&key, 1).await.unwrap();
    let criteria = keyscore::store::AutoCriteria {
        min_labelled: 10,
        metric: "mae".into(),
        margin: 0.0,
        max_dead_letter_rate: 0.0,
        max_prediction_psi: 0.1,
    };
    let canary = Canary {
        version: 2,
        share: 0.2,
        auto: Some(criteria),
    };
    store.set_canary(&key, Some(canary.clone())).await.unwrap();
    assert_eq!(
        store.rollout(&key).await.unwrap().unwrap().canary,
        Some(canary)
    );
    // What an older keyscore's canary change writes: a feed row, then the canary columns it
    // knows and the revision.
    let conn = rusqlite::Connection::open(dir.path().join("models.db")).unwrap();
    conn.execute(
        "INSERT INTO model_changes (key, version, at, action, canary_share) \
         VALUES (?1, 2, 1, 'canary', 0.3)",
        [&key],
    )
    .unwrap();
    conn.execute(
        "UPDATE model_rollouts SET canary_share = 0.3, revision = last_insert_rowid() \
         WHERE key = ?1",
        [&key],
    )
    .unwrap();
    assert_eq!(
        store.rollout(&key).await.unwrap().unwrap().canary,
        Some(Canary {
            version: 2,
            share: 0.3,
            auto: None
        })
    );
}
