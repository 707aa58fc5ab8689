//! Release state in the cluster, byte-compatible with Yoke.
//!
//! Each revision is a Secret `yoke.<12 random hex>` in the release namespace with labels
//! `internal.yoke/kind=revision` and `internal.yoke/release=<sha1 hex of the release name>`,
//! annotations `internal.yoke/release-name`, `internal.yoke/source-url`,
//! `internal.yoke/source-checksum` (SHA-1 of the module, as Yoke records it),
//! `internal.yoke/created-at`, `internal.yoke/active-at` (Go RFC3339Nano),
//! `internal.yoke/resources` (object count), and data `resources` = gzip(JSON `[][]object`)
//! of the stages as applied (pre-stages split out, ownership marks added, namespaces
//! defaulted). hoist adds `hoist.dev/module-sha256`. The active revision is the one with the
//! greatest `active-at`; revision numbers are 1-based positions in `created-at` order.
//!
//! The lock is a Secret `yoke.<sha1 hex of the release name>` labelled
//! `internal.yoke/kind=lock`, `internal.yoke/release=<release name>`.

use crate::error::Error;
use chrono::{DateTime, SecondsFormat, Utc};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use hoist_resources::{Resource, Stages};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use sha1::{Digest, Sha1};
use std::collections::BTreeMap;
use std::io::{Read, Write};

/// Label holding the kind of a state Secret (`revision` or `lock`).
pub const LABEL_KIND: &str = "internal.yoke/kind";
/// Label holding the release (SHA-1 hex of its name on revisions, the name on locks).
pub const LABEL_RELEASE: &str = "internal.yoke/release";
/// Annotation holding the release name on revisions.
pub const ANNOTATION_RELEASE_NAME: &str = "internal.yoke/release-name";
/// Annotation holding the module's source URL (`file://ABS` for local files).
pub const ANNOTATION_SOURCE_URL: &str = "internal.yoke/source-url";
/// Annotation holding the module checksum Yoke records (SHA-1 hex).
pub const ANNOTATION_SOURCE_CHECKSUM: &str = "internal.yoke/source-checksum";
/// Annotation holding the revision creation time (RFC3339Nano).
pub const ANNOTATION_CREATED_AT: &str = "internal.yoke/created-at";
/// Annotation holding the time the revision last became active (RFC3339Nano).
pub const ANNOTATION_ACTIVE_AT: &str = "internal.yoke/active-at";
/// Annotation holding the number of objects in the revision.
pub const ANNOTATION_RESOURCES: &str = "internal.yoke/resources";
/// hoist's extra annotation: SHA-256 hex of the module, for digest pinning.
pub const ANNOTATION_MODULE_SHA256: &str = "hoist.dev/module-sha256";
/// hoist's extra annotation: the admission policies (and settings) that gated the revision,
/// as JSON (written by the CLI's policy gate, shown by `blackbox`).
pub const ANNOTATION_POLICIES: &str = "hoist.dev/policies";
/// Data key of the gzipped JSON stages.
pub const KEY_RESOURCES: &str = "resources";
/// Prefix of every state Secret's name.
pub const SECRET_PREFIX: &str = "yoke.";
/// Field manager used for state Secrets and for applying objects (shared with Yoke).
pub const FIELD_MANAGER: &str = "yoke";

/// Where the module of a revision came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Source {
    /// Source URL as Yoke records it (`file:///abs/path.wasm`, `https://...`, `oci://...`);
    /// empty when the flight came from stdin.
    pub url: String,
    /// SHA-1 hex of the module (Yoke's `source-checksum`); empty without a module.
    pub checksum: String,
    /// SHA-256 hex of the module (hoist's annotation), when known.
    pub sha256: Option<String>,
}

/// One revision of a release (metadata only; the stages are read on demand).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Revision {
    /// 1-based position in creation order.
    pub id: usize,
    /// Name of the Secret holding it.
    pub secret: String,
    /// Namespace of the release (and of the Secret).
    pub namespace: String,
    /// Release name.
    pub release: String,
    /// Module source.
    pub source: Source,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last became active.
    pub active_at: DateTime<Utc>,
    /// Number of objects.
    pub resources: usize,
    /// The policies that gated it ([`ANNOTATION_POLICIES`], JSON), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policies: Option<String>,
}

/// A release and its history, oldest revision first.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Release {
    /// Release name.
    pub name: String,
    /// Release namespace.
    pub namespace: String,
    /// Revisions in creation order (`history[i].id == i + 1`).
    pub history: Vec<Revision>,
}

impl Release {
    /// Builds a release from revisions in any order: sorts by creation time and numbers them.
    pub fn from_revisions(name: &str, namespace: &str, mut revisions: Vec<Revision>) -> Release {
        revisions.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.secret.cmp(&b.secret))
        });
        for (index, revision) in revisions.iter_mut().enumerate() {
            revision.id = index + 1;
        }
        Release {
            name: name.to_string(),
            namespace: namespace.to_string(),
            history: revisions,
        }
    }

    /// The active revision: the one with the greatest `active-at` (the earliest wins ties,
    /// as in Yoke).
    pub fn active(&self) -> Option<&Revision> {
        let mut active: Option<&Revision> = None;
        for revision in &self.history {
            if active.is_none_or(|a| revision.active_at > a.active_at) {
                active = Some(revision);
            }
        }
        active
    }

    /// The revision with the 1-based `id`.
    pub fn revision(&self, id: usize) -> Option<&Revision> {
        id.checked_sub(1).and_then(|i| self.history.get(i))
    }
}

/// SHA-1 hex of a string (release labels, lock names).
pub fn sha1_hex(data: &[u8]) -> String {
    hex::encode(Sha1::digest(data))
}

/// The `internal.yoke/release` label value of a release's revisions.
pub fn release_label(release: &str) -> String {
    sha1_hex(release.as_bytes())
}

/// Name of the lock Secret of a release.
pub fn lock_secret_name(release: &str) -> String {
    format!("{SECRET_PREFIX}{}", sha1_hex(release.as_bytes()))
}

/// A new random revision Secret name: `yoke.` and 12 hex digits.
pub fn random_revision_name() -> String {
    let bytes: [u8; 6] = rand::random();
    format!("{SECRET_PREFIX}{}", hex::encode(bytes))
}

/// Formats a time as Go's `time.RFC3339Nano` does for UTC (trailing zeros of the fraction
/// trimmed, `Z` suffix).
pub fn format_time(time: DateTime<Utc>) -> String {
    let base = time.to_rfc3339_opts(SecondsFormat::Secs, true);
    let nanos = time.timestamp_subsec_nanos();
    if nanos == 0 {
        return base;
    }
    let fraction = format!("{nanos:09}");
    let fraction = fraction.trim_end_matches('0');
    match base.strip_suffix('Z') {
        Some(stem) => format!("{stem}.{fraction}Z"),
        None => base,
    }
}

/// Parses an RFC3339 time with any fraction and offset (what Go writes).
pub fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Encodes stages as Yoke stores them: gzip of the JSON `[][]object`.
pub fn encode_stages(stages: &Stages) -> Vec<u8> {
    let json = serde_json::to_vec(stages).unwrap_or_else(|_| b"[]".to_vec());
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(&json);
    encoder.finish().unwrap_or_default()
}

/// Decodes a revision's `resources` data: gzipped or plain JSON (older Yoke), either
/// `[][]object` or a flat `[]object` (oldest Yoke).
pub fn decode_stages(data: &[u8]) -> Result<Stages, String> {
    let json = if data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(data)
            .read_to_end(&mut out)
            .map_err(|e| format!("bad gzip data: {e}"))?;
        out
    } else {
        data.to_vec()
    };
    let value: Value = serde_json::from_slice(&json).map_err(|e| format!("bad JSON: {e}"))?;
    let Value::Array(items) = value else {
        if value.is_null() {
            return Ok(Stages::default());
        }
        return Err("expected a JSON array of stages".into());
    };
    let nested = items.iter().all(|i| i.is_array() || i.is_null());
    let mut stages = Vec::new();
    if nested {
        for (index, stage) in items.into_iter().enumerate() {
            let objects = match stage {
                Value::Array(objects) => objects,
                _ => Vec::new(),
            };
            let mut out = Vec::with_capacity(objects.len());
            for (item, object) in objects.into_iter().enumerate() {
                out.push(
                    Resource::from_value(object)
                        .map_err(|e| format!("stage {}, item {}: {e}", index + 1, item + 1))?,
                );
            }
            stages.push(out);
        }
    } else {
        let mut out = Vec::with_capacity(items.len());
        for (item, object) in items.into_iter().enumerate() {
            out.push(Resource::from_value(object).map_err(|e| format!("item {}: {e}", item + 1))?);
        }
        stages.push(out);
    }
    Ok(Stages(stages))
}

/// Builds the Secret of a new revision.
pub fn revision_secret(
    release: &str,
    namespace: &str,
    source: &Source,
    created_at: DateTime<Utc>,
    stages: &Stages,
) -> Secret {
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_KIND.to_string(), "revision".to_string());
    labels.insert(LABEL_RELEASE.to_string(), release_label(release));
    let now = format_time(created_at);
    let mut annotations = BTreeMap::new();
    annotations.insert(ANNOTATION_CREATED_AT.to_string(), now.clone());
    annotations.insert(ANNOTATION_ACTIVE_AT.to_string(), now);
    annotations.insert(
        ANNOTATION_RESOURCES.to_string(),
        stages.resource_count().to_string(),
    );
    annotations.insert(ANNOTATION_SOURCE_URL.to_string(), source.url.clone());
    annotations.insert(
        ANNOTATION_SOURCE_CHECKSUM.to_string(),
        source.checksum.clone(),
    );
    annotations.insert(ANNOTATION_RELEASE_NAME.to_string(), release.to_string());
    if let Some(sha256) = &source.sha256 {
        annotations.insert(ANNOTATION_MODULE_SHA256.to_string(), sha256.clone());
    }
    let mut data = BTreeMap::new();
    data.insert(KEY_RESOURCES.to_string(), ByteString(encode_stages(stages)));
    Secret {
        metadata: ObjectMeta {
            name: Some(random_revision_name()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

/// Reads a revision's metadata from its Secret (`id` is assigned later by
/// [`Release::from_revisions`]).
pub fn revision_from_secret(secret: &Secret, release: &str) -> Result<Revision, Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let namespace = secret.metadata.namespace.clone().unwrap_or_default();
    let empty = BTreeMap::new();
    let annotations = secret.metadata.annotations.as_ref().unwrap_or(&empty);
    let get = |key: &str| annotations.get(key).cloned().unwrap_or_default();
    let corrupt = |message: String| Error::CorruptRevision {
        namespace: namespace.clone(),
        secret: name.clone(),
        message,
    };
    let created_at = parse_time(&get(ANNOTATION_CREATED_AT)).ok_or_else(|| {
        corrupt(format!(
            "annotation {ANNOTATION_CREATED_AT} is not an RFC3339 time: {:?}",
            get(ANNOTATION_CREATED_AT)
        ))
    })?;
    let active_at = parse_time(&get(ANNOTATION_ACTIVE_AT)).unwrap_or(created_at);
    Ok(Revision {
        id: 0,
        secret: name.clone(),
        namespace: namespace.clone(),
        release: annotations
            .get(ANNOTATION_RELEASE_NAME)
            .cloned()
            .unwrap_or_else(|| release.to_string()),
        source: Source {
            url: get(ANNOTATION_SOURCE_URL),
            checksum: get(ANNOTATION_SOURCE_CHECKSUM),
            sha256: annotations.get(ANNOTATION_MODULE_SHA256).cloned(),
        },
        created_at,
        active_at,
        resources: get(ANNOTATION_RESOURCES).parse().unwrap_or(0),
        policies: annotations.get(ANNOTATION_POLICIES).cloned(),
    })
}

/// Decodes the stages stored in a revision Secret.
pub fn stages_from_secret(secret: &Secret) -> Result<Stages, Error> {
    let corrupt = |message: String| Error::CorruptRevision {
        namespace: secret.metadata.namespace.clone().unwrap_or_default(),
        secret: secret.metadata.name.clone().unwrap_or_default(),
        message,
    };
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(KEY_RESOURCES))
        .ok_or_else(|| corrupt(format!("no data key {KEY_RESOURCES:?}")))?;
    decode_stages(&data.0).map_err(corrupt)
}

/// Is `value` a valid label value (≤ 63 chars, alphanumerics, `-_.`, alphanumeric ends)?
pub fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Builds the lock Secret of a release.
pub fn lock_secret(release: &str, namespace: &str) -> Secret {
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_KIND.to_string(), "lock".to_string());
    // Yoke labels the lock with the plain release name; names that are not valid label
    // values would make the Secret invalid, so fall back to the hash for those.
    let value = if is_label_value(release) {
        release.to_string()
    } else {
        release_label(release)
    };
    labels.insert(LABEL_RELEASE.to_string(), value);
    Secret {
        metadata: ObjectMeta {
            name: Some(lock_secret_name(release)),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// A revision Secret exactly as Yoke writes it (Go's json.Marshal sorts keys; Go's
    /// gzip; RFC3339Nano in UTC), built from Yoke's CreateRevision.
    fn yoke_fixture() -> Secret {
        let json = br#"[[{"apiVersion":"v1","kind":"Namespace","metadata":{"annotations":{"instance.atc.yoke.cd/namespace":"demo","instance.atc.yoke.cd/release":"rel"},"labels":{"app.kubernetes.io/managed-by":"yoke"},"name":"extra"}}],[{"apiVersion":"v1","data":{"k":"v"},"kind":"ConfigMap","metadata":{"annotations":{"instance.atc.yoke.cd/namespace":"demo","instance.atc.yoke.cd/release":"rel"},"labels":{"app.kubernetes.io/managed-by":"yoke"},"name":"cm","namespace":"demo"}}]]"#;
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(json).unwrap();
        let data = gz.finish().unwrap();
        let secret = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "name": "yoke.0a1b2c3d4e5f", "namespace": "demo",
                "labels": {"internal.yoke/kind": "revision",
                           "internal.yoke/release": sha1_hex(b"rel")},
                "annotations": {
                    "internal.yoke/created-at": "2025-06-01T10:20:30.123456789Z",
                    "internal.yoke/active-at": "2025-06-02T00:00:00Z",
                    "internal.yoke/resources": "2",
                    "internal.yoke/source-url": "file:///tmp/flight.wasm",
                    "internal.yoke/source-checksum": "da39a3ee5e6b4b0d3255bfef95601890afd80709",
                    "internal.yoke/release-name": "rel"
                }
            },
            "data": {"resources": base64_encode(&data)}
        });
        serde_json::from_value(secret).unwrap()
    }

    fn base64_encode(data: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    #[test]
    fn reads_a_yoke_revision() {
        let secret = yoke_fixture();
        let revision = revision_from_secret(&secret, "rel").unwrap();
        assert_eq!(revision.release, "rel");
        assert_eq!(revision.resources, 2);
        assert_eq!(revision.source.url, "file:///tmp/flight.wasm");
        assert_eq!(revision.source.sha256, None);
        assert_eq!(
            revision.created_at,
            Utc.with_ymd_and_hms(2025, 6, 1, 10, 20, 30).unwrap()
                + chrono::Duration::nanoseconds(123_456_789)
        );
        let stages = stages_from_secret(&secret).unwrap();
        assert_eq!(stages.0.len(), 2);
        assert_eq!(stages.0[0][0].kind(), "Namespace");
        assert_eq!(stages.0[1][0].namespace(), Some("demo"));
    }

    #[test]
    fn writes_what_it_reads() {
        let stages = stages_from_secret(&yoke_fixture()).unwrap();
        let created = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
            + chrono::Duration::nanoseconds(500_000_000);
        let source = Source {
            url: "oci://r/m:1".into(),
            checksum: "ab".into(),
            sha256: Some("cd".into()),
        };
        let secret = revision_secret("rel", "demo", &source, created, &stages);
        let name = secret.metadata.name.clone().unwrap();
        assert!(name.starts_with("yoke.") && name.len() == 17, "{name}");
        let labels = secret.metadata.labels.clone().unwrap();
        assert_eq!(labels[LABEL_KIND], "revision");
        assert_eq!(labels[LABEL_RELEASE], sha1_hex(b"rel"));
        let annotations = secret.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[ANNOTATION_CREATED_AT], "2026-01-02T03:04:05.5Z");
        assert_eq!(annotations[ANNOTATION_RESOURCES], "2");
        assert_eq!(annotations[ANNOTATION_MODULE_SHA256], "cd");
        let revision = revision_from_secret(&secret, "rel").unwrap();
        assert_eq!(revision.created_at, created);
        assert_eq!(revision.source, source);
        assert_eq!(stages_from_secret(&secret).unwrap(), stages);
    }

    #[test]
    fn decodes_legacy_formats() {
        let flat = br#"[{"kind":"ConfigMap","metadata":{"name":"a"}}]"#;
        let stages = decode_stages(flat).unwrap();
        assert_eq!(stages.0.len(), 1);
        assert_eq!(stages.0[0][0].name(), "a");
        assert!(decode_stages(b"{}").is_err());
        assert!(decode_stages(&[0x1f, 0x8b, 0, 1]).is_err());
        assert!(decode_stages(br#"[[{"metadata":{}}]]"#).is_err());
    }

    #[test]
    fn go_time_format() {
        let t = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(format_time(t), "2026-01-02T03:04:05Z");
        let t = t + chrono::Duration::nanoseconds(120);
        assert_eq!(format_time(t), "2026-01-02T03:04:05.00000012Z");
        assert_eq!(parse_time(&format_time(t)), Some(t));
        assert_eq!(
            parse_time("2026-01-02T05:04:05.00000012+02:00"),
            Some(t),
            "offsets as Go writes them in local time"
        );
    }

    #[test]
    fn active_revision_and_ids() {
        let t = |s: i64| Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
        let rev = |secret: &str, created: i64, active: i64| Revision {
            id: 0,
            secret: secret.into(),
            namespace: "ns".into(),
            release: "r".into(),
            source: Source::default(),
            created_at: t(created),
            active_at: t(active),
            resources: 1,
            policies: None,
        };
        let release = Release::from_revisions(
            "r",
            "ns",
            vec![rev("c", 30, 30), rev("a", 10, 40), rev("b", 20, 20)],
        );
        let ids: Vec<_> = release
            .history
            .iter()
            .map(|r| (r.id, r.secret.as_str()))
            .collect();
        assert_eq!(ids, vec![(1, "a"), (2, "b"), (3, "c")]);
        assert_eq!(release.active().unwrap().secret, "a");
        assert_eq!(release.revision(2).unwrap().secret, "b");
        assert!(release.revision(0).is_none() && release.revision(4).is_none());
    }

    #[test]
    fn lock_secret_matches_yoke() {
        let lock = lock_secret("my-rel", "ns");
        assert_eq!(
            lock.metadata.name.as_deref(),
            Some(format!("yoke.{}", sha1_hex(b"my-rel")).as_str())
        );
        let labels = lock.metadata.labels.unwrap();
        assert_eq!(labels[LABEL_KIND], "lock");
        assert_eq!(labels[LABEL_RELEASE], "my-rel");
        let odd = lock_secret("a/b c", "ns");
        assert_eq!(
            odd.metadata.labels.unwrap()[LABEL_RELEASE],
            sha1_hex(b"a/b c")
        );
    }
}
