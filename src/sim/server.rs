//! The simulator's listener: the shared accept loop of [`crate::server`], plain or TLS, so
//! that a dropped-connection fault really closes the TCP connection.

use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::tls::TlsFiles;

/// How long in-flight requests may take to finish after shutdown was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` (HTTPS when `tls` is given) until `shutdown` resolves.
pub(crate) async fn serve(
    router: Router,
    tls: Option<&TlsFiles>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = match tls {
        Some(files) => Some(crate::tls::acceptor(files, "sim.tls")?),
        None => None,
    };
    crate::server::serve(
        listener,
        router,
        tls,
        crate::server::ConnectionLimits::default(),
        shutdown,
        SHUTDOWN_GRACE,
    )
    .await
}
