//! A store that fails on demand, for registry and pipeline tests: [`FaultyStore`] wraps a real
//! engine (the `memory://` one by default), forwards every call to it, and injects outages,
//! per-key failures and delays, and counts calls.
//!
//! ```
//! use std::sync::atomic::Ordering;
//! use keyscore::store::ModelStore;
//! use keyscore_testkit::{faulty::FaultyStore, specs::VALID_SPEC};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = FaultyStore::new().with_down_keys(["oslo"]);
//! store.put_version("paris", None, VALID_SPEC).await.unwrap();
//! assert!(store.active("oslo").await.unwrap_err().is_transient());
//! store.failing.store(true, Ordering::SeqCst);
//! assert!(store.active("paris").await.unwrap_err().is_transient());
//! # }
//! ```

use std::{
    collections::HashSet,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::Duration,
};

use async_trait::async_trait;
use keyscore::store::{
    Activation, ActiveModel, Canary, CanaryChange, CanaryChanged, ChangeCursor, Changes, Error,
    HistoryEntry, KeyPage, KeySummary, MemoryModelStore, ModelStore, Moved, Pointer, PointerMove,
    QualityRow, Rollout, StoredModel, Verdict,
};

use crate::conformance::Fixture;

/// A [`ModelStore`] over `S` that fails, counts and slows down calls on demand. Every call,
/// the provided ones included, goes to `S`, so the engine's own behaviour is what tests see.
#[derive(Debug, Default)]
pub struct FaultyStore<S = MemoryModelStore> {
    inner: S,
    /// When set, every call fails with [`Error::Unavailable`], as when the database is
    /// unreachable.
    pub failing: AtomicBool,
    /// Calls to `active()`, failed ones included.
    pub active_calls: AtomicUsize,
    /// Delay added to `active()` and `active_many()`, in milliseconds, before they answer or
    /// fail.
    pub active_delay_ms: AtomicUsize,
    /// Calls to `active_many()` (one per batch of keys), failed ones included.
    pub active_many_calls: AtomicUsize,
    /// Keys asked for by `active_many()`, over all its calls.
    pub active_many_keys: AtomicUsize,
    /// Keys whose every call fails with [`Error::Unavailable`], as when their replicas are down.
    down: HashSet<String>,
}

impl FaultyStore {
    /// Over a new, empty `memory://` store, with no fault injected.
    pub fn new() -> Self {
        Self::over(MemoryModelStore::new())
    }
}

impl<S: ModelStore> FaultyStore<S> {
    /// Over `inner`, with no fault injected.
    pub fn over(inner: S) -> Self {
        Self {
            inner,
            failing: AtomicBool::new(false),
            active_calls: AtomicUsize::new(0),
            active_delay_ms: AtomicUsize::new(0),
            active_many_calls: AtomicUsize::new(0),
            active_many_keys: AtomicUsize::new(0),
            down: HashSet::new(),
        }
    }

    /// Makes every call about one of `keys` fail with [`Error::Unavailable`].
    pub fn with_down_keys<K: Into<String>>(mut self, keys: impl IntoIterator<Item = K>) -> Self {
        self.down.extend(keys.into_iter().map(Into::into));
        self
    }

    /// The wrapped store, reached without any fault: another writer that still reaches the
    /// database during an outage.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Stores a version without checking it (as a hand-written database insert could), with
    /// the engine's `insert_version`, regardless of faults. Panics if the engine refuses.
    pub async fn plant(&self, key: &str, version: i64, spec: &str) {
        self.inner
            .insert_version(key, Some(version), spec)
            .await
            .unwrap_or_else(|err| panic!("planting {key} version {version}: {err}"));
    }

    /// Activates `version` of `key` regardless of faults (another writer reaching the
    /// database). Panics if the engine refuses.
    pub async fn activate_now(&self, key: &str, version: i64) {
        self.inner
            .activate(key, version)
            .await
            .unwrap_or_else(|err| panic!("activating {key} version {version}: {err}"));
    }

    fn check(&self) -> Result<(), Error> {
        if self.failing.load(Ordering::SeqCst) {
            Err(Error::unavailable("injected outage"))
        } else {
            Ok(())
        }
    }

    fn check_key(&self, key: &str) -> Result<(), Error> {
        self.check()?;
        if self.down.contains(key) {
            Err(Error::unavailable(format!("injected outage of key {key}")))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl<S: ModelStore> ModelStore for FaultyStore<S> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn init(&self) -> Result<(), Error> {
        self.check()?;
        self.inner.init().await
    }

    async fn put_version(
        &self,
        key: &str,
        version: Option<i64>,
        spec_json: &str,
    ) -> Result<i64, Error> {
        self.check_key(key)?;
        self.inner.put_version(key, version, spec_json).await
    }

    async fn insert_version(
        &self,
        key: &str,
        version: Option<i64>,
        spec_json: &str,
    ) -> Result<i64, Error> {
        self.check_key(key)?;
        self.inner.insert_version(key, version, spec_json).await
    }

    async fn activate(&self, key: &str, version: i64) -> Result<(), Error> {
        self.check_key(key)?;
        self.inner.activate(key, version).await
    }

    async fn rollback(&self, key: &str) -> Result<i64, Error> {
        self.check_key(key)?;
        self.inner.rollback(key).await
    }

    async fn move_active(&self, key: &str, change: PointerMove) -> Result<Moved, Error> {
        self.check_key(key)?;
        self.inner.move_active(key, change).await
    }

    async fn change_canary(&self, key: &str, change: CanaryChange) -> Result<CanaryChanged, Error> {
        self.check_key(key)?;
        self.inner.change_canary(key, change).await
    }

    async fn history(&self, key: &str, limit: usize) -> Result<Vec<HistoryEntry>, Error> {
        self.check_key(key)?;
        self.inner.history(key, limit).await
    }

    async fn activation(&self, key: &str) -> Result<Option<Activation>, Error> {
        self.check_key(key)?;
        self.inner.activation(key).await
    }

    async fn active(&self, key: &str) -> Result<Option<ActiveModel>, Error> {
        self.active_calls.fetch_add(1, Ordering::SeqCst);
        let delay = self.active_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay as u64)).await;
        }
        self.check_key(key)?;
        self.inner.active(key).await
    }

    async fn active_many(&self, keys: &[String]) -> Result<Vec<Option<ActiveModel>>, Error> {
        self.active_many_calls.fetch_add(1, Ordering::SeqCst);
        self.active_many_keys
            .fetch_add(keys.len(), Ordering::SeqCst);
        let delay = self.active_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay as u64)).await;
        }
        // One key down fails the whole batched read, as one failed read fails a real batch.
        for key in keys {
            self.check_key(key)?;
        }
        self.inner.active_many(keys).await
    }

    async fn version(&self, key: &str, version: i64) -> Result<Option<StoredModel>, Error> {
        self.check_key(key)?;
        self.inner.version(key, version).await
    }

    async fn list(&self) -> Result<Vec<KeySummary>, Error> {
        self.check()?;
        self.inner.list().await
    }

    async fn pointers(&self, keys: &[String]) -> Result<Vec<Option<Pointer>>, Error> {
        for key in keys {
            self.check_key(key)?;
        }
        self.inner.pointers(keys).await
    }

    async fn versions(&self, key: &str) -> Result<Vec<i64>, Error> {
        self.check_key(key)?;
        self.inner.versions(key).await
    }

    async fn delete_versions(&self, key: &str, versions: &[i64]) -> Result<(), Error> {
        self.check_key(key)?;
        self.inner.delete_versions(key, versions).await
    }

    async fn key_page(&self, after: Option<&str>, limit: usize) -> Result<KeyPage, Error> {
        self.check()?;
        self.inner.key_page(after, limit).await
    }

    async fn cursor(&self) -> Result<ChangeCursor, Error> {
        self.check()?;
        self.inner.cursor().await
    }

    async fn changes_since(&self, cursor: ChangeCursor) -> Result<Changes, Error> {
        self.check()?;
        self.inner.changes_since(cursor).await
    }

    async fn rollout(&self, key: &str) -> Result<Option<Rollout>, Error> {
        self.check_key(key)?;
        self.inner.rollout(key).await
    }

    async fn set_canary(&self, key: &str, canary: Option<Canary>) -> Result<(), Error> {
        self.check_key(key)?;
        self.inner.set_canary(key, canary).await
    }

    async fn set_shadow(&self, key: &str, version: Option<i64>) -> Result<(), Error> {
        self.check_key(key)?;
        self.inner.set_shadow(key, version).await
    }

    async fn promote(&self, key: &str) -> Result<i64, Error> {
        self.check_key(key)?;
        self.inner.promote(key).await
    }

    async fn decide_canary(
        &self,
        key: &str,
        version: i64,
        verdict: Verdict,
        evidence: &str,
    ) -> Result<CanaryChanged, Error> {
        self.check_key(key)?;
        self.inner
            .decide_canary(key, version, verdict, evidence)
            .await
    }

    async fn record_quality(&self, rows: &[QualityRow]) -> Result<(), Error> {
        self.check()?;
        for row in rows {
            self.check_key(&row.key)?;
        }
        self.inner.record_quality(rows).await
    }

    async fn write_quality(&self, rows: &[QualityRow]) -> Result<(), Error> {
        self.check()?;
        for row in rows {
            self.check_key(&row.key)?;
        }
        self.inner.write_quality(rows).await
    }

    async fn quality(
        &self,
        key: &str,
        version: Option<i64>,
        limit: usize,
    ) -> Result<Vec<QualityRow>, Error> {
        self.check_key(key)?;
        self.inner.quality(key, version, limit).await
    }
}

impl<S: ModelStore> Fixture for FaultyStore<S> {
    fn store(&self) -> &dyn ModelStore {
        self
    }
}
