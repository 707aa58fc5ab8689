//! The policy gate: admission policies evaluated on a release's objects before anything reaches
//! the cluster, as the API server would call Kubewarden's webhooks.
//!
//! Policies come from `--policy MODULE[,settings=FILE]` ([`PolicySpec::from_flag`]) and from
//! files of Kubewarden `ClusterAdmissionPolicy` / `AdmissionPolicy` manifests
//! ([`read_policies_file`]). [`Gate::load`] loads every module through `hoist-modules`, checks
//! each policy's settings (`validate_settings`) and keeps one evaluator per policy.
//! [`Gate::admit`] sends each object, stage by stage, as the AdmissionRequest the API server
//! would send (CREATE, or UPDATE with `oldObject` when a [`ClusterView`] finds the live object),
//! first through the mutating policies (patches applied in order, as the API server chains
//! mutating webhooks), then through the validating ones, and collects every rejection.

use crate::capabilities::{CapabilityBackend, HostCapabilities, NoBackend};
use crate::eval::{Evaluator, Limits, Policy, PolicyError};
use crate::metadata::{self, ContextAwareResource, MetadataError};
use crate::response::{AdmissionResponse, ValidateRequest};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Revision annotation (JSON) recording which policies gated a release, with their settings.
pub const REVISION_ANNOTATION: &str = "hoist.dev/policies";

/// Why the gate cannot be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// A `--policy` flag is malformed.
    #[error("--policy {flag}: {detail}")]
    Flag {
        /// The flag's value.
        flag: String,
        /// What is wrong.
        detail: String,
    },
    /// A file (settings or manifests) cannot be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// What the file is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A manifest is not a policy hoist can run as written.
    #[error("{origin}: {detail}")]
    Manifest {
        /// File and document (`policies.yaml, document 2 (ClusterAdmissionPolicy/name)`).
        origin: String,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// A policy's module cannot be loaded.
    #[error("policy {policy}: cannot load its module {module}: {detail}")]
    Load {
        /// The policy's name.
        policy: String,
        /// The module location.
        module: String,
        /// Why.
        detail: String,
    },
    /// A policy's metadata is invalid.
    #[error("policy {policy}: {source}")]
    Metadata {
        /// The policy's name.
        policy: String,
        /// Why.
        source: MetadataError,
    },
    /// A policy cannot be prepared (mode, linking, start-up).
    #[error("policy {policy}: {source}")]
    Policy {
        /// The policy's name.
        policy: String,
        /// Why.
        source: PolicyError,
    },
    /// The policy refused its settings.
    #[error(
        "policy {policy}: its settings are not valid: {message} (fix the settings given {origin})"
    )]
    Settings {
        /// The policy's name.
        policy: String,
        /// Where the settings came from.
        origin: String,
        /// The policy's message.
        message: String,
    },
    /// The cluster could not answer a lookup needed to build a request.
    #[error("policy gate: cannot build the admission request for {object}: {detail}")]
    Lookup {
        /// The object.
        object: String,
        /// Why.
        detail: String,
    },
}

/// `protect` rejects; `monitor` only reports (Kubewarden's `spec.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GateMode {
    /// Rejections stop the release; mutations are applied.
    #[default]
    Protect,
    /// Rejections are reported as warnings; mutations are not applied.
    Monitor,
}

/// One admission rule of a manifest (the webhook's `rules`, with the optional `scope`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateRule {
    /// API groups (`""` is core, `*` all).
    #[serde(default)]
    pub api_groups: Vec<String>,
    /// API versions (`*` all).
    #[serde(default)]
    pub api_versions: Vec<String>,
    /// Resources: plural names, `*`, or `*/*`.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Operations: CREATE, UPDATE, DELETE, CONNECT or `*`.
    #[serde(default)]
    pub operations: Vec<String>,
    /// `Cluster`, `Namespaced` or `*` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl From<&metadata::Rule> for GateRule {
    fn from(rule: &metadata::Rule) -> Self {
        GateRule {
            api_groups: rule.api_groups.clone(),
            api_versions: rule.api_versions.clone(),
            resources: rule.resources.clone(),
            operations: rule.operations.clone(),
            scope: None,
        }
    }
}

fn listed(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

impl GateRule {
    fn matches(&self, target: &Target, operation: &str) -> bool {
        let resource_ok = self.resources.iter().any(|r| {
            r == "*"
                || r == "*/*"
                || *r == target.resource
                || r == &format!("{}/*", target.resource)
        });
        let scope_ok = match self.scope.as_deref() {
            None | Some("*") => true,
            Some("Cluster") => !target.namespaced,
            Some("Namespaced") => target.namespaced,
            Some(_) => false,
        };
        listed(&self.api_groups, &target.group)
            && listed(&self.api_versions, &target.version)
            && resource_ok
            && listed(&self.operations, operation)
            && scope_ok
    }
}

/// A Kubernetes label selector (`matchLabels`, `matchExpressions`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must be equal.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Expressions that must all hold.
    #[serde(default)]
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorRequirement {
    /// The label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In` / `NotIn`.
    #[serde(default)]
    pub values: Vec<String>,
}

impl LabelSelector {
    /// Whether `labels` satisfy the selector (an empty selector matches everything).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let value = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => value.is_some_and(|v| e.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !e.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }

    fn check(&self, field: &str) -> Result<(), String> {
        for (i, e) in self.match_expressions.iter().enumerate() {
            match e.operator.as_str() {
                "In" | "NotIn" if e.values.is_empty() => {
                    return Err(format!(
                        "{field}.matchExpressions[{i}]: operator {} needs values",
                        e.operator
                    ));
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => {
                    return Err(format!(
                        "{field}.matchExpressions[{i}]: unknown operator {other:?} (use In, NotIn, Exists or DoesNotExist)"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// One policy of the gate, as given on the command line or in a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySpec {
    /// Its name (the manifest's `metadata.name`, else the module location).
    pub name: String,
    /// Module location (path, file://, http(s)://, oci://; kwctl's registry:// is accepted).
    pub module: String,
    /// Settings (an object).
    pub settings: Value,
    /// Where the settings came from, for messages.
    pub settings_origin: String,
    /// Rules; `None` takes the rules of the module's metadata (and every object when it has
    /// none).
    pub rules: Option<Vec<GateRule>>,
    /// Whether it may mutate; `None` takes the metadata's `mutating` (true for a module without
    /// metadata).
    pub mutating: Option<bool>,
    /// Only objects in namespaces whose labels match (Namespaces match on their own labels).
    pub namespace_selector: Option<LabelSelector>,
    /// Only objects whose labels match.
    pub object_selector: Option<LabelSelector>,
    /// For an `AdmissionPolicy`: the only namespace it sees.
    pub namespace: Option<String>,
    /// `protect` or `monitor`.
    pub mode: GateMode,
    /// Kubernetes types the policy may read (a ClusterAdmissionPolicy's
    /// `contextAwareResources`); reads need a backend (see [`GateOptions::backend`]).
    pub context_aware_resources: BTreeSet<ContextAwareResource>,
    /// Time limit of each evaluation (`timeoutSeconds`); `None` for the gate's default.
    pub timeout: Option<Duration>,
    /// Where it was declared, for messages.
    pub origin: String,
}

impl PolicySpec {
    /// A policy with defaults for everything but its module.
    pub fn new(module: &str) -> PolicySpec {
        PolicySpec {
            name: short_name(module),
            module: module.to_string(),
            settings: json!({}),
            settings_origin: "by no settings file".into(),
            rules: None,
            mutating: None,
            namespace_selector: None,
            object_selector: None,
            namespace: None,
            mode: GateMode::Protect,
            context_aware_resources: BTreeSet::new(),
            timeout: None,
            origin: format!("--policy {module}"),
        }
    }

    /// Parses `MODULE[,settings=FILE]` (the settings file is YAML or JSON).
    pub fn from_flag(flag: &str) -> Result<PolicySpec, GateError> {
        let bad = |detail: String| GateError::Flag {
            flag: flag.to_string(),
            detail,
        };
        let (module, settings) = match flag.rfind(",settings=") {
            Some(at) => {
                let (module, rest) = flag.split_at(at);
                (module, rest.strip_prefix(",settings="))
            }
            None => (flag, None),
        };
        if module.is_empty() {
            return Err(bad(
                "no module: write --policy MODULE[,settings=FILE]".into()
            ));
        }
        let mut spec = PolicySpec::new(module);
        spec.origin = format!("--policy {flag}");
        if let Some(file) = settings {
            if file.is_empty() {
                return Err(bad(
                    "settings= needs a file (YAML or JSON): --policy MODULE,settings=FILE".into(),
                ));
            }
            let path = PathBuf::from(file);
            let text = std::fs::read_to_string(&path).map_err(|source| GateError::Read {
                what: "the settings file",
                path: path.clone(),
                source,
            })?;
            spec.settings = settings_value(&text)
                .map_err(|detail| bad(format!("the settings file {}: {detail}", path.display())))?;
            spec.settings_origin = format!("in {}", path.display());
        }
        Ok(spec)
    }
}

/// A policy's name from its module location: the last path segment without `.wasm`/`.gz`
/// (`oci://r/p/deny:v1` is `deny:v1`, `/x/deny.wasm` is `deny`).
pub fn short_name(module: &str) -> String {
    let path = module.split(['?', '#']).next().unwrap_or(module);
    let last = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(module);
    let last = last.strip_suffix(".gz").unwrap_or(last);
    last.strip_suffix(".wasm").unwrap_or(last).to_string()
}

fn settings_value(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(json!({}));
    }
    let value: Value = serde_saphyr::from_str(text).map_err(|e| format!("not YAML/JSON: {e}"))?;
    match value {
        Value::Null => Ok(json!({})),
        Value::Object(_) => Ok(value),
        other => Err(format!("settings must be a map, not {other}")),
    }
}

/// `spec` fields of Kubewarden's policies that hoist honours.
const SUPPORTED: &[&str] = &[
    "module",
    "settings",
    "rules",
    "mutating",
    "namespaceSelector",
    "objectSelector",
    "mode",
    "contextAwareResources",
    "timeoutSeconds",
];
/// `spec` fields that only concern the in-cluster deployment; accepted and ignored.
const IGNORED: &[&str] = &["policyServer", "backgroundAudit", "sideEffects"];

/// Reads a file of Kubewarden `ClusterAdmissionPolicy` / `AdmissionPolicy` manifests (a YAML
/// stream or a `List`). Fields hoist cannot honour are refused by name.
pub fn read_policies_file(path: &Path) -> Result<Vec<PolicySpec>, GateError> {
    let text = std::fs::read_to_string(path).map_err(|source| GateError::Read {
        what: "the policies file",
        path: path.to_path_buf(),
        source,
    })?;
    parse_policies(&text, &path.display().to_string())
}

/// Parses manifests (see [`read_policies_file`]); `file` names the source in messages.
pub fn parse_policies(text: &str, file: &str) -> Result<Vec<PolicySpec>, GateError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| GateError::Manifest {
        origin: file.to_string(),
        detail: format!("not valid YAML: {e}"),
    })?;
    let mut objects = Vec::new();
    for doc in docs {
        match doc {
            Value::Null => {}
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                if let Some(Value::Array(items)) = m.get("items") {
                    objects.extend(items.iter().cloned());
                }
            }
            other => objects.push(other),
        }
    }
    let mut specs = Vec::new();
    for (i, doc) in objects.into_iter().enumerate() {
        specs.push(policy_from_manifest(
            doc,
            &format!("{file}, document {}", i + 1),
        )?);
    }
    if specs.is_empty() {
        return Err(GateError::Manifest {
            origin: file.to_string(),
            detail: "no ClusterAdmissionPolicy or AdmissionPolicy in the file".into(),
        });
    }
    Ok(specs)
}

fn policy_from_manifest(doc: Value, origin: &str) -> Result<PolicySpec, GateError> {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let origin = format!("{origin} ({kind}/{name})");
    let bad = |detail: String| GateError::Manifest {
        origin: origin.clone(),
        detail,
    };
    let namespaced = match kind {
        "ClusterAdmissionPolicy" => false,
        "AdmissionPolicy" => true,
        "ClusterAdmissionPolicyGroup" | "AdmissionPolicyGroup" => {
            return Err(bad(format!(
                "{kind} is not supported by hoist's gate; list its policies as ClusterAdmissionPolicy/AdmissionPolicy manifests"
            )));
        }
        other => {
            return Err(bad(format!(
                "kind {other:?} is not a Kubewarden policy (ClusterAdmissionPolicy or AdmissionPolicy)"
            )));
        }
    };
    let api_version = doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !api_version.starts_with("policies.kubewarden.io/") {
        return Err(bad(format!(
            "apiVersion {api_version:?} is not policies.kubewarden.io/v1 (or v1alpha2)"
        )));
    }
    if name.is_empty() {
        return Err(bad("metadata.name is missing".into()));
    }
    let Some(Value::Object(spec)) = doc.get("spec") else {
        return Err(bad("spec is missing".into()));
    };
    for key in spec.keys() {
        if !SUPPORTED.contains(&key.as_str()) && !IGNORED.contains(&key.as_str()) {
            return Err(bad(format!(
                "spec.{key} is not supported by hoist's gate (supported: {}; ignored: {}); remove it",
                SUPPORTED.join(", "),
                IGNORED.join(", ")
            )));
        }
    }
    let module = spec
        .get("module")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("spec.module is missing".into()))?;
    let field = |key: &str| spec.get(key).filter(|v| !v.is_null());
    let mut out = PolicySpec::new(module);
    out.name = name.clone();
    out.origin = origin.clone();
    if let Some(settings) = field("settings") {
        if !settings.is_object() {
            return Err(bad("spec.settings must be a map".into()));
        }
        out.settings = settings.clone();
        out.settings_origin = format!("in spec.settings of {origin}");
    }
    let rules: Vec<GateRule> = match field("rules") {
        Some(r) => {
            serde_json::from_value(r.clone()).map_err(|e| bad(format!("spec.rules: {e}")))?
        }
        None => Vec::new(),
    };
    if rules.is_empty() {
        return Err(bad(
            "spec.rules is empty: the policy would see no request; list the resources and operations it checks".into(),
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        for (f, list) in [
            ("apiGroups", &rule.api_groups),
            ("apiVersions", &rule.api_versions),
            ("resources", &rule.resources),
            ("operations", &rule.operations),
        ] {
            if list.is_empty() {
                return Err(bad(format!("spec.rules[{i}].{f} must not be empty")));
            }
        }
        if let Some(scope) = &rule.scope
            && !matches!(scope.as_str(), "*" | "Cluster" | "Namespaced")
        {
            return Err(bad(format!(
                "spec.rules[{i}].scope {scope:?} must be *, Cluster or Namespaced"
            )));
        }
    }
    out.rules = Some(rules);
    if let Some(m) = field("mutating") {
        out.mutating = Some(
            m.as_bool()
                .ok_or_else(|| bad("spec.mutating must be true or false".into()))?,
        );
    } else {
        out.mutating = Some(false);
    }
    for (key, slot) in [
        ("namespaceSelector", &mut out.namespace_selector),
        ("objectSelector", &mut out.object_selector),
    ] {
        if let Some(v) = field(key) {
            let selector: LabelSelector =
                serde_json::from_value(v.clone()).map_err(|e| bad(format!("spec.{key}: {e}")))?;
            selector.check(&format!("spec.{key}")).map_err(bad)?;
            *slot = Some(selector);
        }
    }
    if namespaced && out.namespace_selector.is_some() {
        return Err(bad(
            "spec.namespaceSelector is not allowed in an AdmissionPolicy (it only sees its own namespace)".into(),
        ));
    }
    if let Some(m) = field("mode") {
        out.mode = serde_json::from_value(m.clone())
            .map_err(|_| bad(format!("spec.mode {m} must be protect or monitor")))?;
    }
    if let Some(c) = field("contextAwareResources") {
        if namespaced {
            return Err(bad(
                "spec.contextAwareResources is only allowed in a ClusterAdmissionPolicy".into(),
            ));
        }
        out.context_aware_resources = serde_json::from_value(c.clone())
            .map_err(|e| bad(format!("spec.contextAwareResources: {e}")))?;
    }
    if let Some(t) = field("timeoutSeconds") {
        let secs = t
            .as_u64()
            .filter(|s| (1..=30).contains(s))
            .ok_or_else(|| bad(format!("spec.timeoutSeconds {t} must be 1 to 30")))?;
        out.timeout = Some(Duration::from_secs(secs));
    }
    if namespaced {
        let ns = doc
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                bad("an AdmissionPolicy needs metadata.namespace (the namespace it guards)".into())
            })?;
        out.namespace = Some(ns.to_string());
    }
    Ok(out)
}

/// What the gate needs to know about the cluster: live objects (for UPDATE requests and
/// namespace labels) and resource names. [`Offline`] answers without a cluster.
pub trait ClusterView {
    /// The live object, `None` when it does not exist.
    fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, String>;

    /// The resource (plural name) of a type and whether it is namespaced; `None` when the
    /// cluster does not know the type.
    fn resource(&self, api_version: &str, kind: &str) -> Result<Option<(String, bool)>, String>;
}

/// No cluster: every object is new (CREATE), resource names are derived from kinds as
/// kubectl's fallback does, and well-known cluster-scoped kinds are cluster-scoped.
pub struct Offline;

const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "Node",
    "PersistentVolume",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "RuntimeClass",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "CSIDriver",
    "CSINode",
    "VolumeAttachment",
    "CertificateSigningRequest",
    "FlowSchema",
    "PriorityLevelConfiguration",
    "ClusterAdmissionPolicy",
    "ClusterIssuer",
];

/// The plural resource name of a kind, as kubectl guesses it without discovery.
pub fn guess_resource(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if lower.ends_with("ss")
        || lower.ends_with('x')
        || lower.ends_with("ch")
        || lower.ends_with("sh")
        || lower.ends_with('s')
    {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    }
}

impl ClusterView for Offline {
    fn get(&self, _: &str, _: &str, _: Option<&str>, _: &str) -> Result<Option<Value>, String> {
        Ok(None)
    }

    fn resource(&self, _api_version: &str, kind: &str) -> Result<Option<(String, bool)>, String> {
        Ok(Some((
            guess_resource(kind),
            !CLUSTER_SCOPED.contains(&kind),
        )))
    }
}

/// Who sends the requests (`userInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// The user name.
    pub username: String,
    /// Its groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Its uid, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// How the gate runs its policies.
#[derive(Clone)]
pub struct GateOptions {
    /// Limits of each evaluation (a manifest's `timeoutSeconds` overrides the timeout).
    pub limits: Limits,
    /// Answers the policies' external host calls (Kubernetes reads for the types a
    /// ClusterAdmissionPolicy lists in `contextAwareResources`); [`NoBackend`] refuses them.
    pub backend: Arc<dyn CapabilityBackend>,
    /// The namespace of namespaced objects that name none (the release namespace), as the
    /// API server would default it.
    pub default_namespace: Option<String>,
}

impl Default for GateOptions {
    fn default() -> Self {
        GateOptions {
            limits: Limits::default(),
            backend: Arc::new(NoBackend),
            default_namespace: None,
        }
    }
}

struct Loaded {
    spec: PolicySpec,
    policy: Policy,
    url: String,
    sha256: String,
    rules: Vec<GateRule>,
    mutating: bool,
}

/// Loaded policies, ready to admit objects.
pub struct Gate {
    policies: Vec<Loaded>,
    options: GateOptions,
}

/// A rejected object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    /// 1-based stage number.
    pub stage: usize,
    /// The object: `Kind/name` or `Kind/namespace/name` (`apiVersion` in [`Self::api_version`]).
    pub object: String,
    /// Its apiVersion.
    pub api_version: String,
    /// The policy that rejected it.
    pub policy: String,
    /// The policy's message.
    pub message: String,
    /// The code, when the policy gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (stage {}) rejected by policy {}: {}",
            self.object, self.stage, self.policy, self.message
        )?;
        if let Some(code) = self.code {
            write!(f, " (code {code})")?;
        }
        Ok(())
    }
}

/// A mutation applied to an object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mutation {
    /// The object (as in [`Rejection::object`]).
    pub object: String,
    /// The policy.
    pub policy: String,
    /// The JSON Patch it applied.
    pub patch: Value,
}

/// What the gate found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GateReport {
    /// Every rejection, in stage order (empty when everything is admitted).
    pub rejections: Vec<Rejection>,
    /// Every mutation applied, in order.
    pub mutations: Vec<Mutation>,
    /// Warnings: the policies' `warnings`, and monitor-mode rejections.
    pub warnings: Vec<String>,
    /// How many (object, policy) evaluations ran.
    pub evaluations: usize,
}

impl GateReport {
    /// Whether nothing was rejected.
    pub fn admitted(&self) -> bool {
        self.rejections.is_empty()
    }

    /// A message listing every rejection, one per line.
    pub fn rejection_message(&self) -> String {
        let mut out = format!(
            "the policy gate rejected {} object(s); nothing was applied:",
            self.rejections.len()
        );
        for r in &self.rejections {
            out.push_str("\n  - ");
            out.push_str(&r.to_string());
        }
        out
    }
}

/// One policy as recorded in the revision annotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateRecord {
    /// The policy's name.
    pub name: String,
    /// Its module URL.
    pub module: String,
    /// SHA-256 hex of the module.
    pub sha256: String,
    /// Its settings.
    pub settings: Value,
    /// `protect` or `monitor`.
    pub mode: GateMode,
}

fn object_label(object: &Value) -> String {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("?");
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    match object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
    {
        Some(ns) if !ns.is_empty() => format!("{kind}/{ns}/{name}"),
        _ => format!("{kind}/{name}"),
    }
}

fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The type of one object, as the admission request names it.
struct Target {
    group: String,
    version: String,
    kind: String,
    resource: String,
    namespaced: bool,
}

impl Gate {
    /// Loads every policy's module through `pipeline`, prepares it and checks its settings.
    pub fn load(
        specs: Vec<PolicySpec>,
        pipeline: &hoist_modules::ModulePipeline,
        options: GateOptions,
    ) -> Result<Gate, GateError> {
        let mut policies = Vec::with_capacity(specs.len());
        for spec in specs {
            let location = match spec.module.strip_prefix("registry://") {
                Some(rest) => format!("oci://{rest}"),
                None => spec.module.clone(),
            };
            let ready = pipeline
                .load(&location, hoist_modules::Digests::WithBytes)
                .map_err(|e| GateError::Load {
                    policy: spec.name.clone(),
                    module: spec.module.clone(),
                    detail: e.to_string(),
                })?;
            let what = format!("policy {}", spec.name);
            let meta = match &ready.wasm {
                Some(wasm) => {
                    metadata::read_metadata(wasm, &what).map_err(|source| GateError::Metadata {
                        policy: spec.name.clone(),
                        source,
                    })?
                }
                None => None,
            };
            let loaded = Self::prepare(
                spec,
                &ready.loaded.module,
                meta,
                ready.info.url.clone(),
                ready.info.sha256.to_string(),
                &options,
            )?;
            policies.push(loaded);
        }
        Ok(Gate { policies, options })
    }

    /// Adds a policy from an already compiled module (what [`Gate::load`] does per spec);
    /// `metadata` is the module's `io.kubewarden.metadata`, if any.
    pub fn from_modules(
        modules: Vec<(
            PolicySpec,
            wasmtime::Module,
            Option<metadata::Metadata>,
            String,
        )>,
        options: GateOptions,
    ) -> Result<Gate, GateError> {
        let mut policies = Vec::with_capacity(modules.len());
        for (spec, module, meta, sha256) in modules {
            let url = spec.module.clone();
            policies.push(Self::prepare(spec, &module, meta, url, sha256, &options)?);
        }
        Ok(Gate { policies, options })
    }

    fn prepare(
        spec: PolicySpec,
        module: &wasmtime::Module,
        meta: Option<metadata::Metadata>,
        url: String,
        sha256: String,
        options: &GateOptions,
    ) -> Result<Loaded, GateError> {
        let what = format!("policy {}", spec.name);
        let policy =
            Policy::new(module, meta, None, &what).map_err(|source| GateError::Policy {
                policy: spec.name.clone(),
                source,
            })?;
        let rules = match &spec.rules {
            Some(r) => r.clone(),
            None => policy
                .metadata()
                .map(|m| m.rules.iter().map(GateRule::from).collect())
                .unwrap_or_default(),
        };
        // `--policy` with an unannotated module: the user chose it, so its mutations apply.
        let mutating = spec
            .mutating
            .unwrap_or_else(|| policy.metadata().is_none_or(|m| m.mutating));
        let loaded = Loaded {
            spec,
            policy,
            url,
            sha256,
            rules,
            mutating,
        };
        let mut evaluator = loaded.evaluator(options)?;
        let verdict = evaluator.validate_settings(&loaded.spec.settings);
        if !verdict.valid {
            return Err(GateError::Settings {
                policy: loaded.spec.name.clone(),
                origin: loaded.spec.settings_origin.clone(),
                message: verdict
                    .message
                    .unwrap_or_else(|| "no message from the policy".into()),
            });
        }
        drop(evaluator);
        Ok(loaded)
    }

    /// The policies, as recorded in a revision ([`REVISION_ANNOTATION`]).
    pub fn records(&self) -> Vec<GateRecord> {
        self.policies
            .iter()
            .map(|p| GateRecord {
                name: p.spec.name.clone(),
                module: p.url.clone(),
                sha256: p.sha256.clone(),
                settings: p.spec.settings.clone(),
                mode: p.spec.mode,
            })
            .collect()
    }

    /// The value of [`REVISION_ANNOTATION`]: [`Gate::records`] as compact JSON.
    pub fn annotation(&self) -> String {
        serde_json::to_string(&self.records()).unwrap_or_else(|_| "[]".into())
    }

    /// How many policies the gate holds.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether the gate holds no policy.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Sends every object of `stages` (in order) through the policies, as the API server
    /// would: mutating policies first, each seeing the previous one's result, then the
    /// validating ones. Mutations (from `protect` policies) are applied to the objects in
    /// place; every rejection is collected (the caller stops when [`GateReport::admitted`] is
    /// false). Errors are only for requests that cannot be built (a failed cluster lookup).
    pub fn admit(
        &self,
        stages: &mut [Vec<Value>],
        cluster: &dyn ClusterView,
        user: &UserInfo,
    ) -> Result<GateReport, GateError> {
        let mut report = GateReport::default();
        let mut evaluators: Vec<Option<Evaluator<'_>>> =
            self.policies.iter().map(|_| None).collect();
        // Labels of namespaces the release itself creates (the API server would see them live
        // by the time the objects inside them are admitted).
        let mut own_namespaces: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for object in stages.iter().flatten() {
            if object.get("kind").and_then(Value::as_str) == Some("Namespace")
                && object.get("apiVersion").and_then(Value::as_str) == Some("v1")
                && let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str)
            {
                own_namespaces.insert(name.to_string(), labels_of(object));
            }
        }
        // Types whose CRD is in the release (not served yet when the gate runs).
        let mut own_types: BTreeMap<(String, String), (String, bool)> = BTreeMap::new();
        for object in stages.iter().flatten() {
            if object.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition")
                && let Some(spec) = object.get("spec")
            {
                let text = |p: &str| spec.pointer(p).and_then(Value::as_str).unwrap_or_default();
                let namespaced = text("/scope") == "Namespaced";
                for version in spec
                    .get("versions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let v = version
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    own_types.insert(
                        (
                            format!("{}/{v}", text("/group")),
                            text("/names/kind").to_string(),
                        ),
                        (text("/names/plural").to_string(), namespaced),
                    );
                }
            }
        }
        let mut live_namespaces: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut uid = 0usize;
        for (stage_index, stage) in stages.iter_mut().enumerate() {
            for object in stage.iter_mut() {
                let mut label = object_label(object);
                let lookup = |detail: String| GateError::Lookup {
                    object: label.clone(),
                    detail,
                };
                let api_version = object
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let kind = object
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let name = object
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let (group, version) = match api_version.split_once('/') {
                    Some((g, v)) => (g.to_string(), v.to_string()),
                    None => (String::new(), api_version.clone()),
                };
                let known = match own_types.get(&(api_version.clone(), kind.clone())) {
                    Some(t) => Some(t.clone()),
                    None => cluster.resource(&api_version, &kind).map_err(lookup)?,
                };
                let (resource, namespaced) = known.unwrap_or_else(|| {
                    (
                        guess_resource(&kind),
                        object.pointer("/metadata/namespace").is_some(),
                    )
                });
                let target = Target {
                    group,
                    version,
                    kind: kind.clone(),
                    resource,
                    namespaced,
                };
                let namespace = if namespaced {
                    object
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .filter(|ns| !ns.is_empty())
                        .map(str::to_string)
                        .or_else(|| self.options.default_namespace.clone())
                } else {
                    None
                };
                if let Some(ns) = &namespace {
                    label = format!("{kind}/{ns}/{name}");
                }
                let label = label;
                let lookup = |detail: String| GateError::Lookup {
                    object: label.clone(),
                    detail,
                };
                let old = cluster
                    .get(&api_version, &kind, namespace.as_deref(), &name)
                    .map_err(lookup)?;
                let operation = if old.is_some() { "UPDATE" } else { "CREATE" };
                // Namespace labels for namespaceSelector.
                let ns_labels = match &namespace {
                    Some(ns) => {
                        if let Some(l) = own_namespaces.get(ns) {
                            Some(l.clone())
                        } else if let Some(l) = live_namespaces.get(ns) {
                            Some(l.clone())
                        } else {
                            let l = cluster
                                .get("v1", "Namespace", None, ns)
                                .map_err(lookup)?
                                .map(|n| labels_of(&n))
                                .unwrap_or_default();
                            live_namespaces.insert(ns.clone(), l.clone());
                            Some(l)
                        }
                    }
                    None if kind == "Namespace" && api_version == "v1" => Some(labels_of(object)),
                    None => None,
                };
                // Mutating policies first, then validating ones (the API server's order).
                let order: Vec<usize> = (0..self.policies.len())
                    .filter(|&i| self.policies.get(i).is_some_and(|p| p.mutating))
                    .chain(
                        (0..self.policies.len())
                            .filter(|&i| self.policies.get(i).is_some_and(|p| !p.mutating)),
                    )
                    .collect();
                for index in order {
                    let (Some(loaded), Some(slot)) =
                        (self.policies.get(index), evaluators.get_mut(index))
                    else {
                        continue;
                    };
                    if !loaded.applies(
                        &target,
                        operation,
                        namespace.as_deref(),
                        ns_labels.as_ref(),
                        object,
                    ) {
                        continue;
                    }
                    uid += 1;
                    let request = admission_request(
                        &format!("hoist-gate-{uid}"),
                        &target,
                        &name,
                        namespace.as_deref(),
                        operation,
                        user,
                        object,
                        old.as_ref(),
                    );
                    let evaluator = match slot {
                        Some(e) => e,
                        None => slot.insert(loaded.evaluator(&self.options)?),
                    };
                    report.evaluations += 1;
                    let response = evaluator.validate(&request, &loaded.spec.settings);
                    let policy = loaded.spec.name.clone();
                    for w in response.warnings.iter().flatten() {
                        report
                            .warnings
                            .push(format!("{label}: policy {policy}: {w}"));
                    }
                    let rejection = |message: String, code: Option<u16>| Rejection {
                        stage: stage_index + 1,
                        object: label.clone(),
                        api_version: api_version.clone(),
                        policy: policy.clone(),
                        message,
                        code,
                    };
                    let outcome = judge(&response, loaded.mutating, &policy);
                    match (outcome, loaded.spec.mode) {
                        (Verdict::Allowed, _) => {}
                        (Verdict::Rejected(message, code), GateMode::Protect) => {
                            report.rejections.push(rejection(message, code));
                        }
                        (Verdict::Rejected(message, _), GateMode::Monitor) => {
                            report.warnings.push(format!(
                                "{label}: policy {policy} (monitor mode) would reject it: {message}"
                            ));
                        }
                        (Verdict::Mutated(_), GateMode::Monitor) => {
                            report.warnings.push(format!(
                                "{label}: policy {policy} (monitor mode) would mutate it; not applied"
                            ));
                        }
                        (Verdict::Mutated(patch), GateMode::Protect) => {
                            let mut mutated = object.clone();
                            let applied =
                                serde_json::from_value::<json_patch::Patch>(patch.clone())
                                    .map_err(|e| e.to_string())
                                    .and_then(|p| {
                                        json_patch::patch(&mut mutated, &p)
                                            .map_err(|e| e.to_string())
                                    });
                            match applied {
                                Ok(()) if mutated.is_object() => {
                                    *object = mutated;
                                    report.mutations.push(Mutation {
                                        object: label.clone(),
                                        policy: policy.clone(),
                                        patch,
                                    });
                                }
                                Ok(()) => report.rejections.push(rejection(
                                    "the policy's mutation does not leave an object".into(),
                                    Some(500),
                                )),
                                Err(e) => report.rejections.push(rejection(
                                    format!("the policy's JSON Patch does not apply: {e}"),
                                    Some(500),
                                )),
                            }
                        }
                    }
                }
            }
        }
        Ok(report)
    }
}

enum Verdict {
    Allowed,
    Rejected(String, Option<u16>),
    Mutated(Value),
}

/// A response as the gate sees it: a patch from a non-mutating policy is a rejection, as
/// policy-server answers.
fn judge(response: &AdmissionResponse, mutating: bool, policy: &str) -> Verdict {
    if !response.allowed {
        let status = response.status.as_ref();
        let message = status
            .and_then(|s| s.message.clone())
            .unwrap_or_else(|| "rejected (the policy gave no message)".into());
        return Verdict::Rejected(message, status.and_then(|s| s.code));
    }
    match response.decoded_patch() {
        Some(_) if !mutating => Verdict::Rejected(
            format!(
                "Request rejected by policy {policy}. The policy attempted to mutate the request, but it is currently configured to not allow mutations."
            ),
            None,
        ),
        Some(patch) => Verdict::Mutated(patch),
        None if response.patch.is_some() => Verdict::Rejected(
            "the policy returned a patch that is not base64 JSON".into(),
            Some(500),
        ),
        None => Verdict::Allowed,
    }
}

impl Loaded {
    fn evaluator<'p>(&'p self, options: &GateOptions) -> Result<Evaluator<'p>, GateError> {
        let mut limits = options.limits;
        if let Some(t) = self.spec.timeout {
            limits.timeout = Some(t);
        }
        let host = HostCapabilities {
            granted: self.spec.context_aware_resources.clone(),
            backend: options.backend.clone(),
            policy: self.spec.name.clone(),
        };
        self.policy
            .evaluator(host, limits)
            .map_err(|source| GateError::Policy {
                policy: self.spec.name.clone(),
                source,
            })
    }

    fn applies(
        &self,
        target: &Target,
        operation: &str,
        namespace: Option<&str>,
        ns_labels: Option<&BTreeMap<String, String>>,
        object: &Value,
    ) -> bool {
        if let Some(own) = &self.spec.namespace
            && namespace != Some(own.as_str())
        {
            return false;
        }
        let rules_given = self.spec.rules.is_some() || !self.rules.is_empty();
        if rules_given && !self.rules.iter().any(|r| r.matches(target, operation)) {
            return false;
        }
        if let Some(selector) = &self.spec.object_selector
            && !selector.matches(&labels_of(object))
        {
            return false;
        }
        if let Some(selector) = &self.spec.namespace_selector {
            // Cluster-scoped objects other than Namespaces are never skipped.
            if let Some(labels) = ns_labels
                && !selector.matches(labels)
            {
                return false;
            }
        }
        true
    }
}

/// The AdmissionRequest the API server sends for `object`.
#[allow(clippy::too_many_arguments)]
fn admission_request(
    uid: &str,
    target: &Target,
    name: &str,
    namespace: Option<&str>,
    operation: &str,
    user: &UserInfo,
    object: &Value,
    old: Option<&Value>,
) -> ValidateRequest {
    let gvk = json!({"group": target.group, "version": target.version, "kind": target.kind});
    let gvr =
        json!({"group": target.group, "version": target.version, "resource": target.resource});
    let mut request = Map::new();
    request.insert("uid".into(), json!(uid));
    request.insert("kind".into(), gvk.clone());
    request.insert("resource".into(), gvr.clone());
    request.insert("requestKind".into(), gvk);
    request.insert("requestResource".into(), gvr);
    request.insert("name".into(), json!(name));
    if let Some(ns) = namespace {
        request.insert("namespace".into(), json!(ns));
    }
    request.insert("operation".into(), json!(operation));
    request.insert(
        "userInfo".into(),
        serde_json::to_value(user).unwrap_or(Value::Null),
    );
    request.insert("object".into(), object.clone());
    request.insert("oldObject".into(), old.cloned().unwrap_or(Value::Null));
    request.insert("dryRun".into(), json!(false));
    request.insert(
        "options".into(),
        json!({"apiVersion": "meta.k8s.io/v1", "kind": if operation == "CREATE" { "CreateOptions" } else { "UpdateOptions" }, "fieldManager": "yoke"}),
    );
    ValidateRequest::admission_request(Value::Object(request))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(group: &str, version: &str, kind: &str, namespaced: bool) -> Target {
        Target {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            resource: guess_resource(kind),
            namespaced,
        }
    }

    #[test]
    fn flags_parse_module_and_settings() {
        let dir = tempfile::tempdir().unwrap();
        let settings = dir.path().join("s.yaml");
        std::fs::write(&settings, "denied_names: [bad]\n").unwrap();
        let spec = PolicySpec::from_flag(&format!(
            "oci://127.0.0.1:5000/p:v1,settings={}",
            settings.display()
        ))
        .unwrap();
        assert_eq!(spec.module, "oci://127.0.0.1:5000/p:v1");
        assert_eq!(spec.name, "p:v1");
        assert_eq!(short_name("/a/b/deny.wasm.gz"), "deny");
        assert_eq!(short_name("https://h/x/deny.wasm?token=1"), "deny");
        assert_eq!(spec.settings, json!({"denied_names": ["bad"]}));
        assert_eq!(PolicySpec::from_flag("p.wasm").unwrap().settings, json!({}));
        let err = PolicySpec::from_flag("p.wasm,settings=")
            .unwrap_err()
            .to_string();
        assert!(err.contains("settings= needs a file"), "{err}");
        let err = PolicySpec::from_flag(",settings=x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no module"), "{err}");
        let err = PolicySpec::from_flag("p.wasm,settings=/nonexistent/s.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/s.yaml"), "{err}");
        std::fs::write(&settings, "[1, 2]\n").unwrap();
        let err = PolicySpec::from_flag(&format!("p.wasm,settings={}", settings.display()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be a map"), "{err}");
    }

    const MANIFESTS: &str = r#"
apiVersion: policies.kubewarden.io/v1
kind: ClusterAdmissionPolicy
metadata:
  name: no-bad-names
spec:
  module: registry://127.0.0.1:5000/hoist-test-wapc:v1
  policyServer: default
  mode: monitor
  mutating: true
  settings:
    denied_names: [bad]
  rules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      resources: ["configmaps"]
      operations: ["CREATE", "UPDATE"]
  namespaceSelector:
    matchExpressions:
      - {key: team, operator: In, values: [a, b]}
  objectSelector:
    matchLabels: {checked: "yes"}
---
apiVersion: policies.kubewarden.io/v1
kind: AdmissionPolicy
metadata:
  name: services
  namespace: demo
spec:
  module: file:///tmp/p.wasm
  timeoutSeconds: 3
  rules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      resources: ["services"]
      operations: ["*"]
"#;

    #[test]
    fn manifests_parse_and_unsupported_fields_are_named() {
        let specs = parse_policies(MANIFESTS, "p.yaml").unwrap();
        assert_eq!(specs.len(), 2);
        let cap = &specs[0];
        assert_eq!(cap.name, "no-bad-names");
        assert_eq!(cap.mode, GateMode::Monitor);
        assert_eq!(cap.mutating, Some(true));
        assert_eq!(cap.settings, json!({"denied_names": ["bad"]}));
        assert_eq!(cap.namespace, None);
        assert_eq!(
            cap.object_selector.as_ref().unwrap().match_labels["checked"],
            "yes"
        );
        let ap = &specs[1];
        assert_eq!(ap.namespace.as_deref(), Some("demo"));
        assert_eq!(ap.mutating, Some(false));
        assert_eq!(ap.timeout, Some(Duration::from_secs(3)));

        for (edit, expected) in [
            (
                ("  policyServer: default", "  matchConditions: []"),
                "spec.matchConditions is not supported",
            ),
            (
                ("  policyServer: default", "  failurePolicy: Ignore"),
                "spec.failurePolicy is not supported",
            ),
            (
                ("kind: AdmissionPolicy", "kind: AdmissionPolicyGroup"),
                "AdmissionPolicyGroup is not supported",
            ),
            (
                ("mode: monitor", "mode: audit"),
                "must be protect or monitor",
            ),
            (
                ("operator: In", "operator: Like"),
                "unknown operator \"Like\"",
            ),
            (("  namespace: demo\n", ""), "needs metadata.namespace"),
            (
                ("      operations: [\"*\"]", "      operations: []"),
                "operations must not be empty",
            ),
        ] {
            let text = MANIFESTS.replace(edit.0, edit.1);
            let err = parse_policies(&text, "p.yaml").unwrap_err().to_string();
            assert!(err.contains(expected), "{expected}: {err}");
            assert!(err.starts_with("p.yaml, document"), "{err}");
        }
        let err = parse_policies(
            "kind: ConfigMap\napiVersion: v1\nmetadata: {name: x}\n",
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not a Kubewarden policy"), "{err}");
        assert!(
            parse_policies("", "f")
                .unwrap_err()
                .to_string()
                .contains("no ClusterAdmissionPolicy")
        );
    }

    #[test]
    fn rules_and_selectors_match_as_the_api_server_does() {
        let rule = GateRule {
            api_groups: vec!["".into()],
            api_versions: vec!["v1".into()],
            resources: vec!["configmaps".into()],
            operations: vec!["CREATE".into()],
            scope: Some("Namespaced".into()),
        };
        assert!(rule.matches(&target("", "v1", "ConfigMap", true), "CREATE"));
        assert!(!rule.matches(&target("", "v1", "ConfigMap", true), "UPDATE"));
        assert!(!rule.matches(&target("apps", "v1", "Deployment", true), "CREATE"));
        assert!(!rule.matches(&target("", "v1", "ConfigMap", false), "CREATE"));
        let all = GateRule {
            api_groups: vec!["*".into()],
            api_versions: vec!["*".into()],
            resources: vec!["*/*".into()],
            operations: vec!["*".into()],
            scope: None,
        };
        assert!(all.matches(&target("apps", "v1", "Deployment", true), "UPDATE"));

        let labels: BTreeMap<String, String> = [("team".to_string(), "a".to_string())]
            .into_iter()
            .collect();
        let sel = |yaml: &str| -> LabelSelector { serde_saphyr::from_str(yaml).unwrap() };
        assert!(sel("matchLabels: {team: a}").matches(&labels));
        assert!(!sel("matchLabels: {team: b}").matches(&labels));
        assert!(sel("matchExpressions: [{key: team, operator: In, values: [a]}]").matches(&labels));
        assert!(
            !sel("matchExpressions: [{key: team, operator: NotIn, values: [a]}]").matches(&labels)
        );
        assert!(sel("matchExpressions: [{key: x, operator: DoesNotExist}]").matches(&labels));
        assert!(!sel("matchExpressions: [{key: x, operator: Exists}]").matches(&labels));
        assert!(LabelSelector::default().matches(&BTreeMap::new()));
    }

    #[test]
    fn offline_resources_follow_kubectl() {
        assert_eq!(guess_resource("ConfigMap"), "configmaps");
        assert_eq!(guess_resource("Ingress"), "ingresses");
        assert_eq!(guess_resource("NetworkPolicy"), "networkpolicies");
        assert_eq!(guess_resource("Gateway"), "gateways");
        assert_eq!(
            Offline.resource("v1", "Namespace").unwrap(),
            Some(("namespaces".into(), false))
        );
        assert_eq!(
            Offline.resource("apps/v1", "Deployment").unwrap(),
            Some(("deployments".into(), true))
        );
    }

    #[test]
    fn requests_carry_what_the_api_server_sends() {
        let user = UserInfo {
            username: "admin".into(),
            groups: vec!["system:masters".into()],
            uid: None,
        };
        let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "d"}});
        let old = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "d"}, "data": {"a": "b"}});
        let r = admission_request(
            "u",
            &target("", "v1", "ConfigMap", true),
            "c",
            Some("d"),
            "UPDATE",
            &user,
            &object,
            Some(&old),
        );
        let v = r.value();
        assert_eq!(v["operation"], "UPDATE");
        assert_eq!(
            v["resource"],
            json!({"group": "", "version": "v1", "resource": "configmaps"})
        );
        assert_eq!(v["kind"]["kind"], "ConfigMap");
        assert_eq!(v["namespace"], "d");
        assert_eq!(v["userInfo"]["username"], "admin");
        assert_eq!(v["oldObject"], old);
        assert_eq!(v["options"]["kind"], "UpdateOptions");
        assert_eq!(r.original_object(), Some(&object));
    }
}
