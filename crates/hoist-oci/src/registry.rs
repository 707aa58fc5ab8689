//! A small OCI distribution client: manifests and blobs over HTTP(S), token and basic auth,
//! size caps enforced while streaming, every body checked against its digest.
//!
//! (oci-client buffers whole manifest bodies without a cap and cannot push a Docker manifest
//! list with foreign entries; the distribution API we need is small, so it is spoken here.)

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use reqwest::{Method, Response, StatusCode, header};
use sha2::{Digest, Sha256};

use crate::error::{OciError, Result};
use crate::media::ACCEPTED_MANIFESTS;
use crate::reference::OciReference;

/// `sha256:<hex>` of `data`.
pub(crate) fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Which operations the token must allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Pull,
    Push,
}

/// Credentials found for a registry.
#[derive(Clone)]
enum Credentials {
    None,
    Basic(String, String),
    /// A docker-config `identitytoken`: an OAuth2 refresh token.
    IdentityToken(String),
}

/// A manifest body with its headers.
pub(crate) struct Manifest {
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    /// sha256 of `body`.
    pub digest: String,
}

/// A client bound to one repository of one registry.
pub(crate) struct Registry {
    http: reqwest::Client,
    /// `http://host:port` or `https://host`.
    base: String,
    https: bool,
    /// `host[:port]` as the user wrote it (for messages).
    registry: String,
    repository: String,
    /// The user's reference (for messages).
    reference: String,
    creds: Credentials,
    access: Access,
    authorization: Mutex<Option<String>>,
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

impl Registry {
    /// Prepares a client for `reference`; reads credentials from the docker config.
    pub(crate) async fn connect(
        reference: &OciReference,
        insecure: bool,
        access: Access,
    ) -> Result<Self> {
        let https = !(insecure || reference.is_loopback());
        let scheme = if https { "https" } else { "http" };
        let http = reqwest::Client::builder()
            .user_agent(concat!("hoist/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120))
            .redirect(reqwest::redirect::Policy::limited(10))
            .build()
            .map_err(|e| OciError::Unreachable {
                registry: reference.registry.clone(),
                url: String::new(),
                detail: format!("cannot build an HTTP client: {}", error_chain(&e)),
                hint: String::new(),
            })?;
        let creds = lookup_credentials(reference.registry.clone()).await;
        Ok(Self {
            http,
            base: format!("{scheme}://{}", reference.api_host()),
            https,
            registry: reference.registry.clone(),
            repository: reference.repository.clone(),
            reference: reference.to_string(),
            creds,
            access,
            authorization: Mutex::new(None),
        })
    }

    fn url(&self, kind: &str, what: &str) -> String {
        format!("{}/v2/{}/{kind}/{what}", self.base, self.repository)
    }

    fn unreachable(&self, url: &str, e: &reqwest::Error) -> OciError {
        let detail = error_chain(e);
        let hint = if detail.contains("dns error") {
            format!("; check the registry host name '{}'", self.registry)
        } else if detail.to_ascii_lowercase().contains("connection refused") {
            format!(
                "; nothing listens on {} (is the registry running, is the port right?)",
                self.registry
            )
        } else if self.https {
            format!(
                "; if {} serves plain http, retry with --insecure (PullOptions/PushOptions::insecure)",
                self.registry
            )
        } else {
            format!("; is a registry listening on {}?", self.registry)
        };
        OciError::Unreachable {
            registry: self.registry.clone(),
            url: url.to_string(),
            detail,
            hint,
        }
    }

    /// Sends a request, answering one auth challenge (Bearer token or Basic) if needed.
    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, String)],
        body: Option<&[u8]>,
    ) -> Result<Response> {
        let mut challenged = false;
        loop {
            let mut req = self.http.request(method.clone(), url);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let auth = self.authorization.lock().map(|g| g.clone()).unwrap_or(None);
            if let Some(a) = auth {
                req = req.header(header::AUTHORIZATION, a);
            }
            if let Some(b) = body {
                req = req.body(b.to_vec());
            }
            let resp = req.send().await.map_err(|e| self.unreachable(url, &e))?;
            if resp.status() != StatusCode::UNAUTHORIZED || challenged {
                return Ok(resp);
            }
            challenged = true;
            let challenge = resp
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let new_auth = self.answer_challenge(&challenge).await?;
            match new_auth {
                Some(a) => {
                    if let Ok(mut g) = self.authorization.lock() {
                        *g = Some(a);
                    }
                }
                None => return Ok(resp),
            }
        }
    }

    fn auth_failed(&self, status: u16, detail: String) -> OciError {
        OciError::AuthFailed {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            status,
            detail,
        }
    }

    fn login_hint(&self) -> String {
        match self.creds {
            Credentials::None => format!(
                "no credentials for {} in the docker config ($DOCKER_CONFIG/config.json or ~/.docker/config.json); run `docker login {}` or add an auths entry",
                self.registry, self.registry
            ),
            _ => format!(
                "the credentials for {} from the docker config were rejected or lack {} access; log in again",
                self.registry,
                if self.access == Access::Push {
                    "push"
                } else {
                    "pull"
                }
            ),
        }
    }

    /// Turns a `WWW-Authenticate` challenge into an `Authorization` header value.
    async fn answer_challenge(&self, challenge: &str) -> Result<Option<String>> {
        let (scheme, params) = parse_challenge(challenge);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => match &self.creds {
                Credentials::Basic(u, p) => Ok(Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                ))),
                _ => Err(self.auth_failed(401, self.login_hint())),
            },
            "bearer" => {
                let realm = params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("realm"))
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| {
                        self.auth_failed(
                            401,
                            format!("bearer challenge without realm: {challenge}"),
                        )
                    })?;
                let service = params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("service"))
                    .map(|(_, v)| v.clone());
                let actions = if self.access == Access::Push {
                    "pull,push"
                } else {
                    "pull"
                };
                let scope = format!("repository:{}:{actions}", self.repository);
                let token = self.fetch_token(&realm, service.as_deref(), &scope).await?;
                Ok(Some(format!("Bearer {token}")))
            }
            _ => Err(self.auth_failed(
                401,
                format!(
                    "unsupported authentication challenge '{challenge}'; {}",
                    self.login_hint()
                ),
            )),
        }
    }

    async fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String> {
        let mut url = reqwest::Url::parse(realm).map_err(|e| {
            self.auth_failed(401, format!("token realm '{realm}' is not a URL: {e}"))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(self.auth_failed(401, format!("token realm '{realm}' is not http(s)")));
        }
        let resp = match &self.creds {
            Credentials::IdentityToken(refresh) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_string()),
                    ("refresh_token", refresh.clone()),
                    ("client_id", "hoist".to_string()),
                    ("scope", scope.to_string()),
                ];
                if let Some(s) = service {
                    form.push(("service", s.to_string()));
                }
                let body = form
                    .iter()
                    .map(|(k, v)| format!("{k}={}", url_encode(v)))
                    .collect::<Vec<_>>()
                    .join("&");
                self.http
                    .post(url.clone())
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
            }
            creds => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    q.append_pair("scope", scope);
                }
                let mut req = self.http.get(url.clone());
                if let Credentials::Basic(u, p) = creds {
                    req = req.basic_auth(u, Some(p));
                }
                req.send().await
            }
        }
        .map_err(|e| self.unreachable(url.as_str(), &e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.auth_failed(
                status.as_u16(),
                format!("the token service refused: {}", self.login_hint()),
            ));
        }
        let body = read_capped(
            resp,
            1 << 20,
            || self.too_large("token response", "(fixed 1 MiB)"),
            self,
        )
        .await?;
        if !status.is_success() {
            return Err(self.auth_failed(
                status.as_u16(),
                format!(
                    "token service answered HTTP {status}: {}",
                    String::from_utf8_lossy(&body)
                ),
            ));
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&body).map_err(|e| {
            self.auth_failed(
                status.as_u16(),
                format!("token service answered invalid JSON: {e}"),
            )
        })?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                self.auth_failed(
                    status.as_u16(),
                    "token service answered without a token".into(),
                )
            })
    }

    fn too_large(&self, what: &str, knob: &str) -> OciError {
        OciError::TooLarge {
            what: what.into(),
            reference: self.reference.clone(),
            limit: 0,
            knob: knob.into(),
        }
    }

    /// Maps a non-success response to an error.
    async fn status_error(
        &self,
        method: &Method,
        url: &str,
        resp: Response,
        what: &str,
    ) -> OciError {
        let status = resp.status();
        let body = read_capped(resp, 64 << 10, || self.too_large("error body", "-"), self)
            .await
            .unwrap_or_default();
        let message = registry_message(&body);
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                self.auth_failed(status.as_u16(), format!("{message}; {}", self.login_hint()))
            }
            StatusCode::NOT_FOUND => OciError::NotFound {
                what: what.into(),
                reference: self.reference.clone(),
            },
            _ => OciError::Registry {
                registry: self.registry.clone(),
                method: method.to_string(),
                url: url.into(),
                status: status.as_u16(),
                message,
            },
        }
    }

    /// HEAD a manifest: `Some(digest)` from `Docker-Content-Digest`, `None` when the registry
    /// does not send one; a missing manifest is [`OciError::NotFound`].
    pub(crate) async fn head_manifest(&self, tag_or_digest: &str) -> Result<Option<String>> {
        let url = self.url("manifests", tag_or_digest);
        let accept = ACCEPTED_MANIFESTS.join(", ");
        let resp = self
            .send(Method::HEAD, &url, &[(header::ACCEPT, accept)], None)
            .await?;
        if !resp.status().is_success() {
            return Err(self
                .status_error(&Method::HEAD, &url, resp, "manifest")
                .await);
        }
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|d| crate::reference::parse_digest(d.trim()).ok()))
    }

    /// GET a manifest, capped at `cap` bytes; `None` on 404. When `expected` is given the body
    /// must hash to it.
    pub(crate) async fn get_manifest(
        &self,
        tag_or_digest: &str,
        cap: u64,
    ) -> Result<Option<Manifest>> {
        let url = self.url("manifests", tag_or_digest);
        let accept = ACCEPTED_MANIFESTS.join(", ");
        let resp = self
            .send(Method::GET, &url, &[(header::ACCEPT, accept)], None)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self
                .status_error(&Method::GET, &url, resp, "manifest")
                .await);
        }
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = read_capped(
            resp,
            cap,
            || OciError::TooLarge {
                what: format!("manifest {tag_or_digest}"),
                reference: self.reference.clone(),
                limit: cap,
                knob: "PullOptions::max_manifest_bytes (--max-manifest-bytes)".into(),
            },
            self,
        )
        .await?;
        let digest = sha256_digest(&body);
        if tag_or_digest.starts_with("sha256:") && digest != tag_or_digest {
            return Err(OciError::DigestMismatch {
                what: "manifest".into(),
                reference: self.reference.clone(),
                expected: tag_or_digest.into(),
                actual: digest,
            });
        }
        Ok(Some(Manifest {
            body,
            content_type,
            digest,
        }))
    }

    /// GET a blob, capped at `cap` bytes, verified against `digest`.
    pub(crate) async fn get_blob(&self, digest: &str, cap: u64, knob: &str) -> Result<Vec<u8>> {
        let url = self.url("blobs", digest);
        let resp = self.send(Method::GET, &url, &[], None).await?;
        if !resp.status().is_success() {
            return Err(self
                .status_error(&Method::GET, &url, resp, &format!("blob {digest}"))
                .await);
        }
        let body = read_capped(
            resp,
            cap,
            || OciError::TooLarge {
                what: format!("blob {digest}"),
                reference: self.reference.clone(),
                limit: cap,
                knob: knob.into(),
            },
            self,
        )
        .await?;
        let actual = sha256_digest(&body);
        if actual != digest {
            return Err(OciError::DigestMismatch {
                what: "blob".into(),
                reference: self.reference.clone(),
                expected: digest.into(),
                actual,
            });
        }
        Ok(body)
    }

    /// Lists the repository's tags (`GET /v2/<repo>/tags/list`), following the `Link`
    /// pagination header; each page is capped at `cap` bytes and at most `max_pages` pages
    /// are read, so a hostile registry cannot make the list endless.
    pub(crate) async fn list_tags(&self, cap: u64, max_pages: usize) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut url = format!("{}/v2/{}/tags/list?n=1000", self.base, self.repository);
        let mut tags = Vec::new();
        for _ in 0..max_pages {
            let resp = self.send(Method::GET, &url, &[], None).await?;
            if !resp.status().is_success() {
                return Err(self
                    .status_error(&Method::GET, &url, resp, "tag list")
                    .await);
            }
            let next = resp
                .headers()
                .get(header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
            let body = read_capped(
                resp,
                cap,
                || OciError::TooLarge {
                    what: "tag list".into(),
                    reference: self.reference.clone(),
                    limit: cap,
                    knob: "PullOptions::max_manifest_bytes (--max-manifest-bytes)".into(),
                },
                self,
            )
            .await?;
            let page: TagList =
                serde_json::from_slice(&body).map_err(|e| OciError::InvalidManifest {
                    reference: self.reference.clone(),
                    detail: format!("the tag list is not the registry API's JSON: {e}"),
                })?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                // A relative link is resolved against the registry's base URL; an absolute
                // one must stay on the same registry (credentials are never sent elsewhere).
                Some(n) if n.starts_with('/') => url = format!("{}{n}", self.base),
                Some(n) if n.starts_with(&format!("{}/", self.base)) => url = n,
                Some(n) => {
                    return Err(OciError::InvalidManifest {
                        reference: self.reference.clone(),
                        detail: format!(
                            "the tag list points to another host for its next page: {n}"
                        ),
                    });
                }
                None => return Ok(tags),
            }
        }
        Err(OciError::TooLarge {
            what: format!("tag list (more than {max_pages} pages)"),
            reference: self.reference.clone(),
            limit: max_pages as u64,
            knob: "the tag list page limit".into(),
        })
    }

    /// Uploads `data` unless the registry already has it; returns its digest.
    pub(crate) async fn push_blob(&self, data: &[u8]) -> Result<String> {
        let digest = sha256_digest(data);
        let url = self.url("blobs", &digest);
        let resp = self.send(Method::HEAD, &url, &[], None).await?;
        if resp.status().is_success() {
            return Ok(digest);
        }
        let start = format!("{}/v2/{}/blobs/uploads/", self.base, self.repository);
        let resp = self.send(Method::POST, &start, &[], Some(&[])).await?;
        if resp.status() != StatusCode::ACCEPTED && !resp.status().is_success() {
            return Err(self
                .status_error(&Method::POST, &start, resp, "upload")
                .await);
        }
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| OciError::Registry {
                registry: self.registry.clone(),
                method: "POST".into(),
                url: start.clone(),
                status: resp.status().as_u16(),
                message: "upload started without a Location header".into(),
            })?;
        let mut put = reqwest::Url::parse(&self.base)
            .and_then(|b| b.join(&location))
            .map_err(|e| OciError::Registry {
                registry: self.registry.clone(),
                method: "POST".into(),
                url: start.clone(),
                status: 202,
                message: format!("bad upload Location '{location}': {e}"),
            })?;
        put.query_pairs_mut().append_pair("digest", &digest);
        let put = put.to_string();
        let resp = self
            .send(
                Method::PUT,
                &put,
                &[(header::CONTENT_TYPE, "application/octet-stream".into())],
                Some(data),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(&Method::PUT, &put, resp, "upload").await);
        }
        Ok(digest)
    }

    /// PUT a manifest at a tag or digest; returns its digest.
    pub(crate) async fn put_manifest(
        &self,
        tag_or_digest: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<String> {
        let digest = sha256_digest(body);
        let url = self.url("manifests", tag_or_digest);
        let resp = self
            .send(
                Method::PUT,
                &url,
                &[(header::CONTENT_TYPE, media_type.to_string())],
                Some(body),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self
                .status_error(&Method::PUT, &url, resp, "manifest")
                .await);
        }
        if let Some(d) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            && d.starts_with("sha256:")
            && d != digest
        {
            return Err(OciError::DigestMismatch {
                what: "pushed manifest".into(),
                reference: self.reference.clone(),
                expected: digest,
                actual: d.to_string(),
            });
        }
        Ok(digest)
    }
}

/// The target of a `Link: <URL>; rel="next"` header, if it has one.
pub(crate) fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| target.to_string())
    })
}

/// Reads a response body, failing with `too_large()` as soon as more than `cap` bytes
/// arrive (or `Content-Length` announces more).
async fn read_capped(
    mut resp: Response,
    cap: u64,
    too_large: impl Fn() -> OciError,
    reg: &Registry,
) -> Result<Vec<u8>> {
    if resp.content_length().is_some_and(|n| n > cap) {
        return Err(too_large());
    }
    let url = resp.url().to_string();
    let mut out =
        Vec::with_capacity(resp.content_length().unwrap_or(0).min(cap).min(64 << 20) as usize);
    while let Some(chunk) = resp.chunk().await.map_err(|e| reg.unreachable(&url, &e))? {
        if out.len() as u64 + chunk.len() as u64 > cap {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The `message`s of a registry error body (`{"errors":[{"code","message"}]}`).
pub(crate) fn registry_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct E {
        code: Option<String>,
        message: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Errs {
        errors: Vec<E>,
    }
    match serde_json::from_slice::<Errs>(body) {
        Ok(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e.code.as_deref().unwrap_or(""),
                    e.message.as_deref().unwrap_or("")
                )
                .trim()
                .to_string()
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => {
            let s = String::from_utf8_lossy(body);
            let s = s.trim();
            if s.is_empty() {
                "(no message)".into()
            } else {
                s.chars().take(300).collect()
            }
        }
    }
}

fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses `Scheme k="v", k2=v2` (quoted values may hold commas).
pub(crate) fn parse_challenge(h: &str) -> (String, Vec<(String, String)>) {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        params.push((key.trim().to_string(), value.trim().to_string()));
    }
    (scheme.to_string(), params)
}

/// Looks the registry up in the docker config (and its credential helpers).
async fn lookup_credentials(registry: String) -> Credentials {
    let lookup = move || {
        let mut keys = vec![registry.clone()];
        if matches!(
            registry.as_str(),
            "docker.io" | "index.docker.io" | "registry-1.docker.io"
        ) {
            keys.insert(0, "https://index.docker.io/v1/".to_string());
        }
        for key in keys {
            match docker_credential::get_credential(&key) {
                Ok(docker_credential::DockerCredential::UsernamePassword(u, p)) => {
                    return Credentials::Basic(u, p);
                }
                Ok(docker_credential::DockerCredential::IdentityToken(t)) => {
                    return Credentials::IdentityToken(t);
                }
                Err(
                    e @ (docker_credential::CredentialRetrievalError::HelperFailure { .. }
                    | docker_credential::CredentialRetrievalError::HelperCommunicationError
                    | docker_credential::CredentialRetrievalError::MalformedHelperResponse
                    | docker_credential::CredentialRetrievalError::CredentialDecodingError
                    | docker_credential::CredentialRetrievalError::CredentialMismatchError),
                ) => {
                    tracing::warn!(registry = %key, error = %e, "cannot read registry credentials from the docker config; trying anonymously");
                }
                Err(e) => tracing::debug!(registry = %key, error = %e, "no registry credentials"),
            }
        }
        Credentials::None
    };
    tokio::task::spawn_blocking(lookup)
        .await
        .unwrap_or(Credentials::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(s, "Bearer");
        assert_eq!(
            p,
            vec![
                ("realm".into(), "https://auth.example.com/token".into()),
                ("service".into(), "registry.example.com".into()),
                ("scope".into(), "repository:a/b:pull,push".into()),
            ]
        );
        let (s, p) = parse_challenge(r#"Basic realm="hoist-test-registry""#);
        assert_eq!(s, "Basic");
        assert_eq!(p[0].1, "hoist-test-registry");
        let (s, p) = parse_challenge("");
        assert_eq!(s, "");
        assert!(p.is_empty());
    }

    /// https against a plain-http server (a real TCP server on 127.0.0.1) suggests --insecure.
    #[tokio::test]
    async fn https_against_plain_http_suggests_insecure() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten().take(4) {
                let mut s = s;
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        let reference = OciReference::parse(&format!("{addr}/x/y:v1")).unwrap();
        let mut reg = Registry::connect(&reference, false, Access::Pull)
            .await
            .unwrap();
        // as if the registry had a non-loopback name
        reg.base = format!("https://{addr}");
        reg.https = true;
        let err = reg.head_manifest("v1").await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, OciError::Unreachable { .. }), "{msg}");
        assert!(msg.contains("--insecure") && msg.contains(&addr), "{msg}");
    }

    #[test]
    fn formats_registry_errors() {
        let m = registry_message(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        );
        assert_eq!(m, "MANIFEST_UNKNOWN manifest unknown");
        assert_eq!(registry_message(b""), "(no message)");
        assert_eq!(url_encode("a b/c"), "a%20b%2Fc");
    }
}
