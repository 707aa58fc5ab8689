//! The error type of every operation in this crate.

use std::path::PathBuf;

/// Everything that can go wrong while pushing or pulling a module.
///
/// Each message says what failed, on which reference/registry, and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OciError {
    /// The reference string could not be parsed.
    #[error(
        "invalid OCI reference '{reference}': {reason}; expected oci://REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST], e.g. oci://ghcr.io/org/module:v1"
    )]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why it was rejected.
        reason: String,
    },

    /// No connection could be made to the registry (refused, DNS, TLS, timeout).
    #[error("cannot reach registry {registry} ({url}): {detail}{hint}")]
    Unreachable {
        /// `host[:port]` of the registry.
        registry: String,
        /// The URL that was requested.
        url: String,
        /// The underlying error chain.
        detail: String,
        /// Advice, e.g. to retry with `--insecure` for plain-http registries.
        hint: String,
    },

    /// The registry refused our credentials, or we had none and it wants some.
    #[error(
        "authentication to registry {registry} failed for {reference} (HTTP {status}): {detail}"
    )]
    AuthFailed {
        /// `host[:port]` of the registry.
        registry: String,
        /// The reference being pulled or pushed.
        reference: String,
        /// HTTP status (401 or 403).
        status: u16,
        /// What to do (log in, check the docker config, ...).
        detail: String,
    },

    /// The manifest or blob does not exist.
    #[error(
        "{what} not found in registry: {reference}; check the repository name and the tag/digest"
    )]
    NotFound {
        /// `manifest` or `blob sha256:...`.
        what: String,
        /// The reference being pulled.
        reference: String,
    },

    /// Content served by the registry (or found in the cache) does not hash to its digest.
    #[error(
        "digest mismatch for {what} of {reference}: expected {expected}, got {actual}; the registry served corrupted or tampered content"
    )]
    DigestMismatch {
        /// `manifest` or `blob`.
        what: String,
        /// The reference being pulled.
        reference: String,
        /// The digest the content should have.
        expected: String,
        /// The digest of what was received.
        actual: String,
    },

    /// A manifest, config or layer has a media type this crate does not handle.
    #[error("unsupported {what} media type '{found}' in {reference}; accepted: {}", accepted.join(", "))]
    WrongMediaType {
        /// What carried the media type (`manifest`, `config`, `layer`, ...).
        what: String,
        /// The reference being pulled.
        reference: String,
        /// The media type found (empty when missing).
        found: String,
        /// The media types that would have been accepted.
        accepted: Vec<String>,
    },

    /// The artifact is well-formed but does not contain a module in any known layout.
    #[error("{reference} does not hold a Wasm module: {detail}")]
    NoModule {
        /// The reference being pulled.
        reference: String,
        /// What was missing.
        detail: String,
    },

    /// A manifest or index could not be parsed.
    #[error("invalid manifest for {reference}: {detail}")]
    InvalidManifest {
        /// The reference being pulled or pushed.
        reference: String,
        /// Why it was rejected.
        detail: String,
    },

    /// A size cap was exceeded (checked while streaming, before buffering more).
    #[error(
        "{what} of {reference} is larger than the cap of {limit} bytes; raise it with {knob} if the artifact is trusted"
    )]
    TooLarge {
        /// What was being read (`manifest`, `blob sha256:...`, `decompressed module`).
        what: String,
        /// The reference being pulled.
        reference: String,
        /// The cap in bytes.
        limit: u64,
        /// The option/flag that sets the cap.
        knob: String,
    },

    /// A gzip or tar layer could not be decoded.
    #[error("cannot decode {what} of {reference}: {detail}")]
    BadArchive {
        /// What was being decoded.
        what: String,
        /// The reference being pulled.
        reference: String,
        /// The decoder's error.
        detail: String,
    },

    /// The registry answered with an unexpected status.
    #[error("registry {registry} answered HTTP {status} to {method} {url}: {message}")]
    Registry {
        /// `host[:port]` of the registry.
        registry: String,
        /// HTTP method.
        method: String,
        /// The URL that was requested.
        url: String,
        /// HTTP status.
        status: u16,
        /// The registry's error message, if any.
        message: String,
    },

    /// Offline mode was requested but the cache cannot answer.
    #[error(
        "offline: {reference} is not in the module cache ({detail}); pull it once without --offline"
    )]
    NotCached {
        /// The reference being pulled.
        reference: String,
        /// Why the cache could not answer.
        detail: String,
    },

    /// A push was asked to do something impossible (digest reference, bad tag, ...).
    #[error("cannot push to {reference}: {detail}")]
    InvalidPush {
        /// The destination reference.
        reference: String,
        /// Why.
        detail: String,
    },

    /// A local file (cache, output) could not be written or read.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        action: String,
        /// The file concerned.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias for this crate.
pub type Result<T, E = OciError> = std::result::Result<T, E>;
