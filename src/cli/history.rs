//! `keyscore history`: every recorded change of a key's active version, canary and shadow,
//! newest first, with who made it and when, and what decided an automatic verdict.

use serde_json::json;

use crate::store::{ChangeAction, HistoryEntry};

/// How `history` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// One aligned line per change.
    #[default]
    Text,
    /// One JSON object per line (for scripts).
    Json,
}

/// Arguments of `keyscore history`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model key.
    #[arg(long)]
    pub key: String,
    /// At most this many changes, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// What to print.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let key = &args.key;
    store.require_key(key).await?;
    let entries = store.history(key, args.limit).await?;
    let mut out = String::new();
    match args.format {
        Format::Json => {
            for e in &entries {
                let doc = json!({
                    "key": key,
                    "action": e.action,
                    "revision": e.revision,
                    "version": e.version,
                    "previous": e.previous,
                    "share": e.share,
                    "by": e.by,
                    "at": e.at_ms.map(super::show::utc_time),
                    "evidence": e.evidence.as_deref().map(evidence_value),
                });
                out.push_str(&format!("{doc}\n"));
            }
        }
        Format::Text => {
            if entries.is_empty() {
                out.push_str(&format!(
                    "{key} has no recorded change: no version was ever activated\n"
                ));
            }
            for e in &entries {
                out.push_str(&format!(
                    "{:<20}  {:<30}  {}\n",
                    e.at_ms
                        .map_or_else(|| "(time not recorded)".to_string(), super::show::utc_time),
                    describe(e),
                    e.by.as_deref().unwrap_or("(not recorded)")
                ));
            }
        }
    }
    super::write_stdout(&out)?;
    Ok(())
}

/// Stored evidence as JSON: the object it holds, or the text itself when it is not JSON (a row
/// written by hand).
fn evidence_value(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_string()))
}

/// The longest evidence a text line shows; `history --format json` shows all of it.
const EVIDENCE_CHARS: usize = 80;

/// A change in words: `activated v3 (was v2)`, `canary v4 on 10%`, ..., with `(automatic:
/// REASON)` after a verdict (the evidence's `reason`, else the start of the evidence).
pub(crate) fn describe(e: &HistoryEntry) -> String {
    let what = describe_change(e);
    match &e.evidence {
        Some(evidence) => {
            let value = evidence_value(evidence);
            // keyscore's verdicts say why in one line; show it whole.
            if let Some(reason) = value.get("reason").and_then(|r| r.as_str()) {
                return format!("{what} (automatic: {reason})");
            }
            let compact = value.to_string();
            let shown: String = compact.chars().take(EVIDENCE_CHARS).collect();
            let more = if shown.len() < compact.len() {
                "..."
            } else {
                ""
            };
            format!("{what} (automatic: {shown}{more})")
        }
        None => what,
    }
}

/// A change in words, without its evidence.
fn describe_change(e: &HistoryEntry) -> String {
    let v = |n: Option<i64>| n.map_or_else(|| "?".to_string(), |n| format!("v{n}"));
    let was = e
        .previous
        .map_or_else(String::new, |p| format!(" (was v{p})"));
    match e.kind() {
        Some(ChangeAction::Activate) => format!("activated {}{was}", v(e.version)),
        Some(ChangeAction::Rollback) => format!("rolled back to {}{was}", v(e.version)),
        Some(ChangeAction::Promote) => format!("promoted {}{was}", v(e.version)),
        Some(ChangeAction::Canary) => match e.share {
            Some(share) => format!("canary {} on {}%", v(e.version), share * 100.0),
            None => format!("canary {}", v(e.version)),
        },
        Some(ChangeAction::CanaryEnd) => format!("canary {} ended", v(e.version)),
        Some(ChangeAction::Shadow) => format!("shadow {}", v(e.version)),
        Some(ChangeAction::ShadowEnd) => format!("shadow {} ended", v(e.version)),
        None if e.action == crate::store::NOT_RECORDED => {
            format!("revision {} changed without a history row", e.revision)
        }
        None => format!("{} {}", e.action, v(e.version)),
    }
}
