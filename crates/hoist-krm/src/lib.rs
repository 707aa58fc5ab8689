//! KRM functions as kpt runs them: ResourceLists, Kptfile pipelines, `fn eval` and `fn render`.
//!
//! - [`resource_list`]: the ResourceList model, results, and kpt's annotations.
//! - [`package`]: reading a package directory (Kptfile, `.krmignore`, subpackages) into
//!   annotated items, and writing them back (unchanged files stay byte-identical).
//! - [`preserve`]: comment-preserving write-back of changed files (comments, quoting,
//!   field order, sequence indentation carried over by YAML path).
//! - [`images`]: registry mirrors and semver `tag:` constraints.
//! - [`kptfile`], [`selector`]: pipelines and resource selection.
//! - [`function`]: running one function: Go js/wasm (through `hoist-gojs`; function or command
//!   style, detected from behaviour), WASI preview 1 (through `hoist-runtime`), or native exec.
//! - [`engine`]: one step with selection and id-based merge, `fn render`'s depth-first
//!   pipeline, kpt's console output and results file.
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

pub mod engine;
pub mod function;
pub mod images;
pub mod kptfile;
pub mod package;
pub mod preserve;
pub mod resource_list;
pub mod selector;
pub mod yaml;

pub use engine::{FnRef, Output, PrintOptions, Runner, StepRecord};
pub use function::{FnKind, FnLimits, FnOutput};
pub use hoist_modules;
pub use resource_list::{FnResult, ResourceList};
