//! The SQL side of the SQLite store: the schema, connection settings, how SQLite errors
//! become store errors, and the statements the trait methods share.

use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use crate::model::ModelSpec;
use crate::store::auto::{criteria_text, with_criteria};
use crate::store::{Canary, ChangeAction, Error, HistoryEntry, Rollout};

/// How long a write waits for another process's write to finish before failing.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema version this build writes, kept in SQLite's `user_version`.
pub(super) const SCHEMA_VERSION: i64 = 2;

/// Creates the tables if they do not exist. Idempotent.
pub(super) const SCHEMA: &str = "
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
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    key              TEXT    NOT NULL,
    version          INTEGER NOT NULL,
    at               INTEGER NOT NULL,
    changed_by       TEXT,
    action           TEXT,
    previous_version INTEGER,
    canary_share     REAL,
    evidence         TEXT
);
CREATE TABLE IF NOT EXISTS model_rollouts (
    key            TEXT    NOT NULL PRIMARY KEY,
    canary_version INTEGER,
    canary_share   REAL,
    shadow_version INTEGER,
    revision       INTEGER NOT NULL,
    canary_auto    TEXT
);
";

/// Columns added after their table was first released, as (table, column, type): files made
/// before get them on open, NULL in their old rows. Older builds name their columns when they
/// write, so they keep working with them.
const ADDED_COLUMNS: [(&str, &str, &str); 6] = [
    ("model_changes", "changed_by", "TEXT"),
    ("model_changes", "action", "TEXT"),
    ("model_changes", "previous_version", "INTEGER"),
    ("model_changes", "canary_share", "REAL"),
    ("model_changes", "evidence", "TEXT"),
    ("model_rollouts", "canary_auto", "TEXT"),
];

/// Connection settings: WAL, a busy timeout, full sync, foreign keys.
pub(super) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // journal_mode returns the resulting mode as a row.
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    Ok(())
}

/// Creates the schema if needed and refuses files written by a newer schema.
pub(super) fn create_schema(conn: &Connection) -> Result<(), Error> {
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
    conn.execute_batch(super::quality::SCHEMA)
        .map_err(sqlite_error(context))?;
    for (table, column, ty) in ADDED_COLUMNS {
        let present: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
                [table, column],
                |row| row.get(0),
            )
            .map_err(sqlite_error(context))?;
        if present == 0 {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}"))
                .map_err(sqlite_error(context))?;
        }
    }
    // A key's history is read newest first by key: O(log n + entries read).
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS model_changes_by_key ON model_changes (key, seq)",
    )
    .map_err(sqlite_error(context))?;
    if found < SCHEMA_VERSION {
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sqlite_error(context))?;
    }
    Ok(())
}

pub(super) use crate::store::now_millis;

/// The author named in a spec's metadata, if any.
pub(super) fn spec_author(spec_json: &str) -> Option<String> {
    ModelSpec::from_json(spec_json.as_bytes())
        .ok()
        .and_then(|spec| spec.metadata)
        .and_then(|meta| meta.author)
}

/// Maps a SQLite error to a store error, naming what was being done; the SQLite error is kept
/// as the source.
pub(super) fn sqlite_error(context: &str) -> impl Fn(rusqlite::Error) -> Error + '_ {
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
pub(super) fn read_pointer(
    conn: &Connection,
    key: &str,
) -> rusqlite::Result<Option<(i64, Option<i64>, i64)>> {
    conn.prepare_cached(
        "SELECT version, previous_version, revision FROM active_models WHERE key = ?1",
    )?
    .query_row([key], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
    .optional()
}

pub(super) fn version_exists(conn: &Connection, key: &str, version: i64) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM model_versions WHERE key = ?1 AND version = ?2")?
        .query_row(params![key, version], |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
}

/// Whether any version of `key` is stored.
pub(super) fn key_exists(conn: &Connection, key: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM model_versions WHERE key = ?1 LIMIT 1")?
        .query_row([key], |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
}

/// Points `key` at `version`, remembering `previous`, and appends the feed row (with the
/// evidence of an automatic verdict, if it is one); the caller holds a write transaction.
pub(super) fn move_pointer(
    conn: &Connection,
    key: &str,
    action: ChangeAction,
    version: i64,
    previous: Option<i64>,
    evidence: Option<&str>,
) -> rusqlite::Result<()> {
    let revision = feed_row(
        conn,
        key,
        &HistoryEntry::now(action, Some(version), previous, None).with_evidence(evidence),
    )?;
    conn.prepare_cached(
        "INSERT INTO active_models (key, version, previous_version, revision)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (key) DO UPDATE SET
             version = excluded.version,
             previous_version = excluded.previous_version,
             revision = excluded.revision",
    )?
    .execute(params![key, version, previous, revision])?;
    Ok(())
}

/// Appends the feed row of `change` of `key` (it is also the key's history entry) and returns
/// its `seq`.
pub(super) fn feed_row(
    conn: &Connection,
    key: &str,
    change: &HistoryEntry,
) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO model_changes
             (key, version, at, changed_by, action, previous_version, canary_share, evidence)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        key,
        change.version.unwrap_or(0),
        change.at_ms,
        change.by,
        change.action,
        change.previous,
        change.share,
        change.evidence
    ])?;
    Ok(conn.last_insert_rowid())
}

/// The newest `limit` history entries of `key`, newest first.
pub(super) fn read_history(
    conn: &Connection,
    key: &str,
    limit: usize,
) -> rusqlite::Result<Vec<HistoryEntry>> {
    conn.prepare_cached(
        "SELECT seq, action, version, previous_version, canary_share, changed_by, at, evidence
         FROM model_changes WHERE key = ?1 ORDER BY seq DESC LIMIT ?2",
    )?
    .query_map(
        params![key, i64::try_from(limit).unwrap_or(i64::MAX)],
        |row| {
            let action: Option<String> = row.get(1)?;
            let version: i64 = row.get(2)?;
            Ok(HistoryEntry {
                revision: row.get(0)?,
                // Rows written before actions were recorded say only which version they named.
                action: action.unwrap_or_else(|| "change".to_string()),
                version: (version != 0).then_some(version),
                previous: row.get(3)?,
                share: row.get(4)?,
                by: row.get(5)?,
                at_ms: row.get(6)?,
                evidence: row.get(7)?,
            })
        },
    )?
    .collect()
}

/// `key`'s rollout, its canary with the criteria stored for it (see
/// [`crate::store::auto`]: criteria left from another revision are void).
pub(super) fn read_rollout(conn: &Connection, key: &str) -> Result<Option<Rollout>, Error> {
    let context = "reading the canary and shadow";
    let row = conn
        .prepare_cached(
            "SELECT canary_version, canary_share, shadow_version, revision, canary_auto
             FROM model_rollouts WHERE key = ?1",
        )
        .and_then(|mut st| {
            st.query_row([key], |row| {
                let canary_version: Option<i64> = row.get(0)?;
                let canary_share: Option<f64> = row.get(1)?;
                let rollout = Rollout {
                    canary: canary_version
                        .zip(canary_share)
                        .map(|(version, share)| Canary {
                            version,
                            share,
                            auto: None,
                        }),
                    shadow: row.get(2)?,
                    revision: row.get(3)?,
                };
                Ok((rollout, row.get::<_, Option<String>>(4)?))
            })
            .optional()
        })
        .map_err(sqlite_error(context))?;
    Ok(row.map(|(rollout, auto)| with_criteria(key, rollout, auto.as_deref())))
}

/// Sets `key`'s canary columns and appends the feed row (with the evidence of an automatic
/// verdict, if it is one); the caller holds a write transaction.
pub(super) fn write_canary(
    conn: &Connection,
    key: &str,
    canary: Option<Canary>,
    evidence: Option<&str>,
) -> Result<(), Error> {
    let context = "changing a canary";
    let before = read_rollout(conn, key)?.and_then(|r| r.canary);
    let change = HistoryEntry::canary(canary.clone(), before).with_evidence(evidence);
    let seq = feed_row(conn, key, &change).map_err(sqlite_error(context))?;
    let auto = canary
        .as_ref()
        .and_then(|c| c.auto.as_ref())
        .map(|a| criteria_text(a, seq));
    conn.execute(
        "INSERT INTO model_rollouts (key, canary_version, canary_share, canary_auto, revision)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (key) DO UPDATE SET
             canary_version = excluded.canary_version,
             canary_share = excluded.canary_share,
             canary_auto = excluded.canary_auto,
             revision = excluded.revision",
        params![
            key,
            canary.as_ref().map(|c| c.version),
            canary.as_ref().map(|c| c.share),
            auto,
            seq
        ],
    )
    .map_err(sqlite_error(context))?;
    Ok(())
}

/// When `key`'s pointer was last moved and by whom: its feed row's `at` and `changed_by`.
pub(super) fn read_activation(
    conn: &Connection,
    key: &str,
) -> rusqlite::Result<Option<(Option<i64>, Option<String>)>> {
    conn.prepare_cached(
        "SELECT c.at, c.changed_by FROM active_models a
         LEFT JOIN model_changes c ON c.seq = a.revision
         WHERE a.key = ?1",
    )?
    .query_row([key], |row| Ok((row.get(0)?, row.get(1)?)))
    .optional()
}

/// `key`'s active version, its revision and its spec.
pub(super) fn read_active(
    conn: &Connection,
    key: &str,
) -> rusqlite::Result<Option<(i64, i64, String)>> {
    conn.prepare_cached(
        "SELECT a.version, a.revision, v.spec
         FROM active_models a
         JOIN model_versions v ON v.key = a.key AND v.version = a.version
         WHERE a.key = ?1",
    )?
    .query_row([key], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
    .optional()
}

/// Stores one version in the caller's write transaction: `version`, or the key's newest plus
/// one. An existing version is [`Error::VersionExists`].
pub(super) fn insert_version_row(
    conn: &Connection,
    key: &str,
    version: Option<i64>,
    spec: &str,
) -> Result<i64, Error> {
    let context = "storing a model version";
    let version = match version {
        Some(v) => {
            if version_exists(conn, key, v).map_err(sqlite_error(context))? {
                return Err(Error::VersionExists {
                    key: key.to_string(),
                    version: v,
                });
            }
            v
        }
        None => {
            let newest: Option<i64> = conn
                .prepare_cached("SELECT MAX(version) FROM model_versions WHERE key = ?1")
                .and_then(|mut st| st.query_row([key], |row| row.get(0)))
                .map_err(sqlite_error(context))?;
            newest.unwrap_or(0) + 1
        }
    };
    conn.prepare_cached(
        "INSERT INTO model_versions (key, version, spec, author, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut st| st.execute(params![key, version, spec, spec_author(spec), now_millis()]))
    .map_err(sqlite_error(context))?;
    Ok(version)
}

/// Activates `version` of `key` in the caller's write transaction; re-activating the active
/// version keeps the rollback target.
pub(super) fn activate_row(conn: &Connection, key: &str, version: i64) -> Result<(), Error> {
    let context = "activating a model version";
    if !version_exists(conn, key, version).map_err(sqlite_error(context))? {
        return Err(Error::NoSuchVersion {
            key: key.to_string(),
            version,
        });
    }
    let previous = match read_pointer(conn, key).map_err(sqlite_error(context))? {
        Some((current, previous, _)) if current == version => previous,
        Some((current, _, _)) => Some(current),
        None => None,
    };
    move_pointer(conn, key, ChangeAction::Activate, version, previous, None)
        .map_err(sqlite_error(context))
}
