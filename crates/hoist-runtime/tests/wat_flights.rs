//! The flight ABI and limits, exercised with tiny hand-written modules (WAT). Go-built flights
//! are exercised end to end by the CLI tests.

use hoist_runtime::host::{ClusterAccess, HostError, LookupRequest};
use hoist_runtime::{
    Compiler, FlightEngine, FlightError, FlightOutput, FlightSpec, Limit, StderrMode, run_flight,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PRELUDE: &str = r#"
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2)
  ;; write(fd, ptr, len) through an iovec at 0
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
"#;

fn module(body: &str) -> Vec<u8> {
    wat::parse_str(format!("(module {PRELUDE} {body})")).expect("valid WAT")
}

fn spec<'a>(args: &'a [String]) -> FlightSpec<'a> {
    FlightSpec {
        what: "test.wasm",
        release: "rel",
        namespace: "ns",
        args,
        stdin: Vec::new(),
        max_memory_bytes: 16 * 1024 * 1024,
        timeout: Some(Duration::from_secs(5)),
        max_stdout_bytes: 1024 * 1024,
        stderr: StderrMode::Capture,
        cluster: None,
    }
}

fn run_with(
    wasm: &[u8],
    compiler: Compiler,
    spec: FlightSpec<'_>,
) -> Result<FlightOutput, FlightError> {
    let engine = FlightEngine::new(compiler, None).unwrap();
    let digest = "0".repeat(64);
    let loaded = engine.load(wasm, &digest, "test.wasm").unwrap();
    run_flight(&engine, &loaded, spec)
}

fn run(wasm: &[u8], spec: FlightSpec<'_>) -> Result<FlightOutput, FlightError> {
    run_with(wasm, Compiler::Winch, spec)
}

const HELLO: &str = r#"
  (data (i32.const 100) "{\"kind\":\"ConfigMap\"}")
  (data (i32.const 200) "diagnostics\n")
  (func (export "_start")
    (call $write (i32.const 1) (i32.const 100) (i32.const 20))
    (call $write (i32.const 2) (i32.const 200) (i32.const 12)))
"#;

/// Asserts that `result` stopped at the limit `which` matches, with a message naming `flag`.
fn assert_limit(result: Result<FlightOutput, FlightError>, which: fn(&Limit) -> bool, flag: &str) {
    let err = result.unwrap_err();
    assert!(
        matches!(&err, FlightError::LimitExceeded { limit, .. } if which(limit)),
        "{err:?}"
    );
    assert!(err.to_string().contains(flag), "{err}");
}

#[test]
fn stdout_is_collected_and_stderr_tail_kept_with_both_compilers() {
    let wasm = module(HELLO);
    for compiler in [Compiler::Winch, Compiler::Cranelift] {
        let out = run_with(&wasm, compiler, spec(&[])).unwrap();
        assert_eq!(out.stdout, br#"{"kind":"ConfigMap"}"#, "{compiler}");
        assert_eq!(out.stderr_tail, "diagnostics\n");
    }
}

#[test]
fn the_wat_fixture_from_testdata_runs() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/wat/hello.wat");
    let Ok(text) = std::fs::read_to_string(path) else {
        panic!("missing fixture {path}");
    };
    let wasm = wat::parse_str(text).unwrap();
    let out = run(&wasm, spec(&[])).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("ConfigMap"));
}

#[test]
fn exit_codes_are_reported_with_stderr_and_stdout_kept() {
    let wasm = module(
        r#"
        (data (i32.const 100) "partial")
        (data (i32.const 200) "boom: bad input\n")
        (func (export "_start")
          (call $write (i32.const 1) (i32.const 100) (i32.const 7))
          (call $write (i32.const 2) (i32.const 200) (i32.const 16))
          (call $proc_exit (i32.const 3)))
    "#,
    );
    match run(&wasm, spec(&[])) {
        Err(FlightError::Exit {
            code,
            stderr_tail,
            stdout,
            ..
        }) => {
            assert_eq!(code, 3);
            assert_eq!(stderr_tail, "boom: bad input\n");
            assert_eq!(stdout, b"partial");
        }
        other => panic!("expected exit 3, got {other:?}"),
    }
    let err = run(&wasm, spec(&[])).unwrap_err().to_string();
    assert!(err.contains("test.wasm exited with code 3"), "{err}");
    assert!(err.contains("boom: bad input"), "{err}");

    // proc_exit(0) is success.
    let ok = module(r#"(func (export "_start") (call $proc_exit (i32.const 0)))"#);
    assert!(run(&ok, spec(&[])).is_ok());
}

#[test]
fn traps_are_reported() {
    let wasm = module(r#"(func (export "_start") unreachable)"#);
    let err = run(&wasm, spec(&[])).unwrap_err();
    assert!(matches!(err, FlightError::Trap { .. }), "{err:?}");
    assert!(err.to_string().contains("crashed"), "{err}");
}

#[test]
fn infinite_loops_time_out_on_both_compilers() {
    let wasm = module(r#"(func (export "_start") (loop $l (br $l)))"#);
    for compiler in [Compiler::Winch, Compiler::Cranelift] {
        let mut s = spec(&[]);
        s.timeout = Some(Duration::from_millis(300));
        let started = Instant::now();
        assert_limit(
            run_with(&wasm, compiler, s),
            |l| matches!(l, Limit::Timeout { .. }),
            "--timeout",
        );
        // Generous bound: only checks that it stopped, not how fast (that is the benchmark's job).
        assert!(started.elapsed() < Duration::from_secs(30));
    }
}

#[test]
fn long_sleeps_are_cut_at_the_deadline() {
    // poll_oneoff with one relative clock subscription of one hour.
    let wasm = wat::parse_str(
        r#"(module
          (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (func (export "_start")
            (i64.store (i32.const 0) (i64.const 42))          ;; userdata
            (i32.store8 (i32.const 8) (i32.const 0))           ;; clock
            (i32.store (i32.const 16) (i32.const 1))           ;; monotonic
            (i64.store (i32.const 24) (i64.const 3600000000000)) ;; 1h
            (drop (call $poll (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 200)))))"#,
    )
    .unwrap();
    let mut s = spec(&[]);
    s.timeout = Some(Duration::from_millis(200));
    let err = run(&wasm, s).unwrap_err();
    assert!(
        matches!(
            err,
            FlightError::LimitExceeded {
                limit: Limit::Timeout { .. },
                ..
            }
        ),
        "{err:?}"
    );

    // A short sleep completes and reports its event.
    let short = wat::parse_str(
        r#"(module
          (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (func (export "_start")
            (i64.store (i32.const 0) (i64.const 42))
            (i32.store8 (i32.const 8) (i32.const 0))
            (i32.store (i32.const 16) (i32.const 1))
            (i64.store (i32.const 24) (i64.const 1000000))   ;; 1ms
            (if (call $poll (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 200))
              (then (call $exit (i32.const 10))))
            (if (i32.ne (i32.load (i32.const 200)) (i32.const 1)) (then (call $exit (i32.const 11))))
            (if (i64.ne (i64.load (i32.const 100)) (i64.const 42)) (then (call $exit (i32.const 12))))))"#,
    )
    .unwrap();
    run(&short, spec(&[])).unwrap();
}

#[test]
fn memory_hogs_hit_the_memory_limit() {
    let wasm = module(
        r#"(func (export "_start")
             (loop $grow
               (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))))"#,
    );
    let err = run(&wasm, spec(&[])).unwrap_err();
    assert!(
        matches!(err, FlightError::LimitExceeded { limit: Limit::Memory { max_bytes }, .. } if max_bytes == 16 * 1024 * 1024),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("16 MiB") && text.contains("--max-memory-mib"),
        "{text}"
    );
}

#[test]
fn modules_whose_initial_memory_exceeds_the_limit_are_stopped() {
    // 512 pages = 32 MiB initial memory against a 16 MiB cap.
    let wasm =
        wat::parse_str(r#"(module (memory (export "memory") 512) (func (export "_start")))"#)
            .unwrap();
    let err = run(&wasm, spec(&[])).unwrap_err();
    assert!(
        matches!(
            err,
            FlightError::LimitExceeded {
                limit: Limit::Memory { .. },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn floods_hit_the_stdout_cap() {
    let wasm = module(
        r#"(func (export "_start")
             (loop $again
               (call $write (i32.const 1) (i32.const 1024) (i32.const 65536))
               (br $again)))"#,
    );
    assert_limit(
        run(&wasm, spec(&[])),
        |l| matches!(l, Limit::Stdout { .. }),
        "--max-output-mib",
    );
}

#[test]
fn unknown_imports_and_missing_start_are_explained() {
    let wasm = wat::parse_str(
        r#"(module (import "env" "mystery" (func)) (memory (export "memory") 1) (func (export "_start")))"#,
    )
    .unwrap();
    let err = run(&wasm, spec(&[])).unwrap_err().to_string();
    assert!(err.contains("imports env.mystery"), "{err}");

    let gojs = wat::parse_str(
        r#"(module (import "gojs" "runtime.wasmExit" (func (param i32))) (memory (export "mem") 1) (func (export "run")))"#,
    )
    .unwrap();
    let err = run(&gojs, spec(&[])).unwrap_err().to_string();
    assert!(err.contains("GOOS=js"), "{err}");

    let reactor =
        wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_initialize")))"#)
            .unwrap();
    let err = run(&reactor, spec(&[])).unwrap_err();
    assert!(matches!(err, FlightError::NoStart { .. }), "{err:?}");
}

/// A module that calls host.k8s_lookup and prints the state and the result buffer.
const LOOKUP: &str = r#"(module
  (import "host" "k8s_lookup" (func $lookup (param i32 i64 i64 i64 i64) (result i64)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 100) "web")       ;; name
  (data (i32.const 110) "prod")      ;; namespace
  (data (i32.const 120) "Deployment") ;; kind
  (data (i32.const 140) "apps/v1")   ;; apiVersion
  (func (export "malloc") (param $size i32) (result i64)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $size))))
  (func (export "_start")
    (local $buf i64)
    (i32.store (i32.const 50) (i32.const 0))
    (local.set $buf (call $lookup (i32.const 50)
      (i64.or (i64.shl (i64.const 100) (i64.const 32)) (i64.const 3))
      (i64.or (i64.shl (i64.const 110) (i64.const 32)) (i64.const 4))
      (i64.or (i64.shl (i64.const 120) (i64.const 32)) (i64.const 10))
      (i64.or (i64.shl (i64.const 140) (i64.const 32)) (i64.const 7))))
    ;; stdout: one byte state ('0' + state), then the buffer
    (i32.store8 (i32.const 60) (i32.add (i32.const 48) (i32.load (i32.const 50))))
    (i32.store (i32.const 0) (i32.const 60))
    (i32.store (i32.const 4) (i32.const 1))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 0) (i32.wrap_i64 (i64.shr_u (local.get $buf) (i64.const 32))))
    (i32.store (i32.const 4) (i32.wrap_i64 (local.get $buf)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

struct FakeCluster;

impl ClusterAccess for FakeCluster {
    fn lookup(&self, request: &LookupRequest) -> Result<Vec<u8>, HostError> {
        if request.namespace == "prod" {
            Ok(format!(
                r#"{{"kind":"{}","apiVersion":"{}","metadata":{{"name":"{}"}}}}"#,
                request.kind, request.api_version, request.name
            )
            .into_bytes())
        } else {
            Err(HostError::NotFound(request.name.clone()))
        }
    }
    fn rest_mapping(&self, _: &str, _: &str) -> Result<Vec<u8>, HostError> {
        Err(HostError::Forbidden("no".into()))
    }
}

#[test]
fn host_lookups_without_access_answer_feature_not_granted() {
    let wasm = wat::parse_str(LOOKUP).unwrap();
    let out = run(&wasm, spec(&[])).unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with('1'),
        "state 1 = feature not granted: {text}"
    );
    assert!(text.contains("feature not granted"), "{text}");
}

#[test]
fn host_lookups_with_access_return_json_through_guest_malloc() {
    let wasm = wat::parse_str(LOOKUP).unwrap();
    let mut s = spec(&[]);
    s.cluster = Some(Arc::new(FakeCluster));
    let out = run(&wasm, s).unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text,
        r#"0{"kind":"Deployment","apiVersion":"apps/v1","metadata":{"name":"web"}}"#
    );
}
