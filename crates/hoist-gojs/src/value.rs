//! The JS value model Go's `syscall/js` sees: values, objects, and the reference table that
//! maps them to NaN-boxed 64-bit refs (as Go's `wasm_exec.js` does).

use indexmap::IndexMap;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};

/// A JS value.
#[derive(Clone, Debug)]
pub enum Value {
    /// `undefined`.
    Undefined,
    /// `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number (every JS number is an f64).
    Number(f64),
    /// A string (compared by content, as JS does).
    String(JsStr),
    /// An object (compared by identity).
    Object(Obj),
}

impl Value {
    /// A string value.
    pub fn string(s: &str) -> Value {
        Value::String(JsStr::from(s))
    }

    /// The object, if this is one.
    pub fn as_object(&self) -> Option<&Obj> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// JS `typeof` (with `null` as "object").
    pub fn type_of(&self) -> &'static str {
        match self {
            Value::Undefined => "undefined",
            Value::Null => "object",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Object(o) if o.is_function() => "function",
            Value::Object(_) => "object",
        }
    }

    /// JS `String(v)`. A guest controls the objects, so this never recurses without bound: an
    /// array that contains itself joins as `""` there (as JS's `join` does), nesting deeper
    /// than [`MAX_STRING_DEPTH`] stops there, and the result is cut at [`MAX_STRING_BYTES`]
    /// (arrays sharing one big array could otherwise ask for exponentially long strings).
    pub fn to_js_string(&self) -> String {
        let mut out = String::new();
        self.write_js_string(&mut Stringify::default(), &mut out);
        out
    }

    fn write_js_string(&self, ctx: &mut Stringify, out: &mut String) {
        match self {
            Value::Undefined => ctx.push(out, "undefined"),
            Value::Null => ctx.push(out, "null"),
            Value::Bool(b) => ctx.push(out, if *b { "true" } else { "false" }),
            Value::Number(n) => ctx.push(out, &number_to_string(*n)),
            Value::String(s) => ctx.push(out, s),
            Value::Object(o) => o.write_js_string(ctx, out),
        }
    }

    /// Property lookup (`undefined` for primitives and missing properties).
    pub fn get(&self, name: &str) -> Value {
        match self {
            Value::Object(o) => o.get(name),
            Value::String(s) if name == "length" => Value::Number(s.encode_utf16().count() as f64),
            _ => Value::Undefined,
        }
    }

    /// Whether this is JS truthy.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Undefined | Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => *n != 0.0 && !n.is_nan(),
            Value::String(s) => !s.is_empty(),
            Value::Object(_) => true,
        }
    }
}

/// A JS string: shared, compared and hashed by content. One made from a guest's bytes
/// ([`JsStr::try_metered`]) is charged to the guest's [`HeapMeter`] until its last copy is
/// dropped, since a guest can keep any number of them in the host.
#[derive(Clone)]
pub struct JsStr(Rc<JsStrData>);

struct JsStrData {
    text: Box<str>,
    _charge: Option<Charge>,
}

impl JsStr {
    /// A string the guest made from its own bytes, charged to `meter`; refused when over
    /// the meter's limit.
    pub fn try_metered(meter: &Rc<HeapMeter>, text: &str) -> Result<JsStr, HeapFull> {
        let charge = Charge::try_new(meter, text.len())?;
        Ok(JsStr(Rc::new(JsStrData {
            text: text.into(),
            _charge: Some(charge),
        })))
    }
}

impl From<&str> for JsStr {
    /// A string the host makes (not metered).
    fn from(text: &str) -> JsStr {
        JsStr(Rc::new(JsStrData {
            text: text.into(),
            _charge: None,
        }))
    }
}

impl From<String> for JsStr {
    /// A string the host makes (not metered).
    fn from(text: String) -> JsStr {
        JsStr(Rc::new(JsStrData {
            text: text.into_boxed_str(),
            _charge: None,
        }))
    }
}

impl std::ops::Deref for JsStr {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0.text
    }
}

impl std::borrow::Borrow<str> for JsStr {
    fn borrow(&self) -> &str {
        self
    }
}

impl PartialEq for JsStr {
    fn eq(&self, other: &JsStr) -> bool {
        **self == **other
    }
}

impl Eq for JsStr {}

impl std::hash::Hash for JsStr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl std::fmt::Debug for JsStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

/// JS `Number.prototype.toString()` for the values Go asks about.
pub fn number_to_string(n: f64) -> String {
    if n.is_nan() {
        "NaN".into()
    } else if n.is_infinite() {
        if n > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if n == 0.0 {
        "0".into()
    } else if n.fract() == 0.0 && n.abs() < 1e21 {
        format!("{n:.0}")
    } else {
        format!("{n}")
    }
}

/// What is callable about a function object.
#[derive(Clone, Debug, PartialEq)]
pub enum Callable {
    /// A function implemented by the host.
    Builtin(Builtin),
    /// A Go function registered with `js.FuncOf`, reached through `_makeFuncWrapper(id)`.
    GoFunc(u32),
    /// A constructor of one of the host's classes.
    Class(Class),
}

/// Host functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    /// `go._makeFuncWrapper(id)`.
    MakeFuncWrapper,
    /// `fs.writeSync(fd, buf)`.
    FsWriteSync,
    /// `fs.write(fd, buf, off, len, pos, cb)`.
    FsWrite,
    /// `fs.read(fd, buf, off, len, pos, cb)`.
    FsRead,
    /// `fs.fsync(fd, cb)` and `fs.close(fd, cb)` on the standard streams.
    FsOk,
    /// Every other `fs` method: calls back with an `ENOSYS` error.
    FsEnosys,
    /// `process.getuid()` and friends: -1.
    ProcessMinusOne,
    /// `process.cwd()`: "/".
    ProcessCwd,
    /// `process.getgroups()`, `umask`, `chdir`: throw `ENOSYS`.
    ProcessEnosys,
    /// `crypto.getRandomValues(array)`.
    GetRandomValues,
    /// `Date.now()` and `performance.now()`-style clocks in milliseconds.
    DateNow,
    /// `performance.now()`.
    PerformanceNow,
    /// `date.getTimezoneOffset()`: 0 (functions run in UTC).
    GetTimezoneOffset,
    /// `date.getTime()`.
    DateGetTime,
    /// `console.log/error/warn`: to the guest's stderr.
    ConsoleLog,
    /// `path.resolve(...)`: joins with "/".
    PathResolve,
}

/// Host classes (constructors usable with `new` and `instanceof`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// `Object`.
    Object,
    /// `Array`.
    Array,
    /// `Uint8Array`.
    Uint8Array,
    /// `Error`.
    Error,
    /// `Date`.
    Date,
    /// `Function` (for `instanceof Function`).
    Function,
}

/// What an object is besides its properties.
#[derive(Debug)]
pub enum ObjKind {
    /// A plain object.
    Plain,
    /// An array.
    Array(Vec<Value>),
    /// A `Uint8Array`.
    Bytes(Vec<u8>),
    /// A function.
    Function(Callable),
    /// An `Error`.
    Error,
    /// A `Date` (milliseconds since the epoch).
    Date(f64),
}

/// An object's data.
#[derive(Debug)]
pub struct ObjData {
    /// Its kind.
    pub kind: ObjKind,
    /// Its own properties, in insertion order.
    pub props: IndexMap<String, Value>,
    /// What its array items or bytes are charged to a guest's [`HeapMeter`], if anything.
    charge: Option<Charge>,
    /// What the names of the properties a guest added ([`Obj::set_by_guest`]) are charged.
    names: Option<Charge>,
}

/// Host memory held for one guest's JS arrays, typed arrays, strings and property names,
/// measured against a limit.
///
/// A guest picks the size of `new Uint8Array(n)` or `new Array(n)` with one number and can
/// grow an array by assigning past its end, so a function whose linear memory is capped could
/// otherwise make the host allocate gigabytes (`new Array(1 << 24)` alone is 400 MB of
/// values). The host charges those backing stores here when it makes or grows them and
/// refunds them when the object is dropped. Strings (`js.ValueOf(s)`) and property names
/// (`o.Set(name, v)`) are each copied out of the guest's own, limited, memory, but a guest can
/// keep any number of them, so they are charged too, until dropped.
#[derive(Debug)]
pub struct HeapMeter {
    used: Cell<usize>,
    limit: usize,
    refused: Cell<Option<HeapFull>>,
}

/// A charge the [`HeapMeter`] refused: the backing store asked for, and the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the JS heap would hold {wanted} bytes of arrays, strings and property names, over its limit of {limit}"
)]
pub struct HeapFull {
    /// Bytes metered if the charge had been accepted.
    pub wanted: usize,
    /// The meter's limit.
    pub limit: usize,
}

impl HeapMeter {
    /// A meter allowing `limit` bytes of arrays, typed arrays, strings and property names.
    pub fn new(limit: usize) -> Rc<HeapMeter> {
        Rc::new(HeapMeter {
            used: Cell::new(0),
            limit,
            refused: Cell::new(None),
        })
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The last charge refused by an operation that cannot fail ([`Obj::set`],
    /// [`Obj::set_index`]), cleared by the call: the host checks it after each such operation
    /// a guest asks for and stops the guest.
    pub fn take_refused(&self) -> Option<HeapFull> {
        self.refused.take()
    }

    fn try_charge(&self, bytes: usize) -> Result<(), HeapFull> {
        let wanted = self.used.get().saturating_add(bytes);
        if wanted > self.limit {
            return Err(HeapFull {
                wanted,
                limit: self.limit,
            });
        }
        self.used.set(wanted);
        Ok(())
    }

    /// Charges what the host makes for itself (small: callback arguments, copies of a heap
    /// that was within the limit) without refusing.
    fn force_charge(&self, bytes: usize) {
        self.used.set(self.used.get().saturating_add(bytes));
    }

    fn refund(&self, bytes: usize) {
        self.used.set(self.used.get().saturating_sub(bytes));
    }
}

/// Bytes charged to a meter for one object; refunded when the object is dropped.
#[derive(Debug)]
struct Charge {
    meter: Rc<HeapMeter>,
    bytes: usize,
}

impl Charge {
    /// Charges `bytes` to `meter`; refused when over its limit.
    fn try_new(meter: &Rc<HeapMeter>, bytes: usize) -> Result<Charge, HeapFull> {
        meter.try_charge(bytes)?;
        Ok(Charge {
            meter: Rc::clone(meter),
            bytes,
        })
    }

    /// Charges `bytes` to `meter` without a limit check (what the host makes itself).
    fn forced(meter: &Rc<HeapMeter>, bytes: usize) -> Charge {
        meter.force_charge(bytes);
        Charge {
            meter: Rc::clone(meter),
            bytes,
        }
    }
}

impl Charge {
    /// Charges `bytes` more; refused (and nothing charged) when over the meter's limit.
    fn try_grow(&mut self, bytes: usize) -> Result<(), HeapFull> {
        self.meter.try_charge(bytes)?;
        self.bytes = self.bytes.saturating_add(bytes);
        Ok(())
    }

    /// Refunds up to `bytes` of this charge.
    fn shrink(&mut self, bytes: usize) {
        let bytes = bytes.min(self.bytes);
        self.meter.refund(bytes);
        self.bytes -= bytes;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.meter.refund(self.bytes);
    }
}

/// The metered size of an object's backing store.
fn backing_bytes(kind: &ObjKind) -> usize {
    match kind {
        ObjKind::Array(items) => array_bytes(items.len()),
        ObjKind::Bytes(b) => b.len(),
        _ => 0,
    }
}

/// The metered size of a property a guest added: its name and the map entry holding it.
fn property_bytes(name: &str) -> usize {
    name.len()
        .saturating_add(std::mem::size_of::<(String, Value)>() + 2 * std::mem::size_of::<usize>())
}

/// The metered size of an array of `len` items.
pub(crate) fn array_bytes(len: usize) -> usize {
    len.saturating_mul(std::mem::size_of::<Value>())
}

/// Grows `data`'s charge to cover an array of `len` items (nothing to do for an unmetered
/// object or a shrink). A refusal is recorded on the meter for the host to act on.
fn charge_growth(charge: &mut Option<Charge>, len: usize) -> bool {
    let Some(charge) = charge else {
        return true;
    };
    let need = array_bytes(len);
    if need <= charge.bytes {
        return true;
    }
    match charge.meter.try_charge(need - charge.bytes) {
        Ok(()) => {
            charge.bytes = need;
            true
        }
        Err(full) => {
            charge.meter.refused.set(Some(full));
            false
        }
    }
}

impl Drop for ObjData {
    /// Drops what this object alone owns without recursion: a guest can nest arrays or
    /// objects a million deep, and dropping that graph recursively overflows the native
    /// stack, which aborts hoist instead of failing the guest.
    fn drop(&mut self) {
        let mut stack: Vec<Value> = Vec::new();
        take_children(self, &mut stack);
        while let Some(value) = stack.pop() {
            if let Value::Object(Obj(rc)) = value
                && let Ok(cell) = Rc::try_unwrap(rc)
            {
                // The last owner: empty it here, so its own drop has nothing to recurse into.
                let mut data = cell.into_inner();
                take_children(&mut data, &mut stack);
            }
        }
    }
}

fn take_children(data: &mut ObjData, stack: &mut Vec<Value>) {
    stack.extend(std::mem::take(&mut data.props).into_values());
    if let ObjKind::Array(items) = &mut data.kind {
        stack.append(items);
    }
}

/// A reference to an object (identity is the allocation).
#[derive(Clone, Debug)]
pub struct Obj(Rc<RefCell<ObjData>>);

/// A reference to an object that does not keep it alive ([`Obj::downgrade`]).
#[derive(Clone, Debug)]
pub struct WeakObj(Weak<RefCell<ObjData>>);

impl WeakObj {
    /// The object, if something still holds it.
    pub fn upgrade(&self) -> Option<Obj> {
        self.0.upgrade().map(Obj)
    }

    /// Whether the object has not been freed.
    pub fn is_alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}

impl Obj {
    /// A new object of `kind`.
    pub fn new(kind: ObjKind) -> Obj {
        Obj(Rc::new(RefCell::new(ObjData {
            kind,
            props: IndexMap::new(),
            charge: None,
            names: None,
        })))
    }

    /// A new object whose backing store, `bytes` long, the guest asked for: charged to
    /// `meter` before `make` allocates it, refused when over the meter's limit.
    pub fn try_metered(
        meter: &Rc<HeapMeter>,
        bytes: usize,
        make: impl FnOnce() -> ObjKind,
    ) -> Result<Obj, HeapFull> {
        // From here the charge is owned by the object and refunded with it.
        let charge = Charge::try_new(meter, bytes)?;
        let o = Obj::new(make());
        o.borrow_mut().charge = Some(charge);
        Ok(o)
    }

    /// A new object the host makes for a guest (callback arguments): charged to `meter`
    /// without a limit check, so that whatever the guest later grows it by is metered.
    pub fn metered(meter: &Rc<HeapMeter>, kind: ObjKind) -> Obj {
        let charge = Charge::forced(meter, backing_bytes(&kind));
        let o = Obj::new(kind);
        o.borrow_mut().charge = Some(charge);
        o
    }

    /// A new plain object with `props`.
    pub fn plain(props: Vec<(&str, Value)>) -> Obj {
        let o = Obj::new(ObjKind::Plain);
        for (k, v) in props {
            o.set(k, v);
        }
        o
    }

    /// A new function object.
    pub fn function(c: Callable) -> Obj {
        Obj::new(ObjKind::Function(c))
    }

    /// A new array.
    pub fn array(items: Vec<Value>) -> Obj {
        Obj::new(ObjKind::Array(items))
    }

    /// A new `Error` with `message` (and `code`, for fs errors).
    pub fn error(name: &str, message: &str, code: Option<&str>) -> Obj {
        let o = Obj::new(ObjKind::Error);
        o.set("name", Value::string(name));
        o.set("message", Value::string(message));
        if let Some(code) = code {
            o.set("code", Value::string(code));
        }
        o
    }

    /// A weak reference to this object, which does not keep it alive.
    pub fn downgrade(&self) -> WeakObj {
        WeakObj(Rc::downgrade(&self.0))
    }

    /// Identity key.
    pub fn key(&self) -> usize {
        Rc::as_ptr(&self.0) as *const () as usize
    }

    /// Whether both are the same object.
    pub fn same(&self, other: &Obj) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }

    /// Borrows the data.
    pub fn borrow(&self) -> std::cell::Ref<'_, ObjData> {
        self.0.borrow()
    }

    /// Borrows the data mutably.
    pub fn borrow_mut(&self) -> std::cell::RefMut<'_, ObjData> {
        self.0.borrow_mut()
    }

    /// Whether this is a function.
    pub fn is_function(&self) -> bool {
        matches!(self.borrow().kind, ObjKind::Function(_))
    }

    /// The callable part, if this is a function.
    pub fn callable(&self) -> Option<Callable> {
        match &self.borrow().kind {
            ObjKind::Function(c) => Some(c.clone()),
            _ => None,
        }
    }

    /// Property lookup, with the few built-in properties of arrays, byte arrays and dates.
    pub fn get(&self, name: &str) -> Value {
        let data = self.borrow();
        if let Some(v) = data.props.get(name) {
            return v.clone();
        }
        match (&data.kind, name) {
            (ObjKind::Array(items), "length") => Value::Number(items.len() as f64),
            (ObjKind::Bytes(b), "length" | "byteLength") => Value::Number(b.len() as f64),
            (ObjKind::Date(_), "getTimezoneOffset") => {
                Value::Object(Obj::function(Callable::Builtin(Builtin::GetTimezoneOffset)))
            }
            (ObjKind::Date(_), "getTime" | "valueOf") => {
                Value::Object(Obj::function(Callable::Builtin(Builtin::DateGetTime)))
            }
            (ObjKind::Array(items), index) => index
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get(i).cloned())
                .unwrap_or(Value::Undefined),
            _ => Value::Undefined,
        }
    }

    /// Property assignment (`length` of an array truncates or extends it, as in JS).
    /// Growth of a metered array past its meter's limit does not happen (see
    /// [`HeapMeter::take_refused`]).
    pub fn set(&self, name: &str, value: Value) {
        let mut data = self.borrow_mut();
        let ObjData {
            kind,
            props,
            charge,
            ..
        } = &mut *data;
        if let ObjKind::Array(items) = kind {
            if name == "length" {
                let n = (value.as_number().unwrap_or(0.0).max(0.0) as usize).min(MAX_ARRAY_LEN);
                if charge_growth(charge, n) {
                    items.resize(n, Value::Undefined);
                }
                return;
            }
            if let Ok(i) = name.parse::<usize>() {
                set_index_in(items, charge, i, value);
                return;
            }
        }
        props.insert(name.to_string(), value);
    }

    /// `o[i] = value` from a guest: as [`Obj::set_index`], and on an object that is not an
    /// array, a property it adds is charged as [`Obj::set_by_guest`] charges it.
    pub fn set_index_by_guest(
        &self,
        meter: &Rc<HeapMeter>,
        i: i64,
        value: Value,
    ) -> Result<(), HeapFull> {
        if matches!(self.borrow().kind, ObjKind::Array(_) | ObjKind::Bytes(_)) {
            self.set_index(i, value);
            Ok(())
        } else {
            self.set_by_guest(meter, &i.to_string(), value)
        }
    }

    /// `o[name] = value` from a guest: as [`Obj::set`], and a property it adds is charged to
    /// `meter` (its name and the entry); refused (the object as it was) when over the
    /// meter's limit.
    pub fn set_by_guest(
        &self,
        meter: &Rc<HeapMeter>,
        name: &str,
        value: Value,
    ) -> Result<(), HeapFull> {
        let before = self.borrow().props.len();
        self.set(name, value);
        let mut data = self.borrow_mut();
        if data.props.len() == before {
            return Ok(());
        }
        let bytes = property_bytes(name);
        let charged = match &mut data.names {
            Some(names) => names.try_grow(bytes),
            None => Charge::try_new(meter, bytes).map(|names| data.names = Some(names)),
        };
        if charged.is_err() {
            let removed = data.props.shift_remove(name);
            drop(data);
            drop(removed);
        }
        charged
    }

    /// `delete o[name]` (what a guest-added name was charged is refunded).
    pub fn delete(&self, name: &str) {
        let mut data = self.borrow_mut();
        let removed = data.props.shift_remove(name);
        if removed.is_some()
            && let Some(names) = &mut data.names
        {
            names.shrink(property_bytes(name));
        }
        drop(data);
        drop(removed);
    }

    /// `o[i]`.
    pub fn index(&self, i: i64) -> Value {
        let data = self.borrow();
        match &data.kind {
            ObjKind::Array(items) => usize::try_from(i)
                .ok()
                .and_then(|i| items.get(i).cloned())
                .unwrap_or(Value::Undefined),
            ObjKind::Bytes(b) => usize::try_from(i)
                .ok()
                .and_then(|i| b.get(i))
                .map(|b| Value::Number(f64::from(*b)))
                .unwrap_or(Value::Undefined),
            _ => data
                .props
                .get(&i.to_string())
                .cloned()
                .unwrap_or(Value::Undefined),
        }
    }

    /// `o[i] = v`. Growth of a metered array past its meter's limit does not happen (see
    /// [`HeapMeter::take_refused`]).
    pub fn set_index(&self, i: i64, value: Value) {
        let mut data = self.borrow_mut();
        let ObjData {
            kind,
            props,
            charge,
            ..
        } = &mut *data;
        match kind {
            ObjKind::Array(items) => {
                if let Ok(i) = usize::try_from(i) {
                    set_index_in(items, charge, i, value);
                }
            }
            ObjKind::Bytes(b) => {
                if let Some(slot) = usize::try_from(i).ok().and_then(|i| b.get_mut(i)) {
                    // Uint8Array assignment: ToNumber, then modulo 256.
                    let n = value.as_number().unwrap_or(0.0);
                    *slot = if n.is_finite() {
                        (n.trunc() as i64).rem_euclid(256) as u8
                    } else {
                        0
                    };
                }
            }
            _ => {
                props.insert(i.to_string(), value);
            }
        }
    }

    /// JS `length` for arrays, byte arrays and objects with a numeric `length` property.
    pub fn length(&self) -> f64 {
        let data = self.borrow();
        match &data.kind {
            ObjKind::Array(items) => items.len() as f64,
            ObjKind::Bytes(b) => b.len() as f64,
            _ => data
                .props
                .get("length")
                .and_then(Value::as_number)
                .unwrap_or(f64::NAN),
        }
    }

    /// Whether this object is an instance of `class`.
    pub fn instance_of(&self, class: Class) -> bool {
        let data = self.borrow();
        match class {
            Class::Object => true,
            Class::Array => matches!(data.kind, ObjKind::Array(_)),
            Class::Uint8Array => matches!(data.kind, ObjKind::Bytes(_)),
            Class::Error => matches!(data.kind, ObjKind::Error),
            Class::Date => matches!(data.kind, ObjKind::Date(_)),
            Class::Function => matches!(data.kind, ObjKind::Function(_)),
        }
    }

    fn write_js_string(&self, ctx: &mut Stringify, out: &mut String) {
        let id = Rc::as_ptr(&self.0);
        if ctx.path.contains(&id) || ctx.path.len() >= MAX_STRING_DEPTH || ctx.full(out) {
            return;
        }
        let Ok(data) = self.0.try_borrow() else {
            return;
        };
        ctx.path.push(id);
        match &data.kind {
            ObjKind::Plain => ctx.push(out, "[object Object]"),
            ObjKind::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    if ctx.full(out) {
                        break;
                    }
                    if i > 0 {
                        ctx.push(out, ",");
                    }
                    if !matches!(v, Value::Undefined | Value::Null) {
                        v.write_js_string(ctx, out);
                    }
                }
            }
            ObjKind::Bytes(b) => {
                for (i, byte) in b.iter().enumerate() {
                    if ctx.full(out) {
                        break;
                    }
                    if i > 0 {
                        ctx.push(out, ",");
                    }
                    ctx.push(out, &byte.to_string());
                }
            }
            ObjKind::Function(_) => ctx.push(out, "function () { [native code] }"),
            ObjKind::Error => {
                match data.props.get("name") {
                    Some(name) => name.write_js_string(ctx, out),
                    None => ctx.push(out, "Error"),
                }
                if let Some(message) = data.props.get("message") {
                    let mut text = String::new();
                    message.write_js_string(ctx, &mut text);
                    if !text.is_empty() {
                        ctx.push(out, ": ");
                        ctx.push(out, &text);
                    }
                }
            }
            ObjKind::Date(ms) => ctx.push(out, &format!("Date({ms})")),
        }
        ctx.path.pop();
    }
}

/// Nesting beyond this depth is left out of a string conversion (JS would throw a
/// `RangeError` long before; hoist must not overflow its own stack).
pub const MAX_STRING_DEPTH: usize = 256;
/// A string conversion stops growing at this many bytes.
pub const MAX_STRING_BYTES: usize = 16 << 20;

/// The state of one `String(v)`: the objects being converted (for cycles) and the budget.
#[derive(Default)]
struct Stringify {
    path: Vec<*const RefCell<ObjData>>,
}

impl Stringify {
    fn full(&self, out: &str) -> bool {
        out.len() >= MAX_STRING_BYTES
    }

    fn push(&self, out: &mut String, s: &str) {
        let room = MAX_STRING_BYTES.saturating_sub(out.len());
        if s.len() <= room {
            out.push_str(s);
        } else {
            out.push_str(s.get(..s.floor_char_boundary(room)).unwrap_or_default());
        }
    }
}

/// How far past its end an array may be assigned to at once, and its largest length. JS arrays
/// may be sparse; these are dense, so a guest naming index 2^30 must not make the host
/// allocate gigabytes (fuzz finding: one `SetIndex(9_000_000)` per input exhausted memory).
const MAX_ARRAY_GAP: usize = 1 << 16;
const MAX_ARRAY_LEN: usize = 1 << 24;

fn set_index_in(items: &mut Vec<Value>, charge: &mut Option<Charge>, i: usize, value: Value) {
    if i >= MAX_ARRAY_LEN || i >= items.len().saturating_add(MAX_ARRAY_GAP) {
        return;
    }
    if i >= items.len() {
        if !charge_growth(charge, i + 1) {
            return;
        }
        items.resize(i + 1, Value::Undefined);
    }
    if let Some(slot) = items.get_mut(i) {
        *slot = value;
    }
}

/// The NaN-boxing header of every non-number ref.
pub const NAN_HEAD: u64 = 0x7FF8_0000;

/// Type flags in the upper half of a ref.
const FLAG_NONE: u64 = 0;
const FLAG_OBJECT: u64 = 1;
const FLAG_STRING: u64 = 2;
const FLAG_FUNCTION: u64 = 4;

/// Predefined ids: NaN, 0, null, true, false, the global object, the Go object.
pub const ID_NAN: u32 = 0;
/// Id of the number 0.
pub const ID_ZERO: u32 = 1;
/// Id of `null`.
pub const ID_NULL: u32 = 2;
/// Id of `true`.
pub const ID_TRUE: u32 = 3;
/// Id of `false`.
pub const ID_FALSE: u32 = 4;
/// Id of the global object.
pub const ID_GLOBAL: u32 = 5;
/// Id of the Go object (`this` of wasm_exec's `Go` class).
pub const ID_GO: u32 = 6;
const PREDEFINED: u32 = 7;

#[derive(Debug)]
struct Slot {
    value: Value,
    /// References Go holds; `None` means infinite (predefined values).
    refs: Option<u64>,
}

/// A ref Go passed that names no live value.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the Go program used a JS value reference (id {id}) that does not exist")]
pub struct BadRef {
    /// The id.
    pub id: u32,
}

/// The table of JS values Go holds references to, as in wasm_exec.js: ids are reused LIFO
/// after `finalizeRef` drops their count to zero; strings are keyed by content and objects by
/// identity, so one live object always has one id.
///
/// The table also remembers (weakly) every object it ever gave an id, and empties the ones
/// still alive when it is dropped with its instance. Objects are reference counted, and a
/// cycle is never freed by counting: the global object holds itself (`globalThis`), and a
/// guest can put any object it holds into another (`a.Set("b", b); b.Set("a", a)`). Every
/// edge a guest adds starts at an object it named by id, so emptying those breaks every
/// cycle it made, and what they held is freed (and refunded to its meter) with them.
#[derive(Debug)]
pub struct Values {
    slots: Vec<Option<Slot>>,
    strings: HashMap<JsStr, u32>,
    objects: HashMap<usize, u32>,
    pool: Vec<u32>,
    /// Every object given an id (and the predefined ones), to empty on drop.
    known: Vec<WeakObj>,
    /// The length of `known` at which its dead entries are next dropped.
    known_sweep_at: usize,
}

/// `known`'s first sweep; later ones come at twice the live entries, so each push costs
/// amortised constant time and dead entries never outnumber live ones (plus this).
const KNOWN_SWEEP_MIN: usize = 1024;

impl Drop for Values {
    fn drop(&mut self) {
        let mut held: Vec<Value> = Vec::new();
        for weak in std::mem::take(&mut self.known) {
            let Some(o) = weak.upgrade() else { continue };
            // Nothing runs while the instance drops, so no object is borrowed; if one were,
            // leaving it alone is safe (it may leak, as before).
            if let Ok(mut data) = o.0.try_borrow_mut() {
                take_children(&mut data, &mut held);
            }
        }
        // Freed here, after every object is emptied: the ObjData drop is iterative, so a
        // deep graph cannot overflow the stack.
        drop(held);
    }
}

impl Values {
    /// A table holding the predefined values, with `global` and `go` at ids 5 and 6.
    pub fn new(global: Obj, go: Obj) -> Values {
        let pinned = |value| Some(Slot { value, refs: None });
        let mut objects = HashMap::new();
        objects.insert(global.key(), ID_GLOBAL);
        objects.insert(go.key(), ID_GO);
        let known = vec![global.downgrade(), go.downgrade()];
        Values {
            known,
            known_sweep_at: KNOWN_SWEEP_MIN,
            slots: vec![
                pinned(Value::Number(f64::NAN)),
                pinned(Value::Number(0.0)),
                pinned(Value::Null),
                pinned(Value::Bool(true)),
                pinned(Value::Bool(false)),
                pinned(Value::Object(global)),
                pinned(Value::Object(go)),
            ],
            strings: HashMap::new(),
            objects,
            pool: Vec::new(),
        }
    }

    /// Encodes `v` as a ref, taking a reference on it when it lives in the table.
    pub fn store(&mut self, v: &Value) -> u64 {
        let (id, flag) = match v {
            Value::Undefined => return 0,
            Value::Number(n) if n.is_nan() => return NAN_HEAD << 32,
            Value::Number(n) if *n != 0.0 => return n.to_bits(),
            Value::Number(_) => (ID_ZERO, FLAG_NONE),
            Value::Null => (ID_NULL, FLAG_NONE),
            Value::Bool(true) => (ID_TRUE, FLAG_NONE),
            Value::Bool(false) => (ID_FALSE, FLAG_NONE),
            Value::String(s) => {
                let id = match self.strings.get(s) {
                    Some(id) => *id,
                    None => {
                        let id = self.allocate(v.clone());
                        self.strings.insert(s.clone(), id);
                        id
                    }
                };
                self.take_ref(id);
                (id, FLAG_STRING)
            }
            Value::Object(o) => {
                let id = match self.objects.get(&o.key()) {
                    Some(id) => *id,
                    None => {
                        let id = self.allocate(v.clone());
                        self.objects.insert(o.key(), id);
                        self.remember(o);
                        id
                    }
                };
                self.take_ref(id);
                let flag = if o.is_function() {
                    FLAG_FUNCTION
                } else {
                    FLAG_OBJECT
                };
                (id, flag)
            }
        };
        ((NAN_HEAD | flag) << 32) | u64::from(id)
    }

    fn allocate(&mut self, value: Value) -> u32 {
        let slot = Some(Slot {
            value,
            refs: Some(0),
        });
        match self.pool.pop() {
            Some(id) => {
                if let Some(s) = self.slots.get_mut(id as usize) {
                    *s = slot;
                }
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        }
    }

    fn take_ref(&mut self, id: u32) {
        if let Some(Some(Slot {
            refs: Some(refs), ..
        })) = self.slots.get_mut(id as usize)
        {
            *refs += 1;
        }
    }

    /// Decodes a ref.
    pub fn load(&self, bits: u64) -> Result<Value, BadRef> {
        let f = f64::from_bits(bits);
        if f == 0.0 {
            return Ok(Value::Undefined);
        }
        if !f.is_nan() {
            return Ok(Value::Number(f));
        }
        let id = bits as u32;
        match self.slots.get(id as usize) {
            Some(Some(slot)) => Ok(slot.value.clone()),
            _ => Err(BadRef { id }),
        }
    }

    /// Drops one of Go's references to `id`; at zero the id returns to the pool.
    pub fn finalize(&mut self, id: u32) {
        let Some(slot) = self.slots.get_mut(id as usize) else {
            return;
        };
        let Some(Slot {
            refs: Some(refs), ..
        }) = slot
        else {
            return;
        };
        *refs = refs.saturating_sub(1);
        if *refs > 0 {
            return;
        }
        if let Some(Slot { value, .. }) = slot.take() {
            match value {
                Value::String(s) => {
                    self.strings.remove(&s);
                }
                Value::Object(o) => {
                    self.objects.remove(&o.key());
                }
                _ => {}
            }
        }
        if id >= PREDEFINED {
            self.pool.push(id);
        }
    }

    /// Remembers `o` to be emptied when the table is dropped (see [`Values`]).
    pub fn remember(&mut self, o: &Obj) {
        if self.known.len() >= self.known_sweep_at {
            self.known.retain(WeakObj::is_alive);
            self.known_sweep_at = (self.known.len() * 2).max(KNOWN_SWEEP_MIN);
        }
        self.known.push(o.downgrade());
    }

    /// How many ids are in use (predefined ones included).
    pub fn live(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// The number of references Go holds on `id` (`None`: predefined or free).
    pub fn refs(&self, id: u32) -> Option<u64> {
        self.slots.get(id as usize)?.as_ref()?.refs
    }
}

/// Deep copies of a JS heap that keep its shape: an object reachable twice is copied once, and
/// cycles are kept. Used to snapshot and restore a Go program's JS state.
#[derive(Default)]
pub struct HeapCopier {
    copies: HashMap<usize, Obj>,
    pending: Vec<(Obj, Obj)>,
    meter: Option<Rc<HeapMeter>>,
}

impl HeapCopier {
    /// A copier with no objects copied yet; its copies are not metered (a snapshot's).
    pub fn new() -> HeapCopier {
        HeapCopier::default()
    }

    /// A copier whose copies of arrays and typed arrays are charged to `meter` (a restore
    /// into a live guest, so the guest's later growth of them is metered too).
    pub fn metered(meter: &Rc<HeapMeter>) -> HeapCopier {
        HeapCopier {
            meter: Some(Rc::clone(meter)),
            ..HeapCopier::default()
        }
    }

    /// The copy of `o` (made empty now, filled by [`HeapCopier::finish`]).
    pub fn obj(&mut self, o: &Obj) -> Obj {
        if let Some(copy) = self.copies.get(&o.key()) {
            return copy.clone();
        }
        let copy = Obj::new(ObjKind::Plain);
        self.copies.insert(o.key(), copy.clone());
        self.pending.push((o.clone(), copy.clone()));
        copy
    }

    /// The copy of `v` (objects are copied; primitives and strings are immutable and shared).
    pub fn value(&mut self, v: &Value) -> Value {
        match v {
            Value::Object(o) => Value::Object(self.obj(o)),
            other => other.clone(),
        }
    }

    /// Copies the contents of every object reached so far, and of what they reach (iteratively:
    /// a deep object graph cannot overflow the stack).
    pub fn finish(&mut self) {
        while let Some((old, copy)) = self.pending.pop() {
            let (kind, props) = {
                let data = old.borrow();
                let kind = match &data.kind {
                    ObjKind::Plain => ObjKind::Plain,
                    ObjKind::Array(items) => {
                        ObjKind::Array(items.iter().map(|v| self.value(v)).collect())
                    }
                    ObjKind::Bytes(b) => ObjKind::Bytes(b.clone()),
                    ObjKind::Function(c) => ObjKind::Function(c.clone()),
                    ObjKind::Error => ObjKind::Error,
                    ObjKind::Date(ms) => ObjKind::Date(*ms),
                };
                let props: IndexMap<String, Value> = data
                    .props
                    .iter()
                    .map(|(k, v)| (k.clone(), self.value(v)))
                    .collect();
                (kind, props)
            };
            let mut data = copy.borrow_mut();
            if let Some(meter) = &self.meter {
                data.charge = Some(Charge::forced(meter, backing_bytes(&kind)));
            }
            data.kind = kind;
            data.props = props;
        }
    }

    /// A copy of the reference table whose objects are this copier's copies (same ids, same
    /// reference counts, same free list). Call [`HeapCopier::finish`] afterwards.
    pub fn values(&mut self, values: &Values) -> Values {
        let mut objects = HashMap::with_capacity(values.objects.len());
        let slots = values
            .slots
            .iter()
            .enumerate()
            .map(|(id, slot)| {
                slot.as_ref().map(|s| {
                    let value = self.value(&s.value);
                    if let Value::Object(o) = &value {
                        objects.insert(o.key(), id as u32);
                    }
                    Slot {
                        value,
                        refs: s.refs,
                    }
                })
            })
            .collect();
        Values {
            slots,
            strings: values.strings.clone(),
            objects,
            pool: values.pool.clone(),
            known: Vec::new(),
            known_sweep_at: KNOWN_SWEEP_MIN,
        }
    }

    /// Hands every copy made so far to `values` to empty when it is dropped (see [`Values`]):
    /// a copied heap keeps the original's cycles, including ones no id reaches any more.
    /// Call after [`HeapCopier::finish`].
    pub fn hand_copies_to(&self, values: &mut Values) {
        for copy in self.copies.values() {
            values.remember(copy);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_frees_cycles_through_objects_it_named_when_dropped() {
        let meter = HeapMeter::new(1 << 20);
        let global = Obj::plain(vec![]);
        global.set("globalThis", Value::Object(global.clone()));
        let mut table = Values::new(global.clone(), Obj::plain(vec![]));
        // A guest's ring through a metered array: a -> array -> a.
        let a = Obj::plain(vec![]);
        let array = Obj::metered(&meter, ObjKind::Array(vec![Value::Undefined; 100]));
        let id = table.store(&Value::Object(a.clone())) as u32;
        table.store(&Value::Object(array.clone()));
        a.set("items", Value::Object(array.clone()));
        array.set_index(0, Value::Object(a.clone()));
        // Go drops its reference to `a`: it is out of the table, still remembered.
        table.finalize(id);
        assert!(meter.used() >= array_bytes(100));
        let weak = [global.downgrade(), a.downgrade(), array.downgrade()];
        drop((global, a, array));
        assert!(
            weak.iter().all(WeakObj::is_alive),
            "the rings hold themselves"
        );
        drop(table);
        assert!(!weak.iter().any(WeakObj::is_alive), "freed with the table");
        assert_eq!(meter.used(), 0, "the array's charge is refunded");
    }

    #[test]
    fn the_table_forgets_freed_objects_as_it_goes() {
        let mut table = Values::new(Obj::plain(vec![]), Obj::plain(vec![]));
        for _ in 0..100_000 {
            let id = table.store(&Value::Object(Obj::plain(vec![]))) as u32;
            table.finalize(id);
        }
        assert!(
            table.known.len() <= KNOWN_SWEEP_MIN,
            "{} objects remembered, all but two of them freed",
            table.known.len()
        );
    }

    #[test]
    fn guest_strings_are_charged_until_their_last_copy_is_dropped() {
        let meter = HeapMeter::new(100);
        let s = JsStr::try_metered(&meter, "abcdefghij").unwrap();
        assert_eq!(meter.used(), 10);
        let copy = s.clone();
        drop(s);
        assert_eq!(meter.used(), 10, "a copy still holds it");
        // In the reference table, keyed by content, with a host string of the same text.
        let mut table = Values::new(Obj::plain(vec![]), Obj::plain(vec![]));
        let id = table.store(&Value::String(copy.clone())) as u32;
        assert_eq!(table.store(&Value::string("abcdefghij")) as u32, id);
        drop(copy);
        assert_eq!(meter.used(), 10);
        table.finalize(id);
        table.finalize(id);
        assert_eq!(meter.used(), 0);
        // Over the limit: refused, nothing charged.
        let long = "x".repeat(101);
        assert_eq!(
            JsStr::try_metered(&meter, &long).unwrap_err(),
            HeapFull {
                wanted: 101,
                limit: 100
            }
        );
        assert_eq!(meter.used(), 0);
    }

    #[test]
    fn property_names_a_guest_adds_are_charged_and_given_back() {
        let entry = property_bytes("");
        let meter = HeapMeter::new(3 * entry + 10);
        let o = Obj::plain(vec![("host", Value::Null)]);
        o.set_by_guest(&meter, "a", Value::Number(1.0)).unwrap();
        assert_eq!(meter.used(), entry + 1);
        // Assigning an existing property adds nothing.
        o.set_by_guest(&meter, "a", Value::Number(2.0)).unwrap();
        o.set_by_guest(&meter, "host", Value::Number(2.0)).unwrap();
        assert_eq!(meter.used(), entry + 1);
        // Plain-object indexes are properties too; array indexes are not.
        o.set_index_by_guest(&meter, 42, Value::Null).unwrap();
        assert_eq!(meter.used(), 2 * entry + 3);
        let arr = Obj::array(vec![]);
        arr.set_index_by_guest(&meter, 0, Value::Null).unwrap();
        assert_eq!(meter.used(), 2 * entry + 3);
        // Refused: the object is as it was.
        let long = "n".repeat(entry);
        assert!(o.set_by_guest(&meter, &long, Value::Null).is_err());
        assert!(o.get(&long).as_number().is_none());
        assert_eq!(o.borrow().props.len(), 3);
        assert_eq!(meter.used(), 2 * entry + 3);
        // Deleting gives a name's share back, and so does dropping the object.
        o.delete("a");
        assert_eq!(meter.used(), entry + 2);
        drop(o);
        assert_eq!(meter.used(), 0);
    }

    #[test]
    fn string_conversion_of_hostile_object_graphs_is_bounded() {
        // An array that contains itself joins as "" there, as in JS.
        let a = Obj::array(vec![Value::Number(1.0)]);
        a.set_index(1, Value::Object(a.clone()));
        assert_eq!(Value::Object(a.clone()).to_js_string(), "1,");
        // Deep nesting without a cycle stops at the depth limit instead of the stack.
        let mut deep = Value::Number(7.0);
        for _ in 0..5_000 {
            deep = Value::Object(Obj::array(vec![deep]));
        }
        assert_eq!(deep.to_js_string(), "");
        let mut shallow = Value::Number(7.0);
        for _ in 0..10 {
            shallow = Value::Object(Obj::array(vec![shallow]));
        }
        assert_eq!(shallow.to_js_string(), "7");
        // Shared sub-arrays would double the length at every level: cut at the budget.
        let mut wide = Value::String("x".repeat(1000).into());
        for _ in 0..40 {
            wide = Value::Object(Obj::array(vec![wide.clone(), wide]));
        }
        assert_eq!(wide.to_js_string().len(), MAX_STRING_BYTES);
        // Errors built from cyclic parts too.
        let e = Obj::new(ObjKind::Error);
        e.borrow_mut()
            .props
            .insert("message".into(), Value::Object(a.clone()));
        assert_eq!(Value::Object(e).to_js_string(), "Error: 1,");
    }

    fn table() -> Values {
        Values::new(Obj::new(ObjKind::Plain), Obj::new(ObjKind::Plain))
    }

    #[test]
    fn primitives_encode_as_wasm_exec_does() {
        let mut t = table();
        assert_eq!(t.store(&Value::Undefined), 0);
        assert_eq!(t.store(&Value::Number(1.5)), 1.5f64.to_bits());
        assert_eq!(t.store(&Value::Number(0.0)), (NAN_HEAD << 32) | 1);
        assert_eq!(t.store(&Value::Number(-0.0)), (NAN_HEAD << 32) | 1);
        assert_eq!(t.store(&Value::Number(f64::NAN)), NAN_HEAD << 32);
        assert_eq!(t.store(&Value::Null), (NAN_HEAD << 32) | 2);
        assert_eq!(t.store(&Value::Bool(true)), (NAN_HEAD << 32) | 3);
        assert_eq!(t.store(&Value::Bool(false)), (NAN_HEAD << 32) | 4);
        // Loading them back.
        assert!(matches!(t.load(0).unwrap(), Value::Undefined));
        assert!(matches!(t.load((NAN_HEAD << 32) | 2).unwrap(), Value::Null));
        assert!(matches!(
            t.load((NAN_HEAD << 32) | 3).unwrap(),
            Value::Bool(true)
        ));
        assert_eq!(t.load(2.25f64.to_bits()).unwrap().as_number(), Some(2.25));
        assert!(
            t.load(NAN_HEAD << 32)
                .unwrap()
                .as_number()
                .unwrap()
                .is_nan()
        );
        // -0 as raw bits is "undefined" to the loader, as in JS (f === 0).
        assert!(matches!(
            t.load((-0.0f64).to_bits()).unwrap(),
            Value::Undefined
        ));
    }

    #[test]
    fn strings_share_an_id_by_content_and_ids_are_reused_lifo() {
        let mut t = table();
        let a = t.store(&Value::string("a"));
        let a2 = t.store(&Value::string("a"));
        assert_eq!(a, a2, "one id per string content");
        assert_eq!(a >> 32, NAN_HEAD | FLAG_STRING);
        let id_a = a as u32;
        assert_eq!(id_a, PREDEFINED);
        assert_eq!(t.refs(id_a), Some(2));
        let b = t.store(&Value::string("b")) as u32;
        assert_eq!(b, PREDEFINED + 1);
        t.finalize(id_a);
        assert_eq!(t.refs(id_a), Some(1), "still referenced once");
        t.finalize(id_a);
        assert_eq!(t.refs(id_a), None, "freed");
        assert!(t.load(a).is_err(), "a freed id no longer loads");
        t.finalize(b);
        // LIFO: b's id comes back first, then a's.
        assert_eq!(t.store(&Value::string("c")) as u32, b);
        assert_eq!(t.store(&Value::string("d")) as u32, id_a);
        assert_eq!(t.live(), PREDEFINED as usize + 2);
    }

    #[test]
    fn objects_keep_one_id_and_functions_get_flag_4() {
        let mut t = table();
        let o = Obj::plain(vec![]);
        let r1 = t.store(&Value::Object(o.clone()));
        let r2 = t.store(&Value::Object(o.clone()));
        assert_eq!(r1, r2);
        assert_eq!(r1 >> 32, NAN_HEAD | FLAG_OBJECT);
        let f = Obj::function(Callable::GoFunc(3));
        let rf = t.store(&Value::Object(f.clone()));
        assert_eq!(rf >> 32, NAN_HEAD | FLAG_FUNCTION);
        let loaded = t.load(rf).unwrap();
        assert!(loaded.as_object().unwrap().same(&f));
        // Predefined values are never freed.
        t.finalize(ID_GLOBAL);
        t.finalize(ID_NULL);
        assert!(
            t.load((NAN_HEAD | FLAG_OBJECT) << 32 | u64::from(ID_GLOBAL))
                .is_ok()
        );
        assert!(matches!(t.load((NAN_HEAD << 32) | 2).unwrap(), Value::Null));
    }

    #[test]
    fn js_string_conversion() {
        assert_eq!(Value::Number(1.0).to_js_string(), "1");
        assert_eq!(Value::Number(1.5).to_js_string(), "1.5");
        assert_eq!(Value::Number(-3.0).to_js_string(), "-3");
        assert_eq!(Value::Bool(true).to_js_string(), "true");
        assert_eq!(Value::Null.to_js_string(), "null");
        let arr = Obj::array(vec![Value::Number(1.0), Value::Null, Value::string("x")]);
        assert_eq!(Value::Object(arr).to_js_string(), "1,,x");
        let err = Obj::error("TypeError", "boom", None);
        assert_eq!(Value::Object(err).to_js_string(), "TypeError: boom");
    }

    #[test]
    fn dropping_a_deeply_nested_graph_does_not_overflow_the_stack() {
        // Arrays and objects a million deep, as a guest can build through SetIndex/Set.
        let mut inner = Value::Null;
        for i in 0..1_000_000 {
            inner = if i % 2 == 0 {
                Value::Object(Obj::array(vec![inner]))
            } else {
                Value::Object(Obj::plain(vec![("x", inner)]))
            };
        }
        drop(inner);
        // A shared child survives the drop of one of its owners.
        let shared = Obj::array(vec![Value::Number(1.0)]);
        let owner = Obj::array(vec![Value::Object(shared.clone())]);
        drop(owner);
        assert_eq!(shared.length(), 1.0);
    }

    #[test]
    fn arrays_and_byte_arrays() {
        let a = Obj::array(vec![]);
        a.set_index(2, Value::Number(7.0));
        assert_eq!(a.length(), 3.0);
        assert!(matches!(a.index(0), Value::Undefined));
        assert_eq!(a.index(2).as_number(), Some(7.0));
        // Far past the end: ignored rather than allocating millions of holes (fuzz finding).
        a.set_index(9_343_630, Value::Null);
        a.set_index(1 << 40, Value::Null);
        assert_eq!(a.length(), 3.0);
        a.set_index(3 + 60_000, Value::Null);
        assert_eq!(a.length(), 60_004.0);
        let b = Obj::new(ObjKind::Bytes(vec![0; 2]));
        b.set_index(0, Value::Number(257.0));
        b.set_index(5, Value::Number(1.0)); // out of range: ignored
        assert_eq!(b.index(0).as_number(), Some(1.0));
        assert_eq!(b.length(), 2.0);
        assert!(b.instance_of(Class::Uint8Array));
        assert!(!a.instance_of(Class::Uint8Array));
        assert!(a.instance_of(Class::Object));
    }

    #[test]
    fn metered_arrays_are_charged_refused_over_the_limit_and_refunded_when_dropped() {
        let item = std::mem::size_of::<Value>();
        let meter = HeapMeter::new(100 * item);
        let bytes = Obj::try_metered(&meter, 40, || ObjKind::Bytes(vec![0; 40])).unwrap();
        let array = Obj::try_metered(&meter, 10 * item, || {
            ObjKind::Array(vec![Value::Undefined; 10])
        })
        .unwrap();
        assert_eq!(meter.used(), 40 + 10 * item);

        // Over the limit: refused before anything is allocated.
        let made = std::cell::Cell::new(false);
        let full = Obj::try_metered(&meter, 95 * item, || {
            made.set(true);
            ObjKind::Array(Vec::new())
        })
        .unwrap_err();
        assert!(!made.get());
        assert_eq!(full.limit, 100 * item);
        assert_eq!(meter.used(), 40 + 10 * item);

        // Growth by assignment is charged; growth past the limit leaves the array as it was
        // and is reported once.
        array.set_index(49, Value::Number(1.0));
        assert_eq!(array.length(), 50.0);
        assert_eq!(meter.used(), 40 + 50 * item);
        assert_eq!(meter.take_refused(), None);
        array.set_index(99, Value::Number(1.0));
        assert_eq!(array.length(), 50.0);
        assert!(meter.take_refused().is_some());
        assert_eq!(meter.take_refused(), None);
        array.set("length", Value::Number(1e9));
        assert_eq!(array.length(), 50.0);
        assert!(meter.take_refused().is_some());
        array.set("length", Value::Number(60.0));
        assert_eq!(array.length(), 60.0);

        // Host-made arrays are charged without a check, then metered like the guest's.
        let args = Obj::metered(&meter, ObjKind::Array(vec![Value::Null; 2]));
        args.set_index(70_000, Value::Null);
        assert_eq!(args.length(), 2.0);
        args.set_index(5, Value::Null);
        assert_eq!(args.length(), 6.0);
        let _ = meter.take_refused();

        // Everything comes back once the objects are gone, however deeply they nest.
        let outer = Obj::metered(&meter, ObjKind::Array(vec![Value::Object(array)]));
        drop((bytes, args));
        let mut nested = Value::Object(outer);
        for _ in 0..10_000 {
            nested = Value::Object(Obj::metered(&meter, ObjKind::Array(vec![nested])));
        }
        assert!(meter.used() > 0);
        drop(nested);
        assert_eq!(meter.used(), 0);
    }

    #[test]
    fn a_metered_copier_charges_the_restored_heap() {
        let meter = HeapMeter::new(1 << 20);
        let original = Obj::array(vec![Value::Number(1.0); 8]);
        let bytes = Obj::new(ObjKind::Bytes(vec![7; 100]));
        original.set("b", Value::Object(bytes));

        let mut snapshot = HeapCopier::new();
        let unmetered = snapshot.obj(&original);
        snapshot.finish();
        assert_eq!(meter.used(), 0);

        let mut restore = HeapCopier::metered(&meter);
        let copy = restore.obj(&unmetered);
        restore.finish();
        let item = std::mem::size_of::<Value>();
        assert_eq!(meter.used(), 8 * item + 100);
        copy.set_index(9, Value::Null);
        assert_eq!(meter.used(), 10 * item + 100);
        // The copier keeps its copies (so a second reach finds the same object) until it goes.
        drop((copy, restore));
        assert_eq!(meter.used(), 0);
    }
}
