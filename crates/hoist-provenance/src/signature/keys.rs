//! Signing and verification keys, read from PEM the way Yoke reads them.

use std::fmt;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};

use super::SignatureError;
use super::der::{self, PemBlock};

/// Largest key file hoist reads (key files are a few KiB at most).
const MAX_KEY_FILE: u64 = 1024 * 1024;
/// How deep [`KeySet::load`] descends into sub-directories.
const MAX_DIR_DEPTH: usize = 16;

/// The algorithm of a key, picked from its OID (and curve).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// RSA (2048 to 8192 bits), signatures are RSASSA-PSS with SHA-256.
    Rsa {
        /// Modulus size in bits.
        bits: usize,
    },
    /// ECDSA on NIST P-256; ASN.1 DER signature over the SHA-256 digest.
    EcdsaP256,
    /// ECDSA on NIST P-384; ASN.1 DER signature over the SHA-256 digest.
    EcdsaP384,
    /// ECDSA on NIST P-521; ASN.1 DER signature over the SHA-256 digest.
    EcdsaP521,
    /// Ed25519; signature over the 32-byte SHA-256 digest.
    Ed25519,
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyAlgorithm::Rsa { bits } => write!(f, "RSA-{bits} (PSS, SHA-256)"),
            KeyAlgorithm::EcdsaP256 => f.write_str("ECDSA P-256"),
            KeyAlgorithm::EcdsaP384 => f.write_str("ECDSA P-384"),
            KeyAlgorithm::EcdsaP521 => f.write_str("ECDSA P-521"),
            KeyAlgorithm::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

fn bad_key(path: Option<&Path>, reason: impl Into<String>) -> SignatureError {
    SignatureError::BadKey {
        path: path.map(Path::to_path_buf),
        reason: reason.into(),
    }
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, SignatureError> {
    let io = |error| SignatureError::Io {
        path: path.to_path_buf(),
        error,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_KEY_FILE {
        return Err(bad_key(
            Some(path),
            format!(
                "file is {} bytes, larger than any key file ({} bytes max)",
                meta.len(),
                MAX_KEY_FILE
            ),
        ));
    }
    std::fs::read(path).map_err(io)
}

/// Returns the first PEM block that is a key (skipping `EC PARAMETERS`, which
/// `openssl ecparam -genkey` writes before the key).
fn first_key_block(pem: &[u8], path: Option<&Path>) -> Result<PemBlock, SignatureError> {
    let blocks = der::parse_pem(pem).map_err(|e| bad_key(path, e))?;
    let block = blocks
        .into_iter()
        .find(|b| b.label != "EC PARAMETERS")
        .ok_or_else(|| {
            bad_key(
                path,
                "no PEM key found: expected a block such as -----BEGIN PUBLIC KEY----- or -----BEGIN PRIVATE KEY-----",
            )
        })?;
    if block.has_headers || block.label == "ENCRYPTED PRIVATE KEY" {
        return Err(bad_key(
            path,
            "the key is encrypted; hoist (like Yoke) needs an unencrypted key: decrypt it with `openssl pkey -in KEY -out PLAIN.pem`",
        ));
    }
    Ok(block)
}

fn curve_algorithm(
    curve: Option<&[u8]>,
    path: Option<&Path>,
) -> Result<KeyAlgorithm, SignatureError> {
    match curve {
        Some(c) if c == der::OID_P256 => Ok(KeyAlgorithm::EcdsaP256),
        Some(c) if c == der::OID_P384 => Ok(KeyAlgorithm::EcdsaP384),
        Some(c) if c == der::OID_P521 => Ok(KeyAlgorithm::EcdsaP521),
        Some(_) => Err(bad_key(
            path,
            "unsupported elliptic curve: use P-256, P-384 or P-521 (or RSA / Ed25519)",
        )),
        None => Err(bad_key(path, "the EC key does not name its curve")),
    }
}

/// A private key that signs modules.
pub struct SigningKey {
    inner: PrivateKey,
    public: VerifyingKey,
}

enum PrivateKey {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.public.algorithm)
            .field("fingerprint", &self.public.fingerprint)
            .finish_non_exhaustive()
    }
}

static RSA_PSS_SHA256_MAX_SALT: sig::RsaSignatureEncoding =
    sig::RSA_PSS_SHA256.with_pss_salt_length(sig::RsaPssSaltLength::Max);

impl SigningKey {
    /// Parses a PEM private key: `RSA PRIVATE KEY` (PKCS#1), `PRIVATE KEY` (PKCS#8: RSA, EC,
    /// Ed25519) or `EC PRIVATE KEY` (SEC1; an extension: Yoke reads only the first two).
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, SignatureError> {
        Self::parse(pem, None)
    }

    /// Reads and parses a PEM private key file.
    pub fn from_pem_file(path: &Path) -> Result<SigningKey, SignatureError> {
        let pem = read_key_file(path)?;
        Self::parse(&pem, Some(path))
    }

    fn parse(pem: &[u8], path: Option<&Path>) -> Result<SigningKey, SignatureError> {
        let block = first_key_block(pem, path)?;
        let rejected = |what: &str, e: aws_lc_rs::error::KeyRejected| {
            bad_key(path, format!("cannot parse the {what}: {e}"))
        };
        let (inner, algorithm) = match block.label.as_str() {
            "RSA PRIVATE KEY" => {
                let k = RsaKeyPair::from_der(&block.der).map_err(|e| {
                    rejected(
                        "PKCS#1 RSA private key (RSA keys must be 2048 to 8192 bits)",
                        e,
                    )
                })?;
                let bits = k.public_modulus_len() * 8;
                (PrivateKey::Rsa(k), KeyAlgorithm::Rsa { bits })
            }
            "PRIVATE KEY" => {
                let alg = der::parse_pkcs8_algorithm(&block.der)
                    .map_err(|e| bad_key(path, format!("malformed PKCS#8 key: {}", e.0)))?;
                if alg.oid == der::OID_RSA {
                    let k = RsaKeyPair::from_pkcs8(&block.der).map_err(|e| {
                        rejected(
                            "PKCS#8 RSA private key (RSA keys must be 2048 to 8192 bits)",
                            e,
                        )
                    })?;
                    let bits = k.public_modulus_len() * 8;
                    (PrivateKey::Rsa(k), KeyAlgorithm::Rsa { bits })
                } else if alg.oid == der::OID_EC {
                    let algorithm = curve_algorithm(alg.param_oid, path)?;
                    let k =
                        EcdsaKeyPair::from_private_key_der(ecdsa_signing(algorithm), &block.der)
                            .map_err(|e| rejected("PKCS#8 EC private key", e))?;
                    (PrivateKey::Ecdsa(k), algorithm)
                } else if alg.oid == der::OID_ED25519 {
                    let k = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&block.der)
                        .map_err(|e| rejected("PKCS#8 Ed25519 private key", e))?;
                    (PrivateKey::Ed25519(k), KeyAlgorithm::Ed25519)
                } else {
                    return Err(bad_key(
                        path,
                        "unsupported private key algorithm: use RSA, ECDSA (P-256/P-384/P-521) or Ed25519",
                    ));
                }
            }
            "EC PRIVATE KEY" => {
                let curve = der::parse_sec1_curve(&block.der)
                    .map_err(|e| bad_key(path, format!("malformed SEC1 EC key: {}", e.0)))?;
                let algorithm = curve_algorithm(curve, path)?;
                let k = EcdsaKeyPair::from_private_key_der(ecdsa_signing(algorithm), &block.der)
                    .map_err(|e| rejected("SEC1 EC private key", e))?;
                (PrivateKey::Ecdsa(k), algorithm)
            }
            other => return Err(wrong_pem_type(other, true, path)),
        };
        let spki = match &inner {
            PrivateKey::Rsa(k) => k.public_key().as_der(),
            PrivateKey::Ecdsa(k) => k.public_key().as_der(),
            PrivateKey::Ed25519(k) => k.public_key().as_der(),
        }
        .map_err(|_| bad_key(path, "cannot encode the public key"))?;
        let public = VerifyingKey::from_spki_der(spki.as_ref(), algorithm, path)?;
        Ok(SigningKey { inner, public })
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// Yoke's fingerprint of the public key (hex SHA-256 of the SubjectPublicKey bytes).
    pub fn fingerprint(&self) -> &str {
        &self.public.fingerprint
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.public.algorithm
    }

    /// Signs a SHA-256 digest the way Yoke does (see [`crate::signature`]).
    pub(crate) fn sign_digest(&self, digest: &Digest) -> Result<Vec<u8>, SignatureError> {
        let failed = |what: &str| SignatureError::SigningFailed(what.to_string());
        match &self.inner {
            PrivateKey::Rsa(k) => {
                let mut out = vec![0u8; k.public_modulus_len()];
                k.sign_digest(&RSA_PSS_SHA256_MAX_SALT, digest, &mut out)
                    .map_err(|_| failed("RSA-PSS signing failed"))?;
                Ok(out)
            }
            PrivateKey::Ecdsa(k) => {
                // Go's ecdsa.SignASN1 uses the 32-byte digest itself as the ECDSA hash value.
                // aws-lc-rs ties each curve to a digest length, so left-pad with zeros to that
                // length: the big-endian integer (and so the signature's meaning) is unchanged,
                // and it is shorter than the curve order, so nothing is truncated.
                let alg: &'static digest::Algorithm = match self.public.algorithm {
                    KeyAlgorithm::EcdsaP384 => &digest::SHA384,
                    KeyAlgorithm::EcdsaP521 => &digest::SHA512,
                    _ => &digest::SHA256,
                };
                let len = alg.output_len();
                let mut padded = vec![0u8; len.saturating_sub(digest.as_ref().len())];
                padded.extend_from_slice(digest.as_ref());
                let imported = Digest::import_less_safe(&padded, alg)
                    .map_err(|_| failed("cannot prepare the ECDSA digest"))?;
                let s = k
                    .sign_digest(&imported)
                    .map_err(|_| failed("ECDSA signing failed"))?;
                Ok(s.as_ref().to_vec())
            }
            PrivateKey::Ed25519(k) => Ok(k.sign(digest.as_ref()).as_ref().to_vec()),
        }
    }
}

fn ecdsa_signing(algorithm: KeyAlgorithm) -> &'static sig::EcdsaSigningAlgorithm {
    match algorithm {
        KeyAlgorithm::EcdsaP384 => &sig::ECDSA_P384_SHA384_ASN1_SIGNING,
        KeyAlgorithm::EcdsaP521 => &sig::ECDSA_P521_SHA512_ASN1_SIGNING,
        _ => &sig::ECDSA_P256_SHA256_ASN1_SIGNING,
    }
}

fn wrong_pem_type(label: &str, signing: bool, path: Option<&Path>) -> SignatureError {
    let hint = match label {
        "CERTIFICATE" => {
            "a certificate is not a key; extract its public key with `openssl x509 -pubkey -noout -in CERT.pem > PUBLIC.pem`"
                .to_string()
        }
        "PUBLIC KEY" | "RSA PUBLIC KEY" if signing => {
            "this is a public key; signing needs the private key (verify with the public one)".to_string()
        }
        _ if signing => format!(
            "unsupported PEM type {label:?}: expected RSA PRIVATE KEY, PRIVATE KEY or EC PRIVATE KEY"
        ),
        _ => format!(
            "unsupported PEM type {label:?}: expected PUBLIC KEY or RSA PUBLIC KEY (private keys are accepted too, as Yoke does)"
        ),
    };
    bad_key(path, hint)
}

/// A public key that verifies module signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    algorithm: KeyAlgorithm,
    /// Canonical SubjectPublicKeyInfo DER (re-encoded by aws-lc).
    spki: Vec<u8>,
    fingerprint: String,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("algorithm", &self.algorithm)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl VerifyingKey {
    /// Parses a PEM public key: `PUBLIC KEY` (PKIX) or `RSA PUBLIC KEY` (PKCS#1). Like Yoke,
    /// a private key is accepted too and its public half is used.
    pub fn from_pem(pem: &[u8]) -> Result<VerifyingKey, SignatureError> {
        Self::parse(pem, None)
    }

    /// Reads and parses a PEM public key file.
    pub fn from_pem_file(path: &Path) -> Result<VerifyingKey, SignatureError> {
        let pem = read_key_file(path)?;
        Self::parse(&pem, Some(path))
    }

    fn parse(pem: &[u8], path: Option<&Path>) -> Result<VerifyingKey, SignatureError> {
        let block = first_key_block(pem, path)?;
        match block.label.as_str() {
            "PUBLIC KEY" => {
                let (alg, _) = der::parse_spki(&block.der)
                    .map_err(|e| bad_key(path, format!("malformed PKIX public key: {}", e.0)))?;
                let algorithm = if alg.oid == der::OID_RSA {
                    KeyAlgorithm::Rsa { bits: 0 }
                } else if alg.oid == der::OID_EC {
                    curve_algorithm(alg.param_oid, path)?
                } else if alg.oid == der::OID_ED25519 {
                    KeyAlgorithm::Ed25519
                } else {
                    return Err(bad_key(
                        path,
                        "unsupported public key algorithm: use RSA, ECDSA (P-256/P-384/P-521) or Ed25519",
                    ));
                };
                Self::from_key_der(&block.der, algorithm, path)
            }
            "RSA PUBLIC KEY" => Self::from_key_der(&block.der, KeyAlgorithm::Rsa { bits: 0 }, path),
            "RSA PRIVATE KEY" | "PRIVATE KEY" | "EC PRIVATE KEY" => {
                Ok(SigningKey::parse(pem, path)?.public)
            }
            other => Err(wrong_pem_type(other, false, path)),
        }
    }

    /// Parses `der` (SPKI, or PKCS#1 for RSA) with aws-lc and keeps its canonical SPKI.
    fn from_key_der(
        der_bytes: &[u8],
        algorithm: KeyAlgorithm,
        path: Option<&Path>,
    ) -> Result<VerifyingKey, SignatureError> {
        let parse_alg: &'static dyn sig::VerificationAlgorithm = match algorithm {
            KeyAlgorithm::Rsa { .. } => &sig::RSA_PSS_2048_8192_SHA256,
            KeyAlgorithm::EcdsaP256 => &sig::ECDSA_P256_SHA256_ASN1,
            KeyAlgorithm::EcdsaP384 => &sig::ECDSA_P384_SHA256_ASN1,
            KeyAlgorithm::EcdsaP521 => &sig::ECDSA_P521_SHA256_ASN1,
            KeyAlgorithm::Ed25519 => &sig::ED25519,
        };
        let parsed = sig::ParsedPublicKey::new(parse_alg, der_bytes).map_err(|e| {
            bad_key(
                path,
                format!("cannot parse the {algorithm} public key: {e}"),
            )
        })?;
        let spki: PublicKeyX509Der<'static> = parsed
            .as_der()
            .map_err(|_| bad_key(path, "cannot encode the public key"))?;
        Self::from_spki_der(spki.as_ref(), algorithm, path)
    }

    fn from_spki_der(
        spki: &[u8],
        algorithm: KeyAlgorithm,
        path: Option<&Path>,
    ) -> Result<VerifyingKey, SignatureError> {
        let (_, key_bits) = der::parse_spki(spki)
            .map_err(|e| bad_key(path, format!("malformed public key: {}", e.0)))?;
        let algorithm = match algorithm {
            KeyAlgorithm::Rsa { .. } => {
                let bits = rsa_modulus_bits(key_bits)
                    .ok_or_else(|| bad_key(path, "malformed RSA public key"))?;
                if !(2048..=8192).contains(&bits) {
                    return Err(bad_key(
                        path,
                        format!("RSA key of {bits} bits: hoist accepts 2048 to 8192 bits"),
                    ));
                }
                KeyAlgorithm::Rsa { bits }
            }
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 | KeyAlgorithm::EcdsaP521 => {
                // Go (and so Yoke) only reads uncompressed points, and fingerprints them.
                if key_bits.first() != Some(&0x04) {
                    return Err(bad_key(
                        path,
                        "compressed EC public keys are not supported (Yoke cannot read them either): re-export with `openssl ec -pubin -in KEY -conv_form uncompressed -out PUBLIC.pem`",
                    ));
                }
                algorithm
            }
            KeyAlgorithm::Ed25519 => algorithm,
        };
        Ok(VerifyingKey {
            algorithm,
            fingerprint: hex::encode(digest::digest(&digest::SHA256, key_bits).as_ref()),
            spki: spki.to_vec(),
        })
    }

    /// Yoke's fingerprint: hex SHA-256 of the SubjectPublicKey BIT STRING bytes.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The canonical SubjectPublicKeyInfo DER of the key.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// Verifies `signature` over the module `digest` (SHA-256 of the module without its
    /// signature section). Returns false when it does not verify.
    pub(crate) fn verify_digest(&self, digest: &Digest, signature: &[u8]) -> bool {
        match self.algorithm {
            KeyAlgorithm::Ed25519 => sig::UnparsedPublicKey::new(&sig::ED25519, &self.spki)
                .verify(digest.as_ref(), signature)
                .is_ok(),
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 | KeyAlgorithm::EcdsaP521 => {
                let alg: &'static sig::EcdsaVerificationAlgorithm = match self.algorithm {
                    KeyAlgorithm::EcdsaP384 => &sig::ECDSA_P384_SHA256_ASN1,
                    KeyAlgorithm::EcdsaP521 => &sig::ECDSA_P521_SHA256_ASN1,
                    _ => &sig::ECDSA_P256_SHA256_ASN1,
                };
                sig::UnparsedPublicKey::new(alg, &self.spki)
                    .verify_digest(digest, signature)
                    .is_ok()
            }
            KeyAlgorithm::Rsa { bits } => super::pss::verify(&self.spki, bits, digest, signature),
        }
    }
}

/// Reads the modulus size of a PKCS#1 RSAPublicKey.
fn rsa_modulus_bits(pkcs1: &[u8]) -> Option<usize> {
    let mut outer = der::Reader::new(pkcs1);
    let seq = outer.read(der::TAG_SEQUENCE, "RSAPublicKey").ok()?;
    let mut r = der::Reader::new(seq);
    let n = r.read(der::TAG_INTEGER, "modulus").ok()?;
    let n = n.get(n.iter().position(|b| *b != 0)?..)?;
    let top = n.first()?;
    Some((n.len() - 1) * 8 + (8 - top.leading_zeros() as usize))
}

/// A set of verification keys, indexed by fingerprint.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<(VerifyingKey, Option<PathBuf>)>,
}

impl KeySet {
    /// An empty set.
    pub fn new() -> KeySet {
        KeySet::default()
    }

    /// Loads a key file, or every `*.pem` file under a directory (recursively, sorted by
    /// path; symlinked directories are not followed). Like Yoke, any `*.pem` that is not a
    /// key is an error. A directory without keys is an error too.
    pub fn load(path: &Path) -> Result<KeySet, SignatureError> {
        let mut set = KeySet::new();
        set.add_path(path)?;
        Ok(set)
    }

    /// Adds the key(s) at `path` (file or directory, see [`KeySet::load`]).
    pub fn add_path(&mut self, path: &Path) -> Result<(), SignatureError> {
        let meta = std::fs::metadata(path).map_err(|error| SignatureError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        if meta.is_dir() {
            let before = self.keys.len();
            self.add_dir(path, 0)?;
            if self.keys.len() == before {
                return Err(bad_key(
                    Some(path),
                    "the directory holds no *.pem key files",
                ));
            }
            Ok(())
        } else {
            let key = VerifyingKey::from_pem_file(path)?;
            self.insert(key, Some(path.to_path_buf()));
            Ok(())
        }
    }

    fn add_dir(&mut self, dir: &Path, depth: usize) -> Result<(), SignatureError> {
        if depth > MAX_DIR_DEPTH {
            return Err(bad_key(
                Some(dir),
                format!("key directories nest deeper than {MAX_DIR_DEPTH} levels"),
            ));
        }
        let io = |error| SignatureError::Io {
            path: dir.to_path_buf(),
            error,
        };
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let file_type = entry.file_type().map_err(io)?;
            entries.push((entry.path(), file_type));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, file_type) in entries {
            if file_type.is_dir() {
                self.add_dir(&path, depth + 1)?;
            } else if path.extension().is_some_and(|e| e == "pem") {
                // Regular files and symlinks to files; a symlink to a directory is skipped.
                if std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                    continue;
                }
                let key = VerifyingKey::from_pem_file(&path)?;
                self.insert(key, Some(path));
            }
        }
        Ok(())
    }

    /// Adds one key; `source` names where it came from (for messages). A key already in the
    /// set (same fingerprint) is kept once, with its first source.
    pub fn insert(&mut self, key: VerifyingKey, source: Option<PathBuf>) {
        if self.get(key.fingerprint()).is_none() {
            self.keys.push((key, source));
        }
    }

    /// The key with this fingerprint, and where it came from.
    pub fn get(&self, fingerprint: &str) -> Option<(&VerifyingKey, Option<&Path>)> {
        self.keys
            .iter()
            .find(|(k, _)| k.fingerprint() == fingerprint)
            .map(|(k, p)| (k, p.as_deref()))
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys and their sources.
    pub fn iter(&self) -> impl Iterator<Item = (&VerifyingKey, Option<&Path>)> {
        self.keys.iter().map(|(k, p)| (k, p.as_deref()))
    }
}
