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

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    registry::RegistryConfig,
    stream::record::{KeySource, RecordFormat},
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

/// `[ops]`: the HTTP endpoint for operators (`/metrics`, `/healthz`, `/readyz`, `/status.json`
/// and the status page at `/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsConfig {
    /// Address `keyscore serve` listens on (default `127.0.0.1:9464`; empty turns it off).
    /// `keyscore score` listens only when given `--ops-listen`.
    pub listen: String,
    /// Per-key metric series are exported for at most this many keys by traffic, plus at most
    /// this many more keys whose served version lags the store (default 20).
    pub top_keys: usize,
    /// How often the status view re-reads the store's key listing, in ms (default 5000).
    pub store_scan_interval_ms: u64,
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
            top_keys: 20,
            store_scan_interval_ms: 5000,
        }
    }
}

/// `[store]`: the model store and the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Store URL: `sqlite://PATH` (default `sqlite://keyscore.db`) or
    /// `cql://HOST:PORT[,HOST:PORT]/KEYSPACE`.
    pub url: String,
    /// How often the watcher polls for activations, in milliseconds (default 1000).
    pub refresh_interval_ms: u64,
    /// Every this many polls, re-read every cached key (default 30).
    pub resync_every: u64,
    /// The most models kept built in memory (default 100000).
    pub cache_capacity: u64,
    /// The key whose model scores records whose key has no model (default `_default`; empty
    /// string disables the fallback).
    pub fallback_key: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://keyscore.db".into(),
            refresh_interval_ms: 1000,
            resync_every: 30,
            cache_capacity: 100_000,
            fallback_key: "_default".into(),
        }
    }
}

/// `[records]`: where a record keeps its key and id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordsConfig {
    /// The JSON field holding the model key (default `city`).
    pub key_field: String,
    /// Take the model key from the Kafka message key instead of a field (default false).
    pub key_from_message: bool,
    /// The JSON field copied to the output as `id` (default `id`).
    pub id_field: String,
}

impl Default for RecordsConfig {
    fn default() -> Self {
        Self {
            key_field: "city".into(),
            key_from_message: false,
            id_field: "id".into(),
        }
    }
}

/// `[kafka]`: the consumer group, topics, and librdkafka options. `Debug` shows secret option
/// values (see [`is_secret_option`]) as `***`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers` (default `127.0.0.1:9092`).
    pub bootstrap_servers: String,
    /// The consumer group id (default `keyscore`).
    pub group_id: String,
    /// Topics to consume (default `["records"]`).
    pub input_topics: Vec<String>,
    /// Topic for scored records (default `records-scored`).
    pub output_topic: String,
    /// Topic for dead letters (default `records-dead`).
    pub dead_letter_topic: String,
    /// Topic for the outputs of shadow versions (default empty: the output topic followed by
    /// `-shadow`).
    pub shadow_topic: String,
    /// Create the output and dead-letter topics at start if missing (default true).
    pub create_topics: bool,
    /// Partitions for topics keyscore creates (default 8).
    pub create_partitions: i32,
    /// Replicas for topics keyscore creates (default -1: the broker's default replication
    /// factor).
    pub create_replication_factor: i32,
    /// Records consumed but not yet acknowledged by the broker, at most (default 20000). When
    /// reached, consumption pauses until deliveries catch up.
    pub max_in_flight: usize,
    /// Records scored together, at most (default 1000).
    pub batch_size: usize,
    /// On shutdown, how long to wait for in-flight records before giving up, in ms (default
    /// 10000).
    pub drain_timeout_ms: u64,
    /// librdkafka options passed through unchanged to consumer and producer (SASL, TLS,
    /// tuning). Values here override keyscore's defaults.
    #[serde(deserialize_with = "scalar_map")]
    pub options: BTreeMap<String, String>,
    /// librdkafka options for the consumer only.
    #[serde(deserialize_with = "scalar_map")]
    pub consumer_options: BTreeMap<String, String>,
    /// librdkafka options for the producer only.
    #[serde(deserialize_with = "scalar_map")]
    pub producer_options: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            group_id: "keyscore".into(),
            input_topics: vec!["records".into()],
            output_topic: "records-scored".into(),
            dead_letter_topic: "records-dead".into(),
            shadow_topic: String::new(),
            create_topics: true,
            create_partitions: 8,
            create_replication_factor: -1,
            max_in_flight: 20_000,
            batch_size: 1000,
            drain_timeout_ms: 10_000,
            options: BTreeMap::new(),
            consumer_options: BTreeMap::new(),
            producer_options: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// The topic shadow outputs go to: `shadow_topic`, or the output topic plus `-shadow`.
    pub fn shadow_topic(&self) -> String {
        if self.shadow_topic.is_empty() {
            format!("{}-shadow", self.output_topic)
        } else {
            self.shadow_topic.clone()
        }
    }
}

/// Whether a librdkafka option holds a secret whose value must never be logged: names
/// containing `password` or `secret`, every `sasl.*` option but the mechanism, and
/// `ssl.key*`.
pub fn is_secret_option(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("password")
        || name.contains("secret")
        || (name.starts_with("sasl.")
            && !matches!(name.as_str(), "sasl.mechanism" | "sasl.mechanisms"))
        || name.starts_with("ssl.key")
}

/// An option map whose secret values print as `***`.
struct Redacted<'a>(&'a BTreeMap<String, String>);

impl std::fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let shown: &str = if is_secret_option(k) { "***" } else { v };
                (k, shown)
            }))
            .finish()
    }
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group_id", &self.group_id)
            .field("input_topics", &self.input_topics)
            .field("output_topic", &self.output_topic)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("shadow_topic", &self.shadow_topic)
            .field("create_topics", &self.create_topics)
            .field("create_partitions", &self.create_partitions)
            .field("create_replication_factor", &self.create_replication_factor)
            .field("max_in_flight", &self.max_in_flight)
            .field("batch_size", &self.batch_size)
            .field("drain_timeout_ms", &self.drain_timeout_ms)
            .field("options", &Redacted(&self.options))
            .field("consumer_options", &Redacted(&self.consumer_options))
            .field("producer_options", &Redacted(&self.producer_options))
            .finish()
    }
}

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
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

/// Reads a map of librdkafka options, accepting numbers and booleans as their text.
fn scalar_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, toml::Value>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| {
            let text = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(serde::de::Error::custom(format!(
                        "option '{k}' must be a string, number or boolean, found {}",
                        other.type_str()
                    )))
                }
            };
            Ok((k, text))
        })
        .collect()
}

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

    /// The registry settings this configuration describes.
    pub fn registry(&self) -> RegistryConfig {
        RegistryConfig {
            capacity: self.store.cache_capacity,
            fallback_key: Some(self.store.fallback_key.clone()).filter(|k| !k.is_empty()),
            refresh_interval: Duration::from_millis(self.store.refresh_interval_ms.max(10)),
            resync_every: self.store.resync_every,
        }
    }

    /// The record format this configuration describes.
    pub fn record_format(&self) -> RecordFormat {
        RecordFormat {
            key: if self.records.key_from_message {
                KeySource::MessageKey
            } else {
                KeySource::Field(self.records.key_field.clone())
            },
            id_field: self.records.id_field.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(c.registry().refresh_interval, Duration::from_secs(1));
        assert_eq!(c.registry().fallback_key.as_deref(), Some("_default"));
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
    fn the_shadow_topic_defaults_to_the_output_topic_plus_shadow() {
        let mut k = KafkaConfig::default();
        assert_eq!(k.shadow_topic(), "records-scored-shadow");
        k.shadow_topic = "side".into();
        assert_eq!(k.shadow_topic(), "side");
    }

    #[test]
    fn empty_fallback_disables_it() {
        let c = Config::from_toml_with_env("[store]\nfallback_key = ''\n", "", env(&[])).unwrap();
        assert_eq!(c.registry().fallback_key, None);
    }
}
