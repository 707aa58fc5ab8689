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

/// Writes `files` (path, text) under `dir`.
fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (rel, text) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// An image map for the catalog short names this file's packages use.
fn image_map(tmp: &Path, dir: &Path) -> PathBuf {
    let map = tmp.join("images.json");
    std::fs::write(
        &map,
        json!({
            "ghcr.io/kptdev/krm-functions-catalog/set-namespace": function(dir, "set-namespace.wasm"),
            "ghcr.io/kptdev/krm-functions-catalog/set-annotations": function(dir, "set-annotations.wasip1.wasm"),
        })
        .to_string(),
    )
    .unwrap();
    map
}

fn render_with_map(map: &Path, pkg: &Path, extra: &[&str]) -> std::process::Output {
    Hoist::new()
        .cmd()
        .env("HOIST_FN_IMAGE_MAP", map)
        .args(["fn", "render", pkg.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn render_writes_kpt_status_and_results_into_the_root_kptfile() {
    let Some(dir) = functions() else { return };
    let (tmp, pkg) = app_package();
    let map = image_map(tmp.path(), &dir);
    let results = tmp.path().join("results");
    let out = render_with_map(&map, &pkg, &["--results-dir", results.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let kf = read_docs(&pkg.join("Kptfile"));
    let status = &kf[0]["status"];
    assert_eq!(
        status["conditions"],
        json!([{"type": "Rendered", "status": "True", "reason": "RenderSuccess"}])
    );
    let steps = status["renderStatus"]["mutationSteps"].as_array().unwrap();
    // The root's pipeline only... plus the subpackage's step first (render order).
    let images: Vec<&str> = steps.iter().map(|s| s["image"].as_str().unwrap()).collect();
    assert_eq!(
        images,
        [
            "set-annotations:v0.1.4",
            "set-namespace:v0.4.1",
            "set-annotations:v0.1.4"
        ]
    );
    assert!(steps.iter().all(|s| s["exitCode"] == 0));
    assert!(status["renderStatus"].get("errorSummary").is_none());
    // The pipeline is kept; status goes only into the root Kptfile (the subpackage's Kptfile
    // is a resource like the others: set-annotations annotates it, as in kpt).
    assert_eq!(
        kf[0]["pipeline"]["mutators"][0]["configMap"]["namespace"],
        "staging"
    );
    let sub = read_docs(&pkg.join("db/Kptfile"));
    assert!(sub[0].get("status").is_none(), "{sub:?}");
    let r = read_docs(&results.join("results.yaml"));
    assert_eq!(r[0]["exitCode"], 0);
    assert_eq!(r[0]["items"].as_array().unwrap().len(), 3);
    assert!(err.contains("For complete results, see "), "{err}");
}

const FAILING_KPTFILE: &str = "apiVersion: kpt.dev/v1
kind: Kptfile
metadata:
  name: app
ANNOTATIONS
pipeline:
  mutators:
    - image: set-annotations:v0.1.4
      configMap:
        team: payments
    - image: set-namespace:v0.4.1
      configMap:
        other: x
";

#[test]
fn a_failed_render_writes_only_its_status_unless_save_on_render_failure() {
    let Some(dir) = functions() else { return };
    for save in [false, true] {
        let (tmp, pkg) = app_package();
        let map = image_map(tmp.path(), &dir);
        let ann = if save {
            "  annotations:\n    kpt.dev/save-on-render-failure: \"true\""
        } else {
            ""
        };
        let kptfile = FAILING_KPTFILE.replace("ANNOTATIONS\n", &format!("{ann}\n"));
        let kptfile = kptfile.replace("\n\n", "\n");
        write_files(&pkg, &[("Kptfile", &kptfile)]);
        let out = render_with_map(&map, &pkg, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("[FAIL] \"set-namespace:v0.4.1\" in "), "{err}");
        assert!(!err.contains("Successfully executed"), "{err}");
        let kf = read_docs(&pkg.join("Kptfile"));
        let status = &kf[0]["status"];
        assert_eq!(status["conditions"][0]["status"], "False", "{status}");
        assert_eq!(status["conditions"][0]["reason"], "RenderFailed");
        let steps = status["renderStatus"]["mutationSteps"].as_array().unwrap();
        assert_eq!(steps.len(), 3, "{status}");
        assert_eq!(steps[2]["exitCode"], 1);
        assert!(
            steps[2]["errorResults"][0]["message"]
                .as_str()
                .unwrap()
                .contains("should not be empty"),
            "{status}"
        );
        assert!(status["renderStatus"]["errorSummary"].is_string());
        let orig = testdata().join("packages/app");
        let sts = std::fs::read(pkg.join("db/statefulset.yaml")).unwrap();
        let res = std::fs::read(pkg.join("resources.yaml")).unwrap();
        if save {
            // Partial output: the subpackage's render and the root's first mutator.
            let sts = yaml_docs(&String::from_utf8(sts).unwrap());
            assert_eq!(sts[0]["metadata"]["annotations"]["tier"], "database");
            assert_eq!(sts[0]["metadata"]["annotations"]["team"], "payments");
            let res = yaml_docs(&String::from_utf8(res).unwrap());
            assert_eq!(res[0]["metadata"]["annotations"]["team"], "payments");
        } else {
            assert_eq!(
                sts,
                std::fs::read(orig.join("db/statefulset.yaml")).unwrap()
            );
            assert_eq!(res, std::fs::read(orig.join("resources.yaml")).unwrap());
            assert_eq!(
                std::fs::read(pkg.join("config.yaml")).unwrap(),
                std::fs::read(orig.join("config.yaml")).unwrap()
            );
        }
    }
}

#[test]
fn validators_changes_are_dropped_and_the_kptfile_is_rewritten_as_kpt_does() {
    let Some(dir) = functions() else { return };
    let (tmp, pkg) = app_package();
    let map = image_map(tmp.path(), &dir);
    // A "validator" that in fact mutates: its changes must not reach the files.
    write_files(
        &pkg,
        &[(
            "Kptfile",
            "apiVersion: kpt.dev/v1
kind: Kptfile
metadata:
  name: app
pipeline:
  mutators:
    - image: set-namespace:v0.4.1
      configMap:
        namespace: \"staging\"
    - image: set-annotations:v0.1.4
      configMap:
        owner: \"a\"
  validators:
    - image: set-annotations:v0.1.4
      configMap:
        zone: \"eu\"
        audited: \"yes\"
",
        )],
    );
    std::fs::remove_dir_all(pkg.join("db")).unwrap();
    let out = render_with_map(&map, &pkg, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    for f in ["resources.yaml", "config.yaml"] {
        let text = std::fs::read_to_string(pkg.join(f)).unwrap();
        assert!(text.contains("namespace: staging"), "{f}: {text}");
        assert!(
            !text.contains("zone") && !text.contains("audited"),
            "{f}: {text}"
        );
    }
    let kptfile = std::fs::read_to_string(pkg.join("Kptfile")).unwrap();
    // The root Kptfile gets its status. (Here set-annotations also annotates the Kptfile
    // itself, as in kpt, so it is written back through the comment-preserving path, which
    // keeps the original quoting; the quote-dropping rewrite of kpt is covered by the unit
    // test `normalises_as_kpts_rewrite`.)
    let kf = yaml_docs(&kptfile);
    assert_eq!(
        kf[0]["status"]["conditions"][0]["type"], "Rendered",
        "{kptfile}"
    );
    assert_eq!(
        kf[0]["status"]["conditions"][0]["status"], "True",
        "{kptfile}"
    );
    assert_eq!(
        kf[0]["pipeline"]["validators"][0]["configMap"]["audited"], "yes",
        "a string YAML 1.1 would read as a boolean stays a string: {kptfile}"
    );
    let v = &kf[0]["status"]["renderStatus"]["validationSteps"];
    assert_eq!(v.as_array().unwrap().len(), 1, "{kptfile}");
    assert_eq!(v[0]["exitCode"], 0);
}

#[test]
fn eval_save_adds_the_function_to_the_kptfile_pipeline() {
    let Some(dir) = functions() else { return };
    let module = function(&dir, "set-annotations.wasip1.wasm");
    let (_tmp, pkg) = app_package();
    let hoist = Hoist::new();
    let p = pkg.to_str().unwrap();
    let out = hoist.run(
        &[
            "fn",
            "eval",
            p,
            "-i",
            &module,
            "--save",
            "--",
            "owner=team-a",
        ],
        b"",
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("Added \"{module}\" as mutator in the Kptfile.")),
        "{err}"
    );
    let kf = read_docs(&pkg.join("Kptfile"));
    let m = kf[0]["pipeline"]["mutators"].as_array().unwrap();
    assert_eq!(m.len(), 3, "{kf:?}");
    assert_eq!(m[2]["image"], module.as_str());
    assert_eq!(m[2]["configMap"], json!({"owner": "team-a"}));
    // The function also ran.
    let cm = read_docs(&pkg.join("config.yaml"));
    assert_eq!(cm[0]["metadata"]["annotations"]["owner"], "team-a");

    // Saved again with new arguments: replaced, not appended. A validator with an
    // --fn-config file inside the package gets a package-relative configPath.
    let out = hoist.run(
        &["fn", "eval", p, "-i", &module, "-s", "--", "owner=team-b"],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    write_files(
        &pkg,
        &[(
            "fn/config.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  audited: \"true\"\n",
        )],
    );
    let cfg = pkg.join("fn/config.yaml");
    let out = hoist.run(
        &[
            "fn",
            "eval",
            p,
            "-i",
            &module,
            "-s",
            "-t",
            "validator",
            "--fn-config",
            cfg.to_str().unwrap(),
        ],
        b"",
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("as validator in the Kptfile."), "{err}");
    let kf = read_docs(&pkg.join("Kptfile"));
    let m = kf[0]["pipeline"]["mutators"].as_array().unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!(m[2]["configMap"], json!({"owner": "team-b"}));
    let v = &kf[0]["pipeline"]["validators"];
    assert_eq!(v[0]["configPath"], "fn/config.yaml", "{kf:?}");
    // The --fn-config file inside the package was not passed to the function as an item.
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(!text.contains("audited: \"true\"\n  annotations"), "{text}");
    assert_eq!(
        read_docs(&cfg)[0]["metadata"].get("annotations"),
        None,
        "{text}"
    );
    // A bad type is refused before anything runs.
    let out = hoist.run(
        &["fn", "eval", p, "-i", &module, "-s", "-t", "checker"],
        b"",
    );
    common::fails_with(&out, &["--type \"checker\""]);
}

/// `hoist fn push` / `fn pull` against the real local registry, through a mirror of ghcr.io
/// (HOIST_REGISTRY_MIRRORS): the catalog functions are pushed under their kpt names, pulled
/// back byte-identical, and a render whose Kptfile names them by kpt's short names runs them
/// from the mirror; `--image-prefix` reaches the same registry without a mirror.
#[test]
fn functions_push_pull_and_run_through_a_registry_mirror() {
    let Some(dir) = functions() else { return };
    let Some(registry) = required_env(
        "HOIST_TEST_REGISTRY",
        "start a registry with `eval \"$(scripts/registry start)\"`",
    ) else {
        return;
    };
    let registry = registry.display().to_string();
    let hoist = Hoist::new();
    let tmp = tempfile::tempdir().unwrap();
    // A unique repository prefix per run, so that tags from earlier runs do not matter.
    let run = format!(
        "krm-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let mirrors = format!("ghcr.io=http://{registry}/{run}");
    let with_mirror = |args: &[&str]| {
        hoist
            .cmd()
            .env("HOIST_REGISTRY_MIRRORS", &mirrors)
            .env_remove("HOIST_CONFIG")
            .args(args)
            .output()
            .unwrap()
    };
    let catalog = "ghcr.io/kptdev/krm-functions-catalog";
    for (file, image) in [
        (
            "set-namespace.wasm",
            format!("{catalog}/set-namespace:v0.4.1"),
        ),
        (
            "set-annotations.wasip1.wasm",
            format!("{catalog}/set-annotations:v0.1.4"),
        ),
    ] {
        let module = function(&dir, file);
        let out = with_mirror(&["fn", "push", &module, &image]);
        assert!(out.status.success(), "push {image}: {}", stderr(&out));
        let pulled = tmp.path().join(file);
        let out = with_mirror(&["fn", "pull", &image, pulled.to_str().unwrap()]);
        assert!(out.status.success(), "pull {image}: {}", stderr(&out));
        assert!(
            std::fs::read(&pulled).unwrap() == std::fs::read(&module).unwrap(),
            "{image} came back different"
        );
    }
    // The mirror holds them under the mirror's prefix, in kpt's layout (an index with a
    // js/wasm platform entry), readable without any mirror.
    let direct = format!("{registry}/{run}/kptdev/krm-functions-catalog/set-namespace:v0.4.1");
    let again = tmp.path().join("direct.wasm");
    let out = hoist.run(&["fn", "pull", &direct, again.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", stderr(&out));

    // Render with kpt's short names, from the mirror.
    let (_t, pkg) = app_package();
    let out = with_mirror(&["fn", "render", pkg.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let sts = read_docs(&pkg.join("db/statefulset.yaml"));
    assert_eq!(sts[0]["metadata"]["namespace"], "staging");
    assert_eq!(sts[0]["metadata"]["annotations"]["team"], "payments");

    // --image-prefix instead of a mirror.
    let prefix = format!("{registry}/{run}/kptdev/krm-functions-catalog");
    let out = hoist.run(
        &[
            "fn",
            "eval",
            "-",
            "-i",
            "set-namespace:v0.4.1",
            "--image-prefix",
            &prefix,
            "--",
            "namespace=prefixed",
        ],
        INPUT.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (items, _) = items_and_results(&stdout(&out));
    assert_eq!(items[0]["metadata"]["namespace"], "prefixed");

    // A mirror config file does the same as the variable.
    let cfg = tmp.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!("registryMirrors:\n  ghcr.io: http://{registry}/{run}\n"),
    )
    .unwrap();
    let out = run_with_stdin(
        hoist
            .cmd()
            .env("HOIST_CONFIG", &cfg)
            .env_remove("HOIST_REGISTRY_MIRRORS")
            .args([
                "fn",
                "eval",
                "-",
                "-i",
                "set-namespace:v0.4.1",
                "--",
                "namespace=from-config",
            ]),
        INPUT.as_bytes(),
    );
    assert!(
        out.status.success(),
        "the config file's mirror: {}",
        stderr(&out)
    );
    let (items, _) = items_and_results(&stdout(&out));
    assert_eq!(items[0]["metadata"]["namespace"], "from-config");
}

/// `fn render --policy`: the policy gate (a real Kubewarden waPC policy, built by
/// scripts/test.d/policy.sh) sees the rendered resources before anything is written. A
/// rejection writes nothing (not even the Kptfile status) and exits non-zero; a mutating
/// policy's changes are written.
#[test]
fn render_policy_gate_admits_or_writes_nothing() {
    let Some(dir) = functions() else { return };
    let Some(policies) = required_env(
        "HOIST_POLICIES_DIR",
        "scripts/test.d/policy.sh builds the Kubewarden test policies",
    ) else {
        return;
    };
    let wapc = policies.join("hoist-test-wapc.wasm");
    assert!(
        wapc.is_file(),
        "{} is missing: run scripts/test.d/policy.sh",
        wapc.display()
    );
    let (tmp, pkg) = app_package();
    let map = image_map(tmp.path(), &dir);
    let deny = tmp.path().join("deny.yaml");
    std::fs::write(&deny, "denied_names: [settings]\n").unwrap();
    let before: Vec<Vec<u8>> = [
        "Kptfile",
        "config.yaml",
        "resources.yaml",
        "db/statefulset.yaml",
    ]
    .iter()
    .map(|f| std::fs::read(pkg.join(f)).unwrap())
    .collect();
    let policy = format!("{},settings={}", wapc.display(), deny.display());
    let out = render_with_map(&map, &pkg, &["--policy", &policy]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("rejected 1 object(s)"), "{err}");
    assert!(err.contains("ConfigMap/staging/settings"), "{err}");
    assert!(err.contains("name 'settings' is denied"), "{err}");
    let after: Vec<Vec<u8>> = [
        "Kptfile",
        "config.yaml",
        "resources.yaml",
        "db/statefulset.yaml",
    ]
    .iter()
    .map(|f| std::fs::read(pkg.join(f)).unwrap())
    .collect();
    assert!(before == after, "a rejected render wrote files");

    let label = tmp.path().join("label.yaml");
    std::fs::write(&label, "add_label: true\n").unwrap();
    let policy = format!("{},settings={}", wapc.display(), label.display());
    let out = render_with_map(&map, &pkg, &["--policy", &policy]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("policy gate: 4 resource(s) admitted"), "{err}");
    let cm = read_docs(&pkg.join("config.yaml"));
    assert_eq!(
        cm[0]["metadata"]["labels"]["hoist/checked"], "true",
        "{cm:?}"
    );
    assert_eq!(cm[0]["metadata"]["namespace"], "staging");
    // The Kptfiles are not sent to the gate.
    let kf = read_docs(&pkg.join("db/Kptfile"));
    assert!(kf[0]["metadata"].get("labels").is_none());
}

/// A Kptfile `tag:` semver constraint resolves by listing the registry's tags (kpt's
/// behaviour): the highest satisfying tag runs. Different functions are pushed under
/// different tags of one repository, so the output shows which tag was chosen; a constraint
/// no tag satisfies fails with the tags the registry has, and writes nothing.
#[test]
fn semver_tag_constraints_resolve_against_the_registry_tags() {
    let Some(dir) = functions() else { return };
    let Some(registry) = required_env(
        "HOIST_TEST_REGISTRY",
        "start a registry with `eval \"$(scripts/registry start)\"`",
    ) else {
        return;
    };
    let registry = registry.display().to_string();
    let hoist = Hoist::new();
    let run = format!(
        "semver-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let repo = format!("{registry}/{run}/picker");
    // set-namespace sets metadata.namespace from configMap.namespace; set-annotations turns
    // every configMap entry into an annotation: the result tells them apart.
    for (file, tag) in [
        ("set-annotations.wasip1.wasm", "v0.3.0"),
        ("set-namespace.wasm", "v0.4.1"),
        ("set-annotations.wasip1.wasm", "v0.4.9-rc.1"),
        ("set-annotations.wasip1.wasm", "v1.0.0"),
        ("set-namespace.wasm", "v1.2.0"),
        ("set-annotations.wasip1.wasm", "latest"),
    ] {
        let module = function(&dir, file);
        let out = hoist.run(&["fn", "push", &module, &format!("{repo}:{tag}")], b"");
        assert!(out.status.success(), "push {tag}: {}", stderr(&out));
    }
    let render = |constraint: &str| {
        let tmp = tempfile::tempdir().unwrap();
        let pkg = tmp.path().join("pkg");
        write_files(
            &pkg,
            &[
                (
                    "Kptfile",
                    &format!(
                        "apiVersion: kpt.dev/v1\nkind: Kptfile\nmetadata:\n  name: pkg\npipeline:\n  mutators:\n    - image: {repo}\n      tag: \"{constraint}\"\n      configMap:\n        namespace: picked\n"
                    ),
                ),
                (
                    "cm.yaml",
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  a: b\n",
                ),
            ],
        );
        let out = hoist
            .cmd()
            .args(["fn", "render", pkg.to_str().unwrap()])
            .output()
            .unwrap();
        let cm = std::fs::read_to_string(pkg.join("cm.yaml")).unwrap();
        (out, cm, tmp)
    };
    // ~0.4 -> v0.4.1 (the pre-release v0.4.9-rc.1 does not count): set-namespace.
    let (out, cm, _t) = render("~0.4");
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = &yaml_docs(&cm)[0];
    assert_eq!(doc["metadata"]["namespace"], "picked", "{cm}");
    assert!(
        doc["metadata"]["annotations"].get("namespace").is_none(),
        "{cm}"
    );
    // >=0.2, <1 -> v0.4.1 too; ^1.0 -> v1.2.0 (set-namespace); >=1, <1.1 -> v1.0.0.
    for (constraint, namespace_set) in [(">=0.2, <1", true), ("^1.0", true), (">=1, <1.1", false)] {
        let (out, cm, _t) = render(constraint);
        assert!(out.status.success(), "{constraint}: {}", stderr(&out));
        let doc = &yaml_docs(&cm)[0];
        if namespace_set {
            assert_eq!(doc["metadata"]["namespace"], "picked", "{constraint}: {cm}");
        } else {
            assert!(
                doc["metadata"].get("namespace").is_none(),
                "{constraint}: {cm}"
            );
            assert_eq!(
                doc["metadata"]["annotations"]["namespace"], "picked",
                "{constraint}: {cm}"
            );
        }
    }
    // Nothing satisfies >=2: a clear error that lists what the registry has; nothing written.
    let (out, cm, _t) = render(">=2");
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    for want in [">=2", "no tag of", &repo, "v0.3.0", "v1.2.0", "latest"] {
        assert!(err.contains(want), "missing {want:?} in: {err}");
    }
    assert!(!cm.contains("picked"), "{cm}");
}

/// A tree whose packages each set an annotation saying which package's pipeline ran last on
/// them: `pkg` with subpackages `a` (with `a/c`) and `b`.
fn order_tree(bfs: bool) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("pkg");
    let kptfile = |name: &str, annotations: &str| {
        format!(
            "apiVersion: kpt.dev/v1\nkind: Kptfile\nmetadata:\n  name: {name}\n{annotations}pipeline:\n  mutators:\n    - image: set-annotations:v0.1.4\n      configMap:\n        last: {name}\n"
        )
    };
    let cm = |name: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\n")
    };
    let root_annotations = if bfs {
        "  annotations:\n    kpt.dev/bfs-rendering: \"true\"\n"
    } else {
        ""
    };
    write_files(
        &pkg,
        &[
            ("Kptfile", &kptfile("pkg", root_annotations)),
            ("cm.yaml", &cm("root")),
            ("a/Kptfile", &kptfile("a", "")),
            ("a/cm.yaml", &cm("a")),
            ("a/c/Kptfile", &kptfile("c", "")),
            ("a/c/cm.yaml", &cm("c")),
            ("b/Kptfile", &kptfile("b", "")),
            ("b/cm.yaml", &cm("b")),
        ],
    );
    (tmp, pkg)
}

/// `kpt.dev/bfs-rendering: "true"` on the root Kptfile: packages render top-down,
/// breadth-first (pkg, pkg/a, pkg/b, pkg/a/c), each pipeline on its package and its
/// descendants; without it, depth-first post-order (pkg/a/c, pkg/a, pkg/b, pkg).
#[test]
fn bfs_rendering_runs_parents_first_breadth_first() {
    let Some(dir) = functions() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let map = image_map(tmp.path(), &dir);
    let last = |pkg: &Path, rel: &str| -> String {
        let doc = &read_docs(&pkg.join(rel))[0];
        doc["metadata"]["annotations"]["last"]
            .as_str()
            .unwrap_or_else(|| panic!("{rel}: {doc}"))
            .to_string()
    };
    let order = |err: &str| -> Vec<String> {
        err.lines()
            .filter_map(|l| l.strip_prefix("Package \""))
            .map(|l| l.split('"').next().unwrap().to_string())
            .collect()
    };
    // Depth-first: the root runs last and its annotation wins everywhere.
    let (_t, pkg) = order_tree(false);
    let out = render_with_map(&map, &pkg, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(order(&err), ["pkg/a/c", "pkg/a", "pkg/b", "pkg"], "{err}");
    for rel in ["cm.yaml", "a/cm.yaml", "a/c/cm.yaml", "b/cm.yaml"] {
        assert_eq!(last(&pkg, rel), "pkg", "{rel}");
    }
    // Breadth-first: each package's own pipeline runs last on it.
    let (_t, pkg) = order_tree(true);
    let out = render_with_map(&map, &pkg, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(order(&err), ["pkg", "pkg/a", "pkg/b", "pkg/a/c"], "{err}");
    assert!(
        err.contains("Successfully executed 4 function(s) in 4 package(s)."),
        "{err}"
    );
    for (rel, want) in [
        ("cm.yaml", "pkg"),
        ("a/cm.yaml", "a"),
        ("a/c/cm.yaml", "c"),
        ("b/cm.yaml", "b"),
    ] {
        assert_eq!(last(&pkg, rel), want, "{rel}");
    }
    // The subpackages' Kptfiles were seen (and annotated) by the parents' pipelines.
    let kf = &read_docs(&pkg.join("a/c/Kptfile"))[0];
    assert_eq!(kf["metadata"]["annotations"]["last"], "c");
}

/// The post-`main` snapshot: rendering a tree where one js/wasm function runs on every
/// package gives byte-identical files and results with and without the snapshot
/// (`HOIST_GOJS_SNAPSHOT=0`), and with it Go's start-up runs once (the other calls restore).
#[test]
fn js_function_snapshots_give_the_same_render_as_fresh_starts() {
    let Some(dir) = functions() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let map = image_map(tmp.path(), &dir);
    let make = |name: &str| {
        let pkg = tmp.path().join(name);
        let mut files = vec![(
            "Kptfile".to_string(),
            "apiVersion: kpt.dev/v1\nkind: Kptfile\nmetadata:\n  name: tree\npipeline:\n  mutators:\n    - image: set-namespace:v0.4.1\n      configMap:\n        namespace: top\n".to_string(),
        )];
        for i in 0..6 {
            files.push((
                format!("p{i}/Kptfile"),
                format!("apiVersion: kpt.dev/v1\nkind: Kptfile\nmetadata:\n  name: p{i}\npipeline:\n  mutators:\n    - image: set-namespace:v0.4.1\n      configMap:\n        namespace: ns-{i}\n"),
            ));
            files.push((
                format!("p{i}/deploy.yaml"),
                format!("# package {i}\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d{i} # keep\n  namespace: old\nspec:\n  replicas: {i}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: s{i}\n"),
            ));
        }
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        write_files(&pkg, &refs);
        pkg
    };
    let snap = make("snap");
    let fresh = make("fresh");
    let results_snap = tmp.path().join("results-snap");
    let results_fresh = tmp.path().join("results-fresh");
    let run = |pkg: &Path, results: &Path, snapshot: &str| {
        Hoist::new()
            .cmd()
            .env("HOIST_FN_IMAGE_MAP", &map)
            .env("HOIST_GOJS_SNAPSHOT", snapshot)
            .env("HOIST_LOG", "hoist_krm=debug")
            // One package at a time: the counts below are of calls in order (siblings
            // rendered at once could both find the module not yet snapshotted).
            .args([
                "fn",
                "render",
                pkg.to_str().unwrap(),
                "--jobs",
                "1",
                "--results-dir",
            ])
            .arg(results)
            .output()
            .unwrap()
    };
    let a = run(&snap, &results_snap, "1");
    let b = run(&fresh, &results_fresh, "0");
    let (ea, eb) = (stderr(&a), stderr(&b));
    assert!(a.status.success(), "{ea}");
    assert!(b.status.success(), "{eb}");
    // 7 calls of one module: a plain start, a start of the snapshot-ready form (snapshotted),
    // and 5 restores.
    assert_eq!(ea.matches("took the post-main snapshot").count(), 1, "{ea}");
    assert_eq!(
        ea.matches("restored the post-main snapshot").count(),
        5,
        "{ea}"
    );
    assert_eq!(
        eb.matches("restored the post-main snapshot").count(),
        0,
        "{eb}"
    );
    for i in 0..6 {
        let rel = format!("p{i}/deploy.yaml");
        let x = std::fs::read_to_string(snap.join(&rel)).unwrap();
        let y = std::fs::read_to_string(fresh.join(&rel)).unwrap();
        assert_eq!(x, y, "{rel}");
        assert!(x.contains("namespace: top") && x.contains("# keep"), "{x}");
    }
    let strip_status = |p: &Path| {
        let text = std::fs::read_to_string(p).unwrap();
        text.replace("fresh", "snap")
    };
    assert_eq!(
        strip_status(&results_snap.join("results.yaml")),
        strip_status(&results_fresh.join("results.yaml"))
    );
}

/// Every file under `dir` (relative path -> bytes).
fn tree_files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                files.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// kpt's console output without the run times and the results path, which differ from run
/// to run.
fn without_times(err: &str) -> String {
    err.lines()
        .map(|l| match l.rfind(" in ") {
            _ if l.starts_with("For complete results, see ") => "For complete results, see ...",
            Some(at) if l.starts_with('[') && l.ends_with('s') => l.get(..at).unwrap_or(l),
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `fn render --jobs N` hydrates sibling subpackages at once (and, with jobs to spare, their
/// own subpackages); the files, the console output
/// and results.yaml are byte-identical to one package at a time (kpt's way), on success and
/// when a sibling's function fails with kpt.dev/save-on-render-failure (the partial output
/// is kpt's: the siblings after the failing one count as never run, their files untouched).
#[test]
fn sibling_subpackages_render_at_once_with_kpts_output() {
    let Some(dir) = functions() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let map = image_map(tmp.path(), &dir);
    let kptfile = |name: &str, annotations: &str, mutators: &str| {
        format!(
            "apiVersion: kpt.dev/v1\nkind: Kptfile\nmetadata:\n  name: {name}\n{annotations}pipeline:\n  mutators:\n{mutators}"
        )
    };
    let annotate = |name: &str| {
        format!("    - image: set-annotations:v0.1.4\n      configMap:\n        last: {name}\n")
    };
    // set-namespace refuses a configMap without `namespace`.
    let failing = "    - image: set-namespace:v0.4.1\n      configMap:\n        other: x\n";
    let cm = |name: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\n")
    };
    for (case, fail, save) in [("ok", false, false), ("save", true, true)] {
        let mut renders = Vec::new();
        // 8 jobs over 4 siblings: 2 each, so `a` renders its two subpackages at once too.
        for jobs in ["1", "8"] {
            let pkg = tmp.path().join(format!("{case}-{jobs}")).join("pkg");
            let root_annotations = if save {
                "  annotations:\n    kpt.dev/save-on-render-failure: \"true\"\n"
            } else {
                ""
            };
            let b_mutators = if fail {
                format!("{}{failing}", annotate("b"))
            } else {
                annotate("b")
            };
            write_files(
                &pkg,
                &[
                    (
                        "Kptfile",
                        &kptfile("pkg", root_annotations, &annotate("pkg")),
                    ),
                    ("cm.yaml", &cm("root")),
                    ("a/Kptfile", &kptfile("a", "", &annotate("a"))),
                    ("a/cm.yaml", &cm("a")),
                    ("a/c/Kptfile", &kptfile("c", "", &annotate("c"))),
                    ("a/c/cm.yaml", &cm("c")),
                    ("a/f/Kptfile", &kptfile("f", "", &annotate("f"))),
                    ("a/f/cm.yaml", &cm("f")),
                    ("b/Kptfile", &kptfile("b", "", &b_mutators)),
                    ("b/cm.yaml", &cm("b")),
                    ("d/Kptfile", &kptfile("d", "", &annotate("d"))),
                    ("d/cm.yaml", &cm("d")),
                    ("e/Kptfile", &kptfile("e", "", &annotate("e"))),
                    ("e/cm.yaml", &cm("e")),
                ],
            );
            let before = tree_files(&pkg);
            let results = pkg.parent().unwrap().join("results");
            let out = render_with_map(
                &map,
                &pkg,
                &["--jobs", jobs, "--results-dir", results.to_str().unwrap()],
            );
            let err = stderr(&out);
            assert_eq!(out.status.success(), !fail, "{case} --jobs {jobs}: {err}");
            let after = tree_files(&pkg);
            let changed: Vec<String> = after
                .keys()
                .filter(|rel| before.get(*rel) != after.get(*rel))
                .cloned()
                .collect();
            let results = std::fs::read_to_string(results.join("results.yaml")).unwrap();
            match case {
                "ok" => assert!(
                    err.contains("Successfully executed 7 function(s) in 7 package(s)."),
                    "{err}"
                ),
                // a, a/c, a/f and b (its first mutator) rendered; d and e never ran.
                _ => {
                    for rel in ["d/cm.yaml", "d/Kptfile", "e/cm.yaml", "e/Kptfile"] {
                        assert_eq!(before.get(rel), after.get(rel), "{rel}: {err}");
                    }
                    assert_eq!(
                        read_docs(&pkg.join("b/cm.yaml"))[0]["metadata"]["annotations"]["last"],
                        "b"
                    );
                    assert_eq!(
                        read_docs(&pkg.join("a/c/cm.yaml"))[0]["metadata"]["annotations"]["last"],
                        "a"
                    );
                }
            }
            renders.push((after, without_times(&err), results, changed.len()));
        }
        let (one, many) = (&renders[0], &renders[1]);
        assert_eq!(one.0, many.0, "{case}: the files differ");
        assert_eq!(one.1, many.1, "{case}: the console output differs");
        assert_eq!(one.2, many.2, "{case}: results.yaml differs");
        assert_eq!(one.3, many.3);
    }
}
