//! `keyscore produce`: send JSON lines to a topic, each keyed by its record's key field so
//! partitioning follows the key, as a stream job upstream of `serve` would.

use std::{
    io::BufRead,
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use anyhow::{bail, Context as _};
use rdkafka::{
    error::KafkaError,
    producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext},
    types::RDKafkaErrorCode,
    ClientContext,
};

use crate::stream::{
    kafka::{ensure_topics, options},
    record::{decode, KeySource, RecordFormat},
};

/// Arguments of `keyscore produce`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON lines to send, one record per line; `-` for stdin. Blank lines are skipped; other
    /// lines are sent as they are, valid or not.
    pub file: PathBuf,
    /// The topic to write to (created if missing when `[kafka] create_topics` is true).
    #[arg(long)]
    pub topic: String,
    /// The field whose value becomes the Kafka key (default: `[records] key_field`). Records
    /// without it are sent without a key.
    #[arg(long)]
    pub key_field: Option<String>,
}

#[derive(Default)]
struct Counting {
    acked: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.acked.fetch_add(1, Ordering::Relaxed),
            Err((err, _)) => {
                tracing::warn!(error = %err, "A record was not delivered.");
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let kafka = &ctx.config.kafka;
    if kafka.create_topics {
        ensure_topics(kafka, &[&args.topic]).await?;
    }
    let format = RecordFormat {
        key: KeySource::Field(
            args.key_field
                .clone()
                .unwrap_or_else(|| ctx.config.records.key_field.clone()),
        ),
        id_field: ctx.config.records.id_field.clone(),
        ..RecordFormat::default()
    };
    let producer: BaseProducer<Counting> = options::producer_config(kafka)
        .create_with_context(Counting::default())
        .context("creating the Kafka producer")?;
    let input: Box<dyn BufRead + Send> = if args.file.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&args.file)
                .with_context(|| format!("opening {}", args.file.display()))?,
        ))
    };
    let topic = args.topic.clone();
    let sent = tokio::task::spawn_blocking(move || send_lines(&producer, &topic, &format, input))
        .await
        .context("the producer thread failed")??;
    let (acked, failed) = sent;
    println!("produced {acked} records to {}", args.topic);
    if failed > 0 {
        bail!("{failed} records were not delivered to {}", args.topic);
    }
    Ok(())
}

fn send_lines(
    producer: &BaseProducer<Counting>,
    topic: &str,
    format: &RecordFormat,
    input: Box<dyn BufRead + Send>,
) -> anyhow::Result<(u64, u64)> {
    for (n, line) in input.split(b'\n').enumerate() {
        let mut line = line.with_context(|| format!("reading line {}", n + 1))?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let key = decode(&line, format, None).ok().map(|d| d.key);
        let mut record: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic).payload(&line[..]);
        if let Some(k) = key.as_deref() {
            record = record.key(k);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(50));
                }
                Err((err, _)) => bail!("sending line {}: {err}", n + 1),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(60))
        .context("waiting for the broker to acknowledge every record")?;
    let ctx = producer.context();
    Ok((
        ctx.acked.load(Ordering::Relaxed),
        ctx.failed.load(Ordering::Relaxed),
    ))
}
