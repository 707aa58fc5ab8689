//! The release engine against a real API server (`scripts/control-plane start`, then
//! `HOIST_TEST_KUBECONFIG=target/control-plane/kubeconfig`). Without it the tests skip
//! locally and fail in CI (`CI=true`).

mod support;

use support::{get, kubeconfig, namespace, unique};

use hoist_release::{
    Connection, DescentOptions, Error, PruneOptions, Source, TakeoffOptions, WaitOptions, connect,
    descent, list_releases, load_release, mayday, prepare_stages, revision_stages, takeoff,
    turbulence,
};
use hoist_resources::{Stages, parse_flight_output};
use serde_json::{Value, json};
use std::time::Duration;

async fn admin() -> Option<Connection> {
    let path = kubeconfig("HOIST_TEST_KUBECONFIG")?;
    Some(connect(Some(&path), None).await.expect("connect"))
}

/// Deletes a test namespace (and everything left in it).
async fn cleanup(conn: &Connection, name: &str) {
    let res = conn.resolve("v1", "Namespace").await.unwrap().unwrap();
    conn.delete_object(&res, None, name).await.unwrap();
}

fn stages(yaml: &str) -> Stages {
    parse_flight_output(yaml.as_bytes()).unwrap()
}

fn opts(release: &str, ns: &str) -> TakeoffOptions {
    let mut o = TakeoffOptions::new(release, ns);
    o.wait = WaitOptions {
        wait: None,
        poll: Duration::from_millis(200),
    };
    o
}

async fn up(
    conn: &Connection,
    yaml: &str,
    o: &TakeoffOptions,
) -> Result<hoist_release::TakeoffOutcome, Error> {
    let prepared = prepare_stages(
        conn,
        stages(yaml),
        &o.release,
        &o.namespace,
        o.cross_namespace,
    )
    .await?;
    takeoff(conn, &prepared, o).await
}

fn cm(name: &str, value: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: \"{value}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_install_noop_change_prune_descent_turbulence_mayday() {
    let Some(conn) = admin().await else { return };
    let ns = unique("life");
    namespace(&conn, &ns).await;
    let mut o = opts("app", &ns);
    o.source = Source {
        url: "file:///tmp/app.wasm".into(),
        checksum: "abc".into(),
        sha256: Some("def".into()),
    };

    // Install.
    let first = format!("{}{}", cm("a", "1"), cm("b", "1"));
    let out = up(&conn, &first, &o).await.unwrap();
    let rev = out.revision.expect("a revision");
    assert_eq!((rev.id, rev.resources), (1, 2));
    let a = get(&conn, "v1", "ConfigMap", Some(&ns), "a").await.unwrap();
    assert_eq!(
        a["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "yoke"
    );
    assert_eq!(
        a["metadata"]["annotations"]["instance.atc.yoke.cd/release"],
        "app"
    );
    assert_eq!(
        a["metadata"]["annotations"]["instance.atc.yoke.cd/namespace"],
        ns.as_str()
    );
    assert_eq!(a["metadata"]["managedFields"][0]["manager"], "yoke");

    // No-op.
    let out = up(&conn, &first, &o).await.unwrap();
    assert!(out.noop && out.revision.is_none());
    assert_eq!(
        load_release(&conn, "app", &ns).await.unwrap().history.len(),
        1
    );

    // Change: a removed, b changed, c added.
    let second = format!("{}{}", cm("b", "2"), cm("c", "1"));
    let out = up(&conn, &second, &o).await.unwrap();
    assert_eq!(out.revision.unwrap().id, 2);
    assert_eq!(out.pruned, vec![format!("ConfigMap {ns}/a")]);
    assert!(
        get(&conn, "v1", "ConfigMap", Some(&ns), "a")
            .await
            .is_none()
    );
    assert_eq!(
        get(&conn, "v1", "ConfigMap", Some(&ns), "b").await.unwrap()["data"]["key"],
        "2"
    );

    // Blackbox.
    let releases = list_releases(&conn, Some(&ns)).await.unwrap();
    assert_eq!(releases.len(), 1);
    assert_eq!(
        (releases[0].name.as_str(), releases[0].revisions),
        ("app", 2)
    );
    assert_eq!(releases[0].active.as_ref().unwrap().id, 2);
    let release = load_release(&conn, "app", &ns).await.unwrap();
    let r1 = revision_stages(&conn, &release.history[0]).await.unwrap();
    let r2 = revision_stages(&conn, &release.history[1]).await.unwrap();
    let d = hoist_release::diff_stages("revision 1", &r1, "revision 2", &r2, 3, false);
    assert!(d.contains(&format!("-{ns}/core/v1/configmap/a:")), "{d}");
    assert!(d.contains(&format!("+{ns}/core/v1/configmap/c:")), "{d}");
    assert_eq!(release.history[0].source.sha256.as_deref(), Some("def"));

    // Descent to 1: a back, c pruned, revision 1 active.
    let rev = descent(&conn, "app", &ns, 1, &DescentOptions::default())
        .await
        .unwrap();
    assert_eq!(rev.id, 1);
    assert!(
        get(&conn, "v1", "ConfigMap", Some(&ns), "a")
            .await
            .is_some()
    );
    assert!(
        get(&conn, "v1", "ConfigMap", Some(&ns), "c")
            .await
            .is_none()
    );
    assert_eq!(
        get(&conn, "v1", "ConfigMap", Some(&ns), "b").await.unwrap()["data"]["key"],
        "1"
    );
    assert_eq!(
        load_release(&conn, "app", &ns)
            .await
            .unwrap()
            .active()
            .unwrap()
            .id,
        1
    );
    let err = descent(&conn, "app", &ns, 1, &DescentOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyActive { .. }), "{err}");
    let err = descent(&conn, "app", &ns, 7, &DescentOptions::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("has no revision 7 (valid: 1 to 2)"),
        "{err}"
    );

    // Turbulence: a kubectl-style edit by another manager.
    let report = turbulence(&conn, "app", &ns, false, 3, false)
        .await
        .unwrap();
    assert!(report.diff.is_empty(), "{}", report.diff);
    let res = conn.resolve("v1", "ConfigMap").await.unwrap().unwrap();
    conn.merge_patch(
        &res,
        Some(&ns),
        "a",
        &json!({"data":{"key":"edited","extra":"x"}}),
    )
    .await
    .unwrap();
    let report = turbulence(&conn, "app", &ns, false, 3, false)
        .await
        .unwrap();
    assert_eq!(report.drifted, vec![format!("ConfigMap {ns}/a")]);
    assert!(
        report.diff.contains("-    key: '1'") || report.diff.contains("-    key: \"1\""),
        "{}",
        report.diff
    );
    assert!(
        !report.diff.contains("extra"),
        "fields the release does not set are not drift: {}",
        report.diff
    );
    let report = turbulence(&conn, "app", &ns, true, 3, false).await.unwrap();
    assert_eq!(report.fixed.len(), 1);
    assert_eq!(
        get(&conn, "v1", "ConfigMap", Some(&ns), "a").await.unwrap()["data"]["key"],
        "1"
    );
    assert!(
        turbulence(&conn, "app", &ns, false, 3, false)
            .await
            .unwrap()
            .diff
            .is_empty()
    );

    // Mayday.
    let out = mayday(
        &conn,
        "app",
        &ns,
        PruneOptions::default(),
        &hoist_release::quiet(),
    )
    .await
    .unwrap();
    assert!(out.found && out.revisions == 2);
    assert!(
        get(&conn, "v1", "ConfigMap", Some(&ns), "a")
            .await
            .is_none()
    );
    assert!(
        load_release(&conn, "app", &ns)
            .await
            .unwrap()
            .history
            .is_empty()
    );
    assert!(
        !mayday(
            &conn,
            "app",
            &ns,
            PruneOptions::default(),
            &hoist_release::quiet()
        )
        .await
        .unwrap()
        .found
    );
    cleanup(&conn, &ns).await;
}

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.NAME.hoist.test
spec:
  group: NAME.hoist.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {size: {type: integer}}}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn prestage_namespace_and_crd_then_custom_resource() {
    let Some(conn) = admin().await else { return };
    let ns = unique("crd");
    let group = format!("{ns}.hoist.test");
    let yaml = format!(
        "{}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\napiVersion: {group}/v1\nkind: Widget\nmetadata: {{name: w}}\nspec: {{size: 3}}\n",
        CRD.replace("NAME", &ns)
    );
    let mut o = opts("crd", &ns);
    o.create_namespace = false;
    let prepared = prepare_stages(&conn, stages(&yaml), "crd", &ns, false)
        .await
        .unwrap();
    assert_eq!(prepared.0.len(), 2, "pre-stage split");
    assert_eq!(
        prepared.0[1][0].namespace(),
        Some(ns.as_str()),
        "scope from the CRD in the flight"
    );
    // --create-namespace must not pre-create a namespace the flight itself declares.
    o.create_namespace = true;
    let out = takeoff(&conn, &prepared, &o).await.unwrap();
    assert_eq!(out.revision.unwrap().resources, 3);
    let w = get(&conn, &format!("{group}/v1"), "Widget", Some(&ns), "w")
        .await
        .unwrap();
    assert_eq!(w["spec"]["size"], 3);

    // Removing everything but the CR orphans the CRD and the Namespace.
    let only_cr = format!(
        "{}\n---\napiVersion: {group}/v1\nkind: Widget\nmetadata: {{name: w}}\nspec: {{size: 4}}\n",
        CRD.replace("NAME", &ns)
    );
    let out = up(&conn, &only_cr, &o).await.unwrap();
    assert_eq!(out.orphaned, vec![format!("Namespace {ns}")]);
    let live_ns = get(&conn, "v1", "Namespace", None, &ns).await.unwrap();
    assert!(
        live_ns["metadata"]["annotations"]
            .get("instance.atc.yoke.cd/release")
            .is_none()
    );
    mayday(
        &conn,
        "crd",
        &ns,
        PruneOptions {
            remove_crds: true,
            remove_namespaces: false,
        },
        &hoist_release::quiet(),
    )
    .await
    .unwrap();
    assert!(
        get(
            &conn,
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            &format!("widgets.{group}")
        )
        .await
        .is_none()
    );
    cleanup(&conn, &ns).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_wait_on_a_deployment_status() {
    let Some(conn) = admin().await else { return };
    let ns = unique("ready");
    namespace(&conn, &ns).await;
    let yaml = r#"
- - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web}
    spec:
      replicas: 1
      selector: {matchLabels: {app: web}}
      template:
        metadata: {labels: {app: web}}
        spec: {containers: [{name: web, image: example.invalid/web:1}]}
- - apiVersion: v1
    kind: ConfigMap
    metadata: {name: after}
"#;
    // Nobody sets the status: the wait times out and the second stage is never applied.
    let mut o = opts("ready", &ns);
    o.wait = WaitOptions {
        wait: Some(Duration::from_secs(2)),
        poll: Duration::from_millis(200),
    };
    let err = up(&conn, yaml, &o).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("failed part-way") && text.contains(&format!("Deployment.apps {ns}/web (")),
        "{text}"
    );
    assert!(
        text.contains(&format!("not applied (1): ConfigMap {ns}/after")),
        "{text}"
    );
    assert!(
        get(&conn, "v1", "ConfigMap", Some(&ns), "after")
            .await
            .is_none()
    );
    assert!(
        load_release(&conn, "ready", &ns)
            .await
            .unwrap()
            .history
            .is_empty()
    );

    // Set the status through the status subresource while the takeoff waits.
    let setter = {
        let conn = conn.clone();
        let ns = ns.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            let res = conn
                .resolve("apps/v1", "Deployment")
                .await
                .unwrap()
                .unwrap();
            let live = conn
                .get_object(&res, Some(&ns), "web")
                .await
                .unwrap()
                .unwrap();
            let generation = live["metadata"]["generation"].as_i64().unwrap();
            let status = json!({"status":{"observedGeneration":generation,"replicas":1,"updatedReplicas":1,"readyReplicas":1,"availableReplicas":1}});
            let url = format!("{}/web/status", res.collection_url(Some(&ns)));
            let req = http_patch(&url, &status);
            let _: Value = conn.client.request(req).await.unwrap();
        })
    };
    let mut o = opts("ready", &ns);
    o.wait = WaitOptions {
        wait: Some(Duration::from_secs(20)),
        poll: Duration::from_millis(200),
    };
    let out = up(&conn, yaml, &o).await.unwrap();
    setter.await.unwrap();
    assert_eq!(out.revision.unwrap().id, 1);
    assert!(
        get(&conn, "v1", "ConfigMap", Some(&ns), "after")
            .await
            .is_some()
    );
    cleanup(&conn, &ns).await;
}

fn http_patch(url: &str, body: &Value) -> http::Request<Vec<u8>> {
    http::Request::builder()
        .method("PATCH")
        .uri(url)
        .header("Content-Type", "application/merge-patch+json")
        .body(serde_json::to_vec(body).unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn ownership_conflicts_and_force_ownership() {
    let Some(conn) = admin().await else { return };
    let ns = unique("own");
    namespace(&conn, &ns).await;
    up(&conn, &cm("shared", "1"), &opts("first", &ns))
        .await
        .unwrap();
    let err = up(&conn, &cm("shared", "2"), &opts("second", &ns))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!("ConfigMap {ns}/shared is already owned by release {ns}/first, not by release {ns}/second")),
        "{err}"
    );
    // An object created outside any release.
    let res = conn.resolve("v1", "ConfigMap").await.unwrap().unwrap();
    conn.apply_object(
        &res,
        Some(&ns),
        "loose",
        &json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"loose","namespace":ns}}),
        false,
        false,
    )
    .await
    .unwrap();
    let err = up(&conn, &cm("loose", "1"), &opts("second", &ns))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("owned by nobody"), "{err}");

    // Many objects of one type: ownership is read with one LIST, with the same verdicts.
    let many: String = (0..10).map(|i| cm(&format!("bulk-{i}"), "1")).collect();
    up(&conn, &many, &opts("bulk-a", &ns)).await.unwrap();
    let err = up(&conn, &many, &opts("bulk-b", &ns)).await.unwrap_err();
    assert!(
        err.to_string().starts_with("ownership check failed:"),
        "{err}"
    );
    assert_eq!(
        err.to_string().matches("already owned by release").count(),
        10,
        "{err}"
    );

    let mut forced = opts("second", &ns);
    forced.force_ownership = true;
    up(&conn, &cm("shared", "2"), &forced).await.unwrap();
    let live = get(&conn, "v1", "ConfigMap", Some(&ns), "shared")
        .await
        .unwrap();
    assert_eq!(
        live["metadata"]["annotations"]["instance.atc.yoke.cd/release"],
        "second"
    );
    // The first release no longer owns it, so its mayday leaves it alone.
    mayday(
        &conn,
        "first",
        &ns,
        PruneOptions::default(),
        &hoist_release::quiet(),
    )
    .await
    .unwrap();
    assert!(
        get(&conn, "v1", "ConfigMap", Some(&ns), "shared")
            .await
            .is_some()
    );
    cleanup(&conn, &ns).await;
}
#[tokio::test(flavor = "multi_thread")]
async fn cross_namespace_unknown_kind_and_invalid_object() {
    let Some(conn) = admin().await else { return };
    let ns = unique("errs");
    namespace(&conn, &ns).await;
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: elsewhere}\n";
    let err = prepare_stages(&conn, stages(yaml), "r", &ns, false)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("objects outside the release namespace")
            && err.to_string().contains("elsewhere"),
        "{err}"
    );

    let yaml = "apiVersion: nothing.hoist.test/v1\nkind: Gadget\nmetadata: {name: g}\n";
    let err = prepare_stages(&conn, stages(yaml), "r", &ns, false)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown kind Gadget in apiVersion nothing.hoist.test/v1"),
        "{err}"
    );

    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Not_Valid}\n";
    let err = up(&conn, yaml, &opts("r", &ns)).await.unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert!(
        err.to_string().contains("invalid object ConfigMap")
            && err.to_string().contains("Not_Valid"),
        "{err}"
    );
    cleanup(&conn, &ns).await;
}
#[tokio::test(flavor = "multi_thread")]
async fn forbidden_with_the_restricted_user() {
    let Some(path) = kubeconfig("HOIST_TEST_RESTRICTED_KUBECONFIG") else {
        return;
    };
    let conn = connect(Some(&path), None).await.unwrap();
    let ns = unique("rbac");
    let err = load_release(&conn, "r", &ns).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("forbidden while reading the revisions of release r"),
        "{text}"
    );
    assert!(
        text.contains("hoist-restricted") && text.contains("list") && text.contains("secrets"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn partial_failure_then_convergence() {
    let Some(conn) = admin().await else { return };
    let ns = unique("part");
    namespace(&conn, &ns).await;
    let bad =
        "- - apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: one}\n- - apiVersion: v1\n    kind: Service\n    metadata: {name: svc}\n    spec: {ports: [{port: 99999}]}\n".to_string();
    let err = up(&conn, &bad, &opts("p", &ns)).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Partial { .. }), "{text}");
    assert!(
        text.contains(&format!("applied (1): ConfigMap {ns}/one")),
        "{text}"
    );
    assert!(
        text.contains(&format!("not applied (1): Service {ns}/svc")),
        "{text}"
    );
    assert!(
        load_release(&conn, "p", &ns)
            .await
            .unwrap()
            .history
            .is_empty(),
        "no revision claims unapplied objects"
    );
    let good = bad.replace("99999", "80");
    let mut o = opts("p", &ns);
    o.wait = WaitOptions {
        wait: Some(Duration::ZERO),
        poll: Duration::from_millis(200),
    };
    let out = up(&conn, &good, &o).await.unwrap();
    assert_eq!(out.revision.unwrap().resources, 2);
    cleanup(&conn, &ns).await;
}
#[tokio::test(flavor = "multi_thread")]
async fn lock_and_history_cap() {
    let Some(conn) = admin().await else { return };
    let ns = unique("lock");
    namespace(&conn, &ns).await;
    let mut o = opts("l", &ns);
    o.lock = true;
    o.history_cap = 3;
    // Two takeoffs at once with the lock: one may fail clearly, history stays consistent.
    let (ya, yb) = (cm("x", "a"), cm("x", "b"));
    let (a, b) = tokio::join!(up(&conn, &ya, &o), up(&conn, &yb, &o));
    for r in [&a, &b] {
        if let Err(e) = r {
            assert!(matches!(e, Error::Locked { .. }), "{e}");
            assert!(e.to_string().contains("hoist unlatch l"), "{e}");
        }
    }
    assert!(a.is_ok() || b.is_ok());
    let history = load_release(&conn, "l", &ns).await.unwrap().history;
    assert_eq!(
        history.len(),
        [&a, &b]
            .iter()
            .filter(|r| r.as_ref().is_ok_and(|o| o.revision.is_some()))
            .count()
    );
    // A held lock makes a takeoff fail; unlatch frees it.
    let secret = json!({"apiVersion":"v1","kind":"Secret","metadata":{"name": hoist_release::state::lock_secret_name("l"), "namespace": ns}});
    let res = conn.resolve("v1", "Secret").await.unwrap().unwrap();
    conn.apply_object(
        &res,
        Some(&ns),
        &hoist_release::state::lock_secret_name("l"),
        &secret,
        false,
        false,
    )
    .await
    .unwrap();
    let err = up(&conn, &cm("x", "c"), &o).await.unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(hoist_release::unlatch(&conn, "l", &ns).await.unwrap());
    // History cap: keep 3.
    for i in 0..5 {
        up(&conn, &cm("x", &format!("v{i}")), &o).await.unwrap();
    }
    let history = load_release(&conn, "l", &ns).await.unwrap().history;
    assert_eq!(history.len(), 3);
    assert_eq!(
        revision_stages(&conn, history.last().unwrap())
            .await
            .unwrap()
            .0[0][0]
            .as_map()["data"]["key"],
        "v4"
    );
    cleanup(&conn, &ns).await;
}
