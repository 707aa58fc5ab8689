//! Verification keys and signature checks, with messages that say what to do.

use crate::ModuleError;
use hoist_provenance::signature::{self, KeySet, SignatureError, Verified};
use std::path::PathBuf;

/// Loads every verification key named (PEM files, or directories of `*.pem`).
pub fn load_keys(paths: &[PathBuf]) -> Result<KeySet, ModuleError> {
    let mut keys = KeySet::new();
    for path in paths {
        keys.add_path(path).map_err(|source| ModuleError::Keys {
            path: path.clone(),
            source,
        })?;
    }
    Ok(keys)
}

/// Verifies `module` (named `location` in messages) against `keys`.
pub fn verify_module(
    module: &[u8],
    keys: &KeySet,
    location: &str,
) -> Result<Verified, ModuleError> {
    signature::verify(module, keys).map_err(|source| {
        let hint = match &source {
            SignatureError::Unsigned => {
                "only signed modules are accepted with --verify/--key: sign it with `hoist sign --key PRIVATE.pem MODULE` (or `yoke sign`)"
            }
            SignatureError::UnknownKey { .. } => {
                "get the signer's public key and pass it with --key (a file or a directory of *.pem)"
            }
            SignatureError::BadSignature { .. } => {
                "do not run this module: fetch it again from its publisher and re-check, or ask them to re-sign it"
            }
            _ => {
                "the module or its signature section is damaged: fetch or rebuild it, then re-sign it"
            }
        };
        ModuleError::Signature {
            location: location.to_string(),
            hint,
            source,
        }
    })
}
