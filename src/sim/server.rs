//! The simulator's listener: the shared accept loop of [`crate::server`], plain or TLS, so
//! that a dropped-connection fault really closes the TCP connection.

use std::time::Duration;

use tokio::net::TcpListener;

use super::Simulator;

/// How long in-flight requests may take to finish after shutdown was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub(crate) async fn serve(
    sim: Simulator,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = match &sim.config().tls {
        Some(files) => Some(crate::tls::acceptor(files, "sim.tls")?),
        None => None,
    };
    crate::server::serve(
        listener,
        sim.router(),
        tls,
        crate::server::ConnectionLimits::default(),
        shutdown,
        SHUTDOWN_GRACE,
    )
    .await
}
