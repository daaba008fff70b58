//! `keyscore list`: keys, their active version and stored versions, a page at a time.
//!
//! A page costs one bounded read of the store's key listing plus one read of each listed key's
//! versions, so `list` stays cheap at 10^6 keys: it never scans the whole store unless asked
//! to with `--all`, and then still a page at a time, printing as it goes.

use futures::{stream, StreamExt, TryStreamExt};

/// Reads of keys' versions in flight at once.
const READS_IN_FLIGHT: usize = 32;

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
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    println!("{:<24} {:>7}  versions", "key", "active");
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
        for ((key, active), versions) in page.keys.into_iter().zip(versions) {
            let active = active
                .map(|v| format!("v{v}"))
                .unwrap_or_else(|| "-".into());
            let versions: Vec<String> = versions.iter().map(|v| format!("v{v}")).collect();
            println!("{key:<24} {active:>7}  {}", versions.join(" "));
        }
        match page.next {
            Some(next) if args.all => after = Some(next),
            Some(next) => {
                eprintln!(
                    "more keys follow: keyscore list --after {next} (or --all for every key)"
                );
                return Ok(());
            }
            None => return Ok(()),
        }
    }
}
