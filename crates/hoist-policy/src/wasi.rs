//! The WASI host (`wasi` mode): a fresh instance per call, the operation in argv, the payload
//! on stdin, the answer on stdout, and `host.call` whose answers are appended to stdin.
//!
//! A fresh instance of a Go policy runs Go's runtime and package initialisers every time,
//! which is most of a call. For Go `GOOS=wasip1` policies, the first call of each operation
//! also keeps the instance's state at its first read of stdin
//! ([`hoist_runtime::go_resume`]), runs once more from there on the same payload, and when
//! both answers agree, later calls of that operation start from that state. `HOIST_GO_RESUME=0`
//! turns this off.

use crate::capabilities::HostCapabilities;
use crate::eval::{EvalError, Limits, classify, guest_memory};
use bytes::Bytes;
use hoist_runtime::go_resume::{GoLayout, ProcessClock, ResumePoint};
use hoist_runtime::guest::{self, CappedStdout, GuestOutput, MemoryLimiter, StderrMode, TeeStderr};
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, ReadBuf};
use wasmtime::{Caller, InstancePre, Linker, Module, Store};
use wasmtime_wasi::cli::{IsTerminal, StdinStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::{InputStream, Pollable, StreamError};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

/// Largest answer a WASI policy may print.
const MAX_STDOUT: usize = 64 * 1024 * 1024;

/// stdin that the host can append to while the guest runs (host-call answers), and that
/// reports end-of-file whenever it is drained, without staying closed.
#[derive(Clone, Default)]
struct SharedStdin(Arc<Mutex<VecDeque<u8>>>);

impl SharedStdin {
    fn push(&self, bytes: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(bytes);
    }
    /// Moves up to `buffer.len()` bytes into `buffer`; how many.
    fn fill(&self, buffer: &mut [u8]) -> usize {
        let mut queue = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = buffer.len().min(queue.len());
        for (to, from) in buffer.iter_mut().zip(queue.drain(..n)) {
            *to = from;
        }
        n
    }
    fn take(&self, max: usize) -> Vec<u8> {
        let mut buffer = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = max.min(buffer.len());
        buffer.drain(..n).collect()
    }
}

impl InputStream for SharedStdin {
    fn read(&mut self, size: usize) -> Result<Bytes, StreamError> {
        let bytes = self.take(size);
        if bytes.is_empty() {
            return Err(StreamError::Closed);
        }
        Ok(Bytes::from(bytes))
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for SharedStdin {
    async fn ready(&mut self) {}
}

impl AsyncRead for SharedStdin {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let bytes = self.take(buf.remaining());
        buf.put_slice(&bytes);
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for SharedStdin {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for SharedStdin {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn AsyncRead + Send + Sync> {
        Box::new(self.clone())
    }
}

pub(crate) struct WasiState {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
    deadline: Option<Instant>,
    stdin: SharedStdin,
    host: HostCapabilities,
    /// Set when this run should keep its state at its first read of stdin.
    capture: Option<GoLayout>,
    captured: Option<ResumePoint>,
    /// Output or host calls before the first read make the state unfit to resume from.
    host_calls: u32,
    stdout: CappedStdout,
    stderr: TeeStderr,
}

/// A WASI policy, linked once; each call instantiates it afresh.
pub(crate) struct WasiPre {
    pre: InstancePre<WasiState>,
    /// Resume points per operation, for Go policies (see the module docs).
    resume: Option<Resume>,
}

struct Resume {
    layout: GoLayout,
    points: Mutex<HashMap<String, Point>>,
}

#[derive(Clone)]
enum Point {
    Verified(Arc<ResumePoint>),
    Refused,
}

/// How a run starts.
enum Start<'a> {
    /// From `_start`, keeping the state at the first read when a layout is given.
    Fresh(Option<&'a GoLayout>),
    /// From a resume point.
    Resume(&'a ResumePoint),
}

/// A resume point a run took, with the number of host calls the run made.
type Taken = (ResumePoint, u32);

/// `fd_read`, in place of WASI's: stdin is the only readable descriptor a policy has, and
/// this is where a run keeps its state for later resumes.
fn fd_read(
    mut caller: Caller<'_, WasiState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    nread: i32,
) -> wasmtime::Result<i32> {
    if fd != 0 {
        return Ok(guest::ERRNO_BADF);
    }
    if let Some(layout) = caller.data_mut().capture.take() {
        let state = caller.data();
        if state.host_calls == 0 && state.stdout.is_empty() && state.stderr.tail().is_empty() {
            match ResumePoint::capture(&mut caller, &layout) {
                Ok(point) => caller.data_mut().captured = Some(point),
                Err(e) => tracing::debug!("no resume point for this policy: {e}"),
            }
        }
    }
    let memory = guest_memory(&mut caller, "fd_read")?;
    let stdin = caller.data().stdin.clone();
    let data = memory.data_mut(&mut caller);
    Ok(guest::fd_read_into(data, iovs, iovs_len, nread, |buffer| {
        stdin.fill(buffer)
    }))
}

#[allow(clippy::too_many_arguments)]
fn host_call(
    mut caller: Caller<'_, WasiState>,
    bind_ptr: i32,
    bind_len: i32,
    ns_ptr: i32,
    ns_len: i32,
    op_ptr: i32,
    op_len: i32,
    pl_ptr: i32,
    pl_len: i32,
) -> wasmtime::Result<i32> {
    let memory = guest_memory(&mut caller, "host.call")?;
    let data = memory.data(&caller);
    let read = |ptr: i32, len: i32| -> wasmtime::Result<Vec<u8>> {
        let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
        match ptr.checked_add(len).and_then(|end| data.get(ptr..end)) {
            Some(b) => Ok(b.to_vec()),
            None => wasmtime::bail!(
                "host.call: the policy passed a buffer outside its memory ({ptr}+{len})"
            ),
        }
    };
    let binding = read(bind_ptr, bind_len)?;
    let namespace = read(ns_ptr, ns_len)?;
    let operation = read(op_ptr, op_len)?;
    let payload = read(pl_ptr, pl_len)?;
    caller.data_mut().host_calls += 1;
    let state = caller.data();
    let result = state.host.dispatch(
        &String::from_utf8_lossy(&binding),
        &String::from_utf8_lossy(&namespace),
        &String::from_utf8_lossy(&operation),
        &payload,
    );
    // WASI convention: 0 on success, 1 on error; the answer (or the error text) follows on stdin.
    Ok(match result {
        Ok(bytes) => {
            state.stdin.push(&bytes);
            0
        }
        Err(error) => {
            state.stdin.push(error.as_bytes());
            1
        }
    })
}

impl WasiPre {
    pub(crate) fn new(
        engine: &wasmtime::Engine,
        module: &Module,
        what: &str,
    ) -> Result<Self, EvalError> {
        let setup = |e: wasmtime::Error| EvalError::Setup(format!("{e:#}"));
        let mut linker: Linker<WasiState> = Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut WasiState| &mut s.wasi)
            .map_err(setup)?;
        guest::add_bounded_poll_oneoff(&mut linker, |s: &WasiState| s.deadline).map_err(setup)?;
        linker.allow_shadowing(true);
        linker
            .func_wrap("wasi_snapshot_preview1", "fd_read", fd_read)
            .map_err(setup)?;
        linker.func_wrap("host", "call", host_call).map_err(setup)?;
        linker
            .func_wrap("kubewarden:javy/host", "call", host_call)
            .map_err(setup)?;
        if module.get_export("_start").is_none() {
            return Err(EvalError::Setup(format!(
                "{what} has no _start export: a WASI policy must be a command module"
            )));
        }
        let pre = linker.instantiate_pre(module).map_err(|e| {
            EvalError::Setup(format!("{what} cannot be linked as a WASI policy: {e:#}"))
        })?;
        let resume = match std::env::var("HOIST_GO_RESUME").as_deref() {
            Ok("0") => None,
            _ => GoLayout::of(module).map(|layout| Resume {
                layout,
                points: Mutex::new(HashMap::new()),
            }),
        };
        Ok(WasiPre { pre, resume })
    }

    pub(crate) fn engine(&self) -> &wasmtime::Engine {
        self.pre.module().engine()
    }

    /// The operations whose calls start from a verified resume point.
    pub(crate) fn resumed_operations(&self) -> Vec<String> {
        let Some(resume) = &self.resume else {
            return Vec::new();
        };
        let points = resume.points.lock().unwrap_or_else(|p| p.into_inner());
        let mut operations: Vec<String> = points
            .iter()
            .filter(|(_, point)| matches!(point, Point::Verified(_)))
            .map(|(operation, _)| operation.clone())
            .collect();
        operations.sort();
        operations
    }

    /// Runs `policy.wasm <operation>` with `payload` on stdin; its stdout on success.
    pub(crate) fn run(
        &self,
        operation: &str,
        payload: &[u8],
        host: &HostCapabilities,
        limits: &Limits,
    ) -> Result<Vec<u8>, EvalError> {
        let Some(resume) = &self.resume else {
            return self
                .execute(operation, payload, host, limits, Start::Fresh(None))
                .map(|(out, _)| out);
        };
        let known = resume
            .points
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(operation)
            .cloned();
        match known {
            Some(Point::Verified(point)) => self
                .execute(operation, payload, host, limits, Start::Resume(&point))
                .map(|(out, _)| out),
            Some(Point::Refused) => self
                .execute(operation, payload, host, limits, Start::Fresh(None))
                .map(|(out, _)| out),
            None => {
                let (out, taken) = self.execute(
                    operation,
                    payload,
                    host,
                    limits,
                    Start::Fresh(Some(&resume.layout)),
                )?;
                // A point is kept only if a run from it gives the same answer, and only
                // when the policy made no host call (a second run would repeat them).
                let point = match taken {
                    Some((point, 0)) => {
                        match self.execute(operation, payload, host, limits, Start::Resume(&point))
                        {
                            Ok((again, _)) if again == out => Point::Verified(Arc::new(point)),
                            Ok(_) => {
                                tracing::warn!(
                                    "policy {}: a run resumed after Go's start-up answered differently; every call of {operation} starts afresh",
                                    host.policy
                                );
                                Point::Refused
                            }
                            Err(e) => {
                                tracing::warn!(
                                    "policy {}: a run resumed after Go's start-up failed ({e}); every call of {operation} starts afresh",
                                    host.policy
                                );
                                Point::Refused
                            }
                        }
                    }
                    _ => Point::Refused,
                };
                resume
                    .points
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(operation.to_string(), point);
                Ok(out)
            }
        }
    }

    /// One run; with it, the resume point it took and how many host calls it made.
    fn execute(
        &self,
        operation: &str,
        payload: &[u8],
        host: &HostCapabilities,
        limits: &Limits,
        start: Start<'_>,
    ) -> Result<(Vec<u8>, Option<Taken>), EvalError> {
        let stdin = SharedStdin::default();
        stdin.push(payload);
        let stdout = CappedStdout::new(MAX_STDOUT);
        let stderr = TeeStderr::new(8192, StderrMode::Capture);
        let wasi = WasiCtxBuilder::new()
            .args(&["policy.wasm", operation])
            .stdin(stdin.clone())
            .stdout(GuestOutput(stdout.clone()))
            .stderr(GuestOutput(stderr.clone()))
            .monotonic_clock(ProcessClock)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build_p1();
        let mut store = Store::new(
            self.engine(),
            WasiState {
                wasi,
                limiter: MemoryLimiter::new(limits.max_memory_bytes),
                deadline: None,
                stdin,
                host: host.clone(),
                capture: match start {
                    Start::Fresh(layout) => layout.cloned(),
                    Start::Resume(_) => None,
                },
                captured: None,
                host_calls: 0,
                stdout: stdout.clone(),
                stderr: stderr.clone(),
            },
        );
        store.limiter(|s| &mut s.limiter);
        let deadline = limits.arm(&mut store);
        store.data_mut().deadline = deadline;
        let result = self
            .pre
            .instantiate(&mut store)
            .and_then(|instance| match start {
                Start::Fresh(_) => {
                    let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                    start.call(&mut store, ())
                }
                Start::Resume(point) => point.resume(&mut store, &instance),
            });
        let tail = stderr.tail();
        let with_stderr = |message: String| -> String {
            let tail = tail.trim();
            if tail.is_empty() {
                message
            } else {
                let lines: Vec<&str> = tail.lines().collect();
                format!(
                    "{message}; stderr: {}",
                    lines
                        .get(lines.len().saturating_sub(10)..)
                        .unwrap_or_default()
                        .join("\n")
                )
            }
        };
        match result {
            Ok(()) => {}
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(I32Exit(0)) => {}
                Some(I32Exit(code)) => {
                    return Err(EvalError::Trap(with_stderr(format!(
                        "the policy exited with code {code} running {operation}"
                    ))));
                }
                None => {
                    return Err(match classify(e, limits, &format!("running {operation}")) {
                        EvalError::Trap(m) => EvalError::Trap(with_stderr(m)),
                        other => other,
                    });
                }
            },
        }
        if !tail.trim().is_empty() {
            tracing::debug!("policy {} stderr: {}", host.policy, tail.trim());
        }
        let state = store.data_mut();
        let taken = state.captured.take().map(|point| (point, state.host_calls));
        Ok((stdout.take(), taken))
    }
}
