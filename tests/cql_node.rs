//! Tests of the CQL test node (`keyscore_testkit::cqlnode`), driven by unmodified clients: the
//! `scylla` Rust driver, the Python `cassandra-driver` and `cqlsh`.
//!
//! The Python clients are found in `$KEYSCORE_PYTHON_BIN` (a virtualenv's `bin` directory with
//! `pip install cassandra-driver cqlsh`), or on `PATH`; the tests that need them fail, naming
//! the variable, when they are missing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::TryStreamExt;
use keyscore_testkit::cqlnode::{self, CqlTestNode, Fault};
use scylla::client::session::Session;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::unprepared::Statement;
use scylla::value::{CqlDate, CqlTimestamp};

/// Runs `cql/*.cql` in order, as an operator would with `cqlsh -f` (and as `keyscore init` does,
/// which runs an `ALTER TABLE ... ADD` only when its column is missing): on a new keyspace the
/// CREATE statements already have the columns `070_added_columns.cql` adds, so the server
/// refuses those ALTERs, naming the column, and the table stays as it is.
async fn apply_schema(session: &Session) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cql");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("cql/ exists")
        .map(|e| e.expect("cql/ is readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cql"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no schema files in {}", dir.display());
    for f in files {
        let text = std::fs::read_to_string(&f).expect("schema file is readable");
        for stmt in cqlnode::split_script(&text) {
            match session.query_unpaged(stmt.as_str(), &[]).await {
                Ok(_) => {}
                Err(e)
                    if stmt.starts_with("ALTER TABLE")
                        && e.to_string().contains("already exists") => {}
                Err(e) => panic!("{} failed on the test node: {e}\n{stmt}", f.display()),
            }
        }
    }
}

async fn node_with_schema() -> (CqlTestNode, Session) {
    let node = CqlTestNode::start().await;
    let session = node.session().await;
    apply_schema(&session).await;
    (node, session)
}

/// The database error behind a failed request, if the node answered with one.
fn db_error(err: &ExecutionError) -> Option<(&DbError, &str)> {
    match err {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, msg)) => {
            Some((db, msg.as_str()))
        }
        _ => None,
    }
}

/// 2024-03-01 as a CQL `date`: days since 1970-01-01 (19,783) plus 2^31.
const MARCH_1_2024: CqlDate = CqlDate((1 << 31) + 19_783);

const INSERT_VERSION: &str = "INSERT INTO keyscore.model_versions (key, version, spec, author, created_at) VALUES (?, ?, ?, ?, ?)";

#[tokio::test]
async fn driver_metadata_describes_the_schema() {
    let (_node, session) = node_with_schema().await;
    session.refresh_metadata().await.expect("metadata refresh");
    let state = session.get_cluster_state();
    let ks = state
        .get_keyspace("keyscore")
        .expect("keyspace in metadata");
    let mv = &ks.tables["model_versions"];
    assert_eq!(mv.partition_key, ["key"]);
    assert_eq!(mv.clustering_key, ["version"]);
    assert_eq!(mv.columns.len(), 10);
    let changes = &ks.tables["model_changes"];
    assert_eq!(changes.partition_key, ["day", "bucket"]);
    assert_eq!(changes.clustering_key, ["changed_at", "key", "revision"]);
    assert_eq!(state.get_nodes_info().len(), 1, "one node, no peers");
}

#[tokio::test]
async fn prepared_and_simple_statements_round_trip() {
    let (_node, session) = node_with_schema().await;
    let insert = session.prepare(INSERT_VERSION).await.unwrap();
    let pk: Vec<u16> = insert
        .get_variable_pk_indexes()
        .iter()
        .map(|i| i.index)
        .collect();
    assert_eq!(pk, [0], "the partition key is bind variable 0");
    let names: Vec<String> = insert
        .get_variable_col_specs()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    assert_eq!(names, ["key", "version", "spec", "author", "created_at"]);
    for v in 1..=3i64 {
        let spec = format!("{{\"v\": {v}}}");
        session
            .execute_unpaged(&insert, ("paris", v, spec, "ana", CqlTimestamp(1_000 * v)))
            .await
            .unwrap();
    }
    session
        .query_unpaged(
            "INSERT INTO keyscore.model_versions (key, version, spec, author, created_at) \
             VALUES ('rome', 7, 'it''s json', 'bo', toTimestamp(now()))",
            &[],
        )
        .await
        .unwrap();

    // Latest version first: the clustering order is DESC.
    let latest = session
        .query_unpaged(
            "SELECT version FROM keyscore.model_versions WHERE key = ? LIMIT 1",
            ("paris",),
        )
        .await
        .unwrap();
    let (v,): (i64,) = latest.into_rows_result().unwrap().single_row().unwrap();
    assert_eq!(v, 3);

    let get_spec = session
        .prepare("SELECT spec FROM keyscore.model_versions WHERE key = ? AND version = ?")
        .await
        .unwrap();
    let rows = session
        .execute_unpaged(&get_spec, ("paris", 2i64))
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let (spec,): (String,) = rows.single_row().unwrap();
    assert_eq!(spec, "{\"v\": 2}");
    let rome = session
        .query_unpaged(
            "SELECT spec, created_at FROM keyscore.model_versions WHERE key = 'rome'",
            &[],
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let (spec, created): (String, CqlTimestamp) = rome.single_row().unwrap();
    assert_eq!(spec, "it's json");
    assert!(
        created.0 > 1_600_000_000_000,
        "toTimestamp(now()) is the current time"
    );

    let all = session
        .query_unpaged("SELECT key, version FROM keyscore.model_versions", &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let got: BTreeSet<(String, i64)> = all
        .rows::<(String, i64)>()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let want: BTreeSet<(String, i64)> = [("paris", 1), ("paris", 2), ("paris", 3), ("rome", 7)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(got, want);

    let missing = session
        .execute_unpaged(&get_spec, ("paris", 99i64))
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    assert_eq!(missing.rows_num(), 0);
}

#[tokio::test]
async fn paging_returns_every_row_exactly_once() {
    let (_node, session) = node_with_schema().await;
    let insert = session.prepare(INSERT_VERSION).await.unwrap();
    let mut want = BTreeSet::new();
    for k in 0..13 {
        for v in 0..(k % 5 + 1) * 4 {
            let key = format!("key{k}");
            session
                .execute_unpaged(&insert, (&key, v, "{}", "ana", CqlTimestamp(0)))
                .await
                .unwrap();
            want.insert((key, v));
        }
    }
    let mut scan = session
        .prepare("SELECT key, version FROM keyscore.model_versions")
        .await
        .unwrap();
    scan.set_page_size(7);
    let got: Vec<(String, i64)> = session
        .execute_iter(scan, ())
        .await
        .unwrap()
        .rows_stream::<(String, i64)>()
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(got.len(), want.len(), "no row twice");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);

    // One partition, in clustering (DESC) order, across pages of 3, with a LIMIT spanning pages.
    let one = Statement::new("SELECT version FROM keyscore.model_versions WHERE key = ? LIMIT 10")
        .with_page_size(3);
    let versions: Vec<(i64,)> = session
        .query_iter(one, ("key4",))
        .await
        .unwrap()
        .rows_stream::<(i64,)>()
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let versions: Vec<i64> = versions.into_iter().map(|(v,)| v).collect();
    assert_eq!(versions, (10..20).rev().collect::<Vec<i64>>());

    // A single page with a paging state, resumed by hand.
    let first = Statement::new("SELECT version FROM keyscore.model_versions WHERE key = 'key4'")
        .with_page_size(15);
    let (page, state) = session
        .query_single_page(first.clone(), &[], scylla::response::PagingState::start())
        .await
        .unwrap();
    assert_eq!(page.into_rows_result().unwrap().rows_num(), 15);
    let scylla::response::PagingStateResponse::HasMorePages { state } = state else {
        panic!("a paging state after the first page");
    };
    let (rest, end) = session.query_single_page(first, &[], state).await.unwrap();
    assert_eq!(rest.into_rows_result().unwrap().rows_num(), 5);
    assert!(end.finished());
}

#[tokio::test]
async fn batches_apply_atomically() {
    let (_node, session) = node_with_schema().await;
    let activate = session
        .prepare(
            "UPDATE keyscore.active_models SET version = ?, previous_version = ? WHERE key = ?",
        )
        .await
        .unwrap();
    let change = session
        .prepare("INSERT INTO keyscore.model_changes (day, bucket, changed_at, key, version, revision) VALUES (?, 0, ?, ?, ?, 1)")
        .await
        .unwrap();
    let mut batch = Batch::new(BatchType::Logged);
    batch.append_statement(activate.clone());
    batch.append_statement(change.clone());
    session
        .batch(
            &batch,
            (
                (2i64, 1i64, "paris"),
                (MARCH_1_2024, CqlTimestamp(1_709_296_200_000), "paris", 2i64),
            ),
        )
        .await
        .unwrap();
    let (v, prev): (i64, i64) = session
        .query_unpaged(
            "SELECT version, previous_version FROM keyscore.active_models WHERE key = 'paris'",
            &[],
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!((v, prev), (2, 1));

    // The second statement is refused (null clustering key): the first must not apply either.
    let err = session
        .batch(
            &batch,
            (
                (3i64, 2i64, "paris"),
                (MARCH_1_2024, None::<CqlTimestamp>, "paris", 3i64),
            ),
        )
        .await
        .expect_err("a batch with an invalid statement fails");
    assert!(
        matches!(db_error(&err), Some((DbError::Invalid, _))),
        "{err}"
    );
    let (v,): (i64,) = session
        .query_unpaged(
            "SELECT version FROM keyscore.active_models WHERE key = 'paris'",
            &[],
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!(v, 2, "a failed batch leaves no partial write");

    // The feed query: a clustering range within one day.
    let feed = session
        .prepare("SELECT changed_at, key, version FROM keyscore.model_changes WHERE day = ? AND bucket = 0 AND changed_at > ?")
        .await
        .unwrap();
    let rows = session
        .execute_unpaged(&feed, (MARCH_1_2024, CqlTimestamp(0)))
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let got: Vec<(CqlTimestamp, String, i64)> = rows.rows().unwrap().map(Result::unwrap).collect();
    assert_eq!(
        got,
        [(CqlTimestamp(1_709_296_200_000), "paris".to_string(), 2)]
    );
    let later = session
        .execute_unpaged(&feed, (MARCH_1_2024, CqlTimestamp(1_709_296_200_000)))
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    assert_eq!(later.rows_num(), 0, "changed_at > bound is exclusive");
}

#[tokio::test]
async fn writetime_grows_and_honours_using_timestamp() {
    let (_node, session) = node_with_schema().await;
    let activate = session
        .prepare(
            "UPDATE keyscore.active_models SET version = ?, previous_version = ? WHERE key = ?",
        )
        .await
        .unwrap();
    let read = session
        .prepare("SELECT version, previous_version, WRITETIME(version) FROM keyscore.active_models WHERE key = ?")
        .await
        .unwrap();
    let mut last = 0i64;
    for v in 1..=5i64 {
        session
            .execute_unpaged(&activate, (v, v - 1, "oslo"))
            .await
            .unwrap();
        let (got, _prev, wt): (i64, i64, i64) = session
            .execute_unpaged(&read, ("oslo",))
            .await
            .unwrap()
            .into_rows_result()
            .unwrap()
            .single_row()
            .unwrap();
        assert_eq!(got, v);
        assert!(wt > last, "WRITETIME grows: {wt} after {last}");
        last = wt;
    }
    // An older explicit timestamp loses to the newer write; a newer one wins and is reported.
    session
        .query_unpaged(
            "UPDATE keyscore.active_models USING TIMESTAMP 1000 SET version = 99 WHERE key = 'oslo'",
            &[],
        )
        .await
        .unwrap();
    let (v, wt): (i64, i64) = session
        .query_unpaged(
            "SELECT version, WRITETIME(version) FROM keyscore.active_models WHERE key = 'oslo'",
            &[],
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!((v, wt), (5, last));
    let future = last + 1_000_000;
    session
        .query_unpaged(
            format!("UPDATE keyscore.active_models USING TIMESTAMP {future} SET version = 6 WHERE key = 'oslo'"),
            &[],
        )
        .await
        .unwrap();
    let (v, wt): (i64, i64) = session
        .query_unpaged(
            "SELECT version, WRITETIME(version) FROM keyscore.active_models WHERE key = 'oslo'",
            &[],
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!((v, wt), (6, future));
}

#[tokio::test]
async fn insert_if_not_exists_reports_applied() {
    let (_node, session) = node_with_schema().await;
    let insert = session
        .prepare("INSERT INTO keyscore.model_versions (key, version, spec) VALUES (?, ?, ?) IF NOT EXISTS")
        .await
        .unwrap();
    let first = session
        .execute_unpaged(&insert, ("nice", 1i64, "first"))
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let (applied,): (bool,) = first.first_row().unwrap();
    assert!(applied);
    let second = session
        .execute_unpaged(&insert, ("nice", 1i64, "second"))
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let names: Vec<String> = second
        .column_specs()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    assert_eq!(names[0], "[applied]");
    let spec_at = names
        .iter()
        .position(|n| n == "spec")
        .expect("existing row returned");
    let row: scylla::value::Row = second.first_row().unwrap();
    assert_eq!(
        row.columns[0],
        Some(scylla::value::CqlValue::Boolean(false))
    );
    assert_eq!(
        row.columns[spec_at],
        Some(scylla::value::CqlValue::Text("first".to_string()))
    );
}

#[tokio::test]
async fn unsupported_statements_fail_naming_the_feature() {
    let (_node, session) = node_with_schema().await;
    let cases = [
        (
            "DELETE FROM keyscore.active_models USING TTL 60 WHERE key = 'a'",
            "TTL is not supported for DELETE",
        ),
        (
            "SELECT key FROM keyscore.active_models WHERE version = 1 ALLOW FILTERING",
            "ALLOW FILTERING",
        ),
        (
            "SELECT key FROM keyscore.active_models WHERE version = 1",
            "filtering",
        ),
        (
            "UPDATE keyscore.active_models SET version = 2 WHERE key = 'a' IF version > 1",
            "conditional",
        ),
        (
            "CREATE INDEX ON keyscore.active_models (version)",
            "CREATE INDEX",
        ),
        ("SELECT JSON * FROM keyscore.active_models", "SELECT JSON"),
        (
            "CREATE TABLE keyscore.c (k text PRIMARY KEY, n counter)",
            "counter",
        ),
    ];
    for (query, feature) in cases {
        let err = session.query_unpaged(query, &[]).await.expect_err(query);
        let (db, msg) = db_error(&err).unwrap_or_else(|| panic!("{query}: {err}"));
        assert!(matches!(db, DbError::Invalid), "{query}: {db:?} {msg}");
        assert!(msg.contains(feature), "{query}: '{msg}' names {feature}");
    }
    let err = session
        .query_unpaged("SELEC key FROM keyscore.active_models", &[])
        .await
        .expect_err("typo");
    assert!(
        matches!(db_error(&err), Some((DbError::SyntaxError, _))),
        "{err}"
    );
    let err = session
        .query_unpaged("SELECT nope FROM keyscore.active_models", &[])
        .await
        .expect_err("unknown column");
    assert!(
        db_error(&err).is_some_and(|(_, m)| m.contains("nope")),
        "{err}"
    );
    let err = session
        .query_unpaged(
            "CREATE TABLE keyscore.active_models (k text PRIMARY KEY)",
            &[],
        )
        .await
        .expect_err("duplicate table");
    assert!(
        matches!(db_error(&err), Some((DbError::AlreadyExists { .. }, _))),
        "{err}"
    );
}

#[tokio::test]
async fn faults_are_seen_by_the_driver_and_cleared() {
    let (node, session) = node_with_schema().await;
    let read = session
        .prepare("SELECT version FROM keyscore.active_models WHERE key = ?")
        .await
        .unwrap();
    session.execute_unpaged(&read, ("a",)).await.unwrap();

    node.set_fault(Fault::Failing);
    let err = session
        .execute_unpaged(&read, ("a",))
        .await
        .expect_err("failing");
    assert!(
        matches!(db_error(&err), Some((DbError::Unavailable { .. }, _))),
        "{err}"
    );
    node.set_fault(Fault::Overloaded);
    let err = session
        .execute_unpaged(&read, ("a",))
        .await
        .expect_err("overloaded");
    assert!(
        matches!(db_error(&err), Some((DbError::Overloaded, _))),
        "{err}"
    );
    node.clear_fault();
    session.execute_unpaged(&read, ("a",)).await.unwrap();

    // A fault set for a while is in force until its timer clears it. The test runs on one
    // thread and does not yield between the two lines, so the timer cannot have fired yet.
    node.fail_for(Duration::from_millis(300));
    assert_eq!(node.fault(), Some(Fault::Failing));
    let deadline = tokio::time::Instant::now() + RECOVERY;
    while node.fault().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a 300 ms fault still in force after {RECOVERY:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    session
        .execute_unpaged(&read, ("a",))
        .await
        .expect("the fault ended by itself");

    let mut slow = read.clone();
    slow.set_request_timeout(Some(Duration::from_millis(100)));
    node.set_fault(Fault::Slow(Duration::from_millis(400)));
    let err = session
        .execute_unpaged(&slow, ("a",))
        .await
        .expect_err("slow");
    assert!(matches!(err, ExecutionError::RequestTimeout(_)), "{err}");
    node.clear_fault();
    // The connection answers in order, so the next request waits behind the delayed answer:
    // retry until the driver gets an answer in time.
    eventually(&session, &slow).await;

    node.set_fault(Fault::Unavailable);
    assert!(session.execute_unpaged(&read, ("a",)).await.is_err());
    node.clear_fault();
    eventually(&session, &read).await;
}

/// How long the driver may take to recover from a fault or a restart: far beyond what it needs.
const RECOVERY: Duration = Duration::from_secs(20);

/// Retries `attempt` until it succeeds; panics with the last error after [`RECOVERY`].
async fn retry<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + RECOVERY;
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() > deadline => {
                panic!("{what}: still failing after {RECOVERY:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Retries a read until the driver has reconnected.
async fn eventually(session: &Session, read: &scylla::statement::prepared::PreparedStatement) {
    retry("the driver did not recover", || {
        session.execute_unpaged(read, ("a",))
    })
    .await;
}

#[tokio::test]
async fn restart_keeps_data_and_forgotten_statements_are_reprepared() {
    let (node, session) = node_with_schema().await;
    let insert = session.prepare(INSERT_VERSION).await.unwrap();
    session
        .execute_unpaged(&insert, ("kyiv", 1i64, "{}", "ana", CqlTimestamp(0)))
        .await
        .unwrap();
    node.forget_prepared();
    session
        .execute_unpaged(&insert, ("kyiv", 2i64, "{}", "ana", CqlTimestamp(0)))
        .await
        .expect("the driver prepares again after Unprepared");

    node.stop();
    let read = session
        .prepare("SELECT version FROM keyscore.active_models WHERE key = ?")
        .await;
    assert!(read.is_err(), "a stopped node answers nothing");
    node.restart().await.expect("restart on the same port");
    let read = retry("prepare after the driver reconnected", || {
        session.prepare("SELECT version FROM keyscore.model_versions WHERE key = ?")
    })
    .await;
    let rows = retry("no reconnect", || session.execute_unpaged(&read, ("kyiv",))).await;
    assert_eq!(rows.into_rows_result().unwrap().rows_num(), 2);
}

#[tokio::test]
async fn protocol_v5_is_refused_so_clients_downgrade() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = CqlTestNode::start().await;
    let mut tcp = tokio::net::TcpStream::connect(node.addr()).await.unwrap();
    // OPTIONS, version 5, stream 7, empty body.
    tcp.write_all(&[0x05, 0, 0, 7, 0x05, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut head = [0u8; 9];
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(head[4], 0x00, "an ERROR frame");
    assert_eq!(
        i16::from_be_bytes([head[2], head[3]]),
        7,
        "on the request's stream"
    );
    let len = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) as usize;
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await.unwrap();
    assert_eq!(
        i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
        0x000A
    );
    let msg = String::from_utf8_lossy(&body[6..]);
    assert!(msg.contains("unsupported protocol version"), "{msg}");
}

/// A Python tool from `$KEYSCORE_PYTHON_BIN` or `PATH`; panics naming the variable if missing.
fn python_tool(name: &str) -> PathBuf {
    let hint = "set KEYSCORE_PYTHON_BIN to the bin directory of a virtualenv made with \
                `python3 -m venv DIR && DIR/bin/pip install cassandra-driver cqlsh`";
    if let Some(dir) = std::env::var_os("KEYSCORE_PYTHON_BIN") {
        let p = Path::new(&dir).join(name);
        assert!(
            p.is_file(),
            "KEYSCORE_PYTHON_BIN has no {name} ({}); {hint}",
            p.display()
        );
        return p;
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found on PATH; {hint}"))
}

/// Runs a client process against the node (the node keeps serving on this runtime meanwhile).
async fn run_client(program: &Path, args: &[&str]) -> String {
    let home = tempfile::tempdir().unwrap();
    let child = tokio::process::Command::new(program)
        .args(args)
        .env("HOME", home.path())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .unwrap_or_else(|_| panic!("{} did not finish in 120 s", program.display()))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}); is cassandra-driver installed for it (KEYSCORE_PYTHON_BIN)?\n\
         stdout:\n{stdout}\nstderr:\n{}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn data_file(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .to_string_lossy()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_driver_negotiates_v4_and_round_trips() {
    let (node, session) = node_with_schema().await;
    let python = python_tool("python3");
    let port = node.addr().port().to_string();
    let stdout = run_client(
        &python,
        &[&data_file("python_driver_client.py"), "127.0.0.1", &port],
    )
    .await;
    let seen: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("client output is not JSON ({e}): {stdout}"));
    assert_eq!(seen["protocol_version"], 4);
    assert_eq!(
        seen["downgraded"], true,
        "the driver tried v5 first and fell back"
    );
    assert_eq!(
        seen["model_versions_partition_key"],
        serde_json::json!(["key"])
    );
    assert_eq!(
        seen["model_versions_clustering_key"],
        serde_json::json!(["version"])
    );
    assert_eq!(seen["model_versions_version_desc"], true);
    assert_eq!(seen["versions"], serde_json::json!([4, 3, 2, 1]));
    assert_eq!(seen["active"], serde_json::json!([4, 1, true]));

    let (v, prev): (i64, i64) = session
        .query_unpaged(
            "SELECT version, previous_version FROM keyscore.active_models WHERE key = 'lyon'",
            &[],
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!((v, prev), (4, 1));
    let (spec,): (String,) = session
        .query_unpaged(
            "SELECT spec FROM keyscore.model_versions WHERE key = 'lyon' AND version = 1",
            &[],
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!(spec, "{\"kind\": \"linear\"}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cqlsh_runs_a_script_file() {
    let (node, session) = node_with_schema().await;
    let cqlsh = python_tool("cqlsh");
    let port = node.addr().port().to_string();
    let stdout = run_client(
        &cqlsh,
        &["127.0.0.1", &port, "-f", &data_file("activate_paris.cql")],
    )
    .await;
    assert!(
        stdout.contains("(2 rows)"),
        "cqlsh printed the SELECT:\n{stdout}"
    );
    assert!(stdout.contains("it's the baseline"), "{stdout}");

    let (v, prev): (i64, i64) = session
        .query_unpaged(
            "SELECT version, previous_version FROM keyscore.active_models WHERE key = 'paris'",
            &[],
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!((v, prev), (2, 1));
    let (created,): (CqlTimestamp,) = session
        .query_unpaged(
            "SELECT created_at FROM keyscore.model_versions WHERE key = 'paris' AND version = 2",
            &[],
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!(created.0, 1_709_296_200_000);
    let changes = session
        .query_unpaged(
            "SELECT key, version FROM keyscore.model_changes WHERE day = '2024-03-01' AND bucket = 0",
            &[],
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let got: Vec<(String, i64)> = changes.rows().unwrap().map(Result::unwrap).collect();
    assert_eq!(got, [("paris".to_string(), 2)]);
}
