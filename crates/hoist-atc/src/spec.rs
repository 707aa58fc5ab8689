//! The `yoke.cd/v1alpha1` types as the controller reads them (lenient: unknown fields are
//! ignored, missing ones take Yoke's defaults), names derived from them, Go durations.

use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// API group of Airways, Flights and ClusterFlights.
pub const GROUP: &str = "yoke.cd";
/// API version of Airways, Flights and ClusterFlights.
pub const API_VERSION: &str = "yoke.cd/v1alpha1";
/// Finalizer on Airways.
pub const AIRWAY_FINALIZER: &str = "yoke.cd/strip.airway";
/// Finalizer on instances, Flights and ClusterFlights.
pub const FLIGHT_FINALIZER: &str = "yoke.cd/mayday.flight";
/// The annotation naming the instance a child was rendered for.
pub use hoist_release::ownership::ANNOTATION_INSTANCE_REF;
/// `app.kubernetes.io/managed-by` of the controller's objects.
pub use hoist_release::ownership::MANAGED_BY_ATC as MANAGED_BY;
/// Annotation overriding an instance's flight URL.
pub const ANNOTATION_OVERRIDE_FLIGHT: &str = "overrides.yoke.cd/flight";
/// Annotation overriding an instance's mode.
pub const ANNOTATION_OVERRIDE_MODE: &str = "overrides.yoke.cd/mode";
/// Field manager of status and finalizer writes.
pub const STATUS_MANAGER: &str = "yoke.cd/atc";
/// Revisions kept per instance release when `historyCapSize` is 0 or unset.
pub const DEFAULT_HISTORY_CAP: i64 = 2;
/// Flight timeout when `timeout` is 0 or unset.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Memory cap when `maxMemoryMib` is 0 or unset (Wasm32's 4 GiB).
pub const DEFAULT_MAX_MEMORY_MIB: u64 = 4096;

/// How child changes are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Children are not watched (fix with `fixDriftInterval`).
    #[default]
    Standard,
    /// Changes to children are refused at admission.
    Static,
    /// Any child change re-runs the flight.
    Dynamic,
    /// Changes to looked-up objects re-run the flight.
    Subscription,
}

impl Mode {
    /// Parses a mode name; `None` for anything else.
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "standard" | "" => Some(Mode::Standard),
            "static" => Some(Mode::Static),
            "dynamic" => Some(Mode::Dynamic),
            "subscription" => Some(Mode::Subscription),
            _ => None,
        }
    }

    /// The mode's name as written in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Standard => "standard",
            Mode::Static => "static",
            Mode::Dynamic => "dynamic",
            Mode::Subscription => "subscription",
        }
    }
}

/// `spec.wasmUrls` of an Airway.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WasmUrls {
    /// The flight module.
    pub flight: String,
    /// Explicit sha256 of the flight.
    pub flight_checksum: String,
    /// The converter module (turns on the conversion webhook).
    pub converter: String,
    /// Explicit sha256 of the converter.
    pub converter_checksum: String,
}

/// `spec.prune` of Airways and Flights.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
pub struct Prune {
    /// Delete emitted CRDs instead of orphaning them.
    pub crds: bool,
    /// Delete emitted Namespaces instead of orphaning them.
    pub namespaces: bool,
}

/// The parts of an Airway's and a Flight's spec that drive a release.
#[derive(Debug, Clone, Default)]
pub struct RunSettings {
    /// Requeue period after each reconcile.
    pub fix_drift_interval: Option<Duration>,
    /// Lets the flight read the cluster.
    pub cluster_access: bool,
    /// Lookups beyond the release's own objects.
    pub resource_access_matchers: Vec<String>,
    /// OCI pulls without TLS verification.
    pub insecure: bool,
    /// Revisions kept (`None`: uncapped).
    pub history_cap: Option<usize>,
    /// Pruning of CRDs and Namespaces.
    pub prune: Prune,
    /// Memory cap in MiB.
    pub max_memory_mib: u64,
    /// Flight timeout (`None`: none).
    pub timeout: Option<Duration>,
}

/// An Airway's spec, as the controller uses it.
#[derive(Debug, Clone, Default)]
pub struct AirwaySpec {
    /// Module URLs.
    pub wasm_urls: WasmUrls,
    /// Sub-path of the instance sent on stdin.
    pub object_path: Vec<String>,
    /// The mode.
    pub mode: Mode,
    /// Admission allows instances without a dry run.
    pub skip_admission_webhook: bool,
    /// Release settings.
    pub run: RunSettings,
    /// The CRD template, as written.
    pub template: Value,
}

/// A Flight's or ClusterFlight's spec.
#[derive(Debug, Clone, Default)]
pub struct FlightSpec {
    /// The module.
    pub wasm_url: String,
    /// Explicit sha256.
    pub checksum: String,
    /// Raw stdin (wins over `input_object`).
    pub input: Option<String>,
    /// Object sent as JSON on stdin.
    pub input_object: Option<Value>,
    /// argv after argv0.
    pub args: Vec<String>,
    /// Release settings.
    pub run: RunSettings,
}

/// A spec field had the wrong shape.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct SpecError {
    /// The field, as a path.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn field<'a>(spec: &'a Value, name: &str) -> Option<&'a Value> {
    spec.get(name).filter(|v| !v.is_null())
}

fn bool_field(spec: &Value, name: &str) -> bool {
    field(spec, name).and_then(Value::as_bool).unwrap_or(false)
}

fn string_list(spec: &Value, name: &str) -> Result<Vec<String>, SpecError> {
    match field(spec, name) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| SpecError {
                    field: format!("spec.{name}"),
                    message: "expected a list of strings".into(),
                })
            })
            .collect(),
        Some(_) => Err(SpecError {
            field: format!("spec.{name}"),
            message: "expected a list of strings".into(),
        }),
    }
}

fn duration_field(spec: &Value, name: &str) -> Result<Option<i128>, SpecError> {
    match field(spec, name).and_then(Value::as_str) {
        None | Some("") => Ok(None),
        Some(text) => parse_go_duration(text)
            .map(Some)
            .map_err(|message| SpecError {
                field: format!("spec.{name}"),
                message,
            }),
    }
}

fn run_settings(spec: &Value) -> Result<RunSettings, SpecError> {
    let fix_drift_interval = duration_field(spec, "fixDriftInterval")?
        .filter(|n| *n > 0)
        .map(nanos_to_duration);
    let history_cap = match field(spec, "historyCapSize").and_then(Value::as_i64) {
        None | Some(0) => Some(DEFAULT_HISTORY_CAP as usize),
        Some(n) if n < 0 => None,
        Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
    };
    let timeout = match duration_field(spec, "timeout")? {
        None | Some(0) => Some(DEFAULT_TIMEOUT),
        Some(n) if n < 0 => None,
        Some(n) => Some(nanos_to_duration(n)),
    };
    let max_memory_mib = match field(spec, "maxMemoryMib").and_then(Value::as_u64) {
        None | Some(0) => DEFAULT_MAX_MEMORY_MIB,
        Some(n) => n.min(DEFAULT_MAX_MEMORY_MIB),
    };
    let prune = match field(spec, "prune") {
        Some(p) => serde_json::from_value(p.clone()).map_err(|e| SpecError {
            field: "spec.prune".into(),
            message: e.to_string(),
        })?,
        None => Prune::default(),
    };
    Ok(RunSettings {
        fix_drift_interval,
        cluster_access: bool_field(spec, "clusterAccess"),
        resource_access_matchers: string_list(spec, "resourceAccessMatchers")?,
        insecure: bool_field(spec, "insecure"),
        history_cap,
        prune,
        max_memory_mib,
        timeout,
    })
}

impl AirwaySpec {
    /// Reads the spec of an Airway object.
    pub fn from_object(airway: &Value) -> Result<AirwaySpec, SpecError> {
        let spec = airway.get("spec").cloned().unwrap_or(Value::Null);
        let wasm_urls: WasmUrls = match field(&spec, "wasmUrls") {
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| SpecError {
                field: "spec.wasmUrls".into(),
                message: e.to_string(),
            })?,
            None => WasmUrls::default(),
        };
        if wasm_urls.flight.is_empty() {
            return Err(SpecError {
                field: "spec.wasmUrls.flight".into(),
                message: "required".into(),
            });
        }
        let mode_name = field(&spec, "mode").and_then(Value::as_str).unwrap_or("");
        let mode = Mode::parse(mode_name).ok_or_else(|| SpecError {
            field: "spec.mode".into(),
            message: format!(
                "unknown mode {mode_name:?} (standard, static, dynamic or subscription)"
            ),
        })?;
        Ok(AirwaySpec {
            wasm_urls,
            object_path: string_list(&spec, "objectPath")?,
            mode,
            skip_admission_webhook: bool_field(&spec, "skipAdmissionWebhook"),
            run: run_settings(&spec)?,
            template: field(&spec, "template").cloned().unwrap_or(Value::Null),
        })
    }

    /// The template's group, kind, plural and whether it is cluster-scoped.
    pub fn names(&self) -> Result<TemplateNames, SpecError> {
        TemplateNames::of(&self.template)
    }
}

impl FlightSpec {
    /// Reads the spec of a Flight or ClusterFlight object.
    pub fn from_object(flight: &Value) -> Result<FlightSpec, SpecError> {
        let spec = flight.get("spec").cloned().unwrap_or(Value::Null);
        let wasm_url = field(&spec, "wasmUrl")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if wasm_url.is_empty() {
            return Err(SpecError {
                field: "spec.wasmUrl".into(),
                message: "required".into(),
            });
        }
        Ok(FlightSpec {
            wasm_url,
            checksum: field(&spec, "checksum")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            input: field(&spec, "input")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            input_object: field(&spec, "inputObject").cloned(),
            args: string_list(&spec, "args")?,
            run: run_settings(&spec)?,
        })
    }

    /// The flight's stdin: `input`, else `inputObject` as JSON, else nothing.
    pub fn stdin(&self) -> Vec<u8> {
        match (&self.input, &self.input_object) {
            (Some(input), _) => input.clone().into_bytes(),
            (None, Some(object)) => serde_json::to_vec(object).unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }
}

/// Names from a CRD template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateNames {
    /// API group.
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Plural resource name.
    pub plural: String,
    /// Cluster-scoped (else namespaced).
    pub cluster_scoped: bool,
    /// The storage version (the `storage: true` one).
    pub storage_version: String,
}

impl TemplateNames {
    /// Reads the names of a CRD spec (`template`).
    pub fn of(template: &Value) -> Result<TemplateNames, SpecError> {
        let text = |pointer: &str| {
            template
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let (group, kind, plural) = (text("/group"), text("/names/kind"), text("/names/plural"));
        for (value, name) in [
            (&group, "group"),
            (&kind, "names.kind"),
            (&plural, "names.plural"),
        ] {
            if value.is_empty() {
                return Err(SpecError {
                    field: format!("spec.template.{name}"),
                    message: "required".into(),
                });
            }
        }
        let storage_version = template
            .get("versions")
            .and_then(Value::as_array)
            .and_then(|versions| {
                versions
                    .iter()
                    .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
            })
            .and_then(|v| v.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if storage_version.is_empty() {
            return Err(SpecError {
                field: "spec.template.versions".into(),
                message: "no version is marked storage: true".into(),
            });
        }
        Ok(TemplateNames {
            group,
            kind,
            plural,
            cluster_scoped: text("/scope") == "Cluster",
            storage_version,
        })
    }

    /// `group/version` of the storage version.
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.storage_version)
    }

    /// The CRD (and Airway) name Kubernetes requires: `<plural>.<group>`.
    pub fn crd_name(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }
}

/// Yoke's release name of an instance: `<group>.<Kind>.<namespace>.<name>`, without the
/// namespace segment for cluster-scoped instances.
pub fn instance_release_name(
    group: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> String {
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{group}.{kind}.{ns}.{name}"),
        _ => format!("{group}.{kind}.{name}"),
    }
}

/// Yoke's reference string of an object: `<ns>/<Kind.group>:<name>` (`Kind` alone for the
/// core group; empty namespace for cluster-scoped objects).
pub fn object_ref(group: &str, kind: &str, namespace: Option<&str>, name: &str) -> String {
    let gk = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    format!("{}/{gk}:{name}", namespace.unwrap_or(""))
}

fn nanos_to_duration(nanos: i128) -> Duration {
    Duration::from_nanos(u64::try_from(nanos.max(0)).unwrap_or(u64::MAX))
}

/// Parses a Go duration (`300ms`, `-1.5h`, `2h45m`, `0`) into signed nanoseconds.
pub fn parse_go_duration(text: &str) -> Result<i128, String> {
    let bad = || format!("{text:?} is not a duration (examples: 500ms, 10s, 1m30s, -1s)");
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if number_end == 0 {
            return Err(bad());
        }
        let (number, after) = rest.split_at_checked(number_end).ok_or_else(bad)?;
        let number: f64 = number.parse().map_err(|_| bad())?;
        rest = after;
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let (unit, after) = rest.split_at_checked(unit_end).ok_or_else(bad)?;
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += number * scale;
        rest = after;
    }
    let nanos = total.round() as i128;
    Ok(if negative { -nanos } else { nanos })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("500ms").unwrap(), 500_000_000);
        assert_eq!(parse_go_duration("1m30s").unwrap(), 90_000_000_000);
        assert_eq!(parse_go_duration("1.5h").unwrap(), 5_400_000_000_000);
        assert_eq!(parse_go_duration("-1s").unwrap(), -1_000_000_000);
        assert_eq!(parse_go_duration("0").unwrap(), 0);
        assert_eq!(parse_go_duration("30ms").unwrap(), 30_000_000);
        // Units of more than one byte split where the next number starts.
        assert_eq!(parse_go_duration("2µs").unwrap(), 2_000);
        assert_eq!(parse_go_duration("1μs5ns").unwrap(), 1_005);
        for bad in ["", "s", "10", "1d", "1.2.3s", "-", "1é", "1µ"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_refs_as_yoke_writes_them() {
        assert_eq!(
            instance_release_name("examples.com", "Backend", Some("default"), "c4ts"),
            "examples.com.Backend.default.c4ts"
        );
        assert_eq!(
            instance_release_name("examples.com", "Cluster", None, "x"),
            "examples.com.Cluster.x"
        );
        assert_eq!(
            object_ref("examples.com", "Backend", Some("default"), "c4ts"),
            "default/Backend.examples.com:c4ts"
        );
        assert_eq!(
            object_ref("", "ConfigMap", Some("default"), "basic"),
            "default/ConfigMap:basic"
        );
        assert_eq!(
            object_ref("yoke.cd", "ClusterFlight", None, "x"),
            "/ClusterFlight.yoke.cd:x"
        );
    }

    #[test]
    fn airway_defaults_follow_yoke() {
        let airway = json!({"spec": {
            "wasmUrls": {"flight": "oci://r/f:1"},
            "template": {"group": "examples.com", "scope": "Namespaced",
                "names": {"kind": "Backend", "plural": "backends"},
                "versions": [{"name": "v1", "served": true, "storage": true}]}
        }});
        let spec = AirwaySpec::from_object(&airway).unwrap();
        assert_eq!(spec.mode, Mode::Standard);
        assert_eq!(spec.run.history_cap, Some(2));
        assert_eq!(spec.run.timeout, Some(DEFAULT_TIMEOUT));
        assert_eq!(spec.run.max_memory_mib, 4096);
        assert_eq!(spec.run.fix_drift_interval, None);
        let names = spec.names().unwrap();
        assert_eq!(names.crd_name(), "backends.examples.com");
        assert_eq!(names.api_version(), "examples.com/v1");
        assert!(!names.cluster_scoped);

        let airway = json!({"spec": {
            "wasmUrls": {"flight": "f.wasm"}, "historyCapSize": -1, "timeout": "-1s",
            "fixDriftInterval": "500ms", "mode": "dynamic", "maxMemoryMib": 64,
            "prune": {"crds": true},
            "template": {"group": "g", "names": {"kind": "K", "plural": "ks"}, "versions": [{"name": "v1"}]}
        }});
        let spec = AirwaySpec::from_object(&airway).unwrap();
        assert_eq!(spec.run.history_cap, None);
        assert_eq!(spec.run.timeout, None);
        assert_eq!(
            spec.run.fix_drift_interval,
            Some(Duration::from_millis(500))
        );
        assert_eq!(spec.mode, Mode::Dynamic);
        assert_eq!(spec.run.max_memory_mib, 64);
        assert!(spec.run.prune.crds && !spec.run.prune.namespaces);
        let err = spec.names().unwrap_err().to_string();
        assert!(err.contains("storage: true"), "{err}");

        let err = AirwaySpec::from_object(&json!({"spec": {"wasmUrls": {}}})).unwrap_err();
        assert!(err.to_string().contains("spec.wasmUrls.flight"));
        let err = AirwaySpec::from_object(
            &json!({"spec": {"wasmUrls": {"flight": "x"}, "mode": "wild"}}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown mode"));
    }

    #[test]
    fn flight_stdin() {
        let f = FlightSpec::from_object(
            &json!({"spec": {"wasmUrl": "x", "input": "a: b", "inputObject": {"c": 1}}}),
        )
        .unwrap();
        assert_eq!(f.stdin(), b"a: b");
        let f = FlightSpec::from_object(
            &json!({"spec": {"wasmUrl": "x", "inputObject": {"c": 1}, "args": ["-v"]}}),
        )
        .unwrap();
        assert_eq!(f.stdin(), br#"{"c":1}"#);
        assert_eq!(f.args, vec!["-v"]);
        assert!(FlightSpec::from_object(&json!({"spec": {}})).is_err());
    }
}
