//! The writer of one WebSocket session: the frames queued for the client, and the events of
//! every chat streaming on the connection, to the socket, in turn and at the socket's pace.

use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures::{FutureExt, Sink, SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::close;
use super::session::{Conn, Outbound};
use crate::chat::ChatEvent;
use crate::error::Error;
use crate::pipeline::ChatStream;

/// A chat the writer streams: its events, ending with `done` or `error`; or, once the client
/// cancels it or the connection ends, a `cancelled` error at once. The writer drops it after its
/// last event, which drops its upstream call.
pub struct Streaming {
    request_id: Arc<str>,
    events: ChatStream,
    cancelled: oneshot::Receiver<()>,
}

impl Streaming {
    /// `events` of the chat `request_id`, until they end or `cancelled` resolves.
    pub(super) fn new(
        request_id: Arc<str>,
        events: ChatStream,
        cancelled: oneshot::Receiver<()>,
    ) -> Self {
        Self {
            request_id,
            events,
            cancelled,
        }
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<ChatEvent> {
        // A cancel, or the sender dropped as the connection ends: either way, stop now.
        if Pin::new(&mut self.cancelled).poll(cx).is_ready() {
            return Poll::Ready(ChatEvent::Error {
                request_id: self.request_id.clone(),
                error: Error::Cancelled.body(),
            });
        }
        let event = ready!(self.events.poll_next_unpin(cx));
        Poll::Ready(event.unwrap_or_else(|| ChatEvent::Error {
            // The pipeline promises a last event; the client still gets one if it broke that.
            request_id: self.request_id.clone(),
            error: Error::Internal("the chat ended without a last event".into()).body(),
        }))
    }
}

/// The chats a writer streams. A connection has a few at most (`max_inflight`), so on each
/// wake-up the writer polls them in turn, starting after the one that went last; that costs less
/// than a waker of its own per chat.
#[derive(Default)]
struct Chats {
    streaming: Vec<Streaming>,
    next: usize,
}

impl Chats {
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<ChatEvent> {
        let n = self.streaming.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if let Poll::Ready(event) = self.streaming[i].poll_event(cx) {
                self.next = i + 1;
                if event.is_terminal() {
                    self.streaming.swap_remove(i);
                }
                return Poll::Ready(event);
            }
        }
        Poll::Pending
    }
}

/// Moves queued frames, and the events of every chat streaming on the connection, to the socket.
/// Events go straight from each chat's stream to the socket, with no task or queue between:
/// at a thousand streaming chats this hop was a large share of the server's CPU. A chat is
/// polled only when the socket has taken the last frame, so a client that stops reading holds
/// back its chats' upstream streams rather than filling memory; one that stays stuck for the
/// slow-consumer timeout is closed with 1013. When the connection ends it sends the close
/// frame, giving a client that stopped reading a moment before the socket is dropped.
pub(super) async fn write<S: Sink<Message> + Unpin>(
    mut sink: S,
    mut queue: mpsc::Receiver<Outbound>,
    conn: Arc<Conn>,
) {
    let mut chats = Chats::default();
    let token = conn.closed.clone();
    let mut closed = pin!(token.cancelled());
    let wait = Duration::from_millis(conn.settings.slow_consumer_timeout_ms);
    loop {
        let message = tokio::select! {
            biased;
            () = &mut closed => break,
            item = queue.recv() => match item {
                Some(Outbound::Frame(message)) => *message,
                Some(Outbound::Chat(chat)) => {
                    chats.streaming.push(*chat);
                    continue;
                }
                None => break,
            },
            event = std::future::poll_fn(|cx| chats.poll_event(cx)) => {
                if event.is_terminal() {
                    // Before the client can see the end, so it may reuse the id at once.
                    conn.finish(event.request_id());
                }
                match serde_json::to_string(&event) {
                    Ok(text) => Message::Text(Utf8Bytes::from(text)),
                    Err(_) => continue,
                }
            }
        };
        // Usually the socket takes the frame at once, and no timer is needed.
        let mut send = pin!(sink.send(message));
        let at_once = send.as_mut().now_or_never().map(|sent| sent.is_ok());
        let sent = match at_once {
            Some(sent) => sent,
            None => tokio::select! {
                sent = tokio::time::timeout(wait, send) => match sent {
                    Ok(sent) => sent.is_ok(),
                    Err(_) => {
                        conn.too_slow();
                        break;
                    }
                },
                () = &mut closed => break,
            },
        };
        if !sent {
            conn.closed.cancel();
            break;
        }
    }
    // Dropping the chats aborts their upstream calls.
    drop(chats);
    let (code, reason) = conn
        .close_reason
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or((close::NORMAL, ""));
    let close = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }));
    let sent = tokio::time::timeout(Duration::from_secs(1), sink.send(close))
        .await
        .is_ok_and(|sent| sent.is_ok());
    if !sent {
        // The client closed first: the protocol layer refuses a second close but has queued
        // the echo of the client's, which a flush sends.
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.flush()).await;
    }
}
