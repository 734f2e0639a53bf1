//! TLS for the optional HTTPS listeners of the gateway (`server.tls`) and the simulator
//! (`sim.tls`): the PEM files of the config and the rustls acceptor built from them.

use std::sync::Arc;

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

/// Why a listener's PEM files give no TLS: the key of the file or table at fault and what
/// is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsError {
    /// The config key (`server.tls.cert`, `sim.tls.key`, `server.tls`, ...).
    pub key: String,
    /// What is wrong, with the file's name.
    pub message: String,
}

/// The server side of TLS built from a listener's PEM files (HTTP/1.1 only, announced by
/// ALPN): the files are read once, when it is loaded.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls([REDACTED])")
    }
}

impl ServerTls {
    /// Reads `files`; `key` is the config key of the table (`server.tls`, `sim.tls`), and
    /// errors name `key.cert`, `key.key` or `key`.
    pub fn load(files: &TlsFiles, key: &str) -> Result<Self, TlsError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};

        let error = |key: String, message: String| TlsError { key, message };
        let (cert_key, key_key) = (format!("{key}.cert"), format!("{key}.key"));
        let certs = CertificateDer::pem_file_iter(&files.cert)
            .map_err(|e| error(cert_key.clone(), format!("cannot read {}: {e}", files.cert)))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                let message = format!("{} is not a PEM certificate chain: {e}", files.cert);
                error(cert_key.clone(), message)
            })?;
        if certs.is_empty() {
            let message = format!("{} holds no certificate", files.cert);
            return Err(error(cert_key, message));
        }
        let private = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
            let message = format!("cannot read a PEM private key from {}: {e}", files.key);
            error(key_key, message)
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| error(key.into(), format!("no usable TLS protocol versions: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, private)
            .map_err(|e| {
                let message = format!("the key does not fit the certificate: {e}");
                error(key.into(), message)
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
        })
    }

    /// An acceptor of this TLS configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }
}

/// Builds a TLS acceptor from PEM files (see [`ServerTls::load`]); errors name `key.cert`
/// or `key.key`.
pub fn acceptor(files: &TlsFiles, key: &str) -> anyhow::Result<TlsAcceptor> {
    Ok(ServerTls::load(files, key)?.acceptor())
}
