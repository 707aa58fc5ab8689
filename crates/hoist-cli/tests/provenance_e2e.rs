//! Provenance end to end: digest pinning across revisions (real control plane), allow lists
//! and `--verify` on render, with modules served by a real HTTP server on 127.0.0.1.

mod common;

use common::{Hoist, ModuleServer, fails_with, flight, json_ok, stderr};
use std::io::Write;
use std::path::PathBuf;

fn kubeconfig() -> Option<PathBuf> {
    common::required_env(
        "HOIST_TEST_KUBECONFIG",
        "run scripts/control-plane start (scripts/test does)",
    )
}

#[test]
fn takeoff_refuses_a_changed_module_at_a_pinned_url() {
    let Some(kubeconfig) = kubeconfig() else {
        return;
    };
    let hoist = Hoist::new();
    let original = std::fs::read(flight("echo")).unwrap();
    let server = ModuleServer::start(original.clone());
    let release = format!("pin-{}", std::process::id());
    let namespace = "default";
    let takeoff = |extra: &[&str]| {
        let mut cmd = hoist.cmd();
        cmd.env("KUBECONFIG", &kubeconfig)
            .args(["takeoff", &release, &server.url, "--namespace", namespace])
            .args(extra);
        common::run_with_stdin(&mut cmd, b"")
    };

    let first = takeoff(&[]);
    assert!(first.status.success(), "first takeoff: {}", stderr(&first));

    // Same URL, other content (the same flight plus a custom section): refused, with both
    // digests, nothing applied.
    let mut other = original.clone();
    other.extend_from_slice(&[0x00, 0x07, 0x01, b'x', b'r', b'e', b'p', b'i', b'n']);
    server.set(other.clone());
    let refused = takeoff(&[]);
    let err = fails_with(&refused, &["digest pinning", &server.url, "--allow-repin"]);
    let sha = |b: &[u8]| hoist_provenance_sha256(b);
    assert!(err.contains(&sha(&original)), "old digest named: {err}");
    assert!(err.contains(&sha(&other)), "new digest named: {err}");

    // Deliberately accepted with --allow-repin.
    let accepted = takeoff(&["--allow-repin"]);
    assert!(accepted.status.success(), "repin: {}", stderr(&accepted));

    let mut cmd = hoist.cmd();
    cmd.env("KUBECONFIG", &kubeconfig)
        .args(["mayday", &release, "--namespace", namespace]);
    let _ = common::run_with_stdin(&mut cmd, b"");
}

fn hoist_provenance_sha256(bytes: &[u8]) -> String {
    use std::process::{Command, Stdio};
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

#[test]
fn allow_lists_match_whole_urls_and_local_files() {
    let hoist = Hoist::new();
    let server = ModuleServer::start(std::fs::read(flight("echo")).unwrap());
    let base = server.url.rsplit_once("/flights/").unwrap().0.to_string();

    let allowed = format!("{base}/flights/app/*/app.wasm");
    json_ok(&hoist.run(
        &["render", &server.url, "--allow", &allowed, "-o", "json"],
        b"",
    ));

    // `*` does not cross `/`.
    let too_narrow = format!("{base}/flights/*/app.wasm");
    fails_with(
        &hoist.run(&["render", &server.url, "--allow", &too_narrow], b""),
        &["is not allowed", &server.url],
    );
    // Traversal is refused before matching.
    let sneaky = format!("{base}/flights/app/v1.2.3/../../../evil/app.wasm");
    fails_with(
        &hoist.run(&["render", &sneaky, "--allow", &allowed], b""),
        &["is not allowed"],
    );
    // The environment works like the flag; local files match as file:// URLs.
    let local = flight("echo");
    let dir = local.parent().unwrap().canonicalize().unwrap();
    let out = hoist
        .cmd()
        .env("HOIST_ALLOW", format!("file://{}/*.wasm", dir.display()))
        .args(["render", local.to_str().unwrap(), "-o", "json"])
        .output()
        .unwrap();
    json_ok(&out);
    // Piped stdin has no provenance: refused when an allow list is configured.
    let out = common::run_with_stdin(
        hoist.cmd().env("HOIST_ALLOW", &allowed).args(["render"]),
        b"kind: ConfigMap\n",
    );
    fails_with(&out, &["no provenance"]);
}

#[test]
fn verify_refuses_unsigned_and_accepts_signed_modules_even_when_allow_listed() {
    let hoist = Hoist::new();
    let keys = common::workspace().join("testdata/keys");
    let private = keys.join("test-ed25519.pkcs8.pem");
    let public = keys.join("test-ed25519.pub.pem");
    if !private.exists() || !public.exists() {
        panic!("missing test keys under {}", keys.display());
    }
    let module = hoist.cache.path().join("echo.wasm");
    std::fs::copy(flight("echo"), &module).unwrap();
    let m = module.to_str().unwrap();
    let allow = format!("file://{}", module.canonicalize().unwrap().display());

    fails_with(
        &hoist.run(
            &[
                "render",
                m,
                "--verify",
                public.to_str().unwrap(),
                "--allow",
                &allow,
            ],
            b"",
        ),
        &["signature check failed", "echo.wasm"],
    );
    let signed = hoist.run(&["sign", "--key", private.to_str().unwrap(), m], b"");
    assert!(signed.status.success(), "{}", stderr(&signed));
    json_ok(&hoist.run(
        &[
            "render",
            m,
            "--verify",
            public.to_str().unwrap(),
            "-o",
            "json",
        ],
        b"",
    ));
}

fn registry() -> Option<String> {
    common::required_env(
        "HOIST_TEST_REGISTRY",
        "run scripts/registry start (scripts/test does)",
    )
    .map(|r| r.display().to_string())
}

#[test]
fn render_from_oci_with_inferred_checksums_and_offline_cache() {
    let Some(registry) = registry() else { return };
    let hoist = Hoist::new();
    let module = flight("echo");
    let repo = format!("oci://{registry}/render-e2e/echo-{}", std::process::id());
    let wrong = "0".repeat(64);
    let pushed = hoist.run(
        &[
            "push",
            module.to_str().unwrap(),
            &format!("{repo}:v1.0.0"),
            "--tag",
            &format!("sha256_{wrong}"),
        ],
        b"",
    );
    assert!(pushed.status.success(), "push: {}", stderr(&pushed));

    // By semver tag, and by the sha256_ tag stow adds (checksum inferred and matching).
    let stages = json_ok(&hoist.run(&["render", &format!("{repo}:v1.0.0"), "-o", "json"], b""));
    assert_eq!(stages[0][0]["kind"], "ConfigMap");
    let digest = hoist_provenance_sha256(&std::fs::read(&module).unwrap());
    json_ok(&hoist.run(
        &["render", &format!("{repo}:sha256_{digest}"), "-o", "json"],
        b"",
    ));

    // A sha256_ tag that lies about the content is refused before anything runs.
    fails_with(
        &hoist.run(&["render", &format!("{repo}:sha256_{wrong}")], b""),
        &["checksum mismatch", &wrong, &digest],
    );

    // --offline answers from the download cache.
    json_ok(&hoist.run(
        &[
            "render",
            &format!("{repo}:v1.0.0"),
            "--offline",
            "-o",
            "json",
        ],
        b"",
    ));
    fails_with(
        &hoist.run(
            &["render", &format!("{repo}:never-pulled"), "--offline"],
            b"",
        ),
        &["never-pulled"],
    );
}
