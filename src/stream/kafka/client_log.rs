//! librdkafka's errors and log lines, said once: during an outage librdkafka reports the same
//! error every few hundred milliseconds, per client; keyscore logs the first of each kind and
//! then at most one line per [`QUIET`] with the number left out.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// The least time between two lines of one kind.
pub(crate) const QUIET: Duration = Duration::from_secs(30);

/// Kinds remembered at most (librdkafka's error codes and log facilities are a few dozen);
/// beyond it the memory is cleared, so it stays bounded whatever the input.
const MAX_KINDS: usize = 256;

/// When each kind was last logged and how many were left out since.
#[derive(Debug, Default)]
pub(crate) struct ClientLog {
    kinds: Mutex<HashMap<String, (Instant, u64)>>,
}

impl ClientLog {
    /// Whether a line of `kind` is logged at `now`: `Some(n)` with the number of lines of that
    /// kind left out since the last one, `None` to leave this one out.
    pub(crate) fn admit(&self, kind: &str, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().expect("client log lock");
        if let Some((last, left_out)) = kinds.get_mut(kind) {
            if now.duration_since(*last) < QUIET {
                *left_out += 1;
                return None;
            }
            let n = *left_out;
            *last = now;
            *left_out = 0;
            return Some(n);
        }
        if kinds.len() >= MAX_KINDS {
            kinds.clear();
        }
        kinds.insert(kind.to_string(), (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_is_said_once_per_quiet_period_with_the_count_left_out() {
        let log = ClientLog::default();
        let t0 = Instant::now();
        assert_eq!(log.admit("AllBrokersDown", t0), Some(0));
        for i in 1..=37 {
            assert_eq!(
                log.admit("AllBrokersDown", t0 + Duration::from_millis(i * 400)),
                None
            );
        }
        assert_eq!(
            log.admit("BrokerTransportFailure", t0),
            Some(0),
            "kinds are apart"
        );
        assert_eq!(log.admit("AllBrokersDown", t0 + QUIET), Some(37));
        assert_eq!(
            log.admit("AllBrokersDown", t0 + QUIET + Duration::from_secs(1)),
            None
        );
    }

    #[test]
    fn memory_stays_bounded() {
        let log = ClientLog::default();
        let t0 = Instant::now();
        for i in 0..10 * MAX_KINDS {
            log.admit(&format!("kind-{i}"), t0);
        }
        assert!(log.kinds.lock().unwrap().len() <= MAX_KINDS);
    }
}
