//! TLS for the optional HTTPS listeners of the gateway (`server.tls`) and the simulator
//! (`sim.tls`): the PEM files of the config and the rustls acceptor built from them.

use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;
use tokio_rustls::TlsAcceptor;

/// PEM files of an HTTPS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Path of the PEM certificate chain (leaf first).
    pub cert: String,
    /// Path of the PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

/// A path of a TLS table that names no file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: must name a PEM file")]
pub struct MissingPemFile {
    /// The config key of the path (`server.tls.cert`, ...).
    pub key: String,
}

impl TlsFiles {
    /// Checks that both paths are given; `key` is the config key of the table
    /// (`server.tls`, `sim.tls`), whose field the error names.
    pub fn validate(&self, key: &str) -> Result<(), MissingPemFile> {
        for (field, path) in [("cert", &self.cert), ("key", &self.key)] {
            if path.trim().is_empty() {
                return Err(MissingPemFile {
                    key: format!("{key}.{field}"),
                });
            }
        }
        Ok(())
    }
}

/// Builds a TLS acceptor (HTTP/1.1 only, announced by ALPN) from PEM files; errors name
/// `key.cert` or `key.key`.
pub fn acceptor(files: &TlsFiles, key: &str) -> anyhow::Result<TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let certs = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("{key}.cert: cannot read {}", files.cert))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{key}.cert: {} is not a PEM certificate chain", files.cert))?;
    if certs.is_empty() {
        anyhow::bail!("{key}.cert: {} holds no certificate", files.cert);
    }
    let private = PrivateKeyDer::from_pem_file(&files.key).with_context(|| {
        format!(
            "{key}.key: cannot read a PEM private key from {}",
            files.key
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .with_context(|| format!("{key}: no usable TLS protocol versions"))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .with_context(|| format!("{key}: the key does not fit the certificate"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
