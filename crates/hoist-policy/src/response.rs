//! Requests in, responses out: the payloads exchanged with policies and the AdmissionResponse
//! kwctl prints.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// What a policy validates: an AdmissionRequest or, for raw policies, any JSON document.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidateRequest {
    /// A raw document (`--raw`), passed unchanged, rather than an AdmissionRequest.
    raw: bool,
    value: Value,
    /// `value` as compact JSON, written once. Every evaluation embeds the request in its
    /// payload; writing the same tree again for each one was 8% of a Rego policy's `validate`
    /// in perf (the request never changes once read, so neither does its JSON).
    json: Vec<u8>,
}

/// Why a request file is not usable.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Not JSON (or YAML).
    #[error("{what}: the request is not valid JSON: {detail}")]
    Parse {
        /// Where it came from.
        what: String,
        /// The parser's message.
        detail: String,
    },
    /// JSON, but not an object.
    #[error(
        "{what}: the request must be a JSON object (an AdmissionRequest or an AdmissionReview), not {found}"
    )]
    NotAnObject {
        /// Where it came from.
        what: String,
        /// What it was.
        found: &'static str,
    },
    /// An AdmissionReview without `.request`.
    #[error("{what}: the AdmissionReview has no `request` object")]
    ReviewWithoutRequest {
        /// Where it came from.
        what: String,
    },
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl ValidateRequest {
    /// Reads a request file's bytes as kwctl does: JSON; an `AdmissionReview` is unwrapped to
    /// its `.request`; with `raw` the document is taken as it is.
    pub fn parse(bytes: &[u8], raw: bool, what: &str) -> Result<ValidateRequest, RequestError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| RequestError::Parse {
            what: what.to_string(),
            detail: e.to_string(),
        })?;
        if raw {
            return Ok(ValidateRequest::raw(value));
        }
        let Value::Object(map) = &value else {
            return Err(RequestError::NotAnObject {
                what: what.to_string(),
                found: kind_of(&value),
            });
        };
        if map.get("kind").and_then(Value::as_str) == Some("AdmissionReview") {
            return match map.get("request") {
                Some(request @ Value::Object(_)) => {
                    Ok(ValidateRequest::admission_request(request.clone()))
                }
                _ => Err(RequestError::ReviewWithoutRequest {
                    what: what.to_string(),
                }),
            };
        }
        Ok(ValidateRequest::admission_request(value))
    }

    /// A Kubernetes AdmissionRequest (camelCase JSON), as Kubewarden hands it to policies (see
    /// [`kubewarden_request`]).
    pub fn admission_request(value: Value) -> ValidateRequest {
        ValidateRequest::new(false, kubewarden_request(value))
    }

    /// A raw document, passed to the policy unchanged.
    pub fn raw(value: Value) -> ValidateRequest {
        ValidateRequest::new(true, value)
    }

    fn new(raw: bool, value: Value) -> ValidateRequest {
        let json = serde_json::to_vec(&value).unwrap_or_default();
        ValidateRequest { raw, value, json }
    }

    /// The request as compact JSON (what `serde_json::to_vec` of [`ValidateRequest::value`]
    /// writes).
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    /// The request's uid (`.uid`; empty when absent).
    pub fn uid(&self) -> &str {
        self.value.get("uid").and_then(Value::as_str).unwrap_or("")
    }

    /// The JSON the policy sees as `request`.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The document a mutation is diffed against: `.object` of an AdmissionRequest (`None`
    /// when absent or null, as for DELETE), the whole document for a raw request.
    pub fn original_object(&self) -> Option<&Value> {
        if self.raw {
            Some(&self.value)
        } else {
            self.value.get("object").filter(|o| !o.is_null())
        }
    }

    /// Whether this is a raw request.
    pub fn is_raw(&self) -> bool {
        self.raw
    }
}

/// An AdmissionRequest as Kubewarden passes it to a policy: kwctl and policy-server read it
/// into a typed struct and write that back, so a policy sees only the fields that struct
/// knows, in its order, and no `null` optional field. That is visible to policies: in Rego,
/// `not input.request.oldObject` holds for a CREATE under Kubewarden (the API server's
/// `"oldObject": null` is dropped) but would not if the null were passed on. Fields are not
/// type-checked here (kwctl refuses a request it cannot read; hoist passes what it has); an
/// object that is not a JSON object is returned unchanged.
pub fn kubewarden_request(value: Value) -> Value {
    /// Top-level fields, in kwctl's order, and for the typed ones the fields they keep.
    const FIELDS: [(&str, Option<&[&str]>); 15] = [
        ("uid", None),
        ("kind", Some(&["group", "version", "kind"])),
        ("resource", Some(&["group", "version", "resource"])),
        ("subResource", None),
        ("requestKind", Some(&["group", "version", "kind"])),
        ("requestResource", Some(&["group", "version", "resource"])),
        ("requestSubResource", None),
        ("name", None),
        ("namespace", None),
        ("operation", None),
        // k8s-openapi's UserInfo writes its fields in alphabetical order.
        ("userInfo", Some(&["extra", "groups", "uid", "username"])),
        ("object", None),
        ("oldObject", None),
        ("dryRun", None),
        ("options", None),
    ];
    let Value::Object(mut map) = value else {
        return value;
    };
    let mut out = serde_json::Map::with_capacity(FIELDS.len());
    for (key, keep) in FIELDS {
        let Some(field) = map.remove(key) else {
            continue;
        };
        let field = match (field, keep) {
            (Value::Null, _) => continue,
            (Value::Object(mut inner), Some(keep)) => Value::Object(
                keep.iter()
                    .filter_map(|k| {
                        inner
                            .remove(*k)
                            .filter(|v| !v.is_null())
                            .map(|v| (k.to_string(), v))
                    })
                    .collect(),
            ),
            (other, _) => other,
        };
        out.insert(key.to_string(), field);
    }
    Value::Object(out)
}

/// The `validate` payload for waPC and WASI policies: `{"request": R, "settings": S}`.
pub fn validation_payload(request: &ValidateRequest, settings: &Value) -> Vec<u8> {
    json_object(&[
        ("request", request.json()),
        (
            "settings",
            &serde_json::to_vec(settings).unwrap_or_default(),
        ),
    ])
}

/// The members of a JSON object, in order: each key and its value's JSON.
pub(crate) type JsonMembers<'a> = [(&'a str, &'a [u8])];

/// A JSON object of already-serialised members, in order: the bytes `serde_json::to_vec` writes
/// for a struct with these fields, without writing the members' trees again.
pub(crate) fn json_object(members: &JsonMembers) -> Vec<u8> {
    let pieces = json_object_pieces(members);
    let mut out = Vec::with_capacity(pieces.clone().map(<[u8]>::len).sum());
    pieces.for_each(|piece| out.extend_from_slice(piece));
    out
}

/// The pieces whose concatenation is [`json_object`]'s bytes, for writers that copy them
/// straight to their destination (a Rego module's memory) rather than into a new buffer.
pub(crate) fn json_object_pieces<'a>(
    members: &'a JsonMembers<'a>,
) -> impl Iterator<Item = &'a [u8]> + Clone + 'a {
    let body = members.iter().enumerate().flat_map(|(i, (key, value))| {
        // Keys are fixed identifiers here, so they need no escaping.
        let open: &[u8] = if i == 0 { b"\"" } else { b",\"" };
        [open, key.as_bytes(), b"\":", *value]
    });
    std::iter::once(&b"{"[..])
        .chain(body)
        .chain(std::iter::once(&b"}"[..]))
}

/// What a waPC or WASI policy answers to `validate` (snake_case).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct ValidationResponse {
    /// Accepted or rejected.
    pub accepted: bool,
    /// Rejection message.
    #[serde(default)]
    pub message: Option<String>,
    /// HTTP-like code.
    #[serde(default)]
    pub code: Option<u16>,
    /// The whole mutated object.
    #[serde(default)]
    pub mutated_object: Option<Value>,
    /// Audit annotations.
    #[serde(default)]
    pub audit_annotations: Option<BTreeMap<String, String>>,
    /// Warnings for the user.
    #[serde(default)]
    pub warnings: Option<Vec<String>>,
}

/// What a policy answers to `validate_settings`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct SettingsValidation {
    /// Whether the settings are valid.
    pub valid: bool,
    /// Why not.
    #[serde(default)]
    pub message: Option<String>,
}

/// The `status` of an AdmissionResponse.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct AdmissionStatus {
    /// `Success` or `Failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Message for the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Details (causes...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    /// HTTP-like code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
}

/// The AdmissionResponse `kwctl run` prints (field order and presence as kwctl's).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    /// The request's uid.
    #[serde(default)]
    pub uid: String,
    /// Allowed or not.
    #[serde(default)]
    pub allowed: bool,
    /// `JSONPatch` when there is a patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    /// Base64 (standard) of the JSON Patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Message and code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AdmissionStatus>,
    /// Audit annotations (always printed, possibly null).
    #[serde(default)]
    pub audit_annotations: Option<BTreeMap<String, String>>,
    /// Warnings (always printed, possibly null).
    #[serde(default)]
    pub warnings: Option<Vec<String>>,
}

impl AdmissionResponse {
    /// A rejection with a message and a code.
    pub fn reject(uid: &str, message: String, code: Option<u16>) -> AdmissionResponse {
        AdmissionResponse {
            uid: uid.to_string(),
            allowed: false,
            status: Some(AdmissionStatus {
                message: Some(message),
                code,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// kwctl's internal-error rejection: code 500, `internal server error: …`.
    pub fn internal_error(uid: &str, message: impl std::fmt::Display) -> AdmissionResponse {
        AdmissionResponse::reject(uid, format!("internal server error: {message}"), Some(500))
    }

    /// Converts a policy's answer, computing the patch against `original` as kwctl does.
    pub fn from_validation(
        uid: &str,
        original: Option<&Value>,
        response: ValidationResponse,
    ) -> AdmissionResponse {
        let patch = match (&response.mutated_object, original) {
            (Some(_), None) => {
                return AdmissionResponse::reject(
                    uid,
                    "Incoming object is null, which happens only with DELETE operations, but the policy is attempting a mutation. This is not allowed".into(),
                    None,
                );
            }
            (Some(mutated), Some(original)) => {
                let diff = json_patch::diff(original, mutated);
                if diff.0.is_empty() {
                    None
                } else {
                    match serde_json::to_string(&diff) {
                        Ok(text) => Some(base64::engine::general_purpose::STANDARD.encode(text)),
                        Err(e) => return AdmissionResponse::internal_error(uid, e),
                    }
                }
            }
            (None, _) => None,
        };
        let status =
            (response.message.is_some() || response.code.is_some()).then(|| AdmissionStatus {
                message: response.message.clone(),
                code: response.code,
                ..Default::default()
            });
        AdmissionResponse {
            uid: uid.to_string(),
            allowed: response.accepted,
            patch_type: patch.as_ref().map(|_| "JSONPatch".to_string()),
            patch,
            status,
            audit_annotations: response.audit_annotations,
            warnings: response.warnings,
        }
    }

    /// The decoded JSON Patch, when there is one.
    pub fn decoded_patch(&self) -> Option<Value> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(self.patch.as_ref()?)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// One line of compact JSON, as kwctl prints it.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The payload written from the request's cached JSON is byte for byte what serialising
    /// the whole document writes.
    #[test]
    fn payloads_from_cached_json_match_whole_serialisation() {
        let request = ValidateRequest::parse(
            br#"{"uid":"u\"1","object":{"b":1,"a":[true,null,"\u00e9"]},"n":1.5e300}"#,
            false,
            "r",
        )
        .unwrap();
        let settings = json!({"z": {"y": "x"}, "a": []});
        let expected =
            serde_json::to_vec(&json!({"request": request.value(), "settings": settings})).unwrap();
        assert_eq!(validation_payload(&request, &settings), expected);
        assert_eq!(json_object(&[]), b"{}");
    }

    /// Policies see the request kwctl would give them: known fields in kwctl's order, no
    /// nulls, nothing unknown (checked against kwctl 1.31 with a Rego policy that echoes its
    /// input); raw documents are untouched.
    #[test]
    fn admission_requests_are_read_as_kubewarden_reads_them() {
        let file = br#"{"options":{"kind":"CreateOptions"},"dryRun":false,"oldObject":null,
            "object":{"kind":"Service","extra":null},"userInfo":{"username":"admin","uid":null,
            "groups":["g"],"x":1},"operation":"CREATE","namespace":"default","name":"nginx",
            "requestSubResource":null,"requestResource":{"group":"","version":"v1",
            "resource":"services","x":2},"subResource":null,"resource":{"resource":"services",
            "group":"","version":"v1"},"kind":{"kind":"Service","group":"","version":"v1"},
            "uid":"u1","unknown":{"a":1}}"#;
        let r = ValidateRequest::parse(file, false, "r").unwrap();
        assert_eq!(
            String::from_utf8(r.json().to_vec()).unwrap(),
            concat!(
                r#"{"uid":"u1","kind":{"group":"","version":"v1","kind":"Service"},"#,
                r#""resource":{"group":"","version":"v1","resource":"services"},"#,
                r#""requestResource":{"group":"","version":"v1","resource":"services"},"#,
                r#""name":"nginx","namespace":"default","operation":"CREATE","#,
                r#""userInfo":{"groups":["g"],"username":"admin"},"#,
                r#""object":{"kind":"Service","extra":null},"dryRun":false,"#,
                r#""options":{"kind":"CreateOptions"}}"#
            )
        );
        let raw = ValidateRequest::parse(br#"{"oldObject":null,"b":1}"#, true, "r").unwrap();
        assert_eq!(raw.json(), br#"{"oldObject":null,"b":1}"#);
    }

    #[test]
    fn reviews_are_unwrapped_and_raw_requests_kept() {
        let review = br#"{"kind":"AdmissionReview","request":{"uid":"u1","operation":"CREATE"}}"#;
        let r = ValidateRequest::parse(review, false, "r").unwrap();
        assert_eq!(r.uid(), "u1");
        assert_eq!(r.value()["operation"], "CREATE");
        let raw = ValidateRequest::parse(br#"{"user":"tonio"}"#, true, "r").unwrap();
        assert_eq!(raw.original_object(), Some(&json!({"user":"tonio"})));
        assert!(
            ValidateRequest::parse(b"[1]", false, "r")
                .unwrap_err()
                .to_string()
                .contains("an array")
        );
        assert!(ValidateRequest::parse(b"{", false, "r").is_err());
        assert!(ValidateRequest::parse(br#"{"kind":"AdmissionReview"}"#, false, "r").is_err());
    }

    #[test]
    fn response_shape_matches_kwctl() {
        let r = AdmissionResponse::from_validation(
            "u",
            None,
            ValidationResponse {
                accepted: true,
                ..Default::default()
            },
        );
        assert_eq!(
            r.to_json_line(),
            r#"{"uid":"u","allowed":true,"auditAnnotations":null,"warnings":null}"#
        );
        let r = AdmissionResponse::from_validation(
            "u",
            None,
            ValidationResponse {
                accepted: false,
                message: Some("no".into()),
                code: Some(403),
                warnings: Some(vec!["w".into()]),
                ..Default::default()
            },
        );
        assert_eq!(
            r.to_json_line(),
            r#"{"uid":"u","allowed":false,"status":{"message":"no","code":403},"auditAnnotations":null,"warnings":["w"]}"#
        );
        assert_eq!(
            AdmissionResponse::internal_error("u", "boom").to_json_line(),
            r#"{"uid":"u","allowed":false,"status":{"message":"internal server error: boom","code":500},"auditAnnotations":null,"warnings":null}"#
        );
    }

    #[test]
    fn mutations_become_a_base64_json_patch() {
        let original =
            json!({"metadata": {"name": "x", "annotations": {"fluxcd.io/cat": "felix"}}});
        let mutated =
            json!({"metadata": {"name": "x", "annotations": {"fluxcd.io/cat": "sylvester"}}});
        let r = AdmissionResponse::from_validation(
            "u",
            Some(&original),
            ValidationResponse {
                accepted: true,
                mutated_object: Some(mutated),
                ..Default::default()
            },
        );
        assert_eq!(r.patch_type.as_deref(), Some("JSONPatch"));
        assert_eq!(
            r.decoded_patch().unwrap(),
            json!([{"op":"replace","path":"/metadata/annotations/fluxcd.io~1cat","value":"sylvester"}])
        );
        // Same object: no patch at all.
        let same = AdmissionResponse::from_validation(
            "u",
            Some(&original),
            ValidationResponse {
                accepted: true,
                mutated_object: Some(original.clone()),
                ..Default::default()
            },
        );
        assert!(same.patch.is_none() && same.patch_type.is_none());
        // Mutating a DELETE (no object) is refused.
        let del = AdmissionResponse::from_validation(
            "u",
            None,
            ValidationResponse {
                accepted: true,
                mutated_object: Some(json!({})),
                ..Default::default()
            },
        );
        assert!(!del.allowed);
    }
}
