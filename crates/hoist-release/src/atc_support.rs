//! Support for the in-cluster controller (hoist-atc): a connection from the pod's service
//! account.

use crate::connect::{Connection, KubeSettings};
use crate::error::{Error, Result};
use std::sync::Arc;
use tokio::sync::RwLock;

/// Connects with the in-cluster configuration (service account token, `KUBERNETES_SERVICE_*`).
pub fn connect_in_cluster() -> Result<Connection> {
    let config = kube::Config::incluster().map_err(|e| Error::Kubeconfig {
        path: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
        message: format!("no in-cluster configuration: {e}"),
    })?;
    let server = config.cluster_url.to_string();
    let namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config).map_err(|e| Error::Kubeconfig {
        path: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
        message: format!("cannot build a client: {e}"),
    })?;
    Ok(Connection {
        client,
        settings: KubeSettings {
            path: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
            context: "in-cluster".into(),
            default_namespace: namespace,
            server,
        },
        discovery: Arc::new(RwLock::new(None)),
    })
}
