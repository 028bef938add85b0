//! A chat's events as a `text/event-stream` body, written straight into the bytes sent.
//!
//! axum's `Sse` serializes each event to a string, then copies it through `fmt::Write` while
//! scanning it for line breaks. An event here is our own compact JSON, which has no raw line
//! breaks (serde_json escapes them in strings), so it is serialized once, straight into the
//! frame. Each event is still a frame (an HTTP chunk) of its own, as clients saw before; hyper
//! already gathers the frames that are ready into one write.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Bytes;
use bytes::{BufMut, BytesMut};
use futures::{Stream, StreamExt};
use hyper::body::{Body, Frame};
use tokio::time::{Instant, Sleep};

use crate::chat::ChatEvent;

/// What an idle stream sends to keep proxies from closing it: an SSE comment.
const KEEP_ALIVE: &[u8] = b":\n\n";

/// A `text/event-stream` response of `body`, marked so that no cache or proxy holds it back.
pub(super) fn event_stream(body: axum::body::Body, request_id: &str) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let mut response = axum::response::Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Reverse proxies such as nginx buffer responses unless told not to, which would hold every
    // delta back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    super::with_request_id(response, request_id)
}

/// `text/event-stream` of `events`: `event: <type>` and the event's JSON as `data:`, with a
/// comment after every `keep_alive` without an event.
pub struct SseBody<S> {
    events: S,
    keep_alive: Duration,
    /// Re-armed only when it fires, from the time of the last frame, so a stream of many events
    /// does not touch the timer wheel once per event.
    idle: Pin<Box<Sleep>>,
    last_sent: Instant,
    ended: bool,
}

impl<S> SseBody<S> {
    pub fn new(events: S, keep_alive: Duration) -> Self {
        Self {
            events,
            keep_alive,
            idle: Box::pin(tokio::time::sleep(keep_alive)),
            last_sent: Instant::now(),
            ended: false,
        }
    }
}

impl<S: Stream<Item = ChatEvent> + Unpin> Body for SseBody<S> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match this.events.poll_next_unpin(cx) {
            Poll::Ready(Some(event)) => {
                let mut frame = BytesMut::with_capacity(128);
                write_event(&mut frame, &event);
                this.last_sent = Instant::now();
                return Poll::Ready(Some(Ok(Frame::data(frame.freeze()))));
            }
            Poll::Ready(None) => {
                this.ended = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        loop {
            ready!(this.idle.as_mut().poll(cx));
            let now = Instant::now();
            let due = this.last_sent + this.keep_alive;
            if now >= due {
                this.last_sent = now;
                this.idle.as_mut().reset(now + this.keep_alive);
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(KEEP_ALIVE)))));
            }
            this.idle.as_mut().reset(due);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

/// One SSE event: `event: <type>`, the event's JSON as `data:`, and the blank line that ends it.
fn write_event(frame: &mut BytesMut, event: &ChatEvent) {
    let start = frame.len();
    frame.put_slice(b"event: ");
    frame.put_slice(event.kind().as_bytes());
    frame.put_slice(b"\ndata: ");
    if let Err(e) = serde_json::to_writer((&mut *frame).writer(), event) {
        tracing::error!(error = %e, "serializing a chat event");
        frame.truncate(start);
        frame.put_slice(
            b"event: error\ndata: {\"type\":\"error\",\"code\":\"internal\",\
              \"message\":\"internal error\",\"retryable\":false}",
        );
    }
    frame.put_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn delta(text: &str) -> ChatEvent {
        ChatEvent::Delta {
            request_id: "r".into(),
            index: 0,
            text: text.into(),
        }
    }

    #[tokio::test]
    async fn each_event_is_a_frame_in_the_sse_format() {
        let events = futures::stream::iter(vec![delta("a\nb"), delta("c")]);
        let mut body = SseBody::new(events, Duration::from_secs(15));
        for text in ["a\\nb", "c"] {
            let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
            assert_eq!(
                std::str::from_utf8(&frame).unwrap(),
                format!(
                    "event: delta\ndata: {{\"type\":\"delta\",\"request_id\":\"r\",\"text\":\"{text}\"}}\n\n"
                )
            );
        }
        assert!(body.frame().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_sends_a_comment_every_keep_alive_interval() {
        let mut body = SseBody::new(futures::stream::pending(), Duration::from_secs(15));
        let started = Instant::now();
        for n in 1..=2 {
            let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
            assert_eq!(&frame[..], KEEP_ALIVE);
            assert_eq!(started.elapsed(), Duration::from_secs(15 * n));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_keep_alive_counts_from_the_last_event() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut body = SseBody::new(rx, Duration::from_secs(15));
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(10)).await;
        tx.unbounded_send(delta("x")).unwrap();
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(frame.starts_with(b"event: delta"));
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&frame[..], KEEP_ALIVE);
        assert_eq!(started.elapsed(), Duration::from_secs(25));
    }
}
