//! Reading releases: listing, diffs, drift (turbulence), and writing stages out.

use super::*;

/// A release in a listing.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReleaseSummary {
    /// Release name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Number of revisions.
    pub revisions: usize,
    /// The active revision.
    pub active: Option<Revision>,
}

/// Lists releases in `namespace`, or in every namespace the user can read when `None`.
pub async fn list_releases(
    conn: &Connection,
    namespace: Option<&str>,
) -> Result<Vec<ReleaseSummary>> {
    let selector = format!("{}=revision", state::LABEL_KIND);
    let params = ListParams::default().labels(&selector);
    let items = match namespace {
        Some(ns) => {
            secrets(conn, ns)
                .list(&params)
                .await
                .map_err(|e| {
                    Error::from_kube(
                        e,
                        format!("listing revisions in namespace {ns}"),
                        conn.server(),
                    )
                })?
                .items
        }
        None => {
            let all: Api<Secret> = Api::all(conn.client.clone());
            match all.list(&params).await {
                Ok(list) => list.items,
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    let ns = conn.default_namespace().to_string();
                    secrets(conn, &ns)
                        .list(&params)
                        .await
                        .map_err(|e| {
                            Error::from_kube(
                                e,
                                format!("listing revisions in namespace {ns}"),
                                conn.server(),
                            )
                        })?
                        .items
                }
                Err(e) => {
                    return Err(Error::from_kube(
                        e,
                        "listing revisions in all namespaces",
                        conn.server(),
                    ));
                }
            }
        }
    };
    let mut groups: std::collections::BTreeMap<(String, String), Vec<Revision>> =
        Default::default();
    for secret in &items {
        let ns = secret.metadata.namespace.clone().unwrap_or_default();
        let annotations = secret.metadata.annotations.clone().unwrap_or_default();
        let labels = secret.metadata.labels.clone().unwrap_or_default();
        let name = annotations
            .get(state::ANNOTATION_RELEASE_NAME)
            .or_else(|| labels.get(state::LABEL_RELEASE))
            .cloned()
            .unwrap_or_default();
        let revision = state::revision_from_secret(secret, &name)?;
        groups.entry((ns, name)).or_default().push(revision);
    }
    Ok(groups
        .into_iter()
        .map(|((ns, name), revisions)| {
            let release = Release::from_revisions(&name, &ns, revisions);
            ReleaseSummary {
                revisions: release.history.len(),
                active: release.active().cloned(),
                name,
                namespace: ns,
            }
        })
        .collect())
}

/// A unified diff between the stages of two revisions (or anything), by canonical name.
pub fn diff_stages(
    old_name: &str,
    old: &Stages,
    new_name: &str,
    new: &Stages,
    context: usize,
    color: bool,
) -> String {
    let a = diff::to_yaml(&diff::canonical_map(old.iter()));
    let b = diff::to_yaml(&diff::canonical_map(new.iter()));
    diff::unified_diff(old_name, &a, new_name, &b, context, color)
}

/// The diff between a release's active revision and `next` (prepared stages), for
/// `--diff-only`. Empty when equal.
pub async fn diff_against_active(
    conn: &Connection,
    release: &str,
    namespace: &str,
    next: &Stages,
    context: usize,
    color: bool,
) -> Result<String> {
    let history = load_release(conn, release, namespace).await?;
    let current = match history.active() {
        Some(active) => revision_stages(conn, active).await?,
        None => Stages::default(),
    };
    Ok(diff_stages(
        "current", &current, "next", next, context, color,
    ))
}

/// What turbulence found (and fixed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurbulenceReport {
    /// Unified diff `expected` → `actual` (empty: no drift).
    pub diff: String,
    /// Objects that drifted (or are missing).
    pub drifted: Vec<String>,
    /// Objects re-applied by `fix`.
    pub fixed: Vec<String>,
}

/// Compares the active revision's objects with the live ones (only fields the desired
/// objects set; generation, resourceVersion, uid, managedFields, creationTimestamp and status
/// ignored). With `fix`, re-applies drifted objects with force.
pub async fn turbulence(
    conn: &Connection,
    release_name: &str,
    namespace: &str,
    fix: bool,
    context: usize,
    color: bool,
) -> Result<TurbulenceReport> {
    let release = load_release(conn, release_name, namespace).await?;
    let Some(active) = release.active().cloned() else {
        return Err(Error::ReleaseNotFound {
            release: release_name.to_string(),
            namespace: namespace.to_string(),
        });
    };
    let stages = revision_stages(conn, &active).await?;
    let mut expected = std::collections::BTreeMap::new();
    let mut actual = std::collections::BTreeMap::new();
    let mut drifted = Vec::new();
    for resource in stages.iter() {
        let res = conn.resolve_resource(resource).await?;
        let ns = namespace_for(&res, resource);
        let desired = Value::Object(resource.as_map().clone());
        let live = conn
            .get_object(&res, ns, resource.name())
            .await
            .map_err(|e| object_error(conn, e, resource, "reading"))?;
        let want = diff::comparable_desired(&desired);
        let have = match &live {
            Some(live) => diff::comparable_live(&desired, live),
            None => Value::Null,
        };
        if want != have {
            drifted.push((resource, res.clone()));
        }
        let key = diff::canonical(resource);
        expected.insert(key.clone(), want);
        actual.insert(key, have);
    }
    let text = diff::unified_diff(
        "expected",
        &diff::to_yaml(&expected),
        "actual",
        &diff::to_yaml(&actual),
        context,
        color,
    );
    let mut report = TurbulenceReport {
        diff: text,
        drifted: drifted.iter().map(|(r, _)| describe(r)).collect(),
        fixed: Vec::new(),
    };
    if fix {
        let mut errors = Vec::new();
        for (resource, res) in &drifted {
            let value = Value::Object(resource.as_map().clone());
            match conn
                .apply_object(
                    res,
                    namespace_for(res, resource),
                    resource.name(),
                    &value,
                    false,
                    true,
                )
                .await
            {
                Ok(_) => report.fixed.push(describe(resource)),
                Err(e) => errors.push(object_error(conn, e, resource, "re-applying")),
            }
        }
        many("fixing drift failed".into(), errors)?;
    }
    Ok(report)
}

/// Writes rendered stages for `--out`: `-` prints YAML (one document per object) to
/// `stdout`; a directory gets `DIR/RELEASE/<canonical name>.yaml` per object.
pub fn write_out(
    stages: &Stages,
    release: &str,
    out: &str,
    stdout: &mut dyn std::io::Write,
) -> Result<Vec<std::path::PathBuf>> {
    if out == "-" {
        let text = hoist_resources::to_yaml(stages);
        stdout
            .write_all(text.as_bytes())
            .map_err(|source| Error::Io {
                path: "-".into(),
                source,
            })?;
        return Ok(Vec::new());
    }
    let root = std::path::Path::new(out).join(release);
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(|source| Error::Io {
            path: root.clone(),
            source,
        })?;
    }
    let mut written = Vec::new();
    for resource in stages.iter() {
        let path = root.join(format!("{}.yaml", diff::canonical(resource)));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let yaml =
            serde_saphyr::to_string(&diff::sorted(&Value::Object(resource.as_map().clone())))
                .unwrap_or_default();
        std::fs::write(&path, yaml).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}
