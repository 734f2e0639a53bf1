//! The `x-request-id` of every request: the caller's, or a new UUID (v4) when it sent
//! none, on the request (where the trace span and the handlers read it) and on its
//! response.
//!
//! tower-http's `SetRequestId` and `PropagateRequestId` do the same as two layers, and
//! also store the id in the request's extensions, which costs each request a map of its
//! own; nothing here reads it from there. In their place, this one layer took about
//! 1,900 instructions off each stored single event, 3% of the gateway's work
//! (`scripts/gateway-cost.sh`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Request, Response};
use tower::{Layer, Service};

/// The header.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Gives each request an id (see the module).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestId { inner }
    }
}

/// The service of [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct RequestId<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for RequestId<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = WithRequestId<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let id = match request.headers().get(&X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = new_id();
                request
                    .headers_mut()
                    .insert(X_REQUEST_ID.clone(), id.clone());
                id
            }
        };
        WithRequestId {
            inner: self.inner.call(request),
            id: Some(id),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of a request, given the request's id unless it has one.
    pub struct WithRequestId<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
    }
}

impl<F, R, E> Future for WithRequestId<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<R>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(response)) => response,
        };
        if let Some(id) = this.id.take() {
            if !response.headers().contains_key(&X_REQUEST_ID) {
                response.headers_mut().insert(X_REQUEST_ID.clone(), id);
            }
        }
        Poll::Ready(Ok(response))
    }
}

/// A new id: a random UUID in its hyphenated form.
fn new_id() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::ServiceExt;

    /// Answers with the request's id in the body, and with the response id `answer`.
    fn echo(
        answer: Option<&'static str>,
    ) -> impl Service<Request<()>, Response = Response<String>, Error = Infallible> + Clone {
        tower::service_fn(move |request: Request<()>| async move {
            let seen = request
                .headers()
                .get(&X_REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let mut response = Response::new(seen);
            if let Some(answer) = answer {
                response
                    .headers_mut()
                    .insert(X_REQUEST_ID.clone(), HeaderValue::from_static(answer));
            }
            Ok::<_, Infallible>(response)
        })
    }

    fn request(id: Option<&'static str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(id) = id {
            request
                .headers_mut()
                .insert(X_REQUEST_ID.clone(), HeaderValue::from_static(id));
        }
        request
    }

    #[tokio::test]
    async fn the_caller_s_id_is_kept_on_the_request_and_its_response() {
        let response = RequestIdLayer
            .layer(echo(None))
            .oneshot(request(Some("req-1")))
            .await
            .unwrap();
        assert_eq!(response.body(), "req-1");
        assert_eq!(response.headers()[&X_REQUEST_ID], "req-1");
    }

    #[tokio::test]
    async fn a_request_without_one_gets_a_new_uuid_on_both() {
        let mut ids = Vec::new();
        for _ in 0..2 {
            let response = RequestIdLayer
                .layer(echo(None))
                .oneshot(request(None))
                .await
                .unwrap();
            let id = response.body().clone();
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
            assert_eq!(id.len(), 36, "{id}");
            assert_eq!(response.headers()[&X_REQUEST_ID], id.as_str());
            ids.push(id);
        }
        assert_ne!(ids[0], ids[1]);
    }

    #[tokio::test]
    async fn a_response_s_own_id_is_left_alone() {
        let response = RequestIdLayer
            .layer(echo(Some("answered")))
            .oneshot(request(Some("req-2")))
            .await
            .unwrap();
        assert_eq!(response.headers()[&X_REQUEST_ID], "answered");
        assert_eq!(response.headers().get_all(&X_REQUEST_ID).iter().count(), 1);
    }
}
