//! Certificates made at run time for TLS tests: a certificate authority, a server certificate
//! it signs for the CQL test node, a client certificate it signs, and a second, unrelated
//! authority that must not be trusted. Everything is written as PEM files in a temporary
//! directory that lives as long as the [`TestPki`].
//!
//! ```
//! let pki = keyscore_testkit::tls::TestPki::new();
//! assert!(pki.ca_file().is_file());
//! assert!(pki.server_chain_pem().contains("BEGIN CERTIFICATE"));
//! ```

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The host name the server certificate carries besides `localhost`, `127.0.0.1` and `::1`.
pub const SERVER_NAME: &str = "cql.keyscore.test";

/// A test certificate authority with a server and a client certificate, as PEM files.
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
    server_chain_pem: String,
    server_key_pem: String,
    ca_pem: String,
}

impl TestPki {
    /// Makes the authority and the certificates; panics if a certificate cannot be made.
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("a directory for test certificates");
        let (ca_pem, ca) = authority("keyscore test CA");
        let (other_ca_pem, _) = authority("keyscore unrelated test CA");

        let server_key = KeyPair::generate().expect("a server key");
        let mut server = CertificateParams::new(vec![
            "localhost".to_string(),
            SERVER_NAME.to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ])
        .expect("server certificate names");
        server
            .distinguished_name
            .push(DnType::CommonName, "keyscore test node");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_pem = server
            .signed_by(&server_key, &ca)
            .expect("the CA signs the server certificate")
            .pem();

        let client_key = KeyPair::generate().expect("a client key");
        let mut client =
            CertificateParams::new(Vec::<String>::new()).expect("client certificate params");
        client
            .distinguished_name
            .push(DnType::CommonName, "keyscore test client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_pem = client
            .signed_by(&client_key, &ca)
            .expect("the CA signs the client certificate")
            .pem();

        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).expect("writing a test certificate");
        };
        write("ca.pem", &ca_pem);
        write("other-ca.pem", &other_ca_pem);
        write("server.pem", &server_pem);
        write("server.key", &server_key.serialize_pem());
        write("client.pem", &client_pem);
        write("client.key", &client_key.serialize_pem());
        TestPki {
            dir,
            server_chain_pem: server_pem,
            server_key_pem: server_key.serialize_pem(),
            ca_pem,
        }
    }

    /// The authority's certificate, the one clients trust.
    pub fn ca_file(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// An unrelated authority's certificate: clients trusting only it must refuse the node.
    pub fn other_ca_file(&self) -> PathBuf {
        self.path("other-ca.pem")
    }

    /// The client certificate, signed by the authority.
    pub fn client_cert_file(&self) -> PathBuf {
        self.path("client.pem")
    }

    /// The client certificate's private key (PKCS#8 PEM).
    pub fn client_key_file(&self) -> PathBuf {
        self.path("client.key")
    }

    /// The server certificate chain, PEM, for [`crate::cqlnode::CqlTestNode::start_tls`].
    pub fn server_chain_pem(&self) -> &str {
        &self.server_chain_pem
    }

    /// The server's private key, PEM.
    pub fn server_key_pem(&self) -> &str {
        &self.server_key_pem
    }

    /// The authority's certificate, PEM, for a node that asks clients for certificates.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// A self-signed authority: its certificate's PEM and the issuer that signs with it.
fn authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("a CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = params
        .self_signed(&key)
        .expect("a self-signed CA certificate")
        .pem();
    (pem, Issuer::new(params, key))
}
