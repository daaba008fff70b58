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

mod config;
mod hot;
mod load;
mod rollouts;
mod status;
mod watcher;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};

use tokio::sync::Mutex as AsyncMutex;
use tracing::{info, warn};

pub use config::{RegistryConfig, StoreConfig};
pub use rollouts::{CanaryModel, KeyRollout};
pub use status::{KeyStatus, RegistryStats, Swap};

use crate::{
    model::Model,
    store::{self, ChangeCursor, ModelStore},
    telemetry::ErrorChain,
};
use hot::HotSnapshot;
use load::build_served;
use rollouts::RolloutTable;
use status::{Refused, SwapLog};

/// Whether this hot hit should also touch moka: every [`TOUCH_EVERY`]th hit of the calling
/// thread, counted in a thread-local so the hit path writes no shared cache line for it.
fn next_touch() -> bool {
    thread_local! {
        static HITS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    HITS.with(|hits| {
        let n = hits.get().wrapping_add(1);
        hits.set(n);
        n % TOUCH_EVERY == 0
    })
}

/// Weighs a cached slot for the cache's two bounds at once: at least its real size in bytes,
/// so the cache never holds more than `max_bytes`; and at least `max_bytes / capacity`, so it
/// never holds more than `capacity` keys.
fn slot_weigher(config: &RegistryConfig) -> impl Fn(&String, &Slot) -> u32 + Send + Sync + 'static {
    let floor = config.max_bytes / config.capacity.max(1);
    move |key: &String, slot: &Slot| {
        let bytes = slot.heap_bytes() + key.len();
        u32::try_from((bytes as u64).max(floor)).unwrap_or(u32::MAX)
    }
}

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

impl ServedModel {
    /// Bytes this built version holds: the model, its key and checksum.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.key.len() + self.checksum.len() + self.model.heap_bytes()
    }
}

/// What the cache holds for a key: its model, or the fact that it has none usable.
#[derive(Debug, Clone)]
struct Slot {
    revision: i64,
    model: Option<Arc<ServedModel>>,
    /// Why a key has no model although the store names an active version.
    refused: Option<Arc<str>>,
}

impl Slot {
    /// Bytes the slot holds: the built model with its identity, or the refusal text.
    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.refused.as_ref().map_or(0, |r| r.len())
            + self.model.as_ref().map_or(0, |m| m.heap_bytes())
    }
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

/// A key's own model, as [`ModelRegistry::lookup_many`] finds it: no fallback applied.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The key's active model, when it has one that builds.
    pub model: Option<Arc<ServedModel>>,
    /// Why the key has no model although the store names an active version (it was
    /// refused); `None` when the key has no active version.
    pub refused: Option<Arc<str>>,
}

/// Registry errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store could not be read; the registry keeps serving what it has.
    #[error("model store")]
    Store(#[from] store::Error),
    /// A loader task failed unexpectedly (it panicked or was cancelled).
    #[error("model loader failed")]
    Loader(#[source] Arc<dyn std::error::Error + Send + Sync>),
}

/// A bounded cache of built models per key, kept current by a watcher.
#[derive(Debug)]
pub struct ModelRegistry {
    store: Arc<dyn ModelStore>,
    /// The loading, coalescing and eviction side of the cache.
    /// Keys hashed with foldhash, like the hot copy's: several times faster than SipHash on
    /// short keys, which a cold start of 10^5 keys hashes several times each.
    cache: moka::future::Cache<String, Slot, foldhash::fast::RandomState>,
    /// A lock-free copy of the cache that serves hits.
    hot: Arc<HotSnapshot>,
    config: RegistryConfig,
    cursor: AsyncMutex<Option<ChangeCursor>>,
    /// Poll sequence at which each key was last seen changed (bounded, short-lived).
    changed_at_poll: moka::sync::Cache<String, u64>,
    poll_seq: AtomicU64,
    refused: Refused,
    store_healthy: AtomicBool,
    swaps: SwapLog,
    stats: RegistryStats,
    rollouts: RolloutTable,
    /// Whether the last rollout read succeeded (failures are logged on the change only).
    rollout_reads_ok: AtomicBool,
}

/// Every this many hot hits, one read also goes through moka to keep its eviction informed.
const TOUCH_EVERY: u64 = 64;

impl ModelRegistry {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn ModelStore>, config: RegistryConfig) -> Self {
        let hot = Arc::new(HotSnapshot::new());
        let evicted = Arc::clone(&hot);
        Self {
            store,
            cache: moka::future::Cache::builder()
                .max_capacity(config.max_bytes.max(1))
                .weigher(slot_weigher(&config))
                .eviction_listener(move |key: Arc<String>, slot: Slot, cause| {
                    if cause != moka::notification::RemovalCause::Replaced {
                        evicted.remove(&key, slot.revision);
                    }
                })
                .build_with_hasher(foldhash::fast::RandomState::default()),
            hot,
            changed_at_poll: moka::sync::Cache::builder()
                .max_capacity(config.capacity)
                .time_to_live(Duration::from_secs(300))
                .build(),
            config,
            cursor: AsyncMutex::new(None),
            poll_seq: AtomicU64::new(0),
            refused: Refused::default(),
            store_healthy: AtomicBool::new(true),
            swaps: SwapLog::default(),
            stats: RegistryStats::default(),
            rollouts: RolloutTable::default(),
            rollout_reads_ok: AtomicBool::new(true),
        }
    }

    /// The store this registry reads.
    pub fn store(&self) -> &Arc<dyn ModelStore> {
        &self.store
    }

    /// The key whose model scores records no other level of the fallback chain scores.
    pub fn fallback_key(&self) -> Option<&str> {
        self.config.fallback_key.as_deref()
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

    /// Keys and bytes held in the cache, after its pending maintenance (evictions) has run.
    pub async fn cache_weight(&self) -> (u64, u64) {
        self.cache.run_pending_tasks().await;
        (self.cache.entry_count(), self.cache.weighted_size())
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

    /// `key`'s slot if it is cached. `hits` counts lookups for the caller, which adds them
    /// to the shared counter once per batch.
    async fn hot_slot(&self, key: &str, hits: &mut u64) -> Option<Slot> {
        if let Some(slot) = self.hot.get(key) {
            *hits += 1;
            self.touch(key).await;
            return Some(slot);
        }
        self.cold_slot(key, hits).await
    }

    /// After a hit on the hot copy: now and then tells moka that `key` is in use (hot reads
    /// bypass it), so its eviction keeps the popular keys.
    async fn touch(&self, key: &str) {
        if next_touch() {
            let _ = self.cache.get(key).await;
        }
    }

    /// `key`'s slot if moka holds it (and the hot copy does not), published to the hot copy.
    async fn cold_slot(&self, key: &str, hits: &mut u64) -> Option<Slot> {
        let slot = self.cache.get(key).await?;
        *hits += 1;
        self.hot.publish(key, &slot);
        Some(slot)
    }

    async fn slot(&self, key: &str) -> Result<Slot, Error> {
        let mut hits = 0;
        if let Some(slot) = self.hot_slot(key, &mut hits).await {
            self.stats.hits.inc_by(hits);
            return Ok(slot);
        }
        self.stats.misses.inc();
        let started_at = self.poll_seq.load(Ordering::SeqCst);
        let slot = self
            .cache
            .try_get_with_by_ref(key, self.load(key))
            .await
            .map_err(|err| match Arc::try_unwrap(err) {
                Ok(err) => err,
                Err(shared) => Error::Loader(shared),
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

    pub(super) async fn store_call<T>(
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
                self.stats.store_errors.inc();
                if err.is_transient() && self.store_healthy.swap(false, Ordering::Relaxed) {
                    warn!(error = %ErrorChain(&err), "Model store is unreachable.");
                }
                Err(err.into())
            }
        }
    }
}
