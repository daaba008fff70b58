//! `keyscore activate`: make a stored version the active one.

/// Arguments of `keyscore activate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model key.
    #[arg(long)]
    pub key: String,
    /// The version to activate.
    #[arg(long)]
    pub version: i64,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    store.activate(&args.key, args.version).await?;
    println!("activated {} v{}", args.key, args.version);
    Ok(())
}
