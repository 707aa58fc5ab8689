//! Resource selectors (`--match-*`/`--exclude-*`, Kptfile `selectors`/`exclude`).

use crate::resource_list as rl;
use serde_json::Value;
use std::collections::BTreeMap;

/// One selector: every set field must match (AND); labels/annotations by subset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// apiVersion.
    pub api_version: Option<String>,
    /// kind.
    pub kind: Option<String>,
    /// metadata.name.
    pub name: Option<String>,
    /// metadata.namespace.
    pub namespace: Option<String>,
    /// Labels that must all be present with these values.
    pub labels: BTreeMap<String, String>,
    /// Annotations that must all be present with these values.
    pub annotations: BTreeMap<String, String>,
}

impl Selector {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Selector::default()
    }

    /// Reads a Kptfile selector object.
    pub fn from_value(v: &Value) -> Selector {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let map = |k: &str| -> BTreeMap<String, String> {
            v.get(k)
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str()
                                    .map(str::to_string)
                                    .unwrap_or_else(|| v.to_string()),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        Selector {
            api_version: s("apiVersion"),
            kind: s("kind"),
            name: s("name"),
            namespace: s("namespace"),
            labels: map("labels"),
            annotations: map("annotations"),
        }
    }

    /// Whether `item` matches.
    pub fn matches(&self, item: &Value) -> bool {
        let eq = |want: &Option<String>, path: &[&str]| match want {
            None => true,
            Some(w) => rl::field(item, path).unwrap_or("") == w,
        };
        let subset = |want: &BTreeMap<String, String>, key: &str| {
            want.iter().all(|(k, v)| {
                item.get("metadata")
                    .and_then(|m| m.get(key))
                    .and_then(|m| m.get(k))
                    .and_then(Value::as_str)
                    == Some(v.as_str())
            })
        };
        eq(&self.api_version, &["apiVersion"])
            && eq(&self.kind, &["kind"])
            && eq(&self.name, &["metadata", "name"])
            && eq(&self.namespace, &["metadata", "namespace"])
            && subset(&self.labels, "labels")
            && subset(&self.annotations, "annotations")
    }
}

/// Which items a function sees: those matching any selector (all when there are none), minus
/// those matching any exclusion. Returns the selected indices. An item matching two selectors
/// is listed twice, as kpt does.
pub fn select(items: &[Value], selectors: &[Selector], exclude: &[Selector]) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if exclude.iter().any(|e| e.matches(item)) {
            continue;
        }
        if selectors.is_empty() {
            out.push(i);
        } else {
            for s in selectors {
                if s.matches(item) {
                    out.push(i);
                }
            }
        }
    }
    out
}

/// Parses `k=v` pairs of `--match-labels`/`--match-annotations`.
pub fn parse_pairs(pairs: &[String]) -> Result<BTreeMap<String, String>, String> {
    pairs
        .iter()
        .flat_map(|p| p.split(','))
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(format!("{p:?} is not of the form key=value")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selection_is_and_within_or_across_and_exclusion_wins() {
        let items = vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"app": "x", "t": "1"}}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a", "namespace": "ns"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}}),
        ];
        let by_kind = Selector {
            kind: Some("ConfigMap".into()),
            ..Default::default()
        };
        let by_name = Selector {
            name: Some("a".into()),
            ..Default::default()
        };
        assert_eq!(select(&items, &[], &[]), vec![0, 1, 2]);
        assert_eq!(
            select(&items, std::slice::from_ref(&by_kind), &[]),
            vec![0, 2]
        );
        // OR across selectors; an item matching both appears twice (kpt's quirk).
        assert_eq!(
            select(&items, &[by_kind.clone(), by_name.clone()], &[]),
            vec![0, 0, 1, 2]
        );
        let labels = Selector {
            labels: parse_pairs(&["app=x".into()]).unwrap(),
            ..Default::default()
        };
        assert_eq!(select(&items, &[labels], &[]), vec![0]);
        assert_eq!(select(&items, &[by_kind], &[by_name]), vec![2]);
        let and = Selector {
            kind: Some("ConfigMap".into()),
            name: Some("b".into()),
            ..Default::default()
        };
        assert_eq!(select(&items, &[and], &[]), vec![2]);
        assert!(parse_pairs(&["nope".into()]).is_err());
    }
}
