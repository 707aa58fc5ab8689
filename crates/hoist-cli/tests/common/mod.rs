//! Helpers shared by the end-to-end tests: the real `hoist` binary, Go-built test flights.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The path in environment variable `var`, set by `scripts/test` for a real component
/// (control plane, registry). Missing: a failure under `CI=true`, else a printed skip.
pub fn required_env(var: &str, how: &str) -> Option<PathBuf> {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(value) => Some(PathBuf::from(value)),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{var} is not set: {how}")
        }
        None => {
            eprintln!("skipping: {var} is not set ({how})");
            None
        }
    }
}

/// The Go test flights the end-to-end tests use.
pub const TEST_FLIGHTS: &[&str] = &[
    "echo",
    "multistage",
    "yamlstream",
    "fail",
    "memhog",
    "spin",
    "flood",
    "nokind",
    "badyaml",
    "empty",
    "lookup",
];

/// Path of the Go-built test flight `name` (`testdata/flights/<name>`), building every
/// flight once per test process with `scripts/build-testdata` (cached by source hash).
pub fn flight(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let dir = std::env::var_os("HOIST_TESTDATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("target/testdata"));
        // Only the flights the tests run (not the large `realistic` benchmark flight).
        let status = Command::new(workspace().join("scripts/build-testdata"))
            .args(TEST_FLIGHTS)
            .env("HOIST_TESTDATA_DIR", &dir)
            .status()
            .map_err(|e| format!("cannot run scripts/build-testdata: {e}"))?;
        if !status.success() {
            return Err(format!("scripts/build-testdata failed: {status}"));
        }
        Ok(dir)
    });
    match dir {
        Ok(dir) => dir.join(format!("{name}.wasm")),
        Err(e) => panic!("{e}"),
    }
}

/// A `hoist` command with an isolated cache dir and no kubeconfig.
pub struct Hoist {
    pub cache: tempfile::TempDir,
    /// `HOIST_INTERPRETER` for every command (`None`: hoist's default).
    pub interpreter: Option<&'static str>,
}

impl Hoist {
    pub fn new() -> Self {
        Hoist {
            cache: tempfile::tempdir().expect("temp dir"),
            interpreter: None,
        }
    }

    /// Flights run on the interpreter tier (tier 0) instead of compiled code.
    #[allow(dead_code)] // Not every test binary uses it.
    pub fn interpreted() -> Self {
        Hoist {
            interpreter: Some("always"),
            ..Hoist::new()
        }
    }

    /// One of each: every flight-running test that takes this runs on both tiers.
    #[allow(dead_code)]
    pub fn both_tiers() -> [Hoist; 2] {
        [Hoist::new(), Hoist::interpreted()]
    }

    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hoist"));
        cmd.env("HOIST_CACHE_DIR", self.cache.path())
            .env("KUBECONFIG", self.cache.path().join("no-kubeconfig"))
            .env_remove("HOIST_LOG")
            .env_remove("HOIST_COMPILER")
            // No background compiles unless a test asks: they would compete for the CPU.
            .env("HOIST_BACKGROUND_COMPILE", "0");
        match self.interpreter {
            Some(choice) => cmd.env("HOIST_INTERPRETER", choice),
            None => cmd.env_remove("HOIST_INTERPRETER"),
        };
        cmd
    }

    /// Runs `hoist ARGS` with `stdin` piped in.
    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        run_with_stdin(self.cmd().args(args), stdin)
    }
}

pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hoist");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let output = child.wait_with_output().expect("wait for hoist");
    let _ = writer.join();
    output
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stdout parsed as JSON.
pub fn json_ok(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "hoist failed: {}\nstdout: {}",
        stderr(output),
        stdout(output)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(output)))
}

/// Asserts failure with a non-zero exit and a one-line `hoist: error:` that contains every
/// `needle`; returns stderr.
pub fn fails_with(output: &Output, needles: &[&str]) -> String {
    let err = stderr(output);
    assert!(
        !output.status.success(),
        "expected failure, got success; stdout: {}",
        stdout(output)
    );
    assert!(err.contains("hoist: error:"), "no error line: {err}");
    for needle in needles {
        assert!(err.contains(needle), "missing {needle:?} in: {err}");
    }
    err
}

/// A tiny HTTP server on 127.0.0.1 serving whatever bytes are currently set, for any path.
pub struct ModuleServer {
    pub url: String,
    body: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl ModuleServer {
    pub fn start(body: Vec<u8>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/flights/app/v1.2.3/app.wasm",
            listener.local_addr().unwrap()
        );
        let body = std::sync::Arc::new(std::sync::Mutex::new(body));
        let served = body.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = [0u8; 4096];
                let _ = std::io::Read::read(&mut stream, &mut request);
                let bytes = served.lock().unwrap().clone();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    bytes.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&bytes);
            }
        });
        ModuleServer { url, body }
    }

    pub fn set(&self, bytes: Vec<u8>) {
        *self.body.lock().unwrap() = bytes;
    }
}
