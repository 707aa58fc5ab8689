//! Cluster lookups for flights (`k8s_lookup`, `k8s_rest_mapping`), backed by the real API
//! server and limited as Yoke limits them: a flight may read objects owned by its own
//! release, or matching a `--resource-access` matcher.

use crate::connect::Connection;
use crate::matcher::ResourceMatcher;
use crate::ownership::{self, Owner};
use hoist_runtime::host::{ClusterAccess, HostError, LookupRequest};
use serde_json::{Value, json};

/// [`ClusterAccess`] for one release: a connection, a runtime handle to block on (lookups
/// come from the Wasm thread, never from an async task), and the matchers granted.
pub struct ReleaseClusterAccess {
    conn: Connection,
    handle: tokio::runtime::Handle,
    owner: Owner,
    matchers: Vec<ResourceMatcher>,
}

impl ReleaseClusterAccess {
    /// Access for `release` in `namespace`, with extra `matchers`.
    pub fn new(
        conn: Connection,
        handle: tokio::runtime::Handle,
        release: &str,
        namespace: &str,
        matchers: Vec<ResourceMatcher>,
    ) -> Self {
        ReleaseClusterAccess {
            conn,
            handle,
            owner: Owner::new(release, namespace),
            matchers,
        }
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.handle.block_on(future)
    }
}

fn host_error(err: kube::Error) -> HostError {
    match &err {
        kube::Error::Api(s) => match s.code {
            404 => HostError::NotFound(s.message.clone()),
            401 => HostError::Unauthenticated(s.message.clone()),
            403 => HostError::Forbidden(s.message.clone()),
            _ => HostError::Error(s.message.clone()),
        },
        other => HostError::Error(other.to_string()),
    }
}

impl ClusterAccess for ReleaseClusterAccess {
    fn lookup(&self, request: &LookupRequest) -> Result<Vec<u8>, HostError> {
        self.block_on(async {
            let (group, _) = crate::cluster::split_api_version(&request.api_version);
            let resolved = self
                .conn
                .resolve(&request.api_version, &request.kind)
                .await
                .map_err(|e| HostError::Error(e.to_string()))?
                .ok_or_else(|| {
                    HostError::NotFound(format!(
                        "no kind {} in apiVersion {} on the cluster",
                        request.kind, request.api_version
                    ))
                })?;
            let namespace = if resolved.namespaced {
                if request.namespace.is_empty() {
                    self.owner.namespace.clone()
                } else {
                    request.namespace.clone()
                }
            } else {
                String::new()
            };
            let ns = resolved.namespaced.then_some(namespace.as_str());
            let object = self
                .conn
                .get_object(&resolved, ns, &request.name)
                .await
                .map_err(host_error)?
                .ok_or_else(|| {
                    HostError::NotFound(format!(
                        "{} {}{} not found",
                        request.kind,
                        if namespace.is_empty() { String::new() } else { format!("{namespace}/") },
                        request.name
                    ))
                })?;
            let matched = self
                .matchers
                .iter()
                .any(|m| m.matches(&namespace, group, &request.kind, &request.name));
            let owned = object.as_object().and_then(ownership::owner_of).as_ref() == Some(&self.owner);
            if !matched && !owned {
                return Err(HostError::Forbidden(
                    "cannot access resource outside of target release ownership (grant it with --resource-access)".into(),
                ));
            }
            serde_json::to_vec(&object).map_err(|e| HostError::Error(e.to_string()))
        })
    }

    fn rest_mapping(&self, group_or_api_version: &str, kind: &str) -> Result<Vec<u8>, HostError> {
        self.block_on(async {
            let resolved = self
                .conn
                .resolve_group_kind(group_or_api_version, kind)
                .await
                .map_err(|e| HostError::Error(e.to_string()))?
                .ok_or_else(|| {
                    HostError::NotFound(format!(
                        "no mapping for kind {kind} in {group_or_api_version:?}"
                    ))
                })?;
            Ok(rest_mapping_json(&resolved))
        })
    }
}

/// Yoke's `k8s_rest_mapping` result: Go field names, no JSON tags.
pub fn rest_mapping_json(resolved: &crate::cluster::Resolved) -> Vec<u8> {
    let value: Value = json!({
        "Group": resolved.resource.group,
        "Version": resolved.resource.version,
        "Kind": resolved.resource.kind,
        "Resource": resolved.resource.plural,
        "Namespaced": resolved.namespaced,
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::discovery::ApiResource;

    #[test]
    fn rest_mapping_shape() {
        let resolved = crate::cluster::Resolved {
            resource: ApiResource {
                group: "apps".into(),
                version: "v1".into(),
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                plural: "deployments".into(),
            },
            namespaced: true,
        };
        let v: Value = serde_json::from_slice(&rest_mapping_json(&resolved)).unwrap();
        assert_eq!(
            v,
            json!({"Group":"apps","Version":"v1","Kind":"Deployment","Resource":"deployments","Namespaced":true})
        );
    }
}
