//! The ScyllaDB / Cassandra backend, on the `scylla` driver.
//!
//! Tables (see `cql/*.cql`): `model_versions` holds every version (small specs inline, large
//! ones compressed into `model_spec_chunks`, see [`specs`]); `active_models` holds the pointer
//! per key; `model_rollouts` the canary and shadow per key; `model_changes` is the change feed,
//! partitioned by (UTC day, bucket), see [`feed`]; `model_history` each key's changes;
//! `model_quality` each key's live quality per window, see [`quality`].
//!
//! One write protocol, the same for keyscore, the Python package and plain CQL:
//!
//! * **Versions are written once**: `INSERT ... IF NOT EXISTS` on (key, version). A retried
//!   upload whose row is already there with the same SHA-256 succeeds; any other existing row
//!   is [`Error::VersionExists`].
//! * **Pointers move by compare-and-set**: read the key's `revision`, then
//!   `UPDATE active_models SET version, previous_version, revision = revision + 1 ... IF
//!   revision = <read>` (a lightweight transaction on the key's one row, serial consistency
//!   LOCAL_SERIAL). Of two writers that read the same revision exactly one applies; the other
//!   re-reads and tries again. So revisions never tie, never come from a clock, `version` and
//!   `previous_version` always come from one write, and an activation reported as done is the
//!   stored state. Rollouts move the same way on `model_rollouts.revision`.
//! * **Then the feed row**, a separate write (a conditional batch cannot span partitions, and a
//!   logged batch across partitions is not isolated). It only tells running processes which keys
//!   to re-read; if it is lost, their periodic resync finds the change.
//! * **A canary verdict is decided by the rollout's compare-and-set**, which ends the canary;
//!   a promotion then moves the pointer by its own, see [`verdict`].
//!
//! Lightweight transactions need a keyspace without tablets on ScyllaDB 6.0 to 2025.3;
//! [`ModelStore::init_with`] creates it so and refuses to use one that has them.
//!
//! Statements are prepared on first use (the tables must exist, so after `init`) and cached;
//! the rollout statements separately, so a store without `model_rollouts` still serves.

mod config;
mod connection;
mod errors;
mod feed;
mod quality;
mod schema;
mod specs;
mod statements;
mod verdict;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::ControlFlow;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::response::PagingState;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Statement;
use scylla::value::{CqlDate, CqlTimestamp, CqlValue, Row};
use tokio::sync::OnceCell;
use uuid::Uuid;

pub use self::config::{CqlOptions, CQL_ENV_OVERRIDES};

use self::config::CqlConfig;
use self::connection::ConnectionSettings;
use self::errors::{corrupt, execution_error, pager_error, row_error};
use self::specs::{Body, EncodedSpec, Layout, StoredSpec};
use self::statements::{
    table_columns, ColumnAware, HistoryStatements, QualityStatements, RolloutStatements, Statements,
};
use super::auto::{criteria_from_text, criteria_text};
use super::{
    actor, check_canary, check_key, plan_canary, plan_move, Activation, ActiveModel, Canary,
    CanaryChange, CanaryChanged, ChangeAction, ChangeCursor, Changes, Error, HistoryEntry,
    InitOptions, InitReport, KeyPage, KeySummary, ModelStore, MovePlan, Moved, NewVersion,
    Pointer as StorePointer, PointerMove, QualityRow, Rollout, StoredModel, Verdict, NOT_RECORDED,
};
use crate::model::ModelSpec;

/// How long one request may take before it fails as [`Error::Unavailable`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connecting to the cluster may take by default ([`CqlOptions::connect_timeout_ms`]).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Requests in flight at once for one batched call (reads of many keys, bulk writes, feed
/// partitions).
const CONCURRENT_REQUESTS: usize = 32;

/// How long one schema statement of `init` may take (schema changes are slower).
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(60);

/// How many times a compare-and-set is tried against concurrent writers before giving up.
const CAS_ATTEMPTS: u32 = 50;

/// The largest stored spec by default, in compressed bytes. Every request stays at one
/// 512 KiB chunk, far below the 16 MiB mutation and frame limits, so this bounds what one
/// version may take in the cluster (a default scikit-learn forest of 100 unbounded trees is
/// ~110 MB of JSON and ~47 MB compressed, over it; one of ~50 MB of JSON, ~21 MB, under it).
pub(crate) const DEFAULT_MAX_SPEC_BYTES: u64 = 32 << 20;

/// How far behind the newest feed row a poll re-reads by default.
pub(crate) const DEFAULT_FEED_LOOK_BACK: Duration = Duration::from_secs(30);

/// How long quality rows live by default ([`CqlOptions::quality_ttl_secs`]): 30 days.
pub(crate) const DEFAULT_QUALITY_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// The longest TTL the servers accept, in seconds: 20 years (Cassandra's `Attributes.MAX_TTL`;
/// ScyllaDB's `max_ttl` likewise).
const MAX_TTL_SECS: u64 = 20 * 365 * 24 * 60 * 60;

/// A model store in a ScyllaDB or Cassandra keyspace.
pub struct CqlModelStore {
    config: CqlConfig,
    session: Session,
    statements: OnceCell<Statements>,
    rollout_statements: ColumnAware<RolloutStatements>,
    history_statements: ColumnAware<HistoryStatements>,
    quality_statements: OnceCell<QualityStatements>,
    /// How long quality rows live, seconds (`USING TTL`).
    quality_ttl: i32,
    /// The largest spec stored, compressed bytes.
    max_spec_bytes: u64,
    /// How far behind its position a feed poll re-reads, milliseconds.
    look_back_ms: i64,
    /// Who changes pointers, for `active_models.changed_by`.
    actor: String,
}

impl fmt::Debug for CqlModelStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CqlModelStore")
            .field("url", &self.config.describe())
            .finish_non_exhaustive()
    }
}

/// A key's row in `active_models` as stored. A key uploaded but never activated has a row
/// with no version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct PointerRow {
    version: Option<i64>,
    previous: Option<i64>,
    /// The compare-and-set counter; `None` before the first activation.
    revision: Option<i64>,
}

/// A key's row in `model_rollouts` as stored, its canary with the criteria stored for it.
#[derive(Debug, Clone, PartialEq, Default)]
struct RolloutRow {
    canary: Option<Canary>,
    shadow: Option<i64>,
    revision: Option<i64>,
    /// A promotion decided by a verdict: the version, and the `active_models` revision it was
    /// decided against (see [`verdict`]).
    promotion: Option<(i64, Option<i64>)>,
}

/// `revision, action, version, previous_version, canary_share, changed_by, changed_at` of
/// `model_history`.
type HistoryColumns = (
    i64,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<f64>,
    Option<String>,
    Option<CqlTimestamp>,
);

/// [`HistoryColumns`] and `evidence`.
type HistoryColumnsWithEvidence = (
    i64,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<f64>,
    Option<String>,
    Option<CqlTimestamp>,
    Option<String>,
);

/// The `pointer` of a history row: `active` for changes of the active pointer, `rollout` for
/// the others (and for actions written by hand that keyscore does not know).
fn history_pointer(action: Option<ChangeAction>) -> &'static str {
    if action.is_some_and(ChangeAction::moves_active) {
        "active"
    } else {
        "rollout"
    }
}

/// One pointer's history rows (newest revision first) with an entry of action
/// [`NOT_RECORDED`] for each revision from `current` down that has no row, at most `limit`
/// entries.
fn with_gaps(rows: Vec<HistoryEntry>, current: i64, limit: usize) -> Vec<HistoryEntry> {
    let gap = |revision| HistoryEntry {
        action: NOT_RECORDED.to_string(),
        revision,
        version: None,
        previous: None,
        share: None,
        by: None,
        at_ms: None,
        evidence: None,
    };
    let mut out = Vec::with_capacity(limit.min(rows.len() + 16));
    let mut expected = current.max(rows.first().map_or(0, |r| r.revision));
    for row in rows {
        while expected > row.revision && out.len() < limit {
            out.push(gap(expected));
            expected -= 1;
        }
        if out.len() >= limit {
            return out;
        }
        expected = row.revision - 1;
        out.push(row);
    }
    while expected >= 1 && out.len() < limit {
        out.push(gap(expected));
        expected -= 1;
    }
    out
}

/// Two pointers' histories, each newest first, merged newest first by time (an entry with
/// no time sorts with the newer entry above it in its own list), at most `limit`.
fn merge_newest_first(
    a: Vec<HistoryEntry>,
    b: Vec<HistoryEntry>,
    limit: usize,
) -> Vec<HistoryEntry> {
    let timed = |list: Vec<HistoryEntry>| {
        let mut last = i64::MAX;
        list.into_iter()
            .map(|e| {
                last = e.at_ms.unwrap_or(last);
                (last, e)
            })
            .collect::<std::collections::VecDeque<_>>()
    };
    let (mut a, mut b) = (timed(a), timed(b));
    let mut out = Vec::with_capacity(limit.min(a.len() + b.len()));
    while out.len() < limit {
        let take_a = match (a.front(), b.front()) {
            (Some((ta, _)), Some((tb, _))) => ta >= tb,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_a { a.pop_front() } else { b.pop_front() };
        out.extend(next.map(|(_, e)| e));
    }
    out
}

/// `canary_version, canary_share, shadow_version, revision` of `model_rollouts`, then, when
/// the table has them, `canary_auto, promote_version, promote_from_revision`.
type RolloutColumns = (
    Option<i64>,
    Option<f64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

/// [`RolloutColumns`] of a table without the columns of automatic canaries.
type LegacyRolloutColumns = (Option<i64>, Option<f64>, Option<i64>, Option<i64>);

impl CqlModelStore {
    /// Connects to `HOST[:PORT][,HOST[:PORT]...][/KEYSPACE]` (the store URL after `cql://`;
    /// port 9042 and keyspace `keyscore` by default). A login, if the cluster needs one, comes
    /// from `KEYSCORE_CQL_USERNAME` and `KEYSCORE_CQL_PASSWORD`. The keyspace need not exist
    /// yet: [`ModelStore::init`] creates it. Plaintext, every datacenter: see
    /// [`CqlModelStore::connect_with`] for TLS and a local datacenter.
    pub async fn connect(rest: &str) -> Result<Self, Error> {
        Self::connect_with(rest, &CqlOptions::default()).await
    }

    /// Connects like [`CqlModelStore::connect`], with TLS and a local datacenter as `options`
    /// say. Its files are read and checked before any connection is made.
    pub async fn connect_with(rest: &str, options: &CqlOptions) -> Result<Self, Error> {
        let config = CqlConfig::parse(rest, |name| std::env::var(name).ok())?;
        let settings = ConnectionSettings::new(&config, options)?;
        let profile = settings
            .profile(ExecutionProfile::builder().request_timeout(Some(REQUEST_TIMEOUT)))
            .build();
        let connect_timeout = Duration::from_millis(options.connect_timeout_ms.max(1));
        let quality_ttl = quality_ttl(options.quality_ttl_secs)?;
        let mut builder = SessionBuilder::new()
            .known_nodes(&config.nodes)
            .connection_timeout(connect_timeout)
            .default_execution_profile_handle(profile.into_handle());
        builder = settings.session(builder);
        if let Some(login) = &config.credentials {
            builder = builder.user(login.username.clone(), login.password.clone());
        }
        // The driver's own timeout covers opening a connection, not a node that accepts it
        // and then never answers: bound the whole connection here.
        let session = tokio::time::timeout(connect_timeout, builder.build())
            .await
            .map_err(|_| {
                Error::unavailable(format!(
                    "no answer from {} within {} ms: the address accepts connections but no CQL \
                     node answered; check the host and port (9042 for CQL), or raise \
                     [store.cql] connect_timeout_ms",
                    config.describe(),
                    connect_timeout.as_millis()
                ))
            })?
            .map_err(|err| settings.session_error(&config, err))?;
        tracing::debug!(
            store = %config.describe(),
            tls = settings.tls(),
            local_dc = options.local_dc.as_deref().unwrap_or(""),
            "Connected to the CQL store."
        );
        Ok(Self {
            config,
            session,
            statements: OnceCell::new(),
            rollout_statements: ColumnAware::new(),
            history_statements: ColumnAware::new(),
            quality_statements: OnceCell::new(),
            quality_ttl,
            max_spec_bytes: options.max_spec_bytes,
            look_back_ms: i64::try_from(options.feed_look_back_ms).unwrap_or(i64::MAX),
            actor: actor(),
        })
    }

    /// The keyspace this store uses.
    pub fn keyspace(&self) -> &str {
        &self.config.keyspace
    }

    /// Sets the largest spec this store writes, in stored (compressed) bytes.
    pub fn set_max_spec_bytes(&mut self, bytes: u64) {
        self.max_spec_bytes = bytes;
    }

    /// Sets how far behind the newest row it saw a feed poll re-reads.
    pub fn set_feed_look_back(&mut self, look_back: Duration) {
        self.look_back_ms = i64::try_from(look_back.as_millis()).unwrap_or(i64::MAX);
    }

    /// Sets how long the quality rows this store writes live (whole seconds; 0 keeps them
    /// until deleted). Refused over the servers' 20-year limit.
    pub fn set_quality_ttl(&mut self, ttl: Duration) -> Result<(), Error> {
        self.quality_ttl = quality_ttl(ttl.as_secs())?;
        Ok(())
    }

    /// The prepared statements, preparing them on first use.
    async fn statements(&self) -> Result<&Statements, Error> {
        self.statements
            .get_or_try_init(|| Statements::prepare(&self.session, &self.config.keyspace))
            .await
    }

    /// The rollout statements, preparing them on first use; with `now`, looking at once for
    /// the columns of automatic canaries when the keyspace lacked them.
    async fn rollout_statements_now(&self, now: bool) -> Result<&RolloutStatements, Error> {
        self.rollout_statements
            .get(
                || RolloutStatements::prepare(&self.session, &self.config.keyspace),
                now,
            )
            .await
    }

    /// The rollout statements, preparing them on first use.
    async fn rollout_statements(&self) -> Result<&RolloutStatements, Error> {
        self.rollout_statements_now(false).await
    }

    /// The history statements, preparing them on first use; with `now`, looking at once for
    /// the evidence column when the keyspace lacked it.
    async fn history_statements(&self, now: bool) -> Result<&HistoryStatements, Error> {
        self.history_statements
            .get(
                || HistoryStatements::prepare(&self.session, &self.config.keyspace),
                now,
            )
            .await
    }

    /// Runs a prepared statement that reads at most one row and decodes that row as `R`.
    async fn read_row<R>(
        &self,
        context: &str,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Option<R>, Error>
    where
        R: for<'frame, 'metadata> scylla::deserialize::row::DeserializeRow<'frame, 'metadata>,
    {
        self.session
            .execute_unpaged(statement, values)
            .await
            .map_err(|err| execution_error(context, err))?
            .into_rows_result()
            .map_err(|err| corrupt(context, err))?
            .maybe_first_row::<R>()
            .map_err(|err| corrupt(context, err))
    }

    /// Runs a lightweight transaction and answers whether it applied (the `[applied]` column
    /// both Cassandra and ScyllaDB put first in a conditional statement's answer).
    async fn compare_and_set(
        &self,
        context: &str,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<bool, Error> {
        let row: Option<Row> = self.read_row(context, statement, values).await?;
        match row.and_then(|r| r.columns.into_iter().next().flatten()) {
            Some(CqlValue::Boolean(applied)) => Ok(applied),
            other => Err(Error::corrupt(format!(
                "{context}: a conditional write answered {other:?} where [applied] was expected"
            ))),
        }
    }

    /// Runs a prepared statement over every page, decoding rows as `R`.
    async fn read_all<R>(
        &self,
        context: &str,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<R>, Error>
    where
        R: for<'frame, 'metadata> scylla::deserialize::row::DeserializeRow<'frame, 'metadata>
            + 'static,
    {
        self.session
            .execute_iter(statement.clone(), values)
            .await
            .map_err(|err| pager_error(context, err))?
            .rows_stream::<R>()
            .map_err(|err| corrupt(context, err))?
            .map(|row| row.map_err(|err| row_error(context, err)))
            .try_collect()
            .await
    }

    async fn read_pointer(&self, st: &Statements, key: &str) -> Result<PointerRow, Error> {
        let row: Option<(Option<i64>, Option<i64>, Option<i64>)> = self
            .read_row("reading the active pointer", &st.pointer, (key,))
            .await?;
        Ok(
            row.map_or_else(PointerRow::default, |(version, previous, revision)| {
                PointerRow {
                    version,
                    previous,
                    revision,
                }
            }),
        )
    }

    async fn version_exists(
        &self,
        st: &Statements,
        key: &str,
        version: i64,
    ) -> Result<bool, Error> {
        let row: Option<(i64,)> = self
            .read_row(
                "checking a model version",
                &st.version_exists,
                (key, version),
            )
            .await?;
        Ok(row.is_some())
    }

    async fn require_version(&self, st: &Statements, key: &str, version: i64) -> Result<(), Error> {
        if self.version_exists(st, key, version).await? {
            Ok(())
        } else {
            Err(Error::NoSuchVersion {
                key: key.to_string(),
                version,
            })
        }
    }

    /// The spec columns of (key, version), or `None` when the version does not exist.
    async fn read_stored_spec(
        &self,
        st: &Statements,
        key: &str,
        version: i64,
    ) -> Result<Option<StoredSpec>, Error> {
        type SpecColumns = (
            Option<String>,
            Option<String>,
            Option<Uuid>,
            Option<i32>,
            Option<i64>,
            Option<String>,
        );
        let row: Option<SpecColumns> = self
            .read_row("reading a model version", &st.version_spec, (key, version))
            .await?;
        Ok(row.map(
            |(spec, encoding, spec_id, chunks, size, sha256)| StoredSpec {
                spec,
                encoding,
                spec_id,
                chunks,
                size,
                sha256,
            },
        ))
    }

    /// The spec text of (key, version), reassembled from chunks when it was stored so and
    /// checked against its size and SHA-256; `None` when the version does not exist.
    async fn read_spec(
        &self,
        st: &Statements,
        key: &str,
        version: i64,
    ) -> Result<Option<String>, Error> {
        let Some(stored) = self.read_stored_spec(st, key, version).await? else {
            return Ok(None);
        };
        let what = format!("{key} version {version}");
        match stored.layout(&what)? {
            Layout::Inline(text) => {
                stored.check(&what, &text)?;
                Ok(Some(text))
            }
            Layout::Chunked { spec_id, count } => {
                let chunks: Vec<(i32, Vec<u8>)> = self
                    .read_all("reading a model's spec chunks", &st.chunks, (spec_id,))
                    .await?;
                // Decompressing a large spec takes milliseconds: off the reactor.
                tokio::task::spawn_blocking(move || stored.assemble(&what, count, chunks))
                    .await
                    .map_err(|err| Error::unavailable_from("reading a model's spec failed", err))?
                    .map(Some)
            }
        }
    }

    /// Writes the feed row of a change that was applied. The change is done whatever happens
    /// here: a feed row that cannot be written is logged, and running processes find the
    /// change at their next resync.
    async fn announce(&self, st: &Statements, key: &str, change: &HistoryEntry) {
        let version = change.version.unwrap_or(0);
        let revision = change.revision;
        self.record_history(key, change).await;
        let now_ms = change.at_ms.unwrap_or_else(feed::now_millis);
        let values = (
            CqlDate(feed::cql_date(feed::day_number(now_ms))),
            feed::bucket_of(key),
            CqlTimestamp(now_ms),
            key,
            version,
            revision,
        );
        let mut last_error = None;
        for _ in 0..3 {
            match self
                .session
                .execute_unpaged(&st.insert_change, &values)
                .await
            {
                Ok(_) => return,
                Err(err) => last_error = Some(err),
            }
        }
        if let Some(err) = last_error {
            let err = execution_error("writing the change feed", err);
            tracing::warn!(
                key,
                revision,
                error = %crate::telemetry::ErrorChain(&err),
                "The change is stored but its feed row is not; running processes pick it up at \
                 their next resync."
            );
        }
    }

    /// Writes `change`'s row in `model_history`. Like the feed row, it comes after the change
    /// and cannot undo it: a row that cannot be written is logged, and `keyscore history`
    /// shows the revision it lacks as a change not recorded.
    async fn record_history(&self, key: &str, change: &HistoryEntry) {
        let written = async {
            let st = self.history_statements(change.evidence.is_some()).await?;
            let (a, b, c, d, e, f, g, h, i) = (
                key,
                history_pointer(change.kind()),
                change.revision,
                change.action.as_str(),
                change.version,
                change.previous,
                change.share,
                change.by.as_deref(),
                change.at_ms.map(CqlTimestamp),
            );
            let written = if st.evidence {
                let evidence = change.evidence.as_deref();
                self.execute_thrice(&st.insert, (a, b, c, d, e, f, g, h, i, evidence))
                    .await
            } else {
                if change.evidence.is_some() {
                    tracing::warn!(
                        key,
                        "model_history has no evidence column; run `keyscore init` to add it. \
                         The verdict is recorded without its evidence."
                    );
                }
                self.execute_thrice(&st.insert, (a, b, c, d, e, f, g, h, i))
                    .await
            };
            written.map_err(|err| execution_error("writing the key's history", err))
        }
        .await;
        if let Err(err) = written {
            tracing::warn!(
                key,
                revision = change.revision,
                error = %crate::telemetry::ErrorChain(&err),
                "The change is stored but its history row is not (run `keyscore init` if the \
                 keyspace predates model_history); `keyscore history` shows it as not recorded."
            );
        }
    }

    /// Runs a statement that is safe to repeat, up to three times until it succeeds.
    async fn execute_thrice(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<(), scylla::errors::ExecutionError> {
        let mut last = None;
        for _ in 0..3 {
            match self.session.execute_unpaged(statement, &values).await {
                Ok(_) => return Ok(()),
                Err(err) => last = Some(err),
            }
        }
        Err(last.expect("three attempts failed"))
    }

    /// Moves `key`'s pointer by compare-and-set: reads the pointer, asks `decide` what to
    /// write (`Ok(None)` to write nothing), checks that the version to write exists, and
    /// writes it if the revision is still the one read; on a lost race, reads again. Returns
    /// the pointer written (or the one left alone). The history row carries `evidence`, for
    /// an automatic verdict.
    async fn move_pointer(
        &self,
        key: &str,
        action: ChangeAction,
        evidence: Option<&str>,
        decide: impl Fn(&PointerRow) -> Result<Option<(i64, Option<i64>)>, Error>,
    ) -> Result<PointerRow, Error> {
        let st = self.statements().await?;
        let context = "moving the active pointer";
        for attempt in 0..CAS_ATTEMPTS {
            let current = self.read_pointer(st, key).await?;
            let Some((version, previous)) = decide(&current)? else {
                return Ok(current);
            };
            self.require_version(st, key, version).await?;
            let revision = current.revision.unwrap_or(0) + 1;
            let mut change = HistoryEntry::now(action, Some(version), current.version, None)
                .with_evidence(evidence);
            change.revision = revision;
            let wanted = PointerRow {
                version: Some(version),
                previous,
                revision: Some(revision),
            };
            let applied = self
                .compare_and_set(
                    context,
                    &st.move_pointer,
                    (
                        version,
                        previous,
                        revision,
                        self.actor.as_str(),
                        CqlTimestamp(change.at_ms.unwrap_or_default()),
                        key,
                        current.revision,
                    ),
                )
                .await;
            let applied = match applied {
                Ok(applied) => applied,
                // The outcome of a timed-out transaction is unknown: the stored pointer says.
                Err(err) => {
                    if self.read_pointer(st, key).await.ok() == Some(wanted) {
                        true
                    } else {
                        return Err(err);
                    }
                }
            };
            if applied {
                self.announce(st, key, &change).await;
                return Ok(wanted);
            }
            back_off(attempt).await;
        }
        Err(Error::unavailable(format!(
            "{key}'s active pointer changed {CAS_ATTEMPTS} times while this change was tried; \
             retry"
        )))
    }

    async fn read_rollout_row(
        &self,
        st: &RolloutStatements,
        key: &str,
    ) -> Result<Option<RolloutRow>, Error> {
        let context = "reading the canary and shadow";
        let row: Option<RolloutColumns> = if st.automatic {
            self.read_row(context, &st.read, (key,)).await?
        } else {
            let row: Option<LegacyRolloutColumns> =
                self.read_row(context, &st.read, (key,)).await?;
            row.map(|(v, share, shadow, revision)| (v, share, shadow, revision, None, None, None))
        };
        let Some((canary_version, share, shadow, revision, auto, promote, from)) = row else {
            return Ok(None);
        };
        let auto = criteria_from_text(key, auto.as_deref(), revision);
        Ok(Some(RolloutRow {
            canary: canary_version.zip(share).map(|(version, share)| Canary {
                version,
                share,
                auto,
            }),
            shadow,
            revision,
            promotion: promote.map(|version| (version, from)),
        }))
    }

    /// Changes `key`'s rollout by compare-and-set, like [`CqlModelStore::move_pointer`]:
    /// `decide` says, from the row read, what to change (`None`: nothing). Returns the row read
    /// last and whether this call wrote.
    async fn change_rollout(
        &self,
        key: &str,
        decide: impl Fn(&RolloutRow) -> Result<Option<RolloutChange>, Error>,
    ) -> Result<(RolloutRow, bool), Error> {
        let mut st = self.rollout_statements().await?;
        let pointers = self.statements().await?;
        let context = "changing a canary or shadow";
        for attempt in 0..CAS_ATTEMPTS {
            let current = self.read_rollout_row(st, key).await?.unwrap_or_default();
            let Some(change) = decide(&current)? else {
                return Ok((current, false));
            };
            let needs_columns = match &change {
                RolloutChange::Canary(canary) => canary.as_ref().is_some_and(|c| c.auto.is_some()),
                RolloutChange::Shadow(_) => false,
                RolloutChange::Verdict { .. } => true,
            };
            if needs_columns && !st.automatic {
                // `keyscore init` may have added the columns since the statements were
                // prepared: look again before refusing.
                let fresh = self.rollout_statements_now(true).await?;
                if fresh.automatic {
                    st = fresh;
                    continue;
                }
                return Err(Error::rejected(format!(
                    "{}.model_rollouts lacks the columns of automatic canaries; run `keyscore \
                     init` to add them",
                    self.config.keyspace
                )));
            }
            if let RolloutChange::Canary(Some(c)) = &change {
                self.require_version(pointers, key, c.version).await?;
            }
            let (canary, shadow, promotion) = match &change {
                RolloutChange::Canary(canary) => (canary.clone(), current.shadow, None),
                RolloutChange::Shadow(shadow) => (current.canary.clone(), *shadow, None),
                RolloutChange::Verdict { promotion, .. } => (None, current.shadow, *promotion),
            };
            let revision = current.revision.unwrap_or(0) + 1;
            let version = canary.as_ref().map(|c| c.version);
            let share = canary.as_ref().map(|c| c.share);
            let now = CqlTimestamp(feed::now_millis());
            let applied = if st.automatic {
                let auto = canary
                    .as_ref()
                    .and_then(|c| c.auto.as_ref())
                    .map(|a| criteria_text(a, revision));
                let (promote, from) = (promotion.map(|p| p.0), promotion.and_then(|p| p.1));
                let values = (
                    version,
                    share,
                    auto,
                    promote,
                    from,
                    shadow,
                    revision,
                    now,
                    key,
                    current.revision,
                );
                self.compare_and_set(context, &st.write, values).await
            } else {
                let values = (version, share, shadow, revision, now, key, current.revision);
                self.compare_and_set(context, &st.write, values).await
            };
            let wanted = RolloutRow {
                canary: canary.clone(),
                shadow,
                revision: Some(revision),
                promotion,
            };
            let applied = match applied {
                Ok(applied) => applied,
                Err(err) => {
                    if self.read_rollout_row(st, key).await.ok().flatten() == Some(wanted) {
                        true
                    } else {
                        return Err(err);
                    }
                }
            };
            if applied {
                let mut entry = match &change {
                    RolloutChange::Canary(c) => {
                        HistoryEntry::canary(c.clone(), current.canary.clone())
                    }
                    RolloutChange::Shadow(v) => HistoryEntry::shadow(*v, current.shadow),
                    RolloutChange::Verdict { evidence, .. } => {
                        HistoryEntry::canary(None, current.canary.clone())
                            .with_evidence(Some(evidence))
                    }
                };
                entry.revision = revision;
                self.announce(pointers, key, &entry).await;
                return Ok((current, true));
            }
            back_off(attempt).await;
        }
        Err(Error::unavailable(format!(
            "{key}'s rollout changed {CAS_ATTEMPTS} times while this change was tried; retry"
        )))
    }

    /// Writes the chunks of a chunked spec, a bounded number at a time.
    async fn write_chunks(
        &self,
        st: &Statements,
        spec_id: Uuid,
        chunks: &[Vec<u8>],
    ) -> Result<(), Error> {
        for (start, group) in (0..chunks.len())
            .step_by(4)
            .map(|s| (s, &chunks[s..(s + 4).min(chunks.len())]))
        {
            let writes: Vec<_> = group
                .iter()
                .enumerate()
                .map(|(i, data)| {
                    let number = i32::try_from(start + i).unwrap_or(i32::MAX);
                    self.session
                        .execute_unpaged(&st.insert_chunk, (spec_id, number, data.as_slice()))
                })
                .collect();
            for result in futures::future::join_all(writes).await {
                result.map_err(|err| execution_error("storing a model's spec chunk", err))?;
            }
        }
        Ok(())
    }

    /// Removes the chunks of an upload whose version row did not land. Best effort: leftover
    /// chunks only take space, and `keyscore prune` removes them.
    async fn forget_chunks(&self, st: &Statements, spec_id: Uuid) {
        if let Err(err) = self
            .session
            .execute_unpaged(&st.delete_chunks, (spec_id,))
            .await
        {
            tracing::debug!(%spec_id, error = %err, "Could not remove the chunks of a refused upload.");
        }
    }

    /// One upload: the chunks, then the version row with `IF NOT EXISTS`, then the bare key
    /// in `active_models` for listings.
    async fn upload(&self, key: &str, version: Option<i64>, spec_json: &str) -> Result<i64, Error> {
        let st = self.statements().await?;
        let encoded = EncodedSpec::new(spec_json, self.max_spec_bytes)?;
        let author = ModelSpec::from_json(spec_json.as_bytes())
            .ok()
            .and_then(|spec| spec.metadata)
            .and_then(|meta| meta.author);
        let (inline, spec_id, chunks) = match &encoded.body {
            Body::Inline(text) => (Some(text.as_str()), None, None),
            Body::Chunked { spec_id, chunks } => (None, Some(*spec_id), Some(chunks.as_slice())),
        };
        if let (Some(spec_id), Some(chunks)) = (spec_id, chunks) {
            self.write_chunks(st, spec_id, chunks).await?;
        }
        let mut number = match version {
            Some(v) => v,
            None => {
                let newest: Option<(i64,)> = self
                    .read_row("finding the newest version", &st.versions_of, (key,))
                    .await?;
                newest.map_or(1, |(v,)| v + 1)
            }
        };
        let context = "storing a model version";
        for attempt in 0..CAS_ATTEMPTS {
            let values = (
                key,
                number,
                inline,
                encoded.encoding(),
                spec_id,
                chunks.map(|c| i32::try_from(c.len()).unwrap_or(i32::MAX)),
                encoded.size,
                encoded.sha256.as_str(),
                author.as_deref(),
                CqlTimestamp(feed::now_millis()),
            );
            let applied = match self
                .compare_and_set(context, &st.insert_version, values)
                .await
            {
                Ok(applied) => applied,
                // Unknown outcome: treated as "not applied" below, where a row with our
                // checksum counts as ours.
                Err(err) if err.is_transient() => false,
                Err(err) => return Err(err),
            };
            if applied {
                self.touch_key(st, key).await?;
                return Ok(number);
            }
            let existing = self.read_stored_spec(st, key, number).await?;
            let ours = existing.as_ref().is_some_and(|row| {
                row.sha256.as_deref() == Some(encoded.sha256.as_str()) && row.spec_id == spec_id
            });
            if ours {
                self.touch_key(st, key).await?;
                return Ok(number);
            }
            if existing.is_none() {
                // The write timed out and did not land: try the same number again.
                back_off(attempt).await;
                continue;
            }
            match version {
                Some(v) => {
                    if let Some(spec_id) = spec_id {
                        self.forget_chunks(st, spec_id).await;
                    }
                    // The same spec uploaded again under the same number is a retry.
                    if existing.is_some_and(|row| row.sha256.as_deref() == Some(&encoded.sha256)) {
                        return Ok(v);
                    }
                    return Err(Error::VersionExists {
                        key: key.to_string(),
                        version: v,
                    });
                }
                None => number += 1,
            }
        }
        Err(Error::unavailable(format!(
            "{key}: {CAS_ATTEMPTS} version numbers were taken by concurrent uploads; retry"
        )))
    }

    /// Makes `key` appear in listings before its first activation.
    async fn touch_key(&self, st: &Statements, key: &str) -> Result<(), Error> {
        self.session
            .execute_unpaged(&st.touch_key, (key,))
            .await
            .map_err(|err| execution_error("listing the key", err))?;
        Ok(())
    }

    /// Runs `op` on each item with a bounded number in flight, answers in order; a transient
    /// failure fails the whole call, any other fails its item only.
    async fn each<'a, T, R, F, Fut>(
        &'a self,
        items: &'a [T],
        op: F,
    ) -> Result<Vec<Result<R, Error>>, Error>
    where
        F: Fn(&'a T) -> Fut,
        Fut: std::future::Future<Output = Result<R, Error>>,
    {
        let mut results: Vec<Result<R, Error>> = Vec::with_capacity(items.len());
        for chunk in items.chunks(CONCURRENT_REQUESTS) {
            let calls: Vec<Fut> = chunk.iter().map(&op).collect();
            results.extend(futures::future::join_all(calls).await);
            if let Some(pos) = results
                .iter()
                .position(|r| r.as_ref().is_err_and(Error::is_transient))
            {
                return Err(results.swap_remove(pos).err().expect("an error"));
            }
        }
        Ok(results)
    }
}

/// Waits a little before another compare-and-set attempt, longer after each lost race, with
/// jitter so that writers that collided do not collide again.
async fn back_off(attempt: u32) {
    let jitter = u64::from(Uuid::new_v4().as_bytes()[0]) % 5;
    let ms = (1u64 << attempt.min(6)) + jitter;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// One change of a key's rollout.
#[derive(Debug, Clone)]
enum RolloutChange {
    Canary(Option<Canary>),
    Shadow(Option<i64>),
    /// An automatic verdict: the canary ends, and a promotion records itself (see [`verdict`]).
    Verdict {
        /// The version promoted and the pointer revision it was decided against.
        promotion: Option<(i64, Option<i64>)>,
        /// What decided it, for the history.
        evidence: String,
    },
}

/// The quality TTL of [`CqlOptions::quality_ttl_secs`] as CQL takes it.
fn quality_ttl(secs: u64) -> Result<i32, Error> {
    if secs > MAX_TTL_SECS {
        return Err(Error::setting(format!(
            "[store.cql] quality_ttl_secs is {secs}, over the servers' limit of {MAX_TTL_SECS} \
             (20 years); use a shorter time, or 0 to keep quality rows until deleted"
        )));
    }
    Ok(i32::try_from(secs).expect("under the 20-year limit"))
}

#[async_trait::async_trait]
impl ModelStore for CqlModelStore {
    fn describe(&self) -> String {
        self.config.describe()
    }

    async fn init(&self) -> Result<(), Error> {
        self.init_with(&InitOptions::default()).await.map(drop)
    }

    async fn init_with(&self, options: &InitOptions) -> Result<InitReport, Error> {
        let ks = &self.config.keyspace;
        let mut report = InitReport::default();
        let context = "creating the schema";
        let run = |cql: String| async move {
            let mut statement = Statement::new(cql);
            statement.set_request_timeout(Some(SCHEMA_TIMEOUT));
            self.session
                .query_unpaged(statement, ())
                .await
                .map_err(|err| execution_error(context, err))
        };
        // What is this? ScyllaDB has system.versions; Cassandra does not.
        let scylla = match self
            .session
            .query_unpaged("SELECT version FROM system.versions", ())
            .await
        {
            Ok(result) => result
                .into_rows_result()
                .ok()
                .and_then(|rows| rows.maybe_first_row::<(Option<String>,)>().ok().flatten())
                .and_then(|(v,)| v),
            Err(_) => None,
        };
        let scylla_version = scylla.as_deref().and_then(schema::scylla_version);
        let no_lwt_with_tablets = scylla_version.is_some_and(schema::refuses_lwt_with_tablets);
        let exists = self
            .session
            .query_unpaged(
                "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?",
                (ks.as_str(),),
            )
            .await
            .map_err(|err| execution_error(context, err))?
            .into_rows_result()
            .map_err(|err| corrupt(context, err))?
            .rows_num()
            > 0;
        let server = match &scylla {
            Some(v) => format!("ScyllaDB {v}"),
            None => "Cassandra".to_string(),
        };
        if exists {
            report.notes.push(format!(
                "keyspace {ks} exists ({server}); its replication is left as it is"
            ));
            if no_lwt_with_tablets && self.keyspace_has_tablets(ks).await? {
                return Err(Error::rejected(format!(
                    "keyspace {ks} uses tablets, and {server} refuses lightweight transactions \
                     (which keyscore's writes use) in tablets keyspaces; create a keyspace with \
                     AND tablets = {{'enabled': false}} (README, \"Production keyspace\") or \
                     upgrade to ScyllaDB 2025.4 or later"
                )));
            }
        } else {
            let (replication, development) =
                schema::replication_map(options.replication.as_deref())?;
            run(schema::create_keyspace(
                ks,
                &replication,
                no_lwt_with_tablets,
            ))
            .await?;
            report.notes.push(format!(
                "created keyspace {ks} on {server} with replication {replication}"
            ));
            if no_lwt_with_tablets {
                report.notes.push(format!(
                    "tablets are off in {ks}: {server} refuses lightweight transactions in \
                     tablets keyspaces, and every keyscore write is one"
                ));
            }
            if development {
                report.notes.push(format!(
                    "warning: {ks} keeps one replica (SimpleStrategy), for development only; \
                     for production give --replication DC=N (NetworkTopologyStrategy)"
                ));
            }
        }
        for cql in schema::table_statements(ks) {
            // An ALTER ... ADD runs only when its column is missing: the CREATE statements
            // already have it for new keyspaces, and a second ADD would be refused.
            if let Some((table, column)) = schema::added_column(&cql) {
                let (table, column) = (table.to_string(), column.to_string());
                let has = || async {
                    Ok::<_, Error>(
                        table_columns(&self.session, ks, &table)
                            .await?
                            .contains(&column),
                    )
                };
                if !has().await? {
                    if let Err(err) = run(cql).await {
                        // Another init may have added it meanwhile.
                        if !has().await? {
                            return Err(err);
                        }
                    }
                }
                continue;
            }
            run(cql).await?;
        }
        self.check_columns(ks).await?;
        self.session.await_schema_agreement().await.map_err(|err| {
            Error::unavailable_from(
                "the cluster's nodes did not agree on the new schema; run init again once \
                 every node is up",
                err,
            )
        })?;
        Ok(report)
    }

    async fn insert_version(
        &self,
        key: &str,
        version: Option<i64>,
        spec_json: &str,
    ) -> Result<i64, Error> {
        self.upload(key, version, spec_json).await
    }

    async fn insert_versions(
        &self,
        items: &[NewVersion],
    ) -> Result<Vec<Result<i64, Error>>, Error> {
        self.each(items, |item| {
            self.upload(&item.key, item.version, &item.spec_json)
        })
        .await
    }

    async fn activate(&self, key: &str, version: i64) -> Result<(), Error> {
        check_key(key)?;
        self.move_pointer(key, ChangeAction::Activate, None, |current| {
            // Re-activating the active version keeps the rollback target.
            let previous = if current.version == Some(version) {
                current.previous
            } else {
                current.version
            };
            Ok(Some((version, previous)))
        })
        .await
        .map(drop)
    }

    async fn activate_many(
        &self,
        items: &[(String, i64)],
    ) -> Result<Vec<Result<(), Error>>, Error> {
        self.each(items, |(key, version)| self.activate(key, *version))
            .await
    }

    async fn rollback(&self, key: &str) -> Result<i64, Error> {
        check_key(key)?;
        let moved = self
            .move_pointer(key, ChangeAction::Rollback, None, |current| {
                match (current.version, current.previous) {
                    (Some(active), Some(previous)) => Ok(Some((previous, Some(active)))),
                    _ => Err(Error::NothingToRollBack {
                        key: key.to_string(),
                    }),
                }
            })
            .await;
        match moved {
            Ok(moved) => Ok(moved.version.expect("a rollback writes a version")),
            Err(Error::NothingToRollBack { .. }) => {
                self.require_key(key).await?;
                Err(Error::NothingToRollBack {
                    key: key.to_string(),
                })
            }
            Err(err) => Err(err),
        }
    }

    /// One compare-and-set on the pointer's revision: [`plan_move`] decides against the
    /// pointer read, and a pointer changed in between is read and decided again.
    async fn move_active(&self, key: &str, change: PointerMove) -> Result<Moved, Error> {
        check_key(key)?;
        self.require_key(key).await?;
        let outcome = std::sync::Mutex::new(None);
        self.move_pointer(key, change.action(), None, |current| {
            let plan = plan_move(key, current.version.map(|v| (v, current.previous)), change)?;
            let mut outcome = outcome.lock().unwrap_or_else(|p| p.into_inner());
            Ok(match plan {
                MovePlan::Done(moved) => {
                    *outcome = Some(moved);
                    None
                }
                MovePlan::Write {
                    version,
                    previous,
                    outcome: moved,
                } => {
                    *outcome = Some(moved);
                    Some((version, previous))
                }
            })
        })
        .await?;
        let moved = outcome.into_inner().unwrap_or_else(|p| p.into_inner());
        Ok(moved.expect("move_pointer asks the plan at least once"))
    }

    /// Two reads of the key's one partition (its pointer moves, its rollout changes), merged
    /// newest first by time, then revision.
    async fn history(&self, key: &str, limit: usize) -> Result<Vec<HistoryEntry>, Error> {
        let context = "reading a key's history";
        let st = self.history_statements(false).await?;
        let limit_cql = i32::try_from(limit.max(1)).unwrap_or(i32::MAX);
        // Each pointer's revision now: a revision between it and the rows read that has no
        // row was changed by a writer that did not record it (see cql/050_model_history.cql).
        let pointers = self.statements().await?;
        let active_revision = self.read_pointer(pointers, key).await?.revision;
        let rollout_revision = self
            .read_rollout_row(self.rollout_statements().await?, key)
            .await?
            .and_then(|r| r.revision);
        let mut lists = Vec::with_capacity(2);
        for (pointer, current) in [("active", active_revision), ("rollout", rollout_revision)] {
            let rows = self
                .session
                .execute_unpaged(&st.read, (key, pointer, limit_cql))
                .await
                .map_err(|err| execution_error(context, err))?
                .into_rows_result()
                .map_err(|err| corrupt(context, err))?;
            let decoded: Vec<HistoryColumnsWithEvidence> = if st.evidence {
                rows.rows::<HistoryColumnsWithEvidence>()
                    .map_err(|err| corrupt(context, err))?
                    .collect::<Result<_, _>>()
                    .map_err(|err| corrupt(context, err))?
            } else {
                rows.rows::<HistoryColumns>()
                    .map_err(|err| corrupt(context, err))?
                    .map(|row| row.map(|(a, b, c, d, e, f, g)| (a, b, c, d, e, f, g, None)))
                    .collect::<Result<_, _>>()
                    .map_err(|err| corrupt(context, err))?
            };
            let entries = decoded
                .into_iter()
                .map(
                    |(revision, action, version, previous, share, by, at, evidence)| HistoryEntry {
                        action: action.unwrap_or_else(|| "change".to_string()),
                        revision,
                        version,
                        previous,
                        share,
                        by,
                        at_ms: at.map(|t| t.0),
                        evidence,
                    },
                )
                .collect();
            lists.push(with_gaps(entries, current.unwrap_or(0), limit));
        }
        let rollout = lists.pop().unwrap_or_default();
        let active = lists.pop().unwrap_or_default();
        Ok(merge_newest_first(active, rollout, limit))
    }

    /// The canary's version made active (recorded as a promotion), then the canary ended:
    /// two compare-and-sets, on the pointer and on the rollout. A reader in between sees the
    /// candidate both active and canary, which scores the same.
    async fn promote(&self, key: &str) -> Result<i64, Error> {
        check_key(key)?;
        let canary = self
            .rollout(key)
            .await?
            .and_then(|r| r.canary)
            .ok_or_else(|| Error::NoCanary {
                key: key.to_string(),
            })?;
        self.move_pointer(key, ChangeAction::Promote, None, |current| {
            let previous = if current.version == Some(canary.version) {
                current.previous
            } else {
                current.version
            };
            Ok(Some((canary.version, previous)))
        })
        .await?;
        self.change_canary(
            key,
            CanaryChange::End {
                version: canary.version,
            },
        )
        .await?;
        Ok(canary.version)
    }

    /// The rollout's compare-and-set decides (see `src/store/cql/verdict.rs`).
    async fn decide_canary(
        &self,
        key: &str,
        version: i64,
        verdict: Verdict,
        evidence: &str,
    ) -> Result<CanaryChanged, Error> {
        self.decide(key, version, verdict, evidence).await
    }

    /// Each key's rows in one request (a single-partition unlogged batch), keys concurrently
    /// (see `src/store/cql/quality.rs`).
    async fn write_quality(&self, rows: &[QualityRow]) -> Result<(), Error> {
        self.write_quality_rows(rows).await
    }

    /// One slice of the key's partition per version read (see `src/store/cql/quality.rs`).
    async fn quality(
        &self,
        key: &str,
        version: Option<i64>,
        limit: usize,
    ) -> Result<Vec<QualityRow>, Error> {
        self.read_quality_rows(key, version, limit).await
    }

    /// `changed_by` and `changed_at` of the key's `active_models` row.
    async fn activation(&self, key: &str) -> Result<Option<Activation>, Error> {
        let st = self.statements().await?;
        let row: Option<(Option<i64>, Option<String>, Option<CqlTimestamp>)> = self
            .read_row("reading who activated a version", &st.pointer_audit, (key,))
            .await?;
        Ok(row.and_then(|(version, by, at)| {
            version.map(|_| Activation {
                by,
                at_ms: at.map(|t| t.0),
            })
        }))
    }

    async fn active(&self, key: &str) -> Result<Option<ActiveModel>, Error> {
        let st = self.statements().await?;
        let pointer = self.read_pointer(st, key).await?;
        let Some(version) = pointer.version else {
            return Ok(None);
        };
        let spec_json = self.read_spec(st, key, version).await?.ok_or_else(|| {
            Error::corrupt(format!(
                "active_models points {key} at version {version}, which model_versions does \
                 not hold; activate an existing version"
            ))
        })?;
        Ok(Some(ActiveModel {
            model: StoredModel {
                key: key.to_string(),
                version,
                spec_json,
            },
            revision: pointer.revision.unwrap_or(0),
        }))
    }

    async fn active_many(&self, keys: &[String]) -> Result<Vec<Option<ActiveModel>>, Error> {
        self.each(keys, |key| self.active(key))
            .await?
            .into_iter()
            .collect()
    }

    async fn pointers(&self, keys: &[String]) -> Result<Vec<Option<StorePointer>>, Error> {
        let st = self.statements().await?;
        Ok(self
            .each(keys, |key| self.read_pointer(st, key))
            .await?
            .into_iter()
            .collect::<Result<Vec<_>, Error>>()?
            .into_iter()
            .map(|p| {
                p.version.map(|version| StorePointer {
                    version,
                    previous: p.previous,
                    revision: p.revision.unwrap_or(0),
                })
            })
            .collect())
    }

    async fn version(&self, key: &str, version: i64) -> Result<Option<StoredModel>, Error> {
        let st = self.statements().await?;
        Ok(self
            .read_spec(st, key, version)
            .await?
            .map(|spec_json| StoredModel {
                key: key.to_string(),
                version,
                spec_json,
            }))
    }

    async fn rollout(&self, key: &str) -> Result<Option<Rollout>, Error> {
        let st = self.rollout_statements().await?;
        Ok(self.read_rollout_row(st, key).await?.map(|row| Rollout {
            canary: row.canary,
            shadow: row.shadow,
            revision: row.revision.unwrap_or(0),
        }))
    }

    async fn set_canary(&self, key: &str, canary: Option<Canary>) -> Result<(), Error> {
        check_key(key)?;
        if let Some(c) = &canary {
            check_canary(c)?;
        }
        // change_rollout checks that the canary's version exists.
        self.change_rollout(key, |_| Ok(Some(RolloutChange::Canary(canary.clone()))))
            .await
            .map(drop)
    }

    /// One compare-and-set on the rollout's revision: [`plan_canary`] decides against the row
    /// read, and a row changed in between is read and decided again.
    async fn change_canary(&self, key: &str, change: CanaryChange) -> Result<CanaryChanged, Error> {
        check_key(key)?;
        if let CanaryChange::Start { canary, .. } = &change {
            check_canary(canary)?;
        }
        let after = std::sync::Mutex::new(None);
        let (read, changed) = self
            .change_rollout(key, |current| {
                let planned = plan_canary(key, current.canary.clone(), change.clone())?;
                *after.lock().unwrap_or_else(|p| p.into_inner()) = planned.clone();
                Ok(planned.map(RolloutChange::Canary))
            })
            .await?;
        let before = read.canary;
        let after = after
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or_else(|| before.clone());
        Ok(CanaryChanged {
            before,
            after,
            changed,
        })
    }

    async fn set_shadow(&self, key: &str, version: Option<i64>) -> Result<(), Error> {
        check_key(key)?;
        if let Some(v) = version {
            let st = self.statements().await?;
            self.require_version(st, key, v).await?;
        }
        self.change_rollout(key, |_| Ok(Some(RolloutChange::Shadow(version))))
            .await
            .map(drop)
    }

    async fn versions(&self, key: &str) -> Result<Vec<i64>, Error> {
        let st = self.statements().await?;
        let mut versions: Vec<i64> = self
            .read_all::<(i64,)>("listing a key's versions", &st.versions_of, (key,))
            .await?
            .into_iter()
            .map(|(v,)| v)
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// Removes each version's row, then its chunks (a reader that finds the row reads the
    /// chunks after; one that finds no row reads no chunks).
    async fn delete_versions(&self, key: &str, versions: &[i64]) -> Result<(), Error> {
        let st = self.statements().await?;
        for &version in versions {
            let Some(stored) = self.read_stored_spec(st, key, version).await? else {
                continue;
            };
            self.session
                .execute_unpaged(&st.delete_version, (key, version))
                .await
                .map_err(|err| execution_error("removing a model version", err))?;
            if let Some(spec_id) = stored.spec_id {
                self.session
                    .execute_unpaged(&st.delete_chunks, (spec_id,))
                    .await
                    .map_err(|err| execution_error("removing a model's spec chunks", err))?;
            }
        }
        Ok(())
    }

    /// One page of `active_models` (small rows, no specs), in token order.
    /// Pages of `active_models` in token order (small rows, no specs): the driver's paging
    /// state, hex-encoded, is the next page's start, so a page costs one or a few requests
    /// whatever the table's size, and no key is skipped or repeated while pages are read.
    async fn key_page(&self, after: Option<&str>, limit: usize) -> Result<KeyPage, Error> {
        let context = "listing keys";
        let mut paging = match after {
            None => PagingState::start(),
            Some(token) => PagingState::new_from_raw_bytes(hex::decode(token).map_err(|_| {
                Error::rejected(format!("{token:?} is not a page token of this store"))
            })?),
        };
        let st = self.statements().await?;
        let mut keys: Vec<(String, Option<i64>)> = Vec::new();
        while keys.len() < limit {
            let mut statement = st.all_pointers.clone();
            // Bounded: a CQL page size is an i32; a short page just asks again.
            let want = i32::try_from(limit - keys.len()).unwrap_or(i32::MAX);
            statement.set_page_size(want);
            let (result, response) = self
                .session
                .execute_single_page(&statement, (), paging)
                .await
                .map_err(|err| execution_error(context, err))?;
            let rows = result
                .into_rows_result()
                .map_err(|err| corrupt(context, err))?;
            for row in rows
                .rows::<(String, Option<i64>)>()
                .map_err(|err| corrupt(context, err))?
            {
                keys.push(row.map_err(|err| corrupt(context, err))?);
            }
            match response.into_paging_control_flow() {
                ControlFlow::Continue(next) => paging = next,
                ControlFlow::Break(()) => return Ok(KeyPage { keys, next: None }),
            }
        }
        let next = paging.as_bytes_slice().map(hex::encode);
        Ok(KeyPage { keys, next })
    }

    /// Pages through `active_models` (small rows, no specs), then reads each key's version
    /// numbers from its own partition, a bounded number at a time.
    async fn list(&self) -> Result<Vec<KeySummary>, Error> {
        let context = "listing models";
        let st = self.statements().await?;
        let pointers: Vec<(String, Option<i64>)> =
            self.read_all(context, &st.all_pointers, ()).await?;
        let active: BTreeMap<String, Option<i64>> = pointers.into_iter().collect();
        let keys: Vec<String> = active.keys().cloned().collect();
        let versions = self
            .each(&keys, |key| async move {
                self.read_all::<(i64,)>(context, &st.versions_of, (key.as_str(),))
                    .await
            })
            .await?;
        let mut out = Vec::with_capacity(keys.len());
        for (key, versions) in keys.into_iter().zip(versions) {
            let mut versions: Vec<i64> = versions?.into_iter().map(|(v,)| v).collect();
            if versions.is_empty() {
                continue;
            }
            versions.sort_unstable();
            out.push(KeySummary {
                active: active.get(&key).copied().flatten(),
                key,
                versions,
            });
        }
        Ok(out)
    }

    async fn cursor(&self) -> Result<ChangeCursor, Error> {
        Ok(ChangeCursor::at(feed::now_millis()))
    }

    async fn changes_since(&self, cursor: ChangeCursor) -> Result<Changes, Error> {
        let context = "reading the change feed";
        let st = self.statements().await?;
        let now_ms = feed::now_millis();
        let bound = feed::lookback_bound(cursor.position(), self.look_back_ms);
        let partitions: Vec<(i64, i32)> = feed::feed_days(bound, now_ms)
            .into_iter()
            .flat_map(|day| (0..feed::FEED_BUCKETS).map(move |bucket| (day, bucket)))
            .collect();
        let reads = self
            .each(&partitions, |&(day, bucket)| async move {
                self.read_all::<(CqlTimestamp, String, Option<i64>)>(
                    context,
                    &st.feed,
                    (CqlDate(feed::cql_date(day)), bucket, CqlTimestamp(bound)),
                )
                .await
            })
            .await?;
        let mut keys = BTreeSet::new();
        let mut rows = Vec::new();
        let mut newest = cursor.position();
        for read in reads {
            for (CqlTimestamp(at), key, revision) in read? {
                let id = feed::change_id(at, &key, revision);
                newest = newest.max(at);
                rows.push((at, id));
                if !cursor.has_seen(id) {
                    keys.insert(key);
                }
            }
        }
        // A row from a clock ahead of ours must not carry the position past our clock, or rows
        // written meanwhile by correct clocks would fall behind the look-back.
        let position = newest.min(now_ms).max(cursor.position().min(now_ms));
        let keep_from = feed::lookback_bound(position, self.look_back_ms);
        let seen = rows
            .into_iter()
            .filter(|(at, _)| *at > keep_from)
            .map(|(_, id)| id)
            .collect();
        Ok(Changes {
            keys: keys.into_iter().collect(),
            next: ChangeCursor::with_seen(position, seen),
        })
    }
}

impl CqlModelStore {
    /// Refuses tables made by an older keyscore (`CREATE TABLE IF NOT EXISTS` leaves them as
    /// they are), naming what is missing.
    async fn check_columns(&self, keyspace: &str) -> Result<(), Error> {
        for (table, wanted) in schema::REQUIRED_COLUMNS {
            let have = table_columns(&self.session, keyspace, table).await?;
            let missing: Vec<&str> = wanted
                .iter()
                .copied()
                .filter(|c| !have.contains(*c))
                .collect();
            if !missing.is_empty() {
                return Err(Error::rejected(format!(
                    "{keyspace}.{table} was created by an older keyscore and lacks {}; \
                     create a new keyspace with `keyscore init` and upload the models again",
                    missing.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Whether `keyspace` uses ScyllaDB tablets (it has a `system_schema.scylla_keyspaces` row
    /// with `initial_tablets` set).
    async fn keyspace_has_tablets(&self, keyspace: &str) -> Result<bool, Error> {
        let context = "reading the keyspace's settings";
        let row: Option<(Option<i32>,)> = self
            .session
            .query_unpaged(
                "SELECT initial_tablets FROM system_schema.scylla_keyspaces \
                 WHERE keyspace_name = ?",
                (keyspace,),
            )
            .await
            .map_err(|err| execution_error(context, err))?
            .into_rows_result()
            .map_err(|err| corrupt(context, err))?
            .maybe_first_row()
            .map_err(|err| corrupt(context, err))?;
        Ok(matches!(row, Some((Some(_),))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(revision: i64, at_ms: i64) -> HistoryEntry {
        HistoryEntry {
            action: "activate".to_string(),
            revision,
            version: Some(revision),
            previous: None,
            share: None,
            by: None,
            at_ms: Some(at_ms),
            evidence: None,
        }
    }

    #[test]
    fn revisions_without_a_row_are_shown_as_not_recorded() {
        let rows = vec![entry(4, 40), entry(2, 20)];
        let listed: Vec<(i64, String)> = with_gaps(rows.clone(), 5, 10)
            .into_iter()
            .map(|e| (e.revision, e.action))
            .collect();
        let r = |n: i64, a: &str| (n, a.to_string());
        assert_eq!(
            listed,
            [
                r(5, NOT_RECORDED),
                r(4, "activate"),
                r(3, NOT_RECORDED),
                r(2, "activate"),
                r(1, NOT_RECORDED)
            ]
        );
        assert_eq!(with_gaps(rows, 5, 2).len(), 2, "the limit holds");
        assert!(with_gaps(Vec::new(), 0, 10).is_empty());
    }

    #[test]
    fn two_pointers_merge_newest_first_and_gaps_keep_their_place() {
        let active = with_gaps(vec![entry(3, 30), entry(1, 10)], 3, 10);
        let rollout = vec![entry(2, 25), entry(1, 5)];
        let merged: Vec<(i64, Option<i64>)> = merge_newest_first(active, rollout, 10)
            .into_iter()
            .map(|e| (e.revision, e.at_ms))
            .collect();
        assert_eq!(
            merged,
            [
                (3, Some(30)),
                (2, None),
                (2, Some(25)),
                (1, Some(10)),
                (1, Some(5))
            ]
        );
    }
}
