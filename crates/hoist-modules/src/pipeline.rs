//! The pipeline itself: allow list, source, checksums, signatures, compiled-module cache and
//! compiler tiering.

use crate::{ModuleError, OciSource, keys};
use hoist_provenance::allow::AllowList;
use hoist_provenance::checksum::Sha256Digest;
use hoist_provenance::signature::KeySet;
use hoist_runtime::{
    CacheStatus, Compiler, FlightEngine, InstancePool, LoadedModule, ModuleCache, TimeLimits,
};
use hoist_source::{DigestMemo, FetchedModule, SourceOptions};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

/// Which compiled code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompilerChoice {
    /// Optimised Cranelift code when the cache has it; else Winch code (compiles ~3.5x
    /// faster) now, with [`BackgroundCompile`] storing Cranelift code for the next load.
    #[default]
    Tiered,
    /// Exactly this compiler.
    Fixed(Compiler),
}

impl CompilerChoice {
    /// From `HOIST_COMPILER` (`cranelift`, `winch`, or `auto`/unset for tiered).
    pub fn from_env() -> Result<CompilerChoice, ModuleError> {
        match std::env::var("HOIST_COMPILER") {
            Ok(name) if !name.is_empty() && !name.eq_ignore_ascii_case("auto") => {
                Ok(CompilerChoice::Fixed(name.parse::<Compiler>()?))
            }
            _ => Ok(CompilerChoice::Tiered),
        }
    }
}

/// How optimised code is produced after a tiered load ran baseline code.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BackgroundCompile {
    /// Never (baseline code stays until the cache is cleaned).
    #[default]
    Off,
    /// A detached `EXE cache upgrade --compilation-cache DIR --sha256 HEX MODULE` (hoist's
    /// own binary), so a short-lived CLI process can exit while the compile finishes.
    Subprocess {
        /// The hoist binary to run.
        exe: PathBuf,
    },
    /// A background thread of this process (for long-running processes: the controller).
    Thread,
}

impl BackgroundCompile {
    /// A subprocess of the current executable, unless `HOIST_BACKGROUND_COMPILE=0`.
    pub fn subprocess_from_env() -> BackgroundCompile {
        if std::env::var("HOIST_BACKGROUND_COMPILE").as_deref() == Ok("0") {
            return BackgroundCompile::Off;
        }
        match std::env::current_exe() {
            Ok(exe) => BackgroundCompile::Subprocess { exe },
            Err(_) => BackgroundCompile::Off,
        }
    }
}

/// Everything that decides how modules are found, checked and compiled.
#[derive(Debug, Clone)]
pub struct ModuleOptions {
    /// Expected SHA-256 of every module loaded (`--checksum`).
    pub checksum: Option<Sha256Digest>,
    /// Public keys (PEM files or directories); when non-empty, every module must be signed by
    /// one of them, allow-listed or not.
    pub verify_keys: Vec<PathBuf>,
    /// URL globs a module must match (`*` stays within one `/` segment); empty allows all.
    pub allow: Vec<String>,
    /// The compiled-module cache; `None` compiles every time and caches nothing.
    pub cache_dir: Option<PathBuf>,
    /// Plain-http OCI registries.
    pub insecure: bool,
    /// OCI pulls from the download cache only.
    pub offline: bool,
    /// The OCI download cache; `None` uses the default under the cache root.
    pub oci_cache_dir: Option<PathBuf>,
    /// Which compiler.
    pub compiler: CompilerChoice,
    /// How optimised code is produced after a tiered baseline load.
    pub background: BackgroundCompile,
    /// Size and time limits of fetching.
    pub source: SourceOptions,
    /// Instances from a pool of reused slots (for processes that instantiate the same
    /// modules many times, such as `hoist policy bench`); `None` maps fresh memory each time.
    pub instance_pool: Option<InstancePool>,
    /// Whether compiled code can be stopped at a time limit; `Unenforceable` only for callers
    /// that set none (see [`TimeLimits`]).
    pub time_limits: TimeLimits,
}

impl Default for ModuleOptions {
    fn default() -> Self {
        ModuleOptions {
            checksum: None,
            verify_keys: Vec::new(),
            allow: Vec::new(),
            cache_dir: crate::default_module_cache_dir(),
            insecure: false,
            offline: false,
            oci_cache_dir: None,
            compiler: CompilerChoice::Tiered,
            background: BackgroundCompile::Off,
            source: SourceOptions::default(),
            instance_pool: None,
            time_limits: TimeLimits::Enforceable,
        }
    }
}

/// Which digests a caller needs besides SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digests {
    /// SHA-256 only: an unchanged local file may be neither read nor hashed (digest memo).
    Sha256,
    /// The module's bytes too (release history records Yoke's SHA-1 of them).
    WithBytes,
}

/// Whether a flight whose compiled code is not cached runs on the interpreter tier
/// ([`hoist_runtime::tier0`]) instead of waiting for a compiler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InterpreterChoice {
    /// When nothing compiled is cached and either optimised code is being made in the
    /// background for the next run or nothing is cached at all (`--no-cache`); a flight that
    /// outruns its budget is compiled after all.
    #[default]
    Auto,
    /// Always compile (the behaviour before tier 0 existed).
    Never,
    /// Always interpret, to the end (for tests and comparisons).
    Always,
}

impl InterpreterChoice {
    /// From `HOIST_INTERPRETER` (`auto`/unset, `never` or `0`, `always`).
    pub fn from_env() -> Result<InterpreterChoice, ModuleError> {
        match std::env::var("HOIST_INTERPRETER").as_deref() {
            Err(_) | Ok("") | Ok("auto") => Ok(InterpreterChoice::Auto),
            Ok("never") | Ok("0") => Ok(InterpreterChoice::Never),
            Ok("always") => Ok(InterpreterChoice::Always),
            Ok(other) => Err(ModuleError::BadSetting(format!(
                "HOIST_INTERPRETER={other} is not one of auto, never, always"
            ))),
        }
    }
}

/// A flight module ready to run on one of the two tiers.
pub enum FlightModule<'p> {
    /// Compiled code (from the cache, or compiled now).
    Compiled(ReadyModule<'p>),
    /// Bytes for the interpreter; compiled code is on its way for the next run.
    Interpreted(InterpretedModule<'p>),
}

/// A module to run on the interpreter tier, with everything needed to compile it after all.
pub struct InterpretedModule<'p> {
    /// The engine whose rules the module must pass (validation runs beside the interpreter)
    /// and that compiles it if the interpreter hands it back.
    pub validator: &'p FlightEngine,
    /// Where it came from.
    pub info: ModuleInfo,
    /// Its bytes.
    pub wasm: Vec<u8>,
    /// How long the interpreter may run it before compiling is the better bet; `None` runs it
    /// to the end.
    pub budget: Option<std::time::Duration>,
}

/// What a module was, for history, pinning and messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// The location as the caller gave it.
    pub location: String,
    /// The canonical URL (`file:///abs` for local files), as release history records it.
    pub url: String,
    /// SHA-256 of the (decompressed) module.
    pub sha256: Sha256Digest,
    /// For OCI sources: the digest reference actually pulled.
    pub resolved: Option<String>,
}

/// A module ready to instantiate.
pub struct ReadyModule<'p> {
    /// The engine its code belongs to (instantiate only in stores of this engine).
    pub engine: &'p FlightEngine,
    /// The compiled module.
    pub loaded: LoadedModule,
    /// Where it came from.
    pub info: ModuleInfo,
    /// Its bytes, when they were read (always with [`Digests::WithBytes`]; not on the warm
    /// path of an unchanged local file).
    pub wasm: Option<Vec<u8>>,
}

/// The one module pipeline. Create it once per process (or per command) and load as many
/// modules as needed: engines, keys and the allow list are set up once.
pub struct ModulePipeline {
    options: ModuleOptions,
    allow: AllowList,
    keys: Option<KeySet>,
    memo: Option<DigestMemo>,
    cache: Option<ModuleCache>,
    baseline_compiler: Compiler,
    baseline: OnceLock<FlightEngine>,
    /// Cranelift, looked up first, when tiered and caching.
    optimised: Option<FlightEngine>,
    /// Modules (SHA-256 hex) whose optimised code a background thread is compiling now, so a
    /// long-running process that loads the same module many times while it runs on baseline
    /// code starts one compile, not one per load (each can take gigabytes with Go modules).
    upgrading: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl std::fmt::Debug for ModulePipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModulePipeline")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ModulePipeline {
    /// Sets up the pipeline: parses the allow list, loads the keys, creates the engines.
    pub fn new(options: ModuleOptions) -> Result<ModulePipeline, ModuleError> {
        let allow = AllowList::new(options.allow.iter().filter(|p| !p.is_empty()))
            .map_err(|e| ModuleError::BadPattern(e.to_string()))?;
        let keys = if options.verify_keys.is_empty() {
            None
        } else {
            Some(keys::load_keys(&options.verify_keys)?)
        };
        let cache = options.cache_dir.clone().map(ModuleCache::new);
        let memo = options
            .cache_dir
            .as_ref()
            .map(|dir| DigestMemo::new(dir.join("digests")));
        let (baseline_compiler, optimised) = match (options.compiler, &cache) {
            (CompilerChoice::Fixed(compiler), _) => (compiler, None),
            (CompilerChoice::Tiered, Some(cache)) => (
                Compiler::Winch,
                Some(FlightEngine::configured(
                    Compiler::Cranelift,
                    Some(cache.clone()),
                    options.instance_pool,
                    options.time_limits,
                )?),
            ),
            (CompilerChoice::Tiered, None) => (Compiler::Winch, None),
        };
        Ok(ModulePipeline {
            options,
            allow,
            keys,
            memo,
            cache,
            baseline_compiler,
            baseline: OnceLock::new(),
            optimised,
            upgrading: Default::default(),
        })
    }

    /// The options it was made with.
    pub fn options(&self) -> &ModuleOptions {
        &self.options
    }

    /// Whether an allow list or verification keys are configured: input without provenance
    /// (resources piped on stdin) must then be refused.
    pub fn checks_provenance(&self) -> bool {
        self.keys.is_some() || !self.allow.is_empty()
    }

    /// Loads the module at `location` (a path, `file://`, `.gz`, `http(s)://` or `oci://`).
    ///
    /// The allow list is checked before anything is fetched; checksums (explicit and the
    /// `sha256_` a name promises) and signatures before anything is compiled.
    pub fn load(&self, location: &str, digests: Digests) -> Result<ReadyModule<'_>, ModuleError> {
        if let Some(ready) = self.memo_hit(location, digests)? {
            return Ok(ready);
        }
        let fetched = self.fetch_checked(location)?;
        let cached = self.cached(&fetched.sha256);
        self.finish_load(location, fetched, cached)
    }

    /// The allow list, the source, checksums and signatures: everything before code.
    fn fetch_checked(&self, location: &str) -> Result<FetchedModule, ModuleError> {
        self.check_allowed(location)?;
        let oci = OciSource {
            insecure: self.options.insecure,
            offline: self.options.offline,
            cache_dir: self.options.oci_cache_dir.clone(),
        };
        let started = Instant::now();
        let fetched = hoist_source::fetch(
            location,
            self.options.checksum.as_ref(),
            &self.options.source,
            Some(&oci),
        )?;
        tracing::info!(
            module = location,
            sha256 = %fetched.sha256,
            bytes = fetched.wasm.len(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "module fetched"
        );
        self.check_signature(&fetched.wasm, location)?;
        Ok(fetched)
    }

    /// Compiled code for a checked module: `cached` when given, else compiled now (and
    /// optimised code scheduled when that was baseline code).
    fn finish_load<'p>(
        &'p self,
        location: &str,
        fetched: FetchedModule,
        cached: Option<(&'p FlightEngine, LoadedModule)>,
    ) -> Result<ReadyModule<'p>, ModuleError> {
        let FetchedModule {
            wasm,
            url,
            sha256,
            resolved,
            ..
        } = fetched;
        let (engine, loaded) = match cached {
            Some(hit) => {
                log_ready(location, &hit.1);
                hit
            }
            None => {
                let baseline = self.baseline()?;
                let loaded = baseline.load(&wasm, &sha256.to_hex(), location)?;
                log_ready(location, &loaded);
                (baseline, loaded)
            }
        };
        if let Some(memo) = &self.memo {
            memo.record(location, &sha256);
        }
        if loaded.compiler != Compiler::Cranelift && loaded.cache_status != CacheStatus::Disabled {
            self.schedule_upgrade(&sha256, upgrade_source(location, &wasm));
        }
        Ok(ReadyModule {
            engine,
            loaded,
            info: ModuleInfo {
                location: location.to_string(),
                url,
                sha256,
                resolved,
            },
            wasm: Some(wasm),
        })
    }

    /// Loads a flight: as [`ModulePipeline::load`], except that a module with no cached
    /// compiled code may be returned for the interpreter tier (see [`InterpreterChoice`]),
    /// with optimised code scheduled in the background as after a baseline load.
    pub fn load_flight(
        &self,
        location: &str,
        digests: Digests,
        interpreter: InterpreterChoice,
    ) -> Result<FlightModule<'_>, ModuleError> {
        if interpreter == InterpreterChoice::Never {
            return self.load(location, digests).map(FlightModule::Compiled);
        }
        if interpreter == InterpreterChoice::Auto
            && let Some(ready) = self.memo_hit(location, digests)?
        {
            return Ok(FlightModule::Compiled(ready));
        }
        let fetched = self.fetch_checked(location)?;
        let cached = match interpreter {
            InterpreterChoice::Always => None,
            _ => self.cached(&fetched.sha256),
        };
        let upgrading = self.optimised.is_some()
            && self.options.cache_dir.is_some()
            && self.options.background != BackgroundCompile::Off;
        let interpret = match interpreter {
            InterpreterChoice::Always => true,
            _ => cached.is_none() && (upgrading || self.cache.is_none()),
        };
        if !interpret {
            return self
                .finish_load(location, fetched, cached)
                .map(FlightModule::Compiled);
        }
        if let Some(memo) = &self.memo {
            memo.record(location, &fetched.sha256);
        }
        if interpreter == InterpreterChoice::Auto {
            self.schedule_upgrade(&fetched.sha256, upgrade_source(location, &fetched.wasm));
        }
        let budget = match interpreter {
            InterpreterChoice::Always => None,
            _ => Some(interpreter_budget(fetched.wasm.len())),
        };
        tracing::info!(
            module = location,
            sha256 = %fetched.sha256,
            budget_ms = budget.map(|b| b.as_millis() as u64),
            "no compiled code cached: running on the interpreter"
        );
        let FetchedModule {
            wasm,
            url,
            sha256,
            resolved,
            ..
        } = fetched;
        Ok(FlightModule::Interpreted(InterpretedModule {
            validator: self.baseline()?,
            info: ModuleInfo {
                location: location.to_string(),
                url,
                sha256,
                resolved,
            },
            wasm,
            budget,
        }))
    }

    /// Compiles a module the interpreter handed back (it was checked when it was loaded).
    pub fn compile_interpreted(
        &self,
        module: InterpretedModule<'_>,
    ) -> Result<ReadyModule<'_>, ModuleError> {
        let (engine, loaded) =
            self.compile_or_load(&module.wasm, &module.info.sha256, &module.info.location)?;
        Ok(ReadyModule {
            engine,
            loaded,
            info: module.info,
            wasm: Some(module.wasm),
        })
    }

    /// Makes a module the caller already holds ready (for example one embedded in a
    /// resource): the explicit checksum and signatures are checked; the allow list is not,
    /// since bytes have no URL.
    pub fn load_bytes(&self, wasm: Vec<u8>, what: &str) -> Result<ReadyModule<'_>, ModuleError> {
        let sha256 =
            hoist_provenance::checksum::verify(&wasm, what, self.options.checksum.as_ref())?;
        self.check_signature(&wasm, what)?;
        let (engine, loaded) = self.compile_or_load(&wasm, &sha256, what)?;
        Ok(ReadyModule {
            engine,
            loaded,
            info: ModuleInfo {
                location: what.to_string(),
                url: what.to_string(),
                sha256,
                resolved: None,
            },
            wasm: Some(wasm),
        })
    }

    /// Refuses a module whose URL is outside the allow list, before anything is fetched.
    pub fn check_allowed(&self, location: &str) -> Result<(), ModuleError> {
        if self.allow.is_empty() {
            return Ok(());
        }
        let url = hoist_source::canonical_url(location);
        match self.allow.check(&url) {
            Ok(Some(pattern)) => {
                tracing::info!(module = location, pattern, "allowed");
                Ok(())
            }
            // A plain miss (the allow list reports it as an error) is "not allowed"; only a
            // URL that cannot be matched safely is "unsafe".
            Ok(None) | Err(hoist_provenance::allow::AllowError::NotAllowed { .. }) => {
                Err(ModuleError::NotAllowed {
                    location: location.to_string(),
                    url,
                    patterns: self.allow.patterns().join(", "),
                })
            }
            Err(e) => Err(ModuleError::UnsafeUrl {
                location: location.to_string(),
                reason: e.to_string(),
            }),
        }
    }

    fn check_signature(&self, wasm: &[u8], location: &str) -> Result<(), ModuleError> {
        if let Some(keys) = &self.keys {
            let verified = keys::verify_module(wasm, keys, location)?;
            tracing::info!(module = location, key = ?verified, "signature verified");
        }
        Ok(())
    }

    /// The warm path: an unchanged local file whose compiled code is cached is neither read
    /// nor hashed again. Signatures and callers that need the bytes take the full path.
    fn memo_hit(
        &self,
        location: &str,
        digests: Digests,
    ) -> Result<Option<ReadyModule<'_>>, ModuleError> {
        if digests != Digests::Sha256 || self.keys.is_some() {
            return Ok(None);
        }
        let Some(memo) = &self.memo else {
            return Ok(None);
        };
        let Some(sha256) = memo.lookup(location) else {
            return Ok(None);
        };
        let Some((engine, loaded)) = self.cached(&sha256) else {
            return Ok(None);
        };
        self.check_allowed(location)?;
        hoist_provenance::checksum::verify_digest(
            sha256,
            location,
            self.options.checksum.as_ref(),
        )?;
        tracing::info!(module = location, sha256 = %sha256, "module unchanged since last run (digest memo)");
        log_ready(location, &loaded);
        if loaded.compiler != Compiler::Cranelift {
            self.schedule_upgrade(&sha256, UpgradeSource::File(location));
        }
        Ok(Some(ReadyModule {
            engine,
            loaded,
            info: ModuleInfo {
                location: location.to_string(),
                url: hoist_source::canonical_url(location),
                sha256,
                resolved: None,
            },
            wasm: None,
        }))
    }

    /// The baseline engine, created on first use (a warm tiered load never needs it).
    fn baseline(&self) -> Result<&FlightEngine, ModuleError> {
        if let Some(engine) = self.baseline.get() {
            return Ok(engine);
        }
        let engine = FlightEngine::configured(
            self.baseline_compiler,
            self.cache.clone(),
            self.options.instance_pool,
            self.options.time_limits,
        )?;
        Ok(self.baseline.get_or_init(|| engine))
    }

    /// Cached code for `sha256`, optimised first.
    fn cached(&self, sha256: &Sha256Digest) -> Option<(&FlightEngine, LoadedModule)> {
        let hex = sha256.to_hex();
        if let Some(optimised) = &self.optimised
            && let Some(loaded) = optimised.load_cached(&hex)
        {
            return Some((optimised, loaded));
        }
        let baseline = self.baseline().ok()?;
        baseline.load_cached(&hex).map(|loaded| (baseline, loaded))
    }

    fn compile_or_load(
        &self,
        wasm: &[u8],
        sha256: &Sha256Digest,
        what: &str,
    ) -> Result<(&FlightEngine, LoadedModule), ModuleError> {
        let (engine, loaded) = match self.cached(sha256) {
            Some(hit) => hit,
            None => {
                let baseline = self.baseline()?;
                (baseline, baseline.load(wasm, &sha256.to_hex(), what)?)
            }
        };
        log_ready(what, &loaded);
        Ok((engine, loaded))
    }

    /// When tiered and the module ran on baseline code, starts producing optimised code for
    /// the next load (at most one compile per module at a time).
    fn schedule_upgrade(&self, sha256: &Sha256Digest, module: UpgradeSource<'_>) {
        let (Some(optimised), Some(dir)) = (&self.optimised, &self.options.cache_dir) else {
            return;
        };
        let result = match &self.options.background {
            BackgroundCompile::Off => return,
            BackgroundCompile::Subprocess { exe } => {
                spawn_upgrade(exe, dir, sha256, module, self.options.time_limits)
            }
            BackgroundCompile::Thread => {
                let engine = optimised.clone_handle();
                let hex = sha256.to_hex();
                // One compile per module at a time (the subprocess path has its lock file).
                let Some(claim) = UpgradeClaim::take(&self.upgrading, &hex) else {
                    return;
                };
                let bytes = match module {
                    UpgradeSource::Bytes(bytes) => Some(bytes.to_vec()),
                    UpgradeSource::File(location) => {
                        std::fs::read(location.strip_prefix("file://").unwrap_or(location)).ok()
                    }
                };
                match bytes {
                    // The claim moves into the thread and is released when it ends (or at once,
                    // dropped with the closure, if the thread cannot start).
                    Some(bytes) => std::thread::Builder::new()
                        .name("hoist-optimise".into())
                        .spawn(move || {
                            let _claim = claim;
                            // Re-hash: the file may have changed since it was checked.
                            if hoist_provenance::checksum::Sha256Digest::of(&bytes).to_hex() == hex
                            {
                                let _ = engine.load(&bytes, &hex, "background compile");
                            }
                        })
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    None => Ok(()),
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!("could not start the background compile: {e}");
        }
    }
}

/// A module's place in [`ModulePipeline`]'s set of running background compiles, given back
/// when dropped.
struct UpgradeClaim {
    set: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    hex: String,
}

impl UpgradeClaim {
    /// The claim on `hex`, or `None` when a compile of it is already running.
    fn take(
        set: &std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
        hex: &str,
    ) -> Option<UpgradeClaim> {
        let inserted = set.lock().ok()?.insert(hex.to_string());
        inserted.then(|| UpgradeClaim {
            set: std::sync::Arc::clone(set),
            hex: hex.to_string(),
        })
    }
}

impl Drop for UpgradeClaim {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.hex);
        }
    }
}

fn log_ready(what: &str, loaded: &LoadedModule) {
    tracing::info!(
        module = what,
        compiler = %loaded.compiler,
        cache = %loaded.cache_status,
        ms = loaded.load_time.as_secs_f64() * 1000.0,
        "module ready"
    );
}

/// Where a background compile can read `location` again: the file itself when local.
fn upgrade_source<'a>(location: &'a str, wasm: &'a [u8]) -> UpgradeSource<'a> {
    let local = !location.contains("://") || location.starts_with("file://");
    if local {
        UpgradeSource::File(location)
    } else {
        UpgradeSource::Bytes(wasm)
    }
}

/// How long the interpreter may run a module of `bytes` before compiling it would have been
/// faster: about what a baseline (Winch) compile of it costs on a small machine, 0.15 s per
/// MB measured on 2 cores, and never under half a second.
fn interpreter_budget(bytes: usize) -> std::time::Duration {
    let seconds = bytes as f64 / (1024.0 * 1024.0) * 0.15;
    std::time::Duration::from_secs_f64(seconds.clamp(0.5, 10.0))
}

/// Where the background compile reads the module from.
enum UpgradeSource<'a> {
    /// A local file (re-hashed by the upgrade before use).
    File(&'a str),
    /// Bytes only in memory (downloaded): written under the cache first.
    Bytes(&'a [u8]),
}

/// The lock file (under `pending/`) of a background compile of `sha256`.
pub fn upgrade_lock_name(sha256: &Sha256Digest, time_limits: TimeLimits) -> String {
    match time_limits {
        TimeLimits::Enforceable => format!("{sha256}.lock"),
        TimeLimits::Unenforceable => format!("{sha256}.no-time-limits.lock"),
    }
}

fn spawn_upgrade(
    exe: &Path,
    dir: &Path,
    sha256: &Sha256Digest,
    module: UpgradeSource<'_>,
    time_limits: TimeLimits,
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let pending = dir.join("pending");
    std::fs::create_dir_all(&pending).map_err(io)?;
    // The two kinds of code are separate cache entries, so each has its own lock.
    let lock = pending.join(upgrade_lock_name(sha256, time_limits));
    // A lock younger than ten minutes means an upgrade is running (or just ran).
    if let Ok(meta) = std::fs::metadata(&lock)
        && meta
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() < 600)
    {
        return Ok(());
    }
    std::fs::write(&lock, std::process::id().to_string()).map_err(io)?;
    let path = match module {
        UpgradeSource::File(location) => {
            PathBuf::from(location.strip_prefix("file://").unwrap_or(location))
        }
        UpgradeSource::Bytes(bytes) => {
            let path = pending.join(format!("{sha256}.wasm"));
            let tmp = pending.join(format!("{sha256}.wasm.{}", std::process::id()));
            std::fs::write(&tmp, bytes).map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            path
        }
    };
    std::process::Command::new(exe)
        .args(["cache", "upgrade", "--compilation-cache"])
        .arg(dir)
        .arg("--sha256")
        .arg(sha256.to_hex())
        .args((time_limits == TimeLimits::Unenforceable).then_some("--no-time-limits"))
        .arg(&path)
        .env_remove("HOIST_COMPILER")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(io)?;
    tracing::info!(sha256 = %sha256, "compiling optimised code in the background for the next run");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module() -> Vec<u8> {
        wat::parse_str(r#"(module (func (export "_start")))"#).unwrap()
    }

    fn options(cache: &Path) -> ModuleOptions {
        ModuleOptions {
            cache_dir: Some(cache.to_path_buf()),
            compiler: CompilerChoice::Fixed(Compiler::Winch),
            ..ModuleOptions::default()
        }
    }

    #[test]
    fn a_local_module_is_compiled_then_served_from_the_memo_and_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wasm");
        std::fs::write(&path, module()).unwrap();
        let pipeline = ModulePipeline::new(options(&dir.path().join("cache"))).unwrap();
        let location = path.to_str().unwrap();
        let first = pipeline.load(location, Digests::Sha256).unwrap();
        assert_eq!(first.info.sha256, Sha256Digest::of(&module()));
        assert_eq!(first.info.url, format!("file://{location}"));
        assert!(first.wasm.is_some());
        assert_eq!(first.loaded.cache_status, CacheStatus::Miss);
        // Files younger than 3 s are never memoised (racy timestamps): age it.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let _ = pipeline.load(location, Digests::Sha256).unwrap();
        let warm = pipeline.load(location, Digests::Sha256).unwrap();
        assert_eq!(warm.loaded.cache_status, CacheStatus::Hit);
        // Callers that need the bytes always get them.
        let bytes = pipeline.load(location, Digests::WithBytes).unwrap();
        assert_eq!(bytes.wasm.as_deref(), Some(&module()[..]));
    }

    #[test]
    fn a_background_thread_compiles_each_module_once_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let pipeline = ModulePipeline::new(ModuleOptions {
            compiler: CompilerChoice::Tiered,
            background: BackgroundCompile::Thread,
            ..options(&cache)
        })
        .unwrap();
        let hex = Sha256Digest::of(&module()).to_hex();
        let path = dir.path().join("m.wasm");
        std::fs::write(&path, module()).unwrap();
        let location = path.to_str().unwrap();
        let optimised = || {
            std::fs::read_dir(&cache)
                .map(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().contains(".cranelift."))
                })
                .unwrap_or(false)
        };
        // A compile of this module is already running: loads on baseline code start none.
        pipeline.upgrading.lock().unwrap().insert(hex.clone());
        for _ in 0..5 {
            let ready = pipeline.load(location, Digests::Sha256).unwrap();
            assert_eq!(ready.loaded.compiler, Compiler::Winch);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert!(!optimised(), "a second compile started");
        // Once it is over, the next baseline load starts one, which stores Cranelift code and
        // then lets the module be scheduled again.
        pipeline.upgrading.lock().unwrap().clear();
        let _ = pipeline.load(location, Digests::Sha256).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !(optimised() && pipeline.upgrading.lock().unwrap().is_empty()) {
            assert!(std::time::Instant::now() < deadline, "no optimised code");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let warm = pipeline.load(location, Digests::Sha256).unwrap();
        assert_eq!(warm.loaded.compiler, Compiler::Cranelift);
    }

    #[test]
    fn the_allow_list_and_checksums_refuse_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wasm");
        std::fs::write(&path, module()).unwrap();
        let location = path.to_str().unwrap();
        let pipeline = ModulePipeline::new(ModuleOptions {
            allow: vec!["https://example.invalid/*".into()],
            ..options(&dir.path().join("cache"))
        })
        .unwrap();
        assert!(pipeline.checks_provenance());
        let err = pipeline
            .load(location, Digests::Sha256)
            .err()
            .expect("refused");
        assert!(matches!(err, ModuleError::NotAllowed { .. }), "{err}");
        assert!(err.to_string().contains("--allow"), "{err}");

        let pipeline = ModulePipeline::new(ModuleOptions {
            checksum: Some(Sha256Digest::of(b"something else")),
            ..options(&dir.path().join("cache"))
        })
        .unwrap();
        let err = pipeline
            .load(location, Digests::Sha256)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("checksum"), "{err}");
        let err = pipeline
            .load_bytes(module(), "inline")
            .err()
            .expect("refused");
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn unsigned_modules_are_refused_when_keys_are_configured() {
        let keys =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/keys/test-p256.pub.pem");
        let dir = tempfile::tempdir().unwrap();
        let pipeline = ModulePipeline::new(ModuleOptions {
            verify_keys: vec![keys],
            ..options(&dir.path().join("cache"))
        })
        .unwrap();
        let err = pipeline
            .load_bytes(module(), "inline")
            .err()
            .expect("refused");
        assert!(matches!(err, ModuleError::Signature { .. }), "{err}");
        assert!(err.to_string().contains("hoist sign"), "{err}");
    }
}
