//! Which cluster and namespace, resolved as kubectl does: `--kubeconfig`, else `$KUBECONFIG`
//! (several files merged), else `~/.kube/config`; `--kube-context`, else the current context.

use std::path::PathBuf;

/// The kubeconfig and context named on the command line.
#[derive(Debug, Clone, Default)]
pub struct KubeTarget {
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `--kube-context`.
    pub context: Option<String>,
}

impl KubeTarget {
    /// The namespace of the selected context, else `default`. Reading the kubeconfig never
    /// fails a render: without one (or with a broken one) the namespace is `default`.
    pub fn default_namespace(&self) -> String {
        self.context_namespace()
            .unwrap_or_else(|| "default".to_string())
    }

    fn context_namespace(&self) -> Option<String> {
        match hoist_release::context_namespace(self.kubeconfig.as_deref(), self.context.as_deref())
        {
            Ok(namespace) => namespace,
            Err(e) => {
                tracing::debug!("no usable kubeconfig ({e}); namespace defaults to `default`");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_comes_from_the_selected_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: a\nclusters: []\nusers: []\ncontexts:\n- name: a\n  context: {cluster: c, user: u, namespace: team-a}\n- name: b\n  context: {cluster: c, user: u}\n",
        )
        .unwrap();
        let target = |context: Option<&str>| KubeTarget {
            kubeconfig: Some(path.clone()),
            context: context.map(str::to_string),
        };
        assert_eq!(target(None).default_namespace(), "team-a");
        assert_eq!(target(Some("b")).default_namespace(), "default");
        assert_eq!(target(Some("missing")).default_namespace(), "default");
        let broken = KubeTarget {
            kubeconfig: Some(dir.path().join("nope")),
            context: None,
        };
        assert_eq!(broken.default_namespace(), "default");
    }
}
