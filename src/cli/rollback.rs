//! `keyscore rollback`: end a running canary, or else re-activate the previously active
//! version. With `--from N` (the version the user believes is serving), a retry is recognised
//! as done and changes nothing.

use anyhow::bail;

use crate::store::{CanaryChange, ChangeAction, PointerMove};

/// Arguments of `keyscore rollback`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model key.
    #[arg(long)]
    pub key: String,
    /// The version to roll back from: the running canary's version (ends the canary), or the
    /// active version (re-activates the one before it). A retry after it was done changes
    /// nothing and says so; another state is refused, naming what is active.
    #[arg(long, value_name = "N")]
    pub from: Option<i64>,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    store.require_key(&args.key).await?;
    let canary = store.rollout(&args.key).await?.and_then(|r| r.canary);
    let Some(from) = args.from else {
        if let Some(canary) = canary {
            store.set_canary(&args.key, None).await?;
            println!(
                "ended the canary of {} v{}; the active version scores every record",
                args.key, canary.version
            );
        } else {
            let version = store.rollback(&args.key).await?;
            println!("rolled back {} to v{version}", args.key);
        }
        eprintln!(
            "hint: `keyscore rollback --key {} --from N` (N: the version to leave) is safe to retry",
            args.key
        );
        return Ok(());
    };
    match canary {
        Some(canary) if canary.version == from => {
            let ended = store
                .change_canary(&args.key, CanaryChange::End { version: from })
                .await?;
            if ended.changed {
                println!(
                    "ended the canary of {} v{from}; the active version scores every record",
                    args.key
                );
            } else {
                println!(
                    "the canary of {} v{from} already ended; nothing changed",
                    args.key
                );
            }
            return Ok(());
        }
        Some(canary) => bail!(
            "{key} runs a canary of v{canary}: `keyscore rollback --key {key} --from {canary}` \
             ends it; end it before rolling back the active version; nothing changed",
            key = args.key,
            canary = canary.version
        ),
        None => {}
    }
    let moved = match store
        .move_active(&args.key, PointerMove::RollbackFrom { from })
        .await
    {
        Err(err @ crate::store::Error::UnexpectedVersion { .. }) => {
            // A retry of a `--from` that ended a canary: the key's history says so.
            if canary_ended_last(store.as_ref(), &args.key, from).await? {
                println!(
                    "the canary of {} v{from} already ended; nothing changed",
                    args.key
                );
                return Ok(());
            }
            return Err(err.into());
        }
        moved => moved?,
    };
    if moved.changed {
        println!("rolled back {} from v{from} to v{}", args.key, moved.to);
    } else {
        println!(
            "{} already rolled back from v{from} to v{}; nothing changed",
            args.key, moved.to
        );
    }
    Ok(())
}

/// Whether the newest change of `key`'s history that concerns `version` ended its canary.
async fn canary_ended_last(
    store: &dyn crate::store::ModelStore,
    key: &str,
    version: i64,
) -> anyhow::Result<bool> {
    let history = store.history(key, 100).await?;
    Ok(history
        .iter()
        .find(|e| e.version == Some(version) || e.previous == Some(version))
        .is_some_and(|e| e.kind() == Some(ChangeAction::CanaryEnd)))
}
