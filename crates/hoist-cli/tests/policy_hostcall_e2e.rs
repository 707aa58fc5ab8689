//! End-to-end tests of the waPC host-call path (`__host_call`, `__host_response(_len)`,
//! `__host_error(_len)`) with a small waPC guest written in WAT: its `validate` makes ONE host
//! call (binding `kubewarden`, the namespace, operation and payload baked in) and answers
//! `{"accepted":true,"warnings":[<the host's answer>]}`, or `{"accepted":false,"message":
//! <the host's error>}`. That carries exactly what the host answered back to the test through
//! `hoist policy run`'s AdmissionResponse.
//!
//! - the `oci` capability against the real registry of `scripts/registry` (HOIST_TEST_REGISTRY):
//!   manifest digest, manifest and manifest+config for an image and an image index, recorded
//!   and replayed in kwctl's session format, a missing tag, Sigstore verification refused;
//! - the `kubernetes` capability: refused when not granted, answered from a replayed session,
//!   and from the real control plane (HOIST_TEST_KUBECONFIG) when granted.

mod common;

use common::{Hoist, required_env, stderr, stdout};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Bytes as a WAT data string (every byte hex-escaped).
fn wat_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// A waPC guest whose `validate` makes one host call `kubewarden/<namespace>/<operation>`
/// with `payload`, and reports the answer (see the module docs).
fn host_call_guest(namespace: &str, operation: &str, payload: &[u8]) -> Vec<u8> {
    assert!(namespace.len() < 48 && operation.len() < 192 && payload.len() < 1500);
    let wat = format!(
        r#"(module
  (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (import "wapc" "__guest_error" (func $guest_error (param i32 i32)))
  (import "wapc" "__host_call" (func $host_call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wapc" "__host_response_len" (func $host_response_len (result i32)))
  (import "wapc" "__host_response" (func $host_response (param i32)))
  (import "wapc" "__host_error_len" (func $host_error_len (result i32)))
  (import "wapc" "__host_error" (func $host_error (param i32)))
  (memory (export "memory") 16)
  (data (i32.const 0) "kubewarden")
  (data (i32.const 16) "{ns}")
  (data (i32.const 64) "{op}")
  (data (i32.const 256) "{payload}")
  (data (i32.const 1800) "{{\22valid\22:true}}")
  (data (i32.const 1840) "\22v1\22")
  (data (i32.const 1860) "{{\22accepted\22:true,\22warnings\22:[\22")
  (data (i32.const 1900) "\22]}}")
  (data (i32.const 1920) "{{\22accepted\22:false,\22message\22:\22")
  (data (i32.const 1960) "\22}}")
  (data (i32.const 1980) "unknown operation")
  ;; copies n bytes from src to dst, returns dst + n
  (func $copy (param $dst i32) (param $src i32) (param $n i32) (result i32)
    (memory.copy (local.get $dst) (local.get $src) (local.get $n))
    (i32.add (local.get $dst) (local.get $n)))
  ;; copies n bytes as the inside of a JSON string: '"' and '\' escaped, control bytes as spaces
  (func $escape (param $dst i32) (param $src i32) (param $n i32) (result i32)
    (local $i i32) (local $b i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $b (i32.load8_u (i32.add (local.get $src) (local.get $i))))
        (if (i32.or (i32.eq (local.get $b) (i32.const 34)) (i32.eq (local.get $b) (i32.const 92)))
          (then
            (i32.store8 (local.get $dst) (i32.const 92))
            (local.set $dst (i32.add (local.get $dst) (i32.const 1)))))
        (if (i32.lt_u (local.get $b) (i32.const 32)) (then (local.set $b (i32.const 32))))
        (i32.store8 (local.get $dst) (local.get $b))
        (local.set $dst (i32.add (local.get $dst) (i32.const 1)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $dst))
  (func (export "__guest_call") (param $op_len i32) (param $payload_len i32) (result i32)
    (local $ok i32) (local $len i32) (local $end i32)
    ;; the request: operation at 2048, payload at 65536 (the host checks the bounds)
    (call $guest_request (i32.const 2048) (i32.const 65536))
    (if (i32.eq (local.get $op_len) (i32.const 17))
      (then (call $guest_response (i32.const 1800) (i32.const 14)) (return (i32.const 1))))
    (if (i32.eq (local.get $op_len) (i32.const 16))
      (then (call $guest_response (i32.const 1840) (i32.const 4)) (return (i32.const 1))))
    (if (i32.ne (local.get $op_len) (i32.const 8))
      (then (call $guest_error (i32.const 1980) (i32.const 17)) (return (i32.const 0))))
    (local.set $ok (call $host_call
      (i32.const 0) (i32.const 10)
      (i32.const 16) (i32.const {ns_len})
      (i32.const 64) (i32.const {op_len})
      (i32.const 256) (i32.const {payload_len})))
    (if (i32.eq (local.get $ok) (i32.const 1))
      (then
        (local.set $len (call $host_response_len))
        (call $host_response (i32.const 262144))
        (local.set $end (call $copy (i32.const 524288) (i32.const 1860) (i32.const 30)))
        (local.set $end (call $escape (local.get $end) (i32.const 262144) (local.get $len)))
        (local.set $end (call $copy (local.get $end) (i32.const 1900) (i32.const 3))))
      (else
        (local.set $len (call $host_error_len))
        (call $host_error (i32.const 262144))
        (local.set $end (call $copy (i32.const 524288) (i32.const 1920) (i32.const 29)))
        (local.set $end (call $escape (local.get $end) (i32.const 262144) (local.get $len)))
        (local.set $end (call $copy (local.get $end) (i32.const 1960) (i32.const 2)))))
    (call $guest_response (i32.const 524288) (i32.sub (local.get $end) (i32.const 524288)))
    (i32.const 1)))
"#,
        ns = wat_bytes(namespace.as_bytes()),
        op = wat_bytes(operation.as_bytes()),
        payload = wat_bytes(payload),
        ns_len = namespace.len(),
        op_len = operation.len(),
        payload_len = payload.len(),
    );
    wat::parse_str(&wat).expect("the guest's WAT")
}

/// A small AdmissionRequest (the guest ignores it).
const REQUEST: &str = r#"{"uid":"hostcall-1","kind":{"group":"","version":"v1","kind":"Pod"},
"resource":{"group":"","version":"v1","resource":"pods"},"name":"p","namespace":"default",
"operation":"CREATE","userInfo":{"username":"u"},"object":{"apiVersion":"v1","kind":"Pod",
"metadata":{"name":"p","namespace":"default"}}}"#;

struct Guest {
    dir: tempfile::TempDir,
    module: PathBuf,
    request: PathBuf,
}

fn guest(namespace: &str, operation: &str, payload: &[u8]) -> Guest {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("hostcall.wasm");
    std::fs::write(&module, host_call_guest(namespace, operation, payload)).unwrap();
    let request = dir.path().join("request.json");
    std::fs::write(&request, REQUEST).unwrap();
    Guest {
        dir,
        module,
        request,
    }
}

/// `hoist policy run` on the guest (with `extra` flags): the AdmissionResponse.
fn run(hoist: &Hoist, g: &Guest, module: &Path, extra: &[&str]) -> Value {
    let output = hoist
        .cmd()
        .args(["policy", "run", "-r"])
        .arg(&g.request)
        .args(extra)
        .arg(module)
        .output()
        .expect("run hoist");
    assert!(
        output.status.success(),
        "hoist policy run {extra:?} failed: {}",
        stderr(&output)
    );
    let line = stdout(&output);
    let response: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
        panic!(
            "not one JSON line ({e}): {line}\nstderr: {}",
            stderr(&output)
        )
    });
    assert_eq!(response["uid"], json!("hostcall-1"), "{response}");
    response
}

/// The host's answer the guest passed on (its single warning), as JSON.
fn answer(response: &Value) -> Value {
    assert_eq!(
        response["allowed"],
        json!(true),
        "the host call failed: {response}"
    );
    let text = response["warnings"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no warning in {response}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("the answer is not JSON ({e}): {text}"))
}

/// The host's error the guest passed on.
fn refusal(response: &Value) -> String {
    assert_eq!(response["allowed"], json!(false), "{response}");
    response["status"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in {response}"))
        .to_string()
}

fn curl(args: &[&str]) -> Vec<u8> {
    let output = Command::new("curl")
        .args(["-sSf"])
        .args(args)
        .output()
        .expect("curl (Debian package curl) must be installed");
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

const ACCEPT: &str = "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

fn sha256(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[test]
fn oci_capability_answers_from_the_real_registry() {
    let Some(registry) = required_env("HOIST_TEST_REGISTRY", "run scripts/registry start") else {
        return;
    };
    let registry = registry.display().to_string();
    let hoist = Hoist::new();
    let scratch = tempfile::tempdir().unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let repo = format!("hoist-policy-oci/m{}-{nanos}", std::process::id());
    let image = format!("{registry}/{repo}:v1");

    // An image: a Wasm module pushed in Kubewarden's layout.
    let wasm = scratch.path().join("m.wasm");
    std::fs::write(&wasm, wat::parse_str("(module)").unwrap()).unwrap();
    let output = hoist
        .cmd()
        .args(["push", "--format", "kubewarden"])
        .arg(&wasm)
        .arg(format!("oci://{image}"))
        .output()
        .unwrap();
    assert!(output.status.success(), "hoist push: {}", stderr(&output));
    let manifest_bytes = curl(&[
        "-H",
        ACCEPT,
        &format!("http://{registry}/v2/{repo}/manifests/v1"),
    ]);
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let digest = sha256(&manifest_bytes);
    assert!(
        stdout(&output).contains(&digest),
        "hoist push printed {} for {digest}",
        stdout(&output)
    );
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config: Value = serde_json::from_slice(&curl(&[&format!(
        "http://{registry}/v2/{repo}/blobs/{config_digest}"
    )]))
    .unwrap();

    // An index over it: this machine's platform (the one kwctl resolves) and another.
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": manifest["mediaType"], "digest": digest, "size": manifest_bytes.len(),
             "platform": {"architecture": "s390x", "os": "linux"}},
            {"mediaType": manifest["mediaType"], "digest": digest, "size": manifest_bytes.len(),
             "platform": {"architecture": go_arch(), "os": std::env::consts::OS}},
        ]
    });
    let index_bytes = serde_json::to_vec(&index).unwrap();
    let index_file = scratch.path().join("index.json");
    std::fs::write(&index_file, &index_bytes).unwrap();
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.index.v1+json",
        "--data-binary",
        &format!("@{}", index_file.display()),
        &format!("http://{registry}/v2/{repo}/manifests/multi"),
    ]);
    let index_image = format!("{registry}/{repo}:multi");
    let index_digest = sha256(&index_bytes);

    let call = |operation: &str, image: &str, extra: &[&str]| -> (Guest, Value) {
        let g = guest("oci", operation, json!(image).to_string().as_bytes());
        let module = g.module.clone();
        let response = run(&hoist, &g, &module, extra);
        (g, response)
    };

    // v1/manifest_digest: the digest of what the tag points to (the index itself for an index).
    let (_, r) = call("v1/manifest_digest", &image, &[]);
    assert_eq!(answer(&r), json!({ "digest": digest }));
    let (_, r) = call("v1/manifest_digest", &index_image, &[]);
    assert_eq!(answer(&r), json!({ "digest": index_digest }));
    // By digest too.
    let (_, r) = call(
        "v1/manifest_digest",
        &format!("{registry}/{repo}@{digest}"),
        &[],
    );
    assert_eq!(answer(&r), json!({ "digest": digest }));

    // v1/oci_manifest: the manifest, or the index.
    let (_, r) = call("v1/oci_manifest", &image, &[]);
    assert_eq!(answer(&r), manifest);
    let (_, r) = call("v1/oci_manifest", &index_image, &[]);
    assert_eq!(answer(&r), index);

    // v1/oci_manifest_config: the platform's image manifest, its digest and its config.
    let expected = json!({"manifest": manifest, "digest": digest, "config": config});
    let (_, r) = call("v1/oci_manifest_config", &image, &[]);
    assert_eq!(answer(&r), expected);
    let (_, r) = call("v1/oci_manifest_config", &index_image, &[]);
    assert_eq!(answer(&r), expected);

    // Recorded in kwctl's session format, then replayed without the registry's help.
    let session = scratch.path().join("session.yml");
    let session_arg = session.display().to_string();
    let (g, recorded) = call(
        "v1/oci_manifest_config",
        &index_image,
        &["--record-host-capabilities-interactions", &session_arg],
    );
    assert_eq!(answer(&recorded), expected);
    let text = std::fs::read_to_string(&session).unwrap();
    assert!(
        text.starts_with("- type: Exchange\n  request: |\n    !OciManifestAndConfig\n")
            && text.contains(&format!("    image: {index_image}\n"))
            && text.contains("    type: Success\n    payload: "),
        "{text}"
    );
    let module = g.module.clone();
    let replayed = run(
        &hoist,
        &g,
        &module,
        &["--replay-host-capabilities-interactions", &session_arg],
    );
    assert_eq!(replayed, recorded);

    // A missing tag: an error response naming the request and the image, not a crash.
    let missing = format!("{registry}/{repo}:nope");
    let (_, r) = call("v1/manifest_digest", &missing, &[]);
    let message = refusal(&r);
    assert!(
        message.contains("OciManifestDigest") && message.contains(&missing),
        "{message}"
    );

    // Sigstore verification is refused by name (v1 and v2 payloads).
    for (operation, payload) in [
        (
            "v2/verify",
            json!({"type": "SigstorePubKeyVerify", "image": image, "pub_keys": ["k"], "annotations": null}),
        ),
        (
            "v1/verify",
            json!({"SigstoreKeylessVerify": {"image": image, "keyless": [{"issuer": "i", "subject": "s"}]}}),
        ),
    ] {
        let g = guest("oci", operation, payload.to_string().as_bytes());
        let module = g.module.clone();
        let message = refusal(&run(&hoist, &g, &module, &[]));
        assert!(
            message.contains("does not verify Sigstore signatures") && message.contains("Sigstore"),
            "{operation}: {message}"
        );
    }
}

/// `hoist policy annotate` with a metadata.yml granting v1/Namespace.
fn annotated(hoist: &Hoist, g: &Guest) -> PathBuf {
    let metadata = g.dir.path().join("metadata.yml");
    std::fs::write(
        &metadata,
        "rules:\n- apiGroups: [\"\"]\n  apiVersions: [v1]\n  resources: [pods]\n  operations: [CREATE]\nmutating: false\ncontextAware: true\ncontextAwareResources:\n- apiVersion: v1\n  kind: Namespace\nexecutionMode: kubewarden-wapc\n",
    )
    .unwrap();
    let out = g.dir.path().join("annotated.wasm");
    let output = hoist
        .cmd()
        .args(["policy", "annotate", "-m"])
        .arg(&metadata)
        .arg("-o")
        .arg(&out)
        .arg(&g.module)
        .output()
        .unwrap();
    assert!(output.status.success(), "annotate: {}", stderr(&output));
    out
}

#[test]
fn wapc_host_calls_to_kubernetes() {
    let hoist = Hoist::new();
    let g = guest(
        "kubernetes",
        "get_resource",
        br#"{"api_version":"v1","kind":"Namespace","name":"default","disable_cache":true}"#,
    );

    // Not annotated: nothing granted, the guest gets kwctl's refusal.
    let module = g.module.clone();
    let message = refusal(&run(&hoist, &g, &module, &[]));
    assert_eq!(
        message,
        "Policy has not been granted access to Kubernetes v1/Namespace resources. The violation has been reported."
    );

    // Granted, answered from a replayed session (kwctl's format).
    let annotated = annotated(&hoist, &g);
    let session = g.dir.path().join("session.yml");
    std::fs::write(
        &session,
        "- type: Exchange\n  request: |\n    !KubernetesGetResource\n    api_version: v1\n    kind: Namespace\n    name: default\n    namespace: null\n    disable_cache: true\n  response:\n    type: Success\n    payload: '{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"default\",\"labels\":{\"replayed\":\"yes\"}}}'\n",
    )
    .unwrap();
    let session_arg = session.display().to_string();
    let ns = answer(&run(
        &hoist,
        &g,
        &annotated,
        &[
            "--allow-context-aware",
            "--replay-host-capabilities-interactions",
            &session_arg,
        ],
    ));
    assert_eq!(ns["metadata"]["labels"]["replayed"], json!("yes"), "{ns}");

    // Granted without a session or cluster: an error response telling how to grant access.
    let message = refusal(&run(&hoist, &g, &annotated, &[]));
    assert!(message.contains("has not been granted access"), "{message}");

    // Granted, against the real control plane.
    let Some(kubeconfig) = required_env("HOIST_TEST_KUBECONFIG", "run scripts/control-plane start")
    else {
        return;
    };
    let output = hoist
        .cmd()
        .env("KUBECONFIG", &kubeconfig)
        .args(["policy", "run", "--allow-context-aware", "-r"])
        .arg(&g.request)
        .arg(&annotated)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let response: Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    let ns = answer(&response);
    assert_eq!(ns["kind"], json!("Namespace"), "{ns}");
    assert_eq!(ns["metadata"]["name"], json!("default"), "{ns}");
    assert!(ns["metadata"]["uid"].is_string(), "{ns}");
}
