//! The host on REAL Kubewarden policies (built by scripts/test.d/policy.sh into
//! HOIST_POLICIES_DIR): every mode through the library, and OPA's two evaluation paths
//! compared. The CLI's end-to-end tests run upstream's e2e.bats on top of this.

use hoist_policy::capabilities::{self, CapabilityBackend, Replayer};
use hoist_policy::metadata::{self, Metadata};
use hoist_policy::{
    AdmissionResponse, ExecutionMode, HostCapabilities, Limits, Policy, ValidateRequest,
};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;

fn dirs() -> Option<(PathBuf, PathBuf)> {
    let dir = std::env::var_os("HOIST_POLICIES_DIR").map(PathBuf::from);
    let src = std::env::var_os("HOIST_POLICIES_SRC_DIR").map(PathBuf::from);
    match (dir, src) {
        (Some(d), Some(s)) => Some((d, s)),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("HOIST_POLICIES_DIR / HOIST_POLICIES_SRC_DIR are not set: run scripts/test")
        }
        _ => {
            eprintln!(
                "skipping: HOIST_POLICIES_DIR is not set (scripts/test.d/policy.sh builds the policies)"
            );
            None
        }
    }
}

fn engine() -> wasmtime::Engine {
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    wasmtime::Engine::new(&config).unwrap()
}

struct Case<'a> {
    policy: &'a str,
    src: &'a str,
    request: &'a str,
    settings: Value,
    mode: Option<ExecutionMode>,
    raw: bool,
    replay: Option<&'a str>,
}

fn evaluate(
    engine: &wasmtime::Engine,
    case: &Case<'_>,
    classic: bool,
) -> Option<AdmissionResponse> {
    let (dir, src) = dirs()?;
    let path = dir.join(format!("{}.wasm", case.policy));
    if !path.exists() {
        eprintln!("skipping {}: not built", case.policy);
        return None;
    }
    let wasm = std::fs::read(&path).unwrap();
    let module = wasmtime::Module::new(engine, &wasm).unwrap();
    let yaml = std::fs::read_to_string(dir.join(format!("{}.metadata.yml", case.policy))).unwrap();
    let mut meta = Metadata::from_yaml(&yaml, "metadata.yml").unwrap();
    meta.protocol_version = Some(metadata::ProtocolVersion::Unknown);
    let policy = Policy::new(&module, Some(meta.clone()), case.mode, case.policy).unwrap();
    let src = src.join(case.src);
    let request = ValidateRequest::parse(
        &std::fs::read(src.join(case.request)).unwrap(),
        case.raw,
        case.request,
    )
    .unwrap();
    let mut host = HostCapabilities::none(case.policy);
    if let Some(session) = case.replay {
        let exchanges = capabilities::read_session(&src.join(session)).unwrap();
        let replayer: Arc<dyn CapabilityBackend> = Arc::new(Replayer::new(exchanges, session));
        host = HostCapabilities {
            granted: meta.context_aware_resources.clone(),
            backend: replayer,
            policy: case.policy.into(),
        };
    }
    let mut evaluator = policy.evaluator(host, Limits::default()).unwrap();
    evaluator.use_classic_rego_path(classic);
    assert!(evaluator.validate_settings(&case.settings).valid);
    Some(evaluator.validate(&request, &case.settings))
}

fn message(r: &AdmissionResponse) -> String {
    r.status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default()
}

#[test]
fn every_mode_on_real_policies() {
    let engine = engine();
    let cases: Vec<(Case<'_>, bool, &str)> = vec![
        (
            Case {
                policy: "hoist-test-wapc",
                src: "hoist-test-wapc",
                request: "test_data/pod_creation.json",
                settings: json!({"denied_names": ["nginx"]}),
                mode: None,
                raw: false,
                replay: None,
            },
            false,
            "name 'nginx' is denied",
        ),
        (
            Case {
                policy: "go-wasi-policy-template",
                src: "go-wasi-policy-template",
                request: "test_data/pod-creation.json",
                settings: json!({"forbiddenAnnotations": ["fluxcd.io/cat"]}),
                mode: None,
                raw: false,
                replay: None,
            },
            false,
            "The following annotations are forbidden",
        ),
        (
            Case {
                policy: "go-wasi-context-aware-test-policy",
                src: "policies/go-wasi-context-aware-test-policy",
                request: "test_data/app_deployment.json",
                settings: json!({}),
                mode: None,
                raw: false,
                replay: Some("test_data/session.yml"),
            },
            true,
            "",
        ),
        (
            Case {
                policy: "opa-policy-template",
                src: "opa-policy-template",
                request: "test_data/service_nodeport.json",
                settings: json!({}),
                mode: None,
                raw: false,
                replay: None,
            },
            false,
            "Service of type NodePort are not allowed",
        ),
        (
            Case {
                policy: "gatekeeper-policy-template",
                src: "gatekeeper-policy-template",
                request: "test_data/service_loadbalancer.json",
                settings: json!({}),
                mode: None,
                raw: false,
                replay: None,
            },
            false,
            "Service of type LoadBalancer are not allowed",
        ),
        (
            Case {
                policy: "unique-ingress-policy",
                src: "policies/unique-ingress-policy",
                request: "test_data/ingress.json",
                settings: json!({}),
                mode: None,
                raw: false,
                replay: Some("test_data/k8s_ctx_duplicate.yml"),
            },
            false,
            "ingress host conflicts with an existing ingress <foo.bar.com>",
        ),
        (
            Case {
                policy: "raw-validation-opa-policy",
                src: "policies/raw-validation-opa-policy",
                request: "test_data/invalid.json",
                settings: json!({}),
                mode: None,
                raw: true,
                replay: None,
            },
            false,
            "User not allowed",
        ),
    ];
    for (case, allowed, needle) in &cases {
        let Some(r) = evaluate(&engine, case, false) else {
            continue;
        };
        assert_eq!(r.allowed, *allowed, "{}: {r:?}", case.policy);
        assert!(message(&r).contains(needle), "{}: {r:?}", case.policy);
        let mode = case.mode;
        let _ = mode;
        if r.status.as_ref().and_then(|s| s.code) == Some(500) {
            panic!("{}: internal error {r:?}", case.policy);
        }
        // Rego: the classic context API gives the same answer as opa_eval.
        if [
            "opa-policy-template",
            "gatekeeper-policy-template",
            "unique-ingress-policy",
            "raw-validation-opa-policy",
        ]
        .contains(&case.policy)
        {
            let classic = evaluate(&engine, case, true).unwrap();
            assert_eq!(classic, r, "{}: classic path differs", case.policy);
        }
    }
}
