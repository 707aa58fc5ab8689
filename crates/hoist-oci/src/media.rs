//! Media types, the manifest model, and recognising a module's format from its manifest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{OciError, Result};
use crate::reference::parse_digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 image manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Yoke's config media type.
pub const YOKE_CONFIG: &str = "application/vnd.yoke.config.v1+json";
/// Yoke's layer media type (gzipped wasm).
pub const YOKE_WASM_GZIP: &str = "application/vnd.yoke.wasm.gzip";
/// Kubewarden's (wasm-to-oci) config media type.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v1+json";
/// Kubewarden's (wasm-to-oci) layer media type (raw wasm).
pub const WASM_CONTENT_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// Docker container image config.
pub const DOCKER_IMAGE_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// OCI image config.
pub const OCI_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker gzipped tar layer (kpt's layer type).
pub const DOCKER_LAYER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// OCI gzipped tar layer.
pub const OCI_LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI uncompressed tar layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// Every manifest media type a pull asks for (`Accept`).
pub const ACCEPTED_MANIFESTS: [&str; 4] = [
    OCI_MANIFEST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
];

/// Config media types that identify a module format (kpt images use the generic image configs).
const ACCEPTED_CONFIGS: [&str; 4] = [
    YOKE_CONFIG,
    WASM_CONFIG,
    DOCKER_IMAGE_CONFIG,
    OCI_IMAGE_CONFIG,
];

const TAR_LAYERS: [&str; 3] = [DOCKER_LAYER_TAR_GZIP, OCI_LAYER_TAR_GZIP, OCI_LAYER_TAR];

/// A content descriptor inside a manifest or index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    /// Media type of the referenced content.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `sha256:<hex>` of the referenced content.
    pub digest: String,
    /// Size in bytes of the referenced content.
    pub size: u64,
    /// Platform of an index entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The platform of an index entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    /// CPU architecture (`wasm` for kpt's Wasm functions).
    #[serde(default)]
    pub architecture: String,
    /// Operating system (`js` for kpt's Wasm functions).
    #[serde(default)]
    pub os: String,
}

/// Just the fields of a manifest or index that format detection needs.
#[derive(Debug, Clone, Deserialize)]
struct ManifestDoc {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
}

/// A module format on the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModuleFormat {
    /// Yoke's `stow` format: OCI manifest, config `application/vnd.yoke.config.v1+json`,
    /// one `application/vnd.yoke.wasm.gzip` layer.
    Yoke,
    /// Kubewarden's (wasm-to-oci) format: config `application/vnd.wasm.config.v1+json`,
    /// one raw `application/vnd.wasm.content.layer.v1+wasm` layer.
    Kubewarden,
    /// kpt's format: an index with a `wasm/js` platform entry pointing at a Docker v2 image
    /// whose gzipped tar layer holds the module.
    Kpt,
}

impl ModuleFormat {
    /// The lowercase name (`yoke`, `kubewarden`, `kpt`).
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleFormat::Yoke => "yoke",
            ModuleFormat::Kubewarden => "kubewarden",
            ModuleFormat::Kpt => "kpt",
        }
    }
}

impl std::fmt::Display for ModuleFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ModuleFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "yoke" => Ok(ModuleFormat::Yoke),
            "kubewarden" | "wasm-to-oci" => Ok(ModuleFormat::Kubewarden),
            "kpt" => Ok(ModuleFormat::Kpt),
            other => Err(format!(
                "unknown module format '{other}' (yoke, kubewarden, kpt)"
            )),
        }
    }
}

/// What to fetch next, decided from one manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Yoke: gunzip this layer.
    Yoke(Descriptor),
    /// Kubewarden: this layer is the module.
    Kubewarden(Descriptor),
    /// kpt index: fetch this platform manifest, which must be a [`Plan::KptImage`].
    KptIndex(Descriptor),
    /// kpt image: tar layers, flattened; the first regular file is the module.
    KptImage(Vec<Descriptor>),
}

fn wrong(what: &str, reference: &str, found: &str, accepted: &[&str]) -> OciError {
    OciError::WrongMediaType {
        what: what.into(),
        reference: reference.into(),
        found: found.into(),
        accepted: accepted.iter().map(|s| s.to_string()).collect(),
    }
}

fn check_digest(d: &Descriptor, reference: &str) -> Result<()> {
    parse_digest(&d.digest).map_err(|reason| OciError::InvalidManifest {
        reference: reference.into(),
        detail: format!("descriptor digest: {reason}"),
    })?;
    Ok(())
}

/// Decides a module's format from a manifest body (`content_type` is the response's
/// `Content-Type`, used when the body has no `mediaType`).
pub(crate) fn classify(body: &[u8], content_type: Option<&str>, reference: &str) -> Result<Plan> {
    let doc: ManifestDoc = serde_json::from_slice(body).map_err(|e| OciError::InvalidManifest {
        reference: reference.into(),
        detail: format!("not a JSON manifest: {e}"),
    })?;
    if doc.schema_version != Some(2) {
        return Err(OciError::InvalidManifest {
            reference: reference.into(),
            detail: format!(
                "schemaVersion is {:?}, only 2 is supported",
                doc.schema_version
            ),
        });
    }
    let header_type = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
        .filter(|c| ACCEPTED_MANIFESTS.contains(&c.as_str()));
    let media_type = doc.media_type.clone().or(header_type).unwrap_or_else(|| {
        // No mediaType anywhere (allowed by OCI): infer from the shape.
        if doc.manifests.is_some() {
            OCI_INDEX
        } else {
            OCI_MANIFEST
        }
        .to_string()
    });
    match media_type.as_str() {
        OCI_INDEX | DOCKER_MANIFEST_LIST => {
            let entries = doc.manifests.unwrap_or_default();
            let mut platforms = Vec::new();
            for e in &entries {
                match &e.platform {
                    Some(p) if p.os == "js" && p.architecture == "wasm" => {
                        check_digest(e, reference)?;
                        if e.media_type != DOCKER_MANIFEST && e.media_type != OCI_MANIFEST {
                            return Err(wrong(
                                "wasm/js index entry",
                                reference,
                                &e.media_type,
                                &[DOCKER_MANIFEST, OCI_MANIFEST],
                            ));
                        }
                        return Ok(Plan::KptIndex(e.clone()));
                    }
                    Some(p) => platforms.push(format!("{}/{}", p.os, p.architecture)),
                    None => platforms.push("(no platform)".into()),
                }
            }
            Err(OciError::NoModule {
                reference: reference.into(),
                detail: format!(
                    "the index has no entry for platform js/wasm (kpt's Wasm format); platforms: [{}]",
                    platforms.join(", ")
                ),
            })
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let config = doc.config.ok_or_else(|| OciError::InvalidManifest {
                reference: reference.into(),
                detail: "image manifest without a config descriptor".into(),
            })?;
            let layers = doc.layers.unwrap_or_default();
            for l in &layers {
                check_digest(l, reference)?;
            }
            match config.media_type.as_str() {
                YOKE_CONFIG => layers
                    .iter()
                    .find(|l| l.media_type == YOKE_WASM_GZIP)
                    .cloned()
                    .map(Plan::Yoke)
                    .ok_or_else(|| match layers.first() {
                        Some(l) => wrong("Yoke layer", reference, &l.media_type, &[YOKE_WASM_GZIP]),
                        None => OciError::NoModule {
                            reference: reference.into(),
                            detail: "the Yoke manifest has no layers".into(),
                        },
                    }),
                WASM_CONFIG => {
                    if let Some(l) = layers.iter().find(|l| l.media_type != WASM_CONTENT_LAYER) {
                        return Err(wrong(
                            "Kubewarden layer",
                            reference,
                            &l.media_type,
                            &[WASM_CONTENT_LAYER],
                        ));
                    }
                    layers
                        .first()
                        .cloned()
                        .map(Plan::Kubewarden)
                        .ok_or_else(|| OciError::NoModule {
                            reference: reference.into(),
                            detail: "the Kubewarden manifest has no layers".into(),
                        })
                }
                DOCKER_IMAGE_CONFIG | OCI_IMAGE_CONFIG => {
                    if let Some(l) = layers
                        .iter()
                        .find(|l| !TAR_LAYERS.contains(&l.media_type.as_str()))
                    {
                        return Err(wrong(
                            "kpt image layer",
                            reference,
                            &l.media_type,
                            &TAR_LAYERS,
                        ));
                    }
                    if layers.is_empty() {
                        return Err(OciError::NoModule {
                            reference: reference.into(),
                            detail: "the image manifest has no layers".into(),
                        });
                    }
                    Ok(Plan::KptImage(layers))
                }
                other => Err(wrong("config", reference, other, &ACCEPTED_CONFIGS)),
            }
        }
        other => Err(wrong("manifest", reference, other, &ACCEPTED_MANIFESTS)),
    }
}

/// The media type of a manifest body (its `mediaType`, else the header, else its shape).
pub(crate) fn manifest_media_type(body: &[u8], content_type: Option<&str>) -> Option<String> {
    let doc: ManifestDoc = serde_json::from_slice(body).ok()?;
    doc.media_type
        .or_else(|| content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn manifest(config_type: &str, layers: &[&str]) -> Vec<u8> {
        let layers: Vec<_> = layers
            .iter()
            .map(|t| json!({"mediaType": t, "digest": D2, "size": 10}))
            .collect();
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": config_type, "digest": D1, "size": 2},
            "layers": layers,
        }))
        .unwrap()
    }

    #[test]
    fn detects_yoke_and_kubewarden() {
        match classify(&manifest(YOKE_CONFIG, &[YOKE_WASM_GZIP]), None, "r").unwrap() {
            Plan::Yoke(d) => assert_eq!(d.digest, D2),
            other => panic!("{other:?}"),
        }
        match classify(&manifest(WASM_CONFIG, &[WASM_CONTENT_LAYER]), None, "r").unwrap() {
            Plan::Kubewarden(d) => assert_eq!(d.size, 10),
            other => panic!("{other:?}"),
        }
        // kpt single-platform image (what kpt's pull accepts when the tag is not an index)
        assert!(matches!(
            classify(&manifest(DOCKER_IMAGE_CONFIG, &[DOCKER_LAYER_TAR_GZIP]), None, "r").unwrap(),
            Plan::KptImage(l) if l.len() == 1
        ));
    }

    #[test]
    fn rejects_wrong_media_types_listing_accepted() {
        let err = classify(
            &manifest("application/vnd.foo.config+json", &[YOKE_WASM_GZIP]),
            None,
            "reg/x:1",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("application/vnd.foo.config+json"), "{msg}");
        assert!(
            msg.contains(YOKE_CONFIG) && msg.contains(WASM_CONFIG),
            "{msg}"
        );
        assert!(msg.contains("reg/x:1"), "{msg}");

        let err =
            classify(&manifest(YOKE_CONFIG, &["application/x-other"]), None, "r").unwrap_err();
        assert!(err.to_string().contains(YOKE_WASM_GZIP), "{err}");
        let err = classify(
            &manifest(WASM_CONFIG, &[WASM_CONTENT_LAYER, "application/x-other"]),
            None,
            "r",
        )
        .unwrap_err();
        assert!(matches!(err, OciError::WrongMediaType { .. }), "{err}");
        let err = classify(&manifest(YOKE_CONFIG, &[]), None, "r").unwrap_err();
        assert!(matches!(err, OciError::NoModule { .. }), "{err}");

        let body = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v1+json"})).unwrap();
        let err = classify(&body, None, "r").unwrap_err();
        assert!(err.to_string().contains(OCI_INDEX), "{err}");
        let err = classify(
            &json!({"schemaVersion": 1}).to_string().into_bytes(),
            None,
            "r",
        )
        .unwrap_err();
        assert!(matches!(err, OciError::InvalidManifest { .. }), "{err}");
        let err = classify(b"not json", None, "r").unwrap_err();
        assert!(matches!(err, OciError::InvalidManifest { .. }), "{err}");
    }

    #[test]
    fn rejects_bad_descriptor_digests() {
        let body = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "config": {"mediaType": YOKE_CONFIG, "digest": D1, "size": 2},
            "layers": [{"mediaType": YOKE_WASM_GZIP, "digest": "sha256:../../etc/passwd", "size": 1}],
        }))
        .unwrap();
        let err = classify(&body, Some(OCI_MANIFEST), "r").unwrap_err();
        assert!(matches!(err, OciError::InvalidManifest { .. }), "{err}");
    }

    #[test]
    fn detects_kpt_index_entry_among_platforms() {
        let body = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST_LIST,
            "manifests": [
                {"mediaType": DOCKER_MANIFEST, "digest": D1, "size": 5, "platform": {"architecture": "amd64", "os": "linux"}},
                {"mediaType": DOCKER_MANIFEST, "digest": D2, "size": 7, "platform": {"architecture": "wasm", "os": "js"}},
            ]
        }))
        .unwrap();
        match classify(&body, None, "r").unwrap() {
            Plan::KptIndex(d) => assert_eq!(d.digest, D2),
            other => panic!("{other:?}"),
        }
        // no mediaType in the body: the Content-Type header decides
        let body = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": D1, "size": 5, "platform": {"architecture": "arm64", "os": "linux"}}]
        }))
        .unwrap();
        let err = classify(
            &body,
            Some("application/vnd.oci.image.index.v1+json; charset=utf-8"),
            "r",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("linux/arm64") && msg.contains("js/wasm"),
            "{msg}"
        );
    }

    #[test]
    fn format_names_round_trip() {
        for f in [
            ModuleFormat::Yoke,
            ModuleFormat::Kubewarden,
            ModuleFormat::Kpt,
        ] {
            assert_eq!(f.as_str().parse::<ModuleFormat>().unwrap(), f);
        }
        assert!("docker".parse::<ModuleFormat>().is_err());
    }
}
