//! Tests of the CQL test node (tests/support/cqlnode) driven by unmodified clients.

#[path = "support/cqlnode/mod.rs"]
mod cqlnode;

use cqlnode::CqlTestNode;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;

async fn connect(node: &CqlTestNode) -> Session {
    SessionBuilder::new()
        .known_node(node.addr().to_string())
        .build()
        .await
        .expect("the scylla driver connects to the test node")
}

#[tokio::test]
async fn smoke() {
    let node = CqlTestNode::start().await;
    let s = connect(&node).await;
    for f in ["001_keyspace.cql", "010_model_versions.cql", "020_active_models.cql", "030_model_changes.cql"] {
        let text = std::fs::read_to_string(format!("{}/cql/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        for stmt in cqlnode::split_script(&text) {
            s.query_unpaged(stmt, &[]).await.unwrap();
        }
    }
    let ins = s.prepare("INSERT INTO keyscore.model_versions (key, version, spec, author, created_at) VALUES (?,?,?,?,?)").await.unwrap();
    s.execute_unpaged(&ins, ("paris", 1i64, "{}", "ann", scylla::value::CqlTimestamp(5))).await.unwrap();
    let r = s.query_unpaged("SELECT version FROM keyscore.model_versions WHERE key = ? LIMIT 1", ("paris",)).await.unwrap();
    let (v,): (i64,) = r.into_rows_result().unwrap().single_row().unwrap();
    assert_eq!(v, 1);
    eprintln!("{:#?}", node.query_log());
}
