//! Releases on Kubernetes, compatible with Yoke: staged server-side apply, revision history
//! in Secrets (Yoke's exact format, so Yoke and hoist read each other's releases), readiness
//! waits, pruning, rollback (descent), deletion (mayday), inspection (blackbox), drift
//! detection (turbulence), release locks, and cluster lookups for flights.
//!
//! Typical use (all async, on a tokio runtime):
//!
//! ```no_run
//! # async fn demo(rendered: hoist_resources::Stages) -> Result<(), hoist_release::Error> {
//! let conn = hoist_release::connect(None, None).await?;
//! let ns = conn.default_namespace().to_string();
//! let stages = hoist_release::prepare_stages(&conn, rendered, "my-app", &ns, false).await?;
//! let outcome = hoist_release::takeoff(&conn, &stages, &hoist_release::TakeoffOptions::new("my-app", &ns)).await?;
//! # let _ = outcome; Ok(()) }
//! ```
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

#[cfg(feature = "cluster-access")]
mod access;
pub mod atc_support;
mod cluster;
mod connect;
pub mod diff;
mod engine;
mod error;
pub mod matcher;
pub mod ownership;
pub mod pin;
pub mod readiness;
pub mod state;

#[cfg(feature = "cluster-access")]
pub use access::{ReleaseClusterAccess, rest_mapping_json};
pub use cluster::{Resolved, split_api_version};
pub use connect::{Connection, KubeSettings, connect, context_namespace, kube_settings};
pub use engine::{
    DEFAULT_CONCURRENCY, DEFAULT_HISTORY_CAP, DEFAULT_POLL, DEFAULT_STAGE_WAIT, DescentOptions,
    MaydayOutcome, Progress, PruneOptions, PruneOutcome, ReleaseSummary, TakeoffOptions,
    TakeoffOutcome, TurbulenceReport, WaitOptions, cap_history, descent, diff_against_active,
    diff_stages, discovery_pending, list_releases, load_release, mayday, prepare_stages, prune,
    quiet, revision_stages, takeoff, turbulence, unlatch, wait_ready, write_out,
};
pub use error::{Error, Result};
pub use matcher::{MatcherError, ResourceMatcher};
pub use state::{Release, Revision, Source};
