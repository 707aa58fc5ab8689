//! `hoist render` end to end: the real binary running Go-built flights.

mod common;

use common::{Hoist, fails_with, flight, json_ok, stderr, stdout};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;

fn kinds(stages: &Value) -> Vec<Vec<String>> {
    stages
        .as_array()
        .expect("stages array")
        .iter()
        .map(|stage| {
            stage
                .as_array()
                .expect("stage array")
                .iter()
                .map(|o| o["kind"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .collect()
}

#[test]
fn echo_sees_exactly_yoke_args_env_and_stdin() {
    for hoist in Hoist::both_tiers() {
        let echo = flight("echo");
        let out = hoist.run(
            &[
                "render",
                echo.to_str().unwrap(),
                "--release",
                "rel",
                "--namespace",
                "team",
                "-o",
                "json",
                "--",
                "a",
                "b c",
            ],
            b"hello\nworld",
        );
        let stages = json_ok(&out);
        let cm = &stages[0][0];
        assert_eq!(cm["metadata"]["name"], "rel");
        assert_eq!(cm["metadata"]["namespace"], "team");
        let args: Vec<String> = serde_json::from_str(cm["data"]["args"].as_str().unwrap()).unwrap();
        assert_eq!(args, ["rel", "a", "b c"]);
        let env: BTreeSet<String> =
            serde_json::from_str(cm["data"]["env"].as_str().unwrap()).unwrap();
        let expected: BTreeSet<String> = [
            "YOKE_RELEASE=rel".to_string(),
            "YOKE_NAMESPACE=team".to_string(),
            "NAMESPACE=team".to_string(),
            "YOKE_VERSION=v0.20.27".to_string(),
            format!("HOIST_VERSION={}", env!("CARGO_PKG_VERSION")),
        ]
        .into();
        assert_eq!(
            env, expected,
            "the environment is exactly Yoke's plus HOIST_VERSION"
        );
        assert_eq!(cm["data"]["stdin"], "hello\nworld");
        if hoist.interpreter.is_some() {
            let mut cmd = hoist.cmd();
            cmd.args(["render", echo.to_str().unwrap(), "-o", "json", "-v"]);
            let out = common::run_with_stdin(&mut cmd, b"");
            json_ok(&out);
            let err = stderr(&out);
            assert!(err.contains("running on the interpreter"), "{err}");
            assert!(!err.contains("compiling after all"), "{err}");
            assert!(!err.contains("module ready"), "nothing compiled: {err}");
        }
    }
}

#[test]
fn release_defaults_to_the_file_stem_and_namespace_to_default() {
    let hoist = Hoist::new();
    let out = hoist.run(
        &["render", flight("echo").to_str().unwrap(), "-o", "json"],
        b"",
    );
    let stages = json_ok(&out);
    assert_eq!(stages[0][0]["metadata"]["name"], "echo");
    assert_eq!(stages[0][0]["metadata"]["namespace"], "default");
}

#[test]
fn namespace_defaults_to_the_kubeconfig_context() {
    let hoist = Hoist::new();
    let kubeconfig = hoist.cache.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters: []\nusers: []\ncontexts:\n- name: c\n  context: {cluster: x, user: y, namespace: from-context}\n",
    )
    .unwrap();
    let out = hoist
        .cmd()
        .env("KUBECONFIG", &kubeconfig)
        .args(["render", flight("echo").to_str().unwrap(), "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(json_ok(&out)[0][0]["metadata"]["namespace"], "from-context");
}

#[test]
fn stages_are_kept_and_namespaces_and_crds_form_prestages() {
    let hoist = Hoist::new();
    let out = hoist.run(
        &[
            "render",
            flight("echo").to_str().unwrap(),
            "-o",
            "json",
            "--",
            "--stages",
            "3",
        ],
        b"",
    );
    let stages = json_ok(&out);
    assert_eq!(
        kinds(&stages),
        [
            vec!["Namespace"],
            vec!["ConfigMap"],
            vec!["ConfigMap"],
            vec!["ConfigMap"]
        ]
    );

    let out = hoist.run(
        &[
            "render",
            flight("multistage").to_str().unwrap(),
            "-o",
            "json",
        ],
        b"",
    );
    let stages = json_ok(&out);
    let kinds = kinds(&stages);
    assert!(kinds.len() >= 3, "{kinds:?}");
    assert!(
        kinds[0]
            .iter()
            .all(|k| k == "Namespace" || k == "CustomResourceDefinition"),
        "first stage is the pre-stage: {kinds:?}"
    );
}

#[test]
fn yaml_output_from_flights_and_yaml_printing() {
    let hoist = Hoist::new();
    let out = hoist.run(
        &[
            "render",
            flight("echo").to_str().unwrap(),
            "-o",
            "json",
            "--",
            "--format",
            "yaml",
        ],
        b"x",
    );
    assert_eq!(json_ok(&out)[0][0]["kind"], "ConfigMap");

    let out = hoist.run(&["render", flight("yamlstream").to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("# stage 1 of"), "{text}");
    assert!(text.contains("\n---\n") || text.contains("---\n"), "{text}");
}

#[test]
fn without_a_module_stdin_is_the_output() {
    let hoist = Hoist::new();
    let out = hoist.run(
        &["render", "-o", "json"],
        b"apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
    );
    let stages = json_ok(&out);
    assert_eq!(kinds(&stages), [vec!["Namespace"], vec!["ConfigMap"]]);

    let out = hoist.run(
        &["render", "-o", "json"],
        br#"[[{"kind":"A"}],[{"kind":"B"}]]"#,
    );
    assert_eq!(kinds(&json_ok(&out)), [vec!["A"], vec!["B"]]);
}

#[test]
fn gzip_modules_are_decompressed() {
    let hoist = Hoist::new();
    let wasm = std::fs::read(flight("echo")).unwrap();
    let gz = hoist.cache.path().join("echo.wasm.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&wasm).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let out = hoist.run(&["render", gz.to_str().unwrap(), "-o", "json"], b"");
    assert_eq!(json_ok(&out)[0][0]["metadata"]["name"], "echo");
}

#[test]
fn checksums_explicit_and_inferred_are_enforced_before_running() {
    let hoist = Hoist::new();
    let echo = flight("echo");
    let wasm = std::fs::read(&echo).unwrap();
    let actual = {
        use sha2_digest::sha256_hex;
        sha256_hex(&wasm)
    };
    let wrong = "0".repeat(64);

    let out = hoist.run(
        &[
            "render",
            echo.to_str().unwrap(),
            "--checksum",
            &actual,
            "-o",
            "json",
        ],
        b"",
    );
    json_ok(&out);
    let out = hoist.run(
        &["render", echo.to_str().unwrap(), "--checksum", &wrong],
        b"",
    );
    fails_with(&out, &["checksum mismatch", &wrong, &actual, "--checksum"]);

    let named_wrong = hoist.cache.path().join(format!("echo_sha256_{wrong}.wasm"));
    std::fs::write(&named_wrong, &wasm).unwrap();
    let out = hoist.run(&["render", named_wrong.to_str().unwrap()], b"");
    fails_with(&out, &["checksum mismatch", "inferred"]);

    let named_right = hoist
        .cache
        .path()
        .join(format!("echo_sha256_{actual}.wasm"));
    std::fs::write(&named_right, &wasm).unwrap();
    json_ok(&hoist.run(
        &["render", named_right.to_str().unwrap(), "-o", "json"],
        b"",
    ));
}

/// Minimal SHA-256 through the `sha256sum` tool, so the test does not share code with hoist.
mod sha2_digest {
    pub fn sha256_hex(bytes: &[u8]) -> String {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sha256sum");
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8(out.stdout).unwrap()[..64].to_string()
    }
}

#[test]
fn bad_modules_fail_clearly() {
    for hoist in Hoist::both_tiers() {
        let dir = hoist.cache.path();

        let text = dir.join("notwasm.wasm");
        std::fs::write(&text, "apiVersion: v1\nkind: ConfigMap\n").unwrap();
        fails_with(
            &hoist.run(&["render", text.to_str().unwrap()], b""),
            &["notwasm.wasm", "not a WebAssembly module"],
        );

        let wasm = std::fs::read(flight("echo")).unwrap();
        let truncated = dir.join("truncated.wasm");
        std::fs::write(&truncated, &wasm[..wasm.len() / 2]).unwrap();
        fails_with(
            &hoist.run(&["render", truncated.to_str().unwrap()], b""),
            &["truncated.wasm", "not a valid WebAssembly module"],
        );

        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&wasm).unwrap();
        let gz = enc.finish().unwrap();
        let truncated_gz = dir.join("truncated.wasm.gz");
        std::fs::write(&truncated_gz, &gz[..gz.len() / 2]).unwrap();
        fails_with(
            &hoist.run(&["render", truncated_gz.to_str().unwrap()], b""),
            &["truncated.wasm.gz", "gzip"],
        );

        let missing = dir.join("missing.wasm");
        fails_with(
            &hoist.run(&["render", missing.to_str().unwrap()], b""),
            &["missing.wasm"],
        );

        let unknown = dir.join("imports_unknown.wasm");
        let wat =
            std::fs::read_to_string(common::workspace().join("testdata/wat/imports_unknown.wat"))
                .unwrap();
        std::fs::write(&unknown, wat::parse_str(wat).unwrap()).unwrap();
        fails_with(
            &hoist.run(&["render", unknown.to_str().unwrap()], b""),
            &[
                "imports_unknown.wasm",
                "imports env.mystery",
                "hoist does not provide",
            ],
        );
    }
}

#[test]
fn gzip_bombs_stop_at_the_cap() {
    let hoist = Hoist::new();
    let bomb = hoist.cache.path().join("bomb.wasm.gz");
    // 600 MiB of zeros compresses to ~600 KiB; the decompressed cap is 512 MiB.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..600 {
        enc.write_all(&chunk).unwrap();
    }
    std::fs::write(&bomb, enc.finish().unwrap()).unwrap();
    fails_with(
        &hoist.run(&["render", bomb.to_str().unwrap()], b""),
        &["bomb.wasm.gz", "larger than 512 MiB", "after decompression"],
    );
}

#[test]
fn limits_stop_runaway_flights_with_the_flag_to_change() {
    for hoist in Hoist::both_tiers() {
        fails_with(
            &hoist.run(
                &[
                    "render",
                    flight("spin").to_str().unwrap(),
                    "--timeout",
                    "1s",
                ],
                b"",
            ),
            &["spin.wasm", "time limit of 1s", "--timeout"],
        );
        fails_with(
            &hoist.run(
                &[
                    "render",
                    flight("memhog").to_str().unwrap(),
                    "--max-memory-mib",
                    "64",
                ],
                b"",
            ),
            &["memhog.wasm", "memory limit of 64 MiB", "--max-memory-mib"],
        );
        fails_with(
            &hoist.run(
                &[
                    "render",
                    flight("flood").to_str().unwrap(),
                    "--max-output-mib",
                    "2",
                ],
                b"",
            ),
            &["flood.wasm", "2 MiB on stdout", "--max-output-mib"],
        );
    }
}

#[test]
fn bad_output_and_failing_flights_fail_clearly() {
    for hoist in Hoist::both_tiers() {
        fails_with(
            &hoist.run(&["render", flight("badyaml").to_str().unwrap()], b""),
            &["invalid output from", "badyaml.wasm", "not valid YAML"],
        );
        let err = fails_with(
            &hoist.run(&["render", flight("nokind").to_str().unwrap()], b""),
            &["nokind.wasm", "no `kind`"],
        );
        assert_eq!(err.matches("no `kind`").count(), 1, "said once: {err}");
        fails_with(
            &hoist.run(&["render", flight("empty").to_str().unwrap()], b""),
            &["empty.wasm", "no resources"],
        );
        let err = fails_with(
            &hoist.run(&["render", flight("fail").to_str().unwrap()], b""),
            &["fail.wasm exited with code 3"],
        );
        // The flight's stderr is streamed and its tail repeated in the error.
        assert!(err.lines().count() > 1, "{err}");
    }
}

#[test]
fn unreachable_http_sources_fail_clearly() {
    let hoist = Hoist::new();
    fails_with(
        &hoist.run(&["render", "http://127.0.0.1:9/flight.wasm"], b""),
        &["http://127.0.0.1:9/flight.wasm", "unreachable"],
    );
}

#[test]
fn host_lookups_answer_feature_not_granted_without_cluster_access() {
    for hoist in Hoist::both_tiers() {
        let out = hoist.run(
            &["render", flight("lookup").to_str().unwrap(), "-o", "json"],
            b"",
        );
        let stages = json_ok(&out);
        let data = &stages[0][0]["data"];
        assert_eq!(data["state"], "1", "{data}");
        assert!(
            data["result"].as_str().unwrap().contains("not granted"),
            "{data}"
        );
    }
}

#[test]
fn the_cache_is_used_recovered_and_safe_under_concurrency() {
    let hoist = Hoist::new();
    let echo = flight("echo");
    let render = |extra: &[&str]| {
        let mut args = vec!["render", echo.to_str().unwrap(), "-o", "json", "-v"];
        args.extend_from_slice(extra);
        hoist.run(&args, b"")
    };
    let first = render(&[]);
    json_ok(&first);
    assert!(stderr(&first).contains("cache=miss"), "{}", stderr(&first));
    let second = render(&[]);
    json_ok(&second);
    assert!(stderr(&second).contains("cache=hit"), "{}", stderr(&second));

    // Corrupt every entry: recovered with a warning, then a hit again.
    for entry in std::fs::read_dir(hoist.cache.path().join("modules")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cwasm") {
            std::fs::write(&path, b"not compiled code").unwrap();
        }
    }
    let recovered = render(&[]);
    json_ok(&recovered);
    assert!(
        stderr(&recovered).contains("cache=recovered"),
        "{}",
        stderr(&recovered)
    );
    assert!(
        stderr(&recovered).contains("recompiling"),
        "{}",
        stderr(&recovered)
    );
    assert!(stderr(&render(&[])).contains("cache=hit"));

    // --no-cache neither reads nor writes: with no compiled code ever to reuse, the flight
    // runs on the interpreter; forced to compile, it compiles without the cache.
    let uncached = stderr(&render(&["--no-cache"]));
    assert!(
        uncached.contains("running on the interpreter"),
        "{uncached}"
    );
    assert!(!uncached.contains("cache=hit"), "{uncached}");
    let mut cmd = hoist.cmd();
    cmd.env("HOIST_INTERPRETER", "never").args([
        "render",
        echo.to_str().unwrap(),
        "-o",
        "json",
        "-v",
        "--no-cache",
    ]);
    let compiled = common::run_with_stdin(&mut cmd, b"");
    json_ok(&compiled);
    assert!(
        stderr(&compiled).contains("cache=disabled"),
        "{}",
        stderr(&compiled)
    );

    // Two processes compiling the same new module at once both succeed.
    let fresh = Hoist::new();
    let spawn = || {
        fresh
            .cmd()
            .args(["render", echo.to_str().unwrap(), "-o", "json"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children: Vec<_> = (0..3).map(|_| spawn()).collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        json_ok(&out);
    }
    let listing = fresh
        .cmd()
        .args(["cache", "ls", "-o", "json"])
        .output()
        .unwrap();
    let entries = json_ok(&listing);
    assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");
    // The same listing as YAML.
    let listing = fresh
        .cmd()
        .args(["cache", "ls", "-o", "yaml"])
        .output()
        .unwrap();
    assert!(listing.status.success(), "{}", stderr(&listing));
    let as_yaml: Value = serde_saphyr::from_str(&stdout(&listing)).unwrap();
    assert_eq!(as_yaml, entries);

    let cleaned = fresh.cmd().args(["cache", "clean"]).output().unwrap();
    assert!(cleaned.status.success());
    assert!(
        stderr(&cleaned).contains("removed 1"),
        "{}",
        stderr(&cleaned)
    );
}

#[test]
fn unchanged_local_modules_are_not_reread_but_checks_still_apply() {
    let hoist = Hoist::new();
    let module = hoist.cache.path().join("echo.wasm");
    std::fs::copy(flight("echo"), &module).unwrap();
    // Files changed in the last few seconds are not remembered (timestamps can be coarse).
    std::thread::sleep(std::time::Duration::from_secs(5));
    let render = |extra: &[&str]| {
        let mut args = vec!["render", module.to_str().unwrap(), "-o", "json", "-v"];
        args.extend_from_slice(extra);
        hoist.run(&args, b"")
    };
    let first = render(&[]);
    json_ok(&first);
    assert!(
        !stderr(&first).contains("digest memo"),
        "{}",
        stderr(&first)
    );
    let second = render(&[]);
    json_ok(&second);
    assert!(
        stderr(&second).contains("digest memo"),
        "{}",
        stderr(&second)
    );
    assert!(stderr(&second).contains("cache=hit"), "{}", stderr(&second));

    // A wrong --checksum is still refused on the warm path.
    let wrong = "1".repeat(64);
    fails_with(
        &render(&["--checksum", &wrong]),
        &["checksum mismatch", &wrong],
    );

    // Replace the module with another flight: the memo no longer applies and the new
    // module runs.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::copy(flight("multistage"), &module).unwrap();
    let third = render(&[]);
    let stages = json_ok(&third);
    assert!(
        !stderr(&third).contains("digest memo"),
        "{}",
        stderr(&third)
    );
    assert!(stages.as_array().unwrap().len() >= 3, "{stages}");
}

#[test]
fn tiered_compilation_upgrades_to_optimised_code_in_the_background() {
    let hoist = Hoist::new();
    let echo = flight("echo");
    let render = || {
        let mut cmd = hoist.cmd();
        cmd.env("HOIST_BACKGROUND_COMPILE", "1").args([
            "render",
            echo.to_str().unwrap(),
            "-o",
            "json",
            "-v",
        ]);
        common::run_with_stdin(&mut cmd, b"")
    };
    // Cold: nothing compiled is cached, so the interpreter runs it (tier 0) while optimised
    // code is compiled in the background; no baseline compile in the foreground.
    let first = render();
    let cold = json_ok(&first);
    let err = stderr(&first);
    assert!(err.contains("running on the interpreter"), "{err}");
    assert!(!err.contains("compiler=winch"), "{err}");
    assert!(err.contains("in the background"), "{err}");

    // The background compile stores Cranelift code; wait for it (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let listing = hoist
            .cmd()
            .args(["cache", "ls", "-o", "json"])
            .output()
            .unwrap();
        let entries = json_ok(&listing);
        if entries
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["compiler"] == "cranelift")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no optimised code after 180 s: {entries}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let next = render();
    assert_eq!(json_ok(&next), cold, "both tiers render the same");
    let err = stderr(&next);
    assert!(
        err.contains("compiler=cranelift") && err.contains("cache=hit"),
        "{err}"
    );
    assert!(!err.contains("interpreter"), "{err}");
    assert!(
        !err.contains("in the background"),
        "no second upgrade: {err}"
    );

    // An explicit compiler disables tiering.
    let mut cmd = hoist.cmd();
    cmd.env("HOIST_COMPILER", "winch")
        .args(["render", echo.to_str().unwrap(), "-o", "json", "-v"]);
    let fixed = common::run_with_stdin(&mut cmd, b"");
    json_ok(&fixed);
    assert!(
        stderr(&fixed).contains("compiler=winch"),
        "{}",
        stderr(&fixed)
    );
}
