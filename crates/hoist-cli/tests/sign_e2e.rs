//! End-to-end: the real `hoist` binary signs and verifies modules, and interoperates with
//! the real `yoke` CLI when `HOIST_YOKE` names it (`scripts/tools path yoke`).
//!
//! Without `HOIST_YOKE`, the Yoke interop test fails under `CI=true` and is skipped (with a
//! printed reason) locally. Keys are the test-only keys in `testdata/keys/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn hoist() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hoist"))
}

fn key(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/keys")
        .join(name)
}

/// A tiny valid module (one exported function returning 42), assembled by hand so the test
/// needs no extra crates.
fn module() -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    m.extend_from_slice(&[0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f]); // type: () -> i32
    m.extend_from_slice(&[0x03, 0x02, 0x01, 0x00]); // func 0: type 0
    m.extend_from_slice(&[
        0x07, 0x0a, 0x01, 0x06, b'_', b's', b't', b'a', b'r', b't', 0x00, 0x00,
    ]); // export "_start"
    m.extend_from_slice(&[0x0a, 0x06, 0x01, 0x04, 0x00, 0x41, 0x2a, 0x0b]); // i32.const 42
    m
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("hoist-sign-e2e-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn")
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fails_with(out: &Output, needle: &str, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what} should fail");
    assert!(
        stderr.contains(needle),
        "{what}: stderr should mention {needle:?}: {stderr}"
    );
}

const PAIRS: &[(&str, &str)] = &[
    ("test-rsa2048.pkcs1.pem", "test-rsa2048.pub.pem"),
    ("test-p256.pkcs8.pem", "test-p256.pub.pem"),
    ("test-p384.pkcs8.pem", "test-p384.pub.pem"),
    ("test-ed25519.pkcs8.pem", "test-ed25519.pub.pem"),
];

#[test]
fn sign_and_verify_with_every_key_type() {
    let dir = TempDir::new("roundtrip");
    for (private, public) in PAIRS {
        let m = dir.path(&format!("{private}.wasm"));
        std::fs::write(&m, module()).unwrap();
        ok(
            &run(hoist().args(["sign", "--key"]).arg(key(private)).arg(&m)),
            &format!("hoist sign {private}"),
        );
        let out = run(hoist().args(["verify", "--key"]).arg(key(public)).arg(&m));
        ok(&out, &format!("hoist verify {public}"));
        assert!(String::from_utf8_lossy(&out.stdout).contains("verified"));

        // Tampered code is refused.
        let mut t = std::fs::read(&m).unwrap();
        let pos = t.iter().position(|b| *b == 0x2a).unwrap();
        t[pos] = 0x2b;
        let bad = dir.path(&format!("{private}.bad.wasm"));
        std::fs::write(&bad, &t).unwrap();
        fails_with(
            &run(hoist().args(["verify", "--key"]).arg(key(public)).arg(&bad)),
            "modified",
            "verify tampered",
        );
    }
}

#[test]
fn out_force_directory_and_errors() {
    let dir = TempDir::new("flags");
    let m = dir.path("m.wasm");
    let out = dir.path("signed.wasm");
    std::fs::write(&m, module()).unwrap();

    ok(
        &run(hoist()
            .args(["sign", "--key"])
            .arg(key("test-p256.pkcs8.pem"))
            .arg("-o")
            .arg(&out)
            .arg(&m)),
        "sign -o",
    );
    assert_eq!(std::fs::read(&m).unwrap(), module(), "input left unsigned");
    fails_with(
        &run(hoist()
            .args(["sign", "--key"])
            .arg(key("test-p256.pkcs8.pem"))
            .arg("-o")
            .arg(&out)
            .arg(&m)),
        "--force",
        "sign -o over an existing file",
    );
    fails_with(
        &run(hoist()
            .args(["sign", "--key"])
            .arg(key("test-ed25519.pkcs8.pem"))
            .arg(&out)),
        "already signed",
        "re-sign without -f",
    );
    ok(
        &run(hoist()
            .args(["sign", "-f", "--key"])
            .arg(key("test-ed25519.pkcs8.pem"))
            .arg(&out)),
        "re-sign with -f",
    );

    // A directory of keys (recursive).
    let keys = dir.path("keys");
    std::fs::create_dir_all(keys.join("nested")).unwrap();
    std::fs::copy(key("test-p256.pub.pem"), keys.join("p256.pem")).unwrap();
    std::fs::copy(key("test-ed25519.pub.pem"), keys.join("nested/ed.pem")).unwrap();
    let o = run(hoist().args(["verify", "--key"]).arg(&keys).arg(&out));
    ok(&o, "verify with a key directory");
    assert!(String::from_utf8_lossy(&o.stdout).contains("nested/ed.pem"));

    // Errors say what failed: (verb, key, module, expected words, case).
    let cases = [
        (
            "verify",
            "test-p256.pub.pem",
            &out,
            "unknown key",
            "verify with another key",
        ),
        (
            "verify",
            "test-p256.pub.pem",
            &m,
            "not signed",
            "verify unsigned",
        ),
        (
            "verify",
            "test-p256.cert.pem",
            &out,
            "certificate",
            "verify with a certificate",
        ),
        (
            "sign",
            "test-p256.pub.pem",
            &m,
            "private key",
            "sign with a public key",
        ),
    ];
    for (verb, key_name, module, words, case) in cases {
        fails_with(
            &run(hoist().args([verb, "--key"]).arg(key(key_name)).arg(module)),
            words,
            case,
        );
    }
}

fn yoke() -> Option<PathBuf> {
    common::required_env(
        "HOIST_YOKE",
        "build the real yoke from ../shared/peers: export HOIST_YOKE=$(scripts/tools path yoke)",
    )
}

/// Private keys Yoke reads (it does not read SEC1 `EC PRIVATE KEY`).
const YOKE_PAIRS: &[(&str, &str)] = &[
    ("test-rsa2048.pkcs8.pem", "test-rsa2048.pub.pem"),
    ("test-rsa2048.pkcs1.pem", "test-rsa2048.pkcs1-pub.pem"),
    ("test-p256.pkcs8.pem", "test-p256.pub.pem"),
    ("test-p384.pkcs8.pem", "test-p384.pub.pem"),
    ("test-ed25519.pkcs8.pem", "test-ed25519.pub.pem"),
];

#[test]
fn interop_with_real_yoke() {
    let Some(yoke) = yoke() else { return };
    let dir = TempDir::new("yoke");
    for (private, public) in YOKE_PAIRS {
        // yoke sign -> hoist verify
        let by_yoke = dir.path(&format!("{private}.yoke.wasm"));
        std::fs::write(&by_yoke, module()).unwrap();
        ok(
            &run(Command::new(&yoke)
                .args(["sign", "-key"])
                .arg(key(private))
                .arg(&by_yoke)),
            &format!("yoke sign {private}"),
        );
        ok(
            &run(hoist()
                .args(["verify", "--key"])
                .arg(key(public))
                .arg(&by_yoke)),
            &format!("hoist verify of a yoke-signed module ({private})"),
        );

        // hoist sign -> yoke verify
        let by_hoist = dir.path(&format!("{private}.hoist.wasm"));
        std::fs::write(&by_hoist, module()).unwrap();
        ok(
            &run(hoist()
                .args(["sign", "--key"])
                .arg(key(private))
                .arg(&by_hoist)),
            &format!("hoist sign {private}"),
        );
        ok(
            &run(Command::new(&yoke)
                .args(["verify", "-key"])
                .arg(key(public))
                .arg(&by_hoist)),
            &format!("yoke verify of a hoist-signed module ({private})"),
        );

        // Both produce the same unsigned bytes + one trailing signature section.
        let a = std::fs::read(&by_yoke).unwrap();
        let b = std::fs::read(&by_hoist).unwrap();
        assert_eq!(a[..module().len()], b[..module().len()]);
    }
}
