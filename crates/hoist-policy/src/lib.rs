//! Admission policies as Kubewarden runs them: waPC, WASI, OPA and Gatekeeper modules.
#![warn(missing_docs)]
