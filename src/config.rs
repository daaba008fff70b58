//! Configuration: one TOML file plus environment overrides.
//!
//! Every field has a documented default, so an empty file (or none) is a valid configuration.
//! Unknown fields are refused, so a typo is an error rather than a silently ignored setting.
//!
//! Environment overrides: `KEYSCORE__SECTION__FIELD=value` sets `[section] field` (for example
//! `KEYSCORE__STORE__URL=cql://db1:9042/keyscore`, or
//! `KEYSCORE__KAFKA__OPTIONS__SASL_PASSWORD` ... see [`Config::apply_env`]). A value is read as
//! a TOML value when it parses as one (numbers, booleans, `["a", "b"]`) and as a string
//! otherwise.
//!
//! The CQL connection settings also have the short names the Python uploader reads
//! ([`crate::store::CQL_ENV_OVERRIDES`]): `KEYSCORE_CQL_LOCAL_DC`, `KEYSCORE_CQL_TLS_CA_FILE`,
//! `KEYSCORE_CQL_TLS_CERT_FILE`, `KEYSCORE_CQL_TLS_KEY_FILE` and `KEYSCORE_CQL_TLS_SERVER_NAME`
//! set `[store.cql]` fields, always as strings; an empty value unsets the field. A
//! `KEYSCORE__STORE__CQL__FIELD` variable for the same field wins over them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{
    ops::OpsConfig, quality::QualityConfig, registry::StoreConfig, store::CQL_ENV_OVERRIDES,
    stream::kafka::KafkaConfig, stream::record::RecordsConfig,
};

/// The whole configuration. Its `Debug` output hides secrets (see [`is_secret_option`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where models live and how the registry keeps them current.
    pub store: StoreConfig,
    /// How records carry their key and id.
    pub records: RecordsConfig,
    /// The Kafka pipeline (`keyscore serve`).
    pub kafka: KafkaConfig,
    /// The operations endpoint: metrics, health, the status page.
    pub ops: OpsConfig,
    /// Live model quality: the label join, its windows, where labels come from.
    pub quality: QualityConfig,
}

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file or an override is not valid.
    #[error("invalid configuration{origin}: {message}")]
    Invalid {
        /// Where the bad value came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
}

const ENV_PREFIX: &str = "KEYSCORE__";

impl Config {
    /// Reads `path` (when given), then applies environment overrides from the process.
    pub fn load(path: Option<&Path>) -> Result<Self, Error> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| Error::Read {
                path: p.display().to_string(),
                source,
            })?,
            None => String::new(),
        };
        let origin = path
            .map(|p| format!(" in {}", p.display()))
            .unwrap_or_default();
        Self::from_toml_with_env(&text, &origin, std::env::vars())
    }

    /// Parses TOML text and applies overrides from `env` (pairs of name and value).
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, Error> {
        let mut doc: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::Invalid {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let from_env = Self::apply_env_tracked(&mut doc, env)?;
        Self::decode(&doc).map_err(|e| {
            // Name the field (and the variable that set it): the decoder's message names
            // neither for a value of the wrong type.
            let Some(path) = culprit(&doc) else {
                return Error::Invalid {
                    origin: origin.to_string(),
                    message: e.message().to_string(),
                };
            };
            let field = field_name(&path);
            match from_env.iter().find(|(p, _)| *p == path) {
                Some((_, var)) => Error::Invalid {
                    origin: format!(" in environment variable {var}"),
                    message: format!("{field}: {}", e.message()),
                },
                None => Error::Invalid {
                    origin: origin.to_string(),
                    message: format!("{field}: {}", e.message()),
                },
            }
        })
    }

    fn decode(doc: &toml::Table) -> Result<Self, toml::de::Error> {
        toml::Value::Table(doc.clone()).try_into()
    }

    /// Applies `KEYSCORE__SECTION__FIELD[__KEY]=value` overrides to a parsed document. Map
    /// keys under `options` keep dots: `KEYSCORE__KAFKA__OPTIONS__SASL.USERNAME` sets
    /// `sasl.username` (names are lower-cased). The short `KEYSCORE_CQL_*` names of
    /// [`crate::store::CQL_ENV_OVERRIDES`] are applied first.
    pub fn apply_env(
        doc: &mut toml::Table,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), Error> {
        Self::apply_env_tracked(doc, env).map(drop)
    }

    /// [`Config::apply_env`], returning the path of every field set with the variable that
    /// set it (the last one wins, as in the document).
    fn apply_env_tracked(
        doc: &mut toml::Table,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<(Vec<String>, String)>, Error> {
        let mut set: Vec<(Vec<String>, String)> = Vec::new();
        let env: Vec<(String, String)> = env.into_iter().collect();
        for (name, value) in &env {
            let Some(&(_, field)) = CQL_ENV_OVERRIDES.iter().find(|(var, _)| var == name) else {
                continue;
            };
            let cql = section(doc, &["store", "cql"], name)?;
            if value.is_empty() {
                cql.remove(field);
            } else {
                cql.insert(field.to_string(), toml::Value::String(value.clone()));
            }
            set.push((
                vec!["store".into(), "cql".into(), field.to_string()],
                name.clone(),
            ));
        }
        for (name, value) in env {
            let Some(path) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let parts: Vec<String> = path.split("__").map(|p| p.to_lowercase()).collect();
            if parts.iter().any(String::is_empty) {
                return Err(Error::Invalid {
                    origin: format!(" in environment variable {name}"),
                    message: "empty path segment".into(),
                });
            }
            let parsed = format!("v = {value}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(value));
            let sections: Vec<&str> = parts[..parts.len() - 1]
                .iter()
                .map(String::as_str)
                .collect();
            section(doc, &sections, &name)?.insert(parts[parts.len() - 1].clone(), parsed);
            set.retain(|(p, _)| *p != parts);
            set.push((parts, name));
        }
        Ok(set)
    }
}

/// The first field whose removal makes `doc` decode: the one with an unusable value.
fn culprit(doc: &toml::Table) -> Option<Vec<String>> {
    let mut leaves = Vec::new();
    leaf_paths(doc, &mut Vec::new(), &mut leaves);
    leaves.into_iter().find(|path| {
        let mut trimmed = doc.clone();
        remove_path(&mut trimmed, path);
        Config::decode(&trimmed).is_ok()
    })
}

fn leaf_paths(table: &toml::Table, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    for (name, value) in table {
        prefix.push(name.clone());
        match value {
            toml::Value::Table(inner) if !inner.is_empty() => leaf_paths(inner, prefix, out),
            _ => out.push(prefix.clone()),
        }
        prefix.pop();
    }
}

fn remove_path(table: &mut toml::Table, path: &[String]) {
    match path {
        [] => {}
        [last] => {
            table.remove(last);
        }
        [first, rest @ ..] => {
            if let Some(toml::Value::Table(inner)) = table.get_mut(first) {
                remove_path(inner, rest);
            }
        }
    }
}

/// `[store] refresh_interval_ms` for `store.refresh_interval_ms`.
fn field_name(path: &[String]) -> String {
    match path {
        [] => String::new(),
        [field] => field.clone(),
        [sections @ .., field] => format!("[{}] {field}", sections.join(".")),
    }
}

/// The table at `path` in `doc`, created when missing; `name` is the variable being applied.
fn section<'a>(
    doc: &'a mut toml::Table,
    path: &[&str],
    name: &str,
) -> Result<&'a mut toml::Table, Error> {
    let mut table = doc;
    for part in path {
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| Error::Invalid {
            origin: format!(" in environment variable {name}"),
            message: format!("'{part}' is not a section"),
        })?;
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = Config::from_toml_with_env("", "", env(&[])).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.store.url, "sqlite://keyscore.db");
        assert_eq!(c.store.registry().refresh_interval, Duration::from_secs(1));
        assert_eq!(c.store.registry().fallback_key.as_deref(), Some("_default"));
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_with_its_field_and_variable() {
        let err = Config::from_toml_with_env(
            "[store]\nrefresh_interval_ms = \"200\"\n",
            " in k.toml",
            env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "invalid configuration in k.toml: [store] refresh_interval_ms: invalid type: string \
             \"200\", expected u64"
        );
        let err = Config::from_toml_with_env(
            "",
            " in k.toml",
            env(&[("KEYSCORE__STORE__REFRESH_INTERVAL_MS", "abc")]),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "invalid configuration in environment variable KEYSCORE__STORE__REFRESH_INTERVAL_MS: \
             [store] refresh_interval_ms: invalid type: string \"abc\", expected u64"
        );
    }

    #[test]
    fn an_empty_key_field_is_refused() {
        let err = Config::from_toml_with_env("[records]\nkey_field = \"\"\n", "", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[records] key_field: must name the JSON field"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_are_refused_with_their_name() {
        let err = Config::from_toml_with_env("[store]\nurll = 'x'\n", " in k.toml", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("urll"), "{err}");
        assert!(err.contains("k.toml"), "{err}");
    }

    #[test]
    fn environment_overrides_file() {
        let c = Config::from_toml_with_env(
            "[store]\nurl = 'sqlite://a.db'\n[kafka]\ngroup_id = 'g'\n",
            "",
            env(&[
                ("KEYSCORE__STORE__URL", "cql://db:9042/ks"),
                ("KEYSCORE__STORE__REFRESH_INTERVAL_MS", "250"),
                ("KEYSCORE__KAFKA__INPUT_TOPICS", r#"["a", "b"]"#),
                ("KEYSCORE__KAFKA__OPTIONS__FETCH.WAIT.MAX.MS", "10"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.store.url, "cql://db:9042/ks");
        assert_eq!(c.store.refresh_interval_ms, 250);
        assert_eq!(c.kafka.group_id, "g");
        assert_eq!(c.kafka.input_topics, vec!["a", "b"]);
        assert_eq!(c.kafka.options["fetch.wait.max.ms"], "10");
    }

    #[test]
    fn the_example_config_in_seed_parses_and_states_the_defaults() {
        let text = include_str!("../seed/keyscore.toml");
        let c = Config::from_toml_with_env(text, " in seed/keyscore.toml", env(&[])).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn debug_output_hides_secret_options() {
        let c = Config::from_toml_with_env(
            "[kafka.options]\n\"sasl.username\" = 'svc'\n\"sasl.mechanisms\" = 'PLAIN'\n",
            "",
            env(&[
                ("KEYSCORE__KAFKA__OPTIONS__SASL.PASSWORD", "hunter2-sasl"),
                (
                    "KEYSCORE__KAFKA__CONSUMER_OPTIONS__SSL.KEY.PASSWORD",
                    "hunter2-key",
                ),
                (
                    "KEYSCORE__KAFKA__PRODUCER_OPTIONS__SSL.KEY.PEM",
                    "hunter2-pem",
                ),
                (
                    "KEYSCORE__KAFKA__OPTIONS__SASL.OAUTHBEARER.CLIENT.SECRET",
                    "hunter2-oauth",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(c.kafka.options["sasl.password"], "hunter2-sasl");
        for text in [format!("{c:?}"), format!("{c:#?}")] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("sasl.password"), "{text}");
            // The mechanism is not a secret; the rest of sasl.* is redacted.
            assert!(text.contains("PLAIN") && !text.contains("svc"), "{text}");
        }
    }

    #[test]
    fn cql_settings_come_from_the_file_and_the_short_environment_names() {
        let file = "[store.cql]\nlocal_dc = 'file-dc'\ntls_server_name = 'file.example'\n";
        let c = Config::from_toml_with_env(file, "", env(&[])).unwrap();
        assert_eq!(c.store.cql.local_dc.as_deref(), Some("file-dc"));
        assert_eq!(c.store.cql.max_spec_bytes, 32 << 20);
        assert_eq!(c.store.cql.feed_look_back_ms, 30_000);
        assert_eq!(c.store.cql.quality_ttl_secs, 30 * 24 * 3600);

        let c = Config::from_toml_with_env(
            file,
            "",
            env(&[
                ("KEYSCORE_CQL_LOCAL_DC", "eu-west"),
                ("KEYSCORE_CQL_TLS_CA_FILE", "/etc/keyscore/ca.pem"),
                ("KEYSCORE_CQL_TLS_CERT_FILE", "client.pem"),
                ("KEYSCORE_CQL_TLS_KEY_FILE", "client.key"),
                // Read as a string even though it would parse as a TOML number.
                ("KEYSCORE_CQL_TLS_SERVER_NAME", "1234"),
            ]),
        )
        .unwrap();
        let cql = &c.store.cql;
        assert_eq!(cql.local_dc.as_deref(), Some("eu-west"));
        assert_eq!(
            cql.tls_ca_file.as_deref(),
            Some(Path::new("/etc/keyscore/ca.pem"))
        );
        assert_eq!(cql.tls_cert_file.as_deref(), Some(Path::new("client.pem")));
        assert_eq!(cql.tls_key_file.as_deref(), Some(Path::new("client.key")));
        assert_eq!(cql.tls_server_name.as_deref(), Some("1234"));
        assert!(cql.tls());
    }

    #[test]
    fn an_empty_short_cql_variable_unsets_the_field_and_the_long_name_wins() {
        let c = Config::from_toml_with_env(
            "[store.cql]\nlocal_dc = 'file-dc'\ntls_server_name = 'file.example'\n",
            "",
            env(&[
                ("KEYSCORE__STORE__CQL__TLS_SERVER_NAME", "long.example"),
                ("KEYSCORE_CQL_TLS_SERVER_NAME", "short.example"),
                ("KEYSCORE_CQL_LOCAL_DC", ""),
            ]),
        )
        .unwrap();
        assert_eq!(c.store.cql.local_dc, None);
        assert_eq!(c.store.cql.tls_server_name.as_deref(), Some("long.example"));
        assert!(!c.store.cql.tls());
    }

    #[test]
    fn unknown_cql_settings_are_refused_with_their_name() {
        let err = Config::from_toml_with_env("[store.cql]\ntls_ca = 'x'\n", "", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls_ca"), "{err}");
    }

    #[test]
    fn empty_fallback_disables_it() {
        let c = Config::from_toml_with_env("[store]\nfallback_key = ''\n", "", env(&[])).unwrap();
        assert_eq!(c.store.registry().fallback_key, None);
    }
}
