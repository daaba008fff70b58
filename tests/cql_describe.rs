//! Server-side DESCRIBE on the CQL test node, as cqlsh 6 sends it to Cassandra 4.0+ servers:
//! the data scientist's `DESCRIBE TABLES` and `DESCRIBE TABLE keyscore.model_versions` in cqlsh,
//! and CREATE statements that recreate the tables exactly.
//!
//! Needs `cqlsh` from `KEYSCORE_PYTHON_BIN` (see `tests/run-all.sh`).

use keyscore_testkit::cqlnode::clients::{self, keyscore};
use keyscore_testkit::cqlnode::CqlTestNode;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;

async fn node_with_schema() -> (CqlTestNode, Session) {
    let node = CqlTestNode::start().await;
    keyscore(&format!("cql://{}/keyscore", node.addr()), &["init"]).await;
    let session = SessionBuilder::new()
        .known_node(node.addr().to_string())
        .build()
        .await
        .expect("the scylla driver connects to the test node");
    (node, session)
}

/// `(keyspace_name, type, name, create_statement)` rows of a DESCRIBE.
async fn describe(session: &Session, cql: &str) -> Vec<(String, String, String, String)> {
    session
        .query_unpaged(cql, &[])
        .await
        .unwrap_or_else(|e| panic!("{cql}: {e}"))
        .into_rows_result()
        .unwrap()
        .rows::<(String, String, String, String)>()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The columns of a table as `system_schema.columns` lists them.
async fn columns(session: &Session, table: &str) -> Vec<(String, String, String, String, i32)> {
    let mut rows: Vec<(String, String, String, String, i32)> = session
        .query_unpaged(
            "SELECT column_name, type, kind, clustering_order, position \
             FROM system_schema.columns WHERE keyspace_name = 'keyscore' AND table_name = ?",
            (table,),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cqlsh_describes_tables_and_a_table() {
    let cqlsh = clients::python_tool("cqlsh");
    let (node, _session) = node_with_schema().await;
    let port = node.addr().port().to_string();
    let out = clients::run_ok(
        &cqlsh,
        &[
            "127.0.0.1",
            &port,
            "-e",
            "DESCRIBE TABLES; DESCRIBE TABLE keyscore.model_versions",
        ],
        &[],
    )
    .await;
    assert!(out.contains("Keyspace keyscore"), "{out}");
    for table in ["active_models", "model_changes", "model_versions"] {
        assert!(out.contains(table), "DESCRIBE TABLES lists {table}:\n{out}");
    }
    assert!(
        out.contains("CREATE TABLE keyscore.model_versions (")
            && out.contains("    spec text,")
            && out.contains("PRIMARY KEY (key, version)")
            && out.contains("WITH CLUSTERING ORDER BY (version DESC)"),
        "DESCRIBE TABLE prints the CREATE statement:\n{out}"
    );

    let out = clients::run_client(
        &cqlsh,
        &["127.0.0.1", &port, "-e", "DESCRIBE TABLE keyscore.nope"],
        &[],
    )
    .await;
    assert!(
        out.stderr
            .contains("'nope' not found in keyspace 'keyscore'"),
        "an unknown table is named: {}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn described_tables_are_recreated_exactly() {
    let (_node, session) = node_with_schema().await;
    let rows = describe(&session, "DESCRIBE KEYSPACE keyscore").await;
    let kinds: Vec<(&str, &str)> = rows
        .iter()
        .map(|(_, kind, name, _)| (kind.as_str(), name.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("keyspace", "keyscore"),
            ("table", "active_models"),
            ("table", "model_changes"),
            ("table", "model_history"),
            ("table", "model_quality"),
            ("table", "model_rollouts"),
            ("table", "model_spec_chunks"),
            ("table", "model_versions"),
        ]
    );
    assert!(rows.iter().all(|(ks, ..)| ks == "keyscore"));
    for (_, kind, table, create) in &rows[1..] {
        assert_eq!(kind, "table");
        let before = columns(&session, table).await;
        session
            .query_unpaged(format!("DROP TABLE keyscore.{table}"), &[])
            .await
            .unwrap();
        assert!(columns(&session, table).await.is_empty());
        session
            .query_unpaged(create.as_str(), &[])
            .await
            .unwrap_or_else(|e| panic!("the described statement runs ({e}):\n{create}"));
        assert_eq!(columns(&session, table).await, before, "{create}");
        let again = describe(&session, &format!("DESCRIBE TABLE keyscore.{table}")).await;
        assert_eq!(&again[0].3, create, "describing the recreated table");
    }
    // The keyspace statement round-trips too.
    let ks_create = &rows[0].3;
    assert!(
        ks_create.starts_with("CREATE KEYSPACE keyscore WITH replication = {")
            && ks_create.contains("'replication_factor': '1'"),
        "{ks_create}"
    );
    session
        .query_unpaged("DROP KEYSPACE keyscore", &[])
        .await
        .unwrap();
    session
        .query_unpaged(ks_create.as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("{ks_create}: {e}"));
    let again = describe(&session, "DESCRIBE KEYSPACE keyscore").await;
    assert_eq!(again.len(), 1, "a recreated keyspace has no tables yet");
    assert_eq!(&again[0].3, ks_create);
}
