//! Parsing a flight's stdout into stages.

use crate::resource::{Resource, ResourceError, Stages, json_type_name};
use serde_json::Value;

/// Why a flight's output could not be turned into stages.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// Nothing but whitespace, comments or empty arrays.
    #[error(
        "the flight produced no resources (its output was empty); a flight must print at least one object with a `kind`"
    )]
    Empty,
    /// The bytes are not UTF-8 text.
    #[error("the flight's output is not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// Neither valid JSON nor valid YAML.
    #[error("the flight's output is not valid YAML or JSON: {message}")]
    Syntax {
        /// The parser's message, with its line and column.
        message: String,
    },
    /// The top-level shape is not one Yoke accepts.
    #[error(
        "{what}; expected a stream of objects, an array of objects (one stage) or an array of arrays of objects (stages)"
    )]
    Shape {
        /// What was found, and where.
        what: String,
    },
    /// One object is not a valid resource.
    #[error("{location}: {problem}")]
    Resource {
        /// Where the object is: `document 3`, or `stage 2, item 5`.
        location: String,
        /// What is wrong with it (not a `source`: the message already includes it).
        problem: ResourceError,
    },
}

/// Parses a flight's stdout into stages, exactly in the shapes Yoke accepts.
///
/// - A YAML or JSON stream of objects (documents separated by `---`, or concatenated JSON
///   values) is one stage; empty and comment-only documents are skipped.
/// - A single array of objects is one stage.
/// - A single array of arrays of objects is several stages, in order.
///
/// Every object must have a non-empty string `kind`. Output with no object at all is an
/// error. Pre-stages are not split here: see [`Stages::with_prestages`].
pub fn parse_flight_output(output: &[u8]) -> Result<Stages, OutputError> {
    let text = std::str::from_utf8(output).map_err(|e| OutputError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(OutputError::Empty);
    }

    let documents = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        // Fast path: JSON (what most Go flights print). Flow-style YAML that is not JSON
        // falls back to the YAML parser.
        match parse_json_stream(trimmed) {
            Ok(docs) => docs,
            Err(json_err) => parse_yaml_stream(text).map_err(|yaml_err| OutputError::Syntax {
                message: format!("as JSON: {json_err}; as YAML: {yaml_err}"),
            })?,
        }
    } else {
        parse_yaml_stream(text).map_err(|message| OutputError::Syntax { message })?
    };

    let stages = classify(documents)?;
    if stages.is_empty() {
        return Err(OutputError::Empty);
    }
    Ok(stages)
}

fn parse_json_stream(text: &str) -> Result<Vec<Value>, serde_json::Error> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .collect()
}

fn parse_yaml_stream(text: &str) -> Result<Vec<Value>, String> {
    serde_saphyr::from_multiple::<Value>(text).map_err(|e| e.to_string())
}

fn classify(documents: Vec<Value>) -> Result<Stages, OutputError> {
    let documents: Vec<Value> = documents.into_iter().filter(|d| !d.is_null()).collect();
    if let [Value::Array(_)] = documents.as_slice() {
        let Some(Value::Array(items)) = documents.into_iter().next() else {
            unreachable!("matched a single array above");
        };
        return classify_array(items);
    }

    let mut stage = Vec::with_capacity(documents.len());
    for (index, doc) in documents.into_iter().enumerate() {
        let location = || format!("document {}", index + 1);
        match doc {
            Value::Object(map) => {
                stage.push(
                    Resource::from_map(map).map_err(|problem| OutputError::Resource {
                        location: location(),
                        problem,
                    })?,
                )
            }
            other => {
                return Err(OutputError::Shape {
                    what: format!(
                        "{} of the output is {}, not an object",
                        location(),
                        json_type_name(&other)
                    ),
                });
            }
        }
    }
    Ok(Stages(vec![stage]))
}

fn classify_array(items: Vec<Value>) -> Result<Stages, OutputError> {
    let arrays = items.iter().filter(|v| v.is_array()).count();
    if arrays == 0 {
        return Ok(Stages(vec![objects_of(items, None)?]));
    }
    if arrays != items.len() {
        return Err(OutputError::Shape {
            what: "the output array mixes arrays (stages) with other values".into(),
        });
    }
    let mut stages = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let Value::Array(objects) = item else {
            unreachable!("every item was checked to be an array");
        };
        stages.push(objects_of(objects, Some(index + 1))?);
    }
    Ok(Stages(stages))
}

fn objects_of(items: Vec<Value>, stage: Option<usize>) -> Result<Vec<Resource>, OutputError> {
    items
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            Resource::from_value(value).map_err(|problem| OutputError::Resource {
                location: match stage {
                    Some(stage) => format!("stage {stage}, item {}", index + 1),
                    None => format!("item {}", index + 1),
                },
                problem,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(stages: &Stages) -> Vec<Vec<&str>> {
        stages
            .0
            .iter()
            .map(|s| s.iter().map(Resource::kind).collect())
            .collect()
    }

    #[test]
    fn yaml_stream_with_comments_and_empty_documents() {
        let out = b"# leading comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n# only a comment\n---\n\n---\nkind: Secret\nmetadata: {name: b}\n";
        let stages = parse_flight_output(out).unwrap();
        assert_eq!(kinds(&stages), vec![vec!["ConfigMap", "Secret"]]);
        assert_eq!(stages.0[0][1].name(), "b");
    }

    #[test]
    fn json_stream_of_concatenated_objects() {
        let out = br#"{"kind":"A","metadata":{"name":"x"}}
{"kind":"B"} {"kind":"C"}"#;
        assert_eq!(
            kinds(&parse_flight_output(out).unwrap()),
            vec![vec!["A", "B", "C"]]
        );
    }

    #[test]
    fn json_array_is_one_stage_and_array_of_arrays_is_stages() {
        let one = br#"[{"kind":"A"},{"kind":"B"}]"#;
        assert_eq!(
            kinds(&parse_flight_output(one).unwrap()),
            vec![vec!["A", "B"]]
        );
        let many = br#"[[{"kind":"A"}],[{"kind":"B"},{"kind":"C"}]]"#;
        assert_eq!(
            kinds(&parse_flight_output(many).unwrap()),
            vec![vec!["A"], vec!["B", "C"]]
        );
    }

    #[test]
    fn yaml_array_of_arrays_is_stages() {
        let out = b"- - kind: A\n- - kind: B\n  - kind: C\n";
        assert_eq!(
            kinds(&parse_flight_output(out).unwrap()),
            vec![vec!["A"], vec!["B", "C"]]
        );
    }

    #[test]
    fn flow_yaml_that_is_not_json_falls_back_to_yaml() {
        let out = b"{kind: A, metadata: {name: x}}";
        assert_eq!(kinds(&parse_flight_output(out).unwrap()), vec![vec!["A"]]);
    }

    #[test]
    fn empty_outputs_are_errors() {
        for out in [
            &b""[..],
            b"  \n\t",
            b"# nothing\n---\n",
            b"[]",
            b"[[]]",
            b"[[],[]]",
            b"null",
        ] {
            assert!(
                matches!(parse_flight_output(out), Err(OutputError::Empty)),
                "{:?}",
                String::from_utf8_lossy(out)
            );
        }
    }

    #[test]
    fn missing_kind_names_the_document() {
        let err = parse_flight_output(b"kind: A\n---\napiVersion: v1\nmetadata: {name: x}\n")
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("document 2"), "{msg}");
        assert!(msg.contains("no `kind`"), "{msg}");
        let err = parse_flight_output(br#"[[{"kind":"A"}],[{"kind":"B"},{}]]"#).unwrap_err();
        assert!(err.to_string().starts_with("stage 2, item 2"), "{err}");
    }

    #[test]
    fn wrong_shapes_are_errors() {
        for out in [
            &br#"[{"kind":"A"},[{"kind":"B"}]]"#[..],
            b"\"just a string\"",
            b"42",
            b"kind: A\n---\n- kind: B\n",
            b"[[1]]",
        ] {
            let err = parse_flight_output(out).unwrap_err();
            assert!(
                matches!(
                    err,
                    OutputError::Shape { .. } | OutputError::Resource { .. }
                ),
                "{err}"
            );
        }
    }

    #[test]
    fn invalid_yaml_and_bytes_are_errors() {
        let err = parse_flight_output(b"kind: A\n  bad: [unclosed\n").unwrap_err();
        assert!(matches!(err, OutputError::Syntax { .. }), "{err}");
        let err = parse_flight_output(b"{\"kind\": \"A\"").unwrap_err();
        assert!(matches!(err, OutputError::Syntax { .. }), "{err}");
        let err = parse_flight_output(b"kind: A\xff\xfe").unwrap_err();
        assert!(matches!(err, OutputError::NotUtf8 { offset: 7 }), "{err}");
    }

    #[test]
    fn billion_laughs_is_refused_not_expanded() {
        let mut out = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..12 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("a{}", i - 1)
            };
            out.push_str(&format!(
                "a{i}: &a{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        out.push_str("kind: Bomb\n");
        // Either refused by the parser's budget, or parsed without blowing up memory; both
        // must return promptly. serde-saphyr refuses it.
        assert!(parse_flight_output(out.as_bytes()).is_err());
    }
}
