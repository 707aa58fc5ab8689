//! Errors of the release engine: one line each, saying what failed and where.

use std::path::PathBuf;

/// Everything that can go wrong while talking to the cluster or managing a release.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be read or is unusable.
    #[error("bad kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file (or `$KUBECONFIG` list) that was read.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The API server could not be reached at all.
    #[error(
        "cannot reach the Kubernetes API server at {url}: {message} (is the cluster running and the kubeconfig right?)"
    )]
    Unreachable {
        /// The server URL from the kubeconfig.
        url: String,
        /// The transport error.
        message: String,
    },
    /// The server refused our credentials (401).
    #[error("the API server at {url} rejected the credentials while {action}: {message}")]
    Unauthenticated {
        /// The server URL.
        url: String,
        /// What we were doing.
        action: String,
        /// The server's message.
        message: String,
    },
    /// RBAC forbids the request (403). The server's message names the user, verb, resource
    /// and namespace.
    #[error("forbidden while {action}: {message}")]
    Forbidden {
        /// What we were doing (e.g. `applying ConfigMap ns/name`).
        action: String,
        /// The server's message (`User "x" cannot create resource ...`).
        message: String,
    },
    /// The cluster does not know the apiVersion/kind (no such API, or its CRD is missing).
    #[error(
        "unknown kind {kind} in apiVersion {api_version} ({object}): the cluster has no such API; install its CustomResourceDefinition first or fix the apiVersion"
    )]
    UnknownKind {
        /// apiVersion of the object.
        api_version: String,
        /// kind of the object.
        kind: String,
        /// The object, for the message.
        object: String,
    },
    /// The server rejected an object as invalid (422 and friends).
    #[error("invalid object {object}: {message}")]
    Invalid {
        /// The object.
        object: String,
        /// The server's validation message.
        message: String,
    },
    /// Server-side apply found fields owned by another field manager.
    #[error(
        "apply conflict on {object}: {message} (re-run with --force-conflicts to take over those fields)"
    )]
    Conflict {
        /// The object.
        object: String,
        /// The server's message.
        message: String,
    },
    /// A live object belongs to another release (or to no release).
    #[error(
        "{object} is already owned by {owner}, not by release {expected}: re-run with --force-ownership to take it over"
    )]
    Ownership {
        /// The object.
        object: String,
        /// Its current owner (`ns/release`, or `nobody (created outside any release)`).
        owner: String,
        /// The release that wanted it (`ns/release`).
        expected: String,
    },
    /// Objects in other namespaces than the release's, without `cross_namespace`.
    #[error(
        "objects outside the release namespace {namespace}: {objects} (allow with --cross-namespace)"
    )]
    CrossNamespace {
        /// The release namespace.
        namespace: String,
        /// The offending objects with their namespaces.
        objects: String,
    },
    /// An object is not a valid Kubernetes object for apply (no name, no apiVersion).
    #[error("{object}: {message}")]
    BadObject {
        /// The object.
        object: String,
        /// What is missing.
        message: String,
    },
    /// The release has no revision to act on.
    #[error("release {release} not found in namespace {namespace} (no revisions)")]
    ReleaseNotFound {
        /// The release.
        release: String,
        /// The namespace that was searched.
        namespace: String,
    },
    /// A revision number outside the release's history.
    #[error("release {release} has no revision {revision} (valid: 1 to {count})")]
    RevisionNotFound {
        /// The release.
        release: String,
        /// The requested revision.
        revision: usize,
        /// How many revisions exist.
        count: usize,
    },
    /// The requested revision is already the active one.
    #[error("revision {revision} is already the active revision of release {release}")]
    AlreadyActive {
        /// The release.
        release: String,
        /// The revision.
        revision: usize,
    },
    /// Another process holds the release lock.
    #[error(
        "release {release} in namespace {namespace} is locked by another takeoff (Secret {namespace}/{secret}); if none is running, remove the lock with `hoist unlatch {release}`"
    )]
    Locked {
        /// The release.
        release: String,
        /// Its namespace.
        namespace: String,
        /// The lock Secret's name.
        secret: String,
    },
    /// A revision Secret could not be decoded.
    #[error("revision Secret {namespace}/{secret} is corrupt: {message}")]
    CorruptRevision {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        secret: String,
        /// What is wrong.
        message: String,
    },
    /// Objects did not become ready in time, or failed.
    #[error("{message}")]
    NotReady {
        /// Which objects, and why.
        message: String,
    },
    /// Several objects of one step failed; the first line summarises, one line per object follows.
    #[error("{summary}:\n{}", many_lines(.errors))]
    Many {
        /// What step failed.
        summary: String,
        /// Each object's error.
        errors: Vec<Error>,
    },
    /// A takeoff failed part-way: what was applied and what was not.
    #[error(
        "takeoff of {release} failed part-way; no revision was recorded and the next takeoff will converge.\ncause: {cause}\napplied ({}): {}\nnot applied ({}): {}",
        .applied.len(), list_or_none(.applied), .not_applied.len(), list_or_none(.not_applied)
    )]
    Partial {
        /// The release.
        release: String,
        /// Why it stopped.
        cause: Box<Error>,
        /// Objects applied before the failure.
        applied: Vec<String>,
        /// Objects not applied.
        not_applied: Vec<String>,
    },
    /// Any other API error.
    #[error("API error while {action}: {message}")]
    Api {
        /// What we were doing.
        action: String,
        /// The server's (or client's) message.
        message: String,
    },
    /// Writing `--out` files failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn list_or_none(items: &[String]) -> String {
    const SHOWN: usize = 20;
    if items.is_empty() {
        "none".to_string()
    } else if items.len() > SHOWN {
        format!(
            "{}, ... and {} more",
            items
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            items.len() - SHOWN
        )
    } else {
        items.join(", ")
    }
}

/// One line per distinct message, with a count when several objects failed the same way
/// (an unreachable server fails every object identically).
fn many_lines(errors: &[Error]) -> String {
    let mut distinct: Vec<(String, usize)> = Vec::new();
    for error in errors {
        let text = error.to_string();
        match distinct.iter_mut().find(|(t, _)| *t == text) {
            Some((_, count)) => *count += 1,
            None => distinct.push((text, 1)),
        }
    }
    distinct
        .iter()
        .map(|(text, count)| match count {
            1 => format!("  - {text}"),
            n => format!("  - ({n} objects) {text}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Converts a kube client error into ours, naming the `action` and the server `url`.
    pub(crate) fn from_kube(err: kube::Error, action: impl Into<String>, url: &str) -> Error {
        let action = action.into();
        match err {
            kube::Error::Api(status) => {
                let message = if status.message.is_empty() {
                    format!("{} ({})", status.reason, status.code)
                } else {
                    status.message.clone()
                };
                match status.code {
                    401 => Error::Unauthenticated {
                        url: url.to_string(),
                        action,
                        message,
                    },
                    403 => Error::Forbidden { action, message },
                    _ => Error::Api { action, message },
                }
            }
            kube::Error::HyperError(e) => Error::Unreachable {
                url: url.to_string(),
                message: deepest(&e),
            },
            kube::Error::Service(e) => Error::Unreachable {
                url: url.to_string(),
                message: deepest(e.as_ref()),
            },
            other => Error::Api {
                action,
                message: deepest(&other),
            },
        }
    }

    /// Is this a "not found" API error?
    pub(crate) fn kube_not_found(err: &kube::Error) -> bool {
        matches!(err, kube::Error::Api(s) if s.code == 404)
    }
}

/// The chain of sources of an error, joined, so "connection refused" is not hidden.
fn deepest(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut current = err.source();
    while let Some(e) = current {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        current = e.source();
    }
    parts.join(": ")
}
