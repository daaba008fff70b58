//! `keyscore tail`: print the records of a topic (scored output, dead letters, input), without
//! joining a consumer group or committing anything.

use std::{
    io::Write as _,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::{BorrowedMessage, Headers, Message},
    Offset, TopicPartitionList,
};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::stream::kafka::options;

/// Arguments of `keyscore tail`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The topic to read.
    pub topic: String,
    /// Start at the oldest record of every partition (default: only records written from now
    /// on).
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop after this many records.
    #[arg(long)]
    pub count: Option<u64>,
    /// Print each record as a JSON object with its partition, offset, key, headers and value
    /// (the value embedded as JSON when it is JSON) instead of the bare value.
    #[arg(long)]
    pub headers: bool,
    /// Stop after this many seconds without a record (default: wait until interrupted).
    #[arg(long)]
    pub idle_timeout: Option<f64>,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let mut cfg = options::plain_config(&ctx.config.kafka);
    // A group id is needed to assign partitions; nothing joins it or commits to it.
    cfg.set("group.id", format!("keyscore-tail-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "10");
    for (k, v) in &ctx.config.kafka.consumer_options {
        cfg.set(k, v);
    }
    let consumer: BaseConsumer = cfg.create().context("creating the Kafka consumer")?;
    let cancel = CancellationToken::new();
    super::signal::cancel_on_signal(cancel.clone())?;
    let printed = tokio::task::spawn_blocking(move || tail(&consumer, &args, &cancel))
        .await
        .context("the consumer thread failed")??;
    tracing::info!(records = printed, "Done.");
    Ok(())
}

fn tail(consumer: &BaseConsumer, args: &Args, cancel: &CancellationToken) -> anyhow::Result<u64> {
    let metadata = consumer
        .fetch_metadata(Some(&args.topic), Duration::from_secs(10))
        .with_context(|| format!("reading the metadata of topic '{}'", args.topic))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == args.topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(
        !partitions.is_empty(),
        "topic '{}' does not exist",
        args.topic
    );
    let start = if args.from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for p in partitions {
        tpl.add_partition_offset(&args.topic, p, start)?;
    }
    consumer.assign(&tpl)?;

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let idle = args.idle_timeout.map(Duration::from_secs_f64);
    let mut last = Instant::now();
    let mut printed = 0u64;
    while args.count.is_none_or(|n| printed < n) && !cancel.is_cancelled() {
        match consumer.poll(Duration::from_millis(100)) {
            None => {
                out.flush()?;
                if idle.is_some_and(|d| last.elapsed() >= d) {
                    break;
                }
            }
            Some(Err(err)) => tracing::warn!(error = %err, "Consumer error."),
            Some(Ok(m)) => {
                last = Instant::now();
                printed += 1;
                if args.headers {
                    serde_json::to_writer(&mut out, &describe(&m))?;
                } else {
                    out.write_all(m.payload().unwrap_or_default())?;
                }
                out.write_all(b"\n")?;
            }
        }
    }
    out.flush()?;
    Ok(printed)
}

fn text(bytes: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

/// A record as a JSON object: partition, offset, key, headers and value.
fn describe(m: &BorrowedMessage<'_>) -> Value {
    let mut headers = Map::new();
    if let Some(hs) = m.headers() {
        for h in hs.iter() {
            headers.insert(h.key.to_string(), h.value.map_or(Value::Null, text));
        }
    }
    let value = match m.payload() {
        None => Value::Null,
        Some(p) => serde_json::from_slice(p).unwrap_or_else(|_| text(p)),
    };
    let mut o = Map::new();
    o.insert("partition".into(), m.partition().into());
    o.insert("offset".into(), m.offset().into());
    o.insert("key".into(), m.key().map_or(Value::Null, text));
    o.insert("headers".into(), Value::Object(headers));
    o.insert("value".into(), value);
    Value::Object(o)
}
