//! keyscore's residence time, read from the `keyscore_residence_seconds` histogram of its
//! `/metrics` endpoint: bucket counts scraped before and after a paced phase, and quantiles
//! estimated from their difference. Shared by the e2e benches.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _};

/// Cumulative bucket counts of `keyscore_residence_seconds` by stage: `(upper bound, count)`.
pub(crate) type Buckets = BTreeMap<String, Vec<(f64, f64)>>;

/// Reads `/metrics` from keyscore's ops endpoint.
fn scrape(addr: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    ensure!(
        text.starts_with("HTTP/1.1 200"),
        "GET /metrics: {}",
        text.lines().next().unwrap_or("no answer")
    );
    Ok(text)
}

/// The value of label `name` in a metric line's `{...}`.
fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let at = line.find(&key)? + key.len();
    let end = line[at..].find('"')?;
    Some(&line[at..at + end])
}

/// The residence histogram's buckets in a `/metrics` text.
fn residence_buckets(metrics: &str) -> Buckets {
    let mut out = Buckets::new();
    for line in metrics.lines() {
        if !line.starts_with("keyscore_residence_seconds_bucket{") {
            continue;
        }
        let (Some(stage), Some(le)) = (label(line, "stage"), label(line, "le")) else {
            continue;
        };
        let Some(count) = line.rsplit(' ').next().and_then(|c| c.parse::<f64>().ok()) else {
            continue;
        };
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::NAN)
        };
        out.entry(stage.to_string())
            .or_default()
            .push((bound, count));
    }
    for v in out.values_mut() {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// A quantile estimated from histogram buckets, in ms.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct BucketQuantile {
    /// Linear interpolation inside the bucket (as Prometheus' `histogram_quantile`); the upper
    /// bound of the finite buckets when the quantile falls in `+Inf`.
    pub(crate) estimate_ms: f64,
    /// The bucket's lower bound.
    pub(crate) from_ms: f64,
    /// The bucket's upper bound (infinite for `+Inf`).
    pub(crate) to_ms: f64,
}

/// Residence of one stage over the paced phase.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Residence {
    pub(crate) stage: String,
    pub(crate) count: f64,
    pub(crate) p50: BucketQuantile,
    pub(crate) p99: BucketQuantile,
}

fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> Option<BucketQuantile> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(BucketQuantile {
                    estimate_ms: prev.0 * 1000.0,
                    from_ms: prev.0 * 1000.0,
                    to_ms: f64::INFINITY,
                });
            }
            let inside = count - prev.1;
            let frac = if inside > 0.0 {
                (rank - prev.1) / inside
            } else {
                1.0
            };
            return Some(BucketQuantile {
                estimate_ms: (prev.0 + (bound - prev.0) * frac) * 1000.0,
                from_ms: prev.0 * 1000.0,
                to_ms: bound * 1000.0,
            });
        }
        prev = (bound, count);
    }
    None
}

/// Residence per stage between two scrapes (`after` minus `before`).
pub(crate) fn residence(before: &Buckets, after: &Buckets) -> Vec<Residence> {
    let mut out = Vec::new();
    for (stage, buckets) in after {
        let diff: Vec<(f64, f64)> = buckets
            .iter()
            .map(|&(bound, count)| {
                let was = before
                    .get(stage)
                    .and_then(|b| b.iter().find(|(x, _)| *x == bound))
                    .map_or(0.0, |(_, c)| *c);
                (bound, count - was)
            })
            .collect();
        if let (Some(p50), Some(p99)) = (bucket_quantile(&diff, 0.5), bucket_quantile(&diff, 0.99))
        {
            out.push(Residence {
                stage: stage.clone(),
                count: diff.last().map_or(0.0, |d| d.1),
                p50,
                p99,
            });
        }
    }
    out
}

/// Scrapes keyscore's residence buckets, retrying until its ops endpoint answers.
pub(crate) fn scrape_residence(addr: &str) -> anyhow::Result<Buckets> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match scrape(addr) {
            Ok(text) => return Ok(residence_buckets(&text)),
            Err(err) if Instant::now() >= deadline => {
                return Err(err.context("scraping keyscore's /metrics"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The residence figures as a markdown table, with the sentence that introduces it.
pub(crate) fn markdown(residence: &[Residence]) -> String {
    let mut s = String::new();
    if residence.is_empty() {
        return s;
    }
    s.push_str(
        "\nkeyscore's own residence time over the paced phase (`keyscore_residence_seconds`; \
         bucket estimates, interpolated inside the bucket shown), ms:\n\n\
         | stage | records | p50 (bucket) | p99 (bucket) |\n|---|---:|---:|---:|\n",
    );
    let q = |b: &BucketQuantile| format!("{:.2} ({:.2}-{:.2})", b.estimate_ms, b.from_ms, b.to_ms);
    for r in residence {
        writeln!(
            s,
            "| {} | {:.0} | {} | {} |",
            r.stage,
            r.count,
            q(&r.p50),
            q(&r.p99)
        )
        .ok();
    }
    s
}
