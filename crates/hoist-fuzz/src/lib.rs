//! Fuzz target bodies for every parser and decoder that reads untrusted bytes.
//!
//! Each `pub fn NAME(data: &[u8])` calls the function production calls and asserts the
//! invariants that must hold for *any* input (round trips, bounds, differential checks
//! against a simpler reference). A broken invariant or a panic inside the production code is
//! a bug. The same bodies run in two places:
//!
//! - `fuzz/fuzz_targets/NAME.rs`: thin cargo-fuzz wrappers (nightly, libFuzzer), started by
//!   `scripts/fuzz`;
//! - `tests/replay.rs`: every saved input in `fuzz/corpus/NAME/` and `fuzz/regressions/NAME/`
//!   replayed on stable as part of the normal test suite, so a fixed bug stays fixed.
//!
//! Inputs that hold several parts separate them with a NUL byte (see [`parts`]).
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::string_slice
    )
)]

mod differential;
mod targets;
#[cfg(feature = "wasm")]
mod wasm_targets;

pub use differential::{full_percent_decode, segment_glob};
pub use targets::*;
#[cfg(feature = "wasm")]
pub use wasm_targets::*;

/// A fuzz target body.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/NAME.rs` wrapper and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("wasm_sections", wasm_sections),
    ("signature_payload", signature_payload),
    ("allow_url", allow_url),
    ("checksum_infer", checksum_infer),
    ("oci_manifest", oci_manifest),
    ("oci_reference", oci_reference),
    ("oci_layer", oci_layer),
    ("flight_output", flight_output),
    ("release_secret", release_secret),
    ("kubeconfig", kubeconfig),
    #[cfg(feature = "wasm")]
    ("krm_resource_list", krm_resource_list),
    #[cfg(feature = "wasm")]
    ("krm_package", krm_package),
    #[cfg(feature = "wasm")]
    ("policy_admission", policy_admission),
    #[cfg(feature = "wasm")]
    ("gojs_values", gojs_values),
    #[cfg(feature = "wasm")]
    ("opa_bridge", opa_bridge),
];

/// Splits `data` at NUL bytes into at most `n` parts (the last part keeps any further NULs).
pub fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    data.splitn(n.max(1), |b| *b == 0).collect()
}

/// The `i`-th part as UTF-8 (lossy: fuzzers mostly produce text, and a lossy conversion keeps
/// every input useful).
pub fn text_part(parts: &[&[u8]], i: usize) -> String {
    parts
        .get(i)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default()
}
