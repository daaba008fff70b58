//! `keyscore serve`: the Kafka scoring service. Joins the consumer group on the input topics,
//! scores each record with its key's model and produces it to the output topic (or the
//! dead-letter topic), until SIGINT or SIGTERM. See [`crate::stream::kafka`] for the delivery
//! guarantees.
//!
//! The registry's watcher runs alongside, so `keyscore activate` on the store is picked up
//! within `[store] refresh_interval_ms`, without a restart.

use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::signal::cancel_on_signal;
use crate::{
    quality::task,
    registry::ModelRegistry,
    stream::{
        kafka::{ensure_topics, GroupState, KafkaPipeline},
        Metrics, Scorer,
    },
};

/// Arguments of `keyscore serve`. The pipeline is described by the `[kafka]`, `[records]`,
/// `[store]` and `[ops]` sections of the configuration.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address of the operations endpoint (metrics, health, status page); overrides
    /// `[ops] listen`. An empty value turns it off.
    #[arg(long)]
    pub ops_listen: Option<String>,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    // The configuration's Debug output hides secret option values.
    debug!(config = ?ctx.config, "Configuration.");
    let kafka = &ctx.config.kafka;
    let store = ctx.open_store().await?;
    let registry = Arc::new(ModelRegistry::new(store, ctx.registry_config()));
    let metrics = Arc::new(Metrics::default());
    let group = Arc::new(GroupState::default());
    let cancel = CancellationToken::new();
    let quality = ctx.quality(false)?;
    let listen = args
        .ops_listen
        .unwrap_or_else(|| ctx.config.ops.listen.clone());
    ctx.start_ops(
        &listen,
        &registry,
        &metrics,
        Some(&group),
        quality.as_ref(),
        &cancel,
    )
    .await?;
    if kafka.create_topics {
        let shadow_topic = kafka.shadow_topic();
        ensure_topics(
            kafka,
            &[&kafka.output_topic, &kafka.dead_letter_topic, &shadow_topic],
        )
        .await
        .context("creating the output, dead-letter and shadow topics")?;
    }
    cancel_on_signal(cancel.clone())?;
    let watcher = registry.spawn_watcher(cancel.clone());
    let mut scorer = Scorer::new(Arc::clone(&registry), ctx.record_format()).with_metrics(metrics);
    // Live quality rows and automatic canary verdicts, written at the end of every slice.
    let quality_task = quality.map(|q| {
        scorer = scorer.clone().with_quality(Arc::clone(&q));
        tokio::spawn(task::run(q, Arc::clone(&registry), cancel.clone()))
    });
    let result = KafkaPipeline::new(kafka.clone(), scorer)
        .with_group(group)
        .run(cancel.clone())
        .await;
    cancel.cancel();
    let _ = watcher.await;
    if let Some(t) = quality_task {
        let _ = t.await;
    }
    let report = result?;
    info!(
        consumed = report.consumed,
        scored = report.scored,
        dead_letters = report.dead_total(),
        pauses = report.pauses,
        max_in_flight = report.max_in_flight_seen,
        p99_scoring_us = report.latency.quantile(0.99).as_micros() as u64,
        "Served."
    );
    Ok(())
}
