//! What keyscore's integration tests and benches share, compiled once for all of them.
//!
//! * [`cqlnode`]: the CQL test node, a single-node CQL native protocol v4 server in the test
//!   process with fault controls, and the client processes tests run against it.
//! * [`broker`]: a Tansu broker started per test, and Kafka client helpers.
//! * [`conformance`]: the model-store conformance suite; [`conformance_tests!`] turns it into one
//!   `#[tokio::test]` per check for an engine.
//! * [`faulty`]: [`faulty::FaultyStore`], a store wrapper that fails, counts and slows down calls
//!   on demand, over the `memory://` engine by default.
//! * [`specs`]: model specs the store tests write.
//! * [`rounds`]: interleaved rounds, the benches' summaries that hold up on a busy machine.
//! * [`tls`]: certificates made at run time for the TLS tests.
//!
//! It is a dev-dependency of keyscore and never published: the keyscore binary does not link it.
//!
//! ```
//! let key = keyscore_testkit::unique_key("paris");
//! assert!(key.starts_with("paris-"));
//! assert_ne!(key, keyscore_testkit::unique_key("paris"));
//! ```

pub mod broker;
pub mod conformance;
pub mod cqlnode;
pub mod faulty;
pub mod rounds;
pub mod specs;
pub mod tls;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A name no other run uses, for a model key or a topic: `prefix`, the time in nanoseconds, the
/// process id and a counter. Tests that write only under such names can share a long-lived
/// cluster and run alongside other runs.
pub fn unique_key(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}-{nanos:x}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
