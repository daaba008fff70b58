//! Tests of the real-server rules the CQL test node (`keyscore_testkit::cqlnode`) enforces,
//! one test per rule, through the `scylla` Rust driver: each checks that the node refuses what
//! a ScyllaDB or Cassandra server refuses, with the same error code, and accepts the variant
//! that keeps to the rule; and that what the CQL backend relies on (dates, TTLs, null
//! conditions in lightweight transactions, large blobs) behaves as on a real server, through
//! the Rust driver, and through `cqlsh` and the Python driver where they send it differently.
//! The sources of the rules are cited in the node's code.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use keyscore_testkit::cqlnode::clients::{python, python_tool, run_ok, utc_day};
use keyscore_testkit::cqlnode::{CqlTestNode, Flavor};
use scylla::client::session::Session;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::response::query_result::QueryResult;
use scylla::response::PagingState;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::unprepared::Statement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlDate, CqlTimestamp};

const MIB: usize = 1024 * 1024;

/// A node playing `flavor` with keyspace `rules` (SimpleStrategy) and table `rules.kv`.
async fn node_with_table(flavor: Flavor) -> (CqlTestNode, Session) {
    let node = CqlTestNode::start_as(flavor).await;
    let session = node.session().await;
    run(
        &session,
        "CREATE KEYSPACE rules WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
    )
    .await;
    run(
        &session,
        "CREATE TABLE rules.kv (p text, c int, v text, w blob, PRIMARY KEY ((p), c))",
    )
    .await;
    (node, session)
}

async fn run(session: &Session, query: &str) -> QueryResult {
    session
        .query_unpaged(query, &[])
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
}

/// The message of an Invalid (0x2200) answer; fails on any other outcome.
fn invalid(what: &str, result: Result<QueryResult, ExecutionError>) -> String {
    match result {
        Err(ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::Invalid,
            msg,
        ))) => msg,
        Err(other) => panic!("{what}: not an Invalid error: {other}"),
        Ok(_) => panic!("{what}: accepted, but a real server refuses it"),
    }
}

async fn refused(session: &Session, query: &str) -> String {
    invalid(query, session.query_unpaged(query, &[]).await)
}

/// The `[applied]` column of a lightweight transaction's answer.
fn applied(result: QueryResult) -> bool {
    let rows = result.into_rows_result().expect("an LWT answers with rows");
    let row: scylla::value::Row = rows.first_row().expect("an [applied] row");
    match row.columns.first() {
        Some(Some(scylla::value::CqlValue::Boolean(b))) => *b,
        other => panic!("[applied] is not a boolean: {other:?}"),
    }
}

/// `v` and `WRITETIME(v)` of one row (`None` when the row or cell is missing).
async fn cell(session: &Session, p: &str, c: i32) -> Option<(String, i64)> {
    let rows = session
        .query_unpaged(
            "SELECT v, WRITETIME(v) FROM rules.kv WHERE p = ? AND c = ?",
            (p, c),
        )
        .await
        .expect("select")
        .into_rows_result()
        .expect("rows");
    let row: Option<(Option<String>, Option<i64>)> = rows.maybe_first_row().expect("typed row");
    row.and_then(|(v, wt)| v.zip(wt))
}

#[tokio::test]
async fn conditional_batches_stay_within_one_partition() {
    let (_node, session) = node_with_table(Flavor::Cassandra4).await;
    run(
        &session,
        "INSERT INTO rules.kv (p, c, v) VALUES ('a', 1, 'x')",
    )
    .await;

    // Through the BATCH message, as the drivers send a Batch.
    let mut spanning = Batch::new(BatchType::Logged);
    spanning.append_statement("UPDATE rules.kv SET v = 'y' WHERE p = 'a' AND c = 1 IF v = 'x'");
    spanning.append_statement("INSERT INTO rules.kv (p, c, v) VALUES ('b', 1, 'z')");
    let msg = invalid(
        "a conditional batch over two partitions",
        session.batch(&spanning, ((), ())).await,
    );
    assert_eq!(msg, "Batch with conditions cannot span multiple partitions");
    // As a BEGIN BATCH text.
    let msg = refused(
        &session,
        "BEGIN BATCH UPDATE rules.kv SET v = 'y' WHERE p = 'a' AND c = 1 IF v = 'x'; \
         INSERT INTO rules.kv (p, c, v) VALUES ('b', 1, 'z') APPLY BATCH",
    )
    .await;
    assert_eq!(msg, "Batch with conditions cannot span multiple partitions");
    let msg = refused(
        &session,
        "BEGIN BATCH UPDATE rules.kv SET v = 'y' WHERE p IN ('a', 'b') AND c = 1 IF v = 'x'; \
         APPLY BATCH",
    )
    .await;
    assert!(msg.contains("cannot span multiple partitions"), "{msg}");
    assert_eq!(
        cell(&session, "a", 1).await.map(|(v, _)| v).as_deref(),
        Some("x")
    );
    assert_eq!(cell(&session, "b", 1).await, None, "nothing of it applied");

    // Within one partition: applied when the condition holds, nothing written when it fails.
    let mut failing = Batch::new(BatchType::Logged);
    failing.append_statement("UPDATE rules.kv SET v = 'y' WHERE p = 'a' AND c = 1 IF v = 'nope'");
    failing.append_statement("INSERT INTO rules.kv (p, c, v) VALUES ('a', 2, 'z')");
    assert!(!applied(session.batch(&failing, ((), ())).await.unwrap()));
    assert_eq!(cell(&session, "a", 2).await, None);
    let mut within = Batch::new(BatchType::Logged);
    within.append_statement("UPDATE rules.kv SET v = 'y' WHERE p = 'a' AND c = 1 IF v = 'x'");
    within.append_statement("INSERT INTO rules.kv (p, c, v) VALUES ('a', 2, 'z')");
    assert!(applied(session.batch(&within, ((), ())).await.unwrap()));
    assert_eq!(
        cell(&session, "a", 1).await.map(|(v, _)| v).as_deref(),
        Some("y")
    );
    assert_eq!(
        cell(&session, "a", 2).await.map(|(v, _)| v).as_deref(),
        Some("z")
    );
    // A batch without conditions may still span partitions (keyscore's activation does).
    let mut plain = Batch::new(BatchType::Logged);
    plain.append_statement("INSERT INTO rules.kv (p, c, v) VALUES ('a', 3, 'p')");
    plain.append_statement("INSERT INTO rules.kv (p, c, v) VALUES ('b', 3, 'q')");
    session.batch(&plain, ((), ())).await.unwrap();
    assert!(cell(&session, "b", 3).await.is_some());
}

#[tokio::test]
async fn lightweight_transactions_refuse_using_timestamp() {
    let (_node, session) = node_with_table(Flavor::Cassandra4).await;
    let msg = refused(
        &session,
        "INSERT INTO rules.kv (p, c, v) VALUES ('t', 1, 'x') IF NOT EXISTS USING TIMESTAMP 1000",
    )
    .await;
    assert_eq!(
        msg,
        "Cannot provide custom timestamp for conditional updates"
    );
    let update =
        "UPDATE rules.kv USING TIMESTAMP 1000 SET v = 'y' WHERE p = 't' AND c = 1 IF v = 'x'";
    let msg = refused(&session, update).await;
    assert_eq!(
        msg,
        "Cannot provide custom timestamp for conditional updates"
    );
    let err = session
        .prepare(update)
        .await
        .expect_err("preparing it is refused too");
    assert!(
        err.to_string()
            .contains("Cannot provide custom timestamp for conditional updates"),
        "{err}"
    );
    let msg = refused(
        &session,
        "BEGIN BATCH USING TIMESTAMP 1000 \
         UPDATE rules.kv SET v = 'y' WHERE p = 't' AND c = 1 IF v = 'x'; APPLY BATCH",
    )
    .await;
    assert_eq!(msg, "Cannot provide custom timestamp for conditional BATCH");
    assert_eq!(cell(&session, "t", 1).await, None);

    // Without USING TIMESTAMP: applied.
    let inserted = run(
        &session,
        "INSERT INTO rules.kv (p, c, v) VALUES ('t', 1, 'x') IF NOT EXISTS",
    )
    .await;
    assert!(applied(inserted));
    let updated = run(
        &session,
        "UPDATE rules.kv SET v = 'y' WHERE p = 't' AND c = 1 IF v = 'x'",
    )
    .await;
    assert!(applied(updated));
    let stale = run(
        &session,
        "UPDATE rules.kv SET v = 'z' WHERE p = 't' AND c = 1 IF v = 'x'",
    )
    .await;
    assert!(!applied(stale), "the condition no longer holds");
    // A client default timestamp (protocol flag) on an LWT is not refused but not used either:
    // the write takes the node's clock, as a Paxos ballot's timestamp.
    let mut with_client_ts =
        Statement::new("UPDATE rules.kv SET v = 'w' WHERE p = 't' AND c = 1 IF v = 'y'");
    with_client_ts.set_timestamp(Some(1000));
    assert!(applied(
        session.query_unpaged(with_client_ts, &[]).await.unwrap()
    ));
    let (v, wt) = cell(&session, "t", 1).await.expect("row");
    assert_eq!(v, "w");
    assert!(
        wt > 1000,
        "the LWT's write time is the node's clock, not {wt}"
    );
}

#[tokio::test]
async fn client_timestamps_are_kept_and_ties_go_to_the_larger_value() {
    let (_node, session) = node_with_table(Flavor::Cassandra4).await;
    // Two writes at one explicit timestamp: the larger value wins, in either order.
    for (c, first, second) in [(1, "apple", "banana"), (2, "banana", "apple")] {
        for v in [first, second] {
            run(
                &session,
                &format!(
                    "UPDATE rules.kv USING TIMESTAMP 5000 SET v = '{v}' WHERE p = 'tie' AND c = {c}"
                ),
            )
            .await;
        }
        assert_eq!(
            cell(&session, "tie", c).await,
            Some(("banana".to_string(), 5000)),
            "order {first}, {second}"
        );
    }
    // A deletion beats a live cell at the same timestamp, in either order.
    run(
        &session,
        "DELETE v FROM rules.kv USING TIMESTAMP 5000 WHERE p = 'tie' AND c = 1",
    )
    .await;
    assert_eq!(cell(&session, "tie", 1).await, None);
    run(
        &session,
        "UPDATE rules.kv USING TIMESTAMP 5000 SET v = 'zzz' WHERE p = 'tie' AND c = 1",
    )
    .await;
    assert_eq!(cell(&session, "tie", 1).await, None);
    run(
        &session,
        "UPDATE rules.kv USING TIMESTAMP 5001 SET v = 'zzz' WHERE p = 'tie' AND c = 1",
    )
    .await;
    assert_eq!(
        cell(&session, "tie", 1).await,
        Some(("zzz".to_string(), 5001))
    );

    // An older explicit timestamp does not overwrite a newer one.
    run(
        &session,
        "INSERT INTO rules.kv (p, c, v) VALUES ('old', 1, 'new') USING TIMESTAMP 10000",
    )
    .await;
    run(
        &session,
        "INSERT INTO rules.kv (p, c, v) VALUES ('old', 1, 'old') USING TIMESTAMP 9000",
    )
    .await;
    assert_eq!(
        cell(&session, "old", 1).await,
        Some(("new".to_string(), 10000))
    );

    // The protocol's default timestamp is kept as given, however it compares with the node's
    // clock: a far-future one is not overwritten by a later write the node timestamps itself.
    let mut given = Statement::new("INSERT INTO rules.kv (p, c, v) VALUES ('ts', 1, 'given')");
    given.set_timestamp(Some(42));
    session.query_unpaged(given, &[]).await.unwrap();
    assert_eq!(
        cell(&session, "ts", 1).await,
        Some(("given".to_string(), 42))
    );
    let future = 4_000_000_000_000_000i64;
    let mut ahead = Statement::new("INSERT INTO rules.kv (p, c, v) VALUES ('ts', 2, 'future')");
    ahead.set_timestamp(Some(future));
    session.query_unpaged(ahead, &[]).await.unwrap();
    run(
        &session,
        "INSERT INTO rules.kv (p, c, v) VALUES ('ts', 2, 'now')",
    )
    .await;
    assert_eq!(
        cell(&session, "ts", 2).await,
        Some(("future".to_string(), future))
    );
    // Without a client timestamp, a write takes the node's clock in microseconds.
    run(
        &session,
        "INSERT INTO rules.kv (p, c, v) VALUES ('ts', 3, 'clock')",
    )
    .await;
    let (_, wt) = cell(&session, "ts", 3).await.expect("row");
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    assert!(
        (now_us - 60_000_000..=now_us).contains(&wt),
        "{wt} is the node's clock in microseconds ({now_us})"
    );
}

#[tokio::test]
async fn oversized_frames_and_mutations_are_refused() {
    let (node, session) = node_with_table(Flavor::Cassandra4).await;
    let insert = session
        .prepare("INSERT INTO rules.kv (p, c, w) VALUES (?, ?, ?)")
        .await
        .unwrap();
    session
        .execute_unpaged(&insert, ("big", 1, vec![7u8; MIB]))
        .await
        .expect("a 1 MiB write is accepted");
    // A request frame over 16 MiB: refused, and the connection stays usable.
    let msg = invalid(
        "a frame over 16 MiB",
        session
            .execute_unpaged(&insert, ("big", 2, vec![7u8; 16 * MIB + 1]))
            .await,
    );
    assert!(msg.starts_with("Request is too big: length "), "{msg}");
    assert!(
        msg.ends_with("exceeds maximum allowed length 16777216."),
        "{msg}"
    );
    session
        .execute_unpaged(&insert, ("big", 3, vec![7u8; 16]))
        .await
        .expect("the connection still serves requests");

    // With larger frames allowed, the same write is a mutation over 16 MiB: refused too.
    node.set_max_frame_size(64 * MIB);
    let msg = invalid(
        "a mutation over 16 MiB",
        session
            .execute_unpaged(&insert, ("big", 2, vec![7u8; 16 * MIB + 1]))
            .await,
    );
    assert!(
        msg.starts_with("Rejected an oversized mutation (") && msg.contains("/16777216)"),
        "{msg}"
    );
    let count: (i64,) = session
        .query_unpaged("SELECT COUNT(*) FROM rules.kv WHERE p = 'big'", &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!(count.0, 2, "the refused writes left nothing");

    // The mutation limit adds up a batch's writes to one partition, not to different ones.
    node.set_max_mutation_size(2 * MIB);
    let mut batch = Batch::new(BatchType::Unlogged);
    batch.append_statement(insert.clone());
    batch.append_statement(insert.clone());
    let half = vec![1u8; 3 * MIB / 2];
    let msg = invalid(
        "two 1.5 MiB writes to one partition under a 2 MiB limit",
        session
            .batch(&batch, (("one", 1, &half), ("one", 2, &half)))
            .await,
    );
    assert!(msg.contains("/2097152)"), "{msg}");
    session
        .batch(&batch, (("one", 1, &half), ("two", 1, &half)))
        .await
        .expect("two partitions are two mutations");
}

#[tokio::test]
async fn scylla6_refuses_lwt_in_keyspaces_with_tablets() {
    let node = CqlTestNode::start_as(Flavor::Scylla6).await;
    let session = node.session().await;
    run(
        &session,
        "CREATE KEYSPACE tab WITH replication = {'class': 'NetworkTopologyStrategy', 'datacenter1': 1}",
    )
    .await;
    run(
        &session,
        "CREATE KEYSPACE vn WITH replication = {'class': 'NetworkTopologyStrategy', 'datacenter1': 1} \
         AND tablets = {'enabled': false}",
    )
    .await;
    for ks in ["tab", "vn"] {
        run(
            &session,
            &format!("CREATE TABLE {ks}.kv (p text PRIMARY KEY, v text)"),
        )
        .await;
    }

    // Tablets by default: an LWT is refused on execution (preparing it succeeds); plain
    // writes work.
    let lwt = session
        .prepare("INSERT INTO tab.kv (p, v) VALUES (?, ?) IF NOT EXISTS")
        .await
        .expect("preparing an LWT succeeds");
    let msg = invalid(
        "an LWT in a tablets keyspace",
        session.execute_unpaged(&lwt, ("a", "x")).await,
    );
    assert_eq!(msg, "tab.kv: LWT is not yet supported with tablets");
    let msg = refused(
        &session,
        "UPDATE tab.kv SET v = 'y' WHERE p = 'a' IF v = 'x'",
    )
    .await;
    assert!(
        msg.contains("LWT is not yet supported with tablets"),
        "{msg}"
    );
    run(&session, "INSERT INTO tab.kv (p, v) VALUES ('a', 'x')").await;

    // With tablets disabled, the same LWT is applied.
    let lwt = session
        .prepare("INSERT INTO vn.kv (p, v) VALUES (?, ?) IF NOT EXISTS")
        .await
        .unwrap();
    assert!(applied(
        session.execute_unpaged(&lwt, ("a", "x")).await.unwrap()
    ));

    // What a client reads to tell ScyllaDB and tablets apart.
    let (release,): (String,) = run(&session, "SELECT release_version FROM system.local")
        .await
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!(release, "3.0.8");
    let (version,): (String,) = run(&session, "SELECT version FROM system.versions")
        .await
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert!(version.starts_with("6."), "{version}");
    let rows = run(
        &session,
        "SELECT keyspace_name, initial_tablets FROM system_schema.scylla_keyspaces",
    )
    .await
    .into_rows_result()
    .unwrap();
    let tablets: Vec<(String, Option<i32>)> = rows.rows().unwrap().map(Result::unwrap).collect();
    assert_eq!(tablets, [("tab".to_string(), Some(0))]);

    // The Cassandra flavor has no tablets and no such option.
    let cassandra = CqlTestNode::start().await;
    let session = cassandra.session().await;
    let err = session
        .query_unpaged(
            "CREATE KEYSPACE x WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1} \
             AND tablets = {'enabled': false}",
            &[],
        )
        .await
        .expect_err("Cassandra has no tablets option");
    assert!(
        err.to_string().contains("Unknown property 'tablets'"),
        "{err}"
    );
    let (release,): (String,) = run(&session, "SELECT release_version FROM system.local")
        .await
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!(release, "4.0.11");
}

/// The change-feed table of the CQL backend: a `date` in a composite partition key.
const CHANGES_TABLE: &str = "CREATE TABLE rules.changes (day date, bucket int, \
     changed_at timestamp, key text, revision int, \
     PRIMARY KEY ((day, bucket), changed_at, key))";

/// The serialized `date` (days with the epoch at 2^31) of a Unix time in milliseconds.
fn cql_date(ms: i64) -> CqlDate {
    CqlDate((ms.div_euclid(86_400_000) + (1i64 << 31)) as u32)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as i64
}

#[tokio::test]
async fn dates_bind_from_the_rust_driver_and_key_paged_reads() {
    let (_node, session) = node_with_table(Flavor::Cassandra4).await;
    run(&session, CHANGES_TABLE).await;
    let insert = session
        .prepare(
            "INSERT INTO rules.changes (day, bucket, changed_at, key, revision) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .await
        .unwrap();
    let start = now_ms();
    let day = cql_date(start);
    for (i, key) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        let at = CqlTimestamp(start + i as i64);
        session
            .execute_unpaged(&insert, (day, 3, at, key, i as i32))
            .await
            .unwrap();
    }
    // Another bucket and another day stay out of the read.
    session
        .execute_unpaged(&insert, (day, 4, CqlTimestamp(start), "x", 9))
        .await
        .unwrap();
    let yesterday = CqlDate(day.0 - 1);
    session
        .execute_unpaged(&insert, (yesterday, 3, CqlTimestamp(start), "y", 9))
        .await
        .unwrap();

    let mut select = session
        .prepare(
            "SELECT key, changed_at, revision FROM rules.changes \
             WHERE day = ? AND bucket = ? AND changed_at > ?",
        )
        .await
        .unwrap();
    select.set_page_size(2);
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut state = PagingState::start();
    loop {
        let (result, next) = session
            .execute_single_page(&select, (day, 3, CqlTimestamp(start)), state)
            .await
            .unwrap();
        pages += 1;
        let rows = result.into_rows_result().unwrap();
        for row in rows.rows::<(String, CqlTimestamp, i32)>().unwrap() {
            let (key, at, revision) = row.unwrap();
            seen.push((key, at.0 - start, revision));
        }
        match next.into_paging_control_flow() {
            ControlFlow::Break(()) => break,
            ControlFlow::Continue(s) => state = s,
        }
    }
    let expected: Vec<(String, i64, i32)> = ["b", "c", "d", "e"]
        .into_iter()
        .enumerate()
        .map(|(i, k)| (k.to_string(), i as i64 + 1, i as i32 + 1))
        .collect();
    assert_eq!(seen, expected, "changed_at > start, in clustering order");
    assert!(pages >= 2, "a page size of 2 gives several pages ({pages})");

    // The date reads back as the same day count, and currentDate()/toDate() give today (UTC).
    let (back,): (CqlDate,) = session
        .query_unpaged(
            "SELECT day FROM rules.changes WHERE day = ? AND bucket = 4",
            (day,),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!(back, day);
    let (today, of_now): (CqlDate, CqlDate) = session
        .query_unpaged(
            "SELECT currentDate(), toDate(now()) FROM rules.changes WHERE day = ? AND bucket = 4",
            (day,),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    let end = cql_date(now_ms());
    assert!((day.0..=end.0).contains(&today.0), "{today:?}");
    assert!((day.0..=end.0).contains(&of_now.0), "{of_now:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cqlsh_writes_current_dates_and_hex_blobs() {
    let (node, session) = node_with_table(Flavor::Cassandra4).await;
    run(&session, CHANGES_TABLE).await;
    run(
        &session,
        "CREATE TABLE rules.expiring (k text, c int, v text, PRIMARY KEY (k, c)) \
         WITH CLUSTERING ORDER BY (c DESC) AND default_time_to_live = 86400",
    )
    .await;
    let before = utc_day(now_ms());
    let port = node.addr().port().to_string();
    let out = run_ok(
        &python_tool("cqlsh"),
        &[
            "127.0.0.1",
            &port,
            "-e",
            "INSERT INTO rules.changes (day, bucket, changed_at, key, revision) \
             VALUES (currentDate(), 3, currentTimestamp(), 'paris', 1); \
             SELECT day, key FROM rules.changes WHERE day = currentDate() AND bucket = 3; \
             INSERT INTO rules.kv (p, c, w) VALUES ('hex', 1, 0xcafe00); \
             SELECT w FROM rules.kv WHERE p = 'hex' AND c = 1; \
             DESCRIBE TABLE rules.expiring;",
        ],
        &[],
    )
    .await;
    let after = utc_day(now_ms());
    assert!(
        out.contains(&format!("{before} | paris")) || out.contains(&format!("{after} | paris")),
        "cqlsh shows today's date ({before}) beside the key:\n{out}"
    );
    assert!(
        out.contains("0xcafe00"),
        "cqlsh shows the blob in hex:\n{out}"
    );
    assert!(
        out.contains("default_time_to_live = 86400"),
        "DESCRIBE shows the default TTL:\n{out}"
    );

    // What cqlsh wrote, read by the Rust driver.
    let (w,): (Vec<u8>,) = run(&session, "SELECT w FROM rules.kv WHERE p = 'hex' AND c = 1")
        .await
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!(w, [0xca, 0xfe, 0x00]);
    let (day, key): (CqlDate, String) = run(
        &session,
        "SELECT day, key FROM rules.changes WHERE day = currentDate() AND bucket = 3",
    )
    .await
    .into_rows_result()
    .unwrap()
    .single_row()
    .unwrap();
    assert_eq!(key, "paris");
    assert!(day.0 >= cql_date(now_ms()).0 - 1, "{day:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_driver_binds_dates() {
    let (node, session) = node_with_table(Flavor::Cassandra4).await;
    run(&session, CHANGES_TABLE).await;
    let script = r#"
import datetime, sys
from cassandra.cluster import Cluster
cluster = Cluster(["127.0.0.1"], port=int(sys.argv[1]), protocol_version=4)
s = cluster.connect()
insert = s.prepare("INSERT INTO rules.changes (day, bucket, changed_at, key, revision) VALUES (?, ?, ?, ?, ?)")
s.execute(insert, (datetime.date(2024, 3, 1), 3, datetime.datetime(2024, 3, 1, 10, 0), "lyon", 7))
s.execute("INSERT INTO rules.changes (day, bucket, changed_at, key, revision) VALUES (%s, %s, %s, %s, %s)",
          (datetime.date(2024, 3, 2), 3, datetime.datetime(2024, 3, 2, 10, 0), "nice", 8))
select = s.prepare("SELECT day, key, revision FROM rules.changes WHERE day = ? AND bucket = ?")
for day in (datetime.date(2024, 3, 1), datetime.date(2024, 3, 2)):
    for row in s.execute(select, (day, 3)):
        print("row", row.day.date().isoformat(), row.key, row.revision)
cluster.shutdown()
"#;
    let port = node.addr().port().to_string();
    let out = run_ok(&python(), &["-c", script, &port], &[]).await;
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("row ")).collect();
    assert_eq!(
        rows,
        ["row 2024-03-01 lyon 7", "row 2024-03-02 nice 8"],
        "{out}"
    );
    // 2024-03-01 is day 19783 after the epoch.
    let (n,): (i64,) = session
        .query_unpaged(
            "SELECT COUNT(*) FROM rules.changes WHERE day = ? AND bucket = 3",
            (CqlDate((1 << 31) + 19_783),),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn cells_with_a_ttl_expire() {
    let (_node, session) = node_with_table(Flavor::Cassandra4).await;
    run(
        &session,
        "CREATE TABLE rules.expiring (k text, c int, v text, PRIMARY KEY (k, c)) \
         WITH CLUSTERING ORDER BY (c DESC) AND default_time_to_live = 3600",
    )
    .await;
    let (ttl,): (i32,) = run(
        &session,
        "SELECT default_time_to_live FROM system_schema.tables \
         WHERE keyspace_name = 'rules' AND table_name = 'expiring'",
    )
    .await
    .into_rows_result()
    .unwrap()
    .single_row()
    .unwrap();
    assert_eq!(ttl, 3600);

    let insert = session
        .prepare("INSERT INTO rules.expiring (k, c, v) VALUES (?, ?, ?) USING TTL ?")
        .await
        .unwrap();
    // 1: expires in 1 s; 2: TTL 0 overrides the table default; 3: the table default; 4: a
    // row marker without TTL, whose v is then written with a 1 s TTL.
    session
        .execute_unpaged(&insert, ("t", 1, "short", 1))
        .await
        .unwrap();
    session
        .execute_unpaged(&insert, ("t", 2, "forever", 0))
        .await
        .unwrap();
    run(
        &session,
        "INSERT INTO rules.expiring (k, c, v) VALUES ('t', 3, 'default')",
    )
    .await;
    run(
        &session,
        "INSERT INTO rules.expiring (k, c) VALUES ('t', 4)",
    )
    .await;
    run(
        &session,
        "UPDATE rules.expiring USING TTL 1 SET v = 'brief' WHERE k = 't' AND c = 4",
    )
    .await;
    let read = || async {
        let rows = run(
            &session,
            "SELECT c, v, TTL(v) FROM rules.expiring WHERE k = 't'",
        )
        .await
        .into_rows_result()
        .unwrap();
        rows.rows::<(i32, Option<String>, Option<i32>)>()
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let rows = read().await;
        if !rows.iter().any(|(c, _, _)| *c == 1) {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "the 1 s TTL never expired: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(after.len(), 3, "{after:?}");
    assert_eq!(
        after[0],
        (4, None, None),
        "the marker keeps row 4, its v expired"
    );
    assert_eq!(after[1].0, 3);
    assert!(
        after[1].2.is_some_and(|left| (3590..=3600).contains(&left)),
        "the table default applies: {after:?}"
    );
    assert_eq!(after[2], (2, Some("forever".to_string()), None));

    let msg = refused(
        &session,
        "INSERT INTO rules.expiring (k, c, v) VALUES ('t', 9, 'x') USING TTL -1",
    )
    .await;
    assert_eq!(msg, "A TTL must be greater or equal to 0, but was -1");
}

#[tokio::test]
async fn null_conditions_apply_on_missing_rows_and_null_cells() {
    for flavor in [Flavor::Cassandra4, Flavor::Scylla6] {
        let (_node, session) = node_with_table(flavor).await;
        run(
            &session,
            "CREATE TABLE rules.lwt (k text PRIMARY KEY, v text, r int)",
        )
        .await;
        let mut update = session
            .prepare("UPDATE rules.lwt SET v = ?, r = ? WHERE k = ? IF r = ?")
            .await
            .unwrap();
        update.set_serial_consistency(Some(SerialConsistency::LocalSerial));
        update.set_consistency(Consistency::LocalQuorum);
        let lwt = |v: &'static str, r: i32, k: &'static str, cond: Option<i32>| {
            let update = update.clone();
            let session = &session;
            async move {
                session
                    .execute_unpaged(&update, (v, r, k, cond))
                    .await
                    .unwrap_or_else(|e| panic!("{flavor:?}: {e}"))
            }
        };
        // A missing row: IF r = 5 does not apply, IF r = null applies.
        assert!(!applied(lwt("x", 1, "a", Some(5)).await), "{flavor:?}");
        assert!(applied(lwt("x", 1, "a", None).await), "{flavor:?}");
        // r has a value: IF r = null does not apply, and the answer carries the current r.
        let result = lwt("y", 2, "a", None).await;
        let rows = result.into_rows_result().unwrap();
        let names: Vec<&str> = rows.column_specs().iter().map(|c| c.name()).collect();
        assert_eq!(names, ["[applied]", "r"], "{flavor:?}");
        let (done, r): (bool, Option<i32>) = rows.single_row().unwrap();
        assert_eq!((done, r), (false, Some(1)), "{flavor:?}");
        // A primary-key-only INSERT makes a row with a null v and r: it reads back, and the
        // null condition applies to it.
        let insert = session
            .prepare("INSERT INTO rules.lwt (k) VALUES (?)")
            .await
            .unwrap();
        session.execute_unpaged(&insert, ("b",)).await.unwrap();
        let (k, v): (String, Option<String>) =
            run(&session, "SELECT k, v FROM rules.lwt WHERE k = 'b'")
                .await
                .into_rows_result()
                .unwrap()
                .single_row()
                .unwrap();
        assert_eq!((k.as_str(), v), ("b", None));
        assert!(applied(
            run(
                &session,
                "UPDATE rules.lwt SET v = 'z' WHERE k = 'b' IF v = null"
            )
            .await
        ));

        // Reads at LOCAL_QUORUM, SERIAL and LOCAL_SERIAL all see the writes.
        for consistency in [
            Consistency::LocalQuorum,
            Consistency::Serial,
            Consistency::LocalSerial,
        ] {
            let mut select = Statement::new("SELECT v, r FROM rules.lwt WHERE k = 'a'");
            select.set_consistency(consistency);
            let (v, r): (Option<String>, Option<i32>) = session
                .query_unpaged(select, &[])
                .await
                .unwrap_or_else(|e| panic!("{consistency:?}: {e}"))
                .into_rows_result()
                .unwrap()
                .single_row()
                .unwrap();
            assert_eq!((v.as_deref(), r), (Some("x"), Some(1)), "{consistency:?}");
        }
    }
}

#[tokio::test]
async fn one_mib_blobs_round_trip() {
    let (_node, session) = node_with_table(Flavor::Cassandra4).await;
    let insert = session
        .prepare("INSERT INTO rules.kv (p, c, w) VALUES (?, ?, ?)")
        .await
        .unwrap();
    let blob: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
    session
        .execute_unpaged(&insert, ("blob", 1, &blob))
        .await
        .unwrap();
    let select = session
        .prepare("SELECT w FROM rules.kv WHERE p = ? AND c = ?")
        .await
        .unwrap();
    let (back,): (Vec<u8>,) = session
        .execute_unpaged(&select, ("blob", 1))
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!(back.len(), MIB);
    assert!(back == blob, "the blob reads back byte for byte");
}
