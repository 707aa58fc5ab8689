//! End-to-end tests of `hoist atc`, the controller compatible with Yoke's ATC: the real
//! `hoist` binary runs as a process against the real control plane from
//! `scripts/control-plane` (env `HOIST_TEST_KUBECONFIG`), and the API server calls its
//! webhooks over TLS on 127.0.0.1 (`--webhook-url`). The flight is the Go test flight of
//! `testdata/atc` (env `HOIST_ATC_TEST_FLIGHT`, built by `scripts/test.d/atc.sh`).
//!
//! The scenarios follow Yoke's own (`cmd/atc/main_test.go`, `flight_test.go`). The global
//! webhook configurations are cluster-wide, so the tests run one controller at a time.

mod common;
#[path = "../../hoist-release/tests/support/mod.rs"]
mod support;

use hoist_release::Connection;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_CONTROLLER: Mutex<()> = Mutex::new(());

struct Env {
    kubeconfig: PathBuf,
    flight: PathBuf,
}

fn env() -> Option<Env> {
    let kubeconfig = common::required_env(
        "HOIST_TEST_KUBECONFIG",
        "run scripts/control-plane start and export it (scripts/test does)",
    )?;
    let flight = common::required_env(
        "HOIST_ATC_TEST_FLIGHT",
        "source scripts/test.d/atc.sh to build the ATC test flight (scripts/test does)",
    )?;
    Some(Env { kubeconfig, flight })
}

fn unique(prefix: &str) -> String {
    support::unique(prefix)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Standard base64 (the token Secret's data).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            other => panic!("not base64: {other}"),
        }
    };
    let mut out = Vec::new();
    let bytes: Vec<u8> = text.bytes().filter(|c| *c != b'=').collect();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c) << (18 - 6 * i);
        }
        let got = chunk.len() * 6 / 8;
        for i in 0..got {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// A kubeconfig for a service account bound to cluster-admin, which the controller runs as:
/// the controller's own requests skip its webhooks (by user name), so it must not share the
/// tests' user, exactly as in a cluster where it runs as its own service account.
fn controller_kubeconfig(env: &Env) -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let conn = connect(&env.kubeconfig);
        let ns = "hoist-atc-e2e";
        runtime().block_on(support::namespace(&conn, ns));
        apply(&conn, &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "controller", "namespace": ns}})).unwrap();
        apply(&conn, &json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "hoist-atc-e2e-controller"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "controller", "namespace": ns}],
        }))
        .unwrap();
        apply(&conn, &json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
            "metadata": {"name": "controller-token", "namespace": ns, "annotations": {"kubernetes.io/service-account.name": "controller"}},
        }))
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let token = loop {
            if let Some(token) = get(&conn, "v1", "Secret", Some(ns), "controller-token")
                .and_then(|s| s.pointer("/data/token").and_then(Value::as_str).map(str::to_string))
            {
                break String::from_utf8(base64_decode(&token)).unwrap();
            }
            assert!(Instant::now() < deadline, "the service account token was never issued (is kube-controller-manager running?)");
            std::thread::sleep(Duration::from_millis(250));
        };
        let admin = std::fs::read_to_string(&env.kubeconfig).unwrap();
        let field = |key: &str| {
            admin
                .lines()
                .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().trim_matches('"').to_string()))
                .unwrap_or_else(|| panic!("no {key} in {}", env.kubeconfig.display()))
        };
        let (server, ca) = (field("server:"), field("certificate-authority-data:"));
        let path = std::env::temp_dir().join(format!("hoist-atc-e2e-{}.kubeconfig", std::process::id()));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: cp\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: atc\n  user:\n    token: {token}\ncontexts:\n- name: atc\n  context:\n    cluster: cp\n    user: atc\ncurrent-context: atc\n"
            ),
        )
        .unwrap();
        path
    })
    .clone()
}

/// A running `hoist atc`.
struct Controller {
    child: Child,
    log: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Controller {
    fn start(env: &Env, extra: &[&str]) -> Controller {
        let controller = Controller::spawn(env, extra);
        controller.wait_webhooks(env);
        controller
    }

    /// Starts `hoist atc` without waiting for it.
    fn spawn(env: &Env, extra: &[&str]) -> Controller {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("atc.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hoist"));
        cmd.args(["atc", "--port", &port.to_string()])
            .args(["--webhook-url", &format!("https://127.0.0.1:{port}")])
            .arg("--cache-dir")
            .arg(dir.path().join("modules"))
            .args(extra)
            .env("KUBECONFIG", controller_kubeconfig(env))
            .env("HOIST_CACHE_DIR", dir.path())
            .env("HOIST_LOG", "hoist_atc=info,hoist=info")
            .env_remove("PORT")
            .env_remove("MODULE_ALLOW_LIST")
            .env_remove("MODULE_VERIFICATION_KEYS_PATH")
            .env_remove("LEADER_ELECT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().expect("spawn hoist atc");
        Controller {
            child,
            log,
            port,
            _dir: dir,
        }
    }

    /// Waits until the global webhook configuration points at this controller (it applies
    /// them once it reconciles).
    fn wait_webhooks(&self, env: &Env) {
        let conn = connect(&env.kubeconfig);
        let want = format!(
            "https://127.0.0.1:{}/validations/airways.yoke.cd",
            self.port
        );
        self.wait("the controller to start", Duration::from_secs(120), || {
            get(
                &conn,
                "admissionregistration.k8s.io/v1",
                "ValidatingWebhookConfiguration",
                None,
                "atc-airway",
            )
            .is_some_and(|c| c.pointer("/webhooks/0/clientConfig/url") == Some(&json!(want)))
        });
    }

    /// GET `path` on the controller's HTTPS server: (HTTP status, body).
    fn http_get(&self, path: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sk", "-w", "\n%{http_code}"])
            .arg(format!("https://127.0.0.1:{}{path}", self.port))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// SIGKILL: no graceful shutdown (a crash).
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait(&self, what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "timed out waiting for {what}; controller log:\n{}",
            self.logs()
        );
    }

    /// SIGTERM, then waits for a graceful exit.
    fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("hoist atc did not exit after SIGTERM:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One runtime for every API call of the tests: the kube client's connection pool lives on
/// the runtime it was created on.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

fn connect(kubeconfig: &Path) -> Connection {
    runtime()
        .block_on(hoist_release::connect(Some(kubeconfig), None))
        .unwrap()
}

fn get(
    conn: &Connection,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
    name: &str,
) -> Option<Value> {
    runtime().block_on(support::get(conn, api_version, kind, ns, name))
}

/// Server-side applies `object` as a user would (`kubectl apply --server-side`).
fn apply(conn: &Connection, object: &Value) -> Result<Value, String> {
    runtime().block_on(support::apply(conn, object))
}

fn delete(conn: &Connection, api_version: &str, kind: &str, ns: Option<&str>, name: &str) {
    runtime().block_on(support::delete(conn, api_version, kind, ns, name))
}

/// Deletes an object and says what the API server answered.
fn try_delete(
    conn: &Connection,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
    name: &str,
) -> Result<(), String> {
    runtime().block_on(async {
        let res = conn
            .resolve(api_version, kind)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{api_version} {kind} is not served"))?;
        conn.delete_object(&res, ns, name)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

fn list(
    conn: &Connection,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
    selector: &str,
) -> Vec<Value> {
    runtime().block_on(support::list(conn, api_version, kind, ns, selector))
}

fn ready_reason(object: &Value) -> Option<(String, String)> {
    let condition = object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    Some((
        condition["status"].as_str()?.to_string(),
        condition["reason"].as_str()?.to_string(),
    ))
}

fn sha1_hex(text: &str) -> String {
    hoist_release::state::sha1_hex(text.as_bytes())
}

fn airway(name_group: &str, flight: &Path, extra_spec: Value) -> Value {
    let mut spec = json!({
        "wasmUrls": {"flight": flight.display().to_string()},
        "template": {
            "group": name_group,
            "scope": "Namespaced",
            "names": {"kind": "Backend", "plural": "backends", "singular": "backend"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                }}}
            }]
        }
    });
    if let (Some(map), Value::Object(extra)) = (spec.as_object_mut(), extra_spec) {
        map.extend(extra);
    }
    json!({
        "apiVersion": "yoke.cd/v1alpha1",
        "kind": "Airway",
        "metadata": {"name": format!("backends.{name_group}")},
        "spec": spec,
    })
}

fn backend(group: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": format!("{group}/v1"),
        "kind": "Backend",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    })
}

#[test]
fn airway_instances_become_releases_and_cascade_on_delete() {
    let Some(env) = env() else { return };
    let _one = ONE_CONTROLLER.lock().unwrap_or_else(|p| p.into_inner());
    let conn = connect(&env.kubeconfig);
    let atc = Controller::start(&env, &[]);
    let group = format!("{}.examples.com", unique("e2e"));
    let airway_name = format!("backends.{group}");

    // An Airway without a storage version is refused by the airways.yoke.cd webhook.
    let mut bad = airway(&group, &env.flight, json!({}));
    bad["spec"]["template"]["versions"][0]["storage"] = json!(false);
    let err = apply(&conn, &bad).expect_err("an Airway without storage version must be refused");
    assert!(
        err.contains("airways.yoke.cd") && err.contains("invalid crd template"),
        "{err}"
    );
    assert!(err.contains("storage"), "{err}");

    // A valid Airway becomes Ready; its CRD is owned by it and got the status subresource.
    apply(&conn, &airway(&group, &env.flight, json!({}))).unwrap();
    atc.wait("the Airway to be Ready", Duration::from_secs(120), || {
        get(&conn, "yoke.cd/v1alpha1", "Airway", None, &airway_name).and_then(|a| ready_reason(&a))
            == Some(("True".into(), "Ready".into()))
    });
    let airway_live = get(&conn, "yoke.cd/v1alpha1", "Airway", None, &airway_name).unwrap();
    assert!(
        airway_live["metadata"]["finalizers"]
            .as_array()
            .unwrap()
            .contains(&json!("yoke.cd/strip.airway"))
    );
    let crd = get(
        &conn,
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        None,
        &airway_name,
    )
    .expect("the Airway's CRD");
    assert_eq!(crd["metadata"]["ownerReferences"][0]["kind"], "Airway");
    assert_eq!(
        crd["metadata"]["ownerReferences"][0]["uid"],
        airway_live["metadata"]["uid"]
    );
    assert_eq!(
        crd["spec"]["versions"][0]["subresources"]["status"],
        json!({})
    );
    assert!(
        crd.pointer(
            "/spec/versions/0/schema/openAPIV3Schema/properties/status/properties/conditions"
        )
        .is_some()
    );
    let hook = get(
        &conn,
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        None,
        &airway_name,
    )
    .expect("the Airway's validating webhook");
    assert_eq!(hook["webhooks"][0]["name"], json!(airway_name));

    // An instance whose flight renders an invalid Deployment is refused by the dry run,
    // with the API server's field errors.
    let err = apply(
        &conn,
        &backend(&group, "broken", json!({"invalid": true, "replicas": 1})),
    )
    .expect_err("an instance rendering an invalid Deployment must be refused");
    assert!(err.contains("dry-run"), "{err}");
    assert!(err.contains("selector"), "{err}");

    // A namespaced Airway may not write to another namespace.
    let err = apply(
        &conn,
        &backend(&group, "wide", json!({"otherNamespace": "kube-public"})),
    )
    .expect_err("cross-namespace output of a namespaced instance must be refused");
    assert!(err.contains("kube-public"), "{err}");

    // A valid instance becomes a release: ConfigMap, revision, marks, owner, Ready.
    let name = "c4ts";
    let release = format!("{group}.Backend.default.{name}");
    apply(
        &conn,
        &backend(
            &group,
            name,
            json!({"data": {"color": "blue"}, "replicas": 2}),
        ),
    )
    .unwrap();
    atc.wait("the instance to be Ready", Duration::from_secs(120), || {
        get(
            &conn,
            &format!("{group}/v1"),
            "Backend",
            Some("default"),
            name,
        )
        .and_then(|i| ready_reason(&i))
            == Some(("True".into(), "Ready".into()))
    });
    let cm =
        get(&conn, "v1", "ConfigMap", Some("default"), name).expect("the instance's ConfigMap");
    assert_eq!(cm["data"]["color"], "blue");
    assert_eq!(cm["data"]["replicas"], "2");
    assert_eq!(
        cm["data"]["release"],
        json!(release),
        "YOKE_RELEASE is Yoke's release name"
    );
    assert_eq!(cm["data"]["namespace"], "default");
    assert_eq!(
        cm["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "atc.yoke"
    );
    assert_eq!(
        cm["metadata"]["annotations"]["instance.atc.yoke.cd/release"],
        json!(release)
    );
    assert_eq!(
        cm["metadata"]["annotations"]["instance.atc.yoke.cd/namespace"],
        "default"
    );
    assert_eq!(
        cm["metadata"]["annotations"]["instance.atc.yoke.cd/instanceRef"],
        json!(format!("default/Backend.{group}:{name}"))
    );
    let instance = get(
        &conn,
        &format!("{group}/v1"),
        "Backend",
        Some("default"),
        name,
    )
    .unwrap();
    assert_eq!(
        cm["metadata"]["ownerReferences"][0]["uid"],
        instance["metadata"]["uid"]
    );
    assert!(
        instance["metadata"]["finalizers"]
            .as_array()
            .unwrap()
            .contains(&json!("yoke.cd/mayday.flight"))
    );
    assert!(
        instance["metadata"]["ownerReferences"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["kind"] == "Airway" && o["uid"] == airway_live["metadata"]["uid"])
    );
    let selector = format!(
        "internal.yoke/kind=revision,internal.yoke/release={}",
        sha1_hex(&release)
    );
    let revisions = list(&conn, "v1", "Secret", Some("default"), &selector);
    assert_eq!(revisions.len(), 1, "one revision Secret");
    assert_eq!(
        revisions[0]["metadata"]["annotations"]["internal.yoke/release-name"],
        json!(release)
    );
    assert!(
        revisions[0]["metadata"]["annotations"]["internal.yoke/source-url"]
            .as_str()
            .unwrap()
            .starts_with("file://")
    );

    // Updates re-render; the history keeps Yoke's default of 2 revisions.
    for color in ["green", "red"] {
        apply(
            &conn,
            &backend(
                &group,
                name,
                json!({"data": {"color": color}, "replicas": 2}),
            ),
        )
        .unwrap();
        atc.wait(
            &format!("the ConfigMap to turn {color}"),
            Duration::from_secs(60),
            || {
                get(&conn, "v1", "ConfigMap", Some("default"), name)
                    .is_some_and(|c| c["data"]["color"] == color)
            },
        );
    }
    atc.wait(
        "the history to be capped at 2",
        Duration::from_secs(30),
        || list(&conn, "v1", "Secret", Some("default"), &selector).len() == 2,
    );

    // Identity passthrough: the flight's own copy of the instance carries its status.
    apply(
        &conn,
        &backend(
            &group,
            name,
            json!({"data": {"color": "red"}, "replicas": 2, "status": "Running"}),
        ),
    )
    .unwrap();
    atc.wait(
        "the flight's status on the instance",
        Duration::from_secs(60),
        || {
            get(
                &conn,
                &format!("{group}/v1"),
                "Backend",
                Some("default"),
                name,
            )
            .is_some_and(|i| {
                i.pointer("/status/phase") == Some(&json!("Running"))
                    && i.pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .is_some_and(|c| {
                            c.iter()
                                .any(|c| c["type"] == "Custom" && c["reason"] == "FromFlight")
                        })
            })
        },
    );

    // Deleting the instance removes its resources and revisions (mayday via the finalizer).
    delete(
        &conn,
        &format!("{group}/v1"),
        "Backend",
        Some("default"),
        name,
    );
    atc.wait(
        "the instance and its ConfigMap to be gone",
        Duration::from_secs(60),
        || {
            get(&conn, "v1", "ConfigMap", Some("default"), name).is_none()
                && get(
                    &conn,
                    &format!("{group}/v1"),
                    "Backend",
                    Some("default"),
                    name,
                )
                .is_none()
        },
    );
    assert!(list(&conn, "v1", "Secret", Some("default"), &selector).is_empty());

    // Deleting the Airway removes its webhook configuration and CRD, cascading to instances.
    apply(
        &conn,
        &backend(&group, "second", json!({"data": {"x": "y"}})),
    )
    .unwrap();
    atc.wait(
        "the second instance's ConfigMap",
        Duration::from_secs(60),
        || get(&conn, "v1", "ConfigMap", Some("default"), "second").is_some(),
    );
    delete(&conn, "yoke.cd/v1alpha1", "Airway", None, &airway_name);
    atc.wait(
        "the Airway, its CRD and its instances to be gone",
        Duration::from_secs(120),
        || {
            get(&conn, "yoke.cd/v1alpha1", "Airway", None, &airway_name).is_none()
                && get(
                    &conn,
                    "apiextensions.k8s.io/v1",
                    "CustomResourceDefinition",
                    None,
                    &airway_name,
                )
                .is_none()
                && get(
                    &conn,
                    "admissionregistration.k8s.io/v1",
                    "ValidatingWebhookConfiguration",
                    None,
                    &airway_name,
                )
                .is_none()
                && get(&conn, "v1", "ConfigMap", Some("default"), "second").is_none()
        },
    );
    let status = atc.stop();
    assert!(status.success(), "hoist atc exited with {status}");
}

#[test]
fn flights_and_cluster_flights_and_graceful_shutdown() {
    let Some(env) = env() else { return };
    let _one = ONE_CONTROLLER.lock().unwrap_or_else(|p| p.into_inner());
    let conn = connect(&env.kubeconfig);
    let atc = Controller::start(&env, &[]);
    let name = unique("basic");
    let flight = json!({
        "apiVersion": "yoke.cd/v1alpha1", "kind": "Flight",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"wasmUrl": env.flight.display().to_string(), "args": ["configmap"], "input": "{\"key\": \"value\"}"}
    });
    apply(&conn, &flight).unwrap();
    atc.wait("the Flight to be Ready", Duration::from_secs(120), || {
        get(&conn, "yoke.cd/v1alpha1", "Flight", Some("default"), &name)
            .and_then(|f| ready_reason(&f))
            == Some(("True".into(), "Ready".into()))
    });
    let cm = get(&conn, "v1", "ConfigMap", Some("default"), &name).expect("the Flight's ConfigMap");
    assert_eq!(cm["data"]["key"], "value");
    assert_eq!(
        cm["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "atc.yoke"
    );
    assert_eq!(
        cm["metadata"]["annotations"]["instance.atc.yoke.cd/release"],
        json!(format!("default/Flight.yoke.cd:{name}"))
    );
    let live = get(&conn, "yoke.cd/v1alpha1", "Flight", Some("default"), &name).unwrap();
    assert_eq!(
        live["status"]["inventory"],
        json!([{"resource": format!("default/ConfigMap:{name}"), "version": "v1", "ready": true}])
    );

    // A change of input updates the ConfigMap; bad input is refused at admission.
    let mut changed = flight.clone();
    changed["spec"]["input"] = json!("{\"key\": \"other\"}");
    apply(&conn, &changed).unwrap();
    atc.wait(
        "the Flight's ConfigMap to change",
        Duration::from_secs(60),
        || {
            get(&conn, "v1", "ConfigMap", Some("default"), &name)
                .is_some_and(|c| c["data"]["key"] == "other")
        },
    );
    let mut broken = flight.clone();
    broken["spec"]["input"] = json!("not json");
    let err = apply(&conn, &broken).expect_err("bad input must be refused");
    assert!(
        err.contains("flights.yoke.cd") && err.contains("failed to decode input"),
        "{err}"
    );

    // A ClusterFlight may write to any namespace.
    let cluster_name = unique("cluster");
    apply(&conn, &json!({
        "apiVersion": "yoke.cd/v1alpha1", "kind": "ClusterFlight",
        "metadata": {"name": cluster_name},
        "spec": {"wasmUrl": env.flight.display().to_string(), "args": ["configmap"], "inputObject": {"a": "b"}}
    }))
    .unwrap();
    atc.wait(
        "the ClusterFlight to be Ready",
        Duration::from_secs(120),
        || {
            get(
                &conn,
                "yoke.cd/v1alpha1",
                "ClusterFlight",
                None,
                &cluster_name,
            )
            .and_then(|f| ready_reason(&f))
                == Some(("True".into(), "Ready".into()))
        },
    );
    assert_eq!(
        get(&conn, "v1", "ConfigMap", Some("default"), &cluster_name).unwrap()["data"]["a"],
        "b"
    );

    // Deletion cleans up.
    delete(&conn, "yoke.cd/v1alpha1", "Flight", Some("default"), &name);
    delete(
        &conn,
        "yoke.cd/v1alpha1",
        "ClusterFlight",
        None,
        &cluster_name,
    );
    atc.wait(
        "the Flights' ConfigMaps to be gone",
        Duration::from_secs(60),
        || {
            get(&conn, "v1", "ConfigMap", Some("default"), &name).is_none()
                && get(&conn, "v1", "ConfigMap", Some("default"), &cluster_name).is_none()
        },
    );

    // Graceful shutdown removes the global webhook configurations.
    let status = atc.stop();
    assert!(status.success(), "hoist atc exited with {status}");
    for config in ["atc-airway", "atc-flight"] {
        assert!(
            get(
                &conn,
                "admissionregistration.k8s.io/v1",
                "ValidatingWebhookConfiguration",
                None,
                config
            )
            .is_none(),
            "{config} must be removed on shutdown"
        );
    }
}

fn instance_ready(conn: &Connection, group: &str, name: &str) -> bool {
    get(
        conn,
        &format!("{group}/v1"),
        "Backend",
        Some("default"),
        name,
    )
    .and_then(|i| ready_reason(&i))
        == Some(("True".into(), "Ready".into()))
}

fn airway_ready(conn: &Connection, group: &str) -> bool {
    get(
        conn,
        "yoke.cd/v1alpha1",
        "Airway",
        None,
        &format!("backends.{group}"),
    )
    .and_then(|a| ready_reason(&a))
        == Some(("True".into(), "Ready".into()))
}

fn configmap(conn: &Connection, ns: &str, name: &str) -> Option<Value> {
    get(conn, "v1", "ConfigMap", Some(ns), name)
}

/// A user's own change of a ConfigMap field (a merge patch, as `kubectl patch` does).
fn edit_configmap(conn: &Connection, name: &str, key: &str, value: &str) -> Result<Value, String> {
    runtime().block_on(async {
        let res = conn.resolve("v1", "ConfigMap").await.unwrap().unwrap();
        conn.merge_patch(&res, Some("default"), name, &json!({"data": {key: value}}))
            .await
            .map_err(|e| e.to_string())
    })
}

/// Applies until the API server accepts (after a restart, an Airway's webhook points at the
/// new controller once that Airway is reconciled again).
fn apply_eventually(conn: &Connection, object: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match apply(conn, object) {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline && e.contains("failed calling webhook") => {
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// A wasip1 module that writes `output` to stdout (an override flight with other output).
fn fixed_output_module(output: &Value) -> Vec<u8> {
    let text = output.to_string();
    let escaped: String = text.bytes().map(|b| format!("\\{b:02x}")).collect();
    wat::parse_str(format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "{escaped}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const {len}))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        len = text.len()
    ))
    .unwrap()
}

fn revisions(conn: &Connection, release: &str) -> Vec<Value> {
    let selector = format!(
        "internal.yoke/kind=revision,internal.yoke/release={}",
        sha1_hex(release)
    );
    list(conn, "v1", "Secret", Some("default"), &selector)
}

/// Yoke's mode, drift, history, override and conversion scenarios against one controller.
#[test]
fn modes_drift_history_overrides_conversion_and_cluster_scope() {
    let Some(env) = env() else { return };
    let _one = ONE_CONTROLLER.lock().unwrap_or_else(|p| p.into_inner());
    let conn = connect(&env.kubeconfig);
    let atc = Controller::start(&env, &[]);
    let minute = Duration::from_secs(60);
    let run = unique("m");

    // Dynamic mode, history cap 3: a deleted child is recreated; 3 revisions are kept.
    let dynamic = format!("dyn-{run}.examples.com");
    apply(
        &conn,
        &airway(
            &dynamic,
            &env.flight,
            json!({"mode": "dynamic", "historyCapSize": 3}),
        ),
    )
    .unwrap();
    atc.wait("the dynamic Airway", minute, || {
        airway_ready(&conn, &dynamic)
    });
    let dyn_name = format!("dyn-{run}");
    apply(
        &conn,
        &backend(&dynamic, &dyn_name, json!({"data": {"color": "blue"}})),
    )
    .unwrap();
    atc.wait("the dynamic instance", minute, || {
        instance_ready(&conn, &dynamic, &dyn_name)
    });
    let first_uid = configmap(&conn, "default", &dyn_name).unwrap()["metadata"]["uid"].clone();
    delete(&conn, "v1", "ConfigMap", Some("default"), &dyn_name);
    atc.wait("dynamic mode to recreate the deleted child", minute, || {
        configmap(&conn, "default", &dyn_name)
            .is_some_and(|c| c["metadata"]["uid"] != first_uid && c["data"]["color"] == "blue")
    });
    let dyn_release = format!("{dynamic}.Backend.default.{dyn_name}");
    for color in ["c1", "c2", "c3", "c4"] {
        apply(
            &conn,
            &backend(&dynamic, &dyn_name, json!({"data": {"color": color}})),
        )
        .unwrap();
        atc.wait(&format!("color {color}"), minute, || {
            configmap(&conn, "default", &dyn_name).is_some_and(|c| c["data"]["color"] == color)
        });
    }
    atc.wait("history capped at 3", Duration::from_secs(30), || {
        revisions(&conn, &dyn_release).len() == 3
    });
    for revision in revisions(&conn, &dyn_release) {
        let annotations = &revision["metadata"]["annotations"];
        assert!(
            annotations["internal.yoke/source-url"]
                .as_str()
                .is_some_and(|u| u.starts_with("file://")),
            "{annotations}"
        );
        assert_eq!(
            annotations["internal.yoke/source-checksum"]
                .as_str()
                .map(str::len),
            Some(40),
            "Yoke's SHA-1 source checksum: {annotations}"
        );
    }

    // Static mode: changes and deletes of children are refused; fields the flight does not
    // set may change; an admin's mode override to dynamic makes the child self-heal.
    let fixed = format!("sta-{run}.examples.com");
    apply(
        &conn,
        &airway(&fixed, &env.flight, json!({"mode": "static"})),
    )
    .unwrap();
    atc.wait("the static Airway", minute, || airway_ready(&conn, &fixed));
    let sta_name = format!("sta-{run}");
    apply(
        &conn,
        &backend(&fixed, &sta_name, json!({"data": {"color": "blue"}})),
    )
    .unwrap();
    atc.wait("the static instance", minute, || {
        instance_ready(&conn, &fixed, &sta_name)
    });
    let err = edit_configmap(&conn, &sta_name, "color", "red")
        .expect_err("a static child must not change");
    assert!(
        err.contains("resources.yoke.cd") && err.contains("cannot modify flight sub-resources"),
        "{err}"
    );
    edit_configmap(&conn, &sta_name, "extra", "a field the flight does not set")
        .expect("fields the flight does not set may change");
    let err = try_delete(&conn, "v1", "ConfigMap", Some("default"), &sta_name)
        .expect_err("a static child must not be deleted");
    assert!(
        err.contains("cannot delete resources managed by Air-Traffic-Controller"),
        "{err}"
    );
    let mut overridden = backend(&fixed, &sta_name, json!({"data": {"color": "blue"}}));
    overridden["metadata"]["annotations"] = json!({"overrides.yoke.cd/mode": "dynamic"});
    apply(&conn, &overridden).unwrap();
    // Wait for the reconcile of the override (the instance's status is rewritten).
    std::thread::sleep(Duration::from_secs(2));
    atc.wait("the overridden instance", minute, || {
        instance_ready(&conn, &fixed, &sta_name)
    });
    let uid = configmap(&conn, "default", &sta_name).unwrap()["metadata"]["uid"].clone();
    try_delete(&conn, "v1", "ConfigMap", Some("default"), &sta_name)
        .expect("with the dynamic override the child may be deleted");
    atc.wait(
        "the overridden instance's child to come back",
        minute,
        || configmap(&conn, "default", &sta_name).is_some_and(|c| c["metadata"]["uid"] != uid),
    );

    // fixDriftInterval: a manual change to a child of a standard instance is reverted.
    let drift = format!("drift-{run}.examples.com");
    apply(
        &conn,
        &airway(&drift, &env.flight, json!({"fixDriftInterval": "500ms"})),
    )
    .unwrap();
    atc.wait("the drift Airway", minute, || airway_ready(&conn, &drift));
    let drift_name = format!("drift-{run}");
    apply(
        &conn,
        &backend(&drift, &drift_name, json!({"data": {"color": "blue"}})),
    )
    .unwrap();
    atc.wait("the drift instance", minute, || {
        instance_ready(&conn, &drift, &drift_name)
    });
    edit_configmap(&conn, &drift_name, "color", "tampered")
        .expect("standard mode lets users change children");
    atc.wait("fixDriftInterval to revert the change", minute, || {
        configmap(&conn, "default", &drift_name).is_some_and(|c| c["data"]["color"] == "blue")
    });

    // Override annotations need `update airways`: a user who may create instances but not
    // update Airways is refused; an admin may point an instance at another module.
    if let Some(restricted) = support::kubeconfig("HOIST_TEST_RESTRICTED_KUBECONFIG") {
        let role = format!("atc-e2e-{run}");
        apply(&conn, &json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": role},
            "rules": [{"apiGroups": [drift], "resources": ["backends"], "verbs": ["get", "list", "create", "update", "patch"]}],
        }))
        .unwrap();
        apply(&conn, &json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "hoist-restricted"}],
        }))
        .unwrap();
        let user = connect(&restricted);
        let mut with_override = backend(&drift, "by-user", json!({"data": {"color": "x"}}));
        with_override["metadata"]["annotations"] =
            json!({"overrides.yoke.cd/flight": env.flight.display().to_string()});
        let mut refused = Err(String::new());
        // RBAC bindings take a moment to reach the authorizer's cache.
        for _ in 0..40 {
            refused = apply(&user, &with_override);
            if refused
                .as_ref()
                .err()
                .is_some_and(|e| e.contains("override annotations"))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let err = refused.expect_err("override annotations need update on airways");
        assert!(
            err.contains("user does not have permissions to create or update override annotations"),
            "{err}"
        );
        apply(
            &user,
            &backend(&drift, "by-user", json!({"data": {"color": "x"}})),
        )
        .expect("a plain instance needs no Airway permission");
        delete(
            &conn,
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            None,
            &role,
        );
        delete(
            &conn,
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            None,
            &role,
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("override.wasm");
    std::fs::write(&copy, fixed_output_module(&json!([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": drift_name}, "data": {"by": "override"}}]))).unwrap();
    let mut admin_override = backend(&drift, &drift_name, json!({"data": {"color": "blue"}}));
    admin_override["metadata"]["annotations"] =
        json!({"overrides.yoke.cd/flight": copy.display().to_string()});
    apply(&conn, &admin_override).expect("an admin may set override annotations");
    let drift_release = format!("{drift}.Backend.default.{drift_name}");
    atc.wait("the override module to be used", minute, || {
        configmap(&conn, "default", &drift_name).is_some_and(|c| c["data"]["by"] == "override")
    });
    assert!(revisions(&conn, &drift_release).iter().any(|r| {
        r["metadata"]["annotations"]["internal.yoke/source-url"]
            == json!(format!("file://{}", copy.display()))
    }));

    // Conversion: the converter module serves v1 <-> v2.
    let conv = format!("conv-{run}.examples.com");
    let mut conv_airway = airway(&conv, &env.flight, json!({}));
    conv_airway["spec"]["wasmUrls"]["converter"] = json!(env.flight.display().to_string());
    let v1 = conv_airway["spec"]["template"]["versions"][0].clone();
    let mut v2 = v1.clone();
    v2["name"] = json!("v2");
    v2["storage"] = json!(false);
    conv_airway["spec"]["template"]["versions"] = json!([v1, v2]);
    apply(&conn, &conv_airway).unwrap();
    atc.wait("the converting Airway", minute, || {
        airway_ready(&conn, &conv)
    });
    let crd = get(
        &conn,
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        None,
        &format!("backends.{conv}"),
    )
    .unwrap();
    assert_eq!(crd["spec"]["conversion"]["strategy"], "Webhook");
    apply(
        &conn,
        &backend(&conv, "converted", json!({"data": {"a": "b"}})),
    )
    .unwrap();
    let as_v2 = get(
        &conn,
        &format!("{conv}/v2"),
        "Backend",
        Some("default"),
        "converted",
    )
    .expect("the instance read as v2");
    assert_eq!(as_v2["apiVersion"], json!(format!("{conv}/v2")));
    assert_eq!(as_v2["spec"]["entries"], json!({"a": "b"}), "{as_v2}");
    assert!(as_v2["spec"].get("data").is_none(), "{as_v2}");

    // Cluster scope: a cluster-scoped instance may write to several namespaces.
    let wide = format!("clu-{run}.examples.com");
    let mut wide_airway = airway(&wide, &env.flight, json!({}));
    wide_airway["spec"]["template"]["scope"] = json!("Cluster");
    apply(&conn, &wide_airway).unwrap();
    atc.wait("the cluster-scoped Airway", minute, || {
        airway_ready(&conn, &wide)
    });
    let wide_name = format!("clu-{run}");
    apply(
        &conn,
        &json!({
            "apiVersion": format!("{wide}/v1"), "kind": "Backend",
            "metadata": {"name": wide_name},
            "spec": {"data": {"x": "y"}, "otherNamespace": "kube-public"},
        }),
    )
    .expect("a cluster-scoped instance may write to several namespaces");
    atc.wait("the cluster-scoped instance", minute, || {
        get(&conn, &format!("{wide}/v1"), "Backend", None, &wide_name)
            .and_then(|i| ready_reason(&i))
            == Some(("True".into(), "Ready".into()))
    });
    assert!(configmap(&conn, "kube-public", &wide_name).is_some());
    assert!(configmap(&conn, "default", &wide_name).is_some());

    // /metrics counts what happened.
    for group in [&dynamic, &fixed, &drift, &conv, &wide] {
        delete(
            &conn,
            "yoke.cd/v1alpha1",
            "Airway",
            None,
            &format!("backends.{group}"),
        );
    }
    atc.wait("the Airways to be gone", Duration::from_secs(120), || {
        [&dynamic, &fixed, &drift, &conv, &wide].iter().all(|g| {
            get(
                &conn,
                "yoke.cd/v1alpha1",
                "Airway",
                None,
                &format!("backends.{g}"),
            )
            .is_none()
        })
    });
    let status = atc.stop();
    assert!(status.success(), "hoist atc exited with {status}");
}

/// The allow list and verification keys refuse modules at the Airway webhook; a signed,
/// allow-listed module is accepted (unlike Yoke, allow-listed modules are still checked).
#[test]
fn allow_list_and_signatures_refuse_modules() {
    let Some(env) = env() else { return };
    let _one = ONE_CONTROLLER.lock().unwrap_or_else(|p| p.into_inner());
    let conn = connect(&env.kubeconfig);
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    let unsigned = allowed.join("unsigned.wasm");
    std::fs::copy(&env.flight, &unsigned).unwrap();
    let signed = allowed.join("signed.wasm");
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/keys");
    let out = Command::new(env!("CARGO_BIN_EXE_hoist"))
        .args(["sign", "--key"])
        .arg(keys.join("test-p256.pkcs8.pem"))
        .arg("-o")
        .arg(&signed)
        .arg(&env.flight)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Yoke's MODULE_VERIFICATION_KEYS_PATH format: a JSON array of PEM strings.
    let keys_json = dir.path().join("keys.json");
    let pem = std::fs::read_to_string(keys.join("test-p256.pub.pem")).unwrap();
    std::fs::write(&keys_json, serde_json::to_string(&[pem]).unwrap()).unwrap();
    let allow = format!("file://{}/*", allowed.display());
    let atc = Controller::start(
        &env,
        &[
            "--module-allow-list",
            &allow,
            "--module-verification-keys",
            keys_json.to_str().unwrap(),
        ],
    );
    let group = format!("{}.examples.com", unique("sig"));
    let err = apply(&conn, &airway(&group, &env.flight, json!({})))
        .expect_err("a module outside the allow list must be refused");
    assert!(err.contains("not allowed"), "{err}");
    let err = apply(&conn, &airway(&group, &unsigned, json!({})))
        .expect_err("an unsigned module must be refused");
    assert!(err.contains("not signed"), "{err}");
    apply(&conn, &airway(&group, &signed, json!({}))).expect("a signed, allowed module");
    atc.wait("the signed Airway", Duration::from_secs(60), || {
        airway_ready(&conn, &group)
    });
    // An override outside the allow list is refused at admission.
    let mut outside = backend(&group, "outside", json!({}));
    outside["metadata"]["annotations"] =
        json!({"overrides.yoke.cd/flight": env.flight.display().to_string()});
    let err = apply(&conn, &outside).expect_err("an override outside the allow list");
    assert!(err.contains("not allowed"), "{err}");
    delete(
        &conn,
        "yoke.cd/v1alpha1",
        "Airway",
        None,
        &format!("backends.{group}"),
    );
    atc.wait("the Airway to be gone", Duration::from_secs(60), || {
        get(
            &conn,
            "yoke.cd/v1alpha1",
            "Airway",
            None,
            &format!("backends.{group}"),
        )
        .is_none()
    });
    let status = atc.stop();
    assert!(status.success(), "hoist atc exited with {status}");
}

/// 200 instances created at once all become Ready although the controller is killed in the
/// middle of reconciling them; a graceful restart keeps them working.
#[test]
fn two_hundred_instances_survive_a_crash_and_a_restart() {
    let Some(env) = env() else { return };
    let _one = ONE_CONTROLLER.lock().unwrap_or_else(|p| p.into_inner());
    let conn = connect(&env.kubeconfig);
    let atc = Controller::start(&env, &[]);
    let group = format!("{}.examples.com", unique("many"));
    apply(&conn, &airway(&group, &env.flight, json!({}))).unwrap();
    atc.wait("the Airway", Duration::from_secs(60), || {
        airway_ready(&conn, &group)
    });
    let prefix = unique("n");
    let names: Vec<String> = (0..200).map(|i| format!("{prefix}-{i}")).collect();
    std::thread::scope(|scope| {
        for chunk in names.chunks(25) {
            let conn = &conn;
            let group = &group;
            scope.spawn(move || {
                for name in chunk {
                    apply(conn, &backend(group, name, json!({"data": {"i": name}}))).unwrap();
                }
            });
        }
    });
    // Crash while reconciling; the next controller converges.
    atc.kill();
    let atc = Controller::start(&env, &[]);
    atc.wait(
        "all 200 instances to be Ready",
        Duration::from_secs(300),
        || {
            let ready = list(
                &conn,
                &format!("{group}/v1"),
                "Backend",
                Some("default"),
                "",
            )
            .iter()
            .filter(|i| ready_reason(i) == Some(("True".into(), "Ready".into())))
            .count();
            ready == names.len()
        },
    );
    for name in [&names[0], &names[199]] {
        assert_eq!(
            configmap(&conn, "default", name).unwrap()["data"]["i"],
            json!(name)
        );
    }
    // A graceful restart removes and restores the global webhooks; instances keep working.
    let status = atc.stop();
    assert!(status.success());
    let atc = Controller::start(&env, &[]);
    let seventh = &names[7];
    apply_eventually(
        &conn,
        &backend(&group, seventh, json!({"data": {"i": "changed"}})),
    );
    atc.wait(
        "an update after the restart",
        Duration::from_secs(60),
        || configmap(&conn, "default", seventh).is_some_and(|c| c["data"]["i"] == "changed"),
    );
    delete(
        &conn,
        "yoke.cd/v1alpha1",
        "Airway",
        None,
        &format!("backends.{group}"),
    );
    atc.wait(
        "the Airway and its instances to be gone",
        Duration::from_secs(300),
        || {
            get(
                &conn,
                "yoke.cd/v1alpha1",
                "Airway",
                None,
                &format!("backends.{group}"),
            )
            .is_none()
        },
    );
    let status = atc.stop();
    assert!(status.success(), "hoist atc exited with {status}");
}

/// Runs a CLI (`hoist` or the real `yoke`) as the tests' user and returns its stdout;
/// panics with both outputs when it fails.
fn cli(program: &Path, kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}):\n{stdout}\n{stderr}",
        program.display(),
        out.status
    );
    stdout
}

/// Interop: a release the controller wrote is read by the real `yoke blackbox` (list,
/// revision, diff), rolled back by `hoist descent` and forward again by `yoke descent`, and
/// the controller continues the same history afterwards.
#[test]
fn controller_releases_are_read_and_rolled_back_by_yoke_and_hoist() {
    let Some(env) = env() else { return };
    let Some(yoke) = common::required_env(
        "HOIST_YOKE",
        "build the real yoke from ../shared/peers: export HOIST_YOKE=$(scripts/tools path yoke)",
    ) else {
        return;
    };
    let hoist = Path::new(env!("CARGO_BIN_EXE_hoist"));
    let _one = ONE_CONTROLLER.lock().unwrap_or_else(|p| p.into_inner());
    let conn = connect(&env.kubeconfig);
    let atc = Controller::start(&env, &[]);
    let group = format!("{}.examples.com", unique("interop"));
    apply(&conn, &airway(&group, &env.flight, json!({}))).unwrap();
    atc.wait("the Airway", Duration::from_secs(120), || {
        airway_ready(&conn, &group)
    });
    let name = unique("x");
    let release = format!("{group}.Backend.default.{name}");
    for (color, revision) in [("blue", 1), ("green", 2)] {
        apply(
            &conn,
            &backend(&group, &name, json!({"data": {"color": color}})),
        )
        .unwrap();
        atc.wait(
            &format!("revision {revision} ({color})"),
            Duration::from_secs(60),
            || {
                revisions(&conn, &release).len() == revision
                    && configmap(&conn, "default", &name)
                        .is_some_and(|c| c["data"]["color"] == color)
                    && instance_ready(&conn, &group, &name)
            },
        );
    }
    let kc = env.kubeconfig.as_path();

    // yoke lists the release, shows a revision's resources with the controller's marks, and
    // diffs two revisions.
    let listed = cli(&yoke, kc, &["blackbox", "-namespace", "default"]);
    assert!(
        listed.contains(&release),
        "yoke lists the release:\n{listed}"
    );
    let table = cli(&yoke, kc, &["blackbox", "-namespace", "default", &release]);
    assert!(table.contains("2 (current)"), "{table}");
    assert!(
        table.contains(&format!("file://{}", env.flight.display())),
        "yoke shows the flight URL:\n{table}"
    );
    let first = cli(
        &yoke,
        kc,
        &["blackbox", "-namespace", "default", &release, "1"],
    );
    assert!(first.contains("color: blue"), "{first}");
    assert!(
        first.contains("app.kubernetes.io/managed-by: atc.yoke"),
        "{first}"
    );
    assert!(
        first.contains(&format!(
            "instance.atc.yoke.cd/instanceRef: default/Backend.{group}:{name}"
        )),
        "{first}"
    );
    let diff = cli(
        &yoke,
        kc,
        &["blackbox", "-namespace", "default", &release, "1", "2"],
    );
    assert!(
        diff.contains("-    color: blue") && diff.contains("+    color: green"),
        "{diff}"
    );

    // hoist rolls back to revision 1, yoke forward to revision 2; each sees the other's move.
    cli(hoist, kc, &["rollback", "-n", "default", &release, "1"]);
    assert_eq!(
        configmap(&conn, "default", &name).unwrap()["data"]["color"],
        "blue"
    );
    let table = cli(&yoke, kc, &["blackbox", "-namespace", "default", &release]);
    let current = table
        .lines()
        .find(|l| l.contains("(current)"))
        .unwrap_or_else(|| panic!("no current revision:\n{table}"));
    assert!(current.contains(" 1 (current)"), "{table}");
    cli(
        &yoke,
        kc,
        &["descent", "-namespace", "default", &release, "2"],
    );
    let live = configmap(&conn, "default", &name).unwrap();
    assert_eq!(live["data"]["color"], "green");
    assert_eq!(
        live["metadata"]["ownerReferences"][0]["kind"], "Backend",
        "the rollback kept the owner reference to the instance"
    );
    let shown = cli(hoist, kc, &["blackbox", "-n", "default", &release]);
    let active = shown
        .lines()
        .find(|l| l.contains("(active)"))
        .unwrap_or_else(|| panic!("no active revision:\n{shown}"));
    assert!(active.trim_start().starts_with("2 (active)"), "{shown}");

    // The controller continues the history: revision 3, capped at 2 revisions.
    apply(
        &conn,
        &backend(&group, &name, json!({"data": {"color": "red"}})),
    )
    .unwrap();
    atc.wait("the red revision", Duration::from_secs(60), || {
        configmap(&conn, "default", &name).is_some_and(|c| c["data"]["color"] == "red")
            && instance_ready(&conn, &group, &name)
    });
    // The history is capped at 2: yoke (which numbers the retained revisions from 1) shows
    // green then red, red current; blue is gone.
    atc.wait(
        "the red revision, as yoke sees it",
        Duration::from_secs(30),
        || {
            revisions(&conn, &release).len() == 2
                && cli(
                    &yoke,
                    kc,
                    &["blackbox", "-namespace", "default", &release, "2"],
                )
                .contains("color: red")
        },
    );
    let table = cli(&yoke, kc, &["blackbox", "-namespace", "default", &release]);
    assert!(table.contains("2 (current)"), "{table}");
    let older = cli(
        &yoke,
        kc,
        &["blackbox", "-namespace", "default", &release, "1"],
    );
    assert!(
        older.contains("color: green"),
        "blue is capped away:\n{older}"
    );

    delete(
        &conn,
        "yoke.cd/v1alpha1",
        "Airway",
        None,
        &format!("backends.{group}"),
    );
    atc.wait("the Airway to be gone", Duration::from_secs(120), || {
        get(
            &conn,
            "yoke.cd/v1alpha1",
            "Airway",
            None,
            &format!("backends.{group}"),
        )
        .is_none()
    });
    assert!(atc.stop().success());
}

/// The value of an unlabelled gauge or counter in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn lease_holder(conn: &Connection, ns: &str, name: &str) -> Option<String> {
    get(conn, "coordination.k8s.io/v1", "Lease", Some(ns), name)?
        .pointer("/spec/holderIdentity")?
        .as_str()
        .map(str::to_string)
}

/// Two replicas with leader election: only the Lease holder reconciles (the follower is
/// live, not ready, and runs no reconcile); SIGKILL of the leader hands over within the lease
/// duration (plus one retry period), the new leader re-points the webhooks at itself and
/// reconciles; a graceful stop releases the Lease and keeps the global webhooks.
#[test]
fn leader_election_two_replicas_hand_over_on_a_crash() {
    let Some(env) = env() else { return };
    let _one = ONE_CONTROLLER.lock().unwrap_or_else(|p| p.into_inner());
    let conn = connect(&env.kubeconfig);
    let lease = unique("lease");
    let ns = "hoist-atc-e2e";
    let _ = controller_kubeconfig(&env); // creates the namespace
    let lease_secs = 3u64;
    let duration = lease_secs.to_string() + "s";
    let args = |id: &'static str| {
        vec![
            "--leader-elect".to_string(),
            "--leader-election-namespace".into(),
            ns.into(),
            "--leader-election-id".into(),
            lease.clone(),
            "--lease-duration".into(),
            duration.clone(),
            "--leader-identity".into(),
            id.into(),
        ]
    };
    let a_args = args("replica-a");
    let a = Controller::spawn(&env, &a_args.iter().map(String::as_str).collect::<Vec<_>>());
    a.wait_webhooks(&env);
    assert_eq!(
        lease_holder(&conn, ns, &lease).as_deref(),
        Some("replica-a")
    );
    let b_args = args("replica-b");
    let b = Controller::spawn(&env, &b_args.iter().map(String::as_str).collect::<Vec<_>>());
    b.wait(
        "the follower to serve /live",
        Duration::from_secs(60),
        || b.http_get("/live").0 == 200,
    );
    b.wait(
        "the follower to wait for the lease",
        Duration::from_secs(30),
        || b.logs().contains("waiting for the leader lease"),
    );
    assert_eq!(b.http_get("/ready").0, 503, "a follower is not ready");
    assert_eq!(a.http_get("/ready").0, 200, "the leader is ready");

    // Only the leader reconciles.
    let group = format!("{}.examples.com", unique("lead"));
    apply(&conn, &airway(&group, &env.flight, json!({}))).unwrap();
    a.wait("the Airway", Duration::from_secs(120), || {
        airway_ready(&conn, &group)
    });
    apply(&conn, &backend(&group, "one", json!({"data": {"v": "1"}}))).unwrap();
    a.wait("the instance", Duration::from_secs(60), || {
        instance_ready(&conn, &group, "one")
    });
    let (_, metrics_a) = a.http_get("/metrics");
    let (_, metrics_b) = b.http_get("/metrics");
    assert_eq!(
        metric(&metrics_a, "hoist_atc_leader"),
        Some(1.0),
        "{metrics_a}"
    );
    assert_eq!(
        metric(&metrics_b, "hoist_atc_leader"),
        Some(0.0),
        "{metrics_b}"
    );
    assert!(
        metrics_a.contains("hoist_atc_reconciles_total{kind=\"Instance\"}"),
        "{metrics_a}"
    );
    assert!(
        !metrics_b.contains("hoist_atc_reconciles_total{"),
        "the follower must not reconcile:\n{metrics_b}"
    );
    assert_eq!(
        lease_holder(&conn, ns, &lease).as_deref(),
        Some("replica-a")
    );

    // A crash of the leader: the follower takes the Lease within the lease duration (plus
    // one retry period, a third of it), then reconciles.
    a.kill();
    let killed = Instant::now();
    b.wait(
        "the follower to take the lease",
        Duration::from_secs(60),
        || lease_holder(&conn, ns, &lease).as_deref() == Some("replica-b"),
    );
    let handover = killed.elapsed();
    eprintln!("leader handover took {handover:?} (lease duration {lease_secs}s)");
    assert!(
        handover
            <= Duration::from_secs(lease_secs)
                + Duration::from_millis(1000 * lease_secs / 3 + 1500),
        "handover took {handover:?} with a {lease_secs}s lease"
    );
    b.wait_webhooks(&env);
    assert_eq!(b.http_get("/ready").0, 200, "the new leader is ready");
    apply_eventually(&conn, &backend(&group, "one", json!({"data": {"v": "2"}})));
    apply_eventually(
        &conn,
        &backend(&group, "two", json!({"data": {"v": "new"}})),
    );
    b.wait(
        "the new leader to reconcile",
        Duration::from_secs(60),
        || {
            configmap(&conn, "default", "one").is_some_and(|c| c["data"]["v"] == "2")
                && configmap(&conn, "default", "two").is_some_and(|c| c["data"]["v"] == "new")
                && instance_ready(&conn, &group, "two")
        },
    );

    delete(
        &conn,
        "yoke.cd/v1alpha1",
        "Airway",
        None,
        &format!("backends.{group}"),
    );
    b.wait("the Airway to be gone", Duration::from_secs(120), || {
        get(
            &conn,
            "yoke.cd/v1alpha1",
            "Airway",
            None,
            &format!("backends.{group}"),
        )
        .is_none()
    });
    // A graceful stop releases the Lease and leaves the global webhooks for the next leader.
    assert!(b.stop().success());
    assert_eq!(
        lease_holder(&conn, ns, &lease),
        None,
        "the Lease is released"
    );
    assert!(
        get(
            &conn,
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
            None,
            "atc-airway"
        )
        .is_some()
    );
    // A new replica takes a released Lease at once (no lease duration to wait).
    let c_args = args("replica-c");
    let started = Instant::now();
    let c = Controller::spawn(&env, &c_args.iter().map(String::as_str).collect::<Vec<_>>());
    c.wait_webhooks(&env);
    assert_eq!(
        lease_holder(&conn, ns, &lease).as_deref(),
        Some("replica-c")
    );
    eprintln!(
        "a released lease was taken {:?} after start",
        started.elapsed()
    );
    assert!(c.stop().success());
    // The last replica is gone: remove what it left for a next leader.
    for config in [
        "atc-airway",
        "atc-flight",
        "atc-resources",
        "atc-external-resources",
    ] {
        delete(
            &conn,
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
            None,
            config,
        );
    }
}

/// Stage-aware dry-run admission (Yoke's issue #226): an instance whose flight emits a CRD
/// in stage 1 and a custom resource of it in stage 2 is admitted (the custom resource is
/// checked against the flight's CRD, not dry-run against a kind the API server does not
/// serve yet) and deployed; a version the flight's CRD does not serve is still refused.
#[test]
fn stage_aware_admission_allows_a_crd_and_its_resource_in_later_stages() {
    let Some(env) = env() else { return };
    let _one = ONE_CONTROLLER.lock().unwrap_or_else(|p| p.into_inner());
    let conn = connect(&env.kubeconfig);
    let atc = Controller::start(&env, &[]);
    let group = format!("{}.examples.com", unique("stages"));
    apply(&conn, &airway(&group, &env.flight, json!({}))).unwrap();
    atc.wait("the Airway", Duration::from_secs(120), || {
        airway_ready(&conn, &group)
    });
    let widget_group = format!("w-staged.{group}");
    let crd_name = format!("widgets.{widget_group}");
    assert!(
        get(
            &conn,
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            &crd_name
        )
        .is_none()
    );

    // Refused when the custom resource names a version the flight's CRD does not serve.
    let err = apply(
        &conn,
        &backend(
            &group,
            "badver",
            json!({"crdStages": true, "widgetVersion": "v9"}),
        ),
    )
    .expect_err("a custom resource of an unserved version must be refused");
    assert!(err.contains("dry-run"), "{err}");
    assert!(
        err.contains("\"v9\" is not served by CustomResourceDefinition widgets.w-badver."),
        "{err}"
    );

    // Admitted although stage 2's kind does not exist yet; deployed in order.
    apply(
        &conn,
        &backend(&group, "staged", json!({"crdStages": true, "replicas": 3})),
    )
    .expect("the instance must be admitted (stage-aware dry run)");
    atc.wait(
        "the staged instance to be Ready",
        Duration::from_secs(120),
        || instance_ready(&conn, &group, "staged"),
    );
    let crd = get(
        &conn,
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        None,
        &crd_name,
    )
    .expect("stage 1's CRD");
    assert_eq!(
        crd["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "atc.yoke"
    );
    let widget = get(
        &conn,
        &format!("{widget_group}/v1"),
        "Widget",
        Some("default"),
        "staged",
    )
    .expect("stage 2's Widget");
    assert_eq!(widget["spec"]["size"], 3);
    assert_eq!(
        widget["metadata"]["annotations"]["instance.atc.yoke.cd/instanceRef"],
        json!(format!("default/Backend.{group}:staged"))
    );
    assert_eq!(
        configmap(&conn, "default", "staged").unwrap()["data"]["replicas"],
        "3"
    );
    let release = format!("{group}.Backend.default.staged");
    assert_eq!(revisions(&conn, &release).len(), 1);

    // Once the CRD exists its kind is served: an update is dry-run normally (and the
    // API server's own validation of the Widget applies).
    apply(
        &conn,
        &backend(&group, "staged", json!({"crdStages": true, "replicas": 5})),
    )
    .unwrap();
    atc.wait("the Widget to follow", Duration::from_secs(60), || {
        get(
            &conn,
            &format!("{widget_group}/v1"),
            "Widget",
            Some("default"),
            "staged",
        )
        .is_some_and(|w| w["spec"]["size"] == 5)
    });

    delete(
        &conn,
        "yoke.cd/v1alpha1",
        "Airway",
        None,
        &format!("backends.{group}"),
    );
    atc.wait("the Airway to be gone", Duration::from_secs(120), || {
        get(
            &conn,
            "yoke.cd/v1alpha1",
            "Airway",
            None,
            &format!("backends.{group}"),
        )
        .is_none()
    });
    // CRDs are orphaned, not deleted, unless prune.crds (Yoke's default).
    assert!(
        get(
            &conn,
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            &crd_name
        )
        .is_some(),
        "an emitted CRD is orphaned by default"
    );
    delete(
        &conn,
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        None,
        &crd_name,
    );
    assert!(atc.stop().success());
}

/// `events.k8s.io/v1` Events about `name` of `kind` (any namespace we look in).
fn events_about(conn: &Connection, ns: &str, kind: &str, name: &str) -> Vec<Value> {
    list(conn, "events.k8s.io/v1", "Event", Some(ns), "")
        .into_iter()
        .filter(|e| e["regarding"]["kind"] == kind && e["regarding"]["name"] == name)
        .collect()
}

fn set_color(conn: &Connection, name: &str, color: &str) {
    apply(
        conn,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": {"color": color}}),
    )
    .unwrap();
}

/// Subscription mode: the flight looks up an external ConfigMap (host.k8s_lookup); changing
/// it, or creating one that was looked up as missing, re-runs the instance, while a manual
/// change of a child it did not look up is left alone. Also: Events on the instance and the
/// Airway (Ready, Error), and the /metrics gauges and reconcile-duration histogram.
#[test]
fn subscription_mode_reruns_on_looked_up_changes_with_events_and_metrics() {
    let Some(env) = env() else { return };
    let _one = ONE_CONTROLLER.lock().unwrap_or_else(|p| p.into_inner());
    let conn = connect(&env.kubeconfig);
    let atc = Controller::start(&env, &[]);
    let group = format!("{}.examples.com", unique("sub"));
    let airway_name = format!("backends.{group}");
    apply(
        &conn,
        &airway(
            &group,
            &env.flight,
            json!({"mode": "subscription", "clusterAccess": true, "resourceAccessMatchers": ["default/ConfigMap"]}),
        ),
    )
    .unwrap();
    atc.wait("the Airway", Duration::from_secs(120), || {
        airway_ready(&conn, &group)
    });
    let external = unique("ext");
    let later = unique("later");
    set_color(&conn, &external, "red");

    let (watcher, waiter) = (unique("watcher"), unique("waiter"));
    apply(
        &conn,
        &backend(&group, &watcher, json!({"lookup": external})),
    )
    .unwrap();
    apply(&conn, &backend(&group, &waiter, json!({"lookup": later}))).unwrap();
    atc.wait("both instances Ready", Duration::from_secs(120), || {
        instance_ready(&conn, &group, &watcher) && instance_ready(&conn, &group, &waiter)
    });
    assert_eq!(
        configmap(&conn, "default", &watcher).unwrap()["data"]["looked"],
        "red"
    );
    assert_eq!(
        configmap(&conn, "default", &waiter).unwrap()["data"]["looked"],
        "<absent>"
    );

    // A child the flight did not look up: a manual change is not reverted.
    edit_configmap(&conn, &watcher, "replicas", "99").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        configmap(&conn, "default", &watcher).unwrap()["data"]["replicas"],
        "99"
    );

    // The looked-up object changes: the instance re-runs (and the child is rendered anew).
    set_color(&conn, &external, "green");
    atc.wait(
        "the re-run after the external change",
        Duration::from_secs(60),
        || {
            configmap(&conn, "default", &watcher)
                .is_some_and(|c| c["data"]["looked"] == "green" && c["data"]["replicas"] == "0")
        },
    );
    // A looked-up object that did not exist is created: that instance re-runs too.
    set_color(&conn, &later, "blue");
    atc.wait(
        "the re-run after the creation",
        Duration::from_secs(60),
        || configmap(&conn, "default", &waiter).is_some_and(|c| c["data"]["looked"] == "blue"),
    );

    // A failing re-run: Ready=False/Error and a Warning Event; then recovery.
    set_color(&conn, &external, "fail");
    atc.wait("the instance to fail", Duration::from_secs(60), || {
        get(
            &conn,
            &format!("{group}/v1"),
            "Backend",
            Some("default"),
            &watcher,
        )
        .and_then(|i| ready_reason(&i))
            == Some(("False".into(), "Error".into()))
    });
    atc.wait(
        "a Warning Event on the instance",
        Duration::from_secs(30),
        || {
            events_about(&conn, "default", "Backend", &watcher)
                .iter()
                .any(|e| {
                    e["type"] == "Warning"
                        && e["reason"] == "Error"
                        && e["note"]
                            .as_str()
                            .is_some_and(|n| n.contains("asks the flight to fail"))
                })
        },
    );
    set_color(&conn, &external, "yellow");
    atc.wait("recovery", Duration::from_secs(60), || {
        instance_ready(&conn, &group, &watcher)
            && configmap(&conn, "default", &watcher)
                .is_some_and(|c| c["data"]["looked"] == "yellow")
    });
    let events = events_about(&conn, "default", "Backend", &watcher);
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "Normal" && e["reason"] == "Ready"),
        "a Ready Event on the instance: {events:#?}"
    );
    assert!(
        events
            .iter()
            .all(|e| e["reportingController"] == "hoist-atc"),
        "{events:#?}"
    );
    let airway_events = events_about(&conn, "default", "Airway", &airway_name);
    assert!(
        airway_events
            .iter()
            .any(|e| e["type"] == "Normal" && e["reason"] == "Ready"),
        "a Ready Event on the Airway: {airway_events:#?}"
    );

    // /metrics: counters, gauges at rest, the histogram.
    let (code, metrics) = atc.http_get("/metrics");
    assert_eq!(code, 200);
    let count =
        |name: &str| metric(&metrics, name).unwrap_or_else(|| panic!("no {name}:\n{metrics}"));
    assert_eq!(count("hoist_atc_reconciles_in_flight"), 0.0);
    assert_eq!(count("hoist_atc_queue_pending"), 0.0);
    assert_eq!(count("hoist_atc_leader"), 1.0);
    let reconciles = count("hoist_atc_reconciles_total{kind=\"Instance\"}");
    assert!(reconciles >= 6.0, "{metrics}");
    assert!(count("hoist_atc_reconcile_errors_total{kind=\"Instance\"}") >= 1.0);
    assert_eq!(
        count("hoist_atc_reconcile_duration_seconds_count{kind=\"Instance\"}"),
        reconciles
    );
    assert_eq!(
        count("hoist_atc_reconcile_duration_seconds_bucket{kind=\"Instance\",le=\"+Inf\"}"),
        reconciles
    );
    assert!(
        count("hoist_atc_reconcile_duration_seconds_bucket{kind=\"Instance\",le=\"60\"}")
            <= reconciles
    );
    assert!(count("hoist_atc_reconcile_duration_seconds_sum{kind=\"Instance\"}") > 0.0);
    assert!(
        count(
            "hoist_atc_admissions_total{path=\"/validations/external-resources\",allowed=\"true\"}"
        ) >= 3.0
    );
    assert!(
        count("hoist_atc_module_loads_total{outcome=\"compiled\"}")
            + count("hoist_atc_module_loads_total{outcome=\"cache\"}")
            >= 1.0
    );

    delete(&conn, "yoke.cd/v1alpha1", "Airway", None, &airway_name);
    atc.wait("the Airway to be gone", Duration::from_secs(120), || {
        get(&conn, "yoke.cd/v1alpha1", "Airway", None, &airway_name).is_none()
    });
    let terminating = events_about(&conn, "default", "Airway", &airway_name);
    assert!(
        terminating.iter().any(|e| e["reason"] == "Terminating"),
        "a Terminating Event on the Airway: {terminating:#?}"
    );
    for name in [&external, &later] {
        delete(&conn, "v1", "ConfigMap", Some("default"), name);
    }
    assert!(atc.stop().success());
}
