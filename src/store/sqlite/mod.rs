//! The embedded default backend: one SQLite file.
//!
//! The file holds five tables, readable with the `sqlite3` shell:
//!
//! * `model_versions (key, version, spec, author, created_at)`: every uploaded version,
//!   immutable; `created_at` is Unix milliseconds, `author` comes from the spec's
//!   `metadata.author` when it has one.
//! * `active_models (key, version, previous_version, revision)`: the active pointer per key.
//! * `model_changes (seq, key, version, at, changed_by, action, previous_version,
//!   canary_share, evidence)`: the change feed and each key's history, one row per
//!   activation, rollback, promotion or rollout change. `action` is one of [`ChangeAction`]'s
//!   names, `version` the version made active or the canary or shadow version started or
//!   ended, `previous_version` the version active before (pointer moves), `canary_share` a
//!   started canary's share, `changed_by` `keyscore:USER@HOST`, `evidence` what decided an
//!   automatic verdict (a JSON object). Columns added later are added to older files on open
//!   and are NULL in their old rows. `seq` only grows; an activation's `revision` is its feed
//!   row's `seq`, and a [`ChangeCursor`] is a `seq`.
//! * `model_rollouts (key, canary_version, canary_share, shadow_version, revision,
//!   canary_auto)`: the canary and shadow version per key (NULL when none runs); `revision` is
//!   the `seq` of the feed row of its last change; `canary_auto` an automatic canary's criteria
//!   as JSON with the revision they were written at (criteria of another revision are void:
//!   see [`crate::store::AutoCriteria`]).
//! * `model_quality (key, version, window_end, arm, ...)`: live quality per window, one row
//!   per (key, version, window, arm), read by key (see [`quality`]).
//!
//! The file runs in WAL mode, so readers (the service) never block on a writer (the CLI in
//! another process); a writer waits up to [`sql::BUSY_TIMEOUT`] for another writer before giving up
//! with [`Error::Unavailable`]. An activation writes the pointer and its feed row in one
//! transaction; a canary verdict reads the canary and pointer and writes both in one.
//!
//! SQLite calls block, so every call runs on tokio's blocking thread pool with the connection
//! behind a mutex; the async reactor never waits on the disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

mod quality;
mod sql;

use sql::{
    activate_row, configure, create_schema, feed_row, insert_version_row, key_exists, move_pointer,
    read_activation, read_active, read_history, read_pointer, read_rollout, sqlite_error,
    version_exists, write_canary,
};

use super::auto::{criteria_text, plan_verdict};
use super::{
    check_canary, check_evidence, check_key, plan_canary, plan_move, Activation, ActiveModel,
    Canary, CanaryChange, CanaryChanged, ChangeAction, ChangeCursor, Changes, Error, HistoryEntry,
    KeyPage, KeySummary, ModelStore, MovePlan, Moved, NewVersion, Pointer, PointerMove, QualityRow,
    Rollout, StoredModel, Verdict,
};

/// Versions written (or activations made) in one transaction by the bulk calls, at most.
const WRITE_BATCH: usize = 10_000;

/// A model store in a local SQLite file.
#[derive(Debug, Clone)]
pub struct EmbeddedModelStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl EmbeddedModelStore {
    /// Opens the SQLite file at `path`, creating the file and its schema if needed.
    ///
    /// The directory must exist: a missing directory is a mistake in the path more often than
    /// a wish for a new one, so it is refused with [`Error::Url`] rather than created. This call
    /// blocks on file I/O; from async code prefer [`super::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        if path.as_os_str().is_empty() {
            return Err(Error::Url(
                "empty SQLite path; use sqlite://PATH, for example sqlite://keyscore.db".into(),
            ));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(Error::Url(format!(
                    "directory '{}' for the SQLite store does not exist; create it or fix the path",
                    dir.display()
                )));
            }
        }
        let conn = Connection::open(&path)
            .map_err(sqlite_error(&format!("opening '{}'", path.display())))?;
        configure(&conn).map_err(sqlite_error(&format!("configuring '{}'", path.display())))?;
        create_schema(&conn)?;
        Ok(Self {
            path,
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Opens the SQLite file at `path` like [`EmbeddedModelStore::open`], but refuses a file
    /// that does not exist with [`Error::Missing`] instead of creating it: for every command
    /// but `init`, a missing file is a mistyped path, not a wish for an empty store.
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        if !path.as_os_str().is_empty() && !path.exists() {
            return Err(Error::Missing {
                path: path.display().to_string(),
            });
        }
        Self::open(path)
    }

    /// The SQLite file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection on the blocking thread pool.
    async fn call<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave a half-written transaction behind
            // (an unfinished transaction rolls back when dropped), so a poisoned lock is safe
            // to keep using.
            let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|err| Error::unavailable_from("SQLite worker task failed", err))?
    }

    /// Runs `f` inside one write transaction (taken at once, so a concurrent writer waits
    /// rather than failing half-way), committing when it returns `Ok`. `context` says what is
    /// being done, for errors.
    async fn write<T, F>(&self, context: &'static str, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    {
        self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error(context))?;
            let value = f(&tx)?;
            tx.commit().map_err(sqlite_error(context))?;
            Ok(value)
        })
        .await
    }

    /// Applies `row` to every item, one write transaction (one sync to disk) per
    /// [`WRITE_BATCH`] items, and returns one result per item. A row refused on its own (a
    /// version that exists, one that does not) fails only its item; a failing file rolls the
    /// chunk back and fails the call.
    async fn write_rows<I, T, F>(
        &self,
        context: &'static str,
        items: &[I],
        row: F,
    ) -> Result<Vec<Result<T, Error>>, Error>
    where
        I: Clone + Send + 'static,
        T: Send + 'static,
        F: Fn(&Connection, &I) -> Result<T, Error> + Clone + Send + 'static,
    {
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(WRITE_BATCH) {
            let chunk = chunk.to_vec();
            let row = row.clone();
            let results = self
                .write(context, move |tx| {
                    let mut results = Vec::with_capacity(chunk.len());
                    for item in &chunk {
                        match row(tx, item) {
                            Err(err) if err.is_transient() => return Err(err),
                            result => results.push(result),
                        }
                    }
                    Ok(results)
                })
                .await?;
            out.extend(results);
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl ModelStore for EmbeddedModelStore {
    fn describe(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }

    async fn init(&self) -> Result<(), Error> {
        self.call(|conn| create_schema(conn)).await
    }

    async fn insert_version(
        &self,
        key: &str,
        version: Option<i64>,
        spec_json: &str,
    ) -> Result<i64, Error> {
        let key = key.to_string();
        let spec = spec_json.to_string();
        self.write("storing a model version", move |tx| {
            insert_version_row(tx, &key, version, &spec)
        })
        .await
    }

    async fn insert_versions(
        &self,
        items: &[NewVersion],
    ) -> Result<Vec<Result<i64, Error>>, Error> {
        self.write_rows("storing model versions", items, |tx, item| {
            insert_version_row(tx, &item.key, item.version, &item.spec_json)
        })
        .await
    }

    async fn activate(&self, key: &str, version: i64) -> Result<(), Error> {
        check_key(key)?;
        let key = key.to_string();
        self.write("activating a model version", move |tx| {
            activate_row(tx, &key, version)
        })
        .await
    }

    async fn activate_many(
        &self,
        items: &[(String, i64)],
    ) -> Result<Vec<Result<(), Error>>, Error> {
        self.write_rows("activating model versions", items, |tx, (key, version)| {
            check_key(key).and_then(|()| activate_row(tx, key, *version))
        })
        .await
    }

    async fn rollback(&self, key: &str) -> Result<i64, Error> {
        check_key(key)?;
        let key = key.to_string();
        self.write("rolling back", move |tx| {
            let context = "rolling back";
            let Some((current, Some(previous), _)) =
                read_pointer(tx, &key).map_err(sqlite_error(context))?
            else {
                if !key_exists(tx, &key).map_err(sqlite_error(context))? {
                    return Err(Error::UnknownKey { key });
                }
                return Err(Error::NothingToRollBack { key });
            };
            move_pointer(
                tx,
                &key,
                ChangeAction::Rollback,
                previous,
                Some(current),
                None,
            )
            .map_err(sqlite_error(context))?;
            Ok(previous)
        })
        .await
    }

    /// One write transaction: the pointer is read, checked and moved with no other writer in
    /// between.
    async fn move_active(&self, key: &str, change: PointerMove) -> Result<Moved, Error> {
        check_key(key)?;
        let key = key.to_string();
        self.write("moving the active pointer", move |tx| {
            let context = "moving the active pointer";
            if !key_exists(tx, &key).map_err(sqlite_error(context))? {
                return Err(Error::UnknownKey { key });
            }
            let current = read_pointer(tx, &key)
                .map_err(sqlite_error(context))?
                .map(|(version, previous, _)| (version, previous));
            match plan_move(&key, current, change)? {
                MovePlan::Done(moved) => Ok(moved),
                MovePlan::Write {
                    version,
                    previous,
                    outcome,
                } => {
                    if !version_exists(tx, &key, version).map_err(sqlite_error(context))? {
                        return Err(Error::NoSuchVersion { key, version });
                    }
                    let action = change.action();
                    move_pointer(tx, &key, action, version, previous, None)
                        .map_err(sqlite_error(context))?;
                    Ok(outcome)
                }
            }
        })
        .await
    }

    async fn history(&self, key: &str, limit: usize) -> Result<Vec<HistoryEntry>, Error> {
        let key = key.to_string();
        self.call(move |conn| {
            read_history(conn, &key, limit).map_err(sqlite_error("reading a key's history"))
        })
        .await
    }

    /// The `at` and `changed_by` of the feed row of the pointer's last move.
    async fn activation(&self, key: &str) -> Result<Option<Activation>, Error> {
        let key = key.to_string();
        self.call(move |conn| {
            read_activation(conn, &key)
                .map(|row| row.map(|(at_ms, by)| Activation { by, at_ms }))
                .map_err(sqlite_error("reading who activated a version"))
        })
        .await
    }

    async fn active(&self, key: &str) -> Result<Option<ActiveModel>, Error> {
        Ok(self.active_many(&[key.to_string()]).await?.pop().flatten())
    }

    async fn active_many(&self, keys: &[String]) -> Result<Vec<Option<ActiveModel>>, Error> {
        let keys = keys.to_vec();
        self.call(move |conn| {
            let context = "reading active versions";
            // One read transaction: every key is read at the same point of the file.
            let tx = conn.transaction().map_err(sqlite_error(context))?;
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                let row = read_active(&tx, &key).map_err(sqlite_error(context))?;
                out.push(row.map(|(version, revision, spec_json)| ActiveModel {
                    model: StoredModel {
                        key,
                        version,
                        spec_json,
                    },
                    revision,
                }));
            }
            Ok(out)
        })
        .await
    }

    async fn pointers(&self, keys: &[String]) -> Result<Vec<Option<Pointer>>, Error> {
        let keys = keys.to_vec();
        self.call(move |conn| {
            let context = "reading active pointers";
            let tx = conn.transaction().map_err(sqlite_error(context))?;
            keys.iter()
                .map(|key| {
                    read_pointer(&tx, key)
                        .map(|p| {
                            p.map(|(version, previous, revision)| Pointer {
                                version,
                                previous,
                                revision,
                            })
                        })
                        .map_err(sqlite_error(context))
                })
                .collect()
        })
        .await
    }

    async fn version(&self, key: &str, version: i64) -> Result<Option<StoredModel>, Error> {
        let key = key.to_string();
        self.call(move |conn| {
            let spec: Option<String> = conn
                .query_row(
                    "SELECT spec FROM model_versions WHERE key = ?1 AND version = ?2",
                    params![key, version],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sqlite_error("reading a model version"))?;
            Ok(spec.map(|spec_json| StoredModel {
                key,
                version,
                spec_json,
            }))
        })
        .await
    }

    async fn versions(&self, key: &str) -> Result<Vec<i64>, Error> {
        let key = key.to_string();
        self.call(move |conn| {
            let context = "listing a key's versions";
            let mut stmt = conn
                .prepare_cached(
                    "SELECT version FROM model_versions WHERE key = ?1 ORDER BY version",
                )
                .map_err(sqlite_error(context))?;
            let rows = stmt
                .query_map([&key], |row| row.get(0))
                .map_err(sqlite_error(context))?;
            rows.collect::<Result<Vec<i64>, _>>()
                .map_err(sqlite_error(context))
        })
        .await
    }

    async fn delete_versions(&self, key: &str, versions: &[i64]) -> Result<(), Error> {
        let key = key.to_string();
        let versions = versions.to_vec();
        self.call(move |conn| {
            let context = "removing versions";
            let tx = conn.transaction().map_err(sqlite_error(context))?;
            {
                let mut stmt = tx
                    .prepare_cached("DELETE FROM model_versions WHERE key = ?1 AND version = ?2")
                    .map_err(sqlite_error(context))?;
                for version in &versions {
                    stmt.execute(params![key, version])
                        .map_err(sqlite_error(context))?;
                }
            }
            tx.commit().map_err(sqlite_error(context))
        })
        .await
    }

    /// Keys in key order, from the primary key's index: `limit + 1` rows after `after`.
    async fn key_page(&self, after: Option<&str>, limit: usize) -> Result<KeyPage, Error> {
        let after = after.map(str::to_string);
        let rows = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let keys = self
            .call(move |conn| {
                let context = "listing keys";
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT k.key, (SELECT a.version FROM active_models a WHERE a.key = k.key) \
                         FROM (SELECT DISTINCT key FROM model_versions \
                               WHERE ?1 IS NULL OR key > ?1 ORDER BY key LIMIT ?2) k",
                    )
                    .map_err(sqlite_error(context))?;
                let rows = stmt
                    .query_map(params![after, rows], |row| Ok((row.get(0)?, row.get(1)?)))
                    .map_err(sqlite_error(context))?;
                rows.collect::<Result<Vec<_>, _>>()
                    .map_err(sqlite_error(context))
            })
            .await?;
        Ok(KeyPage::from_sorted(keys, limit))
    }

    async fn list(&self) -> Result<Vec<KeySummary>, Error> {
        self.call(|conn| {
            let context = "listing models";
            let tx = conn.transaction().map_err(sqlite_error(context))?;
            let mut keys: BTreeMap<String, KeySummary> = BTreeMap::new();
            {
                let mut stmt = tx
                    .prepare("SELECT key, version FROM model_versions ORDER BY key, version")
                    .map_err(sqlite_error(context))?;
                let rows = stmt
                    .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get(1)?)))
                    .map_err(sqlite_error(context))?;
                for row in rows {
                    let (key, version) = row.map_err(sqlite_error(context))?;
                    keys.entry(key.clone())
                        .or_insert_with(|| KeySummary {
                            key,
                            active: None,
                            versions: Vec::new(),
                        })
                        .versions
                        .push(version);
                }
                let mut stmt = tx
                    .prepare("SELECT key, version FROM active_models")
                    .map_err(sqlite_error(context))?;
                let rows = stmt
                    .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get(1)?)))
                    .map_err(sqlite_error(context))?;
                for row in rows {
                    let (key, version) = row.map_err(sqlite_error(context))?;
                    if let Some(summary) = keys.get_mut(&key) {
                        summary.active = Some(version);
                    }
                }
            }
            Ok(keys.into_values().collect())
        })
        .await
    }

    async fn cursor(&self) -> Result<ChangeCursor, Error> {
        self.call(|conn| {
            conn.query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM model_changes",
                [],
                |row| row.get(0),
            )
            .map(ChangeCursor::at)
            .map_err(sqlite_error("reading the change feed"))
        })
        .await
    }

    async fn changes_since(&self, cursor: ChangeCursor) -> Result<Changes, Error> {
        self.call(move |conn| {
            let context = "reading the change feed";
            let mut stmt = conn
                .prepare_cached(
                    "SELECT key, MAX(seq) FROM model_changes WHERE seq > ?1 GROUP BY key",
                )
                .map_err(sqlite_error(context))?;
            let rows = stmt
                .query_map([cursor.position()], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })
                .map_err(sqlite_error(context))?;
            let mut changes = Changes {
                keys: Vec::new(),
                next: cursor,
            };
            for row in rows {
                let (key, seq) = row.map_err(sqlite_error(context))?;
                changes.keys.push(key);
                if seq > changes.next.position() {
                    changes.next = ChangeCursor::at(seq);
                }
            }
            Ok(changes)
        })
        .await
    }

    async fn rollout(&self, key: &str) -> Result<Option<Rollout>, Error> {
        let key = key.to_string();
        self.call(move |conn| read_rollout(conn, &key)).await
    }

    async fn rollouts(&self, keys: &[String]) -> Result<Vec<Option<Rollout>>, Error> {
        let keys = keys.to_vec();
        self.call(move |conn| {
            let context = "reading canaries and shadows";
            let tx = conn.transaction().map_err(sqlite_error(context))?;
            keys.iter().map(|key| read_rollout(&tx, key)).collect()
        })
        .await
    }

    async fn set_canary(&self, key: &str, canary: Option<Canary>) -> Result<(), Error> {
        check_key(key)?;
        if let Some(c) = &canary {
            check_canary(c)?;
        }
        let key = key.to_string();
        self.write("setting a canary", move |tx| {
            let context = "setting a canary";
            if let Some(c) = &canary {
                if !version_exists(tx, &key, c.version).map_err(sqlite_error(context))? {
                    return Err(Error::NoSuchVersion {
                        key,
                        version: c.version,
                    });
                }
            }
            write_canary(tx, &key, canary, None)
        })
        .await
    }

    /// One write transaction: the canary is read, checked and changed with no other writer in
    /// between.
    async fn change_canary(&self, key: &str, change: CanaryChange) -> Result<CanaryChanged, Error> {
        check_key(key)?;
        if let CanaryChange::Start { canary, .. } = &change {
            check_canary(canary)?;
        }
        let key = key.to_string();
        self.write("changing a canary", move |tx| {
            let context = "changing a canary";
            let before = read_rollout(tx, &key)?.and_then(|r| r.canary);
            let Some(after) = plan_canary(&key, before.clone(), change)? else {
                return Ok(CanaryChanged {
                    after: before.clone(),
                    before,
                    changed: false,
                });
            };
            if let Some(c) = &after {
                if !version_exists(tx, &key, c.version).map_err(sqlite_error(context))? {
                    return Err(Error::NoSuchVersion {
                        key,
                        version: c.version,
                    });
                }
            }
            write_canary(tx, &key, after.clone(), None)?;
            Ok(CanaryChanged {
                before,
                after,
                changed: true,
            })
        })
        .await
    }

    async fn set_shadow(&self, key: &str, version: Option<i64>) -> Result<(), Error> {
        check_key(key)?;
        let key = key.to_string();
        self.write("setting a shadow", move |tx| {
            let context = "setting a shadow";
            if let Some(v) = version {
                if !version_exists(tx, &key, v).map_err(sqlite_error(context))? {
                    return Err(Error::NoSuchVersion { key, version: v });
                }
            }
            let rollout = read_rollout(tx, &key)?.unwrap_or_default();
            let change = HistoryEntry::shadow(version, rollout.shadow);
            let seq = feed_row(tx, &key, &change).map_err(sqlite_error(context))?;
            // The canary's criteria are written again at the new revision, or they would be
            // void (see crate::store::auto).
            let auto = rollout
                .canary
                .and_then(|c| c.auto)
                .map(|a| criteria_text(&a, seq));
            tx.execute(
                "INSERT INTO model_rollouts (key, shadow_version, revision, canary_auto)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) DO UPDATE SET
                     shadow_version = excluded.shadow_version,
                     revision = excluded.revision,
                     canary_auto = excluded.canary_auto",
                params![key, version, seq, auto],
            )
            .map_err(sqlite_error(context))?;
            Ok(())
        })
        .await
    }

    async fn promote(&self, key: &str) -> Result<i64, Error> {
        check_key(key)?;
        let key = key.to_string();
        self.write("promoting a canary", move |tx| {
            let context = "promoting a canary";
            let Some(canary) = read_rollout(tx, &key)?.and_then(|r| r.canary) else {
                return Err(Error::NoCanary { key });
            };
            let previous = match read_pointer(tx, &key).map_err(sqlite_error(context))? {
                Some((current, previous, _)) if current == canary.version => previous,
                Some((current, _, _)) => Some(current),
                None => None,
            };
            move_pointer(
                tx,
                &key,
                ChangeAction::Promote,
                canary.version,
                previous,
                None,
            )
            .map_err(sqlite_error(context))?;
            write_canary(tx, &key, None, None)?;
            Ok(canary.version)
        })
        .await
    }

    /// One write transaction: the canary and the pointer are read, checked and written with no
    /// other writer in between.
    async fn decide_canary(
        &self,
        key: &str,
        version: i64,
        verdict: Verdict,
        evidence: &str,
    ) -> Result<CanaryChanged, Error> {
        check_key(key)?;
        check_evidence(evidence)?;
        let key = key.to_string();
        let evidence = evidence.to_string();
        self.write("deciding a canary", move |tx| {
            let context = "deciding a canary";
            let before = read_rollout(tx, &key)?.and_then(|r| r.canary);
            let active = read_pointer(tx, &key)
                .map_err(sqlite_error(context))?
                .map(|(version, previous, _)| (version, previous));
            let Some(plan) = plan_verdict(&key, before.as_ref(), active, version, verdict)? else {
                return Ok(CanaryChanged {
                    after: before.clone(),
                    before,
                    changed: false,
                });
            };
            if let Some((to, previous)) = plan.pointer {
                if !version_exists(tx, &key, to).map_err(sqlite_error(context))? {
                    return Err(Error::NoSuchVersion { key, version: to });
                }
                let action = ChangeAction::Promote;
                move_pointer(tx, &key, action, to, previous, Some(&evidence))
                    .map_err(sqlite_error(context))?;
            }
            write_canary(tx, &key, None, Some(&evidence))?;
            Ok(CanaryChanged {
                before,
                after: None,
                changed: true,
            })
        })
        .await
    }

    /// One write transaction per 10,000 rows (`WRITE_BATCH`).
    async fn write_quality(&self, rows: &[QualityRow]) -> Result<(), Error> {
        for chunk in rows.chunks(WRITE_BATCH) {
            let chunk = chunk.to_vec();
            self.write("recording model quality", move |tx| {
                quality::write_rows(tx, &chunk)
            })
            .await?;
        }
        Ok(())
    }

    async fn quality(
        &self,
        key: &str,
        version: Option<i64>,
        limit: usize,
    ) -> Result<Vec<QualityRow>, Error> {
        let key = key.to_string();
        self.call(move |conn| quality::read_rows(conn, &key, version, limit))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_refuses_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("models.db");
        let err = EmbeddedModelStore::open(&path).unwrap_err();
        assert!(matches!(err, Error::Url(_)), "{err:?}");
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(!dir.path().join("missing").exists());
    }

    #[test]
    fn open_existing_refuses_a_missing_file_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.db");
        let err = EmbeddedModelStore::open_existing(&path).unwrap_err();
        assert!(matches!(err, Error::Missing { .. }), "{err:?}");
        assert!(err.to_string().contains("keyscore init"), "{err}");
        assert!(!path.exists());
        EmbeddedModelStore::open(&path).unwrap();
        EmbeddedModelStore::open_existing(&path).unwrap();
    }

    #[test]
    fn open_refuses_a_file_that_is_not_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("models.db");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let err = EmbeddedModelStore::open(&path).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    }

    #[test]
    fn a_file_from_before_changed_by_gets_the_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("models.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE model_changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
                 key TEXT NOT NULL, version INTEGER NOT NULL, at INTEGER NOT NULL); \
                 INSERT INTO model_changes (key, version, at) VALUES ('paris', 1, 5); \
                 PRAGMA user_version = 2;",
            )
            .unwrap();
        }
        let store = EmbeddedModelStore::open(&path).unwrap();
        let conn = store.conn.lock().unwrap();
        let by: Option<String> = conn
            .query_row("SELECT changed_by FROM model_changes", [], |row| row.get(0))
            .unwrap();
        assert_eq!(by, None);
    }

    #[test]
    fn open_uses_wal() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedModelStore::open(dir.path().join("models.db")).unwrap();
        let conn = store.conn.lock().unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
