//! A connection's socket with its clocks: how long a request head may take, how long a
//! kept-alive connection may sit idle, and how long a write may stall on a client that
//! does not read.
//!
//! [`GuardedIo`] wraps the TCP stream (under TLS, when there is TLS, so the handshake
//! counts as part of the first request's head) and reads the connection's [`Phase`],
//! which the service moves on: a request starts when its head has been parsed (the
//! service is called), and the connection is idle again once the answer's body has been
//! handed over in full.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::limits::ConnectionLimits;

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Waiting for a request head, which began to arrive (or the connection opened) at
    /// this moment.
    Head(Instant),
    /// Kept alive with nothing to do since this moment.
    Idle(Instant),
    /// A request is being served: its body and answer have clocks of their own.
    Request,
}

/// The shared phase of one connection.
#[derive(Debug, Clone)]
pub(super) struct Phase(Arc<Mutex<State>>);

impl Phase {
    /// A new connection: its first head is awaited from now.
    pub(super) fn new() -> Self {
        Phase(Arc::new(Mutex::new(State::Head(Instant::now()))))
    }

    fn get(&self) -> State {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, state: State) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    /// A request head has been parsed.
    pub(super) fn request(&self) {
        self.set(State::Request);
    }

    /// The answer has been handed over: the connection waits for its next request.
    pub(super) fn idle(&self) {
        self.set(State::Idle(Instant::now()));
    }

    /// Bytes arrived: on an idle connection, a new head begins.
    fn received(&self) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let State::Idle(_) = *state {
            *state = State::Head(Instant::now());
        }
    }
}

/// A stream whose reads fail with [`io::ErrorKind::TimedOut`] when a head or an idle
/// spell lasts too long, and whose writes fail the same way when the peer has accepted
/// nothing for `send_timeout`.
pub(super) struct GuardedIo<S> {
    inner: S,
    phase: Phase,
    limits: ConnectionLimits,
    read_timer: Timer,
    write_timer: Timer,
}

impl<S> GuardedIo<S> {
    pub(super) fn new(inner: S, phase: Phase, limits: ConnectionLimits) -> Self {
        GuardedIo {
            inner,
            phase,
            limits,
            read_timer: Timer::default(),
            write_timer: Timer::default(),
        }
    }

    /// When a read that is pending must give up, if it must.
    fn read_deadline(&self) -> Option<Instant> {
        match self.phase.get() {
            State::Head(since) => Some(since + self.limits.header_timeout),
            State::Idle(since) => Some(since + self.limits.keep_alive_timeout),
            State::Request => None,
        }
    }
}

/// One re-armable deadline.
#[derive(Default)]
struct Timer {
    sleep: Option<Pin<Box<Sleep>>>,
    deadline: Option<Instant>,
}

impl Timer {
    /// Polls the deadline `at` (re-arming the timer if it moved): ready once it passed.
    fn poll_at(&mut self, at: Instant, cx: &mut Context<'_>) -> Poll<()> {
        match self.sleep.as_mut() {
            Some(sleep) if self.deadline != Some(at) => sleep.as_mut().reset(at),
            Some(_) => {}
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        self.deadline = Some(at);
        match self.sleep.as_mut() {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }

    fn clear(&mut self) {
        self.deadline = None;
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.phase.received();
                }
                this.read_timer.clear();
                Poll::Ready(result)
            }
            Poll::Pending => match this.read_deadline() {
                None => {
                    this.read_timer.clear();
                    Poll::Pending
                }
                Some(at) => match this.read_timer.poll_at(at, cx) {
                    Poll::Ready(()) => Poll::Ready(Err(timed_out(
                        "the client sent no complete request head in time",
                    ))),
                    Poll::Pending => Poll::Pending,
                },
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> GuardedIo<S> {
    /// Turns a pending write into a timeout once the peer has accepted nothing for
    /// `send_timeout`; any progress restarts the clock.
    fn stall<T>(
        &mut self,
        polled: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.write_timer.clear();
                Poll::Ready(result)
            }
            Poll::Pending => {
                let at = self
                    .write_timer
                    .deadline
                    .unwrap_or_else(|| Instant::now() + self.limits.send_timeout);
                match self.write_timer.poll_at(at, cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Err(timed_out("the client did not read the answer in time")))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.stall(polled, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.stall(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.stall(polled, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.stall(polled, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_secs(5),
            keep_alive_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(10),
            ..ConnectionLimits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_must_arrive_within_the_header_timeout() {
        let (client, server) = tokio::io::duplex(64);
        let phase = Phase::new();
        let mut io = GuardedIo::new(server, phase, limits());
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_gets_the_keep_alive_timeout_and_a_request_none() {
        let (mut client, server) = tokio::io::duplex(64);
        let phase = Phase::new();
        let mut io = GuardedIo::new(server, phase.clone(), limits());
        let mut buf = [0u8; 8];
        // While a request is served, reads wait as long as they must.
        phase.request();
        let read = tokio::time::timeout(Duration::from_secs(600), io.read(&mut buf)).await;
        assert!(read.is_err(), "no deadline while a request is served");
        // Idle: the keep-alive timeout, not the header timeout.
        phase.idle();
        let started = Instant::now();
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        // Bytes on an idle connection start a head: the header timeout from then.
        phase.idle();
        tokio::time::sleep(Duration::from_secs(30)).await;
        client.write_all(b"GET").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 3);
        let started = Instant::now();
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_client_does_not_read_times_out_and_progress_restarts_the_clock() {
        let (mut client, server) = tokio::io::duplex(16);
        let mut io = GuardedIo::new(server, Phase::new(), limits());
        // Fills the pipe; the client reads a little after 8 s, which is progress.
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(8)).await;
            let mut buf = [0u8; 16];
            client.read_exact(&mut buf).await.unwrap();
            client
        });
        let started = Instant::now();
        let err = io.write_all(&[0u8; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // 8 s until the first read, then 10 s without progress.
        assert_eq!(started.elapsed(), Duration::from_secs(18));
        drop(reader.await.unwrap());
    }
}
