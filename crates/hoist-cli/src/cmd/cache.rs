//! `hoist cache`: inspect and clean the compiled-module cache.

use anyhow::Context;
use hoist_provenance::checksum::Sha256Digest;
use hoist_runtime::{Compiler, FlightEngine, ModuleCache, TimeLimits};
use std::path::PathBuf;

/// Arguments of `hoist cache`.
#[derive(clap::Args, Debug)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,

    /// Cache directory [default: $HOIST_CACHE_DIR/modules or ~/.cache/hoist/modules].
    #[arg(long, value_name = "DIR", global = true, alias = "cache-dir")]
    pub compilation_cache: Option<PathBuf>,
}

/// `hoist cache` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum CacheCommand {
    /// List compiled modules in the cache.
    #[command(alias = "list")]
    Ls {
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = ListFormat::Table)]
        output: ListFormat,
    },
    /// Compile a module's optimised (Cranelift) code into the cache; started in the
    /// background by renders that ran on baseline (Winch) code.
    #[command(hide = true)]
    Upgrade {
        /// The module's expected SHA-256.
        #[arg(long)]
        sha256: String,
        /// Compile code that cannot be stopped at a time limit (for runs that set none).
        #[arg(long)]
        no_time_limits: bool,
        /// The module file.
        module: PathBuf,
    },
    /// Remove compiled modules from the cache.
    Clean {
        /// Only remove entries no engine of this hoist can load (code of other hoist or
        /// wasmtime versions, settings or CPUs).
        #[arg(long)]
        stale: bool,
    },
}

/// Output formats of `cache ls`.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum ListFormat {
    /// Aligned columns.
    Table,
    /// JSON array.
    Json,
    /// YAML sequence (the same fields as JSON).
    Yaml,
}

/// Runs `hoist cache`.
pub fn run(args: CacheArgs) -> anyhow::Result<()> {
    let dir = args
        .compilation_cache
        .or_else(ModuleCache::default_dir)
        .context("no cache directory: set HOIST_CACHE_DIR or pass --compilation-cache")?;
    // Entries any engine configuration of this hoist can load are current (config keys).
    let cache = ModuleCache::for_listing(&dir)?;
    match args.command {
        CacheCommand::Ls { output } => {
            let entries = cache.list()?;
            match output {
                ListFormat::Json | ListFormat::Yaml => {
                    let rows: Vec<_> = entries
                        .iter()
                        .map(|e| {
                            serde_json::json!({
                                "module_sha256": e.module_sha256,
                                "compiler": e.compiler,
                                "config_key": e.config_key,
                                "current": e.current,
                                "bytes": e.size,
                                "modified": e.modified.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                                "path": e.path,
                            })
                        })
                        .collect();
                    if matches!(output, ListFormat::Yaml) {
                        print!("{}", serde_saphyr::to_string(&rows)?);
                    } else {
                        println!("{}", serde_json::to_string_pretty(&rows)?);
                    }
                }
                ListFormat::Table => {
                    if entries.is_empty() {
                        eprintln!("the cache at {} is empty", dir.display());
                        return Ok(());
                    }
                    println!(
                        "{:<16} {:<9} {:>9} {:<7} LAST USED",
                        "MODULE", "COMPILER", "SIZE", "USABLE"
                    );
                    for e in &entries {
                        println!(
                            "{:<16} {:<9} {:>8.1}M {:<7} {}",
                            &e.module_sha256[..16.min(e.module_sha256.len())],
                            e.compiler,
                            e.size as f64 / (1024.0 * 1024.0),
                            if e.current { "yes" } else { "no" },
                            e.modified
                                .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                                .unwrap_or_default()
                        );
                    }
                }
            }
        }
        CacheCommand::Upgrade {
            sha256,
            no_time_limits,
            module,
        } => {
            let time_limits = if no_time_limits {
                TimeLimits::Unenforceable
            } else {
                TimeLimits::Enforceable
            };
            upgrade(&dir, &sha256, &module, time_limits)?
        }
        CacheCommand::Clean { stale } => {
            let (count, bytes) = cache.clean(stale)?;
            eprintln!(
                "removed {count} compiled module(s), {:.1} MiB, from {}",
                bytes as f64 / (1024.0 * 1024.0),
                dir.display()
            );
        }
    }
    Ok(())
}

/// `hoist cache upgrade`: compile `module` with Cranelift into the cache at `dir`, then remove
/// the pending copy and the lock that `render` left.
fn upgrade(
    dir: &std::path::Path,
    sha256: &str,
    module: &std::path::Path,
    time_limits: TimeLimits,
) -> anyhow::Result<()> {
    let pending = dir.join("pending");
    let result = Sha256Digest::from_hex(sha256)
        .with_context(|| format!("--sha256 {sha256:?} is not a SHA-256 digest (64 hex digits)"))
        .and_then(|expected| {
            let compiled = compile_optimised(dir, &expected, module, time_limits);
            let lock = hoist_modules::upgrade_lock_name(&expected, time_limits);
            let _ = std::fs::remove_file(pending.join(lock));
            compiled
        });
    if module.starts_with(&pending) {
        let _ = std::fs::remove_file(module);
    }
    result
}

/// Compiles `module`, which must still be `expected`, with Cranelift into the cache at `dir`.
fn compile_optimised(
    dir: &std::path::Path,
    expected: &Sha256Digest,
    module: &std::path::Path,
    time_limits: TimeLimits,
) -> anyhow::Result<()> {
    let wasm = std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
    let actual = Sha256Digest::of(&wasm);
    anyhow::ensure!(
        actual == *expected,
        "{} changed since the render (sha256 {actual})",
        module.display()
    );
    let engine = FlightEngine::configured(
        Compiler::Cranelift,
        Some(ModuleCache::new(dir)),
        None,
        time_limits,
    )?;
    let loaded = engine.load(&wasm, &expected.to_hex(), &module.display().to_string())?;
    eprintln!(
        "optimised code for {expected}: {} in {:?}",
        loaded.cache_status, loaded.load_time
    );
    Ok(())
}
