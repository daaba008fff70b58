//! The prepared statements, one per query shape, prepared on first use and cached by the
//! store. The statements of tables that gained columns later are prepared for the columns the
//! keyspace has, so a keyspace made by an older keyscore keeps serving until `keyscore init`
//! adds them.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use scylla::client::session::Session;
use scylla::errors::ExecutionError;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::SerialConsistency;
use tokio::sync::OnceCell;

use super::errors::{corrupt, execution_error};
use crate::store::Error;

/// The prepared statements, one per query shape.
pub(super) struct Statements {
    /// `SELECT spec, encoding, spec_id, chunks, size, sha256 FROM model_versions WHERE key = ?
    /// AND version = ?`
    pub(super) version_spec: PreparedStatement,
    /// `SELECT version FROM model_versions WHERE key = ? AND version = ?`: whether a version
    /// exists, without reading its spec.
    pub(super) version_exists: PreparedStatement,
    /// `SELECT version FROM model_versions WHERE key = ?`: a key's versions, newest first.
    pub(super) versions_of: PreparedStatement,
    /// `INSERT INTO model_versions (...) VALUES (...) IF NOT EXISTS`
    pub(super) insert_version: PreparedStatement,
    /// `INSERT INTO model_spec_chunks (spec_id, chunk, data) VALUES (?, ?, ?)`
    pub(super) insert_chunk: PreparedStatement,
    /// `SELECT chunk, data FROM model_spec_chunks WHERE spec_id = ?`
    pub(super) chunks: PreparedStatement,
    /// `DELETE FROM model_spec_chunks WHERE spec_id = ?`
    pub(super) delete_chunks: PreparedStatement,
    /// `DELETE FROM model_versions WHERE key = ? AND version = ?`
    pub(super) delete_version: PreparedStatement,
    /// `INSERT INTO active_models (key) VALUES (?)`: lists a key before its first activation.
    pub(super) touch_key: PreparedStatement,
    /// `SELECT version, previous_version, revision FROM active_models WHERE key = ?`
    pub(super) pointer: PreparedStatement,
    /// `SELECT version, changed_by, changed_at FROM active_models WHERE key = ?`
    pub(super) pointer_audit: PreparedStatement,
    /// `UPDATE active_models SET ... WHERE key = ? IF revision = ?`
    pub(super) move_pointer: PreparedStatement,
    /// `INSERT INTO model_changes (day, bucket, changed_at, key, version, revision) ...`
    pub(super) insert_change: PreparedStatement,
    /// `SELECT changed_at, key, revision FROM model_changes WHERE day = ? AND bucket = ? AND
    /// changed_at > ?`
    pub(super) feed: PreparedStatement,
    /// `SELECT key, version FROM active_models`
    pub(super) all_pointers: PreparedStatement,
}

/// Prepares `cql`; `idempotent` marks statements the driver may retry safely.
async fn prepare(
    session: &Session,
    cql: String,
    idempotent: bool,
) -> Result<PreparedStatement, Error> {
    let mut statement = session.prepare(cql.as_str()).await.map_err(|err| {
        let err = ExecutionError::PrepareError(err);
        execution_error(&format!("preparing '{cql}'"), err)
    })?;
    statement.set_is_idempotent(idempotent);
    Ok(statement)
}

/// Prepares a lightweight transaction: serial consistency LOCAL_SERIAL (Paxos among the local
/// datacenter's replicas), and not idempotent (a retried compare-and-set that already applied
/// answers "not applied"; keyscore re-reads and decides instead).
async fn prepare_lwt(session: &Session, cql: String) -> Result<PreparedStatement, Error> {
    let mut statement = prepare(session, cql, false).await?;
    statement.set_serial_consistency(Some(SerialConsistency::LocalSerial));
    Ok(statement)
}

impl Statements {
    pub(super) async fn prepare(session: &Session, ks: &str) -> Result<Self, Error> {
        Ok(Self {
            version_spec: prepare(
                session,
                format!(
                    "SELECT spec, encoding, spec_id, chunks, size, sha256 FROM {ks}.model_versions \
                     WHERE key = ? AND version = ?"
                ),
                true,
            )
            .await?,
            version_exists: prepare(
                session,
                format!("SELECT version FROM {ks}.model_versions WHERE key = ? AND version = ?"),
                true,
            )
            .await?,
            versions_of: prepare(
                session,
                format!("SELECT version FROM {ks}.model_versions WHERE key = ?"),
                true,
            )
            .await?,
            insert_version: prepare_lwt(
                session,
                format!(
                    "INSERT INTO {ks}.model_versions \
                     (key, version, spec, encoding, spec_id, chunks, size, sha256, author, created_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
                ),
            )
            .await?,
            insert_chunk: prepare(
                session,
                format!("INSERT INTO {ks}.model_spec_chunks (spec_id, chunk, data) VALUES (?, ?, ?)"),
                true,
            )
            .await?,
            chunks: prepare(
                session,
                format!("SELECT chunk, data FROM {ks}.model_spec_chunks WHERE spec_id = ?"),
                true,
            )
            .await?,
            delete_chunks: prepare(
                session,
                format!("DELETE FROM {ks}.model_spec_chunks WHERE spec_id = ?"),
                true,
            )
            .await?,
            delete_version: prepare(
                session,
                format!("DELETE FROM {ks}.model_versions WHERE key = ? AND version = ?"),
                true,
            )
            .await?,
            touch_key: prepare(
                session,
                format!("INSERT INTO {ks}.active_models (key) VALUES (?)"),
                true,
            )
            .await?,
            pointer: prepare(
                session,
                format!(
                    "SELECT version, previous_version, revision FROM {ks}.active_models \
                     WHERE key = ?"
                ),
                true,
            )
            .await?,
            pointer_audit: prepare(
                session,
                format!(
                    "SELECT version, changed_by, changed_at FROM {ks}.active_models WHERE key = ?"
                ),
                true,
            )
            .await?,
            move_pointer: prepare_lwt(
                session,
                format!(
                    "UPDATE {ks}.active_models SET version = ?, previous_version = ?, \
                     revision = ?, changed_by = ?, changed_at = ? WHERE key = ? IF revision = ?"
                ),
            )
            .await?,
            insert_change: prepare(
                session,
                format!(
                    "INSERT INTO {ks}.model_changes \
                     (day, bucket, changed_at, key, version, revision) VALUES (?, ?, ?, ?, ?, ?)"
                ),
                true,
            )
            .await?,
            feed: prepare(
                session,
                format!(
                    "SELECT changed_at, key, revision FROM {ks}.model_changes \
                     WHERE day = ? AND bucket = ? AND changed_at > ?"
                ),
                true,
            )
            .await?,
            all_pointers: prepare(
                session,
                format!("SELECT key, version FROM {ks}.active_models"),
                true,
            )
            .await?,
        })
    }
}

/// The columns `keyspace.table` has, from `system_schema.columns` (empty for a missing table).
pub(super) async fn table_columns(
    session: &Session,
    keyspace: &str,
    table: &str,
) -> Result<BTreeSet<String>, Error> {
    let context = "reading the schema";
    let rows = session
        .query_unpaged(
            "SELECT column_name FROM system_schema.columns \
             WHERE keyspace_name = ? AND table_name = ?",
            (keyspace, table),
        )
        .await
        .map_err(|err| execution_error(context, err))?
        .into_rows_result()
        .map_err(|err| corrupt(context, err))?;
    let columns = rows
        .rows::<(String,)>()
        .map_err(|err| corrupt(context, err))?
        .map(|row| row.map(|(c,)| c).map_err(|err| corrupt(context, err)))
        .collect::<Result<BTreeSet<String>, Error>>()?;
    Ok(columns)
}

/// How often statements prepared for a keyspace that lacks columns look again for them.
const RECHECK: Duration = Duration::from_secs(60);

/// Statements that say whether the keyspace had every column they can use when prepared.
pub(super) trait Complete {
    /// Whether every column was there.
    fn complete(&self) -> bool;
}

/// Statements of a table that gained columns after its first release: prepared on first use for
/// the columns the keyspace has, and, while it lacks some, prepared again at most every
/// [`RECHECK`] (at once when a write needs them), so a process started before `keyscore init`
/// added them starts using them without a restart.
pub(super) struct ColumnAware<T> {
    first: OnceCell<T>,
    complete: OnceCell<T>,
    checked: Mutex<Option<Instant>>,
}

impl<T: Complete> ColumnAware<T> {
    pub(super) fn new() -> Self {
        Self {
            first: OnceCell::new(),
            complete: OnceCell::new(),
            checked: Mutex::new(None),
        }
    }

    /// The statements, prepared with `prepare`; `now` looks again for missing columns at once.
    pub(super) async fn get<F, Fut>(&self, prepare: F, now: bool) -> Result<&T, Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        if let Some(st) = self.complete.get() {
            return Ok(st);
        }
        let first = self.first.get_or_try_init(&prepare).await?;
        if first.complete() {
            return Ok(first);
        }
        let due = {
            let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
            let due = match *checked {
                None => now,
                Some(at) => now || at.elapsed() >= RECHECK,
            };
            if due || checked.is_none() {
                *checked = Some(Instant::now());
            }
            due
        };
        if due {
            let fresh = prepare().await?;
            if fresh.complete() {
                let _ = self.complete.set(fresh);
                return Ok(self.complete.get().unwrap_or(first));
            }
        }
        Ok(first)
    }
}

/// The columns `model_rollouts` gained for automatic canaries (`cql/070_added_columns.cql`).
const AUTOMATIC_COLUMNS: [&str; 3] = ["canary_auto", "promote_version", "promote_from_revision"];

/// The prepared statements of `model_rollouts`.
pub(super) struct RolloutStatements {
    /// `SELECT canary_version, canary_share, shadow_version, revision[, canary_auto,
    /// promote_version, promote_from_revision] ... WHERE key = ?`
    pub(super) read: PreparedStatement,
    /// `UPDATE model_rollouts SET ... WHERE key = ? IF revision = ?`: the canary (with its
    /// criteria), the shadow, a promotion decided by a verdict, the revision.
    pub(super) write: PreparedStatement,
    /// Whether the table has the columns of automatic canaries; without them (a keyspace made
    /// before them, until `keyscore init` adds them) canaries are read and written without
    /// criteria and verdicts are refused.
    pub(super) automatic: bool,
}

impl RolloutStatements {
    pub(super) async fn prepare(session: &Session, ks: &str) -> Result<Self, Error> {
        let columns = table_columns(session, ks, "model_rollouts").await?;
        let automatic = AUTOMATIC_COLUMNS.iter().all(|c| columns.contains(*c));
        let (read_more, write_more) = if automatic {
            (
                ", canary_auto, promote_version, promote_from_revision",
                "canary_auto = ?, promote_version = ?, promote_from_revision = ?, ",
            )
        } else {
            ("", "")
        };
        Ok(Self {
            read: prepare(
                session,
                format!(
                    "SELECT canary_version, canary_share, shadow_version, revision{read_more} \
                     FROM {ks}.model_rollouts WHERE key = ?"
                ),
                true,
            )
            .await?,
            write: prepare_lwt(
                session,
                format!(
                    "UPDATE {ks}.model_rollouts SET canary_version = ?, canary_share = ?, \
                     {write_more}shadow_version = ?, revision = ?, changed_at = ? WHERE key = ? \
                     IF revision = ?"
                ),
            )
            .await?,
            automatic,
        })
    }
}

impl Complete for RolloutStatements {
    fn complete(&self) -> bool {
        self.automatic
    }
}

impl Complete for HistoryStatements {
    fn complete(&self) -> bool {
        self.evidence
    }
}

/// The prepared statements of `model_history`, prepared apart so that a keyspace made before
/// the table existed still serves (its history is then not written; `keyscore init` adds it).
pub(super) struct HistoryStatements {
    /// `INSERT INTO model_history (...) VALUES (...)`
    pub(super) insert: PreparedStatement,
    /// `SELECT ... FROM model_history WHERE key = ? AND pointer = ? LIMIT ?`
    pub(super) read: PreparedStatement,
    /// Whether the table has `evidence` (a keyspace made before it lacks it until `keyscore
    /// init` adds it; evidence is then not written, and read as none).
    pub(super) evidence: bool,
}

impl HistoryStatements {
    pub(super) async fn prepare(session: &Session, ks: &str) -> Result<Self, Error> {
        let evidence = table_columns(session, ks, "model_history")
            .await?
            .contains("evidence");
        let (column, marker) = if evidence {
            (", evidence", ", ?")
        } else {
            ("", "")
        };
        Ok(Self {
            insert: prepare(
                session,
                format!(
                    "INSERT INTO {ks}.model_history (key, pointer, revision, action, version, \
                     previous_version, canary_share, changed_by, changed_at{column}) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?{marker})"
                ),
                true,
            )
            .await?,
            read: prepare(
                session,
                format!(
                    "SELECT revision, action, version, previous_version, canary_share, \
                     changed_by, changed_at{column} FROM {ks}.model_history \
                     WHERE key = ? AND pointer = ? LIMIT ?"
                ),
                true,
            )
            .await?,
            evidence,
        })
    }
}

/// The prepared statements of `model_quality`, prepared apart so that a keyspace made before
/// the table existed still serves everything else (`keyscore init` adds it).
pub(super) struct QualityStatements {
    /// `INSERT INTO model_quality (...) VALUES (...) USING TTL ?`: one row, whole.
    pub(super) insert: PreparedStatement,
    /// `SELECT ... FROM model_quality WHERE key = ? AND version = ? LIMIT ?`: one version's
    /// newest windows.
    pub(super) read_version: PreparedStatement,
    /// `SELECT version FROM model_quality WHERE key = ? AND version <= ? LIMIT 1`: the next
    /// version with rows, newest first (a skip from slice to slice of the partition).
    pub(super) next_version: PreparedStatement,
}

/// The columns of `model_quality` in [`crate::store::QualityRow`] order.
pub(super) const QUALITY_COLUMNS: &str =
    "key, version, arm, window_end, window_ms, predictions, labelled, mae, rmse, accuracy, \
     log_loss, brier, label_lag_ms, dead_letters, prediction_psi, max_feature_psi, \
     feature_psi, missing_share, out_of_range_share, written_by";

impl QualityStatements {
    pub(super) async fn prepare(session: &Session, ks: &str) -> Result<Self, Error> {
        Ok(Self {
            insert: prepare(
                session,
                format!(
                    "INSERT INTO {ks}.model_quality ({QUALITY_COLUMNS}) VALUES \
                     (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?"
                ),
                true,
            )
            .await?,
            read_version: prepare(
                session,
                format!(
                    "SELECT {QUALITY_COLUMNS} FROM {ks}.model_quality \
                     WHERE key = ? AND version = ? LIMIT ?"
                ),
                true,
            )
            .await?,
            next_version: prepare(
                session,
                format!(
                    "SELECT version FROM {ks}.model_quality WHERE key = ? AND version <= ? \
                     LIMIT 1"
                ),
                true,
            )
            .await?,
        })
    }
}
