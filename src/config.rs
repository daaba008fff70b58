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

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{
    ops::OpsConfig, registry::StoreConfig, stream::kafka::KafkaConfig,
    stream::record::RecordsConfig,
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
        Self::apply_env(&mut doc, env)?;
        toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| Error::Invalid {
                origin: origin.to_string(),
                message: e.message().to_string(),
            })
    }

    /// Applies `KEYSCORE__SECTION__FIELD[__KEY]=value` overrides to a parsed document. Map
    /// keys under `options` keep dots: `KEYSCORE__KAFKA__OPTIONS__SASL.USERNAME` sets
    /// `sasl.username` (names are lower-cased).
    pub fn apply_env(
        doc: &mut toml::Table,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), Error> {
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
            let mut table = &mut *doc;
            for part in &parts[..parts.len() - 1] {
                let entry = table
                    .entry(part.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                table = entry.as_table_mut().ok_or_else(|| Error::Invalid {
                    origin: format!(" in environment variable {name}"),
                    message: format!("'{part}' is not a section"),
                })?;
            }
            table.insert(parts[parts.len() - 1].clone(), parsed);
        }
        Ok(())
    }
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
    fn empty_fallback_disables_it() {
        let c = Config::from_toml_with_env("[store]\nfallback_key = ''\n", "", env(&[])).unwrap();
        assert_eq!(c.store.registry().fallback_key, None);
    }
}
