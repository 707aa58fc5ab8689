//! Reliability: the kube-apiserver dies in the middle of a takeoff of many objects; after it
//! comes back, the next takeoff converges to one revision holding every object. Uses the
//! control plane of `scripts/control-plane` (its own test binary, so no other test shares
//! the apiserver while it is down).

mod common;

use common::{Hoist, stderr, stdout};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn plane() -> Option<(PathBuf, PathBuf)> {
    let how = "scripts/test sets it (scripts/control-plane start)";
    let kubeconfig = common::required_env("HOIST_TEST_KUBECONFIG", how)?;
    let dir = common::required_env("HOIST_CONTROL_PLANE_DIR", how)?;
    Some((kubeconfig, dir))
}

fn control_plane(dir: &PathBuf, verb: &str) {
    let status = Command::new(common::workspace().join("scripts/control-plane"))
        .args([verb, "--dir"])
        .arg(dir)
        .status()
        .expect("run scripts/control-plane");
    assert!(status.success(), "scripts/control-plane {verb} failed");
}

/// Brings the apiserver back even when an assertion fails while it is down, so that later
/// tests are not left without one.
struct RestartOnDrop<'a>(&'a PathBuf, bool);

impl Drop for RestartOnDrop<'_> {
    fn drop(&mut self) {
        if self.1 {
            let _ = Command::new(common::workspace().join("scripts/control-plane"))
                .args(["restart-apiserver", "--dir"])
                .arg(self.0)
                .status();
        }
    }
}

#[test]
fn takeoff_converges_after_the_apiserver_dies_mid_apply() {
    let Some((kubeconfig, dir)) = plane() else {
        return;
    };
    let hoist = Hoist::new();
    let release = format!("crash-{}", std::process::id());
    let mut input = String::new();
    for i in 0..400 {
        input.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {release}-{i}\n  namespace: default\ndata:\n  i: \"{i}\"\n"
        ));
    }
    let takeoff = || {
        let mut cmd = hoist.cmd();
        cmd.env("KUBECONFIG", &kubeconfig)
            .args([
                "takeoff",
                &release,
                "--namespace",
                "default",
                "--skip-dry-run",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn hoist");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child
    };

    // Kill the apiserver once the takeoff is under way.
    let started = Instant::now();
    let child = takeoff();
    std::thread::sleep(Duration::from_millis(300));
    control_plane(&dir, "kill-apiserver");
    let mut guard = RestartOnDrop(&dir, true);
    let interrupted = child.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    if interrupted.status.success() {
        eprintln!("note: the takeoff finished before the apiserver died ({elapsed:?})");
    } else {
        let err = stderr(&interrupted);
        assert!(
            err.contains("hoist: error:") && err.lines().count() < 40,
            "a clear, short error: {err}"
        );
    }

    guard.1 = false;
    control_plane(&dir, "restart-apiserver");
    let rerun = takeoff().wait_with_output().unwrap();
    assert!(
        rerun.status.success(),
        "takeoff after restart: {}",
        stderr(&rerun)
    );

    // One revision with all 400 objects, and nothing drifted.
    let history = hoist
        .cmd()
        .env("KUBECONFIG", &kubeconfig)
        .args(["blackbox", &release, "--namespace", "default", "-o", "json"])
        .output()
        .unwrap();
    assert!(history.status.success(), "{}", stderr(&history));
    let text = stdout(&history);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let revisions = json
        .get("history")
        .or_else(|| json.get("revisions"))
        .and_then(|v| v.as_array())
        .cloned()
        .or_else(|| json.as_array().cloned())
        .unwrap_or_else(|| panic!("unexpected blackbox JSON: {text}"));
    assert_eq!(revisions.len(), 1, "exactly one revision: {text}");
    assert_eq!(revisions[0]["resources"], 400, "{text}");
    let drift = hoist
        .cmd()
        .env("KUBECONFIG", &kubeconfig)
        .args(["turbulence", &release, "--namespace", "default"])
        .output()
        .unwrap();
    assert!(
        drift.status.success(),
        "no drift: {}{}",
        stdout(&drift),
        stderr(&drift)
    );

    let _ = hoist
        .cmd()
        .env("KUBECONFIG", &kubeconfig)
        .args(["mayday", &release, "--namespace", "default"])
        .output();
}
