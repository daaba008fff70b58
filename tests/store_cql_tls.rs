//! keyscore against a CQL node that accepts TLS only, with certificates made for each test: a
//! model round-trips through `store::open_with` when the node's CA is trusted; a node signed by
//! another CA, a certificate that does not name the server, and a plaintext client are refused
//! with messages that say so; TLS settings that cannot work (a client certificate without its
//! key, an unreadable CA file) are refused before any connection; a local datacenter routes
//! requests to that datacenter only. The Python uploader's connection
//! (`python/tests/test_connection.py`, run here against a node requiring client certificates)
//! writes over TLS what keyscore then reads.
//!
//! The Python test needs a Python with the project's packages: `KEYSCORE_PYTHON` (see
//! `tests/run-all.sh`); it fails naming the variable when it is missing.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use keyscore::store::{self, CqlOptions, Error, ModelStore};
use keyscore_testkit::cqlnode::clients::{self, repo_path};
use keyscore_testkit::cqlnode::CqlTestNode;
use keyscore_testkit::tls::{TestPki, SERVER_NAME};

/// How long connecting may take before a test fails: a refusal must come well before it.
const DEADLINE: Duration = Duration::from_secs(30);

/// The datacenter the test node reports in `system.local`.
const NODE_DC: &str = "datacenter1";

/// A node that accepts TLS only, with a certificate signed by `pki`'s CA.
async fn tls_node(pki: &TestPki) -> CqlTestNode {
    CqlTestNode::start_tls(pki.server_chain_pem(), pki.server_key_pem()).await
}

fn url(node: &CqlTestNode) -> String {
    format!("cql://{}/keyscore", node.addr())
}

/// Options trusting `ca_file`.
fn trusting(ca_file: PathBuf) -> CqlOptions {
    CqlOptions {
        tls_ca_file: Some(ca_file),
        ..CqlOptions::default()
    }
}

/// Opens the store, failing the test if that takes longer than [`DEADLINE`].
async fn open(url: &str, options: &CqlOptions) -> Result<std::sync::Arc<dyn ModelStore>, Error> {
    tokio::time::timeout(DEADLINE, store::open_with(url, options))
        .await
        .expect("opening the store returns before the deadline")
}

/// Writes, activates and reads back a seed model through `store`.
async fn round_trip(store: &dyn ModelStore) {
    let spec = std::fs::read_to_string(repo_path("seed/models/paris/v1.json")).expect("seed");
    store.init().await.expect("init over TLS");
    let version = store
        .put_version("paris", None, &spec)
        .await
        .expect("put_version over TLS");
    store
        .activate("paris", version)
        .await
        .expect("activate over TLS");
    let active = store
        .active("paris")
        .await
        .expect("active over TLS")
        .expect("paris has an active version");
    assert_eq!(active.model.version, version);
    assert_eq!(
        active.model.spec_json,
        keyscore::model::canonical_spec_text(&spec)
    );
}

#[tokio::test]
async fn a_model_round_trips_over_tls_when_the_nodes_ca_is_trusted() {
    let pki = TestPki::new();
    let node = tls_node(&pki).await;
    let store = open(&url(&node), &trusting(pki.ca_file()))
        .await
        .expect("keyscore connects over TLS trusting the node's CA");
    round_trip(store.as_ref()).await;
}

#[tokio::test]
async fn a_node_signed_by_another_ca_is_refused_as_a_failed_certificate_verification() {
    let pki = TestPki::new();
    let node = tls_node(&pki).await;
    let err = open(&url(&node), &trusting(pki.other_ca_file()))
        .await
        .expect_err("a node signed by an untrusted CA is refused");
    let message = err.to_string();
    assert!(matches!(err, Error::Rejected { .. }), "{err:?}");
    assert!(
        message.contains("TLS certificate verification failed"),
        "{message}"
    );
    assert!(message.contains("not signed by tls_ca_file"), "{message}");
    assert!(
        message.contains(&pki.other_ca_file().display().to_string()),
        "the message names the CA file: {message}"
    );
    let source = std::error::Error::source(&err).expect("the TLS error is kept as the source");
    assert!(source.to_string().contains("UnknownIssuer"), "{source}");
}

#[tokio::test]
async fn the_server_name_setting_replaces_the_address_check() {
    let pki = TestPki::new();
    let node = tls_node(&pki).await;
    let named = CqlOptions {
        tls_server_name: Some(SERVER_NAME.to_string()),
        ..trusting(pki.ca_file())
    };
    let store = open(&url(&node), &named)
        .await
        .expect("the certificate names the configured server name");
    round_trip(store.as_ref()).await;

    let misnamed = CqlOptions {
        tls_server_name: Some("db.elsewhere.example".to_string()),
        ..trusting(pki.ca_file())
    };
    let err = open(&url(&node), &misnamed)
        .await
        .expect_err("a certificate that does not name tls_server_name is refused");
    let message = err.to_string();
    assert!(
        message.contains("TLS certificate verification failed"),
        "{message}"
    );
    assert!(message.contains("does not name the server"), "{message}");
    assert!(message.contains("db.elsewhere.example"), "{message}");
}

#[tokio::test]
async fn a_plaintext_client_against_a_tls_node_fails_pointing_at_tls() {
    let pki = TestPki::new();
    let node = tls_node(&pki).await;
    let err = open(&url(&node), &CqlOptions::default())
        .await
        .expect_err("a plaintext client cannot talk to a TLS-only node");
    let message = err.to_string();
    assert!(err.is_transient(), "{err:?}");
    assert!(message.contains(&url(&node)), "{message}");
    assert!(
        message.contains("if the cluster requires TLS") && message.contains("tls_ca_file"),
        "{message}"
    );
}

#[tokio::test]
async fn a_client_certificate_is_presented_when_the_node_requires_one() {
    let pki = TestPki::new();
    let node = CqlTestNode::start_tls_with_client_auth(
        pki.server_chain_pem(),
        pki.server_key_pem(),
        pki.ca_pem(),
    )
    .await;
    let with_cert = CqlOptions {
        tls_cert_file: Some(pki.client_cert_file()),
        tls_key_file: Some(pki.client_key_file()),
        ..trusting(pki.ca_file())
    };
    let store = open(&url(&node), &with_cert)
        .await
        .expect("keyscore presents its client certificate");
    round_trip(store.as_ref()).await;

    let err = open(&url(&node), &trusting(pki.ca_file()))
        .await
        .expect_err("the node refuses a client without a certificate");
    let message = err.to_string();
    assert!(message.contains("over TLS"), "{message}");
    assert!(message.contains("tls_cert_file"), "{message}");
}

/// A port that records whether anyone connected.
fn quiet_port() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.set_nonblocking(true).expect("non-blocking");
    let url = format!("cql://{}/keyscore", listener.local_addr().expect("addr"));
    (listener, url)
}

fn assert_nobody_connected(listener: &TcpListener) {
    match listener.accept() {
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("keyscore connected before refusing its settings: {other:?}"),
    }
}

#[tokio::test]
async fn a_client_certificate_without_its_key_is_refused_before_connecting() {
    let pki = TestPki::new();
    let (listener, url) = quiet_port();
    let cert_only = CqlOptions {
        tls_cert_file: Some(pki.client_cert_file()),
        ..trusting(pki.ca_file())
    };
    let err = open(&url, &cert_only)
        .await
        .expect_err("half a client identity");
    assert!(matches!(err, Error::Setting { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("tls_cert_file is set without tls_key_file"),
        "{message}"
    );

    let key_only = CqlOptions {
        tls_key_file: Some(pki.client_key_file()),
        ..trusting(pki.ca_file())
    };
    let err = open(&url, &key_only)
        .await
        .expect_err("half a client identity");
    assert!(
        err.to_string()
            .contains("tls_key_file is set without tls_cert_file"),
        "{err}"
    );
    assert_nobody_connected(&listener);
}

#[tokio::test]
async fn unusable_tls_files_are_refused_naming_the_file_before_connecting() {
    let pki = TestPki::new();
    let (listener, url) = quiet_port();

    let missing = pki.dir().join("missing-ca.pem");
    let err = open(&url, &trusting(missing.clone()))
        .await
        .expect_err("a missing CA file");
    let message = err.to_string();
    assert!(
        message.contains("cannot read tls_ca_file")
            && message.contains(&missing.display().to_string()),
        "{message}"
    );
    assert!(
        std::error::Error::source(&err).is_some(),
        "the I/O error is kept"
    );

    let not_pem = pki.dir().join("not-a-cert.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").expect("write");
    let err = open(&url, &trusting(not_pem.clone()))
        .await
        .expect_err("a CA file without certificates");
    let message = err.to_string();
    assert!(
        message.contains("holds no certificate")
            && message.contains(&not_pem.display().to_string()),
        "{message}"
    );

    // The CA certificate given as the client key: no private key in it.
    let wrong_key = CqlOptions {
        tls_cert_file: Some(pki.client_cert_file()),
        tls_key_file: Some(pki.ca_file()),
        ..trusting(pki.ca_file())
    };
    let err = open(&url, &wrong_key)
        .await
        .expect_err("a key file without a key");
    let message = err.to_string();
    assert!(
        message.contains("holds no private key")
            && message.contains(&pki.ca_file().display().to_string()),
        "{message}"
    );

    // Another certificate's key.
    let other = TestPki::new();
    let mismatched = CqlOptions {
        tls_cert_file: Some(pki.client_cert_file()),
        tls_key_file: Some(other.client_key_file()),
        ..trusting(pki.ca_file())
    };
    let err = open(&url, &mismatched)
        .await
        .expect_err("a key that is not the certificate's");
    assert!(
        err.to_string()
            .contains("is not the private key of tls_cert_file"),
        "{err}"
    );
    assert_nobody_connected(&listener);
}

#[tokio::test]
async fn a_local_datacenter_routes_requests_to_that_datacenter_only() {
    let pki = TestPki::new();
    let node = tls_node(&pki).await;
    let local = CqlOptions {
        local_dc: Some(NODE_DC.to_string()),
        ..trusting(pki.ca_file())
    };
    let store = open(&url(&node), &local)
        .await
        .expect("keyscore connects with the node's datacenter as local");
    round_trip(store.as_ref()).await;

    // No node in the named datacenter and no failover: requests have nowhere to go.
    let elsewhere = CqlOptions {
        local_dc: Some("dc-without-nodes".to_string()),
        ..trusting(pki.ca_file())
    };
    let store = open(&url(&node), &elsewhere)
        .await
        .expect("the session opens; only requests are routed by datacenter");
    let err = tokio::time::timeout(DEADLINE, store.active("paris"))
        .await
        .expect("a read returns before the deadline")
        .expect_err("no node of the local datacenter takes the read");
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn the_python_uploader_writes_over_tls_what_keyscore_reads() {
    let pki = TestPki::new();
    let node = CqlTestNode::start_tls_with_client_auth(
        pki.server_chain_pem(),
        pki.server_key_pem(),
        pki.ca_pem(),
    )
    .await;
    let options = CqlOptions {
        tls_cert_file: Some(pki.client_cert_file()),
        tls_key_file: Some(pki.client_key_file()),
        ..trusting(pki.ca_file())
    };
    let store = open(&url(&node), &options)
        .await
        .expect("keyscore connects with its client certificate");
    store.init().await.expect("init over TLS");

    let key = keyscore_testkit::unique_key("tls-python");
    let test_file = repo_path("python/tests/test_connection.py");
    let python_dir = repo_path("python");
    let addr = node.addr().to_string();
    let out = clients::run_client(
        &clients::python(),
        &[
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            &test_file.to_string_lossy(),
        ],
        &[
            // This tree's package, not an installed copy.
            ("PYTHONPATH", &python_dir.to_string_lossy()),
            ("KEYSCORE_TEST_TLS_CQL_NODE", &addr),
            ("KEYSCORE_TEST_TLS_DIR", &pki.dir().to_string_lossy()),
            ("KEYSCORE_TEST_TLS_KEY", &key),
        ],
    )
    .await;
    assert!(
        out.success && !out.stdout.contains("skipped") && out.stdout.contains(" passed"),
        "pytest {} ({}):\n{}\n{}",
        test_file.display(),
        out.status,
        out.stdout,
        out.stderr
    );

    let active = store
        .active(&key)
        .await
        .expect("active over TLS")
        .expect("the Python test activated a version");
    assert_eq!(active.model.version, 1);
    store::check_spec(&active.model.spec_json).expect("the uploaded spec builds");
}
