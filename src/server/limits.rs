//! What a listener allows a client: the timeouts of each phase of a request and the
//! connections served at once.

use std::time::Duration;

use crate::config::ServerConfig;

/// What a listener allows a client before cutting it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest time for a whole request head, from its first byte (or from the accept).
    pub header_timeout: Duration,
    /// Longest wait for the next request on a kept-alive connection.
    pub keep_alive_timeout: Duration,
    /// Longest time for a request body after its head, before the rate allowance.
    pub body_timeout: Duration,
    /// Longest time a write may wait for the client to accept any of it.
    pub send_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
}

impl From<&ServerConfig> for ConnectionLimits {
    fn from(server: &ServerConfig) -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_millis(server.header_timeout_ms),
            keep_alive_timeout: Duration::from_millis(server.keep_alive_timeout_ms),
            body_timeout: Duration::from_millis(server.body_timeout_ms),
            send_timeout: Duration::from_millis(server.send_timeout_ms),
            max_connections: server.max_connections,
        }
    }
}

impl Default for ConnectionLimits {
    /// The `[server]` defaults.
    fn default() -> Self {
        (&ServerConfig::default()).into()
    }
}
