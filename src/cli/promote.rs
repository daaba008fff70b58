//! `keyscore promote`: activate a key's canary version and end the canary.

/// Arguments of `keyscore promote`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model key.
    #[arg(long)]
    pub key: String,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let version = store.promote(&args.key).await?;
    println!(
        "promoted {} v{version}: it is active and the canary ended",
        args.key
    );
    Ok(())
}
