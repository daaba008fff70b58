//! Shared harnesses for the integration tests.
//!
//! Each test binary includes this module with `mod support;` and uses only part of it, so
//! unused items are expected; its items are `pub` as the harness's API for every test file.
#![allow(dead_code, unreachable_pub)]

pub mod broker;
pub mod conformance;
