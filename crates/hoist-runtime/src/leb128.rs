//! Unsigned LEB128, the variable-length integers of the Wasm binary format, for the few
//! places that rewrite a module's sections by hand (resume exports, snapshot exports,
//! Kubewarden metadata sections). Reads never panic: a truncated or over-long number is `None`.

/// Reads an unsigned LEB128 number of at most 64 bits at `*pos`, advancing `*pos` past it.
pub fn read_u64(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*pos)?;
        *pos += 1;
        let bits = u64::from(byte & 0x7f);
        // The last byte of a 64-bit number carries one bit; more is an overflow.
        if shift == 63 && bits > 1 {
            return None;
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Reads an unsigned LEB128 number that must fit in 32 bits (Wasm's `u32`: counts, sizes,
/// indices), advancing `*pos` past it.
pub fn read_u32(bytes: &[u8], pos: &mut usize) -> Option<u32> {
    let start = *pos;
    let value = read_u64(bytes, pos)?;
    // Wasm allows at most 5 bytes for a u32.
    if *pos - start > 5 {
        return None;
    }
    u32::try_from(value).ok()
}

/// Appends `value` as unsigned LEB128 (shortest form).
pub fn write(out: &mut Vec<u8>, mut value: u64) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_truncated_or_overlong_numbers() {
        for value in [0u64, 1, 127, 128, 300, 65535, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            write(&mut out, value);
            let mut pos = 0;
            assert_eq!(read_u64(&out, &mut pos), Some(value));
            assert_eq!(pos, out.len());
            let mut pos = 0;
            assert_eq!(read_u32(&out, &mut pos), u32::try_from(value).ok());
        }
        // Truncated.
        assert_eq!(read_u64(&[0x80], &mut 0), None);
        assert_eq!(read_u64(&[], &mut 0), None);
        // A u32 in six bytes, or with bits past 32.
        assert_eq!(
            read_u32(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01], &mut 0),
            None
        );
        assert_eq!(read_u32(&[0xff, 0xff, 0xff, 0xff, 0x1f], &mut 0), None);
        // Past 64 bits.
        let mut eleven = vec![0xff; 10];
        eleven.push(0x01);
        assert_eq!(read_u64(&eleven, &mut 0), None);
        assert_eq!(
            read_u64(
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                &mut 0
            ),
            None
        );
        // Non-shortest forms are accepted, as the Wasm format allows.
        assert_eq!(read_u32(&[0x81, 0x80, 0x00], &mut 0), Some(1));
    }
}
