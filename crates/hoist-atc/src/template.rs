//! Objects the controller derives: the CRD of an Airway (template mutation as Yoke does it),
//! and the webhook configurations pointing at the controller's HTTPS server.

use crate::crds::conditions_schema;
use crate::spec::{API_VERSION, TemplateNames};
use base64::Engine as _;
use serde_json::{Map, Value, json};

/// Where the API server reaches the controller's webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookTarget {
    /// A Service in the cluster (the controller runs in a pod).
    Service {
        /// Service name.
        name: String,
        /// Service namespace.
        namespace: String,
        /// Service port.
        port: u16,
    },
    /// A URL base such as `https://127.0.0.1:3000` (the controller runs outside the cluster).
    Url(String),
}

/// The webhook address and the CA the API server must trust.
#[derive(Debug, Clone)]
pub struct Webhooks {
    /// Where the server is.
    pub target: WebhookTarget,
    /// PEM of the CA that signed the server certificate.
    pub ca_pem: String,
    /// The controller's own user name, as the API server sees it (learned at start with a
    /// SelfSubjectReview): its own writes skip the webhooks, as Yoke's service account does.
    pub own_user: Option<String>,
}

impl Webhooks {
    /// A `clientConfig` for `path`.
    pub fn client_config(&self, path: &str) -> Value {
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes());
        match &self.target {
            WebhookTarget::Service {
                name,
                namespace,
                port,
            } => json!({
                "service": {"name": name, "namespace": namespace, "port": port, "path": path},
                "caBundle": ca,
            }),
            WebhookTarget::Url(base) => json!({
                "url": format!("{}{path}", base.trim_end_matches('/')),
                "caBundle": ca,
            }),
        }
    }

    /// The username of the controller's service account, which webhooks let through
    /// (`system:serviceaccount:<ns>:<svc>-service-account`, as Yoke's match condition).
    pub fn service_account_user(&self) -> Option<String> {
        match &self.target {
            WebhookTarget::Service {
                name, namespace, ..
            } => Some(format!(
                "system:serviceaccount:{namespace}:{name}-service-account"
            )),
            WebhookTarget::Url(_) => None,
        }
    }

    /// Users whose requests the webhooks never see: the controller itself.
    fn excluded_users(&self) -> Vec<String> {
        let mut users: Vec<String> = self.service_account_user().into_iter().collect();
        if let Some(own) = &self.own_user
            && !users.contains(own)
        {
            users.push(own.clone());
        }
        users
    }

    fn match_conditions(&self) -> Vec<Value> {
        let users = self.excluded_users();
        if users.is_empty() {
            return Vec::new();
        }
        let expression = users
            .iter()
            .map(|u| format!("request.userInfo.username != {}", cel_string(u)))
            .collect::<Vec<_>>()
            .join(" && ");
        vec![json!({"name": "not-atc-service-account", "expression": expression})]
    }

    fn webhook(&self, name: &str, path: &str, rules: Value, extra: Value) -> Value {
        let mut hook = json!({
            "name": name,
            "clientConfig": self.client_config(path),
            "rules": rules,
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        });
        if let (Some(map), Value::Object(extra)) = (hook.as_object_mut(), extra) {
            map.extend(extra);
        }
        hook
    }

    /// The global ValidatingWebhookConfigurations (airways, flights, children of instances,
    /// external objects), applied at start and deleted on graceful shutdown.
    pub fn global_configurations(&self) -> Vec<Value> {
        let conditions = self.match_conditions();
        let mut managed_conditions = vec![json!({
            "name": "managed-by-atc",
            "expression": format!(
                "(object != null && has(object.metadata.labels) && {label} in object.metadata.labels && object.metadata.labels[{label}] == {value}) || (oldObject != null && has(oldObject.metadata.labels) && {label} in oldObject.metadata.labels && oldObject.metadata.labels[{label}] == {value})",
                label = cel_string(hoist_release::ownership::LABEL_MANAGED_BY),
                value = cel_string(hoist_release::ownership::MANAGED_BY_ATC),
            ),
        })];
        managed_conditions.extend(conditions.iter().cloned());
        vec![
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": "atc-airway"},
                "webhooks": [self.webhook(
                    "airways.yoke.cd",
                    "/validations/airways.yoke.cd",
                    json!([{"operations": ["CREATE", "UPDATE"], "apiGroups": ["yoke.cd"], "apiVersions": ["v1alpha1"], "resources": ["airways"], "scope": "Cluster"}]),
                    json!({"failurePolicy": "Fail", "timeoutSeconds": 30}),
                )]
            }),
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": "atc-flight"},
                "webhooks": [self.webhook(
                    "flights.yoke.cd",
                    "/validations/flights.yoke.cd",
                    json!([{"operations": ["CREATE", "UPDATE"], "apiGroups": ["yoke.cd"], "apiVersions": ["v1alpha1"], "resources": ["flights", "clusterflights"]}]),
                    json!({"failurePolicy": "Fail", "timeoutSeconds": 30, "matchPolicy": "Exact", "matchConditions": conditions}),
                )]
            }),
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": "atc-resources"},
                "webhooks": [self.webhook(
                    "resources.yoke.cd",
                    "/validations/resources",
                    json!([{"operations": ["UPDATE", "DELETE"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"], "scope": "*"}]),
                    json!({"failurePolicy": "Ignore", "timeoutSeconds": 10, "matchPolicy": "Exact", "matchConditions": managed_conditions}),
                )]
            }),
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": "atc-external-resources"},
                "webhooks": [self.webhook(
                    "external.resources.yoke.cd",
                    "/validations/external-resources",
                    json!([{"operations": ["CREATE", "UPDATE", "DELETE"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"], "scope": "*"}]),
                    json!({"failurePolicy": "Ignore", "timeoutSeconds": 1, "matchPolicy": "Exact", "matchConditions": [
                        {"name": "named", "expression": "request.name != \"\""},
                        {"name": "not-lease", "expression": "request.kind.group != \"coordination.k8s.io\" || request.kind.kind != \"Lease\""},
                        {"name": "not-node", "expression": "request.kind.group != \"\" || request.kind.kind != \"Node\""},
                        {"name": "not-event", "expression": "request.kind.kind != \"Event\""},
                    ]}),
                )]
            }),
        ]
    }

    /// The ValidatingWebhookConfiguration of one Airway's instances (name = Airway name,
    /// owned by the Airway).
    pub fn airway_configuration(&self, airway: &Value, names: &TemplateNames) -> Value {
        let airway_name = airway
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {
                "name": airway_name,
                "ownerReferences": [owner_reference(airway, "Airway")],
            },
            "webhooks": [self.webhook(
                &names.crd_name(),
                &format!("/validations/{airway_name}"),
                json!([{
                    "operations": ["CREATE", "UPDATE"],
                    "apiGroups": [names.group],
                    "apiVersions": [names.storage_version],
                    "resources": [names.plural],
                    "scope": if names.cluster_scoped { "Cluster" } else { "Namespaced" },
                }]),
                json!({"failurePolicy": "Fail", "timeoutSeconds": 10, "matchPolicy": "Exact", "matchConditions": self.match_conditions()}),
            )]
        })
    }
}

/// A CEL string literal.
fn cel_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

/// An ownerReference to `owner` (`blockOwnerDeletion: true`, no controller flag).
pub fn owner_reference(owner: &Value, kind: &str) -> Value {
    let text = |p: &str| {
        owner
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let api_version = owner
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or(API_VERSION);
    json!({
        "apiVersion": api_version,
        "kind": owner.get("kind").and_then(Value::as_str).unwrap_or(kind),
        "name": text("/metadata/name"),
        "uid": text("/metadata/uid"),
        "blockOwnerDeletion": true,
    })
}

/// Why a template cannot become a CRD.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid crd template: {0}")]
pub struct TemplateError(pub String);

/// Mutates a CRD template as Yoke does: every version gets the status subresource, a
/// missing schema becomes `{type: object}`, `status.conditions` is injected (a user `status`
/// must be an object and its `conditions` must be the metav1.Condition list), and `status`
/// leaves `required`.
pub fn mutate_template(template: &Value) -> Result<Value, TemplateError> {
    let mut template = template.clone();
    let Some(versions) = template.get_mut("versions").and_then(Value::as_array_mut) else {
        return Err(TemplateError(
            "spec.template.versions must be a list".into(),
        ));
    };
    for version in versions.iter_mut() {
        let Some(version) = version.as_object_mut() else {
            return Err(TemplateError("every version must be an object".into()));
        };
        let name = version
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let subresources = object_entry(version, "subresources");
        subresources
            .entry("status")
            .or_insert_with(|| Value::Object(Map::new()));
        let schema = object_entry(version, "schema");
        let root = object_entry(schema, "openAPIV3Schema");
        root.entry("type").or_insert_with(|| json!("object"));
        let properties = object_entry(root, "properties");
        let status = properties
            .entry("status")
            .or_insert_with(|| json!({"type": "object"}));
        let Some(status) = status.as_object_mut() else {
            return Err(TemplateError(format!(
                "version {name}: status must be a schema object"
            )));
        };
        match status.get("type").and_then(Value::as_str) {
            None => {
                status.insert("type".into(), json!("object"));
            }
            Some("object") => {}
            Some(other) => {
                return Err(TemplateError(format!(
                    "version {name}: status must be of type object, not {other}"
                )));
            }
        }
        let status_properties = object_entry(status, "properties");
        if let Some(existing) = status_properties.get("conditions")
            && existing.get("type").and_then(Value::as_str) != Some("array")
        {
            return Err(TemplateError(format!(
                "version {name}: status.conditions must be a list of metav1.Condition"
            )));
        }
        status_properties.insert("conditions".into(), conditions_schema());
        if let Some(required) = root.get_mut("required").and_then(Value::as_array_mut) {
            required.retain(|r| r.as_str() != Some("status"));
        }
    }
    Ok(template)
}

fn object_entry<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
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

/// The CRD of an Airway: its name, the mutated template, an ownerReference to the Airway and,
/// with a converter, the conversion webhook.
pub fn airway_crd(
    airway: &Value,
    converter: bool,
    webhooks: &Webhooks,
) -> Result<Value, TemplateError> {
    let name = airway
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let template = airway
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    let mut spec = mutate_template(&template)?;
    if converter && let Some(spec) = spec.as_object_mut() {
        spec.insert(
            "conversion".into(),
            json!({
                "strategy": "Webhook",
                "webhook": {
                    "conversionReviewVersions": ["v1"],
                    "clientConfig": webhooks.client_config(&format!("/crdconvert/{name}")),
                }
            }),
        );
    }
    Ok(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name, "ownerReferences": [owner_reference(airway, "Airway")]},
        "spec": spec,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks() -> Webhooks {
        Webhooks {
            target: WebhookTarget::Url("https://127.0.0.1:3000/".into()),
            ca_pem: "PEM".into(),
            own_user: None,
        }
    }

    #[test]
    fn template_mutation_adds_status_and_conditions() {
        let template = json!({
            "group": "examples.com", "scope": "Namespaced",
            "names": {"kind": "Backend", "plural": "backends"},
            "versions": [
                {"name": "v1", "served": true, "storage": true,
                 "schema": {"openAPIV3Schema": {"type": "object", "required": ["spec", "status"],
                    "properties": {"spec": {"type": "object"}}}}},
                {"name": "v2", "served": true, "storage": false}
            ]
        });
        let out = mutate_template(&template).unwrap();
        for i in 0..2 {
            let v = &out["versions"][i];
            assert_eq!(v["subresources"]["status"], json!({}));
            let root = &v["schema"]["openAPIV3Schema"];
            assert_eq!(root["type"], json!("object"));
            assert_eq!(root["properties"]["status"]["type"], json!("object"));
            assert_eq!(
                root["properties"]["status"]["properties"]["conditions"]["x-kubernetes-list-map-keys"],
                json!(["type"])
            );
        }
        assert_eq!(
            out["versions"][0]["schema"]["openAPIV3Schema"]["required"],
            json!(["spec"])
        );

        let bad = json!({"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {"properties": {"status": {"type": "string"}}}}}]});
        let err = mutate_template(&bad).unwrap_err().to_string();
        assert!(err.contains("status must be of type object"), "{err}");
        assert!(mutate_template(&json!({})).is_err());
    }

    #[test]
    fn crd_is_owned_by_the_airway_and_converts_through_the_webhook() {
        let airway = json!({
            "apiVersion": "yoke.cd/v1alpha1", "kind": "Airway",
            "metadata": {"name": "backends.examples.com", "uid": "u-1"},
            "spec": {"template": {"group": "examples.com", "names": {"kind": "Backend", "plural": "backends"},
                "scope": "Namespaced", "versions": [{"name": "v1", "served": true, "storage": true}]}}
        });
        let crd = airway_crd(&airway, true, &hooks()).unwrap();
        assert_eq!(crd["metadata"]["name"], json!("backends.examples.com"));
        assert_eq!(crd["metadata"]["ownerReferences"][0]["uid"], json!("u-1"));
        assert_eq!(
            crd["metadata"]["ownerReferences"][0]["blockOwnerDeletion"],
            json!(true)
        );
        assert_eq!(
            crd["spec"]["conversion"]["webhook"]["clientConfig"]["url"],
            json!("https://127.0.0.1:3000/crdconvert/backends.examples.com")
        );
        let crd = airway_crd(&airway, false, &hooks()).unwrap();
        assert!(crd["spec"].get("conversion").is_none());
    }

    #[test]
    fn webhook_configurations() {
        let service = Webhooks {
            target: WebhookTarget::Service {
                name: "atc-atc".into(),
                namespace: "atc".into(),
                port: 80,
            },
            ca_pem: "PEM".into(),
            own_user: None,
        };
        let globals = service.global_configurations();
        assert_eq!(globals[0]["metadata"]["name"], json!("atc-airway"));
        assert_eq!(
            globals[1]["webhooks"][0]["matchConditions"][0]["expression"],
            json!(
                "request.userInfo.username != \"system:serviceaccount:atc:atc-atc-service-account\""
            )
        );
        assert_eq!(
            globals[0]["webhooks"][0]["clientConfig"]["service"]["path"],
            json!("/validations/airways.yoke.cd")
        );
        let names = TemplateNames {
            group: "examples.com".into(),
            kind: "Backend".into(),
            plural: "backends".into(),
            cluster_scoped: false,
            storage_version: "v1".into(),
        };
        let airway = json!({"metadata": {"name": "backends.examples.com", "uid": "u"}});
        let config = hooks().airway_configuration(&airway, &names);
        assert_eq!(
            config["webhooks"][0]["name"],
            json!("backends.examples.com")
        );
        assert_eq!(
            config["webhooks"][0]["clientConfig"]["url"],
            json!("https://127.0.0.1:3000/validations/backends.examples.com")
        );
        assert_eq!(
            config["webhooks"][0]["rules"][0]["scope"],
            json!("Namespaced")
        );
        assert!(
            config["webhooks"][0]["matchConditions"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }
}
