//! End-to-end tests of the release commands (`takeoff`, `descent`, `mayday`, `blackbox`,
//! `turbulence`, `unlatch`): the real `hoist` binary against the real control plane from
//! `scripts/control-plane start` (env `HOIST_TEST_KUBECONFIG`, and
//! `HOIST_TEST_RESTRICTED_KUBECONFIG` for RBAC). Without them the tests skip locally and
//! fail in CI (`CI=true`).

mod common;

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn env_path(var: &str) -> Option<PathBuf> {
    common::required_env(
        var,
        "run scripts/control-plane start and export it (see scripts/control-plane env)",
    )
}

struct Cluster {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

fn cluster() -> Option<Cluster> {
    let kubeconfig = env_path("HOIST_TEST_KUBECONFIG")?;
    let cache =
        std::env::temp_dir().join(format!("hoist-release-e2e-cache-{}", std::process::id()));
    Some(Cluster { kubeconfig, cache })
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{:x}",
        (nanos ^ (std::process::id() as u128) << 20) & 0xffff_ffff
    )
}

fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn hoist");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).ok();
    drop(input);
    child.wait_with_output().unwrap()
}

impl Cluster {
    fn hoist(&self, kubeconfig: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hoist"));
        cmd.env("HOIST_CACHE_DIR", &self.cache)
            .env("KUBECONFIG", kubeconfig)
            .env("NO_COLOR", "1")
            .env_remove("HOIST_LOG");
        cmd
    }

    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut cmd = self.hoist(&self.kubeconfig);
        cmd.args(args);
        run(cmd, stdin.as_bytes())
    }

    fn ok(&self, args: &[&str], stdin: &str) -> (String, String) {
        let out = self.run(args, stdin);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success(),
            "hoist {args:?} failed:\nstdout: {stdout}\nstderr: {stderr}"
        );
        (stdout, stderr)
    }

    fn fails(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run(args, stdin);
        assert!(
            !out.status.success(),
            "hoist {args:?} should fail; stdout: {}",
            text(&out.stdout)
        );
        text(&out.stderr)
    }

    /// `kubectl`-free object access: reads through `hoist` itself is not possible, so use the
    /// API directly with the admin kubeconfig through a tiny helper flight-free call: the
    /// revisions are read with blackbox, objects with `kubectl` semantics via curl-less
    /// `hoist turbulence`. For object contents we call the API with the Rust client.
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

    fn patch(&self, api_version: &str, kind: &str, ns: Option<&str>, name: &str, patch: Value) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let conn = hoist_release::connect(Some(&self.kubeconfig), None)
                .await
                .unwrap();
            let res = conn.resolve(api_version, kind).await.unwrap().unwrap();
            conn.merge_patch(&res, ns, name, &patch).await.unwrap();
        })
    }

    fn create_namespace(&self, ns: &str) {
        let yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n");
        // A release in `default` owns it; `cleanup` removes it with its namespace.
        self.ok(&["takeoff", "-n", "default", &format!("ns-{ns}")], &yaml);
    }

    fn cleanup(&self, ns: &str) {
        self.ok(
            &[
                "mayday",
                "--remove-namespaces",
                "-n",
                "default",
                &format!("ns-{ns}"),
            ],
            "",
        );
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn configmaps(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| {
            format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: \"{value}\"\n")
        })
        .collect()
}

#[test]
fn takeoff_noop_blackbox_descent_turbulence_mayday() {
    let Some(c) = cluster() else { return };
    let ns = unique("e2e");
    c.create_namespace(&ns);

    let (_, err) = c.ok(
        &["takeoff", "-n", &ns, "app"],
        &configmaps(&[("a", "1"), ("b", "1")]),
    );
    assert!(
        err.contains("successful takeoff of app: revision 1"),
        "{err}"
    );
    let (_, err) = c.ok(
        &["up", "-n", &ns, "app"],
        &configmaps(&[("a", "1"), ("b", "1")]),
    );
    assert!(err.contains("up to date"), "{err}");

    // --diff-only shows the change and applies nothing.
    let next = configmaps(&[("b", "2"), ("c", "1")]);
    let (diff, _) = c.ok(
        &[
            "takeoff",
            "--diff-only",
            "--color",
            "never",
            "-n",
            &ns,
            "app",
        ],
        &next,
    );
    assert!(diff.starts_with("--- current\n+++ next\n"), "{diff}");
    assert!(
        diff.contains(&format!("-{ns}/core/v1/configmap/a:")),
        "{diff}"
    );
    assert!(c.get("v1", "ConfigMap", Some(&ns), "c").is_none());

    // --dry applies nothing and records nothing.
    let (_, err) = c.ok(&["apply", "--dry", "-n", &ns, "app"], &next);
    assert!(err.contains("dry-run"), "{err}");
    assert!(c.get("v1", "ConfigMap", Some(&ns), "c").is_none());

    let (_, err) = c.ok(&["takeoff", "-n", &ns, "app"], &next);
    assert!(
        err.contains("revision 2") && err.contains("1 pruned"),
        "{err}"
    );
    assert!(c.get("v1", "ConfigMap", Some(&ns), "a").is_none());

    // blackbox: list, history, show, diff, json.
    let (list, _) = c.ok(&["blackbox", "-n", &ns], "");
    assert!(list.starts_with("NAMESPACE"), "{list}");
    assert!(
        list.lines()
            .any(|l| l.contains(&ns) && l.contains("app") && l.contains(" 2 ")),
        "{list}"
    );
    let (history, _) = c.ok(&["inspect", "-n", &ns, "app"], "");
    assert!(
        history.contains("2 (active)") && history.contains("stdin"),
        "{history}"
    );
    let (shown, _) = c.ok(&["blackbox", "-n", &ns, "app", "1"], "");
    assert!(
        shown.contains("name: a") && shown.contains("instance.atc.yoke.cd/release: app"),
        "{shown}"
    );
    let (json, _) = c.ok(&["blackbox", "-n", &ns, "-o", "json", "app", "2"], "");
    let stages: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(stages[0].as_array().unwrap().len(), 2);
    let (diff, _) = c.ok(
        &["blackbox", "--color", "never", "-n", &ns, "app", "1", "2"],
        "",
    );
    assert!(
        diff.contains("--- revision 1") && diff.contains(&format!("+{ns}/core/v1/configmap/c:")),
        "{diff}"
    );
    let (json, _) = c.ok(&["blackbox", "-n", &ns, "-o", "json", "app"], "");
    let release: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(release["history"].as_array().unwrap().len(), 2);

    // descent back to 1.
    let (_, err) = c.ok(&["rollback", "-n", &ns, "app", "1"], "");
    assert!(
        err.contains("successful descent of app to revision 1"),
        "{err}"
    );
    assert!(c.get("v1", "ConfigMap", Some(&ns), "a").is_some());
    assert!(c.get("v1", "ConfigMap", Some(&ns), "c").is_none());
    let err = c.fails(&["descent", "-n", &ns, "app", "9"], "");
    assert!(err.contains("has no revision 9"), "{err}");

    // turbulence: none, then an edit by someone else, then --fix.
    let (out, err) = c.ok(&["turbulence", "-n", &ns, "app"], "");
    assert!(
        out.is_empty() && err.contains("no turbulence"),
        "{out}{err}"
    );
    c.patch(
        "v1",
        "ConfigMap",
        Some(&ns),
        "b",
        serde_json::json!({"data": {"key": "hand-edited"}}),
    );
    let (out, _) = c.ok(&["drift", "--color", "never", "-n", &ns, "app"], "");
    assert!(
        out.contains("+    key: hand-edited") || out.contains("+    key: \"hand-edited\""),
        "{out}"
    );
    let (_, err) = c.ok(&["turbulence", "--fix", "-n", &ns, "app"], "");
    assert!(
        err.contains(&format!("fixed drift of ConfigMap {ns}/b")),
        "{err}"
    );
    assert_eq!(
        c.get("v1", "ConfigMap", Some(&ns), "b").unwrap()["data"]["key"],
        "1"
    );

    // mayday.
    let (_, err) = c.ok(&["delete", "-n", &ns, "app"], "");
    assert!(err.contains("deleted release app"), "{err}");
    assert!(c.get("v1", "ConfigMap", Some(&ns), "b").is_none());
    let (_, err) = c.ok(&["mayday", "-n", &ns, "app"], "");
    assert!(err.contains("nothing to do"), "{err}");
    c.cleanup(&ns);
}

#[test]
fn out_stdout_and_errors_name_what_and_where() {
    let Some(c) = cluster() else { return };
    let ns = unique("errs");
    c.create_namespace(&ns);
    let yaml = configmaps(&[("a", "1")]);

    let dir = std::env::temp_dir().join(unique("hoist-out"));
    c.ok(&["takeoff", "--out", dir.to_str().unwrap(), "rel"], &yaml);
    assert!(dir.join("rel/_/core/v1/configmap/a.yaml").exists());
    let (out, _) = c.ok(&["takeoff", "--out", "-", "rel"], &yaml);
    assert!(out.contains("kind: ConfigMap"), "{out}");
    let (raw, _) = c.ok(&["takeoff", "--stdout", "rel"], &yaml);
    assert_eq!(raw, yaml);
    std::fs::remove_dir_all(&dir).ok();

    let err = c.fails(
        &["takeoff", "-n", &ns, "rel"],
        "apiVersion: nope.hoist.test/v1\nkind: Gizmo\nmetadata: {name: g}\n",
    );
    assert!(
        err.contains("unknown kind Gizmo in apiVersion nope.hoist.test/v1"),
        "{err}"
    );

    let err = c.fails(
        &["takeoff", "-n", &ns, "rel"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: kube-system}\n",
    );
    assert!(
        err.contains("outside the release namespace") && err.contains("--cross-namespace"),
        "{err}"
    );

    let err = c.fails(
        &["takeoff", "-n", &ns, "rel"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: UPPER}\n",
    );
    assert!(
        err.contains("invalid object ConfigMap") && err.contains("UPPER"),
        "{err}"
    );

    // Ownership conflict between two releases, then --force-ownership.
    c.ok(&["takeoff", "-n", &ns, "first"], &yaml);
    let err = c.fails(&["takeoff", "-n", &ns, "second"], &yaml);
    assert!(
        err.contains(&format!("is already owned by release {ns}/first"))
            && err.contains("--force-ownership"),
        "{err}"
    );
    c.ok(
        &["takeoff", "--force-ownership", "-n", &ns, "second"],
        &yaml,
    );

    // Unreachable server, missing kubeconfig.
    let bad = std::env::temp_dir().join(unique("kubeconfig"));
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Config\ncurrent-context: x\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:1\"}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {token: t}}]\n",
    )
    .unwrap();
    let mut cmd = c.hoist(&bad);
    cmd.args(["blackbox"]);
    let out = run(cmd, b"");
    let err = text(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("cannot reach the Kubernetes API server at https://127.0.0.1:1"),
        "{err}"
    );
    let mut cmd = c.hoist(Path::new("/nonexistent/kubeconfig"));
    cmd.args(["blackbox"]);
    let err = text(&run(cmd, b"").stderr);
    assert!(
        err.contains("bad kubeconfig /nonexistent/kubeconfig"),
        "{err}"
    );
    std::fs::remove_file(&bad).ok();

    // RBAC: the restricted user may do nothing.
    if let Some(restricted) = env_path("HOIST_TEST_RESTRICTED_KUBECONFIG") {
        let mut cmd = c.hoist(&restricted);
        cmd.args(["takeoff", "-n", &ns, "rel"]);
        let out = run(cmd, yaml.as_bytes());
        let err = text(&out.stderr);
        assert!(
            !out.status.success() && err.contains("forbidden") && err.contains("hoist-restricted"),
            "{err}"
        );
    }
    c.ok(&["mayday", "-n", &ns, "second"], "");
    c.ok(&["mayday", "-n", &ns, "first"], "");
    c.cleanup(&ns);
}

#[test]
fn lock_unlatch_and_history_cap() {
    let Some(c) = cluster() else { return };
    let ns = unique("lock");
    c.create_namespace(&ns);
    for i in 0..4 {
        c.ok(
            &["takeoff", "--lock", "--history-cap", "2", "-n", &ns, "rel"],
            &configmaps(&[("a", &i.to_string())]),
        );
    }
    let (json, _) = c.ok(&["blackbox", "-o", "json", "-n", &ns, "rel"], "");
    let release: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(release["history"].as_array().unwrap().len(), 2);

    // A stale lock (an interrupted takeoff) blocks locked takeoffs until unlatched.
    let lock = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {}, namespace: {ns}}}\n",
        hoist_release::state::lock_secret_name("rel")
    );
    c.ok(
        &["takeoff", "-n", &ns, "--force-ownership", "fake-lock"],
        &lock,
    );
    let err = c.fails(
        &["takeoff", "--lock", "-n", &ns, "rel"],
        &configmaps(&[("a", "x")]),
    );
    assert!(
        err.contains("is locked by another takeoff") && err.contains("hoist unlatch rel"),
        "{err}"
    );
    let (_, err) = c.ok(&["unlock", "-n", &ns, "rel"], "");
    assert!(err.contains("removed the lock"), "{err}");
    c.ok(
        &["takeoff", "--lock", "-n", &ns, "rel"],
        &configmaps(&[("a", "x")]),
    );
    c.ok(&["mayday", "-n", &ns, "rel"], "");
    c.ok(&["mayday", "-n", &ns, "fake-lock"], "");
    c.cleanup(&ns);
}

fn lookup_flight() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/testdata/lookup.wasm");
    if path.exists() {
        return Some(path);
    }
    let status =
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-testdata"))
            .status();
    match status {
        Ok(s) if s.success() && path.exists() => Some(path),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("cannot build target/testdata/lookup.wasm with scripts/build-testdata");
            }
            eprintln!(
                "skipping: target/testdata/lookup.wasm is missing (run scripts/build-testdata)"
            );
            None
        }
    }
}

#[test]
fn cluster_access_lookups_follow_ownership_and_matchers() {
    let Some(c) = cluster() else { return };
    let Some(flight) = lookup_flight() else {
        return;
    };
    let flight = flight.to_str().unwrap().to_string();
    let ns = unique("look");
    c.create_namespace(&ns);
    let data = |name: &str| c.get("v1", "ConfigMap", Some(&ns), name).unwrap()["data"].clone();

    // Without --cluster-access: feature not granted.
    c.ok(&["takeoff", "-n", &ns, "look", &flight], "");
    assert_eq!(data("look")["state"], "1");
    // With it: the release's own ConfigMap (written by the previous takeoff) is readable.
    c.ok(
        &["takeoff", "--cluster-access", "-n", &ns, "look", &flight],
        "",
    );
    let d = data("look");
    assert_eq!(d["state"], "0", "{d}");
    let looked: Value = serde_json::from_str(d["result"].as_str().unwrap()).unwrap();
    assert_eq!(looked["metadata"]["name"], "look");

    // Someone else's object: forbidden, unless a matcher grants it; missing: not found.
    c.ok(
        &["takeoff", "-n", &ns, "other"],
        &configmaps(&[("theirs", "1")]),
    );
    let args = ["lookup", "theirs", ns.as_str(), "ConfigMap", "v1"];
    let mut cmd: Vec<&str> = vec![
        "takeoff",
        "--cluster-access",
        "-n",
        &ns,
        "look",
        &flight,
        "--",
    ];
    cmd.extend(args);
    c.ok(&cmd, "");
    assert_eq!(data("look")["state"], "5");
    let grant = format!("{ns}/ConfigMap:theirs");
    let mut cmd: Vec<&str> = vec![
        "takeoff",
        "--resource-access",
        &grant,
        "-n",
        &ns,
        "look",
        &flight,
        "--",
    ];
    cmd.extend(args);
    c.ok(&cmd, "");
    assert_eq!(data("look")["state"], "0");
    let mut cmd: Vec<&str> = vec![
        "takeoff",
        "--cluster-access",
        "-n",
        &ns,
        "look",
        &flight,
        "--",
    ];
    cmd.extend(["lookup", "missing", ns.as_str(), "ConfigMap", "v1"]);
    c.ok(&cmd, "");
    assert_eq!(data("look")["state"], "3");

    // REST mapping in Yoke's shape.
    let mut cmd: Vec<&str> = vec![
        "takeoff",
        "--cluster-access",
        "-n",
        &ns,
        "look",
        &flight,
        "--",
    ];
    cmd.extend(["mapping", "apps", "Deployment"]);
    c.ok(&cmd, "");
    let d = data("look");
    assert_eq!(d["state"], "0", "{d}");
    let mapping: Value = serde_json::from_str(d["result"].as_str().unwrap()).unwrap();
    assert_eq!(
        mapping,
        serde_json::json!({"Group":"apps","Version":"v1","Kind":"Deployment","Resource":"deployments","Namespaced":true})
    );
    // The revision records the module's source and digests.
    let (json, _) = c.ok(&["blackbox", "-o", "json", "-n", &ns, "look"], "");
    let release: Value = serde_json::from_str(&json).unwrap();
    let source = &release["history"][0]["source"];
    assert!(
        source["url"].as_str().unwrap().starts_with("file:///"),
        "{source}"
    );
    assert_eq!(source["checksum"].as_str().unwrap().len(), 40, "{source}");
    assert_eq!(source["sha256"].as_str().unwrap().len(), 64, "{source}");
    c.ok(&["mayday", "-n", &ns, "look"], "");
    c.ok(&["mayday", "-n", &ns, "other"], "");
    c.cleanup(&ns);
}

#[test]
fn a_killed_takeoff_leaves_no_revision_and_the_next_one_converges() {
    let Some(c) = cluster() else { return };
    let ns = unique("kill");
    c.create_namespace(&ns);
    let pairs: Vec<(String, String)> = (0..400)
        .map(|i| (format!("cm-{i:04}"), "v".to_string()))
        .collect();
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let yaml = configmaps(&refs);

    // Kill the takeoff while it applies.
    let mut cmd = c.hoist(&c.kubeconfig);
    cmd.args(["takeoff", "--lock", "--skip-dry-run", "-n", &ns, "big"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    child.kill().ok();
    child.wait().ok();
    // Either no revision yet (killed before the end), or the takeoff had finished.
    let out = c.run(&["blackbox", "-o", "json", "-n", &ns, "big"], "");
    let revisions = if out.status.success() {
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["history"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0)
    } else {
        let err = text(&out.stderr);
        assert!(err.contains("release big not found"), "{err}");
        0
    };
    assert!(revisions <= 1);

    // The interrupted takeoff may have left its lock: a locked takeoff says so; unlatch;
    // the next takeoff converges to every object and one revision.
    let out = c.run(&["takeoff", "--lock", "-n", &ns, "big"], &yaml);
    if !out.status.success() {
        let err = text(&out.stderr);
        assert!(err.contains("hoist unlatch big"), "{err}");
        c.ok(&["unlatch", "-n", &ns, "big"], "");
        c.ok(&["takeoff", "--lock", "-n", &ns, "big"], &yaml);
    }
    let (json, _) = c.ok(&["blackbox", "-o", "json", "-n", &ns, "big"], "");
    let release: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(release["history"].as_array().unwrap().len(), 1);
    assert_eq!(release["history"][0]["resources"], 400);
    assert!(c.get("v1", "ConfigMap", Some(&ns), "cm-0399").is_some());
    c.ok(&["mayday", "-n", &ns, "big"], "");
    c.cleanup(&ns);
}
