//! Canary and shadow versions: the deterministic record split. The built candidate models per
//! key are the registry's (`registry::KeyRollout`).
//!
//! * **Canary.** A candidate version scores a share of a key's records; the rest keep the
//!   active version. A record goes to the canary when [`canary_bucket`] of its id is below
//!   `share * 10000`: the FNV-1a 64-bit hash of the id's JSON text (for `"id":"r-7"` the five
//!   bytes `"r-7"` with their quotes) modulo 10000. Every process, before and after a restart,
//!   sends the same records to the canary, and growing the share only adds records to it. A
//!   record without an id is hashed by its whole payload. Canary outputs say `"canary": true`
//!   and, on Kafka, carry the header `keyscore-canary: true`. The canary applies to records
//!   scored by their key's own model, not to records scored by the fallback key's.
//! * **Shadow.** A shadow version scores every record its key's active version scores; its
//!   outputs go to a side output only (the `[kafka] shadow_topic`, or `score
//!   --shadow-output`), stamped `"shadow": true`, and the registry keeps how the two diverge.
//!
//! Both are stored per key in the model store (the store's `Rollout`) and announced on the
//! change feed, so every process picks them up like an activation. A candidate that does not
//! build is refused (logged and counted) and the key keeps scoring with its active version.

/// The canary share is resolved in steps of 1/10000.
pub const CANARY_BUCKETS: u64 = 10_000;

/// FNV-1a, 64 bits.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The canary bucket (0..10000) of a record id's JSON text.
pub fn canary_bucket(id_text: &[u8]) -> u64 {
    fnv1a64(id_text) % CANARY_BUCKETS
}

/// Whether a record with id text `id_text` goes to a canary of `share`.
pub fn in_canary(id_text: &[u8], share: f64) -> bool {
    let threshold = (share.clamp(0.0, 1.0) * CANARY_BUCKETS as f64).round() as u64;
    canary_bucket(id_text) < threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn the_split_is_stable_and_close_to_the_share() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("\"r-{i}\"")).collect();
        for share in [0.01, 0.1, 0.5] {
            let n = ids
                .iter()
                .filter(|id| in_canary(id.as_bytes(), share))
                .count();
            let expected = share * ids.len() as f64;
            assert!(
                (n as f64 - expected).abs() < expected * 0.1 + 20.0,
                "share {share}: {n} of {}",
                ids.len()
            );
        }
        // Growing the share only adds records.
        for id in &ids {
            if in_canary(id.as_bytes(), 0.1) {
                assert!(in_canary(id.as_bytes(), 0.2), "{id}");
            }
        }
        assert!(ids.iter().all(|id| in_canary(id.as_bytes(), 1.0)));
        assert!(!ids.iter().any(|id| in_canary(id.as_bytes(), 0.0)));
    }

    #[test]
    fn a_known_id_has_a_known_bucket() {
        // The split must never change between builds (it would move records between versions
        // mid-rollout). Computed independently with a few lines of Python.
        assert_eq!(fnv1a64(br#""r-7""#), 0xd8ea6354dd1b9f7d);
        assert_eq!(canary_bucket(br#""r-7""#), 5405);
        assert!(in_canary(br#""r-7""#, 0.5406));
        assert!(!in_canary(br#""r-7""#, 0.5405));
    }
}
