//! The ScyllaDB / Cassandra backend, on the `scylla` driver.
//!
//! Tables (see `cql/*.cql`): `model_versions` holds every version, clustered newest first;
//! `active_models` holds the pointer per key; `model_changes` is the change feed, partitioned
//! by UTC day. An activation is one logged batch that moves the pointer and appends the feed
//! row, so either both land or neither does.
//!
//! * **Revision.** An activation's revision is the write time (microseconds) of the pointer.
//!   The batch carries an explicit timestamp, the later of this machine's clock and the
//!   current pointer's write time plus one, so revisions of a key strictly increase (and the
//!   newer pointer wins) even when writers' clocks disagree.
//! * **Feed.** A cursor is a writer's clock in milliseconds; see [`feed`] for the day
//!   partitions and the look-back that tolerates clock skew. A hand-made
//!   `UPDATE active_models` without a feed row is not seen by the feed; the registry's
//!   periodic resync picks it up.
//! * **Races.** `put_version` reads, then inserts: two uploaders writing the same explicit
//!   version of one key at the same moment may both succeed, and the later write wins. Upload
//!   with `None` from a single place (CI) or pick distinct versions. Two concurrent
//!   activations of one key both land in the feed; the later timestamp wins the pointer.
//!
//! * **Rollouts.** `model_rollouts` holds a key's canary and shadow version; each change is
//!   one logged batch with a feed row, timestamped like an activation, and its revision is
//!   `WRITETIME(changed_at)`. Promotion activates the canary's version, then ends the canary
//!   (two batches; in between the candidate is both active and canary, which scores the
//!   same).
//!
//! Statements are prepared on first use (the tables must exist, so after `init`) and cached;
//! the rollout statements separately, so a keyspace created before `model_rollouts` existed
//! keeps serving until `init` adds it.

mod config;
mod connection;
mod errors;
mod feed;
mod schema;
mod statements;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use futures::TryStreamExt;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Statement;
use scylla::value::CqlTimestamp;
use tokio::sync::OnceCell;

pub use self::config::{CqlOptions, CQL_ENV_OVERRIDES};

use self::config::CqlConfig;
use self::connection::ConnectionSettings;
use self::errors::{corrupt, execution_error, pager_error, row_error};
use self::statements::{RolloutStatements, Statements};
use super::{
    check_key, check_share, ActiveModel, Canary, ChangeCursor, Changes, Error, KeySummary,
    ModelStore, Pointer as StorePointer, Rollout, StoredModel,
};
use crate::model::ModelSpec;

/// How long one request may take before it fails as [`Error::Unavailable`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long opening a connection to a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads in flight at once for one batched call ([`ModelStore::active_many`]).
const CONCURRENT_READS: usize = 32;

/// How long one schema statement of `init` may take (schema changes are slower).
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(60);

/// A model store in a ScyllaDB or Cassandra keyspace.
pub struct CqlModelStore {
    config: CqlConfig,
    session: Session,
    statements: OnceCell<Statements>,
    rollout_statements: OnceCell<RolloutStatements>,
}

impl fmt::Debug for CqlModelStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CqlModelStore")
            .field("url", &self.config.describe())
            .finish_non_exhaustive()
    }
}

/// The active pointer as stored.
struct Pointer {
    version: i64,
    previous: Option<i64>,
    /// `WRITETIME(version)`, microseconds.
    written_at: i64,
}

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
        let mut builder = SessionBuilder::new()
            .known_nodes(&config.nodes)
            .connection_timeout(CONNECT_TIMEOUT)
            .default_execution_profile_handle(profile.into_handle());
        builder = settings.session(builder);
        if let Some(login) = &config.credentials {
            builder = builder.user(login.username.clone(), login.password.clone());
        }
        let session = builder
            .build()
            .await
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
            rollout_statements: OnceCell::new(),
        })
    }

    /// The keyspace this store uses.
    pub fn keyspace(&self) -> &str {
        &self.config.keyspace
    }

    /// The prepared statements, preparing them on first use.
    async fn statements(&self) -> Result<&Statements, Error> {
        self.statements
            .get_or_try_init(|| Statements::prepare(&self.session, &self.config.keyspace))
            .await
    }

    /// The rollout statements, preparing them on first use.
    async fn rollout_statements(&self) -> Result<&RolloutStatements, Error> {
        self.rollout_statements
            .get_or_try_init(|| RolloutStatements::prepare(&self.session, &self.config.keyspace))
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

    async fn read_rollout(&self, key: &str) -> Result<Option<Rollout>, Error> {
        let st = self.rollout_statements().await?;
        let row: Option<RolloutRow> = self
            .read_row("reading the canary and shadow", &st.read, (key,))
            .await?;
        Ok(row.map(
            |(canary_version, canary_share, shadow, written_at)| Rollout {
                canary: canary_version
                    .zip(canary_share)
                    .map(|(version, share)| Canary { version, share }),
                shadow,
                revision: written_at.unwrap_or(0),
            },
        ))
    }

    /// Writes one rollout change with its feed row (naming `feed_version`) in one logged
    /// batch, timestamped after the rollout it replaces.
    async fn write_rollout(
        &self,
        key: &str,
        change: RolloutChange,
        feed_version: i64,
    ) -> Result<(), Error> {
        let st = self.rollout_statements().await?;
        let current = self.read_rollout(key).await?.map(|r| r.revision);
        let now_ms = feed::now_millis();
        let feed_row = (
            feed::day_of(now_ms),
            CqlTimestamp(now_ms),
            key,
            feed_version,
        );
        let context = "changing a canary or shadow";
        let result = match change {
            RolloutChange::Canary(canary) => {
                let mut batch = st.set_canary.clone();
                batch.set_timestamp(Some(write_timestamp(now_ms, current)));
                self.session
                    .batch(
                        &batch,
                        (
                            (
                                canary.map(|c| c.version),
                                canary.map(|c| c.share),
                                CqlTimestamp(now_ms),
                                key,
                            ),
                            feed_row,
                        ),
                    )
                    .await
            }
            RolloutChange::Shadow(version) => {
                let mut batch = st.set_shadow.clone();
                batch.set_timestamp(Some(write_timestamp(now_ms, current)));
                self.session
                    .batch(&batch, ((version, CqlTimestamp(now_ms), key), feed_row))
                    .await
            }
        };
        result.map_err(|err| execution_error(context, err))?;
        Ok(())
    }

    async fn read_pointer(&self, st: &Statements, key: &str) -> Result<Option<Pointer>, Error> {
        let row: Option<(Option<i64>, Option<i64>, Option<i64>)> = self
            .read_row("reading the active pointer", &st.pointer, (key,))
            .await?;
        Ok(match row {
            Some((Some(version), previous, written_at)) => Some(Pointer {
                version,
                previous,
                written_at: written_at.unwrap_or(0),
            }),
            // A row with no version (a hand-made partial write) is no active version.
            _ => None,
        })
    }

    async fn read_spec(
        &self,
        st: &Statements,
        key: &str,
        version: i64,
    ) -> Result<Option<String>, Error> {
        let row: Option<(Option<String>,)> = self
            .read_row("reading a model version", &st.version_spec, (key, version))
            .await?;
        match row {
            None => Ok(None),
            Some((Some(spec),)) => Ok(Some(spec)),
            Some((None,)) => Err(Error::corrupt(format!(
                "{key} version {version} has no spec in model_versions; upload a new version"
            ))),
        }
    }

    /// Points `key` at `version`, remembering `previous`, and appends the feed row, in one
    /// logged batch.
    async fn move_pointer(
        &self,
        st: &Statements,
        key: &str,
        version: i64,
        previous: Option<i64>,
        current_written_at: Option<i64>,
    ) -> Result<(), Error> {
        let now_ms = feed::now_millis();
        let mut batch = st.activate.clone();
        batch.set_timestamp(Some(write_timestamp(now_ms, current_written_at)));
        self.session
            .batch(
                &batch,
                (
                    (version, previous, key),
                    (feed::day_of(now_ms), CqlTimestamp(now_ms), key, version),
                ),
            )
            .await
            .map_err(|err| execution_error("activating a model version", err))?;
        Ok(())
    }
}

/// `canary_version, canary_share, shadow_version, WRITETIME(changed_at)` of `model_rollouts`.
type RolloutRow = (Option<i64>, Option<f64>, Option<i64>, Option<i64>);

/// One change of a key's rollout.
#[derive(Debug, Clone, Copy)]
enum RolloutChange {
    Canary(Option<Canary>),
    Shadow(Option<i64>),
}

/// The write timestamp (microseconds) of an activation: this machine's clock, but always
/// after the pointer it replaces so the new pointer wins and the revision increases.
fn write_timestamp(now_ms: i64, current_written_at: Option<i64>) -> i64 {
    let now_us = now_ms.saturating_mul(1000);
    match current_written_at {
        Some(current) => now_us.max(current.saturating_add(1)),
        None => now_us,
    }
}

#[async_trait::async_trait]
impl ModelStore for CqlModelStore {
    fn describe(&self) -> String {
        self.config.describe()
    }

    async fn init(&self) -> Result<(), Error> {
        for cql in schema::schema_statements(&self.config.keyspace) {
            let mut statement = Statement::new(cql.as_str());
            statement.set_request_timeout(Some(SCHEMA_TIMEOUT));
            self.session
                .query_unpaged(statement, ())
                .await
                .map_err(|err| execution_error("creating the schema", err))?;
        }
        self.session.await_schema_agreement().await.map_err(|err| {
            Error::unavailable_from(
                "the cluster's nodes did not agree on the new schema; run init again once \
                 every node is up",
                err,
            )
        })?;
        Ok(())
    }

    async fn insert_version(
        &self,
        key: &str,
        version: Option<i64>,
        spec_json: &str,
    ) -> Result<i64, Error> {
        let st = self.statements().await?;
        let version = match version {
            Some(v) => {
                if self.read_spec(st, key, v).await?.is_some() {
                    return Err(Error::VersionExists {
                        key: key.to_string(),
                        version: v,
                    });
                }
                v
            }
            None => {
                let newest: Option<(i64,)> = self
                    .read_row("finding the newest version", &st.newest_version, (key,))
                    .await?;
                newest.map_or(1, |(v,)| v + 1)
            }
        };
        let author = ModelSpec::from_json(spec_json.as_bytes())
            .ok()
            .and_then(|spec| spec.metadata)
            .and_then(|meta| meta.author);
        self.session
            .execute_unpaged(
                &st.insert_version,
                (
                    key,
                    version,
                    spec_json,
                    author,
                    CqlTimestamp(feed::now_millis()),
                ),
            )
            .await
            .map_err(|err| execution_error("storing a model version", err))?;
        Ok(version)
    }

    async fn activate(&self, key: &str, version: i64) -> Result<(), Error> {
        check_key(key)?;
        let st = self.statements().await?;
        if self.read_spec(st, key, version).await?.is_none() {
            return Err(Error::NoSuchVersion {
                key: key.to_string(),
                version,
            });
        }
        let pointer = self.read_pointer(st, key).await?;
        let previous = match &pointer {
            // Re-activating the active version keeps the rollback target.
            Some(p) if p.version == version => p.previous,
            Some(p) => Some(p.version),
            None => None,
        };
        let written_at = pointer.map(|p| p.written_at);
        self.move_pointer(st, key, version, previous, written_at)
            .await
    }

    async fn rollback(&self, key: &str) -> Result<i64, Error> {
        check_key(key)?;
        let st = self.statements().await?;
        let Some(Pointer {
            version: current,
            previous: Some(previous),
            written_at,
        }) = self.read_pointer(st, key).await?
        else {
            return Err(Error::NothingToRollBack {
                key: key.to_string(),
            });
        };
        if self.read_spec(st, key, previous).await?.is_none() {
            return Err(Error::NoSuchVersion {
                key: key.to_string(),
                version: previous,
            });
        }
        self.move_pointer(st, key, previous, Some(current), Some(written_at))
            .await?;
        Ok(previous)
    }

    async fn active(&self, key: &str) -> Result<Option<ActiveModel>, Error> {
        let st = self.statements().await?;
        let Some(pointer) = self.read_pointer(st, key).await? else {
            return Ok(None);
        };
        let spec_json = self
            .read_spec(st, key, pointer.version)
            .await?
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "active_models points {key} at version {}, which model_versions does not \
                     hold; activate an existing version",
                    pointer.version
                ))
            })?;
        Ok(Some(ActiveModel {
            model: StoredModel {
                key: key.to_string(),
                version: pointer.version,
                spec_json,
            },
            revision: pointer.written_at,
        }))
    }

    async fn active_many(&self, keys: &[String]) -> Result<Vec<Option<ActiveModel>>, Error> {
        // Concurrent prepared reads, a bounded number in flight, answers in order.
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(CONCURRENT_READS) {
            let reads: Vec<_> = chunk.iter().map(|key| self.active(key)).collect();
            out.extend(futures::future::try_join_all(reads).await?);
        }
        Ok(out)
    }

    async fn pointers(&self, keys: &[String]) -> Result<Vec<Option<StorePointer>>, Error> {
        let st = self.statements().await?;
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(CONCURRENT_READS) {
            let reads: Vec<_> = chunk.iter().map(|key| self.read_pointer(st, key)).collect();
            out.extend(
                futures::future::try_join_all(reads)
                    .await?
                    .into_iter()
                    .map(|p| {
                        p.map(|p| StorePointer {
                            version: p.version,
                            revision: p.written_at,
                        })
                    }),
            );
        }
        Ok(out)
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
        self.read_rollout(key).await
    }

    async fn set_canary(&self, key: &str, canary: Option<Canary>) -> Result<(), Error> {
        check_key(key)?;
        if let Some(c) = canary {
            check_share(c.share)?;
            let st = self.statements().await?;
            if self.read_spec(st, key, c.version).await?.is_none() {
                return Err(Error::NoSuchVersion {
                    key: key.to_string(),
                    version: c.version,
                });
            }
        }
        self.write_rollout(
            key,
            RolloutChange::Canary(canary),
            canary.map_or(0, |c| c.version),
        )
        .await
    }

    async fn set_shadow(&self, key: &str, version: Option<i64>) -> Result<(), Error> {
        check_key(key)?;
        if let Some(v) = version {
            let st = self.statements().await?;
            if self.read_spec(st, key, v).await?.is_none() {
                return Err(Error::NoSuchVersion {
                    key: key.to_string(),
                    version: v,
                });
            }
        }
        self.write_rollout(key, RolloutChange::Shadow(version), version.unwrap_or(0))
            .await
    }

    async fn list(&self) -> Result<Vec<KeySummary>, Error> {
        let context = "listing models";
        let st = self.statements().await?;
        let mut keys: BTreeMap<String, KeySummary> = BTreeMap::new();
        let mut rows = self
            .session
            .execute_iter(st.all_versions.clone(), ())
            .await
            .map_err(|err| pager_error(context, err))?
            .rows_stream::<(String, i64)>()
            .map_err(|err| corrupt(context, err))?;
        while let Some((key, version)) = rows
            .try_next()
            .await
            .map_err(|err| row_error(context, err))?
        {
            keys.entry(key.clone())
                .or_insert_with(|| KeySummary {
                    key,
                    active: None,
                    versions: Vec::new(),
                })
                .versions
                .push(version);
        }
        let mut rows = self
            .session
            .execute_iter(st.all_active.clone(), ())
            .await
            .map_err(|err| pager_error(context, err))?
            .rows_stream::<(String, Option<i64>)>()
            .map_err(|err| corrupt(context, err))?;
        while let Some((key, version)) = rows
            .try_next()
            .await
            .map_err(|err| row_error(context, err))?
        {
            if let Some(summary) = keys.get_mut(&key) {
                summary.active = version;
            }
        }
        let mut summaries: Vec<KeySummary> = keys.into_values().collect();
        for summary in &mut summaries {
            summary.versions.sort_unstable();
        }
        Ok(summaries)
    }

    async fn cursor(&self) -> Result<ChangeCursor, Error> {
        Ok(ChangeCursor(feed::now_millis()))
    }

    async fn changes_since(&self, cursor: ChangeCursor) -> Result<Changes, Error> {
        let context = "reading the change feed";
        let st = self.statements().await?;
        let bound = CqlTimestamp(feed::lookback_bound(cursor.0));
        let mut keys = BTreeSet::new();
        let mut next = cursor;
        for day in feed::feed_days(cursor.0, feed::now_millis()) {
            let mut rows = self
                .session
                .execute_iter(st.feed_day.clone(), (day, bound))
                .await
                .map_err(|err| pager_error(context, err))?
                .rows_stream::<(String, CqlTimestamp)>()
                .map_err(|err| corrupt(context, err))?;
            while let Some((key, CqlTimestamp(at))) = rows
                .try_next()
                .await
                .map_err(|err| row_error(context, err))?
            {
                next = next.max(ChangeCursor(at));
                keys.insert(key);
            }
        }
        Ok(Changes {
            keys: keys.into_iter().collect(),
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_activation_is_written_after_the_pointer_it_replaces() {
        assert_eq!(write_timestamp(1_000, None), 1_000_000);
        assert_eq!(write_timestamp(1_000, Some(10)), 1_000_000);
        // The replaced pointer came from a clock ahead of ours.
        assert_eq!(write_timestamp(1_000, Some(5_000_000)), 5_000_001);
        // Two activations within the same millisecond.
        assert_eq!(write_timestamp(1_000, Some(1_000_000)), 1_000_001);
    }
}
