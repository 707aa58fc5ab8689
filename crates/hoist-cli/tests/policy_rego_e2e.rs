//! Rego modules hoist must refuse clearly. `opa build -t wasm` refuses to build a module
//! without an entrypoint, so the module here is a small WAT module with OPA's complete Wasm
//! ABI (every export hoist needs) whose `entrypoints()` is the empty object.

mod common;

use common::{Hoist, stderr};

/// OPA's ABI with `builtins()` and `entrypoints()` both `{}` (a bump allocator; the JSON
/// functions answer only what instantiation asks).
const NO_ENTRYPOINT: &str = r#"(module
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 1024) "{}\00")
  (func (export "opa_malloc") (param $n i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $at))
  (func (export "opa_json_parse") (param i32 i32) (result i32) (i32.const 1024))
  (func (export "opa_json_dump") (param i32) (result i32) (i32.const 1024))
  (func (export "opa_heap_ptr_get") (result i32) (global.get $heap))
  (func (export "opa_heap_ptr_set") (param i32) (global.set $heap (local.get 0)))
  (func (export "eval") (param i32) (result i32) (i32.const 0))
  (func (export "opa_eval_ctx_new") (result i32) (i32.const 2048))
  (func (export "opa_eval_ctx_set_input") (param i32 i32))
  (func (export "opa_eval_ctx_set_data") (param i32 i32))
  (func (export "opa_eval_ctx_set_entrypoint") (param i32 i32))
  (func (export "opa_eval_ctx_get_result") (param i32) (result i32) (i32.const 1024))
  (func (export "builtins") (result i32) (i32.const 1024))
  (func (export "entrypoints") (result i32) (i32.const 1024)))
"#;

const REQUEST: &str = r#"{"uid":"r1","kind":{"group":"","version":"v1","kind":"Service"},
"resource":{"group":"","version":"v1","resource":"services"},"operation":"CREATE",
"userInfo":{"username":"u"},"object":{"apiVersion":"v1","kind":"Service","metadata":{"name":"s"}}}"#;

#[test]
fn a_rego_module_without_an_entrypoint_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("no-entrypoint.wasm");
    std::fs::write(&module, wat::parse_str(NO_ENTRYPOINT).unwrap()).unwrap();
    let request = dir.path().join("request.json");
    std::fs::write(&request, REQUEST).unwrap();
    let hoist = Hoist::new();
    for mode in ["opa", "gatekeeper"] {
        for command in ["run", "bench"] {
            let mut cmd = hoist.cmd();
            cmd.args(["policy", command, "-e", mode, "-r"])
                .arg(&request)
                .arg(&module);
            if command == "bench" {
                cmd.args(["--warm-up-time", "0.01", "--measurement-time", "0.01"]);
            }
            let output = cmd.output().unwrap();
            let err = stderr(&output);
            assert!(
                !output.status.success(),
                "{command} -e {mode} accepted a module without an entrypoint: {err}"
            );
            assert!(
                err.contains(&format!(
                    "{} has no Rego entrypoint: build it with `opa build -t wasm -e <package/rule>`",
                    module.display()
                )),
                "{command} -e {mode}: {err}"
            );
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    // Without -e the exports still say "Rego": the message asks for the mode, naming the module.
    let output = hoist
        .cmd()
        .args(["policy", "run", "-r"])
        .arg(&request)
        .arg(&module)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains(&module.display().to_string()), "{err}");
    assert!(err.contains("opa") && err.contains("gatekeeper"), "{err}");
}
