//! `hoist policy`: Kubewarden admission policies (run, bench, annotate, inspect), with kwctl's
//! flags and output.

use crate::kubecontext::KubeTarget;
use crate::module_args::ModuleSourceArgs;
use anyhow::{Context, bail};
use hoist_modules::{Digests, InstancePool, ModuleOptions, ModulePipeline, TimeLimits};
use hoist_policy::capabilities::{
    self, CapabilityBackend, HostCapabilities, NoBackend, Recorder, Replayer,
};
use hoist_policy::metadata::{self, ContextAwareResource, ExecutionMode, Metadata};
use hoist_policy::{Limits, Policy, ValidateRequest};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `hoist policy`.
#[derive(clap::Args, Debug)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(clap::Subcommand, Debug)]
enum PolicyCommand {
    /// Evaluate a request against a policy and print the AdmissionResponse (as `kwctl run`).
    Run(RunArgs),
    /// Time `validate_settings` and `validate` on a policy (as `kwctl bench`).
    Bench(BenchArgs),
    /// Write policy metadata into a module's `io.kubewarden.metadata` section.
    Annotate(AnnotateArgs),
    /// Show a policy's metadata, execution mode and signature.
    Inspect(InspectArgs),
}

/// Where the module comes from and how it is checked (as for flights).
#[derive(clap::Args, Debug, Clone)]
struct ModuleArgs {
    /// Expected SHA-256 of the module.
    #[arg(long, value_name = "HEX")]
    checksum: Option<String>,
    /// Provenance checks and the compiled-module cache.
    #[command(flatten)]
    source: ModuleSourceArgs,
}

/// Request, settings and host capabilities: shared by `run` and `bench`.
#[derive(clap::Args, Debug, Clone)]
struct EvalArgs {
    /// The policy: a path, file://, http(s)://, oci:// or registry:// reference.
    #[arg(value_name = "MODULE")]
    module: String,
    /// The request: an AdmissionRequest or AdmissionReview JSON file, or `-` for stdin.
    #[arg(short = 'r', long, value_name = "FILE")]
    request_path: String,
    /// Settings file (YAML or JSON).
    #[arg(
        short = 's',
        long,
        value_name = "FILE",
        conflicts_with = "settings_json"
    )]
    settings_path: Option<PathBuf>,
    /// Settings as inline JSON.
    #[arg(long, value_name = "JSON")]
    settings_json: Option<String>,
    /// Execution mode: kubewarden-wapc (or kubewarden), wasi, opa, gatekeeper [default: from
    /// the metadata, else detected from the module's exports].
    #[arg(short = 'e', long, value_name = "MODE")]
    execution_mode: Option<String>,
    /// The request is a raw JSON document, not an AdmissionRequest.
    #[arg(long)]
    raw: bool,
    /// Grant the Kubernetes resources listed in the policy's contextAwareResources, read from
    /// the cluster of the kubeconfig (or from a replayed session).
    #[arg(long)]
    allow_context_aware: bool,
    /// Record the policy's host-capability calls to FILE (kwctl's session format).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "replay_host_capabilities_interactions"
    )]
    record_host_capabilities_interactions: Option<PathBuf>,
    /// Answer host-capability calls from a recorded session FILE, in order.
    #[arg(long, value_name = "FILE")]
    replay_host_capabilities_interactions: Option<PathBuf>,
    /// The answer to the policy's DNS lookups of HOST (repeatable); hoist resolves nothing
    /// else for a policy.
    #[arg(long, value_name = "HOST=IP[,IP...]")]
    dns_answer: Vec<String>,
    /// Time limit of each call into the policy (e.g. 2s, 500ms); negative disables it, and
    /// then the policy is compiled without interruption checks, as kwctl runs policies: up to
    /// a fifth faster, but a policy that loops is never stopped.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        allow_hyphen_values = true
    )]
    timeout: String,
    /// Memory limit of the policy in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_memory_mib: u64,
    #[command(flatten)]
    source: ModuleArgs,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    eval: EvalArgs,
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    #[command(flatten)]
    eval: EvalArgs,
    /// Seconds of warm-up per label.
    #[arg(long, value_name = "SECONDS", default_value_t = 3.0)]
    warm_up_time: f64,
    /// Seconds of measurement per label.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    measurement_time: f64,
    /// Samples per label.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    num_samples: u64,
    /// Accepted for kwctl compatibility (hoist reports exact sample statistics).
    #[arg(long, value_name = "N")]
    num_resamples: Option<u64>,
    /// Output: text (kwctl's lines plus a summary table) or json.
    #[arg(short = 'o', long, value_name = "FORMAT", default_value = "text")]
    output: String,
}

#[derive(clap::Args, Debug)]
struct AnnotateArgs {
    /// The policy's metadata.yml.
    #[arg(short = 'm', long, value_name = "FILE")]
    metadata_path: PathBuf,
    /// A README whose text becomes the `io.kubewarden.policy.usage` annotation.
    #[arg(short = 'u', long, value_name = "FILE")]
    usage_path: Option<PathBuf>,
    /// Where to write the annotated module.
    #[arg(short = 'o', long, value_name = "FILE")]
    output_path: PathBuf,
    /// The module to annotate (a local file).
    #[arg(value_name = "MODULE")]
    module: PathBuf,
}

#[derive(clap::Args, Debug)]
struct InspectArgs {
    /// The policy: a path, file://, http(s)://, oci:// or registry:// reference.
    #[arg(value_name = "MODULE")]
    module: String,
    /// Output: text, yaml or json (the metadata).
    #[arg(short = 'o', long, value_name = "FORMAT", default_value = "text")]
    output: String,
    #[command(flatten)]
    source: ModuleArgs,
}

/// Runs `hoist policy`.
pub fn run(args: PolicyArgs, kube: &KubeTarget) -> anyhow::Result<ExitCode> {
    match args.command {
        PolicyCommand::Run(args) => run_policy(args, kube),
        PolicyCommand::Bench(args) => bench(args, kube),
        PolicyCommand::Annotate(args) => annotate(args),
        PolicyCommand::Inspect(args) => inspect(args),
    }
}

fn pipeline(
    args: &ModuleArgs,
    pool: Option<InstancePool>,
    time_limits: TimeLimits,
) -> anyhow::Result<ModulePipeline> {
    let checksum = args
        .checksum
        .as_deref()
        .map(hoist_provenance::checksum::Sha256Digest::from_hex)
        .transpose()?;
    Ok(ModulePipeline::new(ModuleOptions {
        instance_pool: pool,
        time_limits,
        ..args.source.module_options(checksum)?
    })?)
}

/// kwctl's `registry://` is hoist's `oci://`.
fn location(module: &str) -> String {
    match module.strip_prefix("registry://") {
        Some(rest) => format!("oci://{rest}"),
        None => module.to_string(),
    }
}

fn read_input(path: &str, what: &str) -> anyhow::Result<Vec<u8>> {
    if path == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .take(256 * 1024 * 1024)
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading the {what} from stdin"))?;
        return Ok(bytes);
    }
    std::fs::read(path).with_context(|| format!("cannot read the {what} {path}"))
}

/// Settings: inline JSON or a YAML/JSON file; an object, or null for none.
fn settings(eval: &EvalArgs) -> anyhow::Result<Value> {
    let (value, what): (Value, String) = if let Some(json) = &eval.settings_json {
        (
            serde_json::from_str(json)
                .with_context(|| format!("--settings-json is not valid JSON: {json}"))?,
            "--settings-json".into(),
        )
    } else if let Some(path) = &eval.settings_path {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the settings file {}", path.display()))?;
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_saphyr::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "the settings file {} is not valid YAML or JSON: {e}",
                    path.display()
                )
            })?
        };
        (value, path.display().to_string())
    } else {
        (Value::Null, String::new())
    };
    match value {
        Value::Null => Ok(json!({})),
        Value::Object(_) => Ok(value),
        other => bail!("the settings in {what} must be an object (a map of settings), not {other}"),
    }
}

/// A loaded, checked, compiled policy module.
struct Loaded {
    module: hoist_runtime::LoadedModule,
    wasm: Vec<u8>,
    what: String,
}

fn load(
    module: &str,
    args: &ModuleArgs,
    pool: Option<InstancePool>,
    time_limits: TimeLimits,
) -> anyhow::Result<Loaded> {
    let pipeline = pipeline(args, pool, time_limits)?;
    let location = location(module);
    let ready = pipeline.load(&location, Digests::WithBytes)?;
    let wasm = match ready.wasm {
        Some(w) => w,
        None => bail!("{module}: the module pipeline did not return its bytes"),
    };
    Ok(Loaded {
        module: ready.loaded,
        wasm,
        what: module.to_string(),
    })
}

/// The policy, its settings and request, and the host capabilities for a `run` or `bench`.
struct Session {
    policy: Policy,
    settings: Value,
    request: ValidateRequest,
    host: HostCapabilities,
    limits: Limits,
    recorder: Option<(Arc<Recorder>, PathBuf)>,
    replayer: Option<Arc<Replayer>>,
    _runtime: Option<tokio::runtime::Runtime>,
}

/// `repeated`: the policy will be evaluated many times (bench), so its instances come from a
/// pool of reused slots rather than fresh mappings (see [`InstancePool`]).
fn session(eval: &EvalArgs, kube: &KubeTarget, repeated: bool) -> anyhow::Result<Session> {
    let mode = eval
        .execution_mode
        .as_deref()
        .map(str::parse::<ExecutionMode>)
        .transpose()?;
    let settings = settings(eval)?;
    let request_bytes = read_input(&eval.request_path, "request")?;
    let request_what = if eval.request_path == "-" {
        "stdin"
    } else {
        &eval.request_path
    };
    let request = ValidateRequest::parse(&request_bytes, eval.raw, request_what)?;
    let max_memory_bytes = eval.max_memory_mib * 1024 * 1024;
    let pool = repeated.then(|| InstancePool::for_repeated_runs(max_memory_bytes));
    let timeout = crate::flight::parse_timeout(&eval.timeout)?;
    // With no time limit there is nothing to stop the policy at, so its code need not check
    // for one (about a fifth faster on Rego; kwctl runs policies that way too).
    let time_limits = match timeout {
        Some(_) => TimeLimits::Enforceable,
        None => TimeLimits::Unenforceable,
    };
    let loaded = load(&eval.module, &eval.source, pool, time_limits)?;
    let metadata = metadata::read_metadata(&loaded.wasm, &loaded.what)?;
    let policy = Policy::new(&loaded.module.module, metadata, mode, &loaded.what)?;

    let listed: BTreeSet<ContextAwareResource> = policy
        .metadata()
        .map(|m| m.context_aware_resources.clone())
        .unwrap_or_default();
    let granted = if eval.allow_context_aware {
        listed
    } else {
        if !listed.is_empty() {
            tracing::warn!(
                "{} is context aware ({} resource types) but --allow-context-aware was not given: its Kubernetes calls will fail",
                loaded.what,
                listed.len()
            );
        }
        BTreeSet::new()
    };
    let mut runtime = None;
    let mut replayer = None;
    let base: Arc<dyn CapabilityBackend> =
        if let Some(path) = &eval.replay_host_capabilities_interactions {
            let exchanges = capabilities::read_session(path)?;
            let r = Arc::new(Replayer::new(exchanges, &path.display().to_string()));
            replayer = Some(r.clone());
            r
        } else if eval.allow_context_aware {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .context("cannot start the async runtime for Kubernetes access")?;
            let conn = rt
                .block_on(hoist_release::connect(
                    kube.kubeconfig.as_deref(),
                    kube.context.as_deref(),
                ))
                .context("--allow-context-aware needs a cluster: cannot use the kubeconfig")?;
            let backend = Arc::new(hoist_policy::kube::KubeBackend::new(
                conn,
                rt.handle().clone(),
            ));
            runtime = Some(rt);
            backend
        } else {
            Arc::new(NoBackend)
        };
    // Certificates are verified and DNS answered locally, OCI manifests come from the
    // registries (unless a session is replayed).
    let base: Arc<dyn CapabilityBackend> = if replayer.is_some() {
        base
    } else {
        let mut dns = std::collections::BTreeMap::new();
        for answer in &eval.dns_answer {
            let (host, ips) =
                hoist_policy::services::parse_dns_answer(answer).map_err(anyhow::Error::msg)?;
            dns.entry(host).or_insert_with(Vec::new).extend(ips);
        }
        // Registry questions (`oci`) go to the registries through hoist's client.
        let oci = hoist_policy::registry::OciBackend::new(
            hoist_oci::PullOptions {
                insecure: eval.source.source.insecure,
                offline: eval.source.source.offline,
                ..Default::default()
            },
            base,
        )?;
        Arc::new(hoist_policy::services::LocalServices::new(
            dns,
            Arc::new(oci),
        ))
    };
    let (backend, recorder): (Arc<dyn CapabilityBackend>, _) =
        match &eval.record_host_capabilities_interactions {
            Some(path) => {
                let r = Arc::new(Recorder::new(base));
                (r.clone(), Some((r, path.clone())))
            }
            None => (base, None),
        };
    let host = HostCapabilities {
        granted,
        backend,
        policy: loaded.what.clone(),
    };
    let limits = Limits {
        timeout,
        max_memory_bytes,
    };
    Ok(Session {
        policy,
        settings,
        request,
        host,
        limits,
        recorder,
        replayer,
        _runtime: runtime,
    })
}

impl Session {
    fn finish(&self) -> anyhow::Result<()> {
        if let Some((recorder, path)) = &self.recorder {
            recorder.save(path)?;
        }
        if let Some(replayer) = &self.replayer
            && replayer.remaining() > 0
        {
            tracing::warn!(
                "{} recorded host-capability exchanges were not used",
                replayer.remaining()
            );
        }
        Ok(())
    }
}

fn run_policy(args: RunArgs, kube: &KubeTarget) -> anyhow::Result<ExitCode> {
    let session = session(&args.eval, kube, false)?;
    let mut evaluator = session
        .policy
        .evaluator(session.host.clone(), session.limits)?;
    let check = evaluator.validate_settings(&session.settings);
    if !check.valid {
        session.finish()?;
        bail!(
            "Provided settings are not valid: {}",
            check.message.unwrap_or_default()
        );
    }
    let response = evaluator.validate(&session.request, &session.settings);
    drop(evaluator);
    session.finish()?;
    println!("{}", response.to_json_line());
    Ok(ExitCode::SUCCESS)
}

/// Figures for one label.
#[derive(Debug, Clone, serde::Serialize)]
struct Figures {
    mean_ns: f64,
    median_ns: f64,
    p99_ns: f64,
    min_ns: f64,
    max_ns: f64,
    stddev_ns: f64,
    evaluations_per_second: f64,
    iterations: u64,
    samples: u64,
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3}s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.3}ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.3}µs", ns / 1e3)
    } else {
        format!("{ns:.1}ns")
    }
}

/// Warm-up then measurement of `f`, as kwctl bench (tiny-bench) does: samples of batched
/// iterations; statistics are over the per-iteration time of each sample.
fn measure(label: &str, args: &BenchArgs, text: bool, mut f: impl FnMut()) -> Figures {
    let warm_up = Duration::from_secs_f64(args.warm_up_time.max(0.0));
    if text {
        eprintln!("{label}: warming up for {:.2}s", warm_up.as_secs_f64());
    }
    let started = Instant::now();
    let mut warm_iterations = 0u64;
    loop {
        f();
        warm_iterations += 1;
        if started.elapsed() >= warm_up {
            break;
        }
    }
    let warm_mean = started.elapsed().as_secs_f64() / warm_iterations as f64;
    let budget = args.measurement_time.max(0.001);
    let samples = args.num_samples.max(1);
    let per_sample = ((budget / warm_mean) / samples as f64).floor().max(1.0) as u64;
    if text {
        eprintln!(
            "{label}: mean warm up execution time {} running {} iterations",
            fmt_ns(warm_mean * 1e9),
            per_sample * samples
        );
    }
    let measured = Instant::now();
    let mut times = Vec::with_capacity(samples as usize);
    for _ in 0..samples {
        let t = Instant::now();
        for _ in 0..per_sample {
            f();
        }
        times.push(t.elapsed().as_nanos() as f64 / per_sample as f64);
    }
    let total = measured.elapsed();
    let n = times.len() as f64;
    let mean = times.iter().sum::<f64>() / n;
    let var = times.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / n;
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| sorted[(((sorted.len() - 1) as f64) * p).round() as usize];
    let figures = Figures {
        mean_ns: mean,
        median_ns: pct(0.5),
        p99_ns: pct(0.99),
        min_ns: sorted[0],
        max_ns: sorted[sorted.len() - 1],
        stddev_ns: var.sqrt(),
        evaluations_per_second: if mean > 0.0 { 1e9 / mean } else { 0.0 },
        iterations: per_sample * samples,
        samples,
    };
    if text {
        println!(
            "{label} [{} iterations in {:.2}s with {} samples]:",
            figures.iterations,
            total.as_secs_f64(),
            samples
        );
        println!(
            "elapsed [min mean max]: [{} {} {}] (sample data: med = {}, var = {}², stddev = {})",
            fmt_ns(figures.min_ns),
            fmt_ns(mean),
            fmt_ns(figures.max_ns),
            fmt_ns(figures.median_ns),
            fmt_ns(var),
            fmt_ns(figures.stddev_ns)
        );
    }
    figures
}

fn bench(args: BenchArgs, kube: &KubeTarget) -> anyhow::Result<ExitCode> {
    let text = match args.output.as_str() {
        "text" => true,
        "json" => false,
        other => bail!("unknown output format {other:?}: use text or json"),
    };
    let session = session(&args.eval, kube, true)?;
    let cold = Instant::now();
    let mut evaluator = session
        .policy
        .evaluator(session.host.clone(), session.limits)?;
    let check = evaluator.validate_settings(&session.settings);
    if !check.valid {
        bail!(
            "Provided settings are not valid: {}",
            check.message.unwrap_or_default()
        );
    }
    let first = evaluator.validate(&session.request, &session.settings);
    let cold_ns = cold.elapsed().as_nanos() as f64;
    if first.status.as_ref().is_some_and(|s| s.code == Some(500)) {
        tracing::warn!(
            "the first evaluation failed ({}); the figures time that failure",
            first
                .status
                .as_ref()
                .and_then(|s| s.message.clone())
                .unwrap_or_default()
        );
    }
    let settings_figures = measure("validate_settings", &args, text, || {
        let _ = evaluator.validate_settings(&session.settings);
    });
    let replayer = session.replayer.clone();
    let validate_figures = measure("validate", &args, text, || {
        if let Some(r) = &replayer {
            r.rewind();
        }
        let _ = evaluator.validate(&session.request, &session.settings);
    });
    drop(evaluator);
    if text {
        println!();
        println!(
            "{:<18} {:>12} {:>12} {:>12} {:>14} {:>11}",
            "label", "mean", "median", "p99", "evaluations/s", "iterations"
        );
        for (label, f) in [
            ("validate_settings", &settings_figures),
            ("validate", &validate_figures),
        ] {
            println!(
                "{:<18} {:>12} {:>12} {:>12} {:>14.1} {:>11}",
                label,
                fmt_ns(f.mean_ns),
                fmt_ns(f.median_ns),
                fmt_ns(f.p99_ns),
                f.evaluations_per_second,
                f.iterations
            );
        }
        println!(
            "cold start (instantiate + validate_settings + first validate): {}",
            fmt_ns(cold_ns)
        );
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "validate": validate_figures,
                "validate_settings": settings_figures,
                "cold_start_ns": cold_ns,
                "execution_mode": session.policy.mode().name(),
            }))?
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn annotate(args: AnnotateArgs) -> anyhow::Result<ExitCode> {
    let what = args.module.display().to_string();
    let wasm =
        std::fs::read(&args.module).with_context(|| format!("cannot read the module {what}"))?;
    let yaml = std::fs::read_to_string(&args.metadata_path).with_context(|| {
        format!(
            "cannot read the metadata file {}",
            args.metadata_path.display()
        )
    })?;
    let metadata = Metadata::from_yaml(&yaml, &args.metadata_path.display().to_string())?;
    let usage = args
        .usage_path
        .as_ref()
        .map(|p| {
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the usage file {}", p.display()))
        })
        .transpose()?;
    let pipeline = pipeline(
        &ModuleArgs {
            checksum: None,
            source: ModuleSourceArgs::default(),
        },
        None,
        TimeLimits::Enforceable,
    )?;
    let ready = pipeline.load_bytes(wasm.clone(), &what)?;
    let annotated = hoist_policy::annotate(&ready.loaded.module, &wasm, metadata, usage, &what)?;
    write_atomically(&args.output_path, &annotated)?;
    Ok(ExitCode::SUCCESS)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("policy"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.module, &args.source, None, TimeLimits::Enforceable)?;
    let metadata = metadata::read_metadata(&loaded.wasm, &loaded.what)?;
    let kind = metadata::module_kind(loaded.module.module.exports().map(|e| e.name()));
    let mode = metadata::decide_mode(None, metadata.as_ref(), kind, &loaded.what);
    let signature = hoist_provenance::signature::read_signature(&loaded.wasm)
        .ok()
        .flatten();
    match args.output.as_str() {
        "json" | "yaml" => {
            let Some(m) = &metadata else {
                bail!(
                    "{} has no io.kubewarden.metadata section: annotate it with `hoist policy annotate`",
                    loaded.what
                );
            };
            let text = if args.output == "json" {
                serde_json::to_string_pretty(m)?
            } else {
                serde_saphyr::to_string(m).map_err(|e| anyhow::anyhow!("{e}"))?
            };
            println!("{}", text.trim_end());
        }
        "text" => {
            let annotation = |key: &str| -> String {
                metadata
                    .as_ref()
                    .and_then(|m| m.annotations.as_ref())
                    .and_then(|a| a.get(key))
                    .cloned()
                    .unwrap_or_default()
            };
            println!("Details");
            for (label, key) in [
                ("title", "io.kubewarden.policy.title"),
                ("version", "io.kubewarden.policy.version"),
                ("description", "io.kubewarden.policy.description"),
                ("author", "io.kubewarden.policy.author"),
                ("url", "io.kubewarden.policy.url"),
                ("source", "io.kubewarden.policy.source"),
                ("license", "io.kubewarden.policy.license"),
            ] {
                println!("{:<28}{}", format!("{label}:"), annotation(key));
            }
            match &mode {
                Ok((m, source)) => println!(
                    "{:<28}{m} ({})",
                    "execution mode:",
                    match source {
                        metadata::ModeSource::Flag => "flag",
                        metadata::ModeSource::Metadata => "from the metadata",
                        metadata::ModeSource::Exports => "detected from the exports",
                    }
                ),
                Err(e) => println!("{:<28}undecided: {e}", "execution mode:"),
            }
            match &metadata {
                Some(m) => {
                    println!("{:<28}{}", "mutating:", m.mutating);
                    println!("{:<28}{}", "background audit:", m.background_audit);
                    println!(
                        "{:<28}{}",
                        "protocol version:",
                        match m.protocol_version {
                            Some(metadata::ProtocolVersion::V1) => "v1",
                            Some(metadata::ProtocolVersion::Unknown) => "Unknown",
                            None => "",
                        }
                    );
                    println!(
                        "{:<28}{}",
                        "policy type:",
                        if m.policy_type == metadata::PolicyType::Raw {
                            "raw"
                        } else {
                            "kubernetes"
                        }
                    );
                    println!(
                        "{:<28}{}",
                        "minimum kubewarden version:",
                        m.minimum_kubewarden_version.clone().unwrap_or_default()
                    );
                    let resources: Vec<String> = m
                        .context_aware_resources
                        .iter()
                        .map(|r| format!("{}/{}", r.api_version, r.kind))
                        .collect();
                    println!("{:<28}{}", "context aware resources:", resources.join(", "));
                    println!();
                    println!("Rules");
                    println!(
                        "{}",
                        serde_saphyr::to_string(&m.rules)
                            .map_err(|e| anyhow::anyhow!("{e}"))?
                            .trim_end()
                    );
                    if let Some(annotations) = &m.annotations {
                        println!();
                        println!("Annotations");
                        for (k, v) in annotations {
                            if k == hoist_policy::USAGE_ANNOTATION {
                                continue;
                            }
                            println!("{k:<40} {v}");
                        }
                    }
                    let usage = annotation(hoist_policy::USAGE_ANNOTATION);
                    if !usage.is_empty() {
                        println!();
                        println!("Usage");
                        println!("{}", usage.trim_end());
                    }
                }
                None => println!(
                    "{:<28}none (not annotated: run `hoist policy annotate`)",
                    "metadata:"
                ),
            }
            println!();
            match signature {
                Some(s) => println!(
                    "{:<28}signed (hoist/Yoke signature), key fingerprint {}",
                    "signature:", s.fingerprint
                ),
                None => println!("{:<28}none", "signature:"),
            }
        }
        other => bail!("unknown output format {other:?}: use text, yaml or json"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The policy gate's flags, shared by `takeoff` and `render`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct GateArgs {
    /// Admission policy every object must pass before it is applied or printed:
    /// MODULE[,settings=FILE] (repeatable; any module source, checked like the flight).
    #[arg(long = "policy", value_name = "MODULE[,settings=FILE]")]
    pub policy: Vec<String>,
    /// File of Kubewarden ClusterAdmissionPolicy/AdmissionPolicy manifests (module, settings,
    /// rules, mutating, namespaceSelector, objectSelector, mode) to gate with (repeatable).
    #[arg(long, value_name = "FILE")]
    pub policies: Vec<PathBuf>,
}

impl GateArgs {
    /// Loads the policies (through the module pipeline, with the flight's `--allow`,
    /// `--verify`, `--insecure`, `--offline` and cache flags) and checks their settings;
    /// `None` when no policy is given.
    pub fn load(
        &self,
        flight: &crate::flight::FlightArgs,
        namespace: &str,
    ) -> anyhow::Result<Option<hoist_policy::gate::Gate>> {
        use hoist_policy::gate;
        if self.policy.is_empty() && self.policies.is_empty() {
            return Ok(None);
        }
        let mut specs = Vec::new();
        for flag in &self.policy {
            specs.push(gate::PolicySpec::from_flag(flag)?);
        }
        for file in &self.policies {
            specs.extend(gate::read_policies_file(file)?);
        }
        let pipeline = pipeline(
            &ModuleArgs {
                checksum: None,
                source: flight.source.clone(),
            },
            None,
            TimeLimits::Enforceable,
        )?;
        let options = gate::GateOptions {
            default_namespace: Some(namespace.to_string()),
            // Certificate checks work offline; DNS and the cluster are not reachable.
            backend: Arc::new(hoist_policy::services::LocalServices::new(
                Default::default(),
                Arc::new(NoBackend),
            )),
            ..Default::default()
        };
        let gate = gate::Gate::load(specs, &pipeline, options)?;
        tracing::info!("policy gate: {} policies loaded", gate.len());
        Ok(Some(gate))
    }
}

/// Who the offline gate says sends the requests: the kubeconfig context's user entry.
pub fn offline_user(kube: &KubeTarget) -> hoist_policy::gate::UserInfo {
    hoist_policy::gate::UserInfo {
        username: hoist_policy::kube::kubeconfig_user(
            kube.kubeconfig.as_deref(),
            kube.context.as_deref(),
        )
        .unwrap_or_default(),
        ..Default::default()
    }
}

/// Runs `stages` through the gate: warnings and mutations on stderr, the mutated stages back,
/// or an error listing every rejected object (nothing has been applied at that point).
pub fn gate_stages(
    gate: &hoist_policy::gate::Gate,
    stages: hoist_resources::Stages,
    cluster: &dyn hoist_policy::gate::ClusterView,
    user: &hoist_policy::gate::UserInfo,
) -> anyhow::Result<hoist_resources::Stages> {
    let mut values: Vec<Vec<Value>> = stages
        .0
        .into_iter()
        .map(|stage| stage.into_iter().map(|r| r.into_value()).collect())
        .collect();
    let report = gate.admit(&mut values, cluster, user)?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    for m in &report.mutations {
        eprintln!("policy {} mutated {}: {}", m.policy, m.object, m.patch);
    }
    if !report.admitted() {
        bail!("{}", report.rejection_message());
    }
    eprintln!(
        "policy gate: {} object(s) admitted by {} policies ({} evaluations, {} mutation(s))",
        values.iter().map(Vec::len).sum::<usize>(),
        gate.len(),
        report.evaluations,
        report.mutations.len()
    );
    let mut out = Vec::with_capacity(values.len());
    for stage in values {
        let mut resources = Vec::with_capacity(stage.len());
        for value in stage {
            resources.push(
                hoist_resources::Resource::from_value(value).context(
                    "a policy's mutation left an object that is not a Kubernetes object",
                )?,
            );
        }
        out.push(resources);
    }
    Ok(hoist_resources::Stages(out))
}

/// `blackbox`'s POLICIES cell: the gating policies' names (`-` for none), from the revision's
/// `hoist.dev/policies` annotation.
pub fn policies_summary(annotation: Option<&str>) -> String {
    let Some(text) = annotation else {
        return "-".into();
    };
    match serde_json::from_str::<Vec<hoist_policy::gate::GateRecord>>(text) {
        Ok(records) if records.is_empty() => "-".into(),
        Ok(records) => records
            .iter()
            .map(|r| {
                format!(
                    "{}@sha256:{}",
                    r.name,
                    r.sha256.get(..12).unwrap_or(&r.sha256)
                )
            })
            .collect::<Vec<_>>()
            .join(","),
        Err(_) => "(unreadable)".into(),
    }
}
