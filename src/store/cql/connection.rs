//! What `[store.cql]` ([`CqlOptions`]) makes of the driver's connections: TLS (the CA that
//! signs the nodes' certificates, an optional client certificate, the name the nodes'
//! certificates must carry) and datacenter-aware routing with LOCAL_QUORUM / LOCAL_SERIAL.
//!
//! Every file is read and checked by [`ConnectionSettings::new`], before the first connection,
//! so a missing or malformed file fails at start, naming the file.
//!
//! The driver (scylla 1.x with rustls) asks to verify every node's certificate against the
//! node's IP address. The verifier here checks the chain with rustls' WebPKI verifier and the
//! name against `tls_server_name` when it is set, else against the node's address or any host
//! name written in the store URL. A verification failure is remembered, so the error of a
//! session that could not open says that the certificate was refused, and why.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use scylla::client::execution_profile::ExecutionProfileBuilder;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::NewSessionError;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::statement::{Consistency, SerialConsistency};

use super::config::{CqlConfig, CqlOptions};
use super::errors;
use crate::store::Error;

/// The connection settings of one store, checked and ready to apply to the driver's builders.
pub(super) struct ConnectionSettings {
    tls: Option<TlsSettings>,
    local_dc: Option<String>,
}

/// A checked TLS client configuration and where to look when a handshake fails.
struct TlsSettings {
    config: Arc<ClientConfig>,
    /// The last certificate the verifier refused, and why.
    refused: Arc<Mutex<Option<Refusal>>>,
    /// What the operator set, for messages.
    ca_file: String,
    server_name: Option<String>,
}

/// A certificate the verifier refused.
#[derive(Debug, Clone)]
struct Refusal {
    /// The name or address it was checked against first.
    checked_as: String,
    error: rustls::Error,
}

impl ConnectionSettings {
    /// Reads and checks the files `options` names; contacts nothing.
    pub(super) fn new(config: &CqlConfig, options: &CqlOptions) -> Result<Self, Error> {
        let local_dc = match options.local_dc.as_deref().map(str::trim) {
            Some("") | None => None,
            Some(dc) => Some(dc.to_string()),
        };
        Ok(Self {
            tls: tls_settings(config, options)?,
            local_dc,
        })
    }

    /// Whether connections use TLS.
    pub(super) fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Adds the routing and consistency to the default execution profile: LOCAL_QUORUM and
    /// LOCAL_SERIAL always (also the driver's defaults, written down here so they do not
    /// change under keyscore), and with a local datacenter, a token-aware policy that sends
    /// requests to that datacenter only.
    pub(super) fn profile(&self, builder: ExecutionProfileBuilder) -> ExecutionProfileBuilder {
        let builder = builder
            .consistency(Consistency::LocalQuorum)
            .serial_consistency(Some(SerialConsistency::LocalSerial));
        match &self.local_dc {
            Some(dc) => builder.load_balancing_policy(
                DefaultPolicy::builder()
                    .prefer_datacenter(dc.clone())
                    .permit_dc_failover(false)
                    .token_aware(true)
                    .build(),
            ),
            None => builder,
        }
    }

    /// Adds the TLS context, when TLS is on.
    pub(super) fn session(&self, builder: SessionBuilder) -> SessionBuilder {
        match &self.tls {
            Some(tls) => builder.tls_context(Some(tls.config.clone())),
            None => builder,
        }
    }

    /// Maps a failure to open the session: a certificate the verifier refused, or another
    /// failure over TLS, is explained here; anything else as [`errors::session_error`] does.
    pub(super) fn session_error(&self, config: &CqlConfig, err: NewSessionError) -> Error {
        let Some(tls) = &self.tls else {
            return errors::session_error(config, err);
        };
        if matches!(
            err,
            NewSessionError::EmptyKnownNodesList | NewSessionError::IllegalConfig(_)
        ) {
            return errors::session_error(config, err);
        }
        let refused = tls.refused.lock().expect("lock").take();
        if let Some(refusal) = refused {
            let why = refusal_reason(&refusal.error);
            let check = match &tls.server_name {
                Some(name) => format!(
                    "check that tls_ca_file ({}) holds the CA that signs the nodes' \
                     certificates and that they name {name} (tls_server_name)",
                    tls.ca_file
                ),
                None => format!(
                    "check that tls_ca_file ({}) holds the CA that signs the nodes' \
                     certificates and, if they name a host rather than {}, set \
                     tls_server_name",
                    tls.ca_file, refusal.checked_as
                ),
            };
            return Error::rejected_from(
                format!(
                    "cannot connect to {}: TLS certificate verification failed ({why}); {check}",
                    config.describe()
                ),
                refusal.error,
            );
        }
        Error::unavailable_from(
            format!(
                "cannot connect to {} over TLS; check that the hosts are up and reachable and \
                 accept TLS on that port, that the cluster accepts keyscore's client \
                 certificate if it requires one (tls_cert_file, tls_key_file) and, if the \
                 cluster requires a login, KEYSCORE_CQL_USERNAME and KEYSCORE_CQL_PASSWORD",
                config.describe()
            ),
            err,
        )
    }
}

/// Why a certificate was refused, in words.
fn refusal_reason(err: &rustls::Error) -> &'static str {
    match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => {
                "the server's certificate is not signed by tls_ca_file"
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the server's certificate does not name the server"
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired"
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet"
            }
            _ => "the server's certificate is invalid",
        },
        _ => "the server's certificate could not be checked",
    }
}

/// The TLS settings `options` describe, or `None` without a CA file.
fn tls_settings(config: &CqlConfig, options: &CqlOptions) -> Result<Option<TlsSettings>, Error> {
    let client_files = match (&options.tls_cert_file, &options.tls_key_file) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(Error::setting(
                "tls_cert_file is set without tls_key_file; set both (a client certificate \
                 and its private key) or neither",
            ))
        }
        (None, Some(_)) => {
            return Err(Error::setting(
                "tls_key_file is set without tls_cert_file; set both (a client certificate \
                 and its private key) or neither",
            ))
        }
    };
    let Some(ca_file) = &options.tls_ca_file else {
        if client_files.is_some() || options.tls_server_name.is_some() {
            return Err(Error::setting(
                "TLS settings are given without tls_ca_file; set tls_ca_file to the PEM file \
                 of the CA that signs the nodes' certificates to turn TLS on",
            ));
        }
        return Ok(None);
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(ca_file, "tls_ca_file")? {
        roots.add(cert).map_err(|err| {
            Error::setting_from(
                format!(
                    "tls_ca_file {} holds a certificate that is not a usable CA certificate",
                    ca_file.display()
                ),
                err,
            )
        })?;
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|err| {
            Error::setting_from(
                format!(
                    "tls_ca_file {} cannot verify certificates",
                    ca_file.display()
                ),
                err,
            )
        })?;
    let server_name = match options.tls_server_name.as_deref().map(str::trim) {
        Some("") | None => None,
        Some(name) => Some(name.to_string()),
    };
    let names = match &server_name {
        Some(name) => vec![ServerName::try_from(name.clone()).map_err(|err| {
            Error::setting_from(
                format!(
                    "tls_server_name '{}' is not a host name or IP address",
                    name.escape_debug()
                ),
                err,
            )
        })?],
        None => url_host_names(config),
    };
    let refused = Arc::new(Mutex::new(None));
    let verifier = Arc::new(NamedServerVerifier {
        webpki,
        names,
        only_names: server_name.is_some(),
        refused: refused.clone(),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| Error::setting_from("the TLS library refused its own defaults", err))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match client_files {
        None => builder.with_no_client_auth(),
        Some((cert_file, key_file)) => {
            let certs = read_certificates(cert_file, "tls_cert_file")?;
            let key = read_private_key(key_file)?;
            builder.with_client_auth_cert(certs, key).map_err(|err| {
                Error::setting_from(
                    format!(
                        "tls_key_file {} is not the private key of tls_cert_file {}, or its \
                         kind is not supported; use the key the certificate was issued for",
                        key_file.display(),
                        cert_file.display()
                    ),
                    err,
                )
            })?
        }
    };
    Ok(Some(TlsSettings {
        config: Arc::new(config),
        refused,
        ca_file: ca_file.display().to_string(),
        server_name,
    }))
}

/// Reads a file for a setting, naming both when it cannot be read.
fn read_file(path: &Path, setting: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|err| {
        Error::setting_from(format!("cannot read {setting} {}", path.display()), err)
    })
}

/// The certificates of a PEM file; at least one.
fn read_certificates(path: &Path, setting: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = read_file(path, setting)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| {
            Error::setting_from(
                format!("{setting} {} is not a valid PEM file", path.display()),
                err,
            )
        })?;
    if certs.is_empty() {
        return Err(Error::setting(format!(
            "{setting} {} holds no certificate; use a PEM file with -----BEGIN CERTIFICATE----- \
             blocks",
            path.display()
        )));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let bytes = read_file(path, "tls_key_file")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|err| match err {
        rustls::pki_types::pem::Error::NoItemsFound => Error::setting(format!(
            "tls_key_file {} holds no private key; use a PEM file with a -----BEGIN PRIVATE \
             KEY----- block",
            path.display()
        )),
        err => Error::setting_from(
            format!("tls_key_file {} is not a valid PEM file", path.display()),
            err,
        ),
    })
}

/// The host names (not addresses) written in the store URL.
fn url_host_names(config: &CqlConfig) -> Vec<ServerName<'static>> {
    config
        .nodes
        .iter()
        .filter_map(|node| node.rsplit_once(':').map(|(host, _)| host))
        .filter(|host| !host.starts_with('[') && host.parse::<IpAddr>().is_err())
        .filter_map(|host| ServerName::try_from(host.to_string()).ok())
        .collect()
}

/// Checks a node's certificate chain against the CA file, and its name against the configured
/// server name, or else the node's address or a host name of the store URL.
#[derive(Debug)]
struct NamedServerVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    /// `tls_server_name`, or the URL's host names.
    names: Vec<ServerName<'static>>,
    /// Whether only `names` are accepted (`tls_server_name` is set), not the node's address.
    only_names: bool,
    refused: Arc<Mutex<Option<Refusal>>>,
}

impl ServerCertVerifier for NamedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let address = (!self.only_names).then_some(server_name);
        let mut first: Option<(String, rustls::Error)> = None;
        for name in address.into_iter().chain(self.names.iter()) {
            match self.webpki.verify_server_cert(
                end_entity,
                intermediates,
                name,
                ocsp_response,
                now,
            ) {
                Ok(verified) => return Ok(verified),
                Err(err) => {
                    first.get_or_insert_with(|| (name.to_str().into_owned(), err));
                }
            }
        }
        let (checked_as, error) = first.unwrap_or_else(|| {
            (
                server_name.to_str().into_owned(),
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
            )
        });
        *self.refused.lock().expect("lock") = Some(Refusal {
            checked_as,
            error: error.clone(),
        });
        Err(error)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_host_names_of_the_url_are_kept_for_the_name_check() {
        let config =
            CqlConfig::parse("db1.example.com,10.0.0.2:9142,[::1]:9042,db2/ks", |_| None).unwrap();
        let names: Vec<String> = url_host_names(&config)
            .iter()
            .map(|n| n.to_str().into_owned())
            .collect();
        assert_eq!(names, ["db1.example.com", "db2"]);
    }

    #[test]
    fn tls_settings_without_a_ca_file_are_refused() {
        let config = CqlConfig::parse("db1/ks", |_| None).unwrap();
        let options = CqlOptions {
            tls_server_name: Some("db1".into()),
            ..CqlOptions::default()
        };
        let err = ConnectionSettings::new(&config, &options)
            .err()
            .expect("a server name without a CA file is refused");
        assert!(matches!(err, Error::Setting { .. }), "{err:?}");
        assert!(err.to_string().contains("tls_ca_file"), "{err}");
        let plain = ConnectionSettings::new(&config, &CqlOptions::default()).unwrap();
        assert!(!plain.tls());
    }
}
