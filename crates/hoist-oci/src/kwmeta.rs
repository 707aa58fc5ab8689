//! Kubewarden policy metadata: the `io.kubewarden.metadata` custom section.

use std::collections::BTreeMap;

/// Name of the custom section holding a Kubewarden policy's metadata (JSON).
pub const KUBEWARDEN_METADATA_SECTION: &str = "io.kubewarden.metadata";

fn leb128_u32(data: &[u8], pos: &mut usize) -> Option<u32> {
    let mut result: u32 = 0;
    for i in 0..5 {
        let byte = *data.get(*pos)?;
        *pos += 1;
        result |= u32::from(byte & 0x7f).checked_shl(7 * i)?;
        if byte & 0x80 == 0 {
            return Some(result);
        }
    }
    None
}

/// The payload of the first custom section called `name`, if the module is well-formed up
/// to it. Every offset is bounds-checked: a malformed module yields `None`, never a panic.
pub fn custom_section<'a>(wasm: &'a [u8], name: &str) -> Option<&'a [u8]> {
    if wasm.len() < 8 || !wasm.starts_with(b"\0asm") {
        return None;
    }
    let mut pos = 8;
    while let Some(&id) = wasm.get(pos) {
        pos += 1;
        let size = leb128_u32(wasm, &mut pos)? as usize;
        let end = pos.checked_add(size)?;
        let payload = wasm.get(pos..end)?;
        if id == 0 {
            let mut p = 0;
            let name_len = leb128_u32(payload, &mut p)? as usize;
            let section_name = payload.get(p..p.checked_add(name_len)?)?;
            if section_name == name.as_bytes() {
                return payload.get(p + name_len..);
            }
        }
        pos = end;
    }
    None
}

/// The string annotations of a Kubewarden policy's metadata (`annotations` in the
/// `io.kubewarden.metadata` custom section), empty when there is none.
pub fn kubewarden_annotations(wasm: &[u8]) -> BTreeMap<String, String> {
    let Some(payload) = custom_section(wasm, KUBEWARDEN_METADATA_SECTION) else {
        return BTreeMap::new();
    };
    let Ok(meta) = serde_json::from_slice::<serde_json::Value>(payload) else {
        tracing::warn!(
            "the {KUBEWARDEN_METADATA_SECTION} section is not valid JSON; no annotations taken from it"
        );
        return BTreeMap::new();
    };
    meta.get("annotations")
        .and_then(|a| a.as_object())
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_section(name: &str, payload: &[u8]) -> Vec<u8> {
        let mut content = vec![name.len() as u8];
        content.extend_from_slice(name.as_bytes());
        content.extend_from_slice(payload);
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        // a type section first, to walk past a non-custom section
        wasm.extend_from_slice(&[1, 4, 1, 0x60, 0, 0]);
        wasm.push(0);
        // two-byte LEB128 size
        wasm.push((content.len() as u8 & 0x7f) | 0x80);
        wasm.push((content.len() >> 7) as u8);
        wasm.extend_from_slice(&content);
        wasm
    }

    #[test]
    fn reads_metadata_annotations() {
        let meta = br#"{"protocolVersion":"v1","annotations":{"io.kubewarden.policy.title":"t","io.kubewarden.policy.author":"a","n":1}}"#;
        let wasm = with_section(KUBEWARDEN_METADATA_SECTION, meta);
        let a = kubewarden_annotations(&wasm);
        assert_eq!(a.len(), 2);
        assert_eq!(a["io.kubewarden.policy.title"], "t");
        assert!(kubewarden_annotations(&with_section("other", meta)).is_empty());
        assert!(
            kubewarden_annotations(&with_section(KUBEWARDEN_METADATA_SECTION, b"{bad")).is_empty()
        );
    }

    #[test]
    fn malformed_modules_never_panic() {
        let wasm = with_section(KUBEWARDEN_METADATA_SECTION, b"{}");
        for cut in 0..wasm.len() {
            let _ = custom_section(&wasm[..cut], KUBEWARDEN_METADATA_SECTION);
        }
        let mut huge = b"\0asm\x01\0\0\0\0".to_vec();
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(custom_section(&huge, "x"), None);
        assert_eq!(
            custom_section(b"\0asm\x01\0\0\0\0\xff\xff\xff\xff\xff\xff", "x"),
            None
        );
    }
}
