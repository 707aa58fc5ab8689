//! Just enough DER and PEM to tell which algorithm a key file holds.
//!
//! The cryptographic parsing is aws-lc-rs's; this module only reads the outer structures
//! (SubjectPublicKeyInfo, PKCS#8 PrivateKeyInfo, SEC1 ECPrivateKey) to find the algorithm OID
//! and curve, and extracts the SubjectPublicKey BIT STRING that Yoke's fingerprint hashes.
//! Every read is bounds-checked.

use base64::Engine as _;

pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_BIT_STRING: u8 = 0x03;
pub(crate) const TAG_OCTET_STRING: u8 = 0x04;
pub(crate) const TAG_OID: u8 = 0x06;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;
pub(crate) const TAG_CONTEXT_0: u8 = 0xa0;

/// rsaEncryption 1.2.840.113549.1.1.1
pub(crate) const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// id-ecPublicKey 1.2.840.10045.2.1
pub(crate) const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// prime256v1 / P-256 1.2.840.10045.3.1.7
pub(crate) const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// secp384r1 / P-384 1.3.132.0.34
pub(crate) const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
/// secp521r1 / P-521 1.3.132.0.35
pub(crate) const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
/// id-Ed25519 1.3.101.112
pub(crate) const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// A malformed DER structure (the message names what was expected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DerError(pub &'static str);

/// A forward-only DER reader over a byte slice.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// Peeks at the next tag, if any.
    pub(crate) fn peek_tag(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    /// Reads one TLV and returns (tag, contents).
    pub(crate) fn read_any(&mut self) -> Result<(u8, &'a [u8]), DerError> {
        let tag = *self.data.get(self.pos).ok_or(DerError("truncated tag"))?;
        if tag & 0x1f == 0x1f {
            return Err(DerError("multi-byte tags are not supported"));
        }
        let first = *self
            .data
            .get(self.pos + 1)
            .ok_or(DerError("truncated length"))?;
        let mut cursor = self.pos + 2;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return Err(DerError("unsupported length encoding"));
            }
            let bytes = self
                .data
                .get(cursor..cursor + n)
                .ok_or(DerError("truncated length"))?;
            cursor += n;
            bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        };
        let end = cursor.checked_add(len).ok_or(DerError("length overflow"))?;
        let contents = self
            .data
            .get(cursor..end)
            .ok_or(DerError("contents run past the end"))?;
        self.pos = end;
        Ok((tag, contents))
    }

    /// Reads one TLV that must carry `tag`.
    pub(crate) fn read(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], DerError> {
        let (t, c) = self.read_any()?;
        if t != tag {
            return Err(DerError(what));
        }
        Ok(c)
    }
}

/// An AlgorithmIdentifier: the OID and, when it is an OID, the parameters (the EC curve).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AlgorithmId<'a> {
    pub oid: &'a [u8],
    pub param_oid: Option<&'a [u8]>,
}

fn read_algorithm<'a>(r: &mut Reader<'a>) -> Result<AlgorithmId<'a>, DerError> {
    let seq = r.read(TAG_SEQUENCE, "expected an AlgorithmIdentifier SEQUENCE")?;
    let mut inner = Reader::new(seq);
    let oid = inner.read(TAG_OID, "expected an algorithm OID")?;
    let param_oid = if inner.peek_tag() == Some(TAG_OID) {
        Some(inner.read(TAG_OID, "expected a parameter OID")?)
    } else {
        None
    };
    Ok(AlgorithmId { oid, param_oid })
}

/// SubjectPublicKeyInfo: returns the algorithm and the SubjectPublicKey BIT STRING bytes.
pub(crate) fn parse_spki(der: &[u8]) -> Result<(AlgorithmId<'_>, &[u8]), DerError> {
    let mut outer = Reader::new(der);
    let seq = outer.read(TAG_SEQUENCE, "expected a SubjectPublicKeyInfo SEQUENCE")?;
    if !outer.is_empty() {
        return Err(DerError("trailing data after SubjectPublicKeyInfo"));
    }
    let mut r = Reader::new(seq);
    let alg = read_algorithm(&mut r)?;
    let bits = r.read(TAG_BIT_STRING, "expected the subjectPublicKey BIT STRING")?;
    match bits.split_first() {
        Some((0, key)) => Ok((alg, key)),
        Some(_) => Err(DerError("subjectPublicKey has unused bits")),
        None => Err(DerError("empty subjectPublicKey")),
    }
}

/// PKCS#8 PrivateKeyInfo / OneAsymmetricKey: returns the algorithm.
pub(crate) fn parse_pkcs8_algorithm(der: &[u8]) -> Result<AlgorithmId<'_>, DerError> {
    let mut outer = Reader::new(der);
    let seq = outer.read(TAG_SEQUENCE, "expected a PrivateKeyInfo SEQUENCE")?;
    let mut r = Reader::new(seq);
    r.read(TAG_INTEGER, "expected the PKCS#8 version")?;
    read_algorithm(&mut r)
}

/// SEC1 ECPrivateKey: returns the curve OID from the `[0] parameters` field, if present.
pub(crate) fn parse_sec1_curve(der: &[u8]) -> Result<Option<&[u8]>, DerError> {
    let mut outer = Reader::new(der);
    let seq = outer.read(TAG_SEQUENCE, "expected an ECPrivateKey SEQUENCE")?;
    let mut r = Reader::new(seq);
    r.read(TAG_INTEGER, "expected the ECPrivateKey version")?;
    r.read(TAG_OCTET_STRING, "expected the private key OCTET STRING")?;
    if r.peek_tag() == Some(TAG_CONTEXT_0) {
        let params = r.read(TAG_CONTEXT_0, "expected [0] parameters")?;
        let mut p = Reader::new(params);
        return Ok(Some(p.read(TAG_OID, "expected a named curve OID")?));
    }
    Ok(None)
}

/// One PEM block: its label (e.g. `PUBLIC KEY`) and decoded contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PemBlock {
    pub label: String,
    pub der: Vec<u8>,
    /// True when the block carried RFC 1421 headers such as `Proc-Type: 4,ENCRYPTED`.
    pub has_headers: bool,
}

/// Parses every PEM block in `text`, in order. Text outside blocks is ignored (as Go's
/// `pem.Decode` does). A `BEGIN` without a matching `END`, or bad base64, is an error.
pub(crate) fn parse_pem(text: &[u8]) -> Result<Vec<PemBlock>, String> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const DASHES: &[u8] = b"-----";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = find(rest, BEGIN) {
        let after_begin = rest
            .get(start + BEGIN.len()..)
            .ok_or("unterminated PEM BEGIN line")?;
        let label_end = find(after_begin, DASHES).ok_or("unterminated PEM BEGIN line")?;
        let (label, after_label) = after_begin
            .split_at_checked(label_end)
            .ok_or("unterminated PEM BEGIN line")?;
        if label.contains(&b'\n') {
            return Err("malformed PEM BEGIN line".into());
        }
        let label = std::str::from_utf8(label)
            .map_err(|_| "PEM label is not UTF-8".to_string())?
            .to_string();
        let body_start = after_label
            .get(DASHES.len()..)
            .ok_or("unterminated PEM BEGIN line")?;
        let end_marker = format!("-----END {label}-----");
        let missing_end = || format!("PEM block {label:?} has no matching END line");
        let body_len = find(body_start, end_marker.as_bytes()).ok_or_else(missing_end)?;
        let (body, after_body) = body_start
            .split_at_checked(body_len)
            .ok_or_else(missing_end)?;
        let next = after_body.get(end_marker.len()..).ok_or_else(missing_end)?;
        let mut b64 = Vec::with_capacity(body.len());
        let mut has_headers = false;
        for line in body.split(|b| *b == b'\n') {
            if line.contains(&b':') {
                has_headers = true;
                continue;
            }
            b64.extend(line.iter().copied().filter(|b| !b.is_ascii_whitespace()));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(&b64)
            .map_err(|e| format!("PEM block {label:?} has invalid base64: {e}"))?;
        blocks.push(PemBlock {
            label,
            der,
            has_headers,
        });
        rest = next;
    }
    Ok(blocks)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_reader_rejects_bad_lengths() {
        assert!(Reader::new(&[0x30]).read_any().is_err());
        assert!(Reader::new(&[0x30, 0x05, 0x00]).read_any().is_err());
        assert!(
            Reader::new(&[0x30, 0x85, 1, 1, 1, 1, 1])
                .read_any()
                .is_err()
        );
        assert!(
            Reader::new(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff])
                .read_any()
                .is_err()
        );
        assert!(Reader::new(&[0x1f, 0x01, 0x00]).read_any().is_err());
        assert_eq!(
            Reader::new(&[0x04, 0x81, 0x01, 0xaa]).read_any(),
            Ok((0x04, &[0xaa][..]))
        );
    }

    #[test]
    fn pem_blocks_and_errors() {
        let text = b"junk\n-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n-----BEGIN PUBLIC KEY-----\nAAEC\n-----END PUBLIC KEY-----\n";
        let blocks = parse_pem(text).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].label, "EC PARAMETERS");
        assert_eq!(blocks[1].label, "PUBLIC KEY");
        assert_eq!(blocks[1].der, vec![0, 1, 2]);
        assert!(parse_pem(b"-----BEGIN PUBLIC KEY-----\nAAEC\n").is_err());
        assert!(parse_pem(b"-----BEGIN X-----\n!!!\n-----END X-----").is_err());
        assert_eq!(parse_pem(b"no pem here").unwrap(), vec![]);
    }
}
