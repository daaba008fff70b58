//! `keyscore prune`: remove old versions of a key (or of every key), keeping the newest ones
//! and every version something names (active, rollback target, canary, shadow).

use crate::store::Pruned;

/// Arguments of `keyscore prune`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["key", "all_keys"])))]
pub struct Args {
    /// The model key.
    #[arg(long)]
    pub key: Option<String>,
    /// Every key of the store (read from the listing, one key at a time).
    #[arg(long)]
    pub all_keys: bool,
    /// How many of the newest versions to keep, besides those something names.
    #[arg(long)]
    pub keep: usize,
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let keys = match args.key {
        Some(key) => vec![key],
        None => store.list().await?.into_iter().map(|k| k.key).collect(),
    };
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut total = 0;
    for key in keys {
        let pruned = store.prune(&key, args.keep, args.dry_run).await?;
        total += pruned.removed.len();
        println!(
            "{key}: {verb} {}; {}",
            versions(&pruned.removed),
            kept(&pruned)
        );
    }
    if args.dry_run {
        println!("dry run: {total} versions would be removed; nothing was changed");
    }
    Ok(())
}

fn versions(list: &[i64]) -> String {
    if list.is_empty() {
        "nothing".to_string()
    } else {
        list.iter()
            .map(|v| format!("v{v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn kept(pruned: &Pruned) -> String {
    let mut out = format!("kept {}", versions(&pruned.kept));
    if !pruned.protected.is_empty() {
        out.push_str(&format!(
            " ({} in use: active, rollback target, canary or shadow)",
            versions(&pruned.protected)
        ));
    }
    out
}
