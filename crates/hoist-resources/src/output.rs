//! Printing stages as YAML or JSON.

use crate::resource::Stages;

/// Stages as a multi-document YAML stream, with a comment line opening each stage so a
/// reader sees where one stage ends (`# stage 1 of 3`).
pub fn to_yaml(stages: &Stages) -> String {
    let mut out = String::new();
    let total = stages.0.len();
    for (index, stage) in stages.0.iter().enumerate() {
        out.push_str(&format!("# stage {} of {total}\n", index + 1));
        for resource in stage {
            out.push_str("---\n");
            // Serialising a JSON map cannot fail: keys are strings and values are JSON.
            match serde_saphyr::to_string(resource) {
                Ok(yaml) => out.push_str(&yaml),
                Err(e) => out.push_str(&format!("# could not print as YAML: {e}\n")),
            }
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    out
}

/// Stages as pretty JSON: `[[...], ...]`, one array per stage.
pub fn to_json(stages: &Stages) -> String {
    let mut out = serde_json::to_string_pretty(&stages.0).unwrap_or_else(|_| "[]".to_string());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_flight_output;

    #[test]
    fn yaml_round_trips_and_marks_stages() {
        let stages = parse_flight_output(
            br#"[[{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"a"}}],
                 [{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"b"},"data":{"k":"yes","n":"1"}}]]"#,
        )
        .unwrap();
        let yaml = to_yaml(&stages);
        assert!(yaml.starts_with("# stage 1 of 2\n---\n"), "{yaml}");
        assert!(yaml.contains("# stage 2 of 2\n---\n"), "{yaml}");
        let back = parse_flight_output(yaml.as_bytes()).unwrap();
        // The stream flattens into one stage, but every object survives unchanged, including
        // strings that look like other YAML types.
        assert_eq!(back.0[0], stages.0.concat());
    }

    #[test]
    fn json_is_array_of_arrays() {
        let stages = parse_flight_output(b"kind: A\n---\nkind: B\n").unwrap();
        let json: serde_json::Value = serde_json::from_str(&to_json(&stages)).unwrap();
        assert_eq!(json, serde_json::json!([[{"kind": "A"}, {"kind": "B"}]]));
    }
}
