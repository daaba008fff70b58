//! The file pipeline: JSON lines in from a file or stdin, scored JSON lines out to a file or
//! stdout, dead letters (with reasons) to a separate file or stderr. A record without an id is
//! given `line-N`, N its 1-based line number in the input.

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::{
    output::{emit, Sink},
    record::{Origin, Rejection, Source},
    report::RunStats,
    Error, Input, Scored, Scorer,
};

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
    let mut encoded = Vec::with_capacity(1024);
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
            let mut sink = Lines {
                pending: &pending,
                out: &mut out,
                dead: &mut dead_out,
                shadow: shadow.is_some().then_some(&mut shadow_out),
            };
            let Ok(()) = emit(
                &scoring,
                &scorer.format().output,
                &mut stats,
                &mut encoded,
                &mut sink,
                scorer.quality().map(|q| &**q),
            );
            write_all(output, &mut out, "writing scored records").await?;
            write_all(dead, &mut dead_out, "writing dead letters").await?;
            scorer.metrics().add_out(scoring.outcomes.len() as u64);
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

/// A batch's outputs as JSON lines, gathered in memory and written once per batch.
struct Lines<'a> {
    /// The batch's (line number, line) pairs.
    pending: &'a [(u64, Vec<u8>)],
    out: &'a mut Vec<u8>,
    dead: &'a mut Vec<u8>,
    shadow: Option<&'a mut Vec<u8>>,
}

impl Sink for Lines<'_> {
    type Error = std::convert::Infallible;

    fn source(&self, input: usize) -> Source<'_> {
        let (line, payload) = &self.pending[input];
        Source {
            payload,
            origin: Origin::Line(*line),
        }
    }

    fn scored(&mut self, _: usize, _: &Scored, encoded: &[u8]) -> Result<(), Self::Error> {
        self.out.extend_from_slice(encoded);
        self.out.push(b'\n');
        Ok(())
    }

    fn dead_letter(&mut self, input: usize, rejection: &Rejection) -> Result<(), Self::Error> {
        let (line, text) = &self.pending[input];
        let text = String::from_utf8_lossy(text);
        serde_json::to_writer(
            &mut *self.dead,
            &DeadLine {
                reason: rejection.reason.as_str(),
                message: &rejection.message,
                line: *line,
                input: &text,
            },
        )
        .expect("writing JSON to memory cannot fail");
        self.dead.push(b'\n');
        Ok(())
    }

    fn shadow(&mut self, _: usize, _: &Scored, encoded: &[u8]) -> Result<(), Self::Error> {
        if let Some(out) = self.shadow.as_deref_mut() {
            out.extend_from_slice(encoded);
            out.push(b'\n');
        }
        Ok(())
    }
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
