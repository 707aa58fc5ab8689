//! Reference implementations the differential targets compare production code against.

/// A plain path-segment glob: `pattern` and `text` split at `/` into the same number of
/// segments, and each segment matches with `*` (any run of characters) and `?` (one
/// character); every other character is literal and case-sensitive. This is the matcher an
/// allow list may never be more generous than.
pub fn segment_glob(pattern: &str, text: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').collect();
    let t: Vec<&str> = text.split('/').collect();
    p.len() == t.len()
        && p.iter().zip(t.iter()).all(|(p, t)| {
            let p: Vec<char> = p.chars().collect();
            let t: Vec<char> = t.chars().collect();
            wildcard(&p, &t)
        })
}

fn wildcard(p: &[char], t: &[char]) -> bool {
    // Iterative wildcard match with backtracking to the last `*`.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || Some(c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

/// Decodes every `%XX` escape (valid or not, reserved or not) to its byte; other bytes are
/// kept. Two path segments that decode to the same bytes name the same resource.
pub fn full_percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = b
            .get(i + 1..i + 3)
            .filter(|_| b.get(i) == Some(&b'%'))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.extend(b.get(i).copied());
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_glob_is_a_plain_per_segment_wildcard() {
        assert!(segment_glob(
            "oci://ghcr.io/org/*",
            "oci://ghcr.io/org/mod:v1"
        ));
        assert!(!segment_glob(
            "oci://ghcr.io/org/*",
            "oci://ghcr.io/org/a/b"
        ));
        assert!(segment_glob("https://h/m/*.wasm", "https://h/m/a.b.wasm"));
        assert!(!segment_glob("https://h/m/*.wasm", "https://h/m/a.wasm.gz"));
        assert!(segment_glob("a/?/c*", "a/b/c"));
        assert!(!segment_glob("a/?/c", "a//c"));
        assert!(segment_glob("*", ""));
        assert!(!segment_glob("A", "a"));
    }

    #[test]
    fn full_decode_decodes_everything() {
        assert_eq!(full_percent_decode("a%2Fb%2e%zz%4"), b"a/b.%zz%4");
        assert_eq!(full_percent_decode("%61"), b"a");
    }
}
