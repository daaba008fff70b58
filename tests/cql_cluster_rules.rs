//! What keyscore's CQL store relies on from a real cluster, checked on the project's CQL test
//! node (which enforces the servers' rules: see `tests/cql_node_rules.rs`): keyspaces that allow
//! lightweight transactions on ScyllaDB 6, specs far larger than a request may be, feed rows that
//! land late, and writers that lose a compare-and-set.

use std::time::Duration;

use keyscore::model::spec_checksum;
use keyscore::store::{CqlModelStore, Error, InitOptions, ModelStore};
use keyscore_testkit::cqlnode::{CqlTestNode, Flavor};
use keyscore_testkit::specs::{large_forest_json, VALID_SPEC, VALID_SPEC_2};
use scylla::value::{CqlDate, CqlTimestamp};

async fn store(node: &CqlTestNode, keyspace: &str) -> CqlModelStore {
    CqlModelStore::connect(&format!("{}/{keyspace}", node.addr()))
        .await
        .expect("connects")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// On ScyllaDB 6, where a new NetworkTopologyStrategy keyspace gets tablets and tablets refuse
/// LWT, `init` creates the keyspace with tablets off and says so, and every write works; a
/// keyspace someone made with tablets is refused with what to do.
#[tokio::test]
async fn init_on_scylla_6_turns_tablets_off_and_refuses_a_tablets_keyspace() {
    let node = CqlTestNode::start_as(Flavor::Scylla6).await;
    let ks = store(&node, "prod").await;
    let report = ks
        .init_with(&InitOptions {
            replication: Some("datacenter1=1".into()),
        })
        .await
        .expect("init");
    let notes = report.notes.join("\n");
    assert!(notes.contains("ScyllaDB 6.2"), "{notes}");
    assert!(notes.contains("tablets are off"), "{notes}");
    assert!(notes.contains("NetworkTopologyStrategy"), "{notes}");
    assert!(!notes.contains("warning"), "{notes}");
    ks.put_version("paris", None, VALID_SPEC).await.unwrap();
    ks.activate("paris", 1)
        .await
        .expect("LWT works without tablets");
    assert_eq!(ks.active("paris").await.unwrap().unwrap().revision, 1);

    // A keyspace created by hand with the ScyllaDB 6 default (tablets) is refused.
    let raw = node.session().await;
    raw.query_unpaged(
        "CREATE KEYSPACE tabletsks WITH replication = \
         {'class': 'NetworkTopologyStrategy', 'datacenter1': 1}",
        (),
    )
    .await
    .unwrap();
    let err = store(&node, "tabletsks").await.init().await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("uses tablets") && message.contains("'enabled': false"),
        "{message}"
    );
}

/// Without `--replication`, `init` makes a one-replica keyspace and warns that it is for
/// development; on Cassandra it adds no tablets option (Cassandra refuses it).
#[tokio::test]
async fn init_without_replication_warns_it_is_for_development() {
    let node = CqlTestNode::start().await;
    let report = store(&node, "dev")
        .await
        .init_with(&InitOptions::default())
        .await
        .unwrap();
    let notes = report.notes.join("\n");
    assert!(notes.contains("on Cassandra"), "{notes}");
    assert!(notes.contains("warning: dev keeps one replica"), "{notes}");
    assert!(!notes.contains("tablets"), "{notes}");
    // Idempotent, and says the keyspace was left alone.
    let again = store(&node, "dev")
        .await
        .init_with(&InitOptions::default())
        .await
        .unwrap();
    assert!(
        again.notes.join("\n").contains("exists"),
        "{:?}",
        again.notes
    );
}

/// Forests of 20 MB and 50 MB of JSON round-trip exactly (the node refuses any frame or
/// mutation over 16 MiB, as the servers do, so this only works in chunks); a spec over the
/// store's limit is refused naming its size and the limit, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_specs_round_trip_in_chunks_and_oversized_ones_are_refused() {
    let node = CqlTestNode::start().await;
    let ks = store(&node, "big").await;
    ks.init().await.unwrap();
    for (mb, key) in [(20, "forest20"), (50, "forest50")] {
        let text = large_forest_json(mb << 20, mb as u64);
        assert!(text.len() >= mb << 20);
        let version = ks.put_version(key, None, &text).await.unwrap();
        let stored = ks.version(key, version).await.unwrap().expect("stored");
        assert!(
            stored.spec_json == text,
            "{key}: the spec read back differs"
        );
        ks.activate(key, version).await.unwrap();
        let active = ks.active(key).await.unwrap().expect("active");
        assert_eq!(spec_checksum(&active.model.spec_json), spec_checksum(&text));
    }
    let raw = node.session().await;
    let (chunks, size): (Option<i32>, Option<i64>) = raw
        .query_unpaged(
            "SELECT chunks, size FROM big.model_versions WHERE key = 'forest50' AND version = 1",
            (),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert!(chunks.unwrap() > 1, "{chunks:?}");
    assert!(size.unwrap() >= 50 << 20);

    let mut small = store(&node, "big").await;
    small.set_max_spec_bytes(1 << 20);
    let text = large_forest_json(20 << 20, 7);
    let err = small
        .put_version("toolarge", None, &text)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::SpecTooLarge {
                limit: 1_048_576,
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("1048576") && message.contains("bytes as stored"),
        "{message}"
    );
    assert!(ks.version("toolarge", 1).await.unwrap().is_none());
}

/// A chunk that goes missing or a spec whose bytes do not match its checksum is refused as
/// corrupt, never served.
#[tokio::test]
async fn a_damaged_chunked_spec_is_refused() {
    let node = CqlTestNode::start().await;
    let ks = store(&node, "damaged").await;
    ks.init().await.unwrap();
    ks.put_version("k", Some(1), &large_forest_json(2 << 20, 3))
        .await
        .unwrap();
    let raw = node.session().await;
    let (spec_id,): (Option<uuid::Uuid>,) = raw
        .query_unpaged(
            "SELECT spec_id FROM damaged.model_versions WHERE key = 'k' AND version = 1",
            (),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    raw.query_unpaged(
        "DELETE FROM damaged.model_spec_chunks WHERE spec_id = ? AND chunk = 1",
        (spec_id.unwrap(),),
    )
    .await
    .unwrap();
    let err = ks.version("k", 1).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("chunks"), "{err}");
}

/// A feed row that lands behind the watcher's position (a writer with a slow clock, a replica
/// that caught up late) is still reported if it is within the look-back, and only once.
#[tokio::test]
async fn late_feed_rows_are_reported_once() {
    let node = CqlTestNode::start().await;
    let ks = store(&node, "late").await;
    ks.init().await.unwrap();
    for key in ["early", "late"] {
        ks.put_version(key, Some(1), VALID_SPEC).await.unwrap();
        ks.put_version(key, Some(2), VALID_SPEC_2).await.unwrap();
        ks.activate(key, 1).await.unwrap();
    }
    // The watcher reads past everything so far.
    let first = ks.changes_since(ks.cursor().await.unwrap()).await.unwrap();
    let quiet = ks.changes_since(first.next.clone()).await.unwrap();
    assert!(quiet.keys.is_empty(), "re-announced: {:?}", quiet.keys);

    // Another writer's activation of `late`, announced with a clock 10 s behind.
    let raw = node.session().await;
    let applied: (bool,) = raw
        .query_unpaged(
            "UPDATE late.active_models SET version = 2, previous_version = 1, revision = 2 \
             WHERE key = 'late' IF revision = 1",
            (),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .first_row::<(bool,)>()
        .unwrap();
    assert!(applied.0);
    let at = now_ms() - 10_000;
    let bucket = i32::try_from(
        u32::from_be_bytes(
            keyscore::model::spec_sha256("late")[..4]
                .try_into()
                .unwrap(),
        ) % 16,
    )
    .unwrap();
    raw.query_unpaged(
        "INSERT INTO late.model_changes (day, bucket, changed_at, key, version, revision) \
         VALUES (?, ?, ?, 'late', 2, 2)",
        (
            CqlDate(((1i64 << 31) + at.div_euclid(86_400_000)) as u32),
            bucket,
            CqlTimestamp(at),
        ),
    )
    .await
    .unwrap();
    let changes = ks.changes_since(quiet.next.clone()).await.unwrap();
    assert_eq!(changes.keys, ["late"], "the late row is reported");
    let again = ks.changes_since(changes.next.clone()).await.unwrap();
    assert!(again.keys.is_empty(), "reported twice: {:?}", again.keys);
    let pointer = ks.active("late").await.unwrap().unwrap();
    assert_eq!((pointer.model.version, pointer.revision), (2, 2));
    tokio::time::timeout(Duration::from_secs(1), async {})
        .await
        .unwrap();
}

/// A writer that read the pointer before another writer moved it loses its compare-and-set and
/// tries again on the new state: `version` and `previous_version` always come from one write.
#[tokio::test]
async fn a_rollback_racing_an_activation_keeps_the_pointer_whole() {
    let node = CqlTestNode::start().await;
    let ks = store(&node, "race").await;
    ks.init().await.unwrap();
    for v in 1..=3 {
        ks.put_version("k", Some(v), VALID_SPEC).await.unwrap();
    }
    ks.activate("k", 1).await.unwrap();
    ks.activate("k", 2).await.unwrap();
    let other = store(&node, "race").await;
    let (a, b) = tokio::join!(ks.rollback("k"), other.activate("k", 3));
    let rolled_to = a.unwrap();
    b.unwrap();
    let raw = node.session().await;
    let (version, previous, revision): (Option<i64>, Option<i64>, Option<i64>) = raw
        .query_unpaged(
            "SELECT version, previous_version, revision FROM race.active_models WHERE key = 'k'",
            (),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!(revision, Some(4), "two changes after the two activations");
    // Either order is correct; a mix of the two is not.
    let rollback_first = (version, previous) == (Some(3), Some(rolled_to));
    let activate_first = rolled_to == 2 && (version, previous) == (Some(2), Some(3));
    assert!(
        (rollback_first && rolled_to == 1) || activate_first,
        "rollback returned {rolled_to}, pointer is {version:?}/{previous:?}"
    );
}

/// A keyspace whose tables an older keyscore made (`CREATE TABLE IF NOT EXISTS` keeps them) is
/// refused by `init`, naming the missing columns.
#[tokio::test]
async fn init_refuses_tables_made_by_an_older_keyscore() {
    let node = CqlTestNode::start().await;
    let raw = node.session().await;
    raw.query_unpaged(
        "CREATE KEYSPACE old WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        (),
    )
    .await
    .unwrap();
    raw.query_unpaged(
        "CREATE TABLE old.active_models (key text PRIMARY KEY, version bigint, previous_version bigint)",
        (),
    )
    .await
    .unwrap();
    let err = store(&node, "old").await.init().await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("old.active_models") && message.contains("lacks revision"),
        "{message}"
    );
}
