//! The HTTP/1.1 accept loop of every listener (the gateway's, plain or TLS, and the
//! simulator's), with graceful shutdown and limits that cut off slow or idle clients.
//!
//! It drives hyper itself rather than `axum::serve` for three reasons: TLS (axum serves
//! plain TCP only); timeouts (axum's loop has none, so a client that stalls inside its
//! headers or body, or never sends anything, would hold a connection for ever); and so
//! that a response marked [`DropConnection`] really closes the TCP connection without an
//! HTTP answer (the simulator's dropped-connection fault): the service returns an error
//! for such a response, and hyper then aborts the connection.
//!
//! What bounds a client ([`ConnectionLimits`]):
//! - **Headers and idle time:** hyper's header read timeout runs whenever the connection
//!   waits for a request: from the accept (a client that sends nothing), and again after
//!   each answer on a kept-alive connection (an idle client). It stops when the headers are
//!   complete. On HTTPS the TLS handshake gets the same time.
//! - **Body:** the whole request body must arrive within the body timeout after its
//!   headers; a handler reading it then gets [`BodyTimeout`] and answers 408, and the
//!   connection is closed (its unread rest is never waited for).
//! - **Connections:** at most `max_connections` are served at once; one over the cap is
//!   answered 503 `too_many_connections` and closed at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Connections over the cap being answered 503 at once; past this they are closed
/// without an answer, so a flood cannot queue work.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// How long the 503 to a connection over the cap may take to write.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// What a listener allows a client before cutting it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest wait for a complete request head while the connection waits for a
    /// request: after the accept, and after each answer on a kept-alive connection.
    pub header_timeout: Duration,
    /// Longest time for a whole request body to arrive once its headers are in.
    pub body_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

/// A request body that did not arrive within [`ConnectionLimits::body_timeout`].
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {} ms",
            self.0.as_millis()
        )
    }
}

impl std::error::Error for BodyTimeout {}

impl BodyTimeout {
    /// The body timeout behind `error` (or one of its sources), if that is what it is.
    pub fn find(error: &(dyn std::error::Error + 'static)) -> Option<BodyTimeout> {
        let mut cause = Some(error);
        while let Some(e) = cause {
            if let Some(t) = e.downcast_ref::<BodyTimeout>() {
                return Some(*t);
            }
            cause = e.source();
        }
        None
    }
}

/// A request body with a deadline counted from when its headers arrived. The timer is
/// armed only if the body is not already in when first read, so a body that came with
/// its headers costs nothing.
struct DeadlineBody {
    inner: Incoming,
    deadline: tokio::time::Instant,
    timeout: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

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
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
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
            tracing::warn!(%peer, max_connections = limits.max_connections, "connection refused: too many open");
            if let Ok(refusal) = refusals.clone().try_acquire_owned() {
                tokio::spawn(refuse(stream, tls.clone(), refusal));
            }
            continue;
        };
        let router = router.clone();
        match &tls {
            None => {
                let conn = graceful.watch(connection(stream, router, limits));
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
                    // The handshake is part of waiting for the first request's head.
                    let stream =
                        match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                    let _ = watcher.watch(connection(stream, router, limits)).await;
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

/// Answers a connection over the cap with 503 and closes it (after the TLS handshake on
/// an HTTPS listener), all within a short deadline.
async fn refuse(
    stream: tokio::net::TcpStream,
    tls: Option<TlsAcceptor>,
    _refusal: tokio::sync::OwnedSemaphorePermit,
) {
    const BODY: &str = r#"{"error":{"code":"too_many_connections","message":"the server has too many open connections; retry shortly","details":[]}}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let write = async move {
        match tls {
            None => {
                let mut stream = stream;
                stream.write_all(answer.as_bytes()).await?;
                stream.shutdown().await
            }
            Some(acceptor) => {
                let mut stream = acceptor.accept(stream).await?;
                stream.write_all(answer.as_bytes()).await?;
                stream.shutdown().await
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, write).await;
}

fn connection<S>(
    stream: S,
    router: axum::Router,
    limits: ConnectionLimits,
) -> impl hyper_util::server::graceful::GracefulConnection
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let router = router.clone();
        async move {
            let req = req.map(|inner| {
                if inner.is_end_stream() {
                    axum::body::Body::new(inner)
                } else {
                    axum::body::Body::new(DeadlineBody {
                        inner,
                        deadline: tokio::time::Instant::now() + limits.body_timeout,
                        timeout: limits.body_timeout,
                        timer: None,
                    })
                }
            });
            let resp = router
                .oneshot(req)
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
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(stream), service)
}
