//! `keyscore upload`: check model specs and store them as new versions: one spec for one key,
//! or many keys at once from a directory (`DIR/<key>.json` or `DIR/<key>/<version>.json`) or a
//! JSON-lines file (`{"key": ..., "spec": {...}}` per line, optionally `"version": N`).
//!
//! Bulk uploads go through the store in chunks ([`CHUNK`] specs: one transaction on SQLite),
//! with the same checks as a single upload. A spec that does not build is reported by key with
//! its reason and nothing of it is stored; the rest still go in, unless `--all-or-nothing`,
//! which checks every spec first and stores nothing if any is refused. `--report FILE` writes
//! each spec's outcome as a JSON line, for programs that upload (the Python package).

use std::{
    io::{BufRead, IsTerminal as _},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{bail, Context as _};
use serde::Deserialize;

use crate::store::{check_key, check_spec, ModelStore, NewVersion};

/// Specs read, checked and stored together, at most.
const CHUNK: usize = 10_000;

/// Refusals listed by name in the summary, at most (the rest are counted).
const LISTED_REFUSALS: usize = 20;

/// Arguments of `keyscore upload`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["file", "dir", "jsonl"])))]
pub struct Args {
    /// The model key (a city, a region, a tenant), with FILE.
    #[arg(long, required_unless_present_any = ["dir", "jsonl"], conflicts_with_all = ["dir", "jsonl"])]
    pub key: Option<String>,
    /// The version number, with FILE; default: the key's newest version plus one.
    #[arg(long, requires = "key")]
    pub version: Option<i64>,
    /// Activate each version right after storing it.
    #[arg(long)]
    pub activate: bool,
    /// The model spec JSON file (`-` for stdin).
    pub file: Option<PathBuf>,
    /// Upload one spec per key from a directory: `DIR/<key>.json`, or `DIR/<key>/<version>.json`
    /// (the version as a number, optionally prefixed with `v`).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Upload from a JSON-lines file: one `{"key": ..., "spec": {...}}` per line, optionally
    /// with `"version": N`.
    #[arg(long, value_name = "FILE")]
    pub jsonl: Option<PathBuf>,
    /// With --dir or --jsonl: check every spec first and store nothing if any is refused.
    #[arg(long)]
    pub all_or_nothing: bool,
    /// With --dir or --jsonl: write one JSON line per spec to FILE, in input order:
    /// `{"key": ..., "version": N, "activated": BOOL}` when stored, with `"error": "..."` when
    /// refused (no version) or stored but not activated. A spec without a line was not stored.
    #[arg(long, value_name = "FILE", conflicts_with = "key")]
    pub report: Option<PathBuf>,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    if let Some(dir) = &args.dir {
        let items = dir_items(dir)?;
        return upload_many(ctx, &args, items.into_iter().map(Ok)).await;
    }
    if let Some(path) = &args.jsonl {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let lines = std::io::BufReader::new(file).lines().enumerate();
        let items = lines.map(|(i, line)| {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            jsonl_item(&line).with_context(|| format!("{} line {}", path.display(), i + 1))
        });
        return upload_many(ctx, &args, items).await;
    }
    let file = args.file.as_ref().expect("clap requires a source");
    let key = args.key.as_deref().expect("clap requires --key with FILE");
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the spec from stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let store = ctx.open_store().await?;
    let same_as = identical_latest(store.as_ref(), key, &text).await?;
    let version = store.put_version(key, args.version, &text).await?;
    if let Some(latest) = same_as {
        eprintln!(
            "note: the spec is identical to {key} v{latest}; v{version} is a copy of it \
             (`keyscore prune` removes unused versions)"
        );
    }
    if args.activate {
        store.activate(key, version).await?;
        println!("uploaded and activated {key} v{version}");
    } else {
        println!("uploaded {key} v{version} (not active: keyscore activate --key {key} --version {version})");
    }
    Ok(())
}

/// The newest stored version of `key` when its spec is the same as `text` once both are in
/// canonical form; `None` otherwise (or for a spec that does not decode: the upload says why).
async fn identical_latest(
    store: &dyn crate::store::ModelStore,
    key: &str,
    text: &str,
) -> anyhow::Result<Option<i64>> {
    if crate::store::check_key(key).is_err() {
        return Ok(None);
    }
    let Some(&latest) = store.versions(key).await?.last() else {
        return Ok(None);
    };
    let stored = store.version(key, latest).await?;
    Ok(stored
        .filter(|s| s.spec_json == crate::model::canonical_spec_text(text))
        .map(|_| latest))
}

/// One line of a `--jsonl` file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    key: String,
    #[serde(default)]
    version: Option<i64>,
    #[serde(borrow)]
    spec: &'a serde_json::value::RawValue,
}

fn jsonl_item(line: &str) -> anyhow::Result<NewVersion> {
    let line: Line<'_> = serde_json::from_str(line)
        .context("expected {\"key\": \"...\", \"spec\": {...}} with an optional \"version\"")?;
    Ok(NewVersion {
        key: line.key,
        version: line.version,
        spec_json: line.spec.get().to_string(),
    })
}

/// The specs of a `--dir` upload, sorted by key then version.
fn dir_items(dir: &Path) -> anyhow::Result<Vec<NewVersion>> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    };
    let mut items = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            for inner in std::fs::read_dir(&path)? {
                let file = inner?.path();
                let Some(version) = file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .filter(|_| file.extension().is_some_and(|e| e == "json"))
                    .map(|s| s.trim_start_matches('v'))
                else {
                    continue;
                };
                let version = version.parse::<i64>().with_context(|| {
                    format!(
                        "{}: the file name must be the version number, e.g. 3.json or v3.json",
                        file.display()
                    )
                })?;
                items.push(NewVersion {
                    key: name.to_string(),
                    version: Some(version),
                    spec_json: read(&file)?,
                });
            }
        } else if let Some(key) = name.strip_suffix(".json") {
            items.push(NewVersion {
                key: key.to_string(),
                version: None,
                spec_json: read(&path)?,
            });
        }
    }
    if items.is_empty() {
        bail!(
            "no specs in {}: expected <key>.json files or <key>/<version>.json",
            dir.display()
        );
    }
    items.sort_by(|a, b| a.key.cmp(&b.key).then(a.version.cmp(&b.version)));
    Ok(items)
}

/// What a bulk upload did.
#[derive(Debug, Default)]
struct Tally {
    read: u64,
    stored: u64,
    activated: u64,
    refused: Vec<(String, String)>,
    refused_total: u64,
    /// The `--report` file.
    report: Option<std::io::BufWriter<std::fs::File>>,
}

/// One line of the `--report` file.
#[derive(serde::Serialize)]
struct Outcome<'a> {
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<i64>,
    activated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Tally {
    fn refuse(&mut self, key: &str, why: &str) {
        self.refused_total += 1;
        if self.refused.len() < LISTED_REFUSALS {
            self.refused.push((key.to_string(), why.to_string()));
        }
    }

    /// Writes `outcomes` to the `--report` file, if any.
    fn report(&mut self, outcomes: &[Outcome<'_>]) -> anyhow::Result<()> {
        if let Some(file) = &mut self.report {
            for outcome in outcomes {
                serde_json::to_writer(&mut *file, outcome).context("writing the --report file")?;
                std::io::Write::write_all(file, b"\n").context("writing the --report file")?;
            }
        }
        Ok(())
    }
}

/// Progress on stderr: a line rewritten in place on a terminal, a line per tenth otherwise.
struct Progress {
    started: Instant,
    tty: bool,
    next_line: u64,
}

impl Progress {
    fn show(&mut self, t: &Tally, done: bool) {
        let rate = t.read as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let line = format!(
            "{} specs read, {} stored, {} activated, {} refused ({rate:.0} specs/s)",
            t.read, t.stored, t.activated, t.refused_total
        );
        if self.tty {
            eprint!("\r{line}{}", if done { "\n" } else { "" });
        } else if done || t.read >= self.next_line {
            eprintln!("{line}");
            self.next_line = t.read + 100_000;
        }
    }
}

async fn upload_many(
    ctx: &super::Context,
    args: &Args,
    items: impl Iterator<Item = anyhow::Result<NewVersion>>,
) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let mut tally = Tally::default();
    if let Some(path) = &args.report {
        let file = std::fs::File::create(path)
            .with_context(|| format!("creating the report file {}", path.display()))?;
        tally.report = Some(std::io::BufWriter::new(file));
    }
    let mut progress = Progress {
        started: Instant::now(),
        tty: std::io::stderr().is_terminal(),
        next_line: 100_000,
    };
    if args.all_or_nothing {
        // Read everything once to check it, then again to store it.
        let items: Vec<NewVersion> = items.collect::<anyhow::Result<_>>()?;
        let mut outcomes = Vec::new();
        for item in &items {
            if let Err(err) =
                check_key(&item.key).and_then(|()| check_spec(&item.spec_json).map(drop))
            {
                tally.refuse(&item.key, &err.to_string());
                outcomes.push(Outcome {
                    key: &item.key,
                    version: None,
                    activated: false,
                    error: Some(err.to_string()),
                });
            }
        }
        if tally.refused_total > 0 {
            tally.report(&outcomes)?;
            finish_report(&mut tally)?;
            print_refusals(&tally);
            bail!(
                "{} of {} specs were refused; nothing was stored (--all-or-nothing)",
                tally.refused_total,
                items.len()
            );
        }
        for chunk in items.chunks(CHUNK) {
            store_chunk(store.as_ref(), chunk, args.activate, &mut tally).await?;
            progress.show(&tally, false);
        }
    } else {
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut items = items.peekable();
        while items.peek().is_some() {
            chunk.clear();
            chunk.extend(
                items
                    .by_ref()
                    .take(CHUNK)
                    .collect::<anyhow::Result<Vec<_>>>()?,
            );
            store_chunk(store.as_ref(), &chunk, args.activate, &mut tally).await?;
            progress.show(&tally, false);
        }
    }
    progress.show(&tally, true);
    finish_report(&mut tally)?;
    println!(
        "uploaded {} of {} specs{}; {} refused",
        tally.stored,
        tally.read,
        if args.activate {
            format!(", {} activated", tally.activated)
        } else {
            String::new()
        },
        tally.refused_total
    );
    if tally.refused_total > 0 {
        print_refusals(&tally);
        bail!(
            "{} of {} specs were refused; the others were stored",
            tally.refused_total,
            tally.read
        );
    }
    Ok(())
}

/// Stores one chunk (and activates what was stored, when asked), counting into `tally`.
async fn store_chunk(
    store: &dyn ModelStore,
    chunk: &[NewVersion],
    activate: bool,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    tally.read += chunk.len() as u64;
    let results = store
        .put_versions(chunk)
        .await
        .context("storing model versions")?;
    let mut outcomes: Vec<Outcome<'_>> = chunk
        .iter()
        .map(|item| Outcome {
            key: &item.key,
            version: None,
            activated: false,
            error: None,
        })
        .collect();
    let mut stored = Vec::with_capacity(chunk.len());
    let mut stored_at = Vec::with_capacity(chunk.len());
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(version) => {
                outcomes[i].version = Some(version);
                stored.push((chunk[i].key.clone(), version));
                stored_at.push(i);
            }
            Err(err) => {
                tally.refuse(&chunk[i].key, &err.to_string());
                outcomes[i].error = Some(err.to_string());
            }
        }
    }
    tally.stored += stored.len() as u64;
    if activate && !stored.is_empty() {
        let results = store
            .activate_many(&stored)
            .await
            .context("activating model versions")?;
        for (&i, result) in stored_at.iter().zip(results) {
            match result {
                Ok(()) => {
                    tally.activated += 1;
                    outcomes[i].activated = true;
                }
                Err(err) => {
                    tally.refuse(&chunk[i].key, &err.to_string());
                    outcomes[i].error = Some(err.to_string());
                }
            }
        }
    }
    tally.report(&outcomes)
}

/// Flushes the `--report` file, if any.
fn finish_report(tally: &mut Tally) -> anyhow::Result<()> {
    if let Some(file) = &mut tally.report {
        std::io::Write::flush(file).context("writing the --report file")?;
    }
    Ok(())
}

fn print_refusals(tally: &Tally) {
    for (key, why) in &tally.refused {
        eprintln!("refused {key}: {why}");
    }
    let unlisted = tally.refused_total - tally.refused.len() as u64;
    if unlisted > 0 {
        eprintln!("... and {unlisted} more");
    }
}
