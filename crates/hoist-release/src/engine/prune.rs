//! Pruning what a new revision no longer contains, in reverse stage order.

use super::*;

/// What pruning did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneOutcome {
    /// Deleted objects.
    pub removed: Vec<String>,
    /// Orphaned CRDs/Namespaces (ownership marks removed).
    pub orphaned: Vec<String>,
}

/// Deletes (in reverse stage order) the objects of `previous` that `next` no longer has,
/// when they are still owned by the same release; orphans CRDs and Namespaces unless told
/// to remove them; waits until deleted objects are gone.
pub async fn prune(
    conn: &Connection,
    previous: &Stages,
    next: &Stages,
    opts: PruneOptions,
    poll: Duration,
    concurrency: &usize,
    progress: &Progress,
) -> Result<PruneOutcome> {
    let keep: HashSet<String> = next.iter().map(diff::canonical_without_version).collect();
    let mut outcome = PruneOutcome::default();
    for stage in previous.0.iter().rev() {
        let gone: Vec<&Resource> = stage
            .iter()
            .filter(|r| !keep.contains(&diff::canonical_without_version(r)))
            .collect();
        if gone.is_empty() {
            continue;
        }
        // Futures built by plain async fns, not closures over references: a closure's
        // higher-ranked lifetimes defeat the `Send` proof when a caller spawns a takeoff
        // (the controller does).
        let pending: Vec<_> = gone
            .iter()
            .map(|&resource| prune_tagged(conn, resource, opts))
            .collect();
        let results = stream::iter(pending)
            .buffered((*concurrency).max(1))
            .collect::<Vec<_>>()
            .await;
        let mut errors = Vec::new();
        let mut deleted = Vec::new();
        for r in results {
            match r {
                Ok((resource, PruneAction::Deleted(res))) => deleted.push((resource, res)),
                Ok((resource, PruneAction::Orphaned)) => outcome.orphaned.push(describe(resource)),
                Ok((_, PruneAction::Skipped)) => {}
                Err(e) => errors.push(e),
            }
        }
        many("pruning failed".into(), errors)?;
        // Wait until the deleted objects are gone before the previous stage (all of the
        // stage's objects are checked together each round).
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut remaining = deleted;
        while !remaining.is_empty() {
            let pending: Vec<_> = remaining
                .iter()
                .map(|(resource, res)| still_exists(conn, resource, res))
                .collect();
            let checks = stream::iter(pending)
                .buffered((*concurrency).max(1))
                .collect::<Vec<_>>()
                .await;
            let mut still = Vec::new();
            for (entry, alive) in remaining.into_iter().zip(checks) {
                if alive? {
                    still.push(entry);
                } else {
                    outcome.removed.push(describe(entry.0));
                }
            }
            remaining = still;
            if remaining.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let names: Vec<String> = remaining.iter().map(|(r, _)| describe(r)).collect();
                return Err(Error::NotReady {
                    message: format!("not deleted within 120s: {}", names.join(", ")),
                });
            }
            tokio::time::sleep(poll.min(Duration::from_millis(250))).await;
        }
    }
    if !outcome.removed.is_empty() {
        progress(&format!("pruned {} object(s)", outcome.removed.len()));
    }
    if !outcome.orphaned.is_empty() {
        progress(&format!("orphaned {}", outcome.orphaned.join(", ")));
    }
    Ok(outcome)
}

async fn prune_tagged<'a>(
    conn: &'a Connection,
    resource: &'a Resource,
    opts: PruneOptions,
) -> Result<(&'a Resource, PruneAction)> {
    prune_one(conn, resource, opts).await.map(|r| (resource, r))
}

async fn still_exists(conn: &Connection, resource: &Resource, res: &Resolved) -> Result<bool> {
    conn.get_object(res, namespace_for(res, resource), resource.name())
        .await
        .map(|live| live.is_some())
        .map_err(|e| object_error(conn, e, resource, "waiting for the deletion of"))
}

pub(super) enum PruneAction {
    Deleted(Resolved),
    Orphaned,
    Skipped,
}

pub(super) async fn prune_one(
    conn: &Connection,
    resource: &Resource,
    opts: PruneOptions,
) -> Result<PruneAction> {
    let Some(res) = conn
        .resolve(resource.api_version(), resource.kind())
        .await?
    else {
        // The type is gone (its CRD was removed): so are its objects.
        return Ok(PruneAction::Skipped);
    };
    let ns = namespace_for(&res, resource);
    let live = conn
        .get_object(&res, ns, resource.name())
        .await
        .map_err(|e| object_error(conn, e, resource, "reading"))?;
    let Some(live) = live else {
        return Ok(PruneAction::Skipped);
    };
    let live_owner = live.as_object().and_then(ownership::owner_of);
    if live_owner != ownership::owner_of(resource.as_map()) {
        return Ok(PruneAction::Skipped);
    }
    let orphan = (resource.is_crd() && !opts.remove_crds)
        || (resource.is_namespace() && !opts.remove_namespaces);
    if orphan {
        let mut patch = json!({"metadata": {
            "labels": {ownership::LABEL_MANAGED_BY: null, ownership::LEGACY_LABEL_RELEASE: null, ownership::LEGACY_LABEL_NAMESPACE: null},
            "annotations": {ownership::ANNOTATION_RELEASE: null, ownership::ANNOTATION_NAMESPACE: null},
        }});
        if live.pointer("/metadata/ownerReferences").is_some()
            && let Some(metadata) = patch.get_mut("metadata").and_then(Value::as_object_mut)
        {
            metadata.insert("ownerReferences".into(), Value::Null);
        }
        conn.merge_patch(&res, ns, resource.name(), &patch)
            .await
            .map_err(|e| object_error(conn, e, resource, "orphaning"))?;
        return Ok(PruneAction::Orphaned);
    }
    conn.delete_object(&res, ns, resource.name())
        .await
        .map_err(|e| object_error(conn, e, resource, "deleting"))?;
    Ok(PruneAction::Deleted(res))
}
