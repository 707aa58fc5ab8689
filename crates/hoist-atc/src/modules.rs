//! Modules for the controller, through the one module pipeline (`hoist_modules`): allow
//! list, source (path, `file://`, http(s), `oci://`), checksums, signatures, compiled-module
//! cache on disk (shared with the CLI) and, by default, Winch code only (see
//! [`controller_compiler`]); `HOIST_COMPILER=auto` turns on tiering with optimised code
//! produced by a background thread.
//!
//! Unlike Yoke, signatures are checked for allow-listed modules too when keys are
//! configured, and a location is fetched again on every use (OCI tags are re-resolved
//! through hoist-oci's digest cache; files are re-read) instead of being trusted for the
//! life of the process. Compiled code is not held per instance: every load maps the cached
//! code from disk (pages shared by every instance running the same module), so memory stays
//! bounded by the modules in use, not by the number of instances.
//!
//! An Airway's explicit `flightChecksum`/`converterChecksum` differs per Airway while the
//! pipeline is shared, so it is compared with the module's SHA-256 right after the pipeline
//! returns and before anything runs (the inferred `sha256_` checksums of a name, signatures
//! and the allow list are checked by the pipeline before compiling).

use hoist_modules::{
    BackgroundCompile, CompilerChoice, Digests, ModuleOptions, ModulePipeline, Sha256Digest,
};
use hoist_runtime::{CacheStatus, FlightEngine, LoadedModule};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Why a module cannot be used.
#[derive(Debug, thiserror::Error)]
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
    /// The URL cannot be matched against the allow list safely (terminal).
    #[error("module {url:?} not allowed: {reason}")]
    UnsafeUrl {
        /// The module URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The Airway's or Flight's explicit checksum is not a SHA-256.
    #[error("invalid checksum {checksum:?} for module {url}: {reason}")]
    BadChecksum {
        /// The module URL.
        url: String,
        /// The checksum as written.
        checksum: String,
        /// Why it is not one.
        reason: String,
    },
    /// The module is not the one the explicit checksum names.
    #[error("cannot verify module against expected checksum: {0}")]
    ChecksumMismatch(hoist_provenance::checksum::ChecksumMismatch),
    /// Fetching, an inferred checksum, a signature or compiling failed.
    #[error("cannot use module {url}: {source}")]
    Pipeline {
        /// The module URL.
        url: String,
        /// The pipeline's error.
        source: Box<hoist_modules::ModuleError>,
    },
    /// The pipeline could not be set up (bad allow-list pattern, keys, engine).
    #[error("cannot set up the module pipeline: {0}")]
    Setup(String),
}

impl ModuleError {
    /// Whether retrying cannot help (the allow list refuses the URL).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            ModuleError::NotAllowed { .. } | ModuleError::UnsafeUrl { .. }
        )
    }
}

/// Settings of the module pipeline.
#[derive(Debug, Clone, Default)]
pub struct ModuleSettings {
    /// Allow-list globs (`*` within one `/` segment); empty allows everything.
    pub allow: Vec<String>,
    /// PEM public keys; when any, every module must be signed by one.
    pub verification_keys: Vec<String>,
    /// Compiled-module cache directory (`None`: no disk cache, every load compiles).
    pub cache_dir: Option<PathBuf>,
    /// OCI download cache directory (`None`: hoist-oci's default).
    pub oci_cache_dir: Option<PathBuf>,
}

/// A module ready to run.
pub struct ReadyModule<'m> {
    /// The engine to run it on.
    pub engine: &'m FlightEngine,
    /// URL recorded in release history (`file:///abs` for files).
    pub url: String,
    /// SHA-256 (hex).
    pub sha256: String,
    /// SHA-1 (hex), what Yoke records as `source-checksum`.
    pub sha1: String,
    /// Compiled code.
    pub loaded: LoadedModule,
}

impl std::fmt::Debug for ReadyModule<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadyModule")
            .field("url", &self.url)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModuleStats {
    /// Loads answered by the compiled-module cache.
    pub cache_hits: u64,
    /// Loads that compiled.
    pub compiles: u64,
    /// Loads that failed.
    pub failures: u64,
}

/// The controller's modules, shared by every reconcile and webhook.
pub struct Modules {
    settings: ModuleSettings,
    secure: ModulePipeline,
    /// For Airways and Flights with `insecure: true` (plain-http OCI), made on first use.
    insecure: OnceLock<ModulePipeline>,
    /// Locations loaded once already: later loads skip the first-load lock.
    warm: Mutex<HashSet<String>>,
    /// Serialises first loads, so instances created together compile a module once.
    first_load: Mutex<()>,
    keys_dir: Option<PathBuf>,
    cache_hits: AtomicU64,
    compiles: AtomicU64,
    failures: AtomicU64,
}

impl std::fmt::Debug for Modules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Modules")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Drop for Modules {
    fn drop(&mut self) {
        if let Some(dir) = &self.keys_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Writes PEM keys where the pipeline reads them (a private directory of `*.pem`).
/// The compiler the controller uses: `HOIST_COMPILER` when set (`auto` is tiering), else
/// Winch alone. Winch compiles about 3.5x faster, which bounds the first admission's latency
/// (webhooks time out), and a second, optimising compile of every module inside the
/// controller would raise its peak memory (on bench/atc.sh: 161 MB against 128 MB). Its code
/// runs flights about 30% slower, which a reconcile hardly notices: the API calls dominate.
fn controller_compiler() -> Result<CompilerChoice, ModuleError> {
    match std::env::var("HOIST_COMPILER") {
        Ok(name) if !name.is_empty() => {
            CompilerChoice::from_env().map_err(|e| ModuleError::Setup(e.to_string()))
        }
        _ => Ok(CompilerChoice::Fixed(hoist_runtime::Compiler::Winch)),
    }
}

fn write_keys(keys: &[String]) -> Result<Option<PathBuf>, ModuleError> {
    if keys.is_empty() {
        return Ok(None);
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "hoist-atc-keys-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let io = |e: std::io::Error| {
        ModuleError::Setup(format!(
            "cannot write the module verification keys under {}: {e}",
            dir.display()
        ))
    };
    let _ = std::fs::remove_dir_all(&dir);
    let mut builder = std::fs::DirBuilder::new();
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(&dir).map_err(io)?;
    for (i, pem) in keys.iter().enumerate() {
        std::fs::write(dir.join(format!("key-{i}.pem")), pem).map_err(io)?;
    }
    Ok(Some(dir))
}

impl Modules {
    /// The pipeline for `settings`.
    pub fn new(settings: &ModuleSettings) -> Result<Modules, ModuleError> {
        let keys_dir = write_keys(&settings.verification_keys)?;
        let modules = Modules {
            settings: settings.clone(),
            secure: ModulePipeline::new(Self::options(settings, keys_dir.as_ref(), false)?)
                .map_err(|e| ModuleError::Setup(e.to_string()))?,
            insecure: OnceLock::new(),
            warm: Mutex::new(HashSet::new()),
            first_load: Mutex::new(()),
            keys_dir,
            cache_hits: AtomicU64::new(0),
            compiles: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        };
        Ok(modules)
    }

    fn options(
        settings: &ModuleSettings,
        keys_dir: Option<&PathBuf>,
        insecure: bool,
    ) -> Result<ModuleOptions, ModuleError> {
        Ok(ModuleOptions {
            checksum: None,
            verify_keys: keys_dir.cloned().into_iter().collect(),
            allow: settings.allow.clone(),
            cache_dir: settings.cache_dir.clone(),
            insecure,
            offline: false,
            oci_cache_dir: settings.oci_cache_dir.clone(),
            compiler: controller_compiler()?,
            // A long-running process: optimised code is compiled by a thread of its own.
            background: if std::env::var("HOIST_BACKGROUND_COMPILE").as_deref() == Ok("0") {
                BackgroundCompile::Off
            } else {
                BackgroundCompile::Thread
            },
            ..ModuleOptions::default()
        })
    }

    fn pipeline(&self, insecure: bool) -> Result<&ModulePipeline, ModuleError> {
        if !insecure {
            return Ok(&self.secure);
        }
        if let Some(pipeline) = self.insecure.get() {
            return Ok(pipeline);
        }
        let pipeline =
            ModulePipeline::new(Self::options(&self.settings, self.keys_dir.as_ref(), true)?)
                .map_err(|e| ModuleError::Setup(e.to_string()))?;
        Ok(self.insecure.get_or_init(|| pipeline))
    }

    /// Counters.
    pub fn stats(&self) -> ModuleStats {
        ModuleStats {
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            compiles: self.compiles.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// Refuses `location` when the allow list does not cover it.
    pub fn check_allowed(&self, location: &str) -> Result<(), ModuleError> {
        self.secure
            .check_allowed(location)
            .map_err(|e| self.convert(location, e))
    }

    /// Loads `location` (blocking: call from a blocking thread). `checksum` is an explicit
    /// sha256 hex (empty: none).
    pub fn load(
        &self,
        location: &str,
        checksum: &str,
        insecure: bool,
    ) -> Result<ReadyModule<'_>, ModuleError> {
        let result = self.load_inner(location, checksum, insecure);
        if result.is_err() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn load_inner(
        &self,
        location: &str,
        checksum: &str,
        insecure: bool,
    ) -> Result<ReadyModule<'_>, ModuleError> {
        let explicit = match checksum.trim() {
            "" => None,
            hex => Some(
                Sha256Digest::from_hex(hex).map_err(|e| ModuleError::BadChecksum {
                    url: location.to_string(),
                    checksum: checksum.to_string(),
                    reason: e.to_string(),
                })?,
            ),
        };
        let pipeline = self.pipeline(insecure)?;
        pipeline
            .check_allowed(location)
            .map_err(|e| self.convert(location, e))?;
        let key = format!("{insecure}:{location}");
        let warm = self.warm.lock().map(|w| w.contains(&key)).unwrap_or(false);
        let ready = if warm {
            pipeline.load(location, Digests::WithBytes)
        } else {
            // The first load of a location compiles; others wait for its cached code.
            let _guard = self.first_load.lock().unwrap_or_else(|p| p.into_inner());
            pipeline.load(location, Digests::WithBytes)
        }
        .map_err(|e| self.convert(location, e))?;
        if let Ok(mut w) = self.warm.lock() {
            w.insert(key);
        }
        if let Some(expected) = explicit {
            hoist_provenance::checksum::verify_digest(ready.info.sha256, location, Some(&expected))
                .map_err(ModuleError::ChecksumMismatch)?;
        }
        match ready.loaded.cache_status {
            CacheStatus::Hit => self.cache_hits.fetch_add(1, Ordering::Relaxed),
            _ => self.compiles.fetch_add(1, Ordering::Relaxed),
        };
        let sha1 = match &ready.wasm {
            Some(wasm) => hoist_release::state::sha1_hex(wasm),
            None => String::new(),
        };
        Ok(ReadyModule {
            engine: ready.engine,
            url: ready.info.url,
            sha256: ready.info.sha256.to_hex(),
            sha1,
            loaded: ready.loaded,
        })
    }
}

impl Modules {
    /// The pipeline's error in the controller's words (its flags, Yoke's wording).
    fn convert(&self, location: &str, error: hoist_modules::ModuleError) -> ModuleError {
        let patterns = || self.settings.allow.join(", ");
        match error {
            hoist_modules::ModuleError::NotAllowed { .. } => ModuleError::NotAllowed {
                url: location.to_string(),
                patterns: patterns(),
            },
            // hoist-modules reports a plain miss of the allow list as an unsafe URL too.
            hoist_modules::ModuleError::UnsafeUrl { reason, .. }
                if reason.contains("is not in the allow list") =>
            {
                ModuleError::NotAllowed {
                    url: location.to_string(),
                    patterns: patterns(),
                }
            }
            hoist_modules::ModuleError::UnsafeUrl { reason, .. } => ModuleError::UnsafeUrl {
                url: location.to_string(),
                reason,
            },
            source => ModuleError::Pipeline {
                url: location.to_string(),
                source: Box::new(source),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module() -> Vec<u8> {
        wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#).unwrap()
    }

    fn settings(dir: &std::path::Path) -> ModuleSettings {
        ModuleSettings {
            cache_dir: Some(dir.join("cache")),
            ..ModuleSettings::default()
        }
    }

    #[test]
    fn allow_list_refuses_outside_urls_terminally() {
        let dir = tempfile::tempdir().unwrap();
        let modules = Modules::new(&ModuleSettings {
            allow: vec!["oci://registry:80/*".into()],
            ..settings(dir.path())
        })
        .unwrap();
        assert!(modules.check_allowed("oci://registry:80/flight").is_ok());
        let err = modules.check_allowed("oci://registry:80/a/b").unwrap_err();
        assert!(err.is_terminal());
        assert!(err.to_string().contains("not allowed"), "{err}");
        assert!(
            err.to_string().contains("--module-allow-list"),
            "names the controller's flag: {err}"
        );
        let err = modules
            .load("https://example.invalid/x.wasm", "", false)
            .unwrap_err();
        assert!(err.is_terminal());
    }

    #[test]
    fn loads_compile_once_then_hit_the_cache_and_checksums_are_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wasm");
        std::fs::write(&path, module()).unwrap();
        let location = path.to_str().unwrap();
        let modules = Modules::new(&settings(dir.path())).unwrap();
        let sha = hoist_provenance::checksum::Sha256Digest::of(&module()).to_hex();
        let first = modules.load(location, &sha, false).unwrap();
        assert_eq!(first.sha256, sha);
        assert_eq!(first.url, format!("file://{location}"));
        assert_eq!(first.sha1, hoist_release::state::sha1_hex(&module()));
        drop(first);
        let second = modules.load(location, "", false).unwrap();
        assert_eq!(second.loaded.cache_status, CacheStatus::Hit);
        drop(second);
        let stats = modules.stats();
        assert_eq!((stats.compiles, stats.cache_hits), (1, 1), "{stats:?}");

        let other = hoist_provenance::checksum::Sha256Digest::of(b"other").to_hex();
        let err = modules.load(location, &other, false).unwrap_err();
        assert!(matches!(err, ModuleError::ChecksumMismatch(_)), "{err}");
        assert!(
            err.to_string()
                .contains("cannot verify module against expected checksum"),
            "{err}"
        );
        let err = modules.load(location, "zz", false).unwrap_err();
        assert!(err.to_string().contains("invalid checksum"), "{err}");
        let err = modules
            .load("/nonexistent/flight.wasm", "", false)
            .unwrap_err();
        assert!(
            !err.is_terminal() && err.to_string().contains("/nonexistent/flight.wasm"),
            "{err}"
        );
    }

    #[test]
    fn keys_are_required_and_bad_keys_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let err = Modules::new(&ModuleSettings {
            verification_keys: vec!["not a pem".into()],
            ..settings(dir.path())
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("verification key"), "{err}");

        let pem = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../testdata/keys/test-p256.pub.pem"),
        )
        .unwrap();
        let path = dir.path().join("unsigned.wasm");
        std::fs::write(&path, module()).unwrap();
        // Allow-listed, and still signature-checked (unlike Yoke).
        let modules = Modules::new(&ModuleSettings {
            verification_keys: vec![pem],
            allow: vec![format!("file://{}", path.display())],
            ..settings(dir.path())
        })
        .unwrap();
        let err = modules.load(path.to_str().unwrap(), "", false).unwrap_err();
        assert!(err.to_string().contains("not signed"), "{err}");
    }
}
