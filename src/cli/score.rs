//! `keyscore score`: JSON lines from a file or stdin to scored JSON lines and dead letters.
//!
//! The registry's watcher runs while it reads, so a long-running `score` on a stream picks up
//! activations without a restart.

use std::{path::PathBuf, sync::Arc, time::Instant};

use anyhow::Context as _;
use tokio::io::{AsyncWrite, BufReader};
use tokio_util::sync::CancellationToken;

use crate::{
    quality::{now_ms, task, Quality},
    registry::ModelRegistry,
    stream::Metrics,
    stream::{file, Scorer},
};

/// Arguments of `keyscore score`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input JSON lines; `-` or absent for stdin.
    #[arg(long, short)]
    pub input: Option<PathBuf>,
    /// Scored JSON lines; `-` or absent for stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Dead letters (JSON lines with reason, message, line and input); absent for stderr.
    #[arg(long)]
    pub dead_letters: Option<PathBuf>,
    /// Records scored together.
    #[arg(long, default_value_t = file::DEFAULT_BATCH)]
    pub batch: usize,
    /// Print a summary to stderr at the end.
    #[arg(long)]
    pub summary: bool,
    /// Shadow versions' outputs (JSON lines with `"shadow":true`); absent: not written.
    #[arg(long)]
    pub shadow_output: Option<PathBuf>,
    /// Serve metrics, health and the status page on this address while scoring (off by
    /// default for `score`).
    #[arg(long)]
    pub ops_listen: Option<String>,
    /// Exit with status 3 when dead letters are more than this share of the records read
    /// (0 to 1; e.g. 0.01 for 1%). Every record is still scored or dead-lettered first.
    #[arg(long, value_name = "RATIO", value_parser = parse_ratio)]
    pub max_dead_letter_ratio: Option<f64>,
    /// Labels (JSON lines `{"id": ..., "label": ..., "ts": ...}`, field names from
    /// `[quality]`) read after the input: each is joined to the prediction made for its id,
    /// the live figures are written to the store and automatic canaries are decided.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
}

/// A ratio in [0, 1].
fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "'{text}' is not a ratio: use a number from 0 to 1, e.g. 0.01 for 1%"
        )),
    }
}

fn is_std(p: &Option<PathBuf>) -> bool {
    p.as_ref().is_none_or(|p| p.as_os_str() == "-")
}

async fn create(path: &std::path::Path) -> anyhow::Result<tokio::fs::File> {
    tokio::fs::File::create(path)
        .await
        .with_context(|| format!("creating {}", path.display()))
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let registry = Arc::new(ModelRegistry::new(store, ctx.registry_config()));
    let cancel = CancellationToken::new();
    let watcher = registry.spawn_watcher(cancel.clone());
    let metrics = Arc::new(Metrics::default());
    let quality = ctx.quality(args.labels.is_some())?;
    if let Some(listen) = &args.ops_listen {
        ctx.start_ops(listen, &registry, &metrics, None, quality.as_ref(), &cancel)
            .await?;
    }
    if args.labels.is_some() && quality.is_none() {
        anyhow::bail!(
            "--labels needs the quality stage, which [quality] enabled = false turns off"
        );
    }
    let mut scorer = Scorer::new(Arc::clone(&registry), ctx.record_format()).with_metrics(metrics);
    if let Some(q) = &quality {
        scorer = scorer.with_quality(Arc::clone(q));
    }
    let mut shadow: Option<Box<dyn AsyncWrite + Unpin + Send>> = match &args.shadow_output {
        Some(p) => Some(Box::new(create(p).await?)),
        None => None,
    };

    let input: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if is_std(&args.input) {
        Box::new(tokio::io::stdin())
    } else {
        let path = args.input.as_ref().expect("checked above");
        Box::new(
            tokio::fs::File::open(path)
                .await
                .with_context(|| format!("opening {}", path.display()))?,
        )
    };
    let mut output: Box<dyn AsyncWrite + Unpin + Send> = if is_std(&args.output) {
        Box::new(tokio::io::stdout())
    } else {
        Box::new(create(args.output.as_ref().expect("checked above")).await?)
    };
    let mut dead: Box<dyn AsyncWrite + Unpin + Send> = match &args.dead_letters {
        None => Box::new(tokio::io::stderr()),
        Some(p) => Box::new(create(p).await?),
    };
    let started = Instant::now();
    let stats = file::score_lines_with_shadow(
        &scorer,
        BufReader::with_capacity(256 * 1024, input),
        &mut output,
        &mut dead,
        shadow
            .as_deref_mut()
            .map(|w| w as &mut (dyn AsyncWrite + Unpin + Send)),
        args.batch,
    )
    .await;
    cancel.cancel();
    let _ = watcher.await;
    let stats = stats?;
    if args.summary {
        eprint!("{}", stats.summary(started.elapsed()));
    }
    if let Some(q) = &quality {
        if let Some(path) = &args.labels {
            let counts = join_labels(q, path).await?;
            eprintln!("labels: {}", counts.summary());
        }
        let refused = registry.refused_canaries();
        match task::flush_with(q, registry.store().as_ref(), &refused, now_ms()).await {
            Ok(flushed) => {
                if args.labels.is_some() || args.summary {
                    eprintln!(
                        "quality: {} rows written (`keyscore quality --key KEY` shows them)",
                        flushed.rows
                    );
                }
                for v in flushed.verdicts {
                    eprintln!(
                        "automatic verdict: {} {} v{}: {}",
                        if v.promoted {
                            "promoted"
                        } else {
                            "rolled back"
                        },
                        v.key,
                        v.version,
                        v.reason
                    );
                }
            }
            Err(err) => eprintln!(
                "warning: live quality was not written to the store: {}",
                crate::telemetry::ErrorChain(&err)
            ),
        }
    }
    check_outcome(
        stats.scored_total(),
        stats.dead_total(),
        args.max_dead_letter_ratio,
    )
}

/// Joins the labels of the JSON lines file `path`, read a chunk of lines at a time (memory
/// stays bounded whatever the file's size).
async fn join_labels(
    quality: &Quality,
    path: &std::path::Path,
) -> anyhow::Result<crate::quality::LabelCounts> {
    use tokio::io::AsyncBufReadExt as _;
    const CHUNK: usize = 1024;
    let reading = || format!("reading labels from {}", path.display());
    let file = tokio::fs::File::open(path).await.with_context(reading)?;
    let mut reader = BufReader::new(file);
    let mut lines: Vec<Vec<u8>> = Vec::with_capacity(CHUNK);
    let mut counts = crate::quality::LabelCounts::default();
    loop {
        let mut line = Vec::new();
        let done = reader
            .read_until(b'\n', &mut line)
            .await
            .with_context(reading)?
            == 0;
        if !line.iter().all(u8::is_ascii_whitespace) {
            lines.push(line);
        }
        if lines.len() >= CHUNK || (done && !lines.is_empty()) {
            let chunk = quality.labels(lines.iter().map(Vec::as_slice), now_ms());
            counts = counts.add(&chunk);
            lines.clear();
        }
        if done {
            return Ok(counts);
        }
    }
}

/// The run's verdict: [`super::exit::NOTHING_SCORED`] when records were read and none scored,
/// [`super::exit::DEAD_LETTER_RATIO`] when dead letters exceed `max_ratio` of the records.
fn check_outcome(scored: u64, dead: u64, max_ratio: Option<f64>) -> anyhow::Result<()> {
    let read = scored + dead;
    if read > 0 && scored == 0 {
        return Err(super::Failed {
            status: super::exit::NOTHING_SCORED,
            message: format!(
                "nothing scored: all {dead} records read are dead letters (see their reasons; \
                 `keyscore list` shows the keys with models)"
            ),
        }
        .into());
    }
    if let Some(max) = max_ratio {
        let ratio = if read == 0 {
            0.0
        } else {
            dead as f64 / read as f64
        };
        if ratio > max {
            return Err(super::Failed {
                status: super::exit::DEAD_LETTER_RATIO,
                message: format!(
                    "{dead} of {read} records are dead letters ({:.2}%), over \
                     --max-dead-letter-ratio {max} ({}%)",
                    ratio * 100.0,
                    max * 100.0
                ),
            }
            .into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(result: anyhow::Result<()>) -> u8 {
        match result {
            Ok(()) => 0,
            Err(err) => err.downcast_ref::<super::super::Failed>().unwrap().status,
        }
    }

    #[test]
    fn the_verdict_names_nothing_scored_before_the_ratio() {
        assert_eq!(status(check_outcome(0, 0, Some(0.0))), 0);
        assert_eq!(status(check_outcome(0, 5, Some(0.5))), 4);
        assert_eq!(status(check_outcome(0, 5, None)), 4);
        assert_eq!(status(check_outcome(99, 1, Some(0.01))), 0);
        assert_eq!(status(check_outcome(98, 2, Some(0.01))), 3);
        assert_eq!(status(check_outcome(98, 2, None)), 0);
    }
}
