//! Model specs the store tests write: two valid ones over features `a` and `b`, and two that
//! a store must refuse.

/// A valid spec: a linear regression over two features.
pub const VALID_SPEC: &str = r#"{"format_version":1,"features":["a","b"],"model":{"kind":"linear","coefficients":[1.0,2.0],"intercept":0.5},"output":{"type":"regression"}}"#;

/// Another valid spec, so versions of one key differ.
pub const VALID_SPEC_2: &str = r#"{"format_version":1,"features":["a","b"],"model":{"kind":"linear","coefficients":[-3.0,0.25],"intercept":7.0},"output":{"type":"regression"}}"#;

/// A spec that does not decode: the model kind does not exist.
pub const UNKNOWN_KIND_SPEC: &str = r#"{"format_version":1,"features":["a","b"],"model":{"kind":"quantum","coefficients":[1.0,2.0],"intercept":0.5},"output":{"type":"regression"}}"#;

/// A spec that decodes but cannot build: two features, one coefficient.
pub const SHAPE_MISMATCH_SPEC: &str = r#"{"format_version":1,"features":["a","b"],"model":{"kind":"linear","coefficients":[1.0],"intercept":0.5},"output":{"type":"regression"}}"#;
