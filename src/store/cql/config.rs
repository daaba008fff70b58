//! Parsing a `cql://` store URL and the credentials from the environment, and the CQL
//! connection settings of `[store.cql]`.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::super::Error;

/// The port a host without one is given.
pub(crate) const DEFAULT_PORT: u16 = 9042;

/// The keyspace a URL without one uses.
pub(crate) const DEFAULT_KEYSPACE: &str = "keyscore";

/// The environment variable holding the CQL user name.
pub(crate) const USERNAME_ENV: &str = "KEYSCORE_CQL_USERNAME";

/// The environment variable holding the CQL password.
pub(crate) const PASSWORD_ENV: &str = "KEYSCORE_CQL_PASSWORD";

/// The environment variables that override `[store.cql]` fields, as (variable, field).
/// Credentials are not among them: they come from [`USERNAME_ENV`] and [`PASSWORD_ENV`] only.
pub const CQL_ENV_OVERRIDES: &[(&str, &str)] = &[
    ("KEYSCORE_CQL_LOCAL_DC", "local_dc"),
    ("KEYSCORE_CQL_TLS_CA_FILE", "tls_ca_file"),
    ("KEYSCORE_CQL_TLS_CERT_FILE", "tls_cert_file"),
    ("KEYSCORE_CQL_TLS_KEY_FILE", "tls_key_file"),
    ("KEYSCORE_CQL_TLS_SERVER_NAME", "tls_server_name"),
];

/// `[store.cql]`: how keyscore connects to a ScyllaDB or Cassandra cluster. Only read for a
/// `cql://` store URL. Every field may be left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CqlOptions {
    /// The datacenter to send requests to (default: none, every node the driver knows). When
    /// set, requests go to that datacenter's nodes only, never failing over to another, and
    /// read and write at LOCAL_QUORUM (lightweight transactions at LOCAL_SERIAL). Override:
    /// `KEYSCORE_CQL_LOCAL_DC`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_dc: Option<String>,
    /// A PEM file with the certificate authorities that sign the nodes' certificates (default:
    /// none, plaintext). Setting it turns TLS on. Override: `KEYSCORE_CQL_TLS_CA_FILE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// A PEM file with keyscore's client certificate chain, for clusters that require client
    /// certificates (default: none). Needs `tls_key_file` and `tls_ca_file`. Override:
    /// `KEYSCORE_CQL_TLS_CERT_FILE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// A PEM file with the private key of `tls_cert_file` (default: none). Override:
    /// `KEYSCORE_CQL_TLS_KEY_FILE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// The name the nodes' certificates must carry (default: none, in which case a node's
    /// certificate must name the address keyscore connects to, or a host name written in the
    /// store URL). Set it when the certificates name hosts and nodes are reached by address.
    /// Override: `KEYSCORE_CQL_TLS_SERVER_NAME`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// The largest model spec stored, in bytes as stored (zstd-compressed for specs over
    /// 256 KiB; default 33554432, 32 MiB). Each request carries at most one 512 KiB chunk
    /// whatever this is.
    pub max_spec_bytes: u64,
    /// How far behind the newest change it read a watcher reads the change feed again, in
    /// milliseconds, for rows that land late or come from clocks behind its own (default
    /// 30000). Each poll re-reads the rows of this window.
    pub feed_look_back_ms: u64,
    /// How long connecting to the cluster may take, in milliseconds, from the first connection
    /// to the first answers (default 5000): a node that accepts connections but never answers
    /// fails the store's opening after this, with a message naming the store, instead of
    /// hanging.
    pub connect_timeout_ms: u64,
    /// How long live-quality rows (`model_quality`) live, in seconds, written `USING TTL`
    /// (default 2592000, 30 days; 0 keeps them until deleted; at most 20 years). It bounds
    /// each key's partition: about this long divided by the window length rows per version
    /// and arm (see `cql/060_model_quality.cql`).
    pub quality_ttl_secs: u64,
}

impl Default for CqlOptions {
    fn default() -> Self {
        Self {
            local_dc: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_server_name: None,
            max_spec_bytes: super::DEFAULT_MAX_SPEC_BYTES,
            feed_look_back_ms: u64::try_from(super::DEFAULT_FEED_LOOK_BACK.as_millis())
                .unwrap_or(u64::MAX),
            connect_timeout_ms: u64::try_from(super::CONNECT_TIMEOUT.as_millis())
                .unwrap_or(u64::MAX),
            quality_ttl_secs: super::DEFAULT_QUALITY_TTL.as_secs(),
        }
    }
}

impl CqlOptions {
    /// Whether connections use TLS (a CA file is set).
    pub fn tls(&self) -> bool {
        self.tls_ca_file.is_some()
    }
}

/// Where a [`super::CqlModelStore`] connects, parsed from
/// `HOST[:PORT][,HOST[:PORT]...][/KEYSPACE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CqlConfig {
    /// Contact points as `host:port`.
    pub(crate) nodes: Vec<String>,
    /// The keyspace, a plain CQL identifier.
    pub(crate) keyspace: String,
    /// The login, when the environment gives one.
    pub(crate) credentials: Option<Credentials>,
}

/// A user name and password. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) username: String,
    pub(crate) password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

impl CqlConfig {
    /// Parses the part of a store URL after `cql://`, reading credentials with `env` (the
    /// process environment in production, a map in tests).
    pub(crate) fn parse(rest: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        if rest.contains('@') {
            return Err(Error::Url(format!(
                "credentials in a cql:// URL are not accepted (URLs end up in logs); set \
                 {USERNAME_ENV} and {PASSWORD_ENV} instead"
            )));
        }
        let (hosts, keyspace) = match rest.split_once('/') {
            Some((hosts, keyspace)) => (hosts, keyspace.trim_end_matches('/')),
            None => (rest, ""),
        };
        let keyspace = if keyspace.is_empty() {
            DEFAULT_KEYSPACE
        } else {
            keyspace
        };
        check_keyspace(keyspace)?;
        let nodes = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(parse_node)
            .collect::<Result<Vec<_>, _>>()?;
        if nodes.is_empty() {
            return Err(Error::Url(
                "no hosts in the cql:// URL; use cql://HOST:PORT[,HOST:PORT...]/KEYSPACE".into(),
            ));
        }
        let nonempty = |name: &str| env(name).filter(|v| !v.is_empty());
        let credentials = match (nonempty(USERNAME_ENV), nonempty(PASSWORD_ENV)) {
            (Some(username), Some(password)) => Some(Credentials { username, password }),
            (None, None) => None,
            _ => {
                return Err(Error::Url(format!(
                    "set both {USERNAME_ENV} and {PASSWORD_ENV}, or neither"
                )))
            }
        };
        Ok(Self {
            nodes,
            keyspace: keyspace.to_string(),
            credentials,
        })
    }

    /// The URL without credentials: `cql://HOST:PORT,.../KEYSPACE`.
    pub(crate) fn describe(&self) -> String {
        format!("cql://{}/{}", self.nodes.join(","), self.keyspace)
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`, with the default port filled in.
fn parse_node(node: &str) -> Result<String, Error> {
    let bad = |why: &str| {
        Error::Url(format!(
            "bad host '{node}' in the cql:// URL: {why}; use HOST:PORT, for example \
             127.0.0.1:9042"
        ))
    };
    let (host, port) = if let Some(v6) = node.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        match after.strip_prefix(':') {
            Some(port) => (format!("[{host}]"), Some(port)),
            None if after.is_empty() => (format!("[{host}]"), None),
            None => return Err(bad("unexpected text after ']'")),
        }
    } else {
        match node.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err(bad("write IPv6 addresses in brackets, as [::1]:9042"))
            }
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (node.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(bad("empty host name"));
    }
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
        None => DEFAULT_PORT,
    };
    Ok(format!("{host}:{port}"))
}

/// A keyspace name keyscore can write unquoted: a letter, then letters, digits or `_`, at most
/// 48 characters.
fn check_keyspace(keyspace: &str) -> Result<(), Error> {
    let mut chars = keyspace.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !starts_with_letter
        || keyspace.len() > 48
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(Error::Url(format!(
            "bad keyspace '{}' in the cql:// URL: use a letter followed by up to 47 letters, \
             digits or underscores",
            keyspace.escape_debug()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn hosts_ports_and_keyspace_are_read() {
        let config = CqlConfig::parse("10.0.0.1:9142,db2:19042/prod_models", no_env).unwrap();
        assert_eq!(config.nodes, ["10.0.0.1:9142", "db2:19042"]);
        assert_eq!(config.keyspace, "prod_models");
        assert_eq!(config.credentials, None);
    }

    #[test]
    fn port_and_keyspace_have_defaults() {
        for rest in ["db1", "db1/", "db1:9042/keyscore"] {
            let config = CqlConfig::parse(rest, no_env).unwrap();
            assert_eq!(config.nodes, ["db1:9042"], "{rest}");
            assert_eq!(config.keyspace, "keyscore", "{rest}");
        }
        let config = CqlConfig::parse("[::1],[fe80::2]:9043/k", no_env).unwrap();
        assert_eq!(config.nodes, ["[::1]:9042", "[fe80::2]:9043"]);
    }

    #[test]
    fn bad_urls_are_refused_with_the_expected_form() {
        for rest in [
            "",
            "/ks",
            "db1:port/ks",
            "db1:0/ks",
            "db1:70000/ks",
            "::1/ks",
            "[::1/ks",
            "db1/1ks",
            "db1/ks-prod",
            "db1/ks;DROP",
        ] {
            let err = CqlConfig::parse(rest, no_env).unwrap_err();
            assert!(matches!(err, Error::Url(_)), "{rest}: {err:?}");
        }
    }

    #[test]
    fn credentials_come_from_the_environment() {
        let env = env_of(&[(USERNAME_ENV, "svc"), (PASSWORD_ENV, "s3cret")]);
        let config = CqlConfig::parse("db1/ks", env).unwrap();
        assert_eq!(
            config.credentials,
            Some(Credentials {
                username: "svc".into(),
                password: "s3cret".into()
            })
        );
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(!config.describe().contains("s3cret"));
        assert!(!config.describe().contains("svc"));
    }

    #[test]
    fn half_a_login_is_refused() {
        let err = CqlConfig::parse("db1/ks", env_of(&[(USERNAME_ENV, "svc")])).unwrap_err();
        assert!(err.to_string().contains(PASSWORD_ENV), "{err}");
        let err = CqlConfig::parse("db1/ks", env_of(&[(PASSWORD_ENV, "pw")])).unwrap_err();
        assert!(err.to_string().contains(USERNAME_ENV), "{err}");
    }

    #[test]
    fn credentials_in_the_url_are_refused_without_echoing_them() {
        let err = CqlConfig::parse("svc:s3cret@db1/ks", no_env).unwrap_err();
        assert!(matches!(err, Error::Url(_)));
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(err.to_string().contains(USERNAME_ENV), "{err}");
    }

    #[test]
    fn describe_shows_hosts_and_keyspace() {
        let config = CqlConfig::parse("db1,db2:9043", no_env).unwrap();
        assert_eq!(config.describe(), "cql://db1:9042,db2:9043/keyscore");
    }
}
