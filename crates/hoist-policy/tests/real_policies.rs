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

/// A Go WASI policy compiled with go_resume's exports starts later calls from its first read
/// of stdin; its answers must be exactly those of fresh runs, call after call, whatever the
/// settings and requests, accepting and rejecting, and validate_settings too.
#[test]
fn go_wasi_policy_resumed_answers_as_fresh_runs() {
    let Some((dir, src)) = dirs() else { return };
    let name = "go-wasi-policy-template";
    let path = dir.join(format!("{name}.wasm"));
    if !path.exists() {
        eprintln!("skipping {name}: not built");
        return;
    }
    let wasm = std::fs::read(&path).unwrap();
    let prepared = hoist_runtime::go_resume::prepare(&wasm).expect("a Go wasip1 policy");
    let engine = engine();
    let yaml = std::fs::read_to_string(dir.join(format!("{name}.metadata.yml"))).unwrap();
    let meta = Metadata::from_yaml(&yaml, "metadata.yml").unwrap();
    let fresh_module = wasmtime::Module::new(&engine, &wasm).unwrap();
    let resumed_module = wasmtime::Module::new(&engine, &prepared).unwrap();
    assert!(hoist_runtime::go_resume::GoLayout::of(&resumed_module).is_some());
    let fresh_policy = Policy::new(&fresh_module, Some(meta.clone()), None, name).unwrap();
    let resumed_policy = Policy::new(&resumed_module, Some(meta.clone()), None, name).unwrap();
    // The same resumed runs with instances from a pool of reused slots, as `hoist policy bench`
    // takes them: a slot handed back must behave exactly as freshly mapped memory.
    let pooled_engine = hoist_runtime::FlightEngine::with_instance_pool(
        hoist_runtime::Compiler::Winch,
        None,
        Some(hoist_runtime::InstancePool::for_repeated_runs(
            Limits::default().max_memory_bytes,
        )),
    )
    .unwrap();
    let pooled_module = wasmtime::Module::new(pooled_engine.engine(), &prepared).unwrap();
    let pooled_policy = Policy::new(&pooled_module, Some(meta), None, name).unwrap();
    let mut pooled = pooled_policy
        .evaluator(HostCapabilities::none(name), Limits::default())
        .unwrap();
    let mut fresh = fresh_policy
        .evaluator(HostCapabilities::none(name), Limits::default())
        .unwrap();
    let mut resumed = resumed_policy
        .evaluator(HostCapabilities::none(name), Limits::default())
        .unwrap();

    let pod: Value = serde_json::from_slice(
        &std::fs::read(src.join(name).join("test_data/pod-creation.json")).unwrap(),
    )
    .unwrap();
    let settings = [
        json!({"forbiddenAnnotations": ["fluxcd.io/cat"]}),
        json!({"requiredAnnotations": {"fluxcd.io/cat": "felix"}}),
        json!({"requiredAnnotations": {"fluxcd.io/cat": "sylvester"}}),
        json!({"requiredAnnotations": {"owner": "team-a"}, "forbiddenAnnotations": ["x"]}),
        json!({"forbiddenAnnotations": 7}),
    ];
    let mut outcomes = std::collections::BTreeSet::new();
    for round in 0..3 {
        for (i, s) in settings.iter().enumerate() {
            let a = fresh.validate_settings(s);
            let b = resumed.validate_settings(s);
            let c = pooled.validate_settings(s);
            assert_eq!(
                serde_json::to_value(&a).unwrap(),
                serde_json::to_value(&b).unwrap(),
                "settings {i}, round {round}"
            );
            assert_eq!(
                serde_json::to_value(&a).unwrap(),
                serde_json::to_value(&c).unwrap(),
                "pooled: settings {i}, round {round}"
            );
            outcomes.insert(format!("settings valid={}", a.valid));
            for annotation in ["felix", "sylvester", "tom"] {
                let mut request = pod.clone();
                request["object"]["metadata"]["annotations"]["fluxcd.io/cat"] = json!(annotation);
                request["uid"] = json!(format!("uid-{round}-{i}-{annotation}"));
                let request = ValidateRequest::parse(
                    &serde_json::to_vec(&request).unwrap(),
                    false,
                    "request",
                )
                .unwrap();
                let a = fresh.validate(&request, s);
                let b = resumed.validate(&request, s);
                let c = pooled.validate(&request, s);
                assert_eq!(
                    serde_json::to_value(&a).unwrap(),
                    serde_json::to_value(&b).unwrap(),
                    "settings {i}, {annotation}, round {round}"
                );
                assert_eq!(
                    serde_json::to_value(&a).unwrap(),
                    serde_json::to_value(&c).unwrap(),
                    "pooled: settings {i}, {annotation}, round {round}"
                );
                outcomes.insert(format!("allowed={}", a.allowed));
            }
        }
    }
    assert_eq!(
        resumed_policy.resumed_operations(),
        ["validate", "validate-settings"],
        "the prepared policy resumed both operations"
    );
    assert_eq!(
        pooled_policy.resumed_operations(),
        ["validate", "validate-settings"],
        "the pooled policy resumed both operations"
    );
    assert!(fresh_policy.resumed_operations().is_empty());
    // Both kinds of answer were compared, not just one.
    for expected in [
        "allowed=true",
        "allowed=false",
        "settings valid=true",
        "settings valid=false",
    ] {
        assert!(outcomes.contains(expected), "{outcomes:?}");
    }
}
