//! Digest pinning across release revisions.
//!
//! Every revision records the module URL and a checksum of the module. When a new deployment
//! uses a *pinnable* URL that an earlier revision of the release already used, the module
//! must be the same bytes: a changed `oci://…:v1.2.3` or `https://…/app.wasm` is refused.
//!
//! Pinnable ([`is_pinnable`], Yoke's rule): `http(s)://` URLs; `oci://` references whose tag is
//! semver-like (`v1`, `1.2`, `v1.2.3`, `1.2.3-rc.1+build`, with or without `v`) or that are
//! pinned by digest (`@sha256:…`). Not pinnable: local files (plain paths and `file://`),
//! OCI references without a tag or with a moving tag (`latest`, `stable`, `main`, …). Other
//! schemes are pinnable (the safe default, as in Yoke).
//!
//! Checksums of earlier revisions come from their annotations, and Yoke wrote **SHA-1** there
//! while hoist uses SHA-256. A SHA-1 can only be compared with a SHA-1, so the caller passes
//! both digests of the new module ([`ModuleDigests::of`] computes them); a previous checksum is
//! recognised by its form: 64 hex (or `sha256:` + 64 hex) is SHA-256, 40 hex (or `sha1:` +
//! 40 hex) is SHA-1. Anything else cannot be compared and is counted in
//! [`PinReport::uncomparable`] so the caller can warn.

use sha1::Digest as _;
use thiserror::Error;

use crate::allow::normalize_url;
use crate::checksum::Sha256Digest;

/// Whether a module URL is pinned across revisions (see the module docs).
pub fn is_pinnable(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false; // a local path
    };
    match scheme.to_ascii_lowercase().as_str() {
        "file" => false,
        "http" | "https" => true,
        "oci" => {
            let Some(path) = rest.find('/').and_then(|i| rest.get(i..)) else {
                return false;
            };
            if path.contains('@') {
                return true; // pinned by digest: immutable by construction
            }
            match path
                .rsplit('/')
                .next()
                .and_then(|last| last.split_once(':'))
            {
                Some((_, tag)) => is_semver_tag(tag),
                None => false,
            }
        }
        _ => true,
    }
}

/// Go's `semver.IsValid` after adding a missing `v`: `vMAJOR[.MINOR[.PATCH[-pre][+build]]]`,
/// numbers without leading zeros; pre-release and build only after a full `MAJOR.MINOR.PATCH`.
fn is_semver_tag(tag: &str) -> bool {
    let v = tag.strip_prefix('v').unwrap_or(tag);
    let (core, build) = match v.split_once('+') {
        Some((c, b)) => (c, Some(b)),
        None => (v, None),
    };
    let (core, pre) = match core.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (core, None),
    };
    let numbers: Vec<&str> = core.split('.').collect();
    let numeric = |n: &str| {
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && (n == "0" || !n.starts_with('0'))
    };
    if numbers.is_empty() || numbers.len() > 3 || !numbers.iter().all(|n| numeric(n)) {
        return false;
    }
    if (pre.is_some() || build.is_some()) && numbers.len() != 3 {
        return false;
    }
    let idents_ok = |s: &str, is_pre: bool| {
        s.split('.').all(|id| {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !(is_pre
                    && id.bytes().all(|b| b.is_ascii_digit())
                    && id.len() > 1
                    && id.starts_with('0'))
        })
    };
    pre.is_none_or(|p| idents_ok(p, true)) && build.is_none_or(|b| idents_ok(b, false))
}

/// Both digests of a new module, so it can be compared with SHA-256 (hoist) and SHA-1 (Yoke)
/// records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleDigests {
    /// SHA-256 of the (decompressed) module.
    pub sha256: Sha256Digest,
    /// Lowercase hex SHA-1 of the module, to compare with revisions Yoke recorded. `None`
    /// when the caller does not have it; Yoke records are then uncomparable.
    pub sha1: Option<String>,
}

impl ModuleDigests {
    /// Computes both digests of `module`.
    pub fn of(module: &[u8]) -> ModuleDigests {
        ModuleDigests {
            sha256: Sha256Digest::of(module),
            sha1: Some(hex::encode(sha1::Sha1::digest(module))),
        }
    }
}

/// A pinned module whose content changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "module {url} changed since an earlier revision deployed it: that revision recorded {algorithm} {previous}, this module is {algorithm} {new}. \
     A versioned or http(s) module URL must keep its content: publish the change under a new version or URL (the release history keeps the old one)"
)]
pub struct PinError {
    /// The module URL (as given now).
    pub url: String,
    /// `sha256` or `sha1`: which digests were compared.
    pub algorithm: &'static str,
    /// The digest the earlier revision recorded (lowercase hex).
    pub previous: String,
    /// The new module's digest with the same algorithm (lowercase hex).
    pub new: String,
}

/// What [`check_pin`] compared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinReport {
    /// Whether the URL is pinnable at all (if not, nothing was compared).
    pub pinnable: bool,
    /// Earlier revisions with the same URL whose checksum matched.
    pub compared: usize,
    /// Earlier revisions with the same URL whose checksum could not be compared (unknown
    /// format, or SHA-1 without [`ModuleDigests::sha1`]).
    pub uncomparable: usize,
}

enum Recorded {
    Sha256(String),
    Sha1(String),
    Unknown,
}

fn parse_recorded(checksum: &str) -> Recorded {
    let c = checksum.trim().to_ascii_lowercase();
    let is_hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let (prefix, body) = match c.split_once(':') {
        Some((p, b)) => (Some(p.to_string()), b.to_string()),
        None => (None, c.clone()),
    };
    match (prefix.as_deref(), body.len()) {
        (None | Some("sha256"), 64) if is_hex(&body) => Recorded::Sha256(body),
        (None | Some("sha1"), 40) if is_hex(&body) => Recorded::Sha1(body),
        _ => Recorded::Unknown,
    }
}

fn same_url(a: &str, b: &str) -> bool {
    match (normalize_url(a), normalize_url(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Refuses `url` when an earlier revision (`previous`: `(url, recorded checksum)` pairs) used
/// the same pinnable URL with different content.
pub fn check_pin<'a, I>(url: &str, new: &ModuleDigests, previous: I) -> Result<PinReport, PinError>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut report = PinReport {
        pinnable: is_pinnable(url),
        ..PinReport::default()
    };
    if !report.pinnable {
        return Ok(report);
    }
    for (prev_url, checksum) in previous {
        if !same_url(url, prev_url) {
            continue;
        }
        let (algorithm, previous, current) = match parse_recorded(checksum) {
            Recorded::Sha256(p) => ("sha256", p, new.sha256.to_hex()),
            Recorded::Sha1(p) => match &new.sha1 {
                Some(s) => ("sha1", p, s.to_ascii_lowercase()),
                None => {
                    report.uncomparable += 1;
                    continue;
                }
            },
            Recorded::Unknown => {
                report.uncomparable += 1;
                continue;
            }
        };
        if previous != current {
            return Err(PinError {
                url: url.to_string(),
                algorithm,
                previous,
                new: current,
            });
        }
        report.compared += 1;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinnable_like_yoke() {
        for url in [
            "oci://ghcr.io/repo/mod:v1.2.3",
            "oci://ghcr.io/repo/mod:1.2.3",
            "oci://ghcr.io/repo/mod:v1",
            "oci://ghcr.io/repo/mod:1",
            "oci://ghcr.io/repo/mod:1.2",
            "oci://ghcr.io/repo/mod:v1.2.3-prerelease",
            "oci://ghcr.io/repo/mod:1.2.3-prerelease",
            "oci://ghcr.io/repo/mod:v1.2.3-prerelease+build",
            "oci://ghcr.io/repo/mod:1.2.3-rc.1+build.5",
            "oci://localhost:5000/repo/mod:v0.1.0",
            "oci://ghcr.io/repo/mod@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "http://domain.io/module.wasm.gz",
            "https://domain.io/module.wasm",
            "HTTPS://domain.io/module.wasm",
            "s3://bucket/mod.wasm",
        ] {
            assert!(is_pinnable(url), "{url} should be pinnable");
        }
        for url in [
            "oci://ghcr.io/repo/mod",
            "oci://ghcr.io/repo/mod:latest",
            "oci://ghcr.io/repo/mod:stable",
            "oci://ghcr.io/repo/mod:experimental",
            "oci://localhost:5000/repo/mod",
            "oci://ghcr.io/repo/mod:v01.2.3",
            "oci://ghcr.io/repo/mod:1.2-rc1",
            "oci://ghcr.io/repo/mod:1.2.3.4",
            "oci://ghcr.io/repo/mod:v",
            "oci://ghcr.io/repo/mod:sha256_0123",
            "oci://ghcr.io",
            "file://./main.wasm",
            "file:///abs/main.wasm",
            "./main.wasm",
            "/abs/main.wasm",
            "main.wasm",
        ] {
            assert!(!is_pinnable(url), "{url} should not be pinnable");
        }
    }

    const URL: &str = "oci://ghcr.io/org/mod:v1.2.3";

    #[test]
    fn same_content_passes_and_changed_content_is_refused() {
        let a = ModuleDigests::of(b"module a");
        let b = ModuleDigests::of(b"module b");
        let a_hex = a.sha256.to_hex();
        let r = check_pin(URL, &a, [(URL, a_hex.as_str())]).unwrap();
        assert_eq!(r.compared, 1);
        let err =
            check_pin(URL, &b, [("oci://other/x:v1", "00"), (URL, a_hex.as_str())]).unwrap_err();
        assert_eq!(err.algorithm, "sha256");
        assert_eq!(err.previous, a_hex);
        assert_eq!(err.new, b.sha256.to_hex());
        assert!(err.to_string().contains(&a_hex) && err.to_string().contains(&b.sha256.to_hex()));
        // Normalised URL comparison: case of scheme/host does not matter.
        assert!(check_pin("OCI://GHCR.IO/org/mod:v1.2.3", &b, [(URL, a_hex.as_str())]).is_err());
        // A different URL is not compared.
        let r = check_pin("oci://ghcr.io/org/mod:v1.2.4", &b, [(URL, a_hex.as_str())]).unwrap();
        assert_eq!(r.compared, 0);
    }

    #[test]
    fn yoke_sha1_records_compare_with_sha1() {
        let a = ModuleDigests::of(b"module a");
        let b = ModuleDigests::of(b"module b");
        let a_sha1 = a.sha1.clone().unwrap();
        assert_eq!(a_sha1.len(), 40);
        assert_eq!(
            check_pin(URL, &a, [(URL, a_sha1.as_str())])
                .unwrap()
                .compared,
            1
        );
        let upper = a_sha1.to_ascii_uppercase();
        assert_eq!(
            check_pin(URL, &a, [(URL, upper.as_str())])
                .unwrap()
                .compared,
            1
        );
        let err = check_pin(URL, &b, [(URL, a_sha1.as_str())]).unwrap_err();
        assert_eq!(err.algorithm, "sha1");
        // Without the new module's SHA-1, a SHA-1 record cannot be compared.
        let only256 = ModuleDigests {
            sha256: b.sha256,
            sha1: None,
        };
        let r = check_pin(URL, &only256, [(URL, a_sha1.as_str())]).unwrap();
        assert_eq!((r.compared, r.uncomparable), (0, 1));
        // Prefixed forms and garbage.
        let prefixed = format!("sha256:{}", a.sha256.to_hex());
        assert_eq!(
            check_pin(URL, &a, [(URL, prefixed.as_str())])
                .unwrap()
                .compared,
            1
        );
        let r = check_pin(URL, &a, [(URL, "md5:abc"), (URL, "")]).unwrap();
        assert_eq!(r.uncomparable, 2);
    }

    #[test]
    fn unpinnable_urls_are_never_refused() {
        let a = ModuleDigests::of(b"a");
        for url in [
            "./main.wasm",
            "file:///m.wasm",
            "oci://ghcr.io/org/mod:latest",
        ] {
            let r =
                check_pin(url, &a, [(url, "0000000000000000000000000000000000000000")]).unwrap();
            assert!(!r.pinnable);
        }
    }
}
