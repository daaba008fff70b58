//! Clients that tests run against a [`super::CqlTestNode`] as separate processes: the Python
//! tools (`cqlsh`, a Python with `cassandra-driver`, scikit-learn and `keyscore_sklearn`) and
//! the `keyscore` binary itself, including a long-running `keyscore score` fed through pipes.
//!
//! Python tools come from `$KEYSCORE_PYTHON_BIN` (a virtualenv's `bin` directory) or `PATH`;
//! the Python interpreter from `$KEYSCORE_PYTHON`, else `$KEYSCORE_PYTHON_BIN/python3`, else
//! `python3` on `PATH`. A test that needs one fails, naming the variables, when it is missing.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

/// How long one client process may run before the test fails.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

const PYTHON_HINT: &str = "set KEYSCORE_PYTHON_BIN to the bin directory of a virtualenv made \
     with `python3 -m venv DIR && DIR/bin/pip install -r tests/requirements.txt ./python` and \
     KEYSCORE_PYTHON to DIR/bin/python (tests/run-all.sh does this)";

/// A Python tool from `$KEYSCORE_PYTHON_BIN` or `PATH`; panics naming the variable if missing.
pub fn python_tool(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("KEYSCORE_PYTHON_BIN") {
        let p = Path::new(&dir).join(name);
        assert!(
            p.is_file(),
            "KEYSCORE_PYTHON_BIN has no {name} ({}); {PYTHON_HINT}",
            p.display()
        );
        return p;
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found on PATH; {PYTHON_HINT}"))
}

/// The Python interpreter with the project's Python packages.
pub fn python() -> PathBuf {
    match std::env::var_os("KEYSCORE_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => python_tool("python3"),
    }
}

/// A path in the repository.
pub fn repo_path(relative: &str) -> PathBuf {
    // The kit is the repository's `testkit/` directory.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ is inside the repository")
        .join(relative)
}

/// What a finished client printed.
#[derive(Debug)]
pub struct ClientOutput {
    /// Standard output, as text.
    pub stdout: String,
    /// Standard error, as text.
    pub stderr: String,
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its exit status as printed, for messages.
    pub status: String,
}

/// Runs a client process to completion (the node keeps serving on this runtime meanwhile),
/// with `HOME` in a fresh directory so no user configuration (`~/.cassandra/cqlshrc`) applies.
pub async fn run_client(program: &Path, args: &[&str], env: &[(&str, &str)]) -> ClientOutput {
    let home = tempfile::tempdir().expect("a temporary HOME");
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env("HOME", home.path())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = tokio::time::timeout(CLIENT_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} {args:?} did not finish in {CLIENT_TIMEOUT:?}",
                program.display()
            )
        })
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {PYTHON_HINT}", program.display()));
    ClientOutput {
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        success: out.status.success(),
        status: out.status.to_string(),
    }
}

/// Like [`run_client`], but fails the test unless the client succeeds; returns its stdout.
pub async fn run_ok(program: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run_client(program, args, env).await;
    assert!(
        out.success,
        "{} {args:?} failed ({}); {PYTHON_HINT}\nstdout:\n{}\nstderr:\n{}",
        program.display(),
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// The `keyscore` binary built for these tests.
pub fn keyscore_bin() -> PathBuf {
    // Cargo builds the binary for integration tests and names it in CARGO_BIN_EXE_keyscore when
    // it runs them; a test binary started by hand finds it beside its own directory,
    // `target/<profile>/deps/`.
    let path = std::env::var_os("CARGO_BIN_EXE_keyscore")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            let deps = exe.parent()?;
            Some(
                deps.parent()?
                    .join(format!("keyscore{}", std::env::consts::EXE_SUFFIX)),
            )
        })
        .expect("the path of the keyscore binary");
    assert!(
        path.is_file(),
        "the keyscore binary is not at {}: run the tests with `cargo test`, which builds it",
        path.display()
    );
    path
}

/// Runs `keyscore --store STORE ARGS...` and returns its stdout; fails the test if it fails.
pub async fn keyscore(store: &str, args: &[&str]) -> String {
    let mut all = vec!["--store", store];
    all.extend_from_slice(args);
    run_ok(&keyscore_bin(), &all, &[]).await
}

/// A running `keyscore --store STORE score --batch 1`: records go in through stdin, scored
/// lines come out of stdout one per record, dead letters go to a file.
pub struct ScorerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    dir: tempfile::TempDir,
}

impl ScorerProcess {
    /// Starts the scorer with the watcher polling every `refresh_ms` milliseconds.
    pub fn start(store: &str, refresh_ms: u64) -> ScorerProcess {
        Self::start_with(store, refresh_ms, &[])
    }

    /// [`ScorerProcess::start`] with more `score` arguments (e.g. `--ops-listen ADDR`).
    pub fn start_with(store: &str, refresh_ms: u64, extra: &[&str]) -> ScorerProcess {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let dead = dir.path().join("dead.jsonl");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr log");
        let mut child = tokio::process::Command::new(keyscore_bin())
            .args(["--store", store, "--verbose", "score", "--batch", "1"])
            .args(extra)
            .arg("--dead-letters")
            .arg(&dead)
            .env(
                "KEYSCORE__STORE__REFRESH_INTERVAL_MS",
                refresh_ms.to_string(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("keyscore score starts");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ScorerProcess {
            child,
            stdin,
            lines,
            dir,
        }
    }

    /// Writes one record line.
    pub async fn send(&mut self, record: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        let write = async {
            stdin.write_all(record.as_bytes()).await?;
            stdin.write_all(b"\n").await?;
            stdin.flush().await
        };
        if let Err(e) = write.await {
            panic!(
                "writing to keyscore score failed ({e}); its log:\n{}",
                self.log()
            );
        }
    }

    /// The scored lines printed so far, without waiting.
    pub fn ready_lines(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(line) = self.lines.try_recv() {
            out.push(line);
        }
        out
    }

    /// The next scored line, waiting up to `timeout`; fails the test with the scorer's log.
    pub async fn next_line(&mut self, timeout: Duration) -> String {
        match tokio::time::timeout(timeout, self.lines.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => panic!("keyscore score closed its output; its log:\n{}", self.log()),
            Err(_) => panic!(
                "keyscore score printed nothing for {timeout:?}; dead letters:\n{}\nits log:\n{}",
                self.dead_letters().join("\n"),
                self.log()
            ),
        }
    }

    /// Closes stdin, waits for the scorer to exit successfully and returns the remaining
    /// scored lines.
    pub async fn finish(&mut self) -> Vec<String> {
        drop(self.stdin.take());
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        let status = tokio::time::timeout_at(deadline.into(), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("keyscore score did not exit after its input closed"))
            .expect("waiting for keyscore score");
        assert!(
            status.success(),
            "keyscore score failed ({status}); its log:\n{}",
            self.log()
        );
        let mut rest = Vec::new();
        while let Some(line) = tokio::time::timeout_at(deadline.into(), self.lines.recv())
            .await
            .expect("the scorer's output closes after it exits")
        {
            rest.push(line);
        }
        rest
    }

    /// The dead letters written so far, one JSON line each.
    pub fn dead_letters(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("dead.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// What the scorer logged on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

/// Today's change-feed day partition (`YYYY-MM-DD`, UTC), as `date -u +%F` prints it.
pub fn utc_today() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970");
    utc_day(now.as_millis() as i64)
}

/// `YYYY-MM-DD` of a Unix time in milliseconds, as `date -u +%F` prints it.
pub fn utc_day(ms: i64) -> String {
    // Days to civil date (proleptic Gregorian), H. Hinnant's algorithm.
    let z = ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[test]
fn utc_day_matches_the_calendar() {
    // Reference values from `date -u -d @SECONDS +%F`.
    assert_eq!(utc_day(0), "1970-01-01");
    assert_eq!(utc_day(951_782_400_000), "2000-02-29");
    assert_eq!(utc_day(1_709_251_199_999), "2024-02-29");
    assert_eq!(utc_day(1_709_251_200_000), "2024-03-01");
    assert_eq!(utc_day(1_767_225_599_000), "2025-12-31");
}
