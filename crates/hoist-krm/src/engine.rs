//! Running functions on items: one step (selection, ids, run, merge), `fn eval` and
//! `fn render`, with kpt's console output.

use crate::function::{self, FnLimits, FnOutput, FnRunError, GoResumeCaches, SnapshotSource};
use crate::kptfile::{self, FunctionSpec, Pipeline};
use crate::package::{self, Originals, PackageError};
use crate::resource_list::{self as rl, FnResult, ID, LEGACY_ID, ResourceList};
use crate::selector::{self, Selector};
use hoist_modules::{Digests, FlightEngine, LoadedModule, ModulePipeline};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// kpt's default image prefix for short names.
pub const DEFAULT_IMAGE_PREFIX: &str = "ghcr.io/kptdev/krm-functions-catalog/";

/// A function to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FnRef {
    /// An image or Wasm module location (`-i`, `image:`).
    Image(String),
    /// A local program or `.wasm` file (`--exec`, `exec:`), with arguments.
    Exec {
        /// The program path.
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
}

impl FnRef {
    /// What kpt prints for it.
    pub fn display(&self) -> String {
        match self {
            FnRef::Image(i) => i.clone(),
            FnRef::Exec { program, args } if args.is_empty() => program.clone(),
            FnRef::Exec { program, args } => format!("{program} {}", args.join(" ")),
        }
    }
}

/// Runs functions: loads modules through the shared module pipeline.
pub struct Runner {
    /// The module pipeline (cache, provenance, OCI).
    pub modules: ModulePipeline,
    /// Limits for every run.
    pub limits: FnLimits,
    /// `--image-prefix` for short names.
    pub image_prefix: String,
    /// Image name (without tag) -> local wasm path (`HOIST_FN_IMAGE_MAP`).
    pub image_map: BTreeMap<String, String>,
    /// Whether native `exec` functions may run.
    pub allow_exec: bool,
    /// Registry mirrors (`HOIST_REGISTRY_MIRRORS`, the hoist config file).
    pub mirrors: crate::images::Mirrors,
    /// Resume points of the Go wasip1 functions run so far, per module.
    pub go_resume: GoResumeCaches,
    /// Sibling subpackages `fn render` hydrates at once; 1 renders one package at a time, as
    /// kpt does. Output, results and partial output on failure are kpt's either way.
    pub jobs: usize,
}

/// Failures of one function step.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The module could not be loaded.
    #[error("could not load function {function}: {message}")]
    Load {
        /// The function.
        function: String,
        /// Why.
        message: String,
    },
    /// The function could not be run.
    #[error(transparent)]
    Run(#[from] FnRunError),
    /// exec without permission.
    #[error(
        "function {0} is an exec function: pass --allow-exec to run native programs from a Kptfile"
    )]
    ExecNotAllowed(String),
}

impl Runner {
    /// The location to load for an image reference: a local path or URL as given; a mapped
    /// image; otherwise `oci://` with kpt's prefix for short names.
    pub fn resolve_image(&self, image: &str) -> String {
        if image.contains("://") || image.ends_with(".wasm") || image.ends_with(".wasm.gz") {
            return image.to_string();
        }
        if Path::new(image).is_file() {
            return image.to_string();
        }
        let full = if image.contains('/') {
            image.to_string()
        } else {
            format!("{}{image}", self.image_prefix)
        };
        let name = strip_tag(&full);
        for key in [name.as_str(), strip_tag(image).as_str()] {
            if let Some(path) = self.image_map.get(key) {
                return path.clone();
            }
        }
        let full = if full.contains('@') || has_tag(&full) {
            full
        } else {
            format!("{full}:latest")
        };
        format!("oci://{}", self.mirrors.rewrite(&full))
    }

    /// Resolves a Kptfile `tag:` semver constraint as kpt does: lists the tags of `image`'s
    /// repository (short names get the image prefix, registry mirrors apply) and returns
    /// `image:TAG` for the highest tag that satisfies it. An image mapped by
    /// `HOIST_FN_IMAGE_MAP` is returned as is (the map ignores tags).
    pub fn resolve_tag_constraint(&self, image: &str, constraint: &str) -> Result<String, String> {
        let full = if image.contains('/') {
            image.to_string()
        } else {
            format!("{}{image}", self.image_prefix)
        };
        let name = strip_tag(&full);
        if self.image_map.contains_key(&name) || self.image_map.contains_key(&strip_tag(image)) {
            return Ok(image.to_string());
        }
        let repository = self.mirrors.rewrite(&name);
        let options = self.modules.options();
        let pull = hoist_oci::PullOptions {
            insecure: options.insecure,
            offline: options.offline,
            ..hoist_oci::PullOptions::default()
        };
        let tags = crate::images::list_tags(&repository, &pull).map_err(|e| {
            format!(
                "function {image}: tag {constraint:?} is a semver constraint, and the tags of {repository} could not be listed: {e} (pin a tag, e.g. tag: v0.4.1, to run without listing)"
            )
        })?;
        match crate::images::resolve_constraint(constraint, &tags) {
            Some(tag) => {
                tracing::info!(image, constraint, tag = %tag, "resolved a semver tag constraint");
                Ok(format!("{image}:{tag}"))
            }
            None => {
                let shown: Vec<&str> = tags.iter().take(50).map(String::as_str).collect();
                Err(format!(
                    "function {image}: no tag of {repository} satisfies the semver constraint {constraint:?}; the registry has {}{} (change the constraint or push a matching tag)",
                    if shown.is_empty() {
                        "no tags".to_string()
                    } else {
                        format!("tags: {}", shown.join(", "))
                    },
                    if tags.len() > shown.len() {
                        format!(" and {} more", tags.len() - shown.len())
                    } else {
                        String::new()
                    }
                ))
            }
        }
    }

    /// The snapshot-ready form of the Go js/wasm function at `location` (SHA-256 `digest`):
    /// the module with its globals exported, from the compiled-module cache (keyed by the
    /// original's digest) or rewritten from its bytes and compiled.
    fn snapshot_ready<'a>(
        &'a self,
        engine: &'a FlightEngine,
        location: &str,
        digest: &str,
        what: &str,
    ) -> Option<(&'a FlightEngine, LoadedModule)> {
        let key = snapshot_ready_key(digest);
        if let Some(m) = engine.load_cached(&key) {
            return Some((engine, m));
        }
        let full = self.modules.load(location, Digests::WithBytes).ok()?;
        let rewritten = hoist_gojs::export_globals(full.wasm.as_deref()?)?;
        let loaded = full
            .engine
            .load(&rewritten, &key, &format!("{what} (snapshot-ready)"))
            .ok()?;
        Some((full.engine, loaded))
    }

    /// Runs `f` on the serialized ResourceList `input`. `base` resolves relative exec paths.
    pub fn run(&self, f: &FnRef, input: &[u8], base: &Path) -> Result<FnOutput, StepError> {
        match f {
            FnRef::Image(image) => {
                let location = self.resolve_image(image);
                let ready =
                    self.modules
                        .load(&location, Digests::Sha256)
                        .map_err(|e| StepError::Load {
                            function: image.clone(),
                            message: load_hint(image, &location, &e.to_string()),
                        })?;
                let digest = ready.info.sha256.to_hex();
                let instrumented = || self.snapshot_ready(ready.engine, &location, &digest, image);
                let resume = self.go_resume.for_digest(&digest);
                Ok(function::run_wasm_keyed(
                    ready.engine,
                    &ready.loaded,
                    Some(&SnapshotSource {
                        digest: &digest,
                        instrumented: &instrumented,
                        wasi_resume: Some(&resume),
                    }),
                    image,
                    input,
                    self.limits,
                )?)
            }
            FnRef::Exec { program, args } => {
                let path = if Path::new(program).is_absolute() {
                    PathBuf::from(program)
                } else {
                    base.join(program)
                };
                let path_str = path.to_string_lossy().into_owned();
                if program.ends_with(".wasm") {
                    let ready = self.modules.load(&path_str, Digests::Sha256).map_err(|e| {
                        StepError::Load {
                            function: program.clone(),
                            message: e.to_string(),
                        }
                    })?;
                    let digest = ready.info.sha256.to_hex();
                    let instrumented =
                        || self.snapshot_ready(ready.engine, &path_str, &digest, program);
                    let resume = self.go_resume.for_digest(&digest);
                    return Ok(function::run_wasm_keyed(
                        ready.engine,
                        &ready.loaded,
                        Some(&SnapshotSource {
                            digest: &digest,
                            instrumented: &instrumented,
                            wasi_resume: Some(&resume),
                        }),
                        program,
                        input,
                        self.limits,
                    )?);
                }
                if !self.allow_exec {
                    return Err(StepError::ExecNotAllowed(program.clone()));
                }
                let program = if path.exists() {
                    path_str
                } else {
                    program.clone()
                };
                Ok(function::run_exec(&program, args, input)?)
            }
        }
    }
}

/// The compiled-module cache key of the snapshot-ready form of the module `digest`.
fn snapshot_ready_key(digest: &str) -> String {
    hoist_modules::Sha256Digest::of(format!("hoist-gojs export_globals v1 of {digest}").as_bytes())
        .to_hex()
}

fn load_hint(image: &str, location: &str, message: &str) -> String {
    if location.starts_with("oci://") {
        format!(
            "{message} (hoist runs only Wasm KRM functions: {image} must be an OCI artifact with a js/wasm or wasip1/wasm module, as `kpt alpha wasm push` or `hoist push --format kpt` write; a container image is not a Wasm function. Map images to local modules with HOIST_FN_IMAGE_MAP)"
        )
    } else {
        message.to_string()
    }
}

fn has_tag(r: &str) -> bool {
    let last = r.rsplit('/').next().unwrap_or(r);
    last.contains(':')
}

fn strip_tag(r: &str) -> String {
    let r = r.split('@').next().unwrap_or(r);
    if has_tag(r) {
        match r.rfind(':') {
            Some(i) => r.get(..i).unwrap_or(r).to_string(),
            None => r.to_string(),
        }
    } else {
        r.to_string()
    }
}

/// The record of one function run, for printing, results files and Kptfile status.
#[derive(Debug, Clone, Default)]
pub struct StepRecord {
    /// `image` of the function, when an image.
    pub image: Option<String>,
    /// `exec` of the function, when an exec.
    pub exec: Option<String>,
    /// Its stderr.
    pub stderr: String,
    /// Its exit code.
    pub exit_code: i32,
    /// Structured results.
    pub results: Vec<FnResult>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Why it could not run at all (load or host failure), kpt's `executionError`.
    pub execution_error: Option<String>,
    /// How long it took.
    pub elapsed: Duration,
    /// The pipeline entry's `name:`.
    pub pipeline_name: Option<String>,
    /// Whether it ran as a validator.
    pub validator: bool,
}

impl StepRecord {
    /// Its stderr as kpt records it in `results.yaml` and the Kptfile status: an image
    /// function's lines joined by `\n` without the trailing newline, an exec function's raw.
    pub fn recorded_stderr(&self) -> String {
        if self.image.is_some() {
            self.stderr.trim_end_matches('\n').to_string()
        } else {
            self.stderr.clone()
        }
    }

    /// The display name.
    pub fn name(&self) -> String {
        self.image
            .clone()
            .or_else(|| self.exec.clone())
            .unwrap_or_default()
    }
}

/// Options of the console output.
#[derive(Debug, Clone, Copy)]
pub struct PrintOptions {
    /// Shorten long result and stderr blocks as kpt does.
    pub truncate: bool,
}

const MAX_LINES: usize = 4;

fn block(out: &mut dyn Write, title: &str, lines: &[String], opts: PrintOptions) {
    if lines.is_empty() {
        return;
    }
    let shown = if opts.truncate && lines.len() > MAX_LINES {
        lines.get(..MAX_LINES).unwrap_or(lines)
    } else {
        lines
    };
    let indent = " ".repeat(title.len() + 5);
    for (i, l) in shown.iter().enumerate() {
        if i == 0 {
            let _ = writeln!(out, "  [{title}]: {l}");
        } else {
            let _ = writeln!(out, "{indent}{l}");
        }
    }
    if shown.len() < lines.len() {
        let _ = writeln!(
            out,
            "{indent}...({} line(s) truncated, use '--truncate-output=false' to disable)",
            lines.len() - shown.len()
        );
    }
}

/// Prints the `[PASS]`/`[FAIL]` line and result/stderr blocks of a step.
pub fn print_step(out: &mut dyn Write, rec: &StepRecord, opts: PrintOptions) {
    let secs = rec.elapsed.as_secs_f64();
    let t = if secs < 0.05 {
        "0s".to_string()
    } else {
        format!("{secs:.1}s")
    };
    let failed = rec.error.is_some();
    let _ = writeln!(
        out,
        "[{}] \"{}\" in {t}",
        if failed { "FAIL" } else { "PASS" },
        rec.name()
    );
    let results: Vec<String> = rec.results.iter().map(FnResult::display_line).collect();
    block(out, "Results", &results, opts);
    if failed {
        let stderr: Vec<String> = rec.stderr.lines().map(str::to_string).collect();
        block(out, "Stderr", &stderr, opts);
        if let Some(e) = &rec.error
            && rec.exit_code == 0
        {
            let _ = writeln!(out, "  [Error]: {e}");
        }
        let _ = writeln!(out, "  [Exit code]: {}", rec.exit_code.max(1));
    }
}

/// Runs one function on `items`, honouring selectors: the function sees only selected items
/// (each tagged with an id), and its output is merged back (replaced by id, new ones appended,
/// selected ones it dropped deleted, unselected ones kept).
pub fn run_step(
    runner: &Runner,
    f: &FnRef,
    items: &[Value],
    function_config: Option<Value>,
    selectors: &[Selector],
    exclude: &[Selector],
    base: &Path,
) -> (Result<Vec<Value>, String>, StepRecord) {
    let started = Instant::now();
    let mut rec = StepRecord {
        image: matches!(f, FnRef::Image(_)).then(|| f.display()),
        exec: matches!(f, FnRef::Exec { .. }).then(|| f.display()),
        ..Default::default()
    };
    let selecting = !selectors.is_empty() || !exclude.is_empty();
    let chosen = selector::select(items, selectors, exclude);
    let mut input_items = Vec::with_capacity(chosen.len());
    for (n, &i) in chosen.iter().enumerate() {
        let Some(item) = items.get(i) else { continue };
        let mut item = item.clone();
        rl::set_annotation(&mut item, ID, &n.to_string());
        rl::set_annotation(&mut item, LEGACY_ID, &n.to_string());
        input_items.push(item);
    }
    let input = ResourceList {
        items: input_items,
        function_config,
        results: Vec::new(),
    };
    let yaml = input.to_yaml();
    let out = runner.run(f, yaml.as_bytes(), base);
    rec.elapsed = started.elapsed();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            let msg = e.to_string();
            rec.exit_code = 1;
            rec.error = Some(msg.clone());
            rec.execution_error = Some(msg.clone());
            return (Err(msg), rec);
        }
    };
    rec.stderr = out.stderr.clone();
    rec.exit_code = out.exit_code;
    let text = String::from_utf8_lossy(&out.output).into_owned();
    let parsed = if text.trim().is_empty() && out.exit_code != 0 {
        None
    } else {
        Some(ResourceList::parse(&text))
    };
    if let Some(Ok(list)) = &parsed {
        rec.results = list.results.clone();
    }
    if out.exit_code != 0 {
        let msg = format!(
            "function {} failed with exit code {}{}",
            f.display(),
            out.exit_code,
            stderr_tail(&out.stderr)
        );
        rec.error = Some(msg.clone());
        return (Err(msg), rec);
    }
    let list = match parsed {
        Some(Ok(list)) => list,
        Some(Err(e)) => {
            let msg = format!(
                "function {} returned output that is not a valid ResourceList: {e}{}",
                f.display(),
                stderr_tail(&out.stderr)
            );
            rec.error = Some(msg.clone());
            return (Err(msg), rec);
        }
        None => {
            let msg = format!("function {} returned no output", f.display());
            rec.error = Some(msg.clone());
            return (Err(msg), rec);
        }
    };
    if list.results.iter().any(FnResult::is_error) {
        let msg = format!("function {} reported errors", f.display());
        rec.error = Some(msg.clone());
        rec.exit_code = 1;
        return (Err(msg), rec);
    }
    // Map outputs back to inputs.
    let mut by_input: BTreeMap<usize, Vec<Value>> = BTreeMap::new();
    let mut fresh = Vec::new();
    let mut ordered = Vec::new();
    for mut item in list.items {
        let id = rl::annotation(&item, ID)
            .or_else(|| rl::annotation(&item, LEGACY_ID))
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|n| *n < chosen.len());
        let before = id
            .and_then(|n| chosen.get(n))
            .and_then(|&c| items.get(c))
            .map(|orig| {
                (
                    rl::annotation(orig, rl::PATH).unwrap_or("").to_string(),
                    rl::annotation(orig, rl::INDEX).unwrap_or("").to_string(),
                )
            });
        // Matched to its input by id: a function that dropped the path/index annotations
        // (command-style programs often do) keeps the input's place in the package.
        if let Some((p, i)) = before.as_ref() {
            let has = |item: &Value, k: &str| rl::annotation(item, k).is_some();
            if !has(&item, rl::PATH) && !has(&item, rl::LEGACY_PATH) && !p.is_empty() {
                rl::set_annotation(&mut item, rl::PATH, p);
            }
            if !has(&item, rl::INDEX) && !has(&item, rl::LEGACY_INDEX) && !i.is_empty() {
                rl::set_annotation(&mut item, rl::INDEX, i);
            }
        }
        package::sync_annotations(
            &mut item,
            before.as_ref().map(|(p, i)| (p.as_str(), i.as_str())),
        );
        rl::remove_annotations(&mut item, &[ID, LEGACY_ID]);
        if !selecting {
            ordered.push(item);
            continue;
        }
        match id.and_then(|n| chosen.get(n)) {
            Some(&c) => by_input.entry(c).or_default().push(item),
            None => fresh.push(item),
        }
    }
    if !selecting {
        return (Ok(ordered), rec);
    }
    let selected: std::collections::BTreeSet<usize> = chosen.iter().copied().collect();
    let mut merged = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if selected.contains(&i) {
            if let Some(outs) = by_input.remove(&i) {
                merged.extend(outs);
            }
        } else {
            merged.push(item.clone());
        }
    }
    merged.extend(fresh);
    (Ok(merged), rec)
}

/// `; its stderr:` and the last lines of a function's stderr, for error messages.
fn stderr_tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let shown = lines.get(lines.len().saturating_sub(20)..).unwrap_or(&[]);
    format!("; its stderr:\n  {}", shown.join("\n  "))
}

/// A FunctionResultList (`--results-dir`), kpt's layout.
pub fn results_file(records: &[StepRecord], exit_code: i32) -> String {
    let items: Vec<Value> = records
        .iter()
        .map(|r| {
            let mut m = Map::new();
            if let Some(i) = &r.image {
                m.insert("image".into(), Value::String(i.clone()));
            }
            if let Some(e) = &r.exec {
                m.insert("exec".into(), Value::String(e.clone()));
            }
            let stderr = r.recorded_stderr();
            if !stderr.is_empty() {
                m.insert("stderr".into(), Value::String(stderr));
            }
            m.insert("exitCode".into(), Value::from(r.exit_code));
            if !r.results.is_empty() {
                m.insert(
                    "results".into(),
                    Value::Array(r.results.iter().map(FnResult::to_value).collect()),
                );
            }
            Value::Object(m)
        })
        .collect();
    let mut m = Map::new();
    m.insert("apiVersion".into(), Value::String("kpt.dev/v1".into()));
    m.insert("kind".into(), Value::String("FunctionResultList".into()));
    let mut meta = Map::new();
    meta.insert("name".into(), Value::String("fnresults".into()));
    m.insert("metadata".into(), Value::Object(meta));
    m.insert("exitCode".into(), Value::from(exit_code));
    m.insert("items".into(), Value::Array(items));
    // kpt writes results.yaml with wide sequence indentation.
    crate::yaml::emit_with(&Value::Object(m), false)
}

/// Writes `results.yaml` into `dir`.
pub fn write_results(
    dir: &Path,
    records: &[StepRecord],
    exit_code: i32,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("results.yaml");
    std::fs::write(&path, results_file(records, exit_code))?;
    Ok(path)
}

/// Where `fn eval`/`fn render` write their output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Back into the package (the default).
    InPlace,
    /// A wrapped ResourceList on stdout.
    Stdout,
    /// Multi-document YAML without annotations on stdout.
    Unwrap,
    /// A new directory.
    Dir(PathBuf),
}

impl Output {
    /// Parses `-o`.
    pub fn parse(s: Option<&str>) -> Output {
        match s {
            None | Some("") => Output::InPlace,
            Some("stdout") => Output::Stdout,
            Some("unwrap") => Output::Unwrap,
            Some(d) => Output::Dir(PathBuf::from(d)),
        }
    }
}

/// Errors of `fn render` before or between functions.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// Package I/O.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// The package has no Kptfile.
    #[error("{0} has no Kptfile: fn render needs a kpt package (a directory with a Kptfile)")]
    NoKptfile(PathBuf),
    /// The Kptfile's pipeline is malformed.
    #[error("Kptfile of package {package}: {message}")]
    BadPipeline {
        /// The package.
        package: String,
        /// What is wrong.
        message: String,
    },
    /// A configPath names no resource of the package.
    #[error("package {package}: configPath {path:?} is not a resource of the package")]
    MissingConfig {
        /// The package.
        package: String,
        /// The configPath.
        path: String,
    },
    /// A function failed.
    #[error("package {package:?}: {message}")]
    Function {
        /// The package (kpt's display name, `root/sub`).
        package: String,
        /// What failed, with the function's name and stderr.
        message: String,
    },
}

/// Everything a render produced.
#[derive(Default)]
pub struct Rendered {
    /// The hydrated items (paths relative to the root).
    pub items: Vec<Value>,
    /// What was read, for write-back.
    pub originals: Originals,
    /// Every function run, in order.
    pub records: Vec<StepRecord>,
    /// How many packages.
    pub packages: usize,
}

/// `fn render`: hydrates the package at `root` depth-first (subpackages first, sorted), or
/// top-down breadth-first when the root Kptfile has `kpt.dev/bfs-rendering: "true"`, each
/// package's mutators then validators running on its resources and its subpackages' output.
pub fn render(
    runner: &Runner,
    root: &Path,
    out: &mut dyn Write,
    print: PrintOptions,
) -> (Result<(), RenderError>, Rendered) {
    let mut st = Rendered::default();
    if !root.join(package::KPTFILE).is_file() {
        return (Err(RenderError::NoKptfile(root.to_path_buf())), st);
    }
    let root_name = root
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| ".".into());
    let bfs = read_kptfile(root).is_some_and(|k| rl::annotation(&k, BFS_RENDERING) == Some("true"));
    let r = if bfs {
        hydrate_bfs(runner, root, &root_name, &mut st, out, print)
    } else {
        // Native `exec` functions may have effects beyond their output, so a tree with any
        // renders one package at a time, in kpt's order; Wasm functions have none.
        let jobs = if runner.jobs > 1 && (!runner.allow_exec || !tree_has_exec(root)) {
            runner.jobs
        } else {
            1
        };
        hydrate(runner, root, "", &root_name, &mut st, out, print, jobs)
    };
    match r {
        Ok(items) => {
            st.items = items;
            (Ok(()), st)
        }
        Err(e) => (Err(e), st),
    }
}

#[allow(clippy::too_many_arguments)]
fn hydrate(
    runner: &Runner,
    root: &Path,
    rel: &str,
    root_name: &str,
    st: &mut Rendered,
    out: &mut dyn Write,
    print: PrintOptions,
    jobs: usize,
) -> Result<Vec<Value>, RenderError> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let prefix = if rel.is_empty() {
        String::new()
    } else {
        format!("{rel}/")
    };
    let display = if rel.is_empty() {
        root_name.to_string()
    } else {
        format!("{root_name}/{rel}")
    };
    let mut items = package::read_package(&dir, false, &prefix, &mut st.originals)?;
    let kptfile_path = format!("{prefix}{}", package::KPTFILE);
    let kptfile = items
        .iter()
        .find(|i| rl::annotation(i, rl::PATH) == Some(kptfile_path.as_str()))
        .cloned()
        .unwrap_or(Value::Null);
    let subpackages: Vec<String> = package::direct_subpackages(&dir)?
        .into_iter()
        .map(|sub| format!("{prefix}{sub}"))
        .collect();
    let done = if jobs > 1 && subpackages.len() > 1 {
        hydrate_siblings(
            runner,
            root,
            &subpackages,
            root_name,
            st,
            out,
            print,
            jobs,
            &mut items,
        )
    } else {
        subpackages.iter().try_for_each(|sub_rel| {
            let sub_items = hydrate(runner, root, sub_rel, root_name, st, out, print, jobs)?;
            items.extend(sub_items);
            Ok(())
        })
    };
    if let Err(e) = done {
        // Partial output for `kpt.dev/save-on-render-failure`: this package's files as
        // read, the subpackages done so far, and what the failing one had.
        items.append(&mut st.items);
        st.items = items;
        return Err(e);
    }
    st.packages += 1;
    match run_pipeline(
        runner, &dir, &prefix, &display, &kptfile, &mut items, st, out, print,
    ) {
        Ok(()) => Ok(items),
        Err(e) => {
            st.items = items;
            Err(e)
        }
    }
}

/// One subpackage hydrated on a worker thread: what `hydrate` returned, its own record of
/// the run, and its console output, held back until the subpackages before it are printed.
type SiblingRender = (Result<Vec<Value>, RenderError>, Rendered, Vec<u8>);

/// Hydrates sibling subpackages (`rels`, in kpt's order) on up to `jobs` threads, each
/// subtree with its share of `jobs` (one package at a time when there are more siblings
/// than jobs), and merges them in kpt's order: the same items, records
/// and console output as hydrating them one after another. Siblings are independent: each
/// pipeline sees only its own package and the packages below it. On a failure, the
/// subpackages after the failing one are dropped (and not started once it is known), as if
/// they had never run; `st.items` then holds the failing one's partial output. Their items
/// are appended to `items`.
#[allow(clippy::too_many_arguments)]
fn hydrate_siblings(
    runner: &Runner,
    root: &Path,
    rels: &[String],
    root_name: &str,
    st: &mut Rendered,
    out: &mut dyn Write,
    print: PrintOptions,
    jobs: usize,
    items: &mut Vec<Value>,
) -> Result<(), RenderError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let first_failure = AtomicUsize::new(usize::MAX);
    // A few siblings with deep subtrees (root -> a, b -> many each) still use every job.
    let jobs_below = (jobs / rels.len()).max(1);
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::channel::<(usize, SiblingRender)>();
        for _ in 0..jobs.min(rels.len()) {
            let sender = sender.clone();
            let (next, first_failure) = (&next, &first_failure);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(rel) = rels.get(i) else { break };
                    if i > first_failure.load(Ordering::SeqCst) {
                        break;
                    }
                    let mut sub_st = Rendered::default();
                    let mut console = Vec::new();
                    let result = hydrate(
                        runner,
                        root,
                        rel,
                        root_name,
                        &mut sub_st,
                        &mut console,
                        print,
                        jobs_below,
                    );
                    if result.is_err() {
                        first_failure.fetch_min(i, Ordering::SeqCst);
                    }
                    if sender.send((i, (result, sub_st, console))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);
        let mut finished: BTreeMap<usize, SiblingRender> = BTreeMap::new();
        let mut merged = 0usize;
        for (i, sibling) in receiver {
            finished.insert(i, sibling);
            while let Some((result, mut sub_st, console)) = finished.remove(&merged) {
                merged += 1;
                let _ = out.write_all(&console);
                st.records.append(&mut sub_st.records);
                st.originals.append(&mut sub_st.originals);
                st.packages += sub_st.packages;
                match result {
                    Ok(sub_items) => items.extend(sub_items),
                    Err(e) => {
                        st.items = std::mem::take(&mut sub_st.items);
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    })
}

/// The Kptfile of the package at `dir`, if it reads and parses (render reports the errors
/// when it reads the package).
fn read_kptfile(dir: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join(package::KPTFILE)).ok()?;
    crate::yaml::parse_one(&text).ok()
}

/// Whether any package of the tree at `root` has an `exec` function, or a Kptfile that
/// cannot be read (the render reports it, one package at a time).
fn tree_has_exec(root: &Path) -> bool {
    let pipeline = read_kptfile(root).and_then(|kptfile| Pipeline::from_kptfile(&kptfile).ok());
    let Some(pipeline) = pipeline else {
        return true;
    };
    if pipeline
        .mutators
        .iter()
        .chain(&pipeline.validators)
        .any(|spec| spec.exec.is_some())
    {
        return true;
    }
    match package::direct_subpackages(root) {
        Ok(subs) => subs.iter().any(|sub| tree_has_exec(&root.join(sub))),
        Err(_) => true,
    }
}

/// Reads every package of the tree at `root` (paths relative to the root), and lists the
/// packages breadth-first: the root, its direct subpackages (sorted), theirs, and so on.
fn read_tree(
    root: &Path,
    originals: &mut Originals,
) -> Result<(Vec<Value>, Vec<String>), RenderError> {
    let mut items = Vec::new();
    let mut order = Vec::new();
    let mut queue = std::collections::VecDeque::from([String::new()]);
    while let Some(rel) = queue.pop_front() {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let prefix = if rel.is_empty() {
            String::new()
        } else {
            format!("{rel}/")
        };
        items.extend(package::read_package(&dir, false, &prefix, originals)?);
        for sub in package::direct_subpackages(&dir)? {
            queue.push_back(format!("{prefix}{sub}"));
        }
        order.push(rel);
    }
    Ok((items, order))
}

/// `kpt.dev/bfs-rendering: "true"` on the root Kptfile: packages render top-down,
/// breadth-first, each pipeline seeing its package's resources and all its descendants' (as
/// the packages above have left them).
fn hydrate_bfs(
    runner: &Runner,
    root: &Path,
    root_name: &str,
    st: &mut Rendered,
    out: &mut dyn Write,
    print: PrintOptions,
) -> Result<Vec<Value>, RenderError> {
    let (mut all, order) = read_tree(root, &mut st.originals)?;
    for rel in order {
        let (dir, prefix, display) = if rel.is_empty() {
            (root.to_path_buf(), String::new(), root_name.to_string())
        } else {
            (
                root.join(&rel),
                format!("{rel}/"),
                format!("{root_name}/{rel}"),
            )
        };
        // This package and everything below it, in their current order.
        let (mut scope, rest): (Vec<Value>, Vec<Value>) = all
            .into_iter()
            .partition(|i| package::path_and_index(i).0.starts_with(&prefix));
        let kptfile_path = format!("{prefix}{}", package::KPTFILE);
        let kptfile = scope
            .iter()
            .find(|i| rl::annotation(i, rl::PATH) == Some(kptfile_path.as_str()))
            .cloned()
            .unwrap_or(Value::Null);
        st.packages += 1;
        let r = run_pipeline(
            runner, &dir, &prefix, &display, &kptfile, &mut scope, st, out, print,
        );
        all = rest;
        all.append(&mut scope);
        if let Err(e) = r {
            st.items = all;
            return Err(e);
        }
    }
    Ok(all)
}

/// Runs one package's pipeline (mutators, then validators) on `items` (its resources and its
/// subpackages'); on failure `items` keeps what the last successful mutator left.
#[allow(clippy::too_many_arguments)]
fn run_pipeline(
    runner: &Runner,
    dir: &Path,
    prefix: &str,
    display: &str,
    kptfile: &Value,
    items: &mut Vec<Value>,
    st: &mut Rendered,
    out: &mut dyn Write,
    print: PrintOptions,
) -> Result<(), RenderError> {
    let pipeline = Pipeline::from_kptfile(kptfile).map_err(|message| RenderError::BadPipeline {
        package: display.to_string(),
        message,
    })?;
    if pipeline.is_empty() {
        return Ok(());
    }
    let _ = writeln!(out, "Package \"{display}\": ");
    for (validator, spec) in pipeline
        .mutators
        .iter()
        .map(|m| (false, m))
        .chain(pipeline.validators.iter().map(|v| (true, v)))
    {
        let config = function_config(spec, items, prefix, display)?;
        let f = match (&spec.image, &spec.exec) {
            (Some(image), _) => FnRef::Image(match &spec.tag {
                Some(tag) if crate::images::is_constraint(tag) && !has_tag(image) => {
                    match runner.resolve_tag_constraint(image, tag) {
                        Ok(resolved) => resolved,
                        Err(message) => {
                            return Err(RenderError::BadPipeline {
                                package: display.to_string(),
                                message,
                            });
                        }
                    }
                }
                Some(tag) if !has_tag(image) => format!("{image}:{tag}"),
                _ => image.clone(),
            }),
            (None, Some(exec)) => {
                let mut parts = exec.split_whitespace().map(str::to_string);
                FnRef::Exec {
                    program: parts.next().unwrap_or_default(),
                    args: parts.collect(),
                }
            }
            (None, None) => continue,
        };
        let _ = writeln!(
            out,
            "[RUNNING] \"{}\" on package \"{display}\"",
            spec.display()
        );
        // The function sees paths relative to its own package.
        let local: Vec<Value> = items.iter().map(|i| relocate(i, prefix, "")).collect();
        let (result, rec) = run_step(
            runner,
            &f,
            &local,
            config,
            &spec.selectors,
            &spec.exclude,
            dir,
        );
        let mut rec = rec;
        rec.validator = validator;
        rec.pipeline_name = spec.name.clone();
        print_step(out, &rec, print);
        st.records.push(rec);
        let new_items = match result {
            Ok(new_items) => new_items,
            Err(message) => {
                return Err(RenderError::Function {
                    package: display.to_string(),
                    message,
                });
            }
        };
        if validator {
            continue;
        }
        let mut back = Vec::with_capacity(new_items.len());
        for item in new_items {
            let (p, _) = package::path_and_index(&item);
            package::check_inside(&item, &p, display)?;
            back.push(relocate(&item, "", prefix));
        }
        *items = back;
    }
    let _ = writeln!(out);
    Ok(())
}

/// Rewrites an item's path annotations from prefix `from` to prefix `to`.
fn relocate(item: &Value, from: &str, to: &str) -> Value {
    if from == to {
        return item.clone();
    }
    let mut item = item.clone();
    let (path, index) = package::path_and_index(&item);
    if rl::annotation(&item, rl::PATH).is_none() && rl::annotation(&item, rl::LEGACY_PATH).is_none()
    {
        // A new item without a path: it gets kyaml's default name inside this package.
        let p = format!("{to}{path}");
        rl::set_annotation(&mut item, rl::PATH, &p);
        rl::set_annotation(&mut item, rl::LEGACY_PATH, &p);
        return item;
    }
    let stripped = path.strip_prefix(from).unwrap_or(&path);
    let p = format!("{to}{stripped}");
    rl::set_annotation(&mut item, rl::PATH, &p);
    rl::set_annotation(&mut item, rl::LEGACY_PATH, &p);
    if index != usize::MAX {
        rl::set_annotation(&mut item, rl::INDEX, &index.to_string());
        rl::set_annotation(&mut item, rl::LEGACY_INDEX, &index.to_string());
    }
    item
}

fn function_config(
    spec: &FunctionSpec,
    items: &[Value],
    prefix: &str,
    display: &str,
) -> Result<Option<Value>, RenderError> {
    if let Some(data) = &spec.config_map {
        return Ok(Some(kptfile::config_map(data)));
    }
    if let Some(path) = &spec.config_path {
        let want = format!("{prefix}{}", path.trim_start_matches("./"));
        // Re-read from the current, already mutated resources.
        let found = items
            .iter()
            .find(|i| rl::annotation(i, rl::PATH) == Some(want.as_str()))
            .cloned()
            .ok_or_else(|| RenderError::MissingConfig {
                package: display.into(),
                path: path.clone(),
            })?;
        let mut c = found;
        rl::remove_annotations(&mut c, package::INTERNAL_ANNOTATIONS);
        return Ok(Some(c));
    }
    Ok(None)
}

/// The annotation on the root Kptfile that makes a failed render write its partial output.
pub const SAVE_ON_RENDER_FAILURE: &str = "kpt.dev/save-on-render-failure";

/// Whether the root Kptfile asks for partial output on failure.
pub fn save_on_render_failure(kptfile: &Value) -> bool {
    rl::annotation(kptfile, SAVE_ON_RENDER_FAILURE) == Some("true")
}

/// The root Kptfile annotation that makes `fn render` go top-down, breadth-first.
pub const BFS_RENDERING: &str = "kpt.dev/bfs-rendering";

/// kpt's `status` for the root Kptfile after a render: `conditions` (one `Rendered`
/// condition) and `renderStatus` (every mutation and validation step; an `errorSummary` on
/// failure). `error` is the render's error with the root path replaced by `.`.
pub fn render_status(records: &[StepRecord], error: Option<&str>) -> Map<String, Value> {
    let step = |r: &StepRecord| {
        let mut m = Map::new();
        if let Some(n) = &r.pipeline_name {
            m.insert("name".into(), Value::String(n.clone()));
        }
        if let Some(i) = &r.image {
            m.insert("image".into(), Value::String(i.clone()));
        }
        if let Some(e) = &r.exec {
            m.insert("exec".into(), Value::String(e.clone()));
        }
        if let Some(e) = &r.execution_error {
            m.insert("executionError".into(), Value::String(e.clone()));
        }
        let stderr = r.recorded_stderr();
        if !stderr.is_empty() {
            m.insert("stderr".into(), Value::String(stderr));
        }
        m.insert("exitCode".into(), Value::from(r.exit_code));
        let (errors, others): (Vec<&FnResult>, Vec<&FnResult>) =
            r.results.iter().partition(|x| x.is_error());
        if !others.is_empty() {
            m.insert(
                "results".into(),
                Value::Array(others.iter().map(|x| x.to_value()).collect()),
            );
        }
        if !errors.is_empty() {
            m.insert(
                "errorResults".into(),
                Value::Array(errors.iter().map(|x| x.to_value()).collect()),
            );
        }
        Value::Object(m)
    };
    let mut condition = Map::new();
    condition.insert("type".into(), Value::String("Rendered".into()));
    condition.insert(
        "status".into(),
        Value::String(if error.is_some() { "False" } else { "True" }.into()),
    );
    condition.insert(
        "reason".into(),
        Value::String(
            if error.is_some() {
                "RenderFailed"
            } else {
                "RenderSuccess"
            }
            .into(),
        ),
    );
    if let Some(e) = error {
        condition.insert("message".into(), Value::String(e.to_string()));
    }
    let mut render = Map::new();
    let mutations: Vec<Value> = records.iter().filter(|r| !r.validator).map(step).collect();
    let validations: Vec<Value> = records.iter().filter(|r| r.validator).map(step).collect();
    if !mutations.is_empty() {
        render.insert("mutationSteps".into(), Value::Array(mutations));
    }
    if !validations.is_empty() {
        render.insert("validationSteps".into(), Value::Array(validations));
    }
    if let Some(e) = error {
        render.insert("errorSummary".into(), Value::String(e.to_string()));
    }
    let mut status = Map::new();
    status.insert(
        "conditions".into(),
        Value::Array(vec![Value::Object(condition)]),
    );
    status.insert("renderStatus".into(), Value::Object(render));
    status
}

/// Sets `status` on the root Kptfile among `items` (the item whose path is `Kptfile`) and
/// normalises it as kpt's rewrite does ([`kptfile::normalise`]). Returns whether there was one.
pub fn set_root_status(items: &mut [Value], status: &Map<String, Value>) -> bool {
    let Some(kf) = items
        .iter_mut()
        .find(|i| rl::annotation(i, rl::PATH) == Some(package::KPTFILE))
    else {
        return false;
    };
    kptfile::set_status(kf, status);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_with_an_exec_function_anywhere_is_found() {
        let tmp = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let p = tmp.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        let kptfile = |name: &str, function: &str| {
            format!(
                "apiVersion: kpt.dev/v1\nkind: Kptfile\nmetadata:\n  name: {name}\npipeline:\n  mutators:\n    - {function}\n"
            )
        };
        write("Kptfile", &kptfile("root", "image: set-labels:v0.2"));
        write("a/Kptfile", &kptfile("a", "image: set-labels:v0.2"));
        write("b/Kptfile", &kptfile("b", "image: set-labels:v0.2"));
        assert!(!tree_has_exec(tmp.path()));
        // Two levels down, as a validator.
        write(
            "b/c/Kptfile",
            "apiVersion: kpt.dev/v1\nkind: Kptfile\nmetadata:\n  name: c\npipeline:\n  validators:\n    - exec: ./check.sh\n",
        );
        assert!(tree_has_exec(tmp.path()));
        // An unreadable pipeline counts as one: the render goes one package at a time and
        // reports it in kpt's order.
        write("b/c/Kptfile", "pipeline: [not, a, map");
        assert!(tree_has_exec(tmp.path()));
    }

    #[test]
    fn image_names_resolve_as_kpt_does() {
        let runner = Runner {
            modules: ModulePipeline::new(hoist_modules::ModuleOptions {
                cache_dir: None,
                ..Default::default()
            })
            .unwrap(),
            limits: FnLimits::default(),
            image_prefix: DEFAULT_IMAGE_PREFIX.into(),
            image_map: [(
                "ghcr.io/kptdev/krm-functions-catalog/set-labels".to_string(),
                "/tmp/set-labels.wasm".to_string(),
            )]
            .into_iter()
            .collect(),
            allow_exec: false,
            go_resume: Default::default(),
            jobs: 1,
            mirrors: {
                let mut m = crate::images::Mirrors::default();
                m.extend_from_env_value("ghcr.io=http://127.0.0.1:5000")
                    .unwrap();
                m
            },
        };
        // Short names get kpt's prefix (and here go to the ghcr.io mirror).
        assert_eq!(
            runner.resolve_image("set-namespace:v0.4.1"),
            "oci://127.0.0.1:5000/kptdev/krm-functions-catalog/set-namespace:v0.4.1"
        );
        assert_eq!(
            runner.resolve_image("set-namespace"),
            "oci://127.0.0.1:5000/kptdev/krm-functions-catalog/set-namespace:latest"
        );
        assert_eq!(
            runner.resolve_image("127.0.0.1:5000/fns/x:v1"),
            "oci://127.0.0.1:5000/fns/x:v1"
        );
        assert_eq!(
            runner.resolve_image("127.0.0.1:5000/fns/x"),
            "oci://127.0.0.1:5000/fns/x:latest"
        );
        assert_eq!(
            runner.resolve_image("set-labels:v0.2"),
            "/tmp/set-labels.wasm"
        );
        assert_eq!(runner.resolve_image("./fn.wasm"), "./fn.wasm");
        assert_eq!(runner.resolve_image("oci://r/x:1"), "oci://r/x:1");
    }

    #[test]
    fn results_file_has_kpt_layout() {
        let rec = StepRecord {
            image: Some("set-namespace".into()),
            stderr: "a\nb\n".into(),
            results: vec![FnResult {
                message: "done".into(),
                severity: "info".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = results_file(&[rec], 0);
        let v = crate::yaml::parse_one(&text).unwrap();
        assert_eq!(v["kind"], "FunctionResultList");
        assert_eq!(v["metadata"]["name"], "fnresults");
        assert_eq!(v["items"][0]["stderr"], "a\nb");
        assert_eq!(v["items"][0]["results"][0]["message"], "done");
    }

    #[test]
    fn step_output_blocks_truncate() {
        let rec = StepRecord {
            image: Some("f".into()),
            results: (0..6)
                .map(|i| FnResult {
                    message: format!("m{i}"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let mut buf = Vec::new();
        print_step(&mut buf, &rec, PrintOptions { truncate: true });
        let s = String::from_utf8(buf).unwrap();
        assert!(
            s.starts_with("[PASS] \"f\" in 0s\n  [Results]: [info]: m0\n"),
            "{s}"
        );
        assert!(s.contains("...(2 line(s) truncated"), "{s}");
    }
}
