//! Loading: reading a key's active version from the store and building it off the async
//! reactor, one key at a time (a first use) or a batch's missing keys together (one store call
//! and one trip to the blocking pool for the whole batch).

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc},
    time::SystemTime,
};

use futures::FutureExt as _;
use tracing::{debug, info, warn};

use super::{Error, Lookup, ModelRegistry, Resolved, ServedModel, Slot};
use crate::{
    model::{spec_checksum, ModelSpec},
    store,
    telemetry::ErrorChain,
};

/// What one key resolved to in a batch: its own slot, or why it could not be loaded.
type Loaded = Result<Slot, Arc<Error>>;

impl ModelRegistry {
    /// Reads and builds the active version of `key`.
    pub(super) async fn load(&self, key: &str) -> Result<Slot, Error> {
        self.stats.loads.inc();
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

    /// The models that score records with each of `keys` (distinct keys, as a batch has them),
    /// in order: each key's own model, else the fallback key's. Keys are looked up as
    /// [`ModelRegistry::lookup_many`] does; the fallback key once for the whole call.
    pub async fn resolve_many(&self, keys: &[&str]) -> Vec<Result<Resolved, Arc<Error>>> {
        let looked = self.lookup_many(keys).await;
        let mut fallback: Option<Option<Arc<ServedModel>>> = None;
        let mut out = Vec::with_capacity(keys.len());
        for (key, own) in keys.iter().zip(looked) {
            let own = match own {
                Ok(own) => own,
                Err(err) => {
                    out.push(Err(err));
                    continue;
                }
            };
            if let Some(model) = own.model {
                out.push(Ok(Resolved::Own(model)));
                continue;
            }
            let fallback_model = match self.config.fallback_key.as_deref() {
                Some(fb) if fb != *key => {
                    if fallback.is_none() {
                        fallback = Some(match self.slot(fb).await {
                            Ok(slot) => slot.model,
                            Err(err) => {
                                out.push(Err(Arc::new(err)));
                                continue;
                            }
                        });
                    }
                    fallback.clone().flatten()
                }
                _ => None,
            };
            out.push(Ok(match fallback_model {
                Some(model) => Resolved::Fallback(model),
                None => Resolved::Missing(match own.refused {
                    Some(why) => why,
                    None => format!("no active model for key '{key}' and no fallback model").into(),
                }),
            }));
        }
        out
    }

    /// Each of `keys`' own model (distinct keys, as a batch has them), in order, with no
    /// fallback: what the fallback chain is resolved from. A key without a usable model is
    /// cached as such (a negative entry), and the watcher replaces that entry when the key is
    /// activated, like any swap. Keys already cached cost one lock-free lookup each; the rest
    /// are loaded together: one store call for all of them and one trip to the blocking pool
    /// to build them. Concurrent loads of the same key are coalesced. A key that fails to load
    /// fails alone: when the batched read fails, each missing key is retried on its own.
    pub async fn lookup_many(&self, keys: &[&str]) -> Vec<Result<Lookup, Arc<Error>>> {
        let mut slots: Vec<Option<Loaded>> = Vec::with_capacity(keys.len());
        let mut hits = 0;
        for (key, hot) in keys.iter().zip(self.hot.get_many(keys)) {
            let slot = match hot {
                Some(slot) => {
                    hits += 1;
                    self.touch(key).await;
                    Some(slot)
                }
                None => self.cold_slot(key, &mut hits).await,
            };
            slots.push(slot.map(Ok));
        }
        self.stats.hits.inc_by(hits);
        let missing: Vec<&str> = keys
            .iter()
            .zip(&slots)
            .filter(|(_, s)| s.is_none())
            .map(|(k, _)| *k)
            .collect();
        if !missing.is_empty() {
            let mut loaded = self.load_many(&missing).await;
            for (slot, key) in slots.iter_mut().zip(keys) {
                if slot.is_none() {
                    *slot = loaded.remove(*key);
                }
            }
        }
        slots
            .into_iter()
            .map(|slot| {
                slot.expect("every key was looked up or loaded")
                    .map(|slot| Lookup {
                        model: slot.model,
                        refused: slot.refused,
                    })
            })
            .collect()
    }

    /// Loads `keys` (none of them in the hot copy) together and caches them. Returns each
    /// key's slot, or why it could not be loaded.
    ///
    /// Each key goes through the cache's own loading (`try_get_with`), so a key that another
    /// task is already loading is waited for, not read again; the keys this call does load
    /// share one batched read and build ([`ModelRegistry::read_and_build`]), run once, on the
    /// first key that needs it.
    async fn load_many(&self, keys: &[&str]) -> HashMap<String, Loaded> {
        self.stats.misses.inc_by(keys.len() as u64);
        let started_at = self.poll_seq.load(Ordering::SeqCst);
        let batch = self.read_and_build(keys).shared();
        let loads = keys.iter().map(|key| {
            let batch = batch.clone();
            async move {
                let slot = self
                    .cache
                    .try_get_with_by_ref(*key, async move {
                        match batch.await.get(*key) {
                            Some(slot) => Ok(slot.clone()),
                            // The batched read failed: this key is read on its own, so a key
                            // that cannot be read fails alone.
                            None => self.load(key).await,
                        }
                    })
                    .await
                    .map_err(|err| match Arc::try_unwrap(err) {
                        Ok(err) => Arc::new(err),
                        Err(shared) => Arc::new(Error::Loader(shared)),
                    });
                (*key, slot)
            }
        });
        let mut out = HashMap::with_capacity(keys.len());
        for (key, slot) in futures::future::join_all(loads).await {
            let slot = match slot {
                Ok(slot) => {
                    self.hot.publish(key, &slot);
                    Ok(self.reload_if_changed(key, slot, started_at).await)
                }
                Err(err) => Err(err),
            };
            out.insert(key.to_string(), slot);
        }
        out
    }

    /// Reads and builds `keys` together: one store read, one trip to the blocking pool. Empty
    /// when the read or the build failed (each key is then loaded on its own).
    async fn read_and_build(&self, keys: &[&str]) -> Arc<HashMap<String, Slot>> {
        let owned: Vec<String> = keys.iter().map(|k| (*k).to_string()).collect();
        let actives = match self.store_call(self.store.active_many(&owned)).await {
            Ok(actives) => actives,
            Err(err) => {
                debug!(keys = keys.len(), error = %ErrorChain(&err), "Batched load failed; loading keys one by one.");
                return Arc::default();
            }
        };
        self.stats.loads.inc_by(keys.len() as u64);
        self.refresh_rollouts(keys).await;
        let built = match build_many(actives.iter().flatten().cloned().collect()).await {
            Ok(built) => built,
            Err(err) => {
                warn!(error = %ErrorChain(&err), "Building a batch of models failed; loading keys one by one.");
                return Arc::default();
            }
        };
        let mut built = built.into_iter();
        let slots = keys
            .iter()
            .zip(&actives)
            .map(|(key, active)| {
                let slot = match active {
                    None => Slot {
                        revision: 0,
                        model: None,
                        refused: None,
                    },
                    Some(active) => self.slot_of(key, active, built.next().expect("one per model")),
                };
                ((*key).to_string(), slot)
            })
            .collect();
        Arc::new(slots)
    }

    /// A change seen while `key` was loading may have been read before the load's store read;
    /// re-read it so the newer revision wins.
    async fn reload_if_changed(&self, key: &str, slot: Slot, started_at: u64) -> Slot {
        if self
            .changed_at_poll
            .get(key)
            .is_none_or(|seq| seq < started_at)
        {
            return slot;
        }
        match self.refresh_key(key).await {
            Ok(now) => now.unwrap_or(slot),
            Err(err) => {
                warn!(key, error = %ErrorChain(&err), "Re-reading a key changed during its load failed; it is re-read at the next poll.");
                slot
            }
        }
    }

    /// The slot for a key whose active version was built (or refused) in a batch.
    fn slot_of(
        &self,
        key: &str,
        active: &store::ActiveModel,
        built: Result<ServedModel, crate::model::Error>,
    ) -> Slot {
        let (version, revision) = (active.model.version, active.revision);
        match built {
            Ok(served) => {
                debug!(key, version, "Loaded model.");
                Slot {
                    revision,
                    model: Some(Arc::new(served)),
                    refused: None,
                }
            }
            Err(err) => {
                self.note_refused(key, version, revision, &err);
                Slot {
                    revision,
                    model: None,
                    refused: Some(
                        format!("{key} version {version} is active but was refused: {err}").into(),
                    ),
                }
            }
        }
    }
}

/// Builds a stored version off the async reactor (large forests take milliseconds).
pub(super) async fn build_served(
    active: store::ActiveModel,
) -> Result<Result<ServedModel, crate::model::Error>, Error> {
    tokio::task::spawn_blocking(move || build(active))
        .await
        .map_err(|err| Error::Loader(Arc::new(err)))
}
/// Builds many stored versions in one trip to the blocking pool: one result per model, in
/// order.
pub(super) async fn build_many(
    actives: Vec<store::ActiveModel>,
) -> Result<Vec<Result<ServedModel, crate::model::Error>>, Error> {
    tokio::task::spawn_blocking(move || actives.into_iter().map(build).collect())
        .await
        .map_err(|err| Error::Loader(Arc::new(err)))
}

/// Decodes and builds one stored version.
fn build(active: store::ActiveModel) -> Result<ServedModel, crate::model::Error> {
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
}
