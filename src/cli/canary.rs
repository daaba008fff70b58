//! `keyscore canary`: let a candidate version score a share of a key's records.

use anyhow::bail;

use crate::store::{Canary, CanaryChange};

/// Arguments of `keyscore canary`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model key.
    #[arg(long)]
    pub key: String,
    /// The candidate version (it must be stored and build, and not be the active version).
    #[arg(long)]
    pub version: i64,
    /// The share of the key's records it scores, greater than 0 and at most 1.
    #[arg(long)]
    pub share: f64,
    /// The version you believe is active: refused, changing nothing, when another is.
    #[arg(long, value_name = "N")]
    pub expect_version: Option<i64>,
    /// Replace a canary of another version or share that already runs (else refused).
    #[arg(long)]
    pub replace: bool,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let key = &args.key;
    store.require_key(key).await?;
    crate::store::check_share(args.share)?;
    let active = store
        .pointers(std::slice::from_ref(key))
        .await?
        .pop()
        .flatten()
        .map(|p| p.version);
    if let Some(expect) = args.expect_version {
        if active != Some(expect) {
            bail!(crate::store::Error::UnexpectedVersion {
                key: key.clone(),
                expected: expect,
                active,
            });
        }
    }
    if active == Some(args.version) {
        bail!(
            "{key} v{} is the active version; a canary is another version to compare with it; \
             nothing changed",
            args.version
        );
    }
    let wanted = Canary {
        version: args.version,
        share: args.share,
        auto: None,
    };
    super::guard::check_builds(store.as_ref(), key, args.version).await?;
    // One conditional write: a canary started meanwhile by someone else is not replaced
    // without --replace.
    let changed = store
        .change_canary(
            key,
            CanaryChange::Start {
                canary: wanted,
                replace: args.replace,
            },
        )
        .await?;
    if !changed.changed {
        println!(
            "the canary of {key} v{} on {}% of its records already runs; nothing changed",
            args.version,
            args.share * 100.0
        );
        return Ok(());
    }
    if let Some(before) = changed.before {
        println!(
            "replaced the canary of {key} v{} on {}%",
            before.version,
            before.share * 100.0
        );
    }
    println!(
        "canary {key} v{} on {}% of its records; `keyscore promote --key {key}` activates it, `keyscore rollback --key {key} --from {}` ends it",
        args.version,
        args.share * 100.0,
        args.version
    );
    Ok(())
}
