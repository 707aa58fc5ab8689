//! Policy metadata: the `io.kubewarden.metadata` custom section, `metadata.yml`, execution
//! modes and the rules a policy is registered for.

use hoist_provenance::signature::section;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// Name of the custom section Kubewarden keeps policy metadata in.
pub const METADATA_SECTION: &str = "io.kubewarden.metadata";

/// How a policy module is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum ExecutionMode {
    /// waPC (`__guest_call`), Kubewarden's default.
    #[default]
    #[serde(rename = "kubewarden-wapc")]
    KubewardenWapc,
    /// A WASI command: operation in argv, JSON on stdin and stdout.
    #[serde(rename = "wasi")]
    Wasi,
    /// Rego compiled to Wasm, kube-mgmt style (`data` = settings).
    #[serde(rename = "opa")]
    Opa,
    /// Rego compiled to Wasm, Gatekeeper style (`input.review`, `input.parameters`).
    #[serde(rename = "gatekeeper")]
    Gatekeeper,
}

impl ExecutionMode {
    /// The name used in metadata and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ExecutionMode::KubewardenWapc => "kubewarden-wapc",
            ExecutionMode::Wasi => "wasi",
            ExecutionMode::Opa => "opa",
            ExecutionMode::Gatekeeper => "gatekeeper",
        }
    }

    /// Whether this mode evaluates Rego.
    pub fn is_rego(self) -> bool {
        matches!(self, ExecutionMode::Opa | ExecutionMode::Gatekeeper)
    }
}

impl fmt::Display for ExecutionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An execution mode name that is not one of the four.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "unknown execution mode {0:?}: use kubewarden-wapc (or kubewarden, wapc), wasi, opa or gatekeeper"
)]
pub struct UnknownMode(pub String);

impl FromStr for ExecutionMode {
    type Err = UnknownMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "kubewarden-wapc" | "kubewarden" | "wapc" => Ok(ExecutionMode::KubewardenWapc),
            "wasi" => Ok(ExecutionMode::Wasi),
            "opa" => Ok(ExecutionMode::Opa),
            "gatekeeper" => Ok(ExecutionMode::Gatekeeper),
            _ => Err(UnknownMode(s.to_string())),
        }
    }
}

/// The protocol a policy speaks (`v1` for waPC policies; `Unknown` for the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProtocolVersion {
    /// Kubewarden protocol v1.
    #[serde(rename = "v1")]
    V1,
    /// Not a waPC policy, or not known.
    Unknown,
}

/// Whether a policy validates Kubernetes AdmissionRequests or arbitrary JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum PolicyType {
    /// AdmissionRequests.
    #[default]
    Kubernetes,
    /// Any JSON document (`--raw`).
    Raw,
}

/// A Kubernetes type a context-aware policy may read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextAwareResource {
    /// apiVersion, e.g. `v1` or `apps/v1`.
    pub api_version: String,
    /// Kind, e.g. `Namespace`.
    pub kind: String,
}

/// One admission rule: which requests reach the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// API groups (`""` is core, `*` all).
    pub api_groups: Vec<String>,
    /// API versions.
    pub api_versions: Vec<String>,
    /// Resources (plural names, `*`, `pods/status`...).
    pub resources: Vec<String>,
    /// Operations: CREATE, UPDATE, DELETE, CONNECT or `*`.
    pub operations: Vec<String>,
}

/// The policy metadata, as stored in `io.kubewarden.metadata` (camelCase JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Protocol version (required in an annotated module).
    #[serde(default)]
    pub protocol_version: Option<ProtocolVersion>,
    /// The admission rules.
    #[serde(default, deserialize_with = "null_as_default")]
    pub rules: Vec<Rule>,
    /// Free-form annotations (title, version, usage...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Whether the policy may mutate requests.
    pub mutating: bool,
    /// Whether the audit scanner evaluates it.
    #[serde(default = "default_true")]
    pub background_audit: bool,
    /// How to run it.
    #[serde(default)]
    pub execution_mode: ExecutionMode,
    /// AdmissionRequests or raw JSON.
    #[serde(default)]
    pub policy_type: PolicyType,
    /// Types a context-aware policy may read from the cluster.
    #[serde(default, deserialize_with = "null_as_default")]
    pub context_aware_resources: BTreeSet<ContextAwareResource>,
    /// The oldest Kubewarden able to run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_kubewarden_version: Option<String>,
}

fn default_true() -> bool {
    true
}

/// `rules:` with nothing after it (YAML null) is an empty list, as kwctl reads it.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Why metadata could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The module's bytes are not a Wasm module (for section parsing).
    #[error("{what}: cannot read its custom sections: {detail}")]
    Malformed {
        /// The module.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// The section or file does not parse.
    #[error("{what}: policy metadata does not parse: {detail}")]
    Parse {
        /// Where the metadata came from.
        what: String,
        /// The parser's message.
        detail: String,
    },
    /// The metadata parses but breaks a rule.
    #[error("{what}: invalid policy metadata: {detail}")]
    Invalid {
        /// Where the metadata came from.
        what: String,
        /// Which rule is broken.
        detail: String,
    },
}

impl Metadata {
    /// Parses a `metadata.yml` (YAML or JSON).
    pub fn from_yaml(text: &str, what: &str) -> Result<Metadata, MetadataError> {
        serde_saphyr::from_str(text).map_err(|e| MetadataError::Parse {
            what: what.to_string(),
            detail: e.to_string(),
        })
    }

    /// Checks the rules kwctl checks: non-empty lists, `*` alone, known operations, a waPC
    /// policy with a known protocol, context-aware resources named.
    pub fn validate(&self, what: &str) -> Result<(), MetadataError> {
        let invalid = |detail: String| MetadataError::Invalid {
            what: what.to_string(),
            detail,
        };
        if self.protocol_version.is_none() {
            return Err(invalid("protocolVersion is missing".into()));
        }
        if self.execution_mode == ExecutionMode::KubewardenWapc
            && self.protocol_version == Some(ProtocolVersion::Unknown)
        {
            return Err(invalid(
                "a kubewarden-wapc policy must have protocolVersion v1, not Unknown".into(),
            ));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            for (field, list) in [
                ("apiGroups", &rule.api_groups),
                ("apiVersions", &rule.api_versions),
                ("resources", &rule.resources),
                ("operations", &rule.operations),
            ] {
                if list.is_empty() {
                    return Err(invalid(format!("rules[{i}].{field} must not be empty")));
                }
                if list.len() > 1 && list.iter().any(|v| v == "*") {
                    return Err(invalid(format!(
                        "rules[{i}].{field}: no other elements can be defined when '*' is used"
                    )));
                }
            }
            for op in &rule.operations {
                if !matches!(
                    op.as_str(),
                    "CREATE" | "UPDATE" | "DELETE" | "CONNECT" | "*"
                ) {
                    return Err(invalid(format!(
                        "rules[{i}].operations: unknown operation {op:?} (use CREATE, UPDATE, DELETE, CONNECT or *)"
                    )));
                }
            }
            for resource in &rule.resources {
                if resource.is_empty() {
                    return Err(invalid(format!("rules[{i}].resources: empty resource")));
                }
            }
        }
        for r in &self.context_aware_resources {
            if r.api_version.is_empty() || r.kind.is_empty() {
                return Err(invalid(
                    "contextAwareResources entries need apiVersion and kind".into(),
                ));
            }
        }
        if let Some(v) = &self.minimum_kubewarden_version
            && semver::Version::parse(v.trim_start_matches('v')).is_err()
        {
            return Err(invalid(format!(
                "minimumKubewardenVersion {v:?} is not a semantic version"
            )));
        }
        Ok(())
    }
}

/// Walks the sections of a Wasm module: `(id, name for custom sections, payload range)`.
/// A section: its id, its name (custom sections), and its payload's byte range.
/// The module's sections, read by hoist-provenance's bounds-checked scanner (the one the
/// signature code uses), with its reason as a [`MetadataError::Malformed`].
fn sections<'a>(wasm: &'a [u8], what: &str) -> Result<Vec<section::Section<'a>>, MetadataError> {
    section::scan(wasm).map_err(|e| MetadataError::Malformed {
        what: what.to_string(),
        detail: e.to_string(),
    })
}

/// The payload of `s` when it is an `io.kubewarden.metadata` section.
fn metadata_payload<'a>(s: &section::Section<'a>) -> Option<&'a [u8]> {
    s.custom
        .as_ref()
        .filter(|c| c.name == METADATA_SECTION.as_bytes())
        .map(|c| c.data)
}

/// Reads the first `io.kubewarden.metadata` section, if any.
pub fn read_metadata(wasm: &[u8], what: &str) -> Result<Option<Metadata>, MetadataError> {
    let Some(data) = sections(wasm, what)?.iter().find_map(metadata_payload) else {
        return Ok(None);
    };
    let metadata = serde_json::from_slice(data).map_err(|e| MetadataError::Parse {
        what: format!("{what} (section {METADATA_SECTION})"),
        detail: e.to_string(),
    })?;
    Ok(Some(metadata))
}

/// The module with every `io.kubewarden.metadata` section replaced by one holding `metadata`
/// (appended at the end, as kwctl's rewrite does).
pub fn write_metadata(
    wasm: &[u8],
    metadata: &Metadata,
    what: &str,
) -> Result<Vec<u8>, MetadataError> {
    let payload = serde_json::to_vec(metadata).map_err(|e| MetadataError::Parse {
        what: what.to_string(),
        detail: e.to_string(),
    })?;
    let mut kept = Vec::with_capacity(wasm.len() + payload.len() + 64);
    kept.extend_from_slice(wasm.get(..section::PREAMBLE_LEN).unwrap_or(wasm));
    for s in sections(wasm, what)?
        .iter()
        .filter(|s| metadata_payload(s).is_none())
    {
        kept.extend_from_slice(wasm.get(s.range.clone()).unwrap_or_default());
    }
    section::append_custom_section(&kept, METADATA_SECTION.as_bytes(), &payload).map_err(|_| {
        MetadataError::Invalid {
            what: what.to_string(),
            detail: "metadata larger than 4 GiB".into(),
        }
    })
}

/// How the execution mode was decided, for `inspect` and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeSource {
    /// `-e/--execution-mode`.
    Flag,
    /// The metadata section.
    Metadata,
    /// Detected from the module's exports.
    Exports,
}

/// What a module's exports say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    /// Exports `opa_*`: Rego.
    Rego,
    /// Exports `__guest_call`: waPC.
    Wapc,
    /// A WASI command (`_start`) without either.
    WasiCommand,
    /// None of the above.
    Unknown,
}

/// Classifies a module by its export names (kwctl's rule: any `opa_` export is Rego).
pub fn module_kind<'a>(exports: impl IntoIterator<Item = &'a str>) -> ModuleKind {
    let mut wapc = false;
    let mut start = false;
    for name in exports {
        if name.starts_with("opa_") {
            return ModuleKind::Rego;
        }
        wapc |= name == "__guest_call";
        start |= name == "_start";
    }
    if wapc {
        ModuleKind::Wapc
    } else if start {
        ModuleKind::WasiCommand
    } else {
        ModuleKind::Unknown
    }
}

/// Why no execution mode could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    /// A Rego module without a flag or metadata saying which flavour.
    #[error(
        "{what} is a Rego (OPA Wasm) module without metadata saying how to run it: pass -e opa or -e gatekeeper, or annotate it (hoist policy annotate)"
    )]
    RegoNeedsFlavour {
        /// The module.
        what: String,
    },
    /// The flag or the metadata disagrees with the module.
    #[error("{what}: {detail}")]
    Mismatch {
        /// The module.
        what: String,
        /// The disagreement.
        detail: String,
    },
    /// Nothing identifies it as a policy.
    #[error(
        "{what} is not a Kubewarden policy: it exports neither __guest_call (waPC), opa_* (Rego) nor _start (WASI)"
    )]
    NotAPolicy {
        /// The module.
        what: String,
    },
}

/// Decides the execution mode as kwctl does, detecting WASI as well: the flag and the metadata
/// must agree with each other and with the module's exports.
pub fn decide_mode(
    flag: Option<ExecutionMode>,
    metadata: Option<&Metadata>,
    kind: ModuleKind,
    what: &str,
) -> Result<(ExecutionMode, ModeSource), ModeError> {
    let mismatch = |detail: String| ModeError::Mismatch {
        what: what.to_string(),
        detail,
    };
    let agrees_with_module = |mode: ExecutionMode, source: &str| -> Result<(), ModeError> {
        let is_rego = kind == ModuleKind::Rego;
        if mode.is_rego() != is_rego {
            return Err(mismatch(if is_rego {
                format!(
                    "{source} says {mode}, but the module is Rego (exports opa_*): use -e opa or -e gatekeeper"
                )
            } else {
                format!("{source} says {mode}, but the module is not Rego (no opa_* exports)")
            }));
        }
        if mode == ExecutionMode::KubewardenWapc && kind == ModuleKind::WasiCommand {
            return Err(mismatch(format!(
                "{source} says kubewarden-wapc, but the module has no __guest_call export (a WASI command: use -e wasi)"
            )));
        }
        Ok(())
    };
    let from_metadata = metadata.map(|m| m.execution_mode);
    match (flag, from_metadata) {
        (Some(f), Some(m)) if f != m => Err(mismatch(format!(
            "--execution-mode {f} contradicts the metadata's executionMode {m}"
        ))),
        (Some(f), _) => {
            agrees_with_module(f, "--execution-mode")?;
            Ok((f, ModeSource::Flag))
        }
        (None, Some(m)) => {
            agrees_with_module(m, "the metadata")?;
            Ok((m, ModeSource::Metadata))
        }
        (None, None) => match kind {
            ModuleKind::Rego => Err(ModeError::RegoNeedsFlavour {
                what: what.to_string(),
            }),
            ModuleKind::Wapc => Ok((ExecutionMode::KubewardenWapc, ModeSource::Exports)),
            ModuleKind::WasiCommand => Ok((ExecutionMode::Wasi, ModeSource::Exports)),
            ModuleKind::Unknown => Err(ModeError::NotAPolicy {
                what: what.to_string(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
rules:
  - apiGroups: [""]
    apiVersions: ["v1"]
    resources: ["services"]
    operations: ["CREATE", "UPDATE"]
mutating: false
contextAware: false
executionMode: opa
backgroundAudit: true
contextAwareResources:
  - apiVersion: v1
    kind: Namespace
annotations:
  io.kubewarden.policy.title: policy-name
"#;

    #[test]
    fn metadata_yml_parses_and_round_trips_through_a_section() {
        let mut m = Metadata::from_yaml(YAML, "metadata.yml").unwrap();
        assert_eq!(m.execution_mode, ExecutionMode::Opa);
        assert_eq!(m.context_aware_resources.len(), 1);
        assert!(m.validate("m").is_err(), "protocolVersion is required");
        m.protocol_version = Some(ProtocolVersion::Unknown);
        m.validate("m").unwrap();

        let module =
            wat::parse_str(r#"(module (@custom "other" "x") (func (export "_start")))"#).unwrap();
        assert_eq!(read_metadata(&module, "m").unwrap(), None);
        let annotated = write_metadata(&module, &m, "m").unwrap();
        assert_eq!(read_metadata(&annotated, "m").unwrap().as_ref(), Some(&m));
        // Re-annotating replaces the section instead of adding a second one.
        m.mutating = true;
        let again = write_metadata(&annotated, &m, "m").unwrap();
        assert!(read_metadata(&again, "m").unwrap().unwrap().mutating);
        let count = sections(&again, "m")
            .unwrap()
            .iter()
            .filter(|s| metadata_payload(s).is_some())
            .count();
        assert_eq!(count, 1);
        // Still a valid module.
        wasmtime::Module::new(&wasmtime::Engine::default(), &again).unwrap();
    }

    #[test]
    fn rule_checks() {
        let mut m = Metadata::from_yaml(YAML, "m").unwrap();
        m.protocol_version = Some(ProtocolVersion::Unknown);
        m.rules[0].operations = vec!["CREATE".into(), "*".into()];
        assert!(m.validate("m").unwrap_err().to_string().contains("'*'"));
        m.rules[0].operations = vec!["PATCH".into()];
        assert!(m.validate("m").unwrap_err().to_string().contains("PATCH"));
        m.rules[0].operations = vec!["*".into()];
        m.execution_mode = ExecutionMode::KubewardenWapc;
        assert!(m.validate("m").unwrap_err().to_string().contains("v1"));
    }

    #[test]
    fn modes_are_decided_like_kwctl() {
        let rego = ModuleKind::Rego;
        assert!(matches!(
            decide_mode(None, None, rego, "p"),
            Err(ModeError::RegoNeedsFlavour { .. })
        ));
        assert_eq!(
            decide_mode(Some(ExecutionMode::Gatekeeper), None, rego, "p")
                .unwrap()
                .0,
            ExecutionMode::Gatekeeper
        );
        assert!(decide_mode(Some(ExecutionMode::Wasi), None, rego, "p").is_err());
        assert_eq!(
            decide_mode(None, None, ModuleKind::WasiCommand, "p")
                .unwrap()
                .0,
            ExecutionMode::Wasi
        );
        assert_eq!(
            decide_mode(None, None, ModuleKind::Wapc, "p").unwrap().0,
            ExecutionMode::KubewardenWapc
        );
        let mut m = Metadata::from_yaml(YAML, "m").unwrap();
        assert!(decide_mode(Some(ExecutionMode::Gatekeeper), Some(&m), rego, "p").is_err());
        m.execution_mode = ExecutionMode::Wasi;
        assert!(decide_mode(None, Some(&m), rego, "p").is_err());
        assert_eq!(module_kind(["memory", "opa_eval"]), ModuleKind::Rego);
        assert_eq!(module_kind(["_start", "__guest_call"]), ModuleKind::Wapc);
        assert_eq!(
            "kubewarden".parse::<ExecutionMode>().unwrap(),
            ExecutionMode::KubewardenWapc
        );
    }
}
