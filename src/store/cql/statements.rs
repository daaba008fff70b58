//! The prepared statements, one per query shape, prepared on first use and cached by the
//! store.

use scylla::client::session::Session;
use scylla::errors::ExecutionError;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;

use super::errors::execution_error;
use crate::store::Error;

/// The prepared statements, one per query shape.
pub(super) struct Statements {
    /// `SELECT spec FROM model_versions WHERE key = ? AND version = ?`
    pub(super) version_spec: PreparedStatement,
    /// `SELECT version FROM model_versions WHERE key = ? LIMIT 1`
    pub(super) newest_version: PreparedStatement,
    /// `INSERT INTO model_versions (key, version, spec, author, created_at) VALUES (...)`
    pub(super) insert_version: PreparedStatement,
    /// `SELECT version, previous_version, WRITETIME(version) FROM active_models WHERE key = ?`
    pub(super) pointer: PreparedStatement,
    /// The pointer update and the feed insert, as one logged batch.
    pub(super) activate: Batch,
    /// `SELECT key, changed_at FROM model_changes WHERE day = ? AND changed_at > ?`
    pub(super) feed_day: PreparedStatement,
    /// `SELECT key, version FROM model_versions`
    pub(super) all_versions: PreparedStatement,
    /// `SELECT key, version FROM active_models`
    pub(super) all_active: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(session: &Session, ks: &str) -> Result<Self, Error> {
        let prepare = |cql: String, idempotent: bool| async move {
            let mut statement = session.prepare(cql.as_str()).await.map_err(|err| {
                let err = ExecutionError::PrepareError(err);
                execution_error(&format!("preparing '{cql}'"), err)
            })?;
            statement.set_is_idempotent(idempotent);
            Ok::<_, Error>(statement)
        };
        let update_pointer = prepare(
            format!(
                "UPDATE {ks}.active_models SET version = ?, previous_version = ? WHERE key = ?"
            ),
            true,
        )
        .await?;
        let insert_change = prepare(
            format!(
                "INSERT INTO {ks}.model_changes (day, changed_at, key, version) VALUES (?, ?, ?, ?)"
            ),
            true,
        )
        .await?;
        let mut activate = Batch::new(BatchType::Logged);
        activate.append_statement(update_pointer);
        activate.append_statement(insert_change);
        // Explicit timestamps make a retried batch write the same cells again.
        activate.set_is_idempotent(true);
        Ok(Self {
            version_spec: prepare(
                format!("SELECT spec FROM {ks}.model_versions WHERE key = ? AND version = ?"),
                true,
            )
            .await?,
            newest_version: prepare(
                format!("SELECT version FROM {ks}.model_versions WHERE key = ? LIMIT 1"),
                true,
            )
            .await?,
            insert_version: prepare(
                format!(
                    "INSERT INTO {ks}.model_versions (key, version, spec, author, created_at) \
                     VALUES (?, ?, ?, ?, ?)"
                ),
                false,
            )
            .await?,
            pointer: prepare(
                format!(
                    "SELECT version, previous_version, WRITETIME(version) \
                     FROM {ks}.active_models WHERE key = ?"
                ),
                true,
            )
            .await?,
            activate,
            feed_day: prepare(
                format!(
                    "SELECT key, changed_at FROM {ks}.model_changes \
                     WHERE day = ? AND changed_at > ?"
                ),
                true,
            )
            .await?,
            all_versions: prepare(
                format!("SELECT key, version FROM {ks}.model_versions"),
                true,
            )
            .await?,
            all_active: prepare(format!("SELECT key, version FROM {ks}.active_models"), true)
                .await?,
        })
    }
}

/// The prepared statements of `model_rollouts`.
pub(super) struct RolloutStatements {
    /// `SELECT canary_version, canary_share, shadow_version, WRITETIME(changed_at) ...`
    pub(super) read: PreparedStatement,
    /// The canary update and the feed insert, as one logged batch.
    pub(super) set_canary: Batch,
    /// The shadow update and the feed insert, as one logged batch.
    pub(super) set_shadow: Batch,
}

impl RolloutStatements {
    pub(super) async fn prepare(session: &Session, ks: &str) -> Result<Self, Error> {
        let prepare = |cql: String| async move {
            let mut statement = session.prepare(cql.as_str()).await.map_err(|err| {
                let err = ExecutionError::PrepareError(err);
                execution_error(&format!("preparing '{cql}'"), err)
            })?;
            statement.set_is_idempotent(true);
            Ok::<_, Error>(statement)
        };
        let insert_change = prepare(format!(
            "INSERT INTO {ks}.model_changes (day, changed_at, key, version) VALUES (?, ?, ?, ?)"
        ))
        .await?;
        let batch = |update: PreparedStatement| {
            let mut batch = Batch::new(BatchType::Logged);
            batch.append_statement(update);
            batch.append_statement(insert_change.clone());
            batch.set_is_idempotent(true);
            batch
        };
        Ok(Self {
            read: prepare(format!(
                "SELECT canary_version, canary_share, shadow_version, WRITETIME(changed_at) \
                 FROM {ks}.model_rollouts WHERE key = ?"
            ))
            .await?,
            set_canary: batch(
                prepare(format!(
                    "UPDATE {ks}.model_rollouts SET canary_version = ?, canary_share = ?, \
                     changed_at = ? WHERE key = ?"
                ))
                .await?,
            ),
            set_shadow: batch(
                prepare(format!(
                    "UPDATE {ks}.model_rollouts SET shadow_version = ?, changed_at = ? \
                     WHERE key = ?"
                ))
                .await?,
            ),
        })
    }
}
