//! `oci://` module sources for the render pipeline, on top of `hoist-oci`.

use hoist_oci::PullOptions;
use hoist_source::OciFetcher;

/// Pulls modules from OCI registries with the download cache under hoist's cache dir.
pub struct OciSource {
    /// Plain http for any registry.
    pub insecure: bool,
    /// Answer from the download cache only.
    pub offline: bool,
}

impl OciFetcher for OciSource {
    fn fetch(&self, reference: &str) -> Result<(Vec<u8>, String), String> {
        let options = PullOptions {
            insecure: self.insecure,
            offline: self.offline,
            cache_dir: crate::cmd::oci::default_cache_dir(),
            ..PullOptions::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime for the OCI pull: {e}"))?;
        let pulled = runtime
            .block_on(hoist_oci::pull_module(reference, &options))
            .map_err(|e| e.to_string())?;
        tracing::info!(
            reference,
            resolved = %pulled.resolved,
            format = ?pulled.format,
            from_cache = pulled.from_cache,
            "pulled module"
        );
        Ok((pulled.wasm, pulled.resolved))
    }
}
