//! Signature tests: round trips for every key type and PEM form, tampering, unknown keys,
//! malformed sections, and cross-checks against a Go program that signs and verifies as
//! Yoke does (`testdata/signing`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::*;

fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/keys")
}

fn key(name: &str) -> PathBuf {
    keys_dir().join(name)
}

fn signing(name: &str) -> SigningKey {
    SigningKey::from_pem_file(&key(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn keyset(names: &[&str]) -> KeySet {
    let mut set = KeySet::new();
    for n in names {
        set.add_path(&key(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
    }
    set
}

/// A valid module with code, data and an unrelated custom section.
fn module() -> Vec<u8> {
    wat::parse_str(
        r#"(module
            (memory (export "memory") 1)
            (data (i32.const 16) "hello hoist")
            (func (export "_start") (result i32) i32.const 42)
            (@custom "yoke.schematics:doc" "a flight for tests"))"#,
    )
    .expect("valid wat")
}

struct Case {
    private: &'static [&'static str],
    public: &'static [&'static str],
    algorithm: fn(KeyAlgorithm) -> bool,
}

const CASES: &[Case] = &[
    Case {
        private: &["test-rsa2048.pkcs1.pem", "test-rsa2048.pkcs8.pem"],
        public: &[
            "test-rsa2048.pub.pem",
            "test-rsa2048.pkcs1-pub.pem",
            "test-rsa2048.pkcs8.pem",
        ],
        algorithm: |a| a == KeyAlgorithm::Rsa { bits: 2048 },
    },
    Case {
        private: &["test-rsa4096.pkcs8.pem"],
        public: &["test-rsa4096.pub.pem"],
        algorithm: |a| a == KeyAlgorithm::Rsa { bits: 4096 },
    },
    Case {
        private: &["test-p256.pkcs8.pem", "test-p256.sec1.pem"],
        public: &["test-p256.pub.pem", "test-p256.sec1.pem"],
        algorithm: |a| a == KeyAlgorithm::EcdsaP256,
    },
    Case {
        private: &["test-p384.pkcs8.pem", "test-p384.sec1.pem"],
        public: &["test-p384.pub.pem"],
        algorithm: |a| a == KeyAlgorithm::EcdsaP384,
    },
    Case {
        private: &["test-p521.pkcs8.pem", "test-p521.sec1.pem"],
        public: &["test-p521.pub.pem"],
        algorithm: |a| a == KeyAlgorithm::EcdsaP521,
    },
    Case {
        private: &["test-ed25519.pkcs8.pem"],
        public: &["test-ed25519.pub.pem"],
        algorithm: |a| a == KeyAlgorithm::Ed25519,
    },
];

#[test]
fn round_trip_every_key_type_and_pem_form() {
    let m = module();
    for case in CASES {
        for private in case.private {
            let k = signing(private);
            assert!(
                (case.algorithm)(k.algorithm()),
                "{private}: {}",
                k.algorithm()
            );
            let signed = sign(&m, &k).unwrap();
            // The original module is a prefix: the section is appended at the end.
            assert_eq!(&signed[..m.len()], &m[..]);
            for public in case.public {
                let v = verify(&signed, &keyset(&[public]))
                    .unwrap_or_else(|e| panic!("{private} -> {public}: {e}"));
                assert_eq!(v.fingerprint, k.fingerprint());
                assert_eq!(v.key_source.as_deref(), Some(key(public).as_path()));
            }
        }
    }
}

#[test]
fn fingerprints_agree_between_private_and_public_forms() {
    for case in CASES {
        let fp = signing(case.private[0]).fingerprint().to_string();
        for p in case.private.iter().chain(case.public) {
            let v = VerifyingKey::from_pem_file(&key(p)).unwrap();
            assert_eq!(v.fingerprint(), fp, "{p}");
        }
    }
}

#[test]
fn payload_is_yokes_json() {
    let signed = sign(&module(), &signing("test-ed25519.pkcs8.pem")).unwrap();
    let stripped = strip_signature(&signed).unwrap();
    let data = std::str::from_utf8(stripped.signature_data.unwrap()).unwrap();
    assert!(data.starts_with("{\"Fingerprint\":\""), "{data}");
    assert!(data.contains("\",\"Signature\":\""), "{data}");
    let v: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 2);
    assert_eq!(stripped.unsigned, module());
}

#[test]
fn resigning_replaces_the_signature() {
    let m = module();
    let once = sign(&m, &signing("test-p256.pkcs8.pem")).unwrap();
    let twice = sign(&once, &signing("test-ed25519.pkcs8.pem")).unwrap();
    assert_eq!(
        section::scan(&twice).unwrap().len(),
        section::scan(&once).unwrap().len()
    );
    verify(&twice, &keyset(&["test-ed25519.pub.pem"])).unwrap();
    assert!(matches!(
        verify(&twice, &keyset(&["test-p256.pub.pem"])),
        Err(SignatureError::UnknownKey { .. })
    ));
}

#[test]
fn tampering_is_detected() {
    let m = module();
    for private in [
        "test-rsa2048.pkcs8.pem",
        "test-p384.pkcs8.pem",
        "test-ed25519.pkcs8.pem",
    ] {
        let k = signing(private);
        let keys = {
            let mut s = KeySet::new();
            s.insert(k.verifying_key().clone(), None);
            s
        };
        let signed = sign(&m, &k).unwrap();

        // Flip a byte inside the code section (the `i32.const 42` immediate).
        let code = section::scan(&signed)
            .unwrap()
            .into_iter()
            .find(|s| s.id == 10)
            .unwrap();
        let mut t = signed.clone();
        let pos = (code.range.start..code.range.end)
            .rev()
            .find(|i| t[*i] == 42)
            .unwrap();
        t[pos] = 43;
        assert!(
            matches!(verify(&t, &keys), Err(SignatureError::BadSignature { .. })),
            "{private}: code tamper"
        );

        // Change another custom section's content.
        let mut t = signed.clone();
        let doc = b"a flight for tests";
        let at = t.windows(doc.len()).position(|w| w == doc).unwrap();
        t[at] = b'A';
        assert!(
            matches!(verify(&t, &keys), Err(SignatureError::BadSignature { .. })),
            "{private}: custom section tamper"
        );

        // Flip a bit of the signature itself.
        let payload = read_signature(&signed).unwrap().unwrap();
        let mut bad = payload.clone();
        bad.signature[5] ^= 1;
        let data = serde_json::to_vec(&bad).unwrap();
        let t = section::append_custom_section(&m, SECTION_NAME.as_bytes(), &data).unwrap();
        assert!(
            matches!(verify(&t, &keys), Err(SignatureError::BadSignature { .. })),
            "{private}: signature tamper"
        );

        // Appending a section after signing changes the hashed bytes.
        let t = section::append_custom_section(&signed, b"extra", b"x").unwrap();
        assert!(matches!(
            verify(&t, &keys),
            Err(SignatureError::BadSignature { .. })
        ));
    }
}

#[test]
fn unsigned_and_unknown_key() {
    let m = module();
    assert!(matches!(
        verify(&m, &keyset(&["test-ed25519.pub.pem"])),
        Err(SignatureError::Unsigned)
    ));
    let signed = sign(&m, &signing("test-ed25519.pkcs8.pem")).unwrap();
    match verify(
        &signed,
        &keyset(&["test-other-ed25519.pub.pem", "test-p256.pub.pem"]),
    ) {
        Err(SignatureError::UnknownKey { fingerprint, known }) => {
            assert_eq!(fingerprint, signing("test-ed25519.pkcs8.pem").fingerprint());
            assert_eq!(known, 2);
        }
        other => panic!("expected UnknownKey, got {other:?}"),
    }
    // An empty key set: unknown key, not a panic.
    assert!(matches!(
        verify(&signed, &KeySet::new()),
        Err(SignatureError::UnknownKey { known: 0, .. })
    ));
}

#[test]
fn two_signature_sections_are_refused() {
    let m = module();
    let k = signing("test-ed25519.pkcs8.pem");
    let signed = sign(&m, &k).unwrap();
    let data = strip_signature(&signed)
        .unwrap()
        .signature_data
        .unwrap()
        .to_vec();
    let doubled = section::append_custom_section(&signed, SECTION_NAME.as_bytes(), &data).unwrap();
    let keys = keyset(&["test-ed25519.pub.pem"]);
    assert!(matches!(
        verify(&doubled, &keys),
        Err(SignatureError::MalformedSection(m)) if m.contains("two")
    ));
    assert!(matches!(
        sign(&doubled, &k),
        Err(SignatureError::MalformedSection(_))
    ));
}

#[test]
fn oversized_and_garbage_sections_are_refused() {
    let m = module();
    let keys = keyset(&["test-ed25519.pub.pem"]);
    let big = vec![b' '; MAX_SECTION_DATA + 1];
    let t = section::append_custom_section(&m, SECTION_NAME.as_bytes(), &big).unwrap();
    assert!(matches!(
        verify(&t, &keys),
        Err(SignatureError::MalformedSection(msg)) if msg.contains("65536")
    ));
    for garbage in [
        &b""[..],
        b"{}",
        b"not json",
        b"{\"Fingerprint\":\"ab\",\"Signature\":\"!!\"}",
        b"{\"Fingerprint\":\"ab\",\"Signature\":\"\"}",
    ] {
        let t = section::append_custom_section(&m, SECTION_NAME.as_bytes(), garbage).unwrap();
        assert!(
            matches!(verify(&t, &keys), Err(SignatureError::MalformedSection(_))),
            "{:?}",
            String::from_utf8_lossy(garbage)
        );
    }
}

#[test]
fn truncated_signed_module_is_an_error_not_a_panic() {
    let signed = sign(&module(), &signing("test-p256.pkcs8.pem")).unwrap();
    let keys = keyset(&["test-p256.pub.pem"]);
    for cut in 0..signed.len() {
        assert!(verify(&signed[..cut], &keys).is_err(), "cut {cut}");
    }
    // Truncating the signature section's payload inside its declared size.
    let mut t = signed.clone();
    t.truncate(t.len() - 3);
    assert!(matches!(
        verify(&t, &keys),
        Err(SignatureError::MalformedModule(
            SectionError::SectionPastEnd { .. }
        ))
    ));
    assert!(matches!(
        sign(b"not wasm", &signing("test-p256.pkcs8.pem")),
        Err(SignatureError::MalformedModule(SectionError::NotWasm))
    ));
}

#[test]
fn bad_key_files_are_clear_errors() {
    let err = |r: Result<VerifyingKey, SignatureError>| match r {
        Err(SignatureError::BadKey { reason, .. }) => reason,
        other => panic!("expected BadKey, got {other:?}"),
    };
    let r = err(VerifyingKey::from_pem_file(&key("test-p256.cert.pem")));
    assert!(r.contains("certificate"), "{r}");
    let r = err(VerifyingKey::from_pem(b"hello"));
    assert!(r.contains("no PEM key"), "{r}");
    let r = err(VerifyingKey::from_pem_file(&key("test-rsa1024.pkcs8.pem")));
    assert!(r.contains("2048"), "{r}");
    match SigningKey::from_pem_file(&key("test-p256.pub.pem")) {
        Err(SignatureError::BadKey { reason, path }) => {
            assert!(reason.contains("private key"), "{reason}");
            assert_eq!(path, Some(key("test-p256.pub.pem")));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        SigningKey::from_pem(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"),
        Err(SignatureError::BadKey { reason, .. }) if reason.contains("encrypted")
    ));
    assert!(matches!(
        KeySet::load(Path::new("/nonexistent/hoist/keys")),
        Err(SignatureError::Io { .. })
    ));
}

#[test]
fn key_directories_are_scanned_recursively() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("team/a")).unwrap();
    std::fs::copy(key("test-p256.pub.pem"), dir.path().join("p256.pem")).unwrap();
    std::fs::copy(
        key("test-ed25519.pub.pem"),
        dir.path().join("team/a/ed.pem"),
    )
    .unwrap();
    std::fs::write(dir.path().join("README.txt"), "not a key, not *.pem").unwrap();
    let set = KeySet::load(dir.path()).unwrap();
    assert_eq!(set.len(), 2);
    let signed = sign(&module(), &signing("test-ed25519.pkcs8.pem")).unwrap();
    let v = verify(&signed, &set).unwrap();
    assert_eq!(v.key_source, Some(dir.path().join("team/a/ed.pem")));

    // A *.pem that is not a key is an error naming the file.
    std::fs::copy(key("test-p256.cert.pem"), dir.path().join("team/cert.pem")).unwrap();
    match KeySet::load(dir.path()) {
        Err(SignatureError::BadKey { path, .. }) => {
            assert_eq!(path, Some(dir.path().join("team/cert.pem")))
        }
        other => panic!("{other:?}"),
    }

    // An empty directory is an error.
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        KeySet::load(empty.path()),
        Err(SignatureError::BadKey { .. })
    ));
}

// ---- Cross-implementation tests against Go (testdata/signing) ----

/// Builds the Go program once; `None` (with a printed reason) when Go is unavailable locally.
fn yokesig() -> Option<&'static Path> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/signing");
        let out = std::env::temp_dir().join(format!("hoist-yokesig-{}", std::process::id()));
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(&src)
            .env("GOFLAGS", "-buildvcs=false")
            .status();
        match status {
            Ok(s) if s.success() => Some(out),
            other => {
                let msg = format!("cannot build testdata/signing with `go build`: {other:?}");
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("{msg} (CI=true: Go is required for the cross-implementation tests)");
                }
                eprintln!("SKIP Go cross-tests: {msg}");
                None
            }
        }
    })
    .as_deref()
}

fn go(args: &[&std::ffi::OsStr]) -> Result<String, String> {
    let bin = yokesig().expect("checked by caller");
    let out = Command::new(bin)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Private keys Go (and Yoke) can read, with their public keys.
const GO_PAIRS: &[(&str, &str)] = &[
    ("test-rsa2048.pkcs1.pem", "test-rsa2048.pub.pem"),
    ("test-rsa2048.pkcs8.pem", "test-rsa2048.pkcs1-pub.pem"),
    ("test-rsa4096.pkcs8.pem", "test-rsa4096.pub.pem"),
    ("test-p256.pkcs8.pem", "test-p256.pub.pem"),
    ("test-p384.pkcs8.pem", "test-p384.pub.pem"),
    ("test-p521.pkcs8.pem", "test-p521.pub.pem"),
    ("test-ed25519.pkcs8.pem", "test-ed25519.pub.pem"),
];

#[test]
fn go_fingerprints_match() {
    if yokesig().is_none() {
        return;
    }
    for (private, public) in GO_PAIRS {
        let fp = go(&["fingerprint".as_ref(), key(public).as_os_str()]).unwrap();
        assert_eq!(fp.trim(), signing(private).fingerprint(), "{public}");
    }
}

#[test]
fn go_signed_modules_verify_in_hoist() {
    if yokesig().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.wasm");
    std::fs::write(&input, module()).unwrap();
    for (private, public) in GO_PAIRS {
        let out = dir.path().join(format!("{private}.wasm"));
        go(&[
            "sign".as_ref(),
            key(private).as_os_str(),
            input.as_os_str(),
            out.as_os_str(),
        ])
        .unwrap_or_else(|e| panic!("go sign {private}: {e}"));
        let signed = std::fs::read(&out).unwrap();
        let v = verify(&signed, &keyset(&[public]))
            .unwrap_or_else(|e| panic!("hoist verify of Go-signed {private}: {e}"));
        assert_eq!(v.fingerprint, signing(private).fingerprint());
        // Tampering a Go-signed module is caught too.
        let mut t = signed.clone();
        t[9] ^= 0xff;
        assert!(verify(&t, &keyset(&[public])).is_err());
    }
}

#[test]
fn hoist_signed_modules_verify_in_go() {
    if yokesig().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (private, public) in GO_PAIRS {
        let signed = sign(&module(), &signing(private)).unwrap();
        let out = dir.path().join(format!("{private}.wasm"));
        std::fs::write(&out, &signed).unwrap();
        go(&["verify".as_ref(), key(public).as_os_str(), out.as_os_str()])
            .unwrap_or_else(|e| panic!("go verify of hoist-signed {private}: {e}"));
        // And Go rejects a tampered one (so the check above is meaningful).
        let mut t = signed.clone();
        let last = t.len() - 40;
        t[last] ^= 1;
        let tampered = dir.path().join(format!("{private}.bad.wasm"));
        std::fs::write(&tampered, &t).unwrap();
        assert!(
            go(&[
                "verify".as_ref(),
                key(public).as_os_str(),
                tampered.as_os_str()
            ])
            .is_err()
        );
    }
}

#[test]
fn rsa_pss_salt_lengths_are_auto_detected() {
    // hoist signs with the maximal salt (like Go); a digest-length salt (OpenSSL/aws-lc
    // default) and a zero salt must verify too.
    use aws_lc_rs::signature::{
        RSA_PSS_SHA256, RsaKeyPair, RsaPssSaltLength, RsaSignatureEncoding,
    };
    static DIGEST_SALT: RsaSignatureEncoding = RSA_PSS_SHA256;
    static ZERO_SALT: RsaSignatureEncoding =
        RSA_PSS_SHA256.with_pss_salt_length(RsaPssSaltLength::Custom(0));
    static ODD_SALT: RsaSignatureEncoding =
        RSA_PSS_SHA256.with_pss_salt_length(RsaPssSaltLength::Custom(77));
    let pem = std::fs::read(key("test-rsa2048.pkcs8.pem")).unwrap();
    let block = der::parse_pem(&pem).unwrap().remove(0);
    let kp = RsaKeyPair::from_pkcs8(&block.der).unwrap();
    let m = module();
    let d = digest::digest(&digest::SHA256, &m);
    let fp = signing("test-rsa2048.pkcs8.pem").fingerprint().to_string();
    let keys = keyset(&["test-rsa2048.pub.pem"]);
    for enc in [&DIGEST_SALT, &ZERO_SALT, &ODD_SALT] {
        let mut s = vec![0u8; kp.public_modulus_len()];
        kp.sign_digest(enc, &d, &mut s).unwrap();
        let data = serde_json::to_vec(&SignaturePayload {
            fingerprint: fp.clone(),
            signature: s,
        })
        .unwrap();
        let t = section::append_custom_section(&m, SECTION_NAME.as_bytes(), &data).unwrap();
        verify(&t, &keys).unwrap_or_else(|e| panic!("{enc:?}: {e}"));
    }
}

#[test]
fn go_and_hoist_both_sign_rsa_with_the_maximal_salt() {
    // Yoke (Go, nil PSSOptions) signs with the largest salt; hoist must do the same, and the
    // verifier tries that length first.
    let max_only = |signed: &[u8]| {
        let payload = read_signature(signed).unwrap().unwrap();
        let d = digest::digest(&digest::SHA256, &strip_signature(signed).unwrap().unsigned);
        let spki = signing("test-rsa2048.pkcs8.pem")
            .verifying_key()
            .spki_der()
            .to_vec();
        static MAX: aws_lc_rs::signature::RsaParameters =
            aws_lc_rs::signature::RSA_PSS_2048_8192_SHA256
                .with_pss_salt_length(aws_lc_rs::signature::RsaPssSaltLength::Max);
        aws_lc_rs::signature::UnparsedPublicKey::new(&MAX, &spki)
            .verify_digest(&d, &payload.signature)
            .is_ok()
    };
    let hoist_signed = sign(&module(), &signing("test-rsa2048.pkcs8.pem")).unwrap();
    assert!(max_only(&hoist_signed), "hoist signs with the maximal salt");
    if yokesig().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.wasm");
    let out = dir.path().join("out.wasm");
    std::fs::write(&input, module()).unwrap();
    go(&[
        "sign".as_ref(),
        key("test-rsa2048.pkcs8.pem").as_os_str(),
        input.as_os_str(),
        out.as_os_str(),
    ])
    .unwrap();
    assert!(
        max_only(&std::fs::read(&out).unwrap()),
        "Go signs with the maximal salt"
    );
}

#[test]
fn every_single_bit_flip_is_rejected() {
    // Flip the low bit of each byte of a signed module in turn: no variant may verify (and
    // none may panic), whether the flip lands in the header, code, data, another custom
    // section, the signature section's framing, its JSON, the fingerprint or the signature.
    for private in ["test-ed25519.pkcs8.pem", "test-p256.pkcs8.pem"] {
        let k = signing(private);
        let mut keys = KeySet::new();
        keys.insert(k.verifying_key().clone(), None);
        let signed = sign(&module(), &k).unwrap();
        verify(&signed, &keys).unwrap();
        for i in 0..signed.len() {
            let mut t = signed.clone();
            t[i] ^= 1;
            assert!(
                verify(&t, &keys).is_err(),
                "{private}: flip at byte {i} verified"
            );
        }
    }
}
