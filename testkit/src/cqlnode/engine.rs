//! The storage engine: keyspaces, tables and rows in memory, and the execution of parsed
//! statements against them.
//!
//! Every cell keeps its write timestamp (microseconds) and writes are last-write-wins per cell,
//! with row and partition deletions shadowing older writes, as in Cassandra. The system tables
//! the drivers read (`system.local`, `system.peers`, `system.peers_v2`, `system_schema.*`) are
//! ordinary tables of read-only keyspaces; `system_schema` is rebuilt from the catalog after
//! every schema change.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::frame::{ColSpec, CqlError, ErrorCode, Value};
use super::parser::{self, Describe, InValues, Op, Relation, Selector, Statement, TableRef, Term};
use super::types::{
    date_of_millis, decode_collection, encode_collection, CqlType, Literal, DATE_EPOCH,
};
use super::Flavor;

/// Keyspaces that exist on every node and cannot be changed by clients.
const SYSTEM_KEYSPACES: [&str; 2] = ["system", "system_schema"];

/// The schema of the system tables the Rust and Python drivers read.
const SYSTEM_TABLES: &[&str] = &[
    "CREATE TABLE system.local (key text PRIMARY KEY, bootstrapped text, broadcast_address inet, \
     broadcast_port int, cluster_name text, cql_version text, data_center text, \
     gossip_generation int, host_id uuid, listen_address inet, listen_port int, \
     native_protocol_version text, partitioner text, rack text, release_version text, \
     rpc_address inet, rpc_port int, schema_version uuid, tokens set<text>)",
    "CREATE TABLE system.peers (peer inet PRIMARY KEY, data_center text, host_id uuid, \
     preferred_ip inet, rack text, release_version text, rpc_address inet, schema_version uuid, \
     tokens set<text>)",
    "CREATE TABLE system.peers_v2 (peer inet, peer_port int, data_center text, host_id uuid, \
     native_address inet, native_port int, preferred_ip inet, preferred_port int, rack text, \
     release_version text, schema_version uuid, tokens set<text>, PRIMARY KEY ((peer), peer_port))",
    "CREATE TABLE system_schema.keyspaces (keyspace_name text PRIMARY KEY, durable_writes boolean, \
     replication map<text, text>)",
    "CREATE TABLE system_schema.tables (keyspace_name text, table_name text, \
     bloom_filter_fp_chance double, caching map<text, text>, cdc boolean, comment text, \
     compaction map<text, text>, compression map<text, text>, crc_check_chance double, \
     default_time_to_live int, extensions map<text, blob>, flags set<text>, \
     gc_grace_seconds int, id uuid, max_index_interval int, memtable_flush_period_in_ms int, \
     min_index_interval int, read_repair text, speculative_retry text, \
     PRIMARY KEY ((keyspace_name), table_name))",
    "CREATE TABLE system_schema.columns (keyspace_name text, table_name text, column_name text, \
     clustering_order text, column_name_bytes blob, kind text, position int, type text, \
     PRIMARY KEY ((keyspace_name), table_name, column_name))",
    "CREATE TABLE system_schema.types (keyspace_name text, type_name text, \
     field_names list<text>, field_types list<text>, PRIMARY KEY ((keyspace_name), type_name))",
    "CREATE TABLE system_schema.functions (keyspace_name text, function_name text, \
     argument_types list<text>, argument_names list<text>, body text, \
     called_on_null_input boolean, language text, return_type text, \
     PRIMARY KEY ((keyspace_name), function_name, argument_types))",
    "CREATE TABLE system_schema.aggregates (keyspace_name text, aggregate_name text, \
     argument_types list<text>, final_func text, initcond text, return_type text, \
     state_func text, state_type text, \
     PRIMARY KEY ((keyspace_name), aggregate_name, argument_types))",
    "CREATE TABLE system_schema.indexes (keyspace_name text, table_name text, index_name text, \
     kind text, options map<text, text>, \
     PRIMARY KEY ((keyspace_name), table_name, index_name))",
    "CREATE TABLE system_schema.triggers (keyspace_name text, table_name text, \
     trigger_name text, options map<text, text>, \
     PRIMARY KEY ((keyspace_name), table_name, trigger_name))",
    "CREATE TABLE system_schema.views (keyspace_name text, view_name text, base_table_id uuid, \
     base_table_name text, include_all_columns boolean, where_clause text, \
     PRIMARY KEY ((keyspace_name), view_name))",
];

/// The system tables only ScyllaDB has. `system_schema.scylla_keyspaces` holds a row for each
/// keyspace with tablets (`initial_tablets` set, 0 for "as many as the node decides"), which is
/// how clients tell a tablets keyspace from a vnodes one; `system.versions` holds ScyllaDB's
/// own version, since `release_version` in `system.local` is the Cassandra version ScyllaDB is
/// compatible with ("3.0.8").
const SCYLLA_SYSTEM_TABLES: &[&str] = &[
    "CREATE TABLE system_schema.scylla_keyspaces (keyspace_name text PRIMARY KEY, \
     initial_tablets int, storage_options map<text, text>, storage_type text)",
    "CREATE TABLE system.versions (key text PRIMARY KEY, build_id text, build_mode text, \
     version text)",
];

/// The largest mutation (the writes of one statement or batch to one partition) the node
/// accepts by default: 16 MiB. Cassandra's `max_mutation_size` defaults to half of
/// `commitlog_segment_size` (32 MiB by default): "Max mutation size is also configurable via
/// max_mutation_size_in_kb setting in cassandra.yaml. The default is half the size
/// commitlog_segment_size_in_mb * 1024" (Cassandra 4 documentation, Architecture > Storage
/// Engine > CommitLog; DataStax, "Writing fails because of mutation size": "Mutation of
/// 28087887 bytes is too large for the maximum size of 16777216").
pub(crate) const DEFAULT_MAX_MUTATION_SIZE: usize = 16 * 1024 * 1024;

/// The largest TTL, in seconds: 20 years (Cassandra's `Attributes.MAX_TTL`).
const MAX_TTL: i32 = 20 * 365 * 24 * 60 * 60;

/// The role of a column in its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Partition key component at this position.
    PartitionKey(usize),
    /// Clustering column at this position, descending or not.
    Clustering(usize, bool),
    /// Any other column.
    Regular,
}

/// A column definition.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    /// Name.
    pub(crate) name: String,
    /// Type.
    pub(crate) ty: CqlType,
    /// Role.
    pub(crate) kind: Kind,
}

/// A table's schema. `columns` is in `SELECT *` order: partition key, clustering columns, then
/// the other columns by name.
#[derive(Debug, Clone)]
pub(crate) struct TableDef {
    /// Keyspace.
    pub(crate) keyspace: String,
    /// Name.
    pub(crate) name: String,
    /// Columns.
    pub(crate) columns: Vec<Column>,
    /// Number of partition key columns (they come first).
    pub(crate) pk_len: usize,
    /// Number of clustering columns (they follow the partition key).
    pub(crate) ck_len: usize,
    /// Table id.
    pub(crate) id: [u8; 16],
    /// `WITH comment`.
    pub(crate) comment: String,
    /// `WITH default_time_to_live`: seconds, 0 for none.
    pub(crate) default_ttl: i32,
}

impl TableDef {
    fn column(&self, name: &str) -> Result<usize, CqlError> {
        self.columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| CqlError::invalid(format!("Undefined column name {name}")))
    }

    fn spec(&self, name: &str, ty: CqlType) -> ColSpec {
        ColSpec {
            keyspace: self.keyspace.clone(),
            table: self.name.clone(),
            name: name.to_string(),
            ty,
        }
    }

    /// Orders two clustering keys in the table's clustering order.
    fn cmp_ck(&self, a: &[Vec<u8>], b: &[Vec<u8>]) -> std::cmp::Ordering {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let col = &self.columns[self.pk_len + i];
            let mut o = col.ty.compare(x, y);
            if matches!(col.kind, Kind::Clustering(_, true)) {
                o = o.reverse();
            }
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        a.len().cmp(&b.len())
    }
}

#[derive(Debug, Clone)]
struct Cell {
    /// `None` is a tombstone.
    value: Option<Vec<u8>>,
    ts: i64,
    /// When a cell written with a TTL expires: milliseconds since the epoch, node clock.
    expires: Option<i64>,
}

impl Cell {
    /// The value, unless the cell is a tombstone or has expired at `now` (milliseconds).
    fn live(&self, now: i64) -> Option<&Vec<u8>> {
        if self.expires.is_some_and(|e| e <= now) {
            return None;
        }
        self.value.as_ref()
    }
}

#[derive(Debug, Clone, Default)]
struct Row {
    ck: Vec<Vec<u8>>,
    /// The liveness marker INSERT writes, with its timestamp.
    marker: Option<i64>,
    /// When the marker expires (an INSERT with a TTL): milliseconds since the epoch.
    marker_expires: Option<i64>,
    deleted_at: Option<i64>,
    cells: BTreeMap<usize, Cell>,
}

impl Row {
    /// Whether the row exists at `now` (milliseconds): a live row marker or a live cell. A row
    /// whose cells and marker have all expired is gone, as in Cassandra, where an expired cell
    /// is a tombstone ("If the field is not updated within the TTL it is deleted", ScyllaDB
    /// manual, CQL > Expiring Data with Time to Live).
    fn is_live(&self, now: i64) -> bool {
        self.marker.is_some() && self.marker_expires.is_none_or(|e| e > now)
            || self.cells.values().any(|c| c.live(now).is_some())
    }

    fn delete(&mut self, ts: i64) {
        self.deleted_at = Some(self.deleted_at.map_or(ts, |d| d.max(ts)));
        if self.marker.is_some_and(|m| m <= ts) {
            self.marker = None;
            self.marker_expires = None;
        }
        self.cells.retain(|_, c| c.ts > ts);
    }
}

#[derive(Debug, Clone, Default)]
struct Partition {
    pk: Vec<Vec<u8>>,
    deleted_at: Option<i64>,
    /// Sorted by the table's clustering order.
    rows: Vec<Row>,
}

#[derive(Debug, Clone)]
struct Table {
    def: TableDef,
    partitions: BTreeMap<Vec<u8>, Partition>,
}

#[derive(Debug, Clone)]
struct Keyspace {
    replication: Vec<(String, String)>,
    durable_writes: bool,
    /// Data distributed with ScyllaDB tablets rather than vnodes.
    tablets: bool,
    tables: BTreeMap<String, Table>,
}

/// What a statement returns.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// RESULT Void.
    Void,
    /// RESULT Rows.
    Rows {
        /// Column specs.
        specs: Vec<ColSpec>,
        /// Cells, row by row.
        rows: Vec<Vec<Option<Vec<u8>>>>,
        /// Set when more pages follow.
        paging_state: Option<Vec<u8>>,
    },
    /// RESULT Set_keyspace.
    SetKeyspace(String),
    /// RESULT Schema_change.
    SchemaChange {
        /// CREATED, UPDATED or DROPPED.
        change: &'static str,
        /// KEYSPACE or TABLE.
        target: &'static str,
        /// Keyspace.
        keyspace: String,
        /// Table, for TABLE changes.
        table: Option<String>,
    },
}

/// A statement held under a prepared id.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// The parsed statement.
    pub(crate) statement: Statement,
    /// The keyspace current when it was prepared.
    pub(crate) keyspace: Option<String>,
    /// Bind variable metadata.
    pub(crate) bind_specs: Vec<ColSpec>,
    /// Indexes of the bind variables holding the partition key.
    pub(crate) pk_indexes: Vec<u16>,
    /// Result metadata (empty for statements that return no rows).
    pub(crate) result_specs: Vec<ColSpec>,
}

/// Per-request execution parameters.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Exec<'a> {
    /// The connection's current keyspace.
    pub(crate) keyspace: Option<&'a str>,
    /// Client-provided default timestamp (microseconds).
    pub(crate) timestamp: Option<i64>,
    /// Page size.
    pub(crate) page_size: Option<usize>,
    /// Paging state to resume from.
    pub(crate) paging_state: Option<&'a [u8]>,
}

/// Node identity shown in `system.local`.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    /// Address clients connect to.
    pub(crate) address: IpAddr,
    /// Port clients connect to.
    pub(crate) port: u16,
    /// Host id.
    pub(crate) host_id: [u8; 16],
    /// Cluster name.
    pub(crate) cluster_name: String,
    /// The node's single token.
    pub(crate) token: i64,
}

/// The whole database of one node.
#[derive(Debug)]
pub(crate) struct Engine {
    keyspaces: BTreeMap<String, Keyspace>,
    prepared: HashMap<Vec<u8>, Prepared>,
    last_ts: i64,
    schema_version: [u8; 16],
    identity: Identity,
    uuid_seq: u64,
    flavor: Flavor,
    max_mutation_size: usize,
    /// Bytes written so far per (keyspace, partition key) by the request under way.
    mutation_sizes: HashMap<(String, Vec<u8>), usize>,
    /// Milliseconds added to the clock TTLs run on (unit tests move time forward with it).
    ttl_clock_ahead: i64,
}

/// The serialized components of a partition key.
type KeyParts = Vec<Vec<u8>>;

/// What an `IF col = value AND ...` clause wants: (column index, value, `None` for null).
type Wanted = Vec<(usize, Option<Vec<u8>>)>;

/// How [`Engine::write`] treats a statement's `IF` clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cond {
    /// Check it, and write only if it holds (a single conditional statement).
    Evaluate,
    /// Check it and write nothing: `[applied]` says whether it holds.
    Check,
    /// Write without checking (a conditional batch whose conditions all held).
    Skip,
}

/// Random bits from the standard library's randomly keyed hasher.
pub(crate) fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(SystemTime::now())
}

/// A random version 4 UUID.
pub(crate) fn random_uuid() -> [u8; 16] {
    let mut u = [0u8; 16];
    u[..8].copy_from_slice(&random_u64().to_be_bytes());
    u[8..].copy_from_slice(&random_u64().to_be_bytes());
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The node's clock in milliseconds, the clock TTLs run on.
fn now_millis() -> i64 {
    now_micros() / 1000
}

fn text(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

fn inet(a: IpAddr) -> Option<Vec<u8>> {
    Some(match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    })
}

fn int(v: i32) -> Option<Vec<u8>> {
    Some(v.to_be_bytes().to_vec())
}

fn text_map(pairs: &[(&str, &str)]) -> Option<Vec<u8>> {
    let mut sorted: Vec<_> = pairs.to_vec();
    sorted.sort();
    Some(encode_collection(
        sorted.iter().map(|(k, v)| vec![k.as_bytes(), v.as_bytes()]),
    ))
}

fn text_set(items: &[&str]) -> Option<Vec<u8>> {
    let mut sorted: Vec<_> = items.to_vec();
    sorted.sort();
    Some(encode_collection(sorted.iter().map(|s| vec![s.as_bytes()])))
}

/// Serializes a partition key the way Cassandra builds composite keys.
fn partition_key_bytes(parts: &[Vec<u8>]) -> Vec<u8> {
    if parts.len() == 1 {
        return parts[0].clone();
    }
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(&(p.len() as u16).to_be_bytes());
        out.extend_from_slice(p);
        out.push(0);
    }
    out
}

fn is_system(keyspace: &str) -> bool {
    SYSTEM_KEYSPACES.contains(&keyspace)
}

/// The result of evaluating one WHERE clause against a table.
#[derive(Debug, Default)]
struct Restriction {
    /// Every partition key addressed; `None` means every partition.
    partitions: Option<Vec<Vec<Vec<u8>>>>,
    /// Equality values of a clustering prefix.
    ck_eq: Vec<Vec<u8>>,
    /// Bounds on the clustering column after the prefix: (value, inclusive).
    lower: Option<(Vec<u8>, bool)>,
    upper: Option<(Vec<u8>, bool)>,
}

impl Restriction {
    fn matches(&self, def: &TableDef, ck: &[Vec<u8>]) -> bool {
        for (i, v) in self.ck_eq.iter().enumerate() {
            if def.columns[def.pk_len + i].ty.compare(&ck[i], v) != std::cmp::Ordering::Equal {
                return false;
            }
        }
        let k = self.ck_eq.len();
        if self.lower.is_none() && self.upper.is_none() {
            return true;
        }
        let ty = &def.columns[def.pk_len + k].ty;
        if let Some((v, incl)) = &self.lower {
            match ty.compare(&ck[k], v) {
                std::cmp::Ordering::Less => return false,
                std::cmp::Ordering::Equal if !incl => return false,
                _ => {}
            }
        }
        if let Some((v, incl)) = &self.upper {
            match ty.compare(&ck[k], v) {
                std::cmp::Ordering::Greater => return false,
                std::cmp::Ordering::Equal if !incl => return false,
                _ => {}
            }
        }
        true
    }
}

/// Where a page ended: partition key bytes, clustering key, rows returned so far.
#[derive(Debug, Clone, PartialEq)]
struct PagePosition {
    partition: Vec<u8>,
    ck: Vec<Vec<u8>>,
    returned: u64,
}

impl PagePosition {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.returned.to_be_bytes());
        out.extend_from_slice(&(self.partition.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.partition);
        out.extend_from_slice(&(self.ck.len() as u32).to_be_bytes());
        for c in &self.ck {
            out.extend_from_slice(&(c.len() as u32).to_be_bytes());
            out.extend_from_slice(c);
        }
        out
    }

    fn decode(b: &[u8]) -> Option<PagePosition> {
        let mut pos = 0usize;
        let mut take = |n: usize| {
            let s = b.get(pos..pos + n)?;
            pos += n;
            Some(s)
        };
        let returned = u64::from_be_bytes(take(8)?.try_into().ok()?);
        let plen = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
        let partition = take(plen)?.to_vec();
        let n = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
        let mut ck = Vec::new();
        for _ in 0..n {
            let len = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
            ck.push(take(len)?.to_vec());
        }
        Some(PagePosition {
            partition,
            ck,
            returned,
        })
    }
}

/// What one SELECT item produces per row.
#[derive(Debug, Clone)]
enum Projection {
    Column(usize),
    WriteTime(usize),
    Ttl(usize),
    Constant(Option<Vec<u8>>),
}

impl Engine {
    /// A node with only the system keyspaces.
    pub(crate) fn new(identity: Identity, flavor: Flavor) -> Engine {
        let mut e = Engine {
            keyspaces: BTreeMap::new(),
            prepared: HashMap::new(),
            last_ts: 0,
            schema_version: random_uuid(),
            identity,
            uuid_seq: random_u64(),
            flavor,
            max_mutation_size: DEFAULT_MAX_MUTATION_SIZE,
            mutation_sizes: HashMap::new(),
            ttl_clock_ahead: 0,
        };
        for ks in SYSTEM_KEYSPACES {
            e.keyspaces.insert(
                ks.to_string(),
                Keyspace {
                    replication: vec![(
                        "class".to_string(),
                        "org.apache.cassandra.locator.LocalStrategy".to_string(),
                    )],
                    durable_writes: true,
                    tablets: false,
                    tables: BTreeMap::new(),
                },
            );
        }
        let scylla: &[&str] = match flavor {
            Flavor::Cassandra4 => &[],
            Flavor::Scylla6 => SCYLLA_SYSTEM_TABLES,
        };
        for ddl in SYSTEM_TABLES.iter().chain(scylla) {
            let (stmt, _) = parser::parse(ddl).expect("system table definitions parse");
            e.create_table(&stmt, None, true)
                .expect("system table definitions are valid");
        }
        e.refresh_system_tables();
        e
    }

    /// Forgets every prepared statement, as a restarted Cassandra without its prepared
    /// statements table would.
    pub(crate) fn forget_prepared(&mut self) {
        self.prepared.clear();
    }

    /// Sets the largest mutation accepted, in bytes.
    pub(crate) fn set_max_mutation_size(&mut self, bytes: usize) {
        self.max_mutation_size = bytes;
    }

    /// The timestamp of a write that carries no client timestamp: the node's clock in
    /// microseconds, as a coordinator assigns it. A real coordinator's clock is only mostly
    /// monotonic; the node's never repeats or goes back among the timestamps it assigns itself
    /// (two writes in one microsecond get distinct ones), and it ignores client timestamps, which
    /// are kept exactly as given however they compare with the node's clock.
    pub(crate) fn next_timestamp(&mut self) -> i64 {
        self.last_ts = now_micros().max(self.last_ts + 1);
        self.last_ts
    }

    /// Moves the clock TTLs run on `by` ahead.
    pub(crate) fn advance_ttl_clock(&mut self, by: Duration) {
        self.ttl_clock_ahead += i64::try_from(by.as_millis()).unwrap_or(i64::MAX / 2);
    }

    /// The clock TTLs are set and checked on, in milliseconds: the node's clock.
    fn ttl_clock(&self) -> i64 {
        now_millis() + self.ttl_clock_ahead
    }

    /// A new version 1 (time-based) UUID.
    fn timeuuid(&mut self) -> [u8; 16] {
        let t = (now_micros() as u64) * 10 + 0x01B2_1DD2_1381_4000;
        self.uuid_seq = self.uuid_seq.wrapping_add(1);
        let mut u = [0u8; 16];
        u[0..4].copy_from_slice(&((t & 0xffff_ffff) as u32).to_be_bytes());
        u[4..6].copy_from_slice(&(((t >> 32) & 0xffff) as u16).to_be_bytes());
        u[6..8].copy_from_slice(&((((t >> 48) & 0x0fff) as u16) | 0x1000).to_be_bytes());
        let seq = self.uuid_seq.to_be_bytes();
        u[8] = (seq[6] & 0x3f) | 0x80;
        u[9] = seq[7];
        u[10..16].copy_from_slice(&self.identity.host_id[10..16]);
        u
    }

    fn keyspace_of<'a>(
        &self,
        t: &'a TableRef,
        current: Option<&'a str>,
    ) -> Result<&'a str, CqlError> {
        t.keyspace.as_deref().or(current).ok_or_else(|| {
            CqlError::invalid(
                "No keyspace has been specified. USE a keyspace, or explicitly specify keyspace.tablename",
            )
        })
    }

    fn table(&self, t: &TableRef, current: Option<&str>) -> Result<&Table, CqlError> {
        let ks = self.keyspace_of(t, current)?;
        self.keyspaces
            .get(ks)
            .and_then(|k| k.tables.get(&t.table))
            .ok_or_else(|| CqlError::invalid(format!("unconfigured table {}.{}", ks, t.table)))
    }

    fn table_mut(&mut self, t: &TableRef, current: Option<&str>) -> Result<&mut Table, CqlError> {
        let ks = self.keyspace_of(t, current)?.to_string();
        if is_system(&ks) {
            return Err(CqlError::invalid(format!(
                "system keyspace {ks} is not user-modifiable"
            )));
        }
        self.keyspaces
            .get_mut(&ks)
            .and_then(|k| k.tables.get_mut(&t.table))
            .ok_or_else(|| CqlError::invalid(format!("unconfigured table {}.{}", ks, t.table)))
    }

    /// Whether a statement touches only the system keyspaces (fault injection spares those, so
    /// drivers keep their control connection).
    pub(crate) fn is_system_statement(stmt: &Statement, current: Option<&str>) -> bool {
        match stmt {
            Statement::Batch { statements, .. } => statements
                .iter()
                .all(|s| Self::is_system_statement(s, current)),
            Statement::Use(ks)
            | Statement::CreateKeyspace { name: ks, .. }
            | Statement::DropKeyspace { name: ks, .. } => is_system(ks),
            other => other
                .table()
                .and_then(|t| t.keyspace.as_deref().or(current))
                .is_some_and(is_system),
        }
    }

    /// Parses, resolves and remembers a statement; returns its id and metadata.
    pub(crate) fn prepare(
        &mut self,
        query: &str,
        keyspace: Option<&str>,
    ) -> Result<(Vec<u8>, Prepared), CqlError> {
        let (statement, markers) = parse(query)?;
        check_lwt_timestamp(&statement)?;
        let (bind_specs, pk_indexes) = self.bind_metadata(&statement, markers, keyspace)?;
        let result_specs = match &statement {
            Statement::Select { .. } => self.select_specs(&statement, keyspace)?,
            // ScyllaDB's answer to a conditional statement has the same columns every time, so
            // its PREPARE result carries them (see `cas_result`); Cassandra's varies and is
            // left out.
            s
            @ (Statement::Insert { .. } | Statement::Update { .. } | Statement::Delete { .. })
                if self.flavor == Flavor::Scylla6 && s.is_conditional() =>
            {
                self.cas_specs(s, keyspace)?
            }
            _ => Vec::new(),
        };
        let mut id = Vec::with_capacity(16);
        for seed in [0u8, 1] {
            let mut h = DefaultHasher::new();
            (seed, keyspace, query).hash(&mut h);
            id.extend_from_slice(&h.finish().to_be_bytes());
        }
        let prepared = Prepared {
            statement,
            keyspace: keyspace.map(str::to_string),
            bind_specs,
            pk_indexes,
            result_specs,
        };
        self.prepared.insert(id.clone(), prepared.clone());
        Ok((id, prepared))
    }

    /// The columns of ScyllaDB's answer to a conditional INSERT, UPDATE or DELETE: `[applied]`,
    /// then every column for IF EXISTS and IF NOT EXISTS, else the condition's columns, in
    /// table order.
    fn cas_specs(&self, stmt: &Statement, current: Option<&str>) -> Result<Vec<ColSpec>, CqlError> {
        let table = stmt.table().expect("writes name a table");
        let def = &self.table(table, current)?.def;
        let (all, conditions): (bool, &[(String, Term)]) = match stmt {
            Statement::Insert { if_not_exists, .. } => (*if_not_exists, &[]),
            Statement::Update {
                if_exists,
                conditions,
                ..
            }
            | Statement::Delete {
                if_exists,
                conditions,
                ..
            } => (*if_exists, conditions),
            _ => (false, &[]),
        };
        let mut specs = vec![def.spec("[applied]", CqlType::Boolean)];
        for c in &def.columns {
            if all || conditions.iter().any(|(n, _)| *n == c.name) {
                specs.push(def.spec(&c.name, c.ty.clone()));
            }
        }
        Ok(specs)
    }

    /// A prepared statement by id.
    pub(crate) fn prepared(&self, id: &[u8]) -> Result<Prepared, CqlError> {
        self.prepared.get(id).cloned().ok_or_else(|| {
            let mut e = CqlError::new(
                ErrorCode::Unprepared,
                "Prepared query with ID not found (either the query was not prepared on this host (maybe the host has been restarted?) or you have prepared too many queries and it has been evicted from the internal cache)",
            );
            e.unprepared_id = id.to_vec();
            e
        })
    }

    /// The bind variables of a statement, with the indexes of those holding the partition key.
    fn bind_metadata(
        &self,
        stmt: &Statement,
        markers: usize,
        current: Option<&str>,
    ) -> Result<(Vec<ColSpec>, Vec<u16>), CqlError> {
        let mut specs: Vec<Option<ColSpec>> = vec![None; markers];
        let mut pk_marker: Vec<HashMap<usize, usize>> = Vec::new();
        self.collect_binds(stmt, current, &mut specs, &mut pk_marker)?;
        let specs = specs
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                s.ok_or_else(|| {
                    CqlError::invalid(format!(
                        "bind marker {} is in a position the test node does not support",
                        i + 1
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut pk_indexes = Vec::new();
        if let [single] = pk_marker.as_slice() {
            let def = &self
                .table(stmt.table().expect("data statements name a table"), current)?
                .def;
            for i in 0..def.pk_len {
                match single.get(&i) {
                    Some(m) => pk_indexes.push(*m as u16),
                    None => {
                        pk_indexes.clear();
                        break;
                    }
                }
            }
        }
        Ok((specs, pk_indexes))
    }

    fn collect_binds(
        &self,
        stmt: &Statement,
        current: Option<&str>,
        specs: &mut [Option<ColSpec>],
        pk_marker: &mut Vec<HashMap<usize, usize>>,
    ) -> Result<(), CqlError> {
        fn term_bind(
            term: &Term,
            spec: ColSpec,
            specs: &mut [Option<ColSpec>],
        ) -> Result<Option<usize>, CqlError> {
            match term {
                Term::Bind(i) => {
                    specs[*i] = Some(spec);
                    Ok(Some(*i))
                }
                Term::Func(name, args) => {
                    if args
                        .iter()
                        .any(|a| !matches!(a, Term::Lit(_) | Term::Func(..)))
                    {
                        return Err(CqlError::invalid(format!(
                            "bind markers as arguments of {name}() are not supported by the test node"
                        )));
                    }
                    Ok(None)
                }
                Term::Lit(_) => Ok(None),
            }
        }
        let timestamp_spec = |def: &TableDef| def.spec("[timestamp]", CqlType::BigInt);
        let ttl_spec = |def: &TableDef| def.spec("[ttl]", CqlType::Int);
        match stmt {
            Statement::Batch {
                statements,
                timestamp,
                ..
            } => {
                for s in statements {
                    self.collect_binds(s, current, specs, pk_marker)?;
                }
                if let Some(t) = timestamp {
                    if let Some(first) = statements.first().and_then(Statement::table) {
                        let def = &self.table(first, current)?.def;
                        term_bind(t, timestamp_spec(def), specs)?;
                    }
                }
                // A batch has no single partition key.
                if statements.len() > 1 {
                    pk_marker.clear();
                    pk_marker.push(HashMap::new());
                    pk_marker.push(HashMap::new());
                }
            }
            Statement::Insert {
                table,
                columns,
                values,
                timestamp,
                ttl,
                ..
            } => {
                let def = &self.table(table, current)?.def;
                let mut pk = HashMap::new();
                for (c, t) in columns.iter().zip(values) {
                    let idx = def.column(c)?;
                    let col = &def.columns[idx];
                    if let Some(m) = term_bind(t, def.spec(c, col.ty.clone()), specs)? {
                        if let Kind::PartitionKey(p) = col.kind {
                            pk.insert(p, m);
                        }
                    }
                }
                if let Some(t) = timestamp {
                    term_bind(t, timestamp_spec(def), specs)?;
                }
                if let Some(t) = ttl {
                    term_bind(t, ttl_spec(def), specs)?;
                }
                pk_marker.push(pk);
            }
            Statement::Update {
                table,
                assignments,
                wheres,
                conditions,
                timestamp,
                ttl,
                ..
            } => {
                let def = &self.table(table, current)?.def;
                if let Some(t) = timestamp {
                    term_bind(t, timestamp_spec(def), specs)?;
                }
                if let Some(t) = ttl {
                    term_bind(t, ttl_spec(def), specs)?;
                }
                for (c, t) in assignments.iter().chain(conditions) {
                    let col = &def.columns[def.column(c)?];
                    term_bind(t, def.spec(c, col.ty.clone()), specs)?;
                }
                pk_marker.push(self.where_binds(def, wheres, specs)?);
            }
            Statement::Delete {
                table,
                wheres,
                conditions,
                timestamp,
                ..
            } => {
                let def = &self.table(table, current)?.def;
                if let Some(t) = timestamp {
                    term_bind(t, timestamp_spec(def), specs)?;
                }
                for (c, t) in conditions {
                    let col = &def.columns[def.column(c)?];
                    term_bind(t, def.spec(c, col.ty.clone()), specs)?;
                }
                pk_marker.push(self.where_binds(def, wheres, specs)?);
            }
            Statement::Select {
                table,
                wheres,
                limit,
                selectors,
                ..
            } => {
                let def = &self.table(table, current)?.def;
                for (sel, _) in selectors.iter().flatten() {
                    if let Selector::Func(name, _) = sel {
                        term_bind(
                            &Term::Func(name.clone(), Vec::new()),
                            def.spec("", CqlType::Blob),
                            specs,
                        )?;
                    }
                }
                pk_marker.push(self.where_binds(def, wheres, specs)?);
                if let Some(t) = limit {
                    term_bind(t, def.spec("[limit]", CqlType::Int), specs)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn where_binds(
        &self,
        def: &TableDef,
        wheres: &[Relation],
        specs: &mut [Option<ColSpec>],
    ) -> Result<HashMap<usize, usize>, CqlError> {
        let mut pk = HashMap::new();
        for r in wheres {
            match r {
                Relation::Cmp(c, op, t) => {
                    let col = &def.columns[def.column(c)?];
                    if let Term::Bind(i) = t {
                        specs[*i] = Some(def.spec(c, col.ty.clone()));
                        if let (Kind::PartitionKey(p), Op::Eq) = (col.kind, op) {
                            pk.insert(p, *i);
                        }
                    }
                }
                Relation::In(c, InValues::Marker(i)) => {
                    let col = &def.columns[def.column(c)?];
                    specs[*i] = Some(
                        def.spec(&format!("in({c})"), CqlType::List(Box::new(col.ty.clone()))),
                    );
                }
                Relation::In(c, InValues::Terms(terms)) => {
                    let col = &def.columns[def.column(c)?];
                    for t in terms {
                        if let Term::Bind(i) = t {
                            specs[*i] = Some(def.spec(c, col.ty.clone()));
                        }
                    }
                }
            }
        }
        Ok(pk)
    }

    /// Evaluates a term for a column of type `ty`.
    fn eval(&mut self, term: &Term, ty: &CqlType, values: &[Value]) -> Result<Value, CqlError> {
        match term {
            Term::Bind(i) => {
                let v = values.get(*i).cloned().ok_or_else(|| {
                    CqlError::invalid(format!(
                        "no value bound for bind marker {} ({} values sent)",
                        i + 1,
                        values.len()
                    ))
                })?;
                if let Value::Set(b) = &v {
                    ty.validate(b).map_err(|m| {
                        CqlError::invalid(format!("invalid value for bind marker {}: {m}", i + 1))
                    })?;
                }
                Ok(v)
            }
            Term::Lit(Literal::Null) => Ok(Value::Null),
            Term::Lit(l) => ty
                .serialize_literal(l)
                .map(Value::Set)
                .map_err(CqlError::invalid),
            Term::Func(name, args) => {
                let (rty, bytes) = self.call(name, args)?;
                if &rty != ty && !(rty == CqlType::Ascii && *ty == CqlType::Text) {
                    return Err(CqlError::invalid(format!(
                        "Type error: {name}() returns {rty} and cannot be assigned to a value of type {ty}"
                    )));
                }
                Ok(Value::Set(bytes))
            }
        }
    }

    /// Runs one of the native functions the node knows: `now()` / `currentTimeUUID()`,
    /// `uuid()`, `currentTimestamp()`, `currentDate()` (the UTC day of the node's clock),
    /// `toTimestamp(timeuuid|date|timestamp)`, `toUnixTimestamp(...)` and
    /// `toDate(timeuuid|timestamp|date)` ("toDate: Converts either a timeuuid or a timestamp to
    /// a date type"; "currentDate: Returns the current date/time as a date", Cassandra
    /// documentation, CQL > Functions, and the Amazon Keyspaces guide, "Built-in functions").
    fn call(&mut self, name: &str, args: &[Term]) -> Result<(CqlType, Vec<u8>), CqlError> {
        let timeuuid_millis = |u: &[u8]| -> i64 {
            let low = u64::from(u32::from_be_bytes([u[0], u[1], u[2], u[3]]));
            let mid = u64::from(u16::from_be_bytes([u[4], u[5]]));
            let high = u64::from(u16::from_be_bytes([u[6], u[7]]) & 0x0fff);
            let t = (high << 48) | (mid << 32) | low;
            ((t - 0x01B2_1DD2_1381_4000) / 10_000) as i64
        };
        match (name, args) {
            ("now" | "currenttimeuuid", []) => Ok((CqlType::TimeUuid, self.timeuuid().to_vec())),
            ("uuid", []) => Ok((CqlType::Uuid, random_uuid().to_vec())),
            ("currenttimestamp", []) => Ok((
                CqlType::Timestamp,
                (now_micros() / 1000).to_be_bytes().to_vec(),
            )),
            ("currentdate", []) => Ok((
                CqlType::Date,
                date_of_millis(now_millis()).to_be_bytes().to_vec(),
            )),
            ("totimestamp" | "tounixtimestamp" | "todate", [arg]) => {
                let (ty, b) = match arg {
                    Term::Func(n, a) => self.call(n, a)?,
                    Term::Lit(l) => (
                        CqlType::TimeUuid,
                        CqlType::TimeUuid
                            .serialize_literal(l)
                            .map_err(CqlError::invalid)?,
                    ),
                    Term::Bind(_) => {
                        return Err(CqlError::invalid(format!(
                        "bind markers as arguments of {name}() are not supported by the test node"
                    )))
                    }
                };
                let ms = match ty {
                    CqlType::TimeUuid => timeuuid_millis(&b),
                    CqlType::Timestamp => i64::from_be_bytes(b.try_into().unwrap_or_default()),
                    CqlType::Date => {
                        let days = u32::from_be_bytes(b.try_into().unwrap_or_default());
                        (i64::from(days) - i64::from(DATE_EPOCH)) * 86_400_000
                    }
                    other => {
                        return Err(CqlError::invalid(format!(
                            "{name}() takes a timeuuid, a timestamp or a date, not {other}"
                        )))
                    }
                };
                Ok(match name {
                    "totimestamp" => (CqlType::Timestamp, ms.to_be_bytes().to_vec()),
                    "todate" => (CqlType::Date, date_of_millis(ms).to_be_bytes().to_vec()),
                    _ => (CqlType::BigInt, ms.to_be_bytes().to_vec()),
                })
            }
            _ => Err(CqlError::invalid(format!(
                "function {name}() with {} arguments is not supported by the test node",
                args.len()
            ))),
        }
    }

    fn where_value(
        &mut self,
        col: &Column,
        term: &Term,
        values: &[Value],
    ) -> Result<Vec<u8>, CqlError> {
        match self.eval(term, &col.ty, values)? {
            Value::Set(b) => Ok(b),
            Value::Null => Err(CqlError::invalid(format!(
                "Invalid null value in condition for column {}",
                col.name
            ))),
            Value::Unset => Err(CqlError::invalid(format!(
                "Invalid unset value for column {}",
                col.name
            ))),
        }
    }

    /// Evaluates a WHERE clause into the partitions and clustering range it selects.
    fn restrict(
        &mut self,
        def: &TableDef,
        wheres: &[Relation],
        values: &[Value],
    ) -> Result<Restriction, CqlError> {
        let mut pk_vals: Vec<Option<Vec<Vec<u8>>>> = vec![None; def.pk_len];
        let mut ck_eq: Vec<Option<Vec<u8>>> = vec![None; def.ck_len];
        let mut ck_lower: Vec<Option<(Vec<u8>, bool)>> = vec![None; def.ck_len];
        let mut ck_upper: Vec<Option<(Vec<u8>, bool)>> = vec![None; def.ck_len];
        for r in wheres {
            let name = match r {
                Relation::Cmp(c, ..) | Relation::In(c, _) => c,
            };
            let col = def.columns[def.column(name)?].clone();
            match (col.kind, r) {
                (Kind::PartitionKey(p), Relation::Cmp(_, Op::Eq, t)) => {
                    if pk_vals[p].is_some() {
                        return Err(CqlError::invalid(format!(
                            "{name} cannot be restricted by more than one relation if it includes an Equal"
                        )));
                    }
                    pk_vals[p] = Some(vec![self.where_value(&col, t, values)?]);
                }
                (Kind::PartitionKey(p), Relation::In(_, iv)) => {
                    if pk_vals[p].is_some() {
                        return Err(CqlError::invalid(format!(
                            "{name} cannot be restricted by more than one relation if it includes an IN"
                        )));
                    }
                    let list = match iv {
                        InValues::Terms(ts) => ts
                            .iter()
                            .map(|t| self.where_value(&col, t, values))
                            .collect::<Result<Vec<_>, _>>()?,
                        InValues::Marker(i) => {
                            let list_ty = CqlType::List(Box::new(col.ty.clone()));
                            match self.eval(&Term::Bind(*i), &list_ty, values)? {
                                Value::Set(b) => decode_collection(&b, 1)
                                    .map_err(CqlError::invalid)?
                                    .into_iter()
                                    .map(|mut e| {
                                        e.remove(0).ok_or_else(|| {
                                            CqlError::invalid(format!("Invalid null value in IN for {name}"))
                                        })
                                    })
                                    .collect::<Result<Vec<_>, _>>()?,
                                _ => {
                                    return Err(CqlError::invalid(format!(
                                        "Invalid null value for IN restriction on {name}"
                                    )))
                                }
                            }
                        }
                    };
                    pk_vals[p] = Some(list);
                }
                (Kind::PartitionKey(_), _) => {
                    return Err(CqlError::invalid(format!(
                        "Only EQ and IN relation are supported on the partition key (unless you use the token() function); got a range on {name}"
                    )))
                }
                (Kind::Clustering(p, _), Relation::Cmp(_, op, t)) => {
                    let v = self.where_value(&col, t, values)?;
                    let slot = match op {
                        Op::Eq => {
                            if ck_eq[p].is_some() || ck_lower[p].is_some() || ck_upper[p].is_some() {
                                return Err(CqlError::invalid(format!(
                                    "{name} cannot be restricted by more than one relation if it includes an Equal"
                                )));
                            }
                            ck_eq[p] = Some(v);
                            continue;
                        }
                        Op::Gt | Op::Ge => &mut ck_lower[p],
                        Op::Lt | Op::Le => &mut ck_upper[p],
                    };
                    if slot.is_some() || ck_eq[p].is_some() {
                        return Err(CqlError::invalid(format!(
                            "More than one restriction was found for the {} bound on {name}",
                            if matches!(op, Op::Gt | Op::Ge) { "start" } else { "end" }
                        )));
                    }
                    *slot = Some((v, matches!(op, Op::Ge | Op::Le)));
                }
                (Kind::Clustering(..), Relation::In(..)) => {
                    return Err(CqlError::invalid(format!(
                        "IN restrictions on clustering columns ({name}) are not supported by the test node"
                    )))
                }
                (Kind::Regular, _) => {
                    return Err(CqlError::invalid(format!(
                        "filtering on regular column {name} (ALLOW FILTERING) is not supported by the test node"
                    )))
                }
            }
        }
        let mut out = Restriction::default();
        let restricted = pk_vals.iter().filter(|v| v.is_some()).count();
        if restricted == def.pk_len {
            let mut combos: Vec<Vec<Vec<u8>>> = vec![Vec::new()];
            for vals in pk_vals.into_iter().flatten() {
                combos = combos
                    .into_iter()
                    .flat_map(|c| {
                        vals.iter().map(move |v| {
                            let mut c = c.clone();
                            c.push(v.clone());
                            c
                        })
                    })
                    .collect();
            }
            out.partitions = Some(combos);
        } else if restricted > 0 {
            let missing: Vec<&str> = (0..def.pk_len)
                .map(|i| def.columns[i].name.as_str())
                .collect();
            return Err(CqlError::invalid(format!(
                "Cannot execute this query as it might involve data filtering: restrict every partition key column ({})",
                missing.join(", ")
            )));
        }
        let mut seen_gap = None;
        for p in 0..def.ck_len {
            let name = &def.columns[def.pk_len + p].name;
            let has_eq = ck_eq[p].is_some();
            let has_range = ck_lower[p].is_some() || ck_upper[p].is_some();
            if let Some(prev) = &seen_gap {
                if has_eq || has_range {
                    return Err(CqlError::invalid(format!(
                        "PRIMARY KEY column \"{name}\" cannot be restricted as preceding column \"{prev}\" is not restricted by an equality"
                    )));
                }
                continue;
            }
            if has_eq {
                out.ck_eq.push(ck_eq[p].take().unwrap_or_default());
            } else {
                if has_range {
                    out.lower = ck_lower[p].take();
                    out.upper = ck_upper[p].take();
                }
                seen_gap = Some(name.clone());
            }
        }
        if out.partitions.is_none()
            && (!out.ck_eq.is_empty() || out.lower.is_some() || out.upper.is_some())
        {
            return Err(CqlError::invalid(
                "Cannot execute this query as it might involve data filtering and thus may have unpredictable performance (restrict the partition key; ALLOW FILTERING is not supported by the test node)",
            ));
        }
        Ok(out)
    }

    /// Executes a statement.
    pub(crate) fn execute(
        &mut self,
        stmt: &Statement,
        values: &[Value],
        exec: Exec<'_>,
    ) -> Result<Outcome, CqlError> {
        match stmt {
            Statement::Select { .. } => self.select(stmt, values, exec),
            Statement::Insert { .. } | Statement::Update { .. } | Statement::Delete { .. } => {
                check_lwt_timestamp(stmt)?;
                self.mutation_sizes.clear();
                let ts = if stmt.is_conditional() {
                    self.check_lwt_tablets(stmt, exec.keyspace)?;
                    // The write of a lightweight transaction takes the timestamp of its Paxos
                    // ballot, from the coordinator's clock; a client's default timestamp is
                    // accepted but not used (Cassandra's CAS path builds the update from the
                    // ballot: `CQL3CasRequest.makeUpdates(current, state, ballot)` in 4.1+,
                    // the proposal's timestamp rewrite before). Refusing it would fail every
                    // LWT of the Python driver, which sends a client timestamp by default.
                    self.next_timestamp()
                } else {
                    exec.timestamp.unwrap_or_else(|| self.next_timestamp())
                };
                self.write(stmt, values, exec.keyspace, ts, Cond::Evaluate)
            }
            Statement::Batch {
                statements,
                timestamp,
                ..
            } => {
                check_lwt_timestamp(stmt)?;
                let mut ts = exec.timestamp.unwrap_or_else(|| self.next_timestamp());
                if let Some(t) = timestamp {
                    ts = self.timestamp_value(t, values)?;
                }
                let items: Vec<(Statement, Vec<Value>)> = statements
                    .iter()
                    .map(|s| (s.clone(), values.to_vec()))
                    .collect();
                self.batch(&items, exec.keyspace, ts)
            }
            Statement::Use(ks) => {
                if self.keyspaces.contains_key(ks) {
                    Ok(Outcome::SetKeyspace(ks.clone()))
                } else {
                    Err(CqlError::invalid(format!("Keyspace '{ks}' does not exist")))
                }
            }
            Statement::CreateKeyspace { .. } | Statement::DropKeyspace { .. } => {
                self.keyspace_ddl(stmt)
            }
            Statement::CreateTable { .. } => self.create_table(stmt, exec.keyspace, false),
            Statement::AlterTableAdd { table, column, ty } => {
                self.alter_table_add(table, column, ty, exec.keyspace)
            }
            Statement::DropTable { table, if_exists } => {
                let ks = self.keyspace_of(table, exec.keyspace)?.to_string();
                if is_system(&ks) {
                    return Err(CqlError::invalid(format!(
                        "system keyspace {ks} is not user-modifiable"
                    )));
                }
                let removed = self
                    .keyspaces
                    .get_mut(&ks)
                    .and_then(|k| k.tables.remove(&table.table));
                match (removed, if_exists) {
                    (Some(_), _) => {
                        self.schema_changed();
                        Ok(Outcome::SchemaChange {
                            change: "DROPPED",
                            target: "TABLE",
                            keyspace: ks,
                            table: Some(table.table.clone()),
                        })
                    }
                    (None, true) => Ok(Outcome::Void),
                    (None, false) => Err(CqlError::invalid(format!(
                        "Table '{}.{}' doesn't exist",
                        ks, table.table
                    ))),
                }
            }
            Statement::Truncate { table } => {
                self.table_mut(table, exec.keyspace)?.partitions.clear();
                Ok(Outcome::Void)
            }
            Statement::Describe(what) => self.describe(what, exec.keyspace),
        }
    }

    /// Server-side DESCRIBE (Cassandra 4.0+): rows of `keyspace_name`, `type`, `name` and, for
    /// elements, `create_statement`.
    fn describe(&self, what: &Describe, current: Option<&str>) -> Result<Outcome, CqlError> {
        let keyspace = |name: &str| {
            self.keyspaces
                .get(name)
                .ok_or_else(|| CqlError::invalid(format!("Keyspace '{name}' not found")))
        };
        let ks_rows = |name: &str, ks: &Keyspace| {
            let mut rows = vec![element_row(
                name,
                "keyspace",
                name,
                &create_keyspace(name, ks),
            )];
            for (t_name, t) in &ks.tables {
                rows.push(element_row(name, "table", t_name, &create_table(&t.def)));
            }
            rows
        };
        let (names_only, rows) = match what {
            Describe::Keyspaces => (
                true,
                self.keyspaces
                    .keys()
                    .map(|k| element_row(k, "keyspace", k, ""))
                    .collect(),
            ),
            Describe::Tables => (
                true,
                self.keyspaces
                    .iter()
                    .filter(|(k, _)| current.is_none_or(|c| c == k.as_str()))
                    .flat_map(|(k, ks)| {
                        ks.tables
                            .keys()
                            .map(move |t| element_row(k, "table", t, ""))
                    })
                    .collect(),
            ),
            Describe::Keyspace(name) => {
                let name = name.as_deref().or(current).ok_or_else(|| {
                    CqlError::invalid("No keyspace specified and no current keyspace")
                })?;
                (false, ks_rows(name, keyspace(name)?))
            }
            Describe::Schema { full } => (
                false,
                self.keyspaces
                    .iter()
                    .filter(|(k, _)| *full || !is_system(k))
                    .flat_map(|(k, ks)| ks_rows(k, ks))
                    .collect(),
            ),
            Describe::Name(t) if t.keyspace.is_none() && self.keyspaces.contains_key(&t.table) => {
                (false, ks_rows(&t.table, keyspace(&t.table)?))
            }
            Describe::Table(t) | Describe::Name(t) => {
                let ks = self.keyspace_of(t, current)?;
                let table = self.table(t, current).map_err(|_| {
                    CqlError::invalid(format!("'{}' not found in keyspace '{ks}'", t.table))
                })?;
                (
                    false,
                    vec![element_row(
                        ks,
                        "table",
                        &t.table,
                        &create_table(&table.def),
                    )],
                )
            }
        };
        let mut names = vec!["keyspace_name", "type", "name"];
        if !names_only {
            names.push("create_statement");
        }
        let specs = names
            .iter()
            .map(|n| ColSpec {
                keyspace: current.unwrap_or("system").to_string(),
                table: "describe".to_string(),
                name: n.to_string(),
                ty: CqlType::Text,
            })
            .collect();
        let rows = rows
            .into_iter()
            .map(|mut r: Vec<Option<Vec<u8>>>| {
                r.truncate(names.len());
                r
            })
            .collect();
        Ok(Outcome::Rows {
            specs,
            rows,
            paging_state: None,
        })
    }

    /// When the cells of a write expire (milliseconds on the node's clock), or `None` for
    /// cells that never expire: from the statement's `USING TTL` (a null TTL is 0, an unset one
    /// is the default), else the table's `default_time_to_live`; 0 means no TTL. "Setting TTL
    /// on a column using the INSERT or UPDATE command overrides the table TTL" (DataStax CQL
    /// reference, "Expiring data with TTL example"), and "The expiration time is always
    /// calculated as now() on the Coordinator + TTL ... a value given via USING TIMESTAMP is
    /// not taken into an account" (ScyllaDB manual, CQL > Expiring Data with Time to Live).
    /// Cassandra counts whole seconds (`Attributes.getTimeToLive`, with its limits and
    /// messages); the node counts milliseconds, so a cell lives its full TTL.
    fn expiry(
        &mut self,
        ttl: Option<&Term>,
        def: &TableDef,
        values: &[Value],
        now: i64,
    ) -> Result<Option<i64>, CqlError> {
        let secs = match ttl {
            None => def.default_ttl,
            Some(t) => match self.eval(t, &CqlType::Int, values)? {
                Value::Set(b) => i32::from_be_bytes(b.try_into().unwrap_or_default()),
                Value::Null => 0,
                Value::Unset => def.default_ttl,
            },
        };
        if secs < 0 {
            return Err(CqlError::invalid(format!(
                "A TTL must be greater or equal to 0, but was {secs}"
            )));
        }
        if secs > MAX_TTL {
            return Err(CqlError::invalid(format!(
                "ttl is too large. requested ({secs}) maximum ({MAX_TTL})"
            )));
        }
        Ok((secs > 0).then(|| now + i64::from(secs) * 1000))
    }

    fn timestamp_value(&mut self, t: &Term, values: &[Value]) -> Result<i64, CqlError> {
        match self.eval(t, &CqlType::BigInt, values)? {
            Value::Set(b) => Ok(i64::from_be_bytes(b.try_into().unwrap_or_default())),
            _ => Err(CqlError::invalid("Invalid null value of timestamp")),
        }
    }

    /// Refuses a lightweight transaction on a table of a keyspace with tablets, as ScyllaDB 6
    /// does: "The LWT feature is not supported in keyspaces with tablets enabled" (ScyllaDB
    /// manual, Features > Lightweight Transactions, up to 2025.3; later releases support it).
    /// ScyllaDB's own LWT tests, run with that support switched off, expect an Invalid error
    /// matching "<keyspace>.<table>...LWT is not yet supported with tablets", given on
    /// execution: "preparing the LWT query is expected to succeed".
    fn check_lwt_tablets(&self, stmt: &Statement, current: Option<&str>) -> Result<(), CqlError> {
        let Some(table) = stmt.table() else {
            return Ok(());
        };
        let ks = self.keyspace_of(table, current)?;
        if self.keyspaces.get(ks).is_some_and(|k| k.tablets) {
            return Err(CqlError::invalid(format!(
                "{ks}.{}: LWT is not yet supported with tablets",
                table.table
            )));
        }
        Ok(())
    }

    /// Counts `bytes` written to one partition by the request under way and refuses the request
    /// once the partition's mutation exceeds the largest the node accepts. Cassandra 4.1+
    /// refuses it at the coordinator with an `InvalidRequestException` (code 0x2200) reading
    /// "Rejected an oversized mutation (<size>/<max>) for keyspace: <ks>. Top keys are:
    /// <table>.<key>" (`MutationExceededMaxSizeException`); 4.0 failed the write in its commit
    /// log instead. The size counted is the bytes of the values written (keys included),
    /// slightly less than Cassandra's serialized size.
    fn account(&mut self, def: &TableDef, pk: &[Vec<u8>], bytes: usize) -> Result<(), CqlError> {
        let key = (def.keyspace.clone(), partition_key_bytes(pk));
        let total = self.mutation_sizes.entry(key).or_default();
        *total += bytes;
        if *total > self.max_mutation_size {
            let shown: Vec<String> = pk
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            return Err(CqlError::invalid(format!(
                "Rejected an oversized mutation ({}/{}) for keyspace: {}. Top keys are: {}.{}",
                *total,
                self.max_mutation_size,
                def.keyspace,
                def.name,
                shown.join(":")
            )));
        }
        Ok(())
    }

    /// The keyspace, table and partitions a write addresses.
    fn partitions_of(
        &mut self,
        stmt: &Statement,
        values: &[Value],
        current: Option<&str>,
    ) -> Result<(TableDef, Vec<KeyParts>), CqlError> {
        let table_ref = stmt.table().expect("writes name a table");
        let def = self.table(table_ref, current)?.def.clone();
        match stmt {
            Statement::Insert {
                columns,
                values: terms,
                ..
            } => {
                let mut pk: Vec<Option<Vec<u8>>> = vec![None; def.pk_len];
                for (c, t) in columns.iter().zip(terms) {
                    let col = def.columns[def.column(c)?].clone();
                    if let Kind::PartitionKey(p) = col.kind {
                        pk[p] = Some(self.where_value(&col, t, values)?);
                    }
                }
                let Some(pk) = pk.into_iter().collect::<Option<Vec<_>>>() else {
                    return Err(CqlError::invalid("Some partition key parts are missing"));
                };
                Ok((def, vec![pk]))
            }
            Statement::Update { wheres, .. } | Statement::Delete { wheres, .. } => {
                let r = self.restrict(&def, wheres, values)?;
                let parts = r.partitions.ok_or_else(|| {
                    CqlError::invalid("a write needs the whole partition key in its WHERE clause")
                })?;
                Ok((def, parts))
            }
            _ => Err(CqlError::invalid(
                "a batch may contain only INSERT, UPDATE and DELETE statements",
            )),
        }
    }

    /// Applies a batch atomically: every statement is checked first, then all are applied with
    /// one timestamp (unless a statement names its own). A batch holding a conditional
    /// statement is a lightweight transaction: see [`Engine::conditional_batch`].
    pub(crate) fn batch(
        &mut self,
        items: &[(Statement, Vec<Value>)],
        current: Option<&str>,
        ts: i64,
    ) -> Result<Outcome, CqlError> {
        for (s, _) in items {
            match s {
                Statement::Insert { .. } | Statement::Update { .. } | Statement::Delete { .. } => {
                    check_lwt_timestamp(s)?;
                }
                _ => {
                    return Err(CqlError::invalid(
                        "a batch may contain only INSERT, UPDATE and DELETE statements",
                    ))
                }
            }
        }
        self.mutation_sizes.clear();
        if items.iter().any(|(s, _)| s.is_conditional()) {
            return self.conditional_batch(items, current);
        }
        // Validate everything against a copy, then swap it in: all or nothing.
        let snapshot = self.keyspaces.clone();
        for (s, v) in items {
            if let Err(e) = self.write(s, v, current, ts, Cond::Evaluate) {
                self.keyspaces = snapshot;
                return Err(e);
            }
        }
        Ok(Outcome::Void)
    }

    /// A batch with at least one conditional statement: one Paxos round on one partition, so
    /// every statement must address the same partition of the same table. "a batch containing
    /// conditional updates can only operate within a single partition, because the underlying
    /// Paxos implementation only works at partition-level granularity" (DataStax CQL reference,
    /// BATCH, "Batching conditional updates"); Cassandra answers "Batch with conditions cannot
    /// span multiple partitions" (0x2200, `BatchStatement.makeCasRequest`), with "(you cannot
    /// use IN on the partition key)" when one statement names several partitions, and "Batch
    /// with conditions cannot span multiple tables" for a second table.
    ///
    /// Every condition is checked against the data as it was before the batch; if all hold,
    /// every statement is applied with the node's clock as the timestamp (the ballot's), and
    /// the answer is one `[applied]` row. The node's answer carries `[applied]` only, not the
    /// current values Cassandra and ScyllaDB add when a condition fails.
    fn conditional_batch(
        &mut self,
        items: &[(Statement, Vec<Value>)],
        current: Option<&str>,
    ) -> Result<Outcome, CqlError> {
        let mut target: Option<(TableDef, Vec<u8>)> = None;
        for (s, v) in items {
            let (def, parts) = self.partitions_of(s, v, current)?;
            if parts.len() != 1 {
                return Err(CqlError::invalid(
                    "Batch with conditions cannot span multiple partitions (you cannot use IN on the partition key)",
                ));
            }
            let key = partition_key_bytes(&parts[0]);
            match &target {
                None => target = Some((def, key)),
                Some((first, first_key)) => {
                    if (&first.keyspace, &first.name) != (&def.keyspace, &def.name) {
                        return Err(CqlError::invalid(
                            "Batch with conditions cannot span multiple tables",
                        ));
                    }
                    if *first_key != key {
                        return Err(CqlError::invalid(
                            "Batch with conditions cannot span multiple partitions",
                        ));
                    }
                }
            }
        }
        let (def, _) = target.expect("a conditional batch holds a statement");
        let first = items.first().map(|(s, _)| s).expect("checked above");
        self.check_lwt_tablets(first, current)?;
        let mut holds = true;
        for (s, v) in items.iter().filter(|(s, _)| s.is_conditional()) {
            if let Outcome::Rows { rows, .. } = self.write(s, v, current, 0, Cond::Check)? {
                holds &= rows.first().and_then(|r| r.first()) == Some(&Some(vec![1u8]));
            }
        }
        if !holds {
            return Ok(applied(&def, false));
        }
        let ts = self.next_timestamp();
        let snapshot = self.keyspaces.clone();
        for (s, v) in items {
            if let Err(e) = self.write(s, v, current, ts, Cond::Skip) {
                self.keyspaces = snapshot;
                return Err(e);
            }
        }
        Ok(applied(&def, true))
    }

    /// INSERT, UPDATE or DELETE.
    fn write(
        &mut self,
        stmt: &Statement,
        values: &[Value],
        current: Option<&str>,
        default_ts: i64,
        cond: Cond,
    ) -> Result<Outcome, CqlError> {
        let table_ref = stmt.table().expect("writes name a table");
        let def = self.table_mut(table_ref, current)?.def.clone();
        match stmt {
            Statement::Insert {
                columns,
                values: terms,
                if_not_exists,
                timestamp,
                ttl,
                ..
            } => {
                let ts = match timestamp {
                    Some(t) => self.timestamp_value(t, values)?,
                    None => default_ts,
                };
                let now = self.ttl_clock();
                let expires = self.expiry(ttl.as_ref(), &def, values, now)?;
                let mut pk: Vec<Option<Vec<u8>>> = vec![None; def.pk_len];
                let mut ck: Vec<Option<Vec<u8>>> = vec![None; def.ck_len];
                let mut cells = Vec::new();
                let mut seen = Vec::new();
                for (c, t) in columns.iter().zip(terms) {
                    let idx = def.column(c)?;
                    if seen.contains(&idx) {
                        return Err(CqlError::invalid(format!(
                            "The column names contains duplicates: {c}"
                        )));
                    }
                    seen.push(idx);
                    let col = &def.columns[idx];
                    let v = self.eval(t, &col.ty, values)?;
                    match col.kind {
                        Kind::PartitionKey(p) | Kind::Clustering(p, _) => {
                            let Value::Set(b) = v else {
                                return Err(CqlError::invalid(format!(
                                    "Invalid null or unset value for primary key part {c}"
                                )));
                            };
                            if matches!(col.kind, Kind::PartitionKey(_)) {
                                pk[p] = Some(b);
                            } else {
                                ck[p] = Some(b);
                            }
                        }
                        Kind::Regular => cells.push((idx, v)),
                    }
                }
                let missing: Vec<&str> = def
                    .columns
                    .iter()
                    .filter(|c| match c.kind {
                        Kind::PartitionKey(p) => pk[p].is_none(),
                        Kind::Clustering(p, _) => ck[p].is_none(),
                        Kind::Regular => false,
                    })
                    .map(|c| c.name.as_str())
                    .collect();
                if !missing.is_empty() {
                    return Err(CqlError::invalid(format!(
                        "Some primary key parts are missing: {}",
                        missing.join(", ")
                    )));
                }
                let pk: Vec<Vec<u8>> = pk.into_iter().flatten().collect();
                let ck: Vec<Vec<u8>> = ck.into_iter().flatten().collect();
                if cond != Cond::Check {
                    let bytes = pk.iter().chain(&ck).map(Vec::len).sum::<usize>()
                        + cells.iter().map(|(_, v)| value_len(v)).sum::<usize>();
                    self.account(&def, &pk, bytes)?;
                }
                let flavor = self.flavor;
                let table = self.table_mut(table_ref, current)?;
                if *if_not_exists && cond == Cond::Check {
                    return Ok(applied(&def, read_row(table, &pk, &ck, now).is_none()));
                }
                let mut answer = None;
                if *if_not_exists && cond == Cond::Evaluate {
                    // IF NOT EXISTS answers with every column of the existing row.
                    let existing = read_row(table, &pk, &ck, now);
                    let all: Vec<usize> = (0..def.columns.len()).collect();
                    let holds = existing.is_none();
                    let result = cas_result(flavor, &def, &all, existing, holds);
                    if !holds {
                        return Ok(result);
                    }
                    answer = Some(result);
                }
                let row = upsert_row(table, &pk, &ck, ts);
                if let Some(row) = row {
                    if row.marker.is_none_or(|m| m <= ts) {
                        row.marker = Some(ts);
                        row.marker_expires = expires;
                    }
                    for (idx, v) in cells {
                        set_cell(row, idx, v, ts, expires, now);
                    }
                }
                Ok(answer.unwrap_or(Outcome::Void))
            }
            Statement::Update {
                assignments,
                wheres,
                if_exists,
                conditions,
                timestamp,
                ttl,
                ..
            } => {
                let ts = match timestamp {
                    Some(t) => self.timestamp_value(t, values)?,
                    None => default_ts,
                };
                let now = self.ttl_clock();
                let expires = self.expiry(ttl.as_ref(), &def, values, now)?;
                let r = self.restrict(&def, wheres, values)?;
                let partitions = self.full_key(&def, &r, "UPDATE")?;
                let mut cells = Vec::new();
                for (c, t) in assignments {
                    let idx = def.column(c)?;
                    if !matches!(def.columns[idx].kind, Kind::Regular) {
                        return Err(CqlError::invalid(format!(
                            "PRIMARY KEY part {c} found in SET part"
                        )));
                    }
                    cells.push((idx, self.eval(t, &def.columns[idx].ty, values)?));
                }
                let conditional = *if_exists || !conditions.is_empty();
                let wanted = self.condition_values(&def, conditions, values)?;
                if cond != Cond::Check {
                    for pk in &partitions {
                        let bytes = r.ck_eq.iter().map(Vec::len).sum::<usize>()
                            + cells.iter().map(|(_, v)| value_len(v)).sum::<usize>();
                        self.account(&def, pk, bytes)?;
                    }
                }
                let flavor = self.flavor;
                let table = self.table_mut(table_ref, current)?;
                let mut answer = None;
                if conditional && cond != Cond::Skip {
                    if partitions.len() != 1 {
                        return Err(CqlError::invalid(
                            "IN on the partition key is not supported with conditional updates",
                        ));
                    }
                    let (holds, result) = check_condition(
                        flavor,
                        table,
                        &partitions[0],
                        &r.ck_eq,
                        *if_exists,
                        &wanted,
                        now,
                    );
                    match cond {
                        Cond::Check => return Ok(applied(&def, holds)),
                        _ if !holds => return Ok(result),
                        _ => answer = Some(result),
                    }
                }
                for pk in &partitions {
                    if let Some(row) = upsert_row(table, pk, &r.ck_eq, ts) {
                        for (idx, v) in &cells {
                            set_cell(row, *idx, v.clone(), ts, expires, now);
                        }
                    }
                }
                Ok(answer.unwrap_or(Outcome::Void))
            }
            Statement::Delete {
                columns,
                wheres,
                if_exists,
                conditions,
                timestamp,
                ..
            } => {
                let ts = match timestamp {
                    Some(t) => self.timestamp_value(t, values)?,
                    None => default_ts,
                };
                let r = self.restrict(&def, wheres, values)?;
                if r.partitions.is_none() {
                    return Err(CqlError::invalid(
                        "DELETE needs the whole partition key in its WHERE clause",
                    ));
                }
                if r.lower.is_some()
                    || r.upper.is_some()
                    || (!r.ck_eq.is_empty() && r.ck_eq.len() < def.ck_len)
                {
                    return Err(CqlError::invalid(
                        "range deletions (a partial clustering key) are not supported by the test node",
                    ));
                }
                let col_idx = columns
                    .iter()
                    .map(|c| {
                        let i = def.column(c)?;
                        if matches!(def.columns[i].kind, Kind::Regular) {
                            Ok(i)
                        } else {
                            Err(CqlError::invalid(format!(
                                "Invalid identifier {c} for deletion (should not be a PRIMARY KEY part)"
                            )))
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let whole_row = r.ck_eq.len() == def.ck_len;
                if !col_idx.is_empty() && !whole_row {
                    return Err(CqlError::invalid(
                        "deleting columns needs the full primary key in the WHERE clause",
                    ));
                }
                let partitions = r.partitions.clone().unwrap_or_default();
                let conditional = *if_exists || !conditions.is_empty();
                let wanted = self.condition_values(&def, conditions, values)?;
                if cond != Cond::Check {
                    for pk in &partitions {
                        let bytes = r.ck_eq.iter().map(Vec::len).sum::<usize>();
                        self.account(&def, pk, bytes)?;
                    }
                }
                let flavor = self.flavor;
                let now = self.ttl_clock();
                let table = self.table_mut(table_ref, current)?;
                let mut answer = None;
                if conditional && cond != Cond::Skip {
                    if partitions.len() != 1 || !whole_row {
                        return Err(CqlError::invalid(
                            "a conditional DELETE needs a single row (the full primary key)",
                        ));
                    }
                    let (holds, result) = check_condition(
                        flavor,
                        table,
                        &partitions[0],
                        &r.ck_eq,
                        *if_exists,
                        &wanted,
                        now,
                    );
                    match cond {
                        Cond::Check => return Ok(applied(&def, holds)),
                        _ if !holds => return Ok(result),
                        _ => answer = Some(result),
                    }
                }
                for pk in &partitions {
                    if def.ck_len > 0 && r.ck_eq.is_empty() {
                        let key = partition_key_bytes(pk);
                        if let Some(p) = table.partitions.get_mut(&key) {
                            p.deleted_at = Some(p.deleted_at.map_or(ts, |d| d.max(ts)));
                            for row in &mut p.rows {
                                row.delete(ts);
                            }
                        }
                    } else if let Some(row) = upsert_row(table, pk, &r.ck_eq, ts) {
                        if col_idx.is_empty() {
                            row.delete(ts);
                        } else {
                            for i in &col_idx {
                                set_cell(row, *i, Value::Null, ts, None, now);
                            }
                        }
                    }
                }
                Ok(answer.unwrap_or(Outcome::Void))
            }
            _ => unreachable!("write() is called for INSERT, UPDATE and DELETE"),
        }
    }

    /// The values an `IF col = term AND ...` clause wants: (column index, value, `None` for
    /// null).
    fn condition_values(
        &mut self,
        def: &TableDef,
        conditions: &[(String, Term)],
        values: &[Value],
    ) -> Result<Wanted, CqlError> {
        let mut out = Vec::new();
        for (c, t) in conditions {
            let idx = def.column(c)?;
            if !matches!(def.columns[idx].kind, Kind::Regular) {
                return Err(CqlError::invalid(format!(
                    "PRIMARY KEY column '{c}' cannot have IF conditions"
                )));
            }
            let v = match self.eval(t, &def.columns[idx].ty, values)? {
                Value::Set(b) => Some(b),
                Value::Null => None,
                Value::Unset => {
                    return Err(CqlError::invalid(format!(
                        "Invalid 'unset' value in condition on {c}"
                    )))
                }
            };
            out.push((idx, v));
        }
        Ok(out)
    }

    /// The partitions of a restriction that names the full primary key.
    fn full_key(
        &self,
        def: &TableDef,
        r: &Restriction,
        what: &str,
    ) -> Result<Vec<Vec<Vec<u8>>>, CqlError> {
        let Some(partitions) = r.partitions.clone() else {
            return Err(CqlError::invalid(format!(
                "{what} needs the whole partition key in its WHERE clause"
            )));
        };
        if r.ck_eq.len() != def.ck_len || r.lower.is_some() || r.upper.is_some() {
            let missing: Vec<&str> = def.columns
                [def.pk_len + r.ck_eq.len()..def.pk_len + def.ck_len]
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            return Err(CqlError::invalid(format!(
                "Some clustering keys are missing: {}",
                missing.join(", ")
            )));
        }
        Ok(partitions)
    }

    fn projections(
        &mut self,
        def: &TableDef,
        selectors: &Option<Vec<(Selector, Option<String>)>>,
    ) -> Result<(Vec<ColSpec>, Vec<Projection>, bool), CqlError> {
        let Some(items) = selectors else {
            let specs = def
                .columns
                .iter()
                .map(|c| def.spec(&c.name, c.ty.clone()))
                .collect();
            let proj = (0..def.columns.len()).map(Projection::Column).collect();
            return Ok((specs, proj, false));
        };
        let mut specs = Vec::new();
        let mut proj = Vec::new();
        let mut count = false;
        for (sel, alias) in items {
            match sel {
                Selector::Column(c) => {
                    let i = def.column(c)?;
                    specs.push(def.spec(alias.as_deref().unwrap_or(c), def.columns[i].ty.clone()));
                    proj.push(Projection::Column(i));
                }
                Selector::WriteTime(c) => {
                    let i = def.column(c)?;
                    if !matches!(def.columns[i].kind, Kind::Regular) {
                        return Err(CqlError::invalid(format!(
                            "Cannot use selection function writeTime on PRIMARY KEY part {c}"
                        )));
                    }
                    let name = alias.clone().unwrap_or_else(|| format!("writetime({c})"));
                    specs.push(def.spec(&name, CqlType::BigInt));
                    proj.push(Projection::WriteTime(i));
                }
                Selector::Ttl(c) => {
                    let i = def.column(c)?;
                    if !matches!(def.columns[i].kind, Kind::Regular) {
                        return Err(CqlError::invalid(format!(
                            "Cannot use selection function ttl on PRIMARY KEY part {c}"
                        )));
                    }
                    let name = alias.clone().unwrap_or_else(|| format!("ttl({c})"));
                    specs.push(def.spec(&name, CqlType::Int));
                    proj.push(Projection::Ttl(i));
                }
                Selector::CountStar => {
                    count = true;
                    specs.push(def.spec(alias.as_deref().unwrap_or("count"), CqlType::BigInt));
                }
                Selector::Func(name, args) => {
                    let (ty, b) = self.call(name, args)?;
                    let label = alias.clone().unwrap_or_else(|| format!("{name}(...)"));
                    specs.push(def.spec(&label, ty));
                    proj.push(Projection::Constant(Some(b)));
                }
            }
        }
        if count && items.len() > 1 {
            return Err(CqlError::invalid(
                "COUNT(*) together with other selectors is not supported by the test node",
            ));
        }
        Ok((specs, proj, count))
    }

    fn select_specs(
        &mut self,
        stmt: &Statement,
        current: Option<&str>,
    ) -> Result<Vec<ColSpec>, CqlError> {
        let Statement::Select {
            table, selectors, ..
        } = stmt
        else {
            return Ok(Vec::new());
        };
        let def = self.table(table, current)?.def.clone();
        Ok(self.projections(&def, selectors)?.0)
    }

    fn select(
        &mut self,
        stmt: &Statement,
        values: &[Value],
        exec: Exec<'_>,
    ) -> Result<Outcome, CqlError> {
        let Statement::Select {
            table,
            selectors,
            wheres,
            order_by,
            limit,
        } = stmt
        else {
            unreachable!("select() is called for SELECT");
        };
        let def = self.table(table, exec.keyspace)?.def.clone();
        let (specs, proj, count) = self.projections(&def, selectors)?;
        let r = self.restrict(&def, wheres, values)?;
        let limit = match limit {
            None => None,
            Some(t) => match self.eval(t, &CqlType::Int, values)? {
                Value::Set(b) => {
                    let n = i32::from_be_bytes(b.try_into().unwrap_or_default());
                    if n <= 0 {
                        return Err(CqlError::invalid("LIMIT must be strictly positive"));
                    }
                    Some(n as u64)
                }
                _ => return Err(CqlError::invalid("Invalid null value of limit")),
            },
        };
        // ORDER BY: a prefix of the clustering columns, all in the table's order or all reversed.
        let mut reversed = false;
        if !order_by.is_empty() {
            if r.partitions.is_none() {
                return Err(CqlError::invalid(
                    "ORDER BY is only supported when the partition key is restricted by an EQ or an IN.",
                ));
            }
            if r.partitions.as_ref().is_some_and(|p| p.len() > 1) {
                return Err(CqlError::invalid(
                    "ORDER BY with an IN restriction on several partitions is not supported by the test node",
                ));
            }
            for (k, (c, desc)) in order_by.iter().enumerate() {
                let i = def.column(c)?;
                let Kind::Clustering(p, table_desc) = def.columns[i].kind else {
                    return Err(CqlError::invalid(format!(
                        "Order by is currently only supported on the clustered columns of the PRIMARY KEY, got {c}"
                    )));
                };
                if p != k {
                    return Err(CqlError::invalid(
                        "Order by currently only supports the ordering of columns following their declared order in the PRIMARY KEY",
                    ));
                }
                let rev = *desc != table_desc;
                if k > 0 && rev != reversed {
                    return Err(CqlError::invalid("Unsupported order by relation"));
                }
                reversed = rev;
            }
        }
        let start = match exec.paging_state {
            Some(ps) if !count => Some(
                PagePosition::decode(ps)
                    .ok_or_else(|| CqlError::protocol("invalid paging state"))?,
            ),
            _ => None,
        };
        let now = self.ttl_clock();
        let tbl = self.table(table, exec.keyspace)?;
        let keys: Vec<Vec<u8>> = match &r.partitions {
            Some(ps) => {
                let mut ks: Vec<Vec<u8>> = ps.iter().map(|p| partition_key_bytes(p)).collect();
                ks.sort();
                ks.dedup();
                ks
            }
            None => tbl.partitions.keys().cloned().collect(),
        };
        let mut returned = start.as_ref().map_or(0, |s| s.returned);
        let page = if count { None } else { exec.page_size };
        let mut rows = Vec::new();
        let mut last: Option<(Vec<u8>, Vec<Vec<u8>>)> = None;
        let mut counted: i64 = 0;
        let mut more = false;
        'outer: for key in keys {
            if let Some(s) = &start {
                if key < s.partition {
                    continue;
                }
            }
            let Some(part) = tbl.partitions.get(&key) else {
                continue;
            };
            let iter: Box<dyn Iterator<Item = &Row>> = if reversed {
                Box::new(part.rows.iter().rev())
            } else {
                Box::new(part.rows.iter())
            };
            for row in iter {
                if !row.is_live(now) || !r.matches(&def, &row.ck) {
                    continue;
                }
                if let Some(s) = &start {
                    if key == s.partition {
                        let o = def.cmp_ck(&row.ck, &s.ck);
                        let after = if reversed { o.is_lt() } else { o.is_gt() };
                        if !after {
                            continue;
                        }
                    }
                }
                if limit.is_some_and(|l| returned >= l) {
                    break 'outer;
                }
                if page.is_some_and(|p| rows.len() >= p) {
                    more = true;
                    break 'outer;
                }
                if count {
                    counted += 1;
                    returned += 1;
                    continue;
                }
                let out: Vec<Option<Vec<u8>>> = proj
                    .iter()
                    .map(|p| match p {
                        Projection::Column(i) => match def.columns[*i].kind {
                            Kind::PartitionKey(k) => Some(part.pk[k].clone()),
                            Kind::Clustering(k, _) => Some(row.ck[k].clone()),
                            Kind::Regular => row.cells.get(i).and_then(|c| c.live(now).cloned()),
                        },
                        Projection::WriteTime(i) => row
                            .cells
                            .get(i)
                            .filter(|c| c.live(now).is_some())
                            .map(|c| c.ts.to_be_bytes().to_vec()),
                        // The whole seconds left, rounded up, as Cassandra's `TTL()` counts
                        // them from its second-precision clock.
                        Projection::Ttl(i) => row
                            .cells
                            .get(i)
                            .filter(|c| c.live(now).is_some())
                            .and_then(|c| c.expires)
                            .map(|e| (((e - now) + 999) / 1000) as i32)
                            .map(|left| left.to_be_bytes().to_vec()),
                        Projection::Constant(v) => v.clone(),
                    })
                    .collect();
                rows.push(out);
                returned += 1;
                last = Some((key.clone(), row.ck.clone()));
            }
        }
        if count {
            return Ok(Outcome::Rows {
                specs,
                rows: vec![vec![Some(counted.to_be_bytes().to_vec())]],
                paging_state: None,
            });
        }
        let paging_state = match (more, last) {
            (true, Some((partition, ck))) => Some(
                PagePosition {
                    partition,
                    ck,
                    returned,
                }
                .encode(),
            ),
            _ => None,
        };
        Ok(Outcome::Rows {
            specs,
            rows,
            paging_state,
        })
    }

    fn keyspace_ddl(&mut self, stmt: &Statement) -> Result<Outcome, CqlError> {
        match stmt {
            Statement::CreateKeyspace {
                name,
                if_not_exists,
                replication,
                durable_writes,
                tablets,
            } => {
                if tablets.is_some() && self.flavor == Flavor::Cassandra4 {
                    return Err(CqlError::new(
                        ErrorCode::Syntax,
                        "Unknown property 'tablets'",
                    ));
                }
                if self.keyspaces.contains_key(name) {
                    if *if_not_exists {
                        return Ok(Outcome::Void);
                    }
                    let mut e = CqlError::new(
                        ErrorCode::AlreadyExists,
                        format!("Keyspace {name} already exists"),
                    );
                    e.already = Some((name.clone(), String::new()));
                    return Err(e);
                }
                if name.len() > 48 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(CqlError::invalid(format!(
                        "Keyspace name must not be empty, more than 48 characters long, or contain non-alphanumeric-underscore characters (got \"{name}\")"
                    )));
                }
                let mut repl = replication.clone();
                let Some(class) = repl.iter_mut().find(|(k, _)| k == "class") else {
                    return Err(CqlError::new(
                        ErrorCode::Invalid,
                        "Missing replication strategy class",
                    ));
                };
                let short = class.1.rsplit('.').next().unwrap_or_default().to_string();
                match short.as_str() {
                    "SimpleStrategy" => {
                        if !replication.iter().any(|(k, _)| k == "replication_factor") {
                            return Err(CqlError::invalid(
                                "SimpleStrategy requires a replication_factor strategy option.",
                            ));
                        }
                    }
                    "NetworkTopologyStrategy" => {}
                    other => {
                        return Err(CqlError::invalid(format!(
                            "Unable to find replication strategy class '{other}'"
                        )))
                    }
                }
                class.1 = format!("org.apache.cassandra.locator.{short}");
                // ScyllaDB 6 creates a NetworkTopologyStrategy keyspace with tablets unless
                // `tablets = {'enabled': false}` says otherwise ("The user has to enable tablets
                // by default for all new keyspaces (that use the NetworkTopologyStrategy) and
                // then actively opt-out to use vnodes": scylladb/scylladb#20729; ScyllaDB Cloud,
                // Standard Clusters: "When you CREATE a keyspace, it has tablets enabled by
                // default. To use vnodes-based data replication, you must explicitly disable
                // tablets"). Other strategies get vnodes, as in ScyllaDB 6.0 to 6.2.
                let with_tablets = self.flavor == Flavor::Scylla6
                    && short == "NetworkTopologyStrategy"
                    && *tablets != Some(false);
                if *tablets == Some(true) && short != "NetworkTopologyStrategy" {
                    return Err(CqlError::new(
                        ErrorCode::Invalid,
                        format!(
                            "Tablets are not supported with {short}: use NetworkTopologyStrategy"
                        ),
                    ));
                }
                self.keyspaces.insert(
                    name.clone(),
                    Keyspace {
                        replication: repl,
                        durable_writes: *durable_writes,
                        tablets: with_tablets,
                        tables: BTreeMap::new(),
                    },
                );
                self.schema_changed();
                Ok(Outcome::SchemaChange {
                    change: "CREATED",
                    target: "KEYSPACE",
                    keyspace: name.clone(),
                    table: None,
                })
            }
            Statement::DropKeyspace { name, if_exists } => {
                if is_system(name) {
                    return Err(CqlError::invalid(format!(
                        "system keyspace {name} is not user-modifiable"
                    )));
                }
                if self.keyspaces.remove(name).is_none() {
                    if *if_exists {
                        return Ok(Outcome::Void);
                    }
                    return Err(CqlError::invalid(format!(
                        "Keyspace '{name}' doesn't exist"
                    )));
                }
                self.schema_changed();
                Ok(Outcome::SchemaChange {
                    change: "DROPPED",
                    target: "KEYSPACE",
                    keyspace: name.clone(),
                    table: None,
                })
            }
            _ => unreachable!("keyspace_ddl() is called for keyspace statements"),
        }
    }

    fn create_table(
        &mut self,
        stmt: &Statement,
        current: Option<&str>,
        system: bool,
    ) -> Result<Outcome, CqlError> {
        let Statement::CreateTable {
            table,
            if_not_exists,
            columns,
            partition_key,
            clustering,
            order,
            comment,
            default_ttl,
        } = stmt
        else {
            unreachable!("create_table() is called for CREATE TABLE");
        };
        let ks = self.keyspace_of(table, current)?.to_string();
        if is_system(&ks) && !system {
            return Err(CqlError::invalid(format!(
                "system keyspace {ks} is not user-modifiable"
            )));
        }
        let Some(keyspace) = self.keyspaces.get(&ks) else {
            return Err(CqlError::invalid(format!("Keyspace '{ks}' does not exist")));
        };
        if keyspace.tables.contains_key(&table.table) {
            if *if_not_exists {
                return Ok(Outcome::Void);
            }
            let mut e = CqlError::new(
                ErrorCode::AlreadyExists,
                format!("Object {ks}.{} already exists", table.table),
            );
            e.already = Some((ks, table.table.clone()));
            return Err(e);
        }
        if partition_key.is_empty() {
            return Err(CqlError::invalid(
                "No PRIMARY KEY specifed (exactly one required)",
            ));
        }
        // Cassandra's `TableParams.validate`.
        if *default_ttl < 0 {
            return Err(CqlError::new(
                ErrorCode::Syntax,
                format!(
                    "default_time_to_live must be greater than or equal to 0 (got {default_ttl})"
                ),
            ));
        }
        if *default_ttl > MAX_TTL {
            return Err(CqlError::new(
                ErrorCode::Syntax,
                format!(
                    "default_time_to_live must be less than or equal to {MAX_TTL} (got {default_ttl})"
                ),
            ));
        }
        let find = |n: &str| columns.iter().find(|(c, _)| c == n).map(|(_, t)| t.clone());
        for (i, (c, _)) in columns.iter().enumerate() {
            if columns[..i].iter().any(|(d, _)| d == c) {
                return Err(CqlError::invalid(format!(
                    "Multiple definition of identifier {c}"
                )));
            }
        }
        let mut cols = Vec::new();
        for (p, name) in partition_key.iter().enumerate() {
            let ty = find(name).ok_or_else(|| {
                CqlError::invalid(format!(
                    "Unknown definition {name} referenced in PRIMARY KEY"
                ))
            })?;
            if ty.is_collection() && !system {
                return Err(CqlError::invalid(format!(
                    "Invalid non-frozen collection type for PRIMARY KEY component {name}"
                )));
            }
            cols.push(Column {
                name: name.clone(),
                ty,
                kind: Kind::PartitionKey(p),
            });
        }
        if !order.is_empty() {
            let names: Vec<&String> = order.iter().map(|(c, _)| c).collect();
            let expected: Vec<&String> = clustering.iter().take(names.len()).collect();
            if names != expected {
                return Err(CqlError::invalid(
                    "Only clustering key columns can be defined in CLUSTERING ORDER directive, in the order of the PRIMARY KEY",
                ));
            }
        }
        for (p, name) in clustering.iter().enumerate() {
            let ty = find(name).ok_or_else(|| {
                CqlError::invalid(format!(
                    "Unknown definition {name} referenced in PRIMARY KEY"
                ))
            })?;
            if ty.is_collection() && !system {
                return Err(CqlError::invalid(format!(
                    "Invalid non-frozen collection type for PRIMARY KEY component {name}"
                )));
            }
            let desc = order.get(p).is_some_and(|(_, d)| *d);
            cols.push(Column {
                name: name.clone(),
                ty,
                kind: Kind::Clustering(p, desc),
            });
        }
        let mut regular: Vec<Column> = columns
            .iter()
            .filter(|(c, _)| !partition_key.contains(c) && !clustering.contains(c))
            .map(|(c, t)| Column {
                name: c.clone(),
                ty: t.clone(),
                kind: Kind::Regular,
            })
            .collect();
        regular.sort_by(|a, b| a.name.cmp(&b.name));
        cols.extend(regular);
        let def = TableDef {
            keyspace: ks.clone(),
            name: table.table.clone(),
            columns: cols,
            pk_len: partition_key.len(),
            ck_len: clustering.len(),
            id: random_uuid(),
            comment: comment.clone(),
            default_ttl: *default_ttl,
        };
        self.keyspaces
            .get_mut(&ks)
            .expect("checked above")
            .tables
            .insert(
                table.table.clone(),
                Table {
                    def,
                    partitions: BTreeMap::new(),
                },
            );
        if !system {
            self.schema_changed();
        }
        Ok(Outcome::SchemaChange {
            change: "CREATED",
            target: "TABLE",
            keyspace: ks,
            table: Some(table.table.clone()),
        })
    }

    /// `ALTER TABLE ... ADD column type`: the column joins the regular columns (in name order,
    /// as `SELECT *` lists them), null in every row stored. An existing column is refused with
    /// the server's message (Cassandra 4.0 `AlterTableStatement.AddColumns`: "Column with name
    /// '%s' already exists"; ScyllaDB, Cassandra 3's wording: "Invalid column name %s because it
    /// conflicts with an existing column", or "... with a PRIMARY KEY part"). Statements
    /// prepared on the table are forgotten, as Cassandra evicts them when a table changes, so
    /// clients prepare them again against the new columns.
    fn alter_table_add(
        &mut self,
        table: &TableRef,
        column: &str,
        ty: &CqlType,
        current: Option<&str>,
    ) -> Result<Outcome, CqlError> {
        let ks = self.keyspace_of(table, current)?.to_string();
        if is_system(&ks) {
            return Err(CqlError::invalid(format!(
                "system keyspace {ks} is not user-modifiable"
            )));
        }
        let flavor = self.flavor;
        let Some(keyspace) = self.keyspaces.get_mut(&ks) else {
            return Err(CqlError::invalid(format!("Keyspace '{ks}' does not exist")));
        };
        let Some(t) = keyspace.tables.get_mut(&table.table) else {
            return Err(CqlError::invalid(format!(
                "Table '{ks}.{}' doesn't exist",
                table.table
            )));
        };
        if let Some(existing) = t.def.columns.iter().find(|c| c.name == column) {
            return Err(CqlError::invalid(match flavor {
                Flavor::Cassandra4 => format!("Column with name '{column}' already exists"),
                Flavor::Scylla6 if existing.kind != Kind::Regular => format!(
                    "Invalid column name {column} because it conflicts with a PRIMARY KEY part"
                ),
                Flavor::Scylla6 => format!(
                    "Invalid column name {column} because it conflicts with an existing column"
                ),
            }));
        }
        let keys = t.def.pk_len + t.def.ck_len;
        let at = keys
            + t.def.columns[keys..]
                .iter()
                .filter(|c| c.name.as_str() < column)
                .count();
        t.def.columns.insert(
            at,
            Column {
                name: column.to_string(),
                ty: ty.clone(),
                kind: Kind::Regular,
            },
        );
        // Cells are held by column index: those at and after the new column move one up.
        for partition in t.partitions.values_mut() {
            for row in &mut partition.rows {
                row.cells = std::mem::take(&mut row.cells)
                    .into_iter()
                    .map(|(i, cell)| (if i >= at { i + 1 } else { i }, cell))
                    .collect();
            }
        }
        let table_name = table.table.clone();
        self.prepared.retain(|_, p| {
            p.statement.table().is_none_or(|t| {
                t.table != table_name
                    || t.keyspace.as_deref().or(p.keyspace.as_deref()) != Some(&ks)
            })
        });
        self.schema_changed();
        Ok(Outcome::SchemaChange {
            change: "UPDATED",
            target: "TABLE",
            keyspace: ks,
            table: Some(table_name),
        })
    }

    fn schema_changed(&mut self) {
        self.schema_version = random_uuid();
        self.refresh_system_tables();
    }

    /// Rewrites `system.local` and the `system_schema` tables from the catalog.
    fn refresh_system_tables(&mut self) {
        let id = &self.identity;
        let local = vec![
            ("key", text("local")),
            ("bootstrapped", text("COMPLETED")),
            ("broadcast_address", inet(id.address)),
            ("broadcast_port", int(7000)),
            ("cluster_name", text(&id.cluster_name)),
            ("cql_version", text("3.4.5")),
            ("data_center", text("datacenter1")),
            ("gossip_generation", int(1)),
            ("host_id", Some(id.host_id.to_vec())),
            ("listen_address", inet(id.address)),
            ("listen_port", int(7000)),
            ("native_protocol_version", text("4")),
            (
                "partitioner",
                text("org.apache.cassandra.dht.Murmur3Partitioner"),
            ),
            ("rack", text("rack1")),
            (
                "release_version",
                text(match self.flavor {
                    Flavor::Cassandra4 => "4.0.11",
                    // ScyllaDB reports the Cassandra version it is compatible with here.
                    Flavor::Scylla6 => "3.0.8",
                }),
            ),
            ("rpc_address", inet(id.address)),
            ("rpc_port", int(i32::from(id.port))),
            ("schema_version", Some(self.schema_version.to_vec())),
            ("tokens", text_set(&[&id.token.to_string()])),
        ];
        let mut schema_rows: Vec<(&str, Cells<'_>)> = Vec::new();
        for (ks_name, ks) in &self.keyspaces {
            let repl: Vec<(&str, &str)> = ks
                .replication
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            schema_rows.push((
                "keyspaces",
                vec![
                    ("keyspace_name", text(ks_name)),
                    ("durable_writes", Some(vec![u8::from(ks.durable_writes)])),
                    ("replication", text_map(&repl)),
                ],
            ));
            if ks.tablets {
                schema_rows.push((
                    "scylla_keyspaces",
                    vec![
                        ("keyspace_name", text(ks_name)),
                        ("initial_tablets", int(0)),
                    ],
                ));
            }
            for (t_name, t) in &ks.tables {
                let d = &t.def;
                schema_rows.push((
                    "tables",
                    vec![
                        ("keyspace_name", text(ks_name)),
                        ("table_name", text(t_name)),
                        ("bloom_filter_fp_chance", Some(0.01f64.to_be_bytes().to_vec())),
                        ("caching", text_map(&[("keys", "ALL"), ("rows_per_partition", "NONE")])),
                        ("cdc", Some(vec![0])),
                        ("comment", text(&d.comment)),
                        (
                            "compaction",
                            text_map(&[
                                ("class", "org.apache.cassandra.db.compaction.SizeTieredCompactionStrategy"),
                                ("max_threshold", "32"),
                                ("min_threshold", "4"),
                            ]),
                        ),
                        (
                            "compression",
                            text_map(&[
                                ("chunk_length_in_kb", "16"),
                                ("class", "org.apache.cassandra.io.compress.LZ4Compressor"),
                            ]),
                        ),
                        ("crc_check_chance", Some(1.0f64.to_be_bytes().to_vec())),
                        ("default_time_to_live", int(d.default_ttl)),
                        ("extensions", Some(encode_collection(std::iter::empty::<Vec<&[u8]>>()))),
                        ("flags", text_set(&["compound"])),
                        ("gc_grace_seconds", int(864_000)),
                        ("id", Some(d.id.to_vec())),
                        ("max_index_interval", int(2048)),
                        ("memtable_flush_period_in_ms", int(0)),
                        ("min_index_interval", int(128)),
                        ("read_repair", text("BLOCKING")),
                        ("speculative_retry", text("99p")),
                    ],
                ));
                for c in &d.columns {
                    let (kind, position, order) = match c.kind {
                        Kind::PartitionKey(p) => ("partition_key", p as i32, "none"),
                        Kind::Clustering(p, desc) => {
                            ("clustering", p as i32, if desc { "desc" } else { "asc" })
                        }
                        Kind::Regular => ("regular", -1, "none"),
                    };
                    schema_rows.push((
                        "columns",
                        vec![
                            ("keyspace_name", text(ks_name)),
                            ("table_name", text(t_name)),
                            ("column_name", text(&c.name)),
                            ("clustering_order", text(order)),
                            ("column_name_bytes", text(&c.name)),
                            ("kind", text(kind)),
                            ("position", int(position)),
                            ("type", text(&c.ty.to_string())),
                        ],
                    ));
                }
            }
        }
        let system = self
            .keyspaces
            .get_mut("system")
            .expect("system keyspace exists");
        let local_table = system.tables.get_mut("local").expect("system.local exists");
        local_table.partitions.clear();
        put_system_row(local_table, local);
        if let Some(versions) = system.tables.get_mut("versions") {
            versions.partitions.clear();
            put_system_row(
                versions,
                vec![
                    ("key", text("local")),
                    ("build_id", text("")),
                    ("build_mode", text("release")),
                    ("version", text("6.2.0")),
                ],
            );
        }
        let schema = self
            .keyspaces
            .get_mut("system_schema")
            .expect("system_schema keyspace exists");
        for t in schema.tables.values_mut() {
            t.partitions.clear();
        }
        for (table, cells) in schema_rows {
            let t = schema
                .tables
                .get_mut(table)
                .expect("system_schema table exists");
            put_system_row(t, cells);
        }
    }
}

/// A system table row: (column, serialized value).
type Cells<'a> = Vec<(&'a str, Option<Vec<u8>>)>;

/// Parses with parser errors mapped to protocol errors.
pub(crate) fn parse(query: &str) -> Result<(Statement, usize), CqlError> {
    parser::parse(query).map_err(|e| {
        CqlError::new(
            if e.syntax {
                ErrorCode::Syntax
            } else {
                ErrorCode::Invalid
            },
            e.message,
        )
    })
}

fn applied(def: &TableDef, yes: bool) -> Outcome {
    Outcome::Rows {
        specs: vec![def.spec("[applied]", CqlType::Boolean)],
        rows: vec![vec![Some(vec![u8::from(yes)])]],
        paging_state: None,
    }
}

/// Checks an `IF EXISTS` or `IF col = value AND ...` clause against the row at a primary key
/// at `now`: whether it holds, and the answer of the statement.
///
/// A missing row or cell equals null: `IF r = null` holds when the row is missing or `r` is
/// null, and `IF r = 5` does not hold on a missing row. Cassandra's own tests show both
/// (`InsertUpdateIfConditionTest.testConditionalUpdate`: on an empty table `UPDATE ... IF v1 = 4`
/// answers `[applied] = false`, and `DELETE ... IF v1 IN (null)` answers `true`; on a row whose
/// `v3` is null, `DELETE v1 ... IF v3 = null` answers `true`), as `ColumnCondition` compares a
/// missing cell as null.
fn check_condition(
    flavor: Flavor,
    table: &Table,
    pk: &[Vec<u8>],
    ck: &[Vec<u8>],
    if_exists: bool,
    wanted: &[(usize, Option<Vec<u8>>)],
    now: i64,
) -> (bool, Outcome) {
    let def = &table.def;
    let row = read_row(table, pk, ck, now);
    if if_exists {
        // IF EXISTS answers with every column of the row (ScyllaDB's result set; Cassandra
        // answers `[applied]` alone, the row being missing when it fails).
        let holds = row.is_some();
        let all: Vec<usize> = (0..def.columns.len()).collect();
        let result = match flavor {
            Flavor::Cassandra4 => applied(def, holds),
            Flavor::Scylla6 => cas_result(flavor, def, &all, row, holds),
        };
        return (holds, result);
    }
    let holds = wanted.iter().all(|(idx, want)| {
        let have = row.as_ref().and_then(|r| r[*idx].as_ref());
        match (have, want) {
            (None, None) => true,
            (Some(a), Some(b)) => def.columns[*idx].ty.compare(a, b).is_eq(),
            _ => false,
        }
    });
    let columns: Vec<usize> = wanted.iter().map(|(idx, _)| *idx).collect();
    (holds, cas_result(flavor, def, &columns, row, holds))
}

/// The answer of a lightweight transaction: `[applied]`, then the current values of `columns`
/// (indexes into the table's columns, answered in table order, each once) the way the server
/// played answers:
///
/// * Cassandra answers `[applied] = true` alone; when the condition fails it adds the current
///   values of the columns, unless the row is missing, when `[applied] = false` is alone
///   (`InsertUpdateIfConditionTest`: `UPDATE ... IF v1 = ?` answers `row(false)` on an empty
///   table and `row(false, 2)` on a row with `v1 = 2`; `INSERT ... IF NOT EXISTS` answers the
///   whole row; the Python driver manual, "Lightweight Transactions", describes the same
///   columns).
/// * ScyllaDB "always returns the old version of the row, regardless of whether the condition
///   is true or not", so "result set metadata doesn't change from execution to execution"
///   (ScyllaDB Knowledge Base, "How does ScyllaDB LWT Differ from Apache Cassandra ?"): the
///   same columns whatever the outcome, null when the row is missing (ScyllaDB's
///   `modification_statement::build_cas_result_set_metadata` picks the condition's columns, or
///   every column for IF EXISTS and IF NOT EXISTS).
fn cas_result(
    flavor: Flavor,
    def: &TableDef,
    columns: &[usize],
    row: Option<Vec<Option<Vec<u8>>>>,
    holds: bool,
) -> Outcome {
    let with_values = match flavor {
        Flavor::Cassandra4 => !holds && row.is_some(),
        Flavor::Scylla6 => true,
    };
    if !with_values {
        return applied(def, holds);
    }
    let mut specs = vec![def.spec("[applied]", CqlType::Boolean)];
    let mut cells = vec![Some(vec![u8::from(holds)])];
    for (idx, c) in def.columns.iter().enumerate() {
        if columns.contains(&idx) {
            specs.push(def.spec(&c.name, c.ty.clone()));
            cells.push(row.as_ref().and_then(|r| r[idx].clone()));
        }
    }
    Outcome::Rows {
        specs,
        rows: vec![cells],
        paging_state: None,
    }
}

/// Refuses `USING TIMESTAMP` on a lightweight transaction: a conditional write is timestamped
/// by its Paxos ballot. Cassandra and ScyllaDB answer "Cannot provide custom timestamp for
/// conditional updates" for a statement and "Cannot provide custom timestamp for conditional
/// BATCH" for a batch (0x2200, Cassandra `ModificationStatement` and `BatchStatement`; the
/// DataStax CQL reference, BATCH, shows the second for a conditional batch with `USING
/// TIMESTAMP`).
fn check_lwt_timestamp(stmt: &Statement) -> Result<(), CqlError> {
    match stmt {
        Statement::Batch {
            statements,
            timestamp,
            ..
        } => {
            if stmt.is_conditional() && timestamp.is_some() {
                return Err(CqlError::invalid(
                    "Cannot provide custom timestamp for conditional BATCH",
                ));
            }
            statements.iter().try_for_each(check_lwt_timestamp)
        }
        s if s.is_conditional() && s.using_timestamp().is_some() => Err(CqlError::invalid(
            "Cannot provide custom timestamp for conditional updates",
        )),
        _ => Ok(()),
    }
}

/// The bytes a written value adds to a mutation.
fn value_len(v: &Value) -> usize {
    match v {
        Value::Set(b) => b.len(),
        Value::Null | Value::Unset => 0,
    }
}

/// The live row at a primary key at `now` (milliseconds), as `SELECT *` cells.
fn read_row(
    table: &Table,
    pk: &[Vec<u8>],
    ck: &[Vec<u8>],
    now: i64,
) -> Option<Vec<Option<Vec<u8>>>> {
    let part = table.partitions.get(&partition_key_bytes(pk))?;
    let i = part
        .rows
        .binary_search_by(|r| table.def.cmp_ck(&r.ck, ck))
        .ok()?;
    let row = &part.rows[i];
    if !row.is_live(now) {
        return None;
    }
    Some(
        table
            .def
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| match c.kind {
                Kind::PartitionKey(k) => Some(pk[k].clone()),
                Kind::Clustering(k, _) => Some(ck[k].clone()),
                Kind::Regular => row.cells.get(&i).and_then(|c| c.live(now).cloned()),
            })
            .collect(),
    )
}

/// The row at a primary key, created if missing; `None` when a deletion newer than `ts`
/// shadows the write.
fn upsert_row<'a>(
    table: &'a mut Table,
    pk: &[Vec<u8>],
    ck: &[Vec<u8>],
    ts: i64,
) -> Option<&'a mut Row> {
    let def = &table.def;
    let part = table
        .partitions
        .entry(partition_key_bytes(pk))
        .or_insert_with(|| Partition {
            pk: pk.to_vec(),
            ..Partition::default()
        });
    if part.deleted_at.is_some_and(|d| ts <= d) {
        return None;
    }
    let i = match part.rows.binary_search_by(|r| def.cmp_ck(&r.ck, ck)) {
        Ok(i) => i,
        Err(i) => {
            part.rows.insert(
                i,
                Row {
                    ck: ck.to_vec(),
                    ..Row::default()
                },
            );
            i
        }
    };
    let row = &mut part.rows[i];
    if row.deleted_at.is_some_and(|d| ts <= d) {
        return None;
    }
    Some(row)
}

/// Last-write-wins on one cell; an unset value leaves it alone. `expires` is when a value
/// written with a TTL expires (milliseconds); a null written is a tombstone and never expires.
/// At equal timestamps a tombstone (or a cell expired at `now`) beats a live cell, and of two
/// live cells the larger value wins.
fn set_cell(row: &mut Row, idx: usize, v: Value, ts: i64, expires: Option<i64>, now: i64) {
    let value = match v {
        Value::Unset => return,
        Value::Null => None,
        Value::Set(b) => Some(b),
    };
    let expires = if value.is_some() { expires } else { None };
    let wins = match row.cells.get(&idx) {
        None => true,
        Some(old) => {
            let old_live = old.live(now);
            ts > old.ts
                || ts == old.ts
                    && (value.is_none() || (old_live.is_some() && value.as_ref() > old_live))
        }
    };
    if wins {
        row.cells.insert(idx, Cell { value, ts, expires });
    }
}

/// One row of a DESCRIBE answer.
fn element_row(keyspace: &str, kind: &str, name: &str, create: &str) -> Vec<Option<Vec<u8>>> {
    vec![text(keyspace), text(kind), text(name), text(create)]
}

/// A name as CQL must spell it: as is when it is a lower-case identifier, else quoted.
fn cql_name(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

fn cql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The CREATE KEYSPACE statement that recreates `ks`.
fn create_keyspace(name: &str, ks: &Keyspace) -> String {
    let replication: Vec<String> = ks
        .replication
        .iter()
        .map(|(k, v)| format!("{}: {}", cql_string(k), cql_string(v)))
        .collect();
    format!(
        "CREATE KEYSPACE {} WITH replication = {{{}}} AND durable_writes = {};",
        cql_name(name),
        replication.join(", "),
        ks.durable_writes
    )
}

/// The CREATE TABLE statement that recreates a table (the options the node models only).
fn create_table(def: &TableDef) -> String {
    let mut out = format!(
        "CREATE TABLE {}.{} (\n",
        cql_name(&def.keyspace),
        cql_name(&def.name)
    );
    for c in &def.columns {
        out.push_str(&format!("    {} {},\n", cql_name(&c.name), c.ty));
    }
    let pk: Vec<String> = def.columns[..def.pk_len]
        .iter()
        .map(|c| cql_name(&c.name))
        .collect();
    let ck: Vec<&Column> = def.columns[def.pk_len..def.pk_len + def.ck_len]
        .iter()
        .collect();
    let mut key = if pk.len() == 1 {
        pk[0].clone()
    } else {
        format!("({})", pk.join(", "))
    };
    for c in &ck {
        key.push_str(", ");
        key.push_str(&cql_name(&c.name));
    }
    out.push_str(&format!("    PRIMARY KEY ({key})\n)"));
    let mut options = Vec::new();
    if !ck.is_empty() {
        let order: Vec<String> = ck
            .iter()
            .map(|c| {
                let desc = matches!(c.kind, Kind::Clustering(_, true));
                format!(
                    "{} {}",
                    cql_name(&c.name),
                    if desc { "DESC" } else { "ASC" }
                )
            })
            .collect();
        options.push(format!("CLUSTERING ORDER BY ({})", order.join(", ")));
    }
    if !def.comment.is_empty() {
        options.push(format!("comment = {}", cql_string(&def.comment)));
    }
    if def.default_ttl != 0 {
        options.push(format!("default_time_to_live = {}", def.default_ttl));
    }
    if !options.is_empty() {
        out.push_str(" WITH ");
        out.push_str(&options.join("\n    AND "));
    }
    out.push(';');
    out
}

fn put_system_row(t: &mut Table, cells: Cells<'_>) {
    let def = t.def.clone();
    let mut pk = vec![Vec::new(); def.pk_len];
    let mut ck = vec![Vec::new(); def.ck_len];
    let mut regular = Vec::new();
    for (name, v) in cells {
        let i = def.column(name).expect("system column exists");
        match def.columns[i].kind {
            Kind::PartitionKey(p) => pk[p] = v.unwrap_or_default(),
            Kind::Clustering(p, _) => ck[p] = v.unwrap_or_default(),
            Kind::Regular => regular.push((i, v)),
        }
    }
    if let Some(row) = upsert_row(t, &pk, &ck, 0) {
        row.marker = Some(0);
        for (i, v) in regular {
            set_cell(row, i, v.map_or(Value::Null, Value::Set), 0, None, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(flavor: Flavor) -> Engine {
        let identity = Identity {
            address: IpAddr::from([127, 0, 0, 1]),
            port: 9042,
            host_id: random_uuid(),
            cluster_name: "test".to_string(),
            token: 0,
        };
        let mut e = Engine::new(identity, flavor);
        run(
            &mut e,
            "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        );
        e
    }

    fn run_with(e: &mut Engine, cql: &str, values: &[Value]) -> Result<Outcome, CqlError> {
        let (stmt, markers) = parse(cql)?;
        assert_eq!(markers, values.len(), "{cql}");
        let exec = Exec {
            keyspace: Some("ks"),
            ..Exec::default()
        };
        e.execute(&stmt, values, exec)
    }

    fn run(e: &mut Engine, cql: &str) -> Outcome {
        run_with(e, cql, &[]).unwrap_or_else(|err| panic!("{cql}: {}", err.message))
    }

    /// Result rows: cells, row by row.
    type Rows = Vec<Vec<Option<Vec<u8>>>>;

    /// (column names, rows) of a Rows outcome.
    fn rows(outcome: Outcome) -> (Vec<String>, Rows) {
        match outcome {
            Outcome::Rows { specs, rows, .. } => {
                (specs.into_iter().map(|s| s.name).collect(), rows)
            }
            other => panic!("not rows: {other:?}"),
        }
    }

    fn int(v: i32) -> Option<Vec<u8>> {
        Some(v.to_be_bytes().to_vec())
    }

    #[test]
    fn dates_come_from_literals_and_functions_and_key_partitions() {
        let mut e = node(Flavor::Cassandra4);
        run(
            &mut e,
            "CREATE TABLE changes (day date, bucket int, changed_at timestamp, key text, \
             revision int, PRIMARY KEY ((day, bucket), changed_at, key))",
        );
        run(
            &mut e,
            "INSERT INTO changes (day, bucket, changed_at, key, revision) \
             VALUES (currentDate(), 3, currentTimestamp(), 'paris', 1)",
        );
        run(
            &mut e,
            "INSERT INTO changes (day, bucket, changed_at, key, revision) \
             VALUES ('2024-03-01', 3, '2024-03-01 10:00:00', 'lyon', 2)",
        );
        let today = date_of_millis(now_millis()).to_be_bytes().to_vec();
        let (_, found) = rows(
            run_with(
                &mut e,
                "SELECT key, changed_at, revision FROM changes WHERE day = ? AND bucket = ? \
                 AND changed_at > ?",
                &[
                    Value::Set(today.clone()),
                    Value::Set(3i32.to_be_bytes().to_vec()),
                    Value::Set(0i64.to_be_bytes().to_vec()),
                ],
            )
            .unwrap(),
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0][0].as_deref(), Some(&b"paris"[..]));
        let (_, found) = rows(run(
            &mut e,
            "SELECT key FROM changes WHERE day = '2024-03-01' AND bucket = 3",
        ));
        assert_eq!(found, [[Some(b"lyon".to_vec())]]);
        // toDate of a timeuuid and of a timestamp, toTimestamp of a date.
        let (_, found) = rows(run(
            &mut e,
            "SELECT toDate(now()), toDate(currentTimestamp()), currentDate() FROM changes \
             WHERE day = '2024-03-01' AND bucket = 3",
        ));
        let d = Some(today);
        assert_eq!(found[0], [d.clone(), d.clone(), d]);
        let (_, found) = rows(run(
            &mut e,
            "SELECT toTimestamp(toDate(currentTimestamp())) FROM changes \
             WHERE day = '2024-03-01' AND bucket = 3",
        ));
        let midnight = now_millis().div_euclid(86_400_000) * 86_400_000;
        assert_eq!(found[0][0], Some(midnight.to_be_bytes().to_vec()));
        let err = run_with(
            &mut e,
            "INSERT INTO changes (day, bucket, changed_at, key) VALUES ('2024-02-30', 1, 0, 'x')",
            &[],
        )
        .unwrap_err();
        assert!(err.message.contains("2024-02-30"), "{}", err.message);
    }

    #[test]
    fn cells_with_a_ttl_expire_and_rows_without_live_cells_go() {
        let mut e = node(Flavor::Cassandra4);
        run(
            &mut e,
            "CREATE TABLE kv (k int, c int, v int, w int, PRIMARY KEY (k, c)) \
             WITH CLUSTERING ORDER BY (c DESC) AND default_time_to_live = 10",
        );
        // 1: table default (10 s); 2: USING TTL 0 overrides it; 3: UPDATE with a TTL creates
        // no row marker; 4: an INSERT without TTL keeps its marker, its v expires.
        run(&mut e, "INSERT INTO kv (k, c, v) VALUES (1, 1, 1)");
        run(
            &mut e,
            "INSERT INTO kv (k, c, v) VALUES (1, 2, 2) USING TTL 0",
        );
        run(
            &mut e,
            "UPDATE kv USING TTL 2 SET v = 3 WHERE k = 1 AND c = 3",
        );
        run(
            &mut e,
            "INSERT INTO kv (k, c, w) VALUES (1, 4, 4) USING TTL 0",
        );
        run_with(
            &mut e,
            "UPDATE kv USING TTL ? SET v = 4 WHERE k = 1 AND c = 4",
            &[Value::Set(2i32.to_be_bytes().to_vec())],
        )
        .unwrap();
        let select = "SELECT c, v, TTL(v) FROM kv WHERE k = 1";
        let (names, found) = rows(run(&mut e, select));
        assert_eq!(names, ["c", "v", "ttl(v)"]);
        assert_eq!(
            found,
            [
                [int(4), int(4), int(2)],
                [int(3), int(3), int(2)],
                [int(2), int(2), None],
                [int(1), int(1), int(10)],
            ]
        );
        e.ttl_clock_ahead = 2_000;
        let (_, found) = rows(run(&mut e, select));
        assert_eq!(
            found,
            [
                [int(4), None, None],
                [int(2), int(2), None],
                [int(1), int(1), int(8)]
            ]
        );
        e.ttl_clock_ahead = 10_000;
        let (_, found) = rows(run(&mut e, "SELECT c FROM kv WHERE k = 1"));
        assert_eq!(found, [[int(4)], [int(2)]]);
        // The row whose marker and cells expired fails IF EXISTS, as a missing row.
        let (_, found) = rows(run(
            &mut e,
            "DELETE FROM kv WHERE k = 1 AND c = 1 IF EXISTS",
        ));
        assert_eq!(found, [[Some(vec![0])]]);

        let err = run_with(
            &mut e,
            "INSERT INTO kv (k, c) VALUES (1, 9) USING TTL -1",
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err.message,
            "A TTL must be greater or equal to 0, but was -1"
        );
        let err = run_with(
            &mut e,
            "CREATE TABLE bad (k int PRIMARY KEY) WITH default_time_to_live = -5",
            &[],
        )
        .unwrap_err();
        assert!(
            err.message.contains("default_time_to_live"),
            "{}",
            err.message
        );
    }

    #[test]
    fn the_default_ttl_is_in_the_schema_and_describe() {
        let mut e = node(Flavor::Cassandra4);
        run(
            &mut e,
            "CREATE TABLE kv (k int PRIMARY KEY, v int) WITH default_time_to_live = 3600",
        );
        let (_, found) = rows(run(
            &mut e,
            "SELECT default_time_to_live FROM system_schema.tables \
             WHERE keyspace_name = 'ks' AND table_name = 'kv'",
        ));
        assert_eq!(found, [[int(3600)]]);
        let (_, found) = rows(run(&mut e, "DESCRIBE TABLE ks.kv"));
        let create = String::from_utf8(found[0][3].clone().unwrap()).unwrap();
        assert!(create.contains("default_time_to_live = 3600"), "{create}");
        let (stmt, _) = parse(&create).unwrap();
        assert!(matches!(
            stmt,
            Statement::CreateTable {
                default_ttl: 3600,
                ..
            }
        ));
    }

    #[test]
    fn alter_table_add_adds_a_null_column_and_refuses_an_existing_one() {
        for flavor in [Flavor::Cassandra4, Flavor::Scylla6] {
            let mut e = node(flavor);
            run(&mut e, "CREATE TABLE t (k int PRIMARY KEY, a int, z int)");
            run(&mut e, "INSERT INTO t (k, a, z) VALUES (1, 10, 30)");
            let (id, _) = e
                .prepare("SELECT * FROM t WHERE k = 1", Some("ks"))
                .unwrap();
            let outcome = run(&mut e, "ALTER TABLE ks.t ADD m text");
            assert!(
                matches!(
                    &outcome,
                    Outcome::SchemaChange {
                        change: "UPDATED",
                        target: "TABLE",
                        ..
                    }
                ),
                "{outcome:?}"
            );
            // The stored row keeps its cells, the new column (between a and z) is null.
            let (names, found) = rows(run(&mut e, "SELECT * FROM t WHERE k = 1"));
            assert_eq!(names, ["k", "a", "m", "z"]);
            assert_eq!(found, [[int(1), int(10), None, int(30)]]);
            run(&mut e, "UPDATE t SET m = 'x' WHERE k = 1");
            let (_, found) = rows(run(&mut e, "SELECT m, z FROM t WHERE k = 1"));
            assert_eq!(found, [[Some(b"x".to_vec()), int(30)]]);
            let (_, found) = rows(run(
                &mut e,
                "SELECT column_name FROM system_schema.columns \
                 WHERE keyspace_name = 'ks' AND table_name = 't'",
            ));
            assert!(found.contains(&vec![Some(b"m".to_vec())]), "{found:?}");
            let (_, found) = rows(run(&mut e, "DESCRIBE TABLE ks.t"));
            let create = String::from_utf8(found[0][3].clone().unwrap()).unwrap();
            assert!(create.contains("    m text,"), "{create}");
            // Statements prepared on the table are forgotten, as Cassandra evicts them.
            let err = e.prepared(&id).unwrap_err();
            assert_eq!(err.code, ErrorCode::Unprepared);

            let err = run_with(&mut e, "ALTER TABLE t ADD m bigint", &[]).unwrap_err();
            assert_eq!(err.code, ErrorCode::Invalid);
            let expected = match flavor {
                Flavor::Cassandra4 => "Column with name 'm' already exists",
                Flavor::Scylla6 => {
                    "Invalid column name m because it conflicts with an existing column"
                }
            };
            assert_eq!(err.message, expected);
            let err = run_with(&mut e, "ALTER TABLE t ADD k text", &[]).unwrap_err();
            assert_eq!(err.code, ErrorCode::Invalid, "{}", err.message);
            let err = run_with(&mut e, "ALTER TABLE nope ADD c text", &[]).unwrap_err();
            assert_eq!(err.message, "Table 'ks.nope' doesn't exist");
            let err = run_with(&mut e, "ALTER TABLE t ADD IF NOT EXISTS c text", &[]).unwrap_err();
            assert_eq!(err.code, ErrorCode::Syntax, "{}", err.message);
            let err = run_with(&mut e, "ALTER TABLE t DROP a", &[]).unwrap_err();
            assert!(err.message.contains("DROP"), "{}", err.message);
        }
    }

    #[test]
    fn null_conditions_hold_on_missing_rows_and_null_cells() {
        for flavor in [Flavor::Cassandra4, Flavor::Scylla6] {
            let mut e = node(flavor);
            run(&mut e, "CREATE TABLE t (k int PRIMARY KEY, v int, r int)");
            let update = "UPDATE t SET v = ?, r = ? WHERE k = ? IF r = ?";
            let lwt = |e: &mut Engine, v: i32, r: i32, k: i32, cond: Value| {
                let set = |x: i32| Value::Set(x.to_be_bytes().to_vec());
                rows(run_with(e, update, &[set(v), set(r), set(k), cond]).unwrap())
            };
            // A missing row: IF r = 5 does not apply, IF r = null applies.
            let (names, found) = lwt(&mut e, 1, 1, 1, Value::Set(5i32.to_be_bytes().to_vec()));
            match flavor {
                Flavor::Cassandra4 => {
                    assert_eq!(names, ["[applied]"]);
                    assert_eq!(found, [[Some(vec![0])]]);
                }
                Flavor::Scylla6 => {
                    assert_eq!(names, ["[applied]", "r"]);
                    assert_eq!(found, [[Some(vec![0]), None]]);
                }
            }
            let (_, found) = lwt(&mut e, 1, 1, 1, Value::Null);
            assert_eq!(found[0][0], Some(vec![1]), "{flavor:?}");
            // r = 1 now: IF r = null does not apply, and the answer carries r.
            let (names, found) = lwt(&mut e, 2, 2, 1, Value::Null);
            assert_eq!(names, ["[applied]", "r"]);
            assert_eq!(found, [[Some(vec![0]), int(1)]]);
            // A row with a null r (a primary-key-only INSERT writes a row marker).
            run(&mut e, "INSERT INTO t (k) VALUES (2)");
            let (_, found) = rows(run(&mut e, "SELECT k, v FROM t WHERE k = 2"));
            assert_eq!(found, [[int(2), None]]);
            let (names, found) = lwt(&mut e, 7, 7, 2, Value::Null);
            assert_eq!(found[0][0], Some(vec![1]));
            match flavor {
                Flavor::Cassandra4 => assert_eq!(names, ["[applied]"]),
                Flavor::Scylla6 => assert_eq!(found, [[Some(vec![1]), None]]),
            }
            let (_, found) = rows(run(&mut e, "SELECT v, r FROM t WHERE k = 2"));
            assert_eq!(found, [[int(7), int(7)]]);
            // ScyllaDB reports the answer's columns when the statement is prepared.
            let (_, prepared) = e.prepare(update, Some("ks")).unwrap();
            let names: Vec<String> = prepared.result_specs.into_iter().map(|s| s.name).collect();
            match flavor {
                Flavor::Cassandra4 => assert!(names.is_empty()),
                Flavor::Scylla6 => assert_eq!(names, ["[applied]", "r"]),
            }
        }
    }

    #[test]
    fn blob_literals_and_large_blobs_round_trip() {
        let mut e = node(Flavor::Cassandra4);
        run(&mut e, "CREATE TABLE b (k int PRIMARY KEY, data blob)");
        run(&mut e, "INSERT INTO b (k, data) VALUES (1, 0xCafe00)");
        run(&mut e, "INSERT INTO b (k, data) VALUES (2, 0x)");
        let big = vec![0xA5u8; 1024 * 1024];
        run_with(
            &mut e,
            "INSERT INTO b (k, data) VALUES (3, ?)",
            &[Value::Set(big.clone())],
        )
        .unwrap();
        let (_, found) = rows(run(&mut e, "SELECT data FROM b WHERE k IN (1, 2, 3)"));
        assert_eq!(
            found,
            [[Some(vec![0xca, 0xfe, 0])], [Some(vec![])], [Some(big)]]
        );
    }
}
