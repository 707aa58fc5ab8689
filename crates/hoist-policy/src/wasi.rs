//! The WASI host (`wasi` mode): a fresh instance per call, the operation in argv, the payload
//! on stdin, the answer on stdout, and `host.call` whose answers are appended to stdin.

use crate::capabilities::HostCapabilities;
use crate::eval::{EvalError, Limits, classify, guest_memory};
use bytes::Bytes;
use hoist_runtime::guest::{self, CappedStdout, GuestOutput, MemoryLimiter, StderrMode, TeeStderr};
use std::collections::VecDeque;
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
}

/// A WASI policy, linked once; each call instantiates it afresh.
pub(crate) struct WasiPre {
    pre: InstancePre<WasiState>,
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
        Ok(WasiPre { pre })
    }

    pub(crate) fn engine(&self) -> &wasmtime::Engine {
        self.pre.module().engine()
    }

    /// Runs `policy.wasm <operation>` with `payload` on stdin; its stdout on success.
    pub(crate) fn run(
        &self,
        operation: &str,
        payload: &[u8],
        host: &HostCapabilities,
        limits: &Limits,
    ) -> Result<Vec<u8>, EvalError> {
        let stdin = SharedStdin::default();
        stdin.push(payload);
        let stdout = CappedStdout::new(MAX_STDOUT);
        let stderr = TeeStderr::new(8192, StderrMode::Capture);
        let wasi = WasiCtxBuilder::new()
            .args(&["policy.wasm", operation])
            .stdin(stdin.clone())
            .stdout(GuestOutput(stdout.clone()))
            .stderr(GuestOutput(stderr.clone()))
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
            },
        );
        store.limiter(|s| &mut s.limiter);
        let deadline = limits.arm(&mut store);
        store.data_mut().deadline = deadline;
        let result = self.pre.instantiate(&mut store).and_then(|instance| {
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call(&mut store, ())
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
        Ok(stdout.take())
    }
}
