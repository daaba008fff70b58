//! The store conformance suite against the CQL backend: on the project's CQL test node, or on a
//! real ScyllaDB/Cassandra when `KEYSCORE_TEST_CQL_URL` names one (for example
//! `cql://10.0.0.5:9042/keyscore_test`; credentials from `KEYSCORE_CQL_USERNAME` and
//! `KEYSCORE_CQL_PASSWORD`). Keys are unique per run, so a shared cluster is fine.
//!
//! Every check is a test of its own, on one keyspace: the node is started once for this test
//! binary and the schema applied once, and each test connects its own session.

use keyscore::store::{CqlModelStore, ModelStore};
use keyscore_testkit::cqlnode::CqlTestNode;
use tokio::sync::OnceCell;

/// `HOSTS/KEYSPACE` of the cluster under test, with the schema applied.
async fn target() -> &'static str {
    static TARGET: OnceCell<String> = OnceCell::const_new();
    TARGET
        .get_or_init(|| async {
            let target = match std::env::var("KEYSCORE_TEST_CQL_URL") {
                Ok(url) => url.trim_start_matches("cql://").to_string(),
                Err(_) => format!("{}/keyscore_conformance", CqlTestNode::shared_addr()),
            };
            eprintln!("conformance target: cql://{target}");
            // Once, not per test: concurrent schema changes can disagree on a real cluster.
            connect(&target)
                .await
                .init()
                .await
                .expect("init applies the schema");
            target
        })
        .await
}

async fn connect(target: &str) -> CqlModelStore {
    CqlModelStore::connect(target)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to cql://{target}: {e}"))
}

/// A session of this test's own on the shared keyspace (a session's tasks end with the test's
/// runtime).
async fn store() -> CqlModelStore {
    connect(target().await).await
}

keyscore_testkit::conformance_tests!(conformance, store());
