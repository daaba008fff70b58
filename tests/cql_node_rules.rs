//! Tests of the real-server rules the CQL test node (`keyscore_testkit::cqlnode`) enforces,
//! one test per rule, through the `scylla` Rust driver: each checks that the node refuses what
//! a ScyllaDB or Cassandra server refuses, with the same error code, and accepts the variant
//! that keeps to the rule. The sources of the rules are cited in the node's code.

use keyscore_testkit::cqlnode::{CqlTestNode, Flavor};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::response::query_result::QueryResult;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::unprepared::Statement;

const MIB: usize = 1024 * 1024;

async fn connect(node: &CqlTestNode) -> Session {
    SessionBuilder::new()
        .known_node(node.addr().to_string())
        .build()
        .await
        .expect("the scylla driver connects to the test node")
}

/// A node playing `flavor` with keyspace `rules` (SimpleStrategy) and table `rules.kv`.
async fn node_with_table(flavor: Flavor) -> (CqlTestNode, Session) {
    let node = CqlTestNode::start_as(flavor).await;
    let session = connect(&node).await;
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
    let session = connect(&node).await;
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
    let session = connect(&cassandra).await;
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
