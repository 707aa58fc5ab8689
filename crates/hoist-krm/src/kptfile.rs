//! The Kptfile's pipeline (`pipeline.mutators` / `pipeline.validators`).

use crate::selector::Selector;
use serde_json::{Map, Value};

/// One pipeline entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FunctionSpec {
    /// `image:` (an OCI reference or a short catalog name).
    pub image: Option<String>,
    /// `exec:` (a local program or `.wasm` path, relative to the package).
    pub exec: Option<String>,
    /// `configPath:` (package-relative path of a resource used as functionConfig).
    pub config_path: Option<String>,
    /// `configMap:` (becomes ConfigMap `function-input`).
    pub config_map: Option<Map<String, Value>>,
    /// `name:`.
    pub name: Option<String>,
    /// `tag:` (a tag or semver constraint).
    pub tag: Option<String>,
    /// `selectors:`.
    pub selectors: Vec<Selector>,
    /// `exclude:`.
    pub exclude: Vec<Selector>,
}

impl FunctionSpec {
    /// What kpt prints for this function: the image, else the exec path.
    pub fn display(&self) -> String {
        self.image
            .clone()
            .or_else(|| self.exec.clone())
            .unwrap_or_default()
    }

    fn from_value(v: &Value) -> Result<FunctionSpec, String> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let sels = |k: &str| {
            v.get(k)
                .and_then(Value::as_array)
                .map(|a| a.iter().map(Selector::from_value).collect())
                .unwrap_or_default()
        };
        let spec = FunctionSpec {
            image: s("image").filter(|s| !s.is_empty()),
            exec: s("exec").filter(|s| !s.is_empty()),
            config_path: s("configPath").filter(|s| !s.is_empty()),
            config_map: v.get("configMap").and_then(Value::as_object).cloned(),
            name: s("name"),
            tag: s("tag"),
            selectors: sels("selectors"),
            exclude: sels("exclude"),
        };
        match (&spec.image, &spec.exec) {
            (None, None) => return Err("a function needs `image` or `exec`".into()),
            (Some(_), Some(_)) => {
                return Err("a function may have `image` or `exec`, not both".into());
            }
            _ => {}
        }
        if spec.config_path.is_some() && spec.config_map.is_some() {
            return Err("a function may have `configPath` or `configMap`, not both".into());
        }
        Ok(spec)
    }
}

/// A package's pipeline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pipeline {
    /// Mutators, in order.
    pub mutators: Vec<FunctionSpec>,
    /// Validators, in order.
    pub validators: Vec<FunctionSpec>,
}

impl Pipeline {
    /// Reads the pipeline of a parsed Kptfile.
    pub fn from_kptfile(kptfile: &Value) -> Result<Pipeline, String> {
        let list = |k: &str| -> Result<Vec<FunctionSpec>, String> {
            kptfile
                .get("pipeline")
                .and_then(|p| p.get(k))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .enumerate()
                        .map(|(i, f)| {
                            FunctionSpec::from_value(f)
                                .map_err(|e| format!("pipeline.{k}[{i}]: {e}"))
                        })
                        .collect()
                })
                .unwrap_or_else(|| Ok(Vec::new()))
        };
        Ok(Pipeline {
            mutators: list("mutators")?,
            validators: list("validators")?,
        })
    }

    /// How many functions.
    pub fn len(&self) -> usize {
        self.mutators.len() + self.validators.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The ConfigMap kpt builds from `configMap:` or `-- k=v` args.
pub fn config_map(data: &Map<String, Value>) -> Value {
    let data: Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), Value::String(v))
        })
        .collect();
    let mut m = Map::new();
    let mut meta = Map::new();
    meta.insert("name".into(), Value::String("function-input".into()));
    m.insert("metadata".into(), Value::Object(meta));
    m.insert("data".into(), Value::Object(data));
    m.insert("kind".into(), Value::String("ConfigMap".into()));
    m.insert("apiVersion".into(), Value::String("v1".into()));
    Value::Object(m)
}

/// Normalises a Kptfile the way kpt's rewrite does when render writes its status: every
/// `configMap` of the pipeline has its keys sorted and its values as strings (kpt's
/// `map[string]string`), and an empty `configMap: {}` is removed. (Needless quotes go away
/// because the file is written again.)
pub fn normalise(kptfile: &mut Value) {
    let Some(pipeline) = kptfile.get_mut("pipeline").and_then(Value::as_object_mut) else {
        return;
    };
    for list in ["mutators", "validators"] {
        let Some(fns) = pipeline.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for f in fns.iter_mut().filter_map(Value::as_object_mut) {
            let Some(cm) = f.get("configMap").and_then(Value::as_object) else {
                continue;
            };
            if cm.is_empty() {
                f.remove("configMap");
                continue;
            }
            let mut sorted: Vec<(String, Value)> = cm
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    (k.clone(), Value::String(v))
                })
                .collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            f.insert(
                "configMap".into(),
                Value::Object(sorted.into_iter().collect()),
            );
        }
    }
}

/// Replaces `status.conditions` and `status.renderStatus` of a Kptfile (keeping other status
/// fields), then [`normalise`]s it.
pub fn set_status(kptfile: &mut Value, status: &Map<String, Value>) {
    normalise(kptfile);
    let Some(obj) = kptfile.as_object_mut() else {
        return;
    };
    let entry = obj
        .entry("status")
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    if let Some(st) = entry.as_object_mut() {
        for (k, v) in status {
            st.insert(k.clone(), v.clone());
        }
    }
}

/// Adds `entry` (an `image:` or `exec:` pipeline function) to the Kptfile's
/// `pipeline.mutators` (or `validators`), as `kpt fn eval --save` does: an entry with the
/// same image (ignoring the tag) or the same exec is replaced in place, otherwise the entry is
/// appended. Returns whether an entry was replaced.
pub fn save_function(kptfile: &mut Value, validator: bool, entry: Map<String, Value>) -> bool {
    let list = if validator { "validators" } else { "mutators" };
    let Some(obj) = kptfile.as_object_mut() else {
        return false;
    };
    let pipeline = obj
        .entry("pipeline")
        .or_insert_with(|| Value::Object(Map::new()));
    if !pipeline.is_object() {
        *pipeline = Value::Object(Map::new());
    }
    let Some(pipeline) = pipeline.as_object_mut() else {
        return false;
    };
    let fns = pipeline
        .entry(list)
        .or_insert_with(|| Value::Array(Vec::new()));
    if !fns.is_array() {
        *fns = Value::Array(Vec::new());
    }
    let Some(fns) = fns.as_array_mut() else {
        return false;
    };
    let key = |m: &Value| -> Option<(bool, String)> {
        if let Some(i) = m.get("image").and_then(Value::as_str) {
            return Some((true, image_name(i).to_string()));
        }
        m.get("exec")
            .and_then(Value::as_str)
            .map(|e| (false, e.to_string()))
    };
    let entry = Value::Object(entry);
    let want = key(&entry);
    if let Some(slot) = fns.iter_mut().find(|f| want.is_some() && key(f) == want) {
        *slot = entry;
        return true;
    }
    fns.push(entry);
    false
}

/// An image reference without its tag or digest.
pub fn image_name(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let last_slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image.get(last_slash..).and_then(|tail| tail.rfind(':')) {
        Some(i) => image.get(..last_slash + i).unwrap_or(image),
        None => image,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_pipeline() {
        let k = crate::yaml::parse_one(
            "apiVersion: kpt.dev/v1\nkind: Kptfile\nmetadata:\n  name: app\npipeline:\n  mutators:\n  - image: set-namespace:v0.4\n    configMap:\n      namespace: prod\n    selectors:\n    - kind: ConfigMap\n  - exec: ./fn.wasm\n    configPath: fn-config.yaml\n  validators:\n  - image: kubeval\n",
        )
        .unwrap();
        let p = Pipeline::from_kptfile(&k).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p.mutators[0].display(), "set-namespace:v0.4");
        assert_eq!(
            p.mutators[0].selectors[0].kind.as_deref(),
            Some("ConfigMap")
        );
        assert_eq!(p.mutators[1].config_path.as_deref(), Some("fn-config.yaml"));
        let cm = config_map(p.mutators[0].config_map.as_ref().unwrap());
        assert_eq!(cm["data"]["namespace"], json!("prod"));
        let keys: Vec<&String> = cm.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["metadata", "data", "kind", "apiVersion"]);
        let bad = json!({"pipeline": {"mutators": [{"configMap": {}}]}});
        assert!(
            Pipeline::from_kptfile(&bad)
                .unwrap_err()
                .contains("mutators[0]")
        );
    }

    #[test]
    fn saves_functions_as_kpt_fn_eval_save() {
        let mut k =
            json!({"apiVersion": "kpt.dev/v1", "kind": "Kptfile", "metadata": {"name": "a"}});
        let entry = |image: &str, ns: &str| {
            let mut m = Map::new();
            m.insert("image".into(), json!(image));
            m.insert("configMap".into(), json!({"namespace": ns}));
            m
        };
        assert!(!save_function(
            &mut k,
            false,
            entry("set-namespace:v0.4.1", "a")
        ));
        assert!(!save_function(&mut k, true, entry("kubeval:v1", "x")));
        // Same image, another tag: replaced in place.
        assert!(save_function(
            &mut k,
            false,
            entry("set-namespace:v0.4.2", "b")
        ));
        let p = Pipeline::from_kptfile(&k).unwrap();
        assert_eq!(p.mutators.len(), 1);
        assert_eq!(p.mutators[0].image.as_deref(), Some("set-namespace:v0.4.2"));
        assert_eq!(p.validators.len(), 1);
        assert_eq!(
            image_name("127.0.0.1:5000/fns/x:v1"),
            "127.0.0.1:5000/fns/x"
        );
        assert_eq!(image_name("127.0.0.1:5000/fns/x"), "127.0.0.1:5000/fns/x");
        assert_eq!(image_name("x@sha256:ab"), "x");
    }

    #[test]
    fn normalises_as_kpts_rewrite() {
        let mut k = crate::yaml::parse_one(
            "apiVersion: kpt.dev/v1\nkind: Kptfile\nmetadata:\n  name: app\npipeline:\n  mutators:\n  - image: a\n    configMap:\n      z: \"prod\"\n      a: 3\n  - image: b\n    configMap: {}\n",
        )
        .unwrap();
        let mut status = Map::new();
        status.insert("conditions".into(), json!([{"type": "Rendered"}]));
        set_status(&mut k, &status);
        let text = crate::yaml::emit(&k);
        assert!(
            text.contains("    configMap:\n      a: \"3\"\n      z: prod\n  - image: b\n"),
            "{text}"
        );
        assert!(
            text.ends_with("status:\n  conditions:\n  - type: Rendered\n"),
            "{text}"
        );
    }
}
