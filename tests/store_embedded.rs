//! The embedded SQLite store: the conformance suite, durability across reopening, and
//! behaviour specific to a local file.

use std::path::Path;

use keyscore::store::{self, EmbeddedModelStore, Error, ModelStore};
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
