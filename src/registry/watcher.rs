//! The watcher: polls the store's change feed, re-reads changed keys that are cached, builds a
//! newer revision off the hot path and swaps it in; and the periodic resync of every cached key.

use std::{
    sync::{atomic::Ordering, Arc},
    time::SystemTime,
};

use moka::ops::compute::Op;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{build_served, status::Swap, Error, ModelRegistry, Slot};
use crate::telemetry::ErrorChain;

impl ModelRegistry {
    /// Re-reads `key` if it is cached and swaps in a newer revision. Returns the slot now
    /// cached, or `None` when the key is not cached.
    pub(super) async fn refresh_key(&self, key: &str) -> Result<Option<Slot>, Error> {
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
            self.stats.swaps.inc();
            info!(key, from = ?from, to = model.version, "Swapped in model.");
            self.swaps.push(Swap {
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
        self.stats.polls.inc();
        let polls = self.stats.polls.get();
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
                    warn!(error = %ErrorChain(&err), "Model store poll failed; serving the models already loaded.");
                }
            }
        })
    }
}
