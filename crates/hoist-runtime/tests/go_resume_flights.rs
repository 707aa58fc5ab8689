//! Resuming a real Go `GOOS=wasip1` module (the `echo` test flight, built by
//! scripts/build-testdata) from its first read of stdin gives exactly what fresh runs give.

use hoist_runtime::{
    Compiler, FlightEngine, FlightError, FlightOutput, FlightSpec, GoResumeCache, StderrMode,
    run_flight, run_flight_resumable,
};
use std::path::PathBuf;
use std::time::Duration;

fn echo_wasm() -> Option<Vec<u8>> {
    let dir = std::env::var_os("HOIST_TESTDATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/testdata"));
    let path = dir.join("echo.wasm");
    match std::fs::read(&path) {
        Ok(wasm) => Some(wasm),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "{} is missing: run scripts/build-testdata echo",
                path.display()
            )
        }
        Err(_) => {
            eprintln!(
                "skipping: {} is not built (scripts/build-testdata echo)",
                path.display()
            );
            None
        }
    }
}

fn spec<'a>(args: &'a [String], stdin: &str) -> FlightSpec<'a> {
    FlightSpec {
        what: "echo.wasm",
        release: "rel",
        namespace: "ns",
        args,
        stdin: stdin.as_bytes().to_vec(),
        max_memory_bytes: 512 << 20,
        timeout: Some(Duration::from_secs(60)),
        max_stdout_bytes: 16 << 20,
        stderr: StderrMode::Capture,
        cluster: None,
    }
}

/// What a test compares: stdout, and the exit code when the flight failed.
fn outcome(result: Result<FlightOutput, FlightError>) -> (Vec<u8>, i32) {
    match result {
        Ok(out) => (out.stdout, 0),
        Err(FlightError::Exit { code, stdout, .. }) => (stdout, code),
        Err(e) => panic!("the flight failed: {e}"),
    }
}

#[test]
fn resumed_runs_print_what_fresh_runs_print() {
    let Some(wasm) = echo_wasm() else { return };
    let engine = FlightEngine::new(Compiler::Winch, None).unwrap();
    let loaded = engine.load(&wasm, &"0".repeat(64), "echo.wasm").unwrap();
    assert!(
        hoist_runtime::go_resume::GoLayout::of(&loaded.module).is_some(),
        "a Go wasip1 module is compiled with the resume exports"
    );
    let cache = GoResumeCache::new();
    let plain: Vec<String> = vec![];
    let failing: Vec<String> = vec![
        "--exit".into(),
        "3".into(),
        "--format".into(),
        "yaml".into(),
    ];
    let big = "x".repeat(300_000);
    let inputs = [
        "",
        "first input",
        "second\ninput\n",
        big.as_str(),
        "ünïcødé",
    ];
    for args in [&plain, &failing] {
        for (i, stdin) in inputs.iter().enumerate() {
            let fresh = outcome(run_flight(&engine, &loaded, spec(args, stdin)));
            let resumed = outcome(run_flight_resumable(
                &engine,
                &loaded,
                spec(args, stdin),
                &cache,
            ));
            assert_eq!(
                String::from_utf8_lossy(&fresh.0),
                String::from_utf8_lossy(&resumed.0),
                "input {i}, args {args:?}"
            );
            assert_eq!(fresh.1, resumed.1, "exit code, input {i}, args {args:?}");
            assert!(
                String::from_utf8_lossy(&fresh.0).contains(&stdin.replace('\n', "\\n")),
                "the flight echoed its stdin"
            );
        }
    }
    // Per argv: the first run takes the point (and verifies it), the other four resume.
    assert_eq!(cache.resumed(), 8);
}
