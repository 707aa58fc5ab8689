//! `hoist fn`: KRM functions, kpt-compatible (eval, render, source, sink, push, pull).

use crate::cmd::oci::{FormatArg, PullArgs, PushArgs};
use crate::kubecontext::KubeTarget;
use crate::module_args::ModuleSourceArgs;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use hoist_krm::engine::{self, DEFAULT_IMAGE_PREFIX, PrintOptions, Runner};
use hoist_krm::hoist_modules::ModulePipeline;
use hoist_krm::package::{self, Originals};
use hoist_krm::resource_list::{self as rl, ResourceList};
use hoist_krm::selector::{self, Selector};
use hoist_krm::{FnLimits, FnRef, Output, kptfile};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `hoist fn`.
#[derive(Args, Debug)]
pub struct FnArgs {
    #[command(subcommand)]
    command: FnCommand,
}

#[derive(Subcommand, Debug)]
enum FnCommand {
    /// Run one function on a package or a ResourceList (kpt fn eval).
    Eval(Box<EvalArgs>),
    /// Run a package's Kptfile pipelines, subpackages first (kpt fn render).
    Render(Box<RenderArgs>),
    /// Print a package as a ResourceList (kpt fn source).
    Source(SourceArgs),
    /// Write a ResourceList from stdin into a directory (kpt fn sink).
    Sink(SinkArgs),
    /// Push a Wasm function in kpt's layout (kpt alpha wasm push).
    Push(FnPushArgs),
    /// Pull a Wasm function (kpt alpha wasm pull).
    Pull(FnPullArgs),
}

/// Module loading and limits, shared by eval and render.
#[derive(Args, Debug, Clone)]
struct ModuleFlags {
    /// kpt's prefix for short image names.
    #[arg(long, env = "KPT_IMAGE_PREFIX", default_value = DEFAULT_IMAGE_PREFIX)]
    image_prefix: String,
    /// Expected SHA-256 of the (decompressed) module.
    #[arg(long, value_name = "HEX")]
    checksum: Option<String>,
    /// Provenance checks and the compiled-module cache.
    #[command(flatten)]
    source: ModuleSourceArgs,
    /// Memory limit of a function in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 2048,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_memory_mib: u64,
    /// Wall-clock limit of a function (e.g. 30s); negative disables it.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "5m",
        allow_hyphen_values = true
    )]
    timeout: String,
    /// Limit on a function's output, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_output_mib: u64,
    /// Allow running native `exec` functions.
    #[arg(long)]
    allow_exec: bool,
    /// Accepted for kpt compatibility (hoist always runs Wasm functions).
    #[arg(long)]
    allow_alpha_wasm: bool,
    /// Shorten long result and stderr blocks (kpt's default).
    #[arg(long, num_args = 0..=1, default_value_t = true, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    truncate_output: bool,
    /// Container only; accepted with a warning.
    #[arg(long, value_name = "POLICY")]
    image_pull_policy: Option<String>,
    /// Container only; accepted with a warning.
    #[arg(long)]
    allow_network: bool,
    /// Write results to DIR/results.yaml.
    #[arg(long, value_name = "DIR")]
    results_dir: Option<PathBuf>,
    /// Output: stdout, unwrap, or a new directory [default: in place].
    #[arg(short = 'o', long, value_name = "stdout|unwrap|DIR")]
    output: Option<String>,
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// The package directory, or `-` to read a ResourceList from stdin.
    #[arg(value_name = "DIR", default_value = ".")]
    dir: String,
    /// The function: a Wasm module path or URL, oci://, or an image name.
    #[arg(short = 'i', long, value_name = "IMAGE")]
    image: Option<String>,
    /// A local function: a .wasm file, or a native program (with arguments).
    #[arg(long, value_name = "PATH")]
    exec: Option<String>,
    /// A file with the functionConfig (one KRM object).
    #[arg(long, value_name = "FILE")]
    fn_config: Option<PathBuf>,
    /// Tag for a short image name.
    #[arg(long)]
    tag: Option<String>,
    /// Run the function only on resources with this apiVersion (with other --match-* flags, all must match).
    #[arg(long)]
    match_api_version: Option<String>,
    /// Run the function only on resources of this kind.
    #[arg(long)]
    match_kind: Option<String>,
    /// Run the function only on resources with this name.
    #[arg(long)]
    match_name: Option<String>,
    /// Run the function only on resources in this namespace.
    #[arg(long)]
    match_namespace: Option<String>,
    /// Run the function only on resources with this label (repeatable: all must be present).
    #[arg(long, value_name = "K=V")]
    match_labels: Vec<String>,
    /// Run the function only on resources with this annotation (repeatable: all must be present).
    #[arg(long, value_name = "K=V")]
    match_annotations: Vec<String>,
    /// Leave out resources with this apiVersion (with other --exclude-* flags, a resource matching all of them is left out).
    #[arg(long)]
    exclude_api_version: Option<String>,
    /// Leave out resources of this kind.
    #[arg(long)]
    exclude_kind: Option<String>,
    /// Leave out resources with this name.
    #[arg(long)]
    exclude_name: Option<String>,
    /// Leave out resources in this namespace.
    #[arg(long)]
    exclude_namespace: Option<String>,
    /// Leave out resources with this label (repeatable).
    #[arg(long, value_name = "K=V")]
    exclude_labels: Vec<String>,
    /// Leave out resources with this annotation (repeatable).
    #[arg(long, value_name = "K=V")]
    exclude_annotations: Vec<String>,
    /// Add the function to DIR/Kptfile's pipeline (replacing one with the same image or exec).
    #[arg(short = 's', long)]
    save: bool,
    /// mutator (default) or validator (with --save).
    #[arg(short = 't', long = "type", value_name = "TYPE")]
    fn_type: Option<String>,
    /// Container only; accepted with a warning.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Container only; accepted with a warning.
    #[arg(long)]
    network: bool,
    /// Container only; accepted with a warning.
    #[arg(long)]
    mount: Vec<String>,
    /// Container only; accepted with a warning.
    #[arg(long)]
    as_current_user: bool,
    /// Removed in kpt: meta resources are always included.
    #[arg(short = 'm', long, hide = true)]
    include_meta_resources: bool,
    #[command(flatten)]
    module: ModuleFlags,
    /// functionConfig data as key=value (or a kind as the first word).
    #[arg(last = true, value_name = "KEY=VALUE")]
    args: Vec<String>,
}

#[derive(Args, Debug)]
struct RenderArgs {
    /// The package directory.
    #[arg(value_name = "PKG", default_value = ".")]
    pkg: PathBuf,
    #[command(flatten)]
    module: ModuleFlags,
    /// Sibling subpackages rendered at once; the output, results and files are kpt's either
    /// way (1: one package at a time, as kpt; a tree with exec functions always renders so)
    /// [default: the number of CPUs, at most 8]
    #[arg(long, value_name = "N")]
    jobs: Option<std::num::NonZeroUsize>,
    /// Admission policies the rendered resources must pass before anything is written.
    #[command(flatten)]
    gate: crate::cmd::policy::GateArgs,
}

#[derive(Args, Debug)]
struct SourceArgs {
    /// The package directory.
    #[arg(value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    /// A functionConfig to include.
    #[arg(long, value_name = "FILE")]
    fn_config: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct SinkArgs {
    /// The directory to write.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

#[derive(Args, Debug)]
struct FnPushArgs {
    /// The Wasm module.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The image (REGISTRY/REPO[:TAG]).
    #[arg(value_name = "IMAGE")]
    image: String,
    /// Use plain http for this registry.
    #[arg(long)]
    insecure: bool,
}

#[derive(Args, Debug)]
struct FnPullArgs {
    /// The image (REGISTRY/REPO[:TAG]).
    #[arg(value_name = "IMAGE")]
    image: String,
    /// Where to write the module.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Use plain http for this registry.
    #[arg(long)]
    insecure: bool,
}

/// Runs `hoist fn`.
pub fn run(args: FnArgs, kube: &KubeTarget) -> anyhow::Result<ExitCode> {
    match args.command {
        FnCommand::Eval(a) => eval(*a),
        FnCommand::Render(a) => render(*a, kube),
        FnCommand::Source(a) => source(a),
        FnCommand::Sink(a) => sink(a),
        FnCommand::Push(a) => {
            crate::cmd::oci::run_push(PushArgs {
                file: a.file,
                reference: oci_ref(&a.image)?,
                format: FormatArg::Kpt,
                tags: Vec::new(),
                annotations: Vec::new(),
                insecure: a.insecure,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        FnCommand::Pull(a) => {
            crate::cmd::oci::run_pull(PullArgs {
                reference: oci_ref(&a.image)?,
                file: a.file,
                force: true,
                insecure: a.insecure,
                offline: false,
                cache_dir: None,
                no_cache: false,
                max_manifest_bytes: hoist_oci::DEFAULT_MAX_MANIFEST_BYTES,
                max_blob_bytes: hoist_oci::DEFAULT_MAX_BLOB_BYTES,
                max_module_bytes: hoist_oci::DEFAULT_MAX_MODULE_BYTES,
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `oci://` reference for push/pull, through the registry mirrors (so a function can be
/// pushed to and pulled from a mirror of ghcr.io under its usual name).
fn oci_ref(image: &str) -> anyhow::Result<String> {
    let mirrors = hoist_krm::images::Mirrors::from_env()?;
    Ok(match image.strip_prefix("oci://") {
        Some(rest) => format!("oci://{}", mirrors.rewrite(rest)),
        None if image.contains("://") => image.to_string(),
        None => format!("oci://{}", mirrors.rewrite(image)),
    })
}

/// The module pipeline for `flags` (`checksum`: whether `--checksum` applies, as it does to
/// functions but not to policies).
fn module_pipeline(flags: &ModuleFlags, checksum: bool) -> anyhow::Result<ModulePipeline> {
    let checksum = match (&flags.checksum, checksum) {
        (Some(hex), true) => Some(hoist_provenance::checksum::Sha256Digest::from_hex(hex)?),
        _ => None,
    };
    Ok(ModulePipeline::new(flags.source.module_options(checksum)?)?)
}

/// Loads `fn render`'s policy gate (`--policy`, `--policies`); `None` without policies.
fn load_gate(
    gate: &crate::cmd::policy::GateArgs,
    flags: &ModuleFlags,
) -> anyhow::Result<Option<hoist_policy::gate::Gate>> {
    use hoist_policy::gate;
    if gate.policy.is_empty() && gate.policies.is_empty() {
        return Ok(None);
    }
    let mut specs = Vec::new();
    for flag in &gate.policy {
        specs.push(gate::PolicySpec::from_flag(flag)?);
    }
    for file in &gate.policies {
        specs.extend(gate::read_policies_file(file)?);
    }
    let pipeline = module_pipeline(flags, false)?;
    let options = gate::GateOptions {
        // A package's namespaced objects without a namespace land in `default` when applied.
        default_namespace: Some("default".into()),
        ..Default::default()
    };
    Ok(Some(gate::Gate::load(specs, &pipeline, options)?))
}

/// Runs the rendered resources that would be applied (not the Kptfiles, not
/// `config.kubernetes.io/local-config: "true"` ones) through the gate, without kpt's in-flight
/// annotations; mutations are copied back onto the items. Err: the rejection message.
fn gate_items(
    gate: &hoist_policy::gate::Gate,
    items: &mut [Value],
    kube: &KubeTarget,
) -> anyhow::Result<()> {
    let chosen: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, i)| {
            i.get("kind").and_then(Value::as_str) != Some("Kptfile")
                && rl::annotation(i, rl::LOCAL_CONFIG) != Some("true")
        })
        .map(|(n, _)| n)
        .collect();
    let mut stage: Vec<Value> = chosen
        .iter()
        .filter_map(|&n| items.get(n))
        .map(|i| {
            let mut c = i.clone();
            rl::remove_annotations(&mut c, package::INTERNAL_ANNOTATIONS);
            c
        })
        .collect();
    let user = crate::cmd::policy::offline_user(kube);
    let report = gate.admit(
        std::slice::from_mut(&mut stage),
        &hoist_policy::gate::Offline,
        &user,
    )?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for m in &report.mutations {
        eprintln!("policy {} mutated {}: {}", m.policy, m.object, m.patch);
    }
    if !report.admitted() {
        bail!("{}", report.rejection_message());
    }
    for (&n, mut admitted) in chosen.iter().zip(stage) {
        if let Some(item) = items.get_mut(n) {
            for key in package::INTERNAL_ANNOTATIONS {
                if let Some(v) = rl::annotation(item, key) {
                    rl::set_annotation(&mut admitted, key, v);
                }
            }
            *item = admitted;
        }
    }
    eprintln!(
        "policy gate: {} resource(s) admitted by {} policies ({} mutation(s))",
        chosen.len(),
        gate.len(),
        report.mutations.len()
    );
    Ok(())
}

fn runner(flags: &ModuleFlags) -> anyhow::Result<Runner> {
    if flags.image_pull_policy.is_some() {
        eprintln!(
            "hoist: warning: --image-pull-policy applies to container functions; hoist runs Wasm functions and ignores it"
        );
    }
    if flags.allow_network {
        eprintln!(
            "hoist: warning: --allow-network applies to container functions; Wasm functions have no network"
        );
    }
    let modules = module_pipeline(flags, true)?;
    let image_map = match std::env::var_os("HOIST_FN_IMAGE_MAP") {
        Some(path) => {
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "could not read HOIST_FN_IMAGE_MAP file {}",
                    PathBuf::from(&path).display()
                )
            })?;
            serde_json::from_str::<BTreeMap<String, String>>(&text).with_context(|| {
                format!(
                    "HOIST_FN_IMAGE_MAP file {} must be a JSON object mapping image names (without tag) to wasm paths",
                    PathBuf::from(&path).display()
                )
            })?
        }
        None => BTreeMap::new(),
    };
    let mut prefix = flags.image_prefix.clone();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    Ok(Runner {
        modules,
        limits: FnLimits {
            max_memory_bytes: flags.max_memory_mib << 20,
            timeout: crate::flight::parse_timeout(&flags.timeout)?,
            max_output_bytes: (flags.max_output_mib << 20) as usize,
        },
        image_prefix: prefix,
        image_map,
        allow_exec: flags.allow_exec,
        mirrors: hoist_krm::images::Mirrors::from_env()?,
        go_resume: Default::default(),
        jobs: 1,
    })
}

fn selector_from(
    api_version: &Option<String>,
    kind: &Option<String>,
    name: &Option<String>,
    namespace: &Option<String>,
    labels: &[String],
    annotations: &[String],
) -> anyhow::Result<Option<Selector>> {
    let s = Selector {
        api_version: api_version.clone(),
        kind: kind.clone(),
        name: name.clone(),
        namespace: namespace.clone(),
        labels: selector::parse_pairs(labels).map_err(anyhow::Error::msg)?,
        annotations: selector::parse_pairs(annotations).map_err(anyhow::Error::msg)?,
    };
    Ok((!s.is_empty()).then_some(s))
}

fn read_stdin() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .take(512 << 20)
        .read_to_string(&mut s)
        .context("could not read stdin")?;
    Ok(s)
}

fn read_one_object(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read --fn-config {}", path.display()))?;
    let docs = hoist_krm::yaml::parse_all(&text)
        .map_err(|e| anyhow::anyhow!("--fn-config {} is not valid YAML: {e}", path.display()))?;
    match docs.as_slice() {
        [one] if one.is_object() => Ok(one.clone()),
        _ => bail!(
            "--fn-config {} must hold exactly one KRM object (found {} documents)",
            path.display(),
            docs.len()
        ),
    }
}

fn eval(a: EvalArgs) -> anyhow::Result<ExitCode> {
    if a.include_meta_resources {
        bail!(
            "--include-meta-resources was removed from kpt: meta resources (the Kptfile) are always included"
        );
    }
    let save_as_validator = match a.fn_type.as_deref() {
        None | Some("mutator") => false,
        Some("validator") => true,
        Some(other) => bail!("--type {other:?} is not a function type: use mutator or validator"),
    };
    if a.fn_type.is_some() && !a.save {
        bail!("--type is only used with --save");
    }
    if a.save && a.dir == "-" {
        bail!("--save needs a package directory: it adds the function to DIR/Kptfile");
    }
    if a.save && !Path::new(&a.dir).join(package::KPTFILE).is_file() {
        bail!(
            "--save: {} has no Kptfile to add the function to",
            Path::new(&a.dir).display()
        );
    }
    if !a.env.is_empty() || a.network || !a.mount.is_empty() || a.as_current_user {
        eprintln!(
            "hoist: warning: --env, --network, --mount and --as-current-user apply to container functions; hoist runs Wasm functions and ignores them"
        );
    }
    let f = match (&a.image, &a.exec) {
        (Some(_), Some(_)) => bail!("use either --image or --exec, not both"),
        (None, None) => bail!("a function is required: pass --image IMAGE or --exec PATH"),
        (Some(image), None) => FnRef::Image(match &a.tag {
            Some(tag) if !image.contains("://") && !image.ends_with(".wasm") => {
                format!("{image}:{tag}")
            }
            _ => image.clone(),
        }),
        (None, Some(exec)) => {
            let mut parts = exec.split_whitespace().map(str::to_string);
            FnRef::Exec {
                program: parts.next().unwrap_or_default(),
                args: parts.collect(),
            }
        }
    };
    let mut runner = runner(&a.module)?;
    // `--exec` on the command line is allowed by itself, as in kpt.
    runner.allow_exec = true;

    // Function config.
    if a.fn_config.is_some() && !a.args.is_empty() {
        bail!("--fn-config and `-- key=value` arguments cannot be used together");
    }
    let function_config = match &a.fn_config {
        Some(path) => read_one_object(path)?,
        None => {
            let mut data = Map::new();
            let mut kind = None;
            for (i, arg) in a.args.iter().enumerate() {
                match arg.split_once('=') {
                    Some((k, v)) => {
                        data.insert(k.to_string(), Value::String(v.to_string()));
                    }
                    None if i == 0 => kind = Some(arg.clone()),
                    None => bail!("argument {arg:?} is not of the form key=value"),
                }
            }
            let mut cm = kptfile::config_map(&data);
            if let (Some(kind), Some(o)) = (kind, cm.as_object_mut()) {
                o.insert("kind".into(), Value::String(kind));
            }
            cm
        }
    };

    let stdin_mode = a.dir == "-";
    let dir = PathBuf::from(&a.dir);
    let mut originals = Originals::default();
    let mut items = if stdin_mode {
        let text = read_stdin()?;
        ResourceList::parse(&text)
            .map_err(|e| anyhow::anyhow!("stdin is not a ResourceList: {e}"))?
            .items
    } else {
        if !dir.is_dir() {
            bail!("{} is not a directory", dir.display());
        }
        package::read_package(&dir, true, "", &mut originals)?
    };
    // An --fn-config file inside the package is not an input item.
    if let (Some(cfg), false) = (&a.fn_config, stdin_mode)
        && let (Ok(cfg), Ok(root)) = (cfg.canonicalize(), dir.canonicalize())
        && let Ok(rel) = cfg.strip_prefix(&root)
    {
        let rel = rel.to_string_lossy().replace('\\', "/");
        items.retain(|i| rl::annotation(i, rl::PATH) != Some(rel.as_str()));
        originals.files.remove(&rel);
    }

    let mut selectors = Vec::new();
    selectors.extend(selector_from(
        &a.match_api_version,
        &a.match_kind,
        &a.match_name,
        &a.match_namespace,
        &a.match_labels,
        &a.match_annotations,
    )?);
    let mut exclude = Vec::new();
    exclude.extend(selector_from(
        &a.exclude_api_version,
        &a.exclude_kind,
        &a.exclude_name,
        &a.exclude_namespace,
        &a.exclude_labels,
        &a.exclude_annotations,
    )?);

    let print = PrintOptions {
        truncate: a.module.truncate_output,
    };
    let stderr = std::io::stderr();
    let mut err = stderr.lock();
    let _ = writeln!(err, "[RUNNING] \"{}\"", f.display());
    let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let (result, rec) = engine::run_step(
        &runner,
        &f,
        &items,
        Some(function_config),
        &selectors,
        &exclude,
        &base,
    );
    engine::print_step(&mut err, &rec, print);
    let code = i32::from(result.is_err());
    if let Some(dir) = &a.module.results_dir {
        let path = engine::write_results(dir, std::slice::from_ref(&rec), code)
            .with_context(|| format!("could not write results to {}", dir.display()))?;
        let _ = writeln!(err, "For complete results, see {}", path.display());
    }
    let what = if stdin_mode {
        "the ResourceList on stdin".to_string()
    } else {
        format!("package {}", dir.display())
    };
    let items = match result {
        Ok(items) => items,
        Err(e) => {
            drop(err);
            eprintln!("hoist: error: fn eval on {what}: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    // A function may not move resources out of the package: refuse before writing anything.
    if !stdin_mode {
        for item in &items {
            let (p, _) = package::path_and_index(item);
            if let Err(e) = package::check_inside(item, &p, &package_name(&dir)) {
                drop(err);
                eprintln!(
                    "hoist: error: fn eval on {what}: function {}: {e}; nothing was written",
                    f.display()
                );
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    drop(err);
    let output = if stdin_mode && a.module.output.is_none() {
        Output::Stdout
    } else {
        Output::parse(a.module.output.as_deref())
    };
    write_output(&output, &dir, &items, &originals)?;
    if a.save {
        save_to_kptfile(&a, &f, &dir, save_as_validator)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `--save`: adds (or replaces) the function in DIR/Kptfile's pipeline, with the `-- k=v`
/// arguments as `configMap` or the `--fn-config` file as a package-relative `configPath`.
fn save_to_kptfile(a: &EvalArgs, f: &FnRef, dir: &Path, validator: bool) -> anyhow::Result<()> {
    let path = dir.join(package::KPTFILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("--save: could not read {}", path.display()))?;
    let mut kf = hoist_krm::yaml::parse_one(&text)
        .map_err(|e| anyhow::anyhow!("--save: {} is not valid YAML: {e}", path.display()))?;
    let mut entry = Map::new();
    match f {
        FnRef::Image(image) => {
            entry.insert("image".into(), Value::String(image.clone()));
        }
        FnRef::Exec { .. } => {
            entry.insert("exec".into(), Value::String(f.display()));
        }
    }
    if let Some(cfg) = &a.fn_config {
        let (Ok(cfg), Ok(root)) = (cfg.canonicalize(), dir.canonicalize()) else {
            bail!("--save: could not resolve --fn-config {}", cfg.display());
        };
        let Ok(rel) = cfg.strip_prefix(&root) else {
            bail!(
                "--save: --fn-config {} is outside the package {}: a saved function's configPath must be a file of the package",
                cfg.display(),
                root.display()
            );
        };
        entry.insert(
            "configPath".into(),
            Value::String(rel.to_string_lossy().replace('\\', "/")),
        );
    } else {
        let data: Map<String, Value> = a
            .args
            .iter()
            .filter_map(|arg| arg.split_once('='))
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        if !data.is_empty() {
            entry.insert("configMap".into(), Value::Object(data));
        }
    }
    kptfile::save_function(&mut kf, validator, entry);
    std::fs::write(&path, hoist_krm::yaml::emit(&kf))
        .with_context(|| format!("--save: could not write {}", path.display()))?;
    eprintln!(
        "Added \"{}\" as {} in the Kptfile.",
        f.display(),
        if validator { "validator" } else { "mutator" }
    );
    Ok(())
}

fn package_name(dir: &Path) -> String {
    dir.canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string())
}

fn write_output(
    output: &Output,
    dir: &Path,
    items: &[Value],
    originals: &Originals,
) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match output {
        Output::Stdout => {
            let list = ResourceList {
                items: items.to_vec(),
                function_config: None,
                results: Vec::new(),
            };
            stdout.write_all(list.to_yaml().as_bytes())?;
        }
        Output::Unwrap => stdout.write_all(package::unwrap(items).as_bytes())?,
        Output::Dir(out) => package::write_to_dir(out, items, &package_name(dir))?,
        Output::InPlace => {
            package::write_in_place(dir, items, originals, &package_name(dir))?;
        }
    }
    Ok(())
}

fn render(a: RenderArgs, kube: &KubeTarget) -> anyhow::Result<ExitCode> {
    let mut runner = runner(&a.module)?;
    runner.jobs = match a.jobs {
        Some(n) => n.get(),
        // Each running function holds its own instance (tens to hundreds of MiB for a Go
        // one), so the default stops at 8 however many CPUs there are.
        None => std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
    };
    // Policies load (and their settings are checked) before any function runs.
    let gate = load_gate(&a.gate, &a.module)?;
    let print = PrintOptions {
        truncate: a.module.truncate_output,
    };
    // Not locked for the whole render: functions run on worker threads, and their logs
    // (tracing, to stderr) would wait for the lock forever.
    let mut err = std::io::stderr();
    let (result, mut rendered) = engine::render(&runner, &a.pkg, &mut err, print);
    let code = i32::from(result.is_err());
    if let Some(dir) = &a.module.results_dir {
        let path = engine::write_results(dir, &rendered.records, code)
            .with_context(|| format!("could not write results to {}", dir.display()))?;
        let _ = writeln!(err, "For complete results, see {}", path.display());
    }
    let output = Output::parse(a.module.output.as_deref());
    // The gate sees the rendered resources before anything is written; a rejection writes
    // nothing at all (not even the Kptfile status) and exits non-zero.
    if let (Ok(()), Some(gate)) = (&result, &gate)
        && let Err(e) = gate_items(gate, &mut rendered.items, kube)
    {
        eprintln!("hoist: error: fn render: {e:#}");
        return Ok(ExitCode::FAILURE);
    }
    // kpt's message has the root path replaced by ".".
    let error = result.as_ref().err().map(|e| {
        let mut msg = e.to_string();
        if let Ok(abs) = a.pkg.canonicalize() {
            msg = msg.replace(&*abs.to_string_lossy(), ".");
        }
        msg
    });
    if output == Output::InPlace {
        let status = engine::render_status(&rendered.records, error.as_deref());
        let root_kptfile = rendered
            .originals
            .files
            .get(package::KPTFILE)
            .and_then(|docs| docs.first())
            .cloned();
        let save_partial = root_kptfile
            .as_ref()
            .is_some_and(engine::save_on_render_failure);
        if error.is_none() || save_partial {
            engine::set_root_status(&mut rendered.items, &status);
            write_output(&output, &a.pkg, &rendered.items, &rendered.originals)?;
        } else if let Some(mut kf) = root_kptfile {
            // A failed render writes nothing but the root Kptfile's status.
            kptfile::set_status(&mut kf, &status);
            let path = a.pkg.join(package::KPTFILE);
            std::fs::write(&path, hoist_krm::yaml::emit(&kf)).with_context(|| {
                format!("could not write the render status to {}", path.display())
            })?;
        }
    }
    if let Some(e) = error {
        eprintln!("hoist: error: {e}");
        return Ok(ExitCode::FAILURE);
    }
    eprintln!(
        "Successfully executed {} function(s) in {} package(s).",
        rendered.records.len(),
        rendered.packages
    );
    if output != Output::InPlace {
        write_output(&output, &a.pkg, &rendered.items, &rendered.originals)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn source(a: SourceArgs) -> anyhow::Result<ExitCode> {
    let mut originals = Originals::default();
    let items = package::read_package(&a.dir, true, "", &mut originals)?;
    let function_config = a.fn_config.as_deref().map(read_one_object).transpose()?;
    let list = ResourceList {
        items,
        function_config,
        results: Vec::new(),
    };
    std::io::stdout()
        .lock()
        .write_all(list.to_yaml().as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn sink(a: SinkArgs) -> anyhow::Result<ExitCode> {
    let text = read_stdin()?;
    let list = ResourceList::parse(&text)
        .map_err(|e| anyhow::anyhow!("stdin is not a ResourceList: {e}"))?;
    if a.dir.exists() && std::fs::read_dir(&a.dir)?.next().is_some() {
        bail!(
            "{} exists and is not empty: fn sink writes into a new or empty directory",
            a.dir.display()
        );
    }
    if a.dir.exists() {
        std::fs::remove_dir(&a.dir)?;
    }
    package::write_to_dir(&a.dir, &list.items, &package_name(Path::new(".")))?;
    Ok(ExitCode::SUCCESS)
}
