//! An in-memory `ModelStore` for registry and pipeline tests, with fault injection and call
//! counters. Unlike the real backends it does not check specs on `put_version` when asked not
//! to, so tests can plant a version that fails to build (as a hand-written CQL insert could).

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Mutex,
    },
    time::Duration,
};

use async_trait::async_trait;
use keyscore::store::{
    ActiveModel, ChangeCursor, Changes, Error, KeySummary, ModelStore, StoredModel,
};

#[derive(Debug, Default)]
struct State {
    versions: BTreeMap<(String, i64), String>,
    active: BTreeMap<String, (i64, Option<i64>, i64)>,
    feed: Vec<String>,
}

/// A model store held in memory.
#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    state: Mutex<State>,
    /// When set, every call fails with `Error::Unavailable`.
    pub(crate) failing: AtomicBool,
    /// Calls to `active()`.
    pub(crate) active_calls: AtomicUsize,
    /// Delay added to `active()`, in milliseconds.
    pub(crate) active_delay_ms: AtomicUsize,
}

impl MemoryStore {
    fn check(&self) -> Result<(), Error> {
        if self.failing.load(Ordering::SeqCst) {
            Err(Error::unavailable("injected outage"))
        } else {
            Ok(())
        }
    }

    /// Stores a version without checking it (as a raw CQL insert could).
    pub(crate) fn plant(&self, key: &str, version: i64, spec: &str) {
        self.state
            .lock()
            .unwrap()
            .versions
            .insert((key.into(), version), spec.into());
    }

    /// Activates regardless of the outage flag (another writer reaching the database).
    pub(crate) fn activate_now(&self, key: &str, version: i64) {
        let mut s = self.state.lock().unwrap();
        assert!(s.versions.contains_key(&(key.to_string(), version)));
        let seq = s.feed.len() as i64 + 1;
        let previous = s.active.get(key).map(|a| a.0);
        s.active.insert(key.into(), (version, previous, seq));
        s.feed.push(key.into());
    }
}

#[async_trait]
impl ModelStore for MemoryStore {
    fn describe(&self) -> String {
        "memory://".into()
    }

    async fn init(&self) -> Result<(), Error> {
        self.check()
    }

    async fn insert_version(
        &self,
        key: &str,
        version: Option<i64>,
        spec_json: &str,
    ) -> Result<i64, Error> {
        self.check()?;
        let mut s = self.state.lock().unwrap();
        let v = version.unwrap_or_else(|| {
            s.versions
                .keys()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| *v)
                .max()
                .unwrap_or(0)
                + 1
        });
        if s.versions.contains_key(&(key.to_string(), v)) {
            return Err(Error::VersionExists {
                key: key.into(),
                version: v,
            });
        }
        s.versions.insert((key.into(), v), spec_json.into());
        Ok(v)
    }

    async fn activate(&self, key: &str, version: i64) -> Result<(), Error> {
        self.check()?;
        if !self
            .state
            .lock()
            .unwrap()
            .versions
            .contains_key(&(key.to_string(), version))
        {
            return Err(Error::NoSuchVersion {
                key: key.into(),
                version,
            });
        }
        self.activate_now(key, version);
        Ok(())
    }

    async fn rollback(&self, key: &str) -> Result<i64, Error> {
        self.check()?;
        let previous = self.state.lock().unwrap().active.get(key).and_then(|a| a.1);
        let Some(previous) = previous else {
            return Err(Error::NothingToRollBack { key: key.into() });
        };
        self.activate_now(key, previous);
        Ok(previous)
    }

    async fn active(&self, key: &str) -> Result<Option<ActiveModel>, Error> {
        self.active_calls.fetch_add(1, Ordering::SeqCst);
        let delay = self.active_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay as u64)).await;
        }
        self.check()?;
        let s = self.state.lock().unwrap();
        Ok(s.active.get(key).map(|(version, _, revision)| ActiveModel {
            model: StoredModel {
                key: key.into(),
                version: *version,
                spec_json: s.versions[&(key.to_string(), *version)].clone(),
            },
            revision: *revision,
        }))
    }

    async fn version(&self, key: &str, version: i64) -> Result<Option<StoredModel>, Error> {
        self.check()?;
        let s = self.state.lock().unwrap();
        Ok(s.versions
            .get(&(key.to_string(), version))
            .map(|spec| StoredModel {
                key: key.into(),
                version,
                spec_json: spec.clone(),
            }))
    }

    async fn list(&self) -> Result<Vec<KeySummary>, Error> {
        self.check()?;
        let s = self.state.lock().unwrap();
        let mut out: BTreeMap<String, KeySummary> = BTreeMap::new();
        for (k, v) in s.versions.keys() {
            out.entry(k.clone())
                .or_insert_with(|| KeySummary {
                    key: k.clone(),
                    active: s.active.get(k).map(|a| a.0),
                    versions: Vec::new(),
                })
                .versions
                .push(*v);
        }
        Ok(out.into_values().collect())
    }

    async fn cursor(&self) -> Result<ChangeCursor, Error> {
        self.check()?;
        Ok(ChangeCursor(self.state.lock().unwrap().feed.len() as i64))
    }

    async fn changes_since(&self, cursor: ChangeCursor) -> Result<Changes, Error> {
        self.check()?;
        let s = self.state.lock().unwrap();
        let from = usize::try_from(cursor.0).unwrap_or(0).min(s.feed.len());
        let mut keys: Vec<String> = s.feed[from..].to_vec();
        keys.sort();
        keys.dedup();
        Ok(Changes {
            keys,
            next: ChangeCursor(s.feed.len() as i64),
        })
    }
}
