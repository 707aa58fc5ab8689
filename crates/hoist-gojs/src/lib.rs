//! A host for Go's `GOOS=js GOARCH=wasm` ABI (import modules `gojs`, and `go` for Go < 1.21)
//! on wasmtime, with the JS object model the Go runtime and `syscall/js` need.
//!
//! - [`value`]: JS values, objects, and the NaN-boxed reference table Go addresses them by.
//! - [`GoInstance`]: one running program. [`GoInstance::start`] runs `main` until it blocks or
//!   exits; [`GoInstance::call`] calls a global function registered with `js.FuncOf` (what
//!   kpt's glue does with `processResourceList`); [`GoInstance::run_until_idle`] runs timers
//!   as JS's event loop would. fd 0 reads the given stdin; fd 1 and fd 2 are captured
//!   separately, so nothing a program prints can mix into a call's result.
//!
//! Calls re-enter Go synchronously (a `fs.write` callback, a `js.FuncOf` handler) exactly as
//! `wasm_exec.js` does; memory is re-fetched for every access and SP re-read after anything
//! that may have run Go code.
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

mod host;
mod instance;
pub mod instrument;
pub mod value;

pub use host::{GoExited, GoState, HostFault, IMPORT_MODULES, OutputCapHit};
pub use instance::{GoInstance, GoJsError, GoOptions, Snapshot, Unsnapshottable, is_go_js};
pub use instrument::export_globals;
pub use value::{JsStr, Value};
