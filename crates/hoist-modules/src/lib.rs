//! One module pipeline for every guest kind (flights, KRM functions, policies, the
//! controller): location -> allow list -> source (path, `file://`, `.gz`, http(s), `oci://`)
//! -> checksums -> signatures -> compiled-module cache -> engine.
//!
//! Every way into hoist loads modules through [`ModulePipeline`], so provenance rules, cache
//! behaviour, compiler tiering and error wording are decided once, here. What a caller does
//! with the [`ReadyModule`] (run it as a flight, a KRM function, a policy) is its own business.
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

mod error;
mod keys;
mod oci;
mod paths;
mod pipeline;

pub use error::ModuleError;
pub use keys::{load_keys, verify_module};
pub use oci::OciSource;
pub use paths::{cache_root, default_module_cache_dir, default_oci_cache_dir};
pub use pipeline::{
    BackgroundCompile, CompilerChoice, Digests, FlightModule, InterpretedModule, InterpreterChoice,
    ModuleInfo, ModuleOptions, ModulePipeline, ReadyModule, upgrade_lock_name,
};

pub use hoist_provenance::checksum::Sha256Digest;
pub use hoist_runtime::{Compiler, FlightEngine, InstancePool, LoadedModule, TimeLimits};
