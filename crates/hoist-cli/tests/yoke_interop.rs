//! Interoperability with the real Yoke CLI on the real control plane: releases created by
//! `yoke` are listed, rolled back, continued and deleted by `hoist`, and releases created by
//! `hoist` are inspected, continued and rolled back by `yoke`. Flights are YAML on stdin
//! (`yoke takeoff REL < file.yaml`), so no Wasm is needed.
//!
//! Needs `HOIST_TEST_KUBECONFIG` and `HOIST_YOKE` (the real yoke v0.20.27, built from
//! `../shared/peers` by `scripts/tools path yoke`). Without them: skip locally, fail in CI.

mod common;

use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

struct Env {
    kubeconfig: PathBuf,
    yoke: PathBuf,
    cache: PathBuf,
}

fn env() -> Option<Env> {
    let kubeconfig =
        common::required_env("HOIST_TEST_KUBECONFIG", "run scripts/control-plane start")?;
    let yoke = common::required_env(
        "HOIST_YOKE",
        "build the real yoke from ../shared/peers: export HOIST_YOKE=$(scripts/tools path yoke)",
    )?;
    let cache = std::env::temp_dir().join(format!("hoist-interop-cache-{}", std::process::id()));
    Some(Env {
        kubeconfig,
        yoke,
        cache,
    })
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{:x}",
        (nanos ^ ((std::process::id() as u128) << 20)) & 0xffff_ffff
    )
}

fn run(mut cmd: Command, stdin: &str) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).ok();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Which of hoist's execution tiers runs a flight.
#[derive(Clone, Copy, Debug)]
enum Tier {
    /// Whatever hoist picks (the suite turns background compiles off, so: compiled code).
    Default,
    /// The interpreter (tier 0), to the end.
    Interpreter,
}

impl Tier {
    fn env(self) -> Option<&'static str> {
        match self {
            Tier::Default => None,
            Tier::Interpreter => Some("always"),
        }
    }
}

impl Env {
    fn hoist(&self, args: &[&str], stdin: &str) -> (String, String) {
        self.hoist_on(Tier::Default, args, stdin)
    }

    /// Runs hoist on one execution tier and asserts success.
    fn hoist_on(&self, tier: Tier, args: &[&str], stdin: &str) -> (String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hoist"));
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOIST_CACHE_DIR", &self.cache)
            .env("NO_COLOR", "1")
            .args(args);
        if let Some(choice) = tier.env() {
            cmd.env("HOIST_INTERPRETER", choice);
        }
        let out = run(cmd, stdin);
        let (o, e) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "hoist {args:?} failed:\n{o}\n{e}");
        (o, e)
    }

    /// Runs yoke with Go-style flags (before the positional arguments).
    fn yoke(&self, args: &[&str], stdin: &str) -> (String, String) {
        let mut cmd = Command::new(&self.yoke);
        cmd.env("KUBECONFIG", &self.kubeconfig).args(args);
        let out = run(cmd, stdin);
        let (o, e) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "yoke {args:?} failed:\n{o}\n{e}");
        (o, e)
    }

    fn get(&self, ns: &str, name: &str) -> Option<Value> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let conn = hoist_release::connect(Some(&self.kubeconfig), None)
                .await
                .unwrap();
            let res = conn.resolve("v1", "ConfigMap").await.unwrap().unwrap();
            conn.get_object(&res, Some(ns), name).await.unwrap()
        })
    }

    fn history(&self, ns: &str, release: &str) -> Value {
        let (json, _) = self.hoist(&["blackbox", "-o", "json", "-n", ns, release], "");
        serde_json::from_str(&json).unwrap()
    }

    fn namespace(&self, ns: &str) {
        let yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n");
        self.hoist(&["takeoff", "-n", "default", &format!("ns-{ns}")], &yaml);
    }

    fn cleanup(&self, ns: &str) {
        self.hoist(
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

fn cm(name: &str, value: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: \"{value}\"\n"
    )
}

#[test]
fn a_yoke_release_is_listed_rolled_back_continued_and_deleted_by_hoist() {
    let Some(e) = env() else { return };
    let ns = unique("y2h");
    e.namespace(&ns);

    e.yoke(&["takeoff", "--namespace", &ns, "rel"], &cm("a", "1"));
    let live = e.get(&ns, "a").expect("yoke applied it");
    assert_eq!(live["metadata"]["managedFields"][0]["manager"], "yoke");
    let h = e.history(&ns, "rel");
    assert_eq!(h["history"].as_array().unwrap().len(), 1, "{h}");

    // Same input through hoist: Yoke's stored stages equal hoist's, so nothing new.
    let (_, err) = e.hoist(&["takeoff", "-n", &ns, "rel"], &cm("a", "1"));
    assert!(
        err.contains("up to date"),
        "hoist must read Yoke's revision as equal: {err}"
    );

    e.yoke(&["takeoff", "--namespace", &ns, "rel"], &cm("a", "2"));
    assert_eq!(
        e.history(&ns, "rel")["history"].as_array().unwrap().len(),
        2
    );
    e.hoist(&["descent", "-n", &ns, "rel", "1"], "");
    assert_eq!(e.get(&ns, "a").unwrap()["data"]["key"], "1");

    // hoist continues the release: revision 3, and prunes what Yoke applied.
    let (_, err) = e.hoist(&["takeoff", "-n", &ns, "rel"], &cm("b", "1"));
    assert!(
        err.contains("revision 3") && err.contains("1 pruned"),
        "{err}"
    );
    assert!(e.get(&ns, "a").is_none());
    let (out, _) = e.yoke(&["blackbox", "--namespace", &ns, "rel"], "");
    assert!(!out.is_empty());

    e.hoist(&["mayday", "-n", &ns, "rel"], "");
    assert!(e.get(&ns, "b").is_none());
    e.cleanup(&ns);
}

#[test]
fn a_hoist_release_is_inspected_continued_and_rolled_back_by_yoke() {
    let Some(e) = env() else { return };
    let ns = unique("h2y");
    e.namespace(&ns);

    e.hoist(
        &["takeoff", "-n", &ns, "rel"],
        &format!("{}{}", cm("a", "1"), cm("b", "1")),
    );
    let (out, _) = e.yoke(&["blackbox", "--namespace", &ns], "");
    assert!(out.contains("rel"), "yoke lists hoist's release: {out}");
    let (out, _) = e.yoke(&["blackbox", "--namespace", &ns, "rel", "1"], "");
    assert!(out.contains("name: a") || out.contains("\"a\""), "{out}");

    // Yoke continues it (ownership marks match), pruning b.
    e.yoke(&["takeoff", "--namespace", &ns, "rel"], &cm("a", "2"));
    assert_eq!(e.get(&ns, "a").unwrap()["data"]["key"], "2");
    assert!(e.get(&ns, "b").is_none(), "yoke pruned what hoist applied");
    let h = e.history(&ns, "rel");
    assert_eq!(h["history"].as_array().unwrap().len(), 2, "{h}");
    let (out, _) = e.hoist(&["turbulence", "-n", &ns, "rel"], "");
    assert!(out.is_empty(), "{out}");

    // Yoke rolls back to hoist's revision.
    e.yoke(&["descent", "--namespace", &ns, "rel", "1"], "");
    assert_eq!(e.get(&ns, "b").unwrap()["data"]["key"], "1");
    assert_eq!(e.history(&ns, "rel")["history"][0]["id"], 1);

    e.yoke(&["mayday", "--namespace", &ns, "rel"], "");
    assert!(e.get(&ns, "a").is_none());
    let (out, err) = e.hoist(&["blackbox", "-n", &ns], "");
    assert!(!out.contains(" rel "), "{out}{err}");
    e.cleanup(&ns);
}

// ---- flights: the same bytes out of both tools ----------------------------------------------

impl Env {
    /// Runs hoist without asserting success.
    fn hoist_output(&self, args: &[&str], stdin: &str) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hoist"));
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOIST_CACHE_DIR", &self.cache)
            .env("HOIST_BACKGROUND_COMPILE", "0")
            .env("NO_COLOR", "1")
            .args(args);
        run(cmd, stdin)
    }

    /// Runs yoke without asserting success.
    fn yoke_output(&self, args: &[&str], stdin: &str) -> Output {
        let mut cmd = Command::new(&self.yoke);
        cmd.env("KUBECONFIG", &self.kubeconfig).args(args);
        run(cmd, stdin)
    }

    fn get_kind(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let conn = hoist_release::connect(Some(&self.kubeconfig), None)
                .await
                .unwrap();
            let res = conn.resolve(api_version, kind).await.unwrap()?;
            conn.get_object(&res, ns, name).await.unwrap()
        })
    }
}

/// yoke's own example flights, built by `scripts/test.d/yoke.sh`.
fn example(name: &str) -> Option<PathBuf> {
    let dir = common::required_env(
        "HOIST_YOKE_EXAMPLES_DIR",
        "scripts/test builds yoke's example flights (scripts/test.d/yoke.sh)",
    )?;
    Some(dir.join(format!("{name}.wasm")))
}

/// The echo flight's JSON output, comparable across tools: without what only hoist adds
/// (its `data.HOIST_VERSION` key and the entry in `data.env`), and with `data.env` sorted.
/// yoke builds the environment from a Go map, so its order changes from run to run even
/// within yoke; hoist's is fixed.
fn comparable_echo(output: &str, from_hoist: bool) -> Value {
    let mut value: Value = serde_json::from_str(output).expect("echo prints JSON");
    let data = value["data"].as_object_mut().expect("echo has data");
    if from_hoist {
        assert!(
            data.remove("HOIST_VERSION").is_some(),
            "hoist passes HOIST_VERSION"
        );
    }
    if let Some(Value::String(env)) = data.get("env").cloned() {
        let mut list: Vec<String> = serde_json::from_str(&env).unwrap();
        list.retain(|entry| !entry.starts_with("HOIST_VERSION="));
        list.sort();
        data.insert(
            "env".to_string(),
            Value::String(serde_json::to_string(&list).unwrap()),
        );
    }
    value
}

#[test]
fn takeoff_stdout_is_byte_identical_to_yokes() {
    let Some(e) = env() else { return };
    let Some(basic) = example("basic") else {
        return;
    };
    let ns = "stdout-ns";
    let flights: Vec<(PathBuf, Vec<&str>, &str)> = vec![
        (common::flight("multistage"), vec![], ""),
        (common::flight("multistage"), vec!["--no-namespace"], ""),
        (common::flight("yamlstream"), vec![], ""),
        (basic.clone(), vec![], ""),
        (basic, vec!["5"], ""),
    ];
    for (flight, args, stdin) in &flights {
        let path = flight.to_str().unwrap();
        let mut yoke_args = vec!["takeoff", "-stdout", "-namespace", ns, "rel", path, "--"];
        yoke_args.extend(args);
        let mut hoist_args = vec!["takeoff", "--stdout", "-n", ns, "rel", path, "--"];
        hoist_args.extend(args);
        let (theirs, _) = e.yoke(&yoke_args, stdin);
        for tier in [Tier::Default, Tier::Interpreter] {
            let (ours, _) = e.hoist_on(tier, &hoist_args, stdin);
            assert_eq!(ours, theirs, "{path} {args:?} on {tier:?}: outputs differ");
        }
    }

    // The whole environment: identical but for HOIST_VERSION (JSON output).
    let echo = common::flight("echo");
    let echo = echo.to_str().unwrap();
    let (theirs, _) = e.yoke(
        &[
            "takeoff",
            "-stdout",
            "-namespace",
            ns,
            "rel",
            echo,
            "--",
            "a",
            "b c",
        ],
        "from stdin\n",
    );
    let theirs = comparable_echo(&theirs, false);
    for tier in [Tier::Default, Tier::Interpreter] {
        let (ours, _) = e.hoist_on(
            tier,
            &[
                "takeoff", "--stdout", "-n", ns, "rel", echo, "--", "a", "b c",
            ],
            "from stdin\n",
        );
        assert_eq!(comparable_echo(&ours, true), theirs, "on {tier:?}");
    }
    assert_eq!(theirs["data"]["YOKE_VERSION"], "v0.20.27");
    assert_eq!(theirs["data"]["stdin"], "from stdin\n");
}

#[test]
fn cluster_lookups_give_a_flight_the_same_answers_in_both_tools() {
    let Some(e) = env() else { return };
    let Some(lookup) = example("lookup") else {
        return;
    };
    let lookup = lookup.to_str().unwrap();
    let ns = unique("lookup");
    e.namespace(&ns);
    let password = |e: &Env| -> String {
        let secret = e
            .get_kind("v1", "Secret", Some(&ns), "rel-example")
            .expect("the release's secret exists");
        secret["data"]["password"].as_str().unwrap().to_string()
    };

    // yoke creates the secret with a random password; hoist's run of the same flight looks
    // it up (it belongs to the release) and keeps it.
    e.yoke(
        &[
            "takeoff",
            "-namespace",
            &ns,
            "-cluster-access",
            "rel",
            lookup,
        ],
        "",
    );
    let first = password(&e);
    e.hoist(
        &["takeoff", "-n", &ns, "--cluster-access", "rel", lookup],
        "",
    );
    assert_eq!(password(&e), first, "hoist's lookup saw yoke's secret");
    // The interpreter tier answers the flight's host calls the same way.
    e.hoist_on(
        Tier::Interpreter,
        &["takeoff", "-n", &ns, "--cluster-access", "rel", lookup],
        "",
    );
    assert_eq!(password(&e), first, "the interpreter's lookup saw it too");

    // And back: yoke looks up what hoist applied.
    e.yoke(
        &[
            "takeoff",
            "-namespace",
            &ns,
            "-cluster-access",
            "rel",
            lookup,
        ],
        "",
    );
    assert_eq!(password(&e), first, "yoke's lookup saw hoist's secret");

    // Without cluster access both tools refuse the lookup with the same answer, which the
    // flight reports; nothing changes.
    let denied = "access to the cluster has not been granted for this flight invocation";
    let ours = e.hoist_output(&["takeoff", "-n", &ns, "rel", lookup], "");
    let theirs = e.yoke_output(&["takeoff", "-namespace", &ns, "rel", lookup], "");
    assert!(!ours.status.success() && !theirs.status.success());
    assert!(
        text(&ours.stderr).contains(denied),
        "{}",
        text(&ours.stderr)
    );
    assert!(
        text(&theirs.stderr).contains(denied),
        "{}",
        text(&theirs.stderr)
    );
    assert_eq!(password(&e), first, "a failed takeoff changes nothing");

    e.hoist(&["mayday", "-n", &ns, "rel"], "");
    e.cleanup(&ns);
}

#[test]
fn digest_pinning_holds_across_both_tools() {
    let Some(e) = env() else { return };
    let original = std::fs::read(common::flight("echo")).unwrap();
    let mut changed = original.clone();
    changed.extend_from_slice(&[0x00, 0x06, 0x01, b'x', b'p', b'i', b'n', b'!']);
    let ns = unique("pin");
    e.namespace(&ns);

    // yoke starts the release from an http URL; hoist refuses a changed module there.
    let server = common::ModuleServer::start(original.clone());
    let url = server.url.clone();
    e.yoke(&["takeoff", "-namespace", &ns, "rel", &url], "");
    server.set(changed.clone());
    let refused = e.hoist_output(&["takeoff", "-n", &ns, "rel", &url], "");
    common::fails_with(&refused, &["digest pinning", &url, "--allow-repin"]);
    e.hoist(&["takeoff", "-n", &ns, "--allow-repin", "rel", &url], "");

    // And the reverse: hoist's release refuses a changed module in yoke.
    let ns2 = unique("pin2");
    e.namespace(&ns2);
    server.set(original.clone());
    e.hoist(&["takeoff", "-n", &ns2, "rel", &url], "");
    server.set(changed);
    let refused = e.yoke_output(&["takeoff", "-namespace", &ns2, "rel", &url], "");
    assert!(
        !refused.status.success(),
        "yoke must refuse the changed module"
    );
    assert!(
        text(&refused.stderr).contains("has changed since last use"),
        "{}",
        text(&refused.stderr)
    );

    e.hoist(&["mayday", "-n", &ns, "rel"], "");
    e.hoist(&["mayday", "-n", &ns2, "rel"], "");
    e.cleanup(&ns);
    e.cleanup(&ns2);
}

/// A CRD in group `GROUP` (unique per test run: CRDs are cluster-wide).
const CRD: &str = r#"---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.GROUP
spec:
  group: GROUP
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

#[test]
fn prestages_history_caps_locks_and_removals_interoperate() {
    let Some(e) = env() else { return };
    let ns = unique("stg");
    e.namespace(&ns);
    let (own, far) = (format!("{ns}-own"), format!("{ns}-far"));
    let group = format!("{ns}.hoist.test");
    let crd = CRD.replace("GROUP", &group);
    // The release (in `ns`) owns two namespaces (pre-stage), a CRD (pre-stage), a custom
    // resource, and ConfigMaps outside its namespace (cross-namespace).
    let objects = |value: &str| {
        format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {own}}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {far}}}\n{crd}---\napiVersion: {group}/v1\nkind: Gadget\nmetadata: {{name: g, namespace: {own}}}\nspec: {{size: {value}}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: far, namespace: {far}}}\ndata: {{key: \"{value}\"}}\n"
        )
    };
    let yoke_args = [
        "takeoff",
        "-namespace",
        &ns,
        "-cross-namespace",
        "-lock",
        "-history-cap",
        "2",
        "rel",
    ];
    let yoke_takeoff = |value: &str| e.yoke(&yoke_args, &objects(value));

    // yoke v0.20.27 waits for the CRD's Established condition, then refreshes discovery once;
    // on a busy machine the API server's discovery can still lag, and yoke fails with "no
    // matches for kind" (seen in CI). That is yoke's race, not what this test is about: the
    // first takeoff is retried once on exactly that error. hoist waits until discovery
    // serves the kind (`Readiness::NeedsDiscovery`).
    let first = e.yoke_output(&yoke_args, &objects("1"));
    if !first.status.success() {
        let err = text(&first.stderr);
        assert!(
            err.contains("no matches for kind \"Gadget\""),
            "yoke {yoke_args:?} failed:\n{}\n{err}",
            text(&first.stdout)
        );
        eprintln!("yoke lost the discovery race after creating the CRD; retrying once");
        yoke_takeoff("1");
    }
    assert!(
        e.get_kind(&format!("{group}/v1"), "Gadget", Some(&own), "g")
            .is_some()
    );

    // hoist continues yoke's release, locked (no ownership conflict); objects outside the
    // release namespace need --cross-namespace in both tools.
    let refused = e.hoist_output(&["takeoff", "-n", &ns, "rel"], &objects("2"));
    assert!(
        !refused.status.success(),
        "cross-namespace objects need --cross-namespace"
    );
    e.hoist(
        &[
            "takeoff",
            "-n",
            &ns,
            "--cross-namespace",
            "--lock",
            "--history-cap",
            "2",
            "rel",
        ],
        &objects("2"),
    );
    assert_eq!(e.get(&far, "far").unwrap()["data"]["key"], "2");
    yoke_takeoff("3");
    assert_eq!(e.get(&far, "far").unwrap()["data"]["key"], "3");
    // yoke v0.20.27 never caps a locked takeoff: its own lock Secret carries the deprecated
    // plain-name release label, so the history read inside the lock tries to migrate it and
    // the API server rejects the patch ("failed to cap release history"; a warning, exit 0).
    // hoist caps the history yoke left behind.
    e.hoist(
        &[
            "takeoff",
            "-n",
            &ns,
            "--cross-namespace",
            "--lock",
            "--history-cap",
            "2",
            "rel",
        ],
        &objects("4"),
    );
    let h = e.history(&ns, "rel");
    assert_eq!(h["history"].as_array().unwrap().len(), 2, "{h}");
    let (out, _) = e.yoke(&["blackbox", "-namespace", &ns, "rel"], "");
    assert_eq!(
        out.lines()
            .filter(|l| l
                .trim_start_matches(['│', ' '])
                .starts_with(char::is_numeric))
            .count(),
        2,
        "yoke lists the capped history: {out}"
    );

    // yoke sees no drift in what hoist applied, and hoist none in yoke's.
    let (out, err) = e.yoke(&["turbulence", "-namespace", &ns, "rel"], "");
    assert!(out.trim().is_empty(), "yoke turbulence: {out}{err}");
    let (out, _) = e.hoist(&["turbulence", "-n", &ns, "rel"], "");
    assert!(out.trim().is_empty(), "hoist turbulence: {out}");

    // hoist's mayday with removals takes the CRD and both namespaces with it.
    e.hoist(
        &[
            "mayday",
            "-n",
            &ns,
            "--remove-crds",
            "--remove-namespaces",
            "rel",
        ],
        "",
    );
    let gone_or_going =
        |v: Option<Value>| v.is_none_or(|v| !v["metadata"]["deletionTimestamp"].is_null());
    assert!(gone_or_going(e.get_kind(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        None,
        &format!("gadgets.{group}")
    )));
    assert!(gone_or_going(e.get_kind("v1", "Namespace", None, &own)));
    assert!(gone_or_going(e.get_kind("v1", "Namespace", None, &far)));
    e.cleanup(&ns);
}

#[test]
fn a_module_yoke_stowed_is_rendered_and_taken_off_by_hoist() {
    let Some(e) = env() else { return };
    let Some(registry) = common::required_env("HOIST_TEST_REGISTRY", "run scripts/registry start")
    else {
        return;
    };
    let registry = registry.to_string_lossy().into_owned();
    // echo: one ConfigMap in the release namespace, so the release can live in a namespace
    // the test made.
    let flight = common::flight("echo");
    let path = flight.to_str().unwrap();
    let reference = format!("oci://{registry}/interop/{}:v1", unique("stowed"));
    e.yoke(&["stow", "--insecure", path, &reference], "");

    // What hoist renders from yoke's artifact is what it renders from the file, on both tiers.
    let (local, _) = e.hoist(&["takeoff", "--stdout", "rel", path], "");
    for tier in [Tier::Default, Tier::Interpreter] {
        let (stowed, _) = e.hoist_on(
            tier,
            &["takeoff", "--stdout", "--insecure", "rel", &reference],
            "",
        );
        assert_eq!(stowed, local, "on {tier:?}");
    }

    // A release from yoke's artifact, which yoke then reads.
    let ns = unique("stowed");
    e.namespace(&ns);
    e.hoist(&["takeoff", "-n", &ns, "--insecure", "rel", &reference], "");
    let (out, _) = e.yoke(&["blackbox", "--namespace", &ns, "rel"], "");
    assert!(out.contains(&reference), "{out}");
    e.hoist(&["mayday", "-n", &ns, "rel"], "");
    e.cleanup(&ns);
}
