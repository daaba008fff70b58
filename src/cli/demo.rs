//! `keyscore demo`: the quickstart. Seeds a fresh embedded store with the per-city models in
//! `seed/`, streams records through the scorer while the registry's watcher runs, activates a
//! new version of one city's model halfway through, and prints what happened.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use tokio_util::sync::CancellationToken;

use crate::{
    registry::ModelRegistry,
    store::{EmbeddedModelStore, ModelStore},
    stream::{
        emit,
        record::{Origin, OutputFormat, OutputShape, ScoredAt, Source},
        Input, Rejection, RunStats, Scored, Scorer, Sink,
    },
    synth::Generator,
};

/// Arguments of `keyscore demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A seed directory to use instead of the seed built into keyscore (models under
    /// `models/<key>/v<N>.json`, records in `records.jsonl`).
    #[arg(long)]
    pub seed_dir: Option<PathBuf>,
    /// The embedded store file the demo creates afresh.
    #[arg(long, default_value = "keyscore-demo.db")]
    pub db: PathBuf,
    /// Stream this many generated records instead of the seed records.
    #[arg(long)]
    pub records: Option<usize>,
    /// Pace the stream to last about this many seconds (0: as fast as possible; the swap then
    /// lands when the watcher's next poll happens, possibly after the last record).
    #[arg(long, default_value_t = 4.0)]
    pub seconds: f64,
    /// The key whose next version is activated mid-stream.
    #[arg(long, default_value = "paris")]
    pub swap_key: String,
    /// Where in the stream (0..1) to activate it.
    #[arg(long, default_value_t = 0.5)]
    pub swap_at: f64,
    /// Write scored records to this file.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// The seed models: (key, version, spec JSON, where it comes from), sorted; from `dir`, or the
/// seed built into keyscore.
fn seed_models(dir: Option<&Path>) -> anyhow::Result<Vec<(String, i64, String, String)>> {
    let Some(dir) = dir else {
        return Ok(super::demo_seed::MODELS
            .iter()
            .map(|(key, version, text)| {
                (
                    key.to_string(),
                    *version,
                    text.to_string(),
                    format!("the built-in seed's {key} v{version}"),
                )
            })
            .collect());
    };
    seed_model_files(dir)?
        .into_iter()
        .map(|(key, version, path)| {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok((key, version, text, path.display().to_string()))
        })
        .collect()
}

/// The model files of a seed directory: (key, version, path), sorted.
fn seed_model_files(dir: &Path) -> anyhow::Result<Vec<(String, i64, PathBuf)>> {
    let models = dir.join("models");
    let mut out = Vec::new();
    let entries = std::fs::read_dir(&models).with_context(|| {
        format!(
            "reading {} (the --seed-dir needs models/<key>/v<N>.json files)",
            models.display()
        )
    })?;
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let key = entry.file_name().to_string_lossy().into_owned();
        for file in std::fs::read_dir(entry.path())? {
            let path = file?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if let Some(v) = name
                .strip_prefix('v')
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<i64>().ok())
            {
                out.push((key.clone(), v, path));
            }
        }
    }
    out.sort();
    if out.is_empty() {
        bail!("no models found under {}", models.display());
    }
    Ok(out)
}

fn remove_db(db: &Path) -> anyhow::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", db.display()))
            }
            _ => {}
        }
    }
    Ok(())
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    // 1. A fresh embedded store with every seed version; the first version of each key active.
    // The seed first: without it, nothing is removed or created.
    let models = seed_models(args.seed_dir.as_deref())?;
    if ctx.store_given {
        eprintln!(
            "note: demo makes its own store, {} (--db); --store and KEYSCORE_STORE are not used",
            args.db.display()
        );
    }
    remove_db(&args.db)?;
    let store: Arc<dyn ModelStore> = Arc::new(EmbeddedModelStore::open(
        args.db.to_str().context("the --db path must be UTF-8")?,
    )?);
    store.init().await?;
    let mut swap_to = None;
    for (key, version, text, source) in &models {
        store
            .put_version(key, Some(*version), text)
            .await
            .with_context(|| format!("uploading {source}"))?;
        let first = models.iter().find(|m| m.0 == *key).map(|m| m.1);
        if first == Some(*version) {
            store.activate(key, *version).await?;
        } else if *key == args.swap_key && swap_to.is_none() {
            swap_to = Some(*version);
        }
    }
    let keys: std::collections::BTreeSet<&str> = models.iter().map(|m| m.0.as_str()).collect();
    eprintln!(
        "seeded {} with {} model versions for {} keys: {}",
        store.describe(),
        models.len(),
        keys.len(),
        keys.into_iter().collect::<Vec<_>>().join(", ")
    );
    let Some(swap_to) = swap_to else {
        bail!(
            "the seed has no second version of '{}' to swap to",
            args.swap_key
        );
    };

    // 2. The records.
    let lines: Vec<Vec<u8>> = match args.records {
        Some(n) => {
            let mut g = Generator::new(7);
            (0..n)
                .map(|_| g.next_record().to_json().into_bytes())
                .collect()
        }
        None => {
            let records = match &args.seed_dir {
                Some(dir) => {
                    let path = dir.join("records.jsonl");
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?
                }
                None => super::demo_seed::RECORDS.to_vec(),
            };
            records
                .split(|b| *b == b'\n')
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .map(<[u8]>::to_vec)
                .collect()
        }
    };

    // 3. Stream them through the scorer with the watcher running.
    let registry = Arc::new(ModelRegistry::new(
        Arc::clone(&store),
        ctx.registry_config(),
    ));
    let cancel = CancellationToken::new();
    let watcher = registry.spawn_watcher(cancel.clone());
    let scorer = Scorer::new(Arc::clone(&registry), ctx.record_format());
    let mut out_file = match &args.output {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };

    let total = lines.len();
    let swap_index = ((total as f64) * args.swap_at.clamp(0.0, 1.0)) as usize;
    let batch = 64usize;
    let pace =
        (args.seconds > 0.0).then(|| Duration::from_secs_f64(args.seconds) / total.max(1) as u32);
    let mut stats = RunStats::default();
    let mut activated_at: Option<(Instant, usize)> = None;
    let mut took_effect: Option<(Duration, usize)> = None;
    let mut stale_after_swap = 0u64;
    let mut before_effect = 0u64;
    let mut busy = Duration::ZERO;
    let mut samples: Vec<String> = Vec::new();
    let mut dead_samples: Vec<String> = Vec::new();
    let mut enriched_sample: Option<String> = None;
    let records = &ctx.config.records;
    let enriched = OutputFormat::new(
        OutputShape::Enriched,
        &records.enriched_field,
        records.fallback_fields.clone().into(),
    );
    let mut next_progress = 0usize;
    let started = Instant::now();
    let mut buf = Vec::new();
    for (chunk_no, chunk) in lines.chunks(batch).enumerate() {
        let first = chunk_no * batch;
        if activated_at.is_none() && first >= swap_index {
            store.activate(&args.swap_key, swap_to).await?;
            activated_at = Some((Instant::now(), first));
            eprintln!(
                "[{:>5.1}s] activated {} v{swap_to} in the store at record {first}",
                started.elapsed().as_secs_f64(),
                args.swap_key
            );
        }
        if let Some(pace) = pace {
            let due = started + pace * first as u32;
            tokio::time::sleep_until(due.into()).await;
        }
        let inputs: Vec<Input<'_>> = chunk
            .iter()
            .map(|l| Input {
                payload: l,
                key: None,
            })
            .collect();
        let t = Instant::now();
        let scoring = scorer.score(&inputs, Some(&mut stats)).await;
        busy += t.elapsed();
        let mut sink = DemoSink {
            first,
            chunk,
            scored_at: scoring.scored_at,
            enriched: &enriched,
            enriched_sample: &mut enriched_sample,
            swap_key: &args.swap_key,
            swap_to,
            started,
            activated_at,
            took_effect: &mut took_effect,
            stale_after_swap: &mut stale_after_swap,
            before_effect: &mut before_effect,
            samples: &mut samples,
            dead_samples: &mut dead_samples,
            out_file: out_file.as_mut(),
        };
        emit(
            &scoring,
            &scorer.format().output,
            &mut stats,
            &mut buf,
            &mut sink,
            scorer.quality().map(|q| &**q),
        )?;
        let done = first + chunk.len();
        if done >= next_progress || done == total {
            eprintln!(
                "[{:>5.1}s] {done:>8}/{total} records, {} scored, {} dead letters",
                started.elapsed().as_secs_f64(),
                stats.scored_total(),
                stats.dead_total()
            );
            next_progress = done + total.div_ceil(10);
        }
    }
    let elapsed = started.elapsed();
    // Let the watcher finish a pending swap if the stream was faster than its poll.
    if took_effect.is_none() {
        registry.poll().await?;
    }
    cancel.cancel();
    let _ = watcher.await;

    println!("\n== keyscore demo summary ==");
    print!("{}", stats.summary(elapsed));
    println!(
        "scoring work: {:.0} records/s of busy time ({:.2} s busy); the stream was paced to {:.1} s",
        total as f64 / busy.as_secs_f64().max(1e-9),
        busy.as_secs_f64(),
        args.seconds
    );
    match (activated_at, took_effect) {
        (Some((_, at_record)), Some((lag, first_new))) => println!(
            "swap: {} v{swap_to} activated at record {at_record}; first record scored by it: {first_new}, {:.0} ms after activation; {} records of {} scored by the old version after that",
            args.swap_key,
            lag.as_secs_f64() * 1e3,
            stale_after_swap,
            args.swap_key
        ),
        (Some((_, at_record)), None) if before_effect > 0 => println!(
            "swap: {} v{swap_to} activated at record {at_record}; the stream ended before the \
             watcher's next poll, so the {before_effect} later records of {} were scored by the \
             old version (pace the stream with --seconds to see the swap land)",
            args.swap_key, args.swap_key
        ),
        (Some((_, at_record)), None) => println!(
            "swap: {} v{swap_to} activated at record {at_record}, but no later record of {} arrived to show it",
            args.swap_key, args.swap_key
        ),
        _ => println!("swap: not reached"),
    }
    let accounted = stats.scored_total() + stats.dead_total();
    println!(
        "accounted for: {accounted} of {total} input records (scored + dead letters){}",
        if accounted as usize == total {
            ""
        } else {
            "  <-- MISMATCH"
        }
    );
    println!("example scored records:");
    for s in &samples {
        println!("  {s}");
    }
    if let Some(line) = &enriched_sample {
        println!(
            "the same record with [records] output = \"enriched\" (the input unchanged, keyscore's fields under \"{}\"):",
            records.enriched_field
        );
        println!("  {line}");
    }
    if !dead_samples.is_empty() {
        println!("example dead letters:");
        for d in &dead_samples {
            println!("  {d}");
        }
    }
    if accounted as usize != total {
        bail!(
            "{} records were not accounted for",
            total - accounted as usize
        );
    }
    Ok(())
}

/// The demo's outputs: watches for the swap taking effect, keeps a few example lines, and
/// writes scored records to `--output` when given.
struct DemoSink<'a> {
    /// Index of the batch's first record in the stream.
    first: usize,
    /// The batch's records.
    chunk: &'a [Vec<u8>],
    scored_at: ScoredAt,
    /// The enriched shape, for one example line.
    enriched: &'a OutputFormat,
    enriched_sample: &'a mut Option<String>,
    swap_key: &'a str,
    swap_to: i64,
    started: Instant,
    activated_at: Option<(Instant, usize)>,
    took_effect: &'a mut Option<(Duration, usize)>,
    stale_after_swap: &'a mut u64,
    /// Records of the key scored by the old version after the activation, before the swap
    /// took effect.
    before_effect: &'a mut u64,
    samples: &'a mut Vec<String>,
    dead_samples: &'a mut Vec<String>,
    out_file: Option<&'a mut std::io::BufWriter<std::fs::File>>,
}

impl Sink for DemoSink<'_> {
    type Error = std::io::Error;

    fn source(&self, input: usize) -> Source<'_> {
        Source {
            payload: &self.chunk[input],
            origin: Origin::Line((self.first + input + 1) as u64),
        }
    }

    fn scored(&mut self, input: usize, s: &Scored, encoded: &[u8]) -> std::io::Result<()> {
        if s.model.key == self.swap_key {
            if s.model.version == self.swap_to && self.took_effect.is_none() {
                if let Some((at, _)) = self.activated_at {
                    *self.took_effect = Some((at.elapsed(), self.first + input));
                    eprintln!(
                        "[{:>5.1}s] swap took effect: record {} scored by {} v{}, {:.0} ms after activation",
                        self.started.elapsed().as_secs_f64(),
                        self.first + input,
                        self.swap_key,
                        self.swap_to,
                        at.elapsed().as_secs_f64() * 1e3
                    );
                }
            } else if s.model.version != self.swap_to && self.took_effect.is_some() {
                *self.stale_after_swap += 1;
            } else if s.model.version != self.swap_to && self.activated_at.is_some() {
                *self.before_effect += 1;
            }
        }
        if let Some(f) = self.out_file.as_deref_mut() {
            use std::io::Write;
            f.write_all(encoded)?;
            f.write_all(b"\n")?;
        }
        if self.samples.len() < 3 {
            self.samples
                .push(String::from_utf8_lossy(encoded).into_owned());
            if self.enriched_sample.is_none() {
                let mut line = Vec::new();
                self.enriched
                    .encode(s, &self.source(input), &self.scored_at, &mut line);
                *self.enriched_sample = Some(String::from_utf8_lossy(&line).into_owned());
            }
        }
        Ok(())
    }

    fn dead_letter(&mut self, _: usize, r: &Rejection) -> std::io::Result<()> {
        if self.dead_samples.len() < 3 {
            self.dead_samples
                .push(format!("{}: {}", r.reason, r.message));
        }
        Ok(())
    }
}
