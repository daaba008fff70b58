//! `keyscore init`: create the store's schema.

/// Arguments of `keyscore init`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub(crate) async fn run(ctx: &super::Context, _args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    store.init().await?;
    println!("initialised {}", store.describe());
    Ok(())
}
