//! Kubernetes host capabilities against a real API server (through hoist-release's client).

use crate::capabilities::{CapabilityBackend, CapabilityRequest};
use hoist_release::{Connection, Resolved};
use kube::api::{ListParams, PostParams};
use kube::core::Request;
use serde_json::{Value, json};

/// Answers `Kubernetes*` capability requests from the cluster of `conn`. Calls come from the
/// Wasm thread, never from an async task, so they block on `handle`.
pub struct KubeBackend {
    conn: Connection,
    handle: tokio::runtime::Handle,
}

impl KubeBackend {
    /// A backend on `conn`, blocking on `handle`.
    pub fn new(conn: Connection, handle: tokio::runtime::Handle) -> Self {
        KubeBackend { conn, handle }
    }

    async fn resolve(&self, api_version: &str, kind: &str) -> Result<Resolved, String> {
        self.conn
            .resolve(api_version, kind)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the cluster does not serve {api_version}/{kind}"))
    }

    async fn list(
        &self,
        request: &CapabilityRequest,
        namespace: Option<&str>,
    ) -> Result<Vec<u8>, String> {
        let (api_version, kind) = (field(request, "api_version")?, field(request, "kind")?);
        let resolved = self.resolve(api_version, kind).await?;
        let mut params = ListParams::default();
        if let Some(labels) = request.str("label_selector") {
            params = params.labels(labels);
        }
        if let Some(fields) = request.str("field_selector") {
            params = params.fields(fields);
        }
        let http = Request::new(resolved.collection_url(namespace))
            .list(&params)
            .map_err(|e| e.to_string())?;
        let list: Value = self
            .conn
            .client
            .request(http)
            .await
            .map_err(|e| e.to_string())?;
        serde_json::to_vec(&list).map_err(|e| e.to_string())
    }

    async fn answer(&self, request: &CapabilityRequest) -> Result<Vec<u8>, String> {
        match request.tag.as_str() {
            "KubernetesListResourceAll" => self.list(request, None).await,
            "KubernetesListResourceNamespace" => {
                let ns = field(request, "namespace")?.to_string();
                self.list(request, Some(&ns)).await
            }
            "KubernetesGetResource" => {
                let (api_version, kind, name) = (
                    field(request, "api_version")?,
                    field(request, "kind")?,
                    field(request, "name")?,
                );
                let namespace = request.str("namespace");
                let resolved = self.resolve(api_version, kind).await?;
                match self
                    .conn
                    .get_object(&resolved, namespace, name)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    Some(object) => serde_json::to_vec(&object).map_err(|e| e.to_string()),
                    None => Err(format!(
                        "Cannot find {api_version}/{kind} named '{name}' inside of namespace '{:?}'",
                        namespace
                    )),
                }
            }
            "KubernetesGetResourcePluralName" => {
                let resolved = self
                    .resolve(field(request, "api_version")?, field(request, "kind")?)
                    .await?;
                serde_json::to_vec(&resolved.resource.plural).map_err(|e| e.to_string())
            }
            "KubernetesCanI" => {
                let sar = request
                    .fields
                    .get("request")
                    .cloned()
                    .unwrap_or(Value::Null);
                let attrs = sar
                    .get("resource_attributes")
                    .cloned()
                    .unwrap_or(Value::Null);
                let pick = |k: &str| attrs.get(k).cloned().unwrap_or(Value::Null);
                let mut resource_attributes = serde_json::Map::new();
                for (from, to) in [
                    ("namespace", "namespace"),
                    ("verb", "verb"),
                    ("group", "group"),
                    ("version", "version"),
                    ("resource", "resource"),
                    ("subresource", "subresource"),
                    ("name", "name"),
                ] {
                    if !pick(from).is_null() {
                        resource_attributes.insert(to.to_string(), pick(from));
                    }
                }
                let body = json!({
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": "SubjectAccessReview",
                    "spec": {
                        "user": sar.get("user").cloned().unwrap_or(Value::Null),
                        "groups": sar.get("groups").cloned().unwrap_or(json!([])),
                        "resourceAttributes": resource_attributes,
                    }
                });
                let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
                let http = Request::new("/apis/authorization.k8s.io/v1/subjectaccessreviews")
                    .create(&PostParams::default(), bytes)
                    .map_err(|e| e.to_string())?;
                let review: Value = self
                    .conn
                    .client
                    .request(http)
                    .await
                    .map_err(|e| e.to_string())?;
                let status = review
                    .get("status")
                    .cloned()
                    .unwrap_or(json!({"allowed": false}));
                serde_json::to_vec(&status).map_err(|e| e.to_string())
            }
            other => Err(format!(
                "{other}: hoist does not provide this capability against a cluster; replay a recorded session with --replay-host-capabilities-interactions"
            )),
        }
    }
}

fn field<'a>(request: &'a CapabilityRequest, key: &str) -> Result<&'a str, String> {
    request
        .str(key)
        .ok_or_else(|| format!("{}: missing field {key}", request.tag))
}

impl CapabilityBackend for KubeBackend {
    fn call(&self, request: &CapabilityRequest) -> Result<Vec<u8>, String> {
        self.handle.block_on(self.answer(request))
    }
}

/// The gate's view of the cluster of `conn` (live objects for UPDATE requests, discovery for
/// resource names). Calls block on `handle`: use it from a thread outside the runtime.
pub struct KubeView {
    conn: Connection,
    handle: tokio::runtime::Handle,
}

impl KubeView {
    /// A view of `conn`'s cluster, blocking on `handle`.
    pub fn new(conn: Connection, handle: tokio::runtime::Handle) -> Self {
        KubeView { conn, handle }
    }
}

impl crate::gate::ClusterView for KubeView {
    fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, String> {
        self.handle.block_on(async {
            let Some(resolved) = self
                .conn
                .resolve(api_version, kind)
                .await
                .map_err(|e| e.to_string())?
            else {
                return Ok(None);
            };
            let namespace = if resolved.namespaced { namespace } else { None };
            self.conn
                .get_object(&resolved, namespace, name)
                .await
                .map_err(|e| format!("reading {api_version}/{kind} {name}: {e}"))
        })
    }

    fn resource(&self, api_version: &str, kind: &str) -> Result<Option<(String, bool)>, String> {
        self.handle.block_on(async {
            Ok(self
                .conn
                .resolve(api_version, kind)
                .await
                .map_err(|e| e.to_string())?
                .map(|r| (r.resource.plural.clone(), r.namespaced)))
        })
    }
}

/// Who the API server says the kubeconfig's user is (a `SelfSubjectReview`), as it would
/// fill an AdmissionRequest's `userInfo`.
pub async fn whoami(conn: &Connection) -> Result<crate::gate::UserInfo, String> {
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let http = Request::new("/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .create(&PostParams::default(), bytes)
        .map_err(|e| e.to_string())?;
    let review: Value = conn
        .client
        .request(http)
        .await
        .map_err(|e| format!("SelfSubjectReview: {e}"))?;
    let info = review
        .pointer("/status/userInfo")
        .cloned()
        .unwrap_or(Value::Null);
    Ok(crate::gate::UserInfo {
        username: info
            .get("username")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        groups: info
            .get("groups")
            .and_then(Value::as_array)
            .map(|g| {
                g.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        uid: info.get("uid").and_then(Value::as_str).map(str::to_string),
    })
}

/// The user entry of the kubeconfig's current (or given) context, for the offline gate's
/// `userInfo`; `None` when there is no readable kubeconfig.
pub fn kubeconfig_user(path: Option<&std::path::Path>, context: Option<&str>) -> Option<String> {
    let config = match path {
        Some(p) => kube::config::Kubeconfig::read_from(p).ok()?,
        None => kube::config::Kubeconfig::read().ok()?,
    };
    let name = context
        .map(str::to_string)
        .or_else(|| config.current_context.clone())?;
    config
        .contexts
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.user.clone())
}
