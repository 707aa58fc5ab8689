//! `oci://` module sources, on top of `hoist-oci`.

use hoist_oci::PullOptions;
use hoist_source::OciFetcher;
use std::path::PathBuf;

/// Pulls modules from OCI registries (Yoke, Kubewarden and kpt layouts), with the download
/// cache under hoist's cache root.
#[derive(Debug, Clone, Default)]
pub struct OciSource {
    /// Plain http for any registry (loopback registries always are).
    pub insecure: bool,
    /// Answer from the download cache only.
    pub offline: bool,
    /// The download cache; `None` uses [`crate::default_oci_cache_dir`].
    pub cache_dir: Option<PathBuf>,
}

impl OciFetcher for OciSource {
    fn fetch(&self, reference: &str) -> Result<(Vec<u8>, String), String> {
        let options = PullOptions {
            insecure: self.insecure,
            offline: self.offline,
            cache_dir: self.cache_dir.clone().or_else(crate::default_oci_cache_dir),
            ..PullOptions::default()
        };
        let pull = hoist_oci::pull_module(reference, &options);
        // Callers may already be inside a Tokio runtime (the controller); a pull then runs on
        // a runtime of its own in a scoped thread, since blocking inside async code panics.
        let pulled = if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|scope| {
                scope
                    .spawn(|| block_on(pull))
                    .join()
                    .unwrap_or_else(|_| Err("the OCI pull thread panicked".to_string()))
            })
        } else {
            block_on(pull)
        }?;
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

fn block_on<F, E>(future: F) -> Result<hoist_oci::PulledModule, String>
where
    F: std::future::Future<Output = Result<hoist_oci::PulledModule, E>>,
    E: std::fmt::Display,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime for the OCI pull: {e}"))?;
    runtime.block_on(future).map_err(|e| e.to_string())
}
