//! On-disk download cache, keyed by digest.
//!
//! Layout under the cache directory:
//! - `blobs/sha256/<hex>`: a decompressed module whose sha256 is `<hex>` (content-addressed;
//!   re-hashed on every read, discarded when it does not match);
//! - `manifests/sha256/<hex>.json`: what the manifest (or index) `sha256:<hex>` resolved to:
//!   format, the image manifest actually used, the module's digest;
//! - `refs/<sha256 of "registry/repo:tag">.json`: the last digest a tag resolved to (only used
//!   offline; online, tags are re-resolved on every pull).
//!
//! Every write goes to a temporary file in the same directory, then is renamed into place.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::media::ModuleFormat;
use crate::reference::parse_digest;

/// What a manifest digest resolved to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Record {
    pub format: ModuleFormat,
    /// Digest of the image manifest actually used (differs from the key for kpt indexes).
    pub manifest: String,
    /// `sha256:<hex>` of the decompressed module.
    pub module: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct RefEntry {
    reference: String,
    digest: String,
}

pub(crate) struct Cache {
    root: PathBuf,
}

fn hex_of(digest: &str) -> Option<&str> {
    parse_digest(digest).ok()?;
    digest.strip_prefix("sha256:")
}

impl Cache {
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    fn module_path(&self, digest: &str) -> Option<PathBuf> {
        Some(self.root.join("blobs").join("sha256").join(hex_of(digest)?))
    }

    fn record_path(&self, digest: &str) -> Option<PathBuf> {
        Some(
            self.root
                .join("manifests")
                .join("sha256")
                .join(format!("{}.json", hex_of(digest)?)),
        )
    }

    fn ref_path(&self, name_and_tag: &str) -> PathBuf {
        let key = hex::encode(Sha256::digest(name_and_tag.as_bytes()));
        self.root.join("refs").join(format!("{key}.json"))
    }

    /// The module a manifest digest resolved to, if cached and intact.
    pub(crate) fn lookup(&self, digest: &str) -> Option<(Record, Vec<u8>)> {
        let rpath = self.record_path(digest)?;
        let raw = std::fs::read(&rpath).ok()?;
        let record: Record = match serde_json::from_slice(&raw) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(path = %rpath.display(), error = %e, "discarding corrupt cache record");
                let _ = std::fs::remove_file(&rpath);
                return None;
            }
        };
        let mpath = self.module_path(&record.module)?;
        let module = std::fs::read(&mpath).ok()?;
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&module)));
        if actual != record.module {
            tracing::warn!(path = %mpath.display(), expected = %record.module, %actual, "discarding corrupt cached module");
            let _ = std::fs::remove_file(&mpath);
            return None;
        }
        Some((record, module))
    }

    /// Stores a module and what `digest` resolved to. Failures are logged, not fatal.
    pub(crate) fn store(&self, digest: &str, record: &Record, module: &[u8]) {
        let (Some(mpath), Some(rpath)) =
            (self.module_path(&record.module), self.record_path(digest))
        else {
            return;
        };
        let res = write_atomic(&mpath, module).and_then(|()| {
            let json = serde_json::to_vec(record).unwrap_or_default();
            write_atomic(&rpath, &json)
        });
        if let Err(e) = res {
            tracing::warn!(dir = %self.root.display(), error = %e, "cannot write the OCI module cache");
        }
    }

    /// Remembers that `name_and_tag` last resolved to `digest`.
    pub(crate) fn record_ref(&self, name_and_tag: &str, digest: &str) {
        let entry = RefEntry {
            reference: name_and_tag.into(),
            digest: digest.into(),
        };
        let json = serde_json::to_vec(&entry).unwrap_or_default();
        if let Err(e) = write_atomic(&self.ref_path(name_and_tag), &json) {
            tracing::warn!(dir = %self.root.display(), error = %e, "cannot write the OCI module cache");
        }
    }

    /// The digest `name_and_tag` last resolved to.
    pub(crate) fn resolve_ref(&self, name_and_tag: &str) -> Option<String> {
        let raw = std::fs::read(self.ref_path(name_and_tag)).ok()?;
        let entry: RefEntry = serde_json::from_slice(&raw).ok()?;
        (entry.reference == name_and_tag && parse_digest(&entry.digest).is_ok())
            .then_some(entry.digest)
    }
}

/// Writes `data` to `path` atomically (temporary file in the same directory, then rename).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_lookup_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let module = b"\0asm\x01\0\0\0".to_vec();
        let mdigest = format!("sha256:{}", hex::encode(Sha256::digest(&module)));
        let top = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let rec = Record {
            format: ModuleFormat::Kpt,
            manifest: top.into(),
            module: mdigest.clone(),
        };
        assert!(cache.lookup(top).is_none());
        cache.store(top, &rec, &module);
        let (r, m) = cache.lookup(top).unwrap();
        assert_eq!(r, rec);
        assert_eq!(m, module);

        cache.record_ref("reg/x:latest", top);
        assert_eq!(cache.resolve_ref("reg/x:latest").as_deref(), Some(top));
        assert_eq!(cache.resolve_ref("reg/x:other"), None);

        // corrupt the module: it is discarded
        let path = cache.module_path(&mdigest).unwrap();
        std::fs::write(&path, b"tampered").unwrap();
        assert!(cache.lookup(top).is_none());
        assert!(!path.exists());

        // corrupt record
        cache.store(top, &rec, &module);
        std::fs::write(cache.record_path(top).unwrap(), b"{not json").unwrap();
        assert!(cache.lookup(top).is_none());
        // bad digests never become paths
        assert!(cache.lookup("sha256:../../x").is_none());
    }
}
