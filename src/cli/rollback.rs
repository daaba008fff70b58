//! `keyscore rollback`: re-activate the previously active version.

/// Arguments of `keyscore rollback`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model key.
    #[arg(long)]
    pub key: String,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let version = store.rollback(&args.key).await?;
    println!("rolled back {} to v{version}", args.key);
    Ok(())
}
