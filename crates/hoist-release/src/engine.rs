//! The release engine: takeoff, descent, mayday, blackbox, turbulence, unlatch.

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

/// Prepares rendered stages for a release exactly as Yoke does: splits Namespaces and CRDs
/// into pre-stages, marks ownership, refuses objects in other namespaces (unless
/// `cross_namespace`), defaults the namespace of namespaced objects (scope from discovery
/// or from CRDs in the same flight), drops server-managed metadata. Unknown kinds fail here,
/// before anything is applied.
pub async fn prepare_stages(
    conn: &Connection,
    rendered: Stages,
    release: &str,
    namespace: &str,
    cross_namespace: bool,
) -> Result<Stages> {
    let mut stages = rendered.with_prestages();
    for resource in stages.iter_mut() {
        ownership::add_ownership(resource, release, namespace);
    }
    if !cross_namespace {
        let outside: Vec<String> = stages
            .iter()
            .filter(|r| r.namespace().is_some_and(|ns| ns != namespace))
            .map(|r| format!("{} (namespace {})", r, r.namespace().unwrap_or("")))
            .collect();
        if !outside.is_empty() {
            return Err(Error::CrossNamespace {
                namespace: namespace.to_string(),
                objects: outside.join(", "),
            });
        }
    }
    // Scopes of custom resources whose CRD is in the flight.
    let mut crd_scopes: HashMap<(String, String), bool> = HashMap::new();
    for resource in stages.iter().filter(|r| r.is_crd()) {
        let spec = resource.as_map().get("spec");
        let group = spec.and_then(|s| s.get("group")).and_then(Value::as_str);
        let kind = spec
            .and_then(|s| s.pointer("/names/kind"))
            .and_then(Value::as_str);
        let scope = spec.and_then(|s| s.get("scope")).and_then(Value::as_str);
        if let (Some(g), Some(k)) = (group, kind) {
            crd_scopes.insert((g.to_string(), k.to_string()), scope == Some("Namespaced"));
        }
    }
    let mut errors = Vec::new();
    for resource in stages.iter_mut() {
        if resource.name().is_empty() {
            errors.push(Error::BadObject {
                object: resource.to_string(),
                message: "the object has no metadata.name".into(),
            });
            continue;
        }
        let namespaced =
            match crd_scopes.get(&(resource.group().to_string(), resource.kind().to_string())) {
                Some(n) => *n,
                None => match conn.resolve_resource(resource).await {
                    Ok(r) => r.namespaced,
                    Err(e @ (Error::UnknownKind { .. } | Error::BadObject { .. })) => {
                        errors.push(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
        if namespaced && resource.namespace().is_none() {
            resource.set_namespace(namespace);
        }
        ownership::strip_server_fields(resource);
    }
    match errors.len() {
        0 => Ok(stages),
        1 => Err(errors.remove(0)),
        _ => Err(Error::Many {
            summary: format!("{} objects cannot be applied", errors.len()),
            errors,
        }),
    }
}

fn describe(resource: &Resource) -> String {
    let kind = if resource.group().is_empty() {
        resource.kind().to_string()
    } else {
        format!("{}.{}", resource.kind(), resource.group())
    };
    match resource.namespace() {
        Some(ns) => format!("{kind} {ns}/{}", resource.name()),
        None => format!("{kind} {}", resource.name()),
    }
}

/// Turns a failed object request into a one-line error about that object.
fn object_error(conn: &Connection, err: kube::Error, resource: &Resource, verb: &str) -> Error {
    let object = describe(resource);
    if let kube::Error::Api(status) = &err {
        match status.code {
            422 | 400 => {
                return Error::Invalid {
                    object,
                    message: status.message.clone(),
                };
            }
            409 if status.reason == "Conflict" => {
                return Error::Conflict {
                    object,
                    message: status.message.clone(),
                };
            }
            _ => {}
        }
    }
    Error::from_kube(err, format!("{verb} {object}"), conn.server())
}

fn many(summary: String, mut errors: Vec<Error>) -> Result<()> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(Error::Many { summary, errors }),
    }
}

async fn resolve_stage(conn: &Connection, stage: &[Resource]) -> Result<Vec<Resolved>> {
    let mut out = Vec::with_capacity(stage.len());
    let mut cache: HashMap<(String, String), Resolved> = HashMap::new();
    for resource in stage {
        let key = (
            resource.api_version().to_string(),
            resource.kind().to_string(),
        );
        if let Some(r) = cache.get(&key) {
            out.push(r.clone());
            continue;
        }
        let resolved = conn.resolve_resource(resource).await?;
        cache.insert(key, resolved.clone());
        out.push(resolved);
    }
    Ok(out)
}

/// Applies one stage: ownership check, optional dry run, apply. Returns the indexes applied
/// (for partial failure reports) in the error case too.
#[allow(clippy::too_many_arguments)]
async fn apply_stage(
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
        let (resource, res) = (&stage[first], &resolved[first]);
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
    let checks = stream::iter(stage.iter().zip(&resolved))
        .map(|(resource, res)| async move {
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
        })
        .buffered(concurrency)
        .collect::<Vec<_>>()
        .await;
    let errors: Vec<Error> = checks.into_iter().filter_map(|r| r.err()).collect();
    many("ownership check failed".into(), errors).map_err(|e| (e, vec![]))?;

    let run = |dry: bool| {
        let resolved = &resolved;
        async move {
            stream::iter(stage.iter().zip(resolved).enumerate())
                .map(|(index, (resource, res))| async move {
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
                })
                .buffered(concurrency)
                .collect::<Vec<_>>()
                .await
        }
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

/// Waits until every object of `stage` is ready, or `timeout` passes.
pub async fn wait_ready(
    conn: &Connection,
    stage: &[Resource],
    timeout: Duration,
    poll: Duration,
) -> Result<()> {
    let resolved = resolve_stage(conn, stage).await?;
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<usize> = (0..stage.len()).collect();
    let mut reasons: HashMap<usize, String> = HashMap::new();
    loop {
        let mut still = Vec::new();
        for &i in &pending {
            let resource = &stage[i];
            let res = &resolved[i];
            let ns = namespace_for(res, resource);
            let live = conn
                .get_object(res, ns, resource.name())
                .await
                .map_err(|e| object_error(conn, e, resource, "checking readiness of"))?;
            let verdict = match &live {
                None => Readiness::NotReady("it does not exist".into()),
                Some(live) => readiness::evaluate(live),
            };
            let verdict = match verdict {
                Readiness::NeedsEndpointSlice => {
                    endpoint_slice_readiness(conn, ns.unwrap_or(""), resource.name()).await?
                }
                v => v,
            };
            match verdict {
                Readiness::Ready => {}
                Readiness::Failed(reason) => {
                    return Err(Error::NotReady {
                        message: format!("{} failed: {reason}", describe(resource)),
                    });
                }
                Readiness::NotReady(reason) => {
                    reasons.insert(i, reason);
                    still.push(i);
                }
                Readiness::NeedsEndpointSlice => unreachable!("resolved above"),
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let list: Vec<String> = pending
                .iter()
                .map(|i| {
                    format!(
                        "{} ({})",
                        describe(&stage[*i]),
                        reasons.get(i).cloned().unwrap_or_default()
                    )
                })
                .collect();
            return Err(Error::NotReady {
                message: format!("not ready after {}: {}", humanize(timeout), list.join(", ")),
            });
        }
        let sleep = poll.min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(sleep.max(Duration::from_millis(10))).await;
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

async fn endpoint_slice_readiness(
    conn: &Connection,
    namespace: &str,
    service: &str,
) -> Result<Readiness> {
    let Some(res) = conn.resolve("discovery.k8s.io/v1", "EndpointSlice").await? else {
        return Ok(Readiness::Ready);
    };
    let selector = format!("kubernetes.io/service-name={service}");
    let items = conn
        .list_objects(&res, Some(namespace), Some(&selector))
        .await
        .map_err(|e| {
            Error::from_kube(
                e,
                format!("listing EndpointSlices of Service {namespace}/{service}"),
                conn.server(),
            )
        })?;
    Ok(if items.is_empty() {
        Readiness::NotReady("no EndpointSlice yet".into())
    } else {
        Readiness::Ready
    })
}

fn secrets(conn: &Connection, namespace: &str) -> Api<Secret> {
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
struct ReleaseLock {
    api: Api<Secret>,
    name: String,
}

impl ReleaseLock {
    async fn take(conn: &Connection, release: &str, namespace: &str) -> Result<ReleaseLock> {
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

    async fn unlock(self) -> Result<()> {
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

async fn ensure_namespace(conn: &Connection, namespace: &str, poll: Duration) -> Result<()> {
    let api: Api<Namespace> = Api::all(conn.client.clone());
    let exists = api.get_opt(namespace).await.map_err(|e| {
        Error::from_kube(e, format!("reading namespace {namespace}"), conn.server())
    })?;
    if exists.is_none() {
        let ns = Namespace {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(namespace.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                return Err(Error::from_kube(
                    e,
                    format!("creating namespace {namespace}"),
                    conn.server(),
                ));
            }
        }
    }
    let ns = Resource::from_value(
        json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":namespace}}),
    )
    .map_err(|e| Error::BadObject {
        object: namespace.to_string(),
        message: e.to_string(),
    })?;
    wait_ready(
        conn,
        std::slice::from_ref(&ns),
        Duration::from_secs(60),
        poll,
    )
    .await
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
            for i in &done {
                applied.push(describe(&stage[*i]));
            }
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

async fn create_revision(
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
        let secret =
            state::revision_secret(&opts.release, &opts.namespace, &opts.source, now, stages);
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
        let results =
            stream::iter(gone.iter().copied())
                .map(|resource| async move {
                    prune_one(conn, resource, opts).await.map(|r| (resource, r))
                })
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
            let checks = stream::iter(remaining.iter())
                .map(|(resource, res)| async move {
                    conn.get_object(res, namespace_for(res, resource), resource.name())
                        .await
                        .map(|live| live.is_some())
                        .map_err(|e| object_error(conn, e, resource, "waiting for the deletion of"))
                })
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

enum PruneAction {
    Deleted(Resolved),
    Orphaned,
    Skipped,
}

async fn prune_one(
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
        if live.pointer("/metadata/ownerReferences").is_some() {
            patch["metadata"]["ownerReferences"] = Value::Null;
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

async fn descent_locked(
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
