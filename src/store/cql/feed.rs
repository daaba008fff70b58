//! Change-feed arithmetic for the CQL backend: UTC day partitions and the cursor look-back.
//!
//! `model_changes` is partitioned by UTC day (`'YYYY-MM-DD'`) and clustered by `changed_at`,
//! a writer's clock in milliseconds. A cursor is such a timestamp. A poll reads every day
//! partition from the cursor's day (after the look-back) through today, at most
//! [`MAX_FEED_DAYS`] of them, for rows with `changed_at` after the cursor minus [`LOOK_BACK`].
//! The look-back tolerates writers whose clocks run behind the reader's by up to that much;
//! the trait allows the repeats it causes and forbids the misses it prevents.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far before the cursor a poll looks, to tolerate clock skew between writers.
pub(crate) const LOOK_BACK: Duration = Duration::from_secs(5);

/// The most day partitions one poll reads (today and the seven days before it). A watcher
/// that has been away longer must resync from the full listing.
pub(crate) const MAX_FEED_DAYS: i64 = 8;

const DAY_MS: i64 = 86_400_000;

/// Milliseconds since the Unix epoch, by this machine's clock.
pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The `changed_at` bound of a poll from `cursor_ms`: rows strictly after it are returned.
pub(crate) fn lookback_bound(cursor_ms: i64) -> i64 {
    let look_back = i64::try_from(LOOK_BACK.as_millis()).unwrap_or(i64::MAX);
    cursor_ms.saturating_sub(look_back)
}

/// The day partition a change at `ms` (Unix milliseconds, UTC) belongs to.
pub(crate) fn day_of(ms: i64) -> String {
    day_label(ms.div_euclid(DAY_MS))
}

/// The day partitions a poll from `cursor_ms` at `now_ms` reads, oldest first: from the day of
/// the look-back bound through today, but no more than [`MAX_FEED_DAYS`]. A cursor ahead of
/// this machine's clock (it came from a clock that runs fast) reads through the cursor's day.
pub(crate) fn feed_days(cursor_ms: i64, now_ms: i64) -> Vec<String> {
    let first = lookback_bound(cursor_ms).div_euclid(DAY_MS);
    let last = now_ms.div_euclid(DAY_MS).max(cursor_ms.div_euclid(DAY_MS));
    let first = first.max(last - (MAX_FEED_DAYS - 1));
    (first..=last).map(day_label).collect()
}

/// `'YYYY-MM-DD'` for a day number counted from 1970-01-01 (proleptic Gregorian calendar).
fn day_label(days: i64) -> String {
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Converts days since 1970-01-01 to a (year, month, day) date. The calendar repeats every
/// 400 years (146 097 days); within an era, years are counted from March so that the leap
/// day falls at the end of the year.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected dates and timestamps computed independently with Python's `datetime`.
    const LEAP_DAY_2024_LAST_2S: i64 = 1_709_251_198_000; // 2024-02-29T23:59:58Z
    const MARCH_1_2024_3S: i64 = 1_709_251_203_000; // 2024-03-01T00:00:03Z
    const NEW_YEAR_2024_MINUS_1MS: i64 = 1_704_067_199_999; // 2023-12-31T23:59:59.999Z
    const APRIL_30_2025_NOON: i64 = 1_746_014_400_000; // 2025-04-30T12:00:00Z

    #[test]
    fn day_labels_match_the_calendar() {
        for (days, label) in [
            (0, "1970-01-01"),
            (-1, "1969-12-31"),
            (10_957, "2000-01-01"),
            (11_016, "2000-02-29"),
            (18_321, "2020-02-29"),
            (19_782, "2024-02-29"),
            (19_783, "2024-03-01"),
            (20_088, "2024-12-31"),
            (20_089, "2025-01-01"),
        ] {
            assert_eq!(day_label(days), label, "day {days}");
        }
    }

    #[test]
    fn day_of_splits_at_utc_midnight() {
        assert_eq!(day_of(LEAP_DAY_2024_LAST_2S), "2024-02-29");
        assert_eq!(day_of(MARCH_1_2024_3S), "2024-03-01");
        assert_eq!(day_of(NEW_YEAR_2024_MINUS_1MS), "2023-12-31");
        assert_eq!(day_of(NEW_YEAR_2024_MINUS_1MS + 1), "2024-01-01");
    }

    #[test]
    fn look_back_is_five_seconds_before_the_cursor() {
        assert_eq!(lookback_bound(10_000), 5_000);
        assert_eq!(lookback_bound(i64::MIN), i64::MIN);
    }

    #[test]
    fn a_poll_within_a_day_reads_one_partition() {
        assert_eq!(
            feed_days(APRIL_30_2025_NOON, APRIL_30_2025_NOON + 1_000),
            ["2025-04-30"]
        );
    }

    #[test]
    fn the_look_back_reaches_into_the_previous_day_after_midnight() {
        // The cursor is 3 s after midnight; the look-back bound is 2 s before it.
        assert_eq!(
            feed_days(MARCH_1_2024_3S, MARCH_1_2024_3S + 1_000),
            ["2024-02-29", "2024-03-01"]
        );
    }

    #[test]
    fn a_poll_across_a_year_end_reads_both_years() {
        assert_eq!(
            feed_days(NEW_YEAR_2024_MINUS_1MS, NEW_YEAR_2024_MINUS_1MS + 2),
            ["2023-12-31", "2024-01-01"]
        );
    }

    #[test]
    fn an_old_cursor_reads_at_most_eight_days() {
        let days = feed_days(0, APRIL_30_2025_NOON);
        assert_eq!(days.len(), 8);
        assert_eq!(days.first().unwrap(), "2025-04-23");
        assert_eq!(days.last().unwrap(), "2025-04-30");
    }

    #[test]
    fn a_cursor_ahead_of_the_clock_still_reads_its_day() {
        assert_eq!(
            feed_days(MARCH_1_2024_3S + DAY_MS, MARCH_1_2024_3S),
            ["2024-03-01", "2024-03-02"]
        );
    }
}
