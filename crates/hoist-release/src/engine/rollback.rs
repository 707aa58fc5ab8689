//! Rolling back (descent) and deleting (mayday) releases.

use super::*;

/// Options of a descent (rollback).
#[derive(Clone)]
pub struct DescentOptions {
    /// Readiness waiting.
    pub wait: WaitOptions,
    /// Take the release lock.
    pub lock: bool,
    /// Pruning of CRDs and Namespaces.
    pub prune: PruneOptions,
    /// Concurrent requests within a stage.
    pub concurrency: usize,
    /// Progress lines.
    pub progress: Progress,
}

impl Default for DescentOptions {
    fn default() -> Self {
        DescentOptions {
            wait: WaitOptions::default(),
            lock: false,
            prune: PruneOptions::default(),
            concurrency: DEFAULT_CONCURRENCY,
            progress: quiet(),
        }
    }
}

/// Re-applies stored revision `revision` (1-based) without running any module, marks it
/// active, and prunes what the previously active revision had and it does not.
pub async fn descent(
    conn: &Connection,
    release: &str,
    namespace: &str,
    revision: usize,
    opts: &DescentOptions,
) -> Result<Revision> {
    let lock = if opts.lock {
        Some(ReleaseLock::take(conn, release, namespace).await?)
    } else {
        None
    };
    let result = descent_locked(conn, release, namespace, revision, opts).await;
    if let Some(lock) = lock {
        let unlocked = lock.unlock().await;
        if result.is_ok() {
            unlocked?;
        }
    }
    result
}

pub(super) async fn descent_locked(
    conn: &Connection,
    release_name: &str,
    namespace: &str,
    id: usize,
    opts: &DescentOptions,
) -> Result<Revision> {
    let release = load_release(conn, release_name, namespace).await?;
    let Some(active) = release.active().cloned() else {
        return Err(Error::ReleaseNotFound {
            release: release_name.to_string(),
            namespace: namespace.to_string(),
        });
    };
    let target = release
        .revision(id)
        .cloned()
        .ok_or(Error::RevisionNotFound {
            release: release_name.to_string(),
            revision: id,
            count: release.history.len(),
        })?;
    if target.secret == active.secret {
        return Err(Error::AlreadyActive {
            release: release_name.to_string(),
            revision: id,
        });
    }
    let next = revision_stages(conn, &target).await?;
    let previous = revision_stages(conn, &active).await?;
    let owner = Owner::new(release_name, namespace);
    let total = next.0.len();
    for (index, stage) in next.0.iter().enumerate() {
        apply_stage(
            conn,
            stage,
            &owner,
            false,
            false,
            false,
            false,
            opts.concurrency,
        )
        .await
        .map_err(|(e, _)| e)?;
        (opts.progress)(&format!(
            "stage {}/{total}: applied {} object(s)",
            index + 1,
            stage.len()
        ));
        if let Some(timeout) = opts.wait.timeout_after(index, total) {
            wait_ready(conn, stage, timeout, opts.wait.poll).await?;
        }
    }
    // Mark it active.
    let api = secrets(conn, namespace);
    let mut secret = api.get(&target.secret).await.map_err(|e| {
        Error::from_kube(
            e,
            format!("reading revision Secret {namespace}/{}", target.secret),
            conn.server(),
        )
    })?;
    secret
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            state::ANNOTATION_ACTIVE_AT.to_string(),
            state::format_time(Utc::now()),
        );
    let params = PostParams {
        field_manager: Some(state::FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    api.replace(&target.secret, &params, &secret)
        .await
        .map_err(|e| Error::from_kube(e, format!("marking revision {id} active"), conn.server()))?;
    prune(
        conn,
        &previous,
        &next,
        opts.prune,
        opts.wait.poll,
        &opts.concurrency,
        &opts.progress,
    )
    .await?;
    let release = load_release(conn, release_name, namespace).await?;
    Ok(release.revision(id).cloned().unwrap_or(target))
}

/// What mayday removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaydayOutcome {
    /// Whether the release existed.
    pub found: bool,
    /// Objects deleted / orphaned.
    pub pruned: PruneOutcome,
    /// Revisions deleted.
    pub revisions: usize,
}

/// Deletes a release's objects (reverse stage order; CRDs and Namespaces orphaned unless
/// `prune` says otherwise), its revisions and its lock.
pub async fn mayday(
    conn: &Connection,
    release_name: &str,
    namespace: &str,
    prune_opts: PruneOptions,
    progress: &Progress,
) -> Result<MaydayOutcome> {
    let release = load_release(conn, release_name, namespace).await?;
    let Some(active) = release.active().cloned() else {
        return Ok(MaydayOutcome::default());
    };
    let stages = revision_stages(conn, &active).await?;
    let pruned = prune(
        conn,
        &stages,
        &Stages::default(),
        prune_opts,
        DEFAULT_POLL,
        &DEFAULT_CONCURRENCY,
        progress,
    )
    .await?;
    let api = secrets(conn, namespace);
    for revision in &release.history {
        match api.delete(&revision.secret, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if Error::kube_not_found(&e) => {}
            Err(e) => {
                return Err(Error::from_kube(
                    e,
                    format!("deleting revision Secret {namespace}/{}", revision.secret),
                    conn.server(),
                ));
            }
        }
    }
    unlatch(conn, release_name, namespace).await?;
    Ok(MaydayOutcome {
        found: true,
        pruned,
        revisions: release.history.len(),
    })
}
