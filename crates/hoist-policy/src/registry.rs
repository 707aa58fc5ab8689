//! The `oci` host capability against real registries, through hoist's registry client
//! (`hoist_oci`): `v1/manifest_digest`, `v1/oci_manifest` and `v1/oci_manifest_config`,
//! answered in the shapes kwctl answers them (its `oci-client` types re-serialised).
//! Sigstore verification (`v1/verify`, `v2/verify`) is refused with a clear message: hoist
//! verifies its own signatures, not Sigstore's.

use crate::capabilities::{CapabilityBackend, CapabilityRequest};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// An OCI descriptor as kwctl's `OciDescriptor` serialises it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// `mediaType`.
    pub media_type: String,
    /// `digest`.
    pub digest: String,
    /// `size`.
    pub size: i64,
    /// `urls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// `annotations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An image manifest as kwctl's `OciImageManifest` serialises it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// `schemaVersion`.
    pub schema_version: u8,
    /// `mediaType`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// `config`.
    pub config: Descriptor,
    /// `layers`.
    pub layers: Vec<Descriptor>,
    /// `subject`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// `artifactType`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// `annotations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A platform of an index entry (kwctl's `Platform`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Platform {
    /// `architecture` (Go's names: amd64, arm64...).
    pub architecture: String,
    /// `os`.
    pub os: String,
    /// `os.version`.
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// `os.features`.
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    /// `variant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// `features`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
}

/// An entry of an image index (kwctl's `ImageIndexEntry`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    /// `mediaType`.
    pub media_type: String,
    /// `digest`.
    pub digest: String,
    /// `size`.
    pub size: i64,
    /// `platform`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// `annotations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An image index (kwctl's `OciImageIndex`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// `schemaVersion`.
    pub schema_version: u8,
    /// `mediaType`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// `manifests`.
    pub manifests: Vec<IndexEntry>,
    /// `artifactType`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// `annotations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// What `v1/oci_manifest` answers: an image manifest or an index (untagged, image first, as
/// kwctl's `OciManifest`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Manifest {
    /// An image manifest.
    Image(Box<ImageManifest>),
    /// An image index.
    Index(ImageIndex),
}

/// Parses a manifest body as kwctl does (an image manifest first, then an index).
pub fn parse_manifest(body: &[u8], image: &str) -> Result<Manifest, String> {
    serde_json::from_slice(body).map_err(|e| {
        format!(
            "{image}: the registry's manifest is neither an OCI image manifest nor an index: {e}"
        )
    })
}

/// Go's name of this machine's architecture, as index entries spell it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The entry kwctl's default platform resolver picks: the first for this OS and architecture.
pub fn platform_entry(index: &ImageIndex) -> Option<&IndexEntry> {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    index.manifests.iter().find(|e| {
        e.platform
            .as_ref()
            .is_some_and(|p| p.os == os && p.architecture == go_arch())
    })
}

/// A reference as kwctl resolves it: `busybox` is `docker.io/library/busybox`, a name
/// without a registry host is on `docker.io`.
pub fn resolve_reference(image: &str) -> Result<String, String> {
    let image = image.trim();
    let image = image.strip_prefix("registry://").unwrap_or(image);
    if image.is_empty() {
        return Err("the image reference is empty".into());
    }
    let first = image.split('/').next().unwrap_or_default();
    let has_host =
        image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    Ok(if has_host {
        image.to_string()
    } else if image.contains('/') {
        format!("docker.io/{image}")
    } else {
        format!("docker.io/library/{image}")
    })
}

/// Answers `Oci*` requests from the registries (a cache per image for the life of the
/// backend, as kwctl keeps answers), refuses Sigstore verification, and passes everything
/// else to `inner`. Calls come from the Wasm thread and block on the backend's own runtime.
pub struct OciBackend {
    options: hoist_oci::PullOptions,
    runtime: tokio::runtime::Runtime,
    cache: Mutex<HashMap<(String, String), Vec<u8>>>,
    inner: Arc<dyn CapabilityBackend>,
}

/// The backend could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the async runtime for the oci host capability: {0}")]
pub struct OciBackendError(#[from] std::io::Error);

impl OciBackend {
    /// A backend pulling with `options` (plain http with `insecure`; loopback registries are
    /// always plain http).
    pub fn new(
        options: hoist_oci::PullOptions,
        inner: Arc<dyn CapabilityBackend>,
    ) -> Result<Self, OciBackendError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(OciBackend {
            options,
            runtime,
            cache: Mutex::new(HashMap::new()),
            inner,
        })
    }

    async fn manifest(&self, image: &str) -> Result<hoist_oci::FetchedManifest, String> {
        hoist_oci::fetch_manifest(image, &self.options)
            .await
            .map_err(|e| e.to_string())
    }

    async fn answer(&self, tag: &str, image: &str) -> Result<Vec<u8>, String> {
        let reference = resolve_reference(image)?;
        match tag {
            "OciManifestDigest" => {
                let fetched = self.manifest(&reference).await?;
                to_json(&serde_json::json!({ "digest": fetched.digest }))
            }
            "OciManifest" => {
                let fetched = self.manifest(&reference).await?;
                to_json(&parse_manifest(&fetched.body, image)?)
            }
            "OciManifestAndConfig" => {
                let fetched = self.manifest(&reference).await?;
                let (manifest, digest) = match parse_manifest(&fetched.body, image)? {
                    Manifest::Image(m) => (*m, fetched.digest),
                    Manifest::Index(index) => {
                        let entry = platform_entry(&index).ok_or_else(|| {
                            format!(
                                "{image}: the image index has no manifest for {}/{} (the platform kwctl would pick)",
                                std::env::consts::OS,
                                go_arch()
                            )
                        })?;
                        let pinned = pin(&reference, &entry.digest)?;
                        let inner = self.manifest(&pinned).await?;
                        match parse_manifest(&inner.body, image)? {
                            Manifest::Image(m) => (*m, entry.digest.clone()),
                            Manifest::Index(_) => {
                                return Err(format!(
                                    "{image}: the index entry {} is another index, not an image manifest",
                                    entry.digest
                                ));
                            }
                        }
                    }
                };
                let config =
                    hoist_oci::fetch_blob(&reference, &manifest.config.digest, &self.options)
                        .await
                        .map_err(|e| e.to_string())?;
                let config: Value = serde_json::from_slice(&config).map_err(|e| {
                    format!(
                        "{image}: the image config {} is not JSON: {e}",
                        manifest.config.digest
                    )
                })?;
                to_json(&serde_json::json!({
                    "manifest": manifest,
                    "digest": digest,
                    "config": config,
                }))
            }
            other => Err(format!("unknown OCI request {other}")),
        }
    }
}

/// `reference` with its tag or digest replaced by `digest` (hoist-oci's reference parser, so
/// a malformed reference is refused here, with the reason).
fn pin(reference: &str, digest: &str) -> Result<String, String> {
    hoist_oci::OciReference::parse(reference)
        .map(|r| r.with_digest(digest))
        .map_err(|e| e.to_string())
}

fn to_json(value: &impl Serialize) -> Result<Vec<u8>, String> {
    serde_json::to_vec(value).map_err(|e| e.to_string())
}

/// The refusal of Sigstore verification requests.
pub fn sigstore_refusal(tag: &str) -> String {
    format!(
        "oci verify ({tag}): hoist does not verify Sigstore signatures, so this policy's signature check cannot run here; replay a session recorded with kwctl (--replay-host-capabilities-interactions) or verify the image with cosign"
    )
}

impl CapabilityBackend for OciBackend {
    fn call(&self, request: &CapabilityRequest) -> Result<Vec<u8>, String> {
        let tag = request.tag.as_str();
        if tag.starts_with("Sigstore") {
            return Err(sigstore_refusal(tag));
        }
        if !matches!(
            tag,
            "OciManifestDigest" | "OciManifest" | "OciManifestAndConfig"
        ) {
            return self.inner.call(request);
        }
        let image = request.str("image").ok_or_else(|| {
            format!("{tag}: the request is not an image reference (a JSON string)")
        })?;
        if self.options.offline {
            return Err(format!(
                "{tag} {image}: hoist runs --offline, so it does not ask registries for manifests"
            ));
        }
        let key = (tag.to_string(), image.to_string());
        if let Some(hit) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(hit.clone());
        }
        let answer = self
            .runtime
            .block_on(self.answer(tag, image))
            .map_err(|e| format!("{tag} {image}: {e}"))?;
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, answer.clone());
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_resolve_as_kwctl_does() {
        assert_eq!(
            resolve_reference("busybox").unwrap(),
            "docker.io/library/busybox"
        );
        assert_eq!(
            resolve_reference("kubewarden/x:1").unwrap(),
            "docker.io/kubewarden/x:1"
        );
        assert_eq!(resolve_reference("ghcr.io/a/b:1").unwrap(), "ghcr.io/a/b:1");
        assert_eq!(
            resolve_reference("127.0.0.1:5000/a@sha256:00").unwrap(),
            "127.0.0.1:5000/a@sha256:00"
        );
        assert_eq!(resolve_reference("localhost/a").unwrap(), "localhost/a");
        assert!(resolve_reference(" ").is_err());
        let (d0, d1) = (
            format!("sha256:{}", "0".repeat(64)),
            format!("sha256:{}", "a".repeat(64)),
        );
        assert_eq!(
            pin("127.0.0.1:5000/a/b:v1", &d1).unwrap(),
            format!("127.0.0.1:5000/a/b@{d1}")
        );
        assert_eq!(
            pin("127.0.0.1:5000/a/b", &d1).unwrap(),
            format!("127.0.0.1:5000/a/b@{d1}")
        );
        assert_eq!(
            pin(&format!("h.example/a@{d0}"), &d1).unwrap(),
            format!("h.example/a@{d1}")
        );
    }

    #[test]
    fn manifests_are_reserialised_in_kwctls_shape() {
        // Unknown fields go, field order is kwctl's, the index is recognised.
        let body =
            br#"{"layers":[{"size":3,"digest":"sha256:l","mediaType":"application/x","extra":1}],
            "config":{"digest":"sha256:c","size":2,"mediaType":"application/c"},"schemaVersion":2,
            "mediaType":"application/vnd.oci.image.manifest.v1+json","weird":true}"#;
        let m = parse_manifest(body, "i").unwrap();
        assert_eq!(
            String::from_utf8(to_json(&m).unwrap()).unwrap(),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/c","digest":"sha256:c","size":2},"layers":[{"mediaType":"application/x","digest":"sha256:l","size":3}]}"#
        );
        let index = json!({"schemaVersion": 2, "manifests": [
            {"mediaType": "m", "digest": "sha256:arm", "size": 1, "platform": {"os": "linux", "architecture": "arm"}},
            {"mediaType": "m", "digest": "sha256:here", "size": 1, "platform": {"os": std::env::consts::OS, "architecture": go_arch()}},
        ]});
        let Manifest::Index(index) = parse_manifest(index.to_string().as_bytes(), "i").unwrap()
        else {
            panic!("an index")
        };
        assert_eq!(platform_entry(&index).unwrap().digest, "sha256:here");
        let err = parse_manifest(br#"{"schemaVersion":2}"#, "img").unwrap_err();
        assert!(
            err.contains("img: the registry's manifest is neither"),
            "{err}"
        );
    }

    #[test]
    fn sigstore_is_refused_and_other_requests_pass_through() {
        let backend = OciBackend::new(
            hoist_oci::PullOptions {
                offline: true,
                ..Default::default()
            },
            Arc::new(crate::capabilities::NoBackend),
        )
        .unwrap();
        let host = crate::HostCapabilities {
            granted: Default::default(),
            backend: Arc::new(backend),
            policy: "p".into(),
        };
        let err = host
            .dispatch(
                "kubewarden",
                "oci",
                "v2/verify",
                br#"{"type":"SigstorePubKeyVerify","image":"ghcr.io/a/b:1","pub_keys":["k"]}"#,
            )
            .unwrap_err();
        assert!(
            err.contains("SigstorePubKeyVerify") && err.contains("does not verify Sigstore"),
            "{err}"
        );
        let err = host
            .dispatch(
                "kubewarden",
                "oci",
                "v1/verify",
                br#"{"SigstoreKeylessVerify":{"image":"ghcr.io/a/b:1","keyless":[]}}"#,
            )
            .unwrap_err();
        assert!(err.contains("SigstoreKeylessVerify"), "{err}");
        let err = host
            .dispatch(
                "kubewarden",
                "oci",
                "v1/manifest_digest",
                br#""ghcr.io/a/b:1""#,
            )
            .unwrap_err();
        assert!(err.contains("--offline"), "{err}");
        let err = host
            .dispatch(
                "kubewarden",
                "net",
                "v1/dns_lookup_host",
                br#""example.com""#,
            )
            .unwrap_err();
        assert!(err.contains("DNSLookupHost"), "{err}");
        // A malformed payload is an error, not a crash.
        assert!(
            host.dispatch("kubewarden", "oci", "v1/manifest_digest", b"{")
                .is_err()
        );
    }
}
