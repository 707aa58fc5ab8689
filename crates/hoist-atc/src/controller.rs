//! The controller: Airways (their CRD, webhook and instance controller), instances of the
//! generated CRDs, Flights and ClusterFlights, each through a `kube::runtime::Controller`
//! (one work queue per kind, per-key de-duplication, one key never reconciled twice at once).

use crate::deploy::{self, DeployRequest, Identity};
use crate::metrics::Metrics;
use crate::modules::Modules;
use crate::spec::{
    AIRWAY_FINALIZER, ANNOTATION_OVERRIDE_FLIGHT, ANNOTATION_OVERRIDE_MODE, AirwaySpec,
    FLIGHT_FINALIZER, FlightSpec, Mode, STATUS_MANAGER, TemplateNames, instance_release_name,
    object_ref,
};
use crate::status::{Reason, merge_conditions, ready_condition};
use crate::template::{Webhooks, airway_crd, owner_reference};
use futures::StreamExt;
use hoist_release::Connection;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy,
};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A reconcile failure.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ReconcileError {
    /// What failed.
    pub message: String,
    /// Retrying cannot help (the object must change first).
    pub terminal: bool,
}

impl ReconcileError {
    fn new(message: impl Into<String>) -> Self {
        ReconcileError {
            message: message.into(),
            terminal: false,
        }
    }
    fn terminal(message: impl Into<String>) -> Self {
        ReconcileError {
            message: message.into(),
            terminal: true,
        }
    }
}

impl From<kube::Error> for ReconcileError {
    fn from(e: kube::Error) -> Self {
        ReconcileError::new(e.to_string())
    }
}

type Result<T> = std::result::Result<T, ReconcileError>;

/// An `ApiResource` from its parts.
pub fn api_resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Airways.
pub fn airway_resource() -> ApiResource {
    api_resource("yoke.cd", "v1alpha1", "Airway", "airways")
}
/// Flights.
pub fn flight_resource() -> ApiResource {
    api_resource("yoke.cd", "v1alpha1", "Flight", "flights")
}
/// ClusterFlights.
pub fn cluster_flight_resource() -> ApiResource {
    api_resource("yoke.cd", "v1alpha1", "ClusterFlight", "clusterflights")
}
fn crd_resource() -> ApiResource {
    api_resource(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
    )
}
fn validating_webhook_resource() -> ApiResource {
    api_resource(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
    )
}

/// The instance controller of one Airway.
struct AirwayRuntime {
    task: tokio::task::JoinHandle<()>,
    /// Enqueues instances (dynamic mode, external changes).
    trigger: mpsc::UnboundedSender<ObjectRef<DynamicObject>>,
    resource: ApiResource,
}

/// Everything reconciles and webhooks share.
pub struct Atc {
    /// The cluster.
    pub conn: Connection,
    /// Modules.
    pub modules: Arc<Modules>,
    /// The webhook address and CA.
    pub webhooks: Webhooks,
    /// Concurrent reconciles per controller.
    pub concurrency: u16,
    /// Counters.
    pub metrics: Metrics,
    /// Instances as the child and external-object webhooks see them.
    pub tracker: crate::track::Tracker,
    /// Whether this replica holds the leader Lease (always, without leader election).
    leading: std::sync::atomic::AtomicBool,
    airways: Mutex<HashMap<String, AirwayRuntime>>,
    attempts: Mutex<HashMap<String, u32>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
}

impl Atc {
    /// A controller for `conn`.
    pub fn new(
        conn: Connection,
        modules: Arc<Modules>,
        webhooks: Webhooks,
        concurrency: u16,
    ) -> Arc<Atc> {
        let _ = EVENTS.set(kube::runtime::events::Recorder::new(
            conn.client.clone(),
            kube::runtime::events::Reporter {
                controller: "hoist-atc".into(),
                instance: std::env::var("HOSTNAME").ok(),
            },
        ));
        Arc::new(Atc {
            conn,
            modules,
            webhooks,
            concurrency: concurrency.max(1),
            metrics: Metrics::default(),
            tracker: crate::track::Tracker::default(),
            leading: std::sync::atomic::AtomicBool::new(true),
            airways: Mutex::new(HashMap::new()),
            attempts: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
        })
    }

    /// Whether this replica reconciles now (holds the leader Lease, or runs without leader
    /// election).
    pub fn is_leading(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records whether this replica leads (also the `hoist_atc_leader` gauge).
    pub fn set_leading(&self, leading: bool) {
        self.leading
            .store(leading, std::sync::atomic::Ordering::Relaxed);
        self.metrics
            .leader
            .store(i64::from(leading), std::sync::atomic::Ordering::Relaxed);
    }

    fn client(&self) -> kube::Client {
        self.conn.client.clone()
    }

    /// The read/write lock of an instance (reconcile writes; admission of its children reads).
    pub fn instance_lock(&self, key: &str) -> Arc<tokio::sync::RwLock<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(key.to_string()).or_default().clone()
    }

    /// Enqueues an instance of `airway` (for dynamic mode and external changes).
    pub fn enqueue(&self, airway: &str, namespace: Option<&str>, name: &str) -> bool {
        let airways = self.airways.lock().unwrap_or_else(|p| p.into_inner());
        let Some(runtime) = airways.get(airway) else {
            return false;
        };
        let mut reference = ObjectRef::new_with(name, runtime.resource.clone());
        if let Some(ns) = namespace {
            reference = reference.within(ns);
        }
        runtime.trigger.send(reference).is_ok()
    }

    /// Enqueues an instance after `delay` (admission runs before the change is stored, so
    /// a reconcile started at once could read the object as it was).
    pub fn enqueue_later(
        self: &Arc<Self>,
        airway: &str,
        namespace: Option<&str>,
        name: &str,
        delay: Duration,
    ) {
        let atc = self.clone();
        let (airway, namespace, name) = (
            airway.to_string(),
            namespace.map(str::to_string),
            name.to_string(),
        );
        atc.metrics
            .pending
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            atc.enqueue(&airway, namespace.as_deref(), &name);
            atc.metrics
                .pending
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }

    /// Whether `user` is the controller itself.
    pub fn is_self(&self, user: &str) -> bool {
        self.webhooks.service_account_user().as_deref() == Some(user)
            || self.webhooks.own_user.as_deref() == Some(user)
    }

    fn stop_airway(&self, name: &str) -> bool {
        self.tracker.forget_airway(name);
        let mut airways = self.airways.lock().unwrap_or_else(|p| p.into_inner());
        match airways.remove(name) {
            Some(runtime) => {
                runtime.task.abort();
                true
            }
            None => false,
        }
    }

    fn success(&self, key: &str) {
        self.attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Exponential back-off with ±10% jitter: 2^attempts s, at most 15 minutes.
    fn backoff(&self, key: &str) -> Duration {
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let n = attempts.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        backoff_for(*n, jitter_seed(key))
    }
}

fn jitter_seed(key: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    Instant::now().hash(&mut h);
    h.finish()
}

/// The back-off after `attempts` failures (`seed` picks the jitter).
pub fn backoff_for(attempts: u32, seed: u64) -> Duration {
    let base = 2f64.powi(attempts.min(20) as i32).min(900.0);
    let jitter = ((seed % 2001) as f64 / 1000.0 - 1.0) * 0.1;
    Duration::from_secs_f64((base * (1.0 + jitter)).max(0.5))
}

/// Hash of what should trigger a reconcile: spec (generation), metadata the controller
/// reads (labels, annotations, finalizers, owners, deletion); not status.
fn significant(obj: &DynamicObject) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let meta = obj.meta();
    meta.uid.hash(&mut h);
    meta.generation.hash(&mut h);
    if meta.generation.is_none() {
        // No generation (no status subresource): fall back to the content without status.
        let mut data = obj.data.clone();
        if let Some(map) = data.as_object_mut() {
            map.remove("status");
        }
        data.to_string().hash(&mut h);
    }
    format!("{:?}{:?}", meta.labels, meta.annotations).hash(&mut h);
    meta.finalizers.hash(&mut h);
    meta.deletion_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .hash(&mut h);
    meta.owner_references
        .as_ref()
        .map(|o| o.iter().map(|r| r.uid.clone()).collect::<Vec<_>>())
        .hash(&mut h);
    Some(h.finish())
}

/// A controller over `resource` that ignores status-only changes.
fn controller(
    client: kube::Client,
    resource: &ApiResource,
    concurrency: u16,
) -> Controller<DynamicObject> {
    let api: Api<DynamicObject> = Api::all_with(client, resource);
    let writer = reflector::store::Writer::new(resource.clone());
    let reader = writer.as_reader();
    let stream = kube::runtime::reflector(writer, watcher(api, watcher::Config::default()))
        .applied_objects()
        .predicate_filter(significant, PredicateConfig::default());
    Controller::for_stream_with(stream, reader, resource.clone())
        .with_config(kube::runtime::Config::default().concurrency(concurrency))
}

fn value_of(obj: &DynamicObject) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}

fn api_for(
    client: kube::Client,
    resource: &ApiResource,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client, ns, resource),
        None => Api::all_with(client, resource),
    }
}

/// Writes a `Ready` condition (merged by type) when it changes anything.
async fn set_ready(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    reason: Reason,
    message: &str,
) -> Result<()> {
    let generation = obj.meta().generation.unwrap_or(0);
    let existing = current_conditions(api, &obj.name_any()).await;
    let (merged, changed) =
        merge_conditions(&existing, &[ready_condition(reason, message, generation)]);
    if !changed {
        return Ok(());
    }
    patch_status(
        api,
        &obj.name_any(),
        json!({"status": {"conditions": merged}}),
    )
    .await?;
    publish_event(obj, reason, message).await;
    Ok(())
}

/// Where Kubernetes Events are published from (set once the controller starts).
static EVENTS: std::sync::OnceLock<kube::runtime::events::Recorder> = std::sync::OnceLock::new();

/// Publishes a Kubernetes Event on `obj` for a `Ready` transition that matters to users
/// (ready, failed, terminating; not every "in progress"). Yoke's ATC publishes none.
async fn publish_event(obj: &DynamicObject, reason: Reason, message: &str) {
    use kube::runtime::events::{Event, EventType};
    let type_ = match reason {
        Reason::Ready | Reason::Terminating => EventType::Normal,
        Reason::Error => EventType::Warning,
        Reason::InProgress => return,
    };
    let Some(recorder) = EVENTS.get() else {
        return;
    };
    let types = obj.types.clone().unwrap_or_default();
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(types.api_version),
        kind: Some(types.kind),
        name: obj.metadata.name.clone(),
        namespace: obj.metadata.namespace.clone(),
        uid: obj.metadata.uid.clone(),
        ..Default::default()
    };
    let note: String = message.chars().take(1000).collect();
    let event = Event {
        type_,
        reason: reason.as_str().to_string(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &reference).await {
        tracing::debug!("cannot publish an event on {}: {e}", obj.name_any());
    }
}

async fn current_conditions(api: &Api<DynamicObject>, name: &str) -> Vec<Value> {
    match api.get_opt(name).await {
        Ok(Some(live)) => live
            .data
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

async fn patch_status(api: &Api<DynamicObject>, name: &str, patch: Value) -> Result<()> {
    let params = PatchParams {
        field_manager: Some(STATUS_MANAGER.into()),
        ..Default::default()
    };
    match api.patch_status(name, &params, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(ReconcileError::new(format!(
            "updating the status of {name}: {e}"
        ))),
    }
}

async fn set_finalizers(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    finalizers: Vec<String>,
) -> Result<()> {
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": obj.resource_version(),
    }});
    let params = PatchParams {
        field_manager: Some(STATUS_MANAGER.into()),
        ..Default::default()
    };
    match api
        .patch(&obj.name_any(), &params, &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(ReconcileError::new(format!(
            "updating the finalizers of {}: {e}",
            obj.name_any()
        ))),
    }
}

async fn add_finalizer(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    finalizer: &str,
) -> Result<bool> {
    if obj.finalizers().iter().any(|f| f == finalizer) {
        return Ok(false);
    }
    let mut list = obj.finalizers().to_vec();
    list.push(finalizer.to_string());
    set_finalizers(api, obj, list).await?;
    Ok(true)
}

async fn remove_finalizer(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    finalizer: &str,
) -> Result<()> {
    if !obj.finalizers().iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let list: Vec<String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    set_finalizers(api, obj, list).await
}

async fn apply(
    api: &Api<DynamicObject>,
    name: &str,
    object: &Value,
    manager: &str,
) -> Result<DynamicObject> {
    let params = PatchParams::apply(manager).force();
    api.patch(name, &params, &Patch::Apply(object))
        .await
        .map_err(|e| ReconcileError::new(format!("applying {name}: {e}")))
}

/// Applies the Airway/Flight/ClusterFlight CRDs (forced) and waits until they are served.
pub async fn apply_controller_crds(client: kube::Client) -> Result<()> {
    let api: Api<DynamicObject> = Api::all_with(client, &crd_resource());
    for crd in crate::crds::controller_crds() {
        let name = crd
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        apply(&api, name, &crd, "yoke").await?;
        wait_established(&api, name).await?;
    }
    Ok(())
}

async fn wait_established(api: &Api<DynamicObject>, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(crd) = api.get_opt(name).await? {
            let established = crd
                .data
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|c| {
                    c.iter().any(|c| {
                        c.get("type").and_then(Value::as_str) == Some("Established")
                            && c.get("status").and_then(Value::as_str) == Some("True")
                    })
                });
            if established {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(ReconcileError::new(format!(
                "CustomResourceDefinition {name} was not Established within 1 minute"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Applies the global webhook configurations.
pub async fn apply_global_webhooks(atc: &Atc) -> Result<()> {
    let api: Api<DynamicObject> = Api::all_with(atc.client(), &validating_webhook_resource());
    for config in atc.webhooks.global_configurations() {
        let name = config
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        apply(&api, name, &config, "yoke.cd/atc").await?;
    }
    Ok(())
}

/// Deletes the global webhook configurations (graceful shutdown).
pub async fn delete_global_webhooks(atc: &Atc) -> Result<()> {
    let api: Api<DynamicObject> = Api::all_with(atc.client(), &validating_webhook_resource());
    for config in atc.webhooks.global_configurations() {
        let name = config
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(ReconcileError::new(format!(
                    "deleting webhook configuration {name}: {e}"
                )));
            }
        }
    }
    Ok(())
}

/// `hoist_release::mayday`, boxed (see `reconcile_airway`).
fn mayday<'a>(
    conn: &'a Connection,
    release: &'a str,
    namespace: &'a str,
    prune: hoist_release::PruneOptions,
) -> futures::future::BoxFuture<'a, hoist_release::Result<hoist_release::MaydayOutcome>> {
    Box::pin(async move {
        let progress = hoist_release::quiet();
        hoist_release::mayday(conn, release, namespace, prune, &progress).await
    })
}

fn error_policy_for(
    kind: &'static str,
) -> impl Fn(Arc<DynamicObject>, &ReconcileError, Arc<Atc>) -> Action {
    move |obj, error, atc| {
        let key = format!(
            "{kind}:{}/{}",
            obj.namespace().unwrap_or_default(),
            obj.name_any()
        );
        atc.metrics.error(kind);
        if error.terminal {
            tracing::warn!(kind, object = %key, "reconcile failed (not retried until the object changes): {error}");
            return Action::await_change();
        }
        let after = atc.backoff(&key);
        tracing::warn!(kind, object = %key, retry_in_ms = after.as_millis() as u64, "reconcile failed: {error}");
        Action::requeue(after)
    }
}

/// Runs the Airway, Flight and ClusterFlight controllers until `shutdown` resolves.
pub async fn run_controllers(
    atc: Arc<Atc>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let wait = |tx: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = tx.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };
    let airways = controller(atc.client(), &airway_resource(), atc.concurrency)
        .graceful_shutdown_on(wait(&tx))
        .run(reconcile_airway, error_policy_for("Airway"), atc.clone())
        .for_each(|_| async {});
    let flights = controller(atc.client(), &flight_resource(), atc.concurrency)
        .graceful_shutdown_on(wait(&tx))
        .run(reconcile_flight, error_policy_for("Flight"), atc.clone())
        .for_each(|_| async {});
    let cluster_flights = controller(atc.client(), &cluster_flight_resource(), atc.concurrency)
        .graceful_shutdown_on(wait(&tx))
        .run(
            reconcile_flight,
            error_policy_for("ClusterFlight"),
            atc.clone(),
        )
        .for_each(|_| async {});
    let stopper = async move {
        shutdown.await;
        let _ = tx.send(());
    };
    tokio::join!(airways, flights, cluster_flights, stopper);
    let names: Vec<String> = atc
        .airways
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .cloned()
        .collect();
    for name in names {
        atc.stop_airway(&name);
    }
}

fn reconcile_airway(
    airway: Arc<DynamicObject>,
    atc: Arc<Atc>,
) -> futures::future::BoxFuture<'static, Result<Action>> {
    // Boxed where every lifetime is concrete, so the release engine's futures are seen to
    // be Send (the controller spawns reconciles on the runtime).
    Box::pin(reconcile_airway_boxed(airway, atc))
}

async fn reconcile_airway_boxed(airway: Arc<DynamicObject>, atc: Arc<Atc>) -> Result<Action> {
    let started = Instant::now();
    atc.metrics
        .in_flight
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let result = reconcile_airway_inner(&airway, &atc).await;
    atc.metrics
        .in_flight
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    atc.metrics.reconciled("Airway", started.elapsed());
    if result.is_ok() {
        atc.success(&format!("Airway:/{}", airway.name_any()));
    }
    result
}

async fn reconcile_airway_inner(airway: &DynamicObject, atc: &Arc<Atc>) -> Result<Action> {
    let client = atc.client();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &airway_resource());
    let name = airway.name_any();
    let value = value_of(airway);

    if airway.meta().deletion_timestamp.is_some() {
        set_ready(&api, airway, Reason::Terminating, "cleaning up resources").await?;
        let hooks: Api<DynamicObject> =
            Api::all_with(client.clone(), &validating_webhook_resource());
        match hooks.delete(&name, &DeleteParams::default()).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let crds: Api<DynamicObject> = Api::all_with(client.clone(), &crd_resource());
        if let Some(crd) = crds.get_opt(&name).await? {
            if crd.meta().deletion_timestamp.is_none() {
                let params = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Foreground),
                    ..Default::default()
                };
                crds.delete(&name, &params).await?;
            }
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        atc.stop_airway(&name);
        remove_finalizer(&api, airway, AIRWAY_FINALIZER).await?;
        return Ok(Action::await_change());
    }

    if add_finalizer(&api, airway, AIRWAY_FINALIZER).await? {
        return Ok(Action::await_change());
    }

    let fail = |message: String, terminal: bool| {
        let api = api.clone();
        async move {
            set_ready(&api, airway, Reason::Error, &message).await?;
            Err::<Action, _>(ReconcileError { message, terminal })
        }
    };

    let spec = match AirwaySpec::from_object(&value) {
        Ok(spec) => spec,
        Err(e) => return fail(e.to_string(), true).await,
    };
    let names = match spec.names() {
        Ok(names) => names,
        Err(e) => return fail(e.to_string(), true).await,
    };

    if atc
        .airways
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains_key(&name)
    {
        set_ready(
            &api,
            airway,
            Reason::InProgress,
            "Cleaning up previous flight controller",
        )
        .await?;
        atc.stop_airway(&name);
    }
    set_ready(
        &api,
        airway,
        Reason::InProgress,
        "Initializing flight controller",
    )
    .await?;

    // Warm the module cache (fetch, verify, compile) for the flight and the converter.
    let mut warm = vec![(
        spec.wasm_urls.flight.clone(),
        spec.wasm_urls.flight_checksum.clone(),
    )];
    if !spec.wasm_urls.converter.is_empty() {
        warm.push((
            spec.wasm_urls.converter.clone(),
            spec.wasm_urls.converter_checksum.clone(),
        ));
    }
    for (location, checksum) in warm {
        let modules = atc.modules.clone();
        let insecure = spec.run.insecure;
        let loaded = tokio::task::spawn_blocking(move || {
            modules.load(&location, &checksum, insecure).map(|_| ())
        })
        .await
        .map_err(|e| ReconcileError::new(format!("module task failed: {e}")))?;
        if let Err(e) = loaded {
            let terminal = e.is_terminal();
            return fail(e.to_string(), terminal).await;
        }
    }

    let crd = match airway_crd(&value, !spec.wasm_urls.converter.is_empty(), &atc.webhooks) {
        Ok(crd) => crd,
        Err(e) => return fail(e.to_string(), true).await,
    };
    let crds: Api<DynamicObject> = Api::all_with(client.clone(), &crd_resource());
    if let Err(e) = apply(&crds, &name, &crd, "yoke").await {
        return fail(e.message, false).await;
    }
    if let Err(e) = wait_established(&crds, &name).await {
        return fail(e.message, false).await;
    }

    let hooks: Api<DynamicObject> = Api::all_with(client.clone(), &validating_webhook_resource());
    let config = atc.webhooks.airway_configuration(&value, &names);
    if let Err(e) = apply(&hooks, &name, &config, STATUS_MANAGER).await {
        return fail(e.message, false).await;
    }

    start_instance_controller(atc, &name, &value, spec, names);
    set_ready(&api, airway, Reason::Ready, "Flight-Controller launched").await?;
    Ok(Action::await_change())
}

/// What an instance reconcile knows about its Airway.
pub struct InstanceContext {
    atc: Arc<Atc>,
    airway_name: String,
    airway: Value,
    spec: AirwaySpec,
    names: TemplateNames,
    resource: ApiResource,
}

fn start_instance_controller(
    atc: &Arc<Atc>,
    name: &str,
    airway: &Value,
    spec: AirwaySpec,
    names: TemplateNames,
) {
    let resource = api_resource(
        &names.group,
        &names.storage_version,
        &names.kind,
        &names.plural,
    );
    let ctx = Arc::new(InstanceContext {
        atc: atc.clone(),
        airway_name: name.to_string(),
        airway: airway.clone(),
        spec,
        names,
        resource: resource.clone(),
    });
    let (trigger, triggers) = mpsc::unbounded_channel();
    let triggers = futures::stream::unfold(triggers, |mut rx| async move {
        rx.recv().await.map(|r| (r, rx))
    });
    let controller = controller(atc.client(), &resource, atc.concurrency).reconcile_on(triggers);
    let task = tokio::spawn(async move {
        controller
            .run(reconcile_instance, instance_error_policy, ctx)
            .for_each(|_| async {})
            .await;
    });
    atc.airways
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            name.to_string(),
            AirwayRuntime {
                task,
                trigger,
                resource,
            },
        );
}

fn instance_error_policy(
    obj: Arc<DynamicObject>,
    error: &ReconcileError,
    ctx: Arc<InstanceContext>,
) -> Action {
    error_policy_for("Instance")(obj, error, ctx.atc.clone())
}

/// The effective mode of an instance: a valid override annotation, else the Airway's.
pub fn effective_mode(instance: &DynamicObject, airway_mode: Mode) -> Mode {
    instance
        .annotations()
        .get(ANNOTATION_OVERRIDE_MODE)
        .and_then(|m| Mode::parse(m))
        .unwrap_or(airway_mode)
}

/// The deploy request of an instance (also used by the admission dry-run).
pub fn instance_request(
    instance: &Value,
    spec: &AirwaySpec,
    names: &TemplateNames,
    dry_run: bool,
) -> std::result::Result<DeployRequest, String> {
    let text = |p: &str| {
        instance
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let name = text("/metadata/name");
    let namespace = Some(text("/metadata/namespace")).filter(|ns| !ns.is_empty());
    let release = instance_release_name(&names.group, &names.kind, namespace.as_deref(), &name);
    let location = instance
        .pointer(&format!(
            "/metadata/annotations/{}",
            ANNOTATION_OVERRIDE_FLIGHT.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(&spec.wasm_urls.flight)
        .to_string();
    Ok(DeployRequest {
        release,
        env_release: None,
        namespace: namespace.clone().unwrap_or_else(|| "default".into()),
        location,
        checksum: spec.wasm_urls.flight_checksum.clone(),
        stdin: deploy::instance_input(instance, &spec.object_path)?,
        args: Vec::new(),
        run: spec.run.clone(),
        cross_namespace: names.cluster_scoped,
        owner_ref: owner_reference(instance, &names.kind),
        instance_ref: Some(object_ref(
            &names.group,
            &names.kind,
            namespace.as_deref(),
            &name,
        )),
        identity: Some(Identity {
            group: names.group.clone(),
            kind: names.kind.clone(),
            namespace,
            name,
        }),
        dry_run,
        lookups: None,
    })
}

fn reconcile_instance(
    instance: Arc<DynamicObject>,
    ctx: Arc<InstanceContext>,
) -> futures::future::BoxFuture<'static, Result<Action>> {
    // Boxed where every lifetime is concrete, so the release engine's futures are seen to
    // be Send (the controller spawns reconciles on the runtime).
    Box::pin(reconcile_instance_boxed(instance, ctx))
}

async fn reconcile_instance_boxed(
    instance: Arc<DynamicObject>,
    ctx: Arc<InstanceContext>,
) -> Result<Action> {
    let started = Instant::now();
    let key = format!(
        "Instance:{}/{}",
        instance.namespace().unwrap_or_default(),
        instance.name_any()
    );
    ctx.atc
        .metrics
        .in_flight
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let result = reconcile_instance_inner(&instance, &ctx).await;
    ctx.atc
        .metrics
        .in_flight
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    ctx.atc.metrics.reconciled("Instance", started.elapsed());
    if result.is_ok() {
        ctx.atc.success(&key);
    }
    result
}

async fn reconcile_instance_inner(
    instance: &DynamicObject,
    ctx: &InstanceContext,
) -> Result<Action> {
    let atc = &ctx.atc;
    let names = &ctx.names;
    let namespace = instance.namespace();
    let api = api_for(atc.client(), &ctx.resource, namespace.as_deref());
    let name = instance.name_any();
    let reference = object_ref(&names.group, &names.kind, namespace.as_deref(), &name);
    let lock = atc.instance_lock(&reference);
    let _guard = lock.write().await;
    let mode = effective_mode(instance, ctx.spec.mode);

    let release = instance_release_name(&names.group, &names.kind, namespace.as_deref(), &name);
    let release_ns = namespace.clone().unwrap_or_else(|| "default".into());

    if instance.meta().deletion_timestamp.is_some() {
        atc.tracker.forget(&reference);
        if instance.finalizers().iter().any(|f| f == FLIGHT_FINALIZER) {
            set_ready(
                &api,
                instance,
                Reason::Terminating,
                "Mayday: Flight is being removed",
            )
            .await?;
            let prune = hoist_release::PruneOptions {
                remove_crds: ctx.spec.run.prune.crds,
                remove_namespaces: ctx.spec.run.prune.namespaces,
            };
            mayday(&atc.conn, &release, &release_ns, prune)
                .await
                .map_err(|e| ReconcileError::new(format!("mayday of release {release}: {e}")))?;
            remove_finalizer(&api, instance, FLIGHT_FINALIZER).await?;
        }
        return Ok(Action::await_change());
    }

    // The finalizer and the owner reference to the Airway, in one write (Yoke makes two;
    // the next reconcile comes from the update either way).
    let airway_uid = ctx
        .airway
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    let owned = instance
        .owner_references()
        .iter()
        .any(|o| o.uid == airway_uid);
    let finalized = instance.finalizers().iter().any(|f| f == FLIGHT_FINALIZER);
    if !owned || !finalized {
        let mut metadata = serde_json::Map::new();
        metadata.insert("resourceVersion".into(), json!(instance.resource_version()));
        if !finalized {
            let mut finalizers = instance.finalizers().to_vec();
            finalizers.push(FLIGHT_FINALIZER.to_string());
            metadata.insert("finalizers".into(), json!(finalizers));
        }
        if !owned {
            let mut owners: Vec<Value> = instance
                .owner_references()
                .iter()
                .filter_map(|o| serde_json::to_value(o).ok())
                .collect();
            owners.push(owner_reference(&ctx.airway, "Airway"));
            metadata.insert("ownerReferences".into(), json!(owners));
        }
        let params = PatchParams {
            field_manager: Some(STATUS_MANAGER.into()),
            ..Default::default()
        };
        match api
            .patch(
                &name,
                &params,
                &Patch::Merge(&json!({"metadata": metadata})),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(ReconcileError::new(format!(
                    "adding the finalizer and owner of {name}: {e}"
                )));
            }
        }
        return Ok(Action::await_change());
    }

    let value = value_of(instance);
    let request = match instance_request(&value, &ctx.spec, names, false) {
        Ok(r) => r,
        Err(message) => {
            set_ready(&api, instance, Reason::Error, &message).await?;
            return Err(ReconcileError::terminal(message));
        }
    };
    let mut request = request;
    let seen = Arc::new(Mutex::new(std::collections::HashSet::new()));
    if matches!(mode, Mode::Dynamic | Mode::Subscription) {
        request.lookups = Some(seen.clone());
    }
    set_ready(&api, instance, Reason::InProgress, "Flight is taking off").await?;
    let deployed = deploy::deploy(&atc.conn, &atc.modules, &request).await;
    let lookups = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    atc.tracker.record(
        &reference,
        crate::track::Tracked {
            airway: ctx.airway_name.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
            mode,
            release: (release.clone(), release_ns.clone()),
            lookups,
        },
        deployed.result.is_ok(),
    );

    let mut identity_ready = false;
    if let Some(status) = &deployed.identity_status {
        identity_ready = write_identity_status(&api, &name, status).await?;
    }
    let applied = match deployed.result {
        Ok(applied) => applied,
        Err(e) => {
            let message = e.to_string();
            set_ready(&api, instance, Reason::Error, &message).await?;
            return Err(ReconcileError {
                message,
                terminal: e.is_terminal(),
            });
        }
    };
    tracing::info!(release = %release, namespace = %release_ns, noop = applied.outcome.noop, "instance deployed");
    let fix_drift = ctx.spec.run.fix_drift_interval;
    if !identity_ready {
        let states = deploy::readiness(&atc.conn, &applied.stages)
            .await
            .map_err(|e| ReconcileError::new(e.to_string()))?;
        return settle_readiness(&api, instance, &states, fix_drift).await;
    }
    Ok(next_drift_check(fix_drift))
}

/// Copies the identity's status onto the instance (conditions merged by type). Returns
/// whether it carried its own `Ready` condition.
async fn write_identity_status(
    api: &Api<DynamicObject>,
    name: &str,
    status: &Value,
) -> Result<bool> {
    let Some(status) = status.as_object() else {
        return Ok(false);
    };
    let new_conditions: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has_ready = new_conditions
        .iter()
        .any(|c| c.get("type").and_then(Value::as_str) == Some("Ready"));
    let existing = current_conditions(api, name).await;
    let (merged, _) = merge_conditions(&existing, &new_conditions);
    let mut out = status.clone();
    out.insert("conditions".into(), Value::Array(merged));
    patch_status(api, name, json!({"status": out})).await?;
    Ok(has_ready)
}

/// `(release, env release, release namespace)` of a Flight or ClusterFlight.
pub fn flight_release(kind: &str, namespace: Option<&str>, name: &str) -> (String, String) {
    (
        format!("{}/{kind}.yoke.cd:{name}", namespace.unwrap_or("")),
        namespace.unwrap_or("default").to_string(),
    )
}

/// The deploy request of a Flight or ClusterFlight.
pub fn flight_request(flight: &Value, dry_run: bool) -> std::result::Result<DeployRequest, String> {
    let kind = flight
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("Flight")
        .to_string();
    let text = |p: &str| {
        flight
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let name = text("/metadata/name");
    let namespace = Some(text("/metadata/namespace")).filter(|ns| !ns.is_empty());
    let spec = FlightSpec::from_object(flight).map_err(|e| e.to_string())?;
    let (release, release_ns) = flight_release(&kind, namespace.as_deref(), &name);
    Ok(DeployRequest {
        release,
        env_release: Some(name),
        namespace: release_ns,
        location: spec.wasm_url.clone(),
        checksum: spec.checksum.clone(),
        stdin: spec.stdin(),
        args: spec.args.clone(),
        run: spec.run.clone(),
        cross_namespace: kind == "ClusterFlight",
        owner_ref: owner_reference(flight, &kind),
        instance_ref: None,
        identity: None,
        dry_run,
        lookups: None,
    })
}

fn reconcile_flight(
    flight: Arc<DynamicObject>,
    atc: Arc<Atc>,
) -> futures::future::BoxFuture<'static, Result<Action>> {
    // Boxed where every lifetime is concrete, so the release engine's futures are seen to
    // be Send (the controller spawns reconciles on the runtime).
    Box::pin(reconcile_flight_boxed(flight, atc))
}

async fn reconcile_flight_boxed(flight: Arc<DynamicObject>, atc: Arc<Atc>) -> Result<Action> {
    let started = Instant::now();
    let kind = flight
        .types
        .as_ref()
        .map(|t| t.kind.clone())
        .unwrap_or_else(|| "Flight".into());
    let key = format!(
        "{kind}:{}/{}",
        flight.namespace().unwrap_or_default(),
        flight.name_any()
    );
    atc.metrics
        .in_flight
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let result = reconcile_flight_inner(&flight, &atc, &kind).await;
    atc.metrics
        .in_flight
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    atc.metrics.reconciled("Flight", started.elapsed());
    if result.is_ok() {
        atc.success(&key);
    }
    result
}

async fn reconcile_flight_inner(
    flight: &DynamicObject,
    atc: &Arc<Atc>,
    kind: &str,
) -> Result<Action> {
    let resource = if kind == "ClusterFlight" {
        cluster_flight_resource()
    } else {
        flight_resource()
    };
    let namespace = flight.namespace();
    let api = api_for(atc.client(), &resource, namespace.as_deref());
    let name = flight.name_any();
    let (release, release_ns) = flight_release(kind, namespace.as_deref(), &name);

    if flight.meta().deletion_timestamp.is_some() {
        if flight.finalizers().iter().any(|f| f == FLIGHT_FINALIZER) {
            set_ready(
                &api,
                flight,
                Reason::Terminating,
                "mayday is being performed",
            )
            .await?;
            let spec = FlightSpec::from_object(&value_of(flight)).unwrap_or_default();
            let prune = hoist_release::PruneOptions {
                remove_crds: spec.run.prune.crds,
                remove_namespaces: spec.run.prune.namespaces,
            };
            mayday(&atc.conn, &release, &release_ns, prune)
                .await
                .map_err(|e| ReconcileError::new(format!("mayday of release {release}: {e}")))?;
            remove_finalizer(&api, flight, FLIGHT_FINALIZER).await?;
        }
        return Ok(Action::await_change());
    }
    if add_finalizer(&api, flight, FLIGHT_FINALIZER).await? {
        return Ok(Action::await_change());
    }
    let mut value = value_of(flight);
    if let Some(map) = value.as_object_mut() {
        map.insert("kind".into(), json!(kind));
    }
    let request = match flight_request(&value, false) {
        Ok(r) => r,
        Err(message) => {
            set_ready(&api, flight, Reason::Error, &message).await?;
            return Err(ReconcileError::terminal(message));
        }
    };
    set_ready(
        &api,
        flight,
        Reason::InProgress,
        "fetching flight wasm module",
    )
    .await?;
    set_ready(&api, flight, Reason::InProgress, "Flight is taking off").await?;
    let deployed = deploy::deploy(&atc.conn, &atc.modules, &request).await;
    let applied = match deployed.result {
        Ok(applied) => applied,
        Err(e) => {
            let message = e.to_string();
            set_ready(&api, flight, Reason::Error, &message).await?;
            return Err(ReconcileError {
                message,
                terminal: e.is_terminal(),
            });
        }
    };
    let states = deploy::readiness(&atc.conn, &applied.stages)
        .await
        .map_err(|e| ReconcileError::new(e.to_string()))?;
    let inventory: Vec<Value> = states
        .iter()
        .map(|s| json!({"resource": s.reference, "version": s.version, "ready": s.ready}))
        .collect();
    patch_status(&api, &name, json!({"status": {"inventory": inventory}})).await?;
    let fix_drift = FlightSpec::from_object(&value)
        .ok()
        .and_then(|s| s.run.fix_drift_interval);
    settle_readiness(&api, flight, &states, fix_drift).await
}

/// Marks `obj` Ready once every object it deployed is, and says when to look again: soon
/// (at most 5 s) while something is not ready, then at the drift-fix interval, or on change.
async fn settle_readiness(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    states: &[deploy::ResourceState],
    fix_drift: Option<Duration>,
) -> Result<Action> {
    if states.iter().all(|s| s.ready) {
        set_ready(api, obj, Reason::Ready, "Successfully deployed").await?;
        return Ok(next_drift_check(fix_drift));
    }
    set_ready(
        api,
        obj,
        Reason::InProgress,
        "waiting for flight to become ready",
    )
    .await?;
    let wait = fix_drift.map_or(Duration::from_secs(5), |d| d.min(Duration::from_secs(5)));
    Ok(Action::requeue(wait))
}

/// The next reconcile of a deployed, ready object: at the drift-fix interval, or on change.
fn next_drift_check(fix_drift: Option<Duration>) -> Action {
    match fix_drift {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        for seed in [0u64, 1000, 2000, 12345] {
            let one = backoff_for(1, seed).as_secs_f64();
            assert!((1.8..=2.2).contains(&one), "{one}");
            let five = backoff_for(5, seed).as_secs_f64();
            assert!((28.8..=35.2).contains(&five), "{five}");
            let many = backoff_for(40, seed).as_secs_f64();
            assert!((810.0..=990.0).contains(&many), "{many}");
        }
    }

    #[test]
    fn instance_requests_follow_yoke() {
        let airway = serde_json::json!({"spec": {
            "wasmUrls": {"flight": "oci://r/f:1", "flightChecksum": "ab"},
            "objectPath": ["spec"],
            "template": {"group": "examples.com", "scope": "Namespaced",
                "names": {"kind": "Backend", "plural": "backends"},
                "versions": [{"name": "v1", "served": true, "storage": true}]}
        }});
        let spec = AirwaySpec::from_object(&airway).unwrap();
        let names = spec.names().unwrap();
        let instance = serde_json::json!({
            "apiVersion": "examples.com/v1", "kind": "Backend",
            "metadata": {"name": "c4ts", "namespace": "default", "uid": "u",
                "annotations": {"overrides.yoke.cd/flight": "oci://r/other:2"}},
            "spec": {"replicas": 2}
        });
        let r = instance_request(&instance, &spec, &names, true).unwrap();
        assert_eq!(r.release, "examples.com.Backend.default.c4ts");
        assert_eq!(r.namespace, "default");
        assert_eq!(r.location, "oci://r/other:2");
        assert_eq!(r.stdin, br#"{"replicas":2}"#);
        assert_eq!(
            r.instance_ref.as_deref(),
            Some("default/Backend.examples.com:c4ts")
        );
        assert!(!r.cross_namespace && r.dry_run);
        assert_eq!(r.owner_ref["uid"], serde_json::json!("u"));

        let flight = serde_json::json!({"kind": "ClusterFlight", "metadata": {"name": "x", "uid": "f"},
            "spec": {"wasmUrl": "f.wasm", "input": "{}"}});
        let r = flight_request(&flight, false).unwrap();
        assert_eq!(r.release, "/ClusterFlight.yoke.cd:x");
        assert_eq!(r.env_release.as_deref(), Some("x"));
        assert_eq!(r.namespace, "default");
        assert!(r.cross_namespace);
        let flight = serde_json::json!({"kind": "Flight", "metadata": {"name": "basic", "namespace": "default"},
            "spec": {"wasmUrl": "f.wasm"}});
        assert_eq!(
            flight_request(&flight, false).unwrap().release,
            "default/Flight.yoke.cd:basic"
        );
    }
}
