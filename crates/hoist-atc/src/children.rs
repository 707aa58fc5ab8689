//! The webhooks on instances' children and on external objects, which make the four modes:
//!
//! - **standard**: children are left alone between instance changes (`fixDriftInterval`
//!   repairs drift);
//! - **static**: changes to children are refused (updates that diverge from the active
//!   revision, and deletes), except by the controller and Kubernetes' own controllers
//!   (`system:serviceaccount:kube-system:*`: garbage and namespace collectors);
//! - **dynamic**: any change to a child re-runs the instance's flight, which restores it;
//!   so does a change to an object the flight looked up;
//! - **subscription**: only changes to objects the flight looked up (children included)
//!   re-run it.
//!
//! Changing the ownership annotations of a child is refused in every mode. Both webhooks
//! fail open (`failurePolicy: Ignore`, as Yoke's), so `fixDriftInterval` stays the safety net.

use crate::controller::Atc;
use crate::spec::{ANNOTATION_INSTANCE_REF, Mode, object_ref};
use crate::webhook::{Verdict, deny};
use hoist_release::ownership::{ANNOTATION_NAMESPACE, ANNOTATION_RELEASE};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// How long a re-run waits after the admission of a change (the change is stored after
/// admission answers).
const SETTLE: Duration = Duration::from_millis(500);

fn present(value: Option<&Value>) -> Option<&Value> {
    value.filter(|v| !v.is_null())
}

fn annotation<'a>(object: Option<&'a Value>, key: &str) -> Option<&'a str> {
    object?.pointer("/metadata/annotations")?.get(key)?.as_str()
}

/// The reference `<ns>/<Kind.group>:<name>` of the object an admission request is about.
fn request_ref(request: &Value) -> Option<String> {
    let group = request.pointer("/kind/group").and_then(Value::as_str)?;
    let kind = request.pointer("/kind/kind").and_then(Value::as_str)?;
    let name = request.get("name").and_then(Value::as_str)?;
    let namespace = request
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    Some(object_ref(group, kind, Some(namespace), name))
}

/// `/validations/resources`: a child of an instance is updated or deleted.
pub async fn validate_child(atc: &Arc<Atc>, request: &Value) -> Result<Verdict, String> {
    let user = request
        .pointer("/userInfo/username")
        .and_then(Value::as_str)
        .unwrap_or("");
    if atc.is_self(user) {
        return Ok(Verdict::Allow);
    }
    let operation = request
        .get("operation")
        .and_then(Value::as_str)
        .unwrap_or("");
    let object = present(request.get("object"));
    let old = present(request.get("oldObject"));
    if operation == "UPDATE" {
        for key in [
            ANNOTATION_RELEASE,
            ANNOTATION_NAMESPACE,
            ANNOTATION_INSTANCE_REF,
        ] {
            let (before, after) = (annotation(old, key), annotation(object, key));
            if before != after {
                return Ok(deny(
                    400,
                    "BadRequest",
                    format!(
                        "cannot modify yoke annotations: {key} changed from {:?} to {:?}",
                        before.unwrap_or(""),
                        after.unwrap_or("")
                    ),
                ));
            }
        }
        if let (Some(old), Some(new)) = (old, object)
            && without_bookkeeping(old) == without_bookkeeping(new)
        {
            return Ok(Verdict::Allow);
        }
    }
    let Some(instance_ref) = annotation(old.or(object), ANNOTATION_INSTANCE_REF) else {
        return Ok(Verdict::Allow);
    };
    let Some(instance) = atc.tracker.get(instance_ref) else {
        return Ok(Verdict::Allow);
    };
    match instance.mode {
        Mode::Standard => Ok(Verdict::Allow),
        Mode::Dynamic => {
            atc.enqueue_later(
                &instance.airway,
                instance.namespace.as_deref(),
                &instance.name,
                SETTLE,
            );
            Ok(Verdict::Allow)
        }
        Mode::Subscription => {
            if let Some(reference) = request_ref(request)
                && instance.lookups.contains(&reference)
            {
                atc.enqueue_later(
                    &instance.airway,
                    instance.namespace.as_deref(),
                    &instance.name,
                    SETTLE,
                );
            }
            Ok(Verdict::Allow)
        }
        Mode::Static => {
            if operation == "DELETE" {
                if user.starts_with("system:serviceaccount:kube-system:") {
                    return Ok(Verdict::Allow);
                }
                return Ok(deny(
                    403,
                    "Forbidden",
                    "cannot delete resources managed by Air-Traffic-Controller",
                ));
            }
            let Some(new) = object else {
                return Ok(Verdict::Allow);
            };
            let (release, namespace) = &instance.release;
            let Some(desired) = desired_object(atc, release, namespace, new).await? else {
                return Ok(Verdict::Allow);
            };
            match diverges(&desired, new, "") {
                None => Ok(Verdict::Allow),
                Some(path) => Ok(deny(
                    403,
                    "Forbidden",
                    format!(
                        "cannot modify flight sub-resources: {path} differs from what the flight set"
                    ),
                )),
            }
        }
    }
}

/// `/validations/external-resources`: re-runs every dynamic or subscription instance whose
/// flight looked up this object. Always allows.
pub async fn track_external(atc: &Arc<Atc>, request: &Value) -> Result<Verdict, String> {
    if let Some(reference) = request_ref(request) {
        for instance in atc.tracker.watching(&reference) {
            tracing::debug!(object = %reference, instance = %instance.name, "looked-up object changed: re-running the flight");
            atc.enqueue_later(
                &instance.airway,
                instance.namespace.as_deref(),
                &instance.name,
                SETTLE,
            );
        }
    }
    Ok(Verdict::Allow)
}

/// The object as the active revision of `release` has it.
async fn desired_object(
    atc: &Atc,
    release: &str,
    namespace: &str,
    live: &Value,
) -> Result<Option<Value>, String> {
    let text = |p: &str| live.pointer(p).and_then(Value::as_str).unwrap_or("");
    let history = hoist_release::load_release(&atc.conn, release, namespace)
        .await
        .map_err(|e| format!("reading release {namespace}/{release}: {e}"))?;
    let Some(active) = history.active() else {
        return Ok(None);
    };
    let stages = hoist_release::revision_stages(&atc.conn, active)
        .await
        .map_err(|e| format!("reading the active revision of {namespace}/{release}: {e}"))?;
    let found = stages.iter().find(|r| {
        r.api_version() == text("/apiVersion")
            && r.kind() == text("/kind")
            && r.name() == text("/metadata/name")
            && r.namespace().unwrap_or("") == text("/metadata/namespace")
    });
    Ok(found.map(|r| Value::Object(r.as_map().clone())))
}

/// The object without what the server and controllers change (status, resourceVersion,
/// managedFields, generation).
fn without_bookkeeping(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            for key in ["resourceVersion", "managedFields", "generation"] {
                meta.remove(key);
            }
        }
    }
    object
}

/// The first path where `actual` differs from a field `desired` sets (fields `desired` does
/// not set, `status` and server-managed metadata are ignored).
pub fn diverges(desired: &Value, actual: &Value, path: &str) -> Option<String> {
    match (desired, actual) {
        (Value::Object(want), Value::Object(have)) => {
            for (key, value) in want {
                let here = format!("{path}.{key}");
                if path.is_empty() && key == "status" {
                    continue;
                }
                if path == ".metadata"
                    && matches!(
                        key.as_str(),
                        "resourceVersion"
                            | "uid"
                            | "creationTimestamp"
                            | "managedFields"
                            | "generation"
                            | "ownerReferences"
                    )
                {
                    continue;
                }
                match have.get(key) {
                    Some(other) => {
                        if let Some(p) = diverges(value, other, &here) {
                            return Some(p);
                        }
                    }
                    None if value.is_null() => {}
                    None => return Some(here),
                }
            }
            None
        }
        (Value::Array(want), Value::Array(have)) => {
            if want.len() != have.len() {
                return Some(path.to_string());
            }
            want.iter()
                .zip(have)
                .enumerate()
                .find_map(|(i, (w, h))| diverges(w, h, &format!("{path}[{i}]")))
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => None,
        (a, b) if a == b => None,
        _ => Some(path.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn divergence_ignores_unset_fields_and_bookkeeping() {
        let desired = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"x": "1"}}, "data": {"k": "v"}});
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"x": "1", "extra": "y"}, "resourceVersion": "9", "uid": "u"}, "data": {"k": "v"}, "status": {}});
        assert_eq!(diverges(&desired, &live, ""), None);
        let mut changed = live.clone();
        changed["data"]["k"] = json!("other");
        assert_eq!(diverges(&desired, &changed, ""), Some(".data.k".into()));
        let mut relabelled = live.clone();
        relabelled["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("x");
        assert_eq!(
            diverges(&desired, &relabelled, ""),
            Some(".metadata.labels.x".into())
        );
        let spec = json!({"spec": {"replicas": 2, "ports": [{"port": 80}]}});
        assert_eq!(
            diverges(
                &spec,
                &json!({"spec": {"replicas": 2.0, "ports": [{"port": 80, "protocol": "TCP"}]}}),
                ""
            ),
            None
        );
        assert_eq!(
            diverges(
                &spec,
                &json!({"spec": {"replicas": 3, "ports": [{"port": 80}]}}),
                ""
            ),
            Some(".spec.replicas".into())
        );
    }

    #[test]
    fn request_refs_follow_yoke() {
        let request = json!({"kind": {"group": "apps", "version": "v1", "kind": "Deployment"}, "name": "web", "namespace": "default"});
        assert_eq!(
            request_ref(&request).as_deref(),
            Some("default/Deployment.apps:web")
        );
        let request =
            json!({"kind": {"group": "", "version": "v1", "kind": "Namespace"}, "name": "x"});
        assert_eq!(request_ref(&request).as_deref(), Some("/Namespace:x"));
    }
}
