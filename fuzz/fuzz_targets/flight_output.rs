#![no_main]
//! cargo-fuzz wrapper; the body (and its invariants) is `hoist_fuzz::flight_output`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| hoist_fuzz::flight_output(data));
