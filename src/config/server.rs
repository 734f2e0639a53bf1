//! `[server]`: the HTTP listener, its limits, and its optional TLS.

use serde::Deserialize;

use super::error::ConfigError;
use super::rules::positive;
use crate::tls::{ServerTls, TlsFiles};

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Largest request body read at ingress, in bytes; larger requests get 413 before
    /// their body is read.
    pub max_body_bytes: usize,
    /// Largest number of events in one batch request.
    pub max_batch_events: usize,
    /// When set, `listen` serves HTTPS with these PEM files (for clients that only speak
    /// HTTPS, such as Zendesk's own CLI).
    pub tls: Option<TlsFiles>,
    /// Longest time for a whole request head, in milliseconds, from its first byte (from
    /// the accept for a connection's first request, TLS handshake included).
    pub header_timeout_ms: u64,
    /// Longest wait for the next request on a kept-alive connection, in milliseconds.
    pub keep_alive_timeout_ms: u64,
    /// Longest time for a whole request body to arrive after its head, in milliseconds,
    /// plus one second per 64 KiB received; a slower one is answered 408 and its
    /// connection closed.
    pub body_timeout_ms: u64,
    /// Longest time a write may wait for the client to accept any of it, in milliseconds
    /// (a client that does not read its answer is disconnected).
    pub send_timeout_ms: u64,
    /// Most connections open at once; one more is answered 503 and closed on plain HTTP
    /// (closed without an answer on TLS, or when 64 such answers are already being sent).
    pub max_connections: usize,
    /// The certificate chain and key of `tls`, read by validation.
    #[serde(skip)]
    loaded_tls: Option<ServerTls>,
}

/// The largest `server.max_connections` accepted.
pub const MAX_CONNECTIONS_CAP: usize = 1_000_000;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 8 * 1024 * 1024,
            max_batch_events: 1000,
            tls: None,
            header_timeout_ms: 10_000,
            keep_alive_timeout_ms: 75_000,
            body_timeout_ms: 60_000,
            send_timeout_ms: 30_000,
            max_connections: 4096,
            loaded_tls: None,
        }
    }
}

impl ServerConfig {
    /// The TLS material of `tls` as validation read it; `None` when `tls` is not set.
    pub fn loaded_tls(&self) -> Result<Option<&ServerTls>, ConfigError> {
        match (&self.tls, &self.loaded_tls) {
            (None, _) => Ok(None),
            (Some(_), Some(loaded)) => Ok(Some(loaded)),
            (Some(_), None) => Err(ConfigError::not_built("server.tls")),
        }
    }

    /// Checks the listen address, the size limits and the timeouts.
    pub(super) fn check_listener(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                "server.listen",
                "must be an address like 127.0.0.1:8080",
            ));
        }
        positive("server.max_body_bytes", self.max_body_bytes as u64)?;
        positive("server.max_batch_events", self.max_batch_events as u64)?;
        positive("server.header_timeout_ms", self.header_timeout_ms)?;
        positive("server.keep_alive_timeout_ms", self.keep_alive_timeout_ms)?;
        positive("server.body_timeout_ms", self.body_timeout_ms)?;
        positive("server.send_timeout_ms", self.send_timeout_ms)?;
        positive("server.max_connections", self.max_connections as u64)?;
        if self.max_connections > MAX_CONNECTIONS_CAP {
            return Err(ConfigError::invalid(
                "server.max_connections",
                format!("must be at most {MAX_CONNECTIONS_CAP}"),
            ));
        }
        Ok(())
    }

    /// Reads the PEM files of `tls` into the listener's TLS material (the only time they
    /// are read); the error names `server.tls.cert` or `server.tls.key`.
    pub(super) fn load_tls(&mut self) -> Result<(), ConfigError> {
        self.loaded_tls = match &self.tls {
            None => None,
            Some(files) => {
                files
                    .validate("server.tls")
                    .map_err(|e| ConfigError::invalid(e.key, "must name a PEM file"))?;
                let loaded = ServerTls::load(files, "server.tls")
                    .map_err(|e| ConfigError::invalid(e.key, e.message))?;
                Some(loaded)
            }
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{env, err, BASE};
    use crate::config::Config;

    #[test]
    fn listener_limits_are_checked() {
        let with = |key: &str, value: &str| {
            let mut env = env();
            env.push((key.into(), value.into()));
            err(BASE, &env)
        };
        for key in [
            "header_timeout_ms",
            "keep_alive_timeout_ms",
            "body_timeout_ms",
            "send_timeout_ms",
            "max_connections",
        ] {
            let msg = with(&format!("ZENRELAY__SERVER__{}", key.to_uppercase()), "0");
            assert!(msg.starts_with(&format!("server.{key}")), "{msg}");
            assert!(msg.contains("greater than 0"), "{msg}");
        }
        let msg = with(
            "ZENRELAY__SERVER__MAX_CONNECTIONS",
            &(MAX_CONNECTIONS_CAP + 1).to_string(),
        );
        assert!(msg.starts_with("server.max_connections"), "{msg}");
        assert!(msg.contains("at most 1000000"), "{msg}");
    }

    /// A `[server]` table with `tls` naming the given files.
    fn tls_table(cert: &str, key: &str) -> String {
        format!("{BASE}\n[server]\ntls = {{ cert = \"{cert}\", key = \"{key}\" }}\n")
    }

    #[test]
    fn tls_files_are_read_by_validation() {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("a self-signed certificate");
        let dir = tempfile::tempdir().expect("a temp dir");
        let cert = dir.path().join("relay.pem");
        let key = dir.path().join("relay.key");
        std::fs::write(&cert, certified.cert.pem()).expect("cert written");
        std::fs::write(&key, certified.signing_key.serialize_pem()).expect("key written");
        let (cert, key) = (cert.display().to_string(), key.display().to_string());

        let config = Config::from_toml_with_env(&tls_table(&cert, &key), "test.toml", &env())
            .expect("valid TLS files");
        assert_eq!(
            config.server.tls.as_ref().map(|t| t.cert.as_str()),
            Some(cert.as_str())
        );
        assert!(config.server.loaded_tls().expect("built").is_some());
        assert!(Config::default()
            .server
            .loaded_tls()
            .expect("no TLS")
            .is_none());

        let msg = err(&tls_table("/nonexistent/relay.pem", &key), &env());
        assert!(
            msg.starts_with("server.tls.cert: cannot read /nonexistent/relay.pem"),
            "{msg}"
        );
        let msg = err(&tls_table(&cert, &cert), &env());
        assert!(msg.starts_with("server.tls.key:"), "{msg}");
        let msg = err(&tls_table(&key, &key), &env());
        assert!(msg.starts_with("server.tls.cert:"), "{msg}");
    }

    #[test]
    fn tls_needs_both_files() {
        let msg = err(&tls_table("", "k"), &env());
        assert!(
            msg.starts_with("server.tls.cert: must name a PEM file"),
            "{msg}"
        );
        let msg = err(
            &format!("{BASE}\n[server]\ntls = {{ cert = \"c\" }}\n"),
            &env(),
        );
        assert!(msg.contains("key"), "{msg}");
    }

    #[test]
    fn an_unvalidated_config_has_no_tls_material() {
        let mut config = Config::default();
        config.server.tls = Some(TlsFiles {
            cert: "c.pem".into(),
            key: "k.pem".into(),
        });
        let message = config.server.loaded_tls().unwrap_err().to_string();
        assert_eq!(
            message,
            "server.tls: not built (the config was not validated)"
        );
    }
}
