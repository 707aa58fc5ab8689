//! Running flights: sandboxed Wasm modules that print Kubernetes resources.
//!
//! The pieces, in the order a render uses them:
//!
//! - [`FlightEngine`]: one wasmtime engine (Cranelift or Winch, see [`Compiler`]) configured
//!   for flights: epoch interruption for wall-clock timeouts, nothing else enabled that a
//!   WASI preview 1 command does not need.
//! - [`ModuleCache`]: compiled code on disk, keyed by the module's SHA-256 and everything
//!   that changes compiled code; memory-mapped on a hit so a warm run costs about a
//!   millisecond to load. Corrupt or stale entries are recompiled, never trusted.
//! - [`run_flight`]: Yoke's flight ABI: `_start`, argv, the exact environment, stdin, stdout
//!   captured under a cap, stderr streamed, a memory cap, a timeout, and the `host` import
//!   module for cluster lookups ([`host::ClusterAccess`]).
//!
//! - [`tier0::run_flight_interpreted`]: the same ABI on an interpreter (wasmi) that translates
//!   only the code that runs, for cold starts while compiled code is made in the background.
//!
//! - [`go_resume`]: Go `GOOS=wasip1` modules get exports (at compile time) that let a
//!   fresh instance start from where an earlier one first read stdin.
//!
//! Nothing here knows about Kubernetes or where module bytes come from.
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

mod cache;
mod engine;
mod flight;
pub mod go_resume;
pub mod guest;
pub mod host;
pub mod leb128;
mod streams;
pub mod tier0;

pub use cache::{CacheEntry, CacheError, ModuleCache, hoist_cache_root};
pub use engine::{
    CacheStatus, Compiler, EngineError, FlightEngine, InstancePool, LoadedModule, TimeLimits,
};
pub use flight::{
    FlightError, FlightOutput, FlightSpec, GoResumeCache, Limit, StderrMode, run_flight,
    run_flight_resumable,
};

/// The version of hoist's runtime, part of every cache key and exposed to flights as
/// `HOIST_VERSION`.
pub const HOIST_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The Yoke release whose flight ABI hoist implements, exposed to flights as `YOKE_VERSION`
/// so that flights which check it keep working.
pub const YOKE_ABI_VERSION: &str = "v0.20.27";
