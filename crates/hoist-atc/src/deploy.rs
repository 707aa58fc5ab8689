//! One release per instance or Flight: run the flight, pass its identity's status through,
//! mark and own the children, take off (or dry-run), judge readiness.

use crate::modules::{ModuleError, Modules};
use crate::spec::{RunSettings, object_ref};
use hoist_release::readiness::{self, Readiness};
use hoist_release::{
    Connection, PruneOptions, ResourceMatcher, Source, TakeoffOptions, TakeoffOutcome,
};
use hoist_resources::Stages;
use hoist_runtime::host::ClusterAccess;
use hoist_runtime::{FlightError, FlightSpec, StderrMode};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Largest flight stdout accepted (Yoke has no cap; 64 MiB as the CLI).
const MAX_STDOUT: usize = 64 * 1024 * 1024;

/// The object whose output entry is its own status (identity passthrough).
#[derive(Debug, Clone)]
pub struct Identity {
    /// API group.
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace (`None` when cluster-scoped).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

/// What to deploy.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// Release name (argv0 and `YOKE_RELEASE` unless `env_release` is set).
    pub release: String,
    /// `YOKE_RELEASE`/argv0 when it differs from the release (Flights: the bare name).
    pub env_release: Option<String>,
    /// Release namespace (also `YOKE_NAMESPACE`/`NAMESPACE`).
    pub namespace: String,
    /// Module location.
    pub location: String,
    /// Explicit sha256 (empty: none).
    pub checksum: String,
    /// stdin.
    pub stdin: Vec<u8>,
    /// argv after argv0.
    pub args: Vec<String>,
    /// Release settings.
    pub run: RunSettings,
    /// Objects may be in other namespaces.
    pub cross_namespace: bool,
    /// ownerReference put on every child.
    pub owner_ref: Value,
    /// `instance.atc.yoke.cd/instanceRef` of the children.
    pub instance_ref: Option<String>,
    /// The instance, for status passthrough.
    pub identity: Option<Identity>,
    /// Server dry-run only (admission).
    pub dry_run: bool,
    /// Where the references of the objects the flight looks up are recorded (dynamic and
    /// subscription modes).
    pub lookups: Option<Arc<Mutex<HashSet<String>>>>,
}

/// Why a deploy failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The module cannot be used.
    #[error(transparent)]
    Module(#[from] ModuleError),
    /// The flight failed.
    #[error("{0}")]
    Flight(String),
    /// Its output is not resources.
    #[error("invalid output from flight {location}: {message}")]
    Output {
        /// Module location.
        location: String,
        /// The parse error.
        message: String,
    },
    /// Digest pinning refused the module.
    #[error("{0}")]
    Pin(String),
    /// The release engine failed.
    #[error(transparent)]
    Release(#[from] hoist_release::Error),
    /// A settings field is invalid.
    #[error("{0}")]
    Settings(String),
}

impl DeployError {
    /// Whether retrying cannot help.
    pub fn is_terminal(&self) -> bool {
        matches!(self, DeployError::Module(m) if m.is_terminal())
    }
}

/// A deploy's result: the identity's status (even when the flight failed) and the outcome.
pub struct Deployed {
    /// `status` of the flight's identity object, when it emitted one.
    pub identity_status: Option<Value>,
    /// The takeoff (or the error).
    pub result: Result<Applied, DeployError>,
}

/// A successful takeoff.
pub struct Applied {
    /// The stages applied.
    pub stages: Stages,
    /// The engine's report.
    pub outcome: TakeoffOutcome,
    /// The module's URL and digests.
    pub source: Source,
    /// Objects a dry run could not send to the API server because their kind is defined by
    /// a CRD of an earlier stage of the same flight, not served yet (Yoke #226): checked
    /// against that CRD instead (`Kind ns/name`).
    pub deferred: Vec<String>,
}

/// The permits for running guests: one per CPU (at least two).
fn flight_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(cpus.max(2))
    })
}

/// Runs the flight of `request` and returns its raw stdout (or the flight error, with any
/// stdout it wrote before failing).
async fn render(
    conn: &Connection,
    modules: &Arc<Modules>,
    request: &DeployRequest,
) -> Result<(Vec<u8>, Source), (DeployError, Option<Vec<u8>>)> {
    let matchers = request
        .run
        .resource_access_matchers
        .iter()
        .map(|m| m.parse::<ResourceMatcher>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            (
                DeployError::Settings(format!("invalid resourceAccessMatchers: {e}")),
                None,
            )
        })?;
    let argv0 = request
        .env_release
        .clone()
        .unwrap_or_else(|| request.release.clone());
    let access: Option<Arc<dyn ClusterAccess>> = if request.run.cluster_access {
        let access: Arc<dyn ClusterAccess> = Arc::new(hoist_release::ReleaseClusterAccess::new(
            conn.clone(),
            tokio::runtime::Handle::current(),
            &request.release,
            &request.namespace,
            matchers,
        ));
        Some(match &request.lookups {
            Some(seen) => Arc::new(crate::track::RecordingAccess::new(
                access,
                &request.namespace,
                seen.clone(),
            )),
            None => access,
        })
    } else {
        None
    };
    let modules = modules.clone();
    let (location, checksum, insecure) = (
        request.location.clone(),
        request.checksum.clone(),
        request.run.insecure,
    );
    let (namespace, args, stdin) = (
        request.namespace.clone(),
        request.args.clone(),
        request.stdin.clone(),
    );
    let (max_memory_mib, timeout) = (request.run.max_memory_mib, request.run.timeout);
    // At most one running guest per CPU: admissions and reconciles together cannot run more
    // flights at once than there are CPUs to run them, and each running guest holds its own
    // linear memory, so this also bounds the controller's memory under a burst of requests.
    let _slot = flight_slots().acquire().await.map_err(|e| {
        (
            DeployError::Flight(format!("the flight slots are closed: {e}")),
            None,
        )
    })?;
    let joined = tokio::task::spawn_blocking(move || {
        let ready = modules
            .load(&location, &checksum, insecure)
            .map_err(|e| Box::new((DeployError::Module(e), None)))?;
        let spec = FlightSpec {
            what: &location,
            release: &argv0,
            namespace: &namespace,
            args: &args,
            stdin,
            max_memory_bytes: max_memory_mib * 1024 * 1024,
            timeout,
            max_stdout_bytes: MAX_STDOUT,
            stderr: StderrMode::Capture,
            cluster: access,
        };
        let source = Source {
            url: ready.url.clone(),
            checksum: ready.sha1.clone(),
            sha256: Some(ready.sha256.clone()),
        };
        match hoist_runtime::run_flight(ready.engine, &ready.loaded, spec) {
            Ok(output) => Ok((output.stdout, source)),
            Err(FlightError::Exit {
                what,
                code,
                stderr_tail,
                stdout,
            }) => {
                let message = FlightError::Exit {
                    what,
                    code,
                    stderr_tail,
                    stdout: Vec::new(),
                }
                .to_string();
                Err(Box::new((DeployError::Flight(message), Some(stdout))))
            }
            Err(e) => Err(Box::new((DeployError::Flight(e.to_string()), None))),
        }
    })
    .await;
    match joined {
        Ok(result) => result.map_err(|e| *e),
        Err(e) => Err((
            DeployError::Flight(format!("the flight task failed: {e}")),
            None,
        )),
    }
}

/// Removes the identity object from `stages` and returns its `status`.
fn take_identity(stages: &mut Stages, identity: &Identity) -> Option<Value> {
    let mut status = None;
    for stage in stages.0.iter_mut() {
        stage.retain(|r| {
            let same = r.group() == identity.group
                && r.kind() == identity.kind
                && r.name() == identity.name
                && (identity.namespace.is_none()
                    || r.namespace().is_none()
                    || r.namespace() == identity.namespace.as_deref());
            if same {
                status = Some(r.as_map().get("status").cloned().unwrap_or(Value::Null));
            }
            !same
        });
    }
    stages.0.retain(|s| !s.is_empty());
    status
}

fn mark_children(stages: &mut Stages, request: &DeployRequest) {
    for resource in stages.iter_mut() {
        hoist_release::ownership::add_atc_marks(resource, request.instance_ref.as_deref());
        let metadata = resource.metadata_mut();
        let owners = metadata
            .entry("ownerReferences")
            .or_insert_with(|| Value::Array(Vec::new()));
        if !owners.is_array() {
            *owners = Value::Array(Vec::new());
        }
        if let Value::Array(list) = owners {
            let uid = request.owner_ref.get("uid");
            if !list.iter().any(|o| o.get("uid") == uid) {
                list.push(request.owner_ref.clone());
            }
        }
    }
}

async fn check_pin(
    conn: &Connection,
    request: &DeployRequest,
    source: &Source,
) -> Result<(), DeployError> {
    hoist_release::pin::check_digest_pin(conn, &request.release, &request.namespace, source)
        .await
        .map(|_| ())
        .map_err(|e| DeployError::Pin(e.to_string()))
}

/// Renders, passes the identity's status through, and takes off (or dry-runs).
pub fn deploy<'a>(
    conn: &'a Connection,
    modules: &'a Arc<Modules>,
    request: &'a DeployRequest,
) -> futures::future::BoxFuture<'a, Deployed> {
    Box::pin(deploy_inner(conn, modules, request))
}

async fn deploy_inner(
    conn: &Connection,
    modules: &Arc<Modules>,
    request: &DeployRequest,
) -> Deployed {
    let (stdout, source) = match render(conn, modules, request).await {
        Ok(ok) => ok,
        Err((error, stdout)) => {
            // A failed flight may still report its status through its identity.
            let identity_status = match (stdout, &request.identity) {
                (Some(out), Some(identity)) => hoist_resources::parse_flight_output(&out)
                    .ok()
                    .and_then(|mut stages| take_identity(&mut stages, identity)),
                _ => None,
            };
            return Deployed {
                identity_status,
                result: Err(error),
            };
        }
    };
    let mut stages = match hoist_resources::parse_flight_output(&stdout) {
        Ok(stages) => stages,
        Err(e) => {
            return Deployed {
                identity_status: None,
                result: Err(DeployError::Output {
                    location: request.location.clone(),
                    message: e.to_string(),
                }),
            };
        }
    };
    let identity_status = request
        .identity
        .as_ref()
        .and_then(|identity| take_identity(&mut stages, identity));
    let result = take_off(conn, request, stages, source).await;
    Deployed {
        identity_status,
        result,
    }
}

async fn take_off(
    conn: &Connection,
    request: &DeployRequest,
    stages: Stages,
    source: Source,
) -> Result<Applied, DeployError> {
    check_pin(conn, request, &source).await?;
    let (stages, deferred) = if request.dry_run {
        defer_unserved_kinds(conn, stages).await?
    } else {
        (stages, Vec::new())
    };
    let mut stages = hoist_release::prepare_stages(
        conn,
        stages,
        &request.release,
        &request.namespace,
        request.cross_namespace,
    )
    .await?;
    mark_children(&mut stages, request);
    let mut opts = TakeoffOptions::new(&request.release, &request.namespace);
    opts.source = source.clone();
    opts.dry_run = request.dry_run;
    opts.force_conflicts = true;
    opts.force_ownership = true;
    opts.cross_namespace = request.cross_namespace;
    opts.history_cap = request.run.history_cap.unwrap_or(0);
    opts.prune = PruneOptions {
        remove_crds: request.run.prune.crds,
        remove_namespaces: request.run.prune.namespaces,
    };
    let outcome = hoist_release::takeoff(conn, &stages, &opts).await?;
    Ok(Applied {
        stages,
        outcome,
        source,
        deferred,
    })
}

/// The kinds the CRDs of a flight define: `(group, kind)` to the versions they serve and
/// the CRD's name.
fn flight_crd_kinds(stages: &Stages) -> HashMap<(String, String), (Vec<String>, String)> {
    let mut kinds = HashMap::new();
    for crd in stages.iter().filter(|r| r.is_crd()) {
        let spec = crd.as_map().get("spec");
        let group = spec.and_then(|s| s.get("group")).and_then(Value::as_str);
        let kind = spec
            .and_then(|s| s.pointer("/names/kind"))
            .and_then(Value::as_str);
        let (Some(group), Some(kind)) = (group, kind) else {
            continue;
        };
        let served = spec
            .and_then(|s| s.get("versions"))
            .and_then(Value::as_array)
            .map(|versions| {
                versions
                    .iter()
                    .filter(|v| v.get("served").and_then(Value::as_bool) != Some(false))
                    .filter_map(|v| v.get("name").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        kinds.insert(
            (group.to_string(), kind.to_string()),
            (served, crd.name().to_string()),
        );
    }
    kinds
}

/// Stage-aware dry run (Yoke's issue #226): a server dry run cannot create a CRD, so the
/// custom resources of a CRD that an earlier stage of the same flight defines, and that the
/// API server does not serve yet, cannot be dry-run. They are taken out of the dry run and
/// checked against the flight's CRD instead (its group defines the kind, the object's
/// version is one the CRD serves, the object has a name); the CRD itself is still dry-run.
/// Everything else is dry-run as before. Returns the stages to dry-run and what was
/// deferred.
async fn defer_unserved_kinds(
    conn: &Connection,
    stages: Stages,
) -> Result<(Stages, Vec<String>), DeployError> {
    let kinds = flight_crd_kinds(&stages);
    if kinds.is_empty() {
        return Ok((stages, Vec::new()));
    }
    let mut served: HashMap<(String, String), bool> = HashMap::new();
    let mut deferred = Vec::new();
    let mut kept = Vec::with_capacity(stages.0.len());
    for stage in stages.0 {
        let mut keep = Vec::with_capacity(stage.len());
        for resource in stage {
            let key = (resource.group().to_string(), resource.kind().to_string());
            let Some((versions, crd)) = kinds.get(&key) else {
                keep.push(resource);
                continue;
            };
            let api = (
                resource.api_version().to_string(),
                resource.kind().to_string(),
            );
            let is_served = match served.get(&api) {
                Some(s) => *s,
                None => {
                    let s = conn.resolve(&api.0, &api.1).await?.is_some();
                    served.insert(api, s);
                    s
                }
            };
            if is_served {
                keep.push(resource);
                continue;
            }
            let object = describe(&resource);
            if !versions.iter().any(|v| v == resource.version()) {
                return Err(DeployError::Release(hoist_release::Error::Invalid {
                    object,
                    message: format!(
                        "version {:?} is not served by CustomResourceDefinition {crd} of this flight (it serves {})",
                        resource.version(),
                        if versions.is_empty() {
                            "no version".to_string()
                        } else {
                            versions.join(", ")
                        }
                    ),
                }));
            }
            if resource.name().is_empty() {
                return Err(DeployError::Release(hoist_release::Error::Invalid {
                    object,
                    message: "the object has no metadata.name".into(),
                }));
            }
            deferred.push(object);
        }
        kept.push(keep);
    }
    kept.retain(|s| !s.is_empty());
    Ok((Stages(kept), deferred))
}

/// `Kind.group ns/name` of an object.
fn describe(resource: &hoist_resources::Resource) -> String {
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

/// Readiness of one applied object.
#[derive(Debug, Clone)]
pub struct ResourceState {
    /// `<ns>/<Kind.group>:<name>`.
    pub reference: String,
    /// Its version.
    pub version: String,
    /// Ready or not.
    pub ready: bool,
    /// Why not (empty when ready).
    pub reason: String,
}

fn yoke_ready(live: &Value) -> Option<Readiness> {
    let api_version = live.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let owned_by_airway = live
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|owners| {
            owners
                .iter()
                .any(|o| o.get("kind").and_then(Value::as_str) == Some("Airway"))
        });
    if !api_version.starts_with("yoke.cd/") && !owned_by_airway {
        return None;
    }
    Some(match crate::status::ready_of(live) {
        Some((true, _)) => Readiness::Ready,
        _ => Readiness::NotReady("condition Ready is not True".into()),
    })
}

/// Judges the readiness of every object of `stages` (Yoke's rules; an object owned by an
/// Airway, or an Airway/Flight, is ready when its `Ready` condition is True).
pub fn readiness<'a>(
    conn: &'a Connection,
    stages: &'a Stages,
) -> futures::future::BoxFuture<'a, Result<Vec<ResourceState>, DeployError>> {
    Box::pin(readiness_inner(conn, stages))
}

async fn readiness_inner(
    conn: &Connection,
    stages: &Stages,
) -> Result<Vec<ResourceState>, DeployError> {
    let mut states = Vec::new();
    for resource in stages.iter() {
        let resolved = conn.resolve_resource(resource).await?;
        let namespace = if resolved.namespaced {
            resource.namespace()
        } else {
            None
        };
        let live = conn
            .get_object(&resolved, namespace, resource.name())
            .await
            .map_err(|e| DeployError::Flight(format!("reading {resource} for readiness: {e}")))?;
        let (ready, reason) = match live {
            None => (false, "not found".to_string()),
            Some(live) => {
                let verdict = yoke_ready(&live).unwrap_or_else(|| readiness::evaluate(&live));
                match verdict {
                    Readiness::Ready => (true, String::new()),
                    Readiness::NotReady(r) => (false, r),
                    Readiness::Failed(r) => {
                        return Err(DeployError::Flight(format!("{resource} failed: {r}")));
                    }
                    Readiness::NeedsEndpointSlice => {
                        service_has_endpoints(conn, namespace, resource.name()).await
                    }
                    Readiness::NeedsDiscovery { kind, api_versions } => {
                        match hoist_release::discovery_pending(conn, &kind, &api_versions).await? {
                            Some(reason) => (false, reason),
                            None => (true, String::new()),
                        }
                    }
                }
            }
        };
        states.push(ResourceState {
            reference: object_ref(
                resource.group(),
                resource.kind(),
                namespace,
                resource.name(),
            ),
            version: hoist_release::split_api_version(resource.api_version())
                .1
                .to_string(),
            ready,
            reason,
        });
    }
    Ok(states)
}

async fn service_has_endpoints(
    conn: &Connection,
    namespace: Option<&str>,
    name: &str,
) -> (bool, String) {
    let Ok(Some(resolved)) = conn.resolve("discovery.k8s.io/v1", "EndpointSlice").await else {
        return (true, String::new());
    };
    let selector = format!("kubernetes.io/service-name={name}");
    match conn
        .list_objects(&resolved, namespace, Some(&selector))
        .await
    {
        Ok(items) if !items.is_empty() => (true, String::new()),
        Ok(_) => (false, "no EndpointSlice yet".into()),
        Err(e) => (false, format!("cannot list EndpointSlices: {e}")),
    }
}

/// The input of an instance: the object, or the value at `object_path`.
pub fn instance_input(instance: &Value, object_path: &[String]) -> Result<Vec<u8>, String> {
    let prefix = |n: usize| {
        object_path
            .iter()
            .take(n)
            .cloned()
            .collect::<Vec<_>>()
            .join(".")
    };
    let mut value = instance;
    for (i, key) in object_path.iter().enumerate() {
        value = match value {
            Value::Object(map) => map
                .get(key)
                .ok_or_else(|| format!("objectPath {}: no field {key:?}", prefix(i + 1)))?,
            _ => {
                return Err(format!(
                    "objectPath {}: {} is not an object",
                    prefix(i + 1),
                    prefix(i)
                ));
            }
        };
    }
    serde_json::to_vec(value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ANNOTATION_INSTANCE_REF;
    use hoist_release::ownership::LABEL_MANAGED_BY;
    use serde_json::json;

    #[test]
    fn identity_status_is_taken_out_of_the_output() {
        let out = br#"[
            {"apiVersion": "examples.com/v1", "kind": "Backend", "metadata": {"name": "b"}, "status": {"phase": "x"}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}}
        ]"#;
        let mut stages = hoist_resources::parse_flight_output(out).unwrap();
        let identity = Identity {
            group: "examples.com".into(),
            kind: "Backend".into(),
            namespace: Some("default".into()),
            name: "b".into(),
        };
        assert_eq!(
            take_identity(&mut stages, &identity),
            Some(json!({"phase": "x"}))
        );
        assert_eq!(stages.resource_count(), 1);
        assert_eq!(take_identity(&mut stages, &identity), None);
    }

    #[test]
    fn object_path_selects_the_input() {
        let cr = json!({"spec": {"a": {"b": 1}}, "metadata": {"name": "x"}});
        assert_eq!(
            instance_input(&cr, &[]).unwrap(),
            serde_json::to_vec(&cr).unwrap()
        );
        assert_eq!(
            instance_input(&cr, &["spec".into(), "a".into()]).unwrap(),
            br#"{"b":1}"#
        );
        let err = instance_input(&cr, &["spec".into(), "zz".into()]).unwrap_err();
        assert!(err.contains("spec.zz"), "{err}");
        let err =
            instance_input(&cr, &["spec".into(), "a".into(), "b".into(), "c".into()]).unwrap_err();
        assert!(err.contains("not an object"), "{err}");
    }

    #[test]
    fn children_are_marked_and_owned() {
        let out = br#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}}"#;
        let mut stages = hoist_resources::parse_flight_output(out).unwrap();
        let request = DeployRequest {
            release: "r".into(),
            env_release: None,
            namespace: "default".into(),
            location: "x".into(),
            checksum: String::new(),
            stdin: vec![],
            args: vec![],
            run: RunSettings::default(),
            cross_namespace: false,
            owner_ref: json!({"uid": "u1", "kind": "Backend"}),
            instance_ref: Some("default/Backend.examples.com:b".into()),
            identity: None,
            dry_run: false,
            lookups: None,
        };
        mark_children(&mut stages, &request);
        mark_children(&mut stages, &request);
        let r = stages.iter().next().unwrap();
        assert_eq!(
            r.as_map()["metadata"]["labels"][LABEL_MANAGED_BY],
            json!("atc.yoke")
        );
        assert_eq!(
            r.as_map()["metadata"]["annotations"][ANNOTATION_INSTANCE_REF],
            json!("default/Backend.examples.com:b")
        );
        assert_eq!(
            r.as_map()["metadata"]["ownerReferences"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
}
