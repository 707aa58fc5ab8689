//! Running one flight with Yoke's ABI, under limits.

use crate::engine::{FlightEngine, LoadedModule};
use crate::go_resume::{GoLayout, ProcessClock, ResumePoint};
use crate::guest::{
    CappedStdout, ERRNO_BADF, GuestOutput, MemoryLimitHit, MemoryLimiter, StdoutCapExceeded,
    TeeStderr, TimeoutHit, add_bounded_poll_oneoff, arm_deadline_at,
};
use crate::host::{ClusterAccess, HostError, LookupRequest};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::{Caller, Extern, Linker, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

pub use crate::streams::StderrMode;

/// Everything a flight run needs besides the module.
pub struct FlightSpec<'a> {
    /// How to name the module in messages (its path or URL).
    pub what: &'a str,
    /// Release name: `argv[0]` and `YOKE_RELEASE`.
    pub release: &'a str,
    /// Release namespace: `YOKE_NAMESPACE` and `NAMESPACE`.
    pub namespace: &'a str,
    /// Arguments after `--`: `argv[1..]`.
    pub args: &'a [String],
    /// The flight's stdin.
    pub stdin: Vec<u8>,
    /// Linear memory cap in bytes.
    pub max_memory_bytes: u64,
    /// Wall-clock limit; `None` runs without one.
    pub timeout: Option<Duration>,
    /// stdout cap in bytes.
    pub max_stdout_bytes: usize,
    /// Whether the guest's stderr is streamed to hoist's stderr.
    pub stderr: StderrMode,
    /// Cluster access for `host.k8s_lookup` / `host.k8s_rest_mapping`; `None` answers
    /// "feature not granted".
    pub cluster: Option<Arc<dyn ClusterAccess>>,
}

/// What a successful run produced.
#[derive(Debug)]
pub struct FlightOutput {
    /// Everything the flight wrote to stdout.
    pub stdout: Vec<u8>,
    /// The last few KiB of its stderr.
    pub stderr_tail: String,
    /// Time from instantiation to exit.
    pub run_time: Duration,
}

/// A limit a flight ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Linear memory would have grown past the cap.
    Memory {
        /// The cap in bytes.
        max_bytes: u64,
    },
    /// The flight ran longer than allowed.
    Timeout {
        /// The limit.
        after: Duration,
    },
    /// The flight wrote more than the stdout cap.
    Stdout {
        /// The cap in bytes.
        max_bytes: usize,
    },
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Memory { max_bytes } => write!(
                f,
                "its memory limit of {} MiB (raise it with --max-memory-mib, at most 4096)",
                max_bytes / (1024 * 1024)
            ),
            Limit::Timeout { after } => write!(
                f,
                "its time limit of {} (raise it with --timeout, or --timeout=-1s to disable)",
                humanize(*after)
            ),
            Limit::Stdout { max_bytes } => write!(
                f,
                "its output limit of {} MiB on stdout (raise it with --max-output-mib)",
                max_bytes / (1024 * 1024)
            ),
        }
    }
}

/// Why a flight did not produce output.
#[derive(Debug, thiserror::Error)]
pub enum FlightError {
    /// The module imports something hoist does not provide.
    #[error("{what} imports {module}.{name}, which hoist does not provide: {hint}")]
    UnknownImport {
        /// The module's location.
        what: String,
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
        /// What hoist does provide, or what kind of module this looks like.
        hint: String,
    },
    /// The module has no `_start` export (not a WASI command).
    #[error(
        "{what} has no `_start` export: a flight must be a WASI command module (e.g. `GOOS=wasip1 GOARCH=wasm go build`, not a library or reactor)"
    )]
    NoStart {
        /// The module's location.
        what: String,
    },
    /// Instantiation failed for another reason (start function trap, bad import type, ...).
    #[error("could not start {what}: {message}")]
    Instantiate {
        /// The module's location.
        what: String,
        /// wasmtime's message.
        message: String,
    },
    /// A limit stopped the flight.
    #[error("{what} was stopped: it exceeded {limit}{}", tail_suffix(stderr_tail))]
    LimitExceeded {
        /// The module's location.
        what: String,
        /// Which limit.
        limit: Limit,
        /// The end of its stderr.
        stderr_tail: String,
    },
    /// The flight exited with a non-zero code.
    #[error("{what} exited with code {code}{}", tail_suffix(stderr_tail))]
    Exit {
        /// The module's location.
        what: String,
        /// The exit code.
        code: i32,
        /// The end of its stderr.
        stderr_tail: String,
        /// What it wrote to stdout before exiting (Yoke keeps it available).
        stdout: Vec<u8>,
    },
    /// The flight trapped (crashed).
    #[error("{what} crashed: {message}{}", tail_suffix(stderr_tail))]
    Trap {
        /// The module's location.
        what: String,
        /// The trap, first line.
        message: String,
        /// The end of its stderr.
        stderr_tail: String,
    },
}

fn tail_suffix(tail: &str) -> String {
    let tail = tail.trim_end();
    if tail.is_empty() {
        String::new()
    } else {
        let lines: Vec<&str> = tail.lines().collect();
        let shown = lines
            .get(lines.len().saturating_sub(10)..)
            .unwrap_or_default();
        format!("; last lines of its stderr:\n  {}", shown.join("\n  "))
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

struct FlightState {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
    cluster: Option<Arc<dyn ClusterAccess>>,
    deadline: Option<Instant>,
    /// Only for resumable runs (see [`run_flight_resumable`]).
    resume: Option<ResumeState>,
}

/// A resumable run's own stdin (its `fd_read` replaces WASI's) and what it captured.
struct ResumeState {
    stdin: Vec<u8>,
    stdin_at: usize,
    capture: Option<GoLayout>,
    captured: Option<ResumePoint>,
    /// Cluster lookups made; a run that made any is not repeated to verify its point.
    host_calls: u32,
    stdout: CappedStdout,
    stderr: TeeStderr,
}

/// How a run starts.
enum Start<'a> {
    /// From `_start`; with a layout, the run is resumable and keeps its first-read state.
    Fresh(Option<&'a GoLayout>),
    /// From a resume point.
    Resume(&'a ResumePoint),
}

/// Resume points of one Go `GOOS=wasip1` module, so that running it many times in one process
/// (a KRM function over many packages) pays Go's start-up once per argv and environment.
/// See [`crate::go_resume`] and [`run_flight_resumable`].
#[derive(Default)]
pub struct GoResumeCache {
    points: Mutex<HashMap<Vec<String>, CachedPoint>>,
    resumed: AtomicUsize,
}

#[derive(Clone)]
enum CachedPoint {
    Verified(Arc<ResumePoint>),
    Refused,
}

impl GoResumeCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many runs started from a resume point.
    pub fn resumed(&self) -> usize {
        self.resumed.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for GoResumeCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoResumeCache")
            .field("resumed", &self.resumed())
            .finish()
    }
}

/// Runs a flight as [`run_flight`] does, except that a Go `GOOS=wasip1` module starts from
/// the state an earlier run in `cache` reached at its first read of stdin, when there is one.
///
/// The first run of a given argv and environment keeps that state; the module is then run
/// once more from it on the same stdin, and the state is used for later runs only if both
/// runs printed the same bytes and exit code and made no cluster lookup. Other modules, and
/// every module when `HOIST_GO_RESUME=0`, run as with [`run_flight`].
pub fn run_flight_resumable(
    engine: &FlightEngine,
    module: &LoadedModule,
    spec: FlightSpec<'_>,
    cache: &GoResumeCache,
) -> Result<FlightOutput, FlightError> {
    let layout = match std::env::var("HOIST_GO_RESUME").as_deref() {
        Ok("0") => None,
        _ => GoLayout::of(&module.module),
    };
    let Some(layout) = layout else {
        return run_flight(engine, module, spec);
    };
    let mut key = vec![spec.release.to_string(), spec.namespace.to_string()];
    key.extend(spec.args.iter().cloned());
    let known = cache
        .points
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned();
    match known {
        Some(CachedPoint::Verified(point)) => {
            cache.resumed.fetch_add(1, Ordering::Relaxed);
            run(engine, module, spec, Start::Resume(&point)).0
        }
        Some(CachedPoint::Refused) => run(engine, module, spec, Start::Fresh(None)).0,
        None => {
            let again = FlightSpec {
                stdin: spec.stdin.clone(),
                cluster: spec.cluster.clone(),
                ..spec
            };
            let (first, taken) = run(engine, module, spec, Start::Fresh(Some(&layout)));
            let point = match taken {
                Some((point, 0)) => {
                    let (second, _) = run(engine, module, again, Start::Resume(&point));
                    if same_outcome(&first, &second) {
                        CachedPoint::Verified(Arc::new(point))
                    } else {
                        tracing::warn!(
                            "a run of this Go module resumed after its start-up did not repeat the first run's output; every run starts afresh"
                        );
                        CachedPoint::Refused
                    }
                }
                _ => CachedPoint::Refused,
            };
            cache
                .points
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, point);
            first
        }
    }
}

/// Whether two runs printed the same and ended the same way.
fn same_outcome(
    a: &Result<FlightOutput, FlightError>,
    b: &Result<FlightOutput, FlightError>,
) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a.stdout == b.stdout,
        (
            Err(FlightError::Exit {
                code: ca,
                stdout: sa,
                ..
            }),
            Err(FlightError::Exit {
                code: cb,
                stdout: sb,
                ..
            }),
        ) => ca == cb && sa == sb,
        _ => false,
    }
}

/// Runs a flight to completion under the limits in `spec`.
pub fn run_flight(
    engine: &FlightEngine,
    module: &LoadedModule,
    spec: FlightSpec<'_>,
) -> Result<FlightOutput, FlightError> {
    run(engine, module, spec, Start::Fresh(None)).0
}

/// A resume point a run took, with the number of cluster lookups it made.
type Taken = (ResumePoint, u32);

fn run(
    engine: &FlightEngine,
    module: &LoadedModule,
    spec: FlightSpec<'_>,
    start: Start<'_>,
) -> (Result<FlightOutput, FlightError>, Option<Taken>) {
    let mut taken = None;
    let result = run_taking(engine, module, spec, start, &mut taken);
    (result, taken)
}

fn run_taking(
    engine: &FlightEngine,
    module: &LoadedModule,
    spec: FlightSpec<'_>,
    start: Start<'_>,
    taken: &mut Option<Taken>,
) -> Result<FlightOutput, FlightError> {
    let what = spec.what.to_string();
    let module = &module.module;

    check_imports(module, &what)?;
    if !matches!(
        module.get_export("_start"),
        Some(wasmtime::ExternType::Func(_))
    ) {
        return Err(FlightError::NoStart { what });
    }

    let stdout = CappedStdout::new(spec.max_stdout_bytes);
    let stderr = TeeStderr::new(4096, spec.stderr);
    let mut argv = Vec::with_capacity(spec.args.len() + 1);
    argv.push(spec.release.to_string());
    argv.extend(spec.args.iter().cloned());
    let resumable = !matches!(start, Start::Fresh(None));
    let mut builder = WasiCtxBuilder::new();
    builder
        .args(&argv)
        .env("YOKE_RELEASE", spec.release)
        .env("YOKE_NAMESPACE", spec.namespace)
        .env("NAMESPACE", spec.namespace)
        .env("YOKE_VERSION", crate::YOKE_ABI_VERSION)
        .env("HOIST_VERSION", crate::HOIST_VERSION)
        .stdout(GuestOutput(stdout.clone()))
        .stderr(GuestOutput(stderr.clone()))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    let resume = if resumable {
        // The run's own fd_read serves stdin; one clock for the whole process, so that a
        // resumed instance never sees time go backwards.
        builder.monotonic_clock(ProcessClock);
        Some(ResumeState {
            stdin: spec.stdin,
            stdin_at: 0,
            capture: match start {
                Start::Fresh(layout) => layout.cloned(),
                Start::Resume(_) => None,
            },
            captured: None,
            host_calls: 0,
            stdout: stdout.clone(),
            stderr: stderr.clone(),
        })
    } else {
        builder.stdin(MemoryInputPipe::new(spec.stdin));
        None
    };
    let wasi = builder.build_p1();

    let started = Instant::now();
    let deadline = crate::guest::deadline_after(spec.timeout);
    let max_bytes = usize::try_from(spec.max_memory_bytes).unwrap_or(usize::MAX);
    let mut store = Store::new(
        engine.engine(),
        FlightState {
            wasi,
            limiter: MemoryLimiter::new(max_bytes as u64),
            cluster: spec.cluster,
            deadline,
            resume,
        },
    );
    store.limiter(|state| &mut state.limiter);
    let ticker = arm_deadline_at(&mut store, deadline);

    let result = instantiate_and_run(engine, module, &mut store, &what, &start);
    drop(ticker);
    *taken = store.data_mut().resume.as_mut().and_then(|r| {
        let host_calls = r.host_calls;
        r.captured.take().map(|point| (point, host_calls))
    });
    let run_time = started.elapsed();
    let stderr_tail = stderr.tail();
    let stdout_bytes = stdout.take();

    let classify = |error: wasmtime::Error| -> FlightError {
        let limit = if error.downcast_ref::<StdoutCapExceeded>().is_some() {
            Some(Limit::Stdout {
                max_bytes: spec.max_stdout_bytes,
            })
        } else if error.downcast_ref::<MemoryLimitHit>().is_some() {
            Some(Limit::Memory {
                max_bytes: spec.max_memory_bytes,
            })
        } else if error.downcast_ref::<TimeoutHit>().is_some() {
            Some(Limit::Timeout {
                after: spec.timeout.unwrap_or_default(),
            })
        } else {
            None
        };
        if let Some(limit) = limit {
            return FlightError::LimitExceeded {
                what: what.clone(),
                limit,
                stderr_tail: stderr_tail.clone(),
            };
        }
        let message = match error.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => format!("wasm trap: {trap}"),
            None => format!("{error:#}")
                .lines()
                .next()
                .unwrap_or("unknown error")
                .to_string(),
        };
        FlightError::Trap {
            what: what.clone(),
            message,
            stderr_tail: stderr_tail.clone(),
        }
    };

    match result {
        Ok(()) => Ok(FlightOutput {
            stdout: stdout_bytes,
            stderr_tail,
            run_time,
        }),
        Err(RunFailure::Instantiate(message)) => Err(FlightError::Instantiate { what, message }),
        Err(RunFailure::Wasm(error)) => match error.downcast_ref::<I32Exit>() {
            Some(I32Exit(0)) => Ok(FlightOutput {
                stdout: stdout_bytes,
                stderr_tail,
                run_time,
            }),
            Some(I32Exit(code)) => Err(FlightError::Exit {
                what,
                code: *code,
                stderr_tail,
                stdout: stdout_bytes,
            }),
            None => Err(classify(error)),
        },
    }
}

enum RunFailure {
    Instantiate(String),
    Wasm(wasmtime::Error),
}

fn instantiate_and_run(
    engine: &FlightEngine,
    module: &wasmtime::Module,
    store: &mut Store<FlightState>,
    what: &str,
    start: &Start<'_>,
) -> Result<(), RunFailure> {
    let mut linker =
        flight_linker(engine.engine()).map_err(|e| RunFailure::Instantiate(format!("{e:#}")))?;
    if store.data().resume.is_some() {
        linker
            .func_wrap("wasi_snapshot_preview1", "fd_read", resumable_fd_read)
            .map_err(|e| RunFailure::Instantiate(format!("{e:#}")))?;
    }
    let instance = linker.instantiate(&mut *store, module).map_err(|e| {
        // A start-section trap or a limit hit during instantiation is a run failure.
        if e.downcast_ref::<wasmtime::Trap>().is_some()
            || e.downcast_ref::<MemoryLimitHit>().is_some()
            || e.downcast_ref::<TimeoutHit>().is_some()
        {
            RunFailure::Wasm(e)
        } else {
            RunFailure::Instantiate(format!("{e:#}"))
        }
    })?;
    let entry = instance
        .get_typed_func::<(), ()>(&mut *store, "_start")
        .map_err(|e| {
            RunFailure::Instantiate(format!("{what}: `_start` has the wrong type: {e:#}"))
        })?;
    match start {
        Start::Resume(point) => point.resume(&mut *store, &instance),
        Start::Fresh(_) => entry.call(&mut *store, ()),
    }
    .map_err(RunFailure::Wasm)
}

/// `fd_read` of a resumable run: stdin from the run's own buffer (the only readable
/// descriptor a flight has), and the resume point taken at the first read when asked for.
fn resumable_fd_read(
    mut caller: Caller<'_, FlightState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    nread: i32,
) -> wasmtime::Result<i32> {
    if fd != 0 {
        return Ok(ERRNO_BADF);
    }
    let layout = caller
        .data_mut()
        .resume
        .as_mut()
        .and_then(|r| r.capture.take());
    if let Some(layout) = layout {
        let quiet = caller.data().resume.as_ref().is_some_and(|r| {
            r.host_calls == 0 && r.stdout.is_empty() && r.stderr.tail().is_empty()
        });
        if quiet {
            match ResumePoint::capture(&mut caller, &layout) {
                Ok(point) => {
                    if let Some(r) = caller.data_mut().resume.as_mut() {
                        r.captured = Some(point);
                    }
                }
                Err(e) => tracing::debug!("no resume point: {e}"),
            }
        }
    }
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        wasmtime::bail!("fd_read: the module exports no memory");
    };
    let (data, state) = memory.data_and_store_mut(&mut caller);
    let Some(resume) = state.resume.as_mut() else {
        return Ok(ERRNO_BADF);
    };
    Ok(crate::guest::fd_read_into(
        data,
        iovs,
        iovs_len,
        nread,
        |buffer| {
            let rest = resume.stdin.get(resume.stdin_at..).unwrap_or_default();
            let n = rest.len().min(buffer.len());
            if let (Some(to), Some(from)) = (buffer.get_mut(..n), rest.get(..n)) {
                to.copy_from_slice(from);
            }
            resume.stdin_at += n;
            n
        },
    ))
}

/// WASI preview 1 (with hoist's bounded `poll_oneoff`) and the `host` module.
fn flight_linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<FlightState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |state: &mut FlightState| &mut state.wasi)?;
    linker.allow_shadowing(true);
    add_bounded_poll_oneoff(&mut linker, |state: &FlightState| state.deadline)?;
    linker.func_wrap("host", "k8s_lookup", k8s_lookup)?;
    linker.func_wrap("host", "k8s_rest_mapping", k8s_rest_mapping)?;
    Ok(linker)
}

/// What hoist provides to guests, for error messages.
const PROVIDED: &str = "hoist provides WASI preview 1 (wasi_snapshot_preview1) and Yoke's host.k8s_lookup / host.k8s_rest_mapping";

fn check_imports(module: &wasmtime::Module, what: &str) -> Result<(), FlightError> {
    for import in module.imports() {
        if let Some(error) = unknown_import(what, import.module(), import.name()) {
            return Err(error);
        }
    }
    Ok(())
}

/// The error for an import outside Yoke's flight ABI, or `None` when hoist provides it.
/// Shared by both execution tiers so they refuse the same modules with the same words.
pub(crate) fn unknown_import(what: &str, module: &str, name: &str) -> Option<FlightError> {
    let known = match module {
        "wasi_snapshot_preview1" => true,
        "host" => matches!(name, "k8s_lookup" | "k8s_rest_mapping"),
        _ => false,
    };
    if known {
        return None;
    }
    let hint = match module {
        "gojs" | "go" => "this is a Go GOOS=js module (kpt's KRM function format); build flights with GOOS=wasip1".to_string(),
        "wasi_unstable" => "this module targets the old wasi_unstable ABI; rebuild it for WASI preview 1".to_string(),
        "wapc" => "this is a waPC module (a Kubewarden policy), not a flight".to_string(),
        "env" => format!("{PROVIDED}; `env` imports usually mean the module was built for a browser or another host"),
        _ => PROVIDED.to_string(),
    };
    Some(FlightError::UnknownImport {
        what: what.to_string(),
        module: module.to_string(),
        name: name.to_string(),
        hint,
    })
}

// ---- the `host` module ---------------------------------------------------------------------

/// Strings cross the boundary packed as `(ptr << 32) | len`.
pub(crate) fn unpack(packed: i64) -> (usize, usize) {
    let packed = packed as u64;
    ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize)
}

fn guest_string(
    caller: &mut Caller<'_, FlightState>,
    packed: i64,
    call: &str,
) -> wasmtime::Result<String> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        wasmtime::bail!("host.{call}: the module exports no memory");
    };
    let (ptr, len) = unpack(packed);
    let data = memory.data(&*caller);
    let Some(bytes) = ptr.checked_add(len).and_then(|end| data.get(ptr..end)) else {
        wasmtime::bail!("host.{call}: the flight passed a string outside its memory ({ptr}+{len})");
    };
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// Allocates `bytes.len()` in the guest through its exported `malloc` and copies them in.
fn guest_malloc(
    caller: &mut Caller<'_, FlightState>,
    bytes: &[u8],
    call: &str,
) -> wasmtime::Result<i64> {
    let Some(Extern::Func(malloc)) = caller.get_export("malloc") else {
        wasmtime::bail!(
            "host.{call}: the flight does not export `malloc(i32) -> i64`, which Yoke's host ABI requires"
        );
    };
    let malloc = malloc.typed::<i32, i64>(&*caller)?;
    let size = i32::try_from(bytes.len()).map_err(|_| {
        wasmtime::format_err!("host.{call}: result of {} bytes is too large", bytes.len())
    })?;
    let buffer = malloc.call(&mut *caller, size)?;
    let (ptr, len) = unpack(buffer);
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        wasmtime::bail!("host.{call}: the module exports no memory");
    };
    let data = memory.data_mut(&mut *caller);
    let Some(dst) = ptr
        .checked_add(bytes.len())
        .and_then(|end| data.get_mut(ptr..end))
    else {
        wasmtime::bail!(
            "host.{call}: the flight's malloc returned a buffer outside its memory ({ptr}+{len})"
        );
    };
    dst.copy_from_slice(bytes);
    Ok(buffer)
}

fn host_result(
    caller: &mut Caller<'_, FlightState>,
    state_ptr: i32,
    result: Result<Vec<u8>, HostError>,
    call: &str,
) -> wasmtime::Result<i64> {
    match result {
        Ok(bytes) => guest_malloc(caller, &bytes, call),
        Err(error) => {
            let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
                wasmtime::bail!("host.{call}: the module exports no memory");
            };
            let at = state_ptr as u32 as usize;
            let data = memory.data_mut(&mut *caller);
            let Some(dst) = data.get_mut(at..at + 4) else {
                wasmtime::bail!(
                    "host.{call}: the flight's state pointer {at} is outside its memory"
                );
            };
            dst.copy_from_slice(&error.state().to_le_bytes());
            guest_malloc(caller, error.to_string().as_bytes(), call)
        }
    }
}

fn count_host_call(caller: &mut Caller<'_, FlightState>) {
    if let Some(resume) = caller.data_mut().resume.as_mut() {
        resume.host_calls += 1;
    }
}

fn k8s_lookup(
    mut caller: Caller<'_, FlightState>,
    state_ptr: i32,
    name: i64,
    namespace: i64,
    kind: i64,
    api_version: i64,
) -> wasmtime::Result<i64> {
    count_host_call(&mut caller);
    let request = LookupRequest {
        name: guest_string(&mut caller, name, "k8s_lookup")?,
        namespace: guest_string(&mut caller, namespace, "k8s_lookup")?,
        kind: guest_string(&mut caller, kind, "k8s_lookup")?,
        api_version: guest_string(&mut caller, api_version, "k8s_lookup")?,
    };
    let result = match caller.data().cluster.clone() {
        Some(cluster) => cluster.lookup(&request),
        None => Err(HostError::FeatureNotGranted),
    };
    host_result(&mut caller, state_ptr, result, "k8s_lookup")
}

fn k8s_rest_mapping(
    mut caller: Caller<'_, FlightState>,
    state_ptr: i32,
    group_or_api_version: i64,
    kind: i64,
) -> wasmtime::Result<i64> {
    count_host_call(&mut caller);
    let group = guest_string(&mut caller, group_or_api_version, "k8s_rest_mapping")?;
    let kind = guest_string(&mut caller, kind, "k8s_rest_mapping")?;
    let result = match caller.data().cluster.clone() {
        Some(cluster) => cluster.rest_mapping(&group, &kind),
        None => Err(HostError::FeatureNotGranted),
    };
    host_result(&mut caller, state_ptr, result, "k8s_rest_mapping")
}
