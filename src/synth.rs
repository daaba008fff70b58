//! Deterministic synthetic delivery records: the data behind the seed models and the demo.
