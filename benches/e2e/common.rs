//! Parts shared by the end-to-end benchmarks (`benches/e2e_kafka.rs`, `benches/e2e_latency.rs`):
//! the Tansu broker on loopback with a choice of storage engine (memory, SQLite, or a private
//! PostgreSQL started for the run and removed after it), topics, keyscore's librdkafka settings,
//! the passthrough child (an rdkafka consumer-to-producer loop with no parsing), running the
//! `keyscore` binary, a process's CPU time, and latency percentiles.
//!
//! Included by each bench target with `#[path = "e2e/common.rs"] mod common;`; each target uses
//! only part of it.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, ensure, Context as _};
use keyscore::stream::kafka::{options, KafkaConfig};
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::Message,
    producer::{BaseProducer, BaseRecord},
    types::RDKafkaErrorCode,
    ClientConfig,
};

/// The allocator keyscore runs with, for the bench binaries too, so the passthrough child (a
/// bench binary) compares like with like: librdkafka's messages are allocated and freed
/// through it as in keyscore.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The install script of the Tansu build with storage engines, named in errors.
pub(crate) const ENGINES_SCRIPT: &str = "benches/e2e/install-tansu-engines.sh";

/// Where tools are installed: `$KEYSCORE_TOOLS`, default `~/.cache/keyscore/tools`.
pub(crate) fn tools_root() -> PathBuf {
    std::env::var_os("KEYSCORE_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/keyscore/tools")
        })
}

/// Runs `keyscore` with `args`; fails with its standard error when it does.
pub(crate) fn run_keyscore(keyscore: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(keyscore)
        .args(args)
        .output()
        .with_context(|| format!("running {}", keyscore.display()))?;
    ensure!(
        out.status.success(),
        "keyscore {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A free TCP port on loopback (free when asked; nothing holds it afterwards).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

// ---------------------------------------------------------------------------------------------
// The broker

/// Tansu's storage engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Engine {
    /// `memory://tansu/`: objects in memory (the `dynostore` feature).
    Memory,
    /// `sqlite://tansu.db` in the run's directory: the libSQL engine, which creates its tables.
    Sqlite,
    /// `postgres://...`: a private PostgreSQL cluster started for the run, with Tansu's schema
    /// applied; stopped and removed when the broker is dropped.
    Postgres,
}

impl Engine {
    /// The engine's name on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Engine::Memory => "memory",
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
}

/// The Tansu binary for `engine`: `$KEYSCORE_TANSU` when set; else the build with storage
/// engines (`$KEYSCORE_TANSU_ENGINES`, default `$KEYSCORE_TOOLS-engines/bin/tansu`) when it is
/// installed or the engine needs it; else, for the memory engine, the test suite's build
/// (`$KEYSCORE_TOOLS/bin/tansu`).
fn tansu_binary(engine: Engine) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("KEYSCORE_TANSU") {
        return Ok(PathBuf::from(p));
    }
    let engines = std::env::var_os("KEYSCORE_TANSU_ENGINES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let mut root = tools_root().into_os_string();
            root.push("-engines");
            PathBuf::from(root).join("bin/tansu")
        });
    if engines.exists() {
        return Ok(engines);
    }
    if engine == Engine::Memory {
        let plain = tools_root().join("bin/tansu");
        ensure!(
            plain.exists(),
            "the Tansu broker is not installed at {} nor {}: run tests/tools/install-tansu.sh \
             or {ENGINES_SCRIPT} (or set KEYSCORE_TANSU)",
            engines.display(),
            plain.display()
        );
        return Ok(plain);
    }
    bail!(
        "the {} engine needs Tansu built with its storage engines, not found at {}: run \
         {ENGINES_SCRIPT} (or set KEYSCORE_TANSU_ENGINES)",
        engine.name(),
        engines.display()
    )
}

/// The version a Tansu binary reports (`tansu 0.6.0` -> `0.6.0`).
fn tansu_version(bin: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .last()
        .map(str::to_string)
        .with_context(|| format!("{} --version printed nothing", bin.display()))
}

/// Tansu on loopback, killed (and its PostgreSQL stopped) on drop.
pub(crate) struct Tansu {
    child: Child,
    port: u16,
    log: PathBuf,
    /// The SQLite engine's database.
    sqlite_db: Option<PathBuf>,
    // Dropped after the broker is killed (fields drop after `Drop::drop`).
    _postgres: Option<Postgres>,
}

impl Tansu {
    /// Starts Tansu with `engine`, working in `dir` (its log, and the SQLite database), and
    /// waits until it answers metadata requests. `pg_settings` (`name=value`) go to the private
    /// PostgreSQL of the postgres engine.
    pub(crate) fn start(
        dir: &Path,
        engine: Engine,
        pg_settings: &[String],
    ) -> anyhow::Result<Tansu> {
        let bin = tansu_binary(engine)?;
        ensure!(
            bin.exists(),
            "the Tansu broker is not installed at {}: run tests/tools/install-tansu.sh or \
             {ENGINES_SCRIPT} (or set KEYSCORE_TANSU)",
            bin.display()
        );
        let sqlite_db = (engine == Engine::Sqlite).then(|| dir.join("tansu.db"));
        let (storage, postgres) = match engine {
            Engine::Memory => ("memory://tansu/".to_string(), None),
            Engine::Sqlite => {
                let db = dir.join("tansu.db");
                if db.exists() {
                    std::fs::remove_file(&db)?;
                }
                // Tansu resolves the path against its working directory (`dir`).
                ("sqlite://tansu.db".to_string(), None)
            }
            Engine::Postgres => {
                let schema = postgres_schema(&bin)?;
                let pg = Postgres::start(&schema, pg_settings)?;
                (pg.url(), Some(pg))
            }
        };
        let port = free_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let log_path = dir.join(format!("tansu-{}-{port}.log", engine.name()));
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(&bin)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", &storage])
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut tansu = Tansu {
            child,
            port,
            log: log_path,
            sqlite_db,
            _postgres: postgres,
        };
        let probe: BaseConsumer = client(&tansu.bootstrap()).create()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while probe.fetch_metadata(None, Duration::from_secs(1)).is_err() {
            if let Some(status) = tansu.child.try_wait()? {
                let log = tail(&tansu.log, 20);
                let hint = if log.contains("FeatureNotEnabled") {
                    format!(
                        "\n{} was built without the {} engine: run {ENGINES_SCRIPT}",
                        bin.display(),
                        engine.name()
                    )
                } else {
                    String::new()
                };
                bail!(
                    "Tansu ({} engine) exited at start ({status}); its log:\n{log}{hint}",
                    engine.name()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "Tansu ({} engine) did not come up in 30 s; its log:\n{}",
                engine.name(),
                tail(&tansu.log, 20)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(tansu)
    }

    /// Indexes the SQLite engine's `header` table by record. Tansu 0.6 creates it without an
    /// index (`tansu-storage/src/ddl/040-header.sql`) and reads each fetched record's headers
    /// with a query on `(topition, offset_id)` (`header_fetch.sql`): without an index every
    /// fetched record scans all headers stored so far, behind the one lock its connection
    /// holds, so a topic whose records carry headers slows the whole broker down as it grows.
    /// Call once the broker is up (its tables exist); a no-op for the other engines.
    pub(crate) fn index_sqlite_headers(&self) -> anyhow::Result<()> {
        let Some(db) = &self.sqlite_db else {
            return Ok(());
        };
        let conn =
            rusqlite::Connection::open(db).with_context(|| format!("opening {}", db.display()))?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.execute(
            "create index if not exists header_by_record on header (topition, offset_id)",
            [],
        )
        .context("indexing Tansu's header table")?;
        Ok(())
    }

    /// `host:port` for clients.
    pub(crate) fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the broker's log when it has exited.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("Tansu exited ({status}); its log:\n{}", tail(&self.log, 20));
        }
        Ok(())
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `n` lines of a log file.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Tansu's PostgreSQL schema for the version of `bin`: `$KEYSCORE_TANSU_PG_SCHEMA`, else
/// `share/tansu/postgres-schema-VERSION.sql` beside the binary's `bin/` (put there by the
/// install script).
fn postgres_schema(bin: &Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("KEYSCORE_TANSU_PG_SCHEMA") {
        return Ok(PathBuf::from(p));
    }
    let version = tansu_version(bin)?;
    let root = bin
        .parent()
        .and_then(Path::parent)
        .context("the Tansu binary's install root")?;
    let schema = root
        .join("share/tansu")
        .join(format!("postgres-schema-{version}.sql"));
    ensure!(
        schema.exists(),
        "Tansu's PostgreSQL schema for {version} is not at {}: the postgres engine does not \
         create its tables. Run {ENGINES_SCRIPT} with TANSU_PG_SCHEMA set to \
         etc/initdb.d/010-schema.sql of Tansu's v{version} (or TANSU_SOURCE to a checkout), or \
         set KEYSCORE_TANSU_PG_SCHEMA",
        schema.display()
    );
    Ok(schema)
}

/// A private PostgreSQL cluster on loopback for the postgres engine: its data directory in a
/// temporary directory, trust authentication on 127.0.0.1 only, a free port. Stopped and its
/// files removed on drop.
struct Postgres {
    bin: PathBuf,
    /// `Some(user)` when running as root: PostgreSQL refuses root, so its commands run as
    /// `user` (`$KEYSCORE_PG_USER`, default `postgres`) through `runuser`.
    run_as: Option<String>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Postgres {
    /// PostgreSQL's programs (`initdb`, `pg_ctl`, `psql`): `$KEYSCORE_PG_BIN`, else the
    /// directory of `initdb` on the `PATH` (links followed), else the newest of Debian's
    /// `/usr/lib/postgresql/*/bin`.
    fn bin_dir() -> anyhow::Result<PathBuf> {
        if let Some(p) = std::env::var_os("KEYSCORE_PG_BIN") {
            return Ok(PathBuf::from(p));
        }
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            // Through symbolic links, to the directory holding all of PostgreSQL's programs.
            if let Ok(initdb) = std::fs::canonicalize(dir.join("initdb")) {
                if let Some(bin) = initdb.parent().filter(|b| b.join("pg_ctl").exists()) {
                    return Ok(bin.to_path_buf());
                }
            }
        }
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let major = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").exists().then_some((major, bin))
            })
            .collect();
        found.sort();
        found.pop().map(|(_, bin)| bin).context(
            "PostgreSQL's initdb and pg_ctl were not found (for the postgres engine): install \
             PostgreSQL (Debian: apt-get install postgresql) or set KEYSCORE_PG_BIN to its bin \
             directory",
        )
    }

    fn start(schema: &Path, settings: &[String]) -> anyhow::Result<Postgres> {
        let bin = Self::bin_dir()?;
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .context("running id -u")?;
        let run_as = (String::from_utf8_lossy(&uid.stdout).trim() == "0")
            .then(|| std::env::var("KEYSCORE_PG_USER").unwrap_or_else(|_| "postgres".to_string()));
        let dir = tempfile::Builder::new().prefix("keyscore-pg-").tempdir()?;
        if let Some(user) = &run_as {
            let status = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(dir.path())
                .status()
                .context("running chown")?;
            ensure!(
                status.success(),
                "chown {user}: {} failed: PostgreSQL refuses to run as root and needs a user \
                 (set KEYSCORE_PG_USER) to own its data directory",
                dir.path().display()
            );
        }
        let port = free_port()?;
        let pg = Postgres {
            bin,
            run_as,
            dir,
            port,
        };
        let data = pg.dir.path().join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                path_str(&data)?,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        let mut server_options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={}",
            path_str(pg.dir.path())?
        );
        for s in settings {
            ensure!(
                s.contains('=') && !s.contains(char::is_whitespace),
                "PostgreSQL setting {s:?}: want name=value without spaces"
            );
            server_options.push_str(" -c ");
            server_options.push_str(s);
        }
        let log = pg.dir.path().join("postgres.log");
        pg.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data)?,
                "-l",
                path_str(&log)?,
                "-o",
                &server_options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .with_context(|| format!("starting PostgreSQL; its log:\n{}", tail(&log, 20)))?;
        let out = Command::new(pg.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .args(["-d", "postgres", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
            .arg(schema)
            .output()
            .context("running psql")?;
        ensure!(
            out.status.success(),
            "applying Tansu's schema {} failed: {}",
            schema.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(pg)
    }

    /// Runs one of PostgreSQL's programs, as the PostgreSQL user when we are root.
    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let exe = self.bin.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", exe.display()))?;
        ensure!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres:postgres@127.0.0.1:{}/postgres",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        if let Some(data) = data.to_str() {
            if let Err(err) = self.run("pg_ctl", &["-D", data, "-m", "fast", "-w", "stop"]) {
                eprintln!("stopping the private PostgreSQL: {err:#}");
            }
        }
        // The temporary directory (data, log, socket) is removed after this.
    }
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

// ---------------------------------------------------------------------------------------------
// Clients and topics

/// A client configuration with only the bootstrap servers.
pub(crate) fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// Creates `topics` with `partitions` each.
pub(crate) fn create_topics(
    bootstrap: &str,
    topics: &[&str],
    partitions: i32,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client(bootstrap).create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = futures::executor::block_on(admin.create_topics(&new, &opts))?;
    for r in results {
        if let Err((t, e)) = r {
            bail!("creating topic {t}: {e}");
        }
    }
    Ok(())
}

/// Sends with backpressure: waits for room when librdkafka's queue is full.
pub(crate) fn send_retrying<C: rdkafka::producer::ProducerContext>(
    producer: &BaseProducer<C>,
    mut record: BaseRecord<'_, str, [u8], C::DeliveryOpaque>,
) -> anyhow::Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(5));
            }
            Err((err, _)) => bail!("producing: {err}"),
        }
    }
}

/// keyscore's Kafka settings for a pipeline from `input` to `output` in `group`.
pub(crate) fn kafka_config(bootstrap: &str, group: &str, input: &str, output: &str) -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: bootstrap.to_string(),
        group_id: group.to_string(),
        input_topics: vec![input.to_string()],
        output_topic: output.to_string(),
        dead_letter_topic: format!("{output}-dead"),
        create_topics: false,
        ..KafkaConfig::default()
    }
}

/// Counts failed deliveries.
#[derive(Default)]
pub(crate) struct Delivered {
    /// Deliveries that failed.
    pub(crate) failed: AtomicU64,
    /// The last failure.
    pub(crate) error: Mutex<String>,
}

impl rdkafka::ClientContext for Delivered {}

impl rdkafka::producer::ProducerContext for Delivered {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if let Err((err, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            *self.error.lock().expect("error lock") = err.to_string();
        }
    }
}

/// A name no earlier call in this process returned: milliseconds since the epoch and a counter.
pub(crate) fn unique() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    format!("{ms}-{}", N.fetch_add(1, Ordering::Relaxed))
}

// ---------------------------------------------------------------------------------------------
// The passthrough: keyscore's consumer and producer settings, no parsing or scoring.

/// Spawns this bench executable as the passthrough child from `input` to `output`.
pub(crate) fn spawn_passthrough(
    bootstrap: &str,
    input: &str,
    output: &str,
    log: Option<&Path>,
) -> anyhow::Result<Child> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--passthrough-child")
        .arg(format!("{bootstrap},{input},{output},g-{output}"))
        .stdin(Stdio::null());
    if let Some(log) = log {
        let f = std::fs::File::create(log)?;
        cmd.stdout(f.try_clone()?).stderr(f);
    }
    cmd.spawn().context("spawning the passthrough child")
}

/// The passthrough child's body (`--passthrough-child BOOTSTRAP,INPUT,OUTPUT,GROUP`): copies
/// each record's key and payload from the input to the output with keyscore's librdkafka
/// settings ([`options`]), until it is terminated.
pub(crate) fn passthrough_child(spec: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = spec.split(',').collect();
    let [bootstrap, input, output, group] = parts[..] else {
        bail!("--passthrough-child wants BOOTSTRAP,INPUT,OUTPUT,GROUP");
    };
    let cfg = kafka_config(bootstrap, group, input, output);
    let consumer: BaseConsumer = options::consumer_config(&cfg).create()?;
    let producer: BaseProducer = options::producer_config(&cfg).create()?;
    consumer.subscribe(&[input])?;
    // Runs until the bench terminates it.
    let mut n = 0u64;
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let mut rec: BaseRecord<'_, [u8], [u8]> =
                    BaseRecord::to(output).payload(m.payload().unwrap_or_default());
                if let Some(k) = m.key() {
                    rec = rec.key(k);
                }
                loop {
                    match producer.send(rec) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            rec = back;
                            producer.poll(Duration::from_millis(2));
                        }
                        Err((err, _)) => bail!("producing: {err}"),
                    }
                }
                n += 1;
                if n % 256 == 0 {
                    producer.poll(Duration::ZERO);
                }
            }
            Some(Err(err)) => eprintln!("passthrough: consumer error: {err}"),
            None => {
                producer.poll(Duration::ZERO);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// Clock ticks per second (`getconf CLK_TCK`, default 100).
pub(crate) fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User plus system CPU seconds of a process, all threads, from `/proc/<pid>/stat`.
pub(crate) fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (t(11) + t(12)) / ticks
}

/// Sends SIGTERM and waits up to 15 s for the child to exit, then kills it.
pub(crate) fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------------
// Percentiles

/// Latency percentiles, in ms, of a set of samples.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Percentiles {
    /// Samples.
    pub(crate) count: usize,
    /// Median.
    pub(crate) p50_ms: f64,
    /// 95th percentile.
    pub(crate) p95_ms: f64,
    /// 99th percentile.
    pub(crate) p99_ms: f64,
    /// 99.9th percentile.
    pub(crate) p999_ms: f64,
    /// Largest sample.
    pub(crate) max_ms: f64,
}

/// Nearest-rank percentiles of `v` (microseconds), in ms; NaN when `v` is empty.
pub(crate) fn percentiles(mut v: Vec<i64>) -> Percentiles {
    v.sort_unstable();
    let q = |p: f64| {
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        v[i] as f64 / 1000.0
    };
    Percentiles {
        count: v.len(),
        p50_ms: q(0.5),
        p95_ms: q(0.95),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        max_ms: v.last().map_or(f64::NAN, |x| *x as f64 / 1000.0),
    }
}
