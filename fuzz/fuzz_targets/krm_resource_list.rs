#![no_main]
//! cargo-fuzz wrapper; the body (and its invariants) is `hoist_fuzz::krm_resource_list`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| hoist_fuzz::krm_resource_list(data));
