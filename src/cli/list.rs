//! `keyscore list`: keys, their active version and stored versions, a page at a time.
//!
//! A page costs one bounded read of the store's key listing plus one read of each listed key's
//! versions, so `list` stays cheap at 10^6 keys: it never scans the whole store unless asked
//! to with `--all`, and then still a page at a time, printing as it goes.

use futures::{stream, StreamExt, TryStreamExt};
use serde_json::json;

/// Reads of keys' versions in flight at once.
const READS_IN_FLIGHT: usize = 32;

/// How `list` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum Format {
    /// A table with a header line.
    #[default]
    Text,
    /// One JSON object per key and line: `{"key", "active", "versions"}`; when more keys
    /// follow, a last line `{"next": TOKEN}` to pass to `--after`.
    Json,
}

/// Arguments of `keyscore list`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keys per page, at most.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    limit: u32,
    /// Start after this page token (printed at the end of the previous page).
    #[arg(long, conflicts_with = "all")]
    after: Option<String>,
    /// Every key, page after page.
    #[arg(long)]
    all: bool,
    /// What to print.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// The same as `--format json`.
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Read and build every listed version, marking those that do not build (`v2!`, with the
    /// reason on the next line; `"refused": {"2": REASON}` in JSON). Reads every spec of the
    /// page: slower on large stores.
    #[arg(long)]
    check: bool,
}

/// The versions of `key` among `versions` that do not build, with the reason.
async fn refused(
    store: &dyn crate::store::ModelStore,
    key: &str,
    versions: &[i64],
) -> anyhow::Result<Vec<(i64, String)>> {
    let mut out = Vec::new();
    for &version in versions {
        if let Some(stored) = store.version(key, version).await? {
            if let Some(problem) = super::guard::build_problem(&stored.spec_json) {
                out.push((version, problem.to_string()));
            }
        }
    }
    Ok(out)
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let format = if args.json { Format::Json } else { args.format };
    if format == Format::Text {
        super::write_stdout(&format!("{:<24} {:>7}  versions\n", "key", "active"))?;
    }
    let mut after = args.after;
    loop {
        let page = store
            .key_page(after.as_deref(), args.limit as usize)
            .await?;
        let versions: Vec<Vec<i64>> =
            stream::iter(page.keys.iter().map(|(key, _)| store.versions(key)))
                .buffered(READS_IN_FLIGHT)
                .try_collect()
                .await?;
        let refusals: Vec<Vec<(i64, String)>> = if args.check {
            stream::iter(
                page.keys
                    .iter()
                    .zip(&versions)
                    .map(|((key, _), versions)| refused(store.as_ref(), key, versions)),
            )
            .buffered(READS_IN_FLIGHT)
            .try_collect()
            .await?
        } else {
            vec![Vec::new(); page.keys.len()]
        };
        let mut text = String::new();
        for (((key, active), versions), refused) in
            page.keys.into_iter().zip(versions).zip(refusals)
        {
            match format {
                Format::Json => {
                    let mut row = json!({"key": key, "active": active, "versions": versions});
                    if args.check {
                        let by_version: serde_json::Map<String, serde_json::Value> = refused
                            .iter()
                            .map(|(v, why)| (v.to_string(), json!(why)))
                            .collect();
                        row["refused"] = by_version.into();
                    }
                    text.push_str(&row.to_string());
                    text.push('\n');
                }
                Format::Text => {
                    let active = active
                        .map(|v| format!("v{v}"))
                        .unwrap_or_else(|| "-".into());
                    let versions: Vec<String> = versions
                        .iter()
                        .map(|v| {
                            let mark = if refused.iter().any(|(r, _)| r == v) {
                                "!"
                            } else {
                                ""
                            };
                            format!("v{v}{mark}")
                        })
                        .collect();
                    text.push_str(&format!("{key:<24} {active:>7}  {}\n", versions.join(" ")));
                    for (version, why) in &refused {
                        text.push_str(&format!("    {key} v{version} does not build: {why}\n"));
                    }
                }
            }
        }
        super::write_stdout(&text)?;
        match page.next {
            Some(next) if args.all => after = Some(next),
            Some(next) => {
                if format == Format::Json {
                    super::write_stdout(&format!("{}\n", json!({ "next": next })))?;
                }
                eprintln!(
                    "more keys follow: keyscore list --after {next} (or --all for every key)"
                );
                return Ok(());
            }
            None => return Ok(()),
        }
    }
}
