//! Diffs between sets of objects (revisions, desired vs live), as unified text diffs of YAML
//! keyed by Yoke's canonical object names.

use hoist_resources::Resource;
use serde_json::{Map, Value};
use similar::TextDiff;
use std::collections::BTreeMap;

/// Yoke's canonical name of an object, lowercase: `namespace|_/group|core/version/kind/name`.
pub fn canonical(resource: &Resource) -> String {
    let group = if resource.group().is_empty() {
        "core"
    } else {
        resource.group()
    };
    format!(
        "{}/{}/{}/{}/{}",
        resource.namespace().unwrap_or("_"),
        group,
        resource.version(),
        resource.kind(),
        resource.name()
    )
    .to_lowercase()
}

/// Canonical name without the version (how revisions are matched for pruning).
pub fn canonical_without_version(resource: &Resource) -> String {
    let group = if resource.group().is_empty() {
        "core"
    } else {
        resource.group()
    };
    format!(
        "{}/{}/{}/{}",
        resource.namespace().unwrap_or("_"),
        group,
        resource.kind(),
        resource.name()
    )
    .to_lowercase()
}

/// A copy of `value` with every object's keys sorted (stable text for diffs).
pub fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for key in keys {
                out.insert(key.clone(), sorted(&map[key]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Objects keyed by canonical name, keys sorted, ready to render.
pub fn canonical_map<'a>(
    resources: impl IntoIterator<Item = &'a Resource>,
) -> BTreeMap<String, Value> {
    resources
        .into_iter()
        .map(|r| (canonical(r), sorted(&Value::Object(r.as_map().clone()))))
        .collect()
}

/// YAML text of a map of objects (`{}` when empty).
pub fn to_yaml(objects: &BTreeMap<String, Value>) -> String {
    if objects.is_empty() {
        return "{}\n".to_string();
    }
    let mut map = Map::new();
    for (k, v) in objects {
        map.insert(k.clone(), v.clone());
    }
    let mut out =
        serde_saphyr::to_string(&Value::Object(map)).unwrap_or_else(|e| format!("# {e}\n"));
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// A unified diff of two texts; empty when they are equal. With `color`, `+` lines are
/// green, `-` lines red and hunk headers cyan.
pub fn unified_diff(
    old_name: &str,
    old: &str,
    new_name: &str,
    new: &str,
    context: usize,
    color: bool,
) -> String {
    if old == new {
        return String::new();
    }
    let diff = TextDiff::from_lines(old, new);
    let text = diff
        .unified_diff()
        .context_radius(context)
        .header(old_name, new_name)
        .to_string();
    let mut text = text;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    if !color {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        let (start, end) = if line.starts_with("+++") || line.starts_with("---") {
            ("\x1b[1m", "\x1b[0m")
        } else if line.starts_with('+') {
            ("\x1b[32m", "\x1b[0m")
        } else if line.starts_with('-') {
            ("\x1b[31m", "\x1b[0m")
        } else if line.starts_with("@@") {
            ("\x1b[36m", "\x1b[0m")
        } else {
            ("", "")
        };
        let body = line.strip_suffix('\n').unwrap_or(line);
        out.push_str(start);
        out.push_str(body);
        out.push_str(end);
        if line.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// Fields turbulence never compares.
const IGNORED: &[&[&str]] = &[
    &["metadata", "generation"],
    &["metadata", "resourceVersion"],
    &["metadata", "uid"],
    &["metadata", "managedFields"],
    &["metadata", "creationTimestamp"],
    &["status"],
];

/// Removes fields turbulence ignores (generation, resourceVersion, uid, managedFields,
/// creationTimestamp, status).
pub fn drop_ignored(value: &mut Value) {
    for path in IGNORED {
        let mut current = &mut *value;
        for (i, key) in path.iter().enumerate() {
            let Value::Object(map) = current else { break };
            if i == path.len() - 1 {
                map.remove(*key);
                break;
            }
            match map.get_mut(*key) {
                Some(next) => current = next,
                None => break,
            }
        }
    }
}

/// Keeps only the parts of `actual` that `expected` has (server-defaulted fields and
/// fields set by others are not drift). Arrays are compared element by element.
pub fn remove_additions(expected: &Value, actual: &mut Value) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            a.retain(|k, _| e.contains_key(k));
            for (k, v) in a.iter_mut() {
                if let Some(ev) = e.get(k) {
                    remove_additions(ev, v);
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            for (ev, av) in e.iter().zip(a.iter_mut()) {
                remove_additions(ev, av);
            }
        }
        _ => {}
    }
}

/// The live object as turbulence compares it to `desired`: ignored fields dropped, only the
/// fields the desired object sets kept, keys sorted.
pub fn comparable_live(desired: &Value, live: &Value) -> Value {
    let mut desired = desired.clone();
    drop_ignored(&mut desired);
    let mut live = live.clone();
    drop_ignored(&mut live);
    remove_additions(&desired, &mut live);
    sorted(&live)
}

/// The desired object as turbulence compares it: ignored fields dropped, keys sorted.
pub fn comparable_desired(desired: &Value) -> Value {
    let mut desired = desired.clone();
    drop_ignored(&mut desired);
    sorted(&desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn res(v: Value) -> Resource {
        Resource::from_value(v).unwrap()
    }

    #[test]
    fn canonical_names_match_yoke() {
        let cm = res(
            json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"A","namespace":"ns"}}),
        );
        assert_eq!(canonical(&cm), "ns/core/v1/configmap/a");
        let crd = res(
            json!({"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"x.example.com"}}),
        );
        assert_eq!(
            canonical(&crd),
            "_/apiextensions.k8s.io/v1/customresourcedefinition/x.example.com"
        );
        assert_eq!(
            canonical_without_version(&crd),
            "_/apiextensions.k8s.io/customresourcedefinition/x.example.com"
        );
    }

    #[test]
    fn diff_is_empty_for_equal_and_ignores_key_order() {
        let a = res(
            json!({"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"a"},"data":{"x":"1","y":"2"}}),
        );
        let b = res(
            json!({"apiVersion":"v1","data":{"y":"2","x":"1"},"metadata":{"name":"a"},"kind":"ConfigMap"}),
        );
        let ya = to_yaml(&canonical_map([&a]));
        let yb = to_yaml(&canonical_map([&b]));
        assert_eq!(unified_diff("current", &ya, "next", &yb, 3, false), "");
        let c = res(
            json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"x":"1","y":"3"}}),
        );
        let yc = to_yaml(&canonical_map([&c]));
        let d = unified_diff("current", &ya, "next", &yc, 1, false);
        assert!(d.starts_with("--- current\n+++ next\n"), "{d}");
        assert!(
            d.contains("-    \"y\": \"2\"") && d.contains("+    \"y\": \"3\""),
            "{d}"
        );
        let colored = unified_diff("current", &ya, "next", &yc, 1, true);
        assert!(colored.contains("\x1b[32m+"), "{colored}");
    }

    #[test]
    fn turbulence_compares_only_desired_fields() {
        let desired = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","labels":{"x":"y"}},"data":{"k":"v"}});
        let live = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","labels":{"x":"y","added":"z"},"uid":"1","resourceVersion":"9","managedFields":[{}],"creationTimestamp":"t"},"data":{"k":"v"},"status":{}});
        assert_eq!(
            comparable_live(&desired, &live),
            comparable_desired(&desired)
        );
        let edited = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","labels":{"x":"y"}},"data":{"k":"edited"}});
        assert_ne!(
            comparable_live(&desired, &edited),
            comparable_desired(&desired)
        );
        // A field the desired object has but the live one lost is drift too.
        let lost =
            json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"k":"v"}});
        assert_ne!(
            comparable_live(&desired, &lost),
            comparable_desired(&desired)
        );
    }
}
