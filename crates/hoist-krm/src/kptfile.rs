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
}
