//! The registry's settings, and the `[store]` section of the configuration file that describes
//! them together with the store URL.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::CqlOptions;

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
    /// The most bytes of built models kept in memory (default 2147483648, 2 GiB). Each model
    /// is weighed at its real size; whichever of this and `cache_capacity` is reached first
    /// evicts the least used keys.
    pub cache_max_bytes: u64,
    /// The key whose model scores records whose key has no model (default `_default`; empty
    /// string disables the fallback).
    pub fallback_key: String,
    /// `[store.cql]`: TLS, the local datacenter and other settings of a `cql://` store (see
    /// [`CqlOptions`]; every field has a default).
    pub cql: CqlOptions,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://keyscore.db".into(),
            refresh_interval_ms: 1000,
            resync_every: 30,
            cache_capacity: 100_000,
            cache_max_bytes: 2 << 30,
            fallback_key: "_default".into(),
            cql: CqlOptions::default(),
        }
    }
}

impl StoreConfig {
    /// The registry settings this section describes.
    pub fn registry(&self) -> RegistryConfig {
        RegistryConfig {
            capacity: self.cache_capacity,
            max_bytes: self.cache_max_bytes,
            fallback_key: Some(self.fallback_key.clone()).filter(|k| !k.is_empty()),
            refresh_interval: Duration::from_millis(self.refresh_interval_ms.max(10)),
            resync_every: self.resync_every,
        }
    }
}

/// Registry settings.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The most keys kept built at once.
    pub capacity: u64,
    /// The most bytes of built models kept at once.
    pub max_bytes: u64,
    /// The key whose model scores records whose own key has no active model.
    pub fallback_key: Option<String>,
    /// How often the watcher polls the change feed.
    pub refresh_interval: Duration,
    /// Every this many polls the watcher re-reads every cached key.
    pub resync_every: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            max_bytes: 2 << 30,
            fallback_key: Some("_default".into()),
            refresh_interval: Duration::from_secs(1),
            resync_every: 30,
        }
    }
}
