//! The store conformance suite against the CQL backend: on the project's CQL test node, or on a
//! real ScyllaDB/Cassandra when `KEYSCORE_TEST_CQL_URL` names one (for example
//! `cql://10.0.0.5:9042/keyscore_test`; credentials from `KEYSCORE_CQL_USERNAME` and
//! `KEYSCORE_CQL_PASSWORD`). Keys are unique per run, so a shared cluster is fine.

#[path = "support/cqlnode/mod.rs"]
mod cqlnode;
mod support;

use cqlnode::CqlTestNode;
use keyscore::store::{CqlModelStore, ModelStore};
use support::conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_store_passes_the_conformance_suite() {
    let (_node, target) = match std::env::var("KEYSCORE_TEST_CQL_URL") {
        Ok(url) => (None, url.trim_start_matches("cql://").to_string()),
        Err(_) => {
            let node = CqlTestNode::start().await;
            let target = format!("{}/keyscore_conformance", node.addr());
            (Some(node), target)
        }
    };
    eprintln!("conformance target: cql://{target}");
    let store = CqlModelStore::connect(&target)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to cql://{target}: {e}"));
    store.init().await.expect("init applies the schema");
    store.init().await.expect("init is idempotent");
    conformance::run_all(&store).await;
}
