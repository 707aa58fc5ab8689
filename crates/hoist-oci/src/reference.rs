//! Parsing `oci://REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]` references.

use std::fmt;

use crate::error::{OciError, Result};

/// The tag used when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";

/// A parsed OCI reference.
///
/// The registry is always explicit (no implicit Docker Hub): `oci://docker.io/library/x`
/// is accepted, `oci://library/x` is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciReference {
    /// Registry host with optional port, as written (`ghcr.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path (`org/module`), lowercase.
    pub repository: String,
    /// The tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// The manifest digest (`sha256:<64 hex>`) when pinned.
    pub digest: Option<String>,
}

impl OciReference {
    /// Parses a reference, with or without the `oci://` prefix.
    pub fn parse(input: &str) -> Result<Self> {
        let bad = |reason: &str| OciError::InvalidReference {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        let s = input.trim();
        let s = s.strip_prefix("oci://").unwrap_or(s);
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(bad(&format!(
                "unsupported scheme '{scheme}://' (only oci:// is an OCI reference)"
            )));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("it contains whitespace or control characters"));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(parse_digest(d).map_err(|r| bad(&r))?)),
            None => (s, None),
        };
        let Some((registry, rest)) = name_tag.split_once('/') else {
            return Err(bad("missing repository after the registry host"));
        };
        validate_registry(registry).map_err(|r| bad(&r))?;
        let (repository, tag) = match rest.rsplit_once(':') {
            Some((repo, tag)) => (repo, Some(tag)),
            None => (rest, None),
        };
        validate_repository(repository).map_err(|r| bad(&r))?;
        if let Some(tag) = tag {
            validate_tag(tag).map_err(|r| bad(&r))?;
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Self {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository@digest`.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}/{}@{}", self.registry, self.repository, digest)
    }

    /// The host part of the registry, without port or IPv6 brackets.
    pub fn host(&self) -> &str {
        registry_host(&self.registry)
    }

    /// Whether the registry is on a loopback address (`localhost`, `127.0.0.0/8`, `[::1]`),
    /// which is spoken to over plain http, as Docker and crane do.
    pub fn is_loopback(&self) -> bool {
        let host = self.host();
        host == "localhost"
            || host == "::1"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The `host[:port]` that serves the registry API (`docker.io` is served by
    /// `registry-1.docker.io`).
    pub fn api_host(&self) -> &str {
        match self.registry.as_str() {
            "docker.io" | "index.docker.io" => "registry-1.docker.io",
            other => other,
        }
    }
}

impl fmt::Display for OciReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn registry_host(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

/// Validates `sha256:<64 lowercase hex>`; returns it unchanged.
pub(crate) fn parse_digest(d: &str) -> std::result::Result<String, String> {
    let Some((alg, hex)) = d.split_once(':') else {
        return Err(format!(
            "digest '{d}' must look like sha256:<64 hex digits>"
        ));
    };
    if alg != "sha256" {
        return Err(format!(
            "digest algorithm '{alg}' is not supported (only sha256)"
        ));
    }
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "digest '{d}' must be sha256: followed by 64 lowercase hex digits"
        ));
    }
    Ok(d.to_string())
}

fn validate_registry(r: &str) -> std::result::Result<(), String> {
    if r.is_empty() {
        return Err("the registry host is empty".into());
    }
    let (host, port) = if let Some(rest) = r.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return Err(format!("registry '{r}' has an unclosed '['"));
        };
        if h.is_empty()
            || !h
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(format!("registry '{r}' is not a valid IPv6 address"));
        }
        match after.strip_prefix(':') {
            _ if after.is_empty() => (h, None),
            Some(port) => (h, Some(port)),
            None => return Err(format!("registry '{r}' has junk after ']'")),
        }
    } else {
        match r.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (r, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty()
            || p.len() > 5
            || !p.bytes().all(|b| b.is_ascii_digit())
            || p.parse::<u32>().map_or(true, |n| n == 0 || n > 65535))
    {
        return Err(format!(
            "registry port '{p}' is not a number from 1 to 65535"
        ));
    }
    if !r.starts_with('[') {
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            || host.starts_with('-')
            || host.starts_with('.')
        {
            return Err(format!("registry host '{host}' is not a valid host name"));
        }
        if !(host.contains('.') || port.is_some() || host == "localhost") {
            return Err(format!(
                "'{host}' is not a registry host (no '.', no port, not localhost); name the registry explicitly, e.g. oci://docker.io/{host}/..."
            ));
        }
    }
    Ok(())
}

fn validate_repository(repo: &str) -> std::result::Result<(), String> {
    if repo.is_empty() {
        return Err("the repository is empty".into());
    }
    if repo.len() > 255 {
        return Err("the repository is longer than 255 characters".into());
    }
    for comp in repo.split('/') {
        if comp.is_empty() {
            return Err(format!("repository '{repo}' has an empty path component"));
        }
        if comp.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!("repository '{repo}' must be lowercase"));
        }
        let bytes = comp.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if !bytes
            .iter()
            .all(|&b| alnum(b) || b == b'.' || b == b'_' || b == b'-')
        {
            return Err(format!(
                "repository component '{comp}' may only hold a-z, 0-9, '.', '_' and '-'"
            ));
        }
        let first = bytes.first().copied().unwrap_or(b'.');
        let last = bytes.last().copied().unwrap_or(b'.');
        if !alnum(first) || !alnum(last) {
            return Err(format!(
                "repository component '{comp}' must start and end with a letter or digit"
            ));
        }
        // Separators: '.', '_', '__' or any run of '-'; never mixed.
        let separators = comp
            .split(|c: char| c.is_ascii() && alnum(c as u8))
            .filter(|sep| !sep.is_empty());
        for sep in separators {
            if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
                return Err(format!(
                    "repository component '{comp}' has an invalid separator '{sep}'"
                ));
            }
        }
    }
    Ok(())
}

/// Validates a tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub(crate) fn validate_tag(tag: &str) -> std::result::Result<(), String> {
    let ok_first = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = |b: u8| ok_first(b) || b == b'.' || b == b'-';
    match tag.as_bytes() {
        [] => Err("the tag after ':' is empty".into()),
        [first, rest @ ..]
            if ok_first(*first) && rest.iter().all(|&b| ok(b)) && rest.len() < 128 =>
        {
            Ok(())
        }
        _ => Err(format!(
            "tag '{tag}' must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_common_forms() {
        let r = OciReference::parse("oci://ghcr.io/org/mod:v1").unwrap();
        assert_eq!(r.registry, "ghcr.io");
        assert_eq!(r.repository, "org/mod");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest, None);

        let r = OciReference::parse("127.0.0.1:5000/a/b/c").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "a/b/c");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert!(r.is_loopback());

        let r = OciReference::parse(&format!("oci://localhost:5000/x@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        assert!(r.is_loopback());

        let r = OciReference::parse(&format!("oci://[::1]:5000/x:v2@{D}")).unwrap();
        assert_eq!(r.registry, "[::1]:5000");
        assert_eq!(r.host(), "::1");
        assert!(r.is_loopback());
        assert_eq!(r.tag.as_deref(), Some("v2"));
        assert_eq!(r.to_string(), format!("[::1]:5000/x:v2@{D}"));

        let r = OciReference::parse("oci://docker.io/library/hello").unwrap();
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert!(!r.is_loopback());
        assert_eq!(r.with_digest(D), format!("docker.io/library/hello@{D}"));
        let r =
            OciReference::parse("oci://registry.example.com/a__b/c-d--e/f.g_h:1.0_rc-1").unwrap();
        assert_eq!(r.repository, "a__b/c-d--e/f.g_h");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "oci://",
            "https://ghcr.io/x",
            "ghcr.io",
            "ghcr.io/",
            "library/hello",
            "hello",
            "ghcr.io/Org/x",
            "ghcr.io/org//x",
            "ghcr.io/org/x:",
            "ghcr.io/org/x:-bad",
            "ghcr.io/org/x@sha256:abc",
            "ghcr.io/org/x@md5:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "ghcr.io:99999/x",
            "ghcr.io:/x",
            "ghcr.io/x y",
            "ghcr.io/-x",
            "ghcr.io/x._y",
            "[::1/x",
        ] {
            let err = OciReference::parse(bad).expect_err(bad);
            let msg = err.to_string();
            assert!(msg.contains("invalid OCI reference"), "{bad}: {msg}");
        }
        let long_tag = format!("ghcr.io/x:{}", "a".repeat(129));
        assert!(OciReference::parse(&long_tag).is_err());
        let msg = OciReference::parse("library/hello")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("not a registry host"), "{msg}");
    }
}
