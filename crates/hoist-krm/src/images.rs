//! Where a function image comes from: registry mirrors (air-gapped use, tests) and semver
//! `tag:` constraints.
//!
//! Mirrors redirect a registry host to another registry (optionally with a path prefix):
//! - the config file `$HOIST_CONFIG`, else `~/.config/hoist/config.yaml`:
//!   ```yaml
//!   registryMirrors:
//!     ghcr.io: http://127.0.0.1:5000
//!     registry.example: 127.0.0.1:5001/mirror
//!   ```
//! - the environment, which wins over the file:
//!   `HOIST_REGISTRY_MIRRORS=ghcr.io=http://127.0.0.1:5000,registry.example=127.0.0.1:5001`.
//!
//! The scheme of a mirror is informational: loopback registries are spoken to over plain
//! http, others over https unless `--insecure`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Lists the tags of the repository `reference` (`host/repo`, no scheme) names, blocking
/// (on a runtime of its own; in a scoped thread when called from async code).
pub fn list_tags(reference: &str, options: &hoist_oci::PullOptions) -> Result<Vec<String>, String> {
    let run = || -> Result<Vec<String>, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime to list tags: {e}"))?;
        runtime
            .block_on(hoist_oci::list_tags(reference, options))
            .map_err(|e| e.to_string())
    };
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|scope| {
            scope
                .spawn(run)
                .join()
                .unwrap_or_else(|_| Err("the tag-listing thread panicked".to_string()))
        })
    } else {
        run()
    }
}

/// Registry host -> mirror (`host[:port][/prefix]`, without scheme).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mirrors {
    map: BTreeMap<String, String>,
}

/// A mirror configuration that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The config file could not be read or parsed.
    #[error("hoist config {path}: {message} (expected `registryMirrors: {{HOST: MIRROR, ...}}`)")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `HOIST_REGISTRY_MIRRORS` is malformed.
    #[error(
        "HOIST_REGISTRY_MIRRORS entry {0:?} is not HOST=MIRROR (e.g. ghcr.io=http://127.0.0.1:5000)"
    )]
    Env(String),
}

fn strip_scheme(m: &str) -> String {
    let m = m.trim();
    let m = m
        .strip_prefix("http://")
        .or_else(|| m.strip_prefix("https://"))
        .or_else(|| m.strip_prefix("oci://"))
        .unwrap_or(m);
    m.trim_end_matches('/').to_string()
}

impl Mirrors {
    /// Mirrors from the config file (`$HOIST_CONFIG` or `~/.config/hoist/config.yaml`, if it
    /// exists) and `HOIST_REGISTRY_MIRRORS` (which wins).
    pub fn from_env() -> Result<Mirrors, MirrorError> {
        let file = match std::env::var_os("HOIST_CONFIG") {
            Some(p) => Some(PathBuf::from(p)),
            None => std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".config/hoist/config.yaml"))
                .filter(|p| p.is_file()),
        };
        let mut m = match file {
            Some(path) => Mirrors::from_file(&path)?,
            None => Mirrors::default(),
        };
        if let Ok(env) = std::env::var("HOIST_REGISTRY_MIRRORS") {
            m.extend_from_env_value(&env)?;
        }
        Ok(m)
    }

    /// Mirrors from a config file's `registryMirrors` map.
    pub fn from_file(path: &Path) -> Result<Mirrors, MirrorError> {
        let err = |message: String| MirrorError::Config {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let v = crate::yaml::parse_one(&text).map_err(err)?;
        let mut m = Mirrors::default();
        match v.get("registryMirrors") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(o)) => {
                for (host, mirror) in o {
                    let Some(mirror) = mirror.as_str() else {
                        return Err(err(format!("registryMirrors.{host} is not a string")));
                    };
                    m.map.insert(host.clone(), strip_scheme(mirror));
                }
            }
            Some(_) => return Err(err("registryMirrors is not a mapping".into())),
        }
        Ok(m)
    }

    /// Adds `HOST=MIRROR,...` entries (later ones win).
    pub fn extend_from_env_value(&mut self, value: &str) -> Result<(), MirrorError> {
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (host, mirror) = entry
                .split_once('=')
                .filter(|(h, m)| !h.trim().is_empty() && !m.trim().is_empty())
                .ok_or_else(|| MirrorError::Env(entry.to_string()))?;
            self.map
                .insert(strip_scheme(host).to_string(), strip_scheme(mirror));
        }
        Ok(())
    }

    /// Whether no mirror is configured.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Rewrites an image reference (`host/repo[:tag|@digest]`, no scheme) to its mirror.
    pub fn rewrite(&self, reference: &str) -> String {
        let Some((host, rest)) = reference.split_once('/') else {
            return reference.to_string();
        };
        match self.map.get(host) {
            Some(mirror) => format!("{mirror}/{rest}"),
            None => reference.to_string(),
        }
    }
}

/// A semver version (`v` prefix allowed, pre-release kept for ordering only).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    major: u64,
    minor: u64,
    patch: u64,
    /// Release versions sort after pre-releases: `true` for a release.
    release: bool,
    pre: String,
}

impl Version {
    /// Parses `v1.2.3`, `1.2`, `1`, `1.2.3-rc.1`.
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim().trim_start_matches('v');
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) => (c, p.to_string()),
            None => (s, String::new()),
        };
        let core = core.split('+').next().unwrap_or(core);
        let mut it = core.split('.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next().map(str::parse).transpose().ok()?.unwrap_or(0);
        let patch = it.next().map(str::parse).transpose().ok()?.unwrap_or(0);
        if it.next().is_some() {
            return None;
        }
        Some(Version {
            major,
            minor,
            patch,
            release: pre.is_empty(),
            pre,
        })
    }
}

/// Whether a Kptfile `tag:` is a semver constraint rather than a plain tag: it has an
/// operator, a wildcard, a comma, or spaces.
pub fn is_constraint(tag: &str) -> bool {
    tag.contains(['<', '>', '=', '~', '^', '*', ',', ' ', '|']) || tag.contains(".x")
}

/// Picks the highest tag of `tags` that satisfies the semver constraint `constraint`
/// (Masterminds/semver as kpt uses it: `>=`, `>`, `<=`, `<`, `=`, `!=`, `~`, `^`, `x`/`*`
/// wildcards, `,` or space for AND, `||` for OR). Pre-releases match only when the constraint
/// names one.
pub fn resolve_constraint<'a>(constraint: &str, tags: &'a [String]) -> Option<&'a String> {
    let alternatives: Vec<Vec<(String, Version)>> = constraint
        .split("||")
        .map(|alt| {
            alt.split([',', ' '])
                .filter(|c| !c.trim().is_empty())
                .filter_map(|c| expand(c.trim()))
                .flatten()
                .collect()
        })
        .collect();
    let allows_pre = constraint.contains('-');
    tags.iter()
        .filter_map(|t| Version::parse(t).map(|v| (t, v)))
        .filter(|(_, v)| v.release || allows_pre)
        .filter(|(_, v)| {
            alternatives
                .iter()
                .any(|alt| !alt.is_empty() && alt.iter().all(|(op, c)| cmp(op, v, c)))
        })
        .max_by(|a, b| a.1.cmp(&b.1))
        .map(|(t, _)| t)
}

fn cmp(op: &str, v: &Version, c: &Version) -> bool {
    let key = |x: &Version| (x.major, x.minor, x.patch, x.release, x.pre.clone());
    let (v, c) = (key(v), key(c));
    match op {
        ">=" => v >= c,
        ">" => v > c,
        "<=" => v <= c,
        "<" => v < c,
        "!=" => v != c,
        _ => v == c,
    }
}

/// One comparison term -> the (op, version) pairs it means.
fn expand(term: &str) -> Option<Vec<(String, Version)>> {
    let (op, rest) = ["~>", ">=", "<=", "!=", ">", "<", "=", "~", "^"]
        .iter()
        .find_map(|op| term.strip_prefix(op).map(|r| (*op, r.trim())))
        .unwrap_or(("", term));
    let rest = rest.trim_start_matches('v');
    let parts: Vec<&str> = rest.split('.').collect();
    let wild = |p: Option<&&str>| matches!(p, None | Some(&"x") | Some(&"X") | Some(&"*"));
    let num = |p: Option<&&str>| p.and_then(|s| s.split('-').next()?.parse::<u64>().ok());
    let major = num(parts.first());
    let v = |a: u64, b: u64, c: u64| Version {
        major: a,
        minor: b,
        patch: c,
        release: false,
        pre: String::new(),
    };
    // Lower bounds use the lowest pre-release of the version so that `>=1.2` includes 1.2.0.
    let low = |a, b, c| v(a, b, c);
    if rest == "*" || rest.eq_ignore_ascii_case("x") || rest.is_empty() {
        return Some(vec![(">=".into(), low(0, 0, 0))]);
    }
    let major = major?;
    let minor_wild = wild(parts.get(1));
    let patch_wild = wild(parts.get(2));
    let minor = num(parts.get(1)).unwrap_or(0);
    let patch = num(parts.get(2)).unwrap_or(0);
    Some(match op {
        "^" => {
            let upper = if major > 0 || minor_wild {
                v(major + 1, 0, 0)
            } else if minor > 0 || patch_wild {
                v(0, minor + 1, 0)
            } else {
                v(0, 0, patch + 1)
            };
            vec![(">=".into(), low(major, minor, patch)), ("<".into(), upper)]
        }
        "~" | "~>" => {
            let upper = if minor_wild {
                v(major + 1, 0, 0)
            } else {
                v(major, minor + 1, 0)
            };
            vec![(">=".into(), low(major, minor, patch)), ("<".into(), upper)]
        }
        "" | "=" if minor_wild || patch_wild => {
            let upper = if minor_wild {
                v(major + 1, 0, 0)
            } else {
                v(major, minor + 1, 0)
            };
            vec![(">=".into(), low(major, minor, patch)), ("<".into(), upper)]
        }
        ">" if minor_wild || patch_wild => {
            let upper = if minor_wild {
                v(major + 1, 0, 0)
            } else {
                v(major, minor + 1, 0)
            };
            vec![(">=".into(), upper)]
        }
        "<=" if minor_wild || patch_wild => {
            let upper = if minor_wild {
                v(major + 1, 0, 0)
            } else {
                v(major, minor + 1, 0)
            };
            vec![("<".into(), upper)]
        }
        ">=" | "<" => vec![(op.into(), low(major, minor, patch))],
        _ => vec![(
            if op.is_empty() { "=" } else { op }.into(),
            Version::parse(rest)?,
        )],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_rewrite_hosts() {
        let mut m = Mirrors::default();
        m.extend_from_env_value("ghcr.io=http://127.0.0.1:5000, docker.io=127.0.0.1:5001/hub/")
            .unwrap();
        assert_eq!(
            m.rewrite("ghcr.io/kptdev/krm-functions-catalog/set-namespace:v0.4.1"),
            "127.0.0.1:5000/kptdev/krm-functions-catalog/set-namespace:v0.4.1"
        );
        assert_eq!(
            m.rewrite("docker.io/x/y@sha256:ab"),
            "127.0.0.1:5001/hub/x/y@sha256:ab"
        );
        assert_eq!(m.rewrite("quay.io/x/y:1"), "quay.io/x/y:1");
        assert!(m.extend_from_env_value("ghcr.io").is_err());
        assert!(m.extend_from_env_value("=x").is_err());

        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("config.yaml");
        std::fs::write(
            &f,
            "registryMirrors:\n  ghcr.io: https://127.0.0.1:5443/g\n",
        )
        .unwrap();
        let m = Mirrors::from_file(&f).unwrap();
        assert_eq!(m.rewrite("ghcr.io/a/b:1"), "127.0.0.1:5443/g/a/b:1");
        std::fs::write(&f, "registryMirrors: [a]\n").unwrap();
        let e = Mirrors::from_file(&f).unwrap_err().to_string();
        assert!(
            e.contains("not a mapping") && e.contains("config.yaml"),
            "{e}"
        );
    }

    #[test]
    fn semver_constraints_pick_the_highest_match() {
        let tags: Vec<String> = [
            "latest",
            "v0.3.0",
            "v0.4.0",
            "v0.4.1",
            "v0.4.5",
            "v0.5.0-rc.1",
            "v0.5.0",
            "v1.0.0",
            "v1.2.0",
            "unstable",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let pick = |c: &str| resolve_constraint(c, &tags).map(String::as_str);
        assert_eq!(pick("~0.4"), Some("v0.4.5"));
        assert_eq!(pick("~0.4.1"), Some("v0.4.5"));
        assert_eq!(pick("^0.4.1"), Some("v0.4.5"));
        assert_eq!(pick("^1.0"), Some("v1.2.0"));
        assert_eq!(pick(">=0.4, <1.0"), Some("v0.5.0"));
        assert_eq!(pick("0.4.x"), Some("v0.4.5"));
        assert_eq!(pick("v0.4.*"), Some("v0.4.5"));
        assert_eq!(pick("<0.4"), Some("v0.3.0"));
        assert_eq!(pick("0.3.0 || 1.0.0"), Some("v1.0.0"));
        assert_eq!(pick(">=2"), None);
        assert_eq!(pick("*"), Some("v1.2.0"));
        assert!(is_constraint("~0.4") && is_constraint(">=1, <2") && is_constraint("0.4.x"));
        assert!(!is_constraint("v0.4.1") && !is_constraint("latest"));
    }
}
