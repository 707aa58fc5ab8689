//! Running one KRM function on a ResourceList: Go js/wasm (function or command style), WASI
//! preview 1, or a native program (`--exec`).

use hoist_gojs::{GoInstance, GoJsError, GoOptions, Snapshot, Value as JsValue};
use hoist_runtime::{
    FlightEngine, FlightError, FlightSpec, GoResumeCache, LoadedModule, StderrMode,
};
use std::cell::RefCell;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How a function was run (detected from its imports and behaviour, never from a flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FnKind {
    /// Go js/wasm module that registered `processResourceList`.
    GoJsFunction,
    /// Go js/wasm module that read stdin, wrote stdout and exited.
    GoJsCommand,
    /// WASI preview 1 command (stdin -> stdout).
    Wasi,
    /// A native program.
    Exec,
}

/// Limits for a function run.
#[derive(Debug, Clone, Copy)]
pub struct FnLimits {
    /// Linear memory cap.
    pub max_memory_bytes: u64,
    /// Wall-clock limit.
    pub timeout: Option<Duration>,
    /// Output cap (stdout and stderr each).
    pub max_output_bytes: usize,
}

impl Default for FnLimits {
    fn default() -> Self {
        FnLimits {
            max_memory_bytes: 2 << 30,
            timeout: Some(Duration::from_secs(300)),
            max_output_bytes: 256 << 20,
        }
    }
}

/// What a function produced.
#[derive(Debug, Clone)]
pub struct FnOutput {
    /// How it ran.
    pub kind: FnKind,
    /// The output ResourceList text (stdout, or `processResourceList`'s result).
    pub output: Vec<u8>,
    /// Its stderr (for js functions: fd 2 writes; stdout writes of a
    /// `processResourceList` function are appended here too, never to `output`).
    pub stderr: String,
    /// Exit code (0: success).
    pub exit_code: i32,
}

/// Why a function could not run at all (as opposed to running and failing).
#[derive(Debug, thiserror::Error)]
pub enum FnRunError {
    /// The Go host failed.
    #[error("{error}{}", stderr_suffix(stderr))]
    GoJs {
        /// The host's error.
        error: GoJsError,
        /// What the function wrote to stderr.
        stderr: String,
    },
    /// The WASI runtime failed.
    #[error(transparent)]
    Wasi(FlightError),
    /// The module is neither Go js/wasm nor WASI.
    #[error(
        "{what} is neither a Go js/wasm module (imports `gojs`/`go`) nor a WASI preview 1 command (imports `wasi_snapshot_preview1`, exports `_start`): hoist cannot run it as a KRM function"
    )]
    UnknownKind {
        /// The module.
        what: String,
    },
    /// A native program could not be started.
    #[error("could not run {program}: {source}")]
    Exec {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    let t = stderr.trim_end();
    if t.is_empty() {
        String::new()
    } else {
        let lines: Vec<&str> = t.lines().collect();
        let shown = lines
            .get(lines.len().saturating_sub(20)..)
            .unwrap_or(&lines);
        format!("; its stderr:\n  {}", shown.join("\n  "))
    }
}

/// Whether a ResourceList text looks like a ResourceList (kpt's check before falling back
/// to `processResourceListErrors`).
fn is_resource_list(text: &str) -> bool {
    matches!(
        crate::yaml::parse_one(text),
        Ok(v) if v.get("kind").and_then(serde_json::Value::as_str) == Some("ResourceList")
    )
}

/// Runs the Wasm function `module` on `input`.
pub fn run_wasm(
    engine: &FlightEngine,
    module: &LoadedModule,
    what: &str,
    input: &[u8],
    limits: FnLimits,
) -> Result<FnOutput, FnRunError> {
    run_wasm_keyed(engine, module, None, what, input, limits)
}

/// Where the snapshot-ready form of a Go js/wasm function comes from: the same module with
/// its globals exported ([`hoist_gojs::export_globals`]), compiled for an engine.
pub struct SnapshotSource<'a> {
    /// SHA-256 (hex) of the function's module.
    pub digest: &'a str,
    /// Makes the rewritten module ready (`None`: it cannot be had; no snapshot then).
    pub instrumented: &'a dyn Fn() -> Option<(&'a FlightEngine, LoadedModule)>,
    /// For a Go `GOOS=wasip1` function: the resume points of this module (its state at its
    /// first read of stdin), so that later calls skip Go's start-up
    /// ([`hoist_runtime::run_flight_resumable`]).
    pub wasi_resume: Option<&'a GoResumeCache>,
}

/// One [`GoResumeCache`] per module digest, for the Go `GOOS=wasip1` functions a runner
/// calls: living as long as the runner, so a render over many packages pays each module's
/// start-up once.
#[derive(Debug, Default)]
pub struct GoResumeCaches {
    caches: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<GoResumeCache>>>,
}

impl GoResumeCaches {
    /// The cache of the module with SHA-256 `digest` (made empty on first use).
    pub fn for_digest(&self, digest: &str) -> std::sync::Arc<GoResumeCache> {
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches.entry(digest.to_string()).or_default().clone()
    }

    /// How many runs, over every module, started from a resume point.
    pub fn resumed(&self) -> usize {
        let caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches.values().map(|c| c.resumed()).sum()
    }
}

/// Runs the Wasm function `module` on `input`. With a [`SnapshotSource`], a Go js/wasm
/// function called again in this thread runs from its snapshot-ready form, whose post-`main`
/// state is snapshotted and restored for every later call, so Go's start-up is paid at most
/// twice per module (when [`snapshots_enabled`]); outputs are those of a fresh start.
pub fn run_wasm_keyed(
    engine: &FlightEngine,
    module: &LoadedModule,
    snapshot: Option<&SnapshotSource<'_>>,
    what: &str,
    input: &[u8],
    limits: FnLimits,
) -> Result<FnOutput, FnRunError> {
    if hoist_gojs::is_go_js(&module.module) {
        return run_go_js(engine, module, what, input, limits, snapshot);
    }
    let wasi = module
        .module
        .imports()
        .any(|i| i.module() == "wasi_snapshot_preview1")
        || module.module.get_export("_start").is_some();
    if !wasi {
        return Err(FnRunError::UnknownKind { what: what.into() });
    }
    let spec = FlightSpec {
        what,
        release: "krm-function",
        namespace: "",
        args: &[],
        stdin: input.to_vec(),
        max_memory_bytes: limits.max_memory_bytes,
        timeout: limits.timeout,
        max_stdout_bytes: limits.max_output_bytes,
        stderr: StderrMode::Capture,
        cluster: None,
    };
    let resume = snapshot
        .and_then(|s| s.wasi_resume)
        .filter(|_| snapshots_enabled());
    let result = match resume {
        Some(cache) => hoist_runtime::run_flight_resumable(engine, module, spec, cache),
        None => hoist_runtime::run_flight(engine, module, spec),
    };
    match result {
        Ok(out) => Ok(FnOutput {
            kind: FnKind::Wasi,
            output: out.stdout,
            stderr: out.stderr_tail,
            exit_code: 0,
        }),
        Err(FlightError::Exit {
            code,
            stderr_tail,
            stdout,
            ..
        }) => Ok(FnOutput {
            kind: FnKind::Wasi,
            output: stdout,
            stderr: stderr_tail,
            exit_code: code,
        }),
        Err(e) => Err(FnRunError::Wasi(e)),
    }
}

/// Process-wide override of `HOIST_GOJS_SNAPSHOT`: 0 = the environment decides, 1 = on, 2 = off.
static SNAPSHOTS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Turns snapshots on or off for this process, whatever `HOIST_GOJS_SNAPSHOT` says (for tests
/// and embedders).
pub fn set_snapshots_enabled(enabled: bool) {
    SNAPSHOTS.store(
        if enabled { 1 } else { 2 },
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// Whether snapshots are used: post-`main` and first-read-of-stdin snapshots of Go js/wasm
/// functions, and resume points of Go wasip1 ones. Off unless `HOIST_GOJS_SNAPSHOT=1`:
/// measured on the catalog functions, Go's start-up before the first read is about 30 ms,
/// while a restore copies the whole heap; a 20-package render was slower with them (15.6 s
/// against 14.1 s on optimised code) and peaked at 3x the memory.
pub fn snapshots_enabled() -> bool {
    match SNAPSHOTS.load(std::sync::atomic::Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => matches!(
            std::env::var("HOIST_GOJS_SNAPSHOT").as_deref(),
            Ok("1" | "true" | "on" | "yes")
        ),
    }
}

/// What a pooled instance must match to be reused: the module's digest, its name (errors name
/// it) and the limits it was started with.
#[derive(Debug, Clone, PartialEq)]
struct PoolKey {
    digest: String,
    what: String,
    max_memory_bytes: u64,
    max_output_bytes: usize,
    timeout: Option<Duration>,
}

/// A Go instance paused where its snapshot was taken (or after a call, to be restored).
struct Pooled {
    key: PoolKey,
    go: GoInstance,
    snapshot: Snapshot,
    /// For a snapshot at a command's first read of stdin, until it is verified: the input
    /// and output of the run it was taken in (a restored run on the same input must give
    /// the same output, byte for byte).
    unverified: Option<(Vec<u8>, FnOutput)>,
}

/// Command-style runs served from a snapshot at the first read of stdin, in this process.
static STDIN_RESTORES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many command-style Go js/wasm runs (in this process) were served by restoring a
/// snapshot taken at the program's first read of stdin, instead of starting Go afresh.
pub fn stdin_snapshot_restores() -> usize {
    STDIN_RESTORES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Most modules whose instance and snapshot are kept per thread (a render pipeline rarely has
/// more distinct js/wasm functions).
const POOL_MAX: usize = 4;

thread_local! {
    /// Instances with their post-`main` snapshots, per module, for this thread's later calls.
    /// (JS values are `Rc`s, so instances stay on the thread that made them.)
    static POOL: RefCell<Vec<Pooled>> = const { RefCell::new(Vec::new()) };
}

fn take_pooled(key: &PoolKey) -> Option<Pooled> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let i = pool.iter().position(|p| &p.key == key)?;
        Some(pool.remove(i))
    })
}

fn put_back(pooled: Pooled) {
    // A program that exited (unless its snapshot is at a command's read of stdin, which
    // restores an exited program), or grew far past its snapshot, is not kept.
    if (pooled.go.exit_code().is_some() && !pooled.snapshot.at_stdin_read())
        || pooled.go.memory_size() > pooled.snapshot.memory_bytes().saturating_add(512 << 20)
    {
        return;
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() >= POOL_MAX {
            pool.remove(0);
        }
        pool.push(pooled);
    });
}

/// What this thread knows about a module (by digest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Run once as a function: the next call uses the snapshot-ready form.
    Once,
    /// A command, or its state could not be snapshotted: always start afresh.
    NotSnapshottable,
}

thread_local! {
    static SEEN: RefCell<std::collections::HashMap<String, Seen>> = RefCell::new(Default::default());
}

fn seen(digest: &str) -> Option<Seen> {
    SEEN.with(|s| s.borrow().get(digest).copied())
}

fn mark(digest: &str, what: Seen) {
    SEEN.with(|s| {
        s.borrow_mut().insert(digest.to_string(), what);
    });
}

/// Drops this thread's pooled instances and snapshots.
pub fn clear_snapshots() {
    POOL.with(|pool| pool.borrow_mut().clear());
    SEEN.with(|s| s.borrow_mut().clear());
}

fn run_go_js(
    engine: &FlightEngine,
    module: &LoadedModule,
    what: &str,
    input: &[u8],
    limits: FnLimits,
    source: Option<&SnapshotSource<'_>>,
) -> Result<FnOutput, FnRunError> {
    let source = source.filter(|_| snapshots_enabled());
    let key = source.map(|src| PoolKey {
        digest: src.digest.to_string(),
        what: what.to_string(),
        max_memory_bytes: limits.max_memory_bytes,
        max_output_bytes: limits.max_output_bytes,
        timeout: limits.timeout,
    });
    // Warm: restore the post-`main` snapshot of an instance of the same module and call it.
    if let Some(mut pooled) = key.as_ref().and_then(take_pooled) {
        if pooled.snapshot.at_stdin_read() {
            if let Some(out) = run_from_stdin_snapshot(pooled, what, input) {
                return out;
            }
            if let Some(src) = source {
                mark(src.digest, Seen::NotSnapshottable);
            }
        } else {
            match pooled.go.restore(&pooled.snapshot, input.to_vec()) {
                Ok(()) => {
                    tracing::debug!(what, "restored the post-main snapshot");
                    let out = call_process_resource_list(&mut pooled.go, input);
                    // A call that trapped or hit a limit leaves nothing to reuse.
                    if out.is_ok() {
                        put_back(pooled);
                    }
                    return out;
                }
                Err(e) => {
                    tracing::debug!(what, reason = %e, "snapshot not restorable; starting afresh")
                }
            }
        }
    }
    // Called before as a function: start the snapshot-ready form, to snapshot it.
    let instrumented = match source {
        Some(src) => match seen(src.digest) {
            None => {
                mark(src.digest, Seen::Once);
                None
            }
            Some(Seen::Once) => {
                let m = (src.instrumented)();
                if m.is_none() {
                    tracing::debug!(what, "no snapshot-ready form of the module");
                    mark(src.digest, Seen::NotSnapshottable);
                }
                m
            }
            Some(Seen::NotSnapshottable) => None,
        },
        None => None,
    };
    let (engine, wasm_module) = match &instrumented {
        Some((e, m)) => (*e, &m.module),
        None => (engine, &module.module),
    };
    // Only a run of the snapshot-ready form tells whether the module can be snapshotted.
    let not_snapshottable = || {
        if let (Some(src), Some(_)) = (source, &instrumented) {
            mark(src.digest, Seen::NotSnapshottable);
        }
    };
    let options_defer = key.is_some() && instrumented.is_some();
    let options = GoOptions {
        argv: vec!["js".into()],
        stdin: input.to_vec(),
        max_memory_bytes: limits.max_memory_bytes,
        timeout: limits.timeout,
        max_output_bytes: limits.max_output_bytes,
        // The snapshot-ready form pauses at a command's first read of stdin, to snapshot it.
        defer_stdin: options_defer,
        ..GoOptions::default()
    };
    let mut go =
        GoInstance::start(engine.engine(), wasm_module, what, options).map_err(|error| {
            FnRunError::GoJs {
                error,
                stderr: String::new(),
            }
        })?;
    // Command style, paused at its first read of stdin: snapshot it there.
    if options_defer && go.exit_code().is_none() && !go.has_function("processResourceList") {
        go.run_until_stdin(Some("processResourceList"))
            .map_err(|error| FnRunError::GoJs {
                error,
                stderr: take_all_stderr(&mut go),
            })?;
    }
    let stdin_snapshot = match &key {
        Some(_) if go.waiting_for_stdin() && go.stdin_read() == 0 => match go.snapshot() {
            Ok(s) => {
                tracing::debug!(
                    what,
                    memory = s.memory_bytes(),
                    "took the snapshot at the first read of stdin"
                );
                Some(s)
            }
            Err(e) => {
                tracing::debug!(what, reason = %e, "no snapshot at the first read of stdin");
                None
            }
        },
        _ => None,
    };
    // Command style: main read stdin, wrote stdout and exited.
    if let Some(code) = go.exit_code() {
        not_snapshottable();
        return Ok(command_output(&mut go, code));
    }
    if !go.has_function("processResourceList") {
        // Let pending timers run, as node's event loop would; a command may still finish.
        match go.run_until(Some("processResourceList")) {
            Ok(true) => {
                let code = go.exit_code().unwrap_or(0);
                let out = command_output(&mut go, code);
                match (key, stdin_snapshot) {
                    (Some(key), Some(snapshot)) => put_back(Pooled {
                        key,
                        go,
                        snapshot,
                        unverified: Some((input.to_vec(), out.clone())),
                    }),
                    _ => not_snapshottable(),
                }
                return Ok(out);
            }
            Ok(false) if go.has_function("processResourceList") => {}
            Ok(false) => {
                // Neither exited nor registered anything: Go reports the deadlock itself.
                not_snapshottable();
                let _ = go.report_deadlock();
                let code = go.exit_code().unwrap_or(2);
                let mut out = command_output(&mut go, code);
                if out.exit_code == 0 {
                    out.exit_code = 1;
                }
                out.stderr.push_str(
                    "hoist: the function neither exited nor registered processResourceList (it waits for an event that never comes)\n",
                );
                return Ok(out);
            }
            Err(e) => {
                return Err(FnRunError::GoJs {
                    error: e,
                    stderr: take_all_stderr(&mut go),
                });
            }
        }
    }
    // Function style: snapshot the post-`main` state for later calls of the same module.
    let snapshot = match (&key, &instrumented) {
        (Some(_), Some(_)) => match go.snapshot() {
            Ok(s) => {
                tracing::debug!(
                    what,
                    memory = s.memory_bytes(),
                    "took the post-main snapshot"
                );
                Some(s)
            }
            Err(e) => {
                tracing::debug!(what, reason = %e, "no post-main snapshot");
                not_snapshottable();
                None
            }
        },
        _ => None,
    };
    let out = call_process_resource_list(&mut go, input);
    if let (Some(key), Some(snapshot), true) = (key, snapshot, out.is_ok()) {
        put_back(Pooled {
            key,
            go,
            snapshot,
            unverified: None,
        });
    }
    out
}

/// Runs a command-style function from its snapshot at the first read of stdin: verifies the
/// snapshot first if it is new (the run it was taken in, replayed, must give the same output
/// byte for byte), then restores it with `input` as stdin and runs the program to its exit.
/// `None` when the snapshot cannot be used (the caller starts afresh; snapshots are then off
/// for the module).
fn run_from_stdin_snapshot(
    mut pooled: Pooled,
    what: &str,
    input: &[u8],
) -> Option<Result<FnOutput, FnRunError>> {
    if let Some((first_input, first_output)) = pooled.unverified.take() {
        match finish_restored(&mut pooled, what, first_input) {
            Some(Ok(again)) if same_output(&again, &first_output) => {
                tracing::debug!(what, "verified the snapshot at the first read of stdin");
            }
            Some(Ok(_)) | Some(Err(_)) | None => {
                tracing::warn!(
                    what,
                    "a run restored from the snapshot at the first read of stdin did not give the output of the run it was taken in; snapshots are off for this function"
                );
                return None;
            }
        }
    }
    let out = finish_restored(&mut pooled, what, input.to_vec())?;
    STDIN_RESTORES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if out.is_ok() {
        put_back(pooled);
    }
    Some(out)
}

/// Restores `pooled` with `input` as stdin and runs it to its exit (`None`: not restorable).
fn finish_restored(
    pooled: &mut Pooled,
    what: &str,
    input: Vec<u8>,
) -> Option<Result<FnOutput, FnRunError>> {
    if let Err(e) = pooled.go.restore(&pooled.snapshot, input) {
        tracing::debug!(what, reason = %e, "snapshot at the first read of stdin not restorable");
        return None;
    }
    tracing::debug!(what, "restored the snapshot at the first read of stdin");
    let go = &mut pooled.go;
    Some(match go.run_until(None) {
        Ok(true) => {
            let code = go.exit_code().unwrap_or(0);
            Ok(command_output(go, code))
        }
        // It did not exit as the run the snapshot was taken in did: not the same program
        // behaviour, so the snapshot is not used.
        Ok(false) => return None,
        Err(error) => Err(FnRunError::GoJs {
            error,
            stderr: take_all_stderr(go),
        }),
    })
}

fn same_output(a: &FnOutput, b: &FnOutput) -> bool {
    a.kind == b.kind && a.output == b.output && a.stderr == b.stderr && a.exit_code == b.exit_code
}

/// Calls `processResourceList` (and `processResourceListErrors` when the result is not a
/// ResourceList), as kpt's wasm glue does.
fn call_process_resource_list(go: &mut GoInstance, input: &[u8]) -> Result<FnOutput, FnRunError> {
    let text = String::from_utf8_lossy(input).into_owned();
    let result = match go.call("processResourceList", vec![JsValue::string(&text)]) {
        Ok(v) => v,
        Err(e @ GoJsError::ExitedDuringCall { .. }) => {
            let code = go.exit_code().unwrap_or(2);
            let stderr = take_all_stderr(go);
            return Ok(FnOutput {
                kind: FnKind::GoJsFunction,
                output: Vec::new(),
                stderr: format!(
                    "{stderr}{}{e}\n",
                    if stderr.ends_with('\n') || stderr.is_empty() {
                        ""
                    } else {
                        "\n"
                    }
                ),
                exit_code: if code == 0 { 1 } else { code },
            });
        }
        Err(error) => {
            return Err(FnRunError::GoJs {
                error,
                stderr: take_all_stderr(go),
            });
        }
    };
    let out = result
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| result.to_js_string());
    if is_resource_list(&out) {
        return Ok(FnOutput {
            kind: FnKind::GoJsFunction,
            output: out.into_bytes(),
            stderr: take_all_stderr(go),
            exit_code: 0,
        });
    }
    // Not a ResourceList: kpt asks processResourceListErrors for the error messages.
    let errors = if go.has_function("processResourceListErrors") {
        go.call("processResourceListErrors", vec![JsValue::string(&text)])
            .ok()
            .map(|v| v.to_js_string())
            .filter(|s| s != "undefined")
            .unwrap_or_default()
    } else {
        String::new()
    };
    let mut stderr = take_all_stderr(go);
    if !stderr.is_empty() && !stderr.ends_with('\n') {
        stderr.push('\n');
    }
    if out.is_empty() || out == "undefined" {
        stderr.push_str("hoist: processResourceList returned nothing\n");
    } else {
        stderr.push_str("hoist: processResourceList did not return a ResourceList; it returned:\n");
        stderr.push_str(&out);
        stderr.push('\n');
    }
    if !errors.is_empty() {
        stderr.push_str(&errors);
        stderr.push('\n');
    }
    Ok(FnOutput {
        kind: FnKind::GoJsFunction,
        output: Vec::new(),
        stderr,
        exit_code: 1,
    })
}

fn take_all_stderr(go: &mut GoInstance) -> String {
    // A function-style module's stdout writes are diagnostics, never output.
    let mut s = String::from_utf8_lossy(&go.take_stderr()).into_owned();
    let out = go.take_stdout();
    if !out.is_empty() {
        s.push_str(&String::from_utf8_lossy(&out));
    }
    s
}

fn command_output(go: &mut GoInstance, code: i32) -> FnOutput {
    FnOutput {
        kind: FnKind::GoJsCommand,
        output: go.take_stdout(),
        stderr: String::from_utf8_lossy(&go.take_stderr()).into_owned(),
        exit_code: code,
    }
}

/// Runs a native program (`--exec`) with `args`, feeding `input` on stdin.
pub fn run_exec(program: &str, args: &[String], input: &[u8]) -> Result<FnOutput, FnRunError> {
    let mut child = Command::new(PathBuf::from(program))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| FnRunError::Exec {
            program: program.into(),
            source,
        })?;
    let mut stdin = child.stdin.take();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            let _ = s.write_all(&data);
        }
    });
    let out = child
        .wait_with_output()
        .map_err(|source| FnRunError::Exec {
            program: program.into(),
            source,
        })?;
    let _ = writer.join();
    Ok(FnOutput {
        kind: FnKind::Exec,
        output: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        exit_code: out.status.code().unwrap_or(1),
    })
}
