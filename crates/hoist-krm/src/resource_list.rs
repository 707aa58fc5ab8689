//! The KRM functions ResourceList (`config.kubernetes.io/v1`), results, and the annotations kpt
//! uses to track where each item came from.

use serde_json::{Map, Value};

/// `apiVersion` of a ResourceList.
pub const RESOURCE_LIST_API_VERSION: &str = "config.kubernetes.io/v1";

/// kpt's path annotation (relative, slash-separated file path within the package).
pub const PATH: &str = "internal.config.kubernetes.io/path";
/// kpt's index annotation (document index within the file).
pub const INDEX: &str = "internal.config.kubernetes.io/index";
/// The legacy path annotation kyaml also writes.
pub const LEGACY_PATH: &str = "config.kubernetes.io/path";
/// The legacy index annotation kyaml also writes.
pub const LEGACY_INDEX: &str = "config.kubernetes.io/index";
/// The id kyaml numbers function inputs with.
pub const ID: &str = "internal.config.kubernetes.io/id";
/// The legacy id annotation.
pub const LEGACY_ID: &str = "config.k8s.io/id";
/// Sequence indentation of the source file (`compact` or `wide`).
pub const SEQ_INDENT: &str = "internal.config.kubernetes.io/seqindent";
/// Absolute package directory of an item during render.
pub const PACKAGE_PATH: &str = "internal.config.kubernetes.io/package-path";
/// The annotation marking resources that are not applied to a cluster.
pub const LOCAL_CONFIG: &str = "config.kubernetes.io/local-config";

/// Why a ResourceList could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ResourceListError {
    /// Not YAML (or JSON) at all.
    #[error("the output is not valid YAML: {0}")]
    Yaml(String),
    /// YAML, but not a ResourceList.
    #[error("the output is not a ResourceList (kind {kind:?}, apiVersion {api_version:?})")]
    NotResourceList {
        /// The kind found.
        kind: String,
        /// The apiVersion found.
        api_version: String,
    },
    /// `items` holds something other than objects.
    #[error("ResourceList.items[{0}] is not an object")]
    BadItem(usize),
}

/// A ResourceList.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceList {
    /// The KRM objects.
    pub items: Vec<Value>,
    /// The function's configuration, if any.
    pub function_config: Option<Value>,
    /// Results a function reported.
    pub results: Vec<FnResult>,
}

/// One structured result of a function.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FnResult {
    /// The message (required by the spec).
    pub message: String,
    /// `error`, `warning`, `info`, or empty (printed as info).
    pub severity: String,
    /// The object the result is about: apiVersion, kind, name, namespace.
    pub resource_ref: Option<ResourceRef>,
    /// The field the result is about.
    pub field: Option<Value>,
    /// The file the result is about.
    pub file: Option<Value>,
    /// Free-form tags.
    pub tags: Option<Value>,
}

/// What a result points at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceRef {
    /// apiVersion.
    pub api_version: String,
    /// kind.
    pub kind: String,
    /// metadata.name.
    pub name: String,
    /// metadata.namespace.
    pub namespace: String,
}

fn s(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or_default().to_string()
}

impl FnResult {
    /// Reads a result in the current shape or kpt's two legacy shapes
    /// (`resourceRef.metadata.{name,namespace}`, `field.suggestedValue`).
    pub fn from_value(v: &Value) -> FnResult {
        let resource_ref = v.get("resourceRef").map(|r| {
            let meta = r.get("metadata");
            ResourceRef {
                api_version: s(r.get("apiVersion")),
                kind: s(r.get("kind")),
                name: s(r.get("name").or_else(|| meta.and_then(|m| m.get("name")))),
                namespace: s(r
                    .get("namespace")
                    .or_else(|| meta.and_then(|m| m.get("namespace")))),
            }
        });
        let field = v.get("field").map(|f| {
            let mut f = f.clone();
            if let Some(obj) = f.as_object_mut()
                && !obj.contains_key("proposedValue")
                && let Some(sv) = obj.remove("suggestedValue")
            {
                obj.insert("proposedValue".into(), sv);
            }
            f
        });
        FnResult {
            message: s(v.get("message")),
            severity: s(v.get("severity")),
            resource_ref,
            field,
            file: v.get("file").cloned(),
            tags: v.get("tags").cloned(),
        }
    }

    /// The result as an object, in the field order kpt writes.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("message".into(), Value::String(self.message.clone()));
        if !self.severity.is_empty() {
            m.insert("severity".into(), Value::String(self.severity.clone()));
        }
        if let Some(r) = &self.resource_ref {
            let mut rm = Map::new();
            for (k, v) in [
                ("apiVersion", &r.api_version),
                ("kind", &r.kind),
                ("name", &r.name),
                ("namespace", &r.namespace),
            ] {
                if !v.is_empty() {
                    rm.insert(k.into(), Value::String(v.clone()));
                }
            }
            m.insert("resourceRef".into(), Value::Object(rm));
        }
        if let Some(f) = &self.field {
            m.insert("field".into(), f.clone());
        }
        if let Some(f) = &self.file {
            m.insert("file".into(), f.clone());
        }
        if let Some(t) = &self.tags {
            m.insert("tags".into(), t.clone());
        }
        Value::Object(m)
    }

    /// Whether this is an error result.
    pub fn is_error(&self) -> bool {
        self.severity == "error"
    }

    /// kpt's one-line rendering: `[sev] apiVersion/kind/namespace/name field.path: message`.
    pub fn display_line(&self) -> String {
        let sev = if self.severity.is_empty() {
            "info"
        } else {
            &self.severity
        };
        let mut line = format!("[{sev}]");
        if let Some(r) = &self.resource_ref {
            let parts: Vec<&str> = [&r.api_version, &r.kind, &r.namespace, &r.name]
                .into_iter()
                .map(String::as_str)
                .filter(|p| !p.is_empty())
                .collect();
            if !parts.is_empty() {
                line.push(' ');
                line.push_str(&parts.join("/"));
            }
        }
        if let Some(path) = self
            .field
            .as_ref()
            .and_then(|f| f.get("path"))
            .and_then(Value::as_str)
        {
            line.push(' ');
            line.push_str(path);
        }
        line.push_str(": ");
        line.push_str(&self.message);
        line
    }
}

impl ResourceList {
    /// Parses a ResourceList from YAML or JSON text.
    pub fn parse(text: &str) -> Result<ResourceList, ResourceListError> {
        let v: Value = crate::yaml::parse_one(text).map_err(ResourceListError::Yaml)?;
        ResourceList::from_value(&v)
    }

    /// Reads a ResourceList from a parsed document.
    pub fn from_value(v: &Value) -> Result<ResourceList, ResourceListError> {
        let kind = s(v.get("kind"));
        let api_version = s(v.get("apiVersion"));
        if kind != "ResourceList" {
            return Err(ResourceListError::NotResourceList { kind, api_version });
        }
        let mut items = Vec::new();
        if let Some(list) = v.get("items").and_then(Value::as_array) {
            for (i, item) in list.iter().enumerate() {
                if !item.is_object() {
                    return Err(ResourceListError::BadItem(i));
                }
                items.push(item.clone());
            }
        }
        let function_config = v.get("functionConfig").filter(|c| !c.is_null()).cloned();
        let results = match v.get("results") {
            Some(Value::Array(rs)) => rs.iter().map(FnResult::from_value).collect(),
            // The old Go SDK wrapped results in {items: [...]}.
            Some(Value::Object(o)) => o
                .get("items")
                .and_then(Value::as_array)
                .map(|rs| rs.iter().map(FnResult::from_value).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        Ok(ResourceList {
            items,
            function_config,
            results,
        })
    }

    /// The ResourceList as a document (apiVersion, kind, items, functionConfig, results).
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "apiVersion".into(),
            Value::String(RESOURCE_LIST_API_VERSION.into()),
        );
        m.insert("kind".into(), Value::String("ResourceList".into()));
        m.insert("items".into(), Value::Array(self.items.clone()));
        if let Some(fc) = &self.function_config {
            m.insert("functionConfig".into(), fc.clone());
        }
        if !self.results.is_empty() {
            m.insert(
                "results".into(),
                Value::Array(self.results.iter().map(FnResult::to_value).collect()),
            );
        }
        Value::Object(m)
    }

    /// The ResourceList as YAML.
    pub fn to_yaml(&self) -> String {
        crate::yaml::emit(&self.to_value())
    }
}

/// The annotations of an object (empty when it has none).
pub fn annotations(obj: &Value) -> Map<String, Value> {
    obj.get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// One annotation's value.
pub fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.get("metadata")?.get("annotations")?.get(key)?.as_str()
}

/// Sets an annotation, creating `metadata.annotations` as needed.
pub fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    let Some(o) = obj.as_object_mut() else {
        return;
    };
    let meta = o
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let ann = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if !ann.is_object() {
        *ann = Value::Object(Map::new());
    }
    if let Some(ann) = ann.as_object_mut() {
        ann.insert(key.into(), Value::String(value.into()));
    }
}

/// Removes annotations; drops an emptied `annotations` map (and an emptied `metadata`), as
/// kyaml does.
pub fn remove_annotations(obj: &mut Value, keys: &[&str]) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let mut emptied = false;
    if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        let before = ann.len();
        for k in keys {
            ann.shift_remove(*k);
        }
        emptied = ann.is_empty() && before > 0;
    }
    if emptied {
        meta.shift_remove("annotations");
    }
    if meta.is_empty()
        && let Some(o) = obj.as_object_mut()
    {
        o.shift_remove("metadata");
    }
}

/// `metadata.name`, `kind`, ... helpers.
pub fn field<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut v = obj;
    for p in path {
        v = v.get(*p)?;
    }
    v.as_str()
}

/// A short reference for messages: `kind/name` (with namespace when set).
pub fn describe(obj: &Value) -> String {
    let kind = field(obj, &["kind"]).unwrap_or("?");
    let name = field(obj, &["metadata", "name"]).unwrap_or("?");
    match field(obj, &["metadata", "namespace"]) {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_results_in_all_shapes() {
        let rl = ResourceList::parse(
            "apiVersion: config.kubernetes.io/v1\nkind: ResourceList\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: a\nresults:\n- message: hi\n  severity: info\n  resourceRef:\n    apiVersion: v1\n    kind: ConfigMap\n    metadata:\n      name: a\n      namespace: ns\n  field:\n    path: data.x\n    suggestedValue: y\n",
        )
        .unwrap();
        assert_eq!(rl.items.len(), 1);
        assert_eq!(rl.results.len(), 1);
        let r = &rl.results[0];
        assert_eq!(r.resource_ref.as_ref().unwrap().name, "a");
        assert_eq!(r.resource_ref.as_ref().unwrap().namespace, "ns");
        // A bare `y` stays a string (YAML 1.2 core, as kpt's Go YAML reads it).
        assert_eq!(r.field.as_ref().unwrap()["proposedValue"], json!("y"));
        assert_eq!(r.display_line(), "[info] v1/ConfigMap/ns/a data.x: hi");

        let wrapped = ResourceList::parse(
            "kind: ResourceList\nitems: []\nresults:\n  items:\n  - message: old\n    severity: error\n",
        )
        .unwrap();
        assert!(wrapped.results[0].is_error());
        assert_eq!(wrapped.results[0].display_line(), "[error]: old");
    }

    #[test]
    fn rejects_non_resource_lists() {
        let e = ResourceList::parse("kind: ConfigMap\napiVersion: v1\n").unwrap_err();
        assert!(e.to_string().contains("not a ResourceList"), "{e}");
        let e = ResourceList::parse("items: [\n").unwrap_err();
        assert!(matches!(e, ResourceListError::Yaml(_)), "{e}");
        let e = ResourceList::parse("kind: ResourceList\nitems: [1]\n").unwrap_err();
        assert!(matches!(e, ResourceListError::BadItem(0)));
    }

    #[test]
    fn annotation_helpers_clean_up_empty_maps() {
        let mut o = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}});
        set_annotation(&mut o, PATH, "a.yaml");
        assert_eq!(annotation(&o, PATH), Some("a.yaml"));
        remove_annotations(&mut o, &[PATH]);
        assert_eq!(
            o,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}})
        );
    }
}
