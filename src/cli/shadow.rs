//! `keyscore shadow`: let a version score a key's records on the side, or stop it.

/// Arguments of `keyscore shadow`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["version", "clear"])))]
pub struct Args {
    /// The model key.
    #[arg(long)]
    pub key: String,
    /// The shadow version (it must be stored).
    #[arg(long)]
    pub version: Option<i64>,
    /// End the key's shadow.
    #[arg(long)]
    pub clear: bool,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let version = if args.clear { None } else { args.version };
    store.set_shadow(&args.key, version).await?;
    match version {
        Some(v) => println!(
            "shadow {} v{v}: its outputs go to the shadow output only",
            args.key
        ),
        None => println!("shadow of {} ended", args.key),
    }
    Ok(())
}
