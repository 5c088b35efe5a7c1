//! TLS for the HTTPS and HTTP/3 listeners: certificates from PEM files, or a self-signed one for
//! development, and the one rustls crypto provider of the whole binary.
//!
//! The provider is chosen explicitly (aws-lc-rs, the one str0m's DTLS uses) and handed to every
//! rustls config: `ServerConfig::builder()` with two providers compiled in would panic.

use std::sync::Arc;

use base64::Engine as _;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN ids: HTTP/2 and HTTP/1.1 on TCP, HTTP/3 on QUIC (RFC 9114 §3.1).
pub const ALPN_TCP: &[&[u8]] = &[b"h2", b"http/1.1"];
pub const ALPN_H3: &[u8] = b"h3";

/// The crypto provider every TLS and QUIC config in the binary uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Why TLS could not be set up; the message names the file or the problem.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: String },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    #[error("invalid certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate chain and its key.
pub struct Identity {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// For a generated certificate: base64 SHA-256 of its SubjectPublicKeyInfo, the value
    /// Chromium's `--ignore-certificate-errors-spki-list` takes.
    pub spki_sha256: Option<String>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
            spki_sha256: self.spki_sha256.clone(),
        }
    }
}

impl Identity {
    /// Loads a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &str, key: &str) -> Result<Identity, TlsError> {
        let read = |path: &str, e: &dyn std::fmt::Display| TlsError::Read {
            path: path.to_string(),
            reason: e.to_string(),
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| read(cert, &e))?
            .collect::<Result<_, _>>()
            .map_err(|e| read(cert, &e))?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate {
                path: cert.to_string(),
            });
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read(key, &e))?;
        Ok(Identity {
            certs,
            key,
            spki_sha256: None,
        })
    }

    /// A self-signed certificate for `localhost`, 127.0.0.1 and ::1, for trying HTTPS and
    /// HTTP/3 without a real certificate.
    pub fn self_signed() -> Result<Identity, TlsError> {
        use rcgen::PublicKeyData;
        let names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        let ck = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let spki = ck.signing_key.subject_public_key_info();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &spki);
        let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        Ok(Identity {
            certs: vec![ck.cert.der().clone()],
            key,
            spki_sha256: Some(base64::engine::general_purpose::STANDARD.encode(digest.as_ref())),
        })
    }

    /// The PEM of the first certificate, for clients that must trust a generated one.
    pub fn cert_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.certs[0].as_ref());
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        pem
    }

    /// A rustls server config with this identity and the given ALPN ids.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.certs.clone(), self.key.clone_key())?;
        config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_identity_builds_tcp_and_quic_configs() {
        let id = Identity::self_signed().expect("generate");
        let spki = id.spki_sha256.clone().expect("spki hash");
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&spki)
                .expect("base64")
                .len(),
            32
        );
        let tcp = id.server_config(ALPN_TCP).expect("tcp config");
        assert_eq!(
            tcp.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        id.server_config(&[ALPN_H3]).expect("quic config");
        assert!(id.cert_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
    }

    #[test]
    fn pem_files_round_trip_and_missing_files_are_named() {
        let id = Identity::self_signed().expect("generate");
        let dir = std::env::temp_dir().join(format!("wishcast-tls-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).expect("dir");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, id.cert_pem()).expect("write cert");
        let key_b64 = base64::engine::general_purpose::STANDARD.encode(id.key.secret_der());
        let mut key_pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in key_b64.as_bytes().chunks(64) {
            key_pem.push_str(&String::from_utf8_lossy(line));
            key_pem.push('\n');
        }
        key_pem.push_str("-----END PRIVATE KEY-----\n");
        std::fs::write(&key, key_pem).expect("write key");
        let loaded =
            Identity::from_pem_files(cert.to_str().expect("utf8"), key.to_str().expect("utf8"))
                .expect("load");
        assert_eq!(loaded.certs, id.certs);
        let err = Identity::from_pem_files("/nonexistent/c.pem", "/nonexistent/k.pem")
            .err()
            .expect("missing file fails");
        assert!(err.to_string().contains("/nonexistent/c.pem"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
