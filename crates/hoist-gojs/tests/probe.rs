//! The Go js/wasm host against a real Go program (`testdata/krm/gojs-probe`, built here with
//! the Go toolchain): re-entrant calls, memory growth during a call, exceptions, timers,
//! values, exit, limits.

use hoist_gojs::{GoInstance, GoJsError, GoOptions, Value};
use hoist_runtime::{Compiler, FlightEngine, Limit};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

fn probe() -> Option<&'static (FlightEngine, wasmtime::Module)> {
    static PROBE: OnceLock<Option<(FlightEngine, wasmtime::Module)>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/krm/gojs-probe");
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gojs-probe.wasm");
            let fresh = |p: &Path| {
                let src_time = std::fs::metadata(src.join("main.go")).and_then(|m| m.modified());
                let out_time = std::fs::metadata(p).and_then(|m| m.modified());
                matches!((src_time, out_time), (Ok(s), Ok(o)) if o > s)
            };
            if !fresh(&out) {
                let go = std::env::var("GO").unwrap_or_else(|_| "go".into());
                let status = Command::new(&go)
                    .args(["build", "-o"])
                    .arg(&out)
                    .arg(".")
                    .current_dir(&src)
                    .env("GOOS", "js")
                    .env("GOARCH", "wasm")
                    .status();
                match status {
                    Ok(s) if s.success() => {}
                    other => {
                        let msg =
                            format!("cannot build testdata/krm/gojs-probe with {go}: {other:?}");
                        if std::env::var("CI").as_deref() == Ok("true") {
                            panic!("{msg}");
                        }
                        eprintln!("skipping: {msg}");
                        return None;
                    }
                }
            }
            let engine = FlightEngine::new(Compiler::Cranelift, None).expect("engine");
            let wasm = std::fs::read(&out).expect("read probe");
            let module = wasmtime::Module::new(engine.engine(), wasm).expect("compile probe");
            Some((engine, module))
        })
        .as_ref()
}

/// The probe with its globals exported (`hoist_gojs::export_globals`), for snapshots.
fn probe_with_globals() -> Option<&'static wasmtime::Module> {
    static MODULE: OnceLock<Option<wasmtime::Module>> = OnceLock::new();
    MODULE
        .get_or_init(|| {
            let (engine, _) = probe()?;
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gojs-probe.wasm");
            let wasm = std::fs::read(out).expect("read probe");
            let rewritten = hoist_gojs::export_globals(&wasm).expect("a Go module has globals");
            Some(wasmtime::Module::new(engine.engine(), rewritten).expect("compile"))
        })
        .as_ref()
}

fn start_module(module: &wasmtime::Module, options: GoOptions) -> Option<GoInstance> {
    let (engine, _) = probe()?;
    let mut go =
        GoInstance::start(engine.engine(), module, "gojs-probe", options).expect("start probe");
    go.run_until(Some("exits")).expect("run timers");
    Some(go)
}

fn start(options: GoOptions) -> Option<GoInstance> {
    let (engine, module) = probe()?;
    let mut go =
        GoInstance::start(engine.engine(), module, "gojs-probe", options).expect("start probe");
    // main sleeps on a timer before registering its functions.
    go.run_until(Some("exits")).expect("run timers");
    Some(go)
}

fn call(go: &mut GoInstance, name: &str, args: Vec<Value>) -> String {
    go.call(name, args)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .to_js_string()
}

#[test]
fn function_calls_keep_stdout_and_stderr_out_of_results() {
    let Some(mut go) = start(GoOptions::default()) else {
        return;
    };
    assert_eq!(go.exit_code(), None, "main blocks after registering");
    assert!(go.has_function("echo"));
    assert!(!go.has_function("nope"));
    for i in 0..50 {
        assert_eq!(
            call(&mut go, "echo", vec![Value::string(&format!("x{i}"))]),
            format!("echo:x{i}")
        );
    }
    let stdout = String::from_utf8(go.take_stdout()).unwrap();
    let stderr = String::from_utf8(go.take_stderr()).unwrap();
    assert_eq!(stdout, "to stdout\n".repeat(50));
    assert_eq!(stderr, "to stderr\n".repeat(50));
}

#[test]
fn memory_growth_during_a_call_is_seen() {
    let Some(mut go) = start(GoOptions::default()) else {
        return;
    };
    let before = go.memory_size();
    let out = call(
        &mut go,
        "grow",
        vec![Value::Number(64.0), Value::string("abc")],
    );
    assert!(go.memory_size() > before + (32 << 20), "memory grew");
    assert_eq!(out, "abc".repeat(1000));
    // And again, with the grown memory.
    let out = call(
        &mut go,
        "grow",
        vec![Value::Number(8.0), Value::string("é")],
    );
    assert_eq!(out, "é".repeat(1000));
}

#[test]
fn exceptions_become_js_errors_and_values_round_trip() {
    let Some(mut go) = start(GoOptions::default()) else {
        return;
    };
    let out = call(&mut go, "throws", vec![]);
    assert!(out.starts_with("caught: JavaScript error: "), "{out}");
    assert!(out.contains("not implemented"), "{out}");
    let out = call(&mut go, "values", vec![]);
    assert_eq!(
        out,
        "n=1.5 b=true s=str len=4 a1=two a2=true a3=false bytes=[1 2 3 250] inst=true same=true type=function pid=1"
    );
    assert_eq!(call(&mut go, "sleepy", vec![]), "slept true");
}

#[test]
fn panics_and_exits_end_the_program_with_a_clear_error() {
    let Some(mut go) = start(GoOptions::default()) else {
        return;
    };
    let e = go.call("panics", vec![Value::string("boom")]).unwrap_err();
    assert!(
        matches!(e, GoJsError::ExitedDuringCall { code: 2, .. }),
        "{e}"
    );
    let stderr = String::from_utf8(go.take_stderr()).unwrap();
    assert!(stderr.contains("panic: probe panic: boom"), "{stderr}");
    let e = go.call("echo", vec![Value::string("x")]).unwrap_err();
    assert!(matches!(e, GoJsError::AlreadyExited { code: 2, .. }), "{e}");

    let Some(mut go) = start(GoOptions::default()) else {
        return;
    };
    let e = go.call("exits", vec![Value::Number(7.0)]).unwrap_err();
    assert!(
        matches!(e, GoJsError::ExitedDuringCall { code: 7, .. }),
        "{e}"
    );
}

#[test]
fn command_style_reads_stdin_and_exits() {
    let Some(mut go) = start(GoOptions {
        argv: vec!["js".into(), "command".into()],
        stdin: b"hello, command mode\n".repeat(100),
        ..GoOptions::default()
    }) else {
        return;
    };
    // The program may still be waiting on its first timer.
    let exited = go.run_until_idle().unwrap();
    assert!(exited);
    assert_eq!(go.exit_code(), Some(3));
    assert_eq!(
        String::from_utf8(go.take_stdout()).unwrap(),
        "HELLO, COMMAND MODE\n".repeat(100)
    );
    assert_eq!(
        String::from_utf8(go.take_stderr()).unwrap(),
        "command done\n"
    );
}

/// A command paused at its first read of stdin (reads deferred, as node's `fs.read` is) is
/// snapshotted there; restoring it, even after the program exited, and completing the read
/// with another stdin gives what a fresh start on that stdin gives.
#[test]
fn a_command_snapshotted_at_its_first_read_of_stdin_runs_again_on_new_input() {
    let (Some((engine, plain)), Some(module)) = (probe(), probe_with_globals()) else {
        return;
    };
    let options = |stdin: &[u8]| GoOptions {
        argv: vec!["js".into(), "command".into()],
        stdin: stdin.to_vec(),
        defer_stdin: true,
        ..GoOptions::default()
    };
    let first = b"first input, read in 7-byte chunks\n".repeat(20);
    let mut go = GoInstance::start(engine.engine(), module, "gojs-probe", options(&first))
        .expect("start probe");
    // main sleeps on a timer, then reads stdin.
    assert!(!go.run_until_stdin(None).unwrap());
    assert!(go.waiting_for_stdin(), "paused at the read of stdin");
    assert_eq!(go.stdin_read(), 0);
    let snap = go.snapshot().expect("snapshot at the first read");
    assert!(snap.at_stdin_read());
    assert!(go.run_until_idle().unwrap());
    assert_eq!(go.exit_code(), Some(3));
    assert_eq!(
        go.take_stdout(),
        String::from_utf8_lossy(&first).to_uppercase().into_bytes()
    );
    assert_eq!(go.take_stderr(), b"command done\n");
    for (i, stdin) in [
        b"second".to_vec(),
        Vec::new(),
        b"third, longer: ".repeat(500),
        first.clone(),
    ]
    .into_iter()
    .enumerate()
    {
        go.restore(&snap, stdin.clone())
            .expect("restore after exit");
        assert_eq!(go.exit_code(), None, "restored before the exit");
        assert!(go.waiting_for_stdin());
        assert!(go.run_until_idle().unwrap(), "{i}");
        // The same stdin on a fresh start, reads completed synchronously.
        let mut fresh = GoInstance::start(
            engine.engine(),
            plain,
            "gojs-probe",
            GoOptions {
                defer_stdin: false,
                ..options(&stdin)
            },
        )
        .expect("start probe");
        assert!(fresh.run_until_idle().unwrap());
        assert_eq!(go.exit_code(), fresh.exit_code(), "{i}");
        let out = go.take_stdout();
        assert_eq!(out, fresh.take_stdout(), "{i}");
        assert_eq!(
            out,
            String::from_utf8_lossy(&stdin).to_uppercase().into_bytes()
        );
        assert_eq!(go.take_stderr(), fresh.take_stderr(), "{i}");
    }
    // Output before the first read, or a module without exported globals: no snapshot there.
    let mut go = GoInstance::start(engine.engine(), plain, "gojs-probe", options(b"x"))
        .expect("start probe");
    assert!(!go.run_until_stdin(None).unwrap());
    assert!(go.waiting_for_stdin());
    assert_eq!(
        go.snapshot().unwrap_err(),
        hoist_gojs::Unsnapshottable::NoGlobals
    );
}

#[test]
fn limits_stop_runaway_functions() {
    let Some(mut go) = start(GoOptions {
        timeout: Some(Duration::from_millis(1500)),
        ..GoOptions::default()
    }) else {
        return;
    };
    let e = go.call("spin", vec![]).unwrap_err();
    assert!(
        matches!(
            e,
            GoJsError::Limit {
                limit: Limit::Timeout { .. },
                ..
            }
        ),
        "{e}"
    );

    let Some(mut go) = start(GoOptions {
        max_memory_bytes: 48 << 20,
        ..GoOptions::default()
    }) else {
        return;
    };
    let e = go
        .call("grow", vec![Value::Number(200.0), Value::string("x")])
        .unwrap_err();
    assert!(
        matches!(
            e,
            GoJsError::Limit {
                limit: Limit::Memory { .. },
                ..
            }
        ) || matches!(e, GoJsError::ExitedDuringCall { .. }),
        "{e}"
    );
}

/// Options with a 48 MiB memory limit (linear memory and JS heap alike).
fn limited() -> GoOptions {
    GoOptions {
        max_memory_bytes: 48 << 20,
        ..GoOptions::default()
    }
}

/// Runs each call on a fresh probe under [`limited`] and checks that it stops with the
/// memory-limit error; false when the probe cannot be built (the test is skipped).
fn each_hits_the_memory_limit(calls: &[(&str, Vec<Value>)]) -> bool {
    for (name, args) in calls {
        let Some(mut go) = start(limited()) else {
            return false;
        };
        let e = go.call(name, args.clone()).unwrap_err();
        assert!(
            matches!(
                e,
                GoJsError::Limit {
                    limit: Limit::Memory { .. },
                    ..
                }
            ),
            "{name}{args:?}: {e}"
        );
    }
    true
}

/// Arrays and typed arrays live in the host, outside Go's linear memory; they are held to
/// the same limit, so a function cannot make hoist allocate gigabytes with one number.
#[test]
fn js_arrays_count_against_the_memory_limit() {
    let n = Value::Number;
    let over: [(&str, Vec<Value>); 4] = [
        // One array of 16M items: 400 MB of values.
        ("hoard", vec![n(1.0), n(16_777_216.0), Value::Bool(false)]),
        // 200 arrays of 100,000 items (2.4 MB each) or 200 typed arrays of 1 MB.
        ("hoard", vec![n(200.0), n(100_000.0), Value::Bool(false)]),
        ("hoard", vec![n(200.0), n(1_000_000.0), Value::Bool(true)]),
        // One array grown to 4M items by assignment.
        ("stretch", vec![n(4_000_000.0)]),
    ];
    if !each_hits_the_memory_limit(&over) {
        return;
    }
    // Under the limit the same functions run.
    let Some(mut go) = start(limited()) else {
        return;
    };
    let kept = go
        .call("hoard", vec![n(10.0), n(100_000.0), Value::Bool(false)])
        .unwrap();
    assert_eq!(kept.as_number(), Some(10.0));
    let len = go.call("stretch", vec![n(100_000.0)]).unwrap();
    assert_eq!(len.as_number(), Some(100_000.0));
}

/// Strings and property names are host memory too: a guest can keep any number of them
/// (each within its own memory's size), so they count against the same limit, and deleting
/// a property gives its share back.
#[test]
fn js_strings_and_property_names_count_against_the_memory_limit() {
    let n = Value::Number;
    let over: [(&str, Vec<Value>); 3] = [
        // 200 strings of 1 MB, each made and dropped by Go in turn: 200 MB in the host.
        ("hoardStrings", vec![n(200.0), n(1_000_000.0)]),
        // 200 property names of 1 MB on one object.
        (
            "hoardNames",
            vec![n(200.0), n(1_000_000.0), Value::Bool(false)],
        ),
        // 1M short names: the map entries are what weigh.
        (
            "hoardNames",
            vec![n(1_000_000.0), n(0.0), Value::Bool(false)],
        ),
    ];
    if !each_hits_the_memory_limit(&over) {
        return;
    }
    // Under the limit the same functions run; names deleted as they go are given back, so
    // the same 200 MB of names set and deleted in rounds of 20 fits.
    let Some(mut go) = start(limited()) else {
        return;
    };
    let kept = go
        .call("hoardStrings", vec![n(10.0), n(1_000_000.0)])
        .unwrap();
    assert_eq!(kept.as_number(), Some(10.0));
    for _ in 0..10 {
        let set = go
            .call(
                "hoardNames",
                vec![n(20.0), n(1_000_000.0), Value::Bool(true)],
            )
            .unwrap();
        assert_eq!(set.as_number(), Some(20.0));
    }
}

/// Objects that hold each other are freed with their instance: the JS heap is reference
/// counted, which frees no cycle, and the global object holds itself (`globalThis`). Before
/// the value table emptied its objects on drop, each instance kept its whole JS heap (and
/// whatever arrays a guest had hung on it) until the process ended.
#[test]
fn cycles_in_the_js_heap_are_freed_with_the_instance() {
    let Some(mut go) = start(GoOptions::default()) else {
        return;
    };
    let made = go
        .call(
            "cycles",
            vec![Value::Number(100.0), Value::Number(10_000.0)],
        )
        .unwrap();
    assert_eq!(made.as_number(), Some(100.0));
    let (global, ring_a, ring_b, array) = {
        let (global, ring) = (go.global("globalThis"), go.global("lastRing"));
        let (Some(global), Some(ring)) = (global.as_object(), ring.as_object()) else {
            panic!("the probe set globalThis and lastRing: {global:?} {ring:?}");
        };
        let b = ring.get("b");
        let b = b.as_object().expect("a ring's b");
        let array = b.get("arr");
        let array = array.as_object().expect("a ring's array");
        (
            global.downgrade(),
            ring.downgrade(),
            b.downgrade(),
            array.downgrade(),
        )
    };
    drop(made);
    assert!(global.is_alive() && ring_a.is_alive() && ring_b.is_alive() && array.is_alive());
    drop(go);
    for (what, weak) in [
        ("the global object", &global),
        ("a ring's first object", &ring_a),
        ("a ring's second object", &ring_b),
        ("an array that holds itself", &array),
    ] {
        assert!(!weak.is_alive(), "{what} outlived its instance");
    }
}

#[test]
fn non_go_modules_are_refused() {
    let engine = FlightEngine::new(Compiler::Cranelift, None).unwrap();
    let wasm = wat::parse_str(r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func (param i32))) (memory (export "memory") 1) (func (export "_start")))"#).unwrap();
    let module = wasmtime::Module::new(engine.engine(), wasm).unwrap();
    assert!(!hoist_gojs::is_go_js(&module));
    let e = GoInstance::start(engine.engine(), &module, "m.wasm", GoOptions::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("not a Go js/wasm module"), "{e}");
    let wasm = wat::parse_str(r#"(module (import "gojs" "runtime.fancyNew" (func (param i32))) (memory (export "mem") 1))"#).unwrap();
    let module = wasmtime::Module::new(engine.engine(), wasm).unwrap();
    let e = GoInstance::start(engine.engine(), &module, "m.wasm", GoOptions::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("runtime.fancyNew"), "{e}");
}

/// A snapshot taken after `main` registered its functions puts the instance back into that
/// state: Go globals, JS objects Go holds, the JS global object, memory grown since, and
/// output buffers are all as after a fresh start, call after call.
#[test]
fn a_restored_snapshot_is_a_fresh_start_for_every_call() {
    let Some(module) = probe_with_globals() else {
        return;
    };
    let Some(mut go) = start_module(module, GoOptions::default()) else {
        return;
    };
    let snap = go.snapshot().expect("snapshot after main");
    assert!(snap.memory_bytes() >= go.memory_size().min(1 << 20));
    let live = go.live_values();
    // Without a restore, state carries over.
    assert_eq!(
        call(&mut go, "counter", vec![Value::string("a")]),
        "1:a:none"
    );
    assert_eq!(call(&mut go, "counter", vec![Value::string("b")]), "2:b:a");
    assert!(go.global("lastCounter").as_object().is_some());
    // Grow memory so that the restore must clear what the call left beyond the snapshot.
    call(
        &mut go,
        "grow",
        vec![Value::Number(24.0), Value::string("g")],
    );
    assert!(go.memory_size() > snap.memory_bytes());
    for i in 0..20 {
        go.restore(&snap, Vec::new()).expect("restore");
        assert!(matches!(go.global("lastCounter"), Value::Undefined));
        assert_eq!(
            go.live_values(),
            live,
            "the reference table is the snapshot's"
        );
        let arg = format!("x{i}");
        assert_eq!(
            call(&mut go, "counter", vec![Value::string(&arg)]),
            format!("1:{arg}:none")
        );
        assert_eq!(String::from_utf8(go.take_stderr()).unwrap(), "counter 1\n");
    }
    // Every function gives what it gives on a fresh start, timers and memory growth included.
    let Some(mut fresh) = start(GoOptions::default()) else {
        return;
    };
    for (name, args) in [
        ("values", vec![]),
        ("throws", vec![]),
        ("sleepy", vec![]),
        ("echo", vec![Value::string("same")]),
        (
            "grow",
            vec![Value::Number(40.0), Value::string("after restore")],
        ),
    ] {
        go.restore(&snap, Vec::new()).expect("restore");
        let got = call(&mut go, name, args.clone());
        let want = call(&mut fresh, name, args);
        assert_eq!(got, want, "{name}");
        assert_eq!(go.take_stdout(), fresh.take_stdout(), "{name} stdout");
        assert_eq!(go.take_stderr(), fresh.take_stderr(), "{name} stderr");
    }
    // An exit ends it: the instance cannot be restored, nor snapshotted.
    go.restore(&snap, Vec::new()).expect("restore");
    // The last call grew memory: the restore made a new instance at the snapshot's size
    // (Go would otherwise grow it again on every call).
    assert_eq!(go.memory_size(), snap.memory_bytes());
    assert!(go.call("exits", vec![Value::Number(4.0)]).is_err());
    assert_eq!(
        go.restore(&snap, Vec::new()).unwrap_err(),
        hoist_gojs::Unsnapshottable::Exited
    );
    assert_eq!(
        go.snapshot().unwrap_err(),
        hoist_gojs::Unsnapshottable::Exited
    );
}

/// Without exported globals a snapshot is restored only where Go paused at the same stack
/// pointer; a call that grew the handler goroutine's stack moves it, and the restore refuses.
#[test]
fn without_exported_globals_a_moved_stack_refuses_the_restore() {
    let Some(mut go) = start(GoOptions::default()) else {
        return;
    };
    let snap = go.snapshot().expect("snapshot after main");
    assert_eq!(
        call(&mut go, "counter", vec![Value::string("a")]),
        "1:a:none"
    );
    match go.restore(&snap, Vec::new()) {
        Err(hoist_gojs::Unsnapshottable::Moved { .. }) => {}
        Ok(()) => assert_eq!(
            call(&mut go, "counter", vec![Value::string("b")]),
            "1:b:none"
        ),
        Err(e) => panic!("unexpected: {e}"),
    }
}
