//! keyscore scores streaming records with per-key machine-learning models whose weights live in
//! a database.
//!
//! * [`model`]: untrusted specs checked into immutable models (linear, logistic, random forest,
//!   MLP) and scoring.
//! * [`store`]: the [`store::ModelStore`] seam with an embedded SQLite backend and a
//!   ScyllaDB/Cassandra backend.
//! * [`registry`]: a `moka` cache of built models with a watcher that swaps in new versions.
//! * [`stream`]: record decoding and encoding, the pure scoring step, and the file and Kafka
//!   pipelines.
//! * [`rollout`]: the canary split of records.
//! * [`ops`]: metrics exposition, health and the status page on an HTTP port.
//! * [`config`]: the configuration file's sections gathered, with environment overrides.

pub mod cli;
pub mod config;
pub mod model;
pub mod ops;
pub mod quality;
pub mod registry;
pub mod rollout;
pub mod store;
pub mod stream;
pub mod synth;
pub mod telemetry;
