//! Running one KRM function on a ResourceList: Go js/wasm (function or command style), WASI
//! preview 1, or a native program (`--exec`).

use hoist_gojs::{GoInstance, GoJsError, GoOptions, Value as JsValue};
use hoist_runtime::{FlightEngine, FlightError, FlightSpec, LoadedModule, StderrMode};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How a function was run (detected from its imports and behaviour, never from a flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FnKind {
    /// Go js/wasm module that registered `processResourceList`.
    GoJsFunction,
    /// Go js/wasm module that read stdin, wrote stdout and exited.
    GoJsCommand,
    /// WASI preview 1 command (stdin -> stdout).
    Wasi,
    /// A native program.
    Exec,
}

/// Limits for a function run.
#[derive(Debug, Clone, Copy)]
pub struct FnLimits {
    /// Linear memory cap.
    pub max_memory_bytes: u64,
    /// Wall-clock limit.
    pub timeout: Option<Duration>,
    /// Output cap (stdout and stderr each).
    pub max_output_bytes: usize,
}

impl Default for FnLimits {
    fn default() -> Self {
        FnLimits {
            max_memory_bytes: 2 << 30,
            timeout: Some(Duration::from_secs(300)),
            max_output_bytes: 256 << 20,
        }
    }
}

/// What a function produced.
#[derive(Debug, Clone)]
pub struct FnOutput {
    /// How it ran.
    pub kind: FnKind,
    /// The output ResourceList text (stdout, or `processResourceList`'s result).
    pub output: Vec<u8>,
    /// Its stderr (for js functions: fd 2 writes; stdout writes of a
    /// `processResourceList` function are appended here too, never to `output`).
    pub stderr: String,
    /// Exit code (0: success).
    pub exit_code: i32,
}

/// Why a function could not run at all (as opposed to running and failing).
#[derive(Debug, thiserror::Error)]
pub enum FnRunError {
    /// The Go host failed.
    #[error("{error}{}", stderr_suffix(stderr))]
    GoJs {
        /// The host's error.
        error: GoJsError,
        /// What the function wrote to stderr.
        stderr: String,
    },
    /// The WASI runtime failed.
    #[error(transparent)]
    Wasi(FlightError),
    /// The module is neither Go js/wasm nor WASI.
    #[error(
        "{what} is neither a Go js/wasm module (imports `gojs`/`go`) nor a WASI preview 1 command (imports `wasi_snapshot_preview1`, exports `_start`): hoist cannot run it as a KRM function"
    )]
    UnknownKind {
        /// The module.
        what: String,
    },
    /// A native program could not be started.
    #[error("could not run {program}: {source}")]
    Exec {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    let t = stderr.trim_end();
    if t.is_empty() {
        String::new()
    } else {
        let lines: Vec<&str> = t.lines().collect();
        let shown = &lines[lines.len().saturating_sub(20)..];
        format!("; its stderr:\n  {}", shown.join("\n  "))
    }
}

/// Whether a ResourceList text looks like a ResourceList (kpt's check before falling back
/// to `processResourceListErrors`).
fn is_resource_list(text: &str) -> bool {
    matches!(
        crate::yaml::parse_one(text),
        Ok(v) if v.get("kind").and_then(serde_json::Value::as_str) == Some("ResourceList")
    )
}

/// Runs the Wasm function `module` on `input`.
pub fn run_wasm(
    engine: &FlightEngine,
    module: &LoadedModule,
    what: &str,
    input: &[u8],
    limits: FnLimits,
) -> Result<FnOutput, FnRunError> {
    if hoist_gojs::is_go_js(&module.module) {
        return run_go_js(engine, module, what, input, limits);
    }
    let wasi = module
        .module
        .imports()
        .any(|i| i.module() == "wasi_snapshot_preview1")
        || module.module.get_export("_start").is_some();
    if !wasi {
        return Err(FnRunError::UnknownKind { what: what.into() });
    }
    let spec = FlightSpec {
        what,
        release: "krm-function",
        namespace: "",
        args: &[],
        stdin: input.to_vec(),
        max_memory_bytes: limits.max_memory_bytes,
        timeout: limits.timeout,
        max_stdout_bytes: limits.max_output_bytes,
        stderr: StderrMode::Capture,
        cluster: None,
    };
    match hoist_runtime::run_flight(engine, module, spec) {
        Ok(out) => Ok(FnOutput {
            kind: FnKind::Wasi,
            output: out.stdout,
            stderr: out.stderr_tail,
            exit_code: 0,
        }),
        Err(FlightError::Exit {
            code,
            stderr_tail,
            stdout,
            ..
        }) => Ok(FnOutput {
            kind: FnKind::Wasi,
            output: stdout,
            stderr: stderr_tail,
            exit_code: code,
        }),
        Err(e) => Err(FnRunError::Wasi(e)),
    }
}

fn run_go_js(
    engine: &FlightEngine,
    module: &LoadedModule,
    what: &str,
    input: &[u8],
    limits: FnLimits,
) -> Result<FnOutput, FnRunError> {
    let options = GoOptions {
        argv: vec!["js".into()],
        stdin: input.to_vec(),
        max_memory_bytes: limits.max_memory_bytes,
        timeout: limits.timeout,
        max_output_bytes: limits.max_output_bytes,
        ..GoOptions::default()
    };
    let mut go =
        GoInstance::start(engine.engine(), &module.module, what, options).map_err(|error| {
            FnRunError::GoJs {
                error,
                stderr: String::new(),
            }
        })?;
    let fail = |go: &mut GoInstance, error: GoJsError| FnRunError::GoJs {
        error,
        stderr: take_all_stderr(go),
    };
    // Command style: main read stdin, wrote stdout and exited.
    if let Some(code) = go.exit_code() {
        return Ok(command_output(&mut go, code));
    }
    if !go.has_function("processResourceList") {
        // Let pending timers run, as node's event loop would; a command may still finish.
        match go.run_until(Some("processResourceList")) {
            Ok(true) => {
                let code = go.exit_code().unwrap_or(0);
                return Ok(command_output(&mut go, code));
            }
            Ok(false) if go.has_function("processResourceList") => {}
            Ok(false) => {
                // Neither exited nor registered anything: Go reports the deadlock itself.
                let _ = go.report_deadlock();
                let code = go.exit_code().unwrap_or(2);
                let mut out = command_output(&mut go, code);
                if out.exit_code == 0 {
                    out.exit_code = 1;
                }
                out.stderr.push_str(
                    "hoist: the function neither exited nor registered processResourceList (it waits for an event that never comes)\n",
                );
                return Ok(out);
            }
            Err(e) => return Err(fail(&mut go, e)),
        }
    }
    let text = String::from_utf8_lossy(input).into_owned();
    let result = match go.call("processResourceList", vec![JsValue::string(&text)]) {
        Ok(v) => v,
        Err(e @ GoJsError::ExitedDuringCall { .. }) => {
            let code = go.exit_code().unwrap_or(2);
            let stderr = take_all_stderr(&mut go);
            return Ok(FnOutput {
                kind: FnKind::GoJsFunction,
                output: Vec::new(),
                stderr: format!(
                    "{stderr}{}{e}\n",
                    if stderr.ends_with('\n') || stderr.is_empty() {
                        ""
                    } else {
                        "\n"
                    }
                ),
                exit_code: if code == 0 { 1 } else { code },
            });
        }
        Err(e) => return Err(fail(&mut go, e)),
    };
    let out = result
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| result.to_js_string());
    if is_resource_list(&out) {
        return Ok(FnOutput {
            kind: FnKind::GoJsFunction,
            output: out.into_bytes(),
            stderr: take_all_stderr(&mut go),
            exit_code: 0,
        });
    }
    // Not a ResourceList: kpt asks processResourceListErrors for the error messages.
    let errors = if go.has_function("processResourceListErrors") {
        go.call("processResourceListErrors", vec![JsValue::string(&text)])
            .ok()
            .map(|v| v.to_js_string())
            .filter(|s| s != "undefined")
            .unwrap_or_default()
    } else {
        String::new()
    };
    let mut stderr = take_all_stderr(&mut go);
    if !stderr.is_empty() && !stderr.ends_with('\n') {
        stderr.push('\n');
    }
    if out.is_empty() || out == "undefined" {
        stderr.push_str("hoist: processResourceList returned nothing\n");
    } else {
        stderr.push_str("hoist: processResourceList did not return a ResourceList; it returned:\n");
        stderr.push_str(&out);
        stderr.push('\n');
    }
    if !errors.is_empty() {
        stderr.push_str(&errors);
        stderr.push('\n');
    }
    Ok(FnOutput {
        kind: FnKind::GoJsFunction,
        output: Vec::new(),
        stderr,
        exit_code: 1,
    })
}

fn take_all_stderr(go: &mut GoInstance) -> String {
    // A function-style module's stdout writes are diagnostics, never output.
    let mut s = String::from_utf8_lossy(&go.take_stderr()).into_owned();
    let out = go.take_stdout();
    if !out.is_empty() {
        s.push_str(&String::from_utf8_lossy(&out));
    }
    s
}

fn command_output(go: &mut GoInstance, code: i32) -> FnOutput {
    FnOutput {
        kind: FnKind::GoJsCommand,
        output: go.take_stdout(),
        stderr: String::from_utf8_lossy(&go.take_stderr()).into_owned(),
        exit_code: code,
    }
}

/// Runs a native program (`--exec`) with `args`, feeding `input` on stdin.
pub fn run_exec(program: &str, args: &[String], input: &[u8]) -> Result<FnOutput, FnRunError> {
    let mut child = Command::new(PathBuf::from(program))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| FnRunError::Exec {
            program: program.into(),
            source,
        })?;
    let mut stdin = child.stdin.take();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            let _ = s.write_all(&data);
        }
    });
    let out = child
        .wait_with_output()
        .map_err(|source| FnRunError::Exec {
            program: program.into(),
            source,
        })?;
    let _ = writer.join();
    Ok(FnOutput {
        kind: FnKind::Exec,
        output: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        exit_code: out.status.code().unwrap_or(1),
    })
}
