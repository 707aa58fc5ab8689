//! Applying one stage: server-side dry run, then apply, with bounded parallelism.

use super::*;

/// Applies one stage: ownership check, optional dry run, apply. Returns the indexes applied
/// (for partial failure reports) in the error case too.
#[allow(clippy::too_many_arguments)]
pub(super) async fn apply_stage(
    conn: &Connection,
    stage: &[Resource],
    owner: &Owner,
    dry_run_first: bool,
    dry_run_only: bool,
    force_conflicts: bool,
    force_ownership: bool,
    concurrency: usize,
) -> std::result::Result<(), (Error, Vec<usize>)> {
    let resolved = resolve_stage(conn, stage).await.map_err(|e| (e, vec![]))?;
    let concurrency = concurrency.max(1);

    // Ownership. Many objects of one type in one namespace are read with one LIST (falling
    // back to a GET per object when listing is not allowed).
    let mut per_collection: HashMap<String, (usize, usize)> = HashMap::new();
    for (index, (resource, res)) in stage.iter().zip(&resolved).enumerate() {
        let url = res.collection_url(namespace_for(res, resource));
        per_collection.entry(url).or_insert((index, 0)).1 += 1;
    }
    let mut listed: HashMap<String, HashMap<String, Value>> = HashMap::new();
    for (url, (first, count)) in per_collection {
        if count < LIST_THRESHOLD {
            continue;
        }
        let (Some(resource), Some(res)) = (stage.get(first), resolved.get(first)) else {
            continue;
        };
        if let Ok(items) = conn
            .list_objects(res, namespace_for(res, resource), None)
            .await
        {
            let by_name = items
                .into_iter()
                .filter_map(|item| {
                    let name = item.pointer("/metadata/name")?.as_str()?.to_string();
                    Some((name, item))
                })
                .collect();
            listed.insert(url, by_name);
        }
    }
    let listed = &listed;
    // Futures come from plain async fns, not closures over references: a closure's
    // higher-ranked lifetimes defeat the `Send` proof when a caller spawns a takeoff.
    let pending: Vec<_> = stage
        .iter()
        .zip(&resolved)
        .map(|(resource, res)| check_owner(conn, listed, resource, res, owner, force_ownership))
        .collect();
    let checks = stream::iter(pending)
        .buffered(concurrency)
        .collect::<Vec<_>>()
        .await;
    let errors: Vec<Error> = checks.into_iter().filter_map(|r| r.err()).collect();
    many("ownership check failed".into(), errors).map_err(|e| (e, vec![]))?;

    let run = |dry: bool| {
        let pending: Vec<_> = stage
            .iter()
            .zip(&resolved)
            .enumerate()
            .map(|(index, (resource, res))| {
                apply_one(conn, index, resource, res, dry, force_conflicts)
            })
            .collect();
        stream::iter(pending)
            .buffered(concurrency)
            .collect::<Vec<_>>()
    };

    if dry_run_first || dry_run_only {
        let results = run(true).await;
        let errors: Vec<Error> = results.into_iter().filter_map(|r| r.err()).collect();
        many("dry run failed".into(), errors).map_err(|e| (e, vec![]))?;
        if dry_run_only {
            return Ok(());
        }
    }
    let results = run(false).await;
    let mut applied = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(i) => applied.push(i),
            Err(e) => errors.push(e),
        }
    }
    many("apply failed".into(), errors).map_err(|e| (e, applied))
}

async fn check_owner(
    conn: &Connection,
    listed: &HashMap<String, HashMap<String, Value>>,
    resource: &Resource,
    res: &Resolved,
    owner: &Owner,
    force_ownership: bool,
) -> Result<()> {
    let ns = namespace_for(res, resource);
    let live = match listed.get(&res.collection_url(ns)) {
        Some(by_name) => by_name.get(resource.name()).cloned(),
        None => conn
            .get_object(res, ns, resource.name())
            .await
            .map_err(|e| object_error(conn, e, resource, "reading"))?,
    };
    let live_map = live.as_ref().and_then(Value::as_object);
    ownership::check_ownership(owner, live_map, force_ownership).map_err(|current| {
        Error::Ownership {
            object: describe(resource),
            owner: current,
            expected: format!("{owner}"),
        }
    })
}

async fn apply_one(
    conn: &Connection,
    index: usize,
    resource: &Resource,
    res: &Resolved,
    dry: bool,
    force_conflicts: bool,
) -> Result<usize> {
    let value = Value::Object(resource.as_map().clone());
    conn.apply_object(
        res,
        namespace_for(res, resource),
        resource.name(),
        &value,
        dry,
        force_conflicts,
    )
    .await
    .map(|_| index)
    .map_err(|e| {
        object_error(
            conn,
            e,
            resource,
            if dry { "dry-running" } else { "applying" },
        )
    })
}
