//! The in-process backend, `memory://`: every version, pointer, rollout and feed row in one
//! map behind a mutex, gone when the process ends.
//!
//! It keeps the same model as the SQLite backend: the change feed is a list of keys, a
//! [`ChangeCursor`] is an index into it, and an activation's or rollout change's revision is
//! the index of its feed row, so revisions of a key strictly increase. Every change is made
//! under the one lock, so each is atomic and isolated (a canary verdict too: its check, pointer
//! move and canary end are one step). Quality rows are kept per key. It is meant for tests,
//! benchmarks and trying keyscore out; nothing in it survives a restart.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use super::auto::plan_verdict;
use super::{
    actor, check_canary, check_evidence, check_key, newest_first, plan_canary, plan_move,
    Activation, ActiveModel, Canary, CanaryChange, CanaryChanged, ChangeAction, ChangeCursor,
    Changes, Error, HistoryEntry, KeyPage, KeySummary, ModelStore, MovePlan, Moved,
    Pointer as StorePointer, PointerMove, QualityRow, Rollout, StoredModel, Verdict,
};

/// A key's active pointer.
#[derive(Debug, Clone)]
struct Pointer {
    version: i64,
    previous: Option<i64>,
    revision: i64,
    /// Who moved it last, and when (Unix milliseconds).
    by: String,
    at_ms: i64,
}

#[derive(Debug, Default)]
struct State {
    /// Spec text per (key, version).
    versions: BTreeMap<(String, i64), String>,
    active: BTreeMap<String, Pointer>,
    rollouts: BTreeMap<String, Rollout>,
    /// One key per change; a revision is a row's position plus one.
    feed: Vec<String>,
    /// Each key's changes, oldest first.
    history: BTreeMap<String, Vec<HistoryEntry>>,
    /// Each key's quality rows by (version, arm, window end).
    quality: BTreeMap<String, BTreeMap<(i64, String, i64), QualityRow>>,
}

impl State {
    fn active_model(&self, key: &str) -> Option<ActiveModel> {
        let pointer = self.active.get(key)?;
        Some(ActiveModel {
            model: StoredModel {
                key: key.to_string(),
                version: pointer.version,
                spec_json: self.versions[&(key.to_string(), pointer.version)].clone(),
            },
            revision: pointer.revision,
        })
    }

    fn has_version(&self, key: &str, version: i64) -> bool {
        self.versions.contains_key(&(key.to_string(), version))
    }

    fn has_key(&self, key: &str) -> bool {
        self.versions
            .range((key.to_string(), i64::MIN)..=(key.to_string(), i64::MAX))
            .next()
            .is_some()
    }

    fn require_version(&self, key: &str, version: i64) -> Result<(), Error> {
        if self.has_version(key, version) {
            Ok(())
        } else {
            Err(Error::NoSuchVersion {
                key: key.to_string(),
                version,
            })
        }
    }

    /// Appends a feed row for `key` with its history entry and returns its revision.
    fn announce(&mut self, key: &str, mut entry: HistoryEntry) -> i64 {
        self.feed.push(key.to_string());
        let revision = self.feed.len() as i64;
        entry.revision = revision;
        self.history.entry(key.to_string()).or_default().push(entry);
        revision
    }

    /// Points `key` at `version`; re-activating the active version keeps the rollback target.
    fn activate(&mut self, key: &str, action: ChangeAction, version: i64) {
        let previous = match self.active.get(key) {
            Some(p) if p.version == version => p.previous,
            Some(p) => Some(p.version),
            None => None,
        };
        self.point(key, action, version, previous, None);
    }

    /// Points `key` at `version`, remembering `previous`, and records the change (with the
    /// evidence of an automatic verdict, if it is one).
    fn point(
        &mut self,
        key: &str,
        action: ChangeAction,
        version: i64,
        previous: Option<i64>,
        evidence: Option<&str>,
    ) {
        let entry =
            HistoryEntry::now(action, Some(version), previous, None).with_evidence(evidence);
        let at_ms = entry.at_ms.unwrap_or_default();
        let revision = self.announce(key, entry);
        self.active.insert(
            key.to_string(),
            Pointer {
                version,
                previous,
                revision,
                by: actor(),
                at_ms,
            },
        );
    }

    /// Applies `edit` to `key`'s rollout and announces it (with the evidence of an automatic
    /// verdict, if it is one).
    fn change_rollout(&mut self, key: &str, edit: RolloutEdit, evidence: Option<&str>) {
        let before = self.rollouts.get(key).cloned().unwrap_or_default();
        let entry = match &edit {
            RolloutEdit::Canary(canary) => HistoryEntry::canary(canary.clone(), before.canary),
            RolloutEdit::Shadow(shadow) => HistoryEntry::shadow(*shadow, before.shadow),
        }
        .with_evidence(evidence);
        let revision = self.announce(key, entry);
        let rollout = self.rollouts.entry(key.to_string()).or_default();
        match edit {
            RolloutEdit::Canary(canary) => rollout.canary = canary,
            RolloutEdit::Shadow(shadow) => rollout.shadow = shadow,
        }
        rollout.revision = revision;
    }
}

/// A change of one half of a key's rollout.
#[derive(Debug, Clone)]
enum RolloutEdit {
    Canary(Option<Canary>),
    Shadow(Option<i64>),
}

/// A model store held in this process's memory (`memory://`).
#[derive(Debug, Default)]
pub struct MemoryModelStore {
    state: Mutex<State>,
}

impl MemoryModelStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change is applied after its checks, in one step, so a panic elsewhere cannot
        // leave a half-made change behind: a poisoned lock is safe to keep using.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl ModelStore for MemoryModelStore {
    fn describe(&self) -> String {
        "memory://".into()
    }

    async fn init(&self) -> Result<(), Error> {
        Ok(())
    }

    async fn insert_version(
        &self,
        key: &str,
        version: Option<i64>,
        spec_json: &str,
    ) -> Result<i64, Error> {
        let mut state = self.state();
        let version = match version {
            Some(v) if state.has_version(key, v) => {
                return Err(Error::VersionExists {
                    key: key.to_string(),
                    version: v,
                })
            }
            Some(v) => v,
            None => {
                let newest = state
                    .versions
                    .range((key.to_string(), i64::MIN)..=(key.to_string(), i64::MAX))
                    .next_back()
                    .map_or(0, |((_, v), _)| *v);
                newest + 1
            }
        };
        state
            .versions
            .insert((key.to_string(), version), spec_json.to_string());
        Ok(version)
    }

    async fn activate(&self, key: &str, version: i64) -> Result<(), Error> {
        check_key(key)?;
        let mut state = self.state();
        state.require_version(key, version)?;
        state.activate(key, ChangeAction::Activate, version);
        Ok(())
    }

    async fn rollback(&self, key: &str) -> Result<i64, Error> {
        check_key(key)?;
        let mut state = self.state();
        let Some(Pointer {
            version: current,
            previous: Some(previous),
            ..
        }) = state.active.get(key).cloned()
        else {
            if !state.has_key(key) {
                return Err(Error::UnknownKey {
                    key: key.to_string(),
                });
            }
            return Err(Error::NothingToRollBack {
                key: key.to_string(),
            });
        };
        state.point(key, ChangeAction::Rollback, previous, Some(current), None);
        Ok(previous)
    }

    async fn move_active(&self, key: &str, change: PointerMove) -> Result<Moved, Error> {
        check_key(key)?;
        let mut state = self.state();
        if !state.has_key(key) {
            return Err(Error::UnknownKey {
                key: key.to_string(),
            });
        }
        let current = state.active.get(key).map(|p| (p.version, p.previous));
        match plan_move(key, current, change)? {
            MovePlan::Done(moved) => Ok(moved),
            MovePlan::Write {
                version,
                previous,
                outcome,
            } => {
                state.require_version(key, version)?;
                let action = change.action();
                state.point(key, action, version, previous, None);
                Ok(outcome)
            }
        }
    }

    async fn history(&self, key: &str, limit: usize) -> Result<Vec<HistoryEntry>, Error> {
        Ok(self
            .state()
            .history
            .get(key)
            .map(|h| h.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn activation(&self, key: &str) -> Result<Option<Activation>, Error> {
        Ok(self.state().active.get(key).map(|p| Activation {
            by: Some(p.by.clone()),
            at_ms: Some(p.at_ms),
        }))
    }

    async fn active(&self, key: &str) -> Result<Option<ActiveModel>, Error> {
        Ok(self.state().active_model(key))
    }

    async fn active_many(&self, keys: &[String]) -> Result<Vec<Option<ActiveModel>>, Error> {
        let state = self.state();
        Ok(keys.iter().map(|key| state.active_model(key)).collect())
    }

    async fn pointers(&self, keys: &[String]) -> Result<Vec<Option<StorePointer>>, Error> {
        let state = self.state();
        Ok(keys
            .iter()
            .map(|key| {
                state.active.get(key).map(|p| StorePointer {
                    version: p.version,
                    previous: p.previous,
                    revision: p.revision,
                })
            })
            .collect())
    }

    async fn version(&self, key: &str, version: i64) -> Result<Option<StoredModel>, Error> {
        Ok(self
            .state()
            .versions
            .get(&(key.to_string(), version))
            .map(|spec| StoredModel {
                key: key.to_string(),
                version,
                spec_json: spec.clone(),
            }))
    }

    async fn list(&self) -> Result<Vec<KeySummary>, Error> {
        let state = self.state();
        let mut out: Vec<KeySummary> = Vec::new();
        for (key, version) in state.versions.keys() {
            match out.last_mut() {
                Some(summary) if summary.key == *key => summary.versions.push(*version),
                _ => out.push(KeySummary {
                    key: key.clone(),
                    active: state.active.get(key).map(|p| p.version),
                    versions: vec![*version],
                }),
            }
        }
        Ok(out)
    }

    async fn key_page(&self, after: Option<&str>, limit: usize) -> Result<KeyPage, Error> {
        let state = self.state();
        let start = match after {
            Some(after) => Bound::Excluded((after.to_string(), i64::MAX)),
            None => Bound::Unbounded,
        };
        let mut keys: Vec<(String, Option<i64>)> = Vec::new();
        for (key, _) in state
            .versions
            .range((start, Bound::Unbounded))
            .map(|(k, _)| k)
        {
            if keys.len() > limit {
                break;
            }
            if keys.last().is_none_or(|(last, _)| last != key) {
                keys.push((key.clone(), state.active.get(key).map(|p| p.version)));
            }
        }
        Ok(KeyPage::from_sorted(keys, limit))
    }

    async fn versions(&self, key: &str) -> Result<Vec<i64>, Error> {
        let state = self.state();
        Ok(state
            .versions
            .range((key.to_string(), i64::MIN)..=(key.to_string(), i64::MAX))
            .map(|((_, v), _)| *v)
            .collect())
    }

    async fn delete_versions(&self, key: &str, versions: &[i64]) -> Result<(), Error> {
        let mut state = self.state();
        for version in versions {
            state.versions.remove(&(key.to_string(), *version));
        }
        Ok(())
    }

    async fn cursor(&self) -> Result<ChangeCursor, Error> {
        Ok(ChangeCursor::at(self.state().feed.len() as i64))
    }

    async fn changes_since(&self, cursor: ChangeCursor) -> Result<Changes, Error> {
        let state = self.state();
        let from = usize::try_from(cursor.position())
            .unwrap_or(0)
            .min(state.feed.len());
        let mut keys: Vec<String> = state.feed[from..].to_vec();
        keys.sort_unstable();
        keys.dedup();
        Ok(Changes {
            keys,
            next: ChangeCursor::at(state.feed.len() as i64),
        })
    }

    async fn rollout(&self, key: &str) -> Result<Option<Rollout>, Error> {
        Ok(self.state().rollouts.get(key).cloned())
    }

    async fn rollouts(&self, keys: &[String]) -> Result<Vec<Option<Rollout>>, Error> {
        let state = self.state();
        Ok(keys
            .iter()
            .map(|k| state.rollouts.get(k).cloned())
            .collect())
    }

    async fn set_canary(&self, key: &str, canary: Option<Canary>) -> Result<(), Error> {
        check_key(key)?;
        if let Some(c) = &canary {
            check_canary(c)?;
        }
        let mut state = self.state();
        if let Some(c) = &canary {
            state.require_version(key, c.version)?;
        }
        state.change_rollout(key, RolloutEdit::Canary(canary), None);
        Ok(())
    }

    async fn change_canary(&self, key: &str, change: CanaryChange) -> Result<CanaryChanged, Error> {
        check_key(key)?;
        if let CanaryChange::Start { canary, .. } = &change {
            check_canary(canary)?;
        }
        let mut state = self.state();
        let before = state.rollouts.get(key).and_then(|r| r.canary.clone());
        let Some(after) = plan_canary(key, before.clone(), change)? else {
            return Ok(CanaryChanged {
                after: before.clone(),
                before,
                changed: false,
            });
        };
        if let Some(c) = &after {
            state.require_version(key, c.version)?;
        }
        state.change_rollout(key, RolloutEdit::Canary(after.clone()), None);
        Ok(CanaryChanged {
            before,
            after,
            changed: true,
        })
    }

    async fn set_shadow(&self, key: &str, version: Option<i64>) -> Result<(), Error> {
        check_key(key)?;
        let mut state = self.state();
        if let Some(v) = version {
            state.require_version(key, v)?;
        }
        state.change_rollout(key, RolloutEdit::Shadow(version), None);
        Ok(())
    }

    async fn promote(&self, key: &str) -> Result<i64, Error> {
        check_key(key)?;
        let mut state = self.state();
        let Some(canary) = state.rollouts.get(key).and_then(|r| r.canary.clone()) else {
            return Err(Error::NoCanary {
                key: key.to_string(),
            });
        };
        state.activate(key, ChangeAction::Promote, canary.version);
        state.change_rollout(key, RolloutEdit::Canary(None), None);
        Ok(canary.version)
    }

    /// Under the one lock: the canary is checked, the pointer moved and the canary ended in one
    /// step.
    async fn decide_canary(
        &self,
        key: &str,
        version: i64,
        verdict: Verdict,
        evidence: &str,
    ) -> Result<CanaryChanged, Error> {
        check_key(key)?;
        check_evidence(evidence)?;
        let mut state = self.state();
        let before = state.rollouts.get(key).and_then(|r| r.canary.clone());
        let active = state.active.get(key).map(|p| (p.version, p.previous));
        let Some(plan) = plan_verdict(key, before.as_ref(), active, version, verdict)? else {
            return Ok(CanaryChanged {
                after: before.clone(),
                before,
                changed: false,
            });
        };
        if let Some((to, previous)) = plan.pointer {
            state.require_version(key, to)?;
            state.point(key, ChangeAction::Promote, to, previous, Some(evidence));
        }
        state.change_rollout(key, RolloutEdit::Canary(None), Some(evidence));
        Ok(CanaryChanged {
            before,
            after: None,
            changed: true,
        })
    }

    async fn write_quality(&self, rows: &[QualityRow]) -> Result<(), Error> {
        let mut state = self.state();
        for row in rows {
            state.quality.entry(row.key.clone()).or_default().insert(
                (row.version, row.arm.clone(), row.window_end_ms),
                row.clone(),
            );
        }
        Ok(())
    }

    async fn quality(
        &self,
        key: &str,
        version: Option<i64>,
        limit: usize,
    ) -> Result<Vec<QualityRow>, Error> {
        let state = self.state();
        let Some(rows) = state.quality.get(key) else {
            return Ok(Vec::new());
        };
        let mut out: Vec<QualityRow> = rows
            .values()
            .filter(|row| version.is_none_or(|v| row.version == v))
            .cloned()
            .collect();
        out.sort_by(newest_first);
        out.truncate(limit);
        Ok(out)
    }
}
