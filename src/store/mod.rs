//! The model store: where model versions and the active pointer per key live.
//!
//! [`ModelStore`] is the one seam every backend implements; the backend is chosen by URL with
//! [`open`]:
//!
//! * `sqlite://PATH` (or a bare path): the embedded default, [`EmbeddedModelStore`], a SQLite
//!   file that survives restarts and can be inspected with `sqlite3`.
//! * `cql://HOST:PORT[,HOST:PORT...]/KEYSPACE`: ScyllaDB or Cassandra, [`CqlModelStore`]. A
//!   user name and password come from `KEYSCORE_CQL_USERNAME` / `KEYSCORE_CQL_PASSWORD` and are
//!   never logged; TLS and the local datacenter from [`CqlOptions`] (see [`open_with`]).
//! * `memory://`: [`MemoryModelStore`], held in the process and gone with it; for tests,
//!   benchmarks and trying things out. Every `open("memory://")` is a new, empty store.
//!
//! Versions are immutable once written. Activation moves a per-key pointer and appends to a
//! change feed, so a watcher learns which keys changed since a [`ChangeCursor`] without
//! rescanning every key. A key's [`Rollout`] (a canary version with its share of records and,
//! for an automatic canary, the [`AutoCriteria`] that decide it; a shadow version) is stored
//! beside the pointer and announced on the same feed. Serving processes record each version's
//! live quality per window ([`QualityRow`]) beside them.

mod auto;
mod cql;
mod memory;
mod quality;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

pub use auto::{check_canary, check_criteria, check_evidence, AutoCriteria, Verdict};
pub use cql::{CqlModelStore, CqlOptions, CQL_ENV_OVERRIDES};
pub use memory::MemoryModelStore;
pub use quality::{check_quality_row, newest_first, QualityRow, QUALITY_ARMS};
pub use sqlite::EmbeddedModelStore;

use crate::model::{self, ModelSpec};

/// One stored model version.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredModel {
    /// The model key (a city, a region, a tenant).
    pub key: String,
    /// The version number, unique per key.
    pub version: i64,
    /// The spec JSON exactly as stored.
    pub spec_json: String,
}

/// A key's active version, with the revision of the activation that made it active.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveModel {
    /// The active version's row.
    pub model: StoredModel,
    /// Increases with every activation or rollback of this key (a rollback to an older version
    /// still has a newer revision), so readers can order two observations of the same key.
    pub revision: i64,
}

/// A key's active version and revision, without its spec: enough to tell whether a model
/// already built is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pointer {
    /// The active version.
    pub version: i64,
    /// The version a rollback returns to, when known.
    pub previous: Option<i64>,
    /// The revision of the activation that made it active (see [`ActiveModel::revision`]).
    pub revision: i64,
}

/// A change of a key's active pointer that says what the caller expects to find, so that a
/// retry of a change already made is recognised and leaves the store alone instead of being
/// applied a second time. See [`ModelStore::move_active`] and [`plan_move`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointerMove {
    /// Make `version` the active version. A key whose active version already is `version` is
    /// left alone. With `expect`, the active version must otherwise be `expect`.
    Activate {
        /// The version to activate.
        version: i64,
        /// The version the caller believes is active, if it says.
        expect: Option<i64>,
    },
    /// Re-activate the version that was active before `from`, if `from` is active. A key whose
    /// previous version is `from` while another is active was already rolled back from it and
    /// is left alone.
    RollbackFrom {
        /// The version the caller believes is active and wants to leave.
        from: i64,
    },
    /// Make the canary's `version` the active version in place of `from`: planned as
    /// [`PointerMove::Activate`] expecting `from`, recorded in the history as a promotion.
    Promote {
        /// The canary's version.
        version: i64,
        /// The version the caller believes is active.
        from: i64,
    },
}

impl PointerMove {
    /// The action a key's history records for this move.
    pub fn action(self) -> ChangeAction {
        match self {
            PointerMove::Activate { .. } => ChangeAction::Activate,
            PointerMove::RollbackFrom { .. } => ChangeAction::Rollback,
            PointerMove::Promote { .. } => ChangeAction::Promote,
        }
    }
}

/// What a [`PointerMove`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// The version active before the move (for a move already made: the version it left).
    pub from: Option<i64>,
    /// The version active after it.
    pub to: i64,
    /// Whether this call wrote anything; `false` when the store already showed the change made.
    pub changed: bool,
}

/// What a backend does for a [`PointerMove`], decided by [`plan_move`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovePlan {
    /// Write this pointer (if the pointer is still the one read), with this outcome.
    Write {
        /// The version to make active.
        version: i64,
        /// The rollback target to remember.
        previous: Option<i64>,
        /// What to report once written.
        outcome: Moved,
    },
    /// Write nothing: the change is already made.
    Done(Moved),
}

/// Decides a [`PointerMove`] of `key` against its current pointer, `(version, previous)`, or
/// `None` when the key has never been activated. Every backend calls this between its read of
/// the pointer and its conditional write, so the rules are written once. The version to write
/// must still be checked to exist by the backend.
pub fn plan_move(
    key: &str,
    current: Option<(i64, Option<i64>)>,
    change: PointerMove,
) -> Result<MovePlan, Error> {
    let unexpected = |expected: i64| Error::UnexpectedVersion {
        key: key.to_string(),
        expected,
        active: current.map(|(v, _)| v),
    };
    let (version, expect) = match change {
        PointerMove::Activate { version, expect } => (version, expect),
        PointerMove::Promote { version, from } => (version, Some(from)),
        PointerMove::RollbackFrom { from } => return plan_rollback_from(key, current, from),
    };
    match current {
        Some((active, previous)) if active == version => Ok(MovePlan::Done(Moved {
            from: previous,
            to: version,
            changed: false,
        })),
        Some((active, _)) if expect.is_some_and(|e| e != active) => {
            Err(unexpected(expect.unwrap_or_default()))
        }
        None if expect.is_some() => Err(unexpected(expect.unwrap_or_default())),
        _ => {
            let from = current.map(|(v, _)| v);
            Ok(MovePlan::Write {
                version,
                previous: from,
                outcome: Moved {
                    from,
                    to: version,
                    changed: true,
                },
            })
        }
    }
}

/// [`plan_move`] of [`PointerMove::RollbackFrom`].
fn plan_rollback_from(
    key: &str,
    current: Option<(i64, Option<i64>)>,
    from: i64,
) -> Result<MovePlan, Error> {
    match current {
        Some((active, Some(previous))) if active == from => Ok(MovePlan::Write {
            version: previous,
            previous: Some(from),
            outcome: Moved {
                from: Some(from),
                to: previous,
                changed: true,
            },
        }),
        Some((active, None)) if active == from => Err(Error::NothingToRollBack {
            key: key.to_string(),
        }),
        Some((active, Some(previous))) if previous == from => Ok(MovePlan::Done(Moved {
            from: Some(from),
            to: active,
            changed: false,
        })),
        _ => Err(Error::UnexpectedVersion {
            key: key.to_string(),
            expected: from,
            active: current.map(|(v, _)| v),
        }),
    }
}

/// A change of a key's canary that says what the caller expects to find, so that a retry is
/// recognised and a canary someone else started is not silently replaced. See
/// [`ModelStore::change_canary`] and [`plan_canary`].
#[derive(Debug, Clone, PartialEq)]
pub enum CanaryChange {
    /// Start `canary`. The same canary already running is left alone; a different one running
    /// is refused with [`Error::CanaryRunning`] unless `replace`.
    Start {
        /// The canary to run.
        canary: Canary,
        /// Replace a different canary that runs.
        replace: bool,
    },
    /// End the canary of `version`. No canary running is left alone (it was ended already); a
    /// canary of another version is refused with [`Error::CanaryRunning`].
    End {
        /// The version whose canary to end.
        version: i64,
    },
}

/// What a [`CanaryChange`] (or a [`Verdict`]) did.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryChanged {
    /// The canary running before.
    pub before: Option<Canary>,
    /// The canary running after.
    pub after: Option<Canary>,
    /// Whether this call wrote anything.
    pub changed: bool,
}

/// Decides a [`CanaryChange`] of `key` against the canary that runs: `Ok(Some(canary))` to
/// write `canary` (`None`: end it), `Ok(None)` to write nothing. Every backend calls this
/// between its read of the rollout and its conditional write.
pub fn plan_canary(
    key: &str,
    running: Option<Canary>,
    change: CanaryChange,
) -> Result<Option<Option<Canary>>, Error> {
    match change {
        CanaryChange::Start { canary, replace } => match running {
            Some(r) if r == canary => Ok(None),
            Some(r) if !replace => Err(Error::CanaryRunning {
                key: key.to_string(),
                running: r,
            }),
            _ => Ok(Some(Some(canary))),
        },
        CanaryChange::End { version } => match running {
            None => Ok(None),
            Some(r) if r.version == version => Ok(Some(None)),
            Some(r) => Err(Error::CanaryRunning {
                key: key.to_string(),
                running: r,
            }),
        },
    }
}

/// Who made a key's active version active, and when, as far as the store records it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Activation {
    /// Who: `keyscore:USER@HOST` for keyscore's own writes, whatever a hand-written CQL
    /// statement set otherwise.
    pub by: Option<String>,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: Option<i64>,
}

/// What a change recorded in a key's history did. Stored as its [`ChangeAction::as_str`] name
/// (the same names in every engine and in the plain-CQL protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeAction {
    /// A version was made active (`activate`, `upload --activate`, bulk activation).
    Activate,
    /// The active pointer went back to the version before it.
    Rollback,
    /// The canary's version was made active and the canary ended.
    Promote,
    /// A canary started (or was replaced).
    Canary,
    /// The canary ended without promotion.
    CanaryEnd,
    /// A shadow version started (or was replaced).
    Shadow,
    /// The shadow ended.
    ShadowEnd,
}

impl ChangeAction {
    /// Every action, in the order of the enum.
    pub const ALL: [ChangeAction; 7] = [
        ChangeAction::Activate,
        ChangeAction::Rollback,
        ChangeAction::Promote,
        ChangeAction::Canary,
        ChangeAction::CanaryEnd,
        ChangeAction::Shadow,
        ChangeAction::ShadowEnd,
    ];

    /// The stored name: `activate`, `rollback`, `promote`, `canary`, `canary_end`, `shadow`,
    /// `shadow_end`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeAction::Activate => "activate",
            ChangeAction::Rollback => "rollback",
            ChangeAction::Promote => "promote",
            ChangeAction::Canary => "canary",
            ChangeAction::CanaryEnd => "canary_end",
            ChangeAction::Shadow => "shadow",
            ChangeAction::ShadowEnd => "shadow_end",
        }
    }

    /// The action a stored name stands for, if it is one of [`ChangeAction::as_str`]'s.
    pub fn parse(name: &str) -> Option<ChangeAction> {
        ChangeAction::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// Whether the action moves the active pointer (else it changes the rollout).
    pub fn moves_active(self) -> bool {
        matches!(
            self,
            ChangeAction::Activate | ChangeAction::Rollback | ChangeAction::Promote
        )
    }
}

/// The action of a [`HistoryEntry`] that stands for a revision of a key's pointer that has
/// no history row: the change was written (by hand, or by a writer that stopped between its
/// compare-and-set and its history row) without being recorded. Only the CQL store has them.
pub const NOT_RECORDED: &str = "not_recorded";

/// One change in a key's history (see [`ModelStore::history`]): an activation, rollback,
/// promotion, or a canary or shadow started or ended.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// What the change did, as stored: one of [`ChangeAction::as_str`]'s names for keyscore's
    /// writes; a hand-written CQL statement may store another, shown as written.
    pub action: String,
    /// The revision the change wrote: of the active pointer for `activate`, `rollback` and
    /// `promote`, of the rollout for the others (CQL); the feed row's sequence number
    /// (SQLite, memory).
    pub revision: i64,
    /// The version made active, or the canary or shadow version started or ended.
    pub version: Option<i64>,
    /// For changes of the active pointer: the version active before.
    pub previous: Option<i64>,
    /// For a canary start: its share of records.
    pub share: Option<f64>,
    /// Who: `keyscore:USER@HOST` for keyscore's own writes.
    pub by: Option<String>,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: Option<i64>,
    /// For an automatic verdict ([`ModelStore::decide_canary`]): what decided it, a JSON object
    /// as text (counts, metrics, thresholds).
    pub evidence: Option<String>,
}

impl HistoryEntry {
    /// The entry of a change `action` of `version` (with `previous` and `share` where they
    /// apply), by this process's actor, now. `revision` is filled in by the backend.
    pub(crate) fn now(
        action: ChangeAction,
        version: Option<i64>,
        previous: Option<i64>,
        share: Option<f64>,
    ) -> HistoryEntry {
        HistoryEntry {
            action: action.as_str().to_string(),
            revision: 0,
            version,
            previous,
            share,
            by: Some(actor()),
            at_ms: Some(now_millis()),
            evidence: None,
        }
    }

    /// The entry with `evidence` of an automatic verdict recorded.
    pub(crate) fn with_evidence(mut self, evidence: Option<&str>) -> HistoryEntry {
        self.evidence = evidence.map(str::to_string);
        self
    }

    /// The entry of a canary change: `canary` started, or with `None` the canary that ran,
    /// `before`, ended.
    pub(crate) fn canary(canary: Option<Canary>, before: Option<Canary>) -> HistoryEntry {
        match canary {
            Some(c) => Self::now(ChangeAction::Canary, Some(c.version), None, Some(c.share)),
            None => Self::now(
                ChangeAction::CanaryEnd,
                before.map(|c| c.version),
                None,
                None,
            ),
        }
    }

    /// The entry of a shadow change: `shadow` started, or with `None` the shadow that ran,
    /// `before`, ended.
    pub(crate) fn shadow(shadow: Option<i64>, before: Option<i64>) -> HistoryEntry {
        match shadow {
            Some(v) => Self::now(ChangeAction::Shadow, Some(v), None, None),
            None => Self::now(ChangeAction::ShadowEnd, before, None, None),
        }
    }

    /// The parsed action, when it is one keyscore writes.
    pub fn kind(&self) -> Option<ChangeAction> {
        ChangeAction::parse(&self.action)
    }
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Who is acting, for the stores' audit columns: the OS user and host, when known.
pub(crate) fn actor() -> String {
    let user = std::env::var("USER").unwrap_or_default();
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    match (user.is_empty(), host.is_empty()) {
        (false, false) => format!("keyscore:{user}@{host}"),
        (false, true) => format!("keyscore:{user}"),
        _ => "keyscore".to_string(),
    }
}

/// One version to upload with [`ModelStore::put_versions`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewVersion {
    /// The model key.
    pub key: String,
    /// The version number, or `None` for the key's newest plus one.
    pub version: Option<i64>,
    /// The spec JSON.
    pub spec_json: String,
}

/// What [`ModelStore::prune`] removed (or, on a dry run, would remove) and kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// The versions removed, ascending.
    pub removed: Vec<i64>,
    /// The versions kept, ascending.
    pub kept: Vec<i64>,
    /// Of those kept, the ones kept because something names them (active, rollback target,
    /// canary, shadow), ascending.
    pub protected: Vec<i64>,
}

/// Settings of [`ModelStore::init_with`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InitOptions {
    /// The keyspace replication for a CQL store: a CQL map such as
    /// `{'class': 'NetworkTopologyStrategy', 'dc1': 3}`, or `DC=N[,DC=N...]` for
    /// NetworkTopologyStrategy. `None` is one replica (SimpleStrategy), for development only.
    pub replication: Option<String>,
}

/// What [`ModelStore::init_with`] did, for the user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InitReport {
    /// One line per decision worth telling (the keyspace's replication, tablets, warnings).
    pub notes: Vec<String>,
}

/// How many keys a backend's batched reads ask for at once, at most.
pub const READ_BATCH: usize = 512;

/// A key with its versions, for listings.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySummary {
    /// The model key.
    pub key: String,
    /// The active version, if any.
    pub active: Option<i64>,
    /// Every stored version, ascending.
    pub versions: Vec<i64>,
}

/// One page of keys from [`ModelStore::key_page`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyPage {
    /// Keys with their active versions (`None` for a key never activated).
    pub keys: Vec<(String, Option<i64>)>,
    /// Where the next page starts, or `None` after the last page. Opaque to callers: pass it
    /// back to [`ModelStore::key_page`] as `after`.
    pub next: Option<String>,
}

impl KeyPage {
    /// A page of a backend that lists keys in key order: `keys` is up to `limit + 1` keys
    /// after the previous page's last, the extra one only telling that another page follows.
    pub fn from_sorted(mut keys: Vec<(String, Option<i64>)>, limit: usize) -> Self {
        let more = keys.len() > limit;
        keys.truncate(limit);
        let next = if more {
            keys.last().map(|(key, _)| key.clone())
        } else {
            None
        };
        KeyPage { keys, next }
    }
}

/// A candidate version that scores a share of a key's records.
#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    /// The candidate version.
    pub version: i64,
    /// The share of the key's records it scores, in (0, 1].
    pub share: f64,
    /// What decides it automatically (`keyscore canary --auto`); `None` when a person promotes
    /// or ends it.
    pub auto: Option<AutoCriteria>,
}

/// A key's rollout state: what scores besides (or instead of, for some records) the active
/// version.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rollout {
    /// The canary, if one runs.
    pub canary: Option<Canary>,
    /// The shadow version, if one runs: it scores the same records, and its outputs go to a
    /// side output only.
    pub shadow: Option<i64>,
    /// Increases with every change of this key's rollout, so readers can order observations.
    pub revision: i64,
}

impl Rollout {
    /// Whether neither a canary nor a shadow runs.
    pub fn is_empty(&self) -> bool {
        self.canary.is_none() && self.shadow.is_none()
    }
}

/// Checks a canary share: a finite number in (0, 1].
pub fn check_share(share: f64) -> Result<(), Error> {
    if share.is_finite() && share > 0.0 && share <= 1.0 {
        Ok(())
    } else {
        Err(Error::InvalidShare(share))
    }
}

/// A position in a store's change feed, opaque to callers: pass the `next` of one
/// [`ModelStore::changes_since`] to the next call. A backend whose feed is ordered by writers'
/// clocks (CQL) re-reads a window behind the position for late rows, and the cursor remembers
/// the changes of that window it already reported so they are not reported again. Cursors
/// compare by position alone.
#[derive(Debug, Clone, Default)]
pub struct ChangeCursor {
    position: i64,
    /// Sorted identities of the changes already reported in the re-read window.
    seen: Option<Arc<[u64]>>,
}

impl ChangeCursor {
    /// A cursor at `position` that has seen nothing.
    pub fn at(position: i64) -> Self {
        Self {
            position,
            seen: None,
        }
    }

    /// A cursor at `position` that has already reported the changes identified by `seen`.
    pub fn with_seen(position: i64, mut seen: Vec<u64>) -> Self {
        seen.sort_unstable();
        seen.dedup();
        Self {
            position,
            seen: (!seen.is_empty()).then(|| seen.into()),
        }
    }

    /// The position: a backend's sequence number or timestamp.
    pub fn position(&self) -> i64 {
        self.position
    }

    /// Whether the change identified by `id` was already reported.
    pub fn has_seen(&self, id: u64) -> bool {
        self.seen
            .as_ref()
            .is_some_and(|seen| seen.binary_search(&id).is_ok())
    }
}

impl PartialEq for ChangeCursor {
    fn eq(&self, other: &Self) -> bool {
        self.position == other.position
    }
}

impl Eq for ChangeCursor {}

impl PartialOrd for ChangeCursor {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ChangeCursor {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.position.cmp(&other.position)
    }
}

/// Keys whose active version changed, and the cursor to ask from next.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    /// Changed keys, each at most once, in no particular order.
    pub keys: Vec<String>,
    /// Pass this to the next [`ModelStore::changes_since`] call.
    pub next: ChangeCursor,
}

/// What a model store does. Every backend passes the same conformance suite (the test kit's
/// `conformance` module, one test per check per engine).
#[async_trait]
pub trait ModelStore: Send + Sync + std::fmt::Debug {
    /// Where this store is, for logs and status: a URL without credentials.
    fn describe(&self) -> String;

    /// Creates the schema if it does not exist. Idempotent.
    async fn init(&self) -> Result<(), Error>;

    /// Creates the schema like [`ModelStore::init`], with the placement settings of stores
    /// that have them, and says what it did. The default ignores the options.
    async fn init_with(&self, options: &InitOptions) -> Result<InitReport, Error> {
        let _ = options;
        self.init().await?;
        Ok(InitReport::default())
    }

    /// Stores a model version for `key`. The spec is checked first with the same
    /// [`ModelSpec::build`] the service uses, so an invalid model never reaches the store, and
    /// stored in its canonical, compact form ([`model::canonical_spec_text`]).
    /// `version` picks the number (from 1; refused if it exists); `None` takes the newest
    /// version plus one (1 for a new key). Returns the version written. Does not activate it.
    /// Fails with [`Error::InvalidModel`], [`Error::InvalidKey`], [`Error::InvalidVersion`] or
    /// [`Error::VersionExists`], and then writes nothing.
    ///
    /// Provided: the checks every backend shares, then [`ModelStore::insert_version`].
    async fn put_version(
        &self,
        key: &str,
        version: Option<i64>,
        spec_json: &str,
    ) -> Result<i64, Error> {
        check_key(key)?;
        if let Some(v) = version.filter(|v| *v < 1) {
            return Err(Error::InvalidVersion(v));
        }
        let canonical = check_spec(spec_json)?;
        self.insert_version(key, version, &canonical).await
    }

    /// The backend's write behind [`ModelStore::put_version`]: stores `spec_json` as given,
    /// without checking it (callers use `put_version`; tests use this to plant a version that
    /// does not build, as a hand-written database insert could). Numbers the version like
    /// `put_version` and refuses an existing one with [`Error::VersionExists`].
    async fn insert_version(
        &self,
        key: &str,
        version: Option<i64>,
        spec_json: &str,
    ) -> Result<i64, Error>;

    /// Makes `version` the active version of `key` (it must exist, else
    /// [`Error::NoSuchVersion`]), remembering the version it replaces for
    /// [`ModelStore::rollback`], and records the change in the feed. Re-activating the active
    /// version records a new revision and keeps the rollback target.
    async fn activate(&self, key: &str, version: i64) -> Result<(), Error>;

    /// Moves `key`'s active pointer as `change` says, after checking that the pointer is what
    /// the caller expects ([`plan_move`]): one conditional write (a compare-and-set on CQL, one
    /// transaction on SQLite), or none when the store already shows the change made. Fails with
    /// [`Error::UnexpectedVersion`] when the active version is another, [`Error::UnknownKey`]
    /// for a key with no stored version, [`Error::NoSuchVersion`] for a version to activate that
    /// does not exist, and writes nothing then.
    async fn move_active(&self, key: &str, change: PointerMove) -> Result<Moved, Error>;

    /// Changes `key`'s canary as `change` says, after checking the canary that runs
    /// ([`plan_canary`]): one conditional write (a compare-and-set on CQL, one transaction on
    /// SQLite), or none when the store already shows the change made. A canary to start must
    /// name a stored version ([`Error::NoSuchVersion`]) with a share in (0, 1]
    /// ([`Error::InvalidShare`]). The default, for stores without rollouts, refuses with
    /// [`Error::Rejected`].
    async fn change_canary(&self, key: &str, change: CanaryChange) -> Result<CanaryChanged, Error> {
        let _ = (key, change);
        Err(Error::rejected(format!(
            "{} does not support canary versions",
            self.describe()
        )))
    }

    /// Who made `key`'s active version active and when (the last activation, rollback or
    /// promotion), or `None` for a key never activated. The default, for stores that keep no
    /// record of it, is `None`.
    async fn activation(&self, key: &str) -> Result<Option<Activation>, Error> {
        let _ = key;
        Ok(None)
    }

    /// The newest `limit` changes of `key`'s active pointer and rollout, newest first: every
    /// activation, rollback, promotion and canary or shadow change, with who made it and when.
    /// Empty for a key with no recorded change. Cost: one read of the key's own history.
    async fn history(&self, key: &str, limit: usize) -> Result<Vec<HistoryEntry>, Error>;

    /// Fails with [`Error::UnknownKey`] when no version of `key` is stored. Provided: reads
    /// [`ModelStore::versions`].
    async fn require_key(&self, key: &str) -> Result<(), Error> {
        check_key(key)?;
        if self.versions(key).await?.is_empty() {
            return Err(Error::UnknownKey {
                key: key.to_string(),
            });
        }
        Ok(())
    }

    /// Re-activates the version that was active before the current one and returns it.
    /// Rolling back twice returns to where you started. [`Error::NothingToRollBack`] when the
    /// key has had only one active version (or none).
    async fn rollback(&self, key: &str) -> Result<i64, Error>;

    /// The active version of `key`, or `None` when the key has none.
    async fn active(&self, key: &str) -> Result<Option<ActiveModel>, Error>;

    /// One stored version, or `None`.
    async fn version(&self, key: &str, version: i64) -> Result<Option<StoredModel>, Error>;

    /// Every key with its versions, sorted by key.
    async fn list(&self) -> Result<Vec<KeySummary>, Error>;

    /// The versions stored for `key`, ascending (empty for an unknown key). The default reads
    /// [`ModelStore::list`]; backends override it with a read of the one key.
    async fn versions(&self, key: &str) -> Result<Vec<i64>, Error> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .find(|k| k.key == key)
            .map(|k| k.versions)
            .unwrap_or_default())
    }

    /// The backend's write behind [`ModelStore::prune`]: removes `versions` of `key` (missing
    /// ones are skipped). The default refuses with [`Error::Rejected`].
    async fn delete_versions(&self, key: &str, versions: &[i64]) -> Result<(), Error> {
        let _ = (key, versions);
        Err(Error::rejected(format!(
            "{} does not support removing versions",
            self.describe()
        )))
    }

    /// Removes all but the newest `keep` versions of `key`, never the active version, the one
    /// a rollback returns to, or a running canary or shadow. With `dry_run`, removes nothing
    /// and says what it would remove. Safe to retry. Do not activate an old version of the key
    /// while it runs: a version removed between this call's read of the pointer and its delete
    /// would leave the pointer naming a missing version.
    async fn prune(&self, key: &str, keep: usize, dry_run: bool) -> Result<Pruned, Error> {
        check_key(key)?;
        let versions = self.versions(key).await?;
        let pointer = self
            .pointers(std::slice::from_ref(&key.to_string()))
            .await?
            .pop()
            .flatten();
        let rollout = self.rollout(key).await?.unwrap_or_default();
        let mut protected: Vec<i64> = [
            pointer.map(|p| p.version),
            pointer.and_then(|p| p.previous),
            rollout.canary.map(|c| c.version),
            rollout.shadow,
        ]
        .into_iter()
        .flatten()
        .filter(|v| versions.contains(v))
        .collect();
        protected.sort_unstable();
        protected.dedup();
        let newest: Vec<i64> = versions.iter().rev().take(keep).copied().collect();
        let (mut kept, removed): (Vec<i64>, Vec<i64>) = versions
            .iter()
            .partition(|v| newest.contains(v) || protected.contains(v));
        kept.sort_unstable();
        if !dry_run && !removed.is_empty() {
            self.delete_versions(key, &removed).await?;
        }
        Ok(Pruned {
            removed,
            kept,
            protected,
        })
    }

    /// One page of at most `limit` keys with their active versions (`None` for keys never
    /// activated), in the backend's own order, without reading specs: a bounded look at a
    /// store of any size. `after` is the previous page's [`KeyPage::next`] (`None` for the
    /// first page). The default reads [`ModelStore::list`]; backends override it with a
    /// bounded read.
    async fn key_page(&self, after: Option<&str>, limit: usize) -> Result<KeyPage, Error> {
        let keys = self.list().await?;
        let start = after.map_or(0, |after| keys.partition_point(|k| k.key.as_str() <= after));
        Ok(KeyPage::from_sorted(
            keys[start..]
                .iter()
                .take(limit.saturating_add(1))
                .map(|k| (k.key.clone(), k.active))
                .collect(),
            limit,
        ))
    }

    /// The feed's current end: changes after this point are returned by
    /// [`ModelStore::changes_since`].
    async fn cursor(&self) -> Result<ChangeCursor, Error>;

    /// Keys whose active version or rollout changed after `cursor`. May repeat a key seen
    /// before (callers compare revisions), never misses one.
    async fn changes_since(&self, cursor: ChangeCursor) -> Result<Changes, Error>;

    /// The active version of each of `keys`, in order: one call for a batch of keys. The
    /// default asks [`ModelStore::active`] for each in turn; backends override it with one
    /// transaction or concurrent reads.
    async fn active_many(&self, keys: &[String]) -> Result<Vec<Option<ActiveModel>>, Error> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.active(key).await?);
        }
        Ok(out)
    }

    /// The active pointer of each of `keys`, in order, without reading specs. The default
    /// reads [`ModelStore::active_many`]; backends override it to leave the specs unread.
    async fn pointers(&self, keys: &[String]) -> Result<Vec<Option<Pointer>>, Error> {
        Ok(self
            .active_many(keys)
            .await?
            .into_iter()
            .map(|a| {
                a.map(|a| Pointer {
                    version: a.model.version,
                    previous: None,
                    revision: a.revision,
                })
            })
            .collect())
    }

    /// Uploads many versions: each is checked like [`ModelStore::put_version`], and one that
    /// is refused does not stop the others. Returns one result per item, in order. Provided:
    /// the checks, then [`ModelStore::insert_versions`] for the items that passed.
    async fn put_versions(&self, items: &[NewVersion]) -> Result<Vec<Result<i64, Error>>, Error> {
        let mut results: Vec<Option<Result<i64, Error>>> = Vec::with_capacity(items.len());
        let mut valid = Vec::new();
        for item in items {
            let checked = check_key(&item.key)
                .and_then(|()| match item.version {
                    Some(v) if v < 1 => Err(Error::InvalidVersion(v)),
                    _ => Ok(()),
                })
                .and_then(|()| check_spec(&item.spec_json));
            match checked {
                Ok(canonical) => {
                    results.push(None);
                    valid.push(NewVersion {
                        key: item.key.clone(),
                        version: item.version,
                        spec_json: canonical,
                    });
                }
                Err(err) => results.push(Some(Err(err))),
            }
        }
        let mut inserted = self.insert_versions(&valid).await?.into_iter();
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| inserted.next().expect("one result per valid item")))
            .collect())
    }

    /// The backend's write behind [`ModelStore::put_versions`]: stores each item unchecked,
    /// like [`ModelStore::insert_version`], returning one result per item (an existing version
    /// fails only its item). Fails as a whole only when the store cannot be written. The
    /// default inserts one at a time; backends override it to write in large transactions.
    async fn insert_versions(
        &self,
        items: &[NewVersion],
    ) -> Result<Vec<Result<i64, Error>>, Error> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match self
                .insert_version(&item.key, item.version, &item.spec_json)
                .await
            {
                Err(err) if err.is_transient() => return Err(err),
                result => out.push(result),
            }
        }
        Ok(out)
    }

    /// Activates many (key, version) pairs, each like [`ModelStore::activate`]; one result per
    /// pair, in order. The default activates one at a time; backends override it to write in
    /// large transactions.
    async fn activate_many(
        &self,
        items: &[(String, i64)],
    ) -> Result<Vec<Result<(), Error>>, Error> {
        let mut out = Vec::with_capacity(items.len());
        for (key, version) in items {
            match self.activate(key, *version).await {
                Err(err) if err.is_transient() => return Err(err),
                result => out.push(result),
            }
        }
        Ok(out)
    }

    /// The rollout of `key`, or `None` when it never had one. The default, for stores without
    /// rollouts, is `None`.
    async fn rollout(&self, key: &str) -> Result<Option<Rollout>, Error> {
        let _ = key;
        Ok(None)
    }

    /// The rollout of each of `keys`, in order: one call for a batch. The default asks
    /// [`ModelStore::rollout`] for each; backends override it with one read.
    async fn rollouts(&self, keys: &[String]) -> Result<Vec<Option<Rollout>>, Error> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.rollout(key).await?);
        }
        Ok(out)
    }

    /// Starts (or changes) a canary of `key`, or ends it with `None`, and records the change in
    /// the feed. The version must exist ([`Error::NoSuchVersion`]) and the share be in (0, 1]
    /// ([`Error::InvalidShare`]). The default refuses with [`Error::Rejected`].
    async fn set_canary(&self, key: &str, canary: Option<Canary>) -> Result<(), Error> {
        let _ = (key, canary);
        Err(Error::rejected(format!(
            "{} does not support canary versions",
            self.describe()
        )))
    }

    /// Starts (or changes) a shadow version of `key`, or ends it with `None`, and records the
    /// change in the feed. The version must exist ([`Error::NoSuchVersion`]). The default
    /// refuses with [`Error::Rejected`].
    async fn set_shadow(&self, key: &str, version: Option<i64>) -> Result<(), Error> {
        let _ = (key, version);
        Err(Error::rejected(format!(
            "{} does not support shadow versions",
            self.describe()
        )))
    }

    /// Activates the running canary's version and ends the canary; returns the version.
    /// [`Error::NoCanary`] when none runs. The default activates, then ends the canary (two
    /// writes: a reader in between sees the candidate both active and canary, which scores the
    /// same); backends override it with one atomic write where they can.
    async fn promote(&self, key: &str) -> Result<i64, Error> {
        let canary = self
            .rollout(key)
            .await?
            .and_then(|r| r.canary)
            .ok_or_else(|| Error::NoCanary {
                key: key.to_string(),
            })?;
        self.activate(key, canary.version).await?;
        self.set_canary(key, None).await?;
        Ok(canary.version)
    }

    /// An automatic canary verdict: promote the canary `version` of `key`, or end it (roll back
    /// to the active version), recording `evidence` (a JSON object as text: the counts, metrics
    /// and thresholds that decided it, [`check_evidence`]) in the history rows it writes.
    ///
    /// It applies only while `version` is still the running canary of `key`: a promotion makes
    /// `version` active and ends the canary, as [`ModelStore::promote`] does (history actions
    /// `promote` and `canary_end`); a rollback ends the canary and the active version stays
    /// (`canary_end`). Otherwise nothing is written and `changed` is `false`, with `before` and
    /// `after` the canary that runs, if any. So a retry, a verdict on a canary already ended or
    /// replaced, and the loser of two processes deciding at once write nothing. `changed` is
    /// whether this call's verdict is the one that applied.
    ///
    /// One conditional write decides: one transaction (SQLite), one lock (memory), one
    /// compare-and-set on the key's rollout (CQL, followed by the pointer's for a promotion; see
    /// the CQL store). The default, for stores without rollouts, refuses with
    /// [`Error::Rejected`].
    async fn decide_canary(
        &self,
        key: &str,
        version: i64,
        verdict: Verdict,
        evidence: &str,
    ) -> Result<CanaryChanged, Error> {
        let _ = (key, version, verdict, evidence);
        Err(Error::rejected(format!(
            "{} does not support canary versions",
            self.describe()
        )))
    }

    /// Records windows of live model quality, as serving processes write them. Every row is
    /// checked first ([`check_quality_row`]); one refused refuses the call with nothing
    /// written. Idempotent: a row with the (key, version, arm, window_end_ms) of a stored one
    /// replaces it, the later write winning, so a window may be written again as labels
    /// arrive. Cost: each key's rows go to that key's own rows (one partition, an index by
    /// key), whatever the number of keys. Provided: the checks, then
    /// [`ModelStore::write_quality`].
    async fn record_quality(&self, rows: &[QualityRow]) -> Result<(), Error> {
        for row in rows {
            check_quality_row(row)?;
        }
        if rows.is_empty() {
            return Ok(());
        }
        self.write_quality(rows).await
    }

    /// The backend's write behind [`ModelStore::record_quality`]: stores the rows as given,
    /// without checking them. The default refuses with [`Error::Rejected`].
    async fn write_quality(&self, rows: &[QualityRow]) -> Result<(), Error> {
        let _ = rows;
        Err(Error::rejected(format!(
            "{} does not store model quality",
            self.describe()
        )))
    }

    /// The quality rows of `key` (of `version` only, when given), newest window first (then
    /// version descending, arm ascending: [`newest_first`]), at most `limit`. Empty for a key
    /// without rows. Cost: a read of the key's own rows, bounded by `limit` (per version, for
    /// the CQL store). The default refuses with [`Error::Rejected`].
    async fn quality(
        &self,
        key: &str,
        version: Option<i64>,
        limit: usize,
    ) -> Result<Vec<QualityRow>, Error> {
        let _ = (key, version, limit);
        Err(Error::rejected(format!(
            "{} does not store model quality",
            self.describe()
        )))
    }
}

/// Whether opening a store may create it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpenMode {
    /// Create a missing SQLite file (with its schema): what `keyscore init` and the library
    /// calls [`open`] and [`open_with`] do.
    #[default]
    Create,
    /// Refuse a missing SQLite file with [`Error::Missing`], so that a mistyped path is not
    /// taken for a new, empty store. CQL and memory stores open as with [`OpenMode::Create`].
    Existing,
}

/// Opens the store a URL names: `sqlite://PATH`, a bare path, `cql://HOSTS/KEYSPACE`, or
/// `memory://`; a CQL store with the default [`CqlOptions`] (plaintext, every datacenter).
/// A missing SQLite file is created.
pub async fn open(url: &str) -> Result<Arc<dyn ModelStore>, Error> {
    open_with(url, &CqlOptions::default()).await
}

/// Opens the store a URL names, like [`open`], connecting to a CQL store as `cql` says (TLS,
/// local datacenter). `cql` is ignored for other stores. A missing SQLite file is created.
pub async fn open_with(url: &str, cql: &CqlOptions) -> Result<Arc<dyn ModelStore>, Error> {
    open_with_mode(url, cql, OpenMode::Create).await
}

/// Opens the store a URL names, like [`open_with`]; with [`OpenMode::Existing`] a missing
/// SQLite file is refused rather than created. A URL that looks like a SQLite URL without its
/// `//` (`sqlite:x.db`, `sqlite:/x.db`) is refused with the form to use.
pub async fn open_with_mode(
    url: &str,
    cql: &CqlOptions,
    mode: OpenMode,
) -> Result<Arc<dyn ModelStore>, Error> {
    if url == "memory://" {
        Ok(Arc::new(MemoryModelStore::default()))
    } else if let Some(rest) = url.strip_prefix("cql://") {
        Ok(Arc::new(CqlModelStore::connect_with(rest, cql).await?))
    } else if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Arc::new(open_embedded(path, mode).await?))
    } else if url.contains("://") {
        Err(Error::Url(format!(
            "unknown store URL scheme in '{}'; use sqlite://PATH, cql://HOST:PORT/KEYSPACE or memory://",
            redact_url(url)
        )))
    } else if let Some(path) = ["sqlite:", "cql:", "memory:"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme).map(|rest| (scheme, rest)))
    {
        let (scheme, rest) = path;
        let example = match *scheme {
            "sqlite:" => format!("sqlite://{rest}"),
            "cql:" => format!("cql://{}", rest.trim_start_matches('/')),
            _ => "memory://".to_string(),
        };
        Err(Error::Url(format!(
            "'{}' is not a store URL: write {} ({scheme} is followed by //; an absolute \
             SQLite path has three slashes, sqlite:///var/lib/models.db)",
            redact_url(url),
            redact_url(&example)
        )))
    } else {
        Ok(Arc::new(open_embedded(url, mode).await?))
    }
}

/// Opens a SQLite store off the async reactor (opening may wait for another writer's lock).
async fn open_embedded(path: &str, mode: OpenMode) -> Result<EmbeddedModelStore, Error> {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || match mode {
        OpenMode::Create => EmbeddedModelStore::open(path),
        OpenMode::Existing => EmbeddedModelStore::open_existing(path),
    })
    .await
    .map_err(|err| Error::unavailable_from("opening the SQLite store failed", err))?
}

/// Checks a spec before it is stored (it must decode and build) and returns the text to
/// store: its canonical, compact form ([`model::canonical_spec_text`]).
pub fn check_spec(spec_json: &str) -> Result<String, Error> {
    let spec = ModelSpec::from_json(spec_json.as_bytes()).map_err(Error::InvalidModel)?;
    spec.build().map_err(Error::InvalidModel)?;
    Ok(model::canonical_spec_text(spec_json))
}

/// Checks a model key: 1 to 200 characters, no control characters.
pub fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > 200 || key.chars().any(char::is_control) {
        return Err(Error::InvalidKey(key.escape_debug().to_string()));
    }
    Ok(())
}

/// A URL with any `user:password@` part replaced, safe to log.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Store errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model spec was refused; nothing was written. The model error is the whole message
    /// (it names the problem), so it is shown inline rather than as a separate cause.
    #[error("model refused: {0}")]
    InvalidModel(model::Error),
    /// The key is not usable.
    #[error("invalid model key '{0}': use 1 to 200 characters without control characters")]
    InvalidKey(String),
    /// The version already exists; versions are immutable.
    #[error(
        "{key} version {version} already exists; versions are immutable, upload a new version"
    )]
    VersionExists {
        /// The key.
        key: String,
        /// The existing version.
        version: i64,
    },
    /// A version number below 1 was given; versions start at 1.
    #[error("invalid version {0}: versions are numbered from 1; omit the version to take the next free one")]
    InvalidVersion(i64),
    /// The named version does not exist.
    #[error("{key} has no version {version}; `keyscore list` shows the versions")]
    NoSuchVersion {
        /// The key.
        key: String,
        /// The missing version.
        version: i64,
    },
    /// No version of the key is stored.
    #[error("unknown key '{key}': no version of it is stored; `keyscore list` shows the keys")]
    UnknownKey {
        /// The key.
        key: String,
    },
    /// The active version is not the one the caller said it expected; nothing was written.
    #[error("{key}'s active version is {}, not v{expected}; nothing changed", .active.map_or("none".to_string(), |v| format!("v{v}")))]
    UnexpectedVersion {
        /// The key.
        key: String,
        /// The version the caller expected to be active.
        expected: i64,
        /// The version that is active, if any.
        active: Option<i64>,
    },
    /// A canary runs that the change did not expect; nothing was written.
    #[error(
        "{key} already runs a canary of v{} on {}% of its records; pass --replace to replace it, or end \
         it with `keyscore rollback --key {key} --from {}`; nothing changed",
        .running.version, .running.share * 100.0, .running.version
    )]
    CanaryRunning {
        /// The key.
        key: String,
        /// The canary that runs.
        running: Canary,
    },
    /// Rollback had nothing to return to.
    #[error("{key} has no previous version to roll back to; activate a version explicitly")]
    NothingToRollBack {
        /// The key.
        key: String,
    },
    /// A canary share outside (0, 1].
    #[error("invalid canary share {0}: use a number greater than 0 and at most 1, e.g. 0.1 for 10% of records")]
    InvalidShare(f64),
    /// A canary's automatic criteria are unusable ([`check_criteria`]); nothing was written.
    #[error("invalid automatic canary criteria: {field} {problem}; nothing changed")]
    InvalidCriteria {
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it, and what to use instead.
        problem: String,
    },
    /// A quality row is unusable ([`check_quality_row`]); nothing of the call was written.
    #[error("quality row refused ({row}): {field} {problem}; nothing was written")]
    InvalidQuality {
        /// Which row: key, version, arm and window.
        row: String,
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it, and what to use instead.
        problem: String,
    },
    /// A verdict's evidence is not a JSON object ([`check_evidence`]); nothing was written.
    #[error(
        "invalid verdict evidence: {0}; pass a JSON object, e.g. {{\"labelled\": 1200}}; \
         nothing changed"
    )]
    InvalidEvidence(String),
    /// Promote was asked for a key without a running canary.
    #[error("{key} has no running canary; start one with `keyscore canary`")]
    NoCanary {
        /// The key.
        key: String,
    },
    /// The spec is larger than the store accepts; nothing was written.
    #[error(
        "model refused: the spec is {bytes} bytes as stored, over this store's limit of {limit} \
         bytes (max_spec_bytes); make the model smaller (fewer or shallower trees) or raise the \
         limit"
    )]
    SpecTooLarge {
        /// The spec's size as it would be stored (compressed, for the CQL store).
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The SQLite file the URL names does not exist, and this command does not create stores.
    #[error(
        "no model store at '{path}': the file does not exist; create one with `keyscore init \
         --store sqlite://{path}`, or fix the path"
    )]
    Missing {
        /// The path of the missing file.
        path: String,
    },
    /// The store URL is malformed.
    #[error("bad store URL: {0}")]
    Url(String),
    /// A store setting is unusable (a TLS file that cannot be read or parsed, a client
    /// certificate without its key); nothing was contacted.
    #[error("bad store setting: {what}")]
    Setting {
        /// What is wrong, and what to do about it.
        what: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// The database could not be reached or failed; retry later.
    #[error("store unavailable: {what}")]
    Unavailable {
        /// What failed, and what to do about it.
        what: String,
        /// The database's or driver's error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// The database refused the request (missing schema, permissions, invalid statement);
    /// retrying will not help until an operator acts on the message.
    #[error("store refused the request: {what}")]
    Rejected {
        /// What was refused, and what to do about it.
        what: String,
        /// The database's or driver's error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// The database answered with data keyscore cannot read.
    #[error("store holds unreadable data: {what}")]
    Corrupt {
        /// What could not be read, and what to do about it.
        what: String,
        /// The decoding error, when there is one.
        #[source]
        source: Option<Cause>,
    },
}

/// The underlying error a store error keeps as its source.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

impl Error {
    /// Whether retrying later may succeed (the database was unreachable or timed out).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// [`Error::Setting`] without an underlying error.
    pub fn setting(what: impl Into<String>) -> Self {
        Error::Setting {
            what: what.into(),
            source: None,
        }
    }

    /// [`Error::Setting`] caused by `source`.
    pub fn setting_from(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        Error::Setting {
            what: what.into(),
            source: Some(source.into()),
        }
    }

    /// [`Error::Unavailable`] without an underlying error.
    pub fn unavailable(what: impl Into<String>) -> Self {
        Error::Unavailable {
            what: what.into(),
            source: None,
        }
    }

    /// [`Error::Unavailable`] caused by `source`.
    pub fn unavailable_from(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        Error::Unavailable {
            what: what.into(),
            source: Some(source.into()),
        }
    }

    /// [`Error::Rejected`] without an underlying error.
    pub fn rejected(what: impl Into<String>) -> Self {
        Error::Rejected {
            what: what.into(),
            source: None,
        }
    }

    /// [`Error::Rejected`] caused by `source`.
    pub fn rejected_from(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        Error::Rejected {
            what: what.into(),
            source: Some(source.into()),
        }
    }

    /// [`Error::Corrupt`] without an underlying error.
    pub fn corrupt(what: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            source: None,
        }
    }

    /// [`Error::Corrupt`] caused by `source`.
    pub fn corrupt_from(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        Error::Corrupt {
            what: what.into(),
            source: Some(source.into()),
        }
    }
}
