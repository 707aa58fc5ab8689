//! Targets for the crates that link wasmtime (KRM functions, policies, the Go js/wasm host).
//! None of them runs a guest: they fuzz the parsers and decoders around the guests.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::targets::EMPTY_MODULE;
use crate::{parts, text_part};

/// ResourceLists and KRM YAML: a parsed ResourceList survives `to_yaml` and `to_value`; a
/// YAML stream survives `emit_all`; Kptfile pipelines are read from every document.
pub fn krm_resource_list(data: &[u8]) {
    use hoist_krm::kptfile::Pipeline;
    use hoist_krm::resource_list::ResourceList;
    use hoist_krm::yaml;

    let text = String::from_utf8_lossy(data);
    if let Ok(list) = ResourceList::parse(&text) {
        let yaml_text = list.to_yaml();
        let again = ResourceList::parse(&yaml_text);
        assert_eq!(
            again.as_ref().map(ResourceList::to_value).ok(),
            Some(list.to_value()),
            "ResourceList YAML round trip of {yaml_text}"
        );
        let from_value = ResourceList::from_value(&list.to_value());
        assert_eq!(
            from_value.as_ref().map(ResourceList::to_value).ok(),
            Some(list.to_value())
        );
    }
    if let Ok(docs) = yaml::parse_all(&text) {
        let emitted = yaml::emit_all(&docs);
        assert_eq!(
            yaml::parse_all(&emitted).as_ref(),
            Ok(&docs),
            "YAML stream round trip of {emitted}"
        );
        for doc in &docs {
            let _ = Pipeline::from_kptfile(doc);
        }
    }
}

/// A kpt package read from disk and written back in place unchanged: nothing is written or
/// deleted, and every file stays byte-identical. Input: `Kptfile NUL a.yaml NUL sub/b.yaml`.
pub fn krm_package(data: &[u8]) {
    use hoist_krm::package::{Originals, read_package, write_in_place};
    use hoist_krm::yaml;

    let p = parts(data, 3);
    let Ok(dir) = tempfile::tempdir() else { return };
    let root = dir.path();
    let files = ["Kptfile", "a.yaml", "sub/b.yaml"];
    for (name, content) in files.iter().zip(&p) {
        let path = root.join(name);
        if let Some(parent) = path.parent()
            && std::fs::create_dir_all(parent).is_err()
        {
            return;
        }
        if std::fs::write(&path, content).is_err() {
            return;
        }
    }
    let mut originals = Originals::default();
    let Ok(items) = read_package(root, true, "", &mut originals) else {
        return;
    };
    let before: Vec<Option<Vec<u8>>> = files
        .iter()
        .map(|f| std::fs::read(root.join(f)).ok())
        .collect();
    let summary = write_in_place(root, &items, &originals, "fuzz");
    let summary = summary.unwrap_or_else(|e| panic!("writing back what was read failed: {e}"));
    assert!(
        summary.written.is_empty(),
        "an unchanged package was rewritten: {summary:?}"
    );
    // As kpt (kyaml's LocalPackageReadWriter) does, a file that was read but holds no object
    // (empty, only comments or `---`) is deleted on write-back; nothing else may be.
    let holds_objects = |name: &str| {
        let i = files.iter().position(|f| *f == name);
        let content = i.and_then(|i| p.get(i)).copied().unwrap_or_default();
        yaml::parse_all(&String::from_utf8_lossy(content)).map_or(true, |docs| !docs.is_empty())
    };
    for deleted in &summary.deleted {
        assert!(
            !holds_objects(deleted.as_str()),
            "an unchanged package lost {deleted}, which holds objects: {summary:?}"
        );
    }
    let after: Vec<Option<Vec<u8>>> = files
        .iter()
        .map(|f| std::fs::read(root.join(f)).ok())
        .collect();
    for ((name, before), after) in files.iter().zip(&before).zip(&after) {
        if summary.deleted.iter().any(|d| d.as_str() == *name) {
            continue;
        }
        assert_eq!(
            before, after,
            "{name}: an unchanged file must stay byte-identical"
        );
    }
}

/// AdmissionReview / AdmissionRequest / raw request parsing, `metadata.yml` and the
/// `io.kubewarden.metadata` section. Metadata written into a module reads back equal.
/// Input: one flag byte (bit 0: raw request), then the bytes, read as all three.
pub fn policy_admission(data: &[u8]) {
    use hoist_policy::metadata::{Metadata, read_metadata, write_metadata};
    use hoist_policy::response::{ValidateRequest, validation_payload};

    let (flags, body) = data.split_first().unwrap_or((&0, &[]));
    if let Ok(request) = ValidateRequest::parse(body, flags & 1 == 1, "fuzz") {
        let _ = (request.uid(), request.original_object(), request.is_raw());
        let payload = validation_payload(&request, &json!({"a": 1}));
        let payload: Value = serde_json::from_slice(&payload)
            .unwrap_or_else(|e| panic!("the validate payload is not JSON: {e}"));
        assert_eq!(payload.get("request"), Some(request.value()));
    }
    // The bytes as a whole module (framing of the section reader).
    let _ = read_metadata(body, "fuzz");
    // The bytes as the metadata section's JSON.
    if let Ok(section) = hoist_provenance::signature::section::append_custom_section(
        EMPTY_MODULE,
        b"io.kubewarden.metadata",
        body,
    ) {
        let read = read_metadata(&section, "fuzz");
        let parsed = serde_json::from_slice::<Metadata>(body);
        assert_eq!(read.is_ok(), parsed.is_ok());
    }
    let text = String::from_utf8_lossy(body);
    if let Ok(metadata) = Metadata::from_yaml(&text, "fuzz") {
        let _ = metadata.validate("fuzz");
        if let Ok(module) = write_metadata(EMPTY_MODULE, &metadata, "fuzz") {
            let back = read_metadata(&module, "fuzz");
            assert_eq!(
                back.as_ref().ok().and_then(Option::as_ref),
                Some(&metadata),
                "metadata written into a module reads back differently"
            );
        }
    }
}

fn at(bytes: &[u8], i: usize) -> u8 {
    bytes.get(i).copied().unwrap_or(0)
}

fn same(a: &hoist_gojs::Value, b: &hoist_gojs::Value) -> bool {
    use hoist_gojs::Value as V;
    match (a, b) {
        (V::Undefined, V::Undefined) | (V::Null, V::Null) => true,
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Number(x), V::Number(y)) => x == y || (x.is_nan() && y.is_nan()),
        (V::String(x), V::String(y)) => x == y,
        (V::Object(x), V::Object(y)) => x.same(y),
        _ => false,
    }
}

/// The gojs value table (NaN-boxed refs, ids, refcounts) driven by a program of operations as
/// a Go program drives it: a stored value loads back as itself while Go holds a reference,
/// ids are never confused, and any ref Go invents decodes to a value or a `BadRef`, never a
/// panic. Object property and index operations run on arbitrary names and indexes. Arrays,
/// strings and property names metered against a small JS heap limit never hold more than it,
/// and give back every byte once they are gone.
pub fn gojs_values(data: &[u8]) {
    use hoist_gojs::Value as V;
    use hoist_gojs::value::{HeapMeter, JsStr, Obj, ObjKind, Values, number_to_string};

    let meter = HeapMeter::new(1 << 20);
    let metered_bytes = Obj::try_metered(&meter, 3, || ObjKind::Bytes(vec![4, 5, 6]))
        .unwrap_or_else(|e| panic!("3 bytes are refused by a 1 MiB meter: {e}"));
    let mut table = Values::new(Obj::plain(vec![]), Obj::plain(vec![]));
    let mut pool: Vec<V> = vec![
        V::Undefined,
        V::Null,
        V::Bool(true),
        V::Bool(false),
        V::Number(0.0),
        V::Number(f64::NAN),
        V::Object(Obj::plain(vec![])),
        V::Object(Obj::new(ObjKind::Array(vec![]))),
        V::Object(Obj::new(ObjKind::Bytes(vec![1, 2, 3]))),
        V::Object(Obj::metered(&meter, ObjKind::Array(vec![]))),
        V::Object(metered_bytes),
    ];
    // Refs Go holds: ref -> (value, count).
    let mut held: HashMap<u64, (V, u64)> = HashMap::new();
    let mut input = data;
    let mut take = |n: usize| -> Option<Vec<u8>> {
        let (head, rest) = input.split_at_checked(n)?;
        input = rest;
        Some(head.to_vec())
    };
    let word = |b: &[u8]| -> u64 {
        let mut w = [0u8; 8];
        for (slot, byte) in w.iter_mut().zip(b) {
            *slot = *byte;
        }
        u64::from_le_bytes(w)
    };
    while let Some(op) = take(1) {
        let op = op.first().copied().unwrap_or(0);
        let pick = |pool: &Vec<V>, i: u8| pool.get(usize::from(i) % pool.len()).cloned();
        match op % 8 {
            0 => {
                let Some(i) = take(1) else { break };
                let Some(v) = pick(&pool, at(&i, 0)) else {
                    break;
                };
                let r = table.store(&v);
                let loaded = table
                    .load(r)
                    .unwrap_or_else(|e| panic!("a stored value does not load: {e}"));
                assert!(
                    same(&v, &loaded),
                    "{v:?} stored as {r:#x} loads as {loaded:?}"
                );
                if matches!(v, V::String(_) | V::Object(_)) {
                    held.entry(r).or_insert((v, 0)).1 += 1;
                }
            }
            1 => {
                let Some(b) = take(8) else { break };
                let _ = table.load(word(&b));
            }
            2 => {
                let Some(b) = take(4) else { break };
                let id = word(&b) as u32;
                table.finalize(id);
                held.retain(|r, (_, count)| {
                    if *r as u32 == id {
                        *count = count.saturating_sub(1);
                    }
                    *count > 0
                });
            }
            3 => {
                let Some(b) = take(8) else { break };
                let n = f64::from_bits(word(&b));
                let s = number_to_string(n);
                if n.is_finite() {
                    assert_eq!(s.parse::<f64>().ok(), Some(n), "{n:?} printed as {s:?}");
                }
                pool.push(V::Number(n));
                pool.push(V::string(&s));
            }
            4 => {
                let Some(len) = take(1) else { break };
                let len = len.first().copied().unwrap_or(0);
                let Some(s) = take(usize::from(len % 32)) else {
                    break;
                };
                let s = String::from_utf8_lossy(&s);
                if len & 0x80 == 0 {
                    pool.push(V::string(&s));
                } else if let Ok(s) = JsStr::try_metered(&meter, &s) {
                    // As `js.ValueOf(s)` makes it: charged until its last copy is gone.
                    pool.push(V::String(s));
                }
            }
            5 => {
                // o[name] = v, o[name], delete o[name]
                let Some(b) = take(3) else { break };
                let (Some(V::Object(o)), Some(v), Some(V::String(name))) = (
                    pick(&pool, at(&b, 0)),
                    pick(&pool, at(&b, 1)),
                    pick(&pool, at(&b, 2)),
                ) else {
                    continue;
                };
                if at(&b, 1) & 1 == 1 {
                    // As a guest's `o.Set(name, v)`: a new name is charged.
                    let _ = o.set_by_guest(&meter, &name, v);
                } else {
                    o.set(&name, v);
                }
                let _ = o.get(&name);
                let _ = (o.length(), o.is_function());
                if at(&b, 0) & 1 == 1 {
                    o.delete(&name);
                }
            }
            6 => {
                // o[i] = v, o[i]
                let Some(b) = take(10) else { break };
                let (Some(V::Object(o)), Some(v)) =
                    (pick(&pool, at(&b, 0)), pick(&pool, at(&b, 1)))
                else {
                    continue;
                };
                let i = word(b.get(2..).unwrap_or_default()) as i64;
                if at(&b, 1) & 1 == 1 {
                    let _ = o.set_index_by_guest(&meter, i, v);
                } else {
                    o.set_index(i, v);
                }
                let _ = o.index(i);
            }
            _ => {
                let Some(i) = take(1) else { break };
                if let Some(v) = pick(&pool, at(&i, 0)) {
                    let _ = (v.to_js_string(), v.type_of(), v.truthy(), v.get("length"));
                }
            }
        }
        assert!(
            meter.used() <= meter.limit(),
            "metered arrays, strings and names hold {} bytes, over the limit of {}",
            meter.used(),
            meter.limit()
        );
        let _ = meter.take_refused();
        for (r, (v, _)) in &held {
            let loaded = table
                .load(*r)
                .unwrap_or_else(|e| panic!("a held ref {r:#x} no longer loads: {e}"));
            assert!(
                same(v, &loaded),
                "held {v:?} at {r:#x} now loads as {loaded:?}"
            );
        }
    }
    // Inputs can put an object in itself, and Rc frees no cycle: empty the objects this input
    // made, so one input's garbage does not pile up over millions of runs.
    for v in &pool {
        if let V::Object(o) = v {
            let mut data = o.borrow_mut();
            data.props.clear();
            if let ObjKind::Array(items) = &mut data.kind {
                items.clear();
            }
        }
    }
    drop((pool, table, held));
    assert_eq!(
        meter.used(),
        0,
        "dropped arrays, strings or names were not refunded"
    );
}

/// The OPA JSON bridge: JSON a Rego module dumps becomes builtin arguments and result sets,
/// which become AdmissionResponses (OPA: the module's `response` with the request's uid;
/// Gatekeeper: violations). Input: one byte choosing a builtin, then JSON (an array is the
/// argument list); `name NUL JSON` calls a builtin by name.
pub fn opa_bridge(data: &[u8]) {
    use hoist_policy::ExecutionMode;
    use hoist_policy::fuzzing::{interpret, interpret_bytes};

    let (selector, rest) = data.split_first().unwrap_or((&0, &[]));
    let p = parts(rest, 2);
    let (name, json_bytes) = if p.len() == 2 {
        (text_part(&p, 0), p.get(1).copied().unwrap_or_default())
    } else {
        // The builtins hoist implements, in the order the corpus's selectors were made for.
        let builtins = hoist_policy::builtins::IMPLEMENTED;
        let name = builtins
            .get(usize::from(*selector) % builtins.len().max(1))
            .copied()
            .unwrap_or("sprintf");
        (name.to_string(), rest)
    };
    let Ok(value) = serde_json::from_slice::<Value>(json_bytes) else {
        return;
    };
    let args = match &value {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    let _ = hoist_policy::builtins::call(&name, &args);
    let opa = interpret(ExecutionMode::Opa, "fuzz-uid", &value);
    assert_eq!(
        opa.uid, "fuzz-uid",
        "the OPA response keeps the request's uid"
    );
    let gatekeeper = interpret(ExecutionMode::Gatekeeper, "fuzz-uid", &value);
    assert_eq!(gatekeeper.uid, "fuzz-uid");
    // Evaluations read the result straight from its bytes: the same answers as from the tree.
    for (mode, from_tree) in [
        (ExecutionMode::Opa, &opa),
        (ExecutionMode::Gatekeeper, &gatekeeper),
    ] {
        assert_eq!(
            &interpret_bytes(mode, "fuzz-uid", json_bytes),
            from_tree,
            "{mode:?}: reading the result's bytes disagrees with reading its Value"
        );
    }
    let _ = (opa.to_json_line(), gatekeeper.to_json_line());
}
