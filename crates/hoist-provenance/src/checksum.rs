//! SHA-256 checksums of modules: explicit (`--checksum`) and inferred from names.
//!
//! Yoke infers a module's expected digest from where it comes from, and so does hoist:
//!
//! - an OCI tag `sha256_<64 hex>` (`oci://registry/repo:sha256_01ba…`);
//! - for paths and URLs, the file's base name up to its first `.` either starts with
//!   `sha256_<64 hex>` or contains `_sha256_<64 hex>`
//!   (`https://host/my_module_sha256_01ba….wasm`, `./main_sha256_01ba….wasm.gz`).
//!
//! The digest is always of the *decompressed* module.

use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest([u8; 32]);

/// A string that is not a SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{input:?} is not a SHA-256 checksum: expected 64 hexadecimal characters (optionally prefixed with `sha256:`)"
)]
pub struct DigestParseError {
    /// The rejected input.
    pub input: String,
}

/// A module whose digest is not the expected one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "checksum mismatch for {location}: expected sha256 {expected} ({origin}), got {actual}; the module is not the one you meant, so nothing was run"
)]
pub struct ChecksumMismatch {
    /// The module's location.
    pub location: String,
    /// The digest it should have had.
    pub expected: Sha256Digest,
    /// The digest it has.
    pub actual: Sha256Digest,
    /// Where the expectation came from (`--checksum`, or the name it was inferred from).
    pub origin: String,
}

impl Sha256Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Sha256Digest(Sha256::digest(bytes).into())
    }

    /// Parses 64 hex characters, optionally prefixed with `sha256:` (case-insensitive).
    pub fn from_hex(input: &str) -> Result<Self, DigestParseError> {
        let trimmed = input.trim();
        let hex_part = trimmed
            .strip_prefix("sha256:")
            .or_else(|| trimmed.strip_prefix("SHA256:"))
            .unwrap_or(trimmed);
        let mut bytes = [0u8; 32];
        if hex_part.len() != 64 || hex::decode_to_slice(hex_part, &mut bytes).is_err() {
            return Err(DigestParseError {
                input: input.to_string(),
            });
        }
        Ok(Sha256Digest(bytes))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl FromStr for Sha256Digest {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Sha256Digest::from_hex(s)
    }
}

/// The digest a module location promises by its name, if any (see the module docs).
///
/// `location` is what the user typed: a path, a `file://`, `http(s)://` or `oci://` URL.
pub fn infer_from_location(location: &str) -> Option<Sha256Digest> {
    if let Some(reference) = location.strip_prefix("oci://") {
        // The tag is after the last `:` of the last path segment; a digest ref (`@sha256:`)
        // pins content by itself and is verified by the registry client.
        let last_segment = reference.rsplit('/').next()?;
        let without_digest = last_segment.split('@').next()?;
        let (_, tag) = without_digest.rsplit_once(':')?;
        let hex = tag.strip_prefix("sha256_")?;
        return (hex.len() == 64).then(|| Sha256Digest::from_hex(hex).ok())?;
    }

    // For URLs, only the path counts: not the query or fragment.
    let path = match location.split_once("://") {
        Some((_, rest)) => {
            let rest = rest.split(['?', '#']).next().unwrap_or(rest);
            rest.split_once('/').map(|(_, path)| path).unwrap_or("")
        }
        None => location,
    };
    let base = path.rsplit(['/', '\\']).next().unwrap_or(path);
    let stem = base.split('.').next().unwrap_or(base);
    let hex = if let Some(rest) = stem.strip_prefix("sha256_") {
        rest
    } else {
        stem.split_once("_sha256_")?.1
    };
    let hex = hex.get(..64)?;
    Sha256Digest::from_hex(hex).ok()
}

/// Checks `module` against an explicit checksum and the one inferred from `location`.
///
/// Both are checked when both exist: a name that promises one digest and a flag that
/// promises another cannot both be right.
pub fn verify(
    module: &[u8],
    location: &str,
    explicit: Option<&Sha256Digest>,
) -> Result<Sha256Digest, ChecksumMismatch> {
    verify_digest(Sha256Digest::of(module), location, explicit)
}

/// Like [`verify`], for a module whose digest is already known.
pub fn verify_digest(
    actual: Sha256Digest,
    location: &str,
    explicit: Option<&Sha256Digest>,
) -> Result<Sha256Digest, ChecksumMismatch> {
    if let Some(expected) = explicit
        && *expected != actual
    {
        return Err(ChecksumMismatch {
            location: location.to_string(),
            expected: *expected,
            actual,
            origin: "from --checksum".to_string(),
        });
    }
    if let Some(expected) = infer_from_location(location)
        && expected != actual
    {
        return Err(ChecksumMismatch {
            location: location.to_string(),
            expected,
            actual,
            origin: "inferred from its sha256_ name".to_string(),
        });
    }
    Ok(actual)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "01ba4719c80b6fe911b091a7c05124b64eeece964e09c058ef8f9805daca546b";

    #[test]
    fn parses_and_prints_hex() {
        let d = Sha256Digest::from_hex(HEX).unwrap();
        assert_eq!(d.to_string(), HEX);
        assert_eq!(Sha256Digest::from_hex(&format!("sha256:{HEX}")).unwrap(), d);
        assert_eq!(Sha256Digest::from_hex(&HEX.to_uppercase()).unwrap(), d);
        for bad in [
            "",
            "abc",
            &HEX[1..],
            &format!("{HEX}0"),
            &HEX.replace('a', "g"),
        ] {
            assert!(Sha256Digest::from_hex(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn infers_from_the_documented_forms() {
        let d = Sha256Digest::from_hex(HEX).unwrap();
        for loc in [
            format!("oci://registry/repo/module:sha256_{HEX}"),
            format!("oci://127.0.0.1:5000/repo/module:sha256_{HEX}"),
            format!("https://my-domain.com/my_module_sha256_{HEX}.wasm"),
            format!("https://my-domain.com/m/sha256_{HEX}.wasm?x=1"),
            format!("./main_sha256_{HEX}.wasm.gz"),
            format!("sha256_{HEX}.wasm"),
            format!("file:///tmp/x/a_sha256_{HEX}.wasm"),
            format!("/abs/dir.v2/a_sha256_{HEX}"),
        ] {
            assert_eq!(infer_from_location(&loc), Some(d), "{loc}");
        }
    }

    #[test]
    fn does_not_infer_from_lookalikes() {
        for loc in [
            "oci://registry/repo/module:v1.2.3".to_string(),
            "oci://registry/repo/module:latest".to_string(),
            "oci://127.0.0.1:5000/repo".to_string(),
            format!("oci://registry/sha256_{HEX}/module:v1"),
            "./main.wasm".to_string(),
            format!("./mainsha256_{HEX}.wasm"),
            // after the first dot does not count
            format!("./main.sha256_{HEX}.wasm"),
            format!("./x_sha256_{}.wasm", &HEX[..63]),
            // the directory does not count
            format!("/a_sha256_{HEX}/main.wasm"),
            // nor the query string of a URL
            format!("https://h/main.wasm?a_sha256_{HEX}"),
            format!("https://h_sha256_{HEX}/main.wasm"),
        ] {
            assert_eq!(infer_from_location(&loc), None, "{loc}");
        }
    }

    #[test]
    fn verify_checks_explicit_and_inferred() {
        let module = b"\0asm\x01\0\0\0";
        let actual = Sha256Digest::of(module);
        assert_eq!(verify(module, "./m.wasm", None).unwrap(), actual);
        assert_eq!(verify(module, "./m.wasm", Some(&actual)).unwrap(), actual);
        let other = Sha256Digest::from_hex(HEX).unwrap();
        let err = verify(module, "./m.wasm", Some(&other)).unwrap_err();
        assert!(err.to_string().contains("--checksum"), "{err}");
        assert!(err.to_string().contains(HEX));
        let err = verify(module, &format!("./m_sha256_{HEX}.wasm"), Some(&actual)).unwrap_err();
        assert!(err.to_string().contains("inferred"), "{err}");
        let named = format!("./m_sha256_{actual}.wasm");
        assert_eq!(verify(module, &named, None).unwrap(), actual);
    }
}
