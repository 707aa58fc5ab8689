//! Property tests: stages survive JSON (the revision Secret's form and Go flights' output) and
//! YAML (`to_yaml`, and YAML sequences of sequences) unchanged, for arbitrary objects,
//! including strings that look like other YAML types.

use hoist_resources::{Resource, Stages, parse_flight_output, to_json, to_yaml};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Strings that stress YAML's implicit typing and quoting.
fn tricky_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("yes".to_string()),
        Just("No".to_string()),
        Just("on".to_string()),
        Just("y".to_string()),
        Just("~".to_string()),
        Just("null".to_string()),
        Just("0755".to_string()),
        Just("0x1F".to_string()),
        Just("1e3".to_string()),
        Just(".inf".to_string()),
        Just("-".to_string()),
        Just("- a".to_string()),
        Just("a: b".to_string()),
        Just("#x".to_string()),
        Just("'q'".to_string()),
        Just("\"".to_string()),
        Just("&a".to_string()),
        Just("*a".to_string()),
        Just("---".to_string()),
        Just("2026-11-30".to_string()),
        Just(" lead".to_string()),
        Just("trail ".to_string()),
        Just("multi\nline\n".to_string()),
        Just("tab\there".to_string()),
        "[ -~]{0,12}",
        "\\PC{0,8}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e15f64..1e15).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        tricky_string().prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((tricky_string(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn resource() -> impl Strategy<Value = Resource> {
    (
        prop_oneof![
            Just("ConfigMap".to_string()),
            Just("Namespace".to_string()),
            Just("CustomResourceDefinition".to_string()),
            "[A-Z][a-zA-Z]{0,8}",
            tricky_string().prop_filter("non-empty", |s| !s.is_empty()),
        ],
        prop_oneof![Just("v1".to_string()), tricky_string()],
        prop::collection::vec((tricky_string(), value()), 0..4),
    )
        .prop_map(|(kind, api_version, fields)| {
            let mut map: Map<String, Value> = fields.into_iter().collect();
            map.insert("kind".into(), Value::String(kind));
            map.insert("apiVersion".into(), Value::String(api_version));
            Resource::from_map(map).expect("kind is a non-empty string")
        })
}

fn stages() -> impl Strategy<Value = Stages> {
    prop::collection::vec(prop::collection::vec(resource(), 0..4), 1..4)
        .prop_filter("at least one object", |s| s.iter().any(|st| !st.is_empty()))
        .prop_map(Stages)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn stages_to_json_to_stages(stages in stages()) {
        let json = to_json(&stages);
        let back = parse_flight_output(json.as_bytes());
        prop_assert_eq!(back.as_ref().ok(), Some(&stages), "{}", json);
    }

    #[test]
    fn stages_to_yaml_to_stages(stages in stages()) {
        // `to_yaml` is one stream (stage boundaries are comments): it reads back as one stage.
        let yaml = to_yaml(&stages);
        let flat = Stages(vec![stages.iter().cloned().collect()]);
        let back = parse_flight_output(yaml.as_bytes());
        prop_assert_eq!(back.as_ref().ok(), Some(&flat), "{}", yaml);
        // As a YAML sequence of sequences, the stages themselves come back.
        let nested = serde_saphyr::to_string(&stages.0).expect("JSON values serialise");
        let back = parse_flight_output(nested.as_bytes());
        prop_assert_eq!(back.as_ref().ok(), Some(&stages), "{}", nested);
    }
}

/// A subnormal float that serde_json's default (fast, inexact) parser changed; the
/// `float_roundtrip` feature fixes it.
#[test]
fn json_keeps_subnormal_floats_exactly() {
    let out = br#"[{"kind":"ConfigMap","apiVersion":"v1","v":3.3527712437095642e-40}]"#;
    let stages = parse_flight_output(out).unwrap();
    let back = parse_flight_output(to_json(&stages).as_bytes()).unwrap();
    assert_eq!(back, stages);
    assert_eq!(
        stages.0[0][0].as_map()["v"].as_f64(),
        Some(3.3527712437095642e-40)
    );
}

/// Flight output YAML is read as Yoke reads it: Yoke's `internal.ParseStages` decodes through
/// `k8s.io/apimachinery/pkg/util/yaml` -> `sigs.k8s.io/yaml` -> `go.yaml.in/yaml/v2`, which
/// implements YAML 1.1 scalars: bare `yes`/`no`/`on`/`off`/`y`/`n` are booleans there too
/// (so a ConfigMap with `a: yes` fails in both tools, and quoting fixes it in both). This
/// differs on purpose from hoist-krm, which reads YAML 1.2 core as kpt's yaml.v3 does.
#[test]
fn flight_yaml_scalars_follow_yoke_yaml_1_1() {
    let out = b"kind: ConfigMap\napiVersion: v1\ndata:\n  a: yes\n  b: 'yes'\n  c: off\n  d: \"on\"\n  e: true\n  f: 12\n  g: ~\n";
    let stages = parse_flight_output(out).unwrap();
    let data = stages.0[0][0].as_map()["data"].clone();
    assert_eq!(
        data,
        serde_json::json!({"a": true, "b": "yes", "c": false, "d": "on", "e": true, "f": 12, "g": null})
    );
    // What hoist prints, it reads back unchanged (strings that look like booleans are quoted).
    let printed = to_yaml(&stages);
    assert_eq!(
        parse_flight_output(printed.as_bytes()).unwrap(),
        stages,
        "{printed}"
    );
}
