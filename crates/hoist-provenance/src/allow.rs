//! Module allow lists: which module URLs may be run at all.
//!
//! An [`AllowList`] holds globs matched against the *whole* normalised module URL:
//! - `*` and `?` never match `/`, so `oci://ghcr.io/yokecd/*` allows `oci://ghcr.io/yokecd/atc:v1`
//!   but not `oci://ghcr.io/yokecd/team/x`. `**` is not special: it behaves like `*` (as in
//!   Go's `path.Match`, which Yoke-style globs follow). `[abc]`, `[!a-z]` and `{a,b}` work as in
//!   `globset`; `\` escapes a metacharacter.
//! - Scheme and host are compared case-insensitively (both sides are lowercased); the path is
//!   case-sensitive.
//! - An empty allow list allows everything: it means "no allow list configured". Signature
//!   verification is independent (unlike Yoke, which checks signatures only when its allow
//!   list is empty).
//!
//! URLs are normalised *before* matching by [`normalize_url`], and anything that could make
//! the string that matches differ from the resource that is fetched is refused rather than
//! guessed at:
//! - no scheme (`://`) → refused: give local files as `file:///absolute/path`;
//! - userinfo (`https://good.example@evil.example/…`), backslashes, whitespace, control or
//!   non-ASCII characters → refused;
//! - `.` / `..` segments and empty segments (`//`, a trailing `/`) → refused;
//! - percent-encoded `/`, `\`, `.` or NUL (`%2F`, `%5C`, `%2E`, `%00`, any case), malformed `%`
//!   escapes → refused; other escapes of unreserved characters are decoded (`%61` → `a`), the
//!   rest keep an upper-case escape;
//! - query (`?`) or fragment (`#`) → refused: a glob like `…/modules/*.wasm` would otherwise
//!   accept `…/modules/evil.php?x=.wasm`;
//! - the host's trailing dot is dropped, default ports (`:80` for http, `:443` for https) are
//!   dropped, `file://localhost/` becomes `file:///`; a port must be digits.

use globset::{GlobSet, GlobSetBuilder};
use thiserror::Error;

/// Why a pattern or URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AllowError {
    /// An allow-list pattern is not usable.
    #[error("invalid allow-list pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong.
        reason: String,
    },
    /// The module URL cannot be matched safely.
    #[error("module URL {url:?} is refused by the allow list: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// No pattern matches the module URL.
    #[error(
        "module URL {url:?} is not in the allow list (allowed: {}); add a matching --allow pattern or use an allowed module",
        patterns.join(", ")
    )]
    NotAllowed {
        /// The normalised URL.
        url: String,
        /// The allow-list patterns.
        patterns: Vec<String>,
    },
}

/// A set of URL globs.
#[derive(Debug, Clone)]
pub struct AllowList {
    patterns: Vec<String>,
    set: GlobSet,
}

impl Default for AllowList {
    fn default() -> Self {
        AllowList {
            patterns: Vec::new(),
            set: GlobSet::empty(),
        }
    }
}

impl AllowList {
    /// Compiles the patterns (e.g. the repeated `--allow GLOB` values).
    pub fn new<I, S>(patterns: I) -> Result<AllowList, AllowError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut builder = GlobSetBuilder::new();
        let mut normalised = Vec::new();
        for p in patterns {
            let p = p.as_ref();
            let n = normalize_pattern(p)?;
            let glob = globset::GlobBuilder::new(&n)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| AllowError::InvalidPattern {
                    pattern: p.to_string(),
                    reason: e.kind().to_string(),
                })?;
            builder.add(glob);
            normalised.push(n);
        }
        let set = builder.build().map_err(|e| AllowError::InvalidPattern {
            pattern: normalised.join(" "),
            reason: e.to_string(),
        })?;
        Ok(AllowList {
            patterns: normalised,
            set,
        })
    }

    /// True when no pattern is configured (everything is allowed).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The normalised patterns.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Checks `url`. With an empty list, returns `Ok(None)` without looking at the URL;
    /// otherwise returns the first matching pattern, or why the URL is refused.
    pub fn check(&self, url: &str) -> Result<Option<&str>, AllowError> {
        if self.is_empty() {
            return Ok(None);
        }
        let normalised = normalize_url(url)?;
        let matches = self.set.matches(normalised.as_str());
        match matches.first() {
            Some(i) => Ok(self.patterns.get(*i).map(String::as_str)),
            None => Err(AllowError::NotAllowed {
                url: normalised,
                patterns: self.patterns.clone(),
            }),
        }
    }

    /// True when [`AllowList::check`] succeeds.
    pub fn is_allowed(&self, url: &str) -> bool {
        self.check(url).is_ok()
    }
}

fn url_err(url: &str, reason: impl Into<String>) -> AllowError {
    AllowError::InvalidUrl {
        url: url.to_string(),
        reason: reason.into(),
    }
}

/// Splits `scheme://rest`, validating and lowercasing the scheme.
fn split_scheme(s: &str) -> Option<(String, &str)> {
    let (scheme, rest) = s.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    if !first.is_ascii_alphabetic()
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    Some((scheme.to_ascii_lowercase(), rest))
}

/// Normalises a module URL for matching, or refuses it (see the module docs).
pub fn normalize_url(url: &str) -> Result<String, AllowError> {
    if url.is_empty() {
        return Err(url_err(url, "empty URL"));
    }
    if let Some(c) = url
        .chars()
        .find(|c| !c.is_ascii() || c.is_ascii_control() || *c == ' ')
    {
        return Err(url_err(
            url,
            format!(
                "it contains {c:?}: only printable ASCII without spaces is accepted (percent-encode, or use punycode for hosts)"
            ),
        ));
    }
    if url.contains('\\') {
        return Err(url_err(url, "it contains a backslash"));
    }
    let (scheme, rest) = split_scheme(url).ok_or_else(|| {
        url_err(
            url,
            "it is not a URL (scheme://...); give local modules as file:///absolute/path",
        )
    })?;
    if rest.contains('#') {
        return Err(url_err(
            url,
            "it has a fragment (#...), which allow lists do not accept",
        ));
    }
    if rest.contains('?') {
        return Err(url_err(
            url,
            "it has a query (?...), which allow lists do not accept: use a plain URL",
        ));
    }
    let (authority, path) = match rest.find('/').and_then(|i| rest.split_at_checked(i)) {
        Some(parts) => parts,
        None => (rest, ""),
    };
    let host = normalize_authority(&scheme, authority).map_err(|r| url_err(url, r))?;
    let path = normalize_path(path).map_err(|r| url_err(url, r))?;
    Ok(format!("{scheme}://{host}{path}"))
}

fn normalize_authority(scheme: &str, authority: &str) -> Result<String, String> {
    if authority.contains('@') {
        return Err(
            "it has userinfo (user@host); put credentials in the registry/HTTP config, not the URL"
                .into(),
        );
    }
    if authority.contains('%') {
        return Err("its host is percent-encoded".into());
    }
    let authority = authority.to_ascii_lowercase();
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unterminated [IPv6] host")?;
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err("invalid [IPv6] host".into());
        }
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err("junk after the [IPv6] host".into()),
        };
        (format!("[{host}]"), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority.as_str(), None),
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            || host.contains("..")
            || host.starts_with('.')
            // `h..` would keep a dot after the one trailing dot is dropped: an empty label,
            // and a second normalisation would change it again (found by fuzzing).
            || host.ends_with('.')
        {
            return Err(format!("invalid host {host:?}"));
        }
        (host.to_string(), port)
    };
    if let Some(p) = port
        && (p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) || p.len() > 5)
    {
        return Err(format!("invalid port {p:?}"));
    }
    let port = match (scheme, port) {
        ("http", Some("80")) | ("https", Some("443")) => None,
        (_, p) => p,
    };
    let host = if scheme == "file" && host == "localhost" {
        String::new()
    } else {
        host
    };
    if host.is_empty() && scheme != "file" {
        return Err("it has no host".into());
    }
    Ok(match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

fn normalize_path(path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Ok(String::new());
    }
    let mut out = String::with_capacity(path.len());
    // `path` starts with '/', so the first split element is empty.
    for segment in path.split('/').skip(1) {
        if segment.is_empty() {
            return Err("it has an empty path segment (// or a trailing /)".into());
        }
        let decoded = decode_segment(segment)?;
        if decoded == "." || decoded == ".." {
            return Err(format!("it has a {decoded:?} path segment"));
        }
        out.push('/');
        out.push_str(&decoded);
    }
    Ok(out)
}

fn decode_segment(segment: &str) -> Result<String, String> {
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(segment.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte != b'%' {
            out.push(char::from(byte));
            i += 1;
            continue;
        }
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or("it has a malformed percent escape")?;
        match hex {
            b'/' | b'\\' | b'.' | 0 => {
                return Err(format!(
                    "it has a percent-encoded {:?} (%{hex:02X}), which could hide a path change",
                    char::from(hex)
                ));
            }
            c if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'~' => {
                out.push(char::from(c))
            }
            c if c.is_ascii_control() => {
                return Err(format!(
                    "it has a percent-encoded control character (%{c:02X})"
                ));
            }
            c => out.push_str(&format!("%{c:02X}")),
        }
        i += 3;
    }
    Ok(out)
}

/// Normalises a pattern: lowercases scheme and host part, collapses `**` to `*`.
fn normalize_pattern(pattern: &str) -> Result<String, AllowError> {
    let bad = |reason: &str| AllowError::InvalidPattern {
        pattern: pattern.to_string(),
        reason: reason.to_string(),
    };
    if pattern
        .chars()
        .any(|c| !c.is_ascii() || c.is_ascii_control() || c == ' ')
    {
        return Err(bad("only printable ASCII without spaces is accepted"));
    }
    let (scheme, rest) = split_scheme(pattern).ok_or_else(|| {
        bad("an allow-list pattern is a whole URL glob such as oci://ghcr.io/org/* or https://example.com/modules/*")
    })?;
    let (authority, path) = match rest.find('/').and_then(|i| rest.split_at_checked(i)) {
        Some(parts) => parts,
        None => (rest, ""),
    };
    let mut path = path.to_string();
    while path.contains("**") {
        path = path.replace("**", "*");
    }
    let mut authority = authority.to_ascii_lowercase();
    while authority.contains("**") {
        authority = authority.replace("**", "*");
    }
    Ok(format!("{scheme}://{authority}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(p: &[&str]) -> AllowList {
        AllowList::new(p).unwrap()
    }

    #[test]
    fn hosts_with_empty_labels_are_refused_and_normalisation_is_idempotent() {
        // Fuzzer find (fuzz/regressions/allow_url): `file://n.c..` normalised to
        // `file://n.c.`, which normalised again to `file://n.c`.
        for url in [
            "file://n.c..",
            "https://h../m",
            "oci://a...:5000/x",
            "https://./x",
        ] {
            assert!(normalize_url(url).is_err(), "{url}");
        }
        assert_eq!(
            normalize_url("https://h.example./m").unwrap(),
            "https://h.example/m"
        );
    }

    #[test]
    fn yoke_doc_examples() {
        let l = list(&["oci://ghcr.io/yokecd/*"]);
        assert!(l.is_allowed("oci://ghcr.io/yokecd/atc:v1.2.3"));
        assert!(l.is_allowed("oci://ghcr.io/yokecd/examples"));
        assert!(!l.is_allowed("oci://ghcr.io/yokecd/team/mod:v1"));
        assert!(!l.is_allowed("oci://ghcr.io/other/mod:v1"));
        assert!(!l.is_allowed("oci://ghcr.io/yokecdx/mod:v1"));

        let l = list(&["oci://ghcr.io/example/module:1.*"]);
        assert!(l.is_allowed("oci://ghcr.io/example/module:1.2.3"));
        assert!(l.is_allowed("oci://ghcr.io/example/module:1.0"));
        assert!(!l.is_allowed("oci://ghcr.io/example/module:2.0.0"));
        assert!(!l.is_allowed("oci://ghcr.io/example/module:latest"));
        assert!(!l.is_allowed("oci://ghcr.io/example/module"));

        let l = list(&["https://some-domain.com/modules/*"]);
        assert!(l.is_allowed("https://some-domain.com/modules/app.wasm"));
        assert!(l.is_allowed("https://some-domain.com/modules/app.wasm.gz"));
        assert!(!l.is_allowed("https://some-domain.com/modules/v1/app.wasm"));
        assert!(!l.is_allowed("https://some-domain.com/other/app.wasm"));
        assert!(!l.is_allowed("http://some-domain.com/modules/app.wasm"));
    }

    #[test]
    fn empty_list_allows_everything() {
        let l = AllowList::default();
        assert!(l.is_empty());
        assert_eq!(l.check("anything at all"), Ok(None));
        assert!(AllowList::new(Vec::<String>::new()).unwrap().is_empty());
    }

    #[test]
    fn bypass_attempts_fail() {
        let l = list(&[
            "oci://ghcr.io/yokecd/*",
            "https://some-domain.com/modules/*",
        ]);
        for url in [
            // dot segments, plain and encoded
            "oci://ghcr.io/yokecd/../evil/mod:v1",
            "oci://ghcr.io/yokecd/./mod",
            "https://some-domain.com/modules/../admin/x",
            "https://some-domain.com/modules/%2E%2E",
            "https://some-domain.com/modules/%2e%2e",
            "https://some-domain.com/modules/.%2E",
            // encoded separators
            "oci://ghcr.io/yokecd/a%2Fb",
            "oci://ghcr.io/yokecd/a%2fb",
            "https://some-domain.com/modules/x%2F..%2F..%2Fadmin",
            "https://some-domain.com/modules/x%5C..",
            "https://some-domain.com/modules/x%00.wasm",
            // userinfo
            "https://some-domain.com@evil.com/modules/x",
            "https://some-domain.com:443@evil.com/modules/x",
            "oci://ghcr.io@evil.io/yokecd/mod",
            // backslashes
            "https://evil.com\\@some-domain.com/modules/x",
            "https://some-domain.com/modules\\..\\admin",
            // extra and empty segments
            "oci://ghcr.io/yokecd/team/mod",
            "oci://ghcr.io//yokecd/mod",
            "https://some-domain.com/modules//x",
            "https://some-domain.com/modules/",
            // query and fragment
            "https://some-domain.com/modules/evil.php?x=.wasm",
            "https://some-domain.com/modules/x#/../../admin",
            // host tricks
            "https://some-domain.com.evil.com/modules/x",
            "https://some-domain.com:8443/modules/x",
            "https://some-domain.com:abc/modules/x",
            "https://some-domain.com%2Eevil.com/modules/x",
            // whitespace, control, non-ASCII look-alikes
            "https://some-domain.com/modules/x\n",
            "https://some-domain.com/modules/x y",
            " https://some-domain.com/modules/x",
            "https://some-dоmain.com/modules/x",
            // malformed escapes
            "https://some-domain.com/modules/%zz",
            "https://some-domain.com/modules/x%4",
            // not a URL
            "ghcr.io/yokecd/mod",
            "/tmp/yokecd/mod.wasm",
        ] {
            assert!(!l.is_allowed(url), "{url:?} must be refused");
        }
    }

    #[test]
    fn case_and_harmless_normalisation() {
        let l = list(&[
            "oci://ghcr.io/yokecd/*",
            "https://some-domain.com/modules/*",
        ]);
        // scheme and host are case-insensitive
        assert!(l.is_allowed("OCI://GHCR.IO/yokecd/atc:v1"));
        assert!(l.is_allowed("HTTPS://Some-Domain.COM/modules/x.wasm"));
        // path is case-sensitive
        assert!(!l.is_allowed("oci://ghcr.io/YokeCD/atc:v1"));
        assert!(!l.is_allowed("https://some-domain.com/MODULES/x.wasm"));
        // default port, trailing dot, unreserved escapes
        assert!(l.is_allowed("https://some-domain.com:443/modules/x.wasm"));
        assert!(l.is_allowed("https://some-domain.com./modules/x.wasm"));
        assert!(l.is_allowed("oci://ghcr.io/yokecd/%61tc:v1"));
        assert_eq!(
            normalize_url("HTTP://Host:80/a/%7e/%41b%3a").unwrap(),
            "http://host/a/~/Ab%3A"
        );
        assert_eq!(
            normalize_url("file://localhost/opt/m.wasm").unwrap(),
            "file:///opt/m.wasm"
        );
        assert_eq!(
            normalize_url("oci://[::1]:5000/r/m:v1").unwrap(),
            "oci://[::1]:5000/r/m:v1"
        );
        // pattern case is normalised for scheme/host too
        let l = list(&["OCI://GHCR.io/yokecd/*"]);
        assert!(l.is_allowed("oci://ghcr.io/yokecd/atc:v1"));
    }

    #[test]
    fn double_star_is_not_recursive() {
        let l = list(&["oci://ghcr.io/yokecd/**"]);
        assert!(l.is_allowed("oci://ghcr.io/yokecd/atc:v1"));
        assert!(!l.is_allowed("oci://ghcr.io/yokecd/team/atc:v1"));
        let l = list(&["oci://ghcr.io/**/mod"]);
        assert!(l.is_allowed("oci://ghcr.io/org/mod"));
        assert!(!l.is_allowed("oci://ghcr.io/a/b/mod"));
    }

    #[test]
    fn question_mark_and_classes_stay_in_segment() {
        let l = list(&["oci://ghcr.io/org?mod", "oci://ghcr.io/team/[ab]*"]);
        assert!(!l.is_allowed("oci://ghcr.io/org/mod"));
        assert!(l.is_allowed("oci://ghcr.io/orgxmod"));
        assert!(l.is_allowed("oci://ghcr.io/team/app"));
        assert!(!l.is_allowed("oci://ghcr.io/team/capp"));
    }

    #[test]
    fn errors_explain() {
        assert!(matches!(
            AllowList::new(["ghcr.io/yokecd/*"]),
            Err(AllowError::InvalidPattern { .. })
        ));
        assert!(matches!(
            AllowList::new(["oci://ghcr.io/[unclosed"]),
            Err(AllowError::InvalidPattern { .. })
        ));
        let l = list(&["oci://ghcr.io/yokecd/*"]);
        match l.check("oci://ghcr.io/other/x") {
            Err(e @ AllowError::NotAllowed { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("oci://ghcr.io/other/x") && msg.contains("--allow"),
                    "{msg}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            l.check("https://a@b/x"),
            Err(AllowError::InvalidUrl { reason, .. }) if reason.contains("userinfo")
        ));
        assert_eq!(
            l.check("oci://ghcr.io/yokecd/x"),
            Ok(Some("oci://ghcr.io/yokecd/*"))
        );
    }
}
