//! Resuming Go `GOOS=wasip1` commands from the point where they first read stdin, so that a
//! policy or KRM function called many times in one process pays Go's start-up once.
//!
//! Why this works: Go's wasm port keeps all of a goroutine's state in linear memory (its
//! stack, with a return address in every frame) and in a few globals (SP, CTXT, g, RET0-3,
//! PAUSE). It never needs the Wasm call stack to continue: when it unwinds (to switch
//! goroutines), `wasm_pc_f_loop` calls whichever function the 8 bytes below SP name, at the
//! block they name, and every `RET` leaves its caller's return address there. So the state
//! of a Go command when it first calls `fd_read` on stdin (after the runtime, every package
//! initialiser and `main` up to the read) is memory plus globals, and a fresh instance can be
//! started from it: put memory and globals back, point the slot below SP at the start of the
//! `fd_read` wrapper (which reads its arguments from the Go stack again, so the read happens
//! anew, on the new stdin), and call the loop.
//!
//! Wasm exports neither the loop nor the globals. [`prepare`] adds exports for them
//! (`hoist:go-resume`, `hoist:go-global:N`) and for each `fd_read` wrapper with its table
//! slot (`hoist:go-read:FUNC:SLOT`); no code changes, so a prepared module behaves exactly as
//! the original. It is applied where modules are compiled, so cached code has the exports.
//!
//! What a resumed run shares with the run it was taken from, by construction: argv and the
//! environment (the caller keys snapshots by them), and whatever the runtime drew from
//! `random_get` before the read (map hash seeds, the seed of `math/rand`'s global source).
//! Clocks stay live; [`ProcessClock`] keeps the monotonic clock from going backwards between
//! instances of one process.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;
use wasmtime::{AsContextMut, Caller, Extern, Instance, Module, Val, WasmBacktrace};

/// The export that runs Go's `wasm_pc_f_loop`.
const RESUME_EXPORT: &str = "hoist:go-resume";
/// Prefix of the exports of mutable globals (`hoist:go-global:INDEX`).
const GLOBAL_PREFIX: &str = "hoist:go-global:";
/// Prefix of the exports of `fd_read` wrappers (`hoist:go-read:FUNC:SLOT`).
const READ_PREFIX: &str = "hoist:go-read:";
const PAGE: usize = 65536;

/// Adds the exports a resume needs to a Go `GOOS=wasip1` module; `None` for any other module,
/// which then runs as it is.
pub fn prepare(wasm: &[u8]) -> Option<Vec<u8>> {
    let layout = scan(wasm)?;
    let mut out = Vec::with_capacity(wasm.len() + 256);
    out.extend_from_slice(wasm.get(..8)?);
    for section in raw_sections(wasm)? {
        if section.id == 7 {
            let body = wasm.get(section.content.clone())?;
            let mut exports = Vec::new();
            let (count, used) = read_leb(body)?;
            let mut added = 0u32;
            let mut add = |name: &str, kind: u8, index: u32, to: &mut Vec<u8>| {
                write_leb(to, name.len() as u32);
                to.extend_from_slice(name.as_bytes());
                to.push(kind);
                write_leb(to, index);
                added += 1;
            };
            let mut extra = Vec::new();
            add(RESUME_EXPORT, 0, layout.loop_func, &mut extra);
            for &global in &layout.mutable_globals {
                add(&format!("{GLOBAL_PREFIX}{global}"), 3, global, &mut extra);
            }
            for &(func, slot) in &layout.read_wrappers {
                add(&format!("{READ_PREFIX}{func}:{slot}"), 0, func, &mut extra);
            }
            write_leb(&mut exports, count.checked_add(added)?);
            exports.extend_from_slice(body.get(used..)?);
            exports.extend_from_slice(&extra);
            out.push(7);
            write_leb(&mut out, u32::try_from(exports.len()).ok()?);
            out.extend_from_slice(&exports);
        } else {
            out.extend_from_slice(wasm.get(section.whole)?);
        }
    }
    Some(out)
}

struct Scan {
    loop_func: u32,
    mutable_globals: Vec<u32>,
    read_wrappers: Vec<(u32, u32)>,
}

/// Finds Go's loop and `fd_read` wrappers by shape, since Go modules are usually stripped of
/// their name section (`-ldflags=-s`): `_start` is `_rt0_wasm_wasip1`, whose last call is to
/// `wasm_pc_f_loop` (type `[] -> []`); a wrapper is a small function that calls the
/// `fd_read` import.
fn scan(wasm: &[u8]) -> Option<Scan> {
    use wasmparser::{
        CompositeInnerType, ElementItems, ElementKind, ExternalKind, Operator, Payload, TypeRef,
    };
    let mut func_imports = 0u32;
    let mut global_imports = 0u32;
    let mut fd_read_import = None;
    let mut mutable_globals = Vec::new();
    let mut slots: HashMap<u32, u32> = HashMap::new();
    let mut start_func = None;
    let mut empty_types: Vec<bool> = Vec::new(); // per type: is it [] -> []
    let mut func_types: Vec<u32> = Vec::new(); // per function (imports first)
    let mut code_index = 0u32;
    let mut loop_func = None;
    let mut read_funcs = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload.ok()? {
            Payload::TypeSection(reader) => {
                for group in reader {
                    for sub in group.ok()?.into_types() {
                        empty_types.push(match &sub.composite_type.inner {
                            CompositeInnerType::Func(f) => {
                                f.params().is_empty() && f.results().is_empty()
                            }
                            _ => false,
                        });
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.ok()?;
                    if import.module == "gojs" || import.module == "go" {
                        return None;
                    }
                    match import.ty {
                        TypeRef::Func(ty) | TypeRef::FuncExact(ty) => {
                            if import.module == "wasi_snapshot_preview1" && import.name == "fd_read"
                            {
                                fd_read_import = Some(func_imports);
                            }
                            func_types.push(ty);
                            func_imports += 1;
                        }
                        TypeRef::Global(_) => global_imports += 1,
                        _ => {}
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader {
                    func_types.push(ty.ok()?);
                }
            }
            Payload::GlobalSection(reader) => {
                for (i, global) in reader.into_iter().enumerate() {
                    if global.ok()?.ty.mutable {
                        mutable_globals.push(global_imports + u32::try_from(i).ok()?);
                    }
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.ok()?;
                    if export.name.starts_with("hoist:") {
                        return None; // prepared already
                    }
                    if export.name == "_start" && export.kind == ExternalKind::Func {
                        start_func = Some(export.index);
                    }
                }
            }
            Payload::ElementSection(reader) => {
                for element in reader {
                    let element = element.ok()?;
                    let ElementKind::Active {
                        table_index,
                        offset_expr,
                    } = element.kind
                    else {
                        continue;
                    };
                    if table_index.unwrap_or(0) != 0 {
                        continue;
                    }
                    let base = match offset_expr.get_operators_reader().read().ok()? {
                        Operator::I32Const { value } => u32::try_from(value).ok()?,
                        _ => continue,
                    };
                    if let ElementItems::Functions(funcs) = element.items {
                        for (i, func) in funcs.into_iter().enumerate() {
                            let slot = base.checked_add(u32::try_from(i).ok()?)?;
                            slots.insert(func.ok()?, slot);
                        }
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                let func = func_imports.checked_add(code_index)?;
                code_index += 1;
                let is_start = start_func == Some(func);
                if !is_start && body.range().len() > 96 {
                    continue;
                }
                let mut last_call = None;
                let mut reader = body.get_operators_reader().ok()?;
                while !reader.eof() {
                    if let Operator::Call { function_index } = reader.read().ok()? {
                        if Some(function_index) == fd_read_import {
                            read_funcs.push(func);
                        }
                        last_call = Some(function_index);
                    }
                }
                if is_start {
                    loop_func = last_call;
                }
            }
            _ => {}
        }
    }
    let loop_func = loop_func?;
    let loop_type = *func_types.get(usize::try_from(loop_func).ok()?)?;
    if loop_func < func_imports || !*empty_types.get(usize::try_from(loop_type).ok()?)? {
        return None;
    }
    let read_wrappers: Vec<(u32, u32)> = read_funcs
        .iter()
        .filter_map(|func| slots.get(func).map(|slot| (*func, *slot)))
        .collect();
    // Go's SP is global 0, a mutable i32 defined by the module.
    if read_wrappers.is_empty() || mutable_globals.first() != Some(&0) {
        return None;
    }
    Some(Scan {
        loop_func,
        mutable_globals,
        read_wrappers,
    })
}

struct RawSection {
    id: u8,
    whole: std::ops::Range<usize>,
    content: std::ops::Range<usize>,
}

fn raw_sections(wasm: &[u8]) -> Option<Vec<RawSection>> {
    let mut sections = Vec::new();
    let mut at = 8usize;
    while at < wasm.len() {
        let id = *wasm.get(at)?;
        let (size, used) = read_leb(wasm.get(at + 1..)?)?;
        let start = at + 1 + used;
        let end = start.checked_add(size as usize)?;
        if end > wasm.len() {
            return None;
        }
        sections.push(RawSection {
            id,
            whole: at..end,
            content: start..end,
        });
        at = end;
    }
    Some(sections)
}

fn read_leb(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut used = 0;
    crate::leb128::read_u32(bytes, &mut used).map(|value| (value, used))
}

fn write_leb(out: &mut Vec<u8>, value: u32) {
    crate::leb128::write(out, u64::from(value));
}

/// What a compiled module offers for resuming: found from the exports [`prepare`] added.
#[derive(Debug, Clone)]
pub struct GoLayout {
    read_slots: HashMap<u32, u32>,
    globals: Vec<String>,
}

impl GoLayout {
    /// The layout of a prepared Go wasip1 module; `None` when `module` was not prepared.
    pub fn of(module: &Module) -> Option<GoLayout> {
        let mut read_slots = HashMap::new();
        let mut globals = Vec::new();
        let mut resume = false;
        for export in module.exports() {
            let name = export.name();
            if name == RESUME_EXPORT {
                resume = true;
            } else if let Some(rest) = name.strip_prefix(READ_PREFIX) {
                let (func, slot) = rest.split_once(':')?;
                read_slots.insert(func.parse().ok()?, slot.parse().ok()?);
            } else if name.starts_with(GLOBAL_PREFIX) {
                globals.push(name.to_string());
            }
        }
        let sp = format!("{GLOBAL_PREFIX}0");
        (resume && !read_slots.is_empty() && globals.contains(&sp)).then_some(GoLayout {
            read_slots,
            globals,
        })
    }
}

/// Why no resume point was taken.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotResumable {
    /// The read did not come from a known `fd_read` wrapper.
    #[error("the read did not come straight from Go's fd_read wrapper")]
    UnknownCaller,
    /// An export the layout promised is missing or of the wrong type.
    #[error("the instance lacks {0}")]
    Missing(String),
}

/// A Go command's state at its first read of stdin, to start other instances from.
pub struct ResumePoint {
    memory: Vec<u8>,
    globals: Vec<(String, Val)>,
    /// The table slot of the `fd_read` wrapper that was reading, and Go's SP at the time.
    slot: u32,
    sp: u32,
    /// Pages that differ from a fresh instance's memory, found on the first resume.
    dirty: OnceLock<Vec<std::ops::Range<usize>>>,
}

impl std::fmt::Debug for ResumePoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumePoint")
            .field("memory_bytes", &self.memory.len())
            .field("slot", &self.slot)
            .field("sp", &self.sp)
            .finish()
    }
}

impl ResumePoint {
    /// Takes the state of the instance `caller` belongs to; call it from an `fd_read` host
    /// function, before it reads anything.
    pub fn capture<T: 'static>(
        caller: &mut Caller<'_, T>,
        layout: &GoLayout,
    ) -> Result<ResumePoint, NotResumable> {
        let backtrace = WasmBacktrace::force_capture(&*caller);
        let func = backtrace
            .frames()
            .first()
            .map(|f| f.func_index())
            .ok_or(NotResumable::UnknownCaller)?;
        let slot = *layout
            .read_slots
            .get(&func)
            .ok_or(NotResumable::UnknownCaller)?;
        let mut globals = Vec::with_capacity(layout.globals.len());
        for name in &layout.globals {
            match caller.get_export(name) {
                Some(Extern::Global(global)) => {
                    globals.push((name.clone(), global.get(&mut *caller)))
                }
                _ => return Err(NotResumable::Missing(name.clone())),
            }
        }
        let sp = globals
            .iter()
            .find(|(n, _)| n.ends_with(":0") && n.starts_with(GLOBAL_PREFIX))
            .and_then(|(_, v)| v.i32())
            .ok_or_else(|| NotResumable::Missing("Go's SP (global 0)".into()))?;
        let memory = match caller.get_export("memory") {
            Some(Extern::Memory(memory)) => memory.data(&*caller).to_vec(),
            _ => return Err(NotResumable::Missing("memory".into())),
        };
        Ok(ResumePoint {
            memory,
            globals,
            slot,
            sp: sp as u32,
            dirty: OnceLock::new(),
        })
    }

    /// Bytes of linear memory kept.
    pub fn memory_bytes(&self) -> usize {
        self.memory.len()
    }

    /// Puts the state back into `instance` (freshly instantiated from the same prepared
    /// module, with the same argv and environment) and runs it from the read to its end;
    /// the result is `_start`'s (a `proc_exit` is an [`wasmtime_wasi::I32Exit`] error).
    pub fn resume<T: 'static>(
        &self,
        mut store: impl AsContextMut<Data = T>,
        instance: &Instance,
    ) -> wasmtime::Result<()> {
        let mut store = store.as_context_mut();
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| wasmtime::format_err!("the instance exports no memory"))?;
        let fresh_len = memory.data_size(&store);
        if fresh_len > self.memory.len() {
            wasmtime::bail!("a fresh instance has more memory than the resume point");
        }
        let grow = (self.memory.len() - fresh_len) / PAGE;
        if grow > 0 {
            memory.grow(&mut store, grow as u64)?;
        }
        let dirty = self.dirty.get_or_init(|| {
            let fresh = memory.data(&store);
            let dirty = changed_pages(fresh.get(..fresh_len).unwrap_or_default(), &self.memory);
            tracing::debug!(
                memory = self.memory.len(),
                fresh = fresh_len,
                changed = dirty.iter().map(|r| r.len()).sum::<usize>(),
                "Go resume point"
            );
            dirty
        });
        let data = memory.data_mut(&mut store);
        for range in dirty {
            if let (Some(to), Some(from)) =
                (data.get_mut(range.clone()), self.memory.get(range.clone()))
            {
                to.copy_from_slice(from);
            }
        }
        // The loop calls what the 8 bytes below SP name: the wrapper, from its first block.
        let below_sp = (self.sp as usize)
            .checked_sub(8)
            .ok_or_else(|| wasmtime::format_err!("Go's SP is below 8"))?;
        let pc = (u64::from(self.slot) << 16).to_le_bytes();
        data.get_mut(below_sp..below_sp + 8)
            .ok_or_else(|| wasmtime::format_err!("Go's SP is outside memory"))?
            .copy_from_slice(&pc);
        for (name, value) in &self.globals {
            instance
                .get_global(&mut store, name)
                .ok_or_else(|| wasmtime::format_err!("the instance lacks {name}"))?
                .set(&mut store, *value)?;
        }
        let resume = instance.get_typed_func::<(), ()>(&mut store, RESUME_EXPORT)?;
        resume.call(&mut store, ())
    }
}

/// Page ranges of `snapshot` that differ from `fresh` (which reads as zeros past its end),
/// merged where adjacent.
fn changed_pages(fresh: &[u8], snapshot: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, page) in snapshot.chunks(PAGE / 16).enumerate() {
        let start = i * (PAGE / 16);
        let end = start + page.len();
        let same = match fresh.get(start..end) {
            Some(old) => old == page,
            None => page.iter().all(|&b| b == 0),
        };
        if same {
            continue;
        }
        match ranges.last_mut() {
            Some(last) if last.end == start => last.end = end,
            _ => ranges.push(start..end),
        }
    }
    ranges
}

/// A monotonic clock shared by every instance of this process, so that an instance resumed
/// from a point taken by an earlier one never sees time go backwards (wasmtime-wasi's default
/// clock starts at zero for each context).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessClock;

impl wasmtime_wasi::HostMonotonicClock for ProcessClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        let epoch = *EPOCH.get_or_init(Instant::now);
        u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb_round_trips() {
        for value in [0u32, 1, 127, 128, 300, 65535, u32::MAX] {
            let mut out = Vec::new();
            write_leb(&mut out, value);
            assert_eq!(read_leb(&out), Some((value, out.len())));
        }
        assert_eq!(read_leb(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]), None);
    }

    #[test]
    fn modules_that_are_not_go_wasip1_are_left_alone() {
        let wat = r#"(module
            (import "wasi_snapshot_preview1" "fd_read" (func (param i32 i32 i32 i32) (result i32)))
            (global (mut i32) (i32.const 0))
            (memory (export "memory") 1)
            (func (export "_start")))"#;
        let wasm = wat::parse_str(wat).unwrap();
        // No loop called by _start, no wrapper calling fd_read.
        assert!(prepare(&wasm).is_none());
    }

    #[test]
    fn a_go_shaped_module_gains_the_exports_and_still_validates() {
        let wat = r#"(module
            (import "wasi_snapshot_preview1" "fd_read" (func $fd_read_import (param i32 i32 i32 i32) (result i32)))
            (global $SP (mut i32) (i32.const 4096))
            (global $g (mut i64) (i64.const 0))
            (global i32 (i32.const 7))
            (memory (export "memory") 1)
            (table 8 funcref)
            (elem (i32.const 4) $wasm_pc_f_loop $syscall.fd_read)
            (func $wasm_pc_f_loop)
            (func $syscall.fd_read (param i32) (result i32)
                i32.const 0 i32.const 0 i32.const 0 i32.const 0 call $fd_read_import)
            (func (export "_start") call $wasm_pc_f_loop))"#;
        let wasm = wat::parse_str(wat).unwrap();
        let prepared = prepare(&wasm).expect("prepared");
        let engine = wasmtime::Engine::default();
        let module = Module::new(&engine, &prepared).unwrap();
        let names: Vec<&str> = module.exports().map(|e| e.name()).collect();
        assert!(names.contains(&"_start") && names.contains(&"memory"));
        assert!(names.contains(&RESUME_EXPORT));
        assert!(names.contains(&"hoist:go-global:0") && names.contains(&"hoist:go-global:1"));
        assert!(
            !names.contains(&"hoist:go-global:2"),
            "immutable globals are not exported"
        );
        // fd_read wrapper is function 2 (one import), in table slot 5.
        assert!(names.contains(&"hoist:go-read:2:5"), "{names:?}");
        let layout = GoLayout::of(&module).expect("layout");
        assert_eq!(layout.read_slots.get(&2), Some(&5));
        assert!(prepare(&prepared).is_none(), "prepared once only");
    }

    #[test]
    fn changed_pages_merge_and_treat_the_tail_as_zero() {
        let chunk = PAGE / 16;
        let fresh = vec![0u8; chunk * 2];
        let mut snapshot = vec![0u8; chunk * 5];
        snapshot[1] = 1; // chunk 0
        snapshot[chunk + 1] = 1; // chunk 1
        snapshot[chunk * 4] = 1; // chunk 4, past the fresh memory
        assert_eq!(
            changed_pages(&fresh, &snapshot),
            vec![0..chunk * 2, chunk * 4..chunk * 5]
        );
    }
}
