//! `keyscore init`: create the store's schema.

use crate::store::InitOptions;

/// Arguments of `keyscore init`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Replication of a new CQL keyspace: `DC=N[,DC=N...]` for NetworkTopologyStrategy (e.g.
    /// `dc1=3`), or a CQL map such as "{'class': 'NetworkTopologyStrategy', 'dc1': 3}".
    /// Without it a new keyspace gets one replica (SimpleStrategy), for development only. An
    /// existing keyspace is left as it is.
    #[arg(long)]
    pub replication: Option<String>,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let store = ctx.create_store().await?;
    let report = store
        .init_with(&InitOptions {
            replication: args.replication,
        })
        .await?;
    for note in &report.notes {
        println!("{note}");
    }
    println!("initialised {}", store.describe());
    Ok(())
}
