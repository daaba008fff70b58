//! The in-process `memory://` store: the conformance suite, and the same suite through the test
//! kit's fault wrapper with no fault injected (it must forward every call, the provided ones
//! included, without changing what the engine does).

use keyscore::store::{self, MemoryModelStore};
use keyscore_testkit::faulty::FaultyStore;
use keyscore_testkit::specs::VALID_SPEC;

// One test per check, each on a new store.
keyscore_testkit::conformance_tests!(conformance, async { MemoryModelStore::new() });

keyscore_testkit::conformance_tests!(conformance_through_faulty_store, async {
    FaultyStore::new()
});

#[tokio::test]
async fn open_by_url_gives_a_new_empty_store_each_time() {
    let first = store::open("memory://").await.unwrap();
    assert_eq!(first.describe(), "memory://");
    first.put_version("paris", None, VALID_SPEC).await.unwrap();
    let second = store::open("memory://").await.unwrap();
    assert!(second.list().await.unwrap().is_empty());
    assert_eq!(first.list().await.unwrap().len(), 1);
}
