//! `keyscore rollback`: end a running canary, or else re-activate the previously active
//! version.

/// Arguments of `keyscore rollback`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model key.
    #[arg(long)]
    pub key: String,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    if let Some(canary) = store.rollout(&args.key).await?.and_then(|r| r.canary) {
        store.set_canary(&args.key, None).await?;
        println!(
            "ended the canary of {} v{}; the active version scores every record",
            args.key, canary.version
        );
        return Ok(());
    }
    let version = store.rollback(&args.key).await?;
    println!("rolled back {} to v{version}", args.key);
    Ok(())
}
