//! Policies and evaluators: one compiled module per policy, an evaluator per session (an
//! instance reused where the mode allows it), limits, and errors turned into responses.

use crate::capabilities::HostCapabilities;
use crate::metadata::{
    self, ExecutionMode, Metadata, ModeError, ModeSource, PolicyType, ProtocolVersion,
};
use crate::opa::{RegoInstance, RegoPre};
use crate::response::{
    AdmissionResponse, SettingsValidation, ValidateRequest, ValidationResponse, validation_payload,
};
use crate::wapc::{WapcInstance, WapcPre};
use crate::wasi::WasiPre;
use hoist_runtime::guest::{
    self, CallDeadline, EpochTicker, MemoryLimitHit, StdoutCapExceeded, TimeoutHit,
};
use serde_json::Value;
use std::time::{Duration, Instant};
use wasmtime::{Caller, Extern, Memory, Module, Store};

/// Per-call limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock limit of each call (and of instantiation); `None` for none.
    pub timeout: Option<Duration>,
    /// Linear memory cap in bytes.
    pub max_memory_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Some(Duration::from_secs(10)),
            max_memory_bytes: 1024 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// The deadline of a call starting now (`None` for none).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        guest::deadline_after(self.timeout)
    }

    /// Sets the deadline of a fresh store's one call; the evaluator keeps an epoch ticker
    /// running. Long-lived instances keep a [`CallDeadline`] and re-arm it instead.
    pub(crate) fn arm<T: 'static>(&self, store: &mut Store<T>) -> Option<Instant> {
        let deadline = self.deadline();
        CallDeadline::install(store).arm_at(store, deadline);
        deadline
    }
}

/// Why a call into a policy produced no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EvalError {
    /// The module cannot be linked or instantiated as this mode needs.
    #[error("{0}")]
    Setup(String),
    /// The policy ran past its time limit.
    #[error(
        "Policy execution interrupted because it exceeded the allowed execution time ({}; raise it with --timeout)",
        humanize(*.0)
    )]
    Timeout(Duration),
    /// The policy wanted more memory than allowed.
    #[error(
        "the policy exceeded its memory limit of {} MiB (raise it with --max-memory-mib)",
        .0 / (1024 * 1024)
    )]
    Memory(u64),
    /// The policy trapped (crashed).
    #[error("{0}")]
    Trap(String),
    /// A waPC guest reported an error.
    #[error("Guest call failure: {0}")]
    Guest(String),
    /// The policy broke the protocol (no response, invalid JSON...).
    #[error("{0}")]
    Protocol(String),
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Turns a wasmtime error into an [`EvalError`], recognising the limits.
pub(crate) fn classify(error: wasmtime::Error, limits: &Limits, context: &str) -> EvalError {
    if error.downcast_ref::<TimeoutHit>().is_some() {
        return EvalError::Timeout(limits.timeout.unwrap_or_default());
    }
    if error.downcast_ref::<MemoryLimitHit>().is_some() {
        return EvalError::Memory(limits.max_memory_bytes);
    }
    if let Some(cap) = error.downcast_ref::<StdoutCapExceeded>() {
        return EvalError::Protocol(format!("{context}: {cap}"));
    }
    let detail = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("wasm trap: {trap}"),
        None => format!("{error:#}")
            .lines()
            .next()
            .unwrap_or("unknown error")
            .to_string(),
    };
    EvalError::Trap(format!("{context}: {detail}"))
}

/// The guest's exported `memory`.
pub(crate) fn guest_memory<T>(caller: &mut Caller<'_, T>, what: &str) -> wasmtime::Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => wasmtime::bail!("{what}: the policy exports no memory"),
    }
}

/// Why a policy cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Its metadata is unreadable or invalid.
    #[error(transparent)]
    Metadata(#[from] metadata::MetadataError),
    /// Its execution mode cannot be decided.
    #[error(transparent)]
    Mode(#[from] ModeError),
    /// It cannot be linked or started.
    #[error("{what}: {source}")]
    Setup {
        /// The policy.
        what: String,
        /// Why.
        source: EvalError,
    },
}

enum Runtime {
    Wapc(WapcPre),
    Wasi(WasiPre),
    Rego(RegoPre),
}

/// A policy module, compiled and linked for its execution mode.
pub struct Policy {
    what: String,
    metadata: Option<Metadata>,
    mode: ExecutionMode,
    mode_source: ModeSource,
    runtime: Runtime,
}

impl Policy {
    /// Prepares `module` (named `what` in messages) with its `metadata` (from the
    /// `io.kubewarden.metadata` section) and the `-e` flag, if any.
    pub fn new(
        module: &Module,
        metadata: Option<Metadata>,
        mode_flag: Option<ExecutionMode>,
        what: &str,
    ) -> Result<Policy, PolicyError> {
        let kind = metadata::module_kind(module.exports().map(|e| e.name()));
        let (mode, mode_source) = metadata::decide_mode(mode_flag, metadata.as_ref(), kind, what)?;
        let engine = module.engine();
        let setup = |source: EvalError| PolicyError::Setup {
            what: what.to_string(),
            source,
        };
        let runtime = match mode {
            ExecutionMode::KubewardenWapc => {
                Runtime::Wapc(WapcPre::new(engine, module, what).map_err(setup)?)
            }
            ExecutionMode::Wasi => {
                Runtime::Wasi(WasiPre::new(engine, module, what).map_err(setup)?)
            }
            ExecutionMode::Opa | ExecutionMode::Gatekeeper => {
                Runtime::Rego(RegoPre::new(engine, module, mode, what).map_err(setup)?)
            }
        };
        Ok(Policy {
            what: what.to_string(),
            metadata,
            mode,
            mode_source,
            runtime,
        })
    }

    /// For a Go WASI policy, the operations (`validate`, `validate-settings`) whose calls
    /// now start from the state Go reached before reading its input (see
    /// [`hoist_runtime::go_resume`]); empty for other policies and before the first call.
    pub fn resumed_operations(&self) -> Vec<String> {
        match &self.runtime {
            Runtime::Wasi(pre) => pre.resumed_operations(),
            _ => Vec::new(),
        }
    }

    /// The module's name in messages.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The metadata, when the module is annotated.
    pub fn metadata(&self) -> Option<&Metadata> {
        self.metadata.as_ref()
    }

    /// The execution mode.
    pub fn mode(&self) -> ExecutionMode {
        self.mode
    }

    /// How the execution mode was decided.
    pub fn mode_source(&self) -> ModeSource {
        self.mode_source
    }

    /// Whether the metadata says it validates raw documents.
    pub fn is_raw(&self) -> bool {
        self.metadata
            .as_ref()
            .is_some_and(|m| m.policy_type == PolicyType::Raw)
    }

    /// An evaluator: for waPC and Rego a live instance (created now, so start-up failures
    /// surface here), for WASI the instance template.
    pub fn evaluator(
        &self,
        host: HostCapabilities,
        limits: Limits,
    ) -> Result<Evaluator<'_>, PolicyError> {
        let ticker = limits
            .timeout
            .map(|_| EpochTicker::start(self.engine().clone()));
        let setup = |source: EvalError| PolicyError::Setup {
            what: self.what.clone(),
            source,
        };
        let state = match &self.runtime {
            Runtime::Wapc(pre) => State::Wapc(Some(Box::new(
                pre.instantiate(host.clone(), &limits).map_err(setup)?,
            ))),
            Runtime::Wasi(_) => State::Wasi,
            Runtime::Rego(pre) => {
                State::Rego(Some(Box::new(pre.instantiate(&limits).map_err(setup)?)))
            }
        };
        Ok(Evaluator {
            policy: self,
            host,
            limits,
            state,
            _ticker: ticker,
        })
    }

    fn engine(&self) -> &wasmtime::Engine {
        match &self.runtime {
            Runtime::Wapc(p) => p.engine(),
            Runtime::Wasi(p) => p.engine(),
            Runtime::Rego(p) => p.engine(),
        }
    }
}

enum State {
    Wapc(Option<Box<WapcInstance>>),
    Wasi,
    Rego(Option<Box<RegoInstance>>),
}

/// Evaluates requests against one policy. waPC and Rego keep one instance across calls (and
/// rebuild it after a trap); WASI runs a fresh instance per call, as Kubewarden does.
pub struct Evaluator<'p> {
    policy: &'p Policy,
    host: HostCapabilities,
    limits: Limits,
    state: State,
    _ticker: Option<EpochTicker>,
}

impl Evaluator<'_> {
    /// The policy.
    pub fn policy(&self) -> &Policy {
        self.policy
    }

    fn wapc_call(&mut self, operation: &str, payload: &[u8]) -> Result<Vec<u8>, EvalError> {
        let policy = self.policy;
        let Runtime::Wapc(pre) = &policy.runtime else {
            return Err(EvalError::Setup("not a waPC policy".into()));
        };
        let State::Wapc(slot) = &mut self.state else {
            return Err(EvalError::Setup("not a waPC policy".into()));
        };
        let instance = match slot {
            Some(instance) => instance,
            None => slot.insert(Box::new(pre.instantiate(self.host.clone(), &self.limits)?)),
        };
        let result = instance.call(operation, payload, &self.limits);
        if matches!(
            result,
            Err(EvalError::Trap(_) | EvalError::Timeout(_) | EvalError::Memory(_))
        ) {
            // The store may hold a half-updated heap or a locked mutex: start afresh next time.
            *slot = None;
        }
        result
    }

    /// Asks the policy whether `settings` are valid (always valid for Rego, as in kwctl).
    pub fn validate_settings(&mut self, settings: &Value) -> SettingsValidation {
        let policy = self.policy;
        let payload = || serde_json::to_vec(settings).unwrap_or_default();
        let answer = match &policy.runtime {
            Runtime::Rego(_) => {
                return SettingsValidation {
                    valid: true,
                    message: None,
                };
            }
            // Rego never sees the settings here, so they are serialised only for these two.
            Runtime::Wapc(_) => self.wapc_call("validate_settings", &payload()),
            Runtime::Wasi(pre) => {
                pre.run("validate-settings", &payload(), &self.host, &self.limits)
            }
        };
        match answer {
            Ok(bytes) => match serde_json::from_slice::<SettingsValidation>(&bytes) {
                Ok(v) => v,
                Err(e) => SettingsValidation {
                    valid: false,
                    message: Some(format!(
                        "error: the policy's settings validation answer is not valid JSON ({e}): {}",
                        preview(&bytes)
                    )),
                },
            },
            Err(e) => SettingsValidation {
                valid: false,
                message: Some(format!("Error invoking settings validation callback: {e}")),
            },
        }
    }

    /// Evaluates one request; every failure becomes a rejection (code 500), as in kwctl.
    pub fn validate(&mut self, request: &ValidateRequest, settings: &Value) -> AdmissionResponse {
        let uid = request.uid().to_string();
        let policy = self.policy;
        let answer = match &policy.runtime {
            Runtime::Rego(pre) => {
                let mode = pre.mode();
                let State::Rego(slot) = &mut self.state else {
                    return AdmissionResponse::internal_error(&uid, "not a Rego policy");
                };
                let instance = match slot {
                    Some(i) => i,
                    None => match pre.instantiate(&self.limits) {
                        Ok(i) => slot.insert(Box::new(i)),
                        Err(e) => return AdmissionResponse::internal_error(&uid, e),
                    },
                };
                let response = crate::opa::validate(
                    instance,
                    mode,
                    request,
                    settings,
                    &self.host,
                    &self.limits,
                );
                if instance.poisoned() {
                    *slot = None;
                }
                return response;
            }
            Runtime::Wapc(_) => {
                let payload = validation_payload(request, settings);
                self.wapc_call("validate", &payload)
            }
            Runtime::Wasi(pre) => {
                let payload = validation_payload(request, settings);
                pre.run("validate", &payload, &self.host, &self.limits)
            }
        };
        match answer {
            Ok(bytes) => match serde_json::from_slice::<ValidationResponse>(&bytes) {
                Ok(response) => {
                    AdmissionResponse::from_validation(&uid, request.original_object(), response)
                }
                Err(e) => AdmissionResponse::internal_error(
                    &uid,
                    format!(
                        "the policy's answer is not a ValidationResponse ({e}): {}",
                        preview(&bytes)
                    ),
                ),
            },
            Err(e @ EvalError::Timeout(_)) => {
                AdmissionResponse::reject(&uid, e.to_string(), Some(500))
            }
            Err(e) => AdmissionResponse::internal_error(&uid, e),
        }
    }

    /// Rego only: evaluate through the classic context API (`opa_eval_ctx_*` + `eval`) even
    /// when the module exports the one-shot `opa_eval` (both paths must agree).
    pub fn use_classic_rego_path(&mut self, classic: bool) {
        if let State::Rego(Some(instance)) = &mut self.state {
            instance.force_classic = classic;
        }
    }

    /// The waPC `protocol_version` answer (`Unknown` for the other modes).
    pub fn protocol_version(&mut self) -> Result<ProtocolVersion, PolicyError> {
        if !matches!(self.policy.runtime, Runtime::Wapc(_)) {
            return Ok(ProtocolVersion::Unknown);
        }
        let what = self.policy.what.clone();
        let bytes =
            self.wapc_call("protocol_version", b"")
                .map_err(|source| PolicyError::Setup {
                    what: what.clone(),
                    source,
                })?;
        match serde_json::from_slice::<ProtocolVersion>(&bytes) {
            Ok(v) => Ok(v),
            Err(_) => Err(PolicyError::Setup {
                what,
                source: EvalError::Protocol(format!(
                    "protocol_version answered {}, which is not a protocol hoist speaks (\"v1\")",
                    preview(&bytes)
                )),
            }),
        }
    }
}

/// The first bytes of an answer, for messages.
pub(crate) fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes.get(..200).unwrap_or(bytes)).into_owned();
    if bytes.len() > 200 {
        format!("{text:?}…")
    } else {
        format!("{text:?}")
    }
}
