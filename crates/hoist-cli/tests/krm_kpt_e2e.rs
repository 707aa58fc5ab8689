//! kpt's e2e test cases, run as kpt's own runner (`pkg/test/runner`) runs them, through a
//! `kpt` shim on PATH (`testdata/krm/kpt-shim/kpt`) that calls `hoist fn`. The cases live in
//! `testdata/krm/kpt-cases/{fn-eval,fn-render}/<case>/`, in kpt's format: the package files,
//! `.expected/config.yaml` (testType, exitCode, stdErr, image, args, ...), and optionally
//! `.expected/diff.patch` (the `git diff` the command must leave) and `.expected/results.yaml`
//! (the results file). Each case runs twice, as in kpt (once when it is expected to fail).
//!
//! Function images are kpt's catalog names (`ghcr.io/kptdev/krm-functions-catalog/...`),
//! mapped to the locally built catalog functions with HOIST_FN_IMAGE_MAP; the names are printed
//! as given, so stderr expectations read as kpt's.

mod common;

use common::required_env;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn functions() -> Option<PathBuf> {
    required_env(
        "HOIST_KRM_FUNCTIONS_DIR",
        "scripts/test.d/krm.sh builds the kpt catalog functions with ../shared/peers/build-krm-functions",
    )
}

fn cases_root() -> PathBuf {
    common::workspace().join("testdata/krm/kpt-cases")
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

fn git(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_DIFF_OPTS", "")
        .args([
            "-c",
            "user.name=none",
            "-c",
            "user.email=none",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .expect("git is required for kpt's e2e cases");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        common::stderr(&out)
    );
    out
}

/// kpt's stderr normalisation: `in <t>` after `[PASS]`/`[FAIL]` becomes `in 0s`, and the
/// temporary directory prefix is removed.
fn normalise_stderr(s: &str, tmp: &Path) -> String {
    let tmp = tmp.display().to_string();
    s.lines()
        .map(|l| {
            let l = l.replace(&format!("{tmp}/"), "").replace(&tmp, "");
            if (l.starts_with("[PASS]") || l.starts_with("[FAIL]"))
                && let Some(i) = l.rfind(" in ")
            {
                return format!("{} in 0s", &l[..i]);
            }
            l
        })
        .collect::<Vec<_>>()
        .join("\n")
}

struct Case {
    name: String,
    dir: PathBuf,
    config: Value,
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for kind in ["fn-eval", "fn-render"] {
        let root = cases_root().join(kind);
        let mut dirs: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        dirs.sort();
        for dir in dirs {
            let cfg = dir.join(".expected/config.yaml");
            let config = match std::fs::read_to_string(&cfg) {
                Ok(t) => serde_saphyr::from_str::<Value>(&t).unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            out.push(Case {
                name: format!("{kind}/{}", dir.file_name().unwrap().to_string_lossy()),
                dir,
                config,
            });
        }
    }
    out
}

fn run_case(case: &Case, env: &[(&str, String)]) -> Result<(), String> {
    let c = &case.config;
    let test_type = c["testType"].as_str().unwrap_or("render");
    let want_code = c["exitCode"].as_i64().unwrap_or(0);
    let iterations = if want_code == 0 { 2 } else { 1 };
    for iteration in 0..iterations {
        let tmp = tempfile::tempdir().unwrap();
        let pkg = tmp.path().join(case.dir.file_name().unwrap());
        copy_dir(&case.dir, &pkg);
        git(&pkg, &["init", "-q"]);
        git(&pkg, &["add", "--all"]);
        git(&pkg, &["commit", "-q", "-m", "first"]);
        let first = String::from_utf8(git(&pkg, &["rev-parse", "HEAD"]).stdout).unwrap();
        let expected = case.dir.join(".expected");
        let results_dir = tmp.path().join("results");
        let mut cmd = Command::new("kpt");
        cmd.current_dir(cases_root());
        let exec_sh = expected.join("exec.sh");
        if exec_sh.is_file() {
            cmd = Command::new("bash");
            cmd.arg(&exec_sh).current_dir(&pkg);
        } else {
            cmd.args(["fn", test_type]).arg(&pkg);
            if expected.join("results.yaml").is_file() {
                cmd.arg("--results-dir").arg(&results_dir);
            }
            if case.dir.join("out").is_dir() {
                cmd.arg("-o").arg(pkg.join("out"));
            }
            if c["allowExec"].as_bool() == Some(true) {
                cmd.arg("--allow-exec");
            }
            if let Some(i) = c["image"].as_str() {
                cmd.args(["--image", i]);
            }
            if let Some(e) = c["execPath"].as_str() {
                cmd.arg("--exec").arg(expected.join(e));
            }
            if let Some(t) = c["tag"].as_str() {
                cmd.args(["--tag", t]);
            }
            if let Some(f) = c["fnConfig"].as_str() {
                cmd.arg("--fn-config").arg(expected.join(f));
            }
            cmd.args(["--allow-alpha-wasm", "--truncate-output=false"]);
            if let Some(args) = c["args"].as_object() {
                cmd.arg("--");
                for (k, v) in args {
                    cmd.arg(format!("{k}={}", v.as_str().unwrap_or_default()));
                }
            }
        }
        cmd.env_remove("HOIST_LOG").env_remove("HOIST_COMPILER");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().map_err(|e| format!("running kpt: {e}"))?;
        let err = normalise_stderr(&common::stderr(&out), tmp.path());
        let code = i64::from(out.status.code().unwrap_or(-1));
        if code != want_code {
            return Err(format!(
                "iteration {iteration}: exit code {code}, want {want_code}; stderr:\n{err}"
            ));
        }
        if let Some(want) = c["stdErr"].as_str()
            && !err.contains(want.trim_end())
        {
            return Err(format!(
                "stderr does not contain\n{want}\n--- stderr:\n{err}"
            ));
        }
        if let Some(want) = c["stdOut"].as_str() {
            let stdout = common::stdout(&out);
            if !stdout.contains(want) {
                return Err(format!("stdout does not contain {want:?}: {stdout}"));
            }
        }
        if let Ok(want) = std::fs::read_to_string(expected.join("results.yaml")) {
            let got = std::fs::read_to_string(results_dir.join("results.yaml"))
                .map_err(|e| format!("no results file: {e}"))?;
            if got.trim() != want.trim() {
                return Err(format!(
                    "results.yaml differs:\n--- want\n{want}\n--- got\n{got}"
                ));
            }
        }
        git(&pkg, &["add", "--all"]);
        git(&pkg, &["commit", "-q", "--allow-empty", "-m", "second"]);
        let diff = git(&pkg, &["diff", first.trim(), "HEAD"]);
        let diff = String::from_utf8_lossy(&diff.stdout).into_owned();
        let want = std::fs::read_to_string(expected.join("diff.patch")).unwrap_or_default();
        if diff.trim() != want.trim() {
            return Err(format!(
                "iteration {iteration}: the diff differs:\n--- want\n{want}\n--- got\n{diff}"
            ));
        }
    }
    Ok(())
}

#[test]
fn kpt_e2e_cases_through_a_kpt_shim() {
    let Some(fns) = functions() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let map = tmp.path().join("images.json");
    let catalog = "ghcr.io/kptdev/krm-functions-catalog";
    std::fs::write(
        &map,
        json!({
            format!("{catalog}/set-namespace"): fns.join("set-namespace.wasm"),
            format!("{catalog}/set-annotations"): fns.join("set-annotations.wasm"),
        })
        .to_string(),
    )
    .unwrap();
    // PATH: the shim, then a directory with `hoist` (the binary under test), then the rest.
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_hoist"), bin.join("hoist")).unwrap();
    let shim = common::workspace().join("testdata/krm/kpt-shim");
    let path = format!(
        "{}:{}:{}",
        shim.display(),
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let all = cases();
    assert!(all.len() >= 4, "the kpt cases are missing");
    let mut failures = Vec::new();
    let env = [
        ("PATH", path),
        ("HOIST_FN_IMAGE_MAP", map.display().to_string()),
        (
            "HOIST_CACHE_DIR",
            tmp.path().join("cache").display().to_string(),
        ),
        ("HOIST_BACKGROUND_COMPILE", "0".to_string()),
        (
            "KUBECONFIG",
            tmp.path().join("no-kubeconfig").display().to_string(),
        ),
    ];
    for case in &all {
        if let Err(e) = run_case(case, &env) {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} kpt cases failed:\n\n{}",
        failures.len(),
        all.len(),
        failures.join("\n\n")
    );
}
