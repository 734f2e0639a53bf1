//! Request and response bodies as a connection sees them: a request body with a deadline,
//! and a response body that tells the connection when it has been sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Instant;

use super::io::Phase;

/// Slowest average upload a body deadline allows for beyond its fixed part: each byte
/// received extends the deadline by its share of a second at this rate, so a large body
/// on a slow but steady link is read in full while a trickle is cut off.
pub const MIN_BODY_BYTES_PER_SEC: u64 = 64 * 1024;

/// A request body that did not arrive within its deadline (see `DeadlineBody`).
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive in time ({} ms, plus one second per {} KiB received)",
            self.0.as_millis(),
            MIN_BODY_BYTES_PER_SEC / 1024
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

/// A request body whose deadline is its head's arrival plus `timeout`, extended for every
/// byte received by [`MIN_BODY_BYTES_PER_SEC`]. The timer is armed only if the body is
/// not already in when first read, so a body that came with its head costs nothing.
pub(super) struct DeadlineBody<B = Incoming> {
    inner: B,
    deadline: Instant,
    timeout: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

impl<B> DeadlineBody<B> {
    /// `inner`, which must arrive within `timeout` from now (plus the rate allowance).
    pub(super) fn new(inner: B, timeout: Duration) -> Self {
        DeadlineBody {
            inner,
            deadline: Instant::now() + timeout,
            timeout,
            timer: None,
            timed_out: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set once the deadline has passed: the rest of the body is never read, so the
    /// connection cannot carry another request, whatever the answer.
    pub(super) fn timed_out(&self) -> Arc<AtomicBool> {
        self.timed_out.clone()
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
                let len = data.map_or(0, |d| d.len() as u64);
                // The timer is not moved per frame: when it fires before the extended
                // deadline, it is re-armed then.
                this.deadline += Duration::from_micros(len * 1_000_000 / MIN_BODY_BYTES_PER_SEC);
            }
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            match timer.as_mut().poll(cx) {
                Poll::Ready(()) if Instant::now() < this.deadline => {
                    timer.as_mut().reset(this.deadline);
                }
                Poll::Ready(()) => {
                    this.timed_out.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout)))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that marks its connection idle once it has been sent in full, so the
/// connection's keep-alive timer starts then (and not while the answer is being written).
pub(super) struct SentBody {
    inner: axum::body::Body,
    phase: Option<Phase>,
}

impl SentBody {
    /// `inner`, marking `phase` idle at its end.
    pub(super) fn new(inner: axum::body::Body, phase: Phase) -> Self {
        let mut body = SentBody {
            inner,
            phase: Some(phase),
        };
        if body.inner.is_end_stream() {
            body.finish();
        }
        body
    }

    fn finish(&mut self) {
        if let Some(phase) = self.phase.take() {
            phase.idle();
        }
    }
}

impl Body for SentBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::sync::mpsc;

    /// A body fed by hand: each message is a data frame; it ends when the sender goes.
    struct Fed(mpsc::Receiver<Bytes>);

    impl Body for Fed {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|bytes| bytes.map(|b| Ok(Frame::data(b))))
        }
    }

    /// A fed body with a 1 s deadline.
    fn body() -> (mpsc::Sender<Bytes>, DeadlineBody<Fed>) {
        let (tx, rx) = mpsc::channel(8);
        (tx, DeadlineBody::new(Fed(rx), Duration::from_secs(1)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_past_its_deadline_is_cut_off() {
        let (_tx, mut body) = body();
        let timed_out = body.timed_out();
        let started = Instant::now();
        let err = body
            .frame()
            .await
            .expect("an answer")
            .expect_err("a timeout");
        assert!(BodyTimeout::find(err.as_ref()).is_some(), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert!(
            timed_out.load(Ordering::Relaxed),
            "the connection is not told"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_received_extend_the_deadline_once_the_timer_is_running() {
        let (tx, mut body) = body();
        let started = Instant::now();
        // The timer is armed by a read that waits, then 64 KiB arrive: one more second.
        let feed = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            tx.send(Bytes::from(vec![b'x'; 64 * 1024])).await.ok();
            tx
        });
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.data_ref().map(Bytes::len), Some(64 * 1024));
        let _tx = feed.await.expect("the feeder ran");
        let err = body
            .frame()
            .await
            .expect("an answer")
            .expect_err("a timeout");
        assert!(BodyTimeout::find(err.as_ref()).is_some(), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_ends_in_time_is_read_whole() {
        let (tx, body) = body();
        tx.send(Bytes::from_static(b"abc")).await.unwrap();
        drop(tx);
        let read = body.collect().await.expect("no timeout").to_bytes();
        assert_eq!(read, Bytes::from_static(b"abc"));
    }
}
