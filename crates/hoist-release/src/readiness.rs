//! Readiness of live objects, judged from their status (pure; the caller fetches).
//!
//! - Namespace: `status.phase == Active`.
//! - Pod: condition `Ready` true (or phase `Succeeded`).
//! - Deployment, ReplicaSet, StatefulSet: `status.observedGeneration >= metadata.generation`
//!   and the replica counts all equal the desired count (`spec.replicas`, default 1).
//! - DaemonSet: observed generation, and scheduled/updated/available/ready counts all equal
//!   `desiredNumberScheduled`.
//! - Job: condition `Complete` true; condition `Failed` true is an error.
//! - CustomResourceDefinition: condition `Established` true, and then the API server's
//!   discovery serves its kind in every served version (checked by the caller:
//!   [`Readiness::NeedsDiscovery`]). `Established` is set before discovery catches up, so a
//!   client that resolves the custom resources of the next stage right away can be told
//!   "no matches for kind" (Yoke can: it refreshes discovery once and gives up).
//! - Service: has an EndpointSlice (checked by the caller: [`Readiness::NeedsEndpointSlice`]).
//! - Everything else: ready at once.

use serde_json::Value;

/// What the status of an object says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Ready.
    Ready,
    /// Not ready yet, with a short reason.
    NotReady(String),
    /// Will never become ready (a failed Job).
    Failed(String),
    /// A Service: ready once an EndpointSlice labelled with its name exists.
    NeedsEndpointSlice,
    /// An established CustomResourceDefinition: ready once discovery serves `kind` in each
    /// of `api_versions` (`group/version`).
    NeedsDiscovery {
        /// The kind the definition names.
        kind: String,
        /// Its served versions, as apiVersions.
        api_versions: Vec<String>,
    },
}

fn int(value: &Value, pointer: &str) -> i64 {
    value.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn condition(value: &Value, kind: &str) -> Option<bool> {
    value
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        .map(|c| c.get("status").and_then(Value::as_str) == Some("True"))
}

fn generation_observed(live: &Value) -> Result<(), String> {
    let generation = int(live, "/metadata/generation");
    let observed = int(live, "/status/observedGeneration");
    if observed < generation {
        Err(format!(
            "observedGeneration {observed} < generation {generation}"
        ))
    } else {
        Ok(())
    }
}

fn counts_equal(live: &Value, desired: i64, fields: &[&str]) -> Readiness {
    if let Err(reason) = generation_observed(live) {
        return Readiness::NotReady(reason);
    }
    for field in fields {
        let value = int(live, &format!("/status/{field}"));
        if value != desired {
            return Readiness::NotReady(format!("status.{field} is {value}, want {desired}"));
        }
    }
    Readiness::Ready
}

/// Judges the readiness of a live object.
pub fn evaluate(live: &Value) -> Readiness {
    let kind = live.get("kind").and_then(Value::as_str).unwrap_or("");
    let api_version = live.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let group = api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
    let desired_replicas = live
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    match (group, kind) {
        ("", "Namespace") => {
            let phase = live.pointer("/status/phase").and_then(Value::as_str);
            if phase == Some("Active") {
                Readiness::Ready
            } else {
                Readiness::NotReady(format!("phase is {}", phase.unwrap_or("unset")))
            }
        }
        ("", "Pod") => {
            if live.pointer("/status/phase").and_then(Value::as_str) == Some("Succeeded")
                || condition(live, "Ready") == Some(true)
            {
                Readiness::Ready
            } else {
                Readiness::NotReady("condition Ready is not True".into())
            }
        }
        ("", "Service") => Readiness::NeedsEndpointSlice,
        ("apps", "Deployment") => counts_equal(
            live,
            desired_replicas,
            &[
                "replicas",
                "updatedReplicas",
                "readyReplicas",
                "availableReplicas",
            ],
        ),
        ("apps", "ReplicaSet") => counts_equal(
            live,
            desired_replicas,
            &["replicas", "readyReplicas", "availableReplicas"],
        ),
        ("apps", "StatefulSet") => counts_equal(
            live,
            desired_replicas,
            &["replicas", "readyReplicas", "updatedReplicas"],
        ),
        ("apps", "DaemonSet") => {
            let desired = int(live, "/status/desiredNumberScheduled");
            counts_equal(
                live,
                desired,
                &[
                    "currentNumberScheduled",
                    "updatedNumberScheduled",
                    "numberAvailable",
                    "numberReady",
                ],
            )
        }
        ("batch", "Job") => {
            if condition(live, "Failed") == Some(true) {
                Readiness::Failed("the Job failed (condition Failed is True)".into())
            } else if condition(live, "Complete") == Some(true) {
                Readiness::Ready
            } else {
                Readiness::NotReady("condition Complete is not True".into())
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            if condition(live, "Established") == Some(true) {
                crd_discovery(live)
            } else {
                Readiness::NotReady("condition Established is not True".into())
            }
        }
        _ => Readiness::Ready,
    }
}

/// The group and kind a CustomResourceDefinition's `spec` defines.
pub(crate) fn crd_group_kind(spec: Option<&Value>) -> Option<(&str, &str)> {
    let spec = spec?;
    let group = spec.get("group").and_then(Value::as_str)?;
    let kind = spec.pointer("/names/kind").and_then(Value::as_str)?;
    Some((group, kind))
}

/// What discovery must serve before an established CRD's objects can be resolved.
fn crd_discovery(live: &Value) -> Readiness {
    let spec = live.get("spec");
    let Some((group, kind)) = crd_group_kind(spec) else {
        // Not a definition the API server would have established; nothing to look up.
        return Readiness::Ready;
    };
    let api_versions: Vec<String> = spec
        .and_then(|s| s.get("versions"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("served").and_then(Value::as_bool) == Some(true))
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .map(|version| format!("{group}/{version}"))
        .collect();
    if api_versions.is_empty() {
        return Readiness::Ready;
    }
    Readiness::NeedsDiscovery {
        kind: kind.to_string(),
        api_versions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn namespaces_and_crds() {
        assert_eq!(
            evaluate(&json!({"apiVersion":"v1","kind":"Namespace","status":{"phase":"Active"}})),
            Readiness::Ready
        );
        assert!(matches!(
            evaluate(
                &json!({"apiVersion":"v1","kind":"Namespace","status":{"phase":"Terminating"}})
            ),
            Readiness::NotReady(_)
        ));
        let crd = |s: &str| {
            json!({"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition",
            "spec":{"group":"example.com","names":{"kind":"Gadget"},"versions":[
                {"name":"v1","served":true},{"name":"v1beta1","served":false},{"name":"v2","served":true}]},
            "status":{"conditions":[{"type":"NamesAccepted","status":"True"},{"type":"Established","status":s}]}})
        };
        assert_eq!(
            evaluate(&crd("True")),
            Readiness::NeedsDiscovery {
                kind: "Gadget".into(),
                api_versions: vec!["example.com/v1".into(), "example.com/v2".into()],
            }
        );
        assert!(matches!(evaluate(&crd("False")), Readiness::NotReady(_)));
        // Established with nothing served: nothing for discovery to list.
        let mut unserved = crd("True");
        unserved["spec"]["versions"] = json!([{"name":"v1","served":false}]);
        assert_eq!(evaluate(&unserved), Readiness::Ready);
    }

    #[test]
    fn deployments() {
        let d = |generation: i64, obs: i64, ready: i64| {
            json!({
            "apiVersion":"apps/v1","kind":"Deployment",
            "metadata":{"generation":generation},"spec":{"replicas":2},
            "status":{"observedGeneration":obs,"replicas":2,"updatedReplicas":2,"readyReplicas":ready,"availableReplicas":ready}})
        };
        assert_eq!(evaluate(&d(3, 3, 2)), Readiness::Ready);
        assert!(
            matches!(evaluate(&d(3, 2, 2)), Readiness::NotReady(r) if r.contains("observedGeneration"))
        );
        assert!(
            matches!(evaluate(&d(3, 3, 1)), Readiness::NotReady(r) if r.contains("readyReplicas"))
        );
        // A fresh Deployment with no status at all is not ready (default 1 replica).
        assert!(matches!(
            evaluate(
                &json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"generation":1}})
            ),
            Readiness::NotReady(_)
        ));
        // Zero replicas with an observed generation is ready.
        assert_eq!(
            evaluate(
                &json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"generation":1},"spec":{"replicas":0},"status":{"observedGeneration":1}})
            ),
            Readiness::Ready
        );
    }

    #[test]
    fn daemonsets_statefulsets_replicasets() {
        let ds = json!({"apiVersion":"apps/v1","kind":"DaemonSet","metadata":{"generation":1},"status":{"observedGeneration":1,"desiredNumberScheduled":3,"currentNumberScheduled":3,"updatedNumberScheduled":3,"numberAvailable":3,"numberReady":2}});
        assert!(matches!(evaluate(&ds), Readiness::NotReady(r) if r.contains("numberReady")));
        let sts = json!({"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"generation":1},"spec":{"replicas":1},"status":{"observedGeneration":1,"replicas":1,"readyReplicas":1,"updatedReplicas":1}});
        assert_eq!(evaluate(&sts), Readiness::Ready);
        let rs = json!({"apiVersion":"apps/v1","kind":"ReplicaSet","metadata":{"generation":1},"spec":{"replicas":1},"status":{"observedGeneration":1,"replicas":1,"readyReplicas":1,"availableReplicas":0}});
        assert!(matches!(evaluate(&rs), Readiness::NotReady(_)));
    }

    #[test]
    fn pods_jobs_services_and_others() {
        let pod = json!({"apiVersion":"v1","kind":"Pod","status":{"conditions":[{"type":"Ready","status":"True"}]}});
        assert_eq!(evaluate(&pod), Readiness::Ready);
        assert!(matches!(
            evaluate(&json!({"apiVersion":"v1","kind":"Pod"})),
            Readiness::NotReady(_)
        ));
        let job = |t: &str| json!({"apiVersion":"batch/v1","kind":"Job","status":{"conditions":[{"type":t,"status":"True"}]}});
        assert_eq!(evaluate(&job("Complete")), Readiness::Ready);
        assert!(matches!(evaluate(&job("Failed")), Readiness::Failed(_)));
        assert!(matches!(
            evaluate(&json!({"apiVersion":"batch/v1","kind":"Job"})),
            Readiness::NotReady(_)
        ));
        assert_eq!(
            evaluate(&json!({"apiVersion":"v1","kind":"Service"})),
            Readiness::NeedsEndpointSlice
        );
        assert_eq!(
            evaluate(&json!({"apiVersion":"v1","kind":"ConfigMap"})),
            Readiness::Ready
        );
        assert_eq!(
            evaluate(&json!({"apiVersion":"example.com/v1","kind":"Deployment"})),
            Readiness::Ready
        );
    }
}
