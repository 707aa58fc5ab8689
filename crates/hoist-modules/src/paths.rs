//! Where hoist keeps its caches: one root, shared by the CLI and the controller.

use std::path::PathBuf;

/// hoist's cache root: `$HOIST_CACHE_DIR`, else `<user cache dir>/hoist` (defined once, in
/// `hoist-runtime`, which owns the compiled-module cache).
pub fn cache_root() -> Option<PathBuf> {
    hoist_runtime::hoist_cache_root()
}

/// The compiled-module cache: `<cache root>/modules`.
pub fn default_module_cache_dir() -> Option<PathBuf> {
    hoist_runtime::ModuleCache::default_dir()
}

/// The OCI download cache: `<cache root>/oci`.
pub fn default_oci_cache_dir() -> Option<PathBuf> {
    cache_root().map(|root| root.join("oci"))
}
