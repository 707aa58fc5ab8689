//! Host capabilities: what a policy may ask the host for (`__host_call` in waPC, `host.call` in
//! WASI, the Kubernetes context of Rego policies), and kwctl's record/replay session files.

use crate::metadata::ContextAwareResource;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One request to an external capability, as kwctl's `CallbackRequestType` names it (the tag
/// and field names are those of kwctl's session files).
#[derive(Debug, Clone, PartialEq)]
pub struct CapabilityRequest {
    /// The tag, e.g. `KubernetesGetResource`.
    pub tag: String,
    /// The fields, in kwctl's order.
    pub fields: Map<String, Value>,
}

impl CapabilityRequest {
    fn new(tag: &str, fields: Value) -> CapabilityRequest {
        CapabilityRequest {
            tag: tag.to_string(),
            fields: match fields {
                Value::Object(map) => map,
                _ => Map::new(),
            },
        }
    }

    /// `KubernetesListResourceAll`.
    pub fn list_all(
        api_version: &str,
        kind: &str,
        label_selector: Option<&str>,
        field_selector: Option<&str>,
    ) -> Self {
        Self::new(
            "KubernetesListResourceAll",
            json!({"api_version": api_version, "kind": kind, "label_selector": label_selector, "field_selector": field_selector}),
        )
    }

    /// `KubernetesGetResourcePluralName`.
    pub fn plural_name(api_version: &str, kind: &str) -> Self {
        Self::new(
            "KubernetesGetResourcePluralName",
            json!({"api_version": api_version, "kind": kind}),
        )
    }

    /// A string field.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }

    /// kwctl's session-file text for the request: `!Tag` then the fields as YAML.
    pub fn to_session_text(&self) -> String {
        let mut out = format!("!{}\n", self.tag);
        for (key, value) in &self.fields {
            out.push_str(key);
            out.push(':');
            write_yaml_value(value, 1, &mut out);
        }
        out
    }

    /// Parses kwctl's session-file text.
    pub fn from_session_text(text: &str) -> Result<CapabilityRequest, String> {
        let text = text.trim_start();
        let Some(rest) = text.strip_prefix('!') else {
            return Err(format!("the request does not start with a !Tag: {text:?}"));
        };
        let (tag, body) = rest.split_once(['\n', ' ']).unwrap_or((rest, ""));
        let fields: Value = if body.trim().is_empty() {
            Value::Object(Map::new())
        } else {
            serde_saphyr::from_str(body).map_err(|e| format!("request {tag}: {e}"))?
        };
        Ok(CapabilityRequest::new(tag.trim(), fields))
    }
}

impl fmt::Display for CapabilityRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.tag, Value::Object(self.fields.clone()))
    }
}

/// Writes a JSON value as YAML after a `key:` (JSON scalars are valid YAML flow scalars).
fn write_yaml_value(value: &Value, indent: usize, out: &mut String) {
    let pad = "  ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            for (k, v) in map {
                out.push_str(&pad);
                out.push_str(&yaml_key(k));
                out.push(':');
                write_yaml_value(v, indent + 1, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            for item in items {
                out.push_str(&pad);
                out.push_str("- ");
                out.push_str(&item.to_string());
                out.push('\n');
            }
        }
        other => {
            out.push(' ');
            out.push_str(&yaml_scalar(other));
            out.push('\n');
        }
    }
}

fn yaml_key(key: &str) -> String {
    if key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !key.is_empty()
    {
        key.to_string()
    } else {
        Value::String(key.to_string()).to_string()
    }
}

fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::String(s) => {
            // As serde_yaml (kwctl) writes them: image references such as
            // `127.0.0.1:5000/a@sha256:..` stay plain (a ':' not followed by a space is text).
            let plain = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=,:@".contains(c))
                && !s.starts_with([':', '@'])
                && !s.ends_with(':')
                && !matches!(s.as_str(), "null" | "true" | "false" | "~" | "yes" | "no")
                && s.parse::<f64>().is_err();
            if plain { s.clone() } else { value.to_string() }
        }
        other => other.to_string(),
    }
}

/// Answers capability requests that leave the policy host (Kubernetes, OCI, DNS, crypto).
pub trait CapabilityBackend: Send + Sync {
    /// The response payload (JSON bytes), or an error message for the policy.
    fn call(&self, request: &CapabilityRequest) -> Result<Vec<u8>, String>;
}

/// No external access: every request fails with a message saying how to grant it.
pub struct NoBackend;

impl CapabilityBackend for NoBackend {
    fn call(&self, request: &CapabilityRequest) -> Result<Vec<u8>, String> {
        Err(if request.tag.starts_with("Kubernetes") {
            format!(
                "{}: no Kubernetes access: run with --allow-context-aware (and a kubeconfig) or replay a session with --replay-host-capabilities-interactions",
                request.tag
            )
        } else {
            format!(
                "{}: hoist does not provide this capability offline; replay a recorded session with --replay-host-capabilities-interactions",
                request.tag
            )
        })
    }
}

/// One exchange of a session file.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    /// The request.
    pub request: CapabilityRequest,
    /// The answer: payload or error message.
    pub response: Result<String, String>,
}

/// Why a session file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Reading or writing failed.
    #[error("host-capabilities session {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not in kwctl's format.
    #[error("host-capabilities session {path} is not in kwctl's format: {detail}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// Parses a kwctl session file (a YAML list of `{type: Exchange, request, response}`).
pub fn read_session(path: &Path) -> Result<Vec<Exchange>, SessionError> {
    let text = std::fs::read_to_string(path).map_err(|source| SessionError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_session(&text).map_err(|detail| SessionError::Format {
        path: path.to_path_buf(),
        detail,
    })
}

/// Parses a session file's text.
pub fn parse_session(text: &str) -> Result<Vec<Exchange>, String> {
    let doc: Value = if text.trim().is_empty() {
        Value::Array(Vec::new())
    } else {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())?
    };
    let Value::Array(items) = doc else {
        return Err("the top level must be a list of exchanges".into());
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = |k: &str| item.get(k);
        if field("type").and_then(Value::as_str) != Some("Exchange") {
            return Err(format!("entry {i}: type must be Exchange"));
        }
        let request_text = field("request")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("entry {i}: request must be a string"))?;
        let request = CapabilityRequest::from_session_text(request_text)
            .map_err(|e| format!("entry {i}: {e}"))?;
        let response = field("response").ok_or_else(|| format!("entry {i}: no response"))?;
        let response = match response.get("type").and_then(Value::as_str) {
            Some("Success") => Ok(response
                .get("payload")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()),
            Some("Error") => Err(response
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()),
            _ => return Err(format!("entry {i}: response type must be Success or Error")),
        };
        out.push(Exchange { request, response });
    }
    Ok(out)
}

/// Renders exchanges in kwctl's session format.
pub fn render_session(exchanges: &[Exchange]) -> String {
    let mut out = String::new();
    for exchange in exchanges {
        out.push_str("- type: Exchange\n  request: |\n");
        for line in exchange.request.to_session_text().lines() {
            out.push_str("    ");
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("  response:\n");
        match &exchange.response {
            Ok(payload) => {
                out.push_str("    type: Success\n    payload: ");
                out.push_str(&Value::String(payload.clone()).to_string());
                out.push('\n');
            }
            Err(message) => {
                out.push_str("    type: Error\n    message: ");
                out.push_str(&Value::String(message.clone()).to_string());
                out.push('\n');
            }
        }
    }
    if exchanges.is_empty() {
        out.push_str("[]\n");
    }
    out
}

/// Forwards to a backend and remembers every exchange; [`Recorder::save`] writes them.
pub struct Recorder {
    inner: Arc<dyn CapabilityBackend>,
    exchanges: Mutex<Vec<Exchange>>,
}

impl Recorder {
    /// Records what `inner` answers.
    pub fn new(inner: Arc<dyn CapabilityBackend>) -> Self {
        Recorder {
            inner,
            exchanges: Mutex::new(Vec::new()),
        }
    }

    /// Writes the session in kwctl's format.
    pub fn save(&self, path: &Path) -> Result<(), SessionError> {
        let exchanges = self.exchanges.lock().unwrap_or_else(|p| p.into_inner());
        std::fs::write(path, render_session(&exchanges)).map_err(|source| SessionError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

impl CapabilityBackend for Recorder {
    fn call(&self, request: &CapabilityRequest) -> Result<Vec<u8>, String> {
        let result = self.inner.call(request);
        let response = match &result {
            Ok(bytes) => Ok(String::from_utf8_lossy(bytes).into_owned()),
            Err(message) => Err(message.clone()),
        };
        self.exchanges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Exchange {
                request: request.clone(),
                response,
            });
        result
    }
}

/// Answers from a recorded session, in order; each request must equal the recorded one.
pub struct Replayer {
    exchanges: Mutex<std::collections::VecDeque<Exchange>>,
    recorded: Vec<Exchange>,
    source: String,
}

impl Replayer {
    /// Replays `exchanges` (read from `source`, for messages).
    pub fn new(exchanges: Vec<Exchange>, source: &str) -> Self {
        Replayer {
            exchanges: Mutex::new(exchanges.clone().into()),
            recorded: exchanges,
            source: source.to_string(),
        }
    }

    /// Starts the session again from its first exchange (one evaluation per pass, as
    /// `bench` needs).
    pub fn rewind(&self) {
        *self.exchanges.lock().unwrap_or_else(|p| p.into_inner()) = self.recorded.clone().into();
    }

    /// How many recorded exchanges were not used.
    pub fn remaining(&self) -> usize {
        self.exchanges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

impl CapabilityBackend for Replayer {
    fn call(&self, request: &CapabilityRequest) -> Result<Vec<u8>, String> {
        let mut queue = self.exchanges.lock().unwrap_or_else(|p| p.into_inner());
        let Some(next) = queue.pop_front() else {
            return Err(format!(
                "Replay error: the list of recorded responses is empty ({} has no answer for {request})",
                self.source
            ));
        };
        if !requests_match(&next.request, request) {
            let message = format!(
                "Replay error: unexpected request {request}; {} expected {}",
                self.source, next.request
            );
            queue.push_front(next);
            return Err(message);
        }
        match next.response {
            Ok(payload) => Ok(payload.into_bytes()),
            Err(message) => Err(message),
        }
    }
}

/// Requests are equal when tag and fields are; a field recorded as null equals an absent one.
fn requests_match(recorded: &CapabilityRequest, incoming: &CapabilityRequest) -> bool {
    if recorded.tag != incoming.tag {
        return false;
    }
    let keys: BTreeSet<&String> = recorded
        .fields
        .keys()
        .chain(incoming.fields.keys())
        .collect();
    keys.into_iter().all(|k| {
        let a = recorded.fields.get(k).unwrap_or(&Value::Null);
        let b = incoming.fields.get(k).unwrap_or(&Value::Null);
        a == b
    })
}

/// What a policy may reach, and the backend that answers.
#[derive(Clone)]
pub struct HostCapabilities {
    /// Kubernetes types granted (`--allow-context-aware` grants the metadata's list).
    pub granted: BTreeSet<ContextAwareResource>,
    /// Who answers external requests.
    pub backend: Arc<dyn CapabilityBackend>,
    /// The policy's name, for log lines.
    pub policy: String,
}

impl HostCapabilities {
    /// Nothing granted, nothing reachable.
    pub fn none(policy: &str) -> Self {
        HostCapabilities {
            granted: BTreeSet::new(),
            backend: Arc::new(NoBackend),
            policy: policy.to_string(),
        }
    }

    fn check_granted(&self, api_version: &str, kind: &str) -> Result<(), String> {
        let wanted = ContextAwareResource {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        };
        if self.granted.contains(&wanted) {
            Ok(())
        } else {
            tracing::warn!(
                policy = %self.policy,
                "policy tried to read Kubernetes {api_version}/{kind}, which it was not granted"
            );
            Err(format!(
                "Policy has not been granted access to Kubernetes {api_version}/{kind} resources. The violation has been reported."
            ))
        }
    }

    /// Asks the backend; its errors reach the policy as kwctl words them (kwctl's evaluator
    /// prefixes every error of its callback handler, replay errors included).
    fn callback(&self, request: &CapabilityRequest) -> Result<Vec<u8>, String> {
        self.backend
            .call(request)
            .map_err(|e| format!("Callback evaluation failure: {e}"))
    }

    /// Dispatches one host call (`binding`, `namespace`, `operation`, JSON `payload`).
    pub fn dispatch(
        &self,
        binding: &str,
        namespace: &str,
        operation: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        if binding != "kubewarden" {
            return Err(format!("unknown binding: {binding}"));
        }
        let parse = |what: &str| -> Result<Value, String> {
            serde_json::from_slice(payload).map_err(|e| {
                format!("{namespace}/{operation}: {what} payload is not valid JSON: {e}")
            })
        };
        let unknown_op = || Err(format!("unknown operation: {operation}"));
        match namespace {
            "tracing" => match operation {
                "log" => {
                    self.log(payload);
                    Ok(Vec::new())
                }
                _ => unknown_op(),
            },
            "kubernetes" => {
                let req = parse("the request")?;
                let s = |k: &str| req.get(k).and_then(Value::as_str).map(str::to_string);
                let need = |k: &str| {
                    s(k).ok_or_else(|| {
                        format!("kubernetes/{operation}: the request has no string field `{k}`")
                    })
                };
                let request = match operation {
                    "list_resources_by_namespace" => {
                        let (api_version, kind) = (need("api_version")?, need("kind")?);
                        self.check_granted(&api_version, &kind)?;
                        CapabilityRequest::new(
                            "KubernetesListResourceNamespace",
                            json!({"api_version": api_version, "kind": kind, "namespace": need("namespace")?,
                                   "label_selector": s("label_selector"), "field_selector": s("field_selector")}),
                        )
                    }
                    "list_resources_all" => {
                        let (api_version, kind) = (need("api_version")?, need("kind")?);
                        self.check_granted(&api_version, &kind)?;
                        CapabilityRequest::list_all(
                            &api_version,
                            &kind,
                            s("label_selector").as_deref(),
                            s("field_selector").as_deref(),
                        )
                    }
                    "get_resource" => {
                        let (api_version, kind) = (need("api_version")?, need("kind")?);
                        self.check_granted(&api_version, &kind)?;
                        CapabilityRequest::new(
                            "KubernetesGetResource",
                            json!({"api_version": api_version, "kind": kind, "name": need("name")?,
                                   "namespace": s("namespace"),
                                   "disable_cache": req.get("disable_cache").and_then(Value::as_bool).unwrap_or(false)}),
                        )
                    }
                    "can_i" => CapabilityRequest::new(
                        "KubernetesCanI",
                        json!({"request": req.get("subject_access_review").cloned().unwrap_or(Value::Null),
                               "disable_cache": req.get("disable_cache").and_then(Value::as_bool).unwrap_or(false)}),
                    ),
                    _ => return unknown_op(),
                };
                self.callback(&request)
            }
            "oci" => {
                let req = parse("the request")?;
                let request = match operation {
                    "v1/manifest_digest" => {
                        CapabilityRequest::new("OciManifestDigest", json!({"image": req}))
                    }
                    "v1/oci_manifest" => {
                        CapabilityRequest::new("OciManifest", json!({"image": req}))
                    }
                    "v1/oci_manifest_config" => {
                        CapabilityRequest::new("OciManifestAndConfig", json!({"image": req}))
                    }
                    "v1/verify" | "v2/verify" => {
                        // v2: internally tagged by "type"; v1: externally tagged.
                        let (tag, fields) = match &req {
                            Value::Object(m) if m.contains_key("type") => {
                                let mut fields = m.clone();
                                let tag = fields
                                    .remove("type")
                                    .and_then(|t| t.as_str().map(str::to_string))
                                    .unwrap_or_default();
                                (tag, Value::Object(fields))
                            }
                            Value::Object(m) if m.len() == 1 => {
                                let (k, v) = m
                                    .iter()
                                    .next()
                                    .map(|(k, v)| (k.clone(), v.clone()))
                                    .unwrap_or_default();
                                (k, v)
                            }
                            _ => {
                                return Err(format!(
                                    "oci/{operation}: unrecognised verification request"
                                ));
                            }
                        };
                        CapabilityRequest::new(&tag, fields)
                    }
                    _ => return unknown_op(),
                };
                self.callback(&request)
            }
            "net" => match operation {
                "v1/dns_lookup_host" => {
                    let req = parse("the request")?;
                    self.callback(&CapabilityRequest::new(
                        "DNSLookupHost",
                        json!({"host": req}),
                    ))
                }
                _ => unknown_op(),
            },
            "crypto" => match operation {
                "v1/is_certificate_trusted" => {
                    let req = parse("the request")?;
                    self.callback(&CapabilityRequest::new(
                        "CryptoIsCertificateTrusted",
                        json!({"request": req}),
                    ))
                }
                _ => unknown_op(),
            },
            _ => Err(format!("unknown namespace: {namespace}")),
        }
    }

    /// `tracing/log`: the policy's log event, at its level, on hoist's log.
    fn log(&self, payload: &[u8]) {
        let event: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
        let level = event
            .get("level")
            .and_then(Value::as_str)
            .unwrap_or("info")
            .to_ascii_lowercase();
        let message = event
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut extra = event.as_object().cloned().unwrap_or_default();
        extra.remove("level");
        extra.remove("message");
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(" {}", Value::Object(extra))
        };
        let policy = &self.policy;
        match level.as_str() {
            "trace" => tracing::trace!("policy {policy}: {message}{extra}"),
            "debug" => tracing::debug!("policy {policy}: {message}{extra}"),
            "warn" | "warning" => tracing::warn!("policy {policy}: {message}{extra}"),
            "error" => tracing::error!("policy {policy}: {message}{extra}"),
            _ => tracing::info!("policy {policy}: {message}{extra}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: &str = r#"- type: Exchange
  request: |
    !KubernetesGetResource
    api_version: v1
    kind: Namespace
    name: test-policy
    namespace: null
    disable_cache: false
  response:
    type: Error
    message: Cannot find v1/Namespace named 'test-policy' inside of namespace 'None'
- type: Exchange
  request: |
    !KubernetesListResourceAll
    api_version: networking.k8s.io/v1
    kind: Ingress
    label_selector: null
    field_selector: null
  response:
    type: Success
    payload: |
      {"items": []}
"#;

    fn granted(pairs: &[(&str, &str)]) -> HostCapabilities {
        let exchanges = parse_session(SESSION).unwrap();
        HostCapabilities {
            granted: pairs
                .iter()
                .map(|(a, k)| ContextAwareResource {
                    api_version: a.to_string(),
                    kind: k.to_string(),
                })
                .collect(),
            backend: Arc::new(Replayer::new(exchanges, "session.yml")),
            policy: "p".into(),
        }
    }

    #[test]
    fn sessions_parse_replay_in_order_and_round_trip() {
        let exchanges = parse_session(SESSION).unwrap();
        assert_eq!(exchanges.len(), 2);
        assert_eq!(exchanges[0].request.tag, "KubernetesGetResource");
        assert_eq!(exchanges[0].request.fields["namespace"], Value::Null);
        let again = parse_session(&render_session(&exchanges)).unwrap();
        assert_eq!(again, exchanges);

        let host = granted(&[("v1", "Namespace"), ("networking.k8s.io/v1", "Ingress")]);
        let err = host
            .dispatch(
                "kubewarden",
                "kubernetes",
                "get_resource",
                br#"{"api_version":"v1","kind":"Namespace","name":"test-policy","disable_cache":false}"#,
            )
            .unwrap_err();
        assert!(
            err.starts_with("Callback evaluation failure: Cannot find v1/Namespace"),
            "{err}"
        );
        // Out of order: the next recorded one is ListAll, so a Get is refused.
        let err = host
            .dispatch(
                "kubewarden",
                "kubernetes",
                "get_resource",
                br#"{"api_version":"v1","kind":"Namespace","name":"x","disable_cache":false}"#,
            )
            .unwrap_err();
        assert!(err.contains("Replay error: unexpected request"), "{err}");
        let list = host
            .dispatch(
                "kubewarden",
                "kubernetes",
                "list_resources_all",
                br#"{"api_version":"networking.k8s.io/v1","kind":"Ingress"}"#,
            )
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&list).unwrap(),
            json!({"items": []})
        );
        let err = host
            .dispatch(
                "kubewarden",
                "kubernetes",
                "list_resources_all",
                br#"{"api_version":"networking.k8s.io/v1","kind":"Ingress"}"#,
            )
            .unwrap_err();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn ungranted_types_and_unknown_calls_are_errors() {
        let host = granted(&[]);
        let err = host
            .dispatch(
                "kubewarden",
                "kubernetes",
                "list_resources_all",
                br#"{"api_version":"v1","kind":"Secret"}"#,
            )
            .unwrap_err();
        assert!(err.contains("has not been granted access to Kubernetes v1/Secret"));
        assert_eq!(
            host.dispatch("x", "a", "b", b"").unwrap_err(),
            "unknown binding: x"
        );
        assert_eq!(
            host.dispatch("kubewarden", "nope", "b", b"").unwrap_err(),
            "unknown namespace: nope"
        );
        assert!(
            host.dispatch(
                "kubewarden",
                "tracing",
                "log",
                br#"{"level":"INFO","message":"hi"}"#
            )
            .is_ok()
        );
        let none = HostCapabilities::none("p");
        let err = none
            .dispatch(
                "kubewarden",
                "net",
                "v1/dns_lookup_host",
                br#""example.com""#,
            )
            .unwrap_err();
        assert!(err.contains("DNSLookupHost"), "{err}");
    }

    #[test]
    fn recorder_writes_what_replayer_reads() {
        let replayed: Arc<dyn CapabilityBackend> =
            Arc::new(Replayer::new(parse_session(SESSION).unwrap(), "s"));
        let recorder = Recorder::new(replayed);
        let req = CapabilityRequest::from_session_text(
            "!KubernetesGetResource\napi_version: v1\nkind: Namespace\nname: test-policy\nnamespace: null\ndisable_cache: false\n",
        )
        .unwrap();
        assert!(recorder.call(&req).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yml");
        recorder.save(&path).unwrap();
        let back = read_session(&path).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].request, req);
        assert!(
            back[0]
                .response
                .as_ref()
                .unwrap_err()
                .contains("Cannot find")
        );
    }
}
