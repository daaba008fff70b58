//! `keyscore promote`: activate a key's canary version and end the canary.

use anyhow::bail;

use crate::store::{CanaryChange, PointerMove};

/// Arguments of `keyscore promote`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model key.
    #[arg(long)]
    pub key: String,
    /// The version you believe is active, which the canary replaces. A retry after the
    /// promotion was done changes nothing and says so; another state is refused.
    #[arg(long, value_name = "N")]
    pub from: Option<i64>,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let key = &args.key;
    store.require_key(key).await?;
    let canary = store.rollout(key).await?.and_then(|r| r.canary);
    let Some(from) = args.from else {
        if let Some(canary) = canary {
            super::guard::check_builds(store.as_ref(), key, canary.version).await?;
        }
        let version = store.promote(key).await?;
        println!("promoted {key} v{version}: it is active and the canary ended");
        return Ok(());
    };
    let Some(canary) = canary else {
        let pointer = store
            .pointers(std::slice::from_ref(key))
            .await?
            .pop()
            .flatten();
        match pointer {
            Some(p) if p.version != from && p.previous == Some(from) => {
                println!(
                    "{key} already promoted from v{from} to v{}; nothing changed",
                    p.version
                );
                return Ok(());
            }
            _ => bail!(crate::store::Error::NoCanary { key: key.clone() }),
        }
    };
    super::guard::check_builds(store.as_ref(), key, canary.version).await?;
    // The pointer moves only if `from` is still active (one compare-and-set on CQL); the
    // canary ends after, as in `promote` without `--from`.
    store
        .move_active(
            key,
            PointerMove::Promote {
                version: canary.version,
                from,
            },
        )
        .await?;
    store
        .change_canary(
            key,
            CanaryChange::End {
                version: canary.version,
            },
        )
        .await?;
    println!(
        "promoted {key} v{}: it replaced v{from} and the canary ended",
        canary.version
    );
    Ok(())
}
