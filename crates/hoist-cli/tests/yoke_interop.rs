//! Interoperability with the real Yoke CLI on the real control plane: releases created by
//! `yoke` are listed, rolled back, continued and deleted by `hoist`, and releases created by
//! `hoist` are inspected, continued and rolled back by `yoke`. Flights are YAML on stdin
//! (`yoke takeoff REL < file.yaml`), so no Wasm is needed.
//!
//! Needs `HOIST_TEST_KUBECONFIG` and `HOIST_YOKE` (the yoke binary, `scripts/tools path
//! yoke`). Without them: skip locally; in CI fail, unless `HOIST_YOKE_UNAVAILABLE` states why
//! yoke cannot exist on this machine (then skip with that reason).

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
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let kubeconfig =
        common::required_env("HOIST_TEST_KUBECONFIG", "run scripts/control-plane start")?;
    let yoke = match std::env::var_os("HOIST_YOKE").filter(|v| !v.is_empty()) {
        Some(v) => PathBuf::from(v),
        None => {
            if let Ok(reason) = std::env::var("HOIST_YOKE_UNAVAILABLE") {
                eprintln!("skipping yoke interop: {reason}");
                return None;
            }
            if ci {
                panic!("HOIST_YOKE is not set: export HOIST_YOKE=$(scripts/tools path yoke)");
            }
            eprintln!("skipping: HOIST_YOKE is not set (scripts/tools path yoke)");
            return None;
        }
    };
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

impl Env {
    fn hoist(&self, args: &[&str], stdin: &str) -> (String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hoist"));
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOIST_CACHE_DIR", &self.cache)
            .env("NO_COLOR", "1")
            .args(args);
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
