//! The HTTP/1.1 accept loop of every listener (the gateway's, plain or TLS, and the
//! simulator's), with graceful shutdown and limits that cut off slow, silent and idle
//! clients.
//!
//! It drives hyper itself rather than `axum::serve` for three reasons: TLS (axum serves
//! plain TCP only); timeouts (axum's loop has none, so a client that stalls inside its
//! headers or body, never sends anything, or never reads its answer would hold a
//! connection for ever); and so that a response marked [`DropConnection`] really closes
//! the TCP connection without an HTTP answer (the simulator's dropped-connection fault):
//! the service returns an error for such a response, and hyper then aborts the
//! connection.
//!
//! What bounds a client ([`ConnectionLimits`]):
//! - **Head:** a request head must arrive whole within `header_timeout` of its first byte
//!   (of the accept, for a connection's first request; on HTTPS the TLS handshake is part
//!   of it).
//! - **Idle:** a kept-alive connection may wait `keep_alive_timeout` for its next request
//!   (longer than the header timeout, so a load balancer's pooled connections are not
//!   closed under it).
//! - **Body:** a request body must arrive within `body_timeout` of its head, plus one second
//!   per [`MIN_BODY_BYTES_PER_SEC`] received; a handler reading it then gets
//!   [`BodyTimeout`] and answers 408 with `Connection: close`.
//! - **Answer:** a write the client accepts nothing of for `send_timeout` ends the
//!   connection (a client that never reads).
//! - **Connections:** at most `max_connections` are served at once; one over the cap is
//!   answered 503 `too_many_connections` and closed (on HTTPS it is closed without a
//!   handshake, which would cost the most exactly when the gateway is saturated).

mod body;
mod fds;
mod io;
mod limits;

pub use limits::ConnectionLimits;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body as _, Incoming};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

pub use body::{BodyTimeout, MIN_BODY_BYTES_PER_SEC};

use body::{DeadlineBody, SentBody};
use io::{GuardedIo, Phase};

/// Connections over the cap being answered 503 at once; past this they are closed
/// without an answer, so a flood cannot queue work.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// How long the 503 to a connection over the cap may take to write.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Least time between two warnings about connections refused over the cap.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Marks a response whose connection must be closed without answering.
#[derive(Debug, Clone, Copy)]
pub struct DropConnection;

/// The error that makes hyper abort a connection.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

/// Serves `router` on `listener` (HTTPS when `tls` is given) within `limits` until
/// `shutdown` resolves; then stops accepting and gives in-flight requests up to `grace` to
/// finish.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> anyhow::Result<()> {
    fds::ensure(limits.max_connections);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let mut refused = 0u64;
    let mut refusal_logged: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if refusal_logged.map_or(true, |at| at.elapsed() >= REFUSAL_LOG_EVERY) {
                tracing::warn!(%peer, refused, max_connections = limits.max_connections, "connections refused: too many open (server.max_connections)");
                refusal_logged = Some(tokio::time::Instant::now());
                refused = 0;
            }
            if tls.is_none() {
                if let Ok(refusal) = refusals.clone().try_acquire_owned() {
                    tokio::spawn(refuse(stream, refusal));
                }
            }
            continue;
        };
        let router = router.clone();
        let phase = Phase::new();
        let io = GuardedIo::new(stream, phase.clone(), limits);
        match &tls {
            None => {
                let conn = graceful.watch(connection(io, router, phase, limits));
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(slot);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _slot = slot;
                    // The guard's head clock covers the handshake.
                    let stream = match acceptor.accept(io).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                    };
                    let _ = watcher
                        .watch(connection(stream, router, phase, limits))
                        .await;
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("shutdown: in-flight requests did not finish in time");
        }
    }
    Ok(())
}

/// Errors of one incoming connection (it went away before it was accepted): nothing to
/// wait for before the next accept.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Answers a plain connection over the cap with 503 and closes it, within a short
/// deadline.
async fn refuse(mut stream: TcpStream, _refusal: tokio::sync::OwnedSemaphorePermit) {
    const BODY: &str = r#"{"error":{"code":"too_many_connections","message":"the server has too many open connections; retry shortly","details":[]}}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let write = async move {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, write).await;
}

fn connection<S>(
    stream: S,
    router: axum::Router,
    phase: Phase,
    limits: ConnectionLimits,
) -> impl hyper_util::server::graceful::GracefulConnection
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let router = router.clone();
        let phase = phase.clone();
        async move {
            phase.request();
            let mut timed_out = None;
            let req = req.map(|inner| {
                if inner.is_end_stream() {
                    axum::body::Body::new(inner)
                } else {
                    let body = DeadlineBody::new(inner, limits.body_timeout);
                    timed_out = Some(body.timed_out());
                    axum::body::Body::new(body)
                }
            });
            let mut resp = router
                .oneshot(req)
                .await
                .unwrap_or_else(|never| match never {});
            if resp.extensions().get::<DropConnection>().is_some() {
                return Err(Dropped);
            }
            if timed_out.is_some_and(|t| t.load(std::sync::atomic::Ordering::Relaxed)) {
                // The request's rest is never read: this answer (408 from the gateway's
                // handlers, whatever a simulator's extractor makes of it) is the last.
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok(resp.map(|body| SentBody::new(body, phase)))
        }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        // The guard keeps the head and idle clocks (hyper's one timer would make the idle
        // limit as short as the head's).
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), service)
}
