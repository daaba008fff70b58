//! Interleaved rounds: a summary that holds up on a busy machine.
//!
//! Each case runs once per round, the cases one after another, so a burst of load from another
//! process lands on all of them alike; a case's figure is its median over the rounds (with the
//! best round shown too). Ratios between cases of one summary are then comparable even when
//! absolute times drift. Printed after the criterion groups, by `cargo bench` only.

use std::time::{Duration, Instant};

/// One measured case: `run(n)` does `n` calls of `units` units of work each and returns the
/// time they took.
pub struct Case<'a> {
    /// The row's name in the summary.
    pub name: String,
    /// Units of work per call: figures are per unit (per record of a batch, say).
    pub units: u64,
    /// Makes `n` calls and returns the time they took.
    pub run: Box<dyn FnMut(u64) -> Duration + 'a>,
}

impl<'a> Case<'a> {
    /// A case whose `run(n)` times `n` calls itself (on other threads, say).
    pub fn new(name: impl Into<String>, units: u64, run: impl FnMut(u64) -> Duration + 'a) -> Self {
        Self {
            name: name.into(),
            units,
            run: Box::new(run),
        }
    }

    /// A case timing `n` calls of `f` on this thread.
    pub fn calls(name: impl Into<String>, units: u64, mut f: impl FnMut() + 'a) -> Self {
        Self::new(name, units, move |n| {
            let start = Instant::now();
            for _ in 0..n {
                f();
            }
            start.elapsed()
        })
    }
}

/// A case's result in nanoseconds per unit.
#[derive(Debug, Clone, Copy)]
pub struct Figure {
    /// The median over the rounds.
    pub median: f64,
    /// The best round.
    pub best: f64,
}

/// Whether this is a real `cargo bench` run (criterion's test mode runs without `--bench`).
pub fn benching() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Runs `rounds` interleaved rounds of every case, each round about `round` long per case.
pub fn run(cases: &mut [Case<'_>], rounds: usize, round: Duration) -> Vec<Figure> {
    // Calibrate: calls per round, so each case's round lasts about `round`.
    let calls: Vec<u64> = cases
        .iter_mut()
        .map(|c| {
            let mut n = 1;
            loop {
                let t = (c.run)(n);
                if t >= round / 4 || n >= 1 << 40 {
                    let per_call = t.as_secs_f64() / n as f64;
                    return ((round.as_secs_f64() / per_call) as u64).max(1);
                }
                n *= 2;
            }
        })
        .collect();
    let mut samples = vec![Vec::with_capacity(rounds); cases.len()];
    for _ in 0..rounds {
        for ((c, &n), s) in cases.iter_mut().zip(&calls).zip(&mut samples) {
            let t = (c.run)(n);
            s.push(t.as_nanos() as f64 / (n * c.units) as f64);
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(f64::total_cmp);
            Figure {
                median: s[s.len() / 2],
                best: s[0],
            }
        })
        .collect()
}

/// Formats nanoseconds for a table.
pub fn ns(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.2} ms", v / 1e6)
    } else if v >= 10_000.0 {
        format!("{:.1} us", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0} ns")
    } else {
        format!("{v:.1} ns")
    }
}
