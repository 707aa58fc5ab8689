//! Tier 0: running a flight in an interpreter that translates lazily, for cold starts.
//!
//! Compiling a module before running any of it costs seconds for a Go flight (2.4 s with
//! Winch for Yoke's 16 MB `basic` example on 2 cores), while the flight itself runs for
//! tens of milliseconds. wasmi translates a function to its own bytecode the first time it is
//! called, so a cold run pays only for the code that runs: about 0.35 s for that example,
//! in 60 MB instead of 330 MB. The caller compiles optimised code in the background for the
//! next run; warm runs never come here.
//!
//! The same flight ABI as [`crate::run_flight`]: argv, exactly the same environment, stdin,
//! capped stdout, stderr, the memory cap, the timeout (checked between fuel slices and in
//! `poll_oneoff`) and Yoke's `host` module. WASI preview 1 is implemented here rather than
//! through a WASI library so that nothing but stdio, clocks and randomness exists: no
//! preopens, no sockets, every other call answers `EBADF`/`ENOSYS`, as wasmtime-wasi does
//! without preopens.
//!
//! Two things keep the tiers equivalent. wasmi validates lazily too, so the whole module is
//! validated by wasmtime on a second thread while the interpreter runs, and a module that
//! fails is handed back ([`Interpreted::Declined`]) for the compiled tier to refuse with its
//! usual error. And a flight that runs longer than its [`InterpreterOptions::budget`] is
//! handed back as well (before anything it printed reaches the user), because an interpreter
//! is 10-50x slower than compiled code on long computations.

use crate::flight::{FlightError, FlightOutput, FlightSpec, Limit, unknown_import, unpack};
use crate::guest::{MemoryLimitHit, TimeoutHit, poll_oneoff_in};
use crate::host::{HostError, LookupRequest};
use crate::streams::{StderrMode, StdoutCapExceeded, keep_tail};
use std::collections::VecDeque;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmi::{
    Caller, CompilationMode, Config, Engine, Error, Extern, Linker, Module, Store,
    TypedResumableCall, Val,
};

/// How the interpreter tier may run a flight.
#[derive(Debug, Clone, Copy, Default)]
pub struct InterpreterOptions {
    /// Hand the flight back ([`Interpreted::Declined`]) when it has run this long without
    /// finishing, so the caller can compile it instead. `None` runs it to the end.
    pub budget: Option<Duration>,
}

/// What the interpreter did with a flight.
#[derive(Debug)]
pub enum Interpreted {
    /// It ran: its output, or why it failed (exactly as the compiled tier reports it).
    Finished(Result<FlightOutput, FlightError>),
    /// It should run on compiled code instead; nothing reached the user.
    Declined {
        /// Why (for logs).
        reason: String,
    },
}

/// Fuel per slice between wall-clock checks: tens of milliseconds of interpretation.
const FUEL_SLICE: u64 = 10_000_000;
/// Stderr kept back while a flight may still be handed to the compiled tier; past this the
/// interpreter commits to finishing the flight and streams.
const HELD_STDERR: usize = 64 * 1024;
const TAIL: usize = 4096;

/// Runs a flight on the interpreter. `validator` is the engine whose rules decide whether a
/// module is valid (the compiled tier's), checked in parallel with the run.
pub fn run_flight_interpreted(
    validator: &wasmtime::Engine,
    wasm: &[u8],
    spec: &FlightSpec<'_>,
    options: InterpreterOptions,
) -> Interpreted {
    std::thread::scope(|scope| {
        let validation = scope.spawn(|| wasmtime::Module::validate(validator, wasm));
        let outcome = interpret(wasm, spec, options);
        match validation.join() {
            Ok(Ok(())) => outcome,
            Ok(Err(error)) => Interpreted::Declined {
                reason: format!("the module is not valid: {error:#}"),
            },
            Err(_) => Interpreted::Declined {
                reason: "the validator thread panicked".into(),
            },
        }
    })
}

fn interpret(wasm: &[u8], spec: &FlightSpec<'_>, options: InterpreterOptions) -> Interpreted {
    let what = spec.what;
    let mut config = Config::default();
    config
        .compilation_mode(CompilationMode::Lazy)
        .consume_fuel(true)
        // Fuel measures the flight's own instructions only: translating a function on its
        // first call must never run out of fuel, because wasmi reports that case as a plain
        // error where it cannot be resumed.
        .fuel_cost(wasmi::CustomFuelCosts {
            bytes_copied_per_fuel: 64,
            fuel_per_bytes_translated: 0,
            fuel_per_bytes_validated: 0,
        })
        .ignore_custom_sections(true);
    let engine = Engine::new(&config);
    let module = match Module::new(&engine, wasm) {
        Ok(module) => module,
        Err(error) => {
            return Interpreted::Declined {
                reason: format!("the interpreter cannot load it: {error}"),
            };
        }
    };
    for import in module.imports() {
        if let Some(error) = unknown_import(what, import.module(), import.name()) {
            return Interpreted::Finished(Err(error));
        }
    }
    if !matches!(
        module.get_export("_start"),
        Some(wasmi::ExternType::Func(_))
    ) {
        return Interpreted::Finished(Err(FlightError::NoStart {
            what: what.to_string(),
        }));
    }

    let started = Instant::now();
    let deadline = spec.timeout.and_then(|t| started.checked_add(t));
    let mut argv = Vec::with_capacity(spec.args.len() + 1);
    argv.push(spec.release.to_string());
    argv.extend(spec.args.iter().cloned());
    let env = vec![
        format!("YOKE_RELEASE={}", spec.release),
        format!("YOKE_NAMESPACE={}", spec.namespace),
        format!("NAMESPACE={}", spec.namespace),
        format!("YOKE_VERSION={}", crate::YOKE_ABI_VERSION),
        format!("HOIST_VERSION={}", crate::HOIST_VERSION),
    ];
    let may_decline = options.budget.is_some();
    let state = Tier0State {
        argv,
        env,
        stdin: spec.stdin.clone(),
        stdin_at: 0,
        closed: [false; 3],
        stdout: Vec::new(),
        stdout_cap: spec.max_stdout_bytes,
        stderr: HeldStderr::new(spec.stderr, may_decline),
        limiter: Tier0Limiter {
            max_bytes: usize::try_from(spec.max_memory_bytes).unwrap_or(usize::MAX),
            hit: false,
        },
        cluster: spec.cluster.clone(),
        deadline,
        monotonic_origin: started,
    };
    let mut store = Store::new(&engine, state);
    store.limiter(|state| &mut state.limiter);

    let linker = match tier0_linker(&engine, &module) {
        Ok(linker) => linker,
        Err(error) => {
            return Interpreted::Declined {
                reason: format!("could not link it: {error}"),
            };
        }
    };
    if let Err(error) = store.set_fuel(FUEL_SLICE) {
        return Interpreted::Declined {
            reason: format!("could not set fuel: {error}"),
        };
    }
    let instance = match linker.instantiate_and_start(&mut store, &module) {
        Ok(instance) => instance,
        Err(error) => {
            return match failure(&error, &store, spec) {
                Some(failure) => Interpreted::Finished(Err(failure)),
                // A start section that loops, or anything unusual: the compiled tier has the
                // machinery (epochs) and the messages for it.
                None => Interpreted::Declined {
                    reason: format!("instantiation failed: {error}"),
                },
            };
        }
    };
    let start = match instance.get_typed_func::<(), ()>(&store, "_start") {
        Ok(start) => start,
        Err(error) => {
            return Interpreted::Finished(Err(FlightError::Instantiate {
                what: what.to_string(),
                message: format!("`_start` has the wrong type: {error}"),
            }));
        }
    };

    let mut call = start.call_resumable(&mut store, ());
    // Err: the error's message (for traps) and what kind of failure it is.
    let result: Result<(), (String, Failure)> = loop {
        match call {
            Ok(TypedResumableCall::Finished(())) => break Ok(()),
            Ok(TypedResumableCall::HostTrap(trap)) => {
                let error = trap.host_error();
                break Err((error.to_string(), classify(error, &store)));
            }
            Ok(TypedResumableCall::OutOfFuel(invocation)) => {
                let now = Instant::now();
                if deadline.is_some_and(|deadline| now >= deadline) {
                    break Err((String::new(), Failure::Limit(WhichLimit::Timeout)));
                }
                if let Some(budget) = options.budget
                    && !store.data().stderr.committed
                    && now.duration_since(started) > budget
                {
                    return Interpreted::Declined {
                        reason: format!(
                            "still running after {} ms: compiled code will be faster",
                            budget.as_millis()
                        ),
                    };
                }
                let fuel = invocation.required_fuel().max(FUEL_SLICE);
                if let Err(error) = store.set_fuel(fuel) {
                    return Interpreted::Declined {
                        reason: format!("could not refuel: {error}"),
                    };
                }
                call = invocation.resume(&mut store);
            }
            // Should fuel run out where wasmi cannot resume, compiled code runs it instead.
            Err(error)
                if matches!(
                    error.kind(),
                    wasmi::errors::ErrorKind::ResumableOutOfFuel(_)
                ) =>
            {
                return Interpreted::Declined {
                    reason: format!("the interpreter could not resume: {error}"),
                };
            }
            Err(error) => break Err((error.to_string(), classify(&error, &store))),
        }
    };
    let run_time = started.elapsed();
    let state = store.into_data();
    let stderr_tail = state.stderr.finish();
    let output = |stdout: Vec<u8>| FlightOutput {
        stdout,
        stderr_tail: stderr_tail.clone(),
        run_time,
    };
    let limit = |limit: Limit| FlightError::LimitExceeded {
        what: what.to_string(),
        limit,
        stderr_tail: stderr_tail.clone(),
    };
    let outcome = match result {
        Ok(()) => Ok(output(state.stdout)),
        Err((message, kind)) => match kind {
            Failure::Exit(0) => Ok(output(state.stdout)),
            Failure::Exit(code) => Err(FlightError::Exit {
                what: what.to_string(),
                code,
                stderr_tail: stderr_tail.clone(),
                stdout: state.stdout,
            }),
            Failure::Limit(which) => Err(limit(which.limit(spec))),
            Failure::Trap => Err(FlightError::Trap {
                what: what.to_string(),
                message: first_line(&message),
                stderr_tail: stderr_tail.clone(),
            }),
        },
    };
    Interpreted::Finished(outcome)
}

#[derive(Clone, Copy)]
enum Failure {
    Exit(i32),
    Limit(WhichLimit),
    Trap,
}

#[derive(Clone, Copy)]
enum WhichLimit {
    Memory,
    Timeout,
    Stdout,
}

impl WhichLimit {
    fn limit(self, spec: &FlightSpec<'_>) -> Limit {
        match self {
            WhichLimit::Memory => Limit::Memory {
                max_bytes: spec.max_memory_bytes,
            },
            WhichLimit::Timeout => Limit::Timeout {
                after: spec.timeout.unwrap_or_default(),
            },
            WhichLimit::Stdout => Limit::Stdout {
                max_bytes: spec.max_stdout_bytes,
            },
        }
    }
}

fn classify(error: &Error, store: &Store<Tier0State>) -> Failure {
    if let Some(code) = error.i32_exit_status() {
        Failure::Exit(code)
    } else if error.downcast_ref::<StdoutCapExceeded>().is_some() {
        Failure::Limit(WhichLimit::Stdout)
    } else if error.downcast_ref::<TimeoutHit>().is_some() {
        Failure::Limit(WhichLimit::Timeout)
    } else if store.data().limiter.hit || error.downcast_ref::<MemoryLimitHit>().is_some() {
        Failure::Limit(WhichLimit::Memory)
    } else {
        Failure::Trap
    }
}

/// A failure during instantiation that the compiled tier would report the same way.
fn failure(error: &Error, store: &Store<Tier0State>, spec: &FlightSpec<'_>) -> Option<FlightError> {
    match classify(error, store) {
        Failure::Limit(WhichLimit::Memory) => Some(FlightError::LimitExceeded {
            what: spec.what.to_string(),
            limit: WhichLimit::Memory.limit(spec),
            stderr_tail: String::new(),
        }),
        _ => None,
    }
}

fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or("unknown error");
    if line.starts_with("wasm trap") {
        line.to_string()
    } else {
        format!("wasm trap: {line}")
    }
}

impl wasmi::errors::HostError for StdoutCapExceeded {}
impl wasmi::errors::HostError for TimeoutHit {}
impl wasmi::errors::HostError for MemoryLimitHit {}

/// An error raised by a host function of this tier.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct HostCallFailed(String);
impl wasmi::errors::HostError for HostCallFailed {}

fn host_failed(message: String) -> Error {
    Error::host(HostCallFailed(message))
}

// ---- the store -------------------------------------------------------------------------------

struct Tier0State {
    argv: Vec<String>,
    env: Vec<String>,
    stdin: Vec<u8>,
    stdin_at: usize,
    /// stdin, stdout, stderr closed by the guest.
    closed: [bool; 3],
    stdout: Vec<u8>,
    stdout_cap: usize,
    stderr: HeldStderr,
    limiter: Tier0Limiter,
    cluster: Option<std::sync::Arc<dyn crate::host::ClusterAccess>>,
    deadline: Option<Instant>,
    monotonic_origin: Instant,
}

impl Tier0State {
    /// Whether stdio descriptor `fd` was closed (any other descriptor never existed).
    fn is_closed(&self, fd: i32) -> bool {
        usize::try_from(fd)
            .ok()
            .and_then(|fd| self.closed.get(fd))
            .copied()
            .unwrap_or(true)
    }
}

struct Tier0Limiter {
    max_bytes: usize,
    hit: bool,
}

impl wasmi::ResourceLimiter for Tier0Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool, wasmi_core::LimiterError> {
        if desired > self.max_bytes {
            self.hit = true;
            return Err(wasmi_core::LimiterError::ResourceLimiterDeniedAllocation);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool, wasmi_core::LimiterError> {
        // As the compiled tier: a million elements is far beyond any flight.
        Ok(desired <= 1 << 20)
    }

    fn instances(&self) -> usize {
        1
    }
    fn tables(&self) -> usize {
        4
    }
    fn memories(&self) -> usize {
        1
    }
}

/// stderr: the tail for messages, streamed to the user; while the flight may still be handed
/// to the compiled tier, held back (up to [`HELD_STDERR`]) so nothing is printed twice.
struct HeldStderr {
    mode: StderrMode,
    tail: VecDeque<u8>,
    held: Vec<u8>,
    /// Past the point of handing back: output went to the user.
    committed: bool,
}

impl HeldStderr {
    fn new(mode: StderrMode, may_decline: bool) -> Self {
        HeldStderr {
            mode,
            tail: VecDeque::with_capacity(TAIL),
            held: Vec::new(),
            // Captured stderr is never shown, so it never stands in the way of handing back.
            committed: !may_decline,
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        keep_tail(&mut self.tail, TAIL, bytes);
        if self.mode == StderrMode::Capture {
            return;
        }
        if !self.committed && self.held.len() + bytes.len() <= HELD_STDERR {
            self.held.extend_from_slice(bytes);
            return;
        }
        self.committed = true;
        let mut out = std::io::stderr().lock();
        // The user's terminal going away must not kill the flight.
        let _ = out.write_all(&std::mem::take(&mut self.held));
        let _ = out.write_all(bytes);
    }

    /// Prints what was held back and returns the tail.
    fn finish(mut self) -> String {
        if !self.held.is_empty() {
            let _ = std::io::stderr().lock().write_all(&self.held);
        }
        self.held.clear();
        let bytes: Vec<u8> = self.tail.iter().copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

// ---- WASI preview 1 --------------------------------------------------------------------------

const WASI: &str = "wasi_snapshot_preview1";
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOSYS: i32 = 52;
const RIGHTS_FD_READ: u64 = 1 << 1;
const RIGHTS_FD_WRITE: u64 = 1 << 6;

type Ctx<'a> = Caller<'a, Tier0State>;

/// The WASI calls [`tier0_linker`] implements; every other one gets an error number.
const IMPLEMENTED: &[&str] = &[
    "args_sizes_get",
    "args_get",
    "environ_sizes_get",
    "environ_get",
    "clock_res_get",
    "clock_time_get",
    "random_get",
    "fd_write",
    "fd_read",
    "fd_close",
    "fd_fdstat_get",
    "fd_filestat_get",
    "poll_oneoff",
    "proc_exit",
    "sched_yield",
];

fn memory(caller: &Ctx<'_>) -> Option<wasmi::Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Some(memory),
        _ => None,
    }
}

/// Runs `f` over the guest's memory and the store's state; `EFAULT` without a memory.
fn with_memory(
    caller: &mut Ctx<'_>,
    f: impl FnOnce(&mut [u8], &mut Tier0State) -> Result<i32, Error>,
) -> Result<i32, Error> {
    let Some(memory) = memory(caller) else {
        return Ok(ERRNO_FAULT);
    };
    let (data, state) = memory.data_and_store_mut(&mut *caller);
    f(data, state)
}

fn slice(data: &[u8], at: i32, len: usize) -> Option<&[u8]> {
    let at = at as u32 as usize;
    data.get(at..at.checked_add(len)?)
}

fn slice_mut(data: &mut [u8], at: i32, len: usize) -> Option<&mut [u8]> {
    let at = at as u32 as usize;
    data.get_mut(at..at.checked_add(len)?)
}

fn put(data: &mut [u8], at: i32, bytes: &[u8]) -> bool {
    match slice_mut(data, at, bytes.len()) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

/// [`put`] as a WASI result: success, or `EFAULT` outside the guest's memory.
fn put_errno(data: &mut [u8], at: i32, bytes: &[u8]) -> i32 {
    if put(data, at, bytes) {
        ERRNO_SUCCESS
    } else {
        ERRNO_FAULT
    }
}

/// The (pointer, length) pairs of an iovec array.
fn iovecs(data: &[u8], iovs: i32, count: i32) -> Option<Vec<(u32, u32)>> {
    let count = count as u32 as usize;
    let bytes = slice(data, iovs, count.checked_mul(8)?)?;
    bytes
        .chunks_exact(8)
        .map(|chunk| {
            let (ptr, len) = chunk.split_at(4);
            Some((
                u32::from_le_bytes(ptr.try_into().ok()?),
                u32::from_le_bytes(len.try_into().ok()?),
            ))
        })
        .collect()
}

/// Writes NUL-terminated strings and their pointer array (args_get / environ_get).
fn put_strings(data: &mut [u8], strings: &[String], pointers: i32, buffer: i32) -> i32 {
    let mut at = buffer as u32;
    for (index, string) in strings.iter().enumerate() {
        let slot = (pointers as u32).wrapping_add(index as u32 * 4) as i32;
        if !put(data, slot, &at.to_le_bytes()) {
            return ERRNO_FAULT;
        }
        let mut bytes = string.as_bytes().to_vec();
        bytes.push(0);
        if !put(data, at as i32, &bytes) {
            return ERRNO_FAULT;
        }
        at = at.wrapping_add(bytes.len() as u32);
    }
    ERRNO_SUCCESS
}

fn put_sizes(data: &mut [u8], strings: &[String], count_at: i32, size_at: i32) -> i32 {
    let size: usize = strings.iter().map(|s| s.len() + 1).sum();
    if put(data, count_at, &(strings.len() as u32).to_le_bytes())
        && put(data, size_at, &(size as u32).to_le_bytes())
    {
        ERRNO_SUCCESS
    } else {
        ERRNO_FAULT
    }
}

fn tier0_linker(engine: &Engine, module: &Module) -> Result<Linker<Tier0State>, Error> {
    let mut linker = Linker::<Tier0State>::new(engine);
    linker.func_wrap(
        WASI,
        "args_sizes_get",
        |mut c: Ctx<'_>, count: i32, size: i32| {
            with_memory(&mut c, |data, state| {
                Ok(put_sizes(data, &state.argv, count, size))
            })
        },
    )?;
    linker.func_wrap(WASI, "args_get", |mut c: Ctx<'_>, argv: i32, buf: i32| {
        with_memory(&mut c, |data, state| {
            Ok(put_strings(data, &state.argv, argv, buf))
        })
    })?;
    linker.func_wrap(
        WASI,
        "environ_sizes_get",
        |mut c: Ctx<'_>, count: i32, size: i32| {
            with_memory(&mut c, |data, state| {
                Ok(put_sizes(data, &state.env, count, size))
            })
        },
    )?;
    linker.func_wrap(WASI, "environ_get", |mut c: Ctx<'_>, env: i32, buf: i32| {
        with_memory(&mut c, |data, state| {
            Ok(put_strings(data, &state.env, env, buf))
        })
    })?;
    linker.func_wrap(WASI, "clock_res_get", |mut c: Ctx<'_>, id: i32, at: i32| {
        with_memory(&mut c, |data, _| {
            if !(0..=1).contains(&id) {
                return Ok(ERRNO_INVAL);
            }
            Ok(put_errno(data, at, &1u64.to_le_bytes()))
        })
    })?;
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut c: Ctx<'_>, id: i32, _precision: i64, at: i32| {
            with_memory(&mut c, |data, state| {
                let nanos = match id {
                    0 => SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_nanos(),
                    1 => state.monotonic_origin.elapsed().as_nanos(),
                    _ => return Ok(ERRNO_INVAL),
                };
                let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
                Ok(put_errno(data, at, &nanos.to_le_bytes()))
            })
        },
    )?;
    linker.func_wrap(WASI, "random_get", |mut c: Ctx<'_>, at: i32, len: i32| {
        with_memory(&mut c, |data, _| {
            let Some(dst) = slice_mut(data, at, len as u32 as usize) else {
                return Ok(ERRNO_FAULT);
            };
            rand::fill(dst);
            Ok(ERRNO_SUCCESS)
        })
    })?;
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut c: Ctx<'_>, fd: i32, iovs: i32, count: i32, written_at: i32| {
            with_memory(&mut c, |data, state| {
                if !(1..=2).contains(&fd) || state.is_closed(fd) {
                    return Ok(ERRNO_BADF);
                }
                let Some(iovs) = iovecs(data, iovs, count) else {
                    return Ok(ERRNO_FAULT);
                };
                let mut written = 0u32;
                for (ptr, len) in iovs {
                    let Some(bytes) = slice(data, ptr as i32, len as usize) else {
                        return Ok(ERRNO_FAULT);
                    };
                    if fd == 1 {
                        if bytes.len() > state.stdout_cap.saturating_sub(state.stdout.len()) {
                            return Err(Error::host(StdoutCapExceeded {
                                cap: state.stdout_cap,
                            }));
                        }
                        state.stdout.extend_from_slice(bytes);
                    } else {
                        state.stderr.write(bytes);
                    }
                    written = written.wrapping_add(len);
                }
                Ok(put_errno(data, written_at, &written.to_le_bytes()))
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_read",
        |mut c: Ctx<'_>, fd: i32, iovs: i32, count: i32, read_at: i32| {
            with_memory(&mut c, |data, state| {
                if fd != 0 || state.closed[0] {
                    return Ok(ERRNO_BADF);
                }
                let Some(iovs) = iovecs(data, iovs, count) else {
                    return Ok(ERRNO_FAULT);
                };
                let mut read = 0u32;
                for (ptr, len) in iovs {
                    let rest = state.stdin.get(state.stdin_at..).unwrap_or_default();
                    let n = rest.len().min(len as usize);
                    let Some(dst) = slice_mut(data, ptr as i32, n) else {
                        return Ok(ERRNO_FAULT);
                    };
                    dst.copy_from_slice(rest.get(..n).unwrap_or_default());
                    state.stdin_at += n;
                    read = read.wrapping_add(n as u32);
                    if n < len as usize {
                        break;
                    }
                }
                Ok(put_errno(data, read_at, &read.to_le_bytes()))
            })
        },
    )?;
    linker.func_wrap(WASI, "fd_close", |mut c: Ctx<'_>, fd: i32| {
        let state = c.data_mut();
        match state.closed.get_mut(fd as u32 as usize) {
            Some(closed) if !*closed => {
                *closed = true;
                Ok(ERRNO_SUCCESS)
            }
            _ => Ok(ERRNO_BADF),
        }
    })?;
    linker.func_wrap(WASI, "fd_fdstat_get", |mut c: Ctx<'_>, fd: i32, at: i32| {
        with_memory(&mut c, |data, state| {
            let rights = match fd {
                0 => RIGHTS_FD_READ,
                1 | 2 => RIGHTS_FD_WRITE,
                _ => return Ok(ERRNO_BADF),
            };
            if state.is_closed(fd) {
                return Ok(ERRNO_BADF);
            }
            // filetype unknown (not a terminal), no flags: blocking, as wasmtime-wasi says of
            // in-memory pipes. Go then reads and writes stdio without its poller.
            let mut stat = [0u8; 24];
            stat[8..16].copy_from_slice(&rights.to_le_bytes());
            stat[16..24].copy_from_slice(&rights.to_le_bytes());
            Ok(put_errno(data, at, &stat))
        })
    })?;
    linker.func_wrap(
        WASI,
        "fd_filestat_get",
        |mut c: Ctx<'_>, fd: i32, at: i32| {
            with_memory(&mut c, |data, state| {
                if !(0..=2).contains(&fd) || state.is_closed(fd) {
                    return Ok(ERRNO_BADF);
                }
                Ok(put_errno(data, at, &[0u8; 64]))
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "poll_oneoff",
        |mut c: Ctx<'_>, subs: i32, events: i32, count: i32, nevents: i32| {
            with_memory(&mut c, |data, state| {
                poll_oneoff_in(data, state.deadline, subs, events, count, nevents)
                    .map_err(Error::host)
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "proc_exit",
        |_: Ctx<'_>, code: i32| -> Result<(), Error> { Err(Error::i32_exit(code)) },
    )?;
    linker.func_wrap(WASI, "sched_yield", |_: Ctx<'_>| ERRNO_SUCCESS)?;
    linker.func_wrap(
        "host",
        "k8s_lookup",
        |mut c: Ctx<'_>, state: i32, name: i64, namespace: i64, kind: i64, api: i64| {
            let request = LookupRequest {
                name: guest_string(&c, name, "k8s_lookup")?,
                namespace: guest_string(&c, namespace, "k8s_lookup")?,
                kind: guest_string(&c, kind, "k8s_lookup")?,
                api_version: guest_string(&c, api, "k8s_lookup")?,
            };
            let result = match c.data().cluster.clone() {
                Some(cluster) => cluster.lookup(&request),
                None => Err(HostError::FeatureNotGranted),
            };
            host_result(&mut c, state, result, "k8s_lookup")
        },
    )?;
    linker.func_wrap(
        "host",
        "k8s_rest_mapping",
        |mut c: Ctx<'_>, state: i32, group: i64, kind: i64| {
            let group = guest_string(&c, group, "k8s_rest_mapping")?;
            let kind = guest_string(&c, kind, "k8s_rest_mapping")?;
            let result = match c.data().cluster.clone() {
                Some(cluster) => cluster.rest_mapping(&group, &kind),
                None => Err(HostError::FeatureNotGranted),
            };
            host_result(&mut c, state, result, "k8s_rest_mapping")
        },
    )?;

    // Every other WASI call: no files, no sockets. `EBADF` for calls on a descriptor (there
    // are no others than stdio, and stdio is not a file), `ENOSYS` for the rest.
    let mut defined = std::collections::HashSet::new();
    for import in module.imports() {
        if import.module() != WASI
            || IMPLEMENTED.contains(&import.name())
            // Go imports some calls more than once.
            || !defined.insert(import.name().to_string())
        {
            continue;
        }
        let wasmi::ExternType::Func(ty) = import.ty() else {
            continue;
        };
        let errno = if import.name().starts_with("fd_") || import.name().starts_with("path_") {
            ERRNO_BADF
        } else {
            ERRNO_NOSYS
        };
        let ty = ty.clone();
        let results = ty.results().to_vec();
        linker.func_new(WASI, import.name(), ty, move |_, _, out: &mut [Val]| {
            for (slot, kind) in out.iter_mut().zip(&results) {
                *slot = match kind {
                    wasmi::ValType::I32 => Val::I32(errno),
                    wasmi::ValType::I64 => Val::I64(i64::from(errno)),
                    _ => Val::default_for_ty(*kind),
                };
            }
            Ok(())
        })?;
    }
    Ok(linker)
}

// ---- the `host` module -----------------------------------------------------------------------

fn guest_string(caller: &Ctx<'_>, packed: i64, call: &str) -> Result<String, Error> {
    let Some(memory) = memory(caller) else {
        return Err(host_failed(format!(
            "host.{call}: the module exports no memory"
        )));
    };
    let (ptr, len) = unpack(packed);
    let data = memory.data(caller);
    let Some(bytes) = ptr.checked_add(len).and_then(|end| data.get(ptr..end)) else {
        return Err(host_failed(format!(
            "host.{call}: the flight passed a string outside its memory ({ptr}+{len})"
        )));
    };
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

fn guest_malloc(caller: &mut Ctx<'_>, bytes: &[u8], call: &str) -> Result<i64, Error> {
    let Some(Extern::Func(malloc)) = caller.get_export("malloc") else {
        return Err(host_failed(format!(
            "host.{call}: the flight does not export `malloc(i32) -> i64`, which Yoke's host ABI requires"
        )));
    };
    let malloc = malloc.typed::<i32, i64>(&*caller)?;
    let size = i32::try_from(bytes.len()).map_err(|_| {
        host_failed(format!(
            "host.{call}: result of {} bytes is too large",
            bytes.len()
        ))
    })?;
    let buffer = malloc.call(&mut *caller, size)?;
    let (ptr, len) = unpack(buffer);
    let Some(memory) = memory(caller) else {
        return Err(host_failed(format!(
            "host.{call}: the module exports no memory"
        )));
    };
    let data = memory.data_mut(&mut *caller);
    let Some(dst) = ptr
        .checked_add(bytes.len())
        .and_then(|end| data.get_mut(ptr..end))
    else {
        return Err(host_failed(format!(
            "host.{call}: the flight's malloc returned a buffer outside its memory ({ptr}+{len})"
        )));
    };
    dst.copy_from_slice(bytes);
    Ok(buffer)
}

fn host_result(
    caller: &mut Ctx<'_>,
    state_ptr: i32,
    result: Result<Vec<u8>, HostError>,
    call: &str,
) -> Result<i64, Error> {
    match result {
        Ok(bytes) => guest_malloc(caller, &bytes, call),
        Err(error) => {
            let Some(memory) = memory(caller) else {
                return Err(host_failed(format!(
                    "host.{call}: the module exports no memory"
                )));
            };
            let data = memory.data_mut(&mut *caller);
            if !put(data, state_ptr, &error.state().to_le_bytes()) {
                return Err(host_failed(format!(
                    "host.{call}: the flight's state pointer {} is outside its memory",
                    state_ptr as u32
                )));
            }
            guest_malloc(caller, error.to_string().as_bytes(), call)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Compiler;
    use crate::FlightEngine;

    fn spec<'a>(args: &'a [String], stdin: &[u8]) -> FlightSpec<'a> {
        FlightSpec {
            what: "test.wasm",
            release: "rel",
            namespace: "ns",
            args,
            stdin: stdin.to_vec(),
            max_memory_bytes: 64 << 20,
            timeout: Some(Duration::from_secs(5)),
            max_stdout_bytes: 1 << 20,
            stderr: StderrMode::Capture,
            cluster: None,
        }
    }

    fn validator() -> wasmtime::Engine {
        FlightEngine::new(Compiler::Winch, None)
            .unwrap()
            .engine()
            .clone()
    }

    fn run(wat: &str, spec: &FlightSpec<'_>, options: InterpreterOptions) -> Interpreted {
        let wasm = wat::parse_str(wat).unwrap();
        run_flight_interpreted(&validator(), &wasm, spec, options)
    }

    fn finished(outcome: Interpreted) -> Result<FlightOutput, FlightError> {
        match outcome {
            Interpreted::Finished(result) => result,
            Interpreted::Declined { reason } => panic!("declined: {reason}"),
        }
    }

    /// Echoes stdin to stdout, then writes "!" and exits with the first argument's length.
    const ECHO: &str = r#"(module
      (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start") (local $n i32)
        ;; path_open on fd 3 must fail with EBADF (8): no preopens.
        (if (i32.ne (call $open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 0)) (i32.const 8))
          (then unreachable))
        (i32.store (i32.const 0) (i32.const 100))
        (i32.store (i32.const 4) (i32.const 1000))
        (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (i32.store (i32.const 4) (i32.load (i32.const 8)))
        (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
        (call $exit (i32.const 3)))
    )"#;

    #[test]
    fn a_flight_reads_stdin_writes_stdout_and_exits() {
        let args = vec![];
        let spec = spec(&args, b"hello");
        match finished(run(ECHO, &spec, InterpreterOptions::default())) {
            Err(FlightError::Exit { code, stdout, .. }) => {
                assert_eq!(code, 3);
                assert_eq!(stdout, b"hello");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_stdout_cap_and_the_timeout_stop_a_flight() {
        let args = vec![];
        let mut capped = spec(&args, b"more than four bytes");
        capped.max_stdout_bytes = 4;
        let error = finished(run(ECHO, &capped, InterpreterOptions::default())).unwrap_err();
        assert!(
            matches!(
                error,
                FlightError::LimitExceeded {
                    limit: Limit::Stdout { max_bytes: 4 },
                    ..
                }
            ),
            "{error}"
        );

        let looping =
            r#"(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))"#;
        let mut timed = spec(&args, b"");
        timed.timeout = Some(Duration::from_millis(200));
        let started = Instant::now();
        let error = finished(run(looping, &timed, InterpreterOptions::default())).unwrap_err();
        assert!(
            matches!(
                error,
                FlightError::LimitExceeded {
                    limit: Limit::Timeout { .. },
                    ..
                }
            ),
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn a_long_computation_is_handed_back_within_the_budget() {
        let args = vec![];
        let looping =
            r#"(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))"#;
        let spec = spec(&args, b"");
        let outcome = run(
            looping,
            &spec,
            InterpreterOptions {
                budget: Some(Duration::from_millis(50)),
            },
        );
        assert!(
            matches!(outcome, Interpreted::Declined { .. }),
            "{outcome:?}"
        );
    }

    #[test]
    fn memory_growth_past_the_cap_is_a_memory_limit() {
        let args = vec![];
        let grow = r#"(module (memory (export "memory") 1)
          (func (export "_start") (if (i32.eq (memory.grow (i32.const 2000)) (i32.const -1)) (then unreachable))))"#;
        let error =
            finished(run(grow, &spec(&args, b""), InterpreterOptions::default())).unwrap_err();
        assert!(
            matches!(
                error,
                FlightError::LimitExceeded {
                    limit: Limit::Memory { .. },
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn unknown_imports_and_invalid_modules_are_refused_like_the_compiled_tier() {
        let args = vec![];
        let gojs = r#"(module (import "gojs" "runtime.wasmExit" (func (param i32))) (func (export "_start")))"#;
        let error =
            finished(run(gojs, &spec(&args, b""), InterpreterOptions::default())).unwrap_err();
        assert!(error.to_string().contains("GOOS=js"), "{error}");

        // A type error in a function that never runs: wasmi alone (lazy) would not notice.
        let wasm = wat::parse_str(
            r#"(module (func (export "_start")) (func $never (result i32) (i64.const 1)))"#,
        )
        .unwrap();
        let outcome = run_flight_interpreted(
            &validator(),
            &wasm,
            &spec(&args, b""),
            InterpreterOptions::default(),
        );
        assert!(
            matches!(outcome, Interpreted::Declined { .. }),
            "{outcome:?}"
        );
    }
}
