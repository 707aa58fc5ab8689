//! YAML in and out, as ordered JSON values (field order is kept both ways).

use serde_json::Value;

/// Parses one YAML (or JSON) document.
pub fn parse_one(text: &str) -> Result<Value, String> {
    let docs = parse_all(text)?;
    match docs.len() {
        0 => Ok(Value::Null),
        1 => Ok(docs.into_iter().next().unwrap_or(Value::Null)),
        n => Err(format!("expected one YAML document, found {n}")),
    }
}

/// The reader's options: YAML 1.2 core schema, as Go's yaml.v3 (kpt, kyaml, Kubernetes) reads
/// untyped values: only `true`/`false` (any case form) are booleans, so `yes`, `no`, `on`,
/// `off`, `y` and `n` stay strings; `0755` is not a legacy octal number.
fn options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.strict_booleans = true;
    o.legacy_octal_numbers = false;
    o
}

/// Parses every document of a YAML stream; empty documents are dropped.
pub fn parse_all(text: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, options()).map_err(|e| first_lines(&e))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn first_lines(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().take(6).collect();
    lines.join("\n")
}

/// Emits one document as YAML (block style, 2-space indent, compact sequences, as kyaml).
pub fn emit(v: &Value) -> String {
    emit_with(v, true)
}

/// Emits one document as YAML with compact (`key:\n- a`) or wide (`key:\n  - a`) sequences.
pub fn emit_with(v: &Value, compact_sequences: bool) -> String {
    let mut options = serde_saphyr::SerializerOptions::default();
    options.indent_step = 2;
    options.compact_list_indent = compact_sequences;
    let mut s = serde_saphyr::to_string_with_options(v, options)
        .unwrap_or_else(|e| format!("# hoist could not write this document as YAML: {e}\n"));
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// Emits documents as a multi-document stream separated by `---`.
pub fn emit_all(docs: &[Value]) -> String {
    docs.iter().map(emit).collect::<Vec<_>>().join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_order_and_quoting() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  annotations:\n    x: \"true\"\ndata:\n  b: \"1\"\n  a: yes-no\nlist:\n- a\n- b\n";
        let v = parse_one(text).unwrap();
        assert_eq!(v["metadata"]["annotations"]["x"], json!("true"));
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["apiVersion", "kind", "metadata", "data", "list"]);
        let out = emit(&v);
        let back = parse_one(&out).unwrap();
        assert_eq!(v, back, "{out}");
        assert!(
            out.starts_with("apiVersion: v1\nkind: ConfigMap\n"),
            "{out}"
        );
    }

    #[test]
    fn yaml_1_2_core_keeps_yes_no_on_off_as_strings() {
        let text = "data:\n  a: yes\n  b: no\n  c: on\n  d: off\n  e: y\n  f: n\n  g: true\n  h: False\n  i: \"yes\"\n";
        let v = parse_one(text).unwrap();
        for (k, want) in [
            ("a", "yes"),
            ("b", "no"),
            ("c", "on"),
            ("d", "off"),
            ("e", "y"),
            ("f", "n"),
            ("i", "yes"),
        ] {
            assert_eq!(v["data"][k], json!(want), "{k}");
        }
        assert_eq!(v["data"]["g"], json!(true));
        assert_eq!(v["data"]["h"], json!(false));
        // Written back, the strings are quoted so that YAML 1.1 readers keep them strings too.
        let out = emit(&v);
        let back = parse_one(&out).unwrap();
        assert_eq!(back, v, "{out}");
        assert!(!out.contains("a: yes\n"), "{out}");
    }

    #[test]
    fn multi_document_streams() {
        let docs = parse_all("a: 1\n---\n---\nb: 2\n").unwrap();
        assert_eq!(docs, vec![json!({"a": 1}), json!({"b": 2})]);
        let out = emit_all(&docs);
        assert_eq!(parse_all(&out).unwrap(), docs);
        assert!(parse_one("a: [").is_err());
    }
}
