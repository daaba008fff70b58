//! Concurrent writers on one CQL store: two `keyscore` CLIs, the Python package (with a clock
//! 90 s ahead, 20 s behind and on time in turn) and cqlsh (stale compare-and-set files) activate
//! and roll back the same keys, 1,000 rounds in all, while a `keyscore score` process serves
//! them. Afterwards, from the change feed and cqlsh's answers:
//!
//! * every revision of a key was written by exactly one write, with no gap up to the stored
//!   revision, and the stored version is that last write's;
//! * `previous_version` always comes from the same write as `version`;
//! * every change a writer reported as done is in that history;
//! * the running scorer converges to every key's stored version.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use keyscore::store::{CqlModelStore, ModelStore};
use keyscore_testkit::cqlnode::clients::{
    self, keyscore_bin, repo_path, run_client, ScorerProcess,
};
use keyscore_testkit::cqlnode::CqlTestNode;
use keyscore_testkit::specs::{VALID_SPEC, VALID_SPEC_2};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::value::{CqlDate, CqlTimestamp};

const KEYS: [&str; 2] = ["north", "south"];
const VERSIONS: i64 = 4;
/// Rounds per keyscore CLI writer (two of them).
const CLI_ROUNDS: usize = 150;
/// Rounds of the Python writer.
const PYTHON_ROUNDS: usize = 400;
/// cqlsh files run while the others write, and after them (when the first statement of a file
/// for each key applies); compare-and-set statements per file.
const CQLSH_FILES: usize = 4;
const CQLSH_FILES_AFTER: usize = 2;
const CQLSH_STATEMENTS: usize = 50;

/// One change a writer reported as done: `key` now at `version`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Reported {
    writer: String,
    key: String,
    version: i64,
}

/// One applied write of a key's pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Write {
    version: i64,
    /// The `previous_version` written, when known (cqlsh's writes: the file says it).
    previous: Option<Option<i64>>,
}

/// A small deterministic generator for the writers' choices.
struct Choices(u64);

impl Choices {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

async fn session(node: &CqlTestNode) -> Session {
    SessionBuilder::new()
        .known_node(node.addr().to_string())
        .build()
        .await
        .expect("a session")
}

/// `(version, previous_version, revision)` of `key`.
async fn pointer(session: &Session, key: &str) -> (Option<i64>, Option<i64>, Option<i64>) {
    session
        .query_unpaged(
            "SELECT version, previous_version, revision FROM keyscore.active_models WHERE key = ?",
            (key,),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap()
}

/// A keyscore CLI writer: `rounds` activations (3 in 4) and rollbacks of random keys.
async fn cli_writer(name: &str, store: String, rounds: usize, seed: u64) -> Vec<Reported> {
    let mut choices = Choices(seed);
    let mut reported = Vec::new();
    for _ in 0..rounds {
        let key = KEYS[choices.next(KEYS.len() as u64) as usize];
        let out = if choices.next(4) == 0 {
            run_client(
                &keyscore_bin(),
                &["--store", &store, "rollback", "--key", key],
                &[],
            )
            .await
        } else {
            let version = (1 + choices.next(VERSIONS as u64)).to_string();
            run_client(
                &keyscore_bin(),
                &[
                    "--store",
                    &store,
                    "activate",
                    "--key",
                    key,
                    "--version",
                    &version,
                ],
                &[],
            )
            .await
        };
        if !out.success {
            assert!(
                out.stderr.contains("no previous version"),
                "{name}: a change failed for another reason than nothing to roll back: {}",
                out.stderr
            );
            continue;
        }
        // "activated south v4 (was v1)", "south v4 is already active; nothing changed":
        // the first version named; "rolled back south from v4 to v1": the last.
        let versions: Vec<i64> = out
            .stdout
            .split(|c: char| c.is_whitespace() || c == ';' || c == '(' || c == ')')
            .filter_map(|w| w.strip_prefix('v').and_then(|v| v.parse().ok()))
            .collect();
        let version = if out.stdout.contains("rolled back") {
            versions.last()
        } else {
            versions.first()
        }
        .copied()
        .unwrap_or_else(|| panic!("{name}: unexpected output {:?}", out.stdout));
        reported.push(Reported {
            writer: name.to_string(),
            key: key.to_string(),
            version,
        });
    }
    reported
}

/// The Python writer: `tests/data/cql_writer.py`.
async fn python_writer(port: u16) -> Vec<Reported> {
    let mut args = vec![
        repo_path("tests/data/cql_writer.py")
            .to_string_lossy()
            .to_string(),
        "127.0.0.1".to_string(),
        port.to_string(),
        PYTHON_ROUNDS.to_string(),
        "11".to_string(),
    ];
    args.extend(KEYS.iter().map(|k| k.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_client(&clients::python(), &args, &[]).await;
    assert!(out.success, "the Python writer failed: {}", out.stderr);
    out.stdout
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            Reported {
                writer: "python".into(),
                key: v["key"].as_str().unwrap().to_string(),
                version: v["version"].as_i64().unwrap(),
            }
        })
        .collect()
}

/// The cqlsh writer: files of compare-and-set statements made from a read of the pointers,
/// stale by the time they run. Returns the writes cqlsh reported applied, per key and revision.
async fn cqlsh_writer(
    node: &CqlTestNode,
    files: usize,
    seed: u64,
) -> (Vec<(String, i64, Write)>, usize) {
    let cqlsh = clients::python_tool("cqlsh");
    let session = session(node).await;
    let mut choices = Choices(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut applied = Vec::new();
    let mut statements = 0;
    for f in 0..files {
        let mut read = BTreeMap::new();
        for key in KEYS {
            read.insert(key, pointer(&session, key).await);
        }
        let mut file =
            String::from("CONSISTENCY LOCAL_QUORUM;\nSERIAL CONSISTENCY LOCAL_SERIAL;\n");
        let mut planned = Vec::new();
        for _ in 0..CQLSH_STATEMENTS {
            let key = KEYS[choices.next(KEYS.len() as u64) as usize];
            let (version, _, revision) = read[key];
            let to = 1 + choices.next(VERSIONS as u64) as i64;
            let condition = revision.map_or("null".to_string(), |r| r.to_string());
            let previous = version.map_or("null".to_string(), |v| v.to_string());
            let next = revision.unwrap_or(0) + 1;
            file.push_str(&format!(
                "UPDATE keyscore.active_models SET version = {to}, previous_version = {previous}, \
                 revision = {next}, changed_by = 'cqlsh' WHERE key = '{key}' IF revision = {condition};\n"
            ));
            planned.push((
                key.to_string(),
                next,
                Write {
                    version: to,
                    previous: Some(version),
                },
            ));
        }
        let path = dir.path().join(format!("writes{f}.cql"));
        std::fs::write(&path, file).unwrap();
        let port = node.addr().port().to_string();
        let out = run_client(
            &cqlsh,
            &["127.0.0.1", &port, "-f", &path.to_string_lossy()],
            &[],
        )
        .await;
        assert!(out.success, "cqlsh failed: {}", out.stderr);
        let answers: Vec<bool> = out
            .stdout
            .lines()
            .filter_map(|line| match line.split('|').next().map(str::trim) {
                Some("True") => Some(true),
                Some("False") => Some(false),
                _ => None,
            })
            .collect();
        assert_eq!(
            answers.len(),
            planned.len(),
            "one answer per statement:\n{}",
            out.stdout
        );
        statements += planned.len();
        applied.extend(
            planned
                .into_iter()
                .zip(answers)
                .filter(|(_, yes)| *yes)
                .map(|(write, _)| write),
        );
    }
    (applied, statements)
}

/// Every feed row of the last days: (key, revision) -> versions written under it.
async fn feed_history(session: &Session) -> BTreeMap<(String, i64), Vec<i64>> {
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        / 86_400_000;
    let mut out: BTreeMap<(String, i64), Vec<i64>> = BTreeMap::new();
    for day in today - 1..=today + 1 {
        for bucket in 0..16 {
            let rows = session
                .query_unpaged(
                    "SELECT changed_at, key, version, revision FROM keyscore.model_changes \
                     WHERE day = ? AND bucket = ?",
                    (CqlDate(((1i64 << 31) + day) as u32), bucket),
                )
                .await
                .unwrap()
                .into_rows_result()
                .unwrap();
            for row in rows
                .rows::<(CqlTimestamp, String, i64, Option<i64>)>()
                .unwrap()
            {
                let (_, key, version, revision) = row.unwrap();
                let revision = revision.expect("every writer stamps the revision");
                out.entry((key, revision)).or_default().push(version);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_never_tie_lose_or_mix_and_every_process_converges() {
    let node = CqlTestNode::start().await;
    let store = format!("cql://{}/keyscore", node.addr());
    clients::keyscore(&store, &["init"]).await;
    let direct = CqlModelStore::connect(&format!("{}/keyscore", node.addr()))
        .await
        .unwrap();
    for key in KEYS {
        for v in 1..=VERSIONS {
            let spec = if v % 2 == 1 { VALID_SPEC } else { VALID_SPEC_2 };
            direct.put_version(key, Some(v), spec).await.unwrap();
        }
        direct.activate(key, 1).await.unwrap();
    }
    let mut scorer = ScorerProcess::start(&store, 100);

    let started = Instant::now();
    let (a, b, py, (mut cqlsh_applied, mut cqlsh_statements)) = tokio::join!(
        tokio::spawn(cli_writer("cli-1", store.clone(), CLI_ROUNDS, 3)),
        tokio::spawn(cli_writer("cli-2", store.clone(), CLI_ROUNDS, 5)),
        tokio::spawn(python_writer(node.addr().port())),
        cqlsh_writer(&node, CQLSH_FILES, 7),
    );
    let (a, b, py) = (a.unwrap(), b.unwrap(), py.unwrap());
    let (after, statements) = cqlsh_writer(&node, CQLSH_FILES_AFTER, 9).await;
    assert!(
        after.len() >= 2 * CQLSH_FILES_AFTER,
        "alone, cqlsh's first write per key and file applies: {after:?}"
    );
    cqlsh_applied.extend(after);
    cqlsh_statements += statements;
    let rounds = 2 * CLI_ROUNDS + PYTHON_ROUNDS + cqlsh_statements;
    assert_eq!(rounds, 1_000);
    eprintln!(
        "{rounds} rounds in {:?}: cli-1 {} done, cli-2 {} done, python {} done, cqlsh {} of {} \
         applied",
        started.elapsed(),
        a.len(),
        b.len(),
        py.len(),
        cqlsh_applied.len(),
        cqlsh_statements
    );

    // The history of every key: the feed rows of keyscore and Python, and cqlsh's applied writes.
    let raw = session(&node).await;
    let mut history: BTreeMap<(String, i64), Vec<Write>> = BTreeMap::new();
    for ((key, revision), versions) in feed_history(&raw).await {
        for version in versions {
            history
                .entry((key.clone(), revision))
                .or_default()
                .push(Write {
                    version,
                    previous: None,
                });
        }
    }
    for (key, revision, write) in &cqlsh_applied {
        history
            .entry((key.clone(), *revision))
            .or_default()
            .push(*write);
    }
    for key in KEYS {
        let (version, previous, revision) = pointer(&raw, key).await;
        let last = revision.expect("a revision");
        let writes: BTreeMap<i64, Write> = history
            .iter()
            .filter(|((k, _), _)| k == key)
            .map(|((_, r), writes)| {
                assert_eq!(
                    writes.len(),
                    1,
                    "{key} revision {r} was written {} times: {writes:?}",
                    writes.len()
                );
                (*r, writes[0])
            })
            .collect();
        let revisions: Vec<i64> = writes.keys().copied().collect();
        assert_eq!(
            revisions,
            (1..=last).collect::<Vec<_>>(),
            "{key}: every revision up to the stored {last} written once, none beyond"
        );
        assert_eq!(
            Some(writes[&last].version),
            version,
            "{key}: the stored version is the last write's"
        );
        // previous_version comes from the same write as version.
        for (r, write) in &writes {
            if let Some(previous) = write.previous {
                assert_eq!(
                    Some(writes[&(r - 1)].version),
                    previous,
                    "{key} revision {r}: previous_version is not the version before it"
                );
            }
        }
        if last > 1 && writes[&last].version != writes[&(last - 1)].version {
            assert_eq!(
                previous,
                Some(writes[&(last - 1)].version),
                "{key}: stored previous_version"
            );
        }
        // Every change reported as done is in the history.
        let written: BTreeSet<i64> = writes.values().map(|w| w.version).collect();
        for report in a.iter().chain(&b).chain(&py).filter(|r| r.key == key) {
            assert!(
                written.contains(&report.version),
                "{report:?} was reported done but never written"
            );
        }
    }

    // The scorer converges to every key's stored version.
    for key in KEYS {
        let (version, _, _) = pointer(&raw, key).await;
        let want = version.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut n = 0;
        loop {
            n += 1;
            scorer
                .send(&format!(
                    r#"{{"id":"{key}-{n}","city":"{key}","a":1.0,"b":2.0}}"#
                ))
                .await;
            let line = scorer.next_line(Duration::from_secs(30)).await;
            let scored: serde_json::Value = serde_json::from_str(&line).unwrap();
            if scored["model_version"].as_i64() == Some(want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the scorer still serves {key} v{} where the store has v{want}:\n{}",
                scored["model_version"],
                scorer.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    scorer.finish().await;
}
