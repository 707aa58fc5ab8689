//! End-to-end tests of `hoist policy` on REAL Kubewarden policies (built from
//! ../shared/peers by scripts/test.d/policy.sh): every policy's upstream `e2e.bats` is
//! interpreted here and run against `hoist policy run` instead of `kwctl run`, after the module
//! has been annotated with `hoist policy annotate`.

mod common;

use common::{Hoist, required_env, stderr, stdout};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The policies the fixture hook always builds (CI fails without them); the others are tested
/// when present.
const CI_SET: &[&str] = &[
    "hoist-test-wapc",
    "go-wasi-policy-template",
    "go-wasi-context-aware-test-policy",
    "opa-policy-template",
    "raw-validation-opa-policy",
    "gatekeeper-policy-template",
    "unique-ingress-policy",
];

/// Where each policy's sources (test_data/, e2e.bats) sit in the archive.
fn source_dir(name: &str) -> &'static str {
    match name {
        "hoist-test-wapc" => "hoist-test-wapc",
        "go-wasi-policy-template" => "go-wasi-policy-template",
        "opa-policy-template" => "opa-policy-template",
        "gatekeeper-policy-template" => "gatekeeper-policy-template",
        "raw-validation-wasi-policy" => "policies/raw-validation-wasi-policy",
        "raw-mutation-wasi-policy" => "policies/raw-mutation-wasi-policy",
        "go-wasi-context-aware-test-policy" => "policies/go-wasi-context-aware-test-policy",
        "pod-privileged-policy" => "policies/pod-privileged-policy",
        "psa-label-enforcer-policy" => "policies/psa-label-enforcer-policy",
        "raw-validation-policy" => "policies/raw-validation-policy",
        "context-aware-demo" => "policies/context-aware-demo",
        "sleeping-policy" => "policies/sleeping-policy",
        "disallow-service-nodeport-policy" => "policies/disallow-service-nodeport-policy",
        "raw-validation-opa-policy" => "policies/raw-validation-opa-policy",
        "unique-ingress-policy" => "policies/unique-ingress-policy",
        other => panic!("unknown policy {other}"),
    }
}

struct Fixture {
    module: PathBuf,
    metadata: PathBuf,
    src: PathBuf,
}

/// The built module, its metadata and its sources; `None` (skip) when not built, unless it is
/// in the CI set and `CI=true`.
fn fixture(name: &str) -> Option<Fixture> {
    let how = "run scripts/test (its hook scripts/test.d/policy.sh builds the Kubewarden policies)";
    let dir = required_env("HOIST_POLICIES_DIR", how)?;
    let src = required_env("HOIST_POLICIES_SRC_DIR", how)?;
    let module = dir.join(format!("{name}.wasm"));
    if !module.exists() {
        if CI_SET.contains(&name) && std::env::var("CI").as_deref() == Ok("true") {
            panic!("{} is missing: {how}", module.display());
        }
        eprintln!(
            "skipping {name}: {} is not built ({how}, HOIST_POLICIES_ALL=1 for every policy)",
            module.display()
        );
        return None;
    }
    Some(Fixture {
        metadata: dir.join(format!("{name}.metadata.yml")),
        module,
        src: src.join(source_dir(name)),
    })
}

/// `hoist policy annotate` into `dir/annotated-policy.wasm`.
fn annotate(hoist: &Hoist, f: &Fixture, dir: &Path) -> PathBuf {
    let out = dir.join("annotated-policy.wasm");
    let output = hoist
        .cmd()
        .args(["policy", "annotate", "-m"])
        .arg(&f.metadata)
        .arg("-o")
        .arg(&out)
        .arg(&f.module)
        .output()
        .expect("run hoist");
    assert!(
        output.status.success(),
        "annotate failed: {}",
        stderr(&output)
    );
    out
}

// ---- a small interpreter for upstream's e2e.bats -----------------------------------------

/// Splits a shell command line into words (single and double quotes, backslash escapes).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
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
                        '\\' => {
                            if let Some(n) = chars.next() {
                                word.push(n)
                            }
                        }
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    word.push(n);
                }
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

/// POSIX basic regular expressions as `expr STRING : RE` uses them (anchored at the start;
/// `.`, `*`, `[...]` not needed by these files, `\x` literal; `(`, `)`, `{`, `+`, `?`, `|`
/// literal). Returns the number of characters matched, as expr prints.
fn expr_match(text: &str, re: &str) -> usize {
    #[derive(Clone, Debug)]
    enum Atom {
        Any,
        Lit(char),
    }
    let mut atoms: Vec<(Atom, bool)> = Vec::new();
    let mut chars = re.chars().peekable();
    while let Some(c) = chars.next() {
        let atom = match c {
            '.' => Atom::Any,
            '\\' => Atom::Lit(chars.next().unwrap_or('\\')),
            '*' if atoms.is_empty() => Atom::Lit('*'),
            '*' => {
                if let Some(last) = atoms.last_mut() {
                    last.1 = true;
                }
                continue;
            }
            c => Atom::Lit(c),
        };
        atoms.push((atom, false));
    }
    let text: Vec<char> = text.chars().collect();
    // Longest match from position 0 (backtracking; the patterns are tiny).
    fn longest(atoms: &[(Atom, bool)], text: &[char], at: usize) -> Option<usize> {
        let Some(((atom, star), rest)) = atoms.split_first() else {
            return Some(at);
        };
        let matches = |i: usize| {
            text.get(i).is_some_and(|&c| match atom {
                Atom::Any => true,
                Atom::Lit(l) => *l == c,
            })
        };
        if *star {
            let mut n = 0;
            while matches(at + n) {
                n += 1;
            }
            (0..=n).rev().find_map(|k| longest(rest, text, at + k))
        } else if matches(at) {
            longest(rest, text, at + 1)
        } else {
            None
        }
    }
    longest(&atoms, &text, 0).unwrap_or(0)
}

fn base64_decode(text: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
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

#[derive(Debug)]
struct BatsTest {
    name: String,
    run: Vec<String>,
    checks: Vec<String>,
}

/// The `@test` blocks of a bats file: the `run kwctl ...` command and the lines after it.
fn parse_bats(text: &str) -> Vec<BatsTest> {
    let mut tests = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("@test ") else {
            continue;
        };
        let name = shell_words(rest.trim_end_matches('{')).join(" ");
        let mut run = Vec::new();
        let mut checks = Vec::new();
        while let Some(line) = lines.next() {
            let trimmed = line.trim();
            if trimmed == "}" {
                break;
            }
            if trimmed.starts_with('#') || trimmed.is_empty() {
                continue;
            }
            if let Some(command) = trimmed.strip_prefix("run ") {
                let mut command = command.to_string();
                while command.ends_with('\\') {
                    command.pop();
                    command.push(' ');
                    command.push_str(lines.next().unwrap_or_default().trim());
                }
                run = shell_words(&command);
            } else {
                checks.push(trimmed.to_string());
            }
        }
        tests.push(BatsTest { name, run, checks });
    }
    tests
}

/// Runs every test of the policy's e2e.bats with `hoist policy run`; returns how many ran.
fn run_bats(name: &str) -> usize {
    let Some(f) = fixture(name) else { return 0 };
    let hoist = Hoist::new();
    let work = tempfile::tempdir().unwrap();
    let annotated = annotate(&hoist, &f, work.path());
    let bats = std::fs::read_to_string(f.src.join("e2e.bats")).expect("e2e.bats");
    let tests = parse_bats(&bats);
    let mut ran = 0;
    for test in tests {
        if test.run.is_empty() {
            // Placeholder tests (sleeping-policy's "dummy test").
            continue;
        }
        assert_eq!(
            &test.run[..2],
            ["kwctl", "run"],
            "{name}: {}: unexpected command",
            test.name
        );
        let args: Vec<String> = test.run[2..]
            .iter()
            .map(|a| {
                if a == "annotated-policy.wasm" {
                    annotated.display().to_string()
                } else {
                    a.clone()
                }
            })
            .collect();
        let output = hoist
            .cmd()
            .current_dir(&f.src)
            .args(["policy", "run"])
            .args(&args)
            .output()
            .expect("run hoist");
        let status = output.status.code().unwrap_or(-1);
        let out = stdout(&output);
        // bats' `run` merges stdout and stderr.
        let merged = format!("{}{}", out, stderr(&output));
        let context = format!(
            "{name}: test {:?}: hoist policy run {}\nstatus {status}\nstdout: {out}\nstderr: {}",
            test.name,
            args.join(" "),
            stderr(&output)
        );
        let mut patch = None;
        for check in &test.checks {
            if check.starts_with("echo ") {
                continue;
            }
            if check.starts_with("patch=$(") {
                let line = out
                    .lines()
                    .find(|l| l.starts_with("{\"uid\""))
                    .unwrap_or_else(|| panic!("no response line\n{context}"));
                let v: Value = serde_json::from_str(line).unwrap();
                let b64 = v["patch"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no patch\n{context}"));
                patch = Some(String::from_utf8(base64_decode(b64)).unwrap());
                continue;
            }
            let words = shell_words(check.trim_start_matches('[').trim_end_matches(']'));
            match words.as_slice() {
                [var, op, n] if var == "$status" => {
                    let n: i32 = n.parse().unwrap();
                    let ok = match op.as_str() {
                        "-eq" => status == n,
                        "-ne" => status != n,
                        _ => panic!("{name}: unsupported check {check}"),
                    };
                    assert!(ok, "check failed: {check}\n{context}");
                }
                [var, op, expected] if var == "$patch" && op == "=" => {
                    let got: Value =
                        serde_json::from_str(patch.as_deref().unwrap_or("null")).unwrap();
                    let want: Value = serde_json::from_str(expected).unwrap();
                    assert_eq!(got, want, "check failed: {check}\n{context}");
                }
                _ => {
                    // [ $(expr "$output" : 'RE') -ne|-eq N ]
                    let inner = check
                        .split_once("$(expr \"$output\" : ")
                        .and_then(|(_, rest)| rest.rsplit_once(')'))
                        .unwrap_or_else(|| panic!("{name}: unsupported check {check}"));
                    let re = shell_words(inner.0).pop().unwrap();
                    let tail = shell_words(inner.1.trim().trim_end_matches(']'));
                    let (op, n) = (&tail[0], tail[1].parse::<usize>().unwrap());
                    let got = expr_match(&merged, &re);
                    let ok = match op.as_str() {
                        "-eq" => got == n,
                        "-ne" => got != n,
                        _ => panic!("{name}: unsupported check {check}"),
                    };
                    assert!(
                        ok,
                        "check failed: {check} (expr matched {got} chars)\n{context}"
                    );
                }
            }
        }
        ran += 1;
    }
    ran
}

#[test]
fn bats_interpreter_understands_upstream_checks() {
    assert_eq!(
        shell_words(r#"kwctl run -r x.json --settings-json '{"a": 1}' "b c""#),
        [
            "kwctl",
            "run",
            "-r",
            "x.json",
            "--settings-json",
            r#"{"a": 1}"#,
            "b c"
        ]
    );
    let out = r#"{"uid":"1","allowed":true,"patchType":"JSONPatch"}"#;
    assert!(expr_match(out, r#".*"allowed":true.*"#) > 0);
    assert_eq!(expr_match(out, r#".*"allowed":false.*"#), 0);
    assert!(expr_match(out, ".*allowed.*true") > 0);
    assert!(expr_match(r#"x "warnings":["w"] y"#, r#".*"warnings":\["w"\].*"#) > 0);
    assert!(
        expr_match(
            "Privileged container is not allowe",
            ".*Privileged container is not allowed*"
        ) > 0
    );
    assert_eq!(base64_decode("aGk="), b"hi");
    let tests = parse_bats(
        "@test \"a b\" {\n  run kwctl run \\\n    -r f.json \\\n    p.wasm\n  [ \"$status\" -eq 0 ]\n}\n",
    );
    assert_eq!(tests[0].name, "a b");
    assert_eq!(tests[0].run, ["kwctl", "run", "-r", "f.json", "p.wasm"]);
    assert_eq!(tests[0].checks, [r#"[ "$status" -eq 0 ]"#]);
}

macro_rules! bats {
    ($($test:ident => $name:literal),* $(,)?) => {$(
        #[test]
        fn $test() {
            let ran = run_bats($name);
            eprintln!("{}: {ran} e2e.bats tests passed", $name);
        }
    )*};
}

bats! {
    bats_hoist_test_wapc => "hoist-test-wapc",
    bats_go_wasi_policy_template => "go-wasi-policy-template",
    bats_go_wasi_context_aware_test_policy => "go-wasi-context-aware-test-policy",
    bats_opa_policy_template => "opa-policy-template",
    bats_raw_validation_opa_policy => "raw-validation-opa-policy",
    bats_gatekeeper_policy_template => "gatekeeper-policy-template",
    bats_unique_ingress_policy => "unique-ingress-policy",
    bats_raw_validation_wasi_policy => "raw-validation-wasi-policy",
    bats_raw_mutation_wasi_policy => "raw-mutation-wasi-policy",
    bats_pod_privileged_policy => "pod-privileged-policy",
    bats_psa_label_enforcer_policy => "psa-label-enforcer-policy",
    bats_raw_validation_policy => "raw-validation-policy",
    bats_context_aware_demo => "context-aware-demo",
    bats_disallow_service_nodeport_policy => "disallow-service-nodeport-policy",
}

fn run_json(hoist: &Hoist, dir: &Path, args: &[&str]) -> (std::process::Output, Option<Value>) {
    let output = hoist
        .cmd()
        .current_dir(dir)
        .args(["policy", "run"])
        .args(args)
        .output()
        .expect("run hoist");
    let line = stdout(&output);
    let value = serde_json::from_str(line.trim()).ok();
    (output, value)
}

/// The exact line kwctl prints, for a waPC rejection with a code and warnings, and for a
/// mutation (the patch against the request's object).
#[test]
fn wapc_response_lines_match_kwctl_exactly() {
    let Some(f) = fixture("hoist-test-wapc") else {
        return;
    };
    let hoist = Hoist::new();
    let work = tempfile::tempdir().unwrap();
    let module = annotate(&hoist, &f, work.path());
    let m = module.to_str().unwrap();
    let (out, _) = run_json(
        &hoist,
        &f.src,
        &[
            "-r",
            "test_data/pod_creation.json",
            "--settings-path",
            "test_data/settings_deny_nginx.json",
            m,
        ],
    );
    let uid = serde_json::from_str::<Value>(
        &std::fs::read_to_string(f.src.join("test_data/pod_creation.json")).unwrap(),
    )
    .unwrap()
    .pointer("/request/uid")
    .or(None)
    .cloned();
    let line = stdout(&out);
    let request: Value = serde_json::from_str(
        &std::fs::read_to_string(f.src.join("test_data/pod_creation.json")).unwrap(),
    )
    .unwrap();
    let uid = uid
        .or_else(|| request.get("uid").cloned())
        .unwrap_or(json!(""));
    assert_eq!(
        line.trim(),
        format!(
            r#"{{"uid":{uid},"allowed":false,"status":{{"message":"name 'nginx' is denied","code":403}},"auditAnnotations":null,"warnings":["hoist test warning"]}}"#
        ),
        "stderr: {}",
        stderr(&out)
    );
    // The same request as a full AdmissionReview on stdin gives the same answer.
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                        "request": request.get("request").cloned().unwrap_or(request.clone())});
    let mut cmd = hoist.cmd();
    cmd.current_dir(&f.src).args([
        "policy",
        "run",
        "-r",
        "-",
        "--settings-json",
        r#"{"denied_names": ["nginx"]}"#,
        m,
    ]);
    let out = common::run_with_stdin(&mut cmd, review.to_string().as_bytes());
    assert_eq!(stdout(&out).trim(), line.trim(), "stderr: {}", stderr(&out));
}

/// A policy the host cannot start (not Wasm), a Rego module without `-e`, bad settings JSON:
/// clear errors naming the input.
#[test]
fn bad_inputs_are_named() {
    let Some(f) = fixture("opa-policy-template") else {
        return;
    };
    let hoist = Hoist::new();
    let work = tempfile::tempdir().unwrap();
    let request = f.src.join("test_data/service_nodeport.json");
    let r = request.to_str().unwrap();
    // Unannotated Rego without -e.
    let (out, _) = run_json(&hoist, &f.src, &["-r", r, f.module.to_str().unwrap()]);
    common::fails_with(&out, &["Rego", "-e opa or -e gatekeeper"]);
    // Not a module.
    let junk = work.path().join("junk.wasm");
    std::fs::write(&junk, b"apiVersion: v1\n").unwrap();
    let (out, _) = run_json(&hoist, &f.src, &["-r", r, junk.to_str().unwrap()]);
    common::fails_with(&out, &["junk.wasm", "WebAssembly"]);
    // Settings that are not an object.
    let (out, _) = run_json(
        &hoist,
        &f.src,
        &[
            "-e",
            "opa",
            "--settings-json",
            "[1]",
            "-r",
            r,
            f.module.to_str().unwrap(),
        ],
    );
    common::fails_with(&out, &["must be an object"]);
    // A request that is not JSON.
    let bad = work.path().join("bad.json");
    std::fs::write(&bad, b"{nope").unwrap();
    let (out, _) = run_json(
        &hoist,
        &f.src,
        &[
            "-e",
            "opa",
            "-r",
            bad.to_str().unwrap(),
            f.module.to_str().unwrap(),
        ],
    );
    common::fails_with(&out, &["bad.json", "not valid JSON"]);
    // The wrong mode for the module.
    let (out, _) = run_json(
        &hoist,
        &f.src,
        &["-e", "wasi", "-r", r, f.module.to_str().unwrap()],
    );
    common::fails_with(&out, &["Rego"]);
}

/// A context-aware policy that was not granted access gets an error response (never a crash);
/// a replay that runs out of answers says so.
#[test]
fn capabilities_not_granted_are_error_responses() {
    let Some(f) = fixture("go-wasi-context-aware-test-policy") else {
        return;
    };
    let hoist = Hoist::new();
    let work = tempfile::tempdir().unwrap();
    let module = annotate(&hoist, &f, work.path());
    let m = module.to_str().unwrap();
    let (out, v) = run_json(&hoist, &f.src, &["-r", "test_data/app_deployment.json", m]);
    let v = v.unwrap_or_else(|| panic!("no response: {}", stderr(&out)));
    assert!(out.status.success());
    assert_eq!(v["allowed"], json!(false), "{v}");
    // With the grant but an empty session: the replay error reaches the policy.
    let empty = work.path().join("empty.yml");
    std::fs::write(&empty, "[]\n").unwrap();
    let (out, v) = run_json(
        &hoist,
        &f.src,
        &[
            "-r",
            "test_data/app_deployment.json",
            "--allow-context-aware",
            "--replay-host-capabilities-interactions",
            empty.to_str().unwrap(),
            m,
        ],
    );
    let v = v.unwrap_or_else(|| panic!("no response: {}", stderr(&out)));
    assert_eq!(v["allowed"], json!(false), "{v}");
}

/// Record against the real control plane, then replay the recording: same answer, kwctl's
/// session format, and the replayed run needs no cluster.
#[test]
fn record_against_the_cluster_then_replay() {
    let Some(f) = fixture("go-wasi-context-aware-test-policy") else {
        return;
    };
    let Some(kubeconfig) = required_env(
        "HOIST_TEST_KUBECONFIG",
        "scripts/test starts a control plane",
    ) else {
        return;
    };
    let hoist = Hoist::new();
    let work = tempfile::tempdir().unwrap();
    let module = annotate(&hoist, &f, work.path());
    let m = module.to_str().unwrap();
    // Objects the policy looks up: namespace customer-1 (label customer-id=1), a Service
    // api-auth-service in it. Created with hoist takeoff from stdin (a release named
    // policy-fixtures).
    let objects = r#"[
 {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"customer-1","labels":{"customer-id":"1"}}},
 {"apiVersion":"v1","kind":"Service","metadata":{"name":"api-auth-service","namespace":"customer-1","labels":{"app.kubernetes.io/part-of":"api"}},
  "spec":{"ports":[{"port":8080,"protocol":"TCP","targetPort":8080}],"selector":{"app.kubernetes.io/name":"api-auth-backend","app.kubernetes.io/part-of":"api"}}}
]"#;
    let mut cmd = hoist.cmd();
    cmd.env("KUBECONFIG", &kubeconfig).args([
        "takeoff",
        "policy-fixtures",
        "--namespace",
        "customer-1",
    ]);
    let out = common::run_with_stdin(&mut cmd, objects.as_bytes());
    assert!(
        out.status.success(),
        "takeoff of the fixtures failed: {}",
        stderr(&out)
    );

    let session = work.path().join("session.yml");
    let output = hoist
        .cmd()
        .current_dir(&f.src)
        .env("KUBECONFIG", &kubeconfig)
        .args([
            "policy",
            "run",
            "-r",
            "test_data/app_deployment.json",
            "--allow-context-aware",
            "--record-host-capabilities-interactions",
        ])
        .arg(&session)
        .arg(m)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let recorded: Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    let text = std::fs::read_to_string(&session).unwrap();
    assert!(text.contains("!KubernetesListResourceAll"), "{text}");
    assert!(text.contains("label_selector: customer-id=1"), "{text}");
    assert!(text.contains("!KubernetesListResourceNamespace"), "{text}");

    // Replay without any cluster.
    let output = hoist
        .cmd()
        .current_dir(&f.src)
        .args([
            "policy",
            "run",
            "-r",
            "test_data/app_deployment.json",
            "--allow-context-aware",
            "--replay-host-capabilities-interactions",
        ])
        .arg(&session)
        .arg(m)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let replayed: Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(recorded, replayed);
    // The policy found the namespace and no database Deployment in it: its own answer.
    assert_eq!(recorded["allowed"], json!(false), "{recorded}");
    assert_eq!(
        recorded["status"]["message"],
        json!("No database component found"),
        "{recorded}"
    );
}

/// `hoist policy inspect` shows the mode, metadata and usage; `bench -o json` gives figures.
#[test]
fn inspect_and_bench() {
    let Some(f) = fixture("hoist-test-wapc") else {
        return;
    };
    let hoist = Hoist::new();
    let work = tempfile::tempdir().unwrap();
    let module = work.path().join("annotated.wasm");
    let readme = work.path().join("README.md");
    std::fs::write(&readme, "# Usage\nDeny names.\n").unwrap();
    let out = hoist
        .cmd()
        .args(["policy", "annotate", "-m"])
        .arg(&f.metadata)
        .arg("-u")
        .arg(&readme)
        .arg("-o")
        .arg(&module)
        .arg(&f.module)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = hoist
        .cmd()
        .args(["policy", "inspect"])
        .arg(&module)
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("kubewarden-wapc (from the metadata)"),
        "{text}"
    );
    assert!(text.contains("protocol version:           v1"), "{text}");
    assert!(text.contains("Deny names."), "{text}");
    let out = hoist
        .cmd()
        .args(["policy", "inspect", "-o", "json"])
        .arg(&module)
        .output()
        .unwrap();
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(meta["protocolVersion"], "v1");
    assert_eq!(meta["mutating"], true);
    // Unannotated: detected from the exports.
    let out = hoist
        .cmd()
        .args(["policy", "inspect"])
        .arg(&f.module)
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("detected from the exports"),
        "{}",
        stdout(&out)
    );

    let out = hoist
        .cmd()
        .current_dir(&f.src)
        .args([
            "policy",
            "bench",
            "--warm-up-time",
            "0.1",
            "--measurement-time",
            "0.3",
            "--num-samples",
            "5",
            "-o",
            "json",
            "-r",
            "test_data/pod_creation.json",
        ])
        .arg(&module)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let figures: Value = serde_json::from_slice(&out.stdout).unwrap();
    for label in ["validate", "validate_settings"] {
        let f = &figures[label];
        assert!(f["mean_ns"].as_f64().unwrap() > 0.0, "{figures}");
        assert!(
            f["evaluations_per_second"].as_f64().unwrap() > 0.0,
            "{figures}"
        );
        assert!(f["iterations"].as_u64().unwrap() >= 5, "{figures}");
        assert!(
            f["p99_ns"].as_f64().unwrap() >= f["median_ns"].as_f64().unwrap() * 0.0,
            "{figures}"
        );
    }
}
