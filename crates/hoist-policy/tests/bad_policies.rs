//! Misbehaving waPC policies (tiny WAT modules speaking the real waPC ABI): each failure is a
//! clear error or a rejection naming the cause, never a crash or a hang.
use hoist_policy::{HostCapabilities, Limits, Policy, ValidateRequest};
use serde_json::json;
use std::time::Duration;

/// A waPC guest whose `__guest_call` runs `body`; the data segment at 1024 holds `data`.
fn wapc(body: &str, data: &str) -> Vec<u8> {
    let escaped: String = data.bytes().map(|b| format!("\\{b:02x}")).collect();
    let wat = format!(
        r#"(module
  (import "wapc" "__guest_request" (func $req (param i32 i32)))
  (import "wapc" "__guest_response" (func $resp (param i32 i32)))
  (import "wapc" "__guest_error" (func $err (param i32 i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "{escaped}")
  (func (export "__guest_call") (param $op_len i32) (param $payload_len i32) (result i32)
    (call $req (i32.const 0) (i32.const 4096))
    {body}))"#
    );
    wat::parse_str(wat).unwrap()
}

fn engine() -> wasmtime::Engine {
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    wasmtime::Engine::new(&config).unwrap()
}

fn policy(wasm: &[u8]) -> Policy {
    let module = wasmtime::Module::new(&engine(), wasm).unwrap();
    Policy::new(&module, None, None, "bad.wasm").unwrap()
}

fn request() -> ValidateRequest {
    ValidateRequest::parse(
        br#"{"uid":"u1","operation":"CREATE","object":{"metadata":{"name":"x"}}}"#,
        false,
        "request.json",
    )
    .unwrap()
}

fn limits() -> Limits {
    Limits {
        timeout: Some(Duration::from_millis(300)),
        max_memory_bytes: 4 * 1024 * 1024,
    }
}

fn rejection(wasm: &[u8]) -> String {
    let p = policy(wasm);
    let mut e = p
        .evaluator(HostCapabilities::none("bad.wasm"), limits())
        .unwrap();
    let r = e.validate(&request(), &json!({}));
    assert!(!r.allowed, "{r:?}");
    assert_eq!(r.uid, "u1");
    r.status.unwrap().message.unwrap()
}

const RESPOND: &str = "(call $resp (i32.const 1024) (i32.const {len})) (i32.const 1)";

fn respond(data: &str) -> Vec<u8> {
    wapc(&RESPOND.replace("{len}", &data.len().to_string()), data)
}

#[test]
fn a_loop_is_stopped_by_the_time_limit() {
    let msg = rejection(&wapc("(loop $l (br $l)) (i32.const 1)", ""));
    assert!(msg.contains("exceeded the allowed execution time"), "{msg}");
    assert!(msg.contains("--timeout"), "{msg}");
}

#[test]
fn a_memory_hog_is_stopped_by_the_memory_limit() {
    let hog =
        "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable";
    let msg = rejection(&wapc(hog, ""));
    assert!(
        msg.contains("memory limit of 4 MiB") || msg.contains("unreachable"),
        "{msg}"
    );
    assert!(msg.contains("internal server error"), "{msg}");
}

#[test]
fn a_panic_is_a_rejection_naming_the_trap() {
    let msg = rejection(&wapc("unreachable", ""));
    assert!(msg.contains("calling validate"), "{msg}");
    assert!(msg.contains("wasm trap"), "{msg}");
    // The instance is rebuilt after a trap: the next call answers again (and traps again).
    let p = policy(&wapc("unreachable", ""));
    let mut e = p.evaluator(HostCapabilities::none("p"), limits()).unwrap();
    for _ in 0..2 {
        assert!(!e.validate(&request(), &json!({})).allowed);
    }
}

#[test]
fn invalid_json_answers_are_named() {
    let msg = rejection(&respond("this is not json"));
    assert!(msg.contains("not a ValidationResponse"), "{msg}");
    assert!(msg.contains("this is not json"), "{msg}");
    let p = policy(&respond("{\"valid\": 3}"));
    let mut e = p.evaluator(HostCapabilities::none("p"), limits()).unwrap();
    let v = e.validate_settings(&json!({}));
    assert!(!v.valid);
    assert!(v.message.unwrap().contains("not valid JSON"));
}

#[test]
fn a_guest_error_is_reported() {
    let body = "(call $err (i32.const 1024) (i32.const 4)) (i32.const 0)";
    let msg = rejection(&wapc(body, "boom"));
    assert!(msg.contains("Guest call failure: boom"), "{msg}");
}

#[test]
fn an_unknown_protocol_version_is_refused_by_name() {
    let p = policy(&respond("\"v9\""));
    let mut e = p.evaluator(HostCapabilities::none("p"), limits()).unwrap();
    let err = e.protocol_version().unwrap_err().to_string();
    assert!(err.contains("v9"), "{err}");
    assert!(err.contains("not a protocol hoist speaks"), "{err}");
}

#[test]
fn malformed_modules_are_refused() {
    // Not waPC and not WASI: no __guest_call, no _start.
    let wasm = wat::parse_str("(module (memory (export \"memory\") 1))").unwrap();
    let module = wasmtime::Module::new(&engine(), &wasm).unwrap();
    let err = Policy::new(&module, None, None, "empty.wasm")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("empty.wasm"), "{err}");
    // A waPC guest that imports something hoist does not provide.
    let wasm = wat::parse_str(
        r#"(module (import "env" "nope" (func)) (memory (export "memory") 1)
           (func (export "__guest_call") (param i32 i32) (result i32) (i32.const 1)))"#,
    )
    .unwrap();
    let module = wasmtime::Module::new(&engine(), &wasm).unwrap();
    let err = Policy::new(&module, None, None, "imports.wasm")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("imports.wasm"), "{err}");
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn malformed_requests_are_named() {
    let err = ValidateRequest::parse(b"[1,2]", false, "req.json")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("req.json") && err.contains("an array"),
        "{err}"
    );
    let err = ValidateRequest::parse(br#"{"kind":"AdmissionReview"}"#, false, "r.json")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no `request` object"), "{err}");
}
