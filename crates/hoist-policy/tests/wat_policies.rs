//! The policy host against tiny WAT policies: every way a policy can misbehave gets a clear
//! answer (timeouts, memory, traps, invalid JSON, unknown protocol, guest errors, exits).

use hoist_policy::metadata::ProtocolVersion;
use hoist_policy::{ExecutionMode, HostCapabilities, Limits, Policy, ValidateRequest};
use serde_json::json;
use std::time::{Duration, Instant};

fn engine() -> wasmtime::Engine {
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    wasmtime::Engine::new(&config).unwrap()
}

/// A waPC policy: `validate_settings` says valid, `protocol_version` runs PROTOCOL, and
/// `validate` runs VALIDATE (which must leave the i32 result on the stack).
fn wapc(validate: &str, protocol: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
  (import "wapc" "__guest_request" (func $req (param i32 i32)))
  (import "wapc" "__guest_response" (func $resp (param i32 i32)))
  (import "wapc" "__guest_error" (func $err (param i32 i32)))
  (import "wapc" "__host_call" (func $hc (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wapc" "__host_error_len" (func $hel (result i32)))
  (import "wapc" "__host_error" (func $he (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "{{\"accepted\":true}}")
  (data (i32.const 200) "{{\"valid\":true}}")
  (data (i32.const 300) "\"v1\"")
  (data (i32.const 400) "not json")
  (data (i32.const 500) "boom")
  (data (i32.const 600) "\"v9\"")
  (data (i32.const 700) "kubewarden")
  (data (i32.const 720) "kubernetes")
  (data (i32.const 740) "get_resource")
  (data (i32.const 760) "{{\"api_version\":\"v1\",\"kind\":\"Secret\",\"name\":\"s\",\"disable_cache\":false}}")
  (func (export "__guest_call") (param $op i32) (param $pl i32) (result i32)
    (call $req (i32.const 1000) (i32.const 2000))
    (if (i32.eq (local.get $op) (i32.const 17))
      (then (call $resp (i32.const 200) (i32.const 14)) (return (i32.const 1))))
    (if (i32.eq (local.get $op) (i32.const 16))
      (then {protocol} (return (i32.const 1))))
    {validate}))"#
    ))
    .unwrap()
}

const ACCEPT: &str = "(call $resp (i32.const 100) (i32.const 17)) (i32.const 1)";
const V1: &str = "(call $resp (i32.const 300) (i32.const 4))";

fn request() -> ValidateRequest {
    ValidateRequest::parse(
        br#"{"uid":"u-1","operation":"CREATE","object":{"metadata":{"name":"x"}}}"#,
        false,
        "req",
    )
    .unwrap()
}

fn policy(engine: &wasmtime::Engine, wasm: &[u8], mode: Option<ExecutionMode>) -> Policy {
    let module = wasmtime::Module::new(engine, wasm).unwrap();
    Policy::new(&module, None, mode, "test.wasm").unwrap()
}

fn limits() -> Limits {
    Limits {
        timeout: Some(Duration::from_millis(300)),
        max_memory_bytes: 8 * 1024 * 1024,
    }
}

fn message(r: &hoist_policy::AdmissionResponse) -> String {
    r.status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default()
}

#[test]
fn wapc_accepts_and_reuses_its_instance() {
    let engine = engine();
    let p = policy(&engine, &wapc(ACCEPT, V1), None);
    assert_eq!(p.mode(), ExecutionMode::KubewardenWapc);
    let mut e = p.evaluator(HostCapabilities::none("t"), limits()).unwrap();
    assert!(e.validate_settings(&json!({})).valid);
    for _ in 0..3 {
        let r = e.validate(&request(), &json!({}));
        assert!(r.allowed);
        assert_eq!(r.uid, "u-1");
    }
    assert_eq!(e.protocol_version().unwrap(), ProtocolVersion::V1);
}

#[test]
fn a_looping_policy_is_stopped_and_the_next_call_works() {
    let engine = engine();
    // validate loops forever; validate_settings answers.
    let wasm = wat::parse_str(
        r#"(module
  (import "wapc" "__guest_request" (func $req (param i32 i32)))
  (import "wapc" "__guest_response" (func $resp (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "{\"accepted\":true}")
  (data (i32.const 200) "{\"valid\":true}")
  (func (export "__guest_call") (param $op i32) (param $pl i32) (result i32)
    (call $req (i32.const 1000) (i32.const 2000))
    (if (i32.eq (local.get $op) (i32.const 17))
      (then (call $resp (i32.const 200) (i32.const 14)) (return (i32.const 1))))
    (loop $forever (br $forever))
    (i32.const 1)))"#,
    )
    .unwrap();
    let p = policy(&engine, &wasm, None);
    let mut e = p.evaluator(HostCapabilities::none("t"), limits()).unwrap();
    let started = Instant::now();
    let r = e.validate(&request(), &json!({}));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!r.allowed);
    assert_eq!(r.status.as_ref().unwrap().code, Some(500));
    assert!(
        message(&r).contains("exceeded the allowed execution time"),
        "{r:?}"
    );
    assert!(message(&r).contains("--timeout"), "{r:?}");
    // The instance was rebuilt: settings validation still works.
    assert!(e.validate_settings(&json!({})).valid);
}

#[test]
fn memory_hogs_traps_bad_json_and_guest_errors_become_rejections() {
    let engine = engine();
    let cases = [
        (
            "(drop (memory.grow (i32.const 1000))) (i32.load (i32.const 70000000))",
            "memory",
        ),
        ("(unreachable)", "wasm trap"),
        (
            "(call $resp (i32.const 400) (i32.const 8)) (i32.const 1)",
            "not a ValidationResponse",
        ),
        (
            "(call $err (i32.const 500) (i32.const 4)) (i32.const 0)",
            "Guest call failure: boom",
        ),
        ("(i32.const 0)", "Guest call failure: no error message"),
        ("(i32.const 1)", "sent no response"),
    ];
    for (body, expected) in cases {
        let p = policy(&engine, &wapc(body, V1), None);
        let mut e = p.evaluator(HostCapabilities::none("t"), limits()).unwrap();
        let r = e.validate(&request(), &json!({}));
        assert!(!r.allowed, "{body}");
        assert!(
            message(&r).starts_with("internal server error: ") || expected == "memory",
            "{r:?}"
        );
        assert!(message(&r).contains(expected), "{body}: {r:?}");
    }
}

#[test]
fn memory_limit_is_named() {
    let engine = engine();
    let p = policy(
        &engine,
        &wapc("(drop (memory.grow (i32.const 1000))) (i32.const 0)", V1),
        None,
    );
    let mut e = p.evaluator(HostCapabilities::none("t"), limits()).unwrap();
    let r = e.validate(&request(), &json!({}));
    assert!(!r.allowed);
    assert!(message(&r).contains("memory limit of 8 MiB"), "{r:?}");
    assert!(message(&r).contains("--max-memory-mib"), "{r:?}");
}

#[test]
fn unknown_protocol_versions_are_refused() {
    let engine = engine();
    let p = policy(
        &engine,
        &wapc(ACCEPT, "(call $resp (i32.const 600) (i32.const 4))"),
        None,
    );
    let mut e = p.evaluator(HostCapabilities::none("t"), limits()).unwrap();
    let err = e.protocol_version().unwrap_err().to_string();
    assert!(err.contains("\\\"v9\\\"") || err.contains("v9"), "{err}");
    assert!(err.contains("not a protocol hoist speaks"), "{err}");
}

#[test]
fn host_calls_without_a_grant_get_the_error_text() {
    let engine = engine();
    // validate: host call get_resource v1/Secret; on failure respond with the host error as
    // the guest error.
    let body = r#"(if (result i32)
        (call $hc (i32.const 700) (i32.const 10) (i32.const 720) (i32.const 10)
                  (i32.const 740) (i32.const 12) (i32.const 760) (i32.const 69))
        (then (call $resp (i32.const 100) (i32.const 17)) (i32.const 1))
        (else (call $he (i32.const 3000)) (call $err (i32.const 3000) (call $hel)) (i32.const 0)))"#;
    let p = policy(&engine, &wapc(body, V1), None);
    let mut e = p.evaluator(HostCapabilities::none("t"), limits()).unwrap();
    let r = e.validate(&request(), &json!({}));
    assert!(!r.allowed);
    assert!(
        message(&r)
            .contains("Policy has not been granted access to Kubernetes v1/Secret resources"),
        "{r:?}"
    );
}

/// A WASI command: writes WRITE to fd FD, then exits with CODE.
fn wasi(text: &str, fd: u32, code: u32) -> Vec<u8> {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    wat::parse_str(format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "{escaped}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const {len}))
    (drop (call $w (i32.const {fd}) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $exit (i32.const {code}))))"#,
        len = text.len()
    ))
    .unwrap()
}

#[test]
fn wasi_policies_answer_on_stdout_and_fail_with_their_stderr() {
    let engine = engine();
    let p = policy(
        &engine,
        &wasi(r#"{"accepted":false,"message":"no","code":400}"#, 1, 0),
        None,
    );
    assert_eq!(p.mode(), ExecutionMode::Wasi);
    let mut e = p.evaluator(HostCapabilities::none("t"), limits()).unwrap();
    let r = e.validate(&request(), &json!({}));
    assert!(!r.allowed);
    assert_eq!(r.status.as_ref().unwrap().code, Some(400));
    assert_eq!(message(&r), "no");

    let p = policy(&engine, &wasi("unknown subcommand validate\n", 2, 1), None);
    let mut e = p.evaluator(HostCapabilities::none("t"), limits()).unwrap();
    let r = e.validate(&request(), &json!({}));
    assert!(!r.allowed);
    assert!(message(&r).contains("exited with code 1"), "{r:?}");
    assert!(message(&r).contains("unknown subcommand validate"), "{r:?}");
    let s = e.validate_settings(&json!({}));
    assert!(!s.valid);
    assert!(
        s.message
            .unwrap()
            .starts_with("Error invoking settings validation callback")
    );
}

#[test]
fn rego_modules_without_an_entrypoint_are_refused() {
    let engine = engine();
    let funcs = [
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
    ];
    let mut exports = String::new();
    for (i, name) in funcs.iter().enumerate() {
        // Every function takes and returns what the ABI says; bodies are dummies.
        let sig = match *name {
            "opa_malloc" | "opa_json_dump" | "eval" | "opa_eval_ctx_get_result" => {
                "(param i32) (result i32)"
            }
            "opa_json_parse" => "(param i32 i32) (result i32)",
            "opa_heap_ptr_get" | "opa_eval_ctx_new" => "(result i32)",
            "opa_heap_ptr_set" => "(param i32)",
            _ => "(param i32 i32)",
        };
        let body = if *name == "opa_json_dump" {
            "(local.get 0)"
        } else if sig.contains("result") {
            "(i32.const 0)"
        } else {
            ""
        };
        exports.push_str(&format!("(func $f{i} (export \"{name}\") {sig} {body})\n"));
    }
    let wasm = wat::parse_str(format!(
        r#"(module
  (import "env" "memory" (memory 2))
  (data (i32.const 16) "{{}}\00")
  {exports}
  (func (export "builtins") (result i32) (i32.const 16))
  (func (export "entrypoints") (result i32) (i32.const 16)))"#
    ))
    .unwrap();
    let module = wasmtime::Module::new(&engine, &wasm).unwrap();
    let err = match Policy::new(&module, None, None, "rego.wasm") {
        Ok(_) => panic!("a Rego module without -e must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("-e opa or -e gatekeeper"), "{err}");
    let p = Policy::new(&module, None, Some(ExecutionMode::Gatekeeper), "rego.wasm").unwrap();
    let err = match p.evaluator(HostCapabilities::none("t"), limits()) {
        Ok(_) => panic!("no entrypoint must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("no Rego entrypoint"), "{err}");
}
