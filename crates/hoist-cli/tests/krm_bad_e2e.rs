//! KRM functions that misbehave: a Go js/wasm function (`testdata/krm/badfn`, built here with
//! the Go toolchain) that panics, exits non-zero, loops, hogs memory, returns invalid YAML,
//! returns something other than a ResourceList, or moves resources out of the package, and
//! native exec functions that fail. Each must give a clear error naming the function, the
//! package and the cause (with the function's stderr), and leave the package untouched.

mod common;

use common::{Hoist, stderr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn badfn() -> Option<&'static PathBuf> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let src = common::workspace().join("testdata/krm/badfn");
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("krm-badfn.wasm");
            let go = ["/usr/local/go/bin/go", "go"]
                .into_iter()
                .find(|g| Command::new(g).arg("version").output().is_ok());
            let Some(go) = go else {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("the Go toolchain is required to build testdata/krm/badfn");
                }
                eprintln!("skipping: no Go toolchain to build testdata/krm/badfn");
                return None;
            };
            let status = Command::new(go)
                .current_dir(&src)
                .env("GOOS", "js")
                .env("GOARCH", "wasm")
                .args(["build", "-o"])
                .arg(&out)
                .arg(".")
                .status()
                .expect("run go build");
            assert!(status.success(), "building testdata/krm/badfn failed");
            Some(out)
        })
        .as_ref()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dst = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dst);
        } else {
            std::fs::copy(entry.path(), &dst).unwrap();
        }
    }
}

/// Every file of `dir` (relative path -> bytes).
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            if e.file_type().unwrap().is_dir() {
                walk(root, &e.path(), out);
            } else {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                out.push((rel, std::fs::read(e.path()).unwrap()));
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

fn app_package() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("app");
    copy_dir(&common::workspace().join("testdata/krm/packages/app"), &pkg);
    (tmp, pkg)
}

/// Runs `hoist fn eval` of badfn in `mode` on a fresh package; checks exit code 1, that the
/// error names the function, the package and `causes`, and that no file changed.
fn eval_fails(mode: &str, causes: &[&str]) {
    let Some(module) = badfn() else { return };
    let (tmp, pkg) = app_package();
    let before = snapshot(tmp.path());
    let out = Hoist::new().run(
        &[
            "fn",
            "eval",
            pkg.to_str().unwrap(),
            "-i",
            module.to_str().unwrap(),
            "--timeout",
            "3s",
            "--max-memory-mib",
            "256",
            "--",
            &format!("mode={mode}"),
        ],
        b"",
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{mode}: {err}");
    assert!(
        err.contains(&format!("[FAIL] \"{}\"", module.display())),
        "{mode}: {err}"
    );
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("hoist: error: fn eval on package ")
            || err.contains("hoist: error: fn eval on package "),
        "{mode}: {err}"
    );
    assert!(err.contains(&module.display().to_string()), "{mode}: {err}");
    for c in causes {
        assert!(err.contains(c), "{mode}: missing {c:?} in:\n{err}");
    }
    assert!(
        snapshot(tmp.path()) == before,
        "{mode}: the package changed"
    );
}

#[test]
fn a_panicking_function() {
    eval_fails(
        "panic",
        &["panic: badfn was told to panic", "badfn: mode panic"],
    );
}

#[test]
fn a_function_that_exits_non_zero() {
    eval_fails(
        "exit",
        &["badfn: giving up", "exit code 3", "[Exit code]: 3"],
    );
}

#[test]
fn a_function_that_loops() {
    eval_fails("loop", &["exceeded", "3s"]);
}

#[test]
fn a_function_that_hogs_memory() {
    eval_fails("hog", &["exceeded", "256 MiB"]);
}

#[test]
fn a_function_that_returns_invalid_yaml() {
    eval_fails(
        "badyaml",
        &[
            "did not return a ResourceList",
            "{unclosed",
            "badfn: no structured errors",
        ],
    );
}

#[test]
fn a_function_that_returns_a_non_resource_list() {
    eval_fails(
        "notrl",
        &["did not return a ResourceList", "not-a-resource-list"],
    );
}

#[test]
fn a_function_that_moves_resources_out_of_the_package() {
    let Some(module) = badfn() else { return };
    let (tmp, pkg) = app_package();
    let before = snapshot(tmp.path());
    let m = module.to_str().unwrap();
    let out = Hoist::new().run(
        &[
            "fn",
            "eval",
            pkg.to_str().unwrap(),
            "-i",
            m,
            "--",
            "mode=escape",
        ],
        b"",
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("outside the package"), "{err}");
    assert!(err.contains("../escaped.yaml") && err.contains(m), "{err}");
    assert!(snapshot(tmp.path()) == before, "the package changed");

    // The same through render: the package's pipeline names the function (the subpackage,
    // whose pipeline needs catalog images, is not part of this case).
    std::fs::remove_dir_all(pkg.join("db")).unwrap();
    std::fs::write(
        pkg.join("Kptfile"),
        format!(
            "apiVersion: kpt.dev/v1\nkind: Kptfile\nmetadata:\n  name: app\npipeline:\n  mutators:\n    - exec: {m}\n      configMap:\n        mode: escape\n"
        ),
    )
    .unwrap();
    let before = snapshot(tmp.path());
    let out = Hoist::new().run(&["fn", "render", pkg.to_str().unwrap()], b"");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("outside the package") && err.contains("app"),
        "{err}"
    );
    // Only the root Kptfile's status is written (as kpt does); no resource file changes.
    let after = snapshot(tmp.path());
    for ((p, a), (_, b)) in before.iter().zip(&after) {
        if p != "app/Kptfile" {
            assert!(a == b, "{p} changed");
        }
    }
    let kf = std::fs::read_to_string(pkg.join("Kptfile")).unwrap();
    assert!(kf.contains("reason: RenderFailed"), "{kf}");
}

#[test]
fn render_names_the_package_and_function_of_a_failure() {
    let Some(module) = badfn() else { return };
    let (tmp, pkg) = app_package();
    let m = module.to_str().unwrap();
    // The subpackage's function panics.
    std::fs::write(
        pkg.join("db/Kptfile"),
        format!(
            "apiVersion: kpt.dev/v1\nkind: Kptfile\nmetadata:\n  name: db\npipeline:\n  mutators:\n    - exec: {m}\n      configMap:\n        mode: panic\n"
        ),
    )
    .unwrap();
    let before = snapshot(&pkg.join("db"));
    let results = tmp.path().join("results");
    let out = Hoist::new().run(
        &[
            "fn",
            "render",
            pkg.to_str().unwrap(),
            "--results-dir",
            results.to_str().unwrap(),
        ],
        b"",
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("package \"app/db\""), "{err}");
    assert!(err.contains("panic: badfn was told to panic"), "{err}");
    assert!(err.contains(m), "{err}");
    assert!(
        snapshot(&pkg.join("db")) == before,
        "the subpackage changed"
    );
    let r = std::fs::read_to_string(results.join("results.yaml")).unwrap();
    assert!(
        r.contains("exitCode: 1") && r.contains(&format!("exec: {m}")),
        "{r}"
    );
}

#[test]
fn native_exec_functions_that_fail() {
    let (tmp, pkg) = app_package();
    let script = tmp.path().join("fail.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncat >/dev/null\necho 'fail.sh: cannot continue' >&2\nexit 4\n",
    )
    .unwrap();
    let garbage = tmp.path().join("garbage.sh");
    std::fs::write(&garbage, "#!/bin/sh\ncat >/dev/null\necho 'items: [oops'\n").unwrap();
    for s in [&script, &garbage] {
        Command::new("chmod").arg("+x").arg(s).status().unwrap();
    }
    let before = snapshot(&pkg);
    let out = Hoist::new().run(
        &[
            "fn",
            "eval",
            pkg.to_str().unwrap(),
            "--exec",
            script.to_str().unwrap(),
        ],
        b"",
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("fail.sh: cannot continue") && err.contains("exit code 4"),
        "{err}"
    );
    let out = Hoist::new().run(
        &[
            "fn",
            "eval",
            pkg.to_str().unwrap(),
            "--exec",
            garbage.to_str().unwrap(),
        ],
        b"",
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not a valid ResourceList"), "{err}");
    assert!(err.contains("garbage.sh"), "{err}");
    assert!(snapshot(&pkg) == before, "the package changed");
}
