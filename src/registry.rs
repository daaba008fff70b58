//! The model registry: a bounded `moka` cache of built models per key, and the watcher that
//! swaps in new versions while records keep flowing.
//!
//! * First use of a key loads its active version lazily; concurrent misses for one key are
//!   coalesced into one store read and one build.
//! * A watcher polls the store's change feed (default every second). For a changed key that is
//!   cached it reads the active version and, if its revision is newer, builds it off the async
//!   reactor and swaps it in atomically: the old model scores until the new one is ready, and no
//!   reader ever sees a half-built model. A version that fails to build is refused: the old one
//!   keeps scoring, the failure is logged and counted, and the same revision is not retried.
//! * Every entry carries the store revision it was loaded at and an update only ever replaces an
//!   entry with a newer revision, so once a swap is observed the old version is never served
//!   again, even if a slow lazy load of the old version finishes later.
//! * Every `resync_every` polls the watcher re-reads every cached key, which catches pointer
//!   updates written by hand without a change-feed row.
//! * While the store is unreachable the registry keeps serving what it has and reports the
//!   store as unhealthy; it catches up when the store answers again.
//! * Beside each cached key the registry keeps its rollout (a canary and a shadow version,
//!   built; see [`crate::rollout`]), read when the key is loaded and re-read like the active
//!   version when the feed names the key. A failure to read a rollout is logged and leaves the
//!   key's current rollout in place; it never stops the key's active version from scoring.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use moka::ops::compute::Op;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::{
    model::{spec_checksum, Model, ModelSpec},
    rollout::{CanaryModel, KeyRollout, RolloutTable},
    store::{self, ChangeCursor, ModelStore},
};

/// A built model with the identity of the stored version it came from.
#[derive(Debug)]
pub struct ServedModel {
    /// The model key.
    pub key: String,
    /// The stored version.
    pub version: i64,
    /// The store revision of the activation that made this version active.
    pub revision: i64,
    /// [`spec_checksum`] of the stored spec text.
    pub checksum: String,
    /// The built model.
    pub model: Model,
    /// When this process built it.
    pub loaded_at: SystemTime,
}

/// What the cache holds for a key: its model, or the fact that it has none usable.
#[derive(Debug, Clone)]
struct Slot {
    revision: i64,
    model: Option<Arc<ServedModel>>,
    /// Why a key has no model although the store names an active version.
    refused: Option<Arc<str>>,
}

/// The model that scores a record's key.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// The key's own active model.
    Own(Arc<ServedModel>),
    /// The fallback key's model, because the key has none.
    Fallback(Arc<ServedModel>),
    /// Neither the key nor the fallback has a model; the text says why.
    Missing(Arc<str>),
}

/// Registry settings.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The most keys kept built at once.
    pub capacity: u64,
    /// The key whose model scores records whose own key has no active model.
    pub fallback_key: Option<String>,
    /// How often the watcher polls the change feed.
    pub refresh_interval: Duration,
    /// Every this many polls the watcher re-reads every cached key.
    pub resync_every: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            fallback_key: Some("_default".into()),
            refresh_interval: Duration::from_secs(1),
            resync_every: 30,
        }
    }
}

/// Counters for operators.
#[derive(Debug, Default)]
pub struct RegistryStats {
    /// Lazy loads from the store.
    pub loads: AtomicU64,
    /// Versions swapped in by the watcher.
    pub swaps: AtomicU64,
    /// Versions refused because they did not build.
    pub build_failures: AtomicU64,
    /// Failed store calls.
    pub store_errors: AtomicU64,
    /// Completed watcher polls.
    pub polls: AtomicU64,
    /// Lookups answered from the cache.
    pub hits: AtomicU64,
    /// Lookups that found no cache entry and waited for a load (concurrent misses of one key
    /// share one load).
    pub misses: AtomicU64,
}

/// One key as this process sees it, for status and version-lag reporting.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyStatus {
    /// The model key.
    pub key: String,
    /// The version this process scores with, if any.
    pub served_version: Option<i64>,
    /// The newest active version the store reported that this process refused, if any.
    pub refused_version: Option<i64>,
    /// When this process built the version it serves.
    pub served_since: Option<SystemTime>,
}

/// A swap the watcher made: `key` moved from `from` to `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct Swap {
    /// The model key.
    pub key: String,
    /// The version served before, if any.
    pub from: Option<i64>,
    /// The version served now.
    pub to: i64,
    /// When the new version was swapped in.
    pub at: SystemTime,
}

/// Registry errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store could not be read; the registry keeps serving what it has.
    #[error("model store: {0}")]
    Store(#[from] store::Error),
    /// A loader task failed unexpectedly.
    #[error("model loader failed: {0}")]
    Loader(String),
}

/// A bounded cache of built models per key, kept current by a watcher.
#[derive(Debug)]
pub struct ModelRegistry {
    store: Arc<dyn ModelStore>,
    /// The loading, coalescing and eviction side of the cache.
    cache: moka::future::Cache<String, Slot>,
    /// A lock-free copy of the cache that serves hits.
    hot: Arc<HotSnapshot>,
    config: RegistryConfig,
    cursor: tokio::sync::Mutex<Option<ChangeCursor>>,
    /// Poll sequence at which each key was last seen changed (bounded, short-lived).
    changed_at_poll: moka::sync::Cache<String, u64>,
    poll_seq: AtomicU64,
    refused: Mutex<HashMap<String, (i64, i64)>>,
    store_healthy: AtomicBool,
    swaps: Mutex<Vec<Swap>>,
    stats: RegistryStats,
    rollouts: RolloutTable,
    /// Whether the last rollout read succeeded (failures are logged on the change only).
    rollout_reads_ok: AtomicBool,
}

const MAX_SWAP_HISTORY: usize = 256;

/// Every this many hot hits, one read also goes through moka to keep its eviction informed.
const TOUCH_EVERY: u64 = 64;

/// A lock-free copy of the cache for the hit path: `ArcSwap` maps, sharded by key hash so a
/// publish copies one shard. Entries are only ever replaced by an equal or newer revision, so
/// the hot path can never go back to a version the watcher already swapped out.
#[derive(Debug)]
struct HotSnapshot {
    shards: Vec<ArcSwap<HashMap<String, Slot>>>,
}

const HOT_SHARDS: usize = 64;

impl HotSnapshot {
    fn new() -> Self {
        Self {
            shards: (0..HOT_SHARDS).map(|_| ArcSwap::default()).collect(),
        }
    }

    fn shard(&self, key: &str) -> &ArcSwap<HashMap<String, Slot>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[(h.finish() as usize) % HOT_SHARDS]
    }

    fn get(&self, key: &str) -> Option<Slot> {
        self.shard(key).load().get(key).cloned()
    }

    /// Serves `slot` for `key` from now on, unless a newer revision is already served.
    fn publish(&self, key: &str, slot: &Slot) {
        self.shard(key).rcu(|current| {
            if current
                .get(key)
                .is_some_and(|held| held.revision > slot.revision)
            {
                return Arc::clone(current);
            }
            let mut next = HashMap::clone(current);
            next.insert(key.to_string(), slot.clone());
            Arc::new(next)
        });
    }

    /// Drops `key` if its copy is at most `revision`.
    fn remove(&self, key: &str, revision: i64) {
        self.shard(key).rcu(|current| match current.get(key) {
            Some(held) if held.revision <= revision => {
                let mut next = HashMap::clone(current);
                next.remove(key);
                Arc::new(next)
            }
            _ => Arc::clone(current),
        });
    }
}

impl ModelRegistry {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn ModelStore>, config: RegistryConfig) -> Self {
        let hot = Arc::new(HotSnapshot::new());
        let evicted = Arc::clone(&hot);
        Self {
            store,
            cache: moka::future::Cache::builder()
                .max_capacity(config.capacity)
                .eviction_listener(move |key: Arc<String>, slot: Slot, cause| {
                    if cause != moka::notification::RemovalCause::Replaced {
                        evicted.remove(&key, slot.revision);
                    }
                })
                .build(),
            hot,
            changed_at_poll: moka::sync::Cache::builder()
                .max_capacity(config.capacity)
                .time_to_live(Duration::from_secs(300))
                .build(),
            config,
            cursor: tokio::sync::Mutex::new(None),
            poll_seq: AtomicU64::new(0),
            refused: Mutex::new(HashMap::new()),
            store_healthy: AtomicBool::new(true),
            swaps: Mutex::new(Vec::new()),
            stats: RegistryStats::default(),
            rollouts: RolloutTable::default(),
            rollout_reads_ok: AtomicBool::new(true),
        }
    }

    /// The store this registry reads.
    pub fn store(&self) -> &Arc<dyn ModelStore> {
        &self.store
    }

    /// The settings in use.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Counters for operators.
    pub fn stats(&self) -> &RegistryStats {
        &self.stats
    }

    /// Whether the last store call succeeded.
    pub fn store_healthy(&self) -> bool {
        self.store_healthy.load(Ordering::Relaxed)
    }

    /// Keys currently built in the cache.
    pub fn cached_keys(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Recent swaps, oldest first.
    pub fn swaps(&self) -> Vec<Swap> {
        self.swaps.lock().expect("swap log lock").clone()
    }

    /// The model for `key`, loading it on first use. `Ok(None)` when the key has no usable
    /// active model. Fails only when the key is not cached and the store cannot be read.
    pub async fn get(&self, key: &str) -> Result<Option<Arc<ServedModel>>, Error> {
        Ok(self.slot(key).await?.model)
    }

    /// The model that scores a record with `key`: its own, else the fallback's.
    pub async fn resolve(&self, key: &str) -> Result<Resolved, Error> {
        let own = self.slot(key).await?;
        if let Some(model) = own.model {
            return Ok(Resolved::Own(model));
        }
        if let Some(fallback) = self.config.fallback_key.as_deref() {
            if fallback != key {
                if let Some(model) = self.slot(fallback).await?.model {
                    return Ok(Resolved::Fallback(model));
                }
            }
        }
        let why: Arc<str> = match own.refused {
            Some(why) => why,
            None => format!("no active model for key '{key}' and no fallback model").into(),
        };
        Ok(Resolved::Missing(why))
    }

    async fn slot(&self, key: &str) -> Result<Slot, Error> {
        if let Some(slot) = self.hot.get(key) {
            let hits = self.stats.hits.fetch_add(1, Ordering::Relaxed);
            if hits % TOUCH_EVERY == 0 {
                // Hot reads bypass moka; tell it now and then which keys are in use, so its
                // eviction keeps the popular ones.
                let _ = self.cache.get(key).await;
            }
            return Ok(slot);
        }
        if let Some(slot) = self.cache.get(key).await {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            self.hot.publish(key, &slot);
            return Ok(slot);
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let started_at = self.poll_seq.load(Ordering::SeqCst);
        let slot = self
            .cache
            .try_get_with_by_ref(key, self.load(key))
            .await
            .map_err(|err| match Arc::try_unwrap(err) {
                Ok(err) => err,
                Err(shared) => Error::Loader(shared.to_string()),
            })?;
        self.hot.publish(key, &slot);
        // A change seen while this load ran may have been read before the load's store read;
        // reload so the newer revision wins.
        if self
            .changed_at_poll
            .get(key)
            .is_some_and(|seq| seq >= started_at)
        {
            return Ok(self.refresh_key(key).await?.unwrap_or(slot));
        }
        Ok(slot)
    }

    /// Reads and builds the active version of `key`.
    async fn load(&self, key: &str) -> Result<Slot, Error> {
        self.stats.loads.fetch_add(1, Ordering::Relaxed);
        let active = self.store_call(self.store.active(key)).await?;
        self.refresh_rollout(key).await;
        let Some(active) = active else {
            debug!(key, "Key has no active model.");
            return Ok(Slot {
                revision: 0,
                model: None,
                refused: None,
            });
        };
        let revision = active.revision;
        let version = active.model.version;
        match build_served(active).await? {
            Ok(served) => {
                info!(key, version, "Loaded model.");
                Ok(Slot {
                    revision,
                    model: Some(Arc::new(served)),
                    refused: None,
                })
            }
            Err(err) => {
                self.note_refused(key, version, revision, &err);
                Ok(Slot {
                    revision,
                    model: None,
                    refused: Some(
                        format!("{key} version {version} is active but was refused: {err}").into(),
                    ),
                })
            }
        }
    }

    /// Re-reads `key` if it is cached and swaps in a newer revision. Returns the slot now
    /// cached, or `None` when the key is not cached.
    async fn refresh_key(&self, key: &str) -> Result<Option<Slot>, Error> {
        if !self.cache.contains_key(key) {
            // Evicted (or never loaded): make sure no hot copy outlives it.
            self.hot.remove(key, i64::MAX);
            return Ok(None);
        }
        let Some(active) = self.store_call(self.store.active(key)).await? else {
            // The trait has no deactivation; a key without an active version keeps what it has.
            return Ok(self.cache.get(key).await);
        };
        let revision = active.revision;
        let version = active.model.version;
        if self.is_refused(key, revision) {
            return Ok(self.cache.get(key).await);
        }
        let cached_revision = self.cache.get(key).await.map(|s| s.revision);
        if cached_revision.is_some_and(|r| r >= revision) {
            return Ok(self.cache.get(key).await);
        }
        let new_slot = match build_served(active).await? {
            Ok(served) => Slot {
                revision,
                model: Some(Arc::new(served)),
                refused: None,
            },
            Err(err) => {
                self.note_refused(key, version, revision, &err);
                return Ok(self.cache.get(key).await);
            }
        };
        let mut swapped_from = None;
        let result = self
            .cache
            .entry_by_ref(key)
            .and_compute_with(|current| {
                let op = match current {
                    // Never load keys nobody asked for; never go back to an older revision.
                    None => Op::Nop,
                    Some(entry) if entry.value().revision >= revision => Op::Nop,
                    Some(entry) => {
                        swapped_from = Some(entry.value().model.as_ref().map(|m| m.version));
                        Op::Put(new_slot)
                    }
                };
                std::future::ready(op)
            })
            .await;
        let now = result.into_entry().map(|e| e.into_value());
        if let Some(slot) = &now {
            self.hot.publish(key, slot);
        }
        if let (Some(from), Some(model)) =
            (swapped_from, now.as_ref().and_then(|s| s.model.as_ref()))
        {
            self.stats.swaps.fetch_add(1, Ordering::Relaxed);
            info!(key, from = ?from, to = model.version, "Swapped in model.");
            let mut swaps = self.swaps.lock().expect("swap log lock");
            if swaps.len() == MAX_SWAP_HISTORY {
                swaps.remove(0);
            }
            swaps.push(Swap {
                key: key.to_string(),
                from,
                to: model.version,
                at: SystemTime::now(),
            });
        }
        Ok(now)
    }

    /// One watcher poll: reads the change feed and refreshes changed keys that are cached.
    /// Returns how many keys the feed reported.
    pub async fn poll(&self) -> Result<usize, Error> {
        let mut cursor = self.cursor.lock().await;
        let from = match *cursor {
            Some(c) => c,
            None => {
                let c = self.store_call(self.store.cursor()).await?;
                *cursor = Some(c);
                // Anything activated before the first cursor is read by lazy loads, but a
                // key loaded before this point must be checked once.
                self.resync().await?;
                c
            }
        };
        let changes = self.store_call(self.store.changes_since(from)).await?;
        let seq = self.poll_seq.fetch_add(1, Ordering::SeqCst) + 1;
        for key in &changes.keys {
            self.changed_at_poll.insert(key.clone(), seq);
        }
        for key in &changes.keys {
            self.refresh_key(key).await?;
            if self.cache.contains_key(key) {
                self.refresh_rollout(key).await;
            }
        }
        *cursor = Some(changes.next);
        drop(cursor);
        let polls = self.stats.polls.fetch_add(1, Ordering::Relaxed) + 1;
        if self.config.resync_every > 0 && polls % self.config.resync_every == 0 {
            self.resync().await?;
        }
        Ok(changes.keys.len())
    }

    /// Re-reads every cached key.
    pub async fn resync(&self) -> Result<(), Error> {
        let keys: Vec<String> = self.cache.iter().map(|(k, _)| (*k).clone()).collect();
        for key in keys {
            self.refresh_key(&key).await?;
            self.refresh_rollout(&key).await;
        }
        // Rollouts of evicted keys are kept: only keys that ever had a canary or shadow have
        // one (few), a reload re-reads it, and dropping them here raced with keys being
        // loaded (whose rollout is read before the model enters the cache).
        Ok(())
    }

    /// Polls every `refresh_interval` until `cancel` fires. Store failures are logged and
    /// retried at the next tick; the registry keeps serving what it has.
    pub fn spawn_watcher(
        self: &Arc<Self>,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let registry = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(registry.config.refresh_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if let Err(err) = registry.poll().await {
                    warn!(error = %err, "Model store poll failed; serving the models already loaded.");
                }
            }
        })
    }

    /// The canary and shadow versions this process applies to `key`, if any.
    pub fn rollout(&self, key: &str) -> Option<Arc<KeyRollout>> {
        self.rollouts
            .get(key)
            .filter(|r| r.canary.is_some() || r.shadow.is_some())
    }

    /// Re-reads the rollout of `key` and builds its canary and shadow versions when it changed.
    /// Failures leave the current rollout in place.
    async fn refresh_rollout(&self, key: &str) {
        let stored = match self.store.rollout(key).await {
            Ok(r) => {
                if !self.rollout_reads_ok.swap(true, Ordering::Relaxed) {
                    info!("Reading rollouts works again.");
                }
                r.unwrap_or_default()
            }
            Err(err) => {
                if self.rollout_reads_ok.swap(false, Ordering::Relaxed) {
                    warn!(key, error = %err, "Reading a key's canary and shadow versions failed; keys keep the ones they have.");
                }
                return;
            }
        };
        let current = self.rollouts.get(key);
        match &current {
            Some(c) if c.revision >= stored.revision => return,
            None if stored.is_empty() => return,
            _ => {}
        }
        let canary = match stored.canary {
            Some(c) => {
                let reuse = current
                    .as_ref()
                    .and_then(|r| r.canary.as_ref())
                    .filter(|m| m.model.version == c.version)
                    .map(|m| Arc::clone(&m.model));
                match reuse {
                    Some(model) => Some(model),
                    None => self.build_candidate(key, c.version, stored.revision).await,
                }
                .map(|model| CanaryModel {
                    model,
                    share: c.share,
                })
            }
            None => None,
        };
        let shadow = match stored.shadow {
            Some(v) => match current
                .as_ref()
                .and_then(|r| r.shadow.as_ref())
                .filter(|m| m.version == v)
            {
                Some(m) => Some(Arc::clone(m)),
                None => self.build_candidate(key, v, stored.revision).await,
            },
            None => None,
        };
        let before = current.as_deref().cloned().unwrap_or_default();
        let canary_now = canary.as_ref().map(|c| (c.model.version, c.share));
        let canary_before = before.canary.as_ref().map(|c| (c.model.version, c.share));
        if canary_now != canary_before {
            match canary_now {
                Some((version, share)) => info!(key, version, share, "Canary version scoring."),
                None => info!(key, "Canary ended."),
            }
        }
        let shadow_now = shadow.as_ref().map(|m| m.version);
        if shadow_now != before.shadow.as_ref().map(|m| m.version) {
            match shadow_now {
                Some(version) => info!(key, version, "Shadow version scoring."),
                None => info!(key, "Shadow ended."),
            }
        }
        self.rollouts.put(
            key,
            KeyRollout {
                revision: stored.revision,
                canary,
                shadow,
            },
        );
    }

    /// Reads and builds a canary or shadow version; `None` (logged and counted) when it is
    /// missing or does not build.
    async fn build_candidate(
        &self,
        key: &str,
        version: i64,
        revision: i64,
    ) -> Option<Arc<ServedModel>> {
        let stored = match self.store.version(key, version).await {
            Ok(Some(stored)) => stored,
            Ok(None) => {
                warn!(
                    key,
                    version, "Canary or shadow version does not exist; ignoring it."
                );
                return None;
            }
            Err(err) => {
                warn!(key, version, error = %err, "Reading a canary or shadow version failed.");
                return None;
            }
        };
        match build_served(store::ActiveModel {
            model: stored,
            revision,
        })
        .await
        {
            Ok(Ok(served)) => Some(Arc::new(served)),
            Ok(Err(err)) => {
                self.stats.build_failures.fetch_add(1, Ordering::Relaxed);
                error!(key, version, error = %err, "Refused canary or shadow version: it does not build; the active version keeps scoring.");
                None
            }
            Err(err) => {
                warn!(key, version, error = %err, "Building a canary or shadow version failed.");
                None
            }
        }
    }

    /// What this process serves per cached key, sorted by key.
    pub fn key_status(&self) -> Vec<KeyStatus> {
        let refused = self.refused.lock().expect("refused lock").clone();
        let mut out: Vec<KeyStatus> = self
            .cache
            .iter()
            .map(|(key, slot)| KeyStatus {
                key: (*key).clone(),
                served_version: slot.model.as_ref().map(|m| m.version),
                refused_version: refused
                    .get(key.as_str())
                    .filter(|(_, rev)| *rev > slot.revision)
                    .map(|(v, _)| *v),
                served_since: slot.model.as_ref().map(|m| m.loaded_at),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    fn is_refused(&self, key: &str, revision: i64) -> bool {
        self.refused
            .lock()
            .expect("refused lock")
            .get(key)
            .is_some_and(|(_, r)| *r == revision)
    }

    fn note_refused(&self, key: &str, version: i64, revision: i64, err: &crate::model::Error) {
        self.stats.build_failures.fetch_add(1, Ordering::Relaxed);
        error!(key, version, error = %err, "Refused model version: it does not build; the previous version keeps scoring.");
        self.refused
            .lock()
            .expect("refused lock")
            .insert(key.to_string(), (version, revision));
    }

    async fn store_call<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, store::Error>>,
    ) -> Result<T, Error> {
        match call.await {
            Ok(v) => {
                if !self.store_healthy.swap(true, Ordering::Relaxed) {
                    info!("Model store is reachable again.");
                }
                Ok(v)
            }
            Err(err) => {
                self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
                if err.is_transient() && self.store_healthy.swap(false, Ordering::Relaxed) {
                    warn!(error = %err, "Model store is unreachable.");
                }
                Err(err.into())
            }
        }
    }
}

/// Builds a stored version off the async reactor (large forests take milliseconds).
async fn build_served(
    active: store::ActiveModel,
) -> Result<Result<ServedModel, crate::model::Error>, Error> {
    tokio::task::spawn_blocking(move || {
        let text = active.model.spec_json;
        let model = ModelSpec::from_json(text.as_bytes())?.build()?;
        Ok(ServedModel {
            checksum: spec_checksum(&text),
            key: active.model.key,
            version: active.model.version,
            revision: active.revision,
            model,
            loaded_at: SystemTime::now(),
        })
    })
    .await
    .map_err(|err| Error::Loader(err.to_string()))
}
