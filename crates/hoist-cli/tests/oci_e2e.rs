//! End-to-end: the real `hoist` binary pushing to and pulling from the registry started by
//! `scripts/registry start` (`HOIST_TEST_REGISTRY`). Without it the tests skip, or fail under
//! `CI=true`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

fn hoist() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hoist"))
}

fn skip_or_fail(reason: &str) -> Option<String> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{reason}");
    }
    eprintln!("SKIP: {reason}");
    None
}

/// The registry, once we know `hoist push`/`pull` exist.
fn setup() -> Option<String> {
    let Ok(reg) = std::env::var("HOIST_TEST_REGISTRY") else {
        return skip_or_fail(
            "HOIST_TEST_REGISTRY is not set; start a registry with `eval \"$(scripts/registry start)\"`",
        );
    };
    for sub in ["push", "pull"] {
        let ok = hoist()
            .args([sub, "--help"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            return skip_or_fail(&format!(
                "the hoist binary has no `{sub}` subcommand (not wired in main.rs yet)"
            ));
        }
    }
    Some(reg)
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A scratch directory under the target dir (removed at the end of each test).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("oci-e2e-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A valid (empty) Wasm module made unique by a custom section.
fn module(payload: &str) -> Vec<u8> {
    let name = b"hoist-test";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(payload.as_bytes());
    assert!(
        section.len() < 128,
        "keep the payload short (one-byte LEB128 size)"
    );
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    wasm.push(0);
    wasm.push(section.len() as u8);
    wasm.extend_from_slice(&section);
    wasm
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pull(reference: &str, file: &Path, cache: &Path, extra: &[&str]) -> Output {
    hoist()
        .arg("pull")
        .args(extra)
        .arg("--cache-dir")
        .arg(cache)
        .arg(reference)
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn push_then_pull_in_every_format() {
    let Some(reg) = setup() else { return };
    let tmp = Scratch::new();
    let cache = tmp.path("cache");
    for format in ["yoke", "kubewarden", "kpt"] {
        let wasm = module(&format!("{format}-{}", unique()));
        let file = tmp.path(&format!("{format}.wasm"));
        std::fs::write(&file, &wasm).unwrap();
        let reference = format!("oci://{reg}/hoist-e2e/{format}-{}:v1", unique());
        let stdout = ok(
            hoist()
                .args(["push", "--format", format, "--tag", "extra"])
                .arg(&file)
                .arg(&reference)
                .output()
                .unwrap(),
            "hoist push",
        );
        let digest_ref = stdout.trim().to_string();
        assert!(
            digest_ref.starts_with("oci://") && digest_ref.contains("@sha256:"),
            "push prints the digest reference: {stdout}"
        );

        let out = tmp.path(&format!("{format}-pulled.wasm"));
        ok(pull(&reference, &out, &cache, &[]), "hoist pull");
        assert_eq!(std::fs::read(&out).unwrap(), wasm, "{format}");

        // refuses to overwrite without -f; -f overwrites
        let again = pull(&reference, &out, &cache, &[]);
        assert!(!again.status.success());
        assert!(
            String::from_utf8_lossy(&again.stderr).contains("--force"),
            "{}",
            String::from_utf8_lossy(&again.stderr)
        );
        ok(
            pull(&digest_ref, &out, &cache, &["-f"]),
            "hoist pull -f by digest",
        );
        assert_eq!(std::fs::read(&out).unwrap(), wasm);

        // the extra tag works, and offline pulls come from the cache
        let extra = reference.replace(":v1", ":extra");
        let off = tmp.path(&format!("{format}-offline.wasm"));
        ok(
            pull(&reference, &off, &cache, &["--offline"]),
            "hoist pull --offline",
        );
        assert_eq!(std::fs::read(&off).unwrap(), wasm);
        let ex = tmp.path(&format!("{format}-extra.wasm"));
        ok(pull(&extra, &ex, &cache, &[]), "hoist pull extra tag");
        assert_eq!(std::fs::read(&ex).unwrap(), wasm);
    }
}

#[test]
fn pull_errors_are_explained() {
    let Some(reg) = setup() else { return };
    let tmp = Scratch::new();
    let cache = tmp.path("cache");
    let out = tmp.path("x.wasm");

    let missing = format!("oci://{reg}/hoist-e2e/missing-{}:v1", unique());
    let o = pull(&missing, &out, &cache, &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not found") && err.contains("missing-"),
        "{err}"
    );
    assert!(!out.exists(), "nothing is written on failure");

    let o = pull("oci://not a ref", &out, &cache, &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid OCI reference"));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = pull(&format!("oci://127.0.0.1:{port}/a/b:c"), &out, &cache, &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("127.0.0.1:{port}")));

    let not_wasm = tmp.path("not.wasm");
    std::fs::write(&not_wasm, b"hello").unwrap();
    let o = hoist()
        .arg("push")
        .arg(&not_wasm)
        .arg(format!("oci://{reg}/hoist-e2e/x:v1"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a Wasm binary"));
}
