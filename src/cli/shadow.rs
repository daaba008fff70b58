//! `keyscore shadow`: let a version score a key's records on the side, or stop it.

use anyhow::bail;

/// Arguments of `keyscore shadow`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["version", "clear"])))]
pub struct Args {
    /// The model key.
    #[arg(long)]
    pub key: String,
    /// The shadow version (it must be stored and build).
    #[arg(long)]
    pub version: Option<i64>,
    /// End the key's shadow.
    #[arg(long)]
    pub clear: bool,
    /// The version you believe is active: refused, changing nothing, when another is.
    #[arg(long, value_name = "N")]
    pub expect_version: Option<i64>,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let key = &args.key;
    store.require_key(key).await?;
    if let Some(expect) = args.expect_version {
        let active = store
            .pointers(std::slice::from_ref(key))
            .await?
            .pop()
            .flatten()
            .map(|p| p.version);
        if active != Some(expect) {
            bail!(crate::store::Error::UnexpectedVersion {
                key: key.clone(),
                expected: expect,
                active,
            });
        }
    }
    let version = if args.clear { None } else { args.version };
    let running = store.rollout(key).await?.and_then(|r| r.shadow);
    if running == version {
        match version {
            Some(v) => println!("{key} v{v} already runs in the shadow; nothing changed"),
            None => println!("{key} has no shadow; nothing changed"),
        }
        return Ok(());
    }
    if let Some(v) = version {
        super::guard::check_builds(store.as_ref(), key, v).await?;
    }
    store.set_shadow(key, version).await?;
    match version {
        Some(v) => println!("shadow {key} v{v}: its outputs go to the shadow output only"),
        None => println!("shadow of {key} ended"),
    }
    Ok(())
}
