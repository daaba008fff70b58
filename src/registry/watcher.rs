//! The watcher: polls the store's change feed, re-reads changed keys that are cached, builds a
//! newer revision off the hot path and swaps it in; and the periodic resync of every cached key.

use std::{
    sync::{atomic::Ordering, Arc},
    time::SystemTime,
};

use moka::ops::compute::Op;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{load::build_many, status::Swap, Error, ModelRegistry, ServedModel, Slot};
use crate::{store::READ_BATCH, telemetry::ErrorChain};

impl ModelRegistry {
    /// Re-reads `key` if it is cached and swaps in a newer revision. Returns the slot now
    /// cached, or `None` when the key is not cached.
    pub(super) async fn refresh_key(&self, key: &str) -> Result<Option<Slot>, Error> {
        self.refresh_keys(&[key.to_string()]).await?;
        Ok(self.cache.get(key).await)
    }

    /// Re-reads the cached ones of `keys` and swaps in newer revisions: their pointers first
    /// (one batched read, no specs), then the specs of the keys whose revision is newer than
    /// the one cached (one batched read), built in one trip to the blocking pool.
    pub(super) async fn refresh_keys(&self, keys: &[String]) -> Result<(), Error> {
        let mut cached = Vec::with_capacity(keys.len());
        let mut cached_revisions = Vec::with_capacity(keys.len());
        for key in keys {
            match self.cache.get(key).await {
                Some(slot) => {
                    cached.push(key.clone());
                    cached_revisions.push(slot.revision);
                }
                // Evicted (or never loaded): make sure no hot copy outlives it.
                None => self.hot.remove(key, i64::MAX),
            }
        }
        if cached.is_empty() {
            return Ok(());
        }
        let pointers = self.store_call(self.store.pointers(&cached)).await?;
        let newer: Vec<String> = cached
            .into_iter()
            .zip(cached_revisions)
            .zip(pointers)
            .filter_map(|((key, cached), pointer)| {
                // The trait has no deactivation; a key without an active version keeps what
                // it has. A revision already refused is not built again.
                let p = pointer?;
                (p.revision > cached && !self.is_refused(&key, p.revision)).then_some(key)
            })
            .collect();
        if newer.is_empty() {
            return Ok(());
        }
        let actives: Vec<_> = self
            .store_call(self.store.active_many(&newer))
            .await?
            .into_iter()
            .flatten()
            .collect();
        let built = build_many(actives.clone()).await?;
        for (active, built) in actives.into_iter().zip(built) {
            let key = active.model.key.as_str();
            let (version, revision) = (active.model.version, active.revision);
            match built {
                Ok(served) => self.swap_in(key, revision, served).await,
                Err(err) => self.note_refused(key, version, revision, &err),
            }
        }
        Ok(())
    }

    /// Replaces `key`'s cached model with `served` (of `revision`) if the key is still cached
    /// with an older revision.
    async fn swap_in(&self, key: &str, revision: i64, served: ServedModel) {
        let new_slot = Slot {
            revision,
            model: Some(Arc::new(served)),
            refused: None,
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
            self.stats.swaps.inc();
            info!(key, from = ?from, to = model.version, "Swapped in model.");
            self.swaps.push(Swap {
                key: key.to_string(),
                from,
                to: model.version,
                at: SystemTime::now(),
            });
        }
    }

    /// One watcher poll: reads the change feed and refreshes changed keys that are cached.
    /// Returns how many keys the feed reported.
    pub async fn poll(&self) -> Result<usize, Error> {
        let mut cursor = self.cursor.lock().await;
        let from = match cursor.as_ref() {
            Some(c) => c.clone(),
            None => {
                let c = self.store_call(self.store.cursor()).await?;
                *cursor = Some(c.clone());
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
        for chunk in changes.keys.chunks(READ_BATCH) {
            self.refresh_keys(chunk).await?;
        }
        for key in &changes.keys {
            if self.cache.contains_key(key) {
                self.refresh_rollout(key).await;
            }
        }
        *cursor = Some(changes.next);
        drop(cursor);
        self.stats.polls.inc();
        let polls = self.stats.polls.get();
        if self.config.resync_every > 0 && polls % self.config.resync_every == 0 {
            self.resync().await?;
        }
        Ok(changes.keys.len())
    }

    /// Re-reads every cached key's pointer, in batches, and swaps in newer revisions; and
    /// re-reads the rollouts of the keys that have one.
    pub async fn resync(&self) -> Result<(), Error> {
        let keys: Vec<String> = self.cache.iter().map(|(k, _)| (*k).clone()).collect();
        for chunk in keys.chunks(READ_BATCH) {
            self.refresh_keys(chunk).await?;
        }
        for key in self.rollout_keys() {
            if self.cache.contains_key(&key) {
                self.refresh_rollout(&key).await;
            }
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
                    warn!(error = %ErrorChain(&err), "Model store poll failed; serving the models already loaded.");
                }
            }
        })
    }
}
