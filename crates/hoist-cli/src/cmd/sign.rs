//! `hoist sign` and `hoist verify`: Yoke-compatible signatures inside the module.
//!
//! - `hoist sign --key PRIVATE.pem [-o OUT] [-f] MODULE`: signs MODULE in place (as Yoke does)
//!   or writes the signed module to OUT. An already signed module is re-signed only with
//!   `-f/--force` (Yoke's `-f`), and an existing OUT is overwritten only with `-f` too.
//! - `hoist verify --key PUBLIC.pem|DIR [--key ...] MODULE`: checks the signature against the
//!   key(s); a directory is scanned recursively for `*.pem`.
//!
//! Verification is `hoist_modules::verify_module`, the same check `--verify` runs everywhere.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use hoist_provenance::signature::{self, SignatureError, SigningKey};

/// Sign a module (Yoke-compatible `yoke.schematics:signature` section).
#[derive(clap::Args, Debug, Clone)]
pub struct SignArgs {
    /// Private key, PEM: RSA PRIVATE KEY (PKCS#1), PRIVATE KEY (PKCS#8: RSA, ECDSA P-256/P-384/P-521, Ed25519) or EC PRIVATE KEY
    #[arg(long, value_name = "PRIVATE.pem")]
    pub key: PathBuf,
    /// Write the signed module to OUT instead of signing MODULE in place
    #[arg(short = 'o', long = "out", value_name = "OUT")]
    pub out: Option<PathBuf>,
    /// Replace an existing signature, and overwrite an existing OUT
    #[arg(short = 'f', long)]
    pub force: bool,
    /// The Wasm module to sign (uncompressed .wasm)
    #[arg(value_name = "MODULE")]
    pub module: PathBuf,
}

/// Verify a module's signature.
#[derive(clap::Args, Debug, Clone)]
pub struct VerifyArgs {
    /// Public key (PEM: PUBLIC KEY or RSA PUBLIC KEY), or a directory scanned recursively for *.pem; repeatable
    #[arg(long, value_name = "PUBLIC.pem|DIR", required = true)]
    pub key: Vec<PathBuf>,
    /// The Wasm module to verify
    #[arg(value_name = "MODULE")]
    pub module: PathBuf,
}

fn read_module(path: &Path) -> Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read module {}", path.display()))?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        bail!(
            "{} is gzip-compressed; signatures live inside the uncompressed module: decompress it first (gunzip -k {})",
            path.display(),
            path.display()
        );
    }
    Ok(bytes)
}

/// `hoist sign`.
pub fn run_sign(args: SignArgs) -> Result<()> {
    let module = read_module(&args.module)?;
    let key = SigningKey::from_pem_file(&args.key)
        .with_context(|| format!("cannot use {} as a signing key", args.key.display()))?;

    match signature::read_signature(&module) {
        Ok(None) => {}
        Ok(Some(existing)) if !args.force => bail!(
            "{} is already signed (key fingerprint {}); pass -f/--force to replace its signature",
            args.module.display(),
            existing.fingerprint
        ),
        Err(e @ SignatureError::MalformedModule(_)) => {
            return Err(anyhow::Error::new(e).context(format!(
                "{} is not a valid WebAssembly module, so it cannot be signed",
                args.module.display()
            )));
        }
        Err(e) if !args.force => {
            return Err(anyhow::Error::new(e).context(format!(
                "{} carries an unreadable signature section; pass -f/--force to replace it",
                args.module.display()
            )));
        }
        _ => {}
    }

    let signed = match signature::sign(&module, &key) {
        // With --force a garbled existing section is dropped by rebuilding without it.
        Err(SignatureError::MalformedSection(_)) if args.force => {
            let stripped = strip_all_signature_sections(&module)?;
            signature::sign(&stripped, &key)
        }
        other => other,
    }
    .with_context(|| format!("cannot sign {}", args.module.display()))?;

    let out = args.out.clone().unwrap_or_else(|| args.module.clone());
    if args.out.is_some() && out.exists() && !args.force && !same_file(&out, &args.module) {
        bail!(
            "{} already exists; pass -f/--force to overwrite it, or choose another -o/--out",
            out.display()
        );
    }
    write_atomically(&out, &signed)
        .with_context(|| format!("cannot write the signed module to {}", out.display()))?;
    eprintln!(
        "signed {} with {} key {} -> {}",
        args.module.display(),
        key.algorithm(),
        key.fingerprint(),
        out.display()
    );
    Ok(())
}

/// `hoist verify`.
pub fn run_verify(args: VerifyArgs) -> Result<()> {
    let module = read_module(&args.module)?;
    let keys = hoist_modules::load_keys(&args.key)?;
    let v = hoist_modules::verify_module(&module, &keys, &args.module.display().to_string())?;
    let source = v
        .key_source
        .as_ref()
        .map(|p| format!(" ({})", p.display()))
        .unwrap_or_default();
    println!(
        "verified {}: signed by {} key {}{}",
        args.module.display(),
        v.algorithm,
        v.fingerprint,
        source
    );
    Ok(())
}

/// Removes every signature section (used by `sign -f` on a module with two of them).
fn strip_all_signature_sections(module: &[u8]) -> Result<Vec<u8>> {
    let sections = signature::section::scan(module)?;
    let mut out = module[..signature::section::PREAMBLE_LEN].to_vec();
    for s in sections {
        let is_sig = s
            .custom
            .as_ref()
            .is_some_and(|c| c.name == signature::SECTION_NAME.as_bytes());
        if !is_sig {
            out.extend_from_slice(&module[s.range]);
        }
    }
    Ok(out)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Writes through a temporary file in the same directory, then renames over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "module.wasm".into());
    let tmp = dir.join(format!(".{name}.hoist-sign-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/keys")
    }

    /// A tiny valid module: one function returning 42.
    fn module() -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend_from_slice(&[0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f]);
        m.extend_from_slice(&[0x03, 0x02, 0x01, 0x00]);
        m.extend_from_slice(&[0x0a, 0x06, 0x01, 0x04, 0x00, 0x41, 0x2a, 0x0b]);
        m
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hoist-sign-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn sign_in_place_then_refuse_resign_without_force() {
        let d = tmpdir("inplace");
        let m = d.join("m.wasm");
        std::fs::write(&m, module()).unwrap();
        let args = SignArgs {
            key: keys_dir().join("test-ed25519.pkcs8.pem"),
            out: None,
            force: false,
            module: m.clone(),
        };
        run_sign(args.clone()).unwrap();
        let signed = std::fs::read(&m).unwrap();
        assert!(signed.len() > module().len());
        let err = run_sign(args.clone()).unwrap_err();
        assert!(format!("{err:#}").contains("--force"), "{err:#}");
        run_sign(SignArgs {
            force: true,
            ..args
        })
        .unwrap();
        run_verify(VerifyArgs {
            key: vec![keys_dir().join("test-ed25519.pub.pem")],
            module: m,
        })
        .unwrap();
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn out_is_not_overwritten_without_force() {
        let d = tmpdir("out");
        let m = d.join("m.wasm");
        let out = d.join("signed.wasm");
        std::fs::write(&m, module()).unwrap();
        std::fs::write(&out, b"precious").unwrap();
        let args = SignArgs {
            key: keys_dir().join("test-p256.pkcs8.pem"),
            out: Some(out.clone()),
            force: false,
            module: m.clone(),
        };
        let err = run_sign(args.clone()).unwrap_err();
        assert!(format!("{err:#}").contains("already exists"), "{err:#}");
        assert_eq!(std::fs::read(&out).unwrap(), b"precious");
        run_sign(SignArgs {
            force: true,
            ..args
        })
        .unwrap();
        assert_eq!(std::fs::read(&m).unwrap(), module(), "input untouched");
        run_verify(VerifyArgs {
            key: vec![keys_dir().join("test-p256.pub.pem")],
            module: out,
        })
        .unwrap();
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn messages_name_the_problem() {
        let d = tmpdir("msgs");
        let m = d.join("m.wasm");
        std::fs::write(&m, module()).unwrap();
        let err = run_verify(VerifyArgs {
            key: vec![keys_dir().join("test-p256.pub.pem")],
            module: m.clone(),
        })
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("not signed") && msg.contains("m.wasm"),
            "{msg}"
        );

        let err = run_sign(SignArgs {
            key: keys_dir().join("test-p256.pub.pem"),
            out: None,
            force: false,
            module: m.clone(),
        })
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("private key") && msg.contains("test-p256.pub.pem"),
            "{msg}"
        );

        std::fs::write(&m, b"\x1f\x8b\x08\0gz").unwrap();
        let err = run_verify(VerifyArgs {
            key: vec![keys_dir().join("test-p256.pub.pem")],
            module: m,
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("gunzip"));
        let _ = std::fs::remove_dir_all(d);
    }
}
