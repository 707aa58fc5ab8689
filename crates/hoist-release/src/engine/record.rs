//! Release history: revision Secrets, the release lock, and the history cap.

use super::*;

pub(super) fn secrets(conn: &Connection, namespace: &str) -> Api<Secret> {
    Api::namespaced(conn.client.clone(), namespace)
}

/// Loads a release's history (empty history when it does not exist).
pub async fn load_release(conn: &Connection, release: &str, namespace: &str) -> Result<Release> {
    let selector = format!("{}={}", state::LABEL_RELEASE, state::release_label(release));
    let list = secrets(conn, namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| {
            Error::from_kube(
                e,
                format!("reading the revisions of release {release} in namespace {namespace}"),
                conn.server(),
            )
        })?;
    let mut revisions = Vec::new();
    for secret in &list.items {
        let kind = secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(state::LABEL_KIND))
            .map(String::as_str);
        if kind == Some("revision") {
            revisions.push(state::revision_from_secret(secret, release)?);
        }
    }
    Ok(Release::from_revisions(release, namespace, revisions))
}

/// The stages stored in a revision.
pub async fn revision_stages(conn: &Connection, revision: &Revision) -> Result<Stages> {
    let secret = secrets(conn, &revision.namespace)
        .get(&revision.secret)
        .await
        .map_err(|e| {
            Error::from_kube(
                e,
                format!(
                    "reading revision Secret {}/{}",
                    revision.namespace, revision.secret
                ),
                conn.server(),
            )
        })?;
    state::stages_from_secret(&secret)
}

/// Holds the release lock; release it with [`ReleaseLock::unlock`].
pub(super) struct ReleaseLock {
    api: Api<Secret>,
    name: String,
}

impl ReleaseLock {
    pub(super) async fn take(
        conn: &Connection,
        release: &str,
        namespace: &str,
    ) -> Result<ReleaseLock> {
        let api = secrets(conn, namespace);
        let secret = state::lock_secret(release, namespace);
        let name = secret.metadata.name.clone().unwrap_or_default();
        let params = PostParams {
            field_manager: Some(state::FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        match api.create(&params, &secret).await {
            Ok(_) => Ok(ReleaseLock { api, name }),
            Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Locked {
                release: release.to_string(),
                namespace: namespace.to_string(),
                secret: name,
            }),
            Err(e) => Err(Error::from_kube(
                e,
                format!("taking the lock of release {release}"),
                conn.server(),
            )),
        }
    }

    pub(super) async fn unlock(self) -> Result<()> {
        match self.api.delete(&self.name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if Error::kube_not_found(&e) => Ok(()),
            Err(e) => Err(Error::Api {
                action: format!("releasing lock Secret {}", self.name),
                message: e.to_string(),
            }),
        }
    }
}

/// Removes a release's lock; `true` when there was one.
pub async fn unlatch(conn: &Connection, release: &str, namespace: &str) -> Result<bool> {
    let name = state::lock_secret_name(release);
    match secrets(conn, namespace)
        .delete(&name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if Error::kube_not_found(&e) => Ok(false),
        Err(e) => Err(Error::from_kube(
            e,
            format!("removing lock Secret {namespace}/{name}"),
            conn.server(),
        )),
    }
}

pub(super) async fn create_revision(
    conn: &Connection,
    opts: &TakeoffOptions,
    stages: &Stages,
) -> Result<Revision> {
    let now = Utc::now();
    let api = secrets(conn, &opts.namespace);
    let params = PostParams {
        field_manager: Some(state::FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    // A random name can collide, in theory: retry with a new one.
    for _ in 0..3 {
        let mut secret =
            state::revision_secret(&opts.release, &opts.namespace, &opts.source, now, stages);
        if let Some(policies) = &opts.policies {
            secret
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(state::ANNOTATION_POLICIES.to_string(), policies.clone());
        }
        match api.create(&params, &secret).await {
            Ok(created) => return state::revision_from_secret(&created, &opts.release),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => {
                return Err(Error::from_kube(
                    e,
                    format!(
                        "recording a revision of release {} in namespace {}",
                        opts.release, opts.namespace
                    ),
                    conn.server(),
                ));
            }
        }
    }
    Err(Error::Api {
        action: "recording a revision".into(),
        message: "three random Secret names collided".into(),
    })
}

/// Keeps the `cap` most recently active revisions of a release, deleting the rest.
pub async fn cap_history(
    conn: &Connection,
    release: &str,
    namespace: &str,
    cap: usize,
) -> Result<()> {
    let mut history = load_release(conn, release, namespace).await?.history;
    if history.len() <= cap {
        return Ok(());
    }
    history.sort_by_key(|r| std::cmp::Reverse(r.active_at));
    let api = secrets(conn, namespace);
    for revision in history.into_iter().skip(cap) {
        match api.delete(&revision.secret, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if Error::kube_not_found(&e) => {}
            Err(e) => {
                return Err(Error::from_kube(
                    e,
                    format!("deleting old revision {}", revision.secret),
                    conn.server(),
                ));
            }
        }
    }
    Ok(())
}
