//! The service side of a watched connection: each request counts as in flight from its head
//! until its response body is done (or dropped), and its body must arrive within the body
//! timeout.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::future::BoxFuture;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use super::activity::Activity;

type BoxError = Box<dyn StdError + Send + Sync>;

/// What [`super::serve`] can serve: a tower service of [`super::Body`] requests, as the axum
/// router and tonic's routes are.
pub trait Served:
    tower::Service<
        Request<TimedBody<Incoming>>,
        Response = Response<Self::Out>,
        Error = Self::Fault,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
    type Out: Body<Data = bytes::Bytes, Error: Into<BoxError>> + Send + Unpin + 'static;
    type Fault: Into<BoxError>;
}

impl<S, B> Served for S
where
    S: tower::Service<Request<TimedBody<Incoming>>, Response = Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = bytes::Bytes, Error: Into<BoxError>> + Send + Unpin + 'static,
{
    type Out = B;
    type Fault = S::Error;
}

/// The request body did not arrive within the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {0:?}")]
pub struct BodyTimedOut(Duration);

/// A request body that fails with [`BodyTimedOut`] once its time is up.
pub struct TimedBody<B> {
    inner: B,
    limit: Duration,
    deadline: Instant,
    /// Made on the first wait: most bodies are already there, and need no timer.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            deadline: Instant::now() + limit,
            timer: None,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.limit)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The per-connection hyper service: counts each request in flight with the connection's
/// activity, and times its body.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
    body_timeout: Duration,
}

impl<S> Counted<S> {
    pub fn new(inner: S, activity: Arc<Activity>, body_timeout: Duration) -> Self {
        Self {
            inner,
            activity,
            body_timeout,
        }
    }
}

impl<S: Served> hyper::service::Service<Request<Incoming>> for Counted<S> {
    type Response = Response<Guarded<S::Out>>;
    type Error = S::Fault;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.activity.request_began();
        let guard = InFlight(self.activity.clone());
        let limit = self.body_timeout;
        let request = request.map(|body| TimedBody::new(body, limit));
        let inner = self.inner.clone();
        Box::pin(async move {
            let response = inner.oneshot(request).await?;
            Ok(response.map(|body| Guarded {
                body,
                _guard: guard,
            }))
        })
    }
}

/// A request in flight until dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A response body that keeps its request in flight until it is done or dropped.
pub struct Guarded<B> {
    body: B,
    _guard: InFlight,
}

impl<B: Body + Unpin> Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
