//! The flags every command that loads a module shares (flights, KRM functions, policies):
//! where a module may come from, how its provenance is checked, and where its compiled code
//! is cached. One definition, so the commands cannot drift apart.

use hoist_modules::{BackgroundCompile, CompilerChoice, ModuleOptions};
use hoist_provenance::checksum::Sha256Digest;
use std::path::PathBuf;

/// Provenance and cache flags, flattened into each command that loads a module.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ModuleSourceArgs {
    /// Compile the module without reading or writing the compiled-module cache.
    #[arg(long, alias = "disable-wasmtime-cache")]
    pub no_cache: bool,

    /// Directory of the compiled-module cache [default: $HOIST_CACHE_DIR/modules or
    /// ~/.cache/hoist/modules].
    #[arg(long, value_name = "DIR", alias = "cache-dir")]
    pub compilation_cache: Option<PathBuf>,

    /// Allow plain-http OCI registries (localhost registries always are).
    #[arg(long)]
    pub insecure: bool,

    /// Use only the OCI download cache: a tag resolves to the digest it last resolved to.
    #[arg(long)]
    pub offline: bool,

    /// Refuse modules not signed by one of these public keys (a PEM file or a directory of
    /// *.pem, repeatable). Checked even for allow-listed modules.
    #[arg(
        long,
        value_name = "KEY|DIR",
        env = "HOIST_VERIFY_KEYS",
        value_delimiter = ':'
    )]
    pub verify: Vec<PathBuf>,

    /// Only run modules whose URL matches one of these globs (`*` stays within one `/`
    /// segment; local files match as file:///absolute/path). Repeatable.
    #[arg(long, value_name = "GLOB", env = "HOIST_ALLOW", value_delimiter = ' ')]
    pub allow: Vec<String>,
}

impl ModuleSourceArgs {
    /// The compiled-module cache directory, `None` with `--no-cache`.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        self.compilation_cache
            .clone()
            .or_else(hoist_modules::default_module_cache_dir)
    }

    /// Whether signature keys or an allow list are configured.
    pub fn checks_provenance(&self) -> bool {
        !self.verify.is_empty() || self.allow.iter().any(|p| !p.is_empty())
    }

    /// Module pipeline options for these flags and an expected `checksum`: the compiler and
    /// background compiles as the environment asks (`HOIST_COMPILER`,
    /// `HOIST_BACKGROUND_COMPILE`), everything else as [`ModuleOptions::default`].
    pub fn module_options(&self, checksum: Option<Sha256Digest>) -> anyhow::Result<ModuleOptions> {
        Ok(ModuleOptions {
            checksum,
            verify_keys: self.verify.clone(),
            allow: self.allow.clone(),
            cache_dir: self.cache_dir(),
            insecure: self.insecure,
            offline: self.offline,
            compiler: CompilerChoice::from_env()?,
            background: BackgroundCompile::subprocess_from_env(),
            ..ModuleOptions::default()
        })
    }
}
