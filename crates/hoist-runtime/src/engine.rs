//! The wasmtime engine for flights and loading modules through the cache.

use crate::cache::{CacheError, ModuleCache};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, Module, OptLevel, PoolingAllocationConfig,
    Strategy,
};

/// Which compiler turns Wasm into machine code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiler {
    /// Optimising compiler: slower to compile, faster code.
    Cranelift,
    /// Baseline compiler: compiles several times faster, code runs slower.
    Winch,
}

impl Compiler {
    /// The compiler hoist uses when nothing else is asked for (see BENCHMARKS.md for why).
    pub const DEFAULT: Compiler = Compiler::Winch;

    /// The compiler named by `HOIST_COMPILER`, else [`Compiler::DEFAULT`].
    pub fn from_env() -> Result<Compiler, EngineError> {
        match std::env::var("HOIST_COMPILER") {
            Ok(value) if !value.is_empty() => value.parse(),
            _ => Ok(Compiler::DEFAULT),
        }
    }

    /// Stable name, used in cache keys and messages.
    pub fn name(self) -> &'static str {
        match self {
            Compiler::Cranelift => "cranelift",
            Compiler::Winch => "winch",
        }
    }
}

impl fmt::Display for Compiler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compiler {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cranelift" => Ok(Compiler::Cranelift),
            "winch" => Ok(Compiler::Winch),
            other => Err(EngineError::UnknownCompiler(other.to_string())),
        }
    }
}

/// Instances allocated from a pool of pre-reserved slots instead of fresh mappings, for a
/// process that instantiates the same modules over and over (a policy evaluated on request
/// after request, each WASI run a fresh instance).
///
/// Why: a fresh instance's memory is a fresh mapping, so every page the guest touches is a
/// page fault and a zeroed page, and the mapping is torn down afterwards; for a Go policy
/// that was 39% of an evaluation's time (BENCHMARKS.md, session 7). A pooled slot stays
/// mapped: when an instance is dropped, the pages it wrote (found with Linux's
/// `PAGEMAP_SCAN` where the kernel has it) are reset to the module's initial memory in place,
/// up to `keep_resident_bytes`, so the next instance of the same module touches resident
/// pages. The price is memory that stays resident between runs (at most
/// `slots * keep_resident_bytes`) and a hard cap on instances alive at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstancePool {
    /// Instances (and their memories and tables) alive at once; instantiating one more fails
    /// with wasmtime's "maximum concurrent instance limit" error.
    pub slots: u32,
    /// The largest a pooled linear memory may grow; growth past it fails as a memory limit
    /// would, so make it at least the largest limit any run has.
    pub max_memory_bytes: u64,
    /// Bytes of each memory slot reset in place and kept resident between instances.
    pub keep_resident_bytes: u64,
}

impl InstancePool {
    /// A pool for sequential evaluations: a few slots (a run, a verification run of a resume
    /// point, and spare), memories up to `max_memory_bytes`, 64 MiB kept resident each.
    pub fn for_repeated_runs(max_memory_bytes: u64) -> InstancePool {
        InstancePool {
            slots: 4,
            max_memory_bytes,
            keep_resident_bytes: 64 * 1024 * 1024,
        }
    }

    fn allocation_config(&self) -> PoolingAllocationConfig {
        let mut pool = PoolingAllocationConfig::new();
        let keep = usize::try_from(self.keep_resident_bytes).unwrap_or(usize::MAX);
        pool.total_core_instances(self.slots)
            .total_memories(self.slots)
            .total_tables(self.slots)
            .max_memory_size(usize::try_from(self.max_memory_bytes).unwrap_or(usize::MAX))
            // Go modules hold every address-taken function in one table, and their instance
            // state grows with it; wasmtime's defaults (10,000 elements, 1 MiB) are too small
            // for a 40 MB catalog function. Both are virtual reservations, not resident memory.
            .table_elements(1 << 20)
            .max_core_instance_size(64 << 20)
            .linear_memory_keep_resident(keep)
            .table_keep_resident(1 << 20)
            .pagemap_scan(Enabled::Auto);
        pool
    }
}

/// Failures creating the engine or compiling a module.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// `HOIST_COMPILER` names no compiler.
    #[error("unknown compiler {0:?} in HOIST_COMPILER: use \"cranelift\" or \"winch\"")]
    UnknownCompiler(String),
    /// wasmtime refused the configuration (a bug, or an unsupported CPU).
    #[error("could not create the Wasm engine ({compiler}): {message}")]
    Config {
        /// The compiler that was asked for.
        compiler: Compiler,
        /// wasmtime's message.
        message: String,
    },
    /// The bytes are not a Wasm module at all.
    #[error("{what} is not a WebAssembly module ({detail})")]
    NotWasm {
        /// What the bytes were (for the message), e.g. the module's location.
        what: String,
        /// What was found instead.
        detail: String,
    },
    /// The module is a Wasm component (component model), which flights are not.
    #[error(
        "{what} is a WebAssembly component, not a core module: hoist runs WASI preview 1 modules (e.g. GOOS=wasip1 GOARCH=wasm go build)"
    )]
    Component {
        /// The module's location.
        what: String,
    },
    /// Validation or compilation failed.
    #[error("{what} is not a valid WebAssembly module: {message}")]
    Compile {
        /// The module's location.
        what: String,
        /// wasmtime's message (the validation error, with its offset).
        message: String,
    },
}

/// Whether a module's compiled code came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Loaded from the on-disk cache.
    Hit,
    /// Compiled now and stored in the cache.
    Miss,
    /// The cache entry was unusable (corrupt, truncated, from another build); recompiled.
    Recovered,
    /// Compiled now; the cache is disabled (`--no-cache`) or could not be written.
    Disabled,
}

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Recovered => "recovered",
            CacheStatus::Disabled => "disabled",
        })
    }
}

/// A compiled module, ready to instantiate.
pub struct LoadedModule {
    /// The wasmtime module.
    pub module: Module,
    /// Where its code came from.
    pub cache_status: CacheStatus,
    /// Time spent compiling or loading.
    pub load_time: Duration,
    /// The compiler that produced the code.
    pub compiler: Compiler,
}

/// Whether compiled code can be stopped at a time limit.
///
/// Time limits are wasmtime epochs: the code checks a counter at every function entry and
/// loop header. On call-heavy guests that is about a fifth of the run time (OPA's evaluator:
/// 9.9 us against 7.8 us an evaluation), so a caller that sets no time limit at all can have
/// code without the checks. The two kinds of code are cached apart (the setting is part of the
/// engine's compatibility hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeLimits {
    /// Code checks the epoch, so a run can be stopped at its deadline (the default).
    #[default]
    Enforceable,
    /// No checks: a run cannot be stopped. Only for callers that set no time limit.
    Unenforceable,
}

/// The engine flights run on, with an optional on-disk cache of compiled modules.
pub struct FlightEngine {
    engine: Engine,
    compiler: Compiler,
    cache: Option<ModuleCache>,
    /// Set when `load_cached` removed an unusable entry, so the next `load` says so.
    recovered: AtomicBool,
}

impl FlightEngine {
    /// An engine using `compiler`, caching compiled code in `cache` when given.
    pub fn new(compiler: Compiler, cache: Option<ModuleCache>) -> Result<Self, EngineError> {
        FlightEngine::with_instance_pool(compiler, cache, None)
    }

    /// An engine as [`FlightEngine::new`] makes, allocating instances from `pool` when given.
    /// Compiled code is the same either way, so the cache is shared with unpooled engines.
    pub fn with_instance_pool(
        compiler: Compiler,
        cache: Option<ModuleCache>,
        pool: Option<InstancePool>,
    ) -> Result<Self, EngineError> {
        FlightEngine::configured(compiler, cache, pool, TimeLimits::Enforceable)
    }

    /// An engine as [`FlightEngine::with_instance_pool`] makes, whose code can or cannot be
    /// stopped at a time limit (see [`TimeLimits`]).
    pub fn configured(
        compiler: Compiler,
        cache: Option<ModuleCache>,
        pool: Option<InstancePool>,
        time_limits: TimeLimits,
    ) -> Result<Self, EngineError> {
        let engine = flight_engine(compiler, pool, time_limits)?;
        let cache = cache.map(|c| c.for_engine(&engine, compiler));
        Ok(FlightEngine {
            engine,
            compiler,
            cache,
            recovered: AtomicBool::new(false),
        })
    }

    /// Another handle on the same engine and cache (wasmtime engines are shared, so code
    /// compiled through either is usable by both); for background compiles on other threads.
    pub fn clone_handle(&self) -> FlightEngine {
        FlightEngine {
            engine: self.engine.clone(),
            compiler: self.compiler,
            cache: self.cache.clone(),
            recovered: AtomicBool::new(false),
        }
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The compiler in use.
    pub fn compiler(&self) -> Compiler {
        self.compiler
    }

    /// The cache, when enabled.
    pub fn cache(&self) -> Option<&ModuleCache> {
        self.cache.as_ref()
    }

    /// The compiled module for `sha256_hex` from the cache, if there is a usable entry
    /// (no compilation; an unusable entry is removed and reported as `None`).
    pub fn load_cached(&self, sha256_hex: &str) -> Option<LoadedModule> {
        let started = Instant::now();
        let module = match self.cache.as_ref()?.load(&self.engine, sha256_hex) {
            Ok(module) => module?,
            Err(CacheError::Unusable { path, reason }) => {
                tracing::warn!(
                    "compiled-module cache entry {} is unusable ({reason}); recompiling",
                    path.display()
                );
                self.recovered.store(true, Ordering::Relaxed);
                return None;
            }
            Err(_) => return None,
        };
        Some(LoadedModule {
            module,
            cache_status: CacheStatus::Hit,
            load_time: started.elapsed(),
            compiler: self.compiler,
        })
    }

    /// Compiles `wasm` (whose SHA-256 is `sha256_hex`), or loads its compiled code from the
    /// cache. `what` names the module in error messages.
    ///
    /// The cache never makes a bad module run: only files hoist wrote itself are loaded, their
    /// code is checked against the digest recorded at write time, and any entry that fails
    /// to load is removed and recompiled.
    pub fn load(
        &self,
        wasm: &[u8],
        sha256_hex: &str,
        what: &str,
    ) -> Result<LoadedModule, EngineError> {
        let started = Instant::now();
        let mut status = CacheStatus::Disabled;
        if let Some(cache) = &self.cache {
            match cache.load(&self.engine, sha256_hex) {
                Ok(Some(module)) => {
                    tracing::debug!(module = what, "compiled-module cache hit");
                    return Ok(LoadedModule {
                        module,
                        cache_status: CacheStatus::Hit,
                        load_time: started.elapsed(),
                        compiler: self.compiler,
                    });
                }
                Ok(None) if self.recovered.swap(false, Ordering::Relaxed) => {
                    status = CacheStatus::Recovered
                }
                Ok(None) => status = CacheStatus::Miss,
                Err(CacheError::Unusable { path, reason }) => {
                    tracing::warn!(
                        "compiled-module cache entry {} is unusable ({reason}); recompiling",
                        path.display()
                    );
                    status = CacheStatus::Recovered;
                }
                Err(e) => {
                    tracing::warn!("compiled-module cache unavailable ({e}); compiling");
                }
            }
        }

        check_is_core_module(wasm, what)?;
        // Go wasip1 modules are compiled with the exports a resume needs (see go_resume).
        let prepared = crate::go_resume::prepare(wasm);
        let wasm = prepared.as_deref().unwrap_or(wasm);
        let module = match &self.cache {
            Some(cache) if status != CacheStatus::Disabled => {
                let compiled = self
                    .engine
                    .precompile_module(wasm)
                    .map_err(|e| compile_error(what, e))?;
                match cache.store(&self.engine, sha256_hex, &compiled) {
                    Ok(module) => module,
                    Err(e) => {
                        tracing::warn!("could not write the compiled-module cache ({e})");
                        status = CacheStatus::Disabled;
                        // SAFETY: `compiled` was produced by this engine just now.
                        unsafe { Module::deserialize(&self.engine, &compiled) }
                            .map_err(|e| compile_error(what, e))?
                    }
                }
            }
            _ => Module::new(&self.engine, wasm).map_err(|e| compile_error(what, e))?,
        };
        Ok(LoadedModule {
            module,
            cache_status: status,
            load_time: started.elapsed(),
            compiler: self.compiler,
        })
    }
}

/// The engine configuration for flights. Everything here but the allocation strategy changes
/// compiled code, so it is covered by `Engine::precompile_compatibility_hash`, which is part of
/// the cache key; the allocation strategy does not (wasmtime documents that compiled modules
/// work with and without the pooling allocator).
/// A wasmtime engine with [`flight_config`]'s settings.
pub(crate) fn flight_engine(
    compiler: Compiler,
    pool: Option<InstancePool>,
    time_limits: TimeLimits,
) -> Result<Engine, EngineError> {
    Engine::new(&flight_config(compiler, pool, time_limits)).map_err(|e| EngineError::Config {
        compiler,
        message: format!("{e:#}"),
    })
}

fn flight_config(
    compiler: Compiler,
    pool: Option<InstancePool>,
    time_limits: TimeLimits,
) -> Config {
    let mut config = Config::new();
    config
        .strategy(match compiler {
            Compiler::Cranelift => Strategy::Cranelift,
            Compiler::Winch => Strategy::Winch,
        })
        .cranelift_opt_level(OptLevel::Speed)
        .epoch_interruption(time_limits == TimeLimits::Enforceable)
        .parallel_compilation(true)
        // Flights are WASI preview 1 core modules.
        .wasm_component_model(false);
    if let Some(pool) = pool {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(
            pool.allocation_config(),
        ));
    }
    config
}

fn check_is_core_module(wasm: &[u8], what: &str) -> Result<(), EngineError> {
    const MAGIC: &[u8; 4] = b"\0asm";
    if wasm.len() < 8 || !wasm.starts_with(MAGIC) {
        let detail = if wasm.is_empty() {
            "the file is empty".to_string()
        } else if wasm.starts_with(&[0x1f, 0x8b]) {
            "it is gzip data: name it *.gz so hoist decompresses it".to_string()
        } else if wasm.len() < 8 && MAGIC.starts_with(wasm.get(..4).unwrap_or(wasm)) {
            format!("only {} bytes, truncated", wasm.len())
        } else {
            let head: String = wasm
                .iter()
                .take(16)
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ");
            format!("it starts with {head} instead of the \\0asm magic")
        };
        return Err(EngineError::NotWasm {
            what: what.to_string(),
            detail,
        });
    }
    // Version field: 1 for core modules; components use a different layer/version.
    if wasm.get(4..8) != Some(&[1, 0, 0, 0][..]) {
        return Err(EngineError::Component {
            what: what.to_string(),
        });
    }
    Ok(())
}

fn compile_error(what: &str, e: wasmtime::Error) -> EngineError {
    EngineError::Compile {
        what: what.to_string(),
        message: format!("{e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiler_names_parse() {
        assert_eq!("Winch".parse::<Compiler>().unwrap(), Compiler::Winch);
        assert_eq!(
            "cranelift".parse::<Compiler>().unwrap(),
            Compiler::Cranelift
        );
        assert!("llvm".parse::<Compiler>().is_err());
    }

    /// A pooled slot is reset to the module's initial memory between instances, and the pool's
    /// size is a hard cap on instances alive at once.
    #[test]
    fn pooled_instances_start_from_the_initial_memory() {
        let pool = InstancePool {
            slots: 2,
            max_memory_bytes: 4 << 20,
            keep_resident_bytes: 1 << 20,
        };
        let engine = FlightEngine::with_instance_pool(Compiler::Winch, None, Some(pool)).unwrap();
        let wasm = wat::parse_str(
            r#"(module
                (memory (export "memory") 4 64)
                (data (i32.const 16) "\07")
                (func (export "swap") (param i32) (result i32)
                  (local $old i32)
                  (local.set $old (i32.load8_u (i32.const 16)))
                  (i32.store8 (i32.const 16) (local.get 0))
                  ;; a page far from the image, written too
                  (i32.store8 (i32.const 200000) (local.get 0))
                  (local.get $old)))"#,
        )
        .unwrap();
        let module = engine.load(&wasm, "pool-test", "pool.wasm").unwrap().module;
        let run = |value: i32| {
            let mut store = wasmtime::Store::new(engine.engine(), ());
            // The engine interrupts on epochs; this test never advances one.
            store.set_epoch_deadline(crate::guest::NO_EPOCH_DEADLINE);
            let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
            let swap = instance
                .get_typed_func::<i32, i32>(&mut store, "swap")
                .unwrap();
            let old = swap.call(&mut store, value).unwrap();
            let memory = instance.get_memory(&mut store, "memory").unwrap();
            assert_eq!(memory.data(&store)[200000], value as u8);
            old
        };
        for value in [42, 43, 44] {
            assert_eq!(
                run(value),
                7,
                "a pooled instance saw an earlier one's write"
            );
        }

        let mut stores: Vec<_> = (0..2)
            .map(|_| {
                let mut store = wasmtime::Store::new(engine.engine(), ());
                wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
                store
            })
            .collect();
        let mut third = wasmtime::Store::new(engine.engine(), ());
        let err = wasmtime::Instance::new(&mut third, &module, &[]).unwrap_err();
        assert!(format!("{err:#}").contains("limit"), "{err:#}");
        stores.pop();
        wasmtime::Instance::new(&mut third, &module, &[]).unwrap();
    }

    /// Code compiled without time limits ignores an expired deadline where the usual code
    /// stops, and the two are cached as different entries of the same module.
    #[test]
    fn code_without_time_limits_is_cached_apart_and_not_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = wat::parse_str(
            r#"(module
                (func (export "count") (param $n i32) (result i32)
                  (local $i i32)
                  (loop $again
                    (local.set $i (i32.add (local.get $i) (i32.const 1)))
                    (br_if $again (i32.lt_u (local.get $i) (local.get $n))))
                  (local.get $i)))"#,
        )
        .unwrap();
        let run = |time_limits: TimeLimits| {
            let engine = FlightEngine::configured(
                Compiler::Cranelift,
                Some(ModuleCache::new(dir.path())),
                None,
                time_limits,
            )
            .unwrap();
            // Cache keys are SHA-256 digests; any well-formed one does here.
            let key = "ab".repeat(32);
            let loaded = engine.load(&wasm, &key, "count.wasm").unwrap();
            let mut store = wasmtime::Store::new(engine.engine(), ());
            // A deadline that has passed before the call starts.
            store.set_epoch_deadline(1);
            engine.engine().increment_epoch();
            engine.engine().increment_epoch();
            let instance = wasmtime::Instance::new(&mut store, &loaded.module, &[]).unwrap();
            let count = instance
                .get_typed_func::<i32, i32>(&mut store, "count")
                .unwrap();
            (loaded.cache_status, count.call(&mut store, 1000).ok())
        };
        assert_eq!(run(TimeLimits::Enforceable), (CacheStatus::Miss, None));
        assert_eq!(
            run(TimeLimits::Unenforceable),
            (CacheStatus::Miss, Some(1000)),
            "code without time limits was taken from the other entry or was interrupted"
        );
        assert_eq!(run(TimeLimits::Unenforceable).0, CacheStatus::Hit);
        assert_eq!(run(TimeLimits::Enforceable).0, CacheStatus::Hit);
    }

    #[test]
    fn non_wasm_inputs_are_named() {
        let engine = FlightEngine::new(Compiler::Winch, None).unwrap();
        let err = |bytes: &[u8]| engine.load(bytes, "x", "m.wasm").err().unwrap().to_string();
        assert!(err(b"").contains("empty"));
        assert!(err(b"\x1f\x8b\x08\x00\x00\x00\x00\x00").contains("gzip"));
        assert!(err(b"\0as").contains("truncated"));
        assert!(err(b"apiVersion: v1\nkind: ConfigMap").contains("instead of the \\0asm magic"));
        assert!(err(b"\0asm\x0d\0\x01\0").contains("component"));
        // Magic and version but garbage after: a validation error with an offset.
        let e = err(b"\0asm\x01\0\0\0\x01\xff\xff\xff");
        assert!(e.contains("not a valid WebAssembly module"), "{e}");
    }
}
