//! End-to-end tests of the policy gate (`--policy`, `--policies`) on `hoist takeoff` and
//! `hoist render`, with REAL policies (hoist-test-wapc, a Rust waPC Kubewarden policy, and
//! testdata/policy/gate-frozen.rego compiled by `opa build`; both built by
//! scripts/test.d/policy.sh) and the real control plane (scripts/control-plane).
mod common;
use common::{Hoist, fails_with, json_ok, required_env, run_with_stdin, stderr, stdout};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const HOW: &str = "run scripts/test (its hook scripts/test.d/policy.sh builds the policies; it starts a control plane)";

struct Env {
    hoist: Hoist,
    kubeconfig: PathBuf,
    wapc: PathBuf,
    frozen_src: PathBuf,
    work: tempfile::TempDir,
}

fn env() -> Option<Env> {
    let policies = required_env("HOIST_POLICIES_DIR", HOW)?;
    let testdata = required_env("HOIST_POLICY_TESTDATA_DIR", HOW)?;
    let kubeconfig = required_env("HOIST_TEST_KUBECONFIG", HOW)?;
    let wapc = policies.join("hoist-test-wapc.wasm");
    let frozen_src = testdata.join("gate-frozen.wasm");
    for f in [&wapc, &frozen_src] {
        assert!(f.exists(), "{} is missing: {HOW}", f.display());
    }
    Some(Env {
        hoist: Hoist::new(),
        kubeconfig,
        wapc,
        frozen_src,
        work: tempfile::tempdir().unwrap(),
    })
}

impl Env {
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.work.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `hoist ARGS` against the control plane, objects on stdin.
    fn run(&self, args: &[&str], stdin: &str) -> std::process::Output {
        let mut cmd = self.hoist.cmd();
        cmd.env("KUBECONFIG", &self.kubeconfig).args(args);
        run_with_stdin(&mut cmd, stdin.as_bytes())
    }

    fn wapc_policy(&self, settings: &str) -> String {
        let s = self.file("wapc-settings.yaml", settings);
        format!("{},settings={}", self.wapc.display(), s.display())
    }

    /// gate-frozen annotated (Gatekeeper mode comes from its metadata).
    fn frozen(&self) -> PathBuf {
        let out = self.work.path().join("gate-frozen.wasm");
        let metadata = common::workspace().join("testdata/policy/gate-frozen.metadata.yml");
        let o = self
            .hoist
            .cmd()
            .args(["policy", "annotate", "-m"])
            .arg(&metadata)
            .arg("-o")
            .arg(&out)
            .arg(&self.frozen_src)
            .output()
            .unwrap();
        assert!(o.status.success(), "annotate: {}", stderr(&o));
        out
    }

    /// An object as the cluster has it (None when absent).
    fn get(&self, api_version: &str, kind: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let conn = hoist_release::connect(Some(&self.kubeconfig), None)
                .await
                .unwrap();
            let res = conn.resolve(api_version, kind).await.unwrap().unwrap();
            conn.get_object(&res, ns, name).await.unwrap()
        })
    }

    fn revisions(&self, release: &str, ns: &str) -> Option<Value> {
        let o = self.run(&["blackbox", release, "-n", ns, "-o", "json"], "");
        o.status.success().then(|| json_ok(&o))
    }
}

/// A namespace of its own for each run (the control plane outlives test runs).
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

fn cm(name: &str, labels: Value, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "labels": labels}, "data": data})
}

/// Two stages; objects of both are rejected: the takeoff stops before anything is applied
/// (not even the admitted first stage, nor a dry run) and lists every rejection.
#[test]
fn rejections_stop_the_takeoff_and_list_every_object() {
    let Some(e) = env() else { return };
    let ns = &unique("gate-reject");
    let policy = e.wapc_policy("denied_names: [evil, bad]\n");
    let stages = json!([
        [cm("fine", json!({}), json!({"a": "1"})), cm("evil", json!({}), json!({}))],
        [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad"}, "stringData": {"k": "v"}}]
    ]);
    let out = e.run(
        &[
            "takeoff",
            "gated",
            "-n",
            ns,
            "--create-namespace",
            "--policy",
            &policy,
        ],
        &stages.to_string(),
    );
    let err = fails_with(
        &out,
        &[
            "takeoff of gated stopped by the policy gate",
            "rejected 2 object(s); nothing was applied",
            &format!(
                "ConfigMap/{ns}/evil (stage 1) rejected by policy hoist-test-wapc: name 'evil' is denied (code 403)"
            ),
            &format!(
                "Secret/{ns}/bad (stage 2) rejected by policy hoist-test-wapc: name 'bad' is denied (code 403)"
            ),
        ],
    );
    assert!(!err.contains("applied 1 object"), "{err}");
    assert!(!err.contains("dry"), "{err}");
    // No revision, and the admitted ConfigMap of stage 1 was not applied.
    assert!(e.revisions("gated", ns).is_none());
    assert!(e.get("v1", "ConfigMap", Some(ns), "fine").is_none());
}

/// Mutations are applied to what the cluster receives and recorded; `blackbox` shows which
/// policies (with settings and digest) gated the revision.
#[test]
fn mutations_are_applied_and_policies_recorded() {
    let Some(e) = env() else { return };
    let ns = &unique("gate-mutate");
    let policy = e.wapc_policy("add_label: true\n");
    let objects = json!([cm("one", json!({"x": "y"}), json!({"a": "1"}))]);
    let out = e.run(
        &[
            "takeoff",
            "mutated",
            "-n",
            ns,
            "--create-namespace",
            "--policy",
            &policy,
        ],
        &objects.to_string(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "policy hoist-test-wapc mutated ConfigMap/{ns}/one"
        )),
        "{err}"
    );
    // What the cluster has, and what the revision recorded, carry the label.
    let live = e.get("v1", "ConfigMap", Some(ns), "one").unwrap();
    assert_eq!(
        live["metadata"]["labels"]["hoist/checked"],
        json!("true"),
        "{live}"
    );
    let o = e.run(&["blackbox", "mutated", "1", "-n", ns, "-o", "json"], "");
    let stages = json_ok(&o);
    let applied = &stages[0][0];
    assert_eq!(
        applied["metadata"]["labels"]["hoist/checked"],
        json!("true"),
        "{stages}"
    );
    assert_eq!(applied["metadata"]["labels"]["x"], json!("y"));
    // The revision records the policy, its module digest and settings.
    let history = e.revisions("mutated", ns).unwrap();
    let policies: Value =
        serde_json::from_str(history["history"][0]["policies"].as_str().unwrap()).unwrap();
    assert_eq!(policies[0]["name"], json!("hoist-test-wapc"), "{policies}");
    assert_eq!(policies[0]["settings"], json!({"add_label": true}));
    assert_eq!(policies[0]["mode"], json!("protect"));
    assert_eq!(policies[0]["sha256"].as_str().unwrap().len(), 64);
    let table = stdout(&e.run(&["blackbox", "mutated", "-n", ns], ""));
    assert!(table.contains("POLICIES"), "{table}");
    assert!(table.contains("hoist-test-wapc@sha256:"), "{table}");

    // --diff-only shows the mutated object against the active revision.
    let objects = json!([cm("one", json!({"x": "z"}), json!({"a": "1"}))]);
    let out = e.run(
        &[
            "takeoff",
            "mutated",
            "-n",
            ns,
            "--diff-only",
            "--color",
            "never",
            "--policy",
            &policy,
        ],
        &objects.to_string(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let diff = stdout(&out);
    assert!(
        diff.contains("x: z") || diff.contains("\"x\": \"z\""),
        "{diff}"
    );
    assert!(
        !diff.contains("-      hoist/checked"),
        "the label must stay: {diff}"
    );
}

/// The second takeoff is an UPDATE carrying the live object as oldObject: a Rego policy that
/// reads `oldObject` refuses it, and the user comes from the API server.
#[test]
fn updates_carry_the_live_object_and_the_user() {
    let Some(e) = env() else { return };
    let ns = &unique("gate-update");
    let frozen = e.frozen();
    let policy = frozen.to_str().unwrap();
    let first = json!([cm(
        "frozen-cm",
        json!({"frozen": "true"}),
        json!({"a": "1"})
    )]);
    let out = e.run(
        &[
            "takeoff",
            "frozen",
            "-n",
            ns,
            "--create-namespace",
            "--policy",
            policy,
        ],
        &first.to_string(),
    );
    assert!(out.status.success(), "CREATE must pass: {}", stderr(&out));
    let second = json!([cm(
        "frozen-cm",
        json!({"frozen": "true"}),
        json!({"a": "2"})
    )]);
    let out = e.run(
        &["takeoff", "frozen", "-n", ns, "--policy", policy],
        &second.to_string(),
    );
    fails_with(
        &out,
        &[&format!(
            "ConfigMap/{ns}/frozen-cm (stage 1) rejected by policy gate-frozen: ConfigMap/frozen-cm is frozen: it cannot change (operation UPDATE)"
        )],
    );
    let history = e.revisions("frozen", ns).unwrap();
    assert_eq!(history["history"].as_array().unwrap().len(), 1, "{history}");
    // Offline (render): a CREATE, so the same objects pass; with no user in the kubeconfig's
    // context... the test kubeconfig names one, so the second rule stays quiet too.
    let out = e.run(
        &["render", "-n", ns, "-o", "json", "--policy", policy],
        &second.to_string(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `--policies`: Kubewarden manifests with rules, selectors, an AdmissionPolicy bound to its
/// namespace and monitor mode; `render -o` shows the mutations.
#[test]
fn manifests_select_objects_and_render_shows_mutations() {
    let Some(e) = env() else { return };
    let settings_wapc = e.wapc.display();
    let manifests = format!(
        r#"apiVersion: policies.kubewarden.io/v1
kind: ClusterAdmissionPolicy
metadata:
  name: label-selected
spec:
  module: {settings_wapc}
  policyServer: default
  mutating: true
  settings:
    add_label: true
  rules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      resources: ["configmaps"]
      operations: ["CREATE", "UPDATE"]
  objectSelector:
    matchLabels:
      gate: "on"
---
apiVersion: policies.kubewarden.io/v1
kind: AdmissionPolicy
metadata:
  name: only-in-other
  namespace: other
spec:
  module: {settings_wapc}
  settings:
    denied_names: [plain]
  rules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      resources: ["configmaps"]
      operations: ["*"]
---
apiVersion: policies.kubewarden.io/v1
kind: ClusterAdmissionPolicy
metadata:
  name: watch-secrets
spec:
  module: {settings_wapc}
  mode: monitor
  settings:
    denied_names: [plain]
  rules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      resources: ["secrets"]
      operations: ["CREATE"]
"#
    );
    let file = e.file("policies.yaml", &manifests);
    let objects = json!([
        cm("selected", json!({"gate": "on"}), json!({})),
        cm("plain", json!({}), json!({})),
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "plain"}}
    ]);
    let out = e.run(
        &[
            "render",
            "-n",
            "gate-render",
            "-o",
            "json",
            "--policies",
            file.to_str().unwrap(),
        ],
        &objects.to_string(),
    );
    let rendered = json_ok(&out);
    let all: Vec<&Value> = rendered
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s.as_array().unwrap())
        .collect();
    let find = |kind: &str, name: &str| {
        *all.iter()
            .find(|o| o["kind"] == json!(kind) && o["metadata"]["name"] == json!(name))
            .unwrap_or_else(|| panic!("{kind}/{name} missing: {rendered}"))
    };
    assert_eq!(
        find("ConfigMap", "selected")["metadata"]["labels"]["hoist/checked"],
        json!("true")
    );
    assert!(
        find("ConfigMap", "plain")["metadata"]["labels"]
            .get("hoist/checked")
            .is_none()
    );
    let err = stderr(&out);
    // The AdmissionPolicy guards namespace `other` only: `plain` in gate-render passes; the
    // monitor-mode policy only warns.
    assert!(
        err.contains("policy watch-secrets (monitor mode) would reject it: name 'plain' is denied"),
        "{err}"
    );

    // In namespace `other`, the AdmissionPolicy rejects.
    let out = e.run(
        &[
            "render",
            "-n",
            "other",
            "-o",
            "json",
            "--policies",
            file.to_str().unwrap(),
        ],
        &objects.to_string(),
    );
    fails_with(
        &out,
        &["ConfigMap/other/plain (stage 1) rejected by policy only-in-other"],
    );

    // Unsupported fields are refused by name, before anything runs.
    let bad = e.file(
        "bad.yaml",
        &manifests.replacen("  policyServer: default", "  matchConditions: []", 1),
    );
    let out = e.run(
        &["render", "-n", "x", "--policies", bad.to_str().unwrap()],
        &objects.to_string(),
    );
    fails_with(
        &out,
        &[
            "document 1 (ClusterAdmissionPolicy/label-selected)",
            "spec.matchConditions is not supported",
        ],
    );
}

/// Settings the policy refuses stop the command before the flight runs, naming the policy and
/// its message; a module that cannot load names the policy too.
#[test]
fn bad_settings_and_modules_are_named() {
    let Some(e) = env() else { return };
    let policy = e.wapc_policy("denied_names: [\"\"]\n");
    let out = e.run(&["render", "-n", "x", "--policy", &policy], "[]");
    fails_with(
        &out,
        &[
            "policy hoist-test-wapc: its settings are not valid",
            "denied_names must not contain empty strings",
        ],
    );
    let missing = Path::new("/nonexistent/deny.wasm");
    let out = e.run(
        &["render", "-n", "x", "--policy", missing.to_str().unwrap()],
        "[]",
    );
    fails_with(
        &out,
        &["policy deny: cannot load its module /nonexistent/deny.wasm"],
    );
}
