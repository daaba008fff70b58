//! The time a batch was scored, as RFC 3339 UTC text with milliseconds, formatted once per
//! batch into a stack buffer (no allocation per record).

use std::time::{SystemTime, UNIX_EPOCH};

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`: when a batch was scored, in UTC.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ScoredAt {
    text: [u8; 24],
}

impl ScoredAt {
    /// Now.
    pub fn now() -> Self {
        Self::at(SystemTime::now())
    }

    /// `t` (before 1970 is written as 1970-01-01T00:00:00.000Z).
    pub fn at(t: SystemTime) -> Self {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self::from_unix_ms(ms)
    }

    /// `ms` milliseconds after the Unix epoch (clamped to years 1970 to 9999).
    pub fn from_unix_ms(ms: i64) -> Self {
        // 9999-12-31T23:59:59.999Z
        let ms = ms.clamp(0, 253_402_300_799_999);
        let secs = ms / 1000;
        let (days, rest) = (secs / 86_400, secs % 86_400);
        let (year, month, day) = civil_from_days(days);
        let mut text = *b"0000-00-00T00:00:00.000Z";
        put(&mut text[0..4], year);
        put(&mut text[5..7], month);
        put(&mut text[8..10], day);
        put(&mut text[11..13], rest / 3600);
        put(&mut text[14..16], rest % 3600 / 60);
        put(&mut text[17..19], rest % 60);
        put(&mut text[20..23], ms % 1000);
        Self { text }
    }

    /// The RFC 3339 text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.text).expect("ASCII digits and separators")
    }
}

impl std::fmt::Debug for ScoredAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Default for ScoredAt {
    fn default() -> Self {
        Self::from_unix_ms(0)
    }
}

/// Writes `n` as zero-padded decimal filling `out`.
fn put(out: &mut [u8], mut n: i64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian calendar; the
/// era-based conversion from Howard Hinnant's "chrono-compatible low-level date algorithms").
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::ScoredAt;

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(
            ScoredAt::from_unix_ms(0).as_str(),
            "1970-01-01T00:00:00.000Z"
        );
        // Leap day of a year divisible by 400, and the day after.
        assert_eq!(
            ScoredAt::from_unix_ms(951_782_400_007).as_str(),
            "2000-02-29T00:00:00.007Z"
        );
        assert_eq!(
            ScoredAt::from_unix_ms(951_868_799_999).as_str(),
            "2000-02-29T23:59:59.999Z"
        );
        // 2100 is not a leap year: Feb 28 is followed by Mar 1.
        assert_eq!(
            ScoredAt::from_unix_ms(4_107_542_400_000).as_str(),
            "2100-03-01T00:00:00.000Z"
        );
        assert_eq!(
            ScoredAt::from_unix_ms(1_796_300_000_123).as_str(),
            "2026-12-03T12:13:20.123Z"
        );
        assert_eq!(
            ScoredAt::from_unix_ms(i64::MAX).as_str(),
            "9999-12-31T23:59:59.999Z"
        );
    }
}
