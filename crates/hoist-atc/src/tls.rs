//! TLS for the webhook server: the CA and server certificate from files (`TLS_CA_CERT`,
//! `TLS_SERVER_CERT`, `TLS_SERVER_KEY`), or a self-signed CA made at start.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(pub String);

/// PEM material for the webhook server.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// CA certificate (the `caBundle` given to the API server).
    pub ca_pem: String,
    /// Server certificate chain.
    pub cert_pem: String,
    /// Server private key.
    pub key_pem: String,
}

impl TlsMaterial {
    /// Reads the three PEM files.
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<TlsMaterial, TlsError> {
        let read = |p: &Path, what: &str| {
            std::fs::read_to_string(p)
                .map_err(|e| TlsError(format!("cannot read the {what} {}: {e}", p.display())))
        };
        Ok(TlsMaterial {
            ca_pem: read(ca, "CA certificate")?,
            cert_pem: read(cert, "server certificate")?,
            key_pem: read(key, "server key")?,
        })
    }

    /// A new self-signed CA (O=yoke.cd, as Yoke's installer) and a server certificate for
    /// `names` (DNS names or IP addresses).
    pub fn self_signed(names: &[String]) -> Result<TlsMaterial, TlsError> {
        let err = |e: rcgen::Error| TlsError(format!("cannot make a certificate: {e}"));
        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::OrganizationName, "yoke.cd");
        ca.distinguished_name
            .push(DnType::CommonName, "hoist atc CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().map_err(err)?;
        let mut server = CertificateParams::new(names.to_vec()).map_err(err)?;
        server
            .distinguished_name
            .push(DnType::OrganizationName, "yoke.cd");
        server.distinguished_name.push(
            DnType::CommonName,
            names.first().map(String::as_str).unwrap_or("atc"),
        );
        server.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        server.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = server.signed_by(&key, &issuer).map_err(err)?;
        Ok(TlsMaterial {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A rustls server configuration (HTTP/1.1 and HTTP/2).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let certs = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError(format!("bad server certificate PEM: {e}")))?;
        if certs.is_empty() {
            return Err(TlsError(
                "the server certificate PEM holds no certificate".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| TlsError(format!("bad server key PEM: {e}")))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsError(format!("the server certificate and key do not fit: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_material_makes_a_server_config() {
        let tls = TlsMaterial::self_signed(&["127.0.0.1".into(), "atc.atc.svc".into()]).unwrap();
        assert!(tls.ca_pem.contains("BEGIN CERTIFICATE"));
        assert!(tls.key_pem.contains("PRIVATE KEY"));
        tls.server_config().unwrap();
        let broken = TlsMaterial {
            key_pem: "nope".into(),
            ..tls
        };
        assert!(
            broken
                .server_config()
                .unwrap_err()
                .to_string()
                .contains("bad server key")
        );
    }
}
