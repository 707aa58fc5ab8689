//! Resource-access matchers: `[namespace/]Kind[.group][:name]` with `*` wildcards, as Yoke's
//! `--resource-access` accepts them.

use std::fmt;
use std::str::FromStr;

/// One `--resource-access` matcher.
///
/// - `*` matches everything;
/// - `Kind.group` (e.g. `Deployment.apps`, or `ConfigMap` for the core group) any namespace
///   and name;
/// - `ns/Kind.group` only in namespace `ns`; `*/...` any namespace;
/// - `...:name` only objects with that name; `:*` any name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceMatcher {
    namespace: Option<String>,
    group_kind: Option<String>,
    name: Option<String>,
    raw: String,
}

/// Why a matcher string is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid resource matcher {matcher:?}: {reason} (expected [namespace/]Kind.group[:name], `*` as wildcard)"
)]
pub struct MatcherError {
    /// The matcher as given.
    pub matcher: String,
    /// What is wrong.
    pub reason: String,
}

fn wildcard(part: &str) -> Option<String> {
    (part != "*").then(|| part.to_string())
}

impl FromStr for ResourceMatcher {
    type Err = MatcherError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| MatcherError {
            matcher: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s == "*" {
            return Ok(ResourceMatcher {
                namespace: None,
                group_kind: None,
                name: None,
                raw: s.to_string(),
            });
        }
        let (namespace, rest) = match s.split_once('/') {
            Some((ns, rest)) => (ns, rest),
            None => ("*", s),
        };
        let (group_kind, name) = match rest.split_once(':') {
            Some((gk, name)) => (gk, name),
            None => (rest, "*"),
        };
        if namespace.is_empty() {
            return Err(err("the namespace before `/` is empty"));
        }
        if group_kind.is_empty() {
            return Err(err("the Kind.group part is empty"));
        }
        if name.is_empty() {
            return Err(err("the name after `:` is empty"));
        }
        if group_kind.contains('/') || name.contains('/') {
            return Err(err("only one `/` is allowed"));
        }
        Ok(ResourceMatcher {
            namespace: wildcard(namespace),
            group_kind: wildcard(group_kind),
            name: wildcard(name),
            raw: s.to_string(),
        })
    }
}

impl fmt::Display for ResourceMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Go's `GroupKind.String()`: `Kind.group`, or `Kind` for the core group.
pub fn group_kind(group: &str, kind: &str) -> String {
    if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    }
}

impl ResourceMatcher {
    /// Does the matcher cover the object `namespace`/`group`/`kind`/`name`
    /// (`namespace` empty for cluster-scoped objects)?
    pub fn matches(&self, namespace: &str, group: &str, kind: &str, name: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self
                .group_kind
                .as_deref()
                .is_none_or(|gk| gk == group_kind(group, kind))
            && self.name.as_deref().is_none_or(|n| n == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yoke_matcher_cases() {
        // The cases of Yoke's own matcher test, against Deployment foo/test in group apps.
        let matches = |m: &str| {
            m.parse::<ResourceMatcher>()
                .map(|m| m.matches("foo", "apps", "Deployment", "test"))
                .unwrap_or(false)
        };
        for m in [
            "*",
            "foo/Deployment.apps:test",
            "Deployment.apps:test",
            "Deployment.apps",
            "*/*",
            "*/Deployment.apps",
            "foo/Deployment.apps:*",
            "*/Deployment.apps:*",
        ] {
            assert!(matches(m), "{m} should match");
        }
        for m in [
            "",
            "/",
            "Deployment",
            "bar/Deployment.apps",
            "Deployment.custom:test",
            "Deployment.apps:other",
            "bar/*",
        ] {
            assert!(!matches(m), "{m} should not match");
        }
    }

    #[test]
    fn core_group_and_errors() {
        let m: ResourceMatcher = "ConfigMap:settings".parse().unwrap();
        assert!(m.matches("any", "", "ConfigMap", "settings"));
        assert!(!m.matches("any", "", "ConfigMap", "other"));
        assert_eq!(m.to_string(), "ConfigMap:settings");
        for bad in ["", "/ConfigMap", "ns/", "ConfigMap:", "a/b/c"] {
            let err = bad.parse::<ResourceMatcher>().unwrap_err();
            assert!(
                err.to_string().contains("invalid resource matcher"),
                "{err}"
            );
        }
    }
}
