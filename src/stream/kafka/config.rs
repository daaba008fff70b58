//! `[kafka]`: the consumer group, topics and librdkafka options of `keyscore serve`, and which
//! options hold secrets.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    /// A dead letter carries at most this many bytes of its record (default 512 KiB, and
    /// never more than the producer's `message.max.bytes` less a quarter, at most 64 KiB, for
    /// headers); a longer record's letter holds its first bytes and the header
    /// `keyscore-payload-truncated-from` with its whole size.
    pub dead_letter_max_payload_bytes: usize,
    /// Carry each input's headers (e.g. `traceparent`) over to its scored output, dead letter
    /// and shadow output, ahead of keyscore's own (default `false`; the `enriched` output shape
    /// always carries them). Input headers named `keyscore-*` are never carried over.
    pub forward_headers: bool,
    /// `at_least_once` (default) or `exactly_once`: outputs, dead letters and the input offsets
    /// of each batch in one Kafka transaction (consumers of the outputs read with
    /// `isolation.level=read_committed`).
    pub processing: Processing,
    /// The producer's `transactional.id` for `exactly_once`: stable across restarts of one
    /// member and distinct between members, so a restarted member fences its predecessor
    /// (default `<group_id>-<host name>`; set it per member when several run on one host).
    pub transactional_id: String,
}

/// How `serve` hands outputs and offsets to Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Processing {
    /// Offsets are committed after the outputs are acknowledged: a crash scores some records
    /// again.
    #[default]
    AtLeastOnce,
    /// Each batch's outputs and input offsets are one transaction.
    ExactlyOnce,
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
            dead_letter_max_payload_bytes: 512 * 1024,
            forward_headers: false,
            processing: Processing::AtLeastOnce,
            transactional_id: String::new(),
        }
    }
}

impl KafkaConfig {
    /// The `transactional.id` for `exactly_once` (see [`KafkaConfig::transactional_id`]).
    pub fn effective_transactional_id(&self) -> String {
        if !self.transactional_id.trim().is_empty() {
            return self.transactional_id.trim().to_string();
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "member".to_string());
        format!("{}-{host}", self.group_id)
    }

    /// The largest dead-letter payload: [`KafkaConfig::dead_letter_max_payload_bytes`], within
    /// the producer's `message.max.bytes` (librdkafka's default 1,000,000 when not set) less
    /// room for headers.
    pub fn dead_letter_payload_limit(&self) -> usize {
        let max_message = self
            .producer_options
            .get("message.max.bytes")
            .or_else(|| self.options.get("message.max.bytes"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(1_000_000);
        let room = (max_message / 4).min(64 * 1024);
        self.dead_letter_max_payload_bytes
            .min(max_message.saturating_sub(room))
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shadow_topic_defaults_to_the_output_topic_plus_shadow() {
        let mut k = KafkaConfig::default();
        assert_eq!(k.shadow_topic(), "records-scored-shadow");
        k.shadow_topic = "side".into();
        assert_eq!(k.shadow_topic(), "side");
    }
}
