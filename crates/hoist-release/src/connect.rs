//! Connecting to a cluster from a kubeconfig (`--kubeconfig`, `$KUBECONFIG`,
//! `~/.kube/config`; `--kube-context`).

use crate::error::{Error, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::Discovery;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::RwLock;

/// What a kubeconfig says, read without contacting the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    /// The kubeconfig file(s) read (a `$KUBECONFIG` list is joined with `:`).
    pub path: PathBuf,
    /// The context used.
    pub context: String,
    /// The context's default namespace (`default` when unset).
    pub default_namespace: String,
    /// The cluster's server URL.
    pub server: String,
}

fn kubeconfig_paths(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(path) = explicit {
        return vec![path.to_path_buf()];
    }
    if let Some(list) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        let paths: Vec<PathBuf> = std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if !paths.is_empty() {
            return paths;
        }
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    vec![home.join(".kube").join("config")]
}

/// kube-client 5.0 decodes a file that starts with a UTF-16 byte-order mark by pairs of
/// bytes and panics (index out of bounds) when their number is odd; such a file is not a
/// kubeconfig, so it is refused here first. (Found by the `kubeconfig` fuzz target.)
fn refuse_torn_utf16(path: &Path) -> Result<()> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(()); // Missing or unreadable: kube-client's error says which.
    };
    let utf16 = bytes.starts_with(&[0xFE, 0xFF]) || bytes.starts_with(&[0xFF, 0xFE]);
    if utf16 && bytes.len() % 2 == 1 {
        return Err(Error::Kubeconfig {
            path: path.to_path_buf(),
            message: format!(
                "it starts with a UTF-16 byte-order mark but has an odd number of bytes ({}): it is truncated or not a kubeconfig",
                bytes.len()
            ),
        });
    }
    Ok(())
}

fn read_kubeconfig(explicit: Option<&Path>) -> Result<(PathBuf, Kubeconfig)> {
    let paths = kubeconfig_paths(explicit);
    let shown = PathBuf::from(
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":"),
    );
    let mut merged: Option<Kubeconfig> = None;
    for path in &paths {
        if explicit.is_none() && paths.len() > 1 && !path.exists() {
            continue;
        }
        refuse_torn_utf16(path)?;
        let config = Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig {
            path: path.clone(),
            message: if path.exists() {
                e.to_string()
            } else {
                "the file does not exist (pass --kubeconfig or set KUBECONFIG)".to_string()
            },
        })?;
        merged = Some(match merged {
            None => config,
            Some(m) => m.merge(config).map_err(|e| Error::Kubeconfig {
                path: path.clone(),
                message: e.to_string(),
            })?,
        });
    }
    let config = merged.ok_or_else(|| Error::Kubeconfig {
        path: shown.clone(),
        message: "no kubeconfig file exists".to_string(),
    })?;
    Ok((shown, config))
}

/// Reads the kubeconfig and picks the context, without any network access (for the default
/// `--namespace` of commands that render before connecting).
pub fn kube_settings(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<KubeSettings> {
    let (path, config) = read_kubeconfig(kubeconfig)?;
    settings_of(&path, &config, context)
}

/// The namespace of the selected context (`None` when the context sets none), without any
/// network access and without requiring the context's cluster to be complete.
pub fn context_namespace(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<Option<String>> {
    let (path, config) = read_kubeconfig(kubeconfig)?;
    let (_, ctx) = select_context(&path, &config, context)?;
    Ok(ctx.namespace.filter(|n| !n.is_empty()))
}

/// The context named `context`, else the current one.
fn select_context(
    path: &Path,
    config: &Kubeconfig,
    context: Option<&str>,
) -> Result<(String, kube::config::Context)> {
    let bad = |message: String| Error::Kubeconfig {
        path: path.to_path_buf(),
        message,
    };
    let name = match context {
        Some(c) => c.to_string(),
        None => config
            .current_context
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| bad("no current-context is set (pass --kube-context)".into()))?,
    };
    let ctx = config
        .contexts
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.context.clone())
        .ok_or_else(|| {
            let known: Vec<&str> = config.contexts.iter().map(|c| c.name.as_str()).collect();
            bad(format!(
                "context {name:?} not found (known: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })?;
    Ok((name, ctx))
}

fn settings_of(path: &Path, config: &Kubeconfig, context: Option<&str>) -> Result<KubeSettings> {
    let bad = |message: String| Error::Kubeconfig {
        path: path.to_path_buf(),
        message,
    };
    let (name, ctx) = select_context(path, config, context)?;
    let server = config
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .ok_or_else(|| {
            bad(format!(
                "cluster {:?} of context {name:?} has no server URL",
                ctx.cluster
            ))
        })?;
    Ok(KubeSettings {
        path: path.to_path_buf(),
        context: name,
        default_namespace: ctx
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string()),
        server,
    })
}

/// A connection to one cluster: the client, the settings it came from, and a discovery
/// cache shared by everything in the process that uses this connection (clone it freely).
#[derive(Clone)]
pub struct Connection {
    /// The kube client.
    pub client: kube::Client,
    /// Where the connection came from.
    pub settings: KubeSettings,
    pub(crate) discovery: Arc<RwLock<Option<Arc<Discovery>>>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The context's default namespace.
    pub fn default_namespace(&self) -> &str {
        &self.settings.default_namespace
    }

    /// The API server URL.
    pub fn server(&self) -> &str {
        &self.settings.server
    }
}

/// Connects using a kubeconfig (`kubeconfig`, else `$KUBECONFIG`, else `~/.kube/config`) and
/// context (`context`, else the current context). Does not contact the server yet.
pub async fn connect(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Connection> {
    let (path, config) = read_kubeconfig(kubeconfig)?;
    let settings = settings_of(&path, &config, context)?;
    let options = KubeConfigOptions {
        context: Some(settings.context.clone()),
        cluster: None,
        user: None,
    };
    let mut client_config = kube::Config::from_custom_kubeconfig(config, &options)
        .await
        .map_err(|e| Error::Kubeconfig {
            path: path.clone(),
            message: e.to_string(),
        })?;
    client_config.connect_timeout = Some(std::time::Duration::from_secs(10));
    client_config.read_timeout = Some(std::time::Duration::from_secs(120));
    let client = kube::Client::try_from(client_config).map_err(|e| Error::Kubeconfig {
        path: path.clone(),
        message: format!("cannot build a client: {e}"),
    })?;
    Ok(Connection {
        client,
        settings,
        discovery: Arc::new(RwLock::new(None)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_utf16_kubeconfig_is_refused_not_a_panic() {
        let path = std::env::temp_dir().join(format!("hoist-torn-utf16-{}", std::process::id()));
        std::fs::write(&path, b"\xfe\xff\x61").unwrap();
        let Err(error) = read_kubeconfig(Some(&path)) else {
            panic!("a torn UTF-16 kubeconfig was accepted");
        };
        assert!(error.to_string().contains("odd number of bytes"), "{error}");
        std::fs::write(&path, b"\xff\xfe\x61\x00\x62").unwrap();
        assert!(read_kubeconfig(Some(&path)).is_err());
        let _ = std::fs::remove_file(&path);
    }

    const CONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: a
clusters:
- name: c1
  cluster: {server: "https://127.0.0.1:6443"}
contexts:
- name: a
  context: {cluster: c1, user: u, namespace: team}
- name: b
  context: {cluster: c1, user: u}
users:
- name: u
  user: {token: abc}
"#;

    #[test]
    fn reads_contexts_and_namespaces() {
        let dir = std::env::temp_dir().join(format!("hoist-release-kc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config");
        std::fs::write(&path, CONFIG).unwrap();
        let s = kube_settings(Some(&path), None).unwrap();
        assert_eq!(
            (s.context.as_str(), s.default_namespace.as_str()),
            ("a", "team")
        );
        assert_eq!(s.server, "https://127.0.0.1:6443");
        let s = kube_settings(Some(&path), Some("b")).unwrap();
        assert_eq!(s.default_namespace, "default");
        let err = kube_settings(Some(&path), Some("zz"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("context \"zz\" not found") && err.contains(&path.display().to_string()),
            "{err}"
        );
        let missing = dir.join("missing");
        let err = kube_settings(Some(&missing), None).unwrap_err().to_string();
        assert!(
            err.contains("does not exist") && err.contains("missing"),
            "{err}"
        );
        std::fs::write(&path, "not: [yaml").unwrap();
        let err = kube_settings(Some(&path), None).unwrap_err().to_string();
        assert!(err.starts_with("bad kubeconfig"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
