//! The `gojs` imports (and `go`, their name before Go 1.21) and the host objects behind them.
//!
//! Rules that keep this correct where kpt's wasmtime path is not:
//! - linear memory is fetched fresh (`Memory::data*`) for every access and never held across
//!   a call into wasm, so `memory.grow` during a call cannot leave a stale view;
//! - after any operation that may run Go code (a call, an invoke, a `new`, a getter), the
//!   stack pointer is re-read through the `getsp` export before results are written.

use crate::value::{
    Builtin, Callable, Class, HeapFull, HeapMeter, JsStr, Obj, ObjKind, Value, Values, array_bytes,
};
use hoist_runtime::guest::MemoryLimitHit;
use hoist_runtime::guest::MemoryLimiter;
use rand::RngCore;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmtime::{Caller, Linker, Memory, TypedFunc};

/// Raised (as a trap) when the Go program exited during a nested call: the Go frames below
/// the host call are gone, so the whole stack unwinds back to the embedder.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the Go program exited with code {0}")]
pub struct GoExited(pub i32);

/// A guest error the host detected (bad pointer, bad ref, resume after exit).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct HostFault(pub String);

/// The guest wrote more than its output cap to stdout or stderr.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the function wrote more than {cap} bytes to {stream}")]
pub struct OutputCapHit {
    /// The cap in bytes.
    pub cap: usize,
    /// "stdout" or "stderr".
    pub stream: &'static str,
}

fn fault(msg: impl Into<String>) -> wasmtime::Error {
    wasmtime::Error::new(HostFault(msg.into()))
}

/// Per-instance state of the Go host.
pub struct GoState {
    pub(crate) values: Values,
    pub(crate) global: Obj,
    pub(crate) go: Obj,
    pub(crate) exited: Option<i32>,
    pub(crate) stdin: Vec<u8>,
    pub(crate) stdin_pos: usize,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) max_output: usize,
    pub(crate) stream_stderr: bool,
    pub(crate) timers: BTreeMap<i32, Instant>,
    pub(crate) next_timer: i32,
    pub(crate) started: Instant,
    pub(crate) time_origin_ns: u64,
    pub(crate) limiter: MemoryLimiter,
    /// The host memory the guest's arrays and typed arrays hold, capped at the same number of
    /// bytes as its linear memory.
    pub(crate) heap: std::rc::Rc<HeapMeter>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) mem: Option<Memory>,
    pub(crate) resume: Option<TypedFunc<(), ()>>,
    pub(crate) getsp: Option<TypedFunc<(), i32>>,
    /// How many `resume` calls are on the stack (re-entrancy depth).
    pub(crate) depth: u32,
    /// Reads of fd 0 wait for the embedder to complete them, as node's asynchronous `fs.read`
    /// does: Go returns to the host with an empty wasm stack while it waits.
    pub(crate) defer_stdin: bool,
    /// The reads of fd 0 waiting to be completed (in order), in `defer_stdin` mode.
    pub(crate) pending_reads: std::collections::VecDeque<PendingRead>,
}

/// A `fs.read(0, buf, off, len, null, callback)` the host has not completed yet.
pub(crate) struct PendingRead {
    /// The Uint8Array to fill.
    pub(crate) buf: Obj,
    /// Offset in `buf`.
    pub(crate) off: usize,
    /// Bytes wanted.
    pub(crate) len: usize,
    /// The callback, `(err, n)`.
    pub(crate) cb: Value,
}

/// Copies the next bytes of stdin into `buf[off..off+len]`, as `fs.read` of fd 0 does.
pub(crate) fn read_stdin(
    st: &mut GoState,
    buf: &Obj,
    off: usize,
    len: usize,
) -> Result<usize, Value> {
    let mut data = buf.borrow_mut();
    match &mut data.kind {
        ObjKind::Bytes(all) if off <= all.len() => {
            let dst = all.get_mut(off..).unwrap_or_default();
            let src = st.stdin.get(st.stdin_pos..).unwrap_or_default();
            let n = copy_prefix(dst.get_mut(..len.min(dst.len())).unwrap_or_default(), src);
            st.stdin_pos += n;
            Ok(n)
        }
        _ => Err(Value::Object(Obj::error(
            "RangeError",
            "offset out of range",
            Some("ERR_OUT_OF_RANGE"),
        ))),
    }
}

impl GoState {
    pub(crate) fn new(
        stdin: Vec<u8>,
        max_memory: u64,
        max_output: usize,
        stream_stderr: bool,
    ) -> GoState {
        let global = Obj::plain(vec![]);
        let go = Obj::plain(vec![]);
        populate_global(&global, &go);
        let values = Values::new(global.clone(), go.clone());
        let time_origin_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        GoState {
            values,
            global,
            go,
            exited: None,
            stdin,
            stdin_pos: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
            max_output,
            stream_stderr,
            timers: BTreeMap::new(),
            next_timer: 1,
            started: Instant::now(),
            time_origin_ns,
            limiter: MemoryLimiter::new(max_memory),
            heap: HeapMeter::new(usize::try_from(max_memory).unwrap_or(usize::MAX)),
            deadline: None,
            mem: None,
            resume: None,
            getsp: None,
            depth: 0,
            defer_stdin: false,
            pending_reads: std::collections::VecDeque::new(),
        }
    }

    /// Posts the event that calls the `js.FuncOf` function `id` when Go is next resumed, as
    /// `_makeFuncWrapper` does: `go._pendingEvent = {id, this, args}`. Go writes its return
    /// value into the event's `result`. The argument array is metered like the guest's own.
    pub(crate) fn post_event(&self, id: u32, this: Value, args: Vec<Value>) -> Obj {
        let args = Obj::metered(&self.heap, ObjKind::Array(args));
        let event = Obj::plain(vec![
            ("id", Value::Number(f64::from(id))),
            ("this", this),
            ("args", Value::Object(args)),
        ]);
        self.go.set("_pendingEvent", Value::Object(event.clone()));
        event
    }

    fn write_fd(&mut self, fd: i64, bytes: &[u8]) -> Result<(), wasmtime::Error> {
        let (buf, stream) = match fd {
            1 => (&mut self.stdout, "stdout"),
            2 => (&mut self.stderr, "stderr"),
            _ => return Ok(()),
        };
        if bytes.len() > self.max_output.saturating_sub(buf.len()) {
            return Err(wasmtime::Error::new(OutputCapHit {
                cap: self.max_output,
                stream,
            }));
        }
        buf.extend_from_slice(bytes);
        if fd == 2 && self.stream_stderr {
            use std::io::Write;
            let _ = std::io::stderr().lock().write_all(bytes);
        }
        Ok(())
    }
}

fn builtin(b: Builtin) -> Value {
    Value::Object(Obj::function(Callable::Builtin(b)))
}

fn class(c: Class) -> Value {
    Value::Object(Obj::function(Callable::Class(c)))
}

/// The global object: what Go's runtime, `syscall`, `os` and `time` look up at init.
fn populate_global(global: &Obj, go: &Obj) {
    global.set("Object", class(Class::Object));
    global.set("Array", class(Class::Array));
    global.set("Uint8Array", class(Class::Uint8Array));
    global.set("Error", class(Class::Error));
    global.set("Function", class(Class::Function));
    let date = Obj::function(Callable::Class(Class::Date));
    date.set("now", builtin(Builtin::DateNow));
    global.set("Date", Value::Object(date));
    global.set("globalThis", Value::Object(global.clone()));

    let constants = Obj::plain(vec![
        ("O_WRONLY", Value::Number(1.0)),
        ("O_RDWR", Value::Number(2.0)),
        ("O_CREAT", Value::Number(64.0)),
        ("O_TRUNC", Value::Number(512.0)),
        ("O_APPEND", Value::Number(1024.0)),
        ("O_EXCL", Value::Number(128.0)),
        ("O_DIRECTORY", Value::Number(65536.0)),
    ]);
    let fs = Obj::plain(vec![("constants", Value::Object(constants))]);
    fs.set("writeSync", builtin(Builtin::FsWriteSync));
    fs.set("write", builtin(Builtin::FsWrite));
    fs.set("read", builtin(Builtin::FsRead));
    fs.set("fsync", builtin(Builtin::FsOk));
    for name in [
        "chmod",
        "chown",
        "close",
        "fchmod",
        "fchown",
        "fstat",
        "ftruncate",
        "lchown",
        "link",
        "lstat",
        "mkdir",
        "open",
        "readdir",
        "readlink",
        "rename",
        "rmdir",
        "stat",
        "symlink",
        "truncate",
        "unlink",
        "utimes",
    ] {
        fs.set(name, builtin(Builtin::FsEnosys));
    }
    global.set("fs", Value::Object(fs));

    let process = Obj::plain(vec![
        ("pid", Value::Number(1.0)),
        ("ppid", Value::Number(0.0)),
    ]);
    for name in ["getuid", "getgid", "geteuid", "getegid"] {
        process.set(name, builtin(Builtin::ProcessMinusOne));
    }
    process.set("cwd", builtin(Builtin::ProcessCwd));
    for name in ["getgroups", "umask", "chdir"] {
        process.set(name, builtin(Builtin::ProcessEnosys));
    }
    global.set("process", Value::Object(process));

    let crypto = Obj::plain(vec![("getRandomValues", builtin(Builtin::GetRandomValues))]);
    global.set("crypto", Value::Object(crypto));
    let performance = Obj::plain(vec![("now", builtin(Builtin::PerformanceNow))]);
    global.set("performance", Value::Object(performance));
    let console = Obj::plain(vec![
        ("log", builtin(Builtin::ConsoleLog)),
        ("error", builtin(Builtin::ConsoleLog)),
        ("warn", builtin(Builtin::ConsoleLog)),
    ]);
    global.set("console", Value::Object(console));
    let path = Obj::plain(vec![("resolve", builtin(Builtin::PathResolve))]);
    global.set("path", Value::Object(path));

    go.set("_makeFuncWrapper", builtin(Builtin::MakeFuncWrapper));
    go.set("_pendingEvent", Value::Null);
}

// ---- memory access ---------------------------------------------------------------------------

fn memory(caller: &Caller<'_, GoState>) -> Result<Memory, wasmtime::Error> {
    caller
        .data()
        .mem
        .ok_or_else(|| fault("the module has no exported memory `mem`"))
}

fn range(data: &[u8], at: u64, len: u64) -> Result<std::ops::Range<usize>, wasmtime::Error> {
    let start = usize::try_from(at).map_err(|_| fault(format!("address {at} out of range")))?;
    let len = usize::try_from(len).map_err(|_| fault(format!("length {len} out of range")))?;
    let end = start
        .checked_add(len)
        .filter(|end| *end <= data.len())
        .ok_or_else(|| {
            fault(format!(
                "the Go program passed memory range {start}+{len}, outside its {} bytes of memory",
                data.len()
            ))
        })?;
    Ok(start..end)
}

/// `len` bytes of guest memory at `at` (checked against the memory's size).
fn bytes(data: &[u8], at: u64, len: u64) -> Result<&[u8], wasmtime::Error> {
    let r = range(data, at, len)?;
    data.get(r)
        .ok_or_else(|| fault(format!("memory range {at}+{len} out of bounds")))
}

/// [`bytes`], writable.
fn bytes_mut(data: &mut [u8], at: u64, len: u64) -> Result<&mut [u8], wasmtime::Error> {
    let r = range(data, at, len)?;
    data.get_mut(r)
        .ok_or_else(|| fault(format!("memory range {at}+{len} out of bounds")))
}

/// Copies as much of `src` as fits into `dst`; returns how many bytes.
fn copy_prefix(dst: &mut [u8], src: &[u8]) -> usize {
    dst.iter_mut().zip(src).map(|(d, s)| *d = *s).count()
}

fn rd<const N: usize>(data: &[u8], at: u64) -> Result<[u8; N], wasmtime::Error> {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes(data, at, N as u64)?);
    Ok(out)
}

fn rd_u64(data: &[u8], at: u64) -> Result<u64, wasmtime::Error> {
    Ok(u64::from_le_bytes(rd::<8>(data, at)?))
}

fn rd_i64(data: &[u8], at: u64) -> Result<i64, wasmtime::Error> {
    Ok(i64::from_le_bytes(rd::<8>(data, at)?))
}

fn rd_i32(data: &[u8], at: u64) -> Result<i32, wasmtime::Error> {
    Ok(i32::from_le_bytes(rd::<4>(data, at)?))
}

fn wr(data: &mut [u8], at: u64, src: &[u8]) -> Result<(), wasmtime::Error> {
    bytes_mut(data, at, src.len() as u64)?.copy_from_slice(src);
    Ok(())
}

fn rd_bytes(data: &[u8], at: u64) -> Result<Vec<u8>, wasmtime::Error> {
    let ptr = rd_u64(data, at)?;
    let len = rd_u64(data, at + 8)?;
    Ok(bytes(data, ptr, len)?.to_vec())
}

fn rd_string(data: &[u8], at: u64) -> Result<String, wasmtime::Error> {
    let ptr = rd_u64(data, at)?;
    let len = rd_u64(data, at + 8)?;
    Ok(String::from_utf8_lossy(bytes(data, ptr, len)?).into_owned())
}

fn load_value(data: &[u8], st: &GoState, at: u64) -> Result<Value, wasmtime::Error> {
    let bits = rd_u64(data, at)?;
    st.values.load(bits).map_err(wasmtime::Error::new)
}

fn load_values(data: &[u8], st: &GoState, at: u64) -> Result<Vec<Value>, wasmtime::Error> {
    let ptr = rd_u64(data, at)?;
    let len = rd_u64(data, at + 8)?;
    if len > (data.len() as u64) / 8 {
        return Err(fault(format!("argument slice of {len} values is too long")));
    }
    (0..len)
        .map(|i| load_value(data, st, ptr + i * 8))
        .collect()
}

fn store_value(
    data: &mut [u8],
    st: &mut GoState,
    at: u64,
    v: &Value,
) -> Result<(), wasmtime::Error> {
    // Check the range before taking a reference, so a bad address leaks nothing.
    range(data, at, 8)?;
    let bits = st.values.store(v);
    wr(data, at, &bits.to_le_bytes())
}

/// Reads SP again: Go code that ran during a host call may have moved the goroutine stack.
fn getsp(caller: &mut Caller<'_, GoState>) -> Result<u64, wasmtime::Error> {
    let f = caller
        .data()
        .getsp
        .clone()
        .ok_or_else(|| fault("the module has no `getsp` export"))?;
    Ok(f.call(&mut *caller, ())? as u32 as u64)
}

// ---- calls -----------------------------------------------------------------------------------

/// The outcome of a JS call: a value, or a thrown value.
type JsResult = Result<Value, Value>;

/// At most the first 256 bytes of `s` (cut on a character boundary), for an error message that
/// quotes what a guest passed: the message is a host string the guest can keep.
fn clipped(s: &str) -> &str {
    s.get(..s.floor_char_boundary(256)).unwrap_or(s)
}

fn type_error(message: String) -> Value {
    Value::Object(Obj::error("TypeError", &message, None))
}

fn enosys() -> Value {
    Value::Object(Obj::error("Error", "not implemented", Some("ENOSYS")))
}

/// Resumes Go (re-entrantly when called from an import) to run the pending event.
pub(crate) fn resume(caller: &mut Caller<'_, GoState>) -> Result<(), wasmtime::Error> {
    if let Some(code) = caller.data().exited {
        return Err(wasmtime::Error::new(GoExited(code)));
    }
    let f = caller
        .data()
        .resume
        .clone()
        .ok_or_else(|| fault("the module has no `resume` export"))?;
    caller.data_mut().depth += 1;
    let r = f.call(&mut *caller, ());
    caller.data_mut().depth -= 1;
    r
}

/// Calls a Go function made by `js.FuncOf`, as `_makeFuncWrapper`'s wrapper does: post the
/// event, resume Go, and return `event.result`.
fn call_go_func(
    caller: &mut Caller<'_, GoState>,
    id: u32,
    this: Value,
    args: Vec<Value>,
) -> Result<Value, wasmtime::Error> {
    let event = caller.data().post_event(id, this, args);
    resume(caller)?;
    if let Some(code) = caller.data().exited {
        // Go exited (e.g. a panic in the handler) under a host call: nothing below can
        // continue, so unwind everything.
        return Err(wasmtime::Error::new(GoExited(code)));
    }
    Ok(event.get("result"))
}

fn arg(args: &[Value], i: usize) -> Value {
    args.get(i).cloned().unwrap_or(Value::Undefined)
}

fn callback(
    caller: &mut Caller<'_, GoState>,
    cb: &Value,
    args: Vec<Value>,
) -> Result<JsResult, wasmtime::Error> {
    call_value(caller, cb, Value::Undefined, args)
}

/// `Reflect.apply(f, this, args)`.
pub(crate) fn call_value(
    caller: &mut Caller<'_, GoState>,
    f: &Value,
    this: Value,
    args: Vec<Value>,
) -> Result<JsResult, wasmtime::Error> {
    let Some(callable) = f.as_object().and_then(Obj::callable) else {
        return Ok(Err(type_error(format!(
            "{} is not a function",
            f.type_of()
        ))));
    };
    match callable {
        Callable::GoFunc(id) => Ok(Ok(call_go_func(caller, id, this, args)?)),
        Callable::Class(c) => construct(caller.data(), c, &args).map_err(heap_full),
        Callable::Builtin(b) => call_builtin(caller, b, this, args),
    }
}

/// `Reflect.construct(f, args)`.
pub(crate) fn new_value(
    caller: &mut Caller<'_, GoState>,
    f: &Value,
    args: Vec<Value>,
) -> Result<JsResult, wasmtime::Error> {
    match f.as_object().and_then(Obj::callable) {
        Some(Callable::Class(c)) => construct(caller.data(), c, &args).map_err(heap_full),
        Some(Callable::GoFunc(id)) => {
            // `new f()` on a Go function: JS would construct `this`; the result wins when it
            // is an object.
            let this = Value::Object(Obj::plain(vec![]));
            let r = call_go_func(caller, id, this.clone(), args)?;
            Ok(Ok(if r.as_object().is_some() { r } else { this }))
        }
        _ => Ok(Err(type_error(format!(
            "{} is not a constructor",
            f.type_of()
        )))),
    }
}

/// The trap for a guest whose arrays would outgrow its JS heap: the guest's memory limit, as
/// for its linear memory (node would die with "JavaScript heap out of memory").
fn heap_full(full: HeapFull) -> wasmtime::Error {
    tracing::debug!("gojs: {full}");
    wasmtime::Error::new(MemoryLimitHit)
}

/// Stops the guest when the array assignment just made was refused by its JS heap meter
/// ([`Obj::set`] and [`Obj::set_index`] cannot fail themselves).
fn refused_growth(st: &GoState) -> Result<(), wasmtime::Error> {
    st.heap
        .take_refused()
        .map_or(Ok(()), |full| Err(heap_full(full)))
}

/// `new C(args)` for the host's classes; `Err` when the backing store it asks for is over the
/// guest's JS heap limit (a thrown JS error is `Ok(Err(..))`).
fn construct(st: &GoState, c: Class, args: &[Value]) -> Result<JsResult, HeapFull> {
    Ok(Ok(Value::Object(match c {
        Class::Object => match args.first() {
            Some(Value::Object(o)) => o.clone(),
            _ => Obj::plain(vec![]),
        },
        Class::Array => match args {
            [Value::Number(n)] => {
                if *n < 0.0 || n.fract() != 0.0 || *n > 16_777_216.0 {
                    return Ok(Err(Value::Object(Obj::error(
                        "RangeError",
                        "Invalid array length",
                        None,
                    ))));
                }
                let len = *n as usize;
                Obj::try_metered(&st.heap, array_bytes(len), || {
                    ObjKind::Array(vec![Value::Undefined; len])
                })?
            }
            _ => Obj::try_metered(&st.heap, array_bytes(args.len()), || {
                ObjKind::Array(args.to_vec())
            })?,
        },
        Class::Uint8Array => match args.first() {
            Some(Value::Number(n)) => {
                if *n < 0.0 || n.fract() != 0.0 || *n > 4_294_967_296.0 {
                    return Ok(Err(Value::Object(Obj::error(
                        "RangeError",
                        "Invalid typed array length",
                        None,
                    ))));
                }
                let len = *n as usize;
                Obj::try_metered(&st.heap, len, || ObjKind::Bytes(vec![0; len]))?
            }
            Some(Value::Object(o)) => {
                let data = o.borrow();
                let len = match &data.kind {
                    ObjKind::Bytes(b) => b.len(),
                    ObjKind::Array(items) => items.len(),
                    _ => 0,
                };
                Obj::try_metered(&st.heap, len, || {
                    ObjKind::Bytes(match &data.kind {
                        ObjKind::Bytes(b) => b.clone(),
                        ObjKind::Array(items) => items
                            .iter()
                            .map(|v| v.as_number().unwrap_or(0.0) as i64 as u8)
                            .collect(),
                        _ => Vec::new(),
                    })
                })?
            }
            _ => Obj::try_metered(&st.heap, 0, || ObjKind::Bytes(Vec::new()))?,
        },
        Class::Error => {
            let message = args.first().map(Value::to_js_string).unwrap_or_default();
            Obj::error("Error", &message, None)
        }
        Class::Date => {
            let ms = match args.first() {
                Some(Value::Number(n)) => *n,
                _ => now_ms(st),
            };
            Obj::new(ObjKind::Date(ms))
        }
        Class::Function => {
            return Ok(Err(Value::Object(Obj::error(
                "EvalError",
                "code generation from strings is not allowed in this host",
                None,
            ))));
        }
    })))
}

fn now_ms(_st: &GoState) -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

fn bytes_of(v: &Value) -> Option<Obj> {
    v.as_object()
        .filter(|o| matches!(o.borrow().kind, ObjKind::Bytes(_)))
        .cloned()
}

fn call_builtin(
    caller: &mut Caller<'_, GoState>,
    b: Builtin,
    this: Value,
    args: Vec<Value>,
) -> Result<JsResult, wasmtime::Error> {
    let _ = this;
    let num = |i: usize| args.get(i).and_then(Value::as_number);
    Ok(match b {
        Builtin::MakeFuncWrapper => {
            let id = num(0).unwrap_or(0.0);
            if !(0.0..=f64::from(u32::MAX)).contains(&id) {
                Err(type_error(format!("bad function id {id}")))
            } else {
                Ok(Value::Object(Obj::function(Callable::GoFunc(id as u32))))
            }
        }
        Builtin::FsWriteSync => {
            let fd = num(0).unwrap_or(-1.0) as i64;
            let Some(buf) = bytes_of(&arg(&args, 1)) else {
                return Ok(Err(type_error(
                    "writeSync: buffer must be a Uint8Array".into(),
                )));
            };
            let bytes = match &buf.borrow().kind {
                ObjKind::Bytes(b) => b.clone(),
                _ => Vec::new(),
            };
            if !(1..=2).contains(&fd) {
                return Ok(Err(Value::Object(Obj::error(
                    "Error",
                    "bad file descriptor",
                    Some("EBADF"),
                ))));
            }
            caller.data_mut().write_fd(fd, &bytes)?;
            Ok(Value::Number(bytes.len() as f64))
        }
        Builtin::FsWrite | Builtin::FsRead => {
            let fd = num(0).unwrap_or(-1.0) as i64;
            let buf = bytes_of(&arg(&args, 1));
            let cb = arg(&args, 5);
            let Some(buf) = buf else {
                return callback(
                    caller,
                    &cb,
                    vec![type_error("buffer must be a Uint8Array".into())],
                );
            };
            let off = num(2).unwrap_or(0.0).max(0.0) as usize;
            let len = num(3).unwrap_or(0.0).max(0.0) as usize;
            let result: Result<usize, Value> = if b == Builtin::FsWrite {
                let bytes = match &buf.borrow().kind {
                    ObjKind::Bytes(all) => all
                        .get(off..off.saturating_add(len).min(all.len()))
                        .map(<[u8]>::to_vec),
                    _ => None,
                };
                match (fd, bytes) {
                    (1 | 2, Some(bytes)) => {
                        caller.data_mut().write_fd(fd, &bytes)?;
                        Ok(bytes.len())
                    }
                    (1 | 2, None) => Err(Value::Object(Obj::error(
                        "RangeError",
                        "offset out of range",
                        Some("ERR_OUT_OF_RANGE"),
                    ))),
                    _ => Err(Value::Object(Obj::error(
                        "Error",
                        "bad file descriptor",
                        Some("EBADF"),
                    ))),
                }
            } else if fd == 0 && caller.data().defer_stdin {
                // As node: the callback runs later, after Go has returned to the host.
                caller
                    .data_mut()
                    .pending_reads
                    .push_back(PendingRead { buf, off, len, cb });
                return Ok(Ok(Value::Undefined));
            } else if fd == 0 {
                read_stdin(caller.data_mut(), &buf, off, len)
            } else {
                Err(Value::Object(Obj::error(
                    "Error",
                    "bad file descriptor",
                    Some("EBADF"),
                )))
            };
            match result {
                Ok(n) => callback(caller, &cb, vec![Value::Null, Value::Number(n as f64)])?,
                Err(e) => callback(caller, &cb, vec![e])?,
            }
            .map(|_| Value::Undefined)
        }
        Builtin::FsOk => {
            let cb = args.last().cloned().unwrap_or(Value::Undefined);
            callback(caller, &cb, vec![Value::Null])?.map(|_| Value::Undefined)
        }
        Builtin::FsEnosys => {
            let cb = args.last().cloned().unwrap_or(Value::Undefined);
            callback(caller, &cb, vec![enosys()])?.map(|_| Value::Undefined)
        }
        Builtin::ProcessMinusOne => Ok(Value::Number(-1.0)),
        Builtin::ProcessCwd => Ok(Value::string("/")),
        Builtin::ProcessEnosys => Err(enosys()),
        Builtin::GetRandomValues => {
            let a = arg(&args, 0);
            if let Some(o) = bytes_of(&a)
                && let ObjKind::Bytes(b) = &mut o.borrow_mut().kind
            {
                rand::rng().fill_bytes(b);
            }
            Ok(a)
        }
        Builtin::DateNow => Ok(Value::Number(now_ms(caller.data()).floor())),
        Builtin::PerformanceNow => Ok(Value::Number(
            caller.data().started.elapsed().as_secs_f64() * 1000.0,
        )),
        Builtin::GetTimezoneOffset => Ok(Value::Number(0.0)),
        Builtin::DateGetTime => Ok(
            match this.as_object().map(|o| match o.borrow().kind {
                ObjKind::Date(ms) => ms,
                _ => f64::NAN,
            }) {
                Some(ms) => Value::Number(ms),
                None => Value::Number(f64::NAN),
            },
        ),
        Builtin::ConsoleLog => {
            let line = args
                .iter()
                .map(Value::to_js_string)
                .collect::<Vec<_>>()
                .join(" ");
            caller
                .data_mut()
                .write_fd(2, format!("{line}\n").as_bytes())?;
            Ok(Value::Undefined)
        }
        Builtin::PathResolve => Ok(Value::string(
            &args
                .iter()
                .map(Value::to_js_string)
                .collect::<Vec<_>>()
                .join("/"),
        )),
    })
}

// ---- the imports -----------------------------------------------------------------------------

/// An import that may call back into Go (or needs the whole `Caller`): it must re-read SP and
/// fetch memory afresh after anything that runs Go code.
type CallerImport = fn(Caller<'_, GoState>, i32) -> Result<(), wasmtime::Error>;

/// An import that never calls back into Go: it gets linear memory, the host state and its
/// frame address (SP) once, from the adapter in [`linker`].
type FrameImport = fn(&mut [u8], &mut GoState, u64) -> Result<(), wasmtime::Error>;

/// The imports that never re-enter Go (Go 1.21+ names; `runtime.walltime1` for Go <= 1.16).
const FRAME_IMPORTS: &[(&str, FrameImport)] = &[
    ("runtime.wasmExit", wasm_exit),
    ("runtime.wasmWrite", wasm_write),
    ("runtime.nanotime1", nanotime1),
    ("runtime.walltime", walltime),
    ("runtime.walltime1", walltime),
    ("runtime.scheduleTimeoutEvent", schedule_timeout_event),
    ("runtime.clearTimeoutEvent", clear_timeout_event),
    ("runtime.getRandomData", get_random_data),
    ("syscall/js.finalizeRef", finalize_ref),
    ("syscall/js.stringVal", string_val),
    ("syscall/js.valueSet", value_set),
    ("syscall/js.valueDelete", value_delete),
    ("syscall/js.valueIndex", value_index),
    ("syscall/js.valueSetIndex", value_set_index),
    ("syscall/js.valueLength", value_length),
    ("syscall/js.valuePrepareString", value_prepare_string),
    ("syscall/js.valueLoadString", value_load_string),
    ("syscall/js.valueInstanceOf", value_instance_of),
    ("syscall/js.copyBytesToGo", copy_bytes_to_go),
    ("syscall/js.copyBytesToJS", copy_bytes_to_js),
];

/// The imports that may re-enter Go (calls, property reads through getters) or need no frame.
const CALLER_IMPORTS: &[(&str, CallerImport)] = &[
    ("runtime.resetMemoryDataView", reset_memory_data_view),
    ("syscall/js.valueGet", value_get),
    ("syscall/js.valueCall", value_call),
    ("syscall/js.valueInvoke", value_invoke),
    ("syscall/js.valueNew", value_new),
    ("debug", debug),
];

/// Every import name of Go's js/wasm ABI that this host provides.
pub(crate) fn import_names() -> impl Iterator<Item = &'static str> {
    FRAME_IMPORTS
        .iter()
        .map(|(n, _)| *n)
        .chain(CALLER_IMPORTS.iter().map(|(n, _)| *n))
}

/// The import modules Go uses: `gojs` (Go 1.21+) and `go` (older).
pub const IMPORT_MODULES: [&str; 2] = ["gojs", "go"];

/// A linker with every import under both module names.
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<GoState>> {
    let mut linker = Linker::new(engine);
    for module in IMPORT_MODULES {
        for (name, f) in FRAME_IMPORTS {
            let f = *f;
            linker.func_wrap(
                module,
                name,
                move |mut caller: Caller<'_, GoState>, sp_raw: i32| {
                    let mem = memory(&caller)?;
                    let (data, st) = mem.data_and_store_mut(&mut caller);
                    f(data, st, sp(sp_raw))
                },
            )?;
        }
        for (name, f) in CALLER_IMPORTS {
            linker.func_wrap(module, name, *f)?;
        }
    }
    Ok(linker)
}

fn sp(raw: i32) -> u64 {
    raw as u32 as u64
}

fn wasm_exit(data: &mut [u8], st: &mut GoState, at: u64) -> Result<(), wasmtime::Error> {
    let code = rd_i32(data, at + 8)?;
    st.exited = Some(code);
    st.timers.clear();
    st.pending_reads.clear();
    Ok(())
}

fn wasm_write(data: &mut [u8], st: &mut GoState, at: u64) -> Result<(), wasmtime::Error> {
    let fd = rd_i64(data, at + 8)?;
    let p = rd_u64(data, at + 16)?;
    let n = rd_i32(data, at + 24)?;
    let out = bytes(data, p, u64::from(n.max(0) as u32))?.to_vec();
    st.write_fd(fd, &out)
}

fn reset_memory_data_view(_caller: Caller<'_, GoState>, _sp: i32) -> Result<(), wasmtime::Error> {
    // Nothing is cached: every access fetches the memory afresh.
    Ok(())
}

fn nanotime1(data: &mut [u8], st: &mut GoState, at: u64) -> Result<(), wasmtime::Error> {
    let now = st.time_origin_ns + st.started.elapsed().as_nanos() as u64;
    wr(data, at + 8, &(now as i64).to_le_bytes())
}

fn walltime(data: &mut [u8], _st: &mut GoState, at: u64) -> Result<(), wasmtime::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    wr(data, at + 8, &(now.as_secs() as i64).to_le_bytes())?;
    wr(data, at + 16, &(now.subsec_nanos() as i32).to_le_bytes())
}

fn schedule_timeout_event(
    data: &mut [u8],
    st: &mut GoState,
    at: u64,
) -> Result<(), wasmtime::Error> {
    let delay = rd_i64(data, at + 8)?.clamp(0, i64::from(u32::MAX));
    let id = st.next_timer;
    st.next_timer = st.next_timer.wrapping_add(1).max(1);
    st.timers
        .insert(id, Instant::now() + Duration::from_millis(delay as u64));
    wr(data, at + 16, &id.to_le_bytes())
}

fn clear_timeout_event(data: &mut [u8], st: &mut GoState, at: u64) -> Result<(), wasmtime::Error> {
    let id = rd_i32(data, at + 8)?;
    st.timers.remove(&id);
    Ok(())
}

fn get_random_data(data: &mut [u8], _st: &mut GoState, at: u64) -> Result<(), wasmtime::Error> {
    let ptr = rd_u64(data, at + 8)?;
    let len = rd_u64(data, at + 16)?;
    rand::rng().fill_bytes(bytes_mut(data, ptr, len)?);
    Ok(())
}

fn finalize_ref(data: &mut [u8], st: &mut GoState, at: u64) -> Result<(), wasmtime::Error> {
    let bits = rd_u64(data, at + 8)?;
    st.values.finalize(bits as u32);
    Ok(())
}

fn string_val(data: &mut [u8], st: &mut GoState, at: u64) -> Result<(), wasmtime::Error> {
    let s = rd_string(data, at + 8)?;
    // Metered: a guest can keep any number of strings in the host.
    let s = JsStr::try_metered(&st.heap, &s).map_err(heap_full)?;
    store_value(data, st, at + 24, &Value::String(s))
}

fn value_get(mut caller: Caller<'_, GoState>, sp_raw: i32) -> Result<(), wasmtime::Error> {
    let mem = memory(&caller)?;
    let (v, name) = {
        let (data, st) = mem.data_and_store_mut(&mut caller);
        let at = sp(sp_raw);
        (load_value(data, st, at + 8)?, rd_string(data, at + 16)?)
    };
    let result = v.get(&name);
    if matches!(result, Value::Undefined) {
        tracing::trace!(property = %name, "gojs: undefined property read");
    }
    // No getter here runs Go code, but re-read SP as wasm_exec does: it is cheap and keeps
    // this import correct if one ever does.
    let at = getsp(&mut caller)?;
    let (data, st) = mem.data_and_store_mut(&mut caller);
    store_value(data, st, at + 32, &result)
}

fn value_set(data: &mut [u8], st: &mut GoState, at: u64) -> Result<(), wasmtime::Error> {
    let v = load_value(data, st, at + 8)?;
    let name = rd_string(data, at + 16)?;
    let x = load_value(data, st, at + 32)?;
    if let Some(o) = v.as_object() {
        o.set_by_guest(&st.heap, &name, x).map_err(heap_full)?;
    }
    refused_growth(st)
}

fn value_delete(data: &mut [u8], st: &mut GoState, at: u64) -> Result<(), wasmtime::Error> {
    let v = load_value(data, st, at + 8)?;
    let name = rd_string(data, at + 16)?;
    if let Some(o) = v.as_object() {
        o.delete(&name);
    }
    Ok(())
}

fn value_index(data: &mut [u8], st: &mut GoState, at: u64) -> Result<(), wasmtime::Error> {
    let v = load_value(data, st, at + 8)?;
    let i = rd_i64(data, at + 16)?;
    let result = v
        .as_object()
        .map(|o| o.index(i))
        .unwrap_or(Value::Undefined);
    store_value(data, st, at + 24, &result)
}

fn value_set_index(data: &mut [u8], st: &mut GoState, at: u64) -> Result<(), wasmtime::Error> {
    let v = load_value(data, st, at + 8)?;
    let i = rd_i64(data, at + 16)?;
    let x = load_value(data, st, at + 24)?;
    if let Some(o) = v.as_object() {
        o.set_index_by_guest(&st.heap, i, x).map_err(heap_full)?;
    }
    refused_growth(st)
}

/// Writes a call's outcome at `result_off`/`ok_off` from the *current* SP.
fn finish_call(
    caller: &mut Caller<'_, GoState>,
    mem: Memory,
    result_off: u64,
    ok_off: u64,
    outcome: JsResult,
) -> Result<(), wasmtime::Error> {
    let at = getsp(caller)?;
    let (data, st) = mem.data_and_store_mut(&mut *caller);
    let (v, ok) = match outcome {
        Ok(v) => (v, 1u8),
        Err(e) => (e, 0u8),
    };
    store_value(data, st, at + result_off, &v)?;
    wr(data, at + ok_off, &[ok])
}

fn value_call(mut caller: Caller<'_, GoState>, sp_raw: i32) -> Result<(), wasmtime::Error> {
    let mem = memory(&caller)?;
    let (v, name, args) = {
        let (data, st) = mem.data_and_store_mut(&mut caller);
        let at = sp(sp_raw);
        (
            load_value(data, st, at + 8)?,
            rd_string(data, at + 16)?,
            load_values(data, st, at + 32)?,
        )
    };
    let outcome = match v.as_object() {
        None => Err(type_error(format!(
            "Cannot read properties of {} (reading '{}')",
            clipped(&v.to_js_string()),
            clipped(&name)
        ))),
        Some(_) => {
            let m = v.get(&name);
            if m.as_object().and_then(Obj::callable).is_none() {
                Err(type_error(format!("{} is not a function", clipped(&name))))
            } else {
                call_value(&mut caller, &m, v.clone(), args)?
            }
        }
    };
    finish_call(&mut caller, mem, 56, 64, outcome)
}

/// The function (or constructor) and the arguments of `valueInvoke` and `valueNew`, which
/// lay them out alike: the value at sp+8, the argument slice at sp+16.
fn callee_and_args(
    caller: &mut Caller<'_, GoState>,
    mem: Memory,
    sp_raw: i32,
) -> Result<(Value, Vec<Value>), wasmtime::Error> {
    let (data, st) = mem.data_and_store_mut(caller);
    let at = sp(sp_raw);
    Ok((
        load_value(data, st, at + 8)?,
        load_values(data, st, at + 16)?,
    ))
}

fn value_invoke(mut caller: Caller<'_, GoState>, sp_raw: i32) -> Result<(), wasmtime::Error> {
    let mem = memory(&caller)?;
    let (v, args) = callee_and_args(&mut caller, mem, sp_raw)?;
    let outcome = call_value(&mut caller, &v, Value::Undefined, args)?;
    finish_call(&mut caller, mem, 40, 48, outcome)
}

fn value_new(mut caller: Caller<'_, GoState>, sp_raw: i32) -> Result<(), wasmtime::Error> {
    let mem = memory(&caller)?;
    let (v, args) = callee_and_args(&mut caller, mem, sp_raw)?;
    let outcome = new_value(&mut caller, &v, args)?;
    finish_call(&mut caller, mem, 40, 48, outcome)
}

fn value_length(data: &mut [u8], st: &mut GoState, at: u64) -> Result<(), wasmtime::Error> {
    let v = load_value(data, st, at + 8)?;
    let n = match &v {
        Value::Object(o) => o.length(),
        Value::String(_) => v.get("length").as_number().unwrap_or(0.0),
        _ => f64::NAN,
    };
    // parseInt(NaN) is NaN; Go reads it as an int64 of whatever setInt64 wrote (0).
    let n = if n.is_finite() { n as i64 } else { 0 };
    wr(data, at + 16, &n.to_le_bytes())
}

fn value_prepare_string(data: &mut [u8], st: &mut GoState, at: u64) -> Result<(), wasmtime::Error> {
    let v = load_value(data, st, at + 8)?;
    let bytes = v.to_js_string().into_bytes();
    let len = bytes.len() as i64;
    // Metered: a guest that prepares strings and never loads or finalizes them keeps each.
    let arr =
        Obj::try_metered(&st.heap, bytes.len(), || ObjKind::Bytes(bytes)).map_err(heap_full)?;
    let arr = Value::Object(arr);
    store_value(data, st, at + 16, &arr)?;
    wr(data, at + 24, &len.to_le_bytes())
}

fn value_load_string(data: &mut [u8], st: &mut GoState, at: u64) -> Result<(), wasmtime::Error> {
    let v = load_value(data, st, at + 8)?;
    let ptr = rd_u64(data, at + 16)?;
    let len = rd_u64(data, at + 24)?;
    let dst = bytes_mut(data, ptr, len)?;
    if let Some(o) = bytes_of(&v)
        && let ObjKind::Bytes(b) = &o.borrow().kind
    {
        copy_prefix(dst, b);
    }
    Ok(())
}

fn value_instance_of(data: &mut [u8], st: &mut GoState, at: u64) -> Result<(), wasmtime::Error> {
    let v = load_value(data, st, at + 8)?;
    let t = load_value(data, st, at + 16)?;
    let yes = match (v.as_object(), t.as_object().and_then(Obj::callable)) {
        (Some(o), Some(Callable::Class(c))) => o.instance_of(c),
        _ => false,
    };
    wr(data, at + 24, &[u8::from(yes)])
}

fn copy_bytes_to_go(data: &mut [u8], st: &mut GoState, at: u64) -> Result<(), wasmtime::Error> {
    let ptr = rd_u64(data, at + 8)?;
    let len = rd_u64(data, at + 16)?;
    let src = load_value(data, st, at + 32)?;
    let Some(o) = bytes_of(&src) else {
        return wr(data, at + 48, &[0]);
    };
    let n = match &o.borrow().kind {
        ObjKind::Bytes(b) => copy_prefix(bytes_mut(data, ptr, len)?, b),
        _ => 0,
    };
    wr(data, at + 40, &(n as i64).to_le_bytes())?;
    wr(data, at + 48, &[1])
}

fn copy_bytes_to_js(data: &mut [u8], st: &mut GoState, at: u64) -> Result<(), wasmtime::Error> {
    let dst = load_value(data, st, at + 8)?;
    let src = rd_bytes(data, at + 16)?;
    let Some(o) = bytes_of(&dst) else {
        return wr(data, at + 48, &[0]);
    };
    let n = match &mut o.borrow_mut().kind {
        ObjKind::Bytes(b) => copy_prefix(b, &src),
        _ => 0,
    };
    wr(data, at + 40, &(n as i64).to_le_bytes())?;
    wr(data, at + 48, &[1])
}

fn debug(_caller: Caller<'_, GoState>, value: i32) -> Result<(), wasmtime::Error> {
    tracing::debug!(value, "gojs debug");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_names_are_cut_on_a_character_boundary() {
        assert_eq!(clipped("short"), "short");
        let long = format!("{}é{}", "a".repeat(255), "b".repeat(1000));
        // The 'é' straddles byte 256: the cut falls before it.
        assert_eq!(clipped(&long), "a".repeat(255));
    }
}
