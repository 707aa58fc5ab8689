//! The release engine: takeoff, descent, mayday, blackbox, turbulence, unlatch.
//!
//! One file per step of a takeoff (plan, apply, wait, prune, record) and per other verb
//! (rollback: descent and mayday; inspect: listing, diffs, drift); this file holds the
//! options and the takeoff itself.

use crate::cluster::{Resolved, namespace_for};
use crate::connect::Connection;
use crate::diff;
use crate::error::{Error, Result};
use crate::ownership::{self, Owner};
use crate::readiness::{self, Readiness};
use crate::state::{self, Release, Revision, Source};
use chrono::Utc;
use futures::stream::{self, StreamExt};
use hoist_resources::{Resource, Stages};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod apply;
mod inspect;
mod plan;
mod prune;
mod record;
mod rollback;
mod wait;

use apply::*;
pub use inspect::*;
pub use plan::*;
pub use prune::*;
pub use record::*;
pub use rollback::*;
pub use wait::*;

/// A sink for progress lines (the CLI prints them to stderr).
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// A progress sink that drops everything.
pub fn quiet() -> Progress {
    Arc::new(|_| {})
}

/// Default timeout of the readiness wait between stages.
pub const DEFAULT_STAGE_WAIT: Duration = Duration::from_secs(30);
/// Default readiness poll interval.
pub const DEFAULT_POLL: Duration = Duration::from_secs(2);
/// Default number of revisions kept.
pub const DEFAULT_HISTORY_CAP: usize = 10;
/// Objects of one type in one namespace from which ownership is read with one LIST.
const LIST_THRESHOLD: usize = 8;
/// Default number of concurrent requests within a stage.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// What to do with CRDs and Namespaces that leave a release.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneOptions {
    /// Delete CustomResourceDefinitions instead of orphaning them.
    pub remove_crds: bool,
    /// Delete Namespaces instead of orphaning them.
    pub remove_namespaces: bool,
}

/// Readiness waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitOptions {
    /// `None`: wait up to [`DEFAULT_STAGE_WAIT`] between stages and not after the last;
    /// `Some(d)`: wait up to `d` after every stage, including the last (`Some(0)` never waits).
    pub wait: Option<Duration>,
    /// Poll interval.
    pub poll: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        WaitOptions {
            wait: None,
            poll: DEFAULT_POLL,
        }
    }
}

impl WaitOptions {
    fn timeout_after(&self, stage: usize, stages: usize) -> Option<Duration> {
        let last = stage + 1 >= stages;
        match self.wait {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None if last => None,
            None => Some(DEFAULT_STAGE_WAIT),
        }
    }
}

/// Options of a takeoff.
#[derive(Clone)]
pub struct TakeoffOptions {
    /// Release name.
    pub release: String,
    /// Release namespace (holds the revisions; default namespace of the objects).
    pub namespace: String,
    /// Where the module came from (recorded in the revision).
    pub source: Source,
    /// Server dry-run only: nothing changes, no revision.
    pub dry_run: bool,
    /// Skip the server dry-run before applying each stage.
    pub skip_dry_run: bool,
    /// Apply with `force` (take over fields owned by other managers).
    pub force_conflicts: bool,
    /// Take over objects owned by another release or by nobody.
    pub force_ownership: bool,
    /// Allow objects in other namespaces than the release's.
    pub cross_namespace: bool,
    /// Create the release namespace when missing.
    pub create_namespace: bool,
    /// Take the release lock for the duration of the takeoff.
    pub lock: bool,
    /// Readiness waiting.
    pub wait: WaitOptions,
    /// Revisions kept after a successful takeoff (0: unlimited).
    pub history_cap: usize,
    /// Pruning of CRDs and Namespaces.
    pub prune: PruneOptions,
    /// Concurrent requests within a stage.
    pub concurrency: usize,
    /// Progress lines.
    pub progress: Progress,
    /// Recorded in the revision as [`crate::state::ANNOTATION_POLICIES`]: the admission
    /// policies that gated it (JSON), if any.
    pub policies: Option<String>,
}

impl TakeoffOptions {
    /// Options with Yoke's defaults for `release` in `namespace`.
    pub fn new(release: &str, namespace: &str) -> TakeoffOptions {
        TakeoffOptions {
            release: release.to_string(),
            namespace: namespace.to_string(),
            source: Source::default(),
            dry_run: false,
            skip_dry_run: false,
            force_conflicts: false,
            force_ownership: false,
            cross_namespace: false,
            create_namespace: false,
            lock: false,
            wait: WaitOptions::default(),
            history_cap: DEFAULT_HISTORY_CAP,
            prune: PruneOptions::default(),
            concurrency: DEFAULT_CONCURRENCY,
            progress: quiet(),
            policies: None,
        }
    }

    fn owner(&self) -> Owner {
        Owner::new(&self.release, &self.namespace)
    }
}

impl std::fmt::Debug for TakeoffOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TakeoffOptions")
            .field("release", &self.release)
            .field("namespace", &self.namespace)
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

/// What a takeoff did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TakeoffOutcome {
    /// The revision recorded, if any (none for dry runs and no-ops).
    pub revision: Option<Revision>,
    /// The stages equal the active revision's: nothing recorded.
    pub noop: bool,
    /// Server dry-run only.
    pub dry_run: bool,
    /// Objects applied (`Kind ns/name`).
    pub applied: Vec<String>,
    /// Objects deleted by pruning.
    pub pruned: Vec<String>,
    /// CRDs/Namespaces orphaned by pruning.
    pub orphaned: Vec<String>,
}

/// Runs a takeoff of prepared stages (see [`prepare_stages`]).
///
/// Per stage: ownership check, server dry run (unless `skip_dry_run`), apply in parallel,
/// readiness wait. The revision is recorded only after every stage applied; then the
/// objects of the previous revision that are gone are pruned and the history is capped.
/// Stages equal to the active revision's record nothing (they are still applied, so drift
/// is corrected). A failure part-way is an [`Error::Partial`] listing what was applied.
pub async fn takeoff(
    conn: &Connection,
    stages: &Stages,
    opts: &TakeoffOptions,
) -> Result<TakeoffOutcome> {
    let progress = opts.progress.clone();
    // A flight that declares its own release Namespace creates it in its first stage; the
    // namespace must not be pre-created unowned (that would be an ownership conflict).
    let declares_namespace = stages
        .iter()
        .any(|r| r.is_namespace() && r.name() == opts.namespace);
    if opts.create_namespace && !opts.dry_run && !declares_namespace {
        ensure_namespace(conn, &opts.namespace, opts.wait.poll).await?;
    }
    let release = load_release(conn, &opts.release, &opts.namespace).await?;
    let lock = if opts.lock && !opts.dry_run {
        Some(ReleaseLock::take(conn, &opts.release, &opts.namespace).await?)
    } else {
        None
    };
    let result = takeoff_locked(conn, stages, opts, &release, &progress).await;
    if let Some(lock) = lock {
        let unlocked = lock.unlock().await;
        if result.is_ok() {
            unlocked?;
        }
    }
    result
}

async fn takeoff_locked(
    conn: &Connection,
    stages: &Stages,
    opts: &TakeoffOptions,
    release: &Release,
    progress: &Progress,
) -> Result<TakeoffOutcome> {
    // Re-read the history under the lock: another takeoff may have finished meanwhile.
    let release = if opts.lock && !opts.dry_run {
        load_release(conn, &opts.release, &opts.namespace).await?
    } else {
        release.clone()
    };
    let previous = match release.active() {
        Some(active) => revision_stages(conn, active).await?,
        None => Stages::default(),
    };
    let noop = !release.history.is_empty() && previous == *stages;
    let owner = opts.owner();
    let total = stages.0.len();
    let mut applied: Vec<String> = Vec::new();
    for (index, stage) in stages.0.iter().enumerate() {
        let result = apply_stage(
            conn,
            stage,
            &owner,
            !opts.skip_dry_run && !noop,
            opts.dry_run,
            opts.force_conflicts,
            opts.force_ownership,
            opts.concurrency,
        )
        .await;
        if let Err((cause, done)) = result {
            applied.extend(done.iter().filter_map(|i| stage.get(*i)).map(describe));
            return Err(partial(opts, stages, index, &done, applied, cause));
        }
        if opts.dry_run {
            progress(&format!(
                "stage {}/{total}: dry run of {} object(s) ok",
                index + 1,
                stage.len()
            ));
            continue;
        }
        applied.extend(stage.iter().map(describe));
        progress(&format!(
            "stage {}/{total}: applied {} object(s)",
            index + 1,
            stage.len()
        ));
        if let Some(timeout) = opts.wait.timeout_after(index, total)
            && let Err(cause) = wait_ready(conn, stage, timeout, opts.wait.poll).await
        {
            let all: Vec<usize> = (0..stage.len()).collect();
            return Err(partial(opts, stages, index, &all, applied, cause));
        }
    }
    if opts.dry_run {
        return Ok(TakeoffOutcome {
            revision: None,
            noop,
            dry_run: true,
            applied: Vec::new(),
            pruned: Vec::new(),
            orphaned: Vec::new(),
        });
    }
    if noop {
        progress("resources are the same as the active revision: no new revision");
        return Ok(TakeoffOutcome {
            revision: None,
            noop: true,
            dry_run: false,
            applied,
            pruned: Vec::new(),
            orphaned: Vec::new(),
        });
    }
    let revision = create_revision(conn, opts, stages).await?;
    progress(&format!(
        "recorded revision {} ({})",
        release.history.len() + 1,
        revision.secret
    ));
    let pruned = prune(
        conn,
        &previous,
        stages,
        opts.prune,
        opts.wait.poll,
        &opts.concurrency,
        progress,
    )
    .await?;
    if opts.history_cap > 0 {
        cap_history(conn, &opts.release, &opts.namespace, opts.history_cap).await?;
    }
    let history = load_release(conn, &opts.release, &opts.namespace).await?;
    let revision = history
        .history
        .iter()
        .find(|r| r.secret == revision.secret)
        .cloned()
        .unwrap_or(revision);
    Ok(TakeoffOutcome {
        revision: Some(revision),
        noop: false,
        dry_run: false,
        applied,
        pruned: pruned.removed,
        orphaned: pruned.orphaned,
    })
}

fn partial(
    opts: &TakeoffOptions,
    stages: &Stages,
    failed_stage: usize,
    done_in_failed: &[usize],
    applied: Vec<String>,
    cause: Error,
) -> Error {
    if applied.is_empty() || opts.dry_run {
        return cause;
    }
    let done: HashSet<usize> = done_in_failed.iter().copied().collect();
    let mut not_applied = Vec::new();
    for (index, stage) in stages.0.iter().enumerate().skip(failed_stage) {
        for (i, resource) in stage.iter().enumerate() {
            if index == failed_stage && done.contains(&i) {
                continue;
            }
            not_applied.push(describe(resource));
        }
    }
    Error::Partial {
        release: opts.release.clone(),
        cause: Box::new(cause),
        applied,
        not_applied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_policy_matches_yoke() {
        let default = WaitOptions::default();
        assert_eq!(default.timeout_after(0, 3), Some(DEFAULT_STAGE_WAIT));
        assert_eq!(default.timeout_after(2, 3), None);
        let set = WaitOptions {
            wait: Some(Duration::from_secs(5)),
            poll: DEFAULT_POLL,
        };
        assert_eq!(set.timeout_after(0, 2), Some(Duration::from_secs(5)));
        assert_eq!(set.timeout_after(1, 2), Some(Duration::from_secs(5)));
        let zero = WaitOptions {
            wait: Some(Duration::ZERO),
            poll: DEFAULT_POLL,
        };
        assert_eq!(zero.timeout_after(0, 2), None);
    }

    #[test]
    fn out_dir_layout() {
        let stages = hoist_resources::parse_flight_output(
            br#"[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"n"}}]"#,
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("hoist-release-out-{}", std::process::id()));
        let written = write_out(&stages, "rel", dir.to_str().unwrap(), &mut Vec::new()).unwrap();
        assert_eq!(
            written,
            vec![dir.join("rel").join("n/core/v1/configmap/a.yaml")]
        );
        let mut stdout = Vec::new();
        write_out(&stages, "rel", "-", &mut stdout).unwrap();
        assert!(
            String::from_utf8(stdout)
                .unwrap()
                .contains("kind: ConfigMap")
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
