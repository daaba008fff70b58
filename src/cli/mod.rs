//! The `keyscore` subcommands, one file each. The store comes from `--store`, else
//! `KEYSCORE_STORE`, else the config file's `[store] url`, else `sqlite://keyscore.db`.

mod activate;
mod canary;
mod demo;
mod demo_seed;
mod guard;
mod history;
mod init;
mod list;
mod predict;
mod produce;
mod promote;
mod prune;
mod quality;
mod rollback;
mod score;
mod serve;
mod shadow;
mod show;
mod signal;
mod tail;
mod upload;
mod validate;

use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::{config::Config, store::ModelStore, telemetry::LogFormat};

/// The help heading of the options every subcommand takes.
const GLOBAL: &str = "Global options";

/// Score streaming records with per-key models whose weights live in a database.
#[derive(Debug, Parser)]
#[command(
    name = "keyscore",
    version,
    about,
    long_about = None,
    after_help = "Exit status: 0 done; 1 error; 2 bad command line; 3 `score`: dead letters over \
                  --max-dead-letter-ratio; 4 `score`: records read but none scored."
)]
pub struct Cli {
    /// Config file (TOML). Environment variables `KEYSCORE__SECTION__FIELD` override it.
    #[arg(long, global = true, env = "KEYSCORE_CONFIG", help_heading = GLOBAL)]
    pub config: Option<PathBuf>,
    /// Model store URL: sqlite://PATH or cql://HOST:PORT/KEYSPACE. Overrides the config.
    #[arg(long, global = true, env = "KEYSCORE_STORE", help_heading = GLOBAL)]
    pub store: Option<String>,
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "KEYSCORE_LOG_FORMAT",
        help_heading = GLOBAL
    )]
    pub log_format: LogFormat,
    /// Log at info level (default: warnings only for one-shot commands).
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    pub verbose: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the store's schema (idempotent).
    Init(init::Args),
    /// Check a model spec and store it as a new version of a key (not activated).
    Upload(upload::Args),
    /// Make a stored version the active one for a key.
    Activate(activate::Args),
    /// End a running canary; without one, re-activate the version active before the current one.
    Rollback(rollback::Args),
    /// Let a candidate version score a share of a key's records (chosen by record id).
    Canary(canary::Args),
    /// Activate a key's canary version and end the canary.
    Promote(promote::Args),
    /// Let a version score a key's records on the side; its outputs go to a side output only.
    Shadow(shadow::Args),
    /// List keys with their active version and stored versions.
    List(list::Args),
    /// Remove old versions of a key (or every key), keeping the newest and those in use.
    Prune(prune::Args),
    /// Show a key's active (or a given) version.
    Show(show::Args),
    /// Every recorded activation, rollback, canary and shadow change of a key, newest first.
    History(history::Args),
    /// A key's live quality: accuracy from labels and drift per version, newest window first.
    Quality(quality::Args),
    /// Check a model spec as an upload does, storing nothing (no store needed).
    Validate(validate::Args),
    /// Score one record with a key's active (or a given, not yet active) version.
    Predict(predict::Args),
    /// Score JSON lines from a file or stdin; scored lines to stdout, dead letters to stderr.
    #[command(
        after_help = "Exit status: 0 every record scored or dead-lettered within \
                            --max-dead-letter-ratio; 1 error; 3 dead letters over \
                            --max-dead-letter-ratio; 4 records read but none scored."
    )]
    Score(score::Args),
    /// The quickstart: seed an embedded store, stream records, swap a model mid-stream.
    Demo(demo::Args),
    /// Score records from Kafka topics as a member of a consumer group, until SIGINT/SIGTERM.
    Serve(serve::Args),
    /// Send JSON lines to a Kafka topic, keyed by each record's key field.
    Produce(produce::Args),
    /// Print the records of a Kafka topic.
    Tail(tail::Args),
}

impl Cli {
    /// The log level used when `KEYSCORE_LOG` is not set.
    /// One-shot commands leave the CQL driver's own logs out: they say what failed in their
    /// error, once.
    pub fn default_log_level(&self) -> &'static str {
        match (&self.command, self.verbose) {
            (_, true) | (Command::Serve(_), _) => "info",
            _ => "warn,scylla=off",
        }
    }

    /// Runs the chosen subcommand.
    pub async fn run(self) -> anyhow::Result<()> {
        let mut config = Config::load(self.config.as_deref())?;
        let store_given = self.store.is_some();
        if let Some(url) = self.store {
            config.store.url = url;
        }
        let ctx = Context {
            config,
            store_given,
        };
        match self.command {
            Command::Init(a) => init::run(&ctx, a).await,
            Command::Upload(a) => upload::run(&ctx, a).await,
            Command::Activate(a) => activate::run(&ctx, a).await,
            Command::Rollback(a) => rollback::run(&ctx, a).await,
            Command::Canary(a) => canary::run(&ctx, a).await,
            Command::Promote(a) => promote::run(&ctx, a).await,
            Command::Shadow(a) => shadow::run(&ctx, a).await,
            Command::Prune(a) => prune::run(&ctx, a).await,
            Command::List(a) => list::run(&ctx, a).await,
            Command::Show(a) => show::run(&ctx, a).await,
            Command::History(a) => history::run(&ctx, a).await,
            Command::Quality(a) => quality::run(&ctx, a).await,
            Command::Validate(a) => validate::run(a).await,
            Command::Predict(a) => predict::run(&ctx, a).await,
            Command::Score(a) => score::run(&ctx, a).await,
            Command::Demo(a) => demo::run(&ctx, a).await,
            Command::Serve(a) => serve::run(&ctx, a).await,
            Command::Produce(a) => produce::run(&ctx, a).await,
            Command::Tail(a) => tail::run(&ctx, a).await,
        }
    }
}

/// The exit statuses of `keyscore`, documented in `--help` and the README.
pub mod exit {
    /// The command did what it was asked.
    pub const OK: u8 = 0;
    /// An error: a bad argument value, a store that cannot be opened or refused the change, an
    /// input that cannot be read.
    pub const ERROR: u8 = 1;
    /// The command line could not be parsed (clap's status).
    pub const USAGE: u8 = 2;
    /// `score`: the share of dead letters went over `--max-dead-letter-ratio`.
    pub const DEAD_LETTER_RATIO: u8 = 3;
    /// `score`: records were read but none was scored (every one a dead letter).
    pub const NOTHING_SCORED: u8 = 4;
}

/// A command's failure with its own exit status (see [`exit`]); `main` prints the message
/// once and exits with the status.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failed {
    /// The exit status.
    pub status: u8,
    /// What went wrong, for the user.
    pub message: String,
}

/// The reader of stdout went away (`keyscore list | head`): the command stops, and `main` exits
/// quietly rather than reporting an error nobody asked about.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed by its reader")]
pub struct StdoutClosed;

/// Whether `err`, or an error in its chain, is a write to a closed pipe.
pub fn is_closed_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.is::<StdoutClosed>()
            || cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Writes `text` to stdout and flushes it; a closed stdout is [`StdoutClosed`] rather than the
/// panic `println!` gives.
pub(crate) fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        result => Ok(result?),
    }
}

/// What every subcommand gets: the resolved configuration.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) config: Config,
    /// Whether `--store` (or `KEYSCORE_STORE`) named the store.
    pub(crate) store_given: bool,
}

impl Context {
    /// Starts the operations endpoint on `listen` (nothing when empty) for `registry` and
    /// `metrics` (and `quality`, when measured), until `cancel` fires.
    /// For a Kafka consumer, `group` is its consumer-group state (readiness then needs an
    /// assignment).
    pub(crate) async fn start_ops(
        &self,
        listen: &str,
        registry: &Arc<crate::registry::ModelRegistry>,
        metrics: &Arc<crate::stream::Metrics>,
        group: Option<&Arc<crate::stream::kafka::GroupState>>,
        quality: Option<&Arc<crate::quality::Quality>>,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        if listen.is_empty() {
            return Ok(());
        }
        let mut ops = crate::ops::Ops::new(
            Arc::clone(registry),
            Arc::clone(metrics),
            group.cloned(),
            self.config.ops.clone(),
        );
        if let Some(q) = quality {
            ops = ops.with_quality(Arc::clone(q));
        }
        let ops = Arc::new(ops);
        let addr = ops.start(listen, cancel.clone()).await.with_context(|| {
            format!(
                "listening for operations on {listen}; set [ops] listen (or --ops-listen) to a free address, or \"\" to turn it off"
            )
        })?;
        // The address (a port picked for port 0) is logged at info; below that, say it here.
        if !tracing::enabled!(tracing::Level::INFO) {
            eprintln!("operations endpoint listening on http://{addr}/");
        }
        Ok(())
    }

    /// The registry settings of `[store]`.
    pub(crate) fn registry_config(&self) -> crate::registry::RegistryConfig {
        self.config.store.registry()
    }

    /// The quality stage `[quality]` asks for: `None` when it is off. With `labels` it
    /// remembers predictions for labels from elsewhere than `[quality] labels_topic`.
    pub(crate) fn quality(
        &self,
        labels: bool,
    ) -> anyhow::Result<Option<Arc<crate::quality::Quality>>> {
        let config = &self.config.quality;
        config
            .check()
            .map_err(|problem| anyhow::anyhow!("invalid configuration: {problem}"))?;
        Ok(config.enabled.then(|| match labels {
            true => crate::quality::Quality::with_labels(config.clone()),
            false => crate::quality::Quality::new(config.clone()),
        }))
    }

    /// The record format of `[records]`.
    pub(crate) fn record_format(&self) -> crate::stream::RecordFormat {
        self.config.records.format()
    }

    /// Opens the configured store, which must exist (a missing SQLite file is refused, naming
    /// `keyscore init`).
    pub(crate) async fn open_store(&self) -> anyhow::Result<Arc<dyn ModelStore>> {
        self.open_store_as(crate::store::OpenMode::Existing).await
    }

    /// Opens the configured store, creating a missing SQLite file: for `init` only.
    pub(crate) async fn create_store(&self) -> anyhow::Result<Arc<dyn ModelStore>> {
        self.open_store_as(crate::store::OpenMode::Create).await
    }

    async fn open_store_as(
        &self,
        mode: crate::store::OpenMode,
    ) -> anyhow::Result<Arc<dyn ModelStore>> {
        crate::store::open_with_mode(&self.config.store.url, &self.config.store.cql, mode)
            .await
            .with_context(|| {
                format!(
                    "opening the model store {}",
                    crate::store::redact_url(&self.config.store.url)
                )
            })
    }
}
