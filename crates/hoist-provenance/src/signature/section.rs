//! A small, bounds-checked scanner for the section framing of a Wasm binary.
//!
//! It reads only what signing needs: the 8-byte preamble, then each section's id byte and
//! LEB128 `u32` size, and for custom sections (id 0) the LEB128 name length and name. It never
//! interprets section contents, so it accepts anything whose *framing* is sound and leaves real
//! validation to the engine.
//!
//! Rules (a malformed module is an error, never a panic or an over-read):
//! - the preamble must be `\0asm` followed by version 1 (a core module) or the component-model
//!   layer `0d 00 01 00` (the framing is the same);
//! - a LEB128 `u32` uses at most 5 bytes and its 5th byte may not carry bits above bit 31;
//!   non-minimal (padded) encodings are accepted, as the Wasm spec allows and linkers emit;
//! - a section's size may not run past the end of the module; a custom section's name length
//!   may not run past the end of its section.

use std::ops::Range;

use thiserror::Error;

/// The Wasm magic bytes.
const MAGIC: [u8; 4] = *b"\0asm";
/// Version field of a core module.
const VERSION_MODULE: [u8; 4] = [1, 0, 0, 0];
/// Version + layer field of a component (component-model binary format).
const VERSION_COMPONENT: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
/// Length of the preamble (magic + version).
pub const PREAMBLE_LEN: usize = 8;

/// Why a module's section framing could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SectionError {
    /// The input does not start with the Wasm magic bytes.
    #[error("not a WebAssembly binary: it does not start with \\0asm")]
    NotWasm,
    /// The version field is neither a core module (1) nor a component.
    #[error("unsupported WebAssembly version bytes {0:02x?}")]
    UnsupportedVersion([u8; 4]),
    /// The input ends in the middle of something.
    #[error("truncated module: {what} at byte offset {offset} runs past the end of the input")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Byte offset where it started.
        offset: usize,
    },
    /// A LEB128 number is longer than 5 bytes or does not fit in 32 bits.
    #[error("malformed module: LEB128 {what} at byte offset {offset} overflows 32 bits")]
    LebOverflow {
        /// What was being read.
        what: &'static str,
        /// Byte offset where it started.
        offset: usize,
    },
    /// A section claims more bytes than remain in the input.
    #[error(
        "malformed module: section (id {id}) at byte offset {offset} claims {size} bytes but only {remaining} remain"
    )]
    SectionPastEnd {
        /// Section id.
        id: u8,
        /// Byte offset of the section's id byte.
        offset: usize,
        /// Claimed payload size.
        size: u32,
        /// Bytes left after the size field.
        remaining: usize,
    },
    /// A custom section's name runs past the end of that section.
    #[error(
        "malformed module: custom section at byte offset {offset} has a name longer than the section"
    )]
    NamePastSection {
        /// Byte offset of the section's id byte.
        offset: usize,
    },
}

/// One section, as located by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section<'a> {
    /// Section id (0 = custom).
    pub id: u8,
    /// Byte range of the whole section (id byte, size, payload) within the module.
    pub range: Range<usize>,
    /// For a custom section: its name and its data (the payload after the name).
    pub custom: Option<CustomSection<'a>>,
}

/// Name and data of a custom section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomSection<'a> {
    /// The raw name bytes (normally UTF-8; compared as bytes here).
    pub name: &'a [u8],
    /// The section's data after the name.
    pub data: &'a [u8],
}

/// Checks the preamble and returns the sections in order.
pub fn scan(module: &[u8]) -> Result<Vec<Section<'_>>, SectionError> {
    check_preamble(module)?;
    let mut sections = Vec::new();
    let mut offset = PREAMBLE_LEN;
    while let Some(&id) = module.get(offset) {
        let start = offset;
        offset += 1;
        let (size, after_size) = read_u32(module, offset, "section size")?;
        let remaining = module.len().saturating_sub(after_size);
        let size_usize = usize::try_from(size).unwrap_or(usize::MAX);
        let past_end = SectionError::SectionPastEnd {
            id,
            offset: start,
            size,
            remaining,
        };
        if size_usize > remaining {
            return Err(past_end);
        }
        let end = after_size + size_usize;
        let Some(payload) = module.get(after_size..end) else {
            return Err(past_end);
        };
        let custom = if id == 0 {
            let (name_len, after_name_len) = read_u32(payload, 0, "custom section name length")
                .map_err(|e| match e {
                    SectionError::Truncated { what, .. } => SectionError::Truncated {
                        what,
                        offset: after_size,
                    },
                    SectionError::LebOverflow { what, .. } => SectionError::LebOverflow {
                        what,
                        offset: after_size,
                    },
                    other => other,
                })?;
            let name_len = usize::try_from(name_len).unwrap_or(usize::MAX);
            let (name, data) = payload
                .get(after_name_len..)
                .and_then(|rest| rest.split_at_checked(name_len))
                .ok_or(SectionError::NamePastSection { offset: start })?;
            Some(CustomSection { name, data })
        } else {
            None
        };
        sections.push(Section {
            id,
            range: start..end,
            custom,
        });
        offset = end;
    }
    Ok(sections)
}

/// Checks the 8-byte preamble.
pub fn check_preamble(module: &[u8]) -> Result<(), SectionError> {
    if module.get(..4) != Some(MAGIC.as_slice()) {
        return Err(SectionError::NotWasm);
    }
    let Some(version) = module.get(4..PREAMBLE_LEN) else {
        return Err(SectionError::Truncated {
            what: "version",
            offset: 4,
        });
    };
    let mut v = [0u8; 4];
    v.copy_from_slice(version);
    if v != VERSION_MODULE && v != VERSION_COMPONENT {
        return Err(SectionError::UnsupportedVersion(v));
    }
    Ok(())
}

/// Reads an unsigned LEB128 `u32` at `offset`; returns the value and the offset after it.
fn read_u32(bytes: &[u8], offset: usize, what: &'static str) -> Result<(u32, usize), SectionError> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let Some(&byte) = bytes.get(offset + i) else {
            return Err(SectionError::Truncated { what, offset });
        };
        let low = u32::from(byte & 0x7f);
        if i == 4 && (byte & 0x70 != 0 || byte & 0x80 != 0) {
            // 5th byte: only 4 payload bits fit in 32 bits, and it must be the last byte.
            return Err(SectionError::LebOverflow { what, offset });
        }
        value |= low << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, offset + i + 1));
        }
    }
    Err(SectionError::LebOverflow { what, offset })
}

/// Encodes `value` as a minimal unsigned LEB128.
pub fn write_u32(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Returns `module` with a custom section `name` carrying `data` appended at the end.
///
/// Fails only when the new section would not fit the 32-bit size field.
pub fn append_custom_section(
    module: &[u8],
    name: &[u8],
    data: &[u8],
) -> Result<Vec<u8>, SectionError> {
    let name_len = u32::try_from(name.len()).map_err(|_| SectionError::LebOverflow {
        what: "custom section name length",
        offset: module.len(),
    })?;
    let mut name_prefix = Vec::with_capacity(5);
    write_u32(&mut name_prefix, name_len);
    let payload_len = name_prefix.len() + name.len() + data.len();
    let payload_len = u32::try_from(payload_len).map_err(|_| SectionError::LebOverflow {
        what: "section size",
        offset: module.len(),
    })?;
    let mut out = Vec::with_capacity(module.len() + 6 + payload_len as usize);
    out.extend_from_slice(module);
    out.push(0);
    write_u32(&mut out, payload_len);
    out.extend_from_slice(&name_prefix);
    out.extend_from_slice(name);
    out.extend_from_slice(data);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        b"\0asm\x01\0\0\0".to_vec()
    }

    #[test]
    fn leb128_round_trip_and_padding() {
        for v in [0u32, 1, 127, 128, 300, 16_384, u32::MAX] {
            let mut buf = Vec::new();
            write_u32(&mut buf, v);
            assert_eq!(read_u32(&buf, 0, "x"), Ok((v, buf.len())));
        }
        // Padded (non-minimal) encodings are valid Wasm.
        assert_eq!(
            read_u32(&[0x80, 0x80, 0x80, 0x80, 0x00], 0, "x"),
            Ok((0, 5))
        );
        assert_eq!(read_u32(&[0x85, 0x00], 0, "x"), Ok((5, 2)));
    }

    #[test]
    fn leb128_overflow_and_truncation() {
        // 6 bytes.
        assert!(matches!(
            read_u32(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00], 0, "x"),
            Err(SectionError::LebOverflow { .. })
        ));
        // 5th byte with bits above bit 31.
        assert!(matches!(
            read_u32(&[0xff, 0xff, 0xff, 0xff, 0x1f], 0, "x"),
            Err(SectionError::LebOverflow { .. })
        ));
        assert_eq!(
            read_u32(&[0xff, 0xff, 0xff, 0xff, 0x0f], 0, "x"),
            Ok((u32::MAX, 5))
        );
        assert!(matches!(
            read_u32(&[0x80, 0x80], 0, "x"),
            Err(SectionError::Truncated { .. })
        ));
        assert!(matches!(
            read_u32(&[], 0, "x"),
            Err(SectionError::Truncated { .. })
        ));
    }

    #[test]
    fn preamble_errors() {
        assert_eq!(scan(b""), Err(SectionError::NotWasm));
        assert_eq!(scan(b"\0as"), Err(SectionError::NotWasm));
        assert_eq!(scan(b"\x7fELF\x02\x01\x01\0"), Err(SectionError::NotWasm));
        assert!(matches!(
            scan(b"\0asm\x01\0"),
            Err(SectionError::Truncated { .. })
        ));
        assert_eq!(
            scan(b"\0asm\x02\0\0\0"),
            Err(SectionError::UnsupportedVersion([2, 0, 0, 0]))
        );
        assert_eq!(scan(&header()), Ok(vec![]));
        assert_eq!(scan(b"\0asm\x0d\0\x01\0"), Ok(vec![]));
    }

    #[test]
    fn sections_are_located() {
        let mut m = header();
        m.extend_from_slice(&[1, 4, 1, 0x60, 0, 0]); // type section: one func type
        let m = append_custom_section(&m, b"hello", b"world").unwrap();
        let s = scan(&m).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].id, 1);
        assert_eq!(s[0].range, 8..14);
        assert_eq!(s[0].custom, None);
        let c = s[1].custom.as_ref().unwrap();
        assert_eq!(c.name, b"hello");
        assert_eq!(c.data, b"world");
        assert_eq!(s[1].range.end, m.len());
    }

    #[test]
    fn truncated_section_header_and_payload() {
        // Id byte but no size.
        let mut m = header();
        m.push(1);
        assert!(matches!(scan(&m), Err(SectionError::Truncated { .. })));
        // Size past end.
        let mut m = header();
        m.extend_from_slice(&[1, 10, 0, 0]);
        assert!(matches!(
            scan(&m),
            Err(SectionError::SectionPastEnd {
                id: 1,
                offset: 8,
                size: 10,
                remaining: 2
            })
        ));
        // Huge size (u32::MAX) never over-reads.
        let mut m = header();
        m.extend_from_slice(&[0, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, b'a']);
        assert!(matches!(scan(&m), Err(SectionError::SectionPastEnd { .. })));
        // Every truncation of a valid module with a custom section is an error, not a panic.
        let full = append_custom_section(&header(), b"yoke.schematics:signature", b"{}").unwrap();
        for cut in 0..full.len() {
            let r = scan(&full[..cut]);
            if cut == PREAMBLE_LEN {
                assert_eq!(r, Ok(vec![]));
            } else {
                assert!(r.is_err(), "cut at {cut} should fail");
            }
        }
    }

    #[test]
    fn custom_name_past_section() {
        let mut m = header();
        // custom section of 3 bytes whose name claims 10 bytes
        m.extend_from_slice(&[0, 3, 10, b'a', b'b']);
        assert_eq!(scan(&m), Err(SectionError::NamePastSection { offset: 8 }));
        // custom section of size 0 (no room for the name length)
        let mut m = header();
        m.extend_from_slice(&[0, 0]);
        assert!(matches!(scan(&m), Err(SectionError::Truncated { .. })));
        // name length LEB overflow inside the section
        let mut m = header();
        m.extend_from_slice(&[0, 6, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]);
        assert!(matches!(scan(&m), Err(SectionError::LebOverflow { .. })));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: xorshift bytes after a valid header.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2_000 {
            let mut m = header();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 40) as usize;
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                m.push((state >> 24) as u8);
            }
            let _ = scan(&m);
        }
    }
}
