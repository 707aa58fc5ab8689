//! Helpers for tests against the real control plane, shared by hoist-release's own tests
//! (`tests/cluster.rs`) and the controller's end-to-end tests (`hoist-cli/tests/atc_*.rs`,
//! through `#[path]`): the kubeconfig from the environment, unique names, and plain
//! get/apply/delete/list on a [`Connection`].
#![allow(dead_code)] // each test crate uses a different subset

use hoist_release::Connection;
use serde_json::Value;
use std::path::PathBuf;

/// The kubeconfig in `var`; without it, skips locally (None) and fails in CI.
pub fn kubeconfig(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "{var} is not set: start the control plane with scripts/control-plane start and export {var}=target/control-plane/kubeconfig"
                );
            }
            eprintln!(
                "skipping: {var} is not set (run scripts/control-plane start and export {var})"
            );
            None
        }
    }
}

/// A name unlikely to collide with other test runs: `prefix-<pid><nanos>` (a DNS label).
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{:x}{:x}",
        std::process::id() & 0xffff,
        nanos & 0xfffff
    )
}

/// The live object, or None (absent, or its kind is not served).
pub async fn get(
    conn: &Connection,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
    name: &str,
) -> Option<Value> {
    let res = conn.resolve(api_version, kind).await.ok()??;
    conn.get_object(&res, ns, name).await.ok()?
}

/// Server-side applies `object` as a user would (`kubectl apply --server-side`, forced).
pub async fn apply(conn: &Connection, object: &Value) -> Result<Value, String> {
    let api_version = object["apiVersion"].as_str().unwrap();
    let kind = object["kind"].as_str().unwrap();
    let res = conn
        .resolve(api_version, kind)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{api_version} {kind} is not served"))?;
    let ns = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str);
    let name = object["metadata"]["name"].as_str().unwrap();
    conn.apply_object(&res, ns, name, object, false, true)
        .await
        .map_err(|e| e.to_string())
}

/// Deletes an object (absent is fine).
pub async fn delete(
    conn: &Connection,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
    name: &str,
) {
    if let Ok(Some(res)) = conn.resolve(api_version, kind).await {
        let _ = conn.delete_object(&res, ns, name).await;
    }
}

/// Objects of a kind matching a label selector.
pub async fn list(
    conn: &Connection,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
    selector: &str,
) -> Vec<Value> {
    let res = conn.resolve(api_version, kind).await.unwrap().unwrap();
    conn.list_objects(&res, ns, Some(selector)).await.unwrap()
}

/// Creates (or keeps) a namespace.
pub async fn namespace(conn: &Connection, name: &str) {
    let ns =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    apply(conn, &ns).await.unwrap();
}
