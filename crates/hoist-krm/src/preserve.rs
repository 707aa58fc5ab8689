//! Comment-preserving write-back of changed YAML files, as kyaml does for kpt: a changed
//! document is written again from its new value, and then everything of the original that
//! still applies is carried over by YAML path: head comments and blank lines above a node,
//! a line's trailing comment, the original text (quoting style, spacing) of every line whose
//! value did not change, the original field order, and the file's sequence indentation
//! (`compact` or `wide`). A document whose value did not change is copied byte for byte.
//!
//! Paths come from the spans of a real YAML event parser (granit-parser, the parser under
//! serde-saphyr), so comments inside block scalars are never mistaken for comments.

use granit_parser::{Event, Parser, ScalarStyle, StructureStyle};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// How a file indents block sequences under a mapping key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqIndent {
    /// `key:\n- item` (kyaml's default).
    Compact,
    /// `key:\n  - item`.
    Wide,
}

/// One document of a YAML stream, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocText {
    /// The document's lines (without the `---` separator line).
    pub text: String,
}

/// What the parser tells about one document: for each line, the deepest YAML path of a node
/// that starts on it, whether that node is a single-line scalar, where its value ends, and
/// which lines are inside multi-line scalars.
#[derive(Debug, Default)]
struct LineMap {
    /// line (0-based) -> path of the deepest node starting there.
    path_at: BTreeMap<usize, String>,
    /// path -> line (0-based) where it starts (its key, or its `- ` for sequence items).
    line_of: BTreeMap<String, usize>,
    /// line -> char column just after a single-line scalar value (for trailing comments).
    value_end: BTreeMap<usize, usize>,
    /// Lines inside (not the first line of) multi-line scalars or flow collections.
    inner: BTreeSet<usize>,
    /// Lines holding a flow collection or block scalar start (their text is never reused).
    complex: BTreeSet<usize>,
    /// Paths of outermost flow collections (`[...]`, `{...}`) that are mapping values.
    flow: BTreeSet<String>,
}

#[derive(Debug)]
enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Escapes a mapping key for use as a path segment.
fn seg(key: &str) -> String {
    key.replace('\\', "\\\\").replace('.', "\\.")
}

impl LineMap {
    fn build(text: &str) -> Option<LineMap> {
        let mut map = LineMap::default();
        let mut stack: Vec<Frame> = Vec::new();
        // Flow collections: depth > 0 means inside `[...]`/`{...}`.
        let mut flow_depth = 0usize;
        let mut flow_start_line = 0usize;
        for ev in Parser::new_from_str(text) {
            let (ev, span) = ev.ok()?;
            let line = span.start.line().saturating_sub(1);
            // The path of the node this event starts, and advance the parent.
            let node_path = |stack: &mut Vec<Frame>| -> Option<String> {
                match stack.last_mut() {
                    None => Some(String::new()),
                    Some(Frame::Seq { path, next }) => {
                        let p = format!("{path}[{next}]");
                        *next += 1;
                        Some(p)
                    }
                    Some(Frame::Map { path, key }) => key.take().map(|k| join(path, &seg(&k))),
                }
            };
            match ev {
                Event::Scalar(value, style, _, _) => {
                    // A scalar is a key when its parent mapping waits for one.
                    if let Some(Frame::Map { key, path }) = stack.last_mut()
                        && key.is_none()
                    {
                        let p = join(path, &seg(&value));
                        *key = Some(value.into_owned());
                        if flow_depth == 0 {
                            map.record(line, &p);
                        }
                        continue;
                    }
                    let Some(p) = node_path(&mut stack) else {
                        continue;
                    };
                    let end_line = span.end.line().saturating_sub(1);
                    if flow_depth == 0 {
                        if matches!(stack.last(), Some(Frame::Seq { .. })) {
                            map.record(line, &p);
                        }
                        if end_line > line {
                            map.inner.extend(line + 1..=end_line);
                            map.complex.insert(line);
                        } else if matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
                            map.complex.insert(line);
                        } else {
                            map.value_end.insert(line, span.end.col());
                        }
                    }
                }
                Event::SequenceStart(style, _, _) | Event::MappingStart(style, _, _) => {
                    let is_seq = matches!(ev, Event::SequenceStart(..));
                    let p = node_path(&mut stack).unwrap_or_default();
                    if style == StructureStyle::Flow {
                        if flow_depth == 0 {
                            if matches!(stack.last(), Some(Frame::Map { .. })) {
                                map.flow.insert(p.clone());
                            }
                            flow_start_line = line;
                            map.complex.insert(line);
                            if matches!(stack.last(), Some(Frame::Seq { .. })) {
                                map.record(line, &p);
                            }
                        }
                        flow_depth += 1;
                    } else if flow_depth == 0 && matches!(stack.last(), Some(Frame::Seq { .. })) {
                        map.record(line, &p);
                    }
                    stack.push(if is_seq {
                        Frame::Seq { path: p, next: 0 }
                    } else {
                        Frame::Map { path: p, key: None }
                    });
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    stack.pop();
                    if flow_depth > 0 {
                        flow_depth -= 1;
                        if flow_depth == 0 {
                            let end_line = span.end.line().saturating_sub(1);
                            if end_line > flow_start_line {
                                map.inner.extend(flow_start_line + 1..=end_line);
                            }
                        }
                    }
                }
                Event::Alias(_) | Event::UnresolvedAlias(_) => {
                    let _ = node_path(&mut stack);
                    map.complex.insert(line);
                }
                _ => {}
            }
        }
        Some(map)
    }

    fn record(&mut self, line: usize, path: &str) {
        // The deepest path wins: a later (deeper) node on the same line overrides.
        self.path_at.insert(line, path.to_string());
        self.line_of.entry(path.to_string()).or_insert(line);
    }
}

/// The value at a path built by [`LineMap`] (`a.b[2].c`, with `\\.` escapes in keys).
fn value_at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    let mut key = String::new();
    let mut has_key = false;
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                key.push(chars.next()?);
                has_key = true;
            }
            '.' | '[' => {
                if has_key {
                    cur = cur.get(key.as_str())?;
                    key.clear();
                    has_key = false;
                }
                if c == '[' {
                    let n: String = chars.by_ref().take_while(|&c| c != ']').collect();
                    cur = cur.get(n.parse::<usize>().ok()?)?;
                }
            }
            c => {
                key.push(c);
                has_key = true;
            }
        }
    }
    if has_key {
        cur = cur.get(key.as_str())?;
    }
    Some(cur)
}

/// Detects a document's sequence indentation: the first block sequence item under a mapping
/// key decides (`wide` when its dash is indented past the key).
pub fn detect_seq_indent(text: &str) -> SeqIndent {
    let lines: Vec<&str> = text.lines().collect();
    let mut prev: Option<(usize, &str)> = None;
    for l in &lines {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let indent = l.len() - t.len();
        if (t.starts_with("- ") || t == "-")
            && let Some((pi, pt)) = prev
            && pt.ends_with(':')
            && !pt.starts_with("- ")
        {
            return if indent > pi {
                SeqIndent::Wide
            } else {
                SeqIndent::Compact
            };
        }
        prev = Some((indent, t));
    }
    SeqIndent::Compact
}

/// Reorders the mappings of `new` so that keys also present in `old` come first, in `old`'s
/// order (kyaml syncs field order from a function's input to its output); new keys follow
/// in their own order. Sequence items are matched by index.
pub fn sync_order(old: &Value, new: &mut Value) {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut taken: Map<String, Value> = Map::new();
            for k in o.keys() {
                if let Some(v) = n.remove(k) {
                    taken.insert(k.clone(), v);
                }
            }
            let rest = std::mem::take(n);
            for (k, v) in taken.into_iter().chain(rest) {
                n.insert(k, v);
            }
            for (k, v) in n.iter_mut() {
                if let Some(ov) = o.get(k) {
                    sync_order(ov, v);
                }
            }
        }
        (Value::Array(o), Value::Array(n)) => {
            for (ov, nv) in o.iter().zip(n.iter_mut()) {
                sync_order(ov, nv);
            }
        }
        _ => {}
    }
}

fn is_comment_or_blank(l: &str) -> bool {
    let t = l.trim_start();
    t.is_empty() || t.starts_with('#')
}

fn indent_of(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

/// Moves `text`'s lines by `delta` columns (never past column 0).
fn reindent(line: &str, delta: isize) -> String {
    let t = line.trim_start();
    if t.is_empty() {
        return String::new();
    }
    let ind = indent_of(line) as isize + delta;
    format!("{}{t}", " ".repeat(ind.max(0) as usize))
}

/// The trailing `# comment` of a line after char column `end` (where its value ends).
fn trailing_comment(line: &str, end: usize) -> Option<&str> {
    let byte = line.char_indices().nth(end).map(|(i, _)| i)?;
    let rest = line.get(byte..)?;
    let t = rest.trim_start();
    (t.starts_with('#') && rest.len() > t.len()).then_some(t)
}

/// A scalar as a flow-context YAML scalar: plain when it reads back as the same string,
/// double-quoted (JSON escapes are valid YAML) otherwise.
fn flow_scalar(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let plain = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
                && s != "-"
                && crate::yaml::parse_one(s)
                    .ok()
                    .is_some_and(|back| back == Value::String(s.clone()));
            if plain {
                s.clone()
            } else {
                serde_json::to_string(s).ok()?
            }
        }
        Value::Array(_) | Value::Object(_) => return None,
    })
}

/// A collection as one line of flow YAML (`[a, b]`, `{k: v}`), nested collections included;
/// `None` for anything else.
fn flow_text(v: &Value) -> Option<String> {
    let item = |v: &Value| match v {
        Value::Array(_) | Value::Object(_) => flow_text(v),
        other => flow_scalar(other),
    };
    match v {
        Value::Array(items) => {
            let parts: Option<Vec<String>> = items.iter().map(item).collect();
            Some(format!("[{}]", parts?.join(", ")))
        }
        Value::Object(map) => {
            let parts: Option<Vec<String>> = map
                .iter()
                .map(|(k, v)| {
                    Some(format!(
                        "{}: {}",
                        flow_scalar(&Value::String(k.clone()))?,
                        item(v)?
                    ))
                })
                .collect();
            Some(format!("{{{}}}", parts?.join(", ")))
        }
        _ => None,
    }
}

/// Writes `new` (the changed value of the document whose original text and value are
/// `old_text` and `old`) as YAML, carrying the original's comments, formatting and order
/// over, as described in the module docs.
pub fn carry_over(old_text: &str, old: &Value, new: &Value, indent: SeqIndent) -> String {
    if old == new {
        let mut s = old_text.to_string();
        if !s.ends_with('\n') {
            s.push('\n');
        }
        return s;
    }
    let mut new = new.clone();
    sync_order(old, &mut new);
    let emitted = crate::yaml::emit_with(&new, indent == SeqIndent::Compact);
    let (Some(old_map), Some(new_map)) = (LineMap::build(old_text), LineMap::build(&emitted))
    else {
        return emitted;
    };
    let old_lines: Vec<&str> = old_text.lines().collect();
    let mut out = String::with_capacity(emitted.len() + old_text.len() / 4);
    let mut used_head: BTreeSet<usize> = BTreeSet::new();
    // Lines of a block collection written in flow style instead: skip while deeper than this.
    let mut skip_under: Option<usize> = None;
    for (n, line) in emitted.lines().enumerate() {
        if let Some(key_indent) = skip_under {
            let t = line.trim_start();
            let ind = indent_of(line);
            if !t.is_empty()
                && (ind > key_indent || (ind == key_indent && (t == "-" || t.starts_with("- "))))
            {
                continue;
            }
            skip_under = None;
        }
        let Some(path) = new_map.path_at.get(&n) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let Some(&ol) = old_map.line_of.get(path) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        // Only carry over from a line where this same path is the deepest node.
        let same_line = old_map.path_at.get(&ol) == Some(path);
        let old_line = old_lines.get(ol).copied().unwrap_or("");
        let delta = indent_of(line) as isize - indent_of(old_line) as isize;
        // Head comments and blank lines directly above the original line.
        let mut head = Vec::new();
        let mut k = ol;
        while k > 0 {
            let prev = k - 1;
            let Some(pl) = old_lines.get(prev) else { break };
            if !is_comment_or_blank(pl) || old_map.inner.contains(&prev) {
                break;
            }
            head.push(prev);
            k = prev;
        }
        head.reverse();
        for h in head {
            if used_head.insert(h)
                && let Some(hl) = old_lines.get(h)
            {
                if hl.trim().is_empty() {
                    out.push('\n');
                } else {
                    out.push_str(&reindent(hl, delta));
                    out.push('\n');
                }
            }
        }
        // A collection the original wrote in flow style stays in flow style (kyaml keeps a
        // node's style): the original line when the value is unchanged, else the new value
        // in flow style, on the key's line.
        let trimmed = line.trim_start();
        if old_map.flow.contains(path)
            && same_line
            && trimmed.ends_with(':')
            && !trimmed.starts_with("- ")
            && let Some(nv) = value_at(&new, path)
            && let Some(flow) = flow_text(nv)
        {
            let ov = value_at(old, path);
            let single_line = !old_map.inner.contains(&(ol + 1));
            if ov == Some(nv) && single_line {
                out.push_str(&reindent(old_line, delta));
            } else {
                out.push_str(line);
                out.push(' ');
                out.push_str(&flow);
            }
            out.push('\n');
            skip_under = Some(indent_of(line));
            continue;
        }
        let simple = same_line
            && !old_map.complex.contains(&ol)
            && !new_map.complex.contains(&n)
            && old_map.value_end.contains_key(&ol)
            && new_map.value_end.contains_key(&n);
        let unchanged =
            simple && value_at(old, path).is_some_and(|ov| value_at(&new, path) == Some(ov));
        if unchanged {
            out.push_str(&reindent(old_line, delta));
        } else {
            out.push_str(line);
            if same_line
                && let Some(end) = old_map.value_end.get(&ol)
                && let Some(c) = trailing_comment(old_line, *end)
            {
                out.push(' ');
                out.push_str(c);
            }
        }
        out.push('\n');
    }
    // Comments after the last node of the original document.
    let tail: Vec<&str> = old_lines
        .iter()
        .rev()
        .take_while(|l| is_comment_or_blank(l))
        .copied()
        .collect();
    for l in tail.iter().rev() {
        if !l.trim().is_empty() {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Splits a YAML stream into its documents' texts (separator lines `---` removed).
/// Comment-only stretches (a header before a leading `---`, comments between documents) stay
/// with the document that follows; trailing ones with the last document.
pub fn split_documents(text: &str) -> Vec<DocText> {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = String::new();
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if bare == "---" {
            parts.push(std::mem::take(&mut cur));
            continue;
        }
        cur.push_str(line);
    }
    parts.push(cur);
    let mut docs: Vec<DocText> = Vec::new();
    let mut pending = String::new();
    for p in parts {
        if p.lines().all(is_comment_or_blank) {
            pending.push_str(&p);
            continue;
        }
        docs.push(DocText {
            text: std::mem::take(&mut pending) + &p,
        });
    }
    if !pending.trim().is_empty()
        && let Some(last) = docs.last_mut()
    {
        last.text.push_str(&pending);
    }
    docs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse_one;

    fn roundtrip(old_text: &str, change: impl FnOnce(&mut Value)) -> String {
        let old = parse_one(old_text).unwrap();
        let mut new = old.clone();
        change(&mut new);
        let out = carry_over(old_text, &old, &new, detect_seq_indent(old_text));
        assert_eq!(parse_one(&out).unwrap(), {
            let mut n = new.clone();
            sync_order(&old, &mut n);
            n
        });
        out
    }

    const DEPLOY: &str = "# The web tier.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web # the name
  namespace: default
  labels: {app: web}
spec:
  replicas: 2

  # Pods
  template:
    spec:
      containers:
        - name: web
          image: 'nginx:1.27'  # pinned
          args:
            - --port=80
          command: |
            # not a comment
            run
";

    #[test]
    fn unchanged_documents_are_copied_byte_for_byte() {
        let old = parse_one(DEPLOY).unwrap();
        assert_eq!(carry_over(DEPLOY, &old, &old, SeqIndent::Wide), DEPLOY);
    }

    #[test]
    fn keeps_comments_quoting_order_and_wide_sequences() {
        let out = roundtrip(DEPLOY, |v| {
            v["metadata"]["namespace"] = "prod".into();
            v["spec"]["replicas"] = 3.into();
            // A function that re-orders keys: the original order wins.
            let meta = v["metadata"].as_object_mut().unwrap();
            let name = meta.remove("name").unwrap();
            meta.insert("name".into(), name);
            meta.insert("annotations".into(), serde_json::json!({"team": "a"}));
        });
        let want = "# The web tier.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web # the name
  namespace: prod
  labels: {app: web}
  annotations:
    team: a
spec:
  replicas: 3

  # Pods
  template:
    spec:
      containers:
        - name: web
          image: 'nginx:1.27'  # pinned
          args:
            - --port=80
          command: |
            # not a comment
            run
";
        assert_eq!(out, want);
    }

    #[test]
    fn a_changed_value_keeps_its_trailing_comment_and_compact_style() {
        let text = "a:\n- x: 1 # one\n  y: keep\n# end\n";
        let out = roundtrip(text, |v| v["a"][0]["x"] = 2.into());
        assert_eq!(out, "a:\n- x: 2 # one\n  y: keep\n# end\n");
        assert_eq!(detect_seq_indent(text), SeqIndent::Compact);
        assert_eq!(detect_seq_indent(DEPLOY), SeqIndent::Wide);
    }

    #[test]
    fn flow_collections_keep_flow_style() {
        let text = "metadata:\n  labels: {app: web, \"x y\": '1'} # keep\nspec:\n  args: [--a, \"b\"]\n  nested: {ports: [80, 443], on: true}\n  count: 1\n";
        // Unchanged flow collections keep their exact text while a neighbour changes.
        let out = roundtrip(text, |v| v["spec"]["count"] = 2.into());
        assert_eq!(out, text.replace("count: 1", "count: 2"));
        // Changed ones are written in flow style again (quoting only what needs it).
        let out = roundtrip(text, |v| {
            v["metadata"]["labels"]["tier"] = "front end".into();
            v["spec"]["args"][1] = "true".into();
            v["spec"]["nested"]["ports"][0] = 8080.into();
        });
        assert_eq!(
            out,
            "metadata:\n  labels: {app: web, \"x y\": \"1\", tier: \"front end\"}\nspec:\n  args: [--a, \"true\"]\n  nested: {ports: [8080, 443], on: true}\n  count: 1\n"
        );
        // A flow collection inside a block sequence of a changed document, and one that
        // became empty.
        let text = "items:\n- name: a\n  tags: [x, y]\n- name: b\n  tags: [z]\n";
        let out = roundtrip(text, |v| {
            v["items"][1]["tags"] = serde_json::json!(["z", "w"]);
            v["items"][0]["tags"] = serde_json::json!([]);
        });
        assert_eq!(
            out,
            "items:\n- name: a\n  tags: []\n- name: b\n  tags: [z, w]\n"
        );
    }

    #[test]
    fn splits_streams() {
        let docs = split_documents("---\na: 1\n---\n# c\nb: 2\n");
        assert_eq!(
            docs.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
            ["a: 1\n", "# c\nb: 2\n"]
        );
        let docs = split_documents("# head\n---\na: 1\n---\n");
        assert_eq!(
            docs.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
            ["# head\na: 1\n"]
        );
    }

    #[test]
    fn paths_resolve() {
        let v = serde_json::json!({"a": {"b.c": [1, {"d": 2}]}});
        assert_eq!(value_at(&v, "a.b\\.c[1].d"), Some(&serde_json::json!(2)));
        assert_eq!(value_at(&v, "a.b\\.c[0]"), Some(&serde_json::json!(1)));
        assert_eq!(value_at(&v, ""), Some(&v));
        assert_eq!(value_at(&v, "a.x"), None);
    }
}
