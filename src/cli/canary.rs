//! `keyscore canary`: let a candidate version score a share of a key's records.

use crate::store::Canary;

/// Arguments of `keyscore canary`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model key.
    #[arg(long)]
    pub key: String,
    /// The candidate version (it must be stored; it need not be active).
    #[arg(long)]
    pub version: i64,
    /// The share of the key's records it scores, greater than 0 and at most 1.
    #[arg(long)]
    pub share: f64,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    store
        .set_canary(
            &args.key,
            Some(Canary {
                version: args.version,
                share: args.share,
            }),
        )
        .await?;
    println!(
        "canary {} v{} on {}% of its records; `keyscore promote --key {0}` activates it, `keyscore rollback --key {0}` ends it",
        args.key,
        args.version,
        args.share * 100.0
    );
    Ok(())
}
