//! The accept loop: HTTP/1.1 over plain TCP or TLS, with graceful shutdown.
//!
//! The simulator drives hyper itself rather than `axum::serve` so that a dropped-connection
//! fault can really close the TCP connection without an HTTP response: the service returns an
//! error for a response marked [`DropConnection`], and hyper then aborts the connection.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::api::DropConnection;
use super::config::TlsFiles;
use super::Simulator;

/// How long in-flight requests may take to finish after shutdown was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The error that makes hyper abort a connection.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by a fault rule")
    }
}

impl std::error::Error for Dropped {}

/// Builds the TLS acceptor from PEM files (HTTP/1.1 only, announced by ALPN).
fn tls_acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let certs = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("sim.tls.cert: cannot read {}", files.cert))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| {
            format!(
                "sim.tls.cert: {} is not a PEM certificate chain",
                files.cert
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!("sim.tls.cert: {} holds no certificate", files.cert);
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).with_context(|| {
        format!(
            "sim.tls.key: cannot read a PEM private key from {}",
            files.key
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("sim.tls: no usable TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("sim.tls: the key does not fit the certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

pub(crate) async fn serve(
    sim: Simulator,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = match &sim.config().tls {
        Some(files) => Some(tls_acceptor(files)?),
        None => None,
    };
    let router = sim.router();
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "sim accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        match &tls {
            None => serve_connection(stream, router, &graceful),
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "sim TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let conn = connection(stream, router);
                    let _ = watcher.watch(conn).await;
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("sim shutdown: in-flight requests did not finish in time");
        }
    }
    Ok(())
}

fn serve_connection<S>(stream: S, router: axum::Router, graceful: &GracefulShutdown)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = graceful.watch(connection(stream, router));
    tokio::spawn(async move {
        let _ = conn.await;
    });
}

fn connection<S>(
    stream: S,
    router: axum::Router,
) -> impl hyper_util::server::graceful::GracefulConnection
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let router = router.clone();
        async move {
            let resp = router
                .oneshot(req.map(axum::body::Body::new))
                .await
                .unwrap_or_else(|never| match never {});
            if resp.extensions().get::<DropConnection>().is_some() {
                Err(Dropped)
            } else {
                Ok(resp)
            }
        }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(stream), service)
}
