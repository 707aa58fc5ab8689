//! The waPC host (`kubewarden-wapc` mode): the `wapc` import module, `__guest_call`, and WASI
//! preview 1 linked alongside, as wasmtime-provider does.

use crate::capabilities::HostCapabilities;
use crate::eval::{EvalError, Limits, classify, guest_memory};
use hoist_runtime::guest::{self, CallDeadline, GuestOutput, MemoryLimiter, StderrMode, TeeStderr};
use std::time::Instant;
use wasmtime::{Caller, InstancePre, Linker, Memory, Module, Store, TypedFunc};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;

pub(crate) struct WapcState {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
    deadline: Option<Instant>,
    operation: Vec<u8>,
    payload: Vec<u8>,
    guest_response: Option<Vec<u8>>,
    guest_error: Option<String>,
    host_response: Option<Vec<u8>>,
    host_error: Option<String>,
    host: HostCapabilities,
    /// The policy's exported memory, looked up on the first host call: a lookup by name on
    /// every `__guest_request`/`__guest_response` was about 6% of a small policy's `validate`.
    memory: Option<Memory>,
}

/// A compiled waPC policy with its imports resolved, ready to instantiate.
pub(crate) struct WapcPre {
    pre: InstancePre<WapcState>,
}

/// A live waPC instance: reused across calls, rebuilt after a trap.
pub(crate) struct WapcInstance {
    store: Store<WapcState>,
    guest_call: TypedFunc<(i32, i32), i32>,
    deadline: CallDeadline,
}

/// The policy's memory (one instance per store, so the handle found once stays right).
fn policy_memory(caller: &mut Caller<'_, WapcState>, what: &str) -> wasmtime::Result<Memory> {
    if let Some(memory) = caller.data().memory {
        return Ok(memory);
    }
    let memory = guest_memory(caller, what)?;
    caller.data_mut().memory = Some(memory);
    Ok(memory)
}

fn read(
    caller: &mut Caller<'_, WapcState>,
    ptr: i32,
    len: i32,
    what: &str,
) -> wasmtime::Result<Vec<u8>> {
    let memory = policy_memory(caller, what)?;
    let data = memory.data(&*caller);
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    match ptr.checked_add(len).and_then(|end| data.get(ptr..end)) {
        Some(bytes) => Ok(bytes.to_vec()),
        None => {
            wasmtime::bail!("{what}: the policy passed a buffer outside its memory ({ptr}+{len})")
        }
    }
}

fn write(
    caller: &mut Caller<'_, WapcState>,
    ptr: i32,
    bytes: &[u8],
    what: &str,
) -> wasmtime::Result<()> {
    let memory = policy_memory(caller, what)?;
    let data = memory.data_mut(&mut *caller);
    let ptr = ptr as u32 as usize;
    match ptr
        .checked_add(bytes.len())
        .and_then(|end| data.get_mut(ptr..end))
    {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            Ok(())
        }
        None => wasmtime::bail!(
            "{what}: the policy passed a buffer outside its memory ({ptr}+{})",
            bytes.len()
        ),
    }
}

fn len_i32(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<WapcState>> {
    let mut linker: Linker<WapcState> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut WapcState| &mut s.wasi)?;
    guest::add_bounded_poll_oneoff(&mut linker, |s: &WapcState| s.deadline)?;
    linker.func_wrap(
        "wapc",
        "__guest_request",
        |mut caller: Caller<'_, WapcState>,
         op_ptr: i32,
         payload_ptr: i32|
         -> wasmtime::Result<()> {
            let operation = caller.data().operation.clone();
            let payload = std::mem::take(&mut caller.data_mut().payload);
            write(&mut caller, op_ptr, &operation, "__guest_request")?;
            let result = write(&mut caller, payload_ptr, &payload, "__guest_request");
            caller.data_mut().payload = payload;
            result
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__guest_response",
        |mut caller: Caller<'_, WapcState>, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let bytes = read(&mut caller, ptr, len, "__guest_response")?;
            caller.data_mut().guest_response = Some(bytes);
            Ok(())
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__guest_error",
        |mut caller: Caller<'_, WapcState>, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let bytes = read(&mut caller, ptr, len, "__guest_error")?;
            caller.data_mut().guest_error = Some(String::from_utf8_lossy(&bytes).into_owned());
            Ok(())
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__host_call",
        |mut caller: Caller<'_, WapcState>,
         bind_ptr: i32,
         bind_len: i32,
         ns_ptr: i32,
         ns_len: i32,
         op_ptr: i32,
         op_len: i32,
         pl_ptr: i32,
         pl_len: i32|
         -> wasmtime::Result<i32> {
            let binding = read(&mut caller, bind_ptr, bind_len, "__host_call")?;
            let namespace = read(&mut caller, ns_ptr, ns_len, "__host_call")?;
            let operation = read(&mut caller, op_ptr, op_len, "__host_call")?;
            let payload = read(&mut caller, pl_ptr, pl_len, "__host_call")?;
            let state = caller.data_mut();
            state.host_response = None;
            state.host_error = None;
            let result = state.host.dispatch(
                &String::from_utf8_lossy(&binding),
                &String::from_utf8_lossy(&namespace),
                &String::from_utf8_lossy(&operation),
                &payload,
            );
            Ok(match result {
                Ok(response) => {
                    state.host_response = Some(response);
                    1
                }
                Err(error) => {
                    state.host_error = Some(error);
                    0
                }
            })
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__host_response_len",
        |caller: Caller<'_, WapcState>| -> i32 {
            len_i32(caller.data().host_response.as_ref().map_or(0, Vec::len))
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__host_response",
        |mut caller: Caller<'_, WapcState>, ptr: i32| -> wasmtime::Result<()> {
            if let Some(bytes) = caller.data().host_response.clone() {
                write(&mut caller, ptr, &bytes, "__host_response")?;
            }
            Ok(())
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__host_error_len",
        |caller: Caller<'_, WapcState>| -> i32 {
            len_i32(caller.data().host_error.as_ref().map_or(0, String::len))
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__host_error",
        |mut caller: Caller<'_, WapcState>, ptr: i32| -> wasmtime::Result<()> {
            if let Some(text) = caller.data().host_error.clone() {
                write(&mut caller, ptr, text.as_bytes(), "__host_error")?;
            }
            Ok(())
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__console_log",
        |mut caller: Caller<'_, WapcState>, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let bytes = read(&mut caller, ptr, len, "__console_log")?;
            tracing::info!(
                "policy {}: {}",
                caller.data().host.policy,
                String::from_utf8_lossy(&bytes)
            );
            Ok(())
        },
    )?;
    Ok(linker)
}

impl WapcPre {
    pub(crate) fn engine(&self) -> &wasmtime::Engine {
        self.pre.module().engine()
    }

    pub(crate) fn new(
        engine: &wasmtime::Engine,
        module: &Module,
        what: &str,
    ) -> Result<Self, EvalError> {
        let linker = linker(engine).map_err(|e| EvalError::Setup(format!("{e:#}")))?;
        let pre = linker.instantiate_pre(module).map_err(|e| {
            EvalError::Setup(format!("{what} cannot be linked as a waPC policy: {e:#}"))
        })?;
        if module.get_export("__guest_call").is_none() {
            return Err(EvalError::Setup(format!(
                "{what} has no __guest_call export, so it is not a waPC policy (a WASI policy runs with -e wasi)"
            )));
        }
        Ok(WapcPre { pre })
    }

    /// A fresh instance: `_start` then `wapc_init`, each when exported.
    pub(crate) fn instantiate(
        &self,
        host: HostCapabilities,
        limits: &Limits,
    ) -> Result<WapcInstance, EvalError> {
        // Policies' stdout and stderr go to hoist's stderr, so stdout keeps only the response.
        let err = TeeStderr::new(4096, StderrMode::Stream);
        let wasi = WasiCtxBuilder::new()
            .stdout(GuestOutput(err.clone()))
            .stderr(GuestOutput(err))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build_p1();
        let engine = self.pre.module().engine();
        let mut store = Store::new(
            engine,
            WapcState {
                wasi,
                limiter: MemoryLimiter::new(limits.max_memory_bytes),
                deadline: None,
                operation: Vec::new(),
                payload: Vec::new(),
                guest_response: None,
                guest_error: None,
                host_response: None,
                host_error: None,
                host,
                memory: None,
            },
        );
        store.limiter(|s| &mut s.limiter);
        let call_deadline = CallDeadline::install(&mut store);
        arm(&mut store, &call_deadline, limits);
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(e, limits, "instantiating the policy"))?;
        for init in ["_start", "wapc_init"] {
            if let Ok(func) = instance.get_typed_func::<(), ()>(&mut store, init) {
                match func.call(&mut store, ()) {
                    Ok(()) => {}
                    Err(e)
                        if matches!(
                            e.downcast_ref::<wasmtime_wasi::I32Exit>(),
                            Some(wasmtime_wasi::I32Exit(0))
                        ) => {}
                    Err(e) => return Err(classify(e, limits, &format!("running {init}"))),
                }
            }
        }
        let guest_call = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "__guest_call")
            .map_err(|e| EvalError::Setup(format!("__guest_call has the wrong type: {e:#}")))?;
        Ok(WapcInstance {
            store,
            guest_call,
            deadline: call_deadline,
        })
    }
}

/// Arms `limits`' time limit from now, for the epoch callback (guest code) and for
/// `poll_oneoff` (a guest's sleeps), which read it from the store.
fn arm(store: &mut Store<WapcState>, call_deadline: &CallDeadline, limits: &Limits) {
    let deadline = limits.deadline();
    call_deadline.arm_at(store, deadline);
    store.data_mut().deadline = deadline;
}

impl WapcInstance {
    /// One waPC call: the guest's response bytes, or why there are none.
    pub(crate) fn call(
        &mut self,
        operation: &str,
        payload: &[u8],
        limits: &Limits,
    ) -> Result<Vec<u8>, EvalError> {
        let state = self.store.data_mut();
        state.operation = operation.as_bytes().to_vec();
        state.payload = payload.to_vec();
        state.guest_response = None;
        state.guest_error = None;
        state.host_response = None;
        state.host_error = None;
        arm(&mut self.store, &self.deadline, limits);
        let result = self.guest_call.call(
            &mut self.store,
            (len_i32(operation.len()), len_i32(payload.len())),
        );
        let state = self.store.data_mut();
        state.payload = Vec::new();
        match result {
            Ok(1) => state.guest_response.take().ok_or_else(|| {
                EvalError::Protocol(format!(
                    "the policy reported success for {operation} but sent no response"
                ))
            }),
            Ok(_) => Err(EvalError::Guest(
                state
                    .guest_error
                    .take()
                    .unwrap_or_else(|| "no error message".to_string()),
            )),
            Err(e) => Err(classify(e, limits, &format!("calling {operation}"))),
        }
    }
}
