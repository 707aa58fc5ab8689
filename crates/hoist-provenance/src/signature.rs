//! Yoke-compatible module signatures, stored inside the module.
//!
//! # Format (Yoke's, byte for byte)
//! - The signature is a custom section named [`SECTION_NAME`] (`yoke.schematics:signature`).
//!   hoist appends it at the end of the module; on verification it may sit anywhere.
//! - Its data is the JSON payload [`SignaturePayload`]:
//!   `{"Fingerprint":"<hex>","Signature":"<base64>"}` where `Fingerprint` is the hex SHA-256
//!   of the public key's SubjectPublicKey BIT STRING bytes (the PKCS#1 `RSAPublicKey` for RSA,
//!   the uncompressed point for ECDSA, the 32 raw bytes for Ed25519) and `Signature` is
//!   standard base64 with padding (Go's encoding of a `[]byte`).
//! - The signed value is `digest = SHA-256(module without the signature section)`:
//!   - RSA: RSASSA-PSS with SHA-256 over `digest` as the message hash. hoist signs with the
//!     largest salt (what Go's `rsa.SignPSS` does with nil options) and verifies with any salt
//!     length (Go's `PSSSaltLengthAuto`).
//!   - ECDSA (P-256, P-384, P-521): ASN.1 DER signature whose hash value is `digest` itself
//!     (Go's `ecdsa.SignASN1(rand, key, digest)`; no second hashing).
//!   - Ed25519: pure Ed25519 over the 32 bytes of `digest`.
//!
//! # Decisions where Yoke is silent or unsafe
//! - The section scanner ([`section`]) is bounds-checked; a malformed module is an error.
//! - Two signature sections: refused ([`SignatureError::MalformedSection`]) on verify and on
//!   sign, since which one counts would be ambiguous (Yoke silently uses the first).
//! - A signature section larger than [`MAX_SECTION_DATA`] (64 KiB; a real payload is under
//!   2 KiB even for RSA-8192) is refused before any JSON parsing.
//! - [`sign`] replaces an existing signature (Yoke's `sign -f`); refusing to re-sign without
//!   force is the CLI's job.
//! - Verification keys may be private keys (Yoke accepts them and uses the public half).

mod der;
mod keys;
mod pss;
pub mod section;

use std::path::PathBuf;

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use keys::{KeyAlgorithm, KeySet, SigningKey, VerifyingKey};
pub use section::SectionError;

/// Name of the custom section that carries the signature.
pub const SECTION_NAME: &str = "yoke.schematics:signature";

/// Largest accepted signature section data.
pub const MAX_SECTION_DATA: usize = 64 * 1024;

/// Why signing or verifying failed.
#[derive(Debug, Error)]
pub enum SignatureError {
    /// The module has no signature section.
    #[error(
        "the module is not signed (no `yoke.schematics:signature` section); sign it with `hoist sign --key PRIVATE.pem MODULE`"
    )]
    Unsigned,
    /// The module is signed by a key that is not in the verification set.
    #[error(
        "the module is signed by an unknown key (fingerprint {fingerprint}); none of the {known} verification key(s) given matches: pass the signer's public key"
    )]
    UnknownKey {
        /// Fingerprint named in the module's signature.
        fingerprint: String,
        /// How many keys were tried.
        known: usize,
    },
    /// The signature does not verify: the module changed after signing, or it is forged.
    #[error(
        "invalid signature: the module was modified after it was signed, or the signature is forged (signer key {fingerprint}{})",
        key_source.as_ref().map(|p| format!(", {}", p.display())).unwrap_or_default()
    )]
    BadSignature {
        /// Fingerprint of the key that was checked.
        fingerprint: String,
        /// Where that key came from.
        key_source: Option<PathBuf>,
    },
    /// The module's section framing is malformed.
    #[error("{0}")]
    MalformedModule(#[from] SectionError),
    /// The signature section is present but unusable.
    #[error("malformed signature section: {0}")]
    MalformedSection(String),
    /// A key could not be used.
    #[error(
        "bad key{}: {reason}",
        path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default()
    )]
    BadKey {
        /// The key file, when the key came from one.
        path: Option<PathBuf>,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The cryptographic library refused to sign.
    #[error("signing failed: {0}")]
    SigningFailed(String),
}

/// The JSON payload of the signature section, exactly as Yoke writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignaturePayload {
    /// Hex SHA-256 of the signer's SubjectPublicKey bytes.
    #[serde(rename = "Fingerprint")]
    pub fingerprint: String,
    /// The raw signature (base64 in JSON).
    #[serde(rename = "Signature", with = "base64_std")]
    pub signature: Vec<u8>,
}

mod base64_std {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        // Go's decoder skips \r and \n inside base64.
        let cleaned: String = text.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        base64::engine::general_purpose::STANDARD
            .decode(cleaned)
            .map_err(serde::de::Error::custom)
    }
}

/// What a successful verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Fingerprint of the key that verified the signature.
    pub fingerprint: String,
    /// That key's algorithm.
    pub algorithm: KeyAlgorithm,
    /// The file the key came from, when it came from one.
    pub key_source: Option<PathBuf>,
}

/// A module split around its signature section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stripped<'a> {
    /// The module without the signature section: the bytes that are hashed and signed.
    pub unsigned: Vec<u8>,
    /// The signature section's data, if the module had one.
    pub signature_data: Option<&'a [u8]>,
}

/// Removes the signature section (if any) and returns both parts.
///
/// Errors: malformed framing, two signature sections, or a section over
/// [`MAX_SECTION_DATA`].
pub fn strip_signature(module: &[u8]) -> Result<Stripped<'_>, SignatureError> {
    let sections = section::scan(module)?;
    let mut found: Option<(std::ops::Range<usize>, &[u8])> = None;
    for s in &sections {
        let Some(custom) = &s.custom else { continue };
        if custom.name != SECTION_NAME.as_bytes() {
            continue;
        }
        if found.is_some() {
            return Err(SignatureError::MalformedSection(
                "the module has two `yoke.schematics:signature` sections; which one counts would be ambiguous, so it is refused: rebuild the module or re-sign it with `hoist sign -f`"
                    .into(),
            ));
        }
        if custom.data.len() > MAX_SECTION_DATA {
            return Err(SignatureError::MalformedSection(format!(
                "the signature section holds {} bytes, more than the {MAX_SECTION_DATA} bytes any real signature needs",
                custom.data.len()
            )));
        }
        found = Some((s.range.clone(), custom.data));
    }
    Ok(match found {
        None => Stripped {
            unsigned: module.to_vec(),
            signature_data: None,
        },
        Some((range, data)) => {
            // `scan` returns ranges inside the module; checked anyway, never trusted.
            let (Some(before), Some(after)) = (module.get(..range.start), module.get(range.end..))
            else {
                return Err(SignatureError::MalformedSection(format!(
                    "the signature section's range {range:?} lies outside the {}-byte module",
                    module.len()
                )));
            };
            let mut unsigned = Vec::with_capacity(before.len() + after.len());
            unsigned.extend_from_slice(before);
            unsigned.extend_from_slice(after);
            Stripped {
                unsigned,
                signature_data: Some(data),
            }
        }
    })
}

/// Reads the signature payload without verifying it (`None` when unsigned).
pub fn read_signature(module: &[u8]) -> Result<Option<SignaturePayload>, SignatureError> {
    let stripped = strip_signature(module)?;
    stripped.signature_data.map(parse_payload).transpose()
}

fn parse_payload(data: &[u8]) -> Result<SignaturePayload, SignatureError> {
    let payload: SignaturePayload = serde_json::from_slice(data).map_err(|e| {
        SignatureError::MalformedSection(format!(
            "the payload is not Yoke's {{\"Fingerprint\",\"Signature\"}} JSON: {e}"
        ))
    })?;
    if payload.signature.is_empty() {
        return Err(SignatureError::MalformedSection(
            "the payload's Signature is empty".into(),
        ));
    }
    Ok(payload)
}

/// SHA-256 of the module without its signature section: the value that is signed.
pub fn signed_digest(module: &[u8]) -> Result<[u8; 32], SignatureError> {
    let stripped = strip_signature(module)?;
    let d = digest::digest(&digest::SHA256, &stripped.unsigned);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    Ok(out)
}

/// Signs `module` and returns the signed module: the module without any previous signature,
/// with a new signature section appended.
pub fn sign(module: &[u8], key: &SigningKey) -> Result<Vec<u8>, SignatureError> {
    let stripped = strip_signature(module)?;
    let d = digest::digest(&digest::SHA256, &stripped.unsigned);
    let signature = key.sign_digest(&d)?;
    let payload = SignaturePayload {
        fingerprint: key.fingerprint().to_string(),
        signature,
    };
    let data = serde_json::to_vec(&payload)
        .map_err(|e| SignatureError::SigningFailed(format!("cannot encode the payload: {e}")))?;
    Ok(section::append_custom_section(
        &stripped.unsigned,
        SECTION_NAME.as_bytes(),
        &data,
    )?)
}

/// Verifies `module`'s signature against `keys`.
pub fn verify(module: &[u8], keys: &KeySet) -> Result<Verified, SignatureError> {
    let stripped = strip_signature(module)?;
    let data = stripped.signature_data.ok_or(SignatureError::Unsigned)?;
    let payload = parse_payload(data)?;
    let Some((key, source)) = keys.get(&payload.fingerprint) else {
        return Err(SignatureError::UnknownKey {
            fingerprint: payload.fingerprint,
            known: keys.len(),
        });
    };
    let d = digest::digest(&digest::SHA256, &stripped.unsigned);
    if !key.verify_digest(&d, &payload.signature) {
        return Err(SignatureError::BadSignature {
            fingerprint: payload.fingerprint,
            key_source: source.map(|p| p.to_path_buf()),
        });
    }
    Ok(Verified {
        fingerprint: payload.fingerprint,
        algorithm: key.algorithm(),
        key_source: source.map(|p| p.to_path_buf()),
    })
}

#[cfg(test)]
mod tests;
