//! Logging: a `tracing` subscriber writing to stderr, as text or JSON.

use tracing_subscriber::{fmt, EnvFilter};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. The filter comes from `KEYSCORE_LOG` (or `RUST_LOG`), else
/// `default_level` (for example `info` or `warn`).
pub fn init(format: LogFormat, default_level: &str) {
    let filter = std::env::var("KEYSCORE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default_level));
    // Colours only for a terminal: a log written to a file or a pipe stays plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Shows an error with its chain of sources, once each: `A: B: C`. Errors keep their cause as
/// a source rather than repeating it in their own message, so logs use this to say it all.
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&chain_text(std::iter::successors(Some(self.0), |err| {
            err.source()
        })))
    }
}

/// The messages of an error chain (outermost first) joined with `: `, each said once: a
/// cause whose message the layer above already includes (as some libraries' errors do, the
/// CQL driver's among them) is left out, as is an empty one.
pub fn chain_text<'a>(
    chain: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> String {
    let mut out = String::new();
    let mut above = String::new();
    for err in chain {
        let text = err.to_string();
        if text.is_empty() || (!above.is_empty() && above.contains(&text)) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        above = text;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_says_each_cause_once() {
        let err = Outer(std::io::Error::other("inner"));
        assert_eq!(ErrorChain(&err).to_string(), "outer: inner");
    }

    /// An error that repeats its source in its own message, as some libraries' errors do.
    #[derive(Debug, thiserror::Error)]
    #[error("pool broken; last connection failed with: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot connect")]
    struct Top(#[source] Repeats);

    #[test]
    fn a_cause_the_layer_above_already_says_is_left_out() {
        let err = Top(Repeats(std::io::Error::other("connection refused")));
        assert_eq!(
            ErrorChain(&err).to_string(),
            "cannot connect: pool broken; last connection failed with: connection refused"
        );
        let err = anyhow::Error::new(Top(Repeats(std::io::Error::other("refused"))))
            .context("opening the model store");
        assert_eq!(
            chain_text(err.chain()),
            "opening the model store: cannot connect: pool broken; last connection failed \
             with: refused"
        );
    }
}
