//! OPA's Wasm ABI (modules built by `opa build -t wasm`) and Kubewarden's two ways of feeding
//! it: OPA mode (kube-mgmt style) and Gatekeeper mode.
//!
//! Per evaluation: reset the heap, load `data` (cached while it does not change), then either
//! the one-shot `opa_eval` (ABI >= 1.2) or the classic context API (`opa_eval_ctx_*`, `eval`).
//! Builtins the module does not compile in are answered by [`crate::builtins`].

use crate::builtins;
use crate::capabilities::{CapabilityRequest, HostCapabilities};
use crate::eval::{EvalError, Limits, classify, preview};
use crate::metadata::ExecutionMode;
use crate::response::{
    AdmissionResponse, AdmissionStatus, JsonMembers, ValidateRequest, json_object_pieces,
};
use hoist_runtime::guest::{CallDeadline, MemoryLimiter};
use serde_json::{Map, Value, json};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use wasmtime::{
    Caller, Extern, ExternType, Func, Instance, Memory, MemoryType, Module, Store, TypedFunc, Val,
    ValType,
};

/// Pages of the host memory Kubewarden gives Rego modules.
const INITIAL_PAGES: u64 = 5;

pub(crate) struct RegoState {
    limiter: MemoryLimiter,
    memory: Option<Memory>,
    /// Builtin id -> name.
    builtins: HashMap<i32, String>,
    /// Set by `opa_abort` or a failing builtin, reported instead of the bare trap.
    error: Option<String>,
    policy: String,
}

/// A Rego module, checked for the exports the ABI needs.
pub(crate) struct RegoPre {
    module: Module,
    mode: ExecutionMode,
    what: String,
}

/// `opa_eval(reserved, entrypoint, data, input, input_len, heap, format) -> cstr`.
type OpaEval = TypedFunc<(i32, i32, i32, i32, i32, i32, i32), i32>;

struct Exports {
    malloc: TypedFunc<i32, i32>,
    json_parse: TypedFunc<(i32, i32), i32>,
    json_dump: TypedFunc<i32, i32>,
    heap_get: TypedFunc<(), i32>,
    heap_set: TypedFunc<i32, ()>,
    eval: TypedFunc<i32, i32>,
    ctx_new: TypedFunc<(), i32>,
    ctx_set_input: TypedFunc<(i32, i32), ()>,
    ctx_set_data: TypedFunc<(i32, i32), ()>,
    ctx_set_entrypoint: TypedFunc<(i32, i32), ()>,
    ctx_get_result: TypedFunc<i32, i32>,
    opa_eval: Option<OpaEval>,
}

/// A live Rego instance.
pub(crate) struct RegoInstance {
    store: Store<RegoState>,
    exports: Exports,
    memory: Memory,
    base_heap: i32,
    /// The data last loaded: its bytes, its address and the heap pointer after it.
    cached_data: Option<(Vec<u8>, i32, i32)>,
    /// The settings last seen and what this mode derives from them alone (OPA: the `data`
    /// document; Gatekeeper: the `parameters`), so a session whose settings do not change
    /// serialises them once rather than per evaluation.
    settings_bytes: Option<(Value, Arc<[u8]>)>,
    deadline: CallDeadline,
    poisoned: bool,
    /// Use the classic context API even when `opa_eval` is exported (tests compare both).
    pub(crate) force_classic: bool,
}

/// The NUL-terminated string at `addr` in `data`, without the NUL.
fn cstr_at(data: &[u8], addr: i32) -> Result<&[u8], String> {
    let start = addr as u32 as usize;
    let tail = data
        .get(start..)
        .ok_or_else(|| format!("address {start} is outside the module's memory"))?;
    let end = tail
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| format!("string at {start} is not NUL-terminated"))?;
    Ok(tail.get(..end).unwrap_or_default())
}

fn read_cstr(
    memory: &Memory,
    store: impl wasmtime::AsContext,
    addr: i32,
) -> Result<Vec<u8>, String> {
    cstr_at(memory.data(&store), addr).map(<[u8]>::to_vec)
}

/// The length of the JSON document made of `pieces`, as the ABI's `i32`.
fn json_len<'p>(pieces: impl Iterator<Item = &'p [u8]>) -> Result<i32, EvalError> {
    i32::try_from(pieces.map(<[u8]>::len).sum::<usize>())
        .map_err(|_| EvalError::Protocol("JSON document larger than 2 GiB".into()))
}

/// Writes the `len` bytes of `pieces` at `addr` in the module's memory, growing it first when
/// it is too small.
fn write_json<'p>(
    memory: &Memory,
    store: &mut Store<RegoState>,
    addr: i32,
    len: i32,
    pieces: impl Iterator<Item = &'p [u8]>,
    limits: &Limits,
) -> Result<(), EvalError> {
    let (at, len) = (addr as u32 as usize, len as u32 as usize);
    let outside = || {
        EvalError::Protocol(format!(
            "the Rego module's heap ({len} bytes at {at}) is outside its memory"
        ))
    };
    let end = at.checked_add(len).ok_or_else(outside)?;
    let size = memory.data_size(&*store);
    if end > size {
        let pages = (end - size).div_ceil(65536) as u64;
        memory
            .grow(&mut *store, pages)
            .map_err(|e| classify(e, limits, "growing the Rego module's memory"))?;
    }
    let mut dst = memory
        .data_mut(&mut *store)
        .get_mut(at..end)
        .ok_or_else(outside)?;
    for piece in pieces {
        let (head, tail) = dst.split_at_mut_checked(piece.len()).ok_or_else(outside)?;
        head.copy_from_slice(piece);
        dst = tail;
    }
    Ok(())
}

/// `value[key]`, making `value` an object first when it is not one (serde_json's `IndexMut`
/// without its panic).
fn slot<'a>(value: &'a mut Value, key: &str) -> &'a mut Value {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(map) => map.entry(key.to_string()).or_insert(Value::Null),
        other => other,
    }
}

fn builtin_call(
    caller: &mut Caller<'_, RegoState>,
    id: i32,
    args: &[i32],
) -> wasmtime::Result<i32> {
    let name = caller
        .data()
        .builtins
        .get(&id)
        .cloned()
        .unwrap_or_else(|| format!("#{id}"));
    let fail = |caller: &mut Caller<'_, RegoState>, message: String| -> wasmtime::Result<i32> {
        caller.data_mut().error = Some(message.clone());
        Err(wasmtime::Error::msg(message))
    };
    let Some(memory) = caller.data().memory else {
        return fail(caller, "the Rego module has no memory".into());
    };
    let func = |caller: &mut Caller<'_, RegoState>, n: &str| -> wasmtime::Result<Func> {
        match caller.get_export(n) {
            Some(Extern::Func(f)) => Ok(f),
            _ => wasmtime::bail!("the Rego module does not export {n}"),
        }
    };
    let json_dump = func(caller, "opa_json_dump")?.typed::<i32, i32>(&*caller)?;
    let malloc = func(caller, "opa_malloc")?.typed::<i32, i32>(&*caller)?;
    let json_parse = func(caller, "opa_json_parse")?.typed::<(i32, i32), i32>(&*caller)?;
    let mut values = Vec::with_capacity(args.len());
    for &arg in args {
        let ptr = json_dump.call(&mut *caller, arg)?;
        let text = match read_cstr(&memory, &*caller, ptr) {
            Ok(t) => t,
            Err(e) => return fail(caller, format!("Rego builtin {name}: {e}")),
        };
        match serde_json::from_slice::<Value>(&text) {
            Ok(v) => values.push(v),
            Err(e) => {
                return fail(
                    caller,
                    format!("Rego builtin {name}: argument is not JSON: {e}"),
                );
            }
        }
    }
    let result = match builtins::call(&name, &values) {
        Ok(v) => v,
        Err(builtins::BuiltinError::Unimplemented) => {
            return fail(
                caller,
                format!(
                    "the policy calls the Rego builtin `{name}`, which hoist does not implement (implemented: {})",
                    builtins::IMPLEMENTED.join(", ")
                ),
            );
        }
        Err(builtins::BuiltinError::Failed(e)) => {
            return fail(caller, format!("Rego builtin {name}: {e}"));
        }
    };
    let bytes = serde_json::to_vec(&result).unwrap_or_default();
    let len =
        i32::try_from(bytes.len()).map_err(|_| wasmtime::Error::msg("builtin result too large"))?;
    let addr = malloc.call(&mut *caller, len)?;
    let start = addr as u32 as usize;
    match memory
        .data_mut(&mut *caller)
        .get_mut(start..start + bytes.len())
    {
        Some(dst) => dst.copy_from_slice(&bytes),
        None => {
            return fail(
                caller,
                format!("Rego builtin {name}: opa_malloc returned memory out of bounds"),
            );
        }
    }
    let value = json_parse.call(&mut *caller, (addr, len))?;
    if value == 0 {
        return fail(
            caller,
            format!("Rego builtin {name}: the module could not parse the result"),
        );
    }
    Ok(value)
}

impl RegoPre {
    pub(crate) fn new(
        _engine: &wasmtime::Engine,
        module: &Module,
        mode: ExecutionMode,
        what: &str,
    ) -> Result<Self, EvalError> {
        for needed in [
            "opa_malloc",
            "opa_json_parse",
            "opa_json_dump",
            "opa_heap_ptr_get",
            "opa_heap_ptr_set",
            "eval",
            "opa_eval_ctx_new",
            "opa_eval_ctx_set_input",
            "opa_eval_ctx_set_data",
            "opa_eval_ctx_set_entrypoint",
            "opa_eval_ctx_get_result",
            "builtins",
            "entrypoints",
        ] {
            if module.get_export(needed).is_none() {
                return Err(EvalError::Setup(format!(
                    "{what} is not a complete OPA Wasm module: it does not export {needed} (build it with `opa build -t wasm -e <entrypoint>`)"
                )));
            }
        }
        Ok(RegoPre {
            module: module.clone(),
            mode,
            what: what.to_string(),
        })
    }

    pub(crate) fn engine(&self) -> &wasmtime::Engine {
        self.module.engine()
    }

    pub(crate) fn mode(&self) -> ExecutionMode {
        self.mode
    }

    pub(crate) fn instantiate(&self, limits: &Limits) -> Result<RegoInstance, EvalError> {
        let mut store = Store::new(
            self.engine(),
            RegoState {
                limiter: MemoryLimiter::new(limits.max_memory_bytes),
                memory: None,
                builtins: HashMap::new(),
                error: None,
                policy: self.what.clone(),
            },
        );
        store.limiter(|s| &mut s.limiter);
        let deadline = CallDeadline::install(&mut store);
        deadline.arm_at(&mut store, limits.deadline());
        let mut imports = Vec::new();
        let mut memory = None;
        for import in self.module.imports() {
            let unknown = || {
                EvalError::Setup(format!(
                    "{} imports {}.{}, which is not part of OPA's Wasm ABI",
                    self.what,
                    import.module(),
                    import.name()
                ))
            };
            if import.module() != "env" {
                return Err(unknown());
            }
            let ext: Extern = match (import.name(), import.ty()) {
                ("memory", ExternType::Memory(ty)) => {
                    let pages = ty.minimum().max(INITIAL_PAGES);
                    let m = Memory::new(&mut store, MemoryType::new(pages as u32, None))
                        .map_err(|e| classify(e, limits, "creating the Rego module's memory"))?;
                    store.data_mut().memory = Some(m);
                    memory = Some(m);
                    m.into()
                }
                ("opa_abort", _) => Func::wrap(
                    &mut store,
                    |mut caller: Caller<'_, RegoState>, addr: i32| -> wasmtime::Result<()> {
                        let message = match caller.data().memory {
                            Some(m) => read_cstr(&m, &caller, addr)
                                .map(|b| String::from_utf8_lossy(&b).into_owned())
                                .unwrap_or_else(|e| e),
                            None => "no memory".into(),
                        };
                        let message = format!("the Rego policy aborted: {message}");
                        caller.data_mut().error = Some(message.clone());
                        Err(wasmtime::Error::msg(message))
                    },
                )
                .into(),
                ("opa_println", _) => {
                    Func::wrap(&mut store, |caller: Caller<'_, RegoState>, addr: i32| {
                        if let Some(m) = caller.data().memory
                            && let Ok(b) = read_cstr(&m, &caller, addr)
                        {
                            tracing::info!(
                                "policy {}: {}",
                                caller.data().policy,
                                String::from_utf8_lossy(&b)
                            );
                        }
                    })
                    .into()
                }
                (name, ExternType::Func(ty)) if name.starts_with("opa_builtin") => {
                    let arity = ty.params().len().saturating_sub(2);
                    if ty.params().any(|p| !matches!(p, ValType::I32)) || ty.results().len() != 1 {
                        return Err(unknown());
                    }
                    Func::new(
                        &mut store,
                        ty.clone(),
                        move |mut caller, params, results| {
                            let id = params.first().and_then(Val::i32).unwrap_or(-1);
                            let args: Vec<i32> = params
                                .iter()
                                .skip(2)
                                .take(arity)
                                .map(|v| v.i32().unwrap_or(0))
                                .collect();
                            let addr = builtin_call(&mut caller, id, &args)?;
                            match results.first_mut() {
                                Some(slot) => *slot = Val::I32(addr),
                                None => wasmtime::bail!(
                                    "the Rego module declared builtin {id} without a result"
                                ),
                            }
                            Ok(())
                        },
                    )
                    .into()
                }
                _ => return Err(unknown()),
            };
            imports.push(ext);
        }
        let instance = Instance::new(&mut store, &self.module, &imports)
            .map_err(|e| classify(e, limits, "instantiating the Rego module"))?;
        let memory = match memory {
            Some(m) => m,
            None => match instance.get_export(&mut store, "memory") {
                Some(Extern::Memory(m)) => {
                    store.data_mut().memory = Some(m);
                    m
                }
                _ => return Err(EvalError::Setup(format!("{} has no memory", self.what))),
            },
        };
        let setup = |e: wasmtime::Error| EvalError::Setup(format!("{}: {e:#}", self.what));
        let exports = Exports {
            malloc: instance
                .get_typed_func(&mut store, "opa_malloc")
                .map_err(setup)?,
            json_parse: instance
                .get_typed_func(&mut store, "opa_json_parse")
                .map_err(setup)?,
            json_dump: instance
                .get_typed_func(&mut store, "opa_json_dump")
                .map_err(setup)?,
            heap_get: instance
                .get_typed_func(&mut store, "opa_heap_ptr_get")
                .map_err(setup)?,
            heap_set: instance
                .get_typed_func(&mut store, "opa_heap_ptr_set")
                .map_err(setup)?,
            eval: instance.get_typed_func(&mut store, "eval").map_err(setup)?,
            ctx_new: instance
                .get_typed_func(&mut store, "opa_eval_ctx_new")
                .map_err(setup)?,
            ctx_set_input: instance
                .get_typed_func(&mut store, "opa_eval_ctx_set_input")
                .map_err(setup)?,
            ctx_set_data: instance
                .get_typed_func(&mut store, "opa_eval_ctx_set_data")
                .map_err(setup)?,
            ctx_set_entrypoint: instance
                .get_typed_func(&mut store, "opa_eval_ctx_set_entrypoint")
                .map_err(setup)?,
            ctx_get_result: instance
                .get_typed_func(&mut store, "opa_eval_ctx_get_result")
                .map_err(setup)?,
            opa_eval: instance.get_typed_func(&mut store, "opa_eval").ok(),
        };
        let builtins_fn: TypedFunc<(), i32> = instance
            .get_typed_func(&mut store, "builtins")
            .map_err(setup)?;
        let entrypoints_fn: TypedFunc<(), i32> = instance
            .get_typed_func(&mut store, "entrypoints")
            .map_err(setup)?;
        let mut rego = RegoInstance {
            store,
            exports,
            memory,
            base_heap: 0,
            cached_data: None,
            settings_bytes: None,
            deadline,
            poisoned: false,
            force_classic: false,
        };
        let dump = |rego: &mut RegoInstance,
                    f: TypedFunc<(), i32>,
                    what: &str|
         -> Result<Value, EvalError> {
            let addr = f
                .call(&mut rego.store, ())
                .map_err(|e| classify(e, limits, what))?;
            rego.dump(addr, limits)
        };
        let names = dump(&mut rego, builtins_fn, "reading builtins()")?;
        let entrypoints = dump(&mut rego, entrypoints_fn, "reading entrypoints()")?;
        if entrypoints.as_object().is_none_or(Map::is_empty) {
            return Err(EvalError::Setup(format!(
                "{} has no Rego entrypoint: build it with `opa build -t wasm -e <package/rule>`",
                self.what
            )));
        }
        if entrypoints.as_object().is_some_and(|m| m.len() > 1) {
            tracing::warn!(
                "{} has {} entrypoints; Kubewarden evaluates only entrypoint 0",
                self.what,
                entrypoints.as_object().map_or(0, Map::len)
            );
        }
        if let Value::Object(map) = names {
            for (name, id) in map {
                if !builtins::IMPLEMENTED.contains(&name.as_str()) {
                    tracing::warn!(
                        "{} may call the Rego builtin `{name}`, which hoist does not implement: such an evaluation fails",
                        self.what
                    );
                }
                if let Some(id) = id.as_i64().and_then(|i| i32::try_from(i).ok()) {
                    rego.store.data_mut().builtins.insert(id, name);
                }
            }
        }
        rego.base_heap = rego
            .exports
            .heap_get
            .call(&mut rego.store, ())
            .map_err(|e| classify(e, limits, "opa_heap_ptr_get"))?;
        Ok(rego)
    }
}

impl RegoInstance {
    pub(crate) fn poisoned(&self) -> bool {
        self.poisoned
    }

    fn fail(&mut self, error: wasmtime::Error, limits: &Limits, what: &str) -> EvalError {
        self.poisoned = true;
        self.cached_data = None;
        match self.store.data_mut().error.take() {
            Some(message)
                if error
                    .downcast_ref::<hoist_runtime::guest::TimeoutHit>()
                    .is_none() =>
            {
                EvalError::Trap(message)
            }
            _ => classify(error, limits, what),
        }
    }

    fn dump(&mut self, addr: i32, limits: &Limits) -> Result<Value, EvalError> {
        let ptr = self
            .exports
            .json_dump
            .call(&mut self.store, addr)
            .map_err(|e| classify(e, limits, "opa_json_dump"))?;
        let bytes = read_cstr(&self.memory, &self.store, ptr).map_err(EvalError::Protocol)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            EvalError::Protocol(format!(
                "the Rego module dumped invalid JSON ({e}): {}",
                preview(&bytes)
            ))
        })
    }

    /// Copies JSON (the concatenation of `pieces`) into the module and parses it there; the
    /// value's address.
    fn load_json<'p>(
        &mut self,
        pieces: impl Iterator<Item = &'p [u8]> + Clone,
        limits: &Limits,
    ) -> Result<i32, EvalError> {
        let len = json_len(pieces.clone())?;
        let addr = self
            .exports
            .malloc
            .call(&mut self.store, len)
            .map_err(|e| classify(e, limits, "opa_malloc"))?;
        write_json(&self.memory, &mut self.store, addr, len, pieces, limits)?;
        let value = self
            .exports
            .json_parse
            .call(&mut self.store, (addr, len))
            .map_err(|e| classify(e, limits, "opa_json_parse"))?;
        if value == 0 {
            return Err(EvalError::Protocol(
                "the Rego module could not parse a JSON document".into(),
            ));
        }
        Ok(value)
    }

    /// Evaluates entrypoint 0 with `input` (the JSON object of these serialised members) and
    /// `data`; `read` gets the result set's JSON where the module wrote it, so it is parsed
    /// without a copy.
    pub(crate) fn evaluate<R>(
        &mut self,
        input: &JsonMembers,
        data: &[u8],
        limits: &Limits,
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, EvalError> {
        self.deadline.arm_at(&mut self.store, limits.deadline());
        self.store.data_mut().error = None;
        let cached = match &self.cached_data {
            Some((bytes, addr, heap)) if bytes.as_slice() == data => Some((*addr, *heap)),
            _ => None,
        };
        let (data_addr, heap_after_data) = match cached {
            Some(hit) => hit,
            None => {
                self.cached_data = None;
                let base = self.base_heap;
                if let Err(e) = self.exports.heap_set.call(&mut self.store, base) {
                    return Err(self.fail(e, limits, "opa_heap_ptr_set"));
                }
                let addr = self.load_json(std::iter::once(data), limits)?;
                let heap = match self.exports.heap_get.call(&mut self.store, ()) {
                    Ok(h) => h,
                    Err(e) => return Err(self.fail(e, limits, "opa_heap_ptr_get")),
                };
                self.cached_data = Some((data.to_vec(), addr, heap));
                (addr, heap)
            }
        };
        let input = json_object_pieces(input);
        let result_ptr =
            if let (Some(opa_eval), false) = (&self.exports.opa_eval, self.force_classic) {
                // `opa_eval` takes the heap pointer as an argument and resets the heap itself, so
                // the input is written right after `data` and no `opa_heap_ptr_set` call is needed.
                let len = json_len(input.clone())?;
                write_json(
                    &self.memory,
                    &mut self.store,
                    heap_after_data,
                    len,
                    input,
                    limits,
                )?;
                let args = (
                    0,
                    0,
                    data_addr,
                    heap_after_data,
                    len,
                    heap_after_data + len,
                    0,
                );
                match opa_eval.call(&mut self.store, args) {
                    Ok(ptr) => ptr,
                    Err(e) => return Err(self.fail(e, limits, "evaluating the policy (opa_eval)")),
                }
            } else {
                if let Err(e) = self.exports.heap_set.call(&mut self.store, heap_after_data) {
                    return Err(self.fail(e, limits, "opa_heap_ptr_set"));
                }
                let input_addr = self.load_json(input, limits)?;
                let e = &self.exports;
                let store = &mut self.store;
                let mut run = || -> wasmtime::Result<i32> {
                    let ctx = e.ctx_new.call(&mut *store, ())?;
                    e.ctx_set_input.call(&mut *store, (ctx, input_addr))?;
                    e.ctx_set_data.call(&mut *store, (ctx, data_addr))?;
                    e.ctx_set_entrypoint.call(&mut *store, (ctx, 0))?;
                    e.eval.call(&mut *store, ctx)?;
                    let result = e.ctx_get_result.call(&mut *store, ctx)?;
                    e.json_dump.call(&mut *store, result)
                };
                match run() {
                    Ok(ptr) => ptr,
                    Err(e) => return Err(self.fail(e, limits, "evaluating the policy (eval)")),
                }
            };
        let memory = self.memory.data(&self.store);
        let bytes = cstr_at(memory, result_ptr).map_err(EvalError::Protocol)?;
        Ok(read(bytes))
    }

    /// The bytes this mode derives from the settings alone (see `settings_bytes`).
    fn settings_bytes(&mut self, mode: ExecutionMode, settings: &Value) -> Arc<[u8]> {
        if let Some((seen, bytes)) = &self.settings_bytes
            && seen == settings
        {
            return bytes.clone();
        }
        let bytes: Arc<[u8]> = if mode == ExecutionMode::Opa {
            match settings {
                Value::Object(_) => serde_json::to_vec(settings),
                _ => Ok(b"{}".to_vec()),
            }
        } else {
            serde_json::to_vec(settings)
        }
        .unwrap_or_default()
        .into();
        self.settings_bytes = Some((settings.clone(), bytes.clone()));
        bytes
    }
}

/// Builds the Kubernetes context for context-aware Rego policies (kwctl's requests, in order).
fn kubernetes_context(
    mode: ExecutionMode,
    host: &HostCapabilities,
) -> Result<Option<Value>, String> {
    if host.granted.is_empty() {
        return Ok(None);
    }
    let mut lists = Vec::new();
    for resource in &host.granted {
        let bytes = host.backend.call(&CapabilityRequest::list_all(
            &resource.api_version,
            &resource.kind,
            None,
            None,
        ))?;
        let list: Value = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "the list of {}/{} is not JSON: {e}",
                resource.api_version, resource.kind
            )
        })?;
        let items = match list.get("items") {
            Some(Value::Array(items)) => items.clone(),
            _ => Vec::new(),
        };
        lists.push((resource.clone(), items));
    }
    let name_of = |obj: &Value| -> Option<String> {
        obj.pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let ns_of = |obj: &Value| -> Option<String> {
        obj.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    match mode {
        ExecutionMode::Opa => {
            let mut plurals = Vec::new();
            for (resource, _) in &lists {
                let bytes = host.backend.call(&CapabilityRequest::plural_name(
                    &resource.api_version,
                    &resource.kind,
                ))?;
                let plural: String = serde_json::from_slice(&bytes).map_err(|e| {
                    format!(
                        "the plural name of {}/{} is not a JSON string: {e}",
                        resource.api_version, resource.kind
                    )
                })?;
                plurals.push(plural);
            }
            let mut inventory = Map::new();
            for ((_, items), plural) in lists.iter().zip(plurals) {
                let entry = inventory.entry(plural).or_insert_with(|| json!({}));
                for obj in items {
                    let name = name_of(obj).ok_or("an object in the inventory has no name")?;
                    match ns_of(obj) {
                        Some(ns) => {
                            *slot(slot(entry, &ns), &name) = obj.clone();
                        }
                        None => *slot(entry, &name) = obj.clone(),
                    }
                }
            }
            Ok(Some(Value::Object(inventory)))
        }
        _ => {
            let mut cluster = json!({});
            let mut namespaced = json!({});
            for (resource, items) in &lists {
                for obj in items {
                    let name = name_of(obj).ok_or("an object in the inventory has no name")?;
                    let (gv, kind) = (&resource.api_version, &resource.kind);
                    match ns_of(obj) {
                        Some(ns) => {
                            *slot(slot(slot(slot(&mut namespaced, &ns), gv), kind), &name) =
                                obj.clone()
                        }
                        None => *slot(slot(slot(&mut cluster, gv), kind), &name) = obj.clone(),
                    }
                }
            }
            Ok(Some(
                json!({"inventory": {"cluster": cluster, "namespace": namespaced}}),
            ))
        }
    }
}

/// Evaluates a request in OPA or Gatekeeper mode, as Kubewarden does.
pub(crate) fn validate(
    instance: &mut RegoInstance,
    mode: ExecutionMode,
    request: &ValidateRequest,
    settings: &Value,
    host: &HostCapabilities,
    limits: &Limits,
) -> AdmissionResponse {
    let uid = request.uid().to_string();
    if mode == ExecutionMode::Gatekeeper && request.is_raw() {
        return AdmissionResponse::internal_error(
            &uid,
            "Gatekeeper does not support raw validation requests",
        );
    }
    let context = match kubernetes_context(mode, host) {
        Ok(c) => c,
        Err(e) => {
            return AdmissionResponse::internal_error(
                &uid,
                format!("cannot build the Kubernetes context: {e}"),
            );
        }
    };
    let settings_bytes = instance.settings_bytes(mode, settings);
    // The input document's members, already serialised: the request's JSON (written once when
    // it was read) and the settings' (once per session). Cloning the request into a `json!`
    // tree first cost as much as the policy's own evaluation of a small request, and
    // serialising it again per evaluation was still 8% of one.
    let review = request.json();
    let (opa_input, gatekeeper_input);
    let (input, data): (&JsonMembers, Cow<[u8]>) = if mode == ExecutionMode::Opa {
        let data = match context {
            None => Cow::Borrowed(&settings_bytes[..]),
            Some(ctx) => {
                let mut data = settings.as_object().cloned().unwrap_or_default();
                if data.insert("kubernetes".into(), ctx).is_some() {
                    tracing::warn!(
                        "the policy's setting `kubernetes` was replaced by the Kubernetes context"
                    );
                }
                Cow::Owned(serde_json::to_vec(&data).unwrap_or_default())
            }
        };
        opa_input = [("request", review)];
        (&opa_input, data)
    } else {
        let data = match context {
            Some(ctx) => Cow::Owned(serde_json::to_vec(&ctx).unwrap_or_default()),
            None => Cow::Borrowed(&b"{}"[..]),
        };
        gatekeeper_input = [("parameters", &settings_bytes[..]), ("review", review)];
        (&gatekeeper_input, data)
    };
    match instance.evaluate(input, &data, limits, |bytes| {
        interpret_bytes(mode, &uid, bytes)
    }) {
        Ok(response) => response,
        Err(e @ EvalError::Timeout(_)) => AdmissionResponse::reject(&uid, e.to_string(), Some(500)),
        Err(e) => AdmissionResponse::internal_error(&uid, e),
    }
}

/// Reads a result set's JSON as [`interpret`] does. The usual shapes (OPA: a `response`;
/// Gatekeeper: a list of violations) are read straight from the bytes, without building a
/// `serde_json::Value` of the whole result first (that tree was a tenth of a small policy's
/// evaluation); anything else is read as a `Value` by [`interpret`], which also words the
/// errors.
pub(crate) fn interpret_bytes(mode: ExecutionMode, uid: &str, bytes: &[u8]) -> AdmissionResponse {
    if let Some(response) = interpret_usual(mode, uid, bytes) {
        return response;
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(result) => interpret(mode, uid, &result),
        Err(e) => AdmissionResponse::internal_error(
            uid,
            format!("the Rego result is not JSON ({e}): {}", preview(bytes)),
        ),
    }
}

/// Objects as maps of raw members: deserialising a map refuses an array, where a struct would
/// take one as its fields in order, which `interpret` does not.
type RawObject<'a> = HashMap<String, &'a serde_json::value::RawValue>;

/// The fast path of [`interpret_bytes`]: `None` when the result is not of the usual shape.
fn interpret_usual(mode: ExecutionMode, uid: &str, bytes: &[u8]) -> Option<AdmissionResponse> {
    let entries: Vec<RawObject> = serde_json::from_slice(bytes).ok()?;
    let Some(first) = entries.first() else {
        // No result at all: Gatekeeper's "no violations"; OPA's "cannot interpret".
        return (mode == ExecutionMode::Gatekeeper).then(|| allowed(uid));
    };
    let result = first.get("result")?.get();
    if mode == ExecutionMode::Opa {
        let result: RawObject = serde_json::from_str(result).ok()?;
        let mut response: AdmissionResponse =
            serde_json::from_str(result.get("response")?.get()).ok()?;
        response.uid = uid.to_string();
        return Some(response);
    }
    let violations: Vec<RawObject> = serde_json::from_str(result).ok()?;
    if violations.is_empty() {
        return Some(allowed(uid));
    }
    // As `interpret`: a `msg` that is not a string is left out.
    let message = violations
        .iter()
        .filter_map(|v| serde_json::from_str::<String>(v.get("msg")?.get()).ok())
        .collect::<Vec<_>>()
        .join(", ");
    Some(violated(uid, message))
}

/// Gatekeeper's answer when no constraint is violated (no result, or no violations).
fn allowed(uid: &str) -> AdmissionResponse {
    AdmissionResponse {
        uid: uid.to_string(),
        allowed: true,
        ..Default::default()
    }
}

/// Gatekeeper's answer to violations: their messages joined, no code (as kwctl).
fn violated(uid: &str, message: String) -> AdmissionResponse {
    AdmissionResponse {
        uid: uid.to_string(),
        allowed: false,
        status: Some(AdmissionStatus {
            message: Some(message),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Reads a result set as kwctl does.
pub(crate) fn interpret(mode: ExecutionMode, uid: &str, result: &Value) -> AdmissionResponse {
    let first = result.get(0).and_then(|r| r.get("result"));
    if mode == ExecutionMode::Opa {
        return match first.and_then(|r| r.get("response")) {
            Some(response) => match serde_json::from_value::<AdmissionResponse>(response.clone()) {
                Ok(mut r) => {
                    r.uid = uid.to_string();
                    r
                }
                Err(e) => AdmissionResponse::internal_error(uid, e),
            },
            None => AdmissionResponse::internal_error(uid, "cannot interpret OPA policy result"),
        };
    }
    // Gatekeeper: a list of violations; none means allowed. An unusable result is a rejection
    // here (kwctl accepts it, which lets a broken policy wave everything through).
    let violations = match first {
        Some(Value::Array(items)) => items,
        None if result.as_array().is_some_and(Vec::is_empty) => {
            return allowed(uid);
        }
        _ => {
            return AdmissionResponse::internal_error(
                uid,
                format!(
                    "cannot interpret the Gatekeeper result (expected a list of violations): {result}"
                ),
            );
        }
    };
    if violations.is_empty() {
        return allowed(uid);
    }
    let message = violations
        .iter()
        .filter_map(|v| v.get("msg").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join(", ");
    violated(uid, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path reads the usual shapes and leaves everything else to the `Value` path,
    /// so both always answer alike (the fuzz target `opa_bridge` checks this on any JSON).
    #[test]
    fn results_read_from_bytes_agree_with_the_value_path() {
        let results = [
            r#"[{"result":{"response":{"uid":"x","allowed":false,"status":{"message":"m","code":403}}}}]"#,
            r#"[{"result":{"response":{"allowed":true},"other":1}},{"result":2}]"#,
            r#"[]"#,
            r#"[{"result":[]}]"#,
            r#"[{"result":[{"msg":"a"},{"msg":7},{"details":{}},{"msg":"b"}]}]"#,
            r#"[[{"result":[]}]]"#,
            r#"[{"result":[["msg"]]}]"#,
            r#"[{"result":{"response":[]}}]"#,
            r#"[{"result":{"response":{"uid":1}}}]"#,
            r#"{"result":1}"#,
        ];
        for text in results {
            let value: Value = serde_json::from_str(text).unwrap();
            for mode in [ExecutionMode::Opa, ExecutionMode::Gatekeeper] {
                assert_eq!(
                    interpret_bytes(mode, "u", text.as_bytes()),
                    interpret(mode, "u", &value),
                    "{mode:?}: {text}"
                );
            }
        }
        let r = interpret_bytes(ExecutionMode::Opa, "u", b"[{\"result\"");
        let message = r.status.and_then(|s| s.message).unwrap_or_default();
        assert!(message.contains("not JSON"), "{message}");
    }

    #[test]
    fn gatekeeper_results_are_read_strictly() {
        let r = interpret(ExecutionMode::Gatekeeper, "u", &json!([{"result": []}]));
        assert!(r.allowed);
        let r = interpret(
            ExecutionMode::Gatekeeper,
            "u",
            &json!([{"result": [{"msg": "a"}, {"msg": "b"}]}]),
        );
        assert!(!r.allowed);
        assert_eq!(r.status.unwrap().message.as_deref(), Some("a, b"));
        let r = interpret(ExecutionMode::Gatekeeper, "u", &json!([{"result": 7}]));
        assert!(!r.allowed);
        let r = interpret(ExecutionMode::Gatekeeper, "u", &json!([]));
        assert!(r.allowed, "an undefined violation set has no violations");
    }

    #[test]
    fn opa_results_force_the_uid() {
        let r = interpret(
            ExecutionMode::Opa,
            "real",
            &json!([{"result": {"response": {"uid": "x", "allowed": false, "status": {"message": "no"}}}}]),
        );
        assert_eq!(r.uid, "real");
        assert!(!r.allowed);
        let r = interpret(ExecutionMode::Opa, "u", &json!([{"result": {}}]));
        assert!(
            r.status
                .unwrap()
                .message
                .unwrap()
                .contains("cannot interpret OPA policy result")
        );
    }
}
