//! Why a module could not be made ready.

use hoist_provenance::signature::SignatureError;
use std::path::PathBuf;

/// Why a module could not be made ready to run. Every message names the module (as the user
/// wrote it) and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The module's URL matches none of the allowed patterns.
    #[error(
        "{location} is not allowed: {url} matches none of the allowed patterns ({patterns}); add a pattern with --allow or HOIST_ALLOW"
    )]
    NotAllowed {
        /// The location as given.
        location: String,
        /// The canonical URL that was matched.
        url: String,
        /// The allowed patterns, comma-separated.
        patterns: String,
    },
    /// The URL cannot be matched safely (traversal, encoded separators, userinfo, ...).
    #[error("{location} is not allowed: {reason}")]
    UnsafeUrl {
        /// The location as given.
        location: String,
        /// Why it is refused.
        reason: String,
    },
    /// An allow-list pattern is malformed.
    #[error("invalid allow-list pattern: {0}")]
    BadPattern(String),
    /// An environment setting has a value hoist does not know.
    #[error("invalid setting: {0}")]
    BadSetting(String),
    /// `--checksum` is not a SHA-256 in hex.
    #[error("invalid checksum: {0}")]
    BadChecksum(String),
    /// The module could not be fetched, or its checksum does not match.
    #[error(transparent)]
    Source(#[from] hoist_source::SourceError),
    /// A checksum did not match on the warm path.
    #[error(transparent)]
    Checksum(#[from] hoist_provenance::checksum::ChecksumMismatch),
    /// A verification key could not be loaded.
    #[error("cannot load verification key(s) from {}: {source}", path.display())]
    Keys {
        /// The file or directory named.
        path: PathBuf,
        /// Why.
        source: SignatureError,
    },
    /// The module's signature does not check out.
    #[error("signature check failed for {location}; {hint}: {source}")]
    Signature {
        /// The location as given.
        location: String,
        /// What to do about it.
        hint: &'static str,
        /// The underlying failure.
        source: SignatureError,
    },
    /// The engine could not be created or the module could not be compiled.
    #[error(transparent)]
    Engine(#[from] hoist_runtime::EngineError),
}
