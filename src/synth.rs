//! Deterministic synthetic delivery records: the data behind the seed models and the demo.

/// Generates delivery records.
#[derive(Debug)]
pub struct Generator {
    n: u64,
}

/// One generated delivery.
#[derive(Debug)]
pub struct Delivery {
    n: u64,
}

impl Generator {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { n: seed }
    }

    /// The next record.
    pub fn next_record(&mut self) -> Delivery {
        self.n += 1;
        Delivery { n: self.n }
    }
}

impl Delivery {
    /// One JSON line.
    pub fn to_json(&self) -> String {
        format!("{{\"id\":\"r-{}\",\"city\":\"paris\"}}", self.n)
    }
}
