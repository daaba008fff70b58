//! `keyscore upload`: check a model spec and store it as a new version.

use std::path::PathBuf;

use anyhow::Context as _;

/// Arguments of `keyscore upload`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model key (a city, a region, a tenant).
    #[arg(long)]
    pub key: String,
    /// The version number; default: the key's newest version plus one.
    #[arg(long)]
    pub version: Option<i64>,
    /// Activate the version right after storing it.
    #[arg(long)]
    pub activate: bool,
    /// The model spec JSON file (`-` for stdin).
    pub file: PathBuf,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the spec from stdin")?
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    let store = ctx.open_store().await?;
    let version = store.put_version(&args.key, args.version, &text).await?;
    if args.activate {
        store.activate(&args.key, version).await?;
        println!("uploaded and activated {} v{version}", args.key);
    } else {
        println!(
            "uploaded {} v{version} (not active: keyscore activate --key {} --version {version})",
            args.key, args.key
        );
    }
    Ok(())
}
