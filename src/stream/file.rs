//! The file pipeline: JSON lines in from a file or stdin, scored JSON lines out to a file or
//! stdout, dead letters (with reasons) to a separate file or stderr.

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::{Error, Input, Outcome, Scorer};
use crate::stats::RunStats;

/// How many lines are scored together.
pub const DEFAULT_BATCH: usize = 512;

/// A dead letter as written by the file pipeline: one JSON object per line.
#[derive(Debug, Serialize)]
struct DeadLine<'a> {
    reason: &'a str,
    message: &'a str,
    /// 1-based line number in the input.
    line: u64,
    /// The input line as read (invalid UTF-8 replaced).
    input: &'a str,
}

/// Scores every line of `input`, writing scored lines to `output` and dead letters to `dead`.
/// Blank lines are skipped (they are not records). Shadow outputs are dropped (see
/// [`score_lines_with_shadow`]). Returns the run's statistics.
pub async fn score_lines<R, W, D>(
    scorer: &Scorer,
    input: BufReader<R>,
    output: &mut W,
    dead: &mut D,
    batch: usize,
) -> Result<RunStats, Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    D: AsyncWrite + Unpin,
{
    score_lines_with_shadow(scorer, input, output, dead, None, batch).await
}

/// [`score_lines`], writing shadow versions' outputs (JSON lines with `"shadow":true`) to
/// `shadow` when given.
pub async fn score_lines_with_shadow<R, W, D>(
    scorer: &Scorer,
    input: BufReader<R>,
    output: &mut W,
    dead: &mut D,
    mut shadow: Option<&mut (dyn AsyncWrite + Unpin + Send)>,
    batch: usize,
) -> Result<RunStats, Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    D: AsyncWrite + Unpin,
{
    let mut shadow_out = Vec::new();
    let mut stats = RunStats::default();
    let mut input = input;
    let mut pending: Vec<(u64, Vec<u8>)> = Vec::with_capacity(batch);
    let mut line_no = 0u64;
    let mut out = Vec::with_capacity(64 * 1024);
    let mut dead_out = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = input
            .read_until(b'\n', &mut line)
            .await
            .map_err(|source| Error::Io {
                what: "reading input".into(),
                source,
            })?;
        let done = n == 0;
        if !done {
            line_no += 1;
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                pending.push((line_no, line));
            }
        }
        // Score when the batch is full, at the end, or when no more input is buffered (a slow
        // stream on stdin is answered line by line instead of waiting for a full batch).
        let idle = input.buffer().is_empty();
        if !pending.is_empty() && (pending.len() >= batch.max(1) || done || idle) {
            let inputs: Vec<Input<'_>> = pending
                .iter()
                .map(|(_, l)| Input {
                    payload: l,
                    key: None,
                })
                .collect();
            let scoring = scorer.score(&inputs, Some(&mut stats)).await;
            let outcomes = scoring.outcomes;
            if shadow.is_some() {
                for (_, s) in &scoring.shadows {
                    s.encode_into(&mut shadow_out);
                    shadow_out.push(b'\n');
                }
            }
            for ((n, line), outcome) in pending.iter().zip(&outcomes) {
                stats.observe(outcome);
                match outcome {
                    Outcome::Scored(s) => {
                        s.encode_into(&mut out);
                        out.push(b'\n');
                    }
                    Outcome::Rejected(r) => {
                        let text = String::from_utf8_lossy(line);
                        serde_json::to_writer(
                            &mut dead_out,
                            &DeadLine {
                                reason: r.reason.as_str(),
                                message: &r.message,
                                line: *n,
                                input: &text,
                            },
                        )
                        .expect("writing JSON to memory cannot fail");
                        dead_out.push(b'\n');
                    }
                }
            }
            write_all(output, &mut out, "writing scored records").await?;
            write_all(dead, &mut dead_out, "writing dead letters").await?;
            scorer.metrics().add_out(outcomes.len() as u64);
            if let Some(w) = shadow.as_deref_mut() {
                write_all(w, &mut shadow_out, "writing shadow outputs").await?;
                scorer
                    .metrics()
                    .add_shadow_out(scoring.shadows.len() as u64);
            }
            if idle {
                flush(output, "flushing scored records").await?;
                flush(dead, "flushing dead letters").await?;
                if let Some(w) = shadow.as_deref_mut() {
                    flush(w, "flushing shadow outputs").await?;
                }
            }
            pending.clear();
        }
        if done {
            break;
        }
    }
    flush(output, "flushing scored records").await?;
    flush(dead, "flushing dead letters").await?;
    if let Some(w) = shadow {
        flush(w, "flushing shadow outputs").await?;
    }
    Ok(stats)
}

async fn flush<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, what: &str) -> Result<(), Error> {
    w.flush().await.map_err(|source| Error::Io {
        what: what.into(),
        source,
    })
}

async fn write_all<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    buf: &mut Vec<u8>,
    what: &str,
) -> Result<(), Error> {
    if !buf.is_empty() {
        w.write_all(buf).await.map_err(|source| Error::Io {
            what: what.into(),
            source,
        })?;
        buf.clear();
    }
    Ok(())
}
