//! hoist against kwctl 1.31.0, response for response: every `kwctl run` command of each
//! built policy's upstream `e2e.bats`, plus each other request in its `test_data/` (with the
//! first command's settings and flags), is run with `hoist policy run` and compared with
//! kwctl's AdmissionResponse (patches compared decoded, as JSON).
//!
//! - With `HOIST_KWCTL` (a kwctl 1.31.0 binary; never built by CI) kwctl runs live on a
//!   module it annotated itself; `HOIST_KWCTL_UPDATE=1` also rewrites the expected files.
//! - Without it, hoist is checked against `testdata/policy/kwctl/<policy>.json`, kwctl's
//!   answers recorded by the above.
//!
//! Fixtures: scripts/test.d/policy.sh (HOIST_POLICIES_DIR, HOIST_POLICIES_SRC_DIR).

mod common;

use common::{Hoist, required_env, stderr, stdout, workspace};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The policies the fixture hook always builds (CI fails without them).
const CI_SET: &[&str] = &[
    "hoist-test-wapc",
    "go-wasi-policy-template",
    "go-wasi-context-aware-test-policy",
    "opa-policy-template",
    "raw-validation-opa-policy",
    "gatekeeper-policy-template",
    "unique-ingress-policy",
];

fn source_dir(name: &str) -> String {
    match name {
        "hoist-test-wapc"
        | "go-wasi-policy-template"
        | "opa-policy-template"
        | "gatekeeper-policy-template" => name.to_string(),
        other => format!("policies/{other}"),
    }
}

struct Fixture {
    module: PathBuf,
    metadata: PathBuf,
    src: PathBuf,
}

fn fixture(name: &str) -> Option<Fixture> {
    let how = "run scripts/test (its hook scripts/test.d/policy.sh builds the Kubewarden policies)";
    let dir = required_env("HOIST_POLICIES_DIR", how)?;
    let src = required_env("HOIST_POLICIES_SRC_DIR", how)?;
    let module = dir.join(format!("{name}.wasm"));
    if !module.exists() {
        if CI_SET.contains(&name) && std::env::var("CI").as_deref() == Ok("true") {
            panic!("{} is missing: {how}", module.display());
        }
        eprintln!("skipping {name}: {} is not built ({how})", module.display());
        return None;
    }
    Some(Fixture {
        metadata: dir.join(format!("{name}.metadata.yml")),
        module,
        src: src.join(source_dir(name)),
    })
}

/// Splits a shell command line into words (quotes and backslashes as bats sees them).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// One comparison: a name and `kwctl run`'s arguments (`annotated-policy.wasm` = the module).
#[derive(Debug, Clone, PartialEq)]
struct Case {
    name: String,
    args: Vec<String>,
}

/// The `run kwctl run ...` commands of an e2e.bats file.
fn bats_cases(text: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut name = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("@test ") {
            name = shell_words(rest.trim_end_matches('{')).join(" ");
        } else if let Some(command) = line.strip_prefix("run ") {
            let mut command = command.to_string();
            while command.ends_with('\\') {
                command.pop();
                command.push(' ');
                command.push_str(lines.next().unwrap_or_default().trim());
            }
            let words = shell_words(&command);
            if words.get(..2) == Some(&["kwctl".to_string(), "run".to_string()][..]) {
                cases.push(Case {
                    name: name.clone(),
                    args: words[2..].to_vec(),
                });
            }
        }
    }
    cases
}

const REQUEST_FLAGS: &[&str] = &["-r", "--request-path"];

/// The bats cases, then each `test_data/*.json` request no bats case uses, run with the first
/// case's flags and settings.
fn cases(f: &Fixture) -> Vec<Case> {
    let bats = std::fs::read_to_string(f.src.join("e2e.bats")).expect("e2e.bats");
    let mut cases = bats_cases(&bats);
    let Some(base) = cases.first().cloned() else {
        return cases;
    };
    let used: Vec<String> = cases.iter().flat_map(|c| c.args.clone()).collect();
    let mut extra: Vec<String> = std::fs::read_dir(f.src.join("test_data"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| format!("test_data/{}", e.file_name().to_string_lossy()))
                .filter(|p| p.ends_with(".json") && !p.contains("setting"))
                .filter(|p| !used.contains(p))
                .collect()
        })
        .unwrap_or_default();
    extra.sort();
    for request in extra {
        let mut args = base.args.clone();
        if let Some(i) = args
            .iter()
            .position(|a| REQUEST_FLAGS.contains(&a.as_str()))
        {
            args[i + 1] = request.clone();
        }
        cases.push(Case {
            name: format!("{request} (with the flags of {:?})", base.name),
            args,
        });
    }
    cases
}

/// What a run gave: success and the AdmissionResponse line, with the patch decoded.
fn outcome(output: &Output) -> Value {
    let out = stdout(output);
    let response = out
        .lines()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .map(decode_patch);
    json!({"success": output.status.success(), "response": response})
}

fn decode_patch(mut response: Value) -> Value {
    if let Some(b64) = response.get("patch").and_then(Value::as_str) {
        let bytes = base64_decode(b64);
        let patch: Value = serde_json::from_slice(&bytes).expect("the patch is base64 JSON");
        response["patch"] = patch;
    }
    response
}

fn base64_decode(text: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = alphabet.iter().position(|&a| a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn args_for(case: &Case, module: &Path) -> Vec<String> {
    case.args
        .iter()
        .map(|a| {
            if a == "annotated-policy.wasm" {
                module.display().to_string()
            } else {
                a.clone()
            }
        })
        .collect()
}

/// kwctl without the test harness's RUST_BACKTRACE (anyhow would add backtraces to messages).
fn kwctl_cmd(kwctl: &Path) -> Command {
    let mut cmd = Command::new(kwctl);
    cmd.env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    cmd
}

fn kwctl() -> Option<PathBuf> {
    std::env::var_os("HOIST_KWCTL")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn expected_path(name: &str) -> PathBuf {
    workspace().join(format!("testdata/policy/kwctl/{name}.json"))
}

fn compare(name: &str) {
    let Some(f) = fixture(name) else { return };
    let hoist = Hoist::new();
    let work = tempfile::tempdir().unwrap();
    let annotated = work.path().join("hoist-annotated.wasm");
    let output = hoist
        .cmd()
        .args(["policy", "annotate", "-m"])
        .arg(&f.metadata)
        .arg("-o")
        .arg(&annotated)
        .arg(&f.module)
        .output()
        .unwrap();
    assert!(output.status.success(), "annotate: {}", stderr(&output));
    let cases = cases(&f);
    assert!(
        !cases.is_empty(),
        "{name}: no kwctl run commands in e2e.bats"
    );

    // kwctl's answers: live, or recorded.
    let expected: Vec<Value> = match kwctl() {
        Some(kwctl) => {
            let kw_module = work.path().join("kwctl-annotated.wasm");
            let output = kwctl_cmd(&kwctl)
                .args(["annotate", "-m"])
                .arg(&f.metadata)
                .arg("-o")
                .arg(&kw_module)
                .arg(&f.module)
                .output()
                .expect("run kwctl");
            assert!(
                output.status.success(),
                "kwctl annotate: {}",
                stderr(&output)
            );
            let answers: Vec<Value> = cases
                .iter()
                .map(|case| {
                    let output = kwctl_cmd(&kwctl)
                        .current_dir(&f.src)
                        .arg("run")
                        .args(args_for(case, &kw_module))
                        .output()
                        .expect("run kwctl");
                    json!({"name": case.name, "args": case.args, "kwctl": outcome(&output)})
                })
                .collect();
            if std::env::var("HOIST_KWCTL_UPDATE").as_deref() == Ok("1") {
                let path = expected_path(name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let doc = json!({
                    "comment": "kwctl 1.31.0's answers (crates/hoist-cli/tests/policy_kwctl_e2e.rs; regenerate with HOIST_KWCTL=... HOIST_KWCTL_UPDATE=1)",
                    "policy": name,
                    "cases": answers,
                });
                std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
            }
            answers
        }
        None => {
            let path = expected_path(name);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}: kwctl's expected answers for {name} are missing; generate them with HOIST_KWCTL=/path/to/kwctl HOIST_KWCTL_UPDATE=1",
                    path.display()
                )
            });
            let doc: Value = serde_json::from_str(&text).unwrap();
            doc["cases"].as_array().cloned().unwrap_or_default()
        }
    };
    let recorded: Vec<Vec<String>> = expected
        .iter()
        .map(|c| serde_json::from_value(c["args"].clone()).unwrap())
        .collect();
    let ours: Vec<Vec<String>> = cases.iter().map(|c| c.args.clone()).collect();
    assert_eq!(
        ours, recorded,
        "{name}: the cases differ from the recorded ones (regenerate the expected file)"
    );

    let mut differences = Vec::new();
    for (case, want) in cases.iter().zip(&expected) {
        let output = hoist
            .cmd()
            .current_dir(&f.src)
            .args(["policy", "run"])
            .args(args_for(case, &annotated))
            .output()
            .unwrap();
        let got = outcome(&output);
        if got != want["kwctl"] {
            differences.push(format!(
                "{name}: {:?}: kwctl run {}\n  kwctl: {}\n  hoist: {}\n  hoist stderr: {}",
                case.name,
                case.args.join(" "),
                want["kwctl"],
                got,
                stderr(&output).trim()
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} responses differ from kwctl's:\n{}",
        differences.len(),
        cases.len(),
        differences.join("\n")
    );
    eprintln!("{name}: {} responses equal kwctl's", cases.len());
}

#[test]
fn bats_commands_are_read() {
    let cases = bats_cases(
        "@test \"a\" {\n  run kwctl run \\\n  -r t.json \\\n  annotated-policy.wasm\n  [ ok ]\n}\n@test \"b\" {\n  run kwctl run --settings-json '{\"x\": 1}' -r u.json annotated-policy.wasm\n}\n",
    );
    assert_eq!(
        cases,
        [
            Case {
                name: "a".into(),
                args: vec!["-r".into(), "t.json".into(), "annotated-policy.wasm".into()]
            },
            Case {
                name: "b".into(),
                args: vec![
                    "--settings-json".into(),
                    r#"{"x": 1}"#.into(),
                    "-r".into(),
                    "u.json".into(),
                    "annotated-policy.wasm".into()
                ]
            }
        ]
    );
    let patched = decode_patch(json!({"patch": "W10="}));
    assert_eq!(patched["patch"], json!([]));
}

macro_rules! against_kwctl {
    ($($test:ident => $name:literal),* $(,)?) => {$(
        #[test]
        fn $test() {
            compare($name);
        }
    )*};
}

against_kwctl! {
    kwctl_hoist_test_wapc => "hoist-test-wapc",
    kwctl_go_wasi_policy_template => "go-wasi-policy-template",
    kwctl_go_wasi_context_aware_test_policy => "go-wasi-context-aware-test-policy",
    kwctl_opa_policy_template => "opa-policy-template",
    kwctl_raw_validation_opa_policy => "raw-validation-opa-policy",
    kwctl_gatekeeper_policy_template => "gatekeeper-policy-template",
    kwctl_unique_ingress_policy => "unique-ingress-policy",
    kwctl_raw_validation_wasi_policy => "raw-validation-wasi-policy",
    kwctl_raw_mutation_wasi_policy => "raw-mutation-wasi-policy",
    kwctl_pod_privileged_policy => "pod-privileged-policy",
    kwctl_psa_label_enforcer_policy => "psa-label-enforcer-policy",
    kwctl_raw_validation_policy => "raw-validation-policy",
    kwctl_context_aware_demo => "context-aware-demo",
    kwctl_disallow_service_nodeport_policy => "disallow-service-nodeport-policy",
}
