//! Fuzz target `env`: see fuzz/harness.rs.

#![no_main]

#[path = "../harness.rs"]
#[allow(dead_code, reason = "each target calls one of the harness's functions")]
mod harness;

libfuzzer_sys::fuzz_target!(|input: &str| harness::env(input));
