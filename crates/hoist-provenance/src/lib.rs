//! Provenance of Wasm modules: proving that the module hoist runs is the one you meant.
//!
//! Pure logic only (no I/O beyond reading key files the caller names):
//! - [`checksum`]: SHA-256 digests, explicit `--checksum` values and the digests Yoke infers
//!   from `sha256_<hex>` names and OCI tags.
//! - [`signature`]: Yoke-compatible signatures stored in the module's
//!   `yoke.schematics:signature` custom section (RSA-PSS, ECDSA, Ed25519).
//! - [`allow`]: module allow lists (globs over whole URLs, `*` within one `/` segment).
//! - [`pin`]: which module URLs are pinnable across release revisions.
#![warn(missing_docs)]
// Issue 11: no panics on input a user, module or registry controls (tests may unwrap).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::string_slice
    )
)]

pub mod allow;
pub mod checksum;
pub mod pin;
pub mod signature;
