//! Admission policies as Kubewarden runs them: waPC, WASI, OPA and Gatekeeper modules,
//! evaluated on hoist's wasmtime engine.
//!
//! - [`metadata`]: the `io.kubewarden.metadata` section, `metadata.yml`, execution modes.
//! - [`Policy`] / [`Evaluator`]: a compiled policy and its evaluation sessions (waPC and Rego
//!   instances are reused across calls; WASI gets a fresh instance per call).
//! - [`response`]: request parsing (AdmissionRequest, AdmissionReview, raw) and the
//!   AdmissionResponse kwctl prints (mutations as a base64 JSON Patch).
//! - [`capabilities`]: host calls (`kubernetes`, `oci`, `net`, `crypto`, `tracing`) and kwctl's
//!   record/replay session files; [`kube::KubeBackend`] answers Kubernetes calls from a
//!   real API server.
//! - [`registry`]: the `oci` capability (manifest digest, manifest, manifest and config)
//!   through hoist's registry client; Sigstore verification is refused by name.
//! - [`gate`]: policies from `--policy`/`--policies` evaluated on a release's objects before
//!   they are applied (mutations, rejections, the revision record).
//! - OPA's Wasm ABI and the Rego builtins live in `opa` and [`builtins`].
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

pub mod builtins;
pub mod capabilities;
mod eval;
pub mod gate;
#[cfg(feature = "cluster")]
pub mod kube;
pub mod metadata;
mod opa;
pub mod registry;
pub mod response;
pub mod services;
mod wapc;
mod wasi;

pub use capabilities::{
    CapabilityBackend, CapabilityRequest, HostCapabilities, NoBackend, Recorder, Replayer,
};
pub use eval::{EvalError, Evaluator, Limits, Policy, PolicyError};
pub use metadata::{ExecutionMode, Metadata, ModeSource, ProtocolVersion};
pub use response::{AdmissionResponse, SettingsValidation, ValidateRequest};

/// Annotation hoist adds to every module it annotates (its version), as kwctl adds
/// `io.kubewarden.kwctl`.
pub const HOIST_ANNOTATION: &str = "io.kubewarden.hoist";

/// Annotation holding the policy's usage text (`annotate -u README.md`).
pub const USAGE_ANNOTATION: &str = "io.kubewarden.policy.usage";

/// `kwctl annotate`: detects the protocol version (calling `protocol_version` on waPC
/// policies), adds the usage text and hoist's version, validates the metadata and returns the
/// module with the `io.kubewarden.metadata` section (replacing any previous one).
pub fn annotate(
    module: &wasmtime::Module,
    wasm: &[u8],
    mut metadata: Metadata,
    usage: Option<String>,
    what: &str,
) -> Result<Vec<u8>, PolicyError> {
    let kind = metadata::module_kind(module.exports().map(|e| e.name()));
    metadata::decide_mode(None, Some(&metadata), kind, what)?;
    metadata.protocol_version = Some(ProtocolVersion::Unknown);
    if metadata.execution_mode == ExecutionMode::KubewardenWapc {
        let policy = Policy::new(module, Some(metadata.clone()), None, what)?;
        let mut evaluator = policy.evaluator(HostCapabilities::none(what), Limits::default())?;
        metadata.protocol_version = Some(evaluator.protocol_version()?);
    }
    let annotations = metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert(
        HOIST_ANNOTATION.to_string(),
        hoist_runtime::HOIST_VERSION.to_string(),
    );
    if let Some(usage) = usage {
        annotations.insert(USAGE_ANNOTATION.to_string(), usage);
    }
    metadata.validate(what)?;
    Ok(metadata::write_metadata(wasm, &metadata, what)?)
}

/// Internal parsers exposed only for the fuzz targets (`crates/hoist-fuzz`); not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    /// How OPA/Gatekeeper result JSON becomes an AdmissionResponse (`opa::interpret`).
    pub fn interpret(
        mode: crate::ExecutionMode,
        uid: &str,
        result: &serde_json::Value,
    ) -> crate::AdmissionResponse {
        crate::opa::interpret(mode, uid, result)
    }

    /// The same from the result's JSON bytes, as evaluations read it (`opa::interpret_bytes`).
    pub fn interpret_bytes(
        mode: crate::ExecutionMode,
        uid: &str,
        result: &[u8],
    ) -> crate::AdmissionResponse {
        crate::opa::interpret_bytes(mode, uid, result)
    }
}
