//! Exporting a module's globals, so that a snapshot can restore them.
//!
//! Go's js/wasm code keeps a few registers in wasm globals that it does not export (SP, the
//! current goroutine, scratch registers). [`export_globals`] adds an export
//! `hoist.global.N` for each global the module defines; nothing else changes, so the module
//! behaves exactly as before.

/// Prefix of the exports [`export_globals`] adds (`hoist.global.0`, ...).
pub const GLOBAL_EXPORT_PREFIX: &str = "hoist.global.";

use hoist_runtime::leb128::{read_u64 as read_leb, write as write_leb};

/// Skips a name (a length-prefixed byte string).
fn skip_name(bytes: &[u8], pos: &mut usize) -> Option<()> {
    let n = usize::try_from(read_leb(bytes, pos)?).ok()?;
    *pos = pos.checked_add(n)?;
    (*pos <= bytes.len()).then_some(())
}

/// How many globals the import section imports (`None` for an import kind this reader does
/// not know, so the module is left alone).
fn imported_globals(payload: &[u8]) -> Option<u64> {
    let mut pos = 0;
    let count = read_leb(payload, &mut pos)?;
    let mut globals = 0;
    for _ in 0..count {
        skip_name(payload, &mut pos)?;
        skip_name(payload, &mut pos)?;
        let kind = *payload.get(pos)?;
        pos += 1;
        match kind {
            0x00 => {
                read_leb(payload, &mut pos)?;
            }
            0x03 => {
                // value type (single byte for numeric types) and mutability
                let ty = *payload.get(pos)?;
                if !matches!(ty, 0x7f | 0x7e | 0x7d | 0x7c | 0x7b | 0x70 | 0x6f) {
                    return None;
                }
                pos += 2;
                globals += 1;
            }
            0x02 => {
                let flags = read_leb(payload, &mut pos)?;
                read_leb(payload, &mut pos)?;
                if flags & 1 != 0 {
                    read_leb(payload, &mut pos)?;
                }
            }
            _ => return None,
        }
    }
    Some(globals)
}

/// The module with an export `hoist.global.N` added for each global it defines (N is the
/// global's index), or `None` when it is not a module this can rewrite (no export section,
/// an unknown import kind, malformed sections, or already rewritten).
pub fn export_globals(wasm: &[u8]) -> Option<Vec<u8>> {
    let header = wasm.get(..8)?;
    if header != b"\0asm\x01\0\0\0" {
        return None;
    }
    let mut pos = 8;
    let mut sections = Vec::new();
    while pos < wasm.len() {
        let id = *wasm.get(pos)?;
        pos += 1;
        let size = usize::try_from(read_leb(wasm, &mut pos)?).ok()?;
        let start = pos;
        let end = start.checked_add(size)?;
        wasm.get(start..end)?;
        sections.push((id, start, end));
        pos = end;
    }
    let payload = |id: u8| {
        sections
            .iter()
            .find(|(i, _, _)| *i == id)
            .and_then(|(_, s, e)| wasm.get(*s..*e))
    };
    let imported = match payload(2) {
        Some(p) => imported_globals(p)?,
        None => 0,
    };
    let defined = match payload(6) {
        Some(p) => read_leb(p, &mut 0)?,
        None => 0,
    };
    let exports = payload(7)?;
    if defined == 0 {
        return None;
    }
    let mut epos = 0;
    let count = read_leb(exports, &mut epos)?;
    let rest = exports.get(epos..)?;
    if rest
        .windows(GLOBAL_EXPORT_PREFIX.len())
        .any(|w| w == GLOBAL_EXPORT_PREFIX.as_bytes())
    {
        return None;
    }
    let mut new_payload = Vec::with_capacity(exports.len() + 24 * defined as usize);
    write_leb(&mut new_payload, count.checked_add(defined)?);
    new_payload.extend_from_slice(rest);
    for i in imported..imported.checked_add(defined)? {
        let name = format!("{GLOBAL_EXPORT_PREFIX}{i}");
        write_leb(&mut new_payload, name.len() as u64);
        new_payload.extend_from_slice(name.as_bytes());
        new_payload.push(0x03);
        write_leb(&mut new_payload, i);
    }
    let mut out = Vec::with_capacity(wasm.len() + new_payload.len());
    out.extend_from_slice(header);
    for (id, start, end) in sections {
        out.push(id);
        if id == 7 {
            write_leb(&mut out, new_payload.len() as u64);
            out.extend_from_slice(&new_payload);
        } else {
            write_leb(&mut out, (end - start) as u64);
            out.extend_from_slice(wasm.get(start..end)?);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globals_become_exports_and_nothing_else_changes() {
        let wasm = wat::parse_str(
            r#"(module
                (import "gojs" "f" (func $f (param i32)))
                (import "env" "g" (global $ig i32))
                (memory (export "mem") 1)
                (global $sp (mut i32) (i32.const 7))
                (global $g (mut i64) (i64.const -3))
                (func (export "bump") (global.set $sp (i32.add (global.get $sp) (i32.const 1))))
            )"#,
        )
        .unwrap();
        let out = export_globals(&wasm).expect("rewritten");
        // Rewriting again is refused (already done).
        assert!(export_globals(&out).is_none());
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, &out).unwrap();
        let names: Vec<String> = module.exports().map(|e| e.name().to_string()).collect();
        assert_eq!(names, ["mem", "bump", "hoist.global.1", "hoist.global.2"]);
        let mut store = wasmtime::Store::new(&engine, ());
        let mut linker = wasmtime::Linker::new(&engine);
        linker.func_wrap("gojs", "f", |_: i32| {}).unwrap();
        let ig = wasmtime::Global::new(
            &mut store,
            wasmtime::GlobalType::new(wasmtime::ValType::I32, wasmtime::Mutability::Const),
            wasmtime::Val::I32(1),
        )
        .unwrap();
        linker.define(&store, "env", "g", ig).unwrap();
        let inst = linker.instantiate(&mut store, &module).unwrap();
        let sp = inst.get_global(&mut store, "hoist.global.1").unwrap();
        assert_eq!(sp.get(&mut store).i32(), Some(7));
        let bump = inst.get_typed_func::<(), ()>(&mut store, "bump").unwrap();
        bump.call(&mut store, ()).unwrap();
        assert_eq!(sp.get(&mut store).i32(), Some(8));
        sp.set(&mut store, wasmtime::Val::I32(100)).unwrap();
        bump.call(&mut store, ()).unwrap();
        assert_eq!(sp.get(&mut store).i32(), Some(101));
        let g = inst.get_global(&mut store, "hoist.global.2").unwrap();
        assert_eq!(g.get(&mut store).i64(), Some(-3));
        // Not wasm, or nothing to export: left alone.
        assert!(export_globals(b"not wasm").is_none());
        let plain = wat::parse_str(r#"(module (func (export "f")))"#).unwrap();
        assert!(export_globals(&plain).is_none());
    }
}
