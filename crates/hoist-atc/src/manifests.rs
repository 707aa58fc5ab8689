//! The manifests that install the controller in a cluster (as Yoke's atc-installer lays them
//! out): ServiceAccount, ClusterRoleBinding to cluster-admin, Service, Deployment. The
//! controller applies its CRDs and webhook configurations itself at start, and makes a
//! self-signed CA when no TLS files are mounted.

use serde_json::{Value, json};

/// What the manifests are made for.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// Release name: objects are `<release>-atc...`.
    pub release: String,
    /// Namespace.
    pub namespace: String,
    /// Container image running `hoist`.
    pub image: String,
    /// Container port of the HTTPS server.
    pub port: u16,
    /// Allow-list globs.
    pub module_allow_list: Vec<String>,
    /// Concurrency.
    pub concurrency: u16,
    /// Replicas: more than one turns on leader election (a Lease in the namespace; the
    /// followers are not ready, so the Service reaches the leader).
    pub replicas: u16,
}

/// The installation objects, in apply order.
pub fn install_manifests(opts: &InstallOptions) -> Vec<Value> {
    let name = format!("{}-atc", opts.release);
    let sa = format!("{name}-service-account");
    let labels = json!({"yoke.cd/app": "atc"});
    let mut env = vec![
        json!({"name": "PORT", "value": opts.port.to_string()}),
        json!({"name": "SVC_NAME", "value": name}),
        json!({"name": "SVC_NAMESPACE", "value": opts.namespace}),
        json!({"name": "SVC_PORT", "value": "80"}),
        json!({"name": "CACHE_FS", "value": "/tmp/cache"}),
        json!({"name": "CONCURRENCY", "value": opts.concurrency.to_string()}),
    ];
    if !opts.module_allow_list.is_empty() {
        env.push(json!({"name": "MODULE_ALLOW_LIST", "value": opts.module_allow_list.join(",")}));
    }
    let replicas = opts.replicas.max(1);
    if replicas > 1 {
        env.push(json!({"name": "LEADER_ELECT", "value": "true"}));
        env.push(json!({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}));
    }
    // One replica: Recreate, as Yoke's installer. Several: a rolling update keeps a leader
    // candidate running.
    let strategy = if replicas > 1 {
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    } else {
        json!({"type": "Recreate"})
    };
    let probe =
        |path: &str| json!({"httpGet": {"path": path, "port": opts.port, "scheme": "HTTPS"}});
    vec![
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": sa, "namespace": opts.namespace}
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": format!("{name}-cluster-role-binding")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": opts.namespace}]
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": opts.namespace},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": opts.port, "protocol": "TCP"}]}
        }),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": opts.namespace, "labels": labels},
            "spec": {
                "replicas": replicas,
                "strategy": strategy,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": sa,
                        "containers": [{
                            "name": "atc",
                            "image": opts.image,
                            "imagePullPolicy": "IfNotPresent",
                            "args": ["atc"],
                            "env": env,
                            "ports": [{"containerPort": opts.port}],
                            "livenessProbe": probe("/live"),
                            "readinessProbe": probe("/ready"),
                            "volumeMounts": [{"name": "cache", "mountPath": "/tmp/cache"}]
                        }],
                        "volumes": [{"name": "cache", "emptyDir": {}}]
                    }
                }
            }
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_name_things_as_the_installer() {
        let objects = install_manifests(&InstallOptions {
            release: "atc".into(),
            namespace: "atc".into(),
            image: "hoist:dev".into(),
            port: 3000,
            module_allow_list: vec!["oci://registry:80/*".into()],
            concurrency: 4,
            replicas: 1,
        });
        let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            [
                "ServiceAccount",
                "ClusterRoleBinding",
                "Service",
                "Deployment"
            ]
        );
        assert_eq!(
            objects[0]["metadata"]["name"],
            json!("atc-atc-service-account")
        );
        assert_eq!(objects[2]["metadata"]["name"], json!("atc-atc"));
        let env = objects[3]["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap();
        assert!(
            env.iter()
                .any(|e| e["name"] == "MODULE_ALLOW_LIST" && e["value"] == "oci://registry:80/*")
        );
        assert!(
            env.iter()
                .any(|e| e["name"] == "SVC_NAME" && e["value"] == "atc-atc")
        );
        assert!(!env.iter().any(|e| e["name"] == "LEADER_ELECT"));
        assert_eq!(objects[3]["spec"]["strategy"]["type"], "Recreate");
    }

    #[test]
    fn several_replicas_elect_a_leader() {
        let objects = install_manifests(&InstallOptions {
            release: "atc".into(),
            namespace: "atc".into(),
            image: "hoist:dev".into(),
            port: 3000,
            module_allow_list: vec![],
            concurrency: 4,
            replicas: 2,
        });
        let deployment = &objects[3];
        assert_eq!(deployment["spec"]["replicas"], 2);
        assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
        let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap();
        assert!(
            env.iter()
                .any(|e| e["name"] == "LEADER_ELECT" && e["value"] == "true")
        );
        assert!(env.iter().any(|e| e["name"] == "POD_NAMESPACE"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"));
    }
}
