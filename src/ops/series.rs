//! The status page's charts: throughput and scoring latency over the last minutes, sampled
//! from the process-wide counters and the scoring-latency histogram at a fixed interval and
//! kept in a ring of [`SAMPLES`] points (bounded memory whatever the run length).

use std::{collections::VecDeque, sync::Mutex, time::SystemTime};

use prometheus::{core::Collector, Histogram};
use serde::Serialize;

use crate::stream::metrics::unix_ms;

/// Points kept: five minutes at the default interval of 5 s.
pub(super) const SAMPLES: usize = 60;

/// One chart point: what happened between the previous sample and this one.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(super) struct Point {
    /// When the interval ended, Unix milliseconds.
    pub(super) at_ms: u64,
    /// Records read per second.
    pub(super) records_per_s: f64,
    /// Records scored per second.
    pub(super) scored_per_s: f64,
    /// Dead letters per second.
    pub(super) dead_letters_per_s: f64,
    /// The 99th percentile of per-record scoring time, microseconds (the upper bound of the
    /// histogram bucket it falls in), when anything was scored.
    pub(super) scoring_p99_us: Option<f64>,
    /// Mean per-record scoring time, microseconds, when anything was scored.
    pub(super) scoring_mean_us: Option<f64>,
}

/// The cumulative readings a point is the difference of.
#[derive(Debug, Clone, Default)]
struct Reading {
    at: Option<SystemTime>,
    records_in: u64,
    scored: u64,
    dead: u64,
    latency_count: u64,
    latency_sum: f64,
    buckets: Vec<(f64, u64)>,
}

/// The ring of points and the reading before the newest.
#[derive(Debug, Default)]
pub(super) struct Series {
    inner: Mutex<(Reading, VecDeque<Point>)>,
}

impl Series {
    /// Takes a reading of `totals` (records in, scored, dead letters) and `latency`, and
    /// appends the point since the previous reading.
    pub(super) fn sample(&self, totals: (u64, u64, u64), latency: &Histogram) {
        let now = SystemTime::now();
        let reading = Reading {
            at: Some(now),
            records_in: totals.0,
            scored: totals.1,
            dead: totals.2,
            latency_count: latency.get_sample_count(),
            latency_sum: latency.get_sample_sum(),
            buckets: buckets(latency),
        };
        let mut inner = self.inner.lock().expect("series lock");
        let (last, points) = &mut *inner;
        if let Some(point) = point_between(last, &reading) {
            if points.len() == SAMPLES {
                points.pop_front();
            }
            points.push_back(point);
        }
        *last = reading;
    }

    /// The points, oldest first.
    pub(super) fn points(&self) -> Vec<Point> {
        self.inner
            .lock()
            .expect("series lock")
            .1
            .iter()
            .cloned()
            .collect()
    }
}

/// The cumulative bucket counts of `h`, by upper bound.
fn buckets(h: &Histogram) -> Vec<(f64, u64)> {
    h.collect()
        .first()
        .and_then(|family| family.get_metric().first())
        .map(|m| {
            m.get_histogram()
                .get_bucket()
                .iter()
                .map(|b| (b.upper_bound(), b.cumulative_count()))
                .collect()
        })
        .unwrap_or_default()
}

fn point_between(a: &Reading, b: &Reading) -> Option<Point> {
    let secs = b.at?.duration_since(a.at?).ok()?.as_secs_f64();
    if secs <= 0.0 {
        return None;
    }
    let rate = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
    let scored = b.latency_count.saturating_sub(a.latency_count);
    let p99 = (scored > 0).then(|| {
        let wanted = (scored as f64 * 0.99).ceil() as u64;
        b.buckets
            .iter()
            .map(|(bound, count)| {
                let before = a
                    .buckets
                    .iter()
                    .find(|(x, _)| x == bound)
                    .map_or(0, |(_, c)| *c);
                (*bound, count.saturating_sub(before))
            })
            .find(|(_, n)| *n >= wanted)
            .map_or(f64::INFINITY, |(bound, _)| bound * 1e6)
    });
    Some(Point {
        at_ms: unix_ms(b.at?),
        records_per_s: rate(a.records_in, b.records_in),
        scored_per_s: rate(a.scored, b.scored),
        dead_letters_per_s: rate(a.dead, b.dead),
        scoring_p99_us: p99.filter(|p| p.is_finite()),
        scoring_mean_us: (scored > 0)
            .then(|| (b.latency_sum - a.latency_sum) / scored as f64 * 1e6),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::HistogramOpts;

    #[test]
    fn points_are_rates_and_latencies_between_readings_and_the_ring_is_bounded() {
        let h = Histogram::with_opts(HistogramOpts::new("t", "t").buckets(vec![1e-6, 1e-5, 1e-4]))
            .unwrap();
        let series = Series::default();
        series.sample((0, 0, 0), &h);
        assert!(series.points().is_empty(), "one reading is no interval");
        for _ in 0..99 {
            h.observe(5e-6);
        }
        h.observe(5e-5);
        std::thread::sleep(std::time::Duration::from_millis(20));
        series.sample((110, 100, 10), &h);
        let p = &series.points()[0];
        assert!(p.records_per_s > 0.0 && p.scored_per_s > 0.0 && p.dead_letters_per_s > 0.0);
        assert!((p.records_per_s / p.scored_per_s - 1.1).abs() < 1e-9);
        // 99 of 100 at or below 10 µs: the p99 is that bucket's bound.
        assert_eq!(p.scoring_p99_us, Some(10.0));
        let mean = p.scoring_mean_us.unwrap();
        assert!((mean - (99.0 * 5.0 + 50.0) / 100.0).abs() < 1e-6, "{mean}");
        for i in 0..2 * SAMPLES as u64 {
            std::thread::sleep(std::time::Duration::from_millis(1));
            series.sample((200 + i, 200 + i, 10), &h);
        }
        assert_eq!(series.points().len(), SAMPLES);
        assert_eq!(series.points().last().unwrap().scoring_p99_us, None);
    }
}
