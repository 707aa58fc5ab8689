//! Low-level dynamic operations on one cluster: discovery (cached per connection), get,
//! server-side apply, delete, patch, list.

use crate::connect::Connection;
use crate::error::{Error, Result};
use crate::state::FIELD_MANAGER;
use hoist_resources::Resource;
use kube::api::{DeleteParams, GetParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::core::{GroupVersionKind, Request};
use kube::discovery::{ApiResource, Discovery, Scope};
use serde_json::Value;
use std::sync::Arc;

/// A resolved API type: where to send requests and whether objects are namespaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Group, version, kind and plural.
    pub resource: ApiResource,
    /// Namespaced (true) or cluster-scoped.
    pub namespaced: bool,
}

impl Resolved {
    /// The URL path of the collection (in `namespace` when namespaced).
    pub fn collection_url(&self, namespace: Option<&str>) -> String {
        let r = &self.resource;
        let base = if r.group.is_empty() {
            format!("/api/{}", r.version)
        } else {
            format!("/apis/{}/{}", r.group, r.version)
        };
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!("{base}/namespaces/{ns}/{}", r.plural),
            None => format!("{base}/{}", r.plural),
        }
    }
}

/// Splits an apiVersion into group and version (`v1` → core).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

impl Connection {
    async fn discovery(&self, refresh: bool) -> Result<Arc<Discovery>> {
        if !refresh && let Some(d) = self.discovery.read().await.as_ref() {
            return Ok(d.clone());
        }
        let mut guard = self.discovery.write().await;
        if !refresh && let Some(d) = guard.as_ref() {
            return Ok(d.clone());
        }
        let discovery = Discovery::new(self.client.clone())
            .run_aggregated()
            .await
            .map_err(|e| Error::from_kube(e, "discovering the cluster's APIs", self.server()))?;
        let discovery = Arc::new(discovery);
        *guard = Some(discovery.clone());
        Ok(discovery)
    }

    /// Resolves an apiVersion and kind; `None` when the cluster does not serve it (after
    /// refreshing the cached discovery once).
    pub async fn resolve(&self, api_version: &str, kind: &str) -> Result<Option<Resolved>> {
        let (group, version) = split_api_version(api_version);
        let gvk = GroupVersionKind::gvk(group, version, kind);
        for refresh in [false, true] {
            let discovery = self.discovery(refresh).await?;
            if let Some((resource, caps)) = discovery.resolve_gvk(&gvk) {
                return Ok(Some(Resolved {
                    resource,
                    namespaced: caps.scope == Scope::Namespaced,
                }));
            }
        }
        Ok(None)
    }

    /// Resolves the type of `resource`, or fails with [`Error::UnknownKind`].
    pub async fn resolve_resource(&self, resource: &Resource) -> Result<Resolved> {
        if resource.api_version().is_empty() {
            return Err(Error::BadObject {
                object: resource.to_string(),
                message: "the object has no apiVersion".into(),
            });
        }
        self.resolve(resource.api_version(), resource.kind())
            .await?
            .ok_or_else(|| Error::UnknownKind {
                api_version: resource.api_version().to_string(),
                kind: resource.kind().to_string(),
                object: resource.to_string(),
            })
    }

    /// Resolves a group (or `group/version`) and kind to the preferred version, for
    /// `k8s_rest_mapping`.
    pub async fn resolve_group_kind(
        &self,
        group_or_api_version: &str,
        kind: &str,
    ) -> Result<Option<Resolved>> {
        let (group, version) = match group_or_api_version.split_once('/') {
            Some((g, v)) => (g, Some(v)),
            // A bare "v1" is the core group's version, not a group.
            None if group_or_api_version
                .strip_prefix('v')
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
                && !group_or_api_version.contains('.') =>
            {
                ("", Some(group_or_api_version))
            }
            None => (group_or_api_version, None),
        };
        if let Some(version) = version {
            let api_version = if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            };
            return self.resolve(&api_version, kind).await;
        }
        for refresh in [false, true] {
            let discovery = self.discovery(refresh).await?;
            if let Some(api_group) = discovery.get(group)
                && let Some((resource, caps)) = api_group.recommended_kind(kind)
            {
                return Ok(Some(Resolved {
                    resource,
                    namespaced: caps.scope == Scope::Namespaced,
                }));
            }
        }
        Ok(None)
    }

    /// GETs an object; `Ok(None)` when it does not exist.
    pub async fn get_object(
        &self,
        resolved: &Resolved,
        namespace: Option<&str>,
        name: &str,
    ) -> std::result::Result<Option<Value>, kube::Error> {
        let request = Request::new(resolved.collection_url(namespace))
            .get(name, &GetParams::default())
            .map_err(kube::Error::BuildRequest)?;
        match self.client.request::<Value>(request).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if Error::kube_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Server-side applies `object` with field manager `yoke`.
    pub async fn apply_object(
        &self,
        resolved: &Resolved,
        namespace: Option<&str>,
        name: &str,
        object: &Value,
        dry_run: bool,
        force: bool,
    ) -> std::result::Result<Value, kube::Error> {
        let mut params = PatchParams::apply(FIELD_MANAGER);
        if force {
            params = params.force();
        }
        if dry_run {
            params = params.dry_run();
        }
        let request = Request::new(resolved.collection_url(namespace))
            .patch(name, &params, &Patch::Apply(object))
            .map_err(kube::Error::BuildRequest)?;
        self.client.request::<Value>(request).await
    }

    /// Merge-patches an object (not as a field manager of its content).
    pub async fn merge_patch(
        &self,
        resolved: &Resolved,
        namespace: Option<&str>,
        name: &str,
        patch: &Value,
    ) -> std::result::Result<Value, kube::Error> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        let request = Request::new(resolved.collection_url(namespace))
            .patch(name, &params, &Patch::Merge(patch))
            .map_err(kube::Error::BuildRequest)?;
        self.client.request::<Value>(request).await
    }

    /// Deletes an object; `Ok(false)` when it was already gone. Objects that may own others
    /// (workloads, custom resources) are deleted in the foreground, as Yoke does, so their
    /// dependents are gone before the previous stage is pruned; core and RBAC objects, which
    /// own nothing, in the background (the garbage collector's foreground finalizer would
    /// otherwise make deleting hundreds of ConfigMaps take tens of seconds).
    pub async fn delete_object(
        &self,
        resolved: &Resolved,
        namespace: Option<&str>,
        name: &str,
    ) -> std::result::Result<bool, kube::Error> {
        let owns_nothing = matches!(
            resolved.resource.group.as_str(),
            "" | "rbac.authorization.k8s.io"
        ) && resolved.resource.kind != "Namespace";
        let params = DeleteParams {
            propagation_policy: Some(if owns_nothing {
                PropagationPolicy::Background
            } else {
                PropagationPolicy::Foreground
            }),
            ..Default::default()
        };
        let request = Request::new(resolved.collection_url(namespace))
            .delete(name, &params)
            .map_err(kube::Error::BuildRequest)?;
        match self.client.request::<Value>(request).await {
            Ok(_) => Ok(true),
            Err(e) if Error::kube_not_found(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Lists objects (items as JSON) with a label selector.
    pub async fn list_objects(
        &self,
        resolved: &Resolved,
        namespace: Option<&str>,
        selector: Option<&str>,
    ) -> std::result::Result<Vec<Value>, kube::Error> {
        let mut params = ListParams::default();
        if let Some(s) = selector {
            params = params.labels(s);
        }
        let request = Request::new(resolved.collection_url(namespace))
            .list(&params)
            .map_err(kube::Error::BuildRequest)?;
        let list: Value = self.client.request(request).await?;
        Ok(match list.get("items") {
            Some(Value::Array(items)) => items.clone(),
            _ => Vec::new(),
        })
    }
}

/// The namespace to address `resource` in (`None` for cluster-scoped types).
pub fn namespace_for<'a>(resolved: &Resolved, resource: &'a Resource) -> Option<&'a str> {
    if resolved.namespaced {
        resource.namespace()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let core = Resolved {
            resource: ApiResource {
                group: String::new(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                plural: "configmaps".into(),
            },
            namespaced: true,
        };
        assert_eq!(
            core.collection_url(Some("ns")),
            "/api/v1/namespaces/ns/configmaps"
        );
        let crd = Resolved {
            resource: ApiResource {
                group: "apiextensions.k8s.io".into(),
                version: "v1".into(),
                api_version: "apiextensions.k8s.io/v1".into(),
                kind: "CustomResourceDefinition".into(),
                plural: "customresourcedefinitions".into(),
            },
            namespaced: false,
        };
        assert_eq!(
            crd.collection_url(Some("ignored")),
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        );
        assert_eq!(split_api_version("apps/v1"), ("apps", "v1"));
        assert_eq!(split_api_version("v1"), ("", "v1"));
    }
}
