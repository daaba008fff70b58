//! librdkafka settings: keyscore's defaults, the user's passthrough options, and the few
//! settings at-least-once delivery depends on.
//!
//! Precedence, lowest first: keyscore's defaults, then `[kafka] options` (both clients), then
//! `consumer_options` / `producer_options`. `enable.auto.offset.store` is then forced to
//! `false` on the consumer: offsets are stored by keyscore once the output is acknowledged, and
//! letting librdkafka store them on consumption would lose records on a crash.
//!
//! # Defaults (each overridable)
//!
//! Consumer:
//!
//! | option | keyscore | librdkafka | why |
//! |---|---|---|---|
//! | `auto.offset.reset` | `earliest` | `latest` | a new group scores what is already in the topic |
//! | `enable.auto.commit` | `true` | `true` | stored offsets are committed in the background |
//! | `auto.commit.interval.ms` | `1000` | `5000` | bounds what a crash replays |
//! | `fetch.wait.max.ms` | `10` | `500` | brokers that answer in small batches (Tansu) otherwise cap throughput about tenfold lower |
//! | `session.timeout.ms` | `10000` | `45000` | a crashed member's partitions move on sooner |
//! | `heartbeat.interval.ms` | `1000` | `3000` | kept well under the session timeout |
//! | `max.poll.interval.ms` | `60000` | `300000` | also the rebalance timeout sent when joining |
//! | `enable.partition.eof` | `false` | `false` | |
//! | `queued.max.messages.kbytes` | `32768` | `65536` | bounds what is prefetched while the pipeline waits at `max_in_flight` |
//! | `statistics.interval.ms` | `5000` | `0` | consumer lag per partition for `/metrics` |
//!
//! Producer:
//!
//! | option | keyscore | librdkafka | why |
//! |---|---|---|---|
//! | `enable.idempotence` | `true` | `false` | no duplicates or reordering from retries; implies `acks=all` and at most 5 requests in flight |
//! | `partitioner` | `murmur2_random` | `consistent_random` | the Java client's key hashing, so a key lands on the same partition whichever client wrote it |
//! | `linger.ms` | `5` | `5` | |

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

use super::KafkaConfig;

/// Consumer defaults keyscore applies before the user's options.
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("auto.offset.reset", "earliest"),
    ("enable.auto.commit", "true"),
    ("auto.commit.interval.ms", "1000"),
    ("fetch.wait.max.ms", "10"),
    ("session.timeout.ms", "10000"),
    ("heartbeat.interval.ms", "1000"),
    ("max.poll.interval.ms", "60000"),
    ("enable.partition.eof", "false"),
    ("statistics.interval.ms", "5000"),
];

/// Producer defaults keyscore applies before the user's options.
pub const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("partitioner", "murmur2_random"),
    ("linger.ms", "5"),
];

fn apply(
    cfg: &mut ClientConfig,
    pairs: impl IntoIterator<Item = (impl AsRef<str>, impl AsRef<str>)>,
) {
    for (k, v) in pairs {
        cfg.set(k.as_ref(), v.as_ref());
    }
}

fn base(kafka: &KafkaConfig) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &kafka.bootstrap_servers);
    cfg.set("client.id", "keyscore");
    cfg
}

fn user(map: &BTreeMap<String, String>) -> impl Iterator<Item = (&String, &String)> {
    map.iter()
}

/// The consumer configuration of `keyscore serve`: the group, keyscore's defaults, the user's
/// options, and `enable.auto.offset.store=false`.
pub fn consumer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut cfg = base(kafka);
    cfg.set("group.id", &kafka.group_id);
    apply(&mut cfg, CONSUMER_DEFAULTS.iter().copied());
    apply(&mut cfg, user(&kafka.options));
    apply(&mut cfg, user(&kafka.consumer_options));
    cfg.set("enable.auto.offset.store", "false");
    if kafka.processing == super::Processing::ExactlyOnce {
        // Offsets go into each batch's transaction, never committed by the consumer; outputs
        // of aborted transactions are not read back.
        cfg.set("enable.auto.commit", "false");
        cfg.set("isolation.level", "read_committed");
    }
    cfg
}

/// The producer configuration: keyscore's defaults, then the user's options.
pub fn producer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut cfg = base(kafka);
    apply(&mut cfg, PRODUCER_DEFAULTS.iter().copied());
    apply(&mut cfg, user(&kafka.options));
    apply(&mut cfg, user(&kafka.producer_options));
    if kafka.processing == super::Processing::ExactlyOnce {
        cfg.set("transactional.id", kafka.effective_transactional_id());
    }
    cfg
}

/// A configuration for clients that neither join a group nor produce (`keyscore tail`, topic
/// administration): bootstrap servers and the shared `options` only.
pub fn plain_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut cfg = base(kafka);
    apply(&mut cfg, user(&kafka.options));
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_options_override_defaults_but_not_the_offset_store() {
        let mut k = KafkaConfig::default();
        k.options.insert("fetch.wait.max.ms".into(), "100".into());
        k.options
            .insert("security.protocol".into(), "SASL_SSL".into());
        k.consumer_options
            .insert("enable.auto.offset.store".into(), "true".into());
        k.consumer_options
            .insert("session.timeout.ms".into(), "30000".into());
        k.producer_options.insert("linger.ms".into(), "20".into());
        let c = consumer_config(&k);
        assert_eq!(c.get("fetch.wait.max.ms"), Some("100"));
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("session.timeout.ms"), Some("30000"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("group.id"), Some("keyscore"));
        assert_eq!(c.get("linger.ms"), None);
        let p = producer_config(&k);
        assert_eq!(p.get("linger.ms"), Some("20"));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(p.get("group.id"), None);
    }
}
