//! `keyscore list`: keys, their active version and stored versions.

/// Arguments of `keyscore list`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub(crate) async fn run(ctx: &super::Context, _args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let keys = store.list().await?;
    println!("{:<24} {:>7}  versions", "key", "active");
    for k in keys {
        let active = k
            .active
            .map(|v| format!("v{v}"))
            .unwrap_or_else(|| "-".into());
        let versions: Vec<String> = k.versions.iter().map(|v| format!("v{v}")).collect();
        println!("{:<24} {:>7}  {}", k.key, active, versions.join(" "));
    }
    Ok(())
}
