//! One running Go program: start it, call the functions it registered, run its timers.

use crate::host::{self, GoExited, GoState, HostFault, OutputCapHit, PendingRead};
use crate::value::{Callable, HeapCopier, Obj, Value, Values};
use hoist_runtime::Limit;
use hoist_runtime::guest::{
    EpochTicker, MemoryLimitHit, TimeoutHit, arm_deadline_at, deadline_after,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use wasmtime::{Engine, Extern, Module, Store};

/// How to run a Go js/wasm program.
#[derive(Debug, Clone)]
pub struct GoOptions {
    /// `os.Args` (wasm_exec uses `["js"]`).
    pub argv: Vec<String>,
    /// The environment (`KEY=VALUE`, sorted by key as wasm_exec does).
    pub env: BTreeMap<String, String>,
    /// What fd 0 reads.
    pub stdin: Vec<u8>,
    /// Linear memory cap in bytes.
    pub max_memory_bytes: u64,
    /// Wall-clock limit for the instance's whole life (start and every call).
    pub timeout: Option<Duration>,
    /// Cap on each of stdout and stderr, in bytes.
    pub max_output_bytes: usize,
    /// Copy the guest's stderr to hoist's stderr as it is written.
    pub stream_stderr: bool,
    /// Complete reads of fd 0 later, as node's asynchronous `fs.read` does, instead of
    /// inside the `fs.read` call: Go then returns to the host with an empty wasm stack while
    /// it waits, so [`GoInstance::start`] returns at a command's first read of stdin (see
    /// [`GoInstance::waiting_for_stdin`]), a point [`GoInstance::snapshot`] can capture.
    /// [`GoInstance::run_until`] completes the reads.
    pub defer_stdin: bool,
}

impl Default for GoOptions {
    fn default() -> Self {
        GoOptions {
            argv: vec!["js".into()],
            env: BTreeMap::new(),
            stdin: Vec::new(),
            max_memory_bytes: 2 << 30,
            timeout: Some(Duration::from_secs(60)),
            max_output_bytes: 64 << 20,
            stream_stderr: false,
            defer_stdin: false,
        }
    }
}

/// Why a Go program could not be run or called.
#[derive(Debug, thiserror::Error)]
pub enum GoJsError {
    /// The module does not use Go's js/wasm ABI.
    #[error(
        "{what} is not a Go js/wasm module (it imports nothing from `gojs` or `go`; build it with GOOS=js GOARCH=wasm)"
    )]
    NotGoJs {
        /// The module's location.
        what: String,
    },
    /// The module lacks an export the ABI needs.
    #[error("{what} has no `{name}` export, which every GOOS=js GOARCH=wasm module has")]
    MissingExport {
        /// The module's location.
        what: String,
        /// The export.
        name: &'static str,
    },
    /// The module imports something hoist does not provide.
    #[error(
        "{what} imports {module}.{name}, which hoist's Go js/wasm host does not provide (is it built by a newer Go, or for the browser?)"
    )]
    UnknownImport {
        /// The module's location.
        what: String,
        /// Import module.
        module: String,
        /// Import name.
        name: String,
    },
    /// argv and env do not fit where Go expects them.
    #[error("the arguments and environment for {what} are too long (Go allows about 8 KiB)")]
    ArgsTooLong {
        /// The module's location.
        what: String,
    },
    /// Instantiation failed.
    #[error("could not start {what}: {message}")]
    Instantiate {
        /// The module's location.
        what: String,
        /// wasmtime's message.
        message: String,
    },
    /// A limit stopped the program.
    #[error("{what} was stopped: it exceeded {limit}")]
    Limit {
        /// The module's location.
        what: String,
        /// Which limit.
        limit: Limit,
    },
    /// The program crashed (a wasm trap) or misused the ABI.
    #[error("{what} crashed: {message}")]
    Trap {
        /// The module's location.
        what: String,
        /// What happened.
        message: String,
    },
    /// The program exited while a call into it was running (for example a panic in a
    /// `js.FuncOf` handler).
    #[error("{what} exited with code {code} during the call to {call}")]
    ExitedDuringCall {
        /// The module's location.
        what: String,
        /// The global function being called.
        call: String,
        /// Its exit code.
        code: i32,
    },
    /// A call was attempted after the program exited.
    #[error("{what} has already exited (code {code}); it cannot be called")]
    AlreadyExited {
        /// The module's location.
        what: String,
        /// Its exit code.
        code: i32,
    },
    /// The global is not a function Go registered.
    #[error("{what} did not register a global function `{name}`")]
    NoSuchFunction {
        /// The module's location.
        what: String,
        /// The global's name.
        name: String,
    },
}

/// Go's `run(argc, argv)` export.
type RunFunc = wasmtime::TypedFunc<(i32, i32), ()>;

/// A Go program instance.
///
/// JS objects it hands out ([`GoInstance::call`]'s result, [`GoInstance::global`]) are its
/// heap's: they are emptied when the instance is dropped (that is how cycles in the heap are
/// freed; see [`crate::value::Values`]), so read what you need from them before.
pub struct GoInstance {
    store: Store<GoState>,
    /// The globals the module exports as `hoist.global.N` (for snapshots).
    globals: Vec<wasmtime::Global>,
    what: String,
    max_memory_bytes: u64,
    max_output_bytes: usize,
    timeout: Option<Duration>,
    _ticker: Option<EpochTicker>,
    /// The module and how it was started, to start a new instance for a restore.
    module: Module,
    stream_stderr: bool,
}

/// A Go program's state once its `main` has registered its functions and blocked: linear
/// memory, the stack pointer, and the host's JS state (reference table, global object, timers,
/// what `main` printed). [`GoInstance::restore`] puts the instance it was taken from back into
/// this state, so that every call sees the program exactly as a fresh start would, without
/// paying Go's start-up again.
///
/// Go keeps its goroutine stacks in linear memory and returns to the host with an empty wasm
/// stack whenever it waits for an event; between events its only other state is a few wasm
/// globals (SP, the current goroutine, scratch registers). Those globals are not exported, so
/// a snapshot is restored into the same instance. A module rewritten by
/// [`crate::export_globals`] has them all restored, wherever Go paused; any other module only
/// when Go paused at the same point as when the snapshot was taken (same SP), which a
/// goroutine whose stack grew during a call breaks.
///
/// A command-style program (one that reads stdin through `fs`) started with
/// [`GoOptions::defer_stdin`] is captured at its first read of stdin, the read pending: a
/// restore puts it back there, even after the program exited, and the read then gets the
/// new stdin.
pub struct Snapshot {
    memory: Vec<u8>,
    sp: i32,
    /// Values of the globals the module exports for snapshots ([`crate::export_globals`]).
    globals: Vec<wasmtime::Val>,
    values: Values,
    global: Obj,
    go: Obj,
    next_timer: i32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// The pending read of stdin, for a snapshot taken where a command first read it.
    pending_read: Option<PendingRead>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("memory_bytes", &self.memory.len())
            .field("sp", &self.sp)
            .field("at_stdin_read", &self.pending_read.is_some())
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// Size of the captured linear memory, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory.len()
    }

    /// Whether it was taken where a command-style program first read stdin (the read
    /// pending), rather than after a `main` that registered functions.
    pub fn at_stdin_read(&self) -> bool {
        self.pending_read.is_some()
    }
}

/// Why a program's state cannot be snapshotted, or a snapshot cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsnapshottable {
    /// The program has exited.
    #[error("the program has exited")]
    Exited,
    /// The program is inside a call (a host function is running).
    #[error("the program is inside a call")]
    InCall,
    /// The program read stdin during start-up (its input would be baked in).
    #[error("the program read stdin during start-up")]
    ReadStdin,
    /// The program has timers pending (their deadlines would be stale).
    #[error("the program has {0} timer(s) pending")]
    PendingTimers(usize),
    /// The instance is not paused where the snapshot was taken.
    #[error("the program is paused at SP {now:#x}, not at the snapshot's {snapshot:#x}")]
    Moved {
        /// SP now.
        now: i32,
        /// SP in the snapshot.
        snapshot: i32,
    },
    /// Linear memory is missing or smaller than the snapshot's.
    #[error("linear memory does not match the snapshot")]
    Memory,
    /// A global could not be restored.
    #[error("global {0} could not be restored")]
    Global(usize),
    /// Reading the stack pointer failed.
    #[error("getsp failed: {0}")]
    GetSp(String),
    /// A new instance to restore into could not be made.
    #[error("a new instance could not be made: {0}")]
    Instantiate(String),
    /// The program wrote to stdout or stderr before its first read of stdin.
    #[error("the program wrote output before it read stdin")]
    Wrote,
    /// The program waits for more than one read of stdin at once.
    #[error("the program has {0} reads of stdin pending")]
    ManyReads(usize),
    /// A snapshot at a read of stdin needs the module's globals exported
    /// ([`crate::export_globals`]): the program exits after it, and only a full restore of
    /// its globals brings it back.
    #[error("the module's globals are not exported")]
    NoGlobals,
}

/// Whether `module` imports Go's js/wasm ABI (`gojs`, or `go` before Go 1.21).
pub fn is_go_js(module: &Module) -> bool {
    module
        .imports()
        .any(|i| host::IMPORT_MODULES.contains(&i.module()))
}

fn check_module(module: &Module, what: &str) -> Result<(), GoJsError> {
    if !is_go_js(module) {
        return Err(GoJsError::NotGoJs { what: what.into() });
    }
    for import in module.imports() {
        let known = host::IMPORT_MODULES.contains(&import.module())
            && host::import_names().any(|n| n == import.name());
        if !known {
            return Err(GoJsError::UnknownImport {
                what: what.into(),
                module: import.module().into(),
                name: import.name().into(),
            });
        }
    }
    for name in ["mem", "run", "resume", "getsp"] {
        if module.get_export(name).is_none() {
            return Err(GoJsError::MissingExport {
                what: what.into(),
                name,
            });
        }
    }
    Ok(())
}

impl GoInstance {
    /// Instantiates `module` and runs Go's `main` until it waits for an event or exits.
    pub fn start(
        engine: &Engine,
        module: &Module,
        what: &str,
        options: GoOptions,
    ) -> Result<GoInstance, GoJsError> {
        let argv = options.argv.clone();
        let env = options.env.clone();
        let (mut inst, run) = GoInstance::instantiate(engine, module, what, options)?;
        let Some(mem) = inst.store.data().mem else {
            return Err(GoJsError::MissingExport {
                what: what.into(),
                name: "mem",
            });
        };
        let (argc, argv) = write_args(mem.data_mut(&mut inst.store), &argv, &env)
            .ok_or_else(|| GoJsError::ArgsTooLong { what: what.into() })?;
        match run.call(&mut inst.store, (argc, argv)) {
            Ok(()) => Ok(inst),
            Err(e) if e.downcast_ref::<GoExited>().is_some() => Ok(inst),
            Err(e) => Err(inst.classify(e, None)),
        }
    }

    /// Instantiates `module` (nothing of Go runs yet); returns the instance and its `run`.
    fn instantiate(
        engine: &Engine,
        module: &Module,
        what: &str,
        options: GoOptions,
    ) -> Result<(GoInstance, RunFunc), GoJsError> {
        check_module(module, what)?;
        let mut state = GoState::new(
            options.stdin,
            options.max_memory_bytes,
            options.max_output_bytes,
            options.stream_stderr,
        );
        let deadline = deadline_after(options.timeout);
        state.deadline = deadline;
        state.defer_stdin = options.defer_stdin;
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        let ticker = arm_deadline_at(&mut store, deadline);
        let mut inst = GoInstance {
            store,
            globals: Vec::new(),
            what: what.to_string(),
            max_memory_bytes: options.max_memory_bytes,
            max_output_bytes: options.max_output_bytes,
            timeout: options.timeout,
            _ticker: ticker,
            module: module.clone(),
            stream_stderr: options.stream_stderr,
        };
        let linker = host::linker(engine).map_err(|e| GoJsError::Instantiate {
            what: what.into(),
            message: format!("{e:#}"),
        })?;
        let instance = linker
            .instantiate(&mut inst.store, module)
            .map_err(|e| inst.classify(e, None))?;
        let missing = |name| GoJsError::MissingExport {
            what: what.into(),
            name,
        };
        let Some(Extern::Memory(mem)) = instance.get_export(&mut inst.store, "mem") else {
            return Err(missing("mem"));
        };
        let resume = instance
            .get_typed_func::<(), ()>(&mut inst.store, "resume")
            .map_err(|_| missing("resume"))?;
        let getsp = instance
            .get_typed_func::<(), i32>(&mut inst.store, "getsp")
            .map_err(|_| missing("getsp"))?;
        let run = instance
            .get_typed_func::<(i32, i32), ()>(&mut inst.store, "run")
            .map_err(|_| missing("run"))?;
        let mut globals: Vec<(u32, wasmtime::Global)> = instance
            .exports(&mut inst.store)
            .filter_map(|e| {
                let n = e
                    .name()
                    .strip_prefix(crate::instrument::GLOBAL_EXPORT_PREFIX)?
                    .parse()
                    .ok()?;
                Some((n, e.into_extern().into_global()?))
            })
            .collect();
        globals.sort_by_key(|(n, _)| *n);
        inst.globals = globals.into_iter().map(|(_, g)| g).collect();
        {
            let st = inst.store.data_mut();
            st.mem = Some(mem);
            st.resume = Some(resume);
            st.getsp = Some(getsp);
        }
        Ok((inst, run))
    }

    /// Replaces this instance by a new instance of the same module, with linear memory grown
    /// to `bytes` (for a restore: Go's allocator keeps the end of its heap in memory, so a
    /// restored program grows memory again past whatever an earlier call grew; a new instance
    /// keeps memory at the snapshot's size).
    fn respawn(&mut self, bytes: usize) -> Result<(), Unsnapshottable> {
        let engine = self.store.engine().clone();
        let options = GoOptions {
            argv: Vec::new(),
            env: BTreeMap::new(),
            stdin: Vec::new(),
            max_memory_bytes: self.max_memory_bytes,
            timeout: self.timeout,
            max_output_bytes: self.max_output_bytes,
            stream_stderr: self.stream_stderr,
            defer_stdin: self.store.data().defer_stdin,
        };
        let module = self.module.clone();
        let (mut inst, _run) = GoInstance::instantiate(&engine, &module, &self.what, options)
            .map_err(|e| Unsnapshottable::Instantiate(e.to_string()))?;
        let Some(mem) = inst.store.data().mem else {
            return Err(Unsnapshottable::Memory);
        };
        let have = mem.data_size(&inst.store);
        if bytes > have {
            let pages = (bytes - have).div_ceil(65536) as u64;
            mem.grow(&mut inst.store, pages)
                .map_err(|_| Unsnapshottable::Memory)?;
        }
        *self = inst;
        Ok(())
    }

    /// Captures the program's state (see [`Snapshot`]). Only a program that is waiting for an
    /// event, has not exited, read no stdin and has no timers pending can be captured.
    pub fn snapshot(&mut self) -> Result<Snapshot, Unsnapshottable> {
        self.check_paused()?;
        let st = self.store.data();
        if st.stdin_pos > 0 {
            return Err(Unsnapshottable::ReadStdin);
        }
        if !st.timers.is_empty() {
            return Err(Unsnapshottable::PendingTimers(st.timers.len()));
        }
        if !st.pending_reads.is_empty() {
            if st.pending_reads.len() > 1 {
                return Err(Unsnapshottable::ManyReads(st.pending_reads.len()));
            }
            if !st.stdout.is_empty() || !st.stderr.is_empty() {
                return Err(Unsnapshottable::Wrote);
            }
            if self.globals.is_empty() {
                return Err(Unsnapshottable::NoGlobals);
            }
        }
        let sp = self.sp()?;
        let st = self.store.data();
        let Some(mem) = st.mem else {
            return Err(Unsnapshottable::Memory);
        };
        let mut copier = HeapCopier::new();
        let mut values = copier.values(&st.values);
        let global = copier.obj(&st.global);
        let go = copier.obj(&st.go);
        let pending_read = st.pending_reads.front().map(|p| copy_read(&mut copier, p));
        copier.finish();
        copier.hand_copies_to(&mut values);
        let globals = self
            .globals
            .iter()
            .map(|g| g.get(&mut self.store))
            .collect();
        let st = self.store.data();
        Ok(Snapshot {
            memory: mem.data(&self.store).to_vec(),
            sp,
            globals,
            values,
            global,
            go,
            next_timer: st.next_timer,
            stdout: st.stdout.clone(),
            stderr: st.stderr.clone(),
            pending_read,
        })
    }

    /// Puts this instance (the one `snapshot` was taken from) back into the snapshot's state,
    /// with `stdin` as fd 0 and a fresh deadline and output buffers. Memory the program grew
    /// since is zeroed (Go takes fresh memory to be zero) and stays allocated.
    ///
    /// An instance whose snapshot was taken at a read of stdin is restored even after the
    /// program exited (every global is restored, so nothing of the exit remains).
    pub fn restore(&mut self, snapshot: &Snapshot, stdin: Vec<u8>) -> Result<(), Unsnapshottable> {
        let full = snapshot.globals.len() == self.globals.len() && !self.globals.is_empty();
        match self.check_paused() {
            Err(Unsnapshottable::Exited) if snapshot.pending_read.is_some() && full => {}
            other => other?,
        }
        // Memory grew since the snapshot: with every global restorable, a new instance at the
        // snapshot's size (memory never shrinks, and Go would grow it again past the growth).
        if full && self.memory_size() > snapshot.memory.len() {
            self.respawn(snapshot.memory.len())?;
        }
        if !self.store.data().timers.is_empty() {
            // Timers left by the last call are dropped with the rest of its state.
            self.store.data_mut().timers.clear();
        }
        let deadline = deadline_after(self.timeout);
        self.store.data_mut().deadline = deadline;
        self._ticker = arm_deadline_at(&mut self.store, deadline);
        if full {
            for (i, (g, v)) in self.globals.iter().zip(&snapshot.globals).enumerate() {
                if g.ty(&self.store).mutability() == wasmtime::Mutability::Var {
                    g.set(&mut self.store, *v)
                        .map_err(|_| Unsnapshottable::Global(i))?;
                }
            }
        } else {
            let sp = self.sp()?;
            if sp != snapshot.sp {
                return Err(Unsnapshottable::Moved {
                    now: sp,
                    snapshot: snapshot.sp,
                });
            }
        }
        let Some(mem) = self.store.data().mem else {
            return Err(Unsnapshottable::Memory);
        };
        let data = mem.data_mut(&mut self.store);
        let (head, tail) = data
            .split_at_mut_checked(snapshot.memory.len())
            .ok_or(Unsnapshottable::Memory)?;
        head.copy_from_slice(&snapshot.memory);
        tail.fill(0);
        // The restored heap's arrays are metered as the live guest's, so what it grows them
        // by counts against its limit.
        let mut copier = HeapCopier::metered(&self.store.data().heap);
        let mut values = copier.values(&snapshot.values);
        let global = copier.obj(&snapshot.global);
        let go = copier.obj(&snapshot.go);
        let pending_read = snapshot
            .pending_read
            .as_ref()
            .map(|p| copy_read(&mut copier, p));
        copier.finish();
        copier.hand_copies_to(&mut values);
        let st = self.store.data_mut();
        st.values = values;
        st.global = global;
        st.go = go;
        st.exited = None;
        st.pending_reads = pending_read.into_iter().collect();
        st.next_timer = snapshot.next_timer;
        st.stdin = stdin;
        st.stdin_pos = 0;
        st.stdout = snapshot.stdout.clone();
        st.stderr = snapshot.stderr.clone();
        Ok(())
    }

    fn check_paused(&self) -> Result<(), Unsnapshottable> {
        let st = self.store.data();
        if st.exited.is_some() {
            return Err(Unsnapshottable::Exited);
        }
        if st.depth > 0 {
            return Err(Unsnapshottable::InCall);
        }
        Ok(())
    }

    fn sp(&mut self) -> Result<i32, Unsnapshottable> {
        let Some(getsp) = self.store.data().getsp.clone() else {
            return Err(Unsnapshottable::GetSp("no getsp export".into()));
        };
        getsp
            .call(&mut self.store, ())
            .map_err(|e| Unsnapshottable::GetSp(format!("{e:#}")))
    }

    /// The exit code, once the program has exited.
    pub fn exit_code(&self) -> Option<i32> {
        self.store.data().exited
    }

    /// Whether the program registered a global function `name` (with `js.FuncOf`).
    pub fn has_function(&self, name: &str) -> bool {
        matches!(
            self.store
                .data()
                .global
                .get(name)
                .as_object()
                .and_then(Obj::callable),
            Some(Callable::GoFunc(_))
        )
    }

    /// The global property `name`.
    pub fn global(&self, name: &str) -> Value {
        self.store.data().global.get(name)
    }

    /// Calls the global function `name` (registered with `js.FuncOf`) with `args`, as JS
    /// would (`globalThis[name](...args)`), and returns its result.
    pub fn call(&mut self, name: &str, args: Vec<Value>) -> Result<Value, GoJsError> {
        if let Some(code) = self.exit_code() {
            return Err(GoJsError::AlreadyExited {
                what: self.what.clone(),
                code,
            });
        }
        let f = self.store.data().global.get(name);
        let Some(Callable::GoFunc(id)) = f.as_object().and_then(Obj::callable) else {
            return Err(GoJsError::NoSuchFunction {
                what: self.what.clone(),
                name: name.into(),
            });
        };
        let event = self.store.data().post_event(id, Value::Undefined, args);
        self.resume(Some(name))?;
        if let Some(code) = self.exit_code() {
            return Err(GoJsError::ExitedDuringCall {
                what: self.what.clone(),
                call: name.into(),
                code,
            });
        }
        Ok(event.get("result"))
    }

    fn resume(&mut self, call: Option<&str>) -> Result<(), GoJsError> {
        let Some(resume) = self.store.data().resume.clone() else {
            return Err(GoJsError::MissingExport {
                what: self.what.clone(),
                name: "resume",
            });
        };
        match resume.call(&mut self.store, ()) {
            Ok(()) => Ok(()),
            Err(e) if e.downcast_ref::<GoExited>().is_some() => Ok(()),
            Err(e) => Err(self.classify(e, call)),
        }
    }

    /// Runs timers (as JS's event loop would) until the program exits or has nothing left to
    /// wait for. Returns whether it exited.
    pub fn run_until_idle(&mut self) -> Result<bool, GoJsError> {
        self.run_until(None)
    }

    /// Runs timers until the program exits, has nothing left to wait for, or (with
    /// `function`) has registered that global function. Returns whether it exited.
    pub fn run_until(&mut self, function: Option<&str>) -> Result<bool, GoJsError> {
        self.run_loop(function, false)
    }

    /// Runs timers until the program exits, has registered the global function `function`,
    /// waits for a read of stdin to complete (with [`GoOptions::defer_stdin`]; the read stays
    /// pending, see [`GoInstance::waiting_for_stdin`]), or has nothing left to wait for.
    /// Returns whether it exited.
    pub fn run_until_stdin(&mut self, function: Option<&str>) -> Result<bool, GoJsError> {
        self.run_loop(function, true)
    }

    fn run_loop(&mut self, function: Option<&str>, stop_at_stdin: bool) -> Result<bool, GoJsError> {
        loop {
            if self.exit_code().is_some() {
                return Ok(true);
            }
            if let Some(name) = function
                && self.has_function(name)
            {
                return Ok(false);
            }
            if self.waiting_for_stdin() {
                if stop_at_stdin {
                    return Ok(false);
                }
                self.complete_read()?;
                continue;
            }
            let next = self
                .store
                .data()
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(id, at)| (*id, *at));
            let Some((id, at)) = next else {
                return Ok(false);
            };
            let deadline = self.store.data().deadline;
            if let Some(deadline) = deadline
                && at > deadline
            {
                std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                return Err(self.limit(Limit::Timeout {
                    after: self.timeout.unwrap_or_default(),
                }));
            }
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            self.store.data().go.set("_pendingEvent", Value::Null);
            self.resume(None)?;
            // golang/go#28975: resume again while Go still has the fired timer registered.
            let mut guard = 0;
            while self.exit_code().is_none()
                && self.store.data().timers.contains_key(&id)
                && guard < 3
            {
                self.resume(None)?;
                guard += 1;
            }
            self.store.data_mut().timers.remove(&id);
        }
    }

    /// Whether the program waits for a read of stdin to complete ([`GoOptions::defer_stdin`]).
    pub fn waiting_for_stdin(&self) -> bool {
        !self.store.data().pending_reads.is_empty()
    }

    /// Completes the oldest pending read of stdin and runs Go until it waits again, as node
    /// does when `fs.read`'s callback fires.
    fn complete_read(&mut self) -> Result<(), GoJsError> {
        let Some(read) = self.store.data_mut().pending_reads.pop_front() else {
            return Ok(());
        };
        let result = host::read_stdin(self.store.data_mut(), &read.buf, read.off, read.len);
        let args = match result {
            Ok(n) => vec![Value::Null, Value::Number(n as f64)],
            Err(e) => vec![e],
        };
        let Some(Callable::GoFunc(id)) = read.cb.as_object().and_then(Obj::callable) else {
            return Err(GoJsError::Trap {
                what: self.what.clone(),
                message: "fs.read of stdin was given a callback that is not a Go function".into(),
            });
        };
        self.store.data().post_event(id, Value::Undefined, args);
        self.resume(None)
    }

    /// Makes Go report a deadlock ("all goroutines are asleep") as node does when the program
    /// neither exits nor waits for anything: the program then exits with code 2.
    pub fn report_deadlock(&mut self) -> Result<(), GoJsError> {
        if self.exit_code().is_some() {
            return Ok(());
        }
        let event = Obj::plain(vec![("id", Value::Number(0.0))]);
        self.store
            .data()
            .go
            .set("_pendingEvent", Value::Object(event));
        self.resume(None)
    }

    /// Everything the program wrote to stdout so far (the buffer is emptied).
    pub fn take_stdout(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.store.data_mut().stdout)
    }

    /// Everything the program wrote to stderr so far (the buffer is emptied).
    pub fn take_stderr(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.store.data_mut().stderr)
    }

    /// How many bytes of stdin the program has read.
    pub fn stdin_read(&self) -> usize {
        self.store.data().stdin_pos
    }

    /// How many JS values Go currently holds references to (for leak checks).
    pub fn live_values(&self) -> usize {
        self.store.data().values.live()
    }

    /// Current size of linear memory in bytes.
    pub fn memory_size(&self) -> usize {
        match self.store.data().mem {
            Some(mem) => mem.data_size(&self.store),
            None => 0,
        }
    }

    fn limit(&self, limit: Limit) -> GoJsError {
        GoJsError::Limit {
            what: self.what.clone(),
            limit,
        }
    }

    fn classify(&self, e: wasmtime::Error, call: Option<&str>) -> GoJsError {
        if e.downcast_ref::<MemoryLimitHit>().is_some() {
            return self.limit(Limit::Memory {
                max_bytes: self.max_memory_bytes,
            });
        }
        if e.downcast_ref::<TimeoutHit>().is_some() {
            return self.limit(Limit::Timeout {
                after: self.timeout.unwrap_or_default(),
            });
        }
        if e.downcast_ref::<OutputCapHit>().is_some() {
            return self.limit(Limit::Stdout {
                max_bytes: self.max_output_bytes,
            });
        }
        if let Some(GoExited(code)) = e.downcast_ref::<GoExited>() {
            return GoJsError::ExitedDuringCall {
                what: self.what.clone(),
                call: call.unwrap_or("main").into(),
                code: *code,
            };
        }
        let message = if let Some(f) = e.downcast_ref::<HostFault>() {
            f.0.clone()
        } else if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
            format!("wasm trap: {trap}")
        } else {
            format!("{e:#}")
                .lines()
                .next()
                .unwrap_or("unknown error")
                .to_string()
        };
        GoJsError::Trap {
            what: self.what.clone(),
            message,
        }
    }
}

/// The copy of a pending read, its buffer and callback taken through `copier` (so they stay
/// the same objects as those the copied reference table holds).
fn copy_read(copier: &mut HeapCopier, read: &PendingRead) -> PendingRead {
    PendingRead {
        buf: copier.obj(&read.buf),
        off: read.off,
        len: read.len,
        cb: copier.value(&read.cb),
    }
}

/// Writes argv and env at 4096 as wasm_exec does; returns (argc, argv pointer).
fn write_args(
    mem: &mut [u8],
    argv: &[String],
    env: &BTreeMap<String, String>,
) -> Option<(i32, i32)> {
    const START: usize = 4096;
    const LIMIT: usize = 4096 + 8192;
    let mut offset = START;
    let mut ptrs: Vec<u32> = Vec::new();
    let put = |mem: &mut [u8], s: &str, offset: &mut usize| -> Option<u32> {
        let ptr = *offset;
        let bytes = s.as_bytes();
        let end = ptr + bytes.len() + 1;
        if end > LIMIT || end > mem.len() {
            return None;
        }
        let dst = mem.get_mut(ptr..end)?;
        let (text, nul) = dst.split_at_mut(bytes.len());
        text.copy_from_slice(bytes);
        nul.fill(0);
        *offset = end.div_ceil(8) * 8;
        Some(ptr as u32)
    };
    for a in argv {
        ptrs.push(put(mem, a, &mut offset)?);
    }
    ptrs.push(0);
    for (k, v) in env {
        ptrs.push(put(mem, &format!("{k}={v}"), &mut offset)?);
    }
    ptrs.push(0);
    let argv_ptr = offset;
    for p in ptrs {
        if offset + 8 > LIMIT || offset + 8 > mem.len() {
            return None;
        }
        let entry = mem.get_mut(offset..offset + 8)?;
        let (lo, hi) = entry.split_at_mut(4);
        lo.copy_from_slice(&p.to_le_bytes());
        hi.fill(0);
        offset += 8;
    }
    if offset >= LIMIT {
        return None;
    }
    Some((argv.len() as i32, argv_ptr as i32))
}
