//! Modules for the controller: location -> allow list -> bytes (path, file://, http(s)://,
//! oci://) -> checksum (explicit or inferred) -> signature -> compiled code (memory, then the
//! compiled-module cache on disk shared with the CLI).
//!
//! Unlike Yoke, signatures are checked for allow-listed modules too when keys are
//! configured, and a location is fetched again on every use (OCI tags are re-resolved
//! through hoist-oci's digest cache; files are re-read) instead of being trusted for the
//! life of the process; only compiled code is kept, keyed by the module's SHA-256.

use hoist_provenance::allow::AllowList;
use hoist_provenance::checksum::Sha256Digest;
use hoist_provenance::signature::KeySet;
use hoist_runtime::{CacheStatus, Compiler, FlightEngine, LoadedModule, ModuleCache};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a module cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModuleError {
    /// The URL matches no allow-list pattern (terminal: retrying cannot help).
    #[error(
        "module {url:?} not allowed: it matches none of the allowed patterns ({patterns}); add a pattern to --module-allow-list / MODULE_ALLOW_LIST"
    )]
    NotAllowed {
        /// The module URL.
        url: String,
        /// The configured patterns.
        patterns: String,
    },
    /// Fetching, checksum, signature or compilation failed.
    #[error("{0}")]
    Failed(String),
}

impl ModuleError {
    /// Whether retrying may help.
    pub fn is_terminal(&self) -> bool {
        matches!(self, ModuleError::NotAllowed { .. })
    }
}

/// Settings of the module pipeline.
#[derive(Debug, Clone, Default)]
pub struct ModuleSettings {
    /// Allow-list globs (`*` within one `/` segment); empty allows everything.
    pub allow: Vec<String>,
    /// PEM public keys; when any, every module must be signed by one.
    pub verification_keys: Vec<String>,
    /// Compiled-module cache directory (`None`: no disk cache).
    pub cache_dir: Option<PathBuf>,
    /// OCI download cache directory.
    pub oci_cache_dir: Option<PathBuf>,
}

/// A module ready to run.
pub struct ReadyModule {
    /// URL recorded in release history (`file:///abs` for files).
    pub url: String,
    /// SHA-256 (hex).
    pub sha256: String,
    /// SHA-1 (hex), what Yoke records as `source-checksum`.
    pub sha1: String,
    /// Compiled code.
    pub loaded: LoadedModule,
}

impl std::fmt::Debug for ReadyModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadyModule")
            .field("url", &self.url)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// The controller's module pipeline, shared by every reconcile and webhook.
pub struct Modules {
    engine: FlightEngine,
    allow: AllowList,
    keys: Option<KeySet>,
    oci_cache_dir: Option<PathBuf>,
    compiled: Mutex<HashMap<String, wasmtime::Module>>,
    /// Per-digest compile locks, so concurrent instances compile a module once.
    compiling: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    stats: Mutex<ModuleStats>,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModuleStats {
    /// Loads answered from memory.
    pub memory_hits: u64,
    /// Loads answered from the disk cache.
    pub disk_hits: u64,
    /// Loads that compiled.
    pub compiles: u64,
}

struct OciPull {
    insecure: bool,
    cache_dir: Option<PathBuf>,
}

impl hoist_source::OciFetcher for OciPull {
    fn fetch(&self, reference: &str) -> Result<(Vec<u8>, String), String> {
        let options = hoist_oci::PullOptions {
            insecure: self.insecure,
            cache_dir: self.cache_dir.clone(),
            ..hoist_oci::PullOptions::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime for the OCI pull: {e}"))?;
        let pulled = runtime
            .block_on(hoist_oci::pull_module(reference, &options))
            .map_err(|e| e.to_string())?;
        Ok((pulled.wasm, pulled.resolved))
    }
}

impl Modules {
    /// The pipeline for `settings`.
    pub fn new(settings: &ModuleSettings) -> Result<Modules, ModuleError> {
        let allow = AllowList::new(settings.allow.iter().filter(|p| !p.is_empty()))
            .map_err(|e| ModuleError::Failed(format!("invalid module allow list: {e}")))?;
        let keys = if settings.verification_keys.is_empty() {
            None
        } else {
            let mut set = KeySet::new();
            for (i, pem) in settings.verification_keys.iter().enumerate() {
                let key = hoist_provenance::signature::VerifyingKey::from_pem(pem.as_bytes())
                    .map_err(|e| {
                        ModuleError::Failed(format!("module verification key #{}: {e}", i + 1))
                    })?;
                set.insert(key, None);
            }
            Some(set)
        };
        let compiler = Compiler::from_env().map_err(|e| ModuleError::Failed(e.to_string()))?;
        let engine = FlightEngine::new(compiler, settings.cache_dir.clone().map(ModuleCache::new))
            .map_err(|e| ModuleError::Failed(e.to_string()))?;
        Ok(Modules {
            engine,
            allow,
            keys,
            oci_cache_dir: settings.oci_cache_dir.clone(),
            compiled: Mutex::new(HashMap::new()),
            compiling: Mutex::new(HashMap::new()),
            stats: Mutex::new(ModuleStats::default()),
        })
    }

    /// The engine modules run on.
    pub fn engine(&self) -> &FlightEngine {
        &self.engine
    }

    /// Counters.
    pub fn stats(&self) -> ModuleStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// Refuses `location` when the allow list does not cover it.
    pub fn check_allowed(&self, location: &str) -> Result<(), ModuleError> {
        if self.allow.is_empty() {
            return Ok(());
        }
        let url = hoist_source::canonical_url(location);
        match self.allow.check(&url) {
            Ok(_) => Ok(()),
            Err(_) => Err(ModuleError::NotAllowed {
                url: location.to_string(),
                patterns: self.allow.patterns().join(", "),
            }),
        }
    }

    /// Loads `location` (blocking: call from a blocking thread). `checksum` is an explicit
    /// sha256 hex (empty: none).
    pub fn load(
        &self,
        location: &str,
        checksum: &str,
        insecure: bool,
    ) -> Result<ReadyModule, ModuleError> {
        self.check_allowed(location)?;
        let explicit = match checksum.trim() {
            "" => None,
            hex => Some(Sha256Digest::from_hex(hex).map_err(|e| {
                ModuleError::Failed(format!("invalid checksum for {location}: {e}"))
            })?),
        };
        let oci = OciPull {
            insecure,
            cache_dir: self.oci_cache_dir.clone(),
        };
        let fetched = hoist_source::fetch(
            location,
            explicit.as_ref(),
            &hoist_source::SourceOptions::default(),
            Some(&oci),
        )
        .map_err(|e| ModuleError::Failed(format!("cannot use module {location}: {e}")))?;
        if let Some(keys) = &self.keys {
            hoist_provenance::signature::verify(&fetched.wasm, keys).map_err(|e| {
                ModuleError::Failed(format!(
                    "module {location} failed signature verification: {e}"
                ))
            })?;
        }
        let sha256 = fetched.sha256.to_hex();
        let sha1 = hoist_release::state::sha1_hex(&fetched.wasm);
        let loaded = self.compile(&fetched.wasm, &sha256, location)?;
        Ok(ReadyModule {
            url: fetched.url,
            sha256,
            sha1,
            loaded,
        })
    }

    fn compile(&self, wasm: &[u8], sha256: &str, what: &str) -> Result<LoadedModule, ModuleError> {
        let hit = |modules: &Modules| {
            let module = modules.compiled.lock().ok()?.get(sha256).cloned()?;
            if let Ok(mut s) = modules.stats.lock() {
                s.memory_hits += 1;
            }
            Some(LoadedModule {
                module,
                cache_status: CacheStatus::Hit,
                load_time: Duration::ZERO,
                compiler: modules.engine.compiler(),
            })
        };
        if let Some(loaded) = hit(self) {
            return Ok(loaded);
        }
        let lock = {
            let mut compiling = self
                .compiling
                .lock()
                .map_err(|_| ModuleError::Failed("module compile lock poisoned".into()))?;
            compiling
                .entry(sha256.to_string())
                .or_insert_with(|| Arc::new(Mutex::new(())))
                .clone()
        };
        let _guard = lock
            .lock()
            .map_err(|_| ModuleError::Failed("module compile lock poisoned".into()))?;
        if let Some(loaded) = hit(self) {
            return Ok(loaded);
        }
        let started = Instant::now();
        let loaded = self
            .engine
            .load(wasm, sha256, what)
            .map_err(|e| ModuleError::Failed(e.to_string()))?;
        if let Ok(mut s) = self.stats.lock() {
            if loaded.cache_status == CacheStatus::Hit {
                s.disk_hits += 1;
            } else {
                s.compiles += 1;
            }
        }
        tracing::info!(module = what, sha256, cache = %loaded.cache_status, ms = started.elapsed().as_millis() as u64, "module ready");
        if let Ok(mut compiled) = self.compiled.lock() {
            compiled.insert(sha256.to_string(), loaded.module.clone());
        }
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_refuses_outside_urls_terminally() {
        let modules = Modules::new(&ModuleSettings {
            allow: vec!["oci://registry:80/*".into()],
            ..ModuleSettings::default()
        })
        .unwrap();
        assert!(modules.check_allowed("oci://registry:80/flight").is_ok());
        let err = modules.check_allowed("oci://registry:80/a/b").unwrap_err();
        assert!(err.is_terminal());
        assert!(err.to_string().contains("not allowed"), "{err}");
        let err = modules
            .load("https://example.invalid/x.wasm", "", false)
            .unwrap_err();
        assert!(err.is_terminal());
    }

    #[test]
    fn bad_keys_and_checksums_are_explained() {
        let err = Modules::new(&ModuleSettings {
            verification_keys: vec!["not a pem".into()],
            ..ModuleSettings::default()
        })
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("module verification key #1"),
            "{err}"
        );
        let modules = Modules::new(&ModuleSettings::default()).unwrap();
        let err = modules
            .load("/nonexistent/flight.wasm", "zz", false)
            .unwrap_err();
        assert!(err.to_string().contains("invalid checksum"), "{err}");
        let err = modules
            .load("/nonexistent/flight.wasm", "", false)
            .unwrap_err();
        assert!(
            !err.is_terminal() && err.to_string().contains("/nonexistent/flight.wasm"),
            "{err}"
        );
    }
}
