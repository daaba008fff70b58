//! Change-feed arithmetic for the CQL backend: partitions, the look-back window and the
//! identity of a feed row.
//!
//! `model_changes` is partitioned by (UTC day, bucket) and clustered by `changed_at`, the
//! writer's (or the coordinator's) clock in milliseconds. A cursor's position is the newest
//! `changed_at` read so far. A poll reads, in every bucket of every day from the look-back
//! bound's day through today (at most [`MAX_FEED_DAYS`]), the rows with `changed_at` after the
//! position minus the look-back; the cursor remembers the identities of the rows it reported in
//! that window, so a row is reported once however often the window is re-read, and a row that
//! lands late (a slow replica, a writer whose clock runs behind) is still reported if it lands
//! within the window. Rows later than that are left to the registry's periodic resync.

use std::hash::{DefaultHasher, Hash, Hasher};

/// Buckets per day partition. Writers spread keys over them; readers read them all.
pub(crate) const FEED_BUCKETS: i32 = 16;

/// The most days one poll reads (today and the seven days before it). A watcher that has been
/// away longer relies on its resync.
pub(crate) const MAX_FEED_DAYS: i64 = 8;

const DAY_MS: i64 = 86_400_000;

/// The CQL `date` encoding: days since the epoch, offset by 2^31 (native protocol v4, 6.19).
const DATE_EPOCH: i64 = 1 << 31;

pub(crate) use crate::store::now_millis;

/// The bucket of `key`: the first four bytes of the SHA-256 of the key, big-endian, modulo
/// [`FEED_BUCKETS`] (the Python package computes the same).
pub(crate) fn bucket_of(key: &str) -> i32 {
    let digest = crate::model::spec_sha256(key);
    let head = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    i32::try_from(head % FEED_BUCKETS.unsigned_abs()).unwrap_or(0)
}

/// The day number (days since 1970-01-01, UTC) of a time in Unix milliseconds.
pub(crate) fn day_number(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// A day number as a CQL `date` value.
pub(crate) fn cql_date(day: i64) -> u32 {
    u32::try_from(day + DATE_EPOCH).unwrap_or(0)
}

/// The `changed_at` bound of a poll from `position` with a look-back of `look_back_ms`: rows
/// strictly after it are read.
pub(crate) fn lookback_bound(position: i64, look_back_ms: i64) -> i64 {
    position.saturating_sub(look_back_ms)
}

/// The days a poll with `bound` at `now_ms` reads, oldest first: from the bound's day through
/// today, but no more than [`MAX_FEED_DAYS`]. A bound ahead of this machine's clock (it came
/// from a clock that runs fast) reads through the bound's day.
pub(crate) fn feed_days(bound: i64, now_ms: i64) -> Vec<i64> {
    let first = day_number(bound);
    let last = day_number(now_ms).max(first);
    (first.max(last - (MAX_FEED_DAYS - 1))..=last).collect()
}

/// The identity of one feed row: its time, key and revision (its primary key).
pub(crate) fn change_id(changed_at: i64, key: &str, revision: Option<i64>) -> u64 {
    let mut hasher = DefaultHasher::new();
    (changed_at, key, revision).hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected days computed independently with Python's `datetime`.
    const LEAP_DAY_2024_LAST_2S: i64 = 1_709_251_198_000; // 2024-02-29T23:59:58Z, day 19782
    const MARCH_1_2024_3S: i64 = 1_709_251_203_000; // 2024-03-01T00:00:03Z, day 19783
    const APRIL_30_2025_NOON: i64 = 1_746_014_400_000; // 2025-04-30T12:00:00Z, day 20208

    #[test]
    fn days_split_at_utc_midnight() {
        assert_eq!(day_number(LEAP_DAY_2024_LAST_2S), 19_782);
        assert_eq!(day_number(MARCH_1_2024_3S), 19_783);
        assert_eq!(day_number(-1), -1);
        assert_eq!(cql_date(0), 1 << 31);
        assert_eq!(cql_date(19_783), (1 << 31) + 19_783);
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        // Computed with Python: int.from_bytes(sha256(b"paris").digest()[:4], "big") % 16
        assert_eq!(bucket_of("paris"), 4);
        let mut seen = [0usize; FEED_BUCKETS as usize];
        for i in 0..16_000 {
            seen[bucket_of(&format!("key-{i}")) as usize] += 1;
        }
        assert!(seen.iter().all(|n| (800..1200).contains(n)), "{seen:?}");
    }

    #[test]
    fn a_poll_within_a_day_reads_one_day() {
        let bound = lookback_bound(APRIL_30_2025_NOON, 30_000);
        assert_eq!(feed_days(bound, APRIL_30_2025_NOON + 1_000), [20_208]);
    }

    #[test]
    fn the_look_back_reaches_into_the_previous_day_after_midnight() {
        let bound = lookback_bound(MARCH_1_2024_3S, 30_000);
        assert_eq!(feed_days(bound, MARCH_1_2024_3S + 1_000), [19_782, 19_783]);
    }

    #[test]
    fn an_old_cursor_reads_at_most_eight_days() {
        let days = feed_days(0, APRIL_30_2025_NOON);
        assert_eq!(days, (20_201..=20_208).collect::<Vec<_>>());
    }

    #[test]
    fn a_bound_ahead_of_the_clock_still_reads_its_day() {
        assert_eq!(
            feed_days(MARCH_1_2024_3S + DAY_MS, MARCH_1_2024_3S),
            [19_784]
        );
    }

    #[test]
    fn a_row_rewritten_with_a_newer_revision_is_a_new_change() {
        assert_eq!(change_id(5, "k", Some(1)), change_id(5, "k", Some(1)));
        assert_ne!(change_id(5, "k", Some(1)), change_id(5, "k", Some(2)));
        assert_ne!(change_id(5, "k", Some(1)), change_id(6, "k", Some(1)));
        assert_ne!(change_id(5, "k", Some(1)), change_id(5, "j", Some(1)));
    }
}
