//! The `keyscore` command line.
fn main() {}
