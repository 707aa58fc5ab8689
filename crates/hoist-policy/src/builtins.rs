//! Rego builtins that `opa build -t wasm` leaves to the host, implemented in Rust.

use base64::Engine as _;
use serde_json::{Number, Value, json};

/// The builtins hoist answers.
pub const IMPLEMENTED: &[&str] = &[
    "sprintf",
    "trace",
    "json.is_valid",
    "yaml.is_valid",
    "yaml.unmarshal",
    "hex.encode",
    "hex.decode",
    "base64url.encode_no_pad",
    "urlquery.encode",
    "urlquery.decode",
    "glob.quote_meta",
    "semver.is_valid",
    "semver.compare",
    "time.now_ns",
    "regex.split",
];

/// Why a builtin gave no value.
#[derive(Debug)]
pub enum BuiltinError {
    /// hoist does not implement it.
    Unimplemented,
    /// It failed on these arguments.
    Failed(String),
}

fn string_arg<'a>(args: &'a [Value], i: usize, name: &str) -> Result<&'a str, BuiltinError> {
    args.get(i)
        .and_then(Value::as_str)
        .ok_or_else(|| BuiltinError::Failed(format!("{name}: operand {} must be a string", i + 1)))
}

/// Calls builtin `name` on JSON arguments.
pub fn call(name: &str, args: &[Value]) -> Result<Value, BuiltinError> {
    let s = |i: usize| string_arg(args, i, name);
    Ok(match name {
        "sprintf" => {
            let format = s(0)?;
            let list = match args.get(1) {
                Some(Value::Array(items)) => items.as_slice(),
                _ => {
                    return Err(BuiltinError::Failed(
                        "sprintf: operand 2 must be an array".into(),
                    ));
                }
            };
            Value::String(sprintf(format, list).map_err(BuiltinError::Failed)?)
        }
        "trace" => {
            tracing::debug!("rego trace: {}", s(0)?);
            Value::Bool(true)
        }
        "json.is_valid" => Value::Bool(serde_json::from_str::<Value>(s(0)?).is_ok()),
        "yaml.is_valid" => Value::Bool(serde_saphyr::from_str::<Value>(s(0)?).is_ok()),
        "yaml.unmarshal" => serde_saphyr::from_str::<Value>(s(0)?)
            .map_err(|e| BuiltinError::Failed(format!("yaml.unmarshal: {e}")))?,
        "hex.encode" => Value::String(hex::encode(s(0)?)),
        "hex.decode" => {
            // The hex crate reads byte pairs, so a multi-byte character is an invalid digit,
            // not a slice through it (fuzz finding 11 was a hand-written decoder that sliced).
            let text = s(0)?;
            let bytes = hex::decode(text).map_err(|e| {
                BuiltinError::Failed(format!(
                    "hex.decode: {e} in {:?}",
                    text.chars().take(40).collect::<String>()
                ))
            })?;
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        }
        "base64url.encode_no_pad" => {
            Value::String(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s(0)?))
        }
        "urlquery.encode" => Value::String(
            percent_encoding::utf8_percent_encode(s(0)?, QUERY)
                .to_string()
                .replace("%20", "+"),
        ),
        "urlquery.decode" => Value::String(
            percent_encoding::percent_decode_str(&s(0)?.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned(),
        ),
        "glob.quote_meta" => {
            let mut out = String::new();
            for c in s(0)?.chars() {
                if "*?\\[]{}".contains(c) {
                    out.push('\\');
                }
                out.push(c);
            }
            Value::String(out)
        }
        "semver.is_valid" => Value::Bool(
            args.first()
                .and_then(Value::as_str)
                .is_some_and(|v| semver::Version::parse(v).is_ok()),
        ),
        "semver.compare" => {
            let parse = |i: usize| -> Result<semver::Version, BuiltinError> {
                let text = s(i)?;
                semver::Version::parse(text)
                    .map_err(|e| BuiltinError::Failed(format!("semver.compare: {text:?}: {e}")))
            };
            json!(parse(0)?.cmp(&parse(1)?) as i8)
        }
        "time.now_ns" => json!(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0)
        ),
        "regex.split" => {
            let re = regex::Regex::new(s(0)?)
                .map_err(|e| BuiltinError::Failed(format!("regex.split: {e}")))?;
            Value::Array(
                re.split(s(1)?)
                    .map(|p| Value::String(p.to_string()))
                    .collect(),
            )
        }
        _ => return Err(BuiltinError::Unimplemented),
    })
}

const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Rego's text form of a value (what `sprintf("%v", [x])` prints for non-scalars).
fn rego_text(v: &Value) -> String {
    match v {
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(rego_text).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), rego_text(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

fn number_text(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        u.to_string()
    } else {
        let f = n.as_f64().unwrap_or(0.0);
        if f.fract() == 0.0 && f.abs() < 1e21 {
            format!("{f:.0}")
        } else {
            format!("{f}")
        }
    }
}

/// The longest text `sprintf` builds. The builtin runs in the host, outside the policy's
/// memory limit, so a format such as `%999999s` repeated must fail instead of exhausting
/// the host's memory (a fuzz finding: `%3333333355(` asked for a 3 GB padding).
pub const SPRINTF_OUTPUT_LIMIT: usize = 16 << 20;

/// The largest width or precision Go's `fmt` reads: it stops (`tooLarge`) once the number
/// passes a million before its next digit, so 10,000,009 is the last accepted; beyond it the
/// rest of the format is read as a verb-less directive.
const GO_FMT_NUMBER_MAX: usize = 10_000_009;

/// Go's `fmt.Sprintf` as OPA's `sprintf` applies it: strings stay strings, numbers are ints
/// or floats, anything else is its Rego text. Fails when the text would exceed
/// [`SPRINTF_OUTPUT_LIMIT`].
pub fn sprintf(format: &str, args: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    let mut next = 0usize;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // Flags, width and precision.
        let mut spec = String::new();
        while let Some(&f) = chars.peek() {
            if "+-# 0123456789.".contains(f) {
                spec.push(f);
                chars.next();
            } else {
                break;
            }
        }
        let too_large = spec
            .split('.')
            .map(|n| n.trim_start_matches(['-', '+', '#', ' ', '0']))
            .any(|n| n.len() > 8 || n.parse::<usize>().is_ok_and(|v| v > GO_FMT_NUMBER_MAX));
        let verb = if too_large { None } else { chars.next() };
        let Some(verb) = verb else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        next += 1;
        let precision = spec
            .split_once('.')
            .and_then(|(_, p)| p.parse::<usize>().ok());
        let width = spec
            .split('.')
            .next()
            .map(|w| w.trim_start_matches(['-', '+', '#', ' ', '0']))
            .and_then(|w| w.parse::<usize>().ok());
        let text = match (verb, arg) {
            ('v' | 's', Value::String(s)) => s.clone(),
            ('q', Value::String(s)) => Value::String(s.clone()).to_string(),
            ('v' | 'd', Value::Number(n)) if n.is_i64() || n.is_u64() => number_text(n),
            ('v', Value::Number(n)) => number_text(n),
            ('d', Value::Number(n)) => format!("%!d(float64={})", number_text(n)),
            ('f' | 'F', Value::Number(n)) => {
                format!("{:.*}", precision.unwrap_or(6), n.as_f64().unwrap_or(0.0))
            }
            ('e', Value::Number(n)) => {
                format!("{:.*e}", precision.unwrap_or(6), n.as_f64().unwrap_or(0.0))
            }
            ('x', Value::Number(n)) if n.is_i64() => format!("{:x}", n.as_i64().unwrap_or(0)),
            ('X', Value::Number(n)) if n.is_i64() => format!("{:X}", n.as_i64().unwrap_or(0)),
            ('x', Value::String(s)) => hex::encode(s),
            ('t' | 'v', Value::Bool(b)) => b.to_string(),
            ('v' | 's', other) => rego_text(other),
            (verb, other) => format!("%!{verb}({})", rego_text(other)),
        };
        let text = match (verb, precision) {
            ('s' | 'v', Some(p)) if matches!(arg, Value::String(_)) => {
                text.chars().take(p).collect()
            }
            _ => text,
        };
        match width {
            Some(w) if text.chars().count() < w => {
                let pad = " ".repeat(w - text.chars().count());
                if spec.starts_with('-') {
                    out.push_str(&text);
                    out.push_str(&pad);
                } else {
                    out.push_str(&pad);
                    out.push_str(&text);
                }
            }
            _ => out.push_str(&text),
        }
        if out.len() > SPRINTF_OUTPUT_LIMIT {
            return Err(format!(
                "sprintf: the text would exceed {SPRINTF_OUTPUT_LIMIT} bytes (format {:?}...)",
                format.chars().take(40).collect::<String>()
            ));
        }
    }
    if next < args.len() {
        out.push_str("%!(EXTRA ");
        out.push_str(
            &args
                .get(next..)
                .unwrap_or_default()
                .iter()
                .map(rego_text)
                .collect::<Vec<_>>()
                .join(", "),
        );
        out.push(')');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sprintf_ok(format: &str, args: &[Value]) -> String {
        sprintf(format, args).expect("within the limit")
    }

    #[test]
    fn hex_decode_refuses_non_hex_text_without_panicking() {
        assert_eq!(call("hex.decode", &[json!("6869")]).ok(), Some(json!("hi")));
        assert_eq!(call("hex.decode", &[json!("")]).ok(), Some(json!("")));
        // Fuzz finding 11: a multi-byte character where a digit pair was expected.
        for bad in ["*\u{479c}", "\u{479c}a", "zz", "6"] {
            assert!(
                matches!(
                    call("hex.decode", &[json!(bad)]),
                    Err(BuiltinError::Failed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn sprintf_refuses_huge_widths_as_go_does_and_caps_its_output() {
        // Fuzz finding (fuzz/regressions/opa_bridge): a 3 GB padding.
        assert_eq!(
            sprintf_ok("%3333333355(", &[json!(3)]),
            "%!(NOVERB)%!(EXTRA 3)"
        );
        assert_eq!(
            sprintf_ok("%.99999999999f", &[json!(1)]),
            "%!(NOVERB)%!(EXTRA 1)"
        );
        assert_eq!(sprintf_ok("%3s", &[json!(1)]).len(), 3);
        let many = "%9999999s".repeat(4);
        let err = sprintf(&many, &[json!(1), json!(2), json!(3), json!(4)]).unwrap_err();
        assert!(err.contains("exceed"), "{err}");
        assert!(matches!(
            call("sprintf", &[json!(many), json!([1, 2, 3, 4])]),
            Err(BuiltinError::Failed(_))
        ));
    }

    #[test]
    fn sprintf_follows_go() {
        assert_eq!(
            sprintf_ok(
                "ingress host conflicts with an existing ingress <%v>",
                &[json!("foo.bar.com")]
            ),
            "ingress host conflicts with an existing ingress <foo.bar.com>"
        );
        assert_eq!(
            sprintf_ok("%d items, %s, %v", &[json!(3), json!("x"), json!(1.5)]),
            "3 items, x, 1.5"
        );
        assert_eq!(sprintf_ok("%v", &[json!(["a", 1])]), r#"["a", 1]"#);
        assert_eq!(sprintf_ok("%v", &[json!({"k": true})]), r#"{"k": true}"#);
        assert_eq!(sprintf_ok("%.2f%%", &[json!(12.345)]), "12.35%");
        assert_eq!(
            sprintf_ok("%5s|%-3d|", &[json!("ab"), json!(7)]),
            "   ab|7  |"
        );
        assert_eq!(sprintf_ok("%q", &[json!("a\"b")]), r#""a\"b""#);
        assert_eq!(sprintf_ok("%v %v", &[json!(1)]), "1 %!v(MISSING)");
    }

    #[test]
    fn other_builtins() {
        assert_eq!(call("hex.encode", &[json!("hi")]).unwrap(), json!("6869"));
        assert_eq!(call("hex.decode", &[json!("6869")]).unwrap(), json!("hi"));
        assert_eq!(call("json.is_valid", &[json!("{")]).unwrap(), json!(false));
        assert_eq!(
            call("semver.compare", &[json!("1.2.3"), json!("1.10.0")]).unwrap(),
            json!(-1)
        );
        assert_eq!(
            call("urlquery.encode", &[json!("a b&c")]).unwrap(),
            json!("a+b%26c")
        );
        assert_eq!(
            call("urlquery.decode", &[json!("a+b%26c")]).unwrap(),
            json!("a b&c")
        );
        assert_eq!(
            call("glob.quote_meta", &[json!("*.x")]).unwrap(),
            json!("\\*.x")
        );
        assert_eq!(
            call("regex.split", &[json!(","), json!("a,b")]).unwrap(),
            json!(["a", "b"])
        );
        assert!(matches!(
            call("net.cidr_merge", &[]),
            Err(BuiltinError::Unimplemented)
        ));
        assert!(matches!(
            call("sprintf", &[json!(1)]),
            Err(BuiltinError::Failed(_))
        ));
    }
}
