//! The embedded default backend: one SQLite file.
//!
//! The file holds four tables, readable with the `sqlite3` shell:
//!
//! * `model_versions (key, version, spec, author, created_at)`: every uploaded version,
//!   immutable; `created_at` is Unix milliseconds, `author` comes from the spec's
//!   `metadata.author` when it has one.
//! * `active_models (key, version, previous_version, revision)`: the active pointer per key.
//! * `model_changes (seq, key, version, at)`: the change feed, one row per activation,
//!   rollback, promotion or rollout change (`version` is the version concerned, 0 when a canary
//!   or shadow ends). `seq` only grows; an activation's `revision` is its feed row's `seq`, and
//!   a [`ChangeCursor`] is a `seq`.
//! * `model_rollouts (key, canary_version, canary_share, shadow_version, revision)`: the
//!   canary and shadow version per key (NULL when none runs); `revision` is the `seq` of the
//!   feed row of its last change.
//!
//! The file runs in WAL mode, so readers (the service) never block on a writer (the CLI in
//! another process); a writer waits up to [`BUSY_TIMEOUT`] for another writer before giving up
//! with [`Error::Unavailable`]. An activation writes the pointer and its feed row in one
//! transaction.
//!
//! SQLite calls block, so every call runs on tokio's blocking thread pool with the connection
//! behind a mutex; the async reactor never waits on the disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use super::{
    check_key, check_share, ActiveModel, Canary, ChangeCursor, Changes, Error, KeySummary,
    ModelStore, Rollout, StoredModel,
};
use crate::model::ModelSpec;

/// How long a write waits for another process's write to finish before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema version this build writes, kept in SQLite's `user_version`.
const SCHEMA_VERSION: i64 = 2;

/// Creates the tables if they do not exist. Idempotent.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS model_versions (
    key        TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    spec       TEXT    NOT NULL,
    author     TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (key, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS active_models (
    key              TEXT    NOT NULL PRIMARY KEY,
    version          INTEGER NOT NULL,
    previous_version INTEGER,
    revision         INTEGER NOT NULL,
    FOREIGN KEY (key, version) REFERENCES model_versions (key, version)
);
CREATE TABLE IF NOT EXISTS model_changes (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    key     TEXT    NOT NULL,
    version INTEGER NOT NULL,
    at      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS model_rollouts (
    key            TEXT    NOT NULL PRIMARY KEY,
    canary_version INTEGER,
    canary_share   REAL,
    shadow_version INTEGER,
    revision       INTEGER NOT NULL
);
";

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
}

/// Connection settings: WAL, a busy timeout, full sync, foreign keys.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // journal_mode returns the resulting mode as a row.
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    Ok(())
}

/// Creates the schema if needed and refuses files written by a newer schema.
fn create_schema(conn: &Connection) -> Result<(), Error> {
    let context = "creating the schema";
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(sqlite_error(context))?;
    if found > SCHEMA_VERSION {
        return Err(Error::corrupt(format!(
            "the SQLite file has schema version {found}, newer than this build's \
             {SCHEMA_VERSION}; upgrade keyscore"
        )));
    }
    conn.execute_batch(SCHEMA).map_err(sqlite_error(context))?;
    if found < SCHEMA_VERSION {
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sqlite_error(context))?;
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The author named in a spec's metadata, if any.
fn spec_author(spec_json: &str) -> Option<String> {
    ModelSpec::from_json(spec_json.as_bytes())
        .ok()
        .and_then(|spec| spec.metadata)
        .and_then(|meta| meta.author)
}

/// Maps a SQLite error to a store error, naming what was being done; the SQLite error is kept
/// as the source.
fn sqlite_error(context: &str) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |err| {
        let what = match &err {
            rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                    return Error::unavailable_from(
                        format!(
                            "{context}: the SQLite file is locked by another writer for longer \
                             than {}s; retry later",
                            BUSY_TIMEOUT.as_secs()
                        ),
                        err,
                    )
                }
                ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt => {
                    return Error::corrupt_from(
                        format!(
                            "{context}: the file is not a readable SQLite database; check the \
                             path or restore a backup"
                        ),
                        err,
                    )
                }
                ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly => {
                    format!(
                        "{context}: cannot open or write the SQLite file; check that the path \
                         exists and is writable"
                    )
                }
                ErrorCode::DiskFull => {
                    format!("{context}: the disk is full; free space and retry")
                }
                _ => format!("{context}: SQLite failed"),
            },
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::Utf8Error(..) => {
                return Error::corrupt_from(
                    format!("{context}: unexpected value in the SQLite file"),
                    err,
                )
            }
            _ => format!("{context}: SQLite failed"),
        };
        Error::unavailable_from(what, err)
    }
}

/// The active pointer of `key`: `(version, previous_version, revision)`.
fn read_pointer(conn: &Connection, key: &str) -> rusqlite::Result<Option<(i64, Option<i64>, i64)>> {
    conn.query_row(
        "SELECT version, previous_version, revision FROM active_models WHERE key = ?1",
        [key],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )
    .optional()
}

fn version_exists(conn: &Connection, key: &str, version: i64) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM model_versions WHERE key = ?1 AND version = ?2",
        params![key, version],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
}

/// Points `key` at `version`, remembering `previous`, and appends the feed row; the caller
/// holds a write transaction.
fn move_pointer(
    conn: &Connection,
    key: &str,
    version: i64,
    previous: Option<i64>,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO model_changes (key, version, at) VALUES (?1, ?2, ?3)",
        params![key, version, now_millis()],
    )?;
    let revision = conn.last_insert_rowid();
    conn.execute(
        "INSERT INTO active_models (key, version, previous_version, revision)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (key) DO UPDATE SET
             version = excluded.version,
             previous_version = excluded.previous_version,
             revision = excluded.revision",
        params![key, version, previous, revision],
    )?;
    Ok(())
}

/// Appends a feed row for `key` and returns its `seq`.
fn feed_row(conn: &Connection, key: &str, version: i64) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO model_changes (key, version, at) VALUES (?1, ?2, ?3)",
        params![key, version, now_millis()],
    )?;
    Ok(conn.last_insert_rowid())
}

fn read_rollout(conn: &Connection, key: &str) -> rusqlite::Result<Option<Rollout>> {
    conn.query_row(
        "SELECT canary_version, canary_share, shadow_version, revision
         FROM model_rollouts WHERE key = ?1",
        [key],
        |row| {
            let canary_version: Option<i64> = row.get(0)?;
            let canary_share: Option<f64> = row.get(1)?;
            Ok(Rollout {
                canary: canary_version
                    .zip(canary_share)
                    .map(|(version, share)| Canary { version, share }),
                shadow: row.get(2)?,
                revision: row.get(3)?,
            })
        },
    )
    .optional()
}

/// Sets `key`'s canary columns and appends the feed row; the caller holds a write transaction.
fn write_canary(conn: &Connection, key: &str, canary: Option<Canary>) -> rusqlite::Result<()> {
    let seq = feed_row(conn, key, canary.map_or(0, |c| c.version))?;
    conn.execute(
        "INSERT INTO model_rollouts (key, canary_version, canary_share, revision)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (key) DO UPDATE SET
             canary_version = excluded.canary_version,
             canary_share = excluded.canary_share,
             revision = excluded.revision",
        params![key, canary.map(|c| c.version), canary.map(|c| c.share), seq],
    )?;
    Ok(())
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
        let author = spec_author(spec_json);
        self.write("storing a model version", move |tx| {
            let context = "storing a model version";
            let version = match version {
                Some(v) => {
                    if version_exists(tx, &key, v).map_err(sqlite_error(context))? {
                        return Err(Error::VersionExists { key, version: v });
                    }
                    v
                }
                None => {
                    let newest: Option<i64> = tx
                        .query_row(
                            "SELECT MAX(version) FROM model_versions WHERE key = ?1",
                            [&key],
                            |row| row.get(0),
                        )
                        .map_err(sqlite_error(context))?;
                    newest.unwrap_or(0) + 1
                }
            };
            tx.execute(
                "INSERT INTO model_versions (key, version, spec, author, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key, version, spec, author, now_millis()],
            )
            .map_err(sqlite_error(context))?;
            Ok(version)
        })
        .await
    }

    async fn activate(&self, key: &str, version: i64) -> Result<(), Error> {
        check_key(key)?;
        let key = key.to_string();
        self.write("activating a model version", move |tx| {
            let context = "activating a model version";
            if !version_exists(tx, &key, version).map_err(sqlite_error(context))? {
                return Err(Error::NoSuchVersion { key, version });
            }
            let previous = match read_pointer(tx, &key).map_err(sqlite_error(context))? {
                // Re-activating the active version keeps the rollback target.
                Some((current, previous, _)) if current == version => previous,
                Some((current, _, _)) => Some(current),
                None => None,
            };
            move_pointer(tx, &key, version, previous).map_err(sqlite_error(context))
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
                return Err(Error::NothingToRollBack { key });
            };
            move_pointer(tx, &key, previous, Some(current)).map_err(sqlite_error(context))?;
            Ok(previous)
        })
        .await
    }

    async fn active(&self, key: &str) -> Result<Option<ActiveModel>, Error> {
        let key = key.to_string();
        self.call(move |conn| {
            let context = "reading the active version";
            let row = conn
                .query_row(
                    "SELECT a.version, a.revision, v.spec
                     FROM active_models a
                     JOIN model_versions v ON v.key = a.key AND v.version = a.version
                     WHERE a.key = ?1",
                    [&key],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()
                .map_err(sqlite_error(context))?;
            Ok(row.map(|(version, revision, spec_json)| ActiveModel {
                model: StoredModel {
                    key,
                    version,
                    spec_json,
                },
                revision,
            }))
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
            .map(ChangeCursor)
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
                .query_map([cursor.0], |row| {
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
                changes.next = changes.next.max(ChangeCursor(seq));
            }
            Ok(changes)
        })
        .await
    }

    async fn rollout(&self, key: &str) -> Result<Option<Rollout>, Error> {
        let key = key.to_string();
        self.call(move |conn| {
            read_rollout(conn, &key).map_err(sqlite_error("reading the canary and shadow"))
        })
        .await
    }

    async fn set_canary(&self, key: &str, canary: Option<Canary>) -> Result<(), Error> {
        check_key(key)?;
        if let Some(c) = canary {
            check_share(c.share)?;
        }
        let key = key.to_string();
        self.write("setting a canary", move |tx| {
            let context = "setting a canary";
            if let Some(c) = canary {
                if !version_exists(tx, &key, c.version).map_err(sqlite_error(context))? {
                    return Err(Error::NoSuchVersion {
                        key,
                        version: c.version,
                    });
                }
            }
            write_canary(tx, &key, canary).map_err(sqlite_error(context))
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
            let seq = feed_row(tx, &key, version.unwrap_or(0)).map_err(sqlite_error(context))?;
            tx.execute(
                "INSERT INTO model_rollouts (key, shadow_version, revision) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET
                     shadow_version = excluded.shadow_version,
                     revision = excluded.revision",
                params![key, version, seq],
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
            let Some(canary) = read_rollout(tx, &key)
                .map_err(sqlite_error(context))?
                .and_then(|r| r.canary)
            else {
                return Err(Error::NoCanary { key });
            };
            let previous = match read_pointer(tx, &key).map_err(sqlite_error(context))? {
                Some((current, previous, _)) if current == canary.version => previous,
                Some((current, _, _)) => Some(current),
                None => None,
            };
            move_pointer(tx, &key, canary.version, previous).map_err(sqlite_error(context))?;
            write_canary(tx, &key, None).map_err(sqlite_error(context))?;
            Ok(canary.version)
        })
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
    fn open_refuses_a_file_that_is_not_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("models.db");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let err = EmbeddedModelStore::open(&path).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
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
