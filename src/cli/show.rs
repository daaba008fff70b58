//! `keyscore show`: a key's active (or a given) version, summarised, with its spec.

use anyhow::bail;

use crate::model::{spec_checksum, ModelSpec, Output};

/// Arguments of `keyscore show`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model key.
    #[arg(long)]
    pub key: String,
    /// A stored version; default: the active one.
    #[arg(long)]
    pub version: Option<i64>,
    /// Print the spec JSON only.
    #[arg(long)]
    pub json: bool,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let stored = match args.version {
        Some(v) => store.version(&args.key, v).await?,
        None => store.active(&args.key).await?.map(|a| a.model),
    };
    let Some(stored) = stored else {
        match args.version {
            Some(v) => bail!(
                "{} has no version {v}; `keyscore list` shows the versions",
                args.key
            ),
            None => bail!(
                "{} has no active version; `keyscore list` shows the keys",
                args.key
            ),
        }
    };
    if args.json {
        println!("{}", stored.spec_json);
        return Ok(());
    }
    let spec = ModelSpec::from_json(stored.spec_json.as_bytes())?;
    let model = spec.build();
    println!("key:       {}", stored.key);
    println!("version:   {}", stored.version);
    println!("checksum:  {}", spec_checksum(&stored.spec_json));
    println!(
        "kind:      {}",
        serde_json::to_value(&spec.model)?["kind"]
            .as_str()
            .unwrap_or("?")
    );
    println!("features:  {}", spec.features.join(", "));
    match &model {
        Ok(m) => match m.output() {
            Output::Regression => println!("output:    regression"),
            Output::Classification(c) => println!("output:    classes {}", c.join(", ")),
        },
        Err(err) => println!("status:    REFUSED: {err}"),
    }
    if let Some(meta) = &spec.metadata {
        println!("metadata:  {}", serde_json::to_string(meta)?);
    }
    Ok(())
}
