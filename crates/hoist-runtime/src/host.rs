//! The `host` import module of Yoke's flight ABI: cluster lookups for guests.
//!
//! The runtime knows nothing about Kubernetes. A caller that grants cluster access passes an
//! implementation of [`ClusterAccess`] (hoist-release has one backed by the real API server);
//! without one every call answers [`HostError::FeatureNotGranted`], as Yoke does without
//! `--cluster-access`.

/// A guest's request to read one object from the cluster (`k8s_lookup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupRequest {
    /// `metadata.name` of the object.
    pub name: String,
    /// Namespace, empty for cluster-scoped objects (or "the release namespace" by policy).
    pub namespace: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// `apiVersion`, e.g. `apps/v1`.
    pub api_version: String,
}

/// Why a host call failed; the numeric codes are the guest-visible states of Yoke's ABI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Cluster access was not granted (state 1).
    #[error("feature not granted: run with --cluster-access to let the flight read the cluster")]
    FeatureNotGranted,
    /// Any other failure (state 2).
    #[error("{0}")]
    Error(String),
    /// The object or mapping does not exist (state 3).
    #[error("not found: {0}")]
    NotFound(String),
    /// The cluster refused our credentials (state 4).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The lookup is outside what the release may read, or RBAC forbids it (state 5).
    #[error("forbidden: {0}")]
    Forbidden(String),
}

impl HostError {
    /// The little-endian u32 state the host writes at the guest's `statePtr`.
    pub fn state(&self) -> u32 {
        match self {
            HostError::FeatureNotGranted => 1,
            HostError::Error(_) => 2,
            HostError::NotFound(_) => 3,
            HostError::Unauthenticated(_) => 4,
            HostError::Forbidden(_) => 5,
        }
    }
}

/// Read access to the cluster for a running flight.
///
/// Called synchronously from the Wasm thread; implementations that are async inside must
/// block on their own runtime handle (the flight never runs on an async executor thread).
pub trait ClusterAccess: Send + Sync {
    /// `k8s_lookup`: the object as JSON bytes.
    fn lookup(&self, request: &LookupRequest) -> Result<Vec<u8>, HostError>;

    /// `k8s_rest_mapping`: the REST mapping for a group (or apiVersion) and kind, as JSON bytes.
    fn rest_mapping(&self, group_or_api_version: &str, kind: &str) -> Result<Vec<u8>, HostError>;
}
