//! End-to-end tests of `hoist atc`, the controller compatible with Yoke's ATC: the real
//! `hoist` binary runs as a process against the real control plane from
//! `scripts/control-plane` (env `HOIST_TEST_KUBECONFIG`), and the API server calls its
//! webhooks over TLS on 127.0.0.1 (`--webhook-url`). The flight is the Go test flight of
//! `testdata/atc` (env `HOIST_ATC_TEST_FLIGHT`, built by `scripts/test.d/atc.sh`).
//!
//! The scenarios follow Yoke's own (`cmd/atc/main_test.go`, `flight_test.go`). The global
//! webhook configurations are cluster-wide, so the tests run one controller at a time.

mod common;

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
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}{:x}",
        (nanos ^ ((std::process::id() as u128) << 20)) & 0xff_ffff
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `hoist atc`.
struct Controller {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Controller {
    fn start(env: &Env, extra: &[&str]) -> Controller {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("atc.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hoist"));
        cmd.args(["atc", "--port", &port.to_string()])
            .args(["--webhook-url", &format!("https://127.0.0.1:{port}")])
            .arg("--cache-dir")
            .arg(dir.path().join("modules"))
            .args(extra)
            .env("KUBECONFIG", &env.kubeconfig)
            .env("HOIST_CACHE_DIR", dir.path())
            .env("HOIST_LOG", "hoist_atc=info,hoist=info")
            .env_remove("PORT")
            .env_remove("MODULE_ALLOW_LIST")
            .env_remove("MODULE_VERIFICATION_KEYS_PATH")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().expect("spawn hoist atc");
        let controller = Controller {
            child,
            log,
            _dir: dir,
        };
        // Ready once its global webhook configuration points at this port.
        let conn = connect(&env.kubeconfig);
        let want = format!("https://127.0.0.1:{port}/validations/airways.yoke.cd");
        controller.wait("the controller to start", Duration::from_secs(120), || {
            get(
                &conn,
                "admissionregistration.k8s.io/v1",
                "ValidatingWebhookConfiguration",
                None,
                "atc-airway",
            )
            .is_some_and(|c| c.pointer("/webhooks/0/clientConfig/url") == Some(&json!(want)))
        });
        controller
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
    runtime().block_on(async {
        let res = conn.resolve(api_version, kind).await.ok()??;
        conn.get_object(&res, ns, name).await.ok()?
    })
}

/// Server-side applies `object` as a user would (`kubectl apply --server-side`).
fn apply(conn: &Connection, object: &Value) -> Result<Value, String> {
    runtime().block_on(async {
        let api_version = object["apiVersion"].as_str().unwrap();
        let kind = object["kind"].as_str().unwrap();
        let res = conn
            .resolve(api_version, kind)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{api_version} {kind} is not served"))?;
        let ns = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str);
        let name = object["metadata"]["name"].as_str().unwrap();
        conn.apply_object(&res, ns, name, object, false, true)
            .await
            .map_err(|e| e.to_string())
    })
}

fn delete(conn: &Connection, api_version: &str, kind: &str, ns: Option<&str>, name: &str) {
    runtime().block_on(async {
        if let Ok(Some(res)) = conn.resolve(api_version, kind).await {
            let _ = conn.delete_object(&res, ns, name).await;
        }
    })
}

fn list(
    conn: &Connection,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
    selector: &str,
) -> Vec<Value> {
    runtime().block_on(async {
        let res = conn.resolve(api_version, kind).await.unwrap().unwrap();
        conn.list_objects(&res, ns, Some(selector)).await.unwrap()
    })
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
