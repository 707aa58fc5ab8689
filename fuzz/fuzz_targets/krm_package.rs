#![no_main]
//! cargo-fuzz wrapper; the body (and its invariants) is `hoist_fuzz::krm_package`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| hoist_fuzz::krm_package(data));
