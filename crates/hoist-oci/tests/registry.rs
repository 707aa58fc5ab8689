//! Integration tests against a real registry (`scripts/registry start --auth`), a tiny
//! misbehaving HTTP registry on 127.0.0.1, and (when available) the real `yoke` and `crane`.
//!
//! Environment: `HOIST_TEST_REGISTRY` (required; without it tests skip, or fail under
//! `CI=true`), `HOIST_TEST_REGISTRY_DIR` (storage, for the on-disk corruption test),
//! `HOIST_TEST_REGISTRY_AUTH`/`_USER`/`_PASSWORD` (basic-auth registry), `HOIST_YOKE`,
//! `HOIST_CRANE` (cross-checks with independent clients).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hoist_oci::{
    ModuleFormat, OciError, PullOptions, PulledModule, PushOptions, Pushed, pull_module,
    push_module,
};
use sha2::{Digest, Sha256};

fn need(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{var} is not set: {what}");
            }
            eprintln!("SKIP: {var} is not set ({what})");
            None
        }
    }
}

fn registry() -> Option<String> {
    need(
        "HOIST_TEST_REGISTRY",
        "start a registry with `eval \"$(scripts/registry start --auth)\"`",
    )
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique suffix per call (process id, time, counter): tests never collide with earlier runs.
fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A real WASI command module that prints one ConfigMap named `name` on stdout.
fn module(name: &str) -> Vec<u8> {
    let doc = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"k":"v"}}}}"#
    );
    let escaped = doc.replace('\\', "\\\\").replace('"', "\\\"");
    let wat = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "{escaped}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const {len}))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        len = doc.len()
    );
    wat::parse_str(wat).expect("test WAT compiles")
}

fn hex_sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn repo(reg: &str, name: &str) -> String {
    format!("oci://{reg}/hoist-test/{name}-{}", unique())
}

fn strip(r: &str) -> &str {
    r.strip_prefix("oci://").unwrap_or(r)
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// `(registry, repository)` of an `oci://` reference without tag.
fn split(r: &str) -> (String, String) {
    let s = strip(r);
    let (reg, rest) = s.split_once('/').unwrap();
    let repo = rest.split([':', '@']).next().unwrap();
    (reg.to_string(), repo.to_string())
}

async fn raw_get_manifest(r: &str, tag: &str) -> (String, serde_json::Value) {
    let (reg, repo) = split(r);
    let resp = http()
        .get(format!("http://{reg}/v2/{repo}/manifests/{tag}"))
        .header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json",
        )
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "GET manifest {tag}: {}",
        resp.status()
    );
    let ct = resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    (
        ct,
        serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap(),
    )
}

async fn raw_tags(r: &str) -> Vec<String> {
    let (reg, repo) = split(r);
    let body = http()
        .get(format!("http://{reg}/v2/{repo}/tags/list"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut tags: Vec<String> = v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    tags.sort();
    tags
}

async fn raw_push_blob(r: &str, data: &[u8]) -> String {
    let (reg, repo) = split(r);
    let digest = format!("sha256:{}", hex_sha(data));
    let resp = http()
        .post(format!("http://{reg}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let loc = resp
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mut url = reqwest::Url::parse(&format!("http://{reg}/"))
        .unwrap()
        .join(&loc)
        .unwrap();
    url.query_pairs_mut().append_pair("digest", &digest);
    let resp = http().put(url).body(data.to_vec()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 201, "blob upload");
    digest
}

async fn raw_put_manifest(
    r: &str,
    tag: &str,
    media_type: &str,
    body: &serde_json::Value,
) -> String {
    let (reg, repo) = split(r);
    let bytes = serde_json::to_vec(body).unwrap();
    let resp = http()
        .put(format!("http://{reg}/v2/{repo}/manifests/{tag}"))
        .header("Content-Type", media_type)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert!(
        status.is_success(),
        "PUT manifest: {status} {}",
        resp.text().await.unwrap_or_default()
    );
    format!("sha256:{}", hex_sha(&bytes))
}

/// Pulls, failing the test with the reference and the error.
async fn pull(reference: &str, opts: &PullOptions) -> PulledModule {
    pull_module(reference, opts)
        .await
        .unwrap_or_else(|e| panic!("pull {reference}: {e}"))
}

/// Pulls what must fail, and returns why.
async fn pull_err(reference: &str, opts: &PullOptions) -> OciError {
    match pull_module(reference, opts).await {
        Ok(p) => panic!("pull {reference} should fail, got {}", p.resolved),
        Err(e) => e,
    }
}

/// Pushes, failing the test with the reference and the error.
async fn push(wasm: &[u8], reference: &str, opts: &PushOptions) -> Pushed {
    push_module(wasm, reference, opts)
        .await
        .unwrap_or_else(|e| panic!("push {reference}: {e}"))
}

/// Push options for one format.
fn as_format(format: ModuleFormat) -> PushOptions {
    PushOptions {
        format,
        ..Default::default()
    }
}

fn cache_opts(dir: &Path) -> PullOptions {
    PullOptions {
        cache_dir: Some(dir.to_path_buf()),
        ..Default::default()
    }
}

#[tokio::test]
async fn yoke_round_trip_and_tags() {
    let Some(reg) = registry() else { return };
    let wasm = module("yoke-round-trip");
    let base = repo(&reg, "yoke");
    let pushed = push(
        &wasm,
        &format!("{base}:v1"),
        &PushOptions {
            extra_tags: vec!["extra".into()],
            ..Default::default()
        },
    )
    .await;
    let sha_tag = format!("sha256_{}", hex_sha(&wasm));
    let mut want = vec![
        "extra".to_string(),
        "latest".into(),
        sha_tag.clone(),
        "v1".into(),
    ];
    want.sort();
    assert_eq!(pushed.tags, want);
    assert_eq!(raw_tags(&base).await, want);
    assert_eq!(
        pushed.reference,
        format!("{}@{}", strip(&base), pushed.digest)
    );

    let (ct, m) = raw_get_manifest(&base, "v1").await;
    assert_eq!(ct, "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.yoke.config.v1+json"
    );
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.yoke.wasm.gzip"
    );

    for r in [
        format!("{base}:v1"),
        format!("{base}:{sha_tag}"),
        format!("{base}@{}", pushed.digest),
        strip(&base).to_string(),
    ] {
        let p = pull(&r, &PullOptions::default()).await;
        assert_eq!(p.wasm, wasm, "{r}");
        assert_eq!(p.format, ModuleFormat::Yoke);
        assert_eq!(p.manifest_digest, pushed.digest);
        assert_eq!(p.resolved, pushed.reference);
        assert!(!p.from_cache);
    }
}

#[tokio::test]
async fn kubewarden_round_trip_with_annotations() {
    let Some(reg) = registry() else { return };
    // a policy carrying metadata annotations in its io.kubewarden.metadata section
    let mut wasm = module("kubewarden");
    let meta = br#"{"protocolVersion":"v1","annotations":{"io.kubewarden.policy.title":"from metadata","io.kubewarden.policy.author":"hoist tests"}}"#;
    let name = b"io.kubewarden.metadata";
    let len = 1 + name.len() + meta.len();
    assert!(len < 1 << 14);
    wasm.extend_from_slice(&[
        0,
        (len as u8 & 0x7f) | 0x80,
        (len >> 7) as u8,
        name.len() as u8,
    ]);
    wasm.extend_from_slice(name);
    wasm.extend_from_slice(meta);
    assert_eq!(hoist_oci::kubewarden_annotations(&wasm).len(), 2);
    let base = repo(&reg, "kw");
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "io.kubewarden.policy.title".to_string(),
        "test policy".to_string(),
    );
    let pushed = push(
        &wasm,
        &format!("{base}:v0.1.0"),
        &PushOptions {
            format: ModuleFormat::Kubewarden,
            annotations,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(pushed.tags, vec!["v0.1.0".to_string()]);
    let (_, m) = raw_get_manifest(&base, "v0.1.0").await;
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.wasm.config.v1+json"
    );
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.wasm.content.layer.v1+wasm"
    );
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
    // the caller's annotation wins over the metadata's; the others are kept
    assert_eq!(
        m["annotations"]["io.kubewarden.policy.title"],
        "test policy"
    );
    assert_eq!(
        m["annotations"]["io.kubewarden.policy.author"],
        "hoist tests"
    );
    let p = pull(&format!("{base}:v0.1.0"), &PullOptions::default()).await;
    assert_eq!(p.wasm, wasm);
    assert_eq!(p.format, ModuleFormat::Kubewarden);
    assert_eq!(p.tag.as_deref(), Some("v0.1.0"));
}

/// Pushes a plain linux/amd64 Docker image and returns its index entry.
async fn push_container_image(base: &str) -> serde_json::Value {
    let layer = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(5);
        h.set_mode(0o755);
        b.append_data(&mut h, "bin/app", &b"hello"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap()
    };
    let config = serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})).unwrap();
    let ld = raw_push_blob(base, &layer).await;
    let cd = raw_push_blob(base, &config).await;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": ld, "size": layer.len()}],
    });
    let size = serde_json::to_vec(&manifest).unwrap().len();
    let md = raw_put_manifest(
        base,
        "amd64",
        "application/vnd.docker.distribution.manifest.v2+json",
        &manifest,
    )
    .await;
    serde_json::json!({
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "digest": md, "size": size,
        "platform": {"architecture": "amd64", "os": "linux"},
    })
}

#[tokio::test]
async fn kpt_round_trip_keeps_other_platforms() {
    let Some(reg) = registry() else { return };
    let wasm = module("kpt");
    let base = repo(&reg, "kpt");
    let opts = PushOptions {
        format: ModuleFormat::Kpt,
        file_name: Some("/some/dir/fn.wasm".into()),
        ..Default::default()
    };
    let pushed = push(&wasm, &format!("{base}:v1"), &opts).await;
    assert_eq!(pushed.tags, vec!["v1".to_string()]);
    let (ct, index) = raw_get_manifest(&base, "v1").await;
    assert_eq!(
        ct,
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["platform"]["architecture"], "wasm");
    assert_eq!(entries[0]["platform"]["os"], "js");
    let image_digest = entries[0]["digest"].as_str().unwrap().to_string();
    let (ct, image) = raw_get_manifest(&base, &image_digest).await;
    assert_eq!(ct, "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(
        image["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert_eq!(
        image["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );

    // the layer is a tar with one 0644 entry named after the file
    let (r, repo_name) = split(&base);
    let layer_digest = image["layers"][0]["digest"].as_str().unwrap();
    let gz = http()
        .get(format!("http://{r}/v2/{repo_name}/blobs/{layer_digest}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
    let entries: Vec<_> = tar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().display().to_string(),
                e.header().mode().unwrap(),
                e.size(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        vec![("fn.wasm".to_string(), 0o644, wasm.len() as u64)]
    );

    let p = pull(&format!("{base}:v1"), &PullOptions::default()).await;
    assert_eq!(p.wasm, wasm);
    assert_eq!(p.format, ModuleFormat::Kpt);
    assert_eq!(p.manifest_digest, image_digest);
    assert_eq!(p.resolved, pushed.reference);

    // An index with a container platform at "multi": kpt's push keeps it, replaces js/wasm.
    let amd64 = push_container_image(&base).await;
    raw_put_manifest(
        &base,
        "multi",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        &serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json", "manifests": [amd64]}),
    )
    .await;
    push(&wasm, &format!("{base}:multi"), &opts).await;
    let wasm2 = module("kpt-second");
    push(&wasm2, &format!("{base}:multi"), &opts).await;
    let (_, index) = raw_get_manifest(&base, "multi").await;
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index}");
    assert_eq!(entries[0], amd64);
    assert_eq!(entries[1]["platform"]["os"], "js");
    let p = pull(&format!("{base}:multi"), &PullOptions::default()).await;
    assert_eq!(p.wasm, wasm2);

    // a tag holding a plain image manifest is not silently replaced
    let err = push_module(&wasm, &format!("{base}:amd64"), &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::InvalidPush { .. }), "{err}");
}

#[tokio::test]
async fn moved_latest_is_re_resolved_and_offline_uses_last_resolution() {
    let Some(reg) = registry() else { return };
    let cache = tempfile::tempdir().unwrap();
    let base = repo(&reg, "moving");
    let a = module("version-a");
    let b = module("version-b");
    let pa = push(&a, &base, &PushOptions::default()).await;

    let first = pull(&base, &cache_opts(cache.path())).await;
    assert_eq!(first.wasm, a);
    assert!(!first.from_cache);
    let again = pull(&base, &cache_opts(cache.path())).await;
    assert_eq!(again.wasm, a);
    assert!(
        again.from_cache,
        "second pull of an unchanged tag is served from the cache"
    );

    push(&b, &base, &PushOptions::default()).await;
    let moved = pull(&base, &cache_opts(cache.path())).await;
    assert_eq!(moved.wasm, b, "a moved latest must not be served stale");
    assert!(!moved.from_cache);

    let offline = PullOptions {
        offline: true,
        ..cache_opts(cache.path())
    };
    let off = pull(&base, &offline).await;
    assert_eq!(off.wasm, b);
    assert!(off.from_cache);
    // the old digest is still cached and needs no network
    let old = pull(&format!("{base}@{}", pa.digest), &offline).await;
    assert_eq!(old.wasm, a);
    // a digest reference that is cached is answered without the registry, even online
    let pinned = pull(&format!("{base}@{}", pa.digest), &cache_opts(cache.path())).await;
    assert!(pinned.from_cache);

    // never-resolved tag offline: clear error
    let err = pull_err(&format!("{base}:never"), &offline).await;
    assert!(matches!(err, OciError::NotCached { .. }), "{err}");
    assert!(err.to_string().contains("--offline"), "{err}");
    let err = pull_err(
        &base,
        &PullOptions {
            offline: true,
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(err, OciError::NotCached { .. }), "{err}");
}

#[tokio::test]
async fn corrupt_cache_entries_are_refetched() {
    let Some(reg) = registry() else { return };
    let cache = tempfile::tempdir().unwrap();
    let base = repo(&reg, "cache");
    let wasm = module("cache");
    push(&wasm, &base, &as_format(ModuleFormat::Kubewarden)).await;
    pull(&base, &cache_opts(cache.path())).await;
    let blob = cache.path().join("blobs/sha256").join(hex_sha(&wasm));
    assert!(blob.exists(), "the module is cached by its digest");
    std::fs::write(&blob, b"\0asm tampered").unwrap();
    let p = pull(&base, &cache_opts(cache.path())).await;
    assert_eq!(p.wasm, wasm);
    assert!(
        !p.from_cache,
        "a corrupt entry is discarded and fetched again"
    );
    assert_eq!(std::fs::read(&blob).unwrap(), wasm);
}

#[tokio::test]
async fn blob_corrupted_in_registry_storage_is_a_digest_mismatch() {
    let Some(reg) = registry() else { return };
    let Some(dir) = need(
        "HOIST_TEST_REGISTRY_DIR",
        "printed by scripts/registry start",
    ) else {
        return;
    };
    let base = repo(&reg, "corrupt");
    let wasm = module(&format!("corrupt-{}", unique()));
    push(&wasm, &base, &as_format(ModuleFormat::Kubewarden)).await;
    let hex = hex_sha(&wasm);
    let data = PathBuf::from(dir)
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(&hex)
        .join("data");
    assert!(data.exists(), "blob at {}", data.display());
    let mut bad = wasm.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    std::fs::write(&data, &bad).unwrap();
    let err = pull_err(&base, &PullOptions::default()).await;
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&hex), "{err}");
}

#[tokio::test]
async fn wrong_media_type_is_rejected_with_accepted_list() {
    let Some(reg) = registry() else { return };
    let base = repo(&reg, "wrongtype");
    let config = b"{}".to_vec();
    let layer = module("wrongtype");
    let cd = raw_push_blob(&base, &config).await;
    let ld = raw_push_blob(&base, &layer).await;
    raw_put_manifest(
        &base,
        "v1",
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.example.thing.config.v1+json", "digest": cd, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.example.thing.layer", "digest": ld, "size": layer.len()}],
        }),
    )
    .await;
    let err = pull_err(&format!("{base}:v1"), &PullOptions::default()).await;
    assert!(matches!(err, OciError::WrongMediaType { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("application/vnd.example.thing.config.v1+json"),
        "{msg}"
    );
    assert!(
        msg.contains("application/vnd.yoke.config.v1+json")
            && msg.contains("application/vnd.wasm.config.v1+json"),
        "{msg}"
    );
}

#[tokio::test]
async fn size_caps_name_the_cap_and_the_flag() {
    let Some(reg) = registry() else { return };
    let base = repo(&reg, "caps");
    let wasm = module("caps");
    push(&wasm, &base, &PushOptions::default()).await;
    let cases = [
        (
            PullOptions {
                max_manifest_bytes: 100,
                ..Default::default()
            },
            "max-manifest-bytes",
            100,
        ),
        (
            PullOptions {
                max_blob_bytes: 20,
                ..Default::default()
            },
            "max-blob-bytes",
            20,
        ),
        (
            PullOptions {
                max_module_bytes: 50,
                ..Default::default()
            },
            "max-module-bytes",
            50,
        ),
    ];
    for (opts, flag, limit) in cases {
        let err = pull_err(&base, &opts).await;
        assert!(
            matches!(err, OciError::TooLarge { limit: l, .. } if l == limit),
            "{err}"
        );
        assert!(err.to_string().contains(flag), "{err}");
    }
    let err = pull_err(&format!("{base}:nope"), &PullOptions::default()).await;
    assert!(matches!(err, OciError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains(":nope"), "{err}");
}

#[tokio::test]
async fn unreachable_registry_names_host_and_port() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = pull_err(
        &format!("oci://127.0.0.1:{port}/x/y:v1"),
        &PullOptions::default(),
    )
    .await;
    assert!(matches!(err, OciError::Unreachable { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    let err = push_module(
        &module("x"),
        &format!("oci://127.0.0.1:{port}/x/y:v1"),
        &PushOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, OciError::Unreachable { .. }), "{err}");
}

#[tokio::test]
async fn docker_config_basic_auth_and_credential_helper() {
    let Some(reg) = need(
        "HOIST_TEST_REGISTRY_AUTH",
        "start the auth registry with `scripts/registry start --auth`",
    ) else {
        return;
    };
    let user = std::env::var("HOIST_TEST_REGISTRY_USER").expect("HOIST_TEST_REGISTRY_USER");
    let pass = std::env::var("HOIST_TEST_REGISTRY_PASSWORD").expect("HOIST_TEST_REGISTRY_PASSWORD");
    let cfg = tempfile::tempdir().unwrap();
    // Only this test touches DOCKER_CONFIG/PATH; other tests talk to the anonymous registry.
    unsafe { std::env::set_var("DOCKER_CONFIG", cfg.path()) };
    let base = repo(&reg, "auth");
    let wasm = module("auth");

    // no config at all: anonymous, refused with advice
    let err = push_module(&wasm, &base, &PushOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, OciError::AuthFailed { status: 401, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("docker login"), "{err}");

    // auths.<host>.auth
    use base64::Engine;
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let write = |v: serde_json::Value| {
        std::fs::write(cfg.path().join("config.json"), v.to_string()).unwrap()
    };
    write(serde_json::json!({"auths": {reg.clone(): {"auth": b64(format!("{user}:{pass}"))}}}));
    let pushed = push(&wasm, &base, &PushOptions::default()).await;
    let p = pull(&base, &PullOptions::default()).await;
    assert_eq!(p.wasm, wasm);
    assert_eq!(p.resolved, pushed.reference);

    // wrong password
    write(serde_json::json!({"auths": {reg.clone(): {"auth": b64(format!("{user}:wrong"))}}}));
    let err = pull_err(&base, &PullOptions::default()).await;
    assert!(matches!(err, OciError::AuthFailed { .. }), "{err}");
    assert!(err.to_string().contains(&reg), "{err}");

    // credential helper: docker-credential-hoisttest on PATH
    let bin = cfg.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-hoisttest");
    std::fs::write(
        &helper,
        format!("#!/bin/sh\nread server\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{pass}\"}}' \"$server\"\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    unsafe { std::env::set_var("PATH", path) };
    write(serde_json::json!({"credHelpers": {reg.clone(): "hoisttest"}}));
    let p = pull(&base, &PullOptions::default()).await;
    assert_eq!(p.wasm, wasm);
}

// ---- a tiny misbehaving registry on 127.0.0.1 -------------------------------------------

#[derive(Clone, Copy)]
enum Misbehave {
    /// A valid Kubewarden manifest whose layer blob does not match its digest.
    BadBlob,
    /// A manifest that never ends, without Content-Length.
    EndlessManifest,
    /// A manifest whose body does not match the Docker-Content-Digest it was fetched by.
    WrongManifestDigest,
    /// Answers HEAD with 405 but serves a good artifact to GET.
    NoHead,
}

/// Serves the registry API just enough for one pull; returns `127.0.0.1:PORT`.
fn misbehaving_registry(mode: Misbehave) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let claimed = b"\0asm\x01\0\0\0".to_vec();
    let served = b"\0asm\x01\0\0\x01".to_vec();
    let blob_digest = format!("sha256:{}", hex_sha(&claimed));
    let config_digest = format!("sha256:{}", hex_sha(b"{}"));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.wasm.config.v1+json", "digest": config_digest, "size": 2},
        "layers": [{"mediaType": "application/vnd.wasm.content.layer.v1+wasm", "digest": blob_digest, "size": claimed.len()}],
    }))
    .unwrap();
    let manifest_digest = format!("sha256:{}", hex_sha(&manifest));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let mut parts = request_line.split_whitespace();
            let method = parts.next().unwrap_or("").to_string();
            let path = parts.next().unwrap_or("").to_string();
            let send = |s: &mut std::net::TcpStream, status: &str, headers: &str, body: &[u8]| {
                let head = format!(
                    "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes());
                if method != "HEAD" {
                    let _ = s.write_all(body);
                }
            };
            if path.contains("/manifests/") {
                match mode {
                    Misbehave::EndlessManifest => {
                        let _ = stream.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n{\"schemaVersion\":2,\"x\":\"",
                        );
                        let chunk = vec![b'a'; 64 << 10];
                        // stops when the client hangs up
                        while stream.write_all(&chunk).is_ok() {}
                    }
                    Misbehave::WrongManifestDigest => {
                        let other = format!("sha256:{}", "0".repeat(64));
                        if path.ends_with(&other) || method == "HEAD" {
                            send(
                                &mut stream,
                                "200 OK",
                                &format!(
                                    "Content-Type: application/vnd.oci.image.manifest.v1+json\r\nDocker-Content-Digest: {other}\r\n"
                                ),
                                &manifest,
                            );
                        } else {
                            send(&mut stream, "404 Not Found", "", b"{}");
                        }
                    }
                    Misbehave::NoHead if method == "HEAD" => {
                        send(&mut stream, "405 Method Not Allowed", "", b"")
                    }
                    Misbehave::BadBlob | Misbehave::NoHead => send(
                        &mut stream,
                        "200 OK",
                        &format!(
                            "Content-Type: application/vnd.oci.image.manifest.v1+json\r\nDocker-Content-Digest: {manifest_digest}\r\n"
                        ),
                        &manifest,
                    ),
                }
            } else if path.contains("/blobs/") {
                send(
                    &mut stream,
                    "200 OK",
                    "Content-Type: application/octet-stream\r\n",
                    if matches!(mode, Misbehave::NoHead) {
                        &claimed
                    } else {
                        &served
                    },
                );
            } else {
                send(&mut stream, "200 OK", "", b"{}");
            }
            let mut sink = [0u8; 1];
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(50)));
            let _ = stream.read(&mut sink);
        }
    });
    addr
}

#[tokio::test]
async fn server_serving_a_wrong_blob_is_a_digest_mismatch() {
    let addr = misbehaving_registry(Misbehave::BadBlob);
    let err = pull_err(
        &format!("oci://{addr}/fake/module:v1"),
        &PullOptions::default(),
    )
    .await;
    let want = format!("sha256:{}", hex_sha(b"\0asm\x01\0\0\0"));
    assert!(
        matches!(&err, OciError::DigestMismatch { expected, .. } if *expected == want),
        "{err}"
    );
}

#[tokio::test]
async fn manifest_not_matching_its_digest_is_rejected() {
    let addr = misbehaving_registry(Misbehave::WrongManifestDigest);
    let err = pull_err(
        &format!("oci://{addr}/fake/module:v1"),
        &PullOptions::default(),
    )
    .await;
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
}

#[tokio::test]
async fn endless_manifest_is_cut_at_the_cap() {
    let addr = misbehaving_registry(Misbehave::EndlessManifest);
    let err = pull_err(
        &format!("oci://{addr}/fake/module:v1"),
        &PullOptions::default(),
    )
    .await;
    assert!(
        matches!(err, OciError::TooLarge { limit, .. } if limit == hoist_oci::DEFAULT_MAX_MANIFEST_BYTES),
        "{err}"
    );
}

// ---- cross-checks with independent clients ----------------------------------------------

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn yoke_stow_then_hoist_pull_and_hoist_push_then_yoke_takeoff() {
    let Some(reg) = registry() else { return };
    let Some(yoke) = need("HOIST_YOKE", "build it with `scripts/tools path yoke`") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flight.wasm");
    let wasm = module("from-yoke");
    std::fs::write(&file, &wasm).unwrap();
    let base = repo(&reg, "yoke-cli");
    run(Command::new(&yoke)
        .args(["stow", "--insecure"])
        .arg(&file)
        .arg(format!("{base}:v1")));
    let p = pull(&format!("{base}:v1"), &PullOptions::default()).await;
    assert_eq!(p.wasm, wasm);
    assert_eq!(p.format, ModuleFormat::Yoke);
    let mut tags = raw_tags(&base).await;
    tags.sort();
    assert_eq!(
        tags,
        vec![
            "latest".to_string(),
            format!("sha256_{}", hex_sha(&wasm)),
            "v1".into()
        ]
    );

    let wasm2 = module("from-hoist");
    let base2 = repo(&reg, "hoist-to-yoke");
    push(&wasm2, &format!("{base2}:v2"), &PushOptions::default()).await;
    // yoke builds a Kubernetes client even for --stdout; give it one that is never contacted.
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u, namespace: default}}]\ncurrent-context: x\n",
    )
    .unwrap();
    let out = run(Command::new(&yoke)
        .env("HOME", dir.path())
        .env("KUBECONFIG", &kubeconfig)
        .args(["takeoff", "--stdout", "--insecure", "rel"])
        .arg(format!("{base2}:v2")));
    assert!(out.contains("from-hoist"), "yoke's output: {out}");
}

#[tokio::test]
async fn crane_reads_hoist_kpt_and_kubewarden_artifacts() {
    let Some(reg) = registry() else { return };
    let Some(crane) = need("HOIST_CRANE", "build it with `scripts/tools path crane`") else {
        return;
    };
    let wasm = module("crane");
    let base = repo(&reg, "crane-kpt");
    push(
        &wasm,
        &format!("{base}:v1"),
        &PushOptions {
            format: ModuleFormat::Kpt,
            file_name: Some("fn.wasm".into()),
            ..Default::default()
        },
    )
    .await;
    let manifest = run(Command::new(&crane)
        .args(["manifest", "--insecure"])
        .arg(format!("{}:v1", strip(&base))));
    let v: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(v["manifests"][0]["platform"]["os"], "js");
    let dir = tempfile::tempdir().unwrap();
    let tarball = dir.path().join("fs.tar");
    run(Command::new(&crane)
        .args(["export", "--insecure", "--platform", "js/wasm"])
        .arg(format!("{}:v1", strip(&base)))
        .arg(&tarball));
    let mut ar = tar::Archive::new(std::fs::File::open(&tarball).unwrap());
    let mut found = None;
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("fn.wasm") {
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            found = Some(v);
        }
    }
    assert_eq!(found.as_deref(), Some(&wasm[..]));

    let base = repo(&reg, "crane-kw");
    let pushed = push(
        &wasm,
        &format!("{base}:v1"),
        &as_format(ModuleFormat::Kubewarden),
    )
    .await;
    let manifest = run(Command::new(&crane)
        .args(["manifest", "--insecure"])
        .arg(format!("{}:v1", strip(&base))));
    let v: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let layer = v["layers"][0]["digest"].as_str().unwrap().to_string();
    let digest = run(Command::new(&crane)
        .args(["digest", "--insecure"])
        .arg(format!("{}:v1", strip(&base))));
    assert_eq!(digest.trim(), pushed.digest);
    let out = Command::new(&crane)
        .args(["blob", "--insecure"])
        .arg(format!("{}@{layer}", strip(&base)))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, wasm);

    // Yoke's format read the way yoke's own pull does (go-containerregistry): config media
    // type, the first application/vnd.yoke.wasm.gzip layer, gunzipped.
    let base = repo(&reg, "crane-yoke");
    push(&wasm, &format!("{base}:v1"), &PushOptions::default()).await;
    let manifest = run(Command::new(&crane)
        .args(["manifest", "--insecure"])
        .arg(format!("{}:latest", strip(&base))));
    let v: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(
        v["config"]["mediaType"],
        "application/vnd.yoke.config.v1+json"
    );
    assert_eq!(
        v["layers"][0]["mediaType"],
        "application/vnd.yoke.wasm.gzip"
    );
    let layer = v["layers"][0]["digest"].as_str().unwrap().to_string();
    let out = Command::new(&crane)
        .args(["blob", "--insecure"])
        .arg(format!("{}@{layer}", strip(&base)))
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut gunzipped = Vec::new();
    flate2::read::GzDecoder::new(&out.stdout[..])
        .read_to_end(&mut gunzipped)
        .unwrap();
    assert_eq!(gunzipped, wasm);
    let tags = run(Command::new(&crane)
        .args(["ls", "--insecure"])
        .arg(strip(&base)));
    let mut tags: Vec<&str> = tags.lines().collect();
    tags.sort();
    let sha_tag = format!("sha256_{}", hex_sha(&wasm));
    assert_eq!(tags, vec!["latest", sha_tag.as_str(), "v1"]);
}

/// Builds `tests/gcr-yoke` (go-containerregistry doing what `yoke stow` and yoke's pull do).
fn gcr_yoke() -> Option<PathBuf> {
    let go = match Command::new("go").arg("version").output() {
        Ok(o) if o.status.success() => "go",
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("`go` is not on PATH: needed to build tests/gcr-yoke");
            }
            eprintln!("SKIP: `go` is not on PATH (needed to build tests/gcr-yoke)");
            return None;
        }
    };
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gcr-yoke");
    run(Command::new(go)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gcr-yoke"))
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=readonly")
        .args(["build", "-o"])
        .arg(&out)
        .arg("."));
    Some(out)
}

#[tokio::test]
async fn yoke_format_interop_with_go_containerregistry() {
    let Some(reg) = registry() else { return };
    let Some(tool) = gcr_yoke() else { return };
    let dir = tempfile::tempdir().unwrap();

    // produced the way `yoke stow` does, pulled by hoist
    let wasm = module("gcr-stow");
    let file = dir.path().join("flight.wasm");
    std::fs::write(&file, &wasm).unwrap();
    let base = repo(&reg, "gcr-stow");
    let digest_ref = run(Command::new(&tool)
        .arg("stow")
        .arg(&file)
        .arg(format!("{}:v1", strip(&base))));
    let p = pull(&format!("{base}:v1"), &PullOptions::default()).await;
    assert_eq!(p.wasm, wasm);
    assert_eq!(p.format, ModuleFormat::Yoke);
    assert_eq!(p.resolved, digest_ref.trim());
    let sha_tag = format!("sha256_{}", hex_sha(&wasm));
    assert_eq!(
        raw_tags(&base).await,
        vec!["latest".to_string(), sha_tag.clone(), "v1".into()]
    );
    // hoist's push of the same module yields the same tag set
    let base2 = repo(&reg, "hoist-stow");
    let pushed = push(&wasm, &format!("{base2}:v1"), &PushOptions::default()).await;
    assert_eq!(pushed.tags, raw_tags(&base).await);

    // pushed by hoist, pulled the way yoke pulls
    let out = dir.path().join("pulled.wasm");
    run(Command::new(&tool)
        .arg("pull")
        .arg(format!("{}:v1", strip(&base2)))
        .arg(&out));
    assert_eq!(std::fs::read(&out).unwrap(), wasm);
}

#[tokio::test]
async fn registry_without_head_support_is_resolved_with_get() {
    let addr = misbehaving_registry(Misbehave::NoHead);
    let p = pull(
        &format!("oci://{addr}/fake/module:v1"),
        &PullOptions::default(),
    )
    .await;
    assert_eq!(p.wasm, b"\0asm\x01\0\0\0");
    assert_eq!(p.format, ModuleFormat::Kubewarden);
}

#[tokio::test]
async fn tags_are_listed_and_any_manifest_and_blob_can_be_fetched() {
    let Some(reg) = registry() else { return };
    let wasm = module("list-tags");
    let base = repo(&reg, "tags");
    let pushed = push(
        &wasm,
        &format!("{base}:v1.2.3"),
        &PushOptions {
            format: ModuleFormat::Kubewarden,
            extra_tags: vec!["v1.10.0".into(), "v2.0.0-rc.1".into()],
            ..Default::default()
        },
    )
    .await;
    let mut tags = hoist_oci::list_tags(&format!("{base}:ignored"), &PullOptions::default())
        .await
        .unwrap();
    tags.sort();
    assert_eq!(tags, vec!["v1.10.0", "v1.2.3", "v2.0.0-rc.1"]);
    assert_eq!(tags, raw_tags(&base).await);

    // A repository that does not exist is the registry's NAME_UNKNOWN, named as such.
    let err = hoist_oci::list_tags(&repo(&reg, "absent"), &PullOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("tag list"), "{err}");

    let m = hoist_oci::fetch_manifest(&format!("{base}:v1.10.0"), &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(m.digest, pushed.digest);
    assert_eq!(
        m.media_type.as_deref(),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    assert_eq!(format!("sha256:{}", hex_sha(&m.body)), m.digest);
    let doc: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
    let by_digest = hoist_oci::fetch_manifest(
        &format!("{}@{}", strip(&base), pushed.digest),
        &PullOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(by_digest, m);

    let config_digest = doc["config"]["digest"].as_str().unwrap();
    let config = hoist_oci::fetch_blob(&base, config_digest, &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(format!("sha256:{}", hex_sha(&config)), config_digest);
    let layer = hoist_oci::fetch_blob(
        &base,
        doc["layers"][0]["digest"].as_str().unwrap(),
        &PullOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(layer, wasm);

    let missing = hoist_oci::fetch_manifest(&format!("{base}:nope"), &PullOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(missing, OciError::NotFound { .. }), "{missing}");
}

#[test]
fn link_headers_give_the_next_page() {
    // Registries paginate with RFC 5988 links; only rel="next" counts.
    assert_eq!(
        hoist_oci::fuzzing::next_link(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#).as_deref(),
        Some("/v2/a/tags/list?n=2&last=b")
    );
    assert_eq!(
        hoist_oci::fuzzing::next_link(r#"<http://x/prev>; rel="prev", <http://x/n>; rel=next"#)
            .as_deref(),
        Some("http://x/n")
    );
    assert_eq!(hoist_oci::fuzzing::next_link("garbage"), None);
}
