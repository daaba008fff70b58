//! `keyscore activate`: make a stored version the active one, after checking that it builds.

use crate::store::PointerMove;

/// Arguments of `keyscore activate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model key.
    #[arg(long)]
    pub key: String,
    /// The version to activate.
    #[arg(long)]
    pub version: i64,
    /// The version you believe is active now: refused, changing nothing, when another is.
    /// Activating the version that is already active changes nothing either way.
    #[arg(long, value_name = "N")]
    pub expect_version: Option<i64>,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    store.require_key(&args.key).await?;
    super::guard::check_builds(store.as_ref(), &args.key, args.version).await?;
    let moved = store
        .move_active(
            &args.key,
            PointerMove::Activate {
                version: args.version,
                expect: args.expect_version,
            },
        )
        .await?;
    if moved.changed {
        match moved.from {
            Some(from) => println!("activated {} v{} (was v{from})", args.key, args.version),
            None => println!("activated {} v{}", args.key, args.version),
        }
    } else {
        println!(
            "{} v{} is already active; nothing changed",
            args.key, args.version
        );
    }
    Ok(())
}
