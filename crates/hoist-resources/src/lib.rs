//! Kubernetes objects as a flight produces them, and the stages they are applied in.
//!
//! A flight (a Wasm module, or any program piping into hoist) writes its resources to stdout
//! in one of the shapes Yoke accepts:
//!
//! - a YAML or JSON multi-document stream of objects,
//! - a JSON/YAML array of objects (one stage),
//! - an array of arrays of objects (several stages, applied in order).
//!
//! [`parse_flight_output`] turns any of those into [`Stages`]; [`Stages::with_prestages`]
//! splits Namespaces and CustomResourceDefinitions out of each stage into a stage of their
//! own that is applied (and waited for) first, exactly as Yoke does. Nothing here does I/O.
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

mod output;
mod parse;
mod resource;

pub use output::{to_json, to_yaml};
pub use parse::{OutputError, parse_flight_output};
pub use resource::{Resource, ResourceError, ResourceKey, Stage, Stages};
