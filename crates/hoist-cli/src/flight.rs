//! The render pipeline shared by `render` and `takeoff`: fetch → check provenance → compile
//! (or load from cache) → run → parse.

use anyhow::{Context, bail};
use hoist_provenance::checksum::Sha256Digest;
use hoist_resources::{Stages, parse_flight_output};
use hoist_runtime::host::ClusterAccess;
use hoist_runtime::{Compiler, FlightEngine, FlightSpec, ModuleCache, StderrMode};
use hoist_source::{FetchedModule, SourceOptions};
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest stdin hoist reads (resources or flight input).
const MAX_STDIN_BYTES: u64 = 256 * 1024 * 1024;

/// How to find and run a flight: shared by `render` and `takeoff`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct FlightArgs {
    /// The flight: a path, file://, http(s):// or oci:// URL (.gz is decompressed). Without
    /// it, resources are read from stdin (`python3 app.py | hoist render`).
    #[arg(value_name = "MODULE")]
    pub module: Option<String>,

    /// Arguments for the flight (after `--`); argv[0] is the release name.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,

    /// Expected SHA-256 of the (decompressed) module; a mismatch stops before anything runs.
    #[arg(long, value_name = "HEX")]
    pub checksum: Option<String>,

    /// Memory limit of the flight in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 128,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_memory_mib: u64,

    /// Wall-clock limit of the flight (e.g. 10s, 1m30s); negative disables it.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        allow_hyphen_values = true
    )]
    pub timeout: String,

    /// Limit on what the flight may write to stdout, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_output_mib: u64,

    /// Compile the module without reading or writing the compiled-module cache.
    #[arg(long)]
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

/// What the module was, for release history and digest pinning.
#[derive(Debug, Clone)]
pub struct ModuleInfo {
    /// Source URL as recorded in release history (`file:///abs` for local files).
    pub url: String,
    /// SHA-256 of the module (hex).
    pub sha256: String,
    /// SHA-1 of the module (hex): what Yoke records as `source-checksum`. Empty when the
    /// caller did not ask for it (`render_for_output`).
    pub sha1: String,
}

/// A rendered flight.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The stages as the flight produced them (pre-stages not yet split).
    pub stages: Stages,
    /// The module, when there was one (not for stdin input).
    pub module: Option<ModuleInfo>,
}

impl FlightArgs {
    /// The timeout, `None` when disabled.
    pub fn timeout(&self) -> anyhow::Result<Option<Duration>> {
        let text = self.timeout.trim();
        if text.starts_with('-') {
            return Ok(None);
        }
        let parsed = humantime::parse_duration(text)
            .or_else(|_| text.parse::<u64>().map(Duration::from_secs).map_err(|_| ()))
            .map_err(|_| {
                anyhow::anyhow!(
                    "invalid --timeout {text:?}: use a duration such as 10s, 500ms or 2m (negative disables)"
                )
            })?;
        Ok((!parsed.is_zero()).then_some(parsed))
    }

    /// `--checksum`, parsed.
    fn explicit_checksum(&self) -> anyhow::Result<Option<Sha256Digest>> {
        Ok(self
            .checksum
            .as_deref()
            .map(Sha256Digest::from_hex)
            .transpose()?)
    }

    /// The default release name for this module: its file stem.
    pub fn default_release_name(&self) -> String {
        let Some(module) = &self.module else {
            return "stdin".to_string();
        };
        let path = module.split(['?', '#']).next().unwrap_or(module);
        let path = path.split('@').next().unwrap_or(path);
        let last = path.rsplit('/').next().unwrap_or(path);
        let last = if module.starts_with("oci://") {
            last.split(':').next().unwrap_or(last)
        } else {
            last
        };
        let stem = last.split('.').next().unwrap_or(last);
        if stem.is_empty() {
            "release".to_string()
        } else {
            stem.to_string()
        }
    }
}

/// Reads the user's stdin when it is not a terminal; empty otherwise.
fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(Vec::new());
    }
    let mut bytes = Vec::new();
    stdin
        .lock()
        .take(MAX_STDIN_BYTES + 1)
        .read_to_end(&mut bytes)
        .context("reading stdin")?;
    if bytes.len() as u64 > MAX_STDIN_BYTES {
        bail!(
            "stdin is larger than {} MiB; refusing to buffer it",
            MAX_STDIN_BYTES / (1024 * 1024)
        );
    }
    Ok(bytes)
}

fn fetch_module(flight: &FlightArgs, location: &str) -> anyhow::Result<FetchedModule> {
    let checksum = flight.explicit_checksum()?;
    check_allowed(flight, location)?;
    let oci = crate::oci_source::OciSource {
        insecure: flight.insecure,
        offline: flight.offline,
    };
    let started = Instant::now();
    let fetched = hoist_source::fetch(
        location,
        checksum.as_ref(),
        &SourceOptions::default(),
        Some(&oci),
    )?;
    tracing::info!(
        module = location,
        sha256 = %fetched.sha256,
        bytes = fetched.wasm.len(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "module fetched"
    );
    if !flight.verify.is_empty() {
        let keys = crate::cmd::sign::load_keys(&flight.verify)?;
        let verified = crate::cmd::sign::verify_module(&fetched.wasm, &keys, location)?;
        tracing::info!(module = location, key = ?verified, "signature verified");
    }
    Ok(fetched)
}

/// Refuses a module whose URL is outside the allow list, before anything is fetched.
fn check_allowed(flight: &FlightArgs, location: &str) -> anyhow::Result<()> {
    let allow =
        hoist_provenance::allow::AllowList::new(flight.allow.iter().filter(|p| !p.is_empty()))
            .context("invalid --allow pattern")?;
    if allow.is_empty() {
        return Ok(());
    }
    let url = hoist_source::canonical_url(location);
    match allow.check(&url) {
        Ok(Some(pattern)) => {
            tracing::info!(module = location, pattern, "allowed");
            Ok(())
        }
        Ok(None) => bail!(
            "{location} is not allowed: {url} matches none of the allowed patterns ({}); add a pattern with --allow or HOIST_ALLOW",
            allow.patterns().join(", ")
        ),
        Err(e) => bail!("{location} is not allowed: {e}"),
    }
}

/// The digest memo, next to the compiled-module cache; off with `--no-cache`.
fn digest_memo(flight: &FlightArgs) -> Option<hoist_source::DigestMemo> {
    Some(hoist_source::DigestMemo::new(
        cache_dir(flight)?.join("digests"),
    ))
}

/// The warm path: the module's digest from the memo and its code from the cache, with the
/// allow list and checksums checked exactly as on the full path.
fn memo_hit<'e>(
    flight: &FlightArgs,
    memo: &hoist_source::DigestMemo,
    engines: &'e Engines,
    location: &str,
) -> anyhow::Result<Option<(&'e FlightEngine, hoist_runtime::LoadedModule, Sha256Digest)>> {
    let Some(digest) = memo.lookup(location) else {
        return Ok(None);
    };
    let Some((engine, loaded)) = engines.cached(&digest) else {
        return Ok(None);
    };
    check_allowed(flight, location)?;
    let explicit = flight.explicit_checksum()?;
    hoist_provenance::checksum::verify_digest(digest, location, explicit.as_ref())?;
    tracing::info!(module = location, sha256 = %digest, "module unchanged since last run (digest memo)");
    Ok(Some((engine, loaded, digest)))
}

/// Which compiled code a render uses.
///
/// With `HOIST_COMPILER=cranelift|winch`, exactly that compiler. Otherwise (`auto`, the
/// default) tiered, as the benchmarks argue: optimised Cranelift code when the cache has it;
/// else Winch code (compiles ~3.5x faster) now, and a background `hoist cache upgrade`
/// compiles Cranelift code (runs ~30% faster) for the next run.
struct Engines {
    /// The compiler that compiles on a miss, its engine created on first use (a warm tiered
    /// run never needs it).
    baseline_compiler: Compiler,
    baseline_cache: Option<ModuleCache>,
    baseline: std::sync::OnceLock<FlightEngine>,
    /// Cranelift, looked up first, when tiered and caching.
    optimised: Option<FlightEngine>,
}

fn cache_dir(flight: &FlightArgs) -> Option<PathBuf> {
    if flight.no_cache {
        return None;
    }
    flight
        .compilation_cache
        .clone()
        .or_else(ModuleCache::default_dir)
}

fn engines_for(flight: &FlightArgs) -> anyhow::Result<Engines> {
    let cache = cache_dir(flight).map(ModuleCache::new);
    let fixed = match std::env::var("HOIST_COMPILER") {
        Ok(name) if !name.is_empty() && !name.eq_ignore_ascii_case("auto") => {
            Some(name.parse::<Compiler>()?)
        }
        _ => None,
    };
    let optimised = match (&fixed, &cache) {
        (None, Some(cache)) => Some(FlightEngine::new(Compiler::Cranelift, Some(cache.clone()))?),
        _ => None,
    };
    Ok(Engines {
        baseline_compiler: fixed.unwrap_or(Compiler::Winch),
        baseline_cache: cache,
        baseline: std::sync::OnceLock::new(),
        optimised,
    })
}

impl Engines {
    /// The baseline engine, created on first use.
    fn baseline(&self) -> anyhow::Result<&FlightEngine> {
        if let Some(engine) = self.baseline.get() {
            return Ok(engine);
        }
        let engine = FlightEngine::new(self.baseline_compiler, self.baseline_cache.clone())?;
        Ok(self.baseline.get_or_init(|| engine))
    }

    /// Cached code for `sha256`, optimised first.
    fn cached(
        &self,
        sha256: &Sha256Digest,
    ) -> Option<(&FlightEngine, hoist_runtime::LoadedModule)> {
        let hex = sha256.to_hex();
        if let Some(optimised) = &self.optimised
            && let Some(loaded) = optimised.load_cached(&hex)
        {
            return Some((optimised, loaded));
        }
        let baseline = self.baseline().ok()?;
        baseline.load_cached(&hex).map(|loaded| (baseline, loaded))
    }

    /// When tiered and the module ran on baseline code, starts a background compile of the
    /// optimised code (at most one per module at a time). `module` is the module's file: the
    /// user's, or a copy under the cache's `pending/` directory for remote modules.
    fn schedule_upgrade(
        &self,
        flight: &FlightArgs,
        sha256: &Sha256Digest,
        module: UpgradeSource<'_>,
    ) {
        if self.optimised.is_none()
            || std::env::var("HOIST_BACKGROUND_COMPILE").as_deref() == Ok("0")
        {
            return;
        }
        let Some(dir) = cache_dir(flight) else { return };
        if let Err(e) = spawn_upgrade(&dir, sha256, module) {
            tracing::debug!("could not start the background compile: {e}");
        }
    }
}

/// Where the background compile reads the module from.
enum UpgradeSource<'a> {
    /// A local file (re-hashed by the upgrade before use).
    File(&'a str),
    /// Bytes only in memory (downloaded): written under the cache first.
    Bytes(&'a [u8]),
}

fn spawn_upgrade(
    dir: &std::path::Path,
    sha256: &Sha256Digest,
    module: UpgradeSource<'_>,
) -> anyhow::Result<()> {
    let pending = dir.join("pending");
    std::fs::create_dir_all(&pending)?;
    let lock = pending.join(format!("{sha256}.lock"));
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
    std::fs::write(&lock, std::process::id().to_string())?;
    let path = match module {
        UpgradeSource::File(location) => {
            PathBuf::from(location.strip_prefix("file://").unwrap_or(location))
        }
        UpgradeSource::Bytes(bytes) => {
            let path = pending.join(format!("{sha256}.wasm"));
            let tmp = pending.join(format!("{sha256}.wasm.{}", std::process::id()));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &path)?;
            path
        }
    };
    std::process::Command::new(std::env::current_exe()?)
        .args(["cache", "upgrade", "--compilation-cache"])
        .arg(dir)
        .arg("--sha256")
        .arg(sha256.to_hex())
        .arg(&path)
        .env_remove("HOIST_COMPILER")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    tracing::info!(sha256 = %sha256, "compiling optimised code in the background for the next run");
    Ok(())
}

/// Runs the flight and returns its raw stdout (for `takeoff --stdout`), or stdin itself when
/// no module is given.
pub fn run_flight_raw(
    flight: &FlightArgs,
    release: &str,
    namespace: &str,
    cluster: Option<Arc<dyn ClusterAccess>>,
) -> anyhow::Result<Vec<u8>> {
    Ok(run(flight, release, namespace, cluster, Digests::Sha256)?.0)
}

/// Renders the flight into stages, with the module's digests for release history.
pub fn render_flight(
    flight: &FlightArgs,
    release: &str,
    namespace: &str,
    cluster: Option<Arc<dyn ClusterAccess>>,
) -> anyhow::Result<Rendered> {
    render_with(flight, release, namespace, cluster, Digests::Sha256AndSha1)
}

/// Renders the flight for printing only: no SHA-1 (release history needs it, a render does
/// not, and hashing a large module twice is measurable on a warm run).
pub fn render_for_output(
    flight: &FlightArgs,
    release: &str,
    namespace: &str,
) -> anyhow::Result<Rendered> {
    render_with(flight, release, namespace, None, Digests::Sha256)
}

/// Which digests of the module to compute.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Digests {
    Sha256,
    Sha256AndSha1,
}

fn render_with(
    flight: &FlightArgs,
    release: &str,
    namespace: &str,
    cluster: Option<Arc<dyn ClusterAccess>>,
    digests: Digests,
) -> anyhow::Result<Rendered> {
    let (stdout, module) = run(flight, release, namespace, cluster, digests)?;
    let source = flight.module.as_deref().unwrap_or("stdin");
    let stages =
        parse_flight_output(&stdout).with_context(|| format!("invalid output from {source}"))?;
    Ok(Rendered { stages, module })
}

fn run(
    flight: &FlightArgs,
    release: &str,
    namespace: &str,
    cluster: Option<Arc<dyn ClusterAccess>>,
    digests: Digests,
) -> anyhow::Result<(Vec<u8>, Option<ModuleInfo>)> {
    let timeout = flight.timeout()?;
    let Some(location) = flight.module.as_deref() else {
        if !flight.verify.is_empty() || flight.allow.iter().any(|p| !p.is_empty()) {
            bail!(
                "signature keys or an allow list are configured (--verify/HOIST_VERIFY_KEYS, --allow/HOIST_ALLOW), but resources piped on stdin have no provenance to check: pass a module instead"
            );
        }
        if std::io::stdin().is_terminal() {
            bail!(
                "no module given and stdin is a terminal: pass a module (path, URL or oci://) or pipe resources in (e.g. `python3 app.py | hoist render`)"
            );
        }
        return Ok((read_stdin()?, None));
    };

    let engines = engines_for(flight)?;
    let memo = digest_memo(flight);
    // Warm path: an unchanged local file whose compiled code is cached is neither read nor
    // hashed again (its digest is remembered by file identity). Signature checks and SHA-1
    // for release history need the bytes, so they take the full path.
    let fast = match (&memo, digests, flight.verify.is_empty()) {
        (Some(memo), Digests::Sha256, true) => memo_hit(flight, memo, &engines, location)?,
        _ => None,
    };
    let (engine, loaded, sha256, url, wasm) = match fast {
        Some((engine, loaded, sha256)) => {
            if loaded.compiler != Compiler::Cranelift {
                engines.schedule_upgrade(flight, &sha256, UpgradeSource::File(location));
            }
            (
                engine,
                loaded,
                sha256,
                hoist_source::canonical_url(location),
                None,
            )
        }
        None => {
            let fetched = fetch_module(flight, location)?;
            let (engine, loaded) = match engines.cached(&fetched.sha256) {
                Some(hit) => hit,
                None => {
                    let baseline = engines.baseline()?;
                    let loaded =
                        baseline.load(&fetched.wasm, &fetched.sha256.to_hex(), location)?;
                    (baseline, loaded)
                }
            };
            if let Some(memo) = &memo {
                memo.record(location, &fetched.sha256);
            }
            if loaded.compiler != Compiler::Cranelift
                && loaded.cache_status != hoist_runtime::CacheStatus::Disabled
            {
                let source = if location.contains("://") && !location.starts_with("file://") {
                    UpgradeSource::Bytes(&fetched.wasm)
                } else {
                    UpgradeSource::File(location)
                };
                engines.schedule_upgrade(flight, &fetched.sha256, source);
            }
            (
                engine,
                loaded,
                fetched.sha256,
                fetched.url,
                Some(fetched.wasm),
            )
        }
    };
    tracing::info!(
        module = location,
        compiler = %loaded.compiler,
        cache = %loaded.cache_status,
        ms = loaded.load_time.as_secs_f64() * 1000.0,
        "module ready"
    );

    let spec = FlightSpec {
        what: location,
        release,
        namespace,
        args: &flight.args,
        stdin: read_stdin()?,
        max_memory_bytes: flight.max_memory_mib * 1024 * 1024,
        timeout,
        max_stdout_bytes: (flight.max_output_mib * 1024 * 1024) as usize,
        stderr: StderrMode::Stream,
        cluster,
    };
    let output = hoist_runtime::run_flight(engine, &loaded, spec)?;
    tracing::info!(
        module = location,
        ms = output.run_time.as_secs_f64() * 1000.0,
        stdout_bytes = output.stdout.len(),
        "flight finished"
    );
    let info = ModuleInfo {
        url,
        sha256: sha256.to_hex(),
        sha1: match (digests, &wasm) {
            (Digests::Sha256AndSha1, Some(wasm)) => hoist_release::state::sha1_hex(wasm),
            _ => String::new(),
        },
    };
    Ok((output.stdout, Some(info)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(module: Option<&str>, timeout: &str) -> FlightArgs {
        FlightArgs {
            module: module.map(str::to_string),
            timeout: timeout.to_string(),
            ..FlightArgs::default()
        }
    }

    #[test]
    fn timeouts_parse_like_yoke() {
        assert_eq!(
            args(None, "10s").timeout().unwrap(),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            args(None, "1m30s").timeout().unwrap(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            args(None, "250ms").timeout().unwrap(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(args(None, "-1s").timeout().unwrap(), None);
        assert_eq!(args(None, "-1").timeout().unwrap(), None);
        assert!(args(None, "soon").timeout().is_err());
    }

    #[test]
    fn release_names_default_to_the_file_stem() {
        let name = |m: &str| args(Some(m), "1s").default_release_name();
        assert_eq!(name("./flights/hello.wasm"), "hello");
        assert_eq!(name("hello.wasm.gz"), "hello");
        assert_eq!(name("https://h/x/web-app.wasm?v=1"), "web-app");
        assert_eq!(name("oci://127.0.0.1:5000/org/redis:v1.2"), "redis");
        assert_eq!(name("oci://r/org/redis@sha256:abc"), "redis");
        assert_eq!(args(None, "1s").default_release_name(), "stdin");
    }
}
