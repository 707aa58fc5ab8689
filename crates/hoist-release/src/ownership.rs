//! Ownership marks on applied objects, as Yoke writes and reads them.
//!
//! Every applied object carries the label `app.kubernetes.io/managed-by: yoke` and the
//! annotations `instance.atc.yoke.cd/release` (release name) and
//! `instance.atc.yoke.cd/namespace` (release namespace). The owner of a live object is
//! `namespace/release`; objects marked by older Yoke versions (labels
//! `app.kubernetes.io/yoke-release` / `-namespace`) are read too.

use hoist_resources::Resource;
use serde_json::{Map, Value};
use std::fmt;

/// Label naming the tool managing an object.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`] written by the CLI (Yoke's default).
pub const MANAGED_BY: &str = "yoke";
/// Value of [`LABEL_MANAGED_BY`] on objects the in-cluster controller (Yoke's ATC, `hoist atc`)
/// applies.
pub const MANAGED_BY_ATC: &str = "atc.yoke";
/// Annotation on the controller's objects naming the instance they were rendered for
/// (`<ns>/<Kind.group>:<name>`).
pub const ANNOTATION_INSTANCE_REF: &str = "instance.atc.yoke.cd/instanceRef";
/// Annotation holding the owning release's name.
pub const ANNOTATION_RELEASE: &str = "instance.atc.yoke.cd/release";
/// Annotation holding the owning release's namespace.
pub const ANNOTATION_NAMESPACE: &str = "instance.atc.yoke.cd/namespace";
/// Label of older Yoke versions holding the owning release's name.
pub const LEGACY_LABEL_RELEASE: &str = "app.kubernetes.io/yoke-release";
/// Label of older Yoke versions holding the owning release's namespace.
pub const LEGACY_LABEL_NAMESPACE: &str = "app.kubernetes.io/yoke-release-namespace";

/// The release owning an object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// Release namespace.
    pub namespace: String,
    /// Release name.
    pub release: String,
}

impl Owner {
    /// An owner from a release name and namespace.
    pub fn new(release: &str, namespace: &str) -> Owner {
        Owner {
            namespace: namespace.to_string(),
            release: release.to_string(),
        }
    }
}

impl fmt::Display for Owner {
    /// `namespace/release`, as Yoke prints owners.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.release)
    }
}

fn string_map<'a>(object: &'a Map<String, Value>, field: &str) -> Option<&'a Map<String, Value>> {
    object.get("metadata")?.get(field)?.as_object()
}

fn get_str<'a>(map: Option<&'a Map<String, Value>>, key: &str) -> &'a str {
    map.and_then(|m| m.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The owner recorded on an object (live or desired), if any.
pub fn owner_of(object: &Map<String, Value>) -> Option<Owner> {
    // As yoke v0.20.27 (internal.GetOwner): name and namespace are each taken from the
    // annotation, else the deprecated label, independently; both must be set.
    let annotations = string_map(object, "annotations");
    let labels = string_map(object, "labels");
    let either = |annotation: &str, label: &str| -> String {
        let value = get_str(annotations, annotation);
        if value.is_empty() {
            get_str(labels, label).to_string()
        } else {
            value.to_string()
        }
    };
    let release = either(ANNOTATION_RELEASE, LEGACY_LABEL_RELEASE);
    let namespace = either(ANNOTATION_NAMESPACE, LEGACY_LABEL_NAMESPACE);
    if release.is_empty() || namespace.is_empty() {
        return None;
    }
    Some(Owner::new(&release, &namespace))
}

/// `owner` as a message fragment: `release ns/name` or `nobody (created outside any release)`.
pub fn describe_owner(owner: Option<&Owner>) -> String {
    match owner {
        Some(owner) => format!("release {owner}"),
        None => "nobody (it was created outside any release)".to_string(),
    }
}

fn entry_object<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let entry = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    match entry {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

/// Marks `resource` as owned by `release` in `namespace` (label and annotations).
pub fn add_ownership(resource: &mut Resource, release: &str, namespace: &str) {
    let metadata = resource.metadata_mut();
    entry_object(metadata, "labels").insert(
        LABEL_MANAGED_BY.to_string(),
        Value::String(MANAGED_BY.to_string()),
    );
    let annotations = entry_object(metadata, "annotations");
    annotations.insert(
        ANNOTATION_RELEASE.to_string(),
        Value::String(release.to_string()),
    );
    annotations.insert(
        ANNOTATION_NAMESPACE.to_string(),
        Value::String(namespace.to_string()),
    );
}

/// Marks `resource` as applied by the in-cluster controller: `managed-by: atc.yoke` and, for
/// an Airway instance's children, the instance reference (as Yoke's ATC writes them; the
/// release annotations come from [`add_ownership`]).
pub fn add_atc_marks(resource: &mut Resource, instance_ref: Option<&str>) {
    let metadata = resource.metadata_mut();
    entry_object(metadata, "labels").insert(
        LABEL_MANAGED_BY.to_string(),
        Value::String(MANAGED_BY_ATC.to_string()),
    );
    if let Some(instance_ref) = instance_ref {
        entry_object(metadata, "annotations").insert(
            ANNOTATION_INSTANCE_REF.to_string(),
            Value::String(instance_ref.to_string()),
        );
    }
}

/// Removes the server-managed metadata a flight may have copied from a lookup
/// (`resourceVersion`, `uid`, `creationTimestamp`, `managedFields`), as Yoke does before apply.
pub fn strip_server_fields(resource: &mut Resource) {
    let metadata = resource.metadata_mut();
    for field in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "managedFields",
    ] {
        metadata.remove(field);
    }
}

/// Checks that applying a desired object owned by `expected` over `live` is allowed.
/// Returns the live owner description on conflict.
pub fn check_ownership(
    expected: &Owner,
    live: Option<&Map<String, Value>>,
    force: bool,
) -> Result<(), String> {
    let Some(live) = live else {
        return Ok(());
    };
    if force {
        return Ok(());
    }
    let owner = owner_of(live);
    if owner.as_ref() == Some(expected) {
        Ok(())
    } else {
        Err(describe_owner(owner.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn marks_and_reads_back() {
        let mut r = Resource::from_value(
            json!({"kind":"ConfigMap","metadata":{"name":"a","labels":{"x":"y"}}}),
        )
        .unwrap();
        add_ownership(&mut r, "rel", "ns");
        let m = r.as_map();
        assert_eq!(m["metadata"]["labels"]["x"], "y");
        assert_eq!(m["metadata"]["labels"][LABEL_MANAGED_BY], "yoke");
        assert_eq!(owner_of(m), Some(Owner::new("rel", "ns")));
        assert_eq!(Owner::new("rel", "ns").to_string(), "ns/rel");
    }

    #[test]
    fn reads_legacy_labels() {
        let live = map(
            json!({"metadata":{"labels":{LEGACY_LABEL_RELEASE:"old",LEGACY_LABEL_NAMESPACE:"default"}}}),
        );
        assert_eq!(owner_of(&live), Some(Owner::new("old", "default")));
        let half = map(json!({"metadata":{"annotations":{ANNOTATION_RELEASE:"x"}}}));
        assert_eq!(owner_of(&half), None);
    }

    #[test]
    fn ownership_checks() {
        let me = Owner::new("a", "ns");
        let mine = map(
            json!({"metadata":{"annotations":{ANNOTATION_RELEASE:"a",ANNOTATION_NAMESPACE:"ns"}}}),
        );
        let theirs = map(
            json!({"metadata":{"annotations":{ANNOTATION_RELEASE:"b",ANNOTATION_NAMESPACE:"ns"}}}),
        );
        let other_ns = map(
            json!({"metadata":{"annotations":{ANNOTATION_RELEASE:"a",ANNOTATION_NAMESPACE:"other"}}}),
        );
        let nobody = map(json!({"metadata":{"name":"x"}}));
        assert!(check_ownership(&me, None, false).is_ok());
        assert!(check_ownership(&me, Some(&mine), false).is_ok());
        assert_eq!(
            check_ownership(&me, Some(&theirs), false).unwrap_err(),
            "release ns/b"
        );
        assert_eq!(
            check_ownership(&me, Some(&other_ns), false).unwrap_err(),
            "release other/a"
        );
        assert!(
            check_ownership(&me, Some(&nobody), false)
                .unwrap_err()
                .starts_with("nobody")
        );
        assert!(check_ownership(&me, Some(&theirs), true).is_ok());
    }

    #[test]
    fn strips_server_fields() {
        let mut r = Resource::from_value(json!({"kind":"A","metadata":{"name":"a","uid":"u","resourceVersion":"1","managedFields":[],"creationTimestamp":null}})).unwrap();
        strip_server_fields(&mut r);
        assert_eq!(r.as_map()["metadata"], json!({"name":"a"}));
    }
}
