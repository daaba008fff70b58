//! Live model quality on CQL: the rows of `model_quality` (see `cql/060_model_quality.cql`),
//! one partition per key, clustered by (version DESC, window_end DESC, arm).
//!
//! Writes follow the store's other bulk writes (prepared statements, [`CONCURRENT_REQUESTS`]
//! in flight): the rows of one key go in one request, an unlogged batch when there are several,
//! which stays within the key's partition and so is applied as one mutation on one replica set
//! (a batch over many partitions would make its coordinator wait on all of them, the misuse
//! Cassandra's batch size warning is about). Every row is written whole, `USING TTL`
//! ([`super::CqlOptions::quality_ttl_secs`]), so a window written again replaces the stored
//! one in every column. Writing a row twice is harmless, so the driver may retry.
//!
//! Reads touch the key's partition only: one slice per version read, newest windows first.
//!
//! [`CONCURRENT_REQUESTS`]: super::CONCURRENT_REQUESTS

use std::collections::BTreeMap;

use scylla::statement::batch::{Batch, BatchType};
use scylla::value::CqlTimestamp;

use super::errors::{corrupt, execution_error};
use super::{CqlModelStore, QualityStatements};
use crate::store::{newest_first, Error, QualityRow};

/// Rows of one key written in one request, at most (~250 bytes each: a batch stays small).
const ROWS_PER_BATCH: usize = 16;

/// The bound values of one row's `INSERT`, in the statement's order, then its TTL.
#[derive(scylla::SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
struct RowValues<'a> {
    key: &'a str,
    version: i64,
    arm: &'a str,
    window_end: CqlTimestamp,
    window_ms: i64,
    predictions: i64,
    labelled: i64,
    mae: Option<f64>,
    rmse: Option<f64>,
    accuracy: Option<f64>,
    log_loss: Option<f64>,
    brier: Option<f64>,
    label_lag_ms: Option<f64>,
    dead_letters: i64,
    prediction_psi: Option<f64>,
    max_feature_psi: Option<f64>,
    feature_psi: Option<&'a str>,
    missing_share: Option<f64>,
    out_of_range_share: Option<f64>,
    written_by: Option<&'a str>,
    ttl: i32,
}

impl<'a> RowValues<'a> {
    fn new(r: &'a QualityRow, ttl: i32) -> Self {
        Self {
            key: &r.key,
            version: r.version,
            arm: &r.arm,
            window_end: CqlTimestamp(r.window_end_ms),
            window_ms: r.window_ms,
            predictions: r.predictions,
            labelled: r.labelled,
            mae: r.mae,
            rmse: r.rmse,
            accuracy: r.accuracy,
            log_loss: r.log_loss,
            brier: r.brier,
            label_lag_ms: r.label_lag_ms,
            dead_letters: r.dead_letters,
            prediction_psi: r.prediction_psi,
            max_feature_psi: r.max_feature_psi,
            feature_psi: r.feature_psi.as_deref(),
            missing_share: r.missing_share,
            out_of_range_share: r.out_of_range_share,
            written_by: r.by.as_deref(),
            ttl,
        }
    }
}

/// One row as read, in [`super::statements::QUALITY_COLUMNS`] order. Counts are nullable as
/// read: a row written by hand may leave them out.
#[derive(scylla::DeserializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
struct RowColumns {
    key: String,
    version: i64,
    arm: String,
    window_end: CqlTimestamp,
    window_ms: Option<i64>,
    predictions: Option<i64>,
    labelled: Option<i64>,
    mae: Option<f64>,
    rmse: Option<f64>,
    accuracy: Option<f64>,
    log_loss: Option<f64>,
    brier: Option<f64>,
    label_lag_ms: Option<f64>,
    dead_letters: Option<i64>,
    prediction_psi: Option<f64>,
    max_feature_psi: Option<f64>,
    feature_psi: Option<String>,
    missing_share: Option<f64>,
    out_of_range_share: Option<f64>,
    written_by: Option<String>,
}

impl From<RowColumns> for QualityRow {
    fn from(c: RowColumns) -> Self {
        QualityRow {
            key: c.key,
            version: c.version,
            arm: c.arm,
            window_end_ms: c.window_end.0,
            window_ms: c.window_ms.unwrap_or(0),
            predictions: c.predictions.unwrap_or(0),
            labelled: c.labelled.unwrap_or(0),
            mae: c.mae,
            rmse: c.rmse,
            accuracy: c.accuracy,
            log_loss: c.log_loss,
            brier: c.brier,
            label_lag_ms: c.label_lag_ms,
            dead_letters: c.dead_letters.unwrap_or(0),
            prediction_psi: c.prediction_psi,
            max_feature_psi: c.max_feature_psi,
            feature_psi: c.feature_psi,
            missing_share: c.missing_share,
            out_of_range_share: c.out_of_range_share,
            by: c.written_by,
        }
    }
}

impl CqlModelStore {
    /// The statements of `model_quality`, prepared on first use.
    async fn quality_statements(&self) -> Result<&QualityStatements, Error> {
        self.quality_statements
            .get_or_try_init(|| QualityStatements::prepare(&self.session, &self.config.keyspace))
            .await
    }

    /// [`crate::store::ModelStore::write_quality`]: each key's rows in one request (at most
    /// [`ROWS_PER_BATCH`] per request), keys concurrently.
    pub(super) async fn write_quality_rows(&self, rows: &[QualityRow]) -> Result<(), Error> {
        let st = self.quality_statements().await?;
        let mut by_key: BTreeMap<&str, Vec<&QualityRow>> = BTreeMap::new();
        for row in rows {
            by_key.entry(row.key.as_str()).or_default().push(row);
        }
        let groups: Vec<&[&QualityRow]> = by_key
            .values()
            .flat_map(|rows| rows.chunks(ROWS_PER_BATCH))
            .collect();
        let written = self
            .each(&groups, |group| self.write_quality_group(st, group))
            .await?;
        written.into_iter().collect()
    }

    /// Writes rows of one key: one statement, or one unlogged batch in the key's partition.
    async fn write_quality_group(
        &self,
        st: &QualityStatements,
        group: &[&QualityRow],
    ) -> Result<(), Error> {
        let context = "recording model quality";
        let values: Vec<RowValues<'_>> = group
            .iter()
            .map(|r| RowValues::new(r, self.quality_ttl))
            .collect();
        let written = match values.as_slice() {
            [one] => self.session.execute_unpaged(&st.insert, one).await,
            _ => {
                let mut batch = Batch::new(BatchType::Unlogged);
                for _ in &values {
                    batch.append_statement(st.insert.clone());
                }
                batch.set_is_idempotent(true);
                self.session.batch(&batch, &values).await
            }
        };
        written
            .map(drop)
            .map_err(|err| execution_error(context, err))
    }

    /// [`crate::store::ModelStore::quality`]: the newest `limit` rows of each version asked
    /// for (every version with rows, found by skipping through the partition), merged newest
    /// first.
    pub(super) async fn read_quality_rows(
        &self,
        key: &str,
        version: Option<i64>,
        limit: usize,
    ) -> Result<Vec<QualityRow>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let st = self.quality_statements().await?;
        let versions = match version {
            Some(v) => vec![v],
            None => self.quality_versions(st, key).await?,
        };
        let limit_cql = i32::try_from(limit).unwrap_or(i32::MAX);
        let context = "reading model quality";
        let reads = self
            .each(&versions, |&version| async move {
                let rows = self
                    .session
                    .execute_unpaged(&st.read_version, (key, version, limit_cql))
                    .await
                    .map_err(|err| execution_error(context, err))?
                    .into_rows_result()
                    .map_err(|err| corrupt(context, err))?;
                rows.rows::<RowColumns>()
                    .map_err(|err| corrupt(context, err))?
                    .map(|row| {
                        row.map(QualityRow::from)
                            .map_err(|err| corrupt(context, err))
                    })
                    .collect::<Result<Vec<_>, Error>>()
            })
            .await?;
        let mut out = Vec::new();
        for read in reads {
            out.extend(read?);
        }
        out.sort_by(newest_first);
        out.truncate(limit);
        Ok(out)
    }

    /// The versions with rows in `key`'s partition, newest first: one single-row read per
    /// version, each starting below the last version found.
    async fn quality_versions(&self, st: &QualityStatements, key: &str) -> Result<Vec<i64>, Error> {
        let mut versions = Vec::new();
        let mut below = i64::MAX;
        loop {
            let next: Option<(i64,)> = self
                .read_row(
                    "listing the versions with quality rows",
                    &st.next_version,
                    (key, below),
                )
                .await?;
            let Some((version,)) = next else {
                return Ok(versions);
            };
            versions.push(version);
            match version.checked_sub(1) {
                Some(b) => below = b,
                None => return Ok(versions),
            }
        }
    }
}
