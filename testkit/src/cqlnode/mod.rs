//! A single-node CQL server for tests: CQL native protocol v4 on 127.0.0.1, data in memory, and
//! fault controls.
//!
//! It runs the CQL keyscore uses (and what the Rust `scylla` driver, the Python
//! `cassandra-driver` and `cqlsh` send on connect) well enough that tests can use unmodified
//! clients against it. Anything outside its subset is answered with a CQL error naming the
//! feature, never with a wrong result.
//!
//! ```text
//! let node = CqlTestNode::start().await;
//! let session = scylla::client::session_builder::SessionBuilder::new()
//!     .known_node(node.addr().to_string())
//!     .build()
//!     .await?;
//! node.set_fault(Fault::Failing); // every non-system request now fails with Unavailable
//! node.clear_fault();
//! ```
//!
//! The node lives on the Tokio runtime that started it (a `#[tokio::test]`'s runtime), and
//! stops when that runtime ends; [`CqlTestNode::shared_addr`] starts one node per test binary
//! on a runtime of its own, which outlives every test.
//!
//! The rules of a real server that keyscore's design depends on are enforced, each with the
//! same error code and a message close to the server's (the source of each is cited where it
//! is enforced):
//!
//! * writes are last-write-wins per cell on their timestamps, and a client timestamp (`USING
//!   TIMESTAMP`, or the protocol's default timestamp) is kept exactly as given; at equal
//!   timestamps a deletion beats a live cell and the larger value wins;
//! * a conditional batch must stay within one partition of one table, and a lightweight
//!   transaction refuses `USING TIMESTAMP` (its write takes the node's clock, as a Paxos
//!   ballot's timestamp does, whatever the client's default timestamp);
//! * frames over `native_transport_max_frame_size` (16 MiB) and mutations over
//!   `max_mutation_size` (16 MiB) are refused with Invalid
//!   ([`CqlTestNode::set_max_frame_size`], [`CqlTestNode::set_max_mutation_size`]);
//! * as ScyllaDB 6 ([`CqlTestNode::start_as`] with [`Flavor::Scylla6`]), keyspaces have tablets
//!   by default and refuse lightweight transactions;
//! * cells written with a TTL (`USING TTL`, else the table's `default_time_to_live`) expire on
//!   the node's clock, and a row left with no live cell and no live row marker is gone;
//! * an `IF col = value` condition compares a missing row or cell as null, and a lightweight
//!   transaction answers with the columns its server flavor answers with (Cassandra: the
//!   condition's current values only when it fails on an existing row; ScyllaDB: always).
//! * `ALTER TABLE ... ADD column type` adds a column, null in the rows stored, and refuses a
//!   column the table has with its flavor's message (there is no `ADD IF NOT EXISTS` before
//!   Cassandra 4.1); statements prepared on the table are forgotten, as Cassandra evicts them.
//!
//! Not modelled: consistency levels (every level succeeds on the one replica, serial ones
//! included), replication, lightweight transactions beyond a check-and-write under one lock
//! (`IF EXISTS`, `IF NOT EXISTS`, `IF col = value`), counters,
//! static columns, secondary indexes, materialized views, user types, tuples, authentication,
//! compression, tracing and pushed events. Server-side DESCRIBE (what cqlsh 6 sends to a
//! Cassandra 4.0+ server) covers KEYSPACES, TABLES, KEYSPACE, TABLE, `[FULL] SCHEMA` and a bare
//! name, with CREATE statements of what the node models (no table options but the
//! clustering order, comment and default_time_to_live).
//!
//! [`CqlTestNode::start_tls`] listens for TLS only (rustls), with a certificate chain and key
//! the test gives (see [`crate::tls::TestPki`]); [`CqlTestNode::start_tls_with_client_auth`]
//! also requires a client certificate signed by a given authority.
//!
//! [`CqlTestNode::execute_local`] writes straight to the node's data while clients are cut off;
//! [`clients`] runs `cqlsh`, Python and the `keyscore` binary against a node.

pub mod clients;
mod engine;
mod frame;
mod parser;
mod types;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use engine::{Engine, Exec, Identity, Outcome};
use frame::{opcode, CqlError, ErrorCode, Header, QueryParams, Reader, Value, Writer};

pub use parser::split_script;

/// Which server the node plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    /// Apache Cassandra 4.0: `system.local` reports release 4.0.11; keyspaces have no tablets
    /// and refuse the `tablets` option.
    #[default]
    Cassandra4,
    /// ScyllaDB 6: `system.local` reports release 3.0.8 (the Cassandra version ScyllaDB is
    /// compatible with) and `system.versions` the ScyllaDB version, 6.2.0. A keyspace with
    /// NetworkTopologyStrategy has tablets unless created with `AND tablets = {'enabled':
    /// false}`; `system_schema.scylla_keyspaces` has a row (with `initial_tablets`) for each
    /// keyspace with tablets, and a lightweight transaction on a table of such a keyspace is
    /// refused with "LWT is not yet supported with tablets".
    Scylla6,
}

/// The largest frame accepted by default, header included: 16 MiB, the default of Cassandra's
/// `native_transport_max_frame_size` (Cassandra documentation, Configuration > cassandra.yaml,
/// `native_transport_max_frame_size`: 16 MiB by default; it bounds protocol v4 and older, the
/// version the node speaks). Cassandra's frame decoder discards a larger frame and answers
/// its stream with an `InvalidRequestException` (0x2200, not a protocol error) reading "Request
/// is too big: length <n> exceeds maximum allowed length <max>." (`Frame.Decoder.fail`); the
/// connection stays open. The node does the same.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// The largest mutation accepted by default (half of the default 32 MiB commit log segment).
pub const DEFAULT_MAX_MUTATION_SIZE: usize = engine::DEFAULT_MAX_MUTATION_SIZE;

/// A fault the node injects until it is cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The node is unreachable: open connections are closed and new ones are closed as soon as
    /// they are accepted.
    Unavailable,
    /// Every answer is delayed by this long.
    Slow(Duration),
    /// Every request on a non-system keyspace fails with Unavailable (0x1000), as when too few
    /// replicas are alive.
    Failing,
    /// Every request on a non-system keyspace fails with Overloaded (0x1001).
    Overloaded,
    /// Every request on a non-system keyspace fails with a server error (0x0000).
    ServerError,
}

/// State shared by the handle, the accept loop and the connections.
#[derive(Debug)]
struct Shared {
    engine: Mutex<Engine>,
    fault: Mutex<Option<Fault>>,
    /// Bumped to make every open connection close.
    kill: watch::Sender<u64>,
    /// Every query text received (QUERY, PREPARE) in order, for tests that check what a client
    /// sent.
    log: Mutex<Vec<String>>,
    /// Bumped on every fault change, so a `fail_for` timer clears only its own fault.
    fault_generation: Mutex<u64>,
    /// The largest frame accepted, header included.
    max_frame_size: AtomicUsize,
    /// Set when the node listens for TLS only.
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// A running test node. Dropping it stops the node.
#[derive(Debug)]
pub struct CqlTestNode {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl CqlTestNode {
    /// Starts a node on 127.0.0.1 on a free port, playing Cassandra 4.
    pub async fn start() -> CqlTestNode {
        Self::start_as(Flavor::Cassandra4).await
    }

    /// Starts a node on 127.0.0.1 on a free port, playing `flavor`.
    pub async fn start_as(flavor: Flavor) -> CqlTestNode {
        Self::start_flavor_on(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), flavor)
            .await
            .expect("the CQL test node binds 127.0.0.1:0")
    }

    /// The address of a node that every test of this test binary shares, started on first use.
    ///
    /// Each `#[tokio::test]` has its own runtime, and a node stops with the runtime that started
    /// it, so this node runs on a thread and runtime of its own until the process exits. Tests
    /// using it run at the same time: they must write under their own keys or keyspaces and
    /// must not inject faults or stop it (start a node of their own for that).
    pub fn shared_addr() -> SocketAddr {
        static ADDR: OnceLock<SocketAddr> = OnceLock::new();
        *ADDR.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("shared-cql-test-node".into())
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a runtime for the shared CQL test node");
                    runtime.block_on(async {
                        let node = CqlTestNode::start().await;
                        tx.send(node.addr()).expect("the starting test waits");
                        std::future::pending::<()>().await;
                    });
                })
                .expect("a thread for the shared CQL test node");
            rx.recv().expect("the shared CQL test node started")
        })
    }

    /// Starts a node on `addr` (port 0 picks a free one), playing Cassandra 4.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<CqlTestNode> {
        Self::start_flavor_on(addr, Flavor::Cassandra4).await
    }

    /// Starts a node on 127.0.0.1 on a free port, playing Cassandra 4, that accepts TLS
    /// connections only, presenting `cert_chain_pem` (the node's certificate first) with the
    /// private key `key_pem`. A client that does not start with a TLS handshake is
    /// disconnected. Panics if the certificate or key is unusable.
    pub async fn start_tls(cert_chain_pem: &str, key_pem: &str) -> CqlTestNode {
        Self::start_tls_inner(cert_chain_pem, key_pem, None).await
    }

    /// Starts a node like [`CqlTestNode::start_tls`] that also requires every client to
    /// present a certificate signed by `client_ca_pem`.
    pub async fn start_tls_with_client_auth(
        cert_chain_pem: &str,
        key_pem: &str,
        client_ca_pem: &str,
    ) -> CqlTestNode {
        Self::start_tls_inner(cert_chain_pem, key_pem, Some(client_ca_pem)).await
    }

    async fn start_tls_inner(
        cert_chain_pem: &str,
        key_pem: &str,
        client_ca_pem: Option<&str>,
    ) -> CqlTestNode {
        let config = tls_config(cert_chain_pem, key_pem, client_ca_pem);
        Self::start_with(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            Flavor::Cassandra4,
            Some(config),
        )
        .await
        .expect("the CQL test node binds 127.0.0.1:0")
    }

    /// Starts a node on `addr` (port 0 picks a free one), playing `flavor`.
    pub async fn start_flavor_on(addr: SocketAddr, flavor: Flavor) -> std::io::Result<CqlTestNode> {
        Self::start_with(addr, flavor, None).await
    }

    async fn start_with(
        addr: SocketAddr,
        flavor: Flavor,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<CqlTestNode> {
        let listener = bind(addr)?;
        let addr = listener.local_addr()?;
        let mut host_id = engine::random_uuid();
        host_id[6] = (host_id[6] & 0x0f) | 0x40;
        let identity = Identity {
            address: addr.ip(),
            port: addr.port(),
            host_id,
            cluster_name: "keyscore test cluster".to_string(),
            token: (engine::random_u64() >> 1) as i64,
        };
        let (kill, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            engine: Mutex::new(Engine::new(identity, flavor)),
            fault: Mutex::new(None),
            kill,
            log: Mutex::new(Vec::new()),
            fault_generation: Mutex::new(0),
            max_frame_size: AtomicUsize::new(DEFAULT_MAX_FRAME_SIZE),
            tls,
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(CqlTestNode {
            addr,
            shared,
            accept: Mutex::new(Some(accept)),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A scylla driver session to this node (plain TCP, no keyspace).
    pub async fn session(&self) -> scylla::client::session::Session {
        scylla::client::session_builder::SessionBuilder::new()
            .known_node(self.addr.to_string())
            .build()
            .await
            .expect("the scylla driver connects to the test node")
    }

    /// Sets the largest request frame accepted, header included (default
    /// [`DEFAULT_MAX_FRAME_SIZE`]).
    pub fn set_max_frame_size(&self, bytes: usize) {
        self.shared.max_frame_size.store(bytes, Ordering::Relaxed);
    }

    /// Moves the clock that cells written with a TTL expire on `by` into the future, so a test
    /// sees rows expire without waiting for them.
    pub fn advance_ttl_clock(&self, by: Duration) {
        self.shared
            .engine
            .lock()
            .expect("lock")
            .advance_ttl_clock(by);
    }

    /// Sets the largest mutation (the bytes one request writes to one partition) accepted
    /// (default [`DEFAULT_MAX_MUTATION_SIZE`]).
    pub fn set_max_mutation_size(&self, bytes: usize) {
        self.shared
            .engine
            .lock()
            .expect("lock")
            .set_max_mutation_size(bytes);
    }

    /// Injects a fault until [`CqlTestNode::clear_fault`].
    pub fn set_fault(&self, fault: Fault) {
        *self.shared.fault_generation.lock().expect("lock") += 1;
        *self.shared.fault.lock().expect("lock") = Some(fault);
        if fault == Fault::Unavailable {
            self.shared.kill.send_modify(|n| *n += 1);
        }
    }

    /// Ends any injected fault.
    pub fn clear_fault(&self) {
        *self.shared.fault_generation.lock().expect("lock") += 1;
        *self.shared.fault.lock().expect("lock") = None;
    }

    /// The fault in force.
    pub fn fault(&self) -> Option<Fault> {
        *self.shared.fault.lock().expect("lock")
    }

    /// Injects `fault` for `duration`, then clears it (unless another fault was set meanwhile).
    pub fn fault_for(&self, fault: Fault, duration: Duration) {
        self.set_fault(fault);
        let generation = *self.shared.fault_generation.lock().expect("lock");
        let shared = self.shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            if *shared.fault_generation.lock().expect("lock") == generation {
                *shared.fault.lock().expect("lock") = None;
            }
        });
    }

    /// Makes every non-system request fail with Unavailable for `duration`.
    pub fn fail_for(&self, duration: Duration) {
        self.fault_for(Fault::Failing, duration);
    }

    /// Stops listening and closes every connection; the data is kept for
    /// [`CqlTestNode::restart`].
    pub fn stop(&self) {
        if let Some(task) = self.accept.lock().expect("lock").take() {
            task.abort();
        }
        self.shared.kill.send_modify(|n| *n += 1);
    }

    /// Listens again on the same address after [`CqlTestNode::stop`], with the same data and
    /// prepared statements, like a restarted node.
    pub async fn restart(&self) -> std::io::Result<()> {
        self.stop();
        // The aborted accept loop releases the port once it has been dropped.
        let mut tries = 0;
        let listener = loop {
            match bind(self.addr) {
                Ok(l) => break l,
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let task = tokio::spawn(accept_loop(listener, self.shared.clone()));
        *self.accept.lock().expect("lock") = Some(task);
        Ok(())
    }

    /// Forgets every prepared statement, so the next EXECUTE of each is answered with
    /// Unprepared (0x2500) and the client must prepare again.
    pub fn forget_prepared(&self) {
        self.shared.engine.lock().expect("lock").forget_prepared();
    }

    /// Runs a CQL script (statements separated by `;`, as in a `cqlsh -f` file) straight on
    /// the node's data, bypassing the network and any fault: a writer that still reaches the
    /// cluster while the clients under test are cut off from it. Writes get the node's clock as
    /// their timestamp and `now()` is the node's clock. Fails with the first statement's error.
    pub fn execute_local(&self, script: &str) -> Result<(), String> {
        let mut engine = self.shared.engine.lock().expect("lock");
        let mut keyspace: Option<String> = None;
        for text in parser::split_script(script) {
            let (stmt, markers) = engine::parse(&text).map_err(|e| format!("{text}: {e:?}"))?;
            if markers != 0 {
                return Err(format!("{text}: bind markers need values"));
            }
            let exec = Exec {
                keyspace: keyspace.as_deref(),
                timestamp: None,
                page_size: None,
                paging_state: None,
            };
            if let Outcome::SetKeyspace(ks) = engine
                .execute(&stmt, &[], exec)
                .map_err(|e| format!("{text}: {}", e.message))?
            {
                keyspace = Some(ks);
            }
        }
        Ok(())
    }

    /// Every query text received so far (QUERY and PREPARE bodies, BATCH query strings), in
    /// order.
    pub fn query_log(&self) -> Vec<String> {
        self.shared.log.lock().expect("lock").clone()
    }
}

impl Drop for CqlTestNode {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors or similar: wait instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if *shared.fault.lock().expect("lock") == Some(Fault::Unavailable) {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        match shared.tls.clone() {
            None => {
                tokio::spawn(serve(stream, shared.clone()));
            }
            Some(config) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let mut kill = shared.kill.subscribe();
                    kill.borrow_and_update();
                    // A client that fails the handshake (a plaintext client, a certificate
                    // refused either way) is disconnected, as a real node does.
                    tokio::select! {
                        accepted = acceptor.accept(stream) => {
                            if let Ok(stream) = accepted {
                                serve(stream, shared).await;
                            }
                        }
                        _ = kill.changed() => {}
                    }
                });
            }
        }
    }
}

/// The TLS side of a node's listener; panics if the PEM texts are unusable.
fn tls_config(
    cert_chain_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("the node's certificate chain is PEM");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("the node's key is PEM");
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS 1.2 and 1.3");
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots
                    .add(cert.expect("the client CA is PEM"))
                    .expect("the client CA is a CA certificate");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("a client certificate verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .expect("the node's key matches its certificate");
    Arc::new(config)
}

/// Serves one connection until the client closes it or the node kills it.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, shared: Arc<Shared>) {
    let mut kill = shared.kill.subscribe();
    kill.borrow_and_update();
    let mut keyspace: Option<String> = None;
    loop {
        let mut head = [0u8; frame::HEADER_LEN];
        tokio::select! {
            r = stream.read_exact(&mut head) => if r.is_err() { return },
            _ = kill.changed() => return,
        }
        let header = match Header::decode(&head) {
            Ok(h) => h,
            Err(e) => {
                let _ = stream
                    .write_all(&frame::response_frame(0, opcode::ERROR, &e.encode()))
                    .await;
                return;
            }
        };
        let max_frame = shared.max_frame_size.load(Ordering::Relaxed);
        if frame::HEADER_LEN + header.length > max_frame {
            // Skip the body so the connection stays usable, then refuse the request.
            let mut rest = (&mut stream).take(header.length as u64);
            let mut sink = tokio::io::sink();
            tokio::select! {
                r = tokio::io::copy(&mut rest, &mut sink) => {
                    if !matches!(r, Ok(n) if n == header.length as u64) { return }
                }
                _ = kill.changed() => return,
            }
            let e = CqlError::invalid(format!(
                "Request is too big: length {} exceeds maximum allowed length {max_frame}.",
                frame::HEADER_LEN + header.length
            ));
            let out = frame::response_frame(header.stream, opcode::ERROR, &e.encode());
            tokio::select! {
                r = stream.write_all(&out) => if r.is_err() { return },
                _ = kill.changed() => return,
            }
            continue;
        }
        let mut body = vec![0u8; header.length];
        tokio::select! {
            r = stream.read_exact(&mut body) => if r.is_err() { return },
            _ = kill.changed() => return,
        }
        if header.version & 0x7f != frame::VERSION {
            // Drivers lower their version and reconnect when they see this message.
            let e = CqlError::protocol(format!(
                "Invalid or unsupported protocol version ({}); supported versions are (4/v4)",
                header.version & 0x7f
            ));
            let _ = stream
                .write_all(&frame::response_frame(
                    header.stream,
                    opcode::ERROR,
                    &e.encode(),
                ))
                .await;
            return;
        }
        let fault = *shared.fault.lock().expect("lock");
        if let Some(Fault::Slow(d)) = fault {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = kill.changed() => return,
            }
        }
        let (op, answer) = match handle(&shared, &header, &body, &mut keyspace) {
            Ok((op, b)) => (op, b),
            Err(e) => (opcode::ERROR, e.encode()),
        };
        let out = frame::response_frame(header.stream, op, &answer);
        tokio::select! {
            r = stream.write_all(&out) => if r.is_err() { return },
            _ = kill.changed() => return,
        }
    }
}

/// The error a fault makes a non-system request fail with.
fn fault_error(shared: &Shared, consistency: u16) -> Option<CqlError> {
    let fault = *shared.fault.lock().expect("lock");
    let mut e = match fault? {
        Fault::Failing => CqlError::new(
            ErrorCode::Unavailable,
            "Cannot achieve consistency level (injected fault: replicas unavailable)",
        ),
        Fault::Overloaded => {
            CqlError::new(ErrorCode::Overloaded, "Injected fault: node overloaded")
        }
        Fault::ServerError => CqlError::new(ErrorCode::Server, "Injected fault: server error"),
        Fault::Unavailable | Fault::Slow(_) => return None,
    };
    e.consistency = consistency;
    Some(e)
}

/// Answers one request: (response opcode, body).
fn handle(
    shared: &Shared,
    header: &Header,
    body: &[u8],
    keyspace: &mut Option<String>,
) -> Result<(u8, Vec<u8>), CqlError> {
    if header.flags & 0x01 != 0 {
        return Err(CqlError::protocol("compression was not negotiated"));
    }
    let mut r = Reader::new(body);
    if header.flags & 0x04 != 0 {
        r.skip_bytes_map()?;
    }
    match header.opcode {
        opcode::OPTIONS => {
            let mut w = Writer::default();
            w.string_multimap(&[
                ("CQL_VERSION", vec!["3.4.5"]),
                ("COMPRESSION", vec![]),
                ("PROTOCOL_VERSIONS", vec!["4/v4"]),
            ]);
            Ok((opcode::SUPPORTED, w.0))
        }
        opcode::STARTUP => {
            let options = r.string_map()?;
            if let Some((_, c)) = options.iter().find(|(k, _)| k == "COMPRESSION") {
                return Err(CqlError::protocol(format!(
                    "compression '{c}' is not supported by the test node"
                )));
            }
            Ok((opcode::READY, Vec::new()))
        }
        opcode::REGISTER => Ok((opcode::READY, Vec::new())),
        opcode::QUERY => {
            let query = r.long_string()?;
            let params = QueryParams::decode(&mut r)?;
            log(shared, &query);
            let (stmt, markers) = engine::parse(&query)?;
            if !Engine::is_system_statement(&stmt, keyspace.as_deref()) {
                if let Some(e) = fault_error(shared, params.consistency) {
                    return Err(e);
                }
            }
            if params.names.is_some() {
                return Err(CqlError::invalid(
                    "named values in an unprepared query are not supported by the test node",
                ));
            }
            if params.values.len() != markers {
                return Err(CqlError::invalid(format!(
                    "There were {markers} markers(?) in CQL but {} bound variables",
                    params.values.len()
                )));
            }
            let mut engine = shared.engine.lock().expect("lock");
            let outcome = engine.execute(&stmt, &params.values, exec(&params, keyspace))?;
            drop(engine);
            Ok((opcode::RESULT, encode_outcome(outcome, keyspace, false)))
        }
        opcode::PREPARE => {
            let query = r.long_string()?;
            log(shared, &query);
            let mut engine = shared.engine.lock().expect("lock");
            let (id, p) = engine.prepare(&query, keyspace.as_deref())?;
            let mut w = Writer::default();
            w.int(0x0004);
            w.short_bytes(&id);
            frame::write_prepared_metadata(&mut w, &p.bind_specs, &p.pk_indexes);
            frame::write_rows_metadata(&mut w, &p.result_specs, None, p.result_specs.is_empty());
            Ok((opcode::RESULT, w.0))
        }
        opcode::EXECUTE => {
            let id = r.short_bytes()?;
            let params = QueryParams::decode(&mut r)?;
            let prepared = shared.engine.lock().expect("lock").prepared(&id)?;
            let ks = prepared.keyspace.as_deref().or(keyspace.as_deref());
            if !Engine::is_system_statement(&prepared.statement, ks) {
                if let Some(e) = fault_error(shared, params.consistency) {
                    return Err(e);
                }
            }
            let values = order_values(&params, &prepared.bind_specs)?;
            let ks_owned = ks.map(str::to_string);
            let mut e = exec(&params, keyspace);
            e.keyspace = ks_owned.as_deref();
            let outcome =
                shared
                    .engine
                    .lock()
                    .expect("lock")
                    .execute(&prepared.statement, &values, e)?;
            Ok((
                opcode::RESULT,
                encode_outcome(outcome, keyspace, params.skip_metadata),
            ))
        }
        opcode::BATCH => batch(shared, &mut r, keyspace),
        other => Err(CqlError::protocol(format!(
            "opcode 0x{other:02x} is not supported by the test node"
        ))),
    }
}

fn log(shared: &Shared, query: &str) {
    let mut log = shared.log.lock().expect("lock");
    if log.len() < 100_000 {
        log.push(query.to_string());
    }
}

fn exec<'a>(params: &'a QueryParams, keyspace: &'a Option<String>) -> Exec<'a> {
    Exec {
        keyspace: keyspace.as_deref(),
        timestamp: params.timestamp,
        page_size: params.page_size,
        paging_state: params.paging_state.as_deref(),
    }
}

/// Puts named values in bind-marker order and checks their count.
fn order_values(params: &QueryParams, specs: &[frame::ColSpec]) -> Result<Vec<Value>, CqlError> {
    let values = match &params.names {
        None => params.values.clone(),
        Some(names) => {
            let mut out = vec![Value::Unset; specs.len()];
            for (name, v) in names.iter().zip(&params.values) {
                let i = specs.iter().position(|s| &s.name == name).ok_or_else(|| {
                    CqlError::invalid(format!("Invalid named bind variable name {name}"))
                })?;
                out[i] = v.clone();
            }
            out
        }
    };
    if values.len() != specs.len() {
        return Err(CqlError::invalid(format!(
            "There were {} markers(?) in CQL but {} bound variables",
            specs.len(),
            values.len()
        )));
    }
    Ok(values)
}

/// The BATCH request (spec section 4.1.7).
fn batch(
    shared: &Shared,
    r: &mut Reader<'_>,
    keyspace: &mut Option<String>,
) -> Result<(u8, Vec<u8>), CqlError> {
    let kind = r.byte()?;
    if kind == 2 {
        return Err(CqlError::invalid(
            "counter batches are not supported by the test node",
        ));
    }
    if kind > 2 {
        return Err(CqlError::protocol(format!("invalid batch type {kind}")));
    }
    let n = r.short()?;
    let mut raw = Vec::new();
    for _ in 0..n {
        let k = r.byte()?;
        let target = match k {
            0 => Err(r.long_string()?),
            1 => Ok(r.short_bytes()?),
            other => {
                return Err(CqlError::protocol(format!(
                    "invalid batch statement kind {other}"
                )))
            }
        };
        let nv = r.short()?;
        let values = (0..nv).map(|_| r.value()).collect::<Result<Vec<_>, _>>()?;
        raw.push((target, values));
    }
    let consistency = r.short()?;
    let flags = r.byte()?;
    if flags & 0x40 != 0 {
        return Err(CqlError::invalid(
            "named values in a batch are not supported by the test node",
        ));
    }
    if flags & 0x10 != 0 {
        r.short()?;
    }
    let timestamp = if flags & 0x20 != 0 {
        Some(r.long()?)
    } else {
        None
    };
    let mut items = Vec::new();
    let mut engine = shared.engine.lock().expect("lock");
    for (target, values) in raw {
        let (stmt, markers) = match target {
            Ok(id) => {
                let p = engine.prepared(&id)?;
                (p.statement, p.bind_specs.len())
            }
            Err(query) => {
                log(shared, &query);
                engine::parse(&query)?
            }
        };
        if values.len() != markers {
            return Err(CqlError::invalid(format!(
                "There were {markers} markers(?) in a batch statement but {} bound variables",
                values.len()
            )));
        }
        items.push((stmt, values));
    }
    let system = items
        .iter()
        .all(|(s, _)| Engine::is_system_statement(s, keyspace.as_deref()));
    if !system {
        if let Some(e) = fault_error(shared, consistency) {
            return Err(e);
        }
    }
    let ts = timestamp.unwrap_or_else(|| engine.next_timestamp());
    let outcome = engine.batch(&items, keyspace.as_deref(), ts)?;
    Ok((opcode::RESULT, encode_outcome(outcome, keyspace, false)))
}

/// Encodes a RESULT body; a Set_keyspace outcome also switches the connection's keyspace.
fn encode_outcome(outcome: Outcome, keyspace: &mut Option<String>, skip_metadata: bool) -> Vec<u8> {
    let mut w = Writer::default();
    match outcome {
        Outcome::Void => w.int(0x0001),
        Outcome::Rows {
            specs,
            rows,
            paging_state,
        } => {
            w.int(0x0002);
            frame::write_rows_metadata(&mut w, &specs, paging_state.as_deref(), skip_metadata);
            w.int(rows.len() as i32);
            for row in &rows {
                for cell in row {
                    w.bytes(cell.as_deref());
                }
            }
        }
        Outcome::SetKeyspace(ks) => {
            w.int(0x0003);
            w.string(&ks);
            *keyspace = Some(ks);
        }
        Outcome::SchemaChange {
            change,
            target,
            keyspace: ks,
            table,
        } => {
            w.int(0x0005);
            w.string(change);
            w.string(target);
            w.string(&ks);
            if let Some(t) = table {
                w.string(&t);
            }
        }
    }
    w.0
}
