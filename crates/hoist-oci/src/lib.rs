//! hoist-oci: Wasm modules in OCI registries, in the formats of Yoke, Kubewarden and kpt.
//!
//! - [`pull_module`] fetches a module from `oci://REGISTRY/REPO[:TAG][@sha256:DIGEST]`,
//!   recognising the format from the manifest, verifying every manifest and blob against
//!   its sha256 digest, enforcing size caps while streaming, and caching by digest.
//!   Tags are re-resolved on every online pull (a moved `latest` is never served stale).
//! - [`push_module`] publishes a module in one of the three formats.
//!
//! Registries on loopback addresses (`localhost`, `127.0.0.1`, `[::1]`) are spoken to over
//! plain http; others over https unless `insecure`. Credentials come from the docker config
//! (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, `auths` and credential helpers).
#![warn(missing_docs)]
// Issue 11: no panics on input a user, module or registry controls (tests may unwrap).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::string_slice
    )
)]

mod archive;
mod cache;
mod error;
mod kwmeta;
mod media;
mod reference;
mod registry;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use flate2::Compression;
use serde_json::json;

pub use error::{OciError, Result};
pub use kwmeta::{KUBEWARDEN_METADATA_SECTION, custom_section, kubewarden_annotations};
pub use media::{
    DOCKER_IMAGE_CONFIG, DOCKER_LAYER_TAR_GZIP, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST,
    ModuleFormat, OCI_INDEX, OCI_MANIFEST, WASM_CONFIG, WASM_CONTENT_LAYER, YOKE_CONFIG,
    YOKE_WASM_GZIP,
};
pub use reference::{DEFAULT_TAG, OciReference};

use archive::Ctx;
use cache::{Cache, Record};
use media::{Descriptor, Plan};
use registry::{Access, Registry, sha256_digest};

/// Default cap on a manifest's size: 4 MiB.
pub const DEFAULT_MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Default cap on a blob's (compressed) size: 256 MiB.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 256 << 20;
/// Default cap on the decompressed module: 512 MiB.
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 512 << 20;

/// How to pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullOptions {
    /// Plain http for any registry (loopback registries always use plain http).
    pub insecure: bool,
    /// No network access: answer from the cache only (a tag uses its last resolved digest).
    pub offline: bool,
    /// Cache directory; `None` disables caching (and makes `offline` fail).
    pub cache_dir: Option<PathBuf>,
    /// Cap on each manifest/index body, in bytes.
    pub max_manifest_bytes: u64,
    /// Cap on each blob as stored in the registry (compressed), in bytes.
    pub max_blob_bytes: u64,
    /// Cap on the decompressed module, in bytes.
    pub max_module_bytes: u64,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            insecure: false,
            offline: false,
            cache_dir: None,
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
            max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
        }
    }
}

/// A pulled module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledModule {
    /// The decompressed module bytes.
    pub wasm: Vec<u8>,
    /// The format it was stored in.
    pub format: ModuleFormat,
    /// `sha256:...` of the image manifest actually used (for kpt: the `wasm/js` platform
    /// manifest, not the index).
    pub manifest_digest: String,
    /// `registry/repo@sha256:...` pinning what the reference resolved to (for kpt: the index).
    pub resolved: String,
    /// The tag of the reference, if any.
    pub tag: Option<String>,
    /// True when the module came from the cache (no blob was downloaded).
    pub from_cache: bool,
}

/// How to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOptions {
    /// The format to push in (Yoke's by default).
    pub format: ModuleFormat,
    /// Tags to apply besides the reference's own.
    pub extra_tags: Vec<String>,
    /// Plain http for any registry (loopback registries always use plain http).
    pub insecure: bool,
    /// Manifest annotations. Kubewarden's format also takes the string `annotations` of the
    /// module's `io.kubewarden.metadata` section (these win over them); other formats put
    /// just these on the image manifest.
    pub annotations: BTreeMap<String, String>,
    /// Name of the file inside kpt's tar layer (kpt uses the pushed file's base name);
    /// `module.wasm` when unset.
    pub file_name: Option<String>,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            format: ModuleFormat::Yoke,
            extra_tags: Vec::new(),
            insecure: false,
            annotations: BTreeMap::new(),
            file_name: None,
        }
    }
}

/// The result of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `sha256:...` of what the tags point to (for kpt: the index).
    pub digest: String,
    /// `registry/repo@sha256:...`.
    pub reference: String,
    /// Every tag set, sorted.
    pub tags: Vec<String>,
}

const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// Pulls a module from an OCI registry, in any of the Yoke, Kubewarden or kpt formats.
///
/// A tag is re-resolved on every online pull (HEAD on the manifest); when the digest it
/// points to is cached, nothing else is downloaded. A digest reference that is cached needs
/// no network at all. With `offline`, a tag uses the digest it last resolved to.
pub async fn pull_module(reference: &str, opts: &PullOptions) -> Result<PulledModule> {
    let r = OciReference::parse(reference)?;
    let cache = opts.cache_dir.as_deref().map(Cache::new);
    let tag_key = r.tag.as_ref().map(|t| format!("{}:{t}", r.name()));
    let display = r.to_string();

    let hit = |top: &str, cache: &Cache| {
        cache.lookup(top).map(|(rec, wasm)| PulledModule {
            wasm,
            format: rec.format,
            manifest_digest: rec.manifest,
            resolved: r.with_digest(top),
            tag: r.tag.clone(),
            from_cache: true,
        })
    };

    if opts.offline {
        let Some(cache) = &cache else {
            return Err(OciError::NotCached {
                reference: display,
                detail: "no cache directory is configured".into(),
            });
        };
        let top = match (&r.digest, &tag_key) {
            (Some(d), _) => d.clone(),
            (None, Some(key)) => cache.resolve_ref(key).ok_or_else(|| OciError::NotCached {
                reference: display.clone(),
                detail: "the tag has never been resolved".into(),
            })?,
            (None, None) => unreachable_ref(&display)?,
        };
        return hit(&top, cache).ok_or_else(|| OciError::NotCached {
            reference: display.clone(),
            detail: format!("{top} is not cached"),
        });
    }

    if let (Some(cache), Some(d)) = (&cache, &r.digest)
        && let Some(m) = hit(d, cache)
    {
        return Ok(m);
    }

    let reg = Registry::connect(&r, opts.insecure, Access::Pull).await?;
    let mut fetch = r.digest.clone();
    if fetch.is_none() {
        let tag = r.tag.clone().unwrap_or_else(|| DEFAULT_TAG.to_string());
        // A registry that mishandles HEAD (5xx, 405) gets a GET by tag instead.
        let head = match reg.head_manifest(&tag).await {
            Ok(d) => d,
            Err(OciError::Registry { status, .. }) => {
                tracing::debug!(status, "manifest HEAD failed; resolving the tag with GET");
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(d) = head {
            if let Some(cache) = &cache
                && let Some(m) = hit(&d, cache)
            {
                if let Some(key) = &tag_key {
                    cache.record_ref(key, &d);
                }
                return Ok(m);
            }
            fetch = Some(d);
        } else {
            fetch = Some(tag);
        }
    }
    let fetch = fetch.unwrap_or_default();
    let top = reg
        .get_manifest(&fetch, opts.max_manifest_bytes)
        .await?
        .ok_or_else(|| OciError::NotFound {
            what: "manifest".into(),
            reference: display.clone(),
        })?;

    let (format, used_digest, wasm) = fetch_module(&reg, &top, &display, opts).await?;
    if !wasm.starts_with(WASM_MAGIC) {
        return Err(OciError::NoModule {
            reference: display,
            detail: format!(
                "the {format} artifact's payload is not a Wasm binary (no \\0asm header)"
            ),
        });
    }
    if let Some(cache) = &cache {
        let record = Record {
            format,
            manifest: used_digest.clone(),
            module: sha256_digest(&wasm),
        };
        cache.store(&top.digest, &record, &wasm);
        if let Some(key) = &tag_key {
            cache.record_ref(key, &top.digest);
        }
    }
    Ok(PulledModule {
        wasm,
        format,
        manifest_digest: used_digest,
        resolved: r.with_digest(&top.digest),
        tag: r.tag.clone(),
        from_cache: false,
    })
}

/// At most this many pages of 1000 tags are read by [`list_tags`].
pub const MAX_TAG_PAGES: usize = 100;

/// Lists the tags of the repository a reference names (its own tag or digest is ignored),
/// in the order the registry returns them, following pagination. Used to resolve semver
/// tag constraints (kpt's `tag:` field) against what a registry actually holds.
pub async fn list_tags(reference: &str, opts: &PullOptions) -> Result<Vec<String>> {
    let r = OciReference::parse(reference)?;
    if opts.offline {
        return Err(OciError::NotCached {
            reference: r.to_string(),
            detail: "listing tags needs the registry (offline mode is on)".into(),
        });
    }
    let reg = Registry::connect(&r, opts.insecure, Access::Pull).await?;
    reg.list_tags(opts.max_manifest_bytes, MAX_TAG_PAGES).await
}

/// A manifest (or index) as the registry serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedManifest {
    /// `sha256:...` of `body` (checked against the reference's digest when it has one).
    pub digest: String,
    /// The media type, from the document's `mediaType` or else the `Content-Type` header.
    pub media_type: Option<String>,
    /// The manifest's bytes, exactly as served.
    pub body: Vec<u8>,
}

/// Fetches the manifest or index a reference points to, without interpreting it as a module:
/// any image works (Kubewarden's `oci` host capability answers policies with this). The body
/// is capped at `max_manifest_bytes` and verified against a pinned digest.
pub async fn fetch_manifest(reference: &str, opts: &PullOptions) -> Result<FetchedManifest> {
    let r = OciReference::parse(reference)?;
    let reg = Registry::connect(&r, opts.insecure, Access::Pull).await?;
    let what = r
        .digest
        .clone()
        .or_else(|| r.tag.clone())
        .unwrap_or_else(|| DEFAULT_TAG.to_string());
    let m = reg
        .get_manifest(&what, opts.max_manifest_bytes)
        .await?
        .ok_or_else(|| OciError::NotFound {
            what: "manifest".into(),
            reference: r.to_string(),
        })?;
    let media_type = media::manifest_media_type(&m.body, m.content_type.as_deref());
    Ok(FetchedManifest {
        digest: m.digest,
        media_type,
        body: m.body,
    })
}

/// Fetches one blob of the reference's repository by digest (for example an image's config),
/// capped at `max_blob_bytes` and verified against the digest.
pub async fn fetch_blob(reference: &str, digest: &str, opts: &PullOptions) -> Result<Vec<u8>> {
    let r = OciReference::parse(reference)?;
    let digest = reference::parse_digest(digest).map_err(|reason| OciError::InvalidReference {
        reference: format!("{}@{digest}", r.name()),
        reason,
    })?;
    let reg = Registry::connect(&r, opts.insecure, Access::Pull).await?;
    reg.get_blob(
        &digest,
        opts.max_blob_bytes,
        "PullOptions::max_blob_bytes (--max-blob-bytes)",
    )
    .await
}

fn unreachable_ref(display: &str) -> Result<String> {
    Err(OciError::InvalidReference {
        reference: display.into(),
        reason: "neither tag nor digest".into(),
    })
}

fn blob_knob() -> &'static str {
    "PullOptions::max_blob_bytes (--max-blob-bytes)"
}

fn module_knob() -> &'static str {
    "PullOptions::max_module_bytes (--max-module-bytes)"
}

fn check_declared_size(d: &Descriptor, display: &str, cap: u64, knob: &str) -> Result<()> {
    if d.size > cap {
        return Err(OciError::TooLarge {
            what: format!("blob {} (declared size {})", d.digest, d.size),
            reference: display.into(),
            limit: cap,
            knob: knob.into(),
        });
    }
    Ok(())
}

/// Follows a manifest to the module bytes: (format, digest of the image manifest used, module).
async fn fetch_module(
    reg: &Registry,
    top: &registry::Manifest,
    display: &str,
    opts: &PullOptions,
) -> Result<(ModuleFormat, String, Vec<u8>)> {
    match media::classify(&top.body, top.content_type.as_deref(), display)? {
        Plan::Yoke(layer) => {
            check_declared_size(&layer, display, opts.max_blob_bytes, blob_knob())?;
            let gz = reg
                .get_blob(&layer.digest, opts.max_blob_bytes, blob_knob())
                .await?;
            let what = format!("Yoke layer {}", layer.digest);
            let ctx = Ctx {
                what: &what,
                reference: display,
                limit: opts.max_module_bytes,
                knob: module_knob(),
            };
            Ok((
                ModuleFormat::Yoke,
                top.digest.clone(),
                archive::gunzip_capped(&gz, &ctx)?,
            ))
        }
        Plan::Kubewarden(layer) => {
            let (cap, knob) = if opts.max_module_bytes < opts.max_blob_bytes {
                (opts.max_module_bytes, module_knob())
            } else {
                (opts.max_blob_bytes, blob_knob())
            };
            check_declared_size(&layer, display, cap, knob)?;
            let wasm = reg.get_blob(&layer.digest, cap, knob).await?;
            Ok((ModuleFormat::Kubewarden, top.digest.clone(), wasm))
        }
        Plan::KptImage(layers) => {
            let wasm = fetch_kpt_layers(reg, &layers, display, opts).await?;
            Ok((ModuleFormat::Kpt, top.digest.clone(), wasm))
        }
        Plan::KptIndex(entry) => {
            check_declared_size(
                &entry,
                display,
                opts.max_manifest_bytes,
                "PullOptions::max_manifest_bytes (--max-manifest-bytes)",
            )?;
            let inner = reg
                .get_manifest(&entry.digest, opts.max_manifest_bytes)
                .await?
                .ok_or_else(|| OciError::NotFound {
                    what: format!("wasm/js platform manifest {}", entry.digest),
                    reference: display.into(),
                })?;
            match media::classify(&inner.body, inner.content_type.as_deref(), display)? {
                Plan::KptImage(layers) => {
                    let wasm = fetch_kpt_layers(reg, &layers, display, opts).await?;
                    Ok((ModuleFormat::Kpt, inner.digest, wasm))
                }
                _ => Err(OciError::WrongMediaType {
                    what: "wasm/js platform image config".into(),
                    reference: display.into(),
                    found: media::manifest_media_type(&inner.body, inner.content_type.as_deref())
                        .unwrap_or_default(),
                    accepted: vec![DOCKER_IMAGE_CONFIG.into(), media::OCI_IMAGE_CONFIG.into()],
                }),
            }
        }
    }
}

/// kpt flattens the image's layers (upper layers win) and takes the first regular file.
async fn fetch_kpt_layers(
    reg: &Registry,
    layers: &[Descriptor],
    display: &str,
    opts: &PullOptions,
) -> Result<Vec<u8>> {
    for layer in layers.iter().rev() {
        check_declared_size(layer, display, opts.max_blob_bytes, blob_knob())?;
        let data = reg
            .get_blob(&layer.digest, opts.max_blob_bytes, blob_knob())
            .await?;
        let what = format!("kpt layer {}", layer.digest);
        let ctx = Ctx {
            what: &what,
            reference: display,
            limit: opts.max_module_bytes,
            knob: module_knob(),
        };
        let gzipped = layer.media_type != media::OCI_LAYER_TAR;
        if let Some(file) = archive::first_regular_file(&data, gzipped, &ctx)? {
            return Ok(file);
        }
    }
    Err(OciError::NoModule {
        reference: display.into(),
        detail: "the kpt image's layers hold no regular file".into(),
    })
}

/// Sets a manifest's `annotations` (the manifests built here are always JSON objects; indexing
/// a `Value` that is not one would panic, so this never indexes).
fn set_annotations(manifest: &mut serde_json::Value, annotations: serde_json::Value) {
    if let Some(object) = manifest.as_object_mut() {
        object.insert("annotations".to_string(), annotations);
    }
}

/// Pushes a module to `reference` (`oci://REGISTRY/REPO[:TAG]`, tag `latest` by default).
///
/// - Yoke: OCI manifest with config `application/vnd.yoke.config.v1+json` and one gzipped
///   layer; tagged like `yoke stow`: the reference's tag, `latest`, `sha256_<hex of wasm>`
///   and the extra tags.
/// - Kubewarden: config `application/vnd.wasm.config.v1+json` (`{}`), one raw
///   `application/vnd.wasm.content.layer.v1+wasm` layer, the annotations on the manifest;
///   tagged with the reference's tag and the extra tags.
/// - kpt: a tar (one file, mode 0644) gzipped as a Docker layer, a Docker v2 manifest with an
///   empty-platform config pushed by digest, then at each tag a manifest list whose
///   `wasm/js` entry points at it, keeping the other platforms of an index already there.
pub async fn push_module(wasm: &[u8], reference: &str, opts: &PushOptions) -> Result<Pushed> {
    let r = OciReference::parse(reference)?;
    let invalid = |detail: String| OciError::InvalidPush {
        reference: reference.to_string(),
        detail,
    };
    if r.digest.is_some() {
        return Err(invalid(
            "a push destination must be a tag, not a digest (drop the @sha256:...)".into(),
        ));
    }
    if !wasm.starts_with(WASM_MAGIC) {
        return Err(invalid(
            "the module is not a Wasm binary (no \\0asm header)".into(),
        ));
    }
    let mut tags = BTreeSet::new();
    tags.insert(r.tag.clone().unwrap_or_else(|| DEFAULT_TAG.to_string()));
    for t in &opts.extra_tags {
        reference::validate_tag(t).map_err(invalid)?;
        tags.insert(t.clone());
    }
    let module_hex = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(wasm));
    if opts.format == ModuleFormat::Yoke {
        tags.insert(DEFAULT_TAG.to_string());
        tags.insert(format!("sha256_{module_hex}"));
    }
    let primary = r.tag.clone().unwrap_or_else(|| DEFAULT_TAG.to_string());
    let reg = Registry::connect(&r, opts.insecure, Access::Push).await?;
    let annotations = (!opts.annotations.is_empty()).then(|| opts.annotations.clone());

    let digest = match opts.format {
        ModuleFormat::Yoke => {
            let gz = archive::gzip(wasm, Compression::default());
            let layer_digest = reg.push_blob(&gz).await?;
            let config = serde_json::to_vec(&json!({
                "architecture": "",
                "os": "",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            }))
            .unwrap_or_default();
            let config_digest = reg.push_blob(&config).await?;
            let mut manifest = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": YOKE_CONFIG, "digest": config_digest, "size": config.len()},
                "layers": [{"mediaType": YOKE_WASM_GZIP, "digest": layer_digest, "size": gz.len()}],
            });
            if let Some(a) = &annotations {
                set_annotations(&mut manifest, json!(a));
            }
            let body = serde_json::to_vec(&manifest).unwrap_or_default();
            put_at_tags(&reg, &primary, &tags, OCI_MANIFEST, &body).await?
        }
        ModuleFormat::Kubewarden => {
            let layer_digest = reg.push_blob(wasm).await?;
            let config = b"{}".to_vec();
            let config_digest = reg.push_blob(&config).await?;
            let mut manifest = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": WASM_CONFIG, "digest": config_digest, "size": config.len()},
                "layers": [{"mediaType": WASM_CONTENT_LAYER, "digest": layer_digest, "size": wasm.len()}],
            });
            // The policy's own metadata annotations, overridden by the caller's.
            let mut all = kubewarden_annotations(wasm);
            all.extend(opts.annotations.clone());
            if !all.is_empty() {
                set_annotations(&mut manifest, json!(all));
            }
            let body = serde_json::to_vec(&manifest).unwrap_or_default();
            put_at_tags(&reg, &primary, &tags, OCI_MANIFEST, &body).await?
        }
        ModuleFormat::Kpt => {
            let name = opts
                .file_name
                .as_deref()
                .and_then(|n| std::path::Path::new(n).file_name())
                .and_then(|n| n.to_str())
                .unwrap_or("module.wasm")
                .to_string();
            let tar = archive::tar_single_file(&name, wasm)
                .map_err(|e| invalid(format!("cannot build the tar layer: {e}")))?;
            let diff_id = sha256_digest(&tar);
            let gz = archive::gzip(&tar, Compression::best());
            let layer_digest = reg.push_blob(&gz).await?;
            let config = serde_json::to_vec(&json!({
                "architecture": "",
                "os": "",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                "history": [{"created_by": "hoist push --format kpt"}],
            }))
            .unwrap_or_default();
            let config_digest = reg.push_blob(&config).await?;
            let mut manifest = json!({
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {"mediaType": DOCKER_IMAGE_CONFIG, "digest": config_digest, "size": config.len()},
                "layers": [{"mediaType": DOCKER_LAYER_TAR_GZIP, "digest": layer_digest, "size": gz.len()}],
            });
            if let Some(a) = &annotations {
                set_annotations(&mut manifest, json!(a));
            }
            let body = serde_json::to_vec(&manifest).unwrap_or_default();
            let image_digest = sha256_digest(&body);
            reg.put_manifest(&image_digest, DOCKER_MANIFEST, &body)
                .await?;
            let entry = json!({
                "mediaType": DOCKER_MANIFEST,
                "digest": image_digest,
                "size": body.len(),
                "platform": {"architecture": "wasm", "os": "js"},
            });
            let mut primary_digest = String::new();
            for tag in &tags {
                let list = merged_index(&reg, tag, &entry, reference).await?;
                let d = reg.put_manifest(tag, DOCKER_MANIFEST_LIST, &list).await?;
                if *tag == primary {
                    primary_digest = d;
                }
            }
            primary_digest
        }
    };
    Ok(Pushed {
        reference: r.with_digest(&digest),
        digest,
        tags: tags.into_iter().collect(),
    })
}

/// PUTs `body` at the primary tag first, then at the other tags; returns its digest.
async fn put_at_tags(
    reg: &Registry,
    primary: &str,
    tags: &BTreeSet<String>,
    media_type: &str,
    body: &[u8],
) -> Result<String> {
    let digest = reg.put_manifest(primary, media_type, body).await?;
    for t in tags.iter().filter(|t| *t != primary) {
        reg.put_manifest(t, media_type, body).await?;
    }
    Ok(digest)
}

/// The manifest list to put at `tag`: the index already there (if any) without its `wasm/js`
/// entries, plus `entry`.
async fn merged_index(
    reg: &Registry,
    tag: &str,
    entry: &serde_json::Value,
    reference: &str,
) -> Result<Vec<u8>> {
    let mut manifests = Vec::new();
    if let Some(existing) = reg.get_manifest(tag, DEFAULT_MAX_MANIFEST_BYTES).await? {
        let mt = media::manifest_media_type(&existing.body, existing.content_type.as_deref())
            .unwrap_or_default();
        if mt != OCI_INDEX && mt != DOCKER_MANIFEST_LIST {
            return Err(OciError::InvalidPush {
                reference: reference.into(),
                detail: format!(
                    "tag '{tag}' already holds a {mt} manifest, not an index; kpt's format needs an index ({OCI_INDEX} or {DOCKER_MANIFEST_LIST}) at the tag; push to another tag or delete this one"
                ),
            });
        }
        let doc: serde_json::Value =
            serde_json::from_slice(&existing.body).map_err(|e| OciError::InvalidManifest {
                reference: reference.into(),
                detail: format!("existing index at tag '{tag}': {e}"),
            })?;
        if let Some(list) = doc.get("manifests").and_then(|m| m.as_array()) {
            for m in list {
                let platform = |key: &str| {
                    m.get("platform")
                        .and_then(|p| p.get(key))
                        .and_then(|v| v.as_str())
                };
                let is_js_wasm =
                    platform("os") == Some("js") && platform("architecture") == Some("wasm");
                if !is_js_wasm {
                    manifests.push(m.clone());
                }
            }
        }
    }
    manifests.push(entry.clone());
    Ok(serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": manifests,
    }))
    .unwrap_or_default())
}

/// The parsers a registry's answers go through, exposed for the fuzz targets and property
/// tests (`crates/hoist-fuzz`, `fuzz/`); not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    use crate::archive::{self, Ctx};
    use crate::media::{self, Plan};

    pub use crate::media::Descriptor;

    /// What [`classify`] decided: the format's plan and the descriptors it will fetch.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Classified {
        /// Yoke: gunzip this layer.
        Yoke(Descriptor),
        /// Kubewarden: this layer is the module.
        Kubewarden(Descriptor),
        /// kpt index: fetch this platform manifest.
        KptIndex(Descriptor),
        /// kpt image: these tar layers.
        KptImage(Vec<Descriptor>),
    }

    /// Decides a module's format from a manifest or index body, as a pull does.
    pub fn classify(body: &[u8], content_type: Option<&str>) -> crate::Result<Classified> {
        Ok(
            match media::classify(body, content_type, "oci://fuzz/target")? {
                Plan::Yoke(d) => Classified::Yoke(d),
                Plan::Kubewarden(d) => Classified::Kubewarden(d),
                Plan::KptIndex(d) => Classified::KptIndex(d),
                Plan::KptImage(l) => Classified::KptImage(l),
            },
        )
    }

    /// The media type a manifest body declares (or its header, or its shape).
    pub fn manifest_media_type(body: &[u8], content_type: Option<&str>) -> Option<String> {
        media::manifest_media_type(body, content_type)
    }

    /// Validates a `sha256:<hex>` digest as descriptors and references do.
    pub fn parse_digest(digest: &str) -> Result<String, String> {
        crate::reference::parse_digest(digest)
    }

    /// Validates a tag.
    pub fn validate_tag(tag: &str) -> Result<(), String> {
        crate::reference::validate_tag(tag)
    }

    /// Parses a `WWW-Authenticate` challenge.
    pub fn parse_challenge(header: &str) -> (String, Vec<(String, String)>) {
        crate::registry::parse_challenge(header)
    }

    /// The message of a registry error body.
    pub fn registry_message(body: &[u8]) -> String {
        crate::registry::registry_message(body)
    }

    /// The `rel="next"` target of a registry's `Link` pagination header.
    pub fn next_link(header: &str) -> Option<String> {
        crate::registry::next_link(header)
    }

    /// Gunzips a Yoke layer with a decompressed-size cap.
    pub fn gunzip_capped(data: &[u8], limit: u64) -> crate::Result<Vec<u8>> {
        archive::gunzip_capped(data, &ctx(limit))
    }

    /// The first regular file of a kpt tar layer, with a size cap.
    pub fn first_regular_file(
        data: &[u8],
        gzipped: bool,
        limit: u64,
    ) -> crate::Result<Option<Vec<u8>>> {
        archive::first_regular_file(data, gzipped, &ctx(limit))
    }

    fn ctx(limit: u64) -> Ctx<'static> {
        Ctx {
            what: "fuzz layer",
            reference: "oci://fuzz/target",
            limit,
            knob: "--max-module-mib",
        }
    }
}
