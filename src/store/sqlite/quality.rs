//! The SQLite side of live model quality: the `model_quality` table, its index, and the
//! statements that write and read a key's rows.

use rusqlite::{params, Connection};

use super::sql::sqlite_error;
use crate::store::{Error, QualityRow};

/// Creates `model_quality` and its index if they do not exist (files made before them get them
/// on open). One row per (key, version, window, arm), `window_end` in Unix milliseconds; the
/// primary key serves one version's rows newest first, the index a key's rows of every version
/// newest first, so reads and writes touch one key's rows whatever the number of keys.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS model_quality (
    key                TEXT    NOT NULL,
    version            INTEGER NOT NULL,
    window_end         INTEGER NOT NULL,
    arm                TEXT    NOT NULL,
    window_ms          INTEGER NOT NULL,
    predictions        INTEGER NOT NULL,
    labelled           INTEGER NOT NULL,
    mae                REAL,
    rmse               REAL,
    accuracy           REAL,
    log_loss           REAL,
    brier              REAL,
    label_lag_ms       REAL,
    dead_letters       INTEGER NOT NULL,
    prediction_psi     REAL,
    max_feature_psi    REAL,
    feature_psi        TEXT,
    missing_share      REAL,
    out_of_range_share REAL,
    written_by         TEXT,
    PRIMARY KEY (key, version, window_end, arm)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS model_quality_by_time
    ON model_quality (key, window_end DESC, version DESC, arm);
";

/// The columns in [`QualityRow`] order, for the statements below.
const COLUMNS: &str = "key, version, arm, window_end, window_ms, predictions, labelled, mae, \
                       rmse, accuracy, log_loss, brier, label_lag_ms, dead_letters, \
                       prediction_psi, max_feature_psi, feature_psi, missing_share, \
                       out_of_range_share, written_by";

/// Stores `rows` in the caller's write transaction; a row of an existing (key, version, arm,
/// window) replaces it.
pub(super) fn write_rows(conn: &Connection, rows: &[QualityRow]) -> Result<(), Error> {
    let context = "recording model quality";
    let mut st = conn
        .prepare_cached(&format!(
            "INSERT OR REPLACE INTO model_quality ({COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
              ?19, ?20)"
        ))
        .map_err(sqlite_error(context))?;
    for r in rows {
        st.execute(params![
            r.key,
            r.version,
            r.arm,
            r.window_end_ms,
            r.window_ms,
            r.predictions,
            r.labelled,
            r.mae,
            r.rmse,
            r.accuracy,
            r.log_loss,
            r.brier,
            r.label_lag_ms,
            r.dead_letters,
            r.prediction_psi,
            r.max_feature_psi,
            r.feature_psi,
            r.missing_share,
            r.out_of_range_share,
            r.by
        ])
        .map_err(sqlite_error(context))?;
    }
    Ok(())
}

/// The newest `limit` rows of `key` (of `version` only, when given), in
/// [`crate::store::newest_first`] order.
pub(super) fn read_rows(
    conn: &Connection,
    key: &str,
    version: Option<i64>,
    limit: usize,
) -> Result<Vec<QualityRow>, Error> {
    let context = "reading model quality";
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // Two shapes, so that each reads its rows from an index in order: the primary key for one
    // version, model_quality_by_time for all.
    let filter = match version {
        Some(_) => "key = ?1 AND version = ?2",
        None => "key = ?1 AND ?2 IS NULL",
    };
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM model_quality WHERE {filter}
             ORDER BY window_end DESC, version DESC, arm LIMIT ?3"
        ))
        .map_err(sqlite_error(context))?;
    let rows = st
        .query_map(params![key, version, limit], |row| {
            Ok(QualityRow {
                key: row.get(0)?,
                version: row.get(1)?,
                arm: row.get(2)?,
                window_end_ms: row.get(3)?,
                window_ms: row.get(4)?,
                predictions: row.get(5)?,
                labelled: row.get(6)?,
                mae: row.get(7)?,
                rmse: row.get(8)?,
                accuracy: row.get(9)?,
                log_loss: row.get(10)?,
                brier: row.get(11)?,
                label_lag_ms: row.get(12)?,
                dead_letters: row.get(13)?,
                prediction_psi: row.get(14)?,
                max_feature_psi: row.get(15)?,
                feature_psi: row.get(16)?,
                missing_share: row.get(17)?,
                out_of_range_share: row.get(18)?,
                by: row.get(19)?,
            })
        })
        .map_err(sqlite_error(context))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(sqlite_error(context))
}
