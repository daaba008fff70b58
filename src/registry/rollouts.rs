//! Canary and shadow versions as this process applies them: the table of built candidate
//! models per key, and how it is refreshed from the store's [`Rollout`](crate::store::Rollout)
//! rows. The record split itself is [`crate::rollout`]'s.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, RwLock,
    },
};

use tracing::{error, info, warn};

use super::{build_served, ModelRegistry, ServedModel};
use crate::{rollout::in_canary, store, telemetry::ErrorChain};

/// A built canary version and its share.
#[derive(Debug, Clone)]
pub struct CanaryModel {
    /// The candidate, built.
    pub model: Arc<ServedModel>,
    /// The share of the key's records it scores, in (0, 1].
    pub share: f64,
}

impl CanaryModel {
    /// Whether the record whose id has JSON text `id_text` goes to the canary.
    pub fn takes(&self, id_text: &[u8]) -> bool {
        in_canary(id_text, self.share)
    }
}

/// A key's built rollout, as the scorer applies it.
#[derive(Debug, Clone, Default)]
pub struct KeyRollout {
    /// The store revision of the rollout.
    pub revision: i64,
    /// The canary, if one runs and its version built.
    pub canary: Option<CanaryModel>,
    /// The shadow, if one runs and its version built.
    pub shadow: Option<Arc<ServedModel>>,
    /// The canary version stored for the key that this process refused because it does not
    /// build, with why: an automatic canary is rolled back for it.
    pub refused_canary: Option<(i64, String)>,
}

/// Built rollouts per key; read on every batch, written by the watcher.
#[derive(Debug, Default)]
pub(super) struct RolloutTable {
    keys: RwLock<HashMap<String, Arc<KeyRollout>>>,
    /// Whether any key has an entry: most processes have no rollout at all, and then a batch's
    /// lookups cost one load each.
    any: AtomicBool,
}

impl RolloutTable {
    fn get(&self, key: &str) -> Option<Arc<KeyRollout>> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.keys.read().expect("rollout lock").get(key).cloned()
    }

    /// Every key with a rollout entry.
    fn keys(&self) -> Vec<String> {
        self.keys
            .read()
            .expect("rollout lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Replaces `key`'s rollout unless the held one is newer.
    fn put(&self, key: &str, rollout: KeyRollout) {
        let mut keys = self.keys.write().expect("rollout lock");
        if keys.get(key).is_some_and(|r| r.revision > rollout.revision) {
            return;
        }
        // An empty rollout is kept too: its revision stops an older read from reviving one.
        keys.insert(key.to_string(), Arc::new(rollout));
        self.any.store(true, Ordering::Release);
    }
}

impl ModelRegistry {
    /// Keys that have (or had) a canary or shadow in this process.
    pub(super) fn rollout_keys(&self) -> Vec<String> {
        self.rollouts.keys()
    }

    /// The canary versions refused because they do not build: (key, version, why), for every
    /// key with a rollout entry (few: canaries are started by hand).
    pub fn refused_canaries(&self) -> Vec<(String, i64, String)> {
        self.rollouts
            .keys()
            .into_iter()
            .filter_map(|key| {
                let r = self.rollouts.get(&key)?;
                let (version, why) = r.refused_canary.clone()?;
                Some((key, version, why))
            })
            .collect()
    }

    /// The canary and shadow versions this process applies to `key`, if any.
    pub fn rollout(&self, key: &str) -> Option<Arc<KeyRollout>> {
        self.rollouts
            .get(key)
            .filter(|r| r.canary.is_some() || r.shadow.is_some())
    }

    /// Re-reads the rollout of `key` and builds its canary and shadow versions when it changed.
    /// Failures leave the current rollout in place.
    pub(super) async fn refresh_rollout(&self, key: &str) {
        self.refresh_rollouts(&[key]).await;
    }

    /// [`ModelRegistry::refresh_rollout`] for many keys, with one store read for all of them.
    pub(super) async fn refresh_rollouts(&self, keys: &[&str]) {
        let owned: Vec<String> = keys.iter().map(|k| (*k).to_string()).collect();
        let stored = match self.store.rollouts(&owned).await {
            Ok(r) => {
                if !self.rollout_reads_ok.swap(true, Ordering::Relaxed) {
                    info!("Reading rollouts works again.");
                }
                r
            }
            Err(err) => {
                if self.rollout_reads_ok.swap(false, Ordering::Relaxed) {
                    warn!(keys = keys.len(), error = %ErrorChain(&err), "Reading canary and shadow versions failed; keys keep the ones they have.");
                }
                return;
            }
        };
        for (key, stored) in keys.iter().zip(stored) {
            self.apply_rollout(key, stored.unwrap_or_default()).await;
        }
    }

    /// Builds `key`'s canary and shadow versions from its stored rollout, when it changed.
    async fn apply_rollout(&self, key: &str, stored: store::Rollout) {
        let current = self.rollouts.get(key);
        match &current {
            Some(c) if c.revision >= stored.revision => return,
            None if stored.is_empty() => return,
            _ => {}
        }
        let mut refused_canary = None;
        let canary = match stored.canary {
            Some(c) => {
                let reuse = current
                    .as_ref()
                    .and_then(|r| r.canary.as_ref())
                    .filter(|m| m.model.version == c.version)
                    .map(|m| Arc::clone(&m.model));
                match reuse {
                    Some(model) => Some(model),
                    None => match self.build(key, c.version, stored.revision).await {
                        Ok(model) => Some(model),
                        Err(why) => {
                            refused_canary = why.map(|why| (c.version, why));
                            None
                        }
                    },
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
                None => self.build(key, v, stored.revision).await.ok(),
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
                refused_canary,
            },
        );
    }

    /// Reads and builds a canary or shadow version (failures logged and counted), saying why
    /// not: `Err(Some(why))` when the version does not build, `Err(None)` when it is missing
    /// or could not be read.
    async fn build(
        &self,
        key: &str,
        version: i64,
        revision: i64,
    ) -> Result<Arc<ServedModel>, Option<String>> {
        let stored = match self.store.version(key, version).await {
            Ok(Some(stored)) => stored,
            Ok(None) => {
                warn!(
                    key,
                    version, "Canary or shadow version does not exist; ignoring it."
                );
                return Err(None);
            }
            Err(err) => {
                warn!(key, version, error = %ErrorChain(&err), "Reading a canary or shadow version failed.");
                return Err(None);
            }
        };
        match build_served(store::ActiveModel {
            model: stored,
            revision,
        })
        .await
        {
            Ok(Ok(served)) => Ok(Arc::new(served)),
            Ok(Err(err)) => {
                self.stats.build_failures.inc();
                error!(key, version, error = %ErrorChain(&err), "Refused canary or shadow version: it does not build; the active version keeps scoring.");
                Err(Some(ErrorChain(&err).to_string()))
            }
            Err(err) => {
                warn!(key, version, error = %ErrorChain(&err), "Building a canary or shadow version failed.");
                Err(None)
            }
        }
    }
}
