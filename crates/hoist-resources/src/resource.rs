//! One Kubernetes object, and ordered stages of them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// A Kubernetes object: a JSON object that has at least a non-empty string `kind`.
///
/// The object is kept as the flight wrote it (field order preserved); accessors read the
/// well-known fields without assuming anything else about the shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Resource(Map<String, Value>);

/// Why a JSON value is not a [`Resource`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// The value is not a JSON object (a string, number, array, ...).
    #[error("expected an object, found {found}")]
    NotAnObject {
        /// The JSON type that was found instead.
        found: &'static str,
    },
    /// The object has no `kind`, or its `kind` is not a non-empty string.
    #[error("object has no `kind`{}", name.as_deref().map(|n| format!(" (metadata.name {n:?})")).unwrap_or_default())]
    MissingKind {
        /// `metadata.name`, when the object has one, to help find it.
        name: Option<String>,
    },
}

impl Resource {
    /// Checks that `value` is an object with a `kind` and wraps it.
    pub fn from_value(value: Value) -> Result<Self, ResourceError> {
        match value {
            Value::Object(map) => Self::from_map(map),
            other => Err(ResourceError::NotAnObject {
                found: json_type_name(&other),
            }),
        }
    }

    /// Checks that `map` has a `kind` and wraps it.
    pub fn from_map(map: Map<String, Value>) -> Result<Self, ResourceError> {
        match map.get("kind") {
            Some(Value::String(kind)) if !kind.is_empty() => Ok(Resource(map)),
            _ => {
                let name = map
                    .get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                Err(ResourceError::MissingKind { name })
            }
        }
    }

    /// The object's `kind`.
    pub fn kind(&self) -> &str {
        self.0.get("kind").and_then(Value::as_str).unwrap_or("")
    }

    /// The object's `apiVersion` (`group/version`, or `version` for the core group), or `""`.
    pub fn api_version(&self) -> &str {
        self.0
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The API group: the part of `apiVersion` before `/`, `""` for the core group.
    pub fn group(&self) -> &str {
        self.api_version()
            .split_once('/')
            .map(|(group, _)| group)
            .unwrap_or("")
    }

    /// The API version without the group (`v1` in `apps/v1`).
    pub fn version(&self) -> &str {
        let api_version = self.api_version();
        api_version
            .split_once('/')
            .map(|(_, version)| version)
            .unwrap_or(api_version)
    }

    /// `metadata.name`, or `""` when absent.
    pub fn name(&self) -> &str {
        self.metadata_str("name").unwrap_or("")
    }

    /// `metadata.namespace`, if set and non-empty.
    pub fn namespace(&self) -> Option<&str> {
        self.metadata_str("namespace").filter(|ns| !ns.is_empty())
    }

    /// Sets `metadata.namespace` (creating `metadata` when needed).
    pub fn set_namespace(&mut self, namespace: &str) {
        self.metadata_mut()
            .insert("namespace".into(), Value::String(namespace.into()));
    }

    /// `metadata`, created empty if it was missing or not an object.
    pub fn metadata_mut(&mut self) -> &mut Map<String, Value> {
        let entry = self
            .0
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        match entry {
            Value::Object(map) => map,
            _ => unreachable!("metadata was just made an object"),
        }
    }

    /// Is this a core/v1 Namespace?
    pub fn is_namespace(&self) -> bool {
        self.kind() == "Namespace" && self.group().is_empty()
    }

    /// Is this an `apiextensions.k8s.io` CustomResourceDefinition?
    pub fn is_crd(&self) -> bool {
        self.kind() == "CustomResourceDefinition" && self.group() == "apiextensions.k8s.io"
    }

    /// The identity of the object within a release: group, kind, namespace and name
    /// (the version is ignored, as Yoke does when it matches revisions for pruning).
    pub fn key(&self) -> ResourceKey {
        ResourceKey {
            group: self.group().to_owned(),
            kind: self.kind().to_owned(),
            namespace: self.namespace().map(str::to_owned),
            name: self.name().to_owned(),
        }
    }

    /// The object as a JSON map.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The object as a mutable JSON map. Callers must keep `kind` a non-empty string.
    pub fn as_map_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.0
    }

    /// Unwraps into the JSON map.
    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }

    /// Unwraps into a JSON value.
    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }

    fn metadata_str(&self, field: &str) -> Option<&str> {
        self.0.get("metadata")?.get(field)?.as_str()
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = Map::<String, Value>::deserialize(deserializer)?;
        Resource::from_map(map).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Resource {
    /// `Kind/name` or `Kind/namespace/name`, for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.namespace() {
            Some(ns) => write!(f, "{}/{}/{}", self.kind(), ns, self.name()),
            None => write!(f, "{}/{}", self.kind(), self.name()),
        }
    }
}

/// Identity of an object within a release (group, kind, namespace, name; not the version).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    /// API group, `""` for the core group.
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace, `None` for cluster-scoped objects (or namespaced ones not yet defaulted).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        };
        match &self.namespace {
            Some(ns) => write!(f, "{kind} {ns}/{}", self.name),
            None => write!(f, "{kind} {}", self.name),
        }
    }
}

/// One stage: objects applied together (in parallel) before the next stage starts.
pub type Stage = Vec<Resource>;

/// Ordered stages of objects: Yoke's `[][]object`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Stages(pub Vec<Stage>);

impl Stages {
    /// Splits each stage's Namespaces and CustomResourceDefinitions into a stage of their own
    /// placed right before it, so they exist (and can be waited for) before the objects that
    /// need them. Relative order within each part is kept; empty stages are dropped.
    pub fn with_prestages(self) -> Stages {
        let mut out = Vec::with_capacity(self.0.len() * 2);
        for stage in self.0 {
            let (pre, rest): (Vec<_>, Vec<_>) = stage
                .into_iter()
                .partition(|r| r.is_namespace() || r.is_crd());
            if !pre.is_empty() {
                out.push(pre);
            }
            if !rest.is_empty() {
                out.push(rest);
            }
        }
        Stages(out)
    }

    /// All objects, in stage order.
    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        self.0.iter().flatten()
    }

    /// All objects, mutably, in stage order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Resource> {
        self.0.iter_mut().flatten()
    }

    /// Number of objects across all stages.
    pub fn resource_count(&self) -> usize {
        self.0.iter().map(Vec::len).sum()
    }

    /// True when there is no object at all.
    pub fn is_empty(&self) -> bool {
        self.resource_count() == 0
    }
}

pub(crate) fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn res(v: Value) -> Resource {
        Resource::from_value(v).expect("valid resource")
    }

    #[test]
    fn accessors_read_well_known_fields() {
        let r = res(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "prod"}}));
        assert_eq!(r.group(), "apps");
        assert_eq!(r.version(), "v1");
        assert_eq!(r.name(), "web");
        assert_eq!(r.namespace(), Some("prod"));
        assert_eq!(r.to_string(), "Deployment/prod/web");
        let core = res(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}));
        assert_eq!(core.group(), "");
        assert_eq!(core.version(), "v1");
        assert!(core.is_namespace());
    }

    #[test]
    fn kind_is_required_and_named_in_the_error() {
        let err = Resource::from_value(json!({"metadata": {"name": "x"}})).unwrap_err();
        assert_eq!(
            err,
            ResourceError::MissingKind {
                name: Some("x".into())
            }
        );
        assert!(err.to_string().contains("\"x\""));
        assert!(Resource::from_value(json!({"kind": ""})).is_err());
        assert!(Resource::from_value(json!({"kind": 3})).is_err());
        assert!(matches!(
            Resource::from_value(json!([1])),
            Err(ResourceError::NotAnObject { .. })
        ));
    }

    #[test]
    fn set_namespace_repairs_metadata() {
        let mut r = res(json!({"kind": "ConfigMap", "metadata": "oops"}));
        r.set_namespace("ns");
        assert_eq!(r.namespace(), Some("ns"));
    }

    #[test]
    fn prestages_split_namespaces_and_crds_before_each_stage() {
        let ns = res(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}));
        let crd = res(json!({"apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition", "metadata": {"name": "b"}}));
        let cm = res(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}));
        // A "Namespace" from another group is not a core Namespace.
        let fake_ns =
            res(json!({"apiVersion": "x.io/v1", "kind": "Namespace", "metadata": {"name": "d"}}));
        let stages = Stages(vec![
            vec![cm.clone(), ns.clone(), fake_ns.clone()],
            vec![crd.clone()],
            vec![],
        ]);
        let split = stages.with_prestages();
        assert_eq!(
            split.0,
            vec![vec![ns], vec![cm, fake_ns], vec![crd]],
            "pre-stage first, then the rest; empty stages dropped"
        );
        assert_eq!(split.resource_count(), 4);
    }

    #[test]
    fn key_ignores_version() {
        let a =
            res(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w"}}));
        let b = res(
            json!({"apiVersion": "apps/v1beta1", "kind": "Deployment", "metadata": {"name": "w"}}),
        );
        assert_eq!(a.key(), b.key());
        assert_eq!(a.key().to_string(), "Deployment.apps w");
    }
}
