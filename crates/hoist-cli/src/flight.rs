//! The render pipeline shared by `render` and `takeoff`: fetch → check provenance → compile
//! (or load from cache) → run → parse.

use crate::module_args::ModuleSourceArgs;
use anyhow::{Context, bail};
use hoist_modules::{FlightModule, InterpreterChoice, ModulePipeline};
use hoist_provenance::checksum::Sha256Digest;
use hoist_resources::{Stages, parse_flight_output};
use hoist_runtime::host::ClusterAccess;
use hoist_runtime::tier0::{Interpreted, InterpreterOptions, run_flight_interpreted};
use hoist_runtime::{FlightSpec, StderrMode};
use std::io::{IsTerminal, Read};
use std::sync::Arc;
use std::time::Duration;

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

    /// Provenance checks and the compiled-module cache.
    #[command(flatten)]
    pub source: ModuleSourceArgs,
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
        parse_timeout(&self.timeout)
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

/// Parses `--timeout` as Yoke does: a duration (10s, 500ms, 1m30s) or whole seconds; zero or
/// negative disables it (`None`). Shared by every command that runs a module.
pub fn parse_timeout(text: &str) -> anyhow::Result<Option<Duration>> {
    let text = text.trim();
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

/// The module pipeline these arguments describe.
pub fn pipeline(flight: &FlightArgs) -> anyhow::Result<ModulePipeline> {
    let options = flight.source.module_options(flight.explicit_checksum()?)?;
    Ok(ModulePipeline::new(options)?)
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
        if flight.source.checks_provenance() {
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

    let pipeline = pipeline(flight)?;
    let need = match digests {
        Digests::Sha256 => hoist_modules::Digests::Sha256,
        Digests::Sha256AndSha1 => hoist_modules::Digests::WithBytes,
    };
    let module = pipeline.load_flight(location, need, InterpreterChoice::from_env()?)?;
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
    let (output, info, wasm) = match module {
        FlightModule::Compiled(ready) => {
            let output = hoist_runtime::run_flight(ready.engine, &ready.loaded, spec)?;
            (output, ready.info, ready.wasm)
        }
        FlightModule::Interpreted(module) => {
            let options = InterpreterOptions {
                budget: module.budget,
            };
            match run_flight_interpreted(module.validator.engine(), &module.wasm, &spec, options) {
                Interpreted::Finished(output) => (output?, module.info, Some(module.wasm)),
                Interpreted::Declined { reason } => {
                    tracing::info!(module = location, reason, "compiling after all");
                    let ready = pipeline.compile_interpreted(module)?;
                    let output = hoist_runtime::run_flight(ready.engine, &ready.loaded, spec)?;
                    (output, ready.info, ready.wasm)
                }
            }
        }
    };
    tracing::info!(
        module = location,
        ms = output.run_time.as_secs_f64() * 1000.0,
        stdout_bytes = output.stdout.len(),
        "flight finished"
    );
    let info = ModuleInfo {
        url: info.url,
        sha256: info.sha256.to_hex(),
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
