//! The model-store conformance suite: what every [`ModelStore`] backend must do.
//!
//! Each `pub async fn` checks one behaviour users rely on and panics with a message naming it
//! when the store falls short. Every check writes only under fresh keys from [`unique_key`],
//! so the suite can run against a shared, long-lived cluster and alongside other runs.
//!
//! [`conformance_tests!`](crate::conformance_tests) runs the suite for one engine: one
//! `#[tokio::test]` per check, each on a store of its own (or on a shared cluster), so a failure
//! names the behaviour and does not hide the checks after it. The list of checks is written once,
//! in that macro. The checks of live quality are in [`quality`], those of automatic canaries in
//! [`verdicts`].
//!
//! ```text
//! use keyscore::store::EmbeddedModelStore;
//!
//! async fn fresh_store() -> (tempfile::TempDir, EmbeddedModelStore) {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store = EmbeddedModelStore::open(dir.path().join("models.db")).unwrap();
//!     (dir, store)
//! }
//!
//! // A module `sqlite` with one test per check, each on a fresh file.
//! keyscore_testkit::conformance_tests!(sqlite, fresh_store());
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;

use keyscore::store::{
    Canary, CanaryChange, ChangeAction, ChangeCursor, CqlModelStore, EmbeddedModelStore, Error,
    KeySummary, MemoryModelStore, ModelStore, Moved, PointerMove,
};

use crate::specs::{SHAPE_MISMATCH_SPEC, UNKNOWN_KIND_SPEC, VALID_SPEC, VALID_SPEC_2};
use crate::unique_key;

pub mod quality;
pub mod verdicts;

pub use quality::{
    quality_rows_are_idempotent_and_the_later_write_wins,
    quality_rows_are_stored_and_read_newest_first,
    quality_rows_of_many_keys_are_written_in_one_call,
    quality_rows_refuse_bad_input_and_write_nothing,
};
pub use verdicts::{
    a_verdict_applies_once, a_verdict_on_a_version_no_longer_the_canary_writes_nothing,
    a_verdict_records_its_evidence_in_the_history, auto_criteria_are_stored_with_the_canary,
    concurrent_verdicts_apply_exactly_once,
};

/// One test per conformance check for one engine, in a module `$module`:
/// `conformance_tests!(sqlite, fresh_store())`.
///
/// The second argument is an expression evaluated once per test, inside the test's runtime, to
/// a future (an `async fn` call or an `async` block) whose output is a [`Fixture`]: a store,
/// or a `(guard, store)` pair whose guard (a temporary directory) lives as long as the test.
/// Items of the calling module are in scope in the expression. Each test runs on a
/// current-thread runtime, through the `tokio` the calling crate depends on.
#[macro_export]
macro_rules! conformance_tests {
    ($module:ident, $fresh:expr $(,)?) => {
        $crate::conformance_tests!(@checks $module, $fresh;
            init_is_idempotent,
            put_refuses_an_invalid_spec_and_writes_nothing,
            put_refuses_an_invalid_key,
            put_refuses_an_existing_version,
            put_without_version_takes_newest_plus_one,
            activate_refuses_an_unknown_version,
            active_reflects_activation,
            revision_increases_with_every_activation_and_rollback,
            rollback_returns_to_previous_and_twice_returns_back,
            rollback_with_nothing_to_return_to_is_refused,
            reactivating_the_active_version_keeps_the_rollback_target,
            version_reads_the_exact_spec,
            list_shows_sorted_keys_versions_and_active,
            key_pages_cover_every_key_once_and_name_active_versions,
            prune_keeps_the_newest_and_every_version_in_use,
            changes_since_reports_every_changed_key,
            changes_since_next_cursor_misses_nothing,
            canary_and_shadow_are_stored_and_announced_on_the_feed,
            canary_and_shadow_refuse_bad_input,
            promote_activates_the_canary_and_ends_it,
            rollback_from_is_safe_to_retry,
            rollback_from_refuses_another_active_version,
            activate_expecting_checks_the_active_version,
            conditional_moves_refuse_an_unknown_key,
            activation_says_who_and_when,
            change_canary_refuses_to_replace_and_is_safe_to_retry,
            history_records_every_change_with_who_and_when,
            quality_rows_are_stored_and_read_newest_first,
            quality_rows_are_idempotent_and_the_later_write_wins,
            quality_rows_refuse_bad_input_and_write_nothing,
            quality_rows_of_many_keys_are_written_in_one_call,
            auto_criteria_are_stored_with_the_canary,
            a_verdict_applies_once,
            a_verdict_on_a_version_no_longer_the_canary_writes_nothing,
            a_verdict_records_its_evidence_in_the_history,
            concurrent_verdicts_apply_exactly_once,
        );
    };
    (@checks $module:ident, $fresh:expr; $($check:ident),* $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test]
                async fn $check() {
                    let fixture = $fresh.await;
                    $crate::conformance::$check($crate::conformance::Fixture::store(&fixture))
                        .await;
                }
            )*
        }
    };
}

/// What a conformance test runs against: a store, with whatever must live as long as it.
pub trait Fixture {
    /// The store under test.
    fn store(&self) -> &dyn ModelStore;
}

impl Fixture for MemoryModelStore {
    fn store(&self) -> &dyn ModelStore {
        self
    }
}

impl Fixture for EmbeddedModelStore {
    fn store(&self) -> &dyn ModelStore {
        self
    }
}

impl Fixture for CqlModelStore {
    fn store(&self) -> &dyn ModelStore {
        self
    }
}

impl Fixture for Arc<dyn ModelStore> {
    fn store(&self) -> &dyn ModelStore {
        &**self
    }
}

/// A store with a guard that must outlive it, such as the temporary directory of its file.
impl<G, S: Fixture> Fixture for (G, S) {
    fn store(&self) -> &dyn ModelStore {
        self.1.store()
    }
}

/// `err` and its sources, `A: B: C`, as the CLI prints an error.
fn chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

/// Puts `spec` under `key`, panicking with the store's error if it is refused.
async fn put(store: &dyn ModelStore, key: &str, version: Option<i64>, spec: &str) -> i64 {
    store
        .put_version(key, version, spec)
        .await
        .unwrap_or_else(|err| panic!("put_version({key}, {version:?}) failed: {err}"))
}

async fn active_version(store: &dyn ModelStore, key: &str) -> Option<i64> {
    store
        .active(key)
        .await
        .expect("active() failed")
        .map(|a| a.model.version)
}

async fn revision(store: &dyn ModelStore, key: &str) -> i64 {
    store
        .active(key)
        .await
        .expect("active() failed")
        .unwrap_or_else(|| panic!("{key} has no active version"))
        .revision
}

/// `init` may run any number of times and keeps what is stored.
pub async fn init_is_idempotent(store: &dyn ModelStore) {
    store.init().await.expect("first init failed");
    let key = unique_key("init");
    put(store, &key, Some(1), VALID_SPEC).await;
    store.init().await.expect("second init failed");
    store.init().await.expect("third init failed");
    assert!(
        store.version(&key, 1).await.unwrap().is_some(),
        "init dropped a stored version"
    );
}

/// An invalid spec is refused with a message naming the problem, and nothing is written.
pub async fn put_refuses_an_invalid_spec_and_writes_nothing(store: &dyn ModelStore) {
    let key = unique_key("invalid");
    let err = store
        .put_version(&key, Some(1), UNKNOWN_KIND_SPEC)
        .await
        .expect_err("a spec with an unknown model kind was stored");
    assert!(matches!(err, Error::InvalidModel(_)), "{err:?}");
    let message = chain(&err);
    assert!(
        message.contains("quantum"),
        "the message does not name the unknown kind: {message}"
    );
    let err = store
        .put_version(&key, None, SHAPE_MISMATCH_SPEC)
        .await
        .expect_err("a spec with one coefficient for two features was stored");
    assert!(matches!(err, Error::InvalidModel(_)), "{err:?}");
    let err = store
        .put_version(&key, None, "{not json")
        .await
        .expect_err("text that is not JSON was stored");
    assert!(matches!(err, Error::InvalidModel(_)), "{err:?}");
    assert_eq!(store.version(&key, 1).await.unwrap(), None);
    assert!(
        store.list().await.unwrap().iter().all(|s| s.key != key),
        "a refused spec left its key in the listing"
    );
    // The key is still free for a valid first version.
    assert_eq!(put(store, &key, None, VALID_SPEC).await, 1);
}

/// Empty keys and keys with control characters are refused.
pub async fn put_refuses_an_invalid_key(store: &dyn ModelStore) {
    for key in ["", "line\nbreak"] {
        let err = store
            .put_version(key, None, VALID_SPEC)
            .await
            .expect_err("an invalid key was accepted");
        assert!(matches!(err, Error::InvalidKey(_)), "{key:?}: {err:?}");
    }
}

/// Versions are immutable: storing an existing version again is refused and changes nothing.
pub async fn put_refuses_an_existing_version(store: &dyn ModelStore) {
    let key = unique_key("exists");
    assert_eq!(put(store, &key, Some(3), VALID_SPEC).await, 3);
    let err = store
        .put_version(&key, Some(3), VALID_SPEC_2)
        .await
        .expect_err("an existing version was overwritten");
    assert!(
        matches!(&err, Error::VersionExists { key: k, version: 3 } if *k == key),
        "{err:?}"
    );
    let stored = store.version(&key, 3).await.unwrap().unwrap();
    assert_eq!(
        stored.spec_json, VALID_SPEC,
        "the refused put changed the version"
    );
    let err = store
        .put_version(&key, Some(0), VALID_SPEC)
        .await
        .expect_err("version 0 was accepted");
    assert!(matches!(err, Error::InvalidVersion(0)), "{err:?}");
}

/// Without a version number, a put takes the newest version plus one, starting at 1.
pub async fn put_without_version_takes_newest_plus_one(store: &dyn ModelStore) {
    let key = unique_key("next");
    assert_eq!(put(store, &key, None, VALID_SPEC).await, 1);
    assert_eq!(put(store, &key, None, VALID_SPEC).await, 2);
    assert_eq!(put(store, &key, Some(10), VALID_SPEC).await, 10);
    assert_eq!(put(store, &key, Some(5), VALID_SPEC).await, 5);
    assert_eq!(put(store, &key, None, VALID_SPEC).await, 11);
    // Keys are independent.
    assert_eq!(put(store, &unique_key("next"), None, VALID_SPEC).await, 1);
}

/// Activating a version that does not exist is refused and leaves the pointer alone.
pub async fn activate_refuses_an_unknown_version(store: &dyn ModelStore) {
    let key = unique_key("unknown");
    let err = store
        .activate(&key, 1)
        .await
        .expect_err("a key without versions was activated");
    assert!(
        matches!(&err, Error::NoSuchVersion { key: k, version: 1 } if *k == key),
        "{err:?}"
    );
    put(store, &key, None, VALID_SPEC).await;
    store.activate(&key, 1).await.unwrap();
    let err = store
        .activate(&key, 2)
        .await
        .expect_err("a missing version was activated");
    assert!(
        matches!(err, Error::NoSuchVersion { version: 2, .. }),
        "{err:?}"
    );
    assert_eq!(active_version(store, &key).await, Some(1));
}

/// `active` is `None` before any activation and then returns the activated version's row.
pub async fn active_reflects_activation(store: &dyn ModelStore) {
    let key = unique_key("active");
    assert_eq!(store.active(&key).await.unwrap(), None);
    put(store, &key, None, VALID_SPEC).await;
    put(store, &key, None, VALID_SPEC_2).await;
    assert_eq!(
        store.active(&key).await.unwrap(),
        None,
        "put_version activated a version"
    );
    store.activate(&key, 2).await.unwrap();
    let active = store
        .active(&key)
        .await
        .unwrap()
        .expect("no active version");
    assert_eq!(active.model.key, key);
    assert_eq!(active.model.version, 2);
    assert_eq!(active.model.spec_json, VALID_SPEC_2);
    store.activate(&key, 1).await.unwrap();
    let active = store
        .active(&key)
        .await
        .unwrap()
        .expect("no active version");
    assert_eq!(active.model.version, 1);
    assert_eq!(active.model.spec_json, VALID_SPEC);
}

/// Every activation and rollback gives the key a strictly greater revision, even when it
/// returns to an older version.
pub async fn revision_increases_with_every_activation_and_rollback(store: &dyn ModelStore) {
    let key = unique_key("revision");
    put(store, &key, None, VALID_SPEC).await;
    put(store, &key, None, VALID_SPEC_2).await;
    store.activate(&key, 1).await.unwrap();
    let first = revision(store, &key).await;
    store.activate(&key, 2).await.unwrap();
    let second = revision(store, &key).await;
    store.rollback(&key).await.unwrap();
    let third = revision(store, &key).await;
    store.activate(&key, 2).await.unwrap();
    let fourth = revision(store, &key).await;
    store.activate(&key, 2).await.unwrap();
    let fifth = revision(store, &key).await;
    assert!(
        first < second && second < third && third < fourth && fourth < fifth,
        "revisions must strictly increase: {first}, {second}, {third}, {fourth}, {fifth}"
    );
}

/// Rollback returns to the version active before; a second rollback returns back.
pub async fn rollback_returns_to_previous_and_twice_returns_back(store: &dyn ModelStore) {
    let key = unique_key("rollback");
    for _ in 0..3 {
        put(store, &key, None, VALID_SPEC).await;
    }
    store.activate(&key, 1).await.unwrap();
    store.activate(&key, 3).await.unwrap();
    assert_eq!(store.rollback(&key).await.unwrap(), 1);
    assert_eq!(active_version(store, &key).await, Some(1));
    assert_eq!(store.rollback(&key).await.unwrap(), 3);
    assert_eq!(active_version(store, &key).await, Some(3));
    assert_eq!(store.rollback(&key).await.unwrap(), 1);
    assert_eq!(active_version(store, &key).await, Some(1));
}

/// Rollback of a key never activated, or activated only once, is refused and changes nothing.
pub async fn rollback_with_nothing_to_return_to_is_refused(store: &dyn ModelStore) {
    let key = unique_key("norollback");
    let err = store
        .rollback(&key)
        .await
        .expect_err("rollback of an unknown key succeeded");
    assert!(
        matches!(&err, Error::UnknownKey { key: k } if *k == key),
        "{err:?}"
    );
    put(store, &key, None, VALID_SPEC).await;
    let err = store
        .rollback(&key)
        .await
        .expect_err("rollback of a never-activated key succeeded");
    assert!(matches!(err, Error::NothingToRollBack { .. }), "{err:?}");
    store.activate(&key, 1).await.unwrap();
    let before = revision(store, &key).await;
    let err = store
        .rollback(&key)
        .await
        .expect_err("rollback of a key activated once succeeded");
    assert!(matches!(err, Error::NothingToRollBack { .. }), "{err:?}");
    assert_eq!(active_version(store, &key).await, Some(1));
    assert_eq!(
        revision(store, &key).await,
        before,
        "a refused rollback moved the pointer"
    );
}

/// Activating the version that is already active does not lose the rollback target.
pub async fn reactivating_the_active_version_keeps_the_rollback_target(store: &dyn ModelStore) {
    let key = unique_key("reactivate");
    put(store, &key, None, VALID_SPEC).await;
    put(store, &key, None, VALID_SPEC_2).await;
    store.activate(&key, 1).await.unwrap();
    store.activate(&key, 2).await.unwrap();
    store.activate(&key, 2).await.unwrap();
    assert_eq!(store.rollback(&key).await.unwrap(), 1);
}

/// `version` returns the stored spec in its canonical, compact form, and `None` for a missing
/// version.
pub async fn version_reads_the_exact_spec(store: &dyn ModelStore) {
    let key = unique_key("exact");
    // Stored compact: whitespace outside strings goes; key order, number spelling and
    // non-ASCII text (and whitespace inside strings) survive untouched.
    let spec = "{\n  \"output\": {\"type\": \"regression\"},\n  \"format_version\": 1,\n  \
                \"features\": [\"a\", \"b\"],\n  \"model\": {\"kind\": \"linear\", \
                \"coefficients\": [1.000, 2e0], \"intercept\": 0.50},\n  \
                \"metadata\": {\"author\": \"Zoë Ødegård\", \"note\": \"café ☕\"}\n}\n";
    put(store, &key, Some(7), spec).await;
    let stored = store
        .version(&key, 7)
        .await
        .unwrap()
        .expect("version 7 missing");
    assert_eq!(stored.key, key);
    assert_eq!(stored.version, 7);
    let compact = "{\"output\":{\"type\":\"regression\"},\"format_version\":1,\
                   \"features\":[\"a\",\"b\"],\"model\":{\"kind\":\"linear\",\
                   \"coefficients\":[1.000,2e0],\"intercept\":0.50},\
                   \"metadata\":{\"author\":\"Zoë Ødegård\",\"note\":\"café ☕\"}}";
    assert_eq!(stored.spec_json, compact);
    assert_eq!(store.version(&key, 8).await.unwrap(), None);
    assert_eq!(store.version(&unique_key("exact"), 7).await.unwrap(), None);
}

/// `list` returns keys sorted, each with its versions ascending and its active version.
pub async fn list_shows_sorted_keys_versions_and_active(store: &dyn ModelStore) {
    let base = unique_key("list");
    let (a, b, c) = (
        format!("{base}-a"),
        format!("{base}-b"),
        format!("{base}-c"),
    );
    // Written out of order on purpose.
    put(store, &c, Some(1), VALID_SPEC).await;
    put(store, &a, Some(3), VALID_SPEC).await;
    put(store, &a, Some(1), VALID_SPEC).await;
    put(store, &a, Some(2), VALID_SPEC).await;
    put(store, &b, Some(10), VALID_SPEC).await;
    put(store, &b, Some(9), VALID_SPEC).await;
    store.activate(&a, 2).await.unwrap();
    store.activate(&b, 9).await.unwrap();
    store.activate(&b, 10).await.unwrap();

    let listing = store.list().await.unwrap();
    let keys: Vec<&str> = listing.iter().map(|s| s.key.as_str()).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted, "list() is not sorted by key");
    let ours: Vec<KeySummary> = listing
        .into_iter()
        .filter(|s| s.key.starts_with(&base))
        .collect();
    let summary = |key: &str, active: Option<i64>, versions: &[i64]| KeySummary {
        key: key.to_string(),
        active,
        versions: versions.to_vec(),
    };
    assert_eq!(
        ours,
        [
            summary(&a, Some(2), &[1, 2, 3]),
            summary(&b, Some(10), &[9, 10]),
            summary(&c, None, &[1]),
        ]
    );
}

/// `key_page` pages through every key once, each page at most the size asked, each key with
/// the version `active` reports; a page of 0 keys is empty.
pub async fn key_pages_cover_every_key_once_and_name_active_versions(store: &dyn ModelStore) {
    let mut mine = BTreeSet::new();
    for i in 0..7 {
        let key = unique_key("page");
        put(store, &key, Some(1), VALID_SPEC).await;
        if i % 2 == 0 {
            put(store, &key, Some(2), VALID_SPEC_2).await;
            store.activate(&key, 2).await.unwrap();
        }
        mine.insert(key);
    }
    assert!(store.key_page(None, 0).await.unwrap().keys.is_empty());
    let mut seen = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.key_page(after.as_deref(), 3).await.unwrap();
        assert!(page.keys.len() <= 3, "{page:?}");
        for (key, active) in &page.keys {
            assert!(seen.insert(key.clone()), "{key} listed twice");
            if mine.contains(key) {
                let stored = store.active(key).await.unwrap().map(|a| a.model.version);
                assert_eq!(*active, stored, "{key}");
            }
        }
        match page.next {
            Some(next) => {
                assert!(!page.keys.is_empty(), "an empty page promised another");
                after = Some(next);
            }
            None => break,
        }
    }
    let missing: Vec<_> = mine.difference(&seen).collect();
    assert!(missing.is_empty(), "pages missed {missing:?}");
}

/// `prune` removes all but the newest versions, never the active one, the rollback target or
/// the canary; a dry run removes nothing; a retry removes nothing more.
pub async fn prune_keeps_the_newest_and_every_version_in_use(store: &dyn ModelStore) {
    let key = unique_key("prune");
    for v in 1..=6 {
        put(store, &key, Some(v), VALID_SPEC).await;
    }
    store.activate(&key, 2).await.unwrap();
    store.activate(&key, 3).await.unwrap();
    store
        .set_canary(
            &key,
            Some(Canary {
                version: 1,
                share: 0.1,
                auto: None,
            }),
        )
        .await
        .unwrap();
    let dry = store.prune(&key, 1, true).await.unwrap();
    assert_eq!(dry.removed, [4, 5]);
    assert_eq!(dry.kept, [1, 2, 3, 6]);
    assert_eq!(dry.protected, [1, 2, 3]);
    assert_eq!(
        store.versions(&key).await.unwrap(),
        [1, 2, 3, 4, 5, 6],
        "a dry run removed versions"
    );
    let pruned = store.prune(&key, 1, false).await.unwrap();
    assert_eq!(pruned, dry);
    assert_eq!(store.versions(&key).await.unwrap(), [1, 2, 3, 6]);
    assert_eq!(store.version(&key, 4).await.unwrap(), None);
    assert!(
        store
            .prune(&key, 1, false)
            .await
            .unwrap()
            .removed
            .is_empty(),
        "a retry removed more"
    );
    assert_eq!(store.active(&key).await.unwrap().unwrap().model.version, 3);
    assert_eq!(store.rollback(&key).await.unwrap(), 2);
}

/// After activations and rollbacks, `changes_since(cursor taken before)` names every changed
/// key, once each.
pub async fn changes_since_reports_every_changed_key(store: &dyn ModelStore) {
    let keys: Vec<String> = (0..3).map(|_| unique_key("feed")).collect();
    for key in &keys {
        put(store, key, None, VALID_SPEC).await;
        put(store, key, None, VALID_SPEC_2).await;
    }
    let untouched = unique_key("feed-untouched");
    put(store, &untouched, None, VALID_SPEC).await;

    let before = store.cursor().await.unwrap();
    store.activate(&keys[0], 1).await.unwrap();
    store.activate(&keys[1], 1).await.unwrap();
    store.activate(&keys[1], 2).await.unwrap();
    store.activate(&keys[2], 2).await.unwrap();
    store.activate(&keys[2], 1).await.unwrap();
    store.rollback(&keys[2]).await.unwrap();

    let changes = store.changes_since(before.clone()).await.unwrap();
    let seen: BTreeSet<&str> = changes.keys.iter().map(String::as_str).collect();
    assert_eq!(
        seen.len(),
        changes.keys.len(),
        "a key was reported twice: {:?}",
        changes.keys
    );
    for key in &keys {
        assert!(
            seen.contains(key.as_str()),
            "{key} missing from {:?}",
            changes.keys
        );
    }
    assert!(
        !seen.contains(untouched.as_str()),
        "put_version without activation appeared in the feed"
    );
    assert!(changes.next >= before, "the next cursor went backwards");
}

/// Polling with each returned `next` cursor never misses a later change.
pub async fn changes_since_next_cursor_misses_nothing(store: &dyn ModelStore) {
    let first = unique_key("poll");
    let second = unique_key("poll");
    for key in [&first, &second] {
        put(store, key, None, VALID_SPEC).await;
        put(store, key, None, VALID_SPEC_2).await;
    }
    let mut cursor: ChangeCursor = store.cursor().await.unwrap();
    store.activate(&first, 1).await.unwrap();
    let changes = store.changes_since(cursor).await.unwrap();
    assert!(
        changes.keys.contains(&first),
        "{first} missing from {:?}",
        changes.keys
    );
    cursor = changes.next;

    // Later changes, including a second change of a key already reported.
    store.activate(&second, 1).await.unwrap();
    store.activate(&first, 2).await.unwrap();
    let changes = store.changes_since(cursor.clone()).await.unwrap();
    assert!(
        changes.keys.contains(&second),
        "{second} missing from {:?}",
        changes.keys
    );
    assert!(
        changes.keys.contains(&first),
        "{first}'s second change missed: {:?}",
        changes.keys
    );
    assert!(changes.next >= cursor, "the next cursor went backwards");
    cursor = changes.next;

    store.activate(&second, 2).await.unwrap();
    let changes = store.changes_since(cursor).await.unwrap();
    assert!(
        changes.keys.contains(&second),
        "{second}'s change missed: {:?}",
        changes.keys
    );
}

/// A canary and a shadow are stored per key, independently; every change has a newer revision
/// and is announced on the change feed, like an activation.
pub async fn canary_and_shadow_are_stored_and_announced_on_the_feed(store: &dyn ModelStore) {
    let key = unique_key("rollout");
    put(store, &key, Some(1), VALID_SPEC).await;
    put(store, &key, Some(2), VALID_SPEC_2).await;
    put(store, &key, Some(3), VALID_SPEC).await;
    store.activate(&key, 1).await.unwrap();
    assert_eq!(store.rollout(&key).await.unwrap().map(|r| r.canary), None);

    let before = store.cursor().await.unwrap();
    let canary = Canary {
        version: 2,
        share: 0.25,
        auto: None,
    };
    store.set_canary(&key, Some(canary.clone())).await.unwrap();
    let r1 = store.rollout(&key).await.unwrap().expect("rollout stored");
    assert_eq!(r1.canary, Some(canary.clone()));
    assert_eq!(r1.shadow, None);
    let changes = store.changes_since(before).await.unwrap();
    assert!(
        changes.keys.contains(&key),
        "a canary change is not on the feed"
    );

    store.set_shadow(&key, Some(3)).await.unwrap();
    let r2 = store.rollout(&key).await.unwrap().unwrap();
    assert_eq!(
        r2.canary,
        Some(canary),
        "setting a shadow dropped the canary"
    );
    assert_eq!(r2.shadow, Some(3));
    assert!(r2.revision > r1.revision, "revision did not increase");
    let changes = store.changes_since(changes.next).await.unwrap();
    assert!(
        changes.keys.contains(&key),
        "a shadow change is not on the feed"
    );

    store.set_canary(&key, None).await.unwrap();
    let r3 = store.rollout(&key).await.unwrap().unwrap();
    assert_eq!(r3.canary, None);
    assert_eq!(r3.shadow, Some(3), "ending the canary dropped the shadow");
    assert!(r3.revision > r2.revision);
    store.set_shadow(&key, None).await.unwrap();
    let r4 = store.rollout(&key).await.unwrap().unwrap();
    assert!(r4.is_empty(), "{r4:?}");
    assert!(r4.revision > r3.revision);
    let changes = store.changes_since(changes.next).await.unwrap();
    assert!(
        changes.keys.contains(&key),
        "ending a rollout is not on the feed"
    );
    // The active version is untouched by all of it.
    assert_eq!(active_version(store, &key).await, Some(1));
}

/// A canary or shadow of a version that does not exist, or a share outside (0, 1], is refused
/// and writes nothing.
pub async fn canary_and_shadow_refuse_bad_input(store: &dyn ModelStore) {
    let key = unique_key("rollout-bad");
    put(store, &key, Some(1), VALID_SPEC).await;
    store.activate(&key, 1).await.unwrap();
    let err = store
        .set_canary(
            &key,
            Some(Canary {
                version: 9,
                share: 0.1,
                auto: None,
            }),
        )
        .await
        .expect_err("a canary of a missing version was stored");
    assert!(
        matches!(err, Error::NoSuchVersion { version: 9, .. }),
        "{err:?}"
    );
    let err = store.set_shadow(&key, Some(9)).await.unwrap_err();
    assert!(
        matches!(err, Error::NoSuchVersion { version: 9, .. }),
        "{err:?}"
    );
    for share in [0.0, -0.5, 1.5, f64::NAN] {
        let err = store
            .set_canary(
                &key,
                Some(Canary {
                    version: 1,
                    share,
                    auto: None,
                }),
            )
            .await
            .expect_err("a bad share was stored");
        assert!(matches!(err, Error::InvalidShare(_)), "{share}: {err:?}");
    }
    assert!(store
        .rollout(&key)
        .await
        .unwrap()
        .is_none_or(|r| r.is_empty()));
}

/// Promote makes the canary's version active (rollback then returns to the version before),
/// ends the canary, and is refused without a canary.
pub async fn promote_activates_the_canary_and_ends_it(store: &dyn ModelStore) {
    let key = unique_key("promote");
    put(store, &key, Some(1), VALID_SPEC).await;
    put(store, &key, Some(2), VALID_SPEC_2).await;
    store.activate(&key, 1).await.unwrap();
    let err = store
        .promote(&key)
        .await
        .expect_err("promoted without a canary");
    assert!(matches!(err, Error::NoCanary { .. }), "{err:?}");
    store
        .set_canary(
            &key,
            Some(Canary {
                version: 2,
                share: 0.5,
                auto: None,
            }),
        )
        .await
        .unwrap();
    store.set_shadow(&key, Some(1)).await.unwrap();
    let before = store.cursor().await.unwrap();
    assert_eq!(store.promote(&key).await.unwrap(), 2);
    assert_eq!(active_version(store, &key).await, Some(2));
    let rollout = store.rollout(&key).await.unwrap().unwrap();
    assert_eq!(rollout.canary, None, "promote left the canary running");
    assert_eq!(rollout.shadow, Some(1), "promote dropped the shadow");
    assert!(store
        .changes_since(before)
        .await
        .unwrap()
        .keys
        .contains(&key));
    assert_eq!(store.rollback(&key).await.unwrap(), 1);
}

/// `move_active(RollbackFrom)`: the first call rolls back, a retry with the same intent is a
/// no-op that says so and writes nothing.
pub async fn rollback_from_is_safe_to_retry(store: &dyn ModelStore) {
    let key = unique_key("rollbackfrom");
    put(store, &key, None, VALID_SPEC).await;
    put(store, &key, None, VALID_SPEC_2).await;
    store.activate(&key, 1).await.unwrap();
    store.activate(&key, 2).await.unwrap();
    let change = PointerMove::RollbackFrom { from: 2 };
    let first = store.move_active(&key, change).await.unwrap();
    assert_eq!(
        first,
        Moved {
            from: Some(2),
            to: 1,
            changed: true
        }
    );
    assert_eq!(active_version(store, &key).await, Some(1));
    let before = revision(store, &key).await;
    let retry = store.move_active(&key, change).await.unwrap();
    assert_eq!(
        retry,
        Moved {
            from: Some(2),
            to: 1,
            changed: false
        },
        "a retried rollback must be recognised as done"
    );
    assert_eq!(active_version(store, &key).await, Some(1));
    assert_eq!(
        revision(store, &key).await,
        before,
        "a retried rollback wrote"
    );
}

/// `move_active(RollbackFrom)` refuses when another version is active, naming it, and writes
/// nothing; a key activated once has nothing to roll back to.
pub async fn rollback_from_refuses_another_active_version(store: &dyn ModelStore) {
    let key = unique_key("rollbackother");
    for _ in 0..3 {
        put(store, &key, None, VALID_SPEC).await;
    }
    store.activate(&key, 1).await.unwrap();
    let err = store
        .move_active(&key, PointerMove::RollbackFrom { from: 1 })
        .await
        .expect_err("rollback of a key activated once succeeded");
    assert!(matches!(err, Error::NothingToRollBack { .. }), "{err:?}");
    store.activate(&key, 2).await.unwrap();
    store.activate(&key, 3).await.unwrap();
    let before = revision(store, &key).await;
    let err = store
        .move_active(&key, PointerMove::RollbackFrom { from: 1 })
        .await
        .expect_err("rollback from a version that is not active succeeded");
    assert!(
        matches!(
            err,
            Error::UnexpectedVersion {
                expected: 1,
                active: Some(3),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("v3"), "{err}");
    assert_eq!(active_version(store, &key).await, Some(3));
    assert_eq!(revision(store, &key).await, before, "a refused move wrote");
}

/// `move_active(Activate)`: activating the active version writes nothing; with an expected
/// version, another active version is refused; a missing version is refused.
pub async fn activate_expecting_checks_the_active_version(store: &dyn ModelStore) {
    let key = unique_key("activateexpect");
    for _ in 0..3 {
        put(store, &key, None, VALID_SPEC).await;
    }
    let first = store
        .move_active(
            &key,
            PointerMove::Activate {
                version: 1,
                expect: None,
            },
        )
        .await
        .unwrap();
    assert!(
        first.changed && first.to == 1 && first.from.is_none(),
        "{first:?}"
    );
    let before = revision(store, &key).await;
    let again = store
        .move_active(
            &key,
            PointerMove::Activate {
                version: 1,
                expect: Some(1),
            },
        )
        .await
        .unwrap();
    assert!(!again.changed, "{again:?}");
    assert_eq!(
        revision(store, &key).await,
        before,
        "a no-op activation wrote"
    );
    let err = store
        .move_active(
            &key,
            PointerMove::Activate {
                version: 3,
                expect: Some(2),
            },
        )
        .await
        .expect_err("activation with a wrong expectation succeeded");
    assert!(
        matches!(
            err,
            Error::UnexpectedVersion {
                expected: 2,
                active: Some(1),
                ..
            }
        ),
        "{err:?}"
    );
    let err = store
        .move_active(
            &key,
            PointerMove::Activate {
                version: 9,
                expect: Some(1),
            },
        )
        .await
        .expect_err("activation of a missing version succeeded");
    assert!(
        matches!(err, Error::NoSuchVersion { version: 9, .. }),
        "{err:?}"
    );
    assert_eq!(revision(store, &key).await, before, "a refused move wrote");
    let moved = store
        .move_active(
            &key,
            PointerMove::Activate {
                version: 3,
                expect: Some(1),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        moved,
        Moved {
            from: Some(1),
            to: 3,
            changed: true
        }
    );
    assert_eq!(store.rollback(&key).await.unwrap(), 1);
}

/// Conditional moves and `require_key` refuse a key with no stored version.
pub async fn conditional_moves_refuse_an_unknown_key(store: &dyn ModelStore) {
    let key = unique_key("nosuch");
    let err = store
        .move_active(&key, PointerMove::RollbackFrom { from: 1 })
        .await
        .expect_err("rollback of an unknown key succeeded");
    assert!(matches!(err, Error::UnknownKey { .. }), "{err:?}");
    let err = store
        .require_key(&key)
        .await
        .expect_err("unknown key accepted");
    assert!(err.to_string().contains("unknown key"), "{err}");
    put(store, &key, None, VALID_SPEC).await;
    store.require_key(&key).await.unwrap();
}

/// `activation` says who moved the pointer last and when; `None` for a key never activated.
pub async fn activation_says_who_and_when(store: &dyn ModelStore) {
    let key = unique_key("activation");
    put(store, &key, None, VALID_SPEC).await;
    assert_eq!(store.activation(&key).await.unwrap(), None);
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let before = now();
    store.activate(&key, 1).await.unwrap();
    let after = now();
    let activation = store
        .activation(&key)
        .await
        .unwrap()
        .expect("an activated key has an activation");
    let at = activation.at_ms.expect("the time of the activation");
    // The CQL store's clock is the node's, the test's is this process's: allow a second.
    assert!(
        before - 1000 <= at && at <= after + 1000,
        "activated at {at}, between {before} and {after}"
    );
    let by = activation.by.expect("who activated");
    assert!(by.starts_with("keyscore"), "{by}");
}

/// `change_canary`: starting the same canary again and ending an ended one write nothing; a
/// different canary is refused unless replacing; ending another version's canary is refused.
pub async fn change_canary_refuses_to_replace_and_is_safe_to_retry(store: &dyn ModelStore) {
    let key = unique_key("changecanary");
    for _ in 0..3 {
        put(store, &key, None, VALID_SPEC).await;
    }
    store.activate(&key, 1).await.unwrap();
    let c2 = Canary {
        version: 2,
        share: 0.1,
        auto: None,
    };
    let c3 = Canary {
        version: 3,
        share: 0.2,
        auto: None,
    };
    let start = |canary, replace| CanaryChange::Start { canary, replace };
    let rollout_revision = || async { store.rollout(&key).await.unwrap().map(|r| r.revision) };
    let first = store
        .change_canary(&key, start(c2.clone(), false))
        .await
        .unwrap();
    assert!(
        first.changed && first.before.is_none() && first.after == Some(c2.clone()),
        "{first:?}"
    );
    let before = rollout_revision().await;
    let again = store
        .change_canary(&key, start(c2.clone(), false))
        .await
        .unwrap();
    assert!(
        !again.changed && again.after == Some(c2.clone()),
        "{again:?}"
    );
    let err = store
        .change_canary(&key, start(c3.clone(), false))
        .await
        .expect_err("a second canary replaced the first");
    assert!(
        matches!(&err, Error::CanaryRunning { running, .. } if *running == c2),
        "{err:?}"
    );
    let err = store
        .change_canary(&key, CanaryChange::End { version: 3 })
        .await
        .expect_err("ending another version's canary succeeded");
    assert!(matches!(err, Error::CanaryRunning { .. }), "{err:?}");
    let err = store
        .change_canary(
            &key,
            start(
                Canary {
                    version: 9,
                    share: 0.1,
                    auto: None,
                },
                true,
            ),
        )
        .await
        .expect_err("a canary of a missing version started");
    assert!(
        matches!(err, Error::NoSuchVersion { version: 9, .. }),
        "{err:?}"
    );
    assert_eq!(rollout_revision().await, before, "a refused change wrote");
    let replaced = store
        .change_canary(&key, start(c3.clone(), true))
        .await
        .unwrap();
    assert!(
        replaced.changed && replaced.before == Some(c2) && replaced.after == Some(c3),
        "{replaced:?}"
    );
    let ended = store
        .change_canary(&key, CanaryChange::End { version: 3 })
        .await
        .unwrap();
    assert!(ended.changed && ended.after.is_none(), "{ended:?}");
    let before = rollout_revision().await;
    let retry = store
        .change_canary(&key, CanaryChange::End { version: 3 })
        .await
        .unwrap();
    assert!(!retry.changed && retry.after.is_none(), "{retry:?}");
    assert_eq!(rollout_revision().await, before, "a retried end wrote");
    assert_eq!(active_version(store, &key).await, Some(1));
}

/// `history`: every activation, rollback, promotion and canary or shadow change of a key is
/// recorded once, with what it did, who and when; a retry that changes nothing adds nothing;
/// newest first, within `limit`.
pub async fn history_records_every_change_with_who_and_when(store: &dyn ModelStore) {
    let key = unique_key("history");
    for _ in 0..3 {
        put(store, &key, None, VALID_SPEC).await;
    }
    assert!(store.history(&key, 10).await.unwrap().is_empty());
    store.activate(&key, 1).await.unwrap();
    store.activate(&key, 2).await.unwrap();
    store.rollback(&key).await.unwrap();
    let canary = Canary {
        version: 3,
        share: 0.25,
        auto: None,
    };
    let start = CanaryChange::Start {
        canary,
        replace: false,
    };
    store.change_canary(&key, start.clone()).await.unwrap();
    // A retry of the same start writes nothing, so it adds nothing to the history.
    store.change_canary(&key, start).await.unwrap();
    store.promote(&key).await.unwrap();
    store.set_shadow(&key, Some(2)).await.unwrap();
    store.set_shadow(&key, None).await.unwrap();
    store
        .move_active(&key, PointerMove::RollbackFrom { from: 3 })
        .await
        .unwrap();
    store
        .move_active(&key, PointerMove::RollbackFrom { from: 3 })
        .await
        .unwrap();

    let history = store.history(&key, 100).await.unwrap();
    let seen = |e: &keyscore::store::HistoryEntry| (e.action.clone(), e.version, e.previous);
    let a = |action: ChangeAction| action.as_str().to_string();
    // Changes of one pointer are in the order they were made (the CQL store orders the two
    // pointers' changes by time, to the millisecond).
    let moves: Vec<_> = history
        .iter()
        .filter(|e| e.kind().is_some_and(ChangeAction::moves_active))
        .map(seen)
        .collect();
    assert_eq!(
        moves,
        vec![
            (a(ChangeAction::Rollback), Some(1), Some(3)),
            (a(ChangeAction::Promote), Some(3), Some(1)),
            (a(ChangeAction::Rollback), Some(1), Some(2)),
            (a(ChangeAction::Activate), Some(2), Some(1)),
            (a(ChangeAction::Activate), Some(1), None),
        ],
        "pointer moves in {history:#?}"
    );
    let rollout: Vec<_> = history
        .iter()
        .filter(|e| !e.kind().is_some_and(ChangeAction::moves_active))
        .map(|e| (e.action.clone(), e.version, e.share))
        .collect();
    assert_eq!(
        rollout,
        vec![
            (a(ChangeAction::ShadowEnd), Some(2), None),
            (a(ChangeAction::Shadow), Some(2), None),
            (a(ChangeAction::CanaryEnd), Some(3), None),
            (a(ChangeAction::Canary), Some(3), Some(0.25)),
        ],
        "rollout changes in {history:#?}"
    );
    for pair in history.windows(2) {
        assert!(
            pair[0].at_ms >= pair[1].at_ms,
            "newest first: {:?} before {:?}",
            pair[0],
            pair[1]
        );
    }
    for e in &history {
        assert!(
            e.by.as_deref().is_some_and(|by| by.starts_with("keyscore")),
            "who made {e:?}"
        );
        assert!(e.at_ms.is_some(), "when {e:?} was made");
    }
    let newest = store.history(&key, 2).await.unwrap();
    assert_eq!(newest, history[..2].to_vec(), "limit keeps the newest");
    assert!(store
        .history(&unique_key("history-none"), 10)
        .await
        .unwrap()
        .is_empty());
}
