//! Host capabilities hoist answers itself, offline: `crypto/v1/is_certificate_trusted`
//! (X.509 chain verification with webpki, as kwctl's policy-evaluator does) and
//! `net/v1/dns_lookup_host` from answers the user gives (hoist never resolves names for a
//! policy). Everything else goes to the inner backend (Kubernetes, replay, or refusal).

use crate::capabilities::{CapabilityBackend, CapabilityRequest};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

const USED_AFTER_EXPIRATION: &str = "Certificate is being used after its expiration date";
const USED_BEFORE_VALIDITY: &str = "Certificate is being used before its validity date";
const NOT_TRUSTED_BY_CHAIN: &str = "Certificate is not trusted by the provided cert chain";

/// Answers `crypto` and `net` requests locally and passes the others to `inner`.
pub struct LocalServices {
    dns: BTreeMap<String, Vec<IpAddr>>,
    inner: Arc<dyn CapabilityBackend>,
}

impl LocalServices {
    /// `dns`: the only host names a policy may resolve, with their addresses.
    pub fn new(dns: BTreeMap<String, Vec<IpAddr>>, inner: Arc<dyn CapabilityBackend>) -> Self {
        LocalServices { dns, inner }
    }

    fn lookup(&self, request: &CapabilityRequest) -> Result<Vec<u8>, String> {
        let host = request
            .fields
            .get("host")
            .and_then(Value::as_str)
            .ok_or("DNSLookupHost: the request is not a host name (a JSON string)")?;
        match self.dns.get(&host.to_ascii_lowercase()) {
            Some(ips) => {
                let ips: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
                serde_json::to_vec(&json!({ "ips": ips })).map_err(|e| e.to_string())
            }
            None => Err(format!(
                "DNS lookup of {host} refused: hoist answers DNS lookups only from --dns-answer {host}=IP[,IP...] (policies never reach the network)"
            )),
        }
    }
}

impl CapabilityBackend for LocalServices {
    fn call(&self, request: &CapabilityRequest) -> Result<Vec<u8>, String> {
        match request.tag.as_str() {
            "DNSLookupHost" => self.lookup(request),
            "CryptoIsCertificateTrusted" => {
                let req = request.fields.get("request").unwrap_or(&Value::Null);
                let answer = verify_certificate(req)?;
                serde_json::to_vec(&answer).map_err(|e| e.to_string())
            }
            _ => self.inner.call(request),
        }
    }
}

/// Parses `--dns-answer HOST=IP[,IP...]`.
pub fn parse_dns_answer(text: &str) -> Result<(String, Vec<IpAddr>), String> {
    let (host, ips) = text
        .split_once('=')
        .ok_or_else(|| format!("--dns-answer {text}: write HOST=IP[,IP...]"))?;
    if host.is_empty() {
        return Err(format!("--dns-answer {text}: no host name before ="));
    }
    let ips = ips
        .split(',')
        .map(|ip| {
            ip.trim()
                .parse::<IpAddr>()
                .map_err(|_| format!("--dns-answer {text}: {ip:?} is not an IP address"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((host.to_ascii_lowercase(), ips))
}

/// The certificate bytes of `{"encoding": "Pem"|"Der", "data": [u8...]}`.
fn certificate(value: &Value, what: &str) -> Result<CertificateDer<'static>, String> {
    let encoding = value
        .get("encoding")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{what}: no encoding (Pem or Der)"))?;
    let data: Vec<u8> = value
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{what}: no data (an array of bytes)"))?
        .iter()
        .map(|b| {
            b.as_u64()
                .and_then(|b| u8::try_from(b).ok())
                .ok_or_else(|| format!("{what}: data holds a value that is not a byte"))
        })
        .collect::<Result<_, _>>()?;
    match encoding {
        "Pem" => CertificateDer::from_pem_slice(&data)
            .map_err(|e| format!("Certificate PEM data is not valid: {e}")),
        "Der" => Ok(CertificateDer::from(data)),
        other => Err(format!("{what}: unknown encoding {other:?} (Pem or Der)")),
    }
}

/// Any extended key usage is fine (kwctl's `KeyUsageAlwaysValid`).
struct AnyUsage;

impl webpki::ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, _: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

/// `crypto/v1/is_certificate_trusted`: `{"trusted", "reason"}` as kwctl answers; errors for
/// malformed requests.
pub fn verify_certificate(request: &Value) -> Result<Value, String> {
    let cert = certificate(
        request.get("cert").unwrap_or(&Value::Null),
        "the certificate",
    )?;
    let end_entity = webpki::EndEntityCert::try_from(&cert)
        .map_err(|e| format!("Certificate is not a valid end-entity certificate: {e}"))?;
    let time = match request.get("not_after").and_then(Value::as_str) {
        Some(text) => {
            let at = chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|_| "Timestamp not_after is not in RFC3339 format".to_string())?;
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                u64::try_from(at.timestamp()).unwrap_or(0),
            ))
        }
        None => UnixTime::now(),
    };
    let chain = match request.get("cert_chain") {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, c)| certificate(c, &format!("cert_chain[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(
                "no cert_chain given: hoist has no built-in trust roots offline; pass the chain that must sign the certificate".into(),
            );
        }
    };
    // As kwctl's CertificatePool: self-signed certificates of the chain are roots, the others
    // intermediates.
    let mut anchors: Vec<TrustAnchor<'_>> = Vec::new();
    let mut intermediates: Vec<CertificateDer<'_>> = Vec::new();
    for der in &chain {
        if is_self_signed(der) {
            let anchor = webpki::anchor_from_trusted_cert(der)
                .map_err(|e| format!("a cert_chain certificate cannot be a trust root: {e}"))?;
            anchors.push(anchor.to_owned());
        } else {
            intermediates.push(der.clone());
        }
    }
    let result = end_entity.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        time,
        AnyUsage,
        None,
        None,
    );
    let (trusted, reason) = match result {
        Ok(_) => (true, String::new()),
        Err(webpki::Error::InvalidSignatureForPublicKey | webpki::Error::UnknownIssuer) => {
            (false, NOT_TRUSTED_BY_CHAIN.to_string())
        }
        Err(webpki::Error::CertExpired { .. }) => (false, USED_AFTER_EXPIRATION.to_string()),
        Err(webpki::Error::CertNotValidYet { .. }) => (false, USED_BEFORE_VALIDITY.to_string()),
        Err(e) => (false, format!("Certificate not trusted: {e}")),
    };
    Ok(json!({"trusted": trusted, "reason": reason}))
}

/// Whether a certificate's issuer equals its subject (raw DER comparison).
fn is_self_signed(der: &CertificateDer<'_>) -> bool {
    match x509_names(der.as_ref()) {
        Some((issuer, subject)) => issuer == subject,
        None => false,
    }
}

/// The raw issuer and subject Names of a DER certificate (a minimal DER walk:
/// Certificate -> TBSCertificate -> [version] serial sigAlg issuer validity subject).
fn x509_names(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (cert, _) = der_element(der)?;
    let (tbs, _) = der_element(der_contents(cert)?)?;
    let mut rest = der_contents(tbs)?;
    let mut fields = Vec::new();
    while !rest.is_empty() && fields.len() < 6 {
        let (element, after) = der_element(rest)?;
        fields.push(element);
        rest = after;
    }
    // An explicit version ([0]) shifts the fields by one.
    let offset = usize::from(fields.first()?.first() == Some(&0xa0));
    let issuer = *fields.get(2 + offset)?;
    let subject = *fields.get(4 + offset)?;
    Some((issuer, subject))
}

/// Splits one DER element (tag, length, contents) off `data`.
fn der_element(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let len_byte = *data.get(1)?;
    let (len, header) = if len_byte < 0x80 {
        (usize::from(len_byte), 2)
    } else {
        let n = usize::from(len_byte & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*data.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((data.get(..end)?, data.get(end..)?))
}

/// The contents of a DER element (after tag and length).
fn der_contents(element: &[u8]) -> Option<&[u8]> {
    let len_byte = *element.get(1)?;
    let header = if len_byte < 0x80 {
        2
    } else {
        2 + usize::from(len_byte & 0x7f)
    };
    element.get(header..)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn openssl(dir: &std::path::Path, args: &[&str]) {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl (Debian package openssl) must be installed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn cert_json(path: &std::path::Path) -> Value {
        let bytes = std::fs::read(path).unwrap();
        json!({"encoding": "Pem", "data": bytes})
    }

    #[test]
    fn certificates_are_verified_against_the_given_chain() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A root CA, an intermediate signed by it, a leaf signed by the intermediate, and an
        // unrelated root.
        for (name, subj) in [("root", "/CN=hoist root"), ("other", "/CN=other root")] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.pem"),
                    "-days",
                    "30",
                    "-subj",
                    subj,
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            );
        }
        std::fs::write(
            d.join("ca.ext"),
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
        )
        .unwrap();
        std::fs::write(
            d.join("leaf.ext"),
            "basicConstraints=CA:FALSE\nsubjectAltName=DNS:leaf.example\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "int.key",
                "-out",
                "int.csr",
                "-subj",
                "/CN=hoist intermediate",
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "int.csr",
                "-CA",
                "root.pem",
                "-CAkey",
                "root.key",
                "-CAcreateserial",
                "-out",
                "int.pem",
                "-days",
                "30",
                "-extfile",
                "ca.ext",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=leaf.example",
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "int.pem",
                "-CAkey",
                "int.key",
                "-CAcreateserial",
                "-out",
                "leaf.pem",
                "-days",
                "10",
                "-extfile",
                "leaf.ext",
            ],
        );

        let leaf = cert_json(&d.join("leaf.pem"));
        let chain = json!([
            cert_json(&d.join("int.pem")),
            cert_json(&d.join("root.pem"))
        ]);
        let ok = verify_certificate(&json!({"cert": leaf, "cert_chain": chain, "not_after": null}))
            .unwrap();
        assert_eq!(ok, json!({"trusted": true, "reason": ""}));

        // DER encoding works the same.
        let der =
            CertificateDer::from_pem_slice(&std::fs::read(d.join("leaf.pem")).unwrap()).unwrap();
        let der_json = json!({"encoding": "Der", "data": der.as_ref().to_vec()});
        let ok = verify_certificate(&json!({"cert": der_json, "cert_chain": chain})).unwrap();
        assert_eq!(ok["trusted"], json!(true));

        // Another root: not trusted by the chain.
        let other = json!([
            cert_json(&d.join("int.pem")),
            cert_json(&d.join("other.pem"))
        ]);
        let no = verify_certificate(&json!({"cert": leaf, "cert_chain": other})).unwrap();
        assert_eq!(
            no,
            json!({"trusted": false, "reason": NOT_TRUSTED_BY_CHAIN})
        );

        // Checked at a time after it expires (10 days) and before it is valid.
        let later = (chrono::Utc::now() + chrono::Duration::days(20)).to_rfc3339();
        let no =
            verify_certificate(&json!({"cert": leaf, "cert_chain": chain, "not_after": later}))
                .unwrap();
        assert_eq!(no["reason"], json!(USED_AFTER_EXPIRATION));
        let earlier = (chrono::Utc::now() - chrono::Duration::days(2)).to_rfc3339();
        let no =
            verify_certificate(&json!({"cert": leaf, "cert_chain": chain, "not_after": earlier}))
                .unwrap();
        assert_eq!(no["reason"], json!(USED_BEFORE_VALIDITY));

        // Malformed requests are errors naming the problem.
        let err = verify_certificate(
            &json!({"cert": {"encoding": "Pem", "data": [1, 2]}, "cert_chain": chain}),
        )
        .unwrap_err();
        assert!(err.contains("PEM data is not valid"), "{err}");
        let err = verify_certificate(
            &json!({"cert": leaf, "cert_chain": chain, "not_after": "yesterday"}),
        )
        .unwrap_err();
        assert!(err.contains("RFC3339"), "{err}");
        let err = verify_certificate(&json!({"cert": leaf})).unwrap_err();
        assert!(err.contains("no cert_chain"), "{err}");
        assert!(is_self_signed(
            &CertificateDer::from_pem_slice(&std::fs::read(d.join("root.pem")).unwrap()).unwrap()
        ));
        assert!(!is_self_signed(&der));
    }

    #[test]
    fn dns_answers_only_what_the_user_allows() {
        let (host, ips) = parse_dns_answer("Registry.Example=10.0.0.1,::1").unwrap();
        assert_eq!(host, "registry.example");
        let services = LocalServices::new(
            [(host, ips)].into_iter().collect(),
            Arc::new(crate::capabilities::NoBackend),
        );
        let host = crate::HostCapabilities {
            granted: Default::default(),
            backend: Arc::new(services),
            policy: "p".into(),
        };
        let answer = host
            .dispatch(
                "kubewarden",
                "net",
                "v1/dns_lookup_host",
                br#""registry.example""#,
            )
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&answer).unwrap(),
            json!({"ips": ["10.0.0.1", "::1"]})
        );
        let err = host
            .dispatch(
                "kubewarden",
                "net",
                "v1/dns_lookup_host",
                br#""example.com""#,
            )
            .unwrap_err();
        assert!(err.contains("--dns-answer example.com=IP"), "{err}");
        assert!(
            parse_dns_answer("x=notanip")
                .unwrap_err()
                .contains("not an IP")
        );
        assert!(parse_dns_answer("nohost").is_err());
        // Other capabilities still go to the inner backend.
        let err = host
            .dispatch(
                "kubewarden",
                "oci",
                "v1/manifest_digest",
                br#""ghcr.io/a/b:1""#,
            )
            .unwrap_err();
        assert!(err.contains("OciManifestDigest"), "{err}");
    }
}
