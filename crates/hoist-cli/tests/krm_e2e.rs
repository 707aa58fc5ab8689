//! `hoist fn eval` / `hoist fn render` end to end: the real `hoist` binary running real kpt
//! catalog functions (built by `../shared/peers/build-krm-functions`, see
//! `scripts/test.d/krm.sh`), compared with node running the same modules through Go's own
//! `wasm_exec.js` (kpt's nodejs runtime).

mod common;

use common::{Hoist, required_env, run_with_stdin, stderr, stdout};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn functions() -> Option<PathBuf> {
    required_env(
        "HOIST_KRM_FUNCTIONS_DIR",
        "scripts/test.d/krm.sh builds the kpt catalog functions with ../shared/peers/build-krm-functions",
    )
}

fn function(dir: &Path, name: &str) -> String {
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: rerun scripts/test.d/krm.sh",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

fn testdata() -> PathBuf {
    common::workspace().join("testdata/krm")
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

/// A fresh copy of testdata/krm/packages/app named `app`.
fn app_package() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("app");
    copy_dir(&testdata().join("packages/app"), &pkg);
    (tmp, pkg)
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap_or_else(|e| panic!("not YAML ({e}): {text}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

fn read_docs(path: &Path) -> Vec<Value> {
    yaml_docs(&std::fs::read_to_string(path).unwrap())
}

const INPUT: &str = "apiVersion: config.kubernetes.io/v1
kind: ResourceList
items:
- apiVersion: v1
  kind: ConfigMap
  metadata:
    name: settings
    namespace: default
    annotations:
      config.kubernetes.io/path: config.yaml
      internal.config.kubernetes.io/path: config.yaml
  data:
    mode: production
- apiVersion: apps/v1
  kind: Deployment
  metadata:
    name: web
    namespace: default
    annotations:
      config.kubernetes.io/path: web.yaml
      internal.config.kubernetes.io/path: web.yaml
  spec:
    replicas: 1
";

fn with_config(config: &str) -> String {
    format!("{INPUT}functionConfig:\n{config}")
}

/// Runs `module` under node as kpt does (js: kpt-style glue for processResourceList
/// functions, Go's wasm_exec_node.js for command-style ones). None when node is missing
/// locally.
fn node_run(module: &str, command_style: bool, input: &str) -> Option<String> {
    let node = match std::env::var_os("HOIST_NODE") {
        Some(n) => PathBuf::from(n),
        None if Command::new("node").arg("--version").output().is_ok() => PathBuf::from("node"),
        None => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("node is not available: install the Debian package nodejs");
            }
            eprintln!("skipping node comparison: node is not installed");
            return None;
        }
    };
    let wasm_dir = match std::env::var_os("HOIST_GO_WASM_EXEC") {
        Some(d) => PathBuf::from(d),
        None => {
            let out = Command::new("go").args(["env", "GOROOT"]).output().ok()?;
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("lib/wasm")
        }
    };
    let mut cmd = Command::new(node);
    if command_style {
        cmd.arg(wasm_dir.join("wasm_exec_node.js")).arg(module);
    } else {
        cmd.arg(testdata().join("kpt-glue.js"))
            .arg(wasm_dir.join("wasm_exec.js"))
            .arg(module);
    }
    let out = run_with_stdin(&mut cmd, input.as_bytes());
    assert!(out.status.success(), "node failed: {}", stderr(&out));
    Some(stdout(&out))
}

/// Items and results of a ResourceList, without kpt's in-flight annotations.
fn items_and_results(text: &str) -> (Vec<Value>, Value) {
    let docs = yaml_docs(text);
    let rl = docs.first().cloned().unwrap_or(Value::Null);
    let mut items = rl["items"].as_array().cloned().unwrap_or_default();
    for item in &mut items {
        if let Some(ann) = item["metadata"]["annotations"].as_object_mut() {
            ann.retain(|k, _| !k.contains("kubernetes.io/") && !k.starts_with("config.k8s.io"));
            if ann.is_empty() {
                item["metadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("annotations");
            }
        }
    }
    (items, rl["results"].clone())
}

#[test]
fn eval_js_function_matches_node() {
    let Some(dir) = functions() else { return };
    let module = function(&dir, "set-namespace.wasm");
    let hoist = Hoist::new();
    let out = hoist.run(
        &["fn", "eval", "-", "-i", &module, "--", "namespace=staging"],
        INPUT.as_bytes(),
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.starts_with(&format!("[RUNNING] \"{module}\"\n[PASS] \"{module}\" in ")),
        "{err}"
    );
    assert!(err.contains("  [Results]: [warning]"), "{err}");
    let (items, results) = items_and_results(&stdout(&out));
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["metadata"]["namespace"], "staging");
    assert_eq!(items[1]["metadata"]["namespace"], "staging");
    // Path annotations survive the round trip.
    let raw = yaml_docs(&stdout(&out));
    let web = raw[0]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "Deployment")
        .unwrap()
        .clone();
    assert_eq!(
        web["metadata"]["annotations"]["internal.config.kubernetes.io/path"],
        "web.yaml"
    );
    assert!(!stdout(&out).contains("internal.config.kubernetes.io/id"));

    let config = "  apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: function-input\n  data:\n    namespace: staging\n";
    if let Some(node) = node_run(&module, false, &with_config(config)) {
        let (node_items, node_results) = items_and_results(&node);
        assert_eq!(items, node_items, "hoist and node disagree on items");
        // hoist prints results on stderr (the stdout ResourceList carries none, as kpt's).
        assert!(results.is_null());
        for r in node_results.as_array().unwrap() {
            assert!(err.contains(r["message"].as_str().unwrap()), "{err}");
        }
    }
}

#[test]
fn eval_command_style_js_and_wasip1_match_node() {
    let Some(dir) = functions() else { return };
    let js = function(&dir, "set-annotations.wasm");
    let wasi = function(&dir, "set-annotations.wasip1.wasm");
    let hoist = Hoist::new();
    let mut outputs = Vec::new();
    let mut errs = Vec::new();
    for module in [&js, &wasi] {
        let out = hoist.run(
            &["fn", "eval", "-", "-i", module, "--", "team=payments"],
            INPUT.as_bytes(),
        );
        assert!(out.status.success(), "{module}: {}", stderr(&out));
        outputs.push(items_and_results(&stdout(&out)));
        errs.push(stderr(&out));
    }
    assert_eq!(outputs[0], outputs[1], "js and wasip1 builds disagree");
    let (items, results) = &outputs[0];
    assert_eq!(items[0]["metadata"]["annotations"]["team"], "payments");
    assert_eq!(items[1]["metadata"]["annotations"]["team"], "payments");
    assert!(results.is_null());
    for err in &errs {
        assert!(
            err.contains("[Results]: [info] metadata.annotations: set annotations"),
            "{err}"
        );
    }
    let config = "  apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: function-input\n  data:\n    team: payments\n";
    if let Some(node) = node_run(&js, true, &with_config(config)) {
        assert_eq!(
            &items_and_results(&node).0,
            items,
            "hoist and node disagree"
        );
    }
}

#[test]
fn eval_on_a_package_writes_in_place_and_keeps_untouched_files() {
    let Some(dir) = functions() else { return };
    let module = function(&dir, "set-annotations.wasm");
    let (_tmp, pkg) = app_package();
    let kptfile_before = std::fs::read(pkg.join("Kptfile")).unwrap();
    let hoist = Hoist::new();
    let results = pkg.parent().unwrap().join("results");
    let out = hoist.run(
        &[
            "fn",
            "eval",
            pkg.to_str().unwrap(),
            "-i",
            &module,
            "--match-kind",
            "ConfigMap",
            "--results-dir",
            results.to_str().unwrap(),
            "--",
            "owner=team-a",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Only the selected ConfigMap changed; every other file is byte-identical.
    let cm = read_docs(&pkg.join("config.yaml"));
    assert_eq!(cm[0]["metadata"]["annotations"]["owner"], "team-a");
    assert_eq!(cm[0]["data"]["mode"], "production");
    assert!(
        !std::fs::read_to_string(pkg.join("config.yaml"))
            .unwrap()
            .contains("kubernetes.io")
    );
    assert_eq!(std::fs::read(pkg.join("Kptfile")).unwrap(), kptfile_before);
    let orig = testdata().join("packages/app");
    for f in ["resources.yaml", "db/statefulset.yaml", "db/Kptfile"] {
        assert_eq!(
            std::fs::read(pkg.join(f)).unwrap(),
            std::fs::read(orig.join(f)).unwrap(),
            "{f} changed"
        );
    }
    let r = read_docs(&results.join("results.yaml"));
    assert_eq!(r[0]["kind"], "FunctionResultList");
    assert_eq!(r[0]["exitCode"], 0);
    assert_eq!(r[0]["items"][0]["image"], module.as_str());
    assert_eq!(
        r[0]["items"][0]["results"][0]["file"]["path"],
        "config.yaml"
    );
}

#[test]
fn render_runs_subpackages_first_then_the_parent_pipeline() {
    let Some(dir) = functions() else { return };
    let (tmp, pkg) = app_package();
    let map = tmp.path().join("images.json");
    std::fs::write(
        &map,
        json!({
            "ghcr.io/kptdev/krm-functions-catalog/set-namespace": function(&dir, "set-namespace.wasm"),
            "ghcr.io/kptdev/krm-functions-catalog/set-annotations": function(&dir, "set-annotations.wasip1.wasm"),
        })
        .to_string(),
    )
    .unwrap();
    let hoist = Hoist::new();
    let out = hoist
        .cmd()
        .env("HOIST_FN_IMAGE_MAP", &map)
        .args(["fn", "render", pkg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let db_at = err.find("Package \"app/db\": ").expect(&err);
    let app_at = err.find("Package \"app\": ").expect(&err);
    assert!(db_at < app_at, "subpackage first: {err}");
    assert!(err.contains("[RUNNING] \"set-namespace:v0.4.1\" on package \"app\"\n[PASS] \"set-namespace:v0.4.1\" in "), "{err}");
    assert!(
        err.ends_with("Successfully executed 3 function(s) in 2 package(s).\n"),
        "{err}"
    );

    // The subpackage's own mutator, then the parent's two over its output.
    let sts = read_docs(&pkg.join("db/statefulset.yaml"));
    assert_eq!(sts[0]["metadata"]["namespace"], "staging");
    assert_eq!(sts[0]["metadata"]["annotations"]["tier"], "database");
    assert_eq!(sts[0]["metadata"]["annotations"]["team"], "payments");
    let res = read_docs(&pkg.join("resources.yaml"));
    assert_eq!(res.len(), 2);
    assert_eq!(res[0]["kind"], "Deployment");
    assert_eq!(res[1]["metadata"]["namespace"], "staging");
    assert_eq!(res[1]["metadata"]["annotations"]["team"], "payments");
    assert!(res[0]["metadata"]["annotations"].get("tier").is_none());
    for f in ["resources.yaml", "db/statefulset.yaml", "config.yaml"] {
        let text = std::fs::read_to_string(pkg.join(f)).unwrap();
        assert!(!text.contains("kubernetes.io/path"), "{f}: {text}");
    }
}

#[test]
fn a_failing_function_leaves_the_package_untouched() {
    let Some(dir) = functions() else { return };
    let module = function(&dir, "set-namespace.wasm");
    let (_tmp, pkg) = app_package();
    let hoist = Hoist::new();
    // set-namespace without a namespace reports an error result.
    let out = hoist.run(&["fn", "eval", pkg.to_str().unwrap(), "-i", &module], b"");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("[FAIL] \"{module}\" in ")), "{err}");
    assert!(
        err.contains("`data.namespace` should not be empty"),
        "{err}"
    );
    assert!(err.contains("[Exit code]: 1"), "{err}");
    let orig = testdata().join("packages/app");
    for f in [
        "resources.yaml",
        "config.yaml",
        "Kptfile",
        "db/statefulset.yaml",
    ] {
        assert_eq!(
            std::fs::read(pkg.join(f)).unwrap(),
            std::fs::read(orig.join(f)).unwrap()
        );
    }
}

#[test]
fn output_modes_and_bad_input() {
    let Some(dir) = functions() else { return };
    let module = function(&dir, "set-annotations.wasm");
    let (_tmp, pkg) = app_package();
    let hoist = Hoist::new();
    let out = hoist.run(
        &[
            "fn",
            "eval",
            pkg.to_str().unwrap(),
            "-i",
            &module,
            "-o",
            "unwrap",
            "--",
            "a=b",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let docs = yaml_docs(&stdout(&out));
    assert_eq!(
        docs.len(),
        6,
        "Kptfiles, Deployment, Service, ConfigMap, StatefulSet"
    );
    assert!(
        docs.iter()
            .all(|d| d["metadata"]["annotations"]["a"] == "b")
    );
    assert!(!stdout(&out).contains("kubernetes.io/path"));

    let outdir = pkg.parent().unwrap().join("out");
    let out = hoist.run(
        &[
            "fn",
            "eval",
            pkg.to_str().unwrap(),
            "-i",
            &module,
            "-o",
            outdir.to_str().unwrap(),
            "--",
            "a=b",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(outdir.join("db/statefulset.yaml").is_file());
    assert_eq!(
        read_docs(&outdir.join("config.yaml"))[0]["metadata"]["annotations"]["a"],
        "b"
    );

    // Not a ResourceList on stdin.
    let out = hoist.run(&["fn", "eval", "-", "-i", &module], b"kind: ConfigMap\n");
    common::fails_with(&out, &["stdin is not a ResourceList"]);
    // Not a Wasm module.
    let bogus = pkg.join("config.yaml");
    let out = hoist.run(
        &[
            "fn",
            "eval",
            "-",
            "--exec",
            &format!("{}.wasm", bogus.display()),
        ],
        INPUT.as_bytes(),
    );
    assert!(!out.status.success());
    // A container image name gives a clear error (offline: nothing is fetched).
    let out = hoist.run(
        &["fn", "eval", "-", "-i", "nginx:1.27", "--offline"],
        INPUT.as_bytes(),
    );
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("a container image is not a Wasm function"),
        "{err}"
    );
}

#[test]
fn source_and_sink_round_trip() {
    let (_tmp, pkg) = app_package();
    let hoist = Hoist::new();
    let out = hoist.run(&["fn", "source", pkg.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("kind: ResourceList"));
    assert!(
        text.contains("internal.config.kubernetes.io/path: db/statefulset.yaml"),
        "{text}"
    );
    let sunk = pkg.parent().unwrap().join("sunk");
    let out = hoist.run(&["fn", "sink", sunk.to_str().unwrap()], text.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    for f in [
        "Kptfile",
        "resources.yaml",
        "config.yaml",
        "db/Kptfile",
        "db/statefulset.yaml",
    ] {
        assert_eq!(read_docs(&sunk.join(f)), read_docs(&pkg.join(f)), "{f}");
    }
}
