//! Command-style Go js/wasm functions (no `processResourceList`: stdin -> stdout through
//! `fs`) snapshotted at their first read of stdin: the real kpt catalog set-annotations built
//! for js/wasm (`scripts/test.d/krm.sh` builds it into `$HOIST_KRM_FUNCTIONS_DIR`) gives
//! byte-identical outputs on several different inputs with the snapshot and with a fresh
//! start for every call, and the snapshot path really serves the later calls; its wasip1
//! build the same through resume points.

use hoist_krm::function::{self, FnKind, FnLimits, FnOutput, SnapshotSource};
use hoist_runtime::{Compiler, FlightEngine, LoadedModule};
use std::path::PathBuf;

fn functions_dir() -> Option<PathBuf> {
    match std::env::var_os("HOIST_KRM_FUNCTIONS_DIR") {
        Some(d) => Some(PathBuf::from(d)),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "HOIST_KRM_FUNCTIONS_DIR is not set: scripts/test.d/krm.sh builds the kpt catalog functions"
            )
        }
        None => {
            eprintln!(
                "skipping: HOIST_KRM_FUNCTIONS_DIR is not set (scripts/test.d/krm.sh builds the kpt catalog functions)"
            );
            None
        }
    }
}

fn input(n: usize, team: &str) -> Vec<u8> {
    let items: String = (0..n)
        .map(|i| {
            format!(
                "- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: cm-{team}-{i}\n    namespace: ns-{i}\n    annotations:\n      config.kubernetes.io/path: cm-{i}.yaml\n  data:\n    key: value-{i}\n"
            )
        })
        .collect();
    // A Kptfile (as render passes it) sends kyaml down its schema path for unknown kinds,
    // which grows memory a lot: later restores must not carry that growth along.
    let kptfile = if n % 2 == 1 {
        format!(
            "- apiVersion: kpt.dev/v1\n  kind: Kptfile\n  metadata:\n    name: pkg-{team}\n    annotations:\n      config.kubernetes.io/path: Kptfile\n  pipeline:\n    mutators:\n    - image: set-namespace:v0.4.1\n"
        )
    } else {
        String::new()
    };
    format!(
        "apiVersion: config.kubernetes.io/v1\nkind: ResourceList\nitems:\n{kptfile}{items}functionConfig:\n  apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: fn-config\n  data:\n    team: {team}\n    tier: t{n}\n"
    )
    .into_bytes()
}

/// The module run afresh on every input (no snapshot source); each run must succeed as a
/// `kind` function and print a ResourceList.
fn fresh_runs(
    engine: &FlightEngine,
    module: &LoadedModule,
    what: &str,
    kind: FnKind,
    inputs: &[Vec<u8>],
) -> Vec<FnOutput> {
    let fresh: Vec<_> = inputs
        .iter()
        .map(|i| {
            function::run_wasm(engine, module, what, i, FnLimits::default()).expect("fresh run")
        })
        .collect();
    for (i, out) in fresh.iter().enumerate() {
        assert_eq!(out.kind, kind, "{i}");
        assert_eq!(out.exit_code, 0, "{i}: {}", out.stderr);
        let text = String::from_utf8_lossy(&out.output);
        assert!(text.contains("kind: ResourceList"), "{i}: {text}");
    }
    fresh
}

/// The module run on every input with `source` (snapshots or resume points on) must give
/// exactly the fresh runs' outputs, exit codes and stderr.
fn assert_runs_match_fresh(
    engine: &FlightEngine,
    module: &LoadedModule,
    source: &SnapshotSource<'_>,
    what: &str,
    inputs: &[Vec<u8>],
    fresh: &[FnOutput],
) {
    for (i, (inp, want)) in inputs.iter().zip(fresh).enumerate() {
        let got =
            function::run_wasm_keyed(engine, module, Some(source), what, inp, FnLimits::default())
                .expect("run with a snapshot source");
        assert_eq!(got.kind, want.kind, "{i}");
        assert_eq!(got.exit_code, want.exit_code, "{i}");
        assert_eq!(
            String::from_utf8_lossy(&got.output),
            String::from_utf8_lossy(&want.output),
            "{i}"
        );
        assert_eq!(got.stderr, want.stderr, "{i}");
    }
}

#[test]
fn set_annotations_js_command_snapshot_gives_fresh_start_outputs() {
    let Some(dir) = functions_dir() else { return };
    let path = dir.join("set-annotations.wasm");
    let wasm = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (rerun scripts/test.d/krm.sh)", path.display()));
    let engine = FlightEngine::new(Compiler::Winch, None).expect("engine");
    let digest = "set-annotations-js-test";
    let module = engine
        .load(&wasm, digest, "set-annotations.wasm")
        .expect("compile set-annotations");
    let rewritten = hoist_gojs::export_globals(&wasm).expect("a Go module has globals");
    let instrumented = engine
        .load(
            &rewritten,
            "set-annotations-js-test-ready",
            "set-annotations (ready)",
        )
        .expect("compile the snapshot-ready form");
    let ready = || -> Option<(&FlightEngine, LoadedModule)> {
        Some((
            &engine,
            LoadedModule {
                module: instrumented.module.clone(),
                cache_status: instrumented.cache_status,
                load_time: instrumented.load_time,
                compiler: instrumented.compiler,
            },
        ))
    };
    let inputs: Vec<Vec<u8>> = [
        (3, "payments"),
        (1, "search"),
        (12, "ops"),
        (3, "payments"),
        (7, "web"),
    ]
    .iter()
    .map(|(n, team)| input(*n, team))
    .collect();

    // Fresh starts (no snapshot source).
    let fresh = fresh_runs(
        &engine,
        &module,
        "set-annotations",
        FnKind::GoJsCommand,
        &inputs,
    );
    let text0 = String::from_utf8_lossy(&fresh[0].output);
    assert!(
        text0.contains("team: payments") && text0.contains("cm-payments-2"),
        "{text0}"
    );
    assert_ne!(fresh[0].output, fresh[1].output);

    // With the snapshot: the first call starts the module as is, the second starts its
    // snapshot-ready form and snapshots it at the read of stdin, the others restore (the
    // third first verifies the snapshot by replaying the second's input).
    function::set_snapshots_enabled(true);
    function::clear_snapshots();
    let before = function::stdin_snapshot_restores();
    let source = SnapshotSource {
        digest,
        instrumented: &ready,
        wasi_resume: None,
    };
    assert_runs_match_fresh(
        &engine,
        &module,
        &source,
        "set-annotations",
        &inputs,
        &fresh,
    );
    assert_eq!(
        function::stdin_snapshot_restores() - before,
        inputs.len() - 2,
        "every call after the second is served from the snapshot at the first read of stdin"
    );
    function::clear_snapshots();
}

/// The same for the `GOOS=wasip1` build of set-annotations: later calls resume from the
/// state the first reached at its first read of stdin (`hoist_runtime::run_flight_resumable`),
/// with outputs byte-identical to fresh runs.
#[test]
fn set_annotations_wasip1_resume_gives_fresh_start_outputs() {
    let Some(dir) = functions_dir() else { return };
    let path = dir.join("set-annotations.wasip1.wasm");
    let wasm = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (rerun scripts/test.d/krm.sh)", path.display()));
    let engine = FlightEngine::new(Compiler::Winch, None).expect("engine");
    let module = engine
        .load(
            &wasm,
            "set-annotations-wasip1-test",
            "set-annotations.wasip1.wasm",
        )
        .expect("compile set-annotations.wasip1");
    let inputs: Vec<Vec<u8>> = [(2, "payments"), (9, "search"), (1, "ops"), (2, "payments")]
        .iter()
        .map(|(n, team)| input(*n, team))
        .collect();
    let fresh = fresh_runs(
        &engine,
        &module,
        "set-annotations-wasi",
        FnKind::Wasi,
        &inputs,
    );
    let text1 = String::from_utf8_lossy(&fresh[1].output);
    assert!(
        text1.contains("team: search") && text1.contains("cm-search-8"),
        "{text1}"
    );
    function::set_snapshots_enabled(true);
    let caches = function::GoResumeCaches::default();
    let cache = caches.for_digest("set-annotations-wasip1-test");
    let none = || -> Option<(&FlightEngine, LoadedModule)> { None };
    let source = SnapshotSource {
        digest: "set-annotations-wasip1-test",
        instrumented: &none,
        wasi_resume: Some(&cache),
    };
    assert_runs_match_fresh(
        &engine,
        &module,
        &source,
        "set-annotations-wasi",
        &inputs,
        &fresh,
    );
    assert_eq!(cache.resumed(), inputs.len() - 1, "later calls resume");
    assert_eq!(caches.resumed(), inputs.len() - 1);
}
