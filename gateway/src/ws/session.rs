//! One WebSocket connection on `nagare serve`: many concurrent chats interleaved by `request_id`,
//! cancel frames, keepalive, an idle timeout, and bounded outbound buffering. Generic over
//! `Sink`/`Stream` so unit tests drive it with channels.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures::{Sink, SinkExt, Stream, StreamExt};
use nagare_authorizer::Principal;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::chat::{ChatPipeline, ChatRequest, Route};
use crate::error::Error;
use crate::push::LocalConnections;
use crate::ws::frames::{self, ClientFrame};

/// Close codes (RFC 6455).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    /// "Try again later": the client did not read fast enough.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// `[websocket]` settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WsSettings {
    /// Chats in flight on one connection; more get `rate_limited`.
    pub max_inflight: usize,
    /// Largest client message; larger ones get `payload_too_large` (API Gateway's limit is 128 KiB).
    pub max_message_bytes: usize,
    /// Frames queued for a client before senders wait.
    pub outbound_frames: usize,
    /// How long a sender may wait for room in the queue before the client is closed with 1013.
    pub slow_consumer_timeout_ms: u64,
    pub ping_interval_secs: u64,
    /// A connection with no message from the client for this long is closed (API Gateway: 10 min).
    pub idle_timeout_secs: u64,
}

impl Default for WsSettings {
    fn default() -> Self {
        Self {
            max_inflight: 8,
            max_message_bytes: 128 * 1024,
            outbound_frames: 256,
            slow_consumer_timeout_ms: 5_000,
            ping_interval_secs: 30,
            idle_timeout_secs: 600,
        }
    }
}

/// What every task of one connection shares.
struct Conn {
    /// The id a task names to deliver here; the client reads it in `pong`.
    id: Arc<str>,
    out: mpsc::Sender<Message>,
    /// Cancelled when the connection ends for any reason; every chat's token is a child of it.
    closed: CancellationToken,
    close_reason: Mutex<Option<(u16, &'static str)>>,
    inflight: Mutex<HashMap<String, CancellationToken>>,
    settings: WsSettings,
}

impl Conn {
    /// Ends the connection; the first reason given is the one the client sees.
    fn close(&self, code: u16, reason: &'static str) {
        let mut slot = self.close_reason.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert((code, reason));
        self.closed.cancel();
    }

    /// Queues a frame; false if the connection is over. A client that leaves the queue full for
    /// longer than the slow-consumer timeout is closed, so memory per connection stays bounded.
    async fn send(&self, text: String) -> bool {
        if self.closed.is_cancelled() {
            return false;
        }
        // Usually there is room, and no timer is needed. Arming and cancelling one per frame
        // showed: 1,000 concurrent chats took about 5% more server CPU with it.
        let message = match self.out.try_send(Message::Text(Utf8Bytes::from(text))) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(message)) => message,
        };
        let wait = Duration::from_millis(self.settings.slow_consumer_timeout_ms);
        match tokio::time::timeout(wait, self.out.send(message)).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::info!("websocket client too slow; closing");
                self.close(close::TRY_AGAIN_LATER, "client too slow");
                false
            }
        }
    }

    async fn send_error(&self, request_id: Option<&str>, error: &Error) -> bool {
        self.send(frames::error(request_id, error)).await
    }

    /// Registers a chat, unless its id is already in flight or the connection is at its limit.
    fn admit(&self, request_id: &str, cancel: &CancellationToken) -> Result<(), Error> {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if inflight.contains_key(request_id) {
            return Err(frames::duplicate_chat(request_id));
        }
        if inflight.len() >= self.settings.max_inflight {
            return Err(frames::too_many_chats(self.settings.max_inflight));
        }
        inflight.insert(request_id.to_owned(), cancel.clone());
        Ok(())
    }

    fn finish(&self, request_id: &str) {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(request_id);
    }
}

/// Runs one connection until the client leaves, the connection idles out, or it is closed for
/// being too slow. Every chat still in flight is cancelled, which aborts its upstream stream.
pub async fn run<S, R, E>(
    sink: S,
    mut incoming: R,
    pipeline: Arc<ChatPipeline>,
    principal: Principal,
    settings: WsSettings,
    connections: &Arc<LocalConnections>,
) where
    S: Sink<Message> + Unpin + Send + 'static,
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    let (out, out_rx) = mpsc::channel(settings.outbound_frames.max(1));
    // Registered while the session runs, so tasks can deliver into the same bounded queue.
    let registration = connections.register(&principal, out.clone());
    let conn = Arc::new(Conn {
        id: registration.id().clone(),
        out,
        closed: CancellationToken::new(),
        close_reason: Mutex::new(None),
        inflight: Mutex::new(HashMap::new()),
        settings: settings.clone(),
    });
    let writer = tokio::spawn(write(sink, out_rx, conn.clone()));
    let idle_timeout = Duration::from_secs(settings.idle_timeout_secs);
    let mut ping = tokio::time::interval(Duration::from_secs(settings.ping_interval_secs.max(1)));
    ping.tick().await;
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            () = conn.closed.cancelled() => break,
            _ = ping.tick() => {
                if last_heard.elapsed() >= idle_timeout {
                    conn.close(close::GOING_AWAY, "idle timeout");
                    break;
                }
                // A full queue already means the client is behind; skipping a ping is fine.
                let _ = conn.out.try_send(Message::Ping(Default::default()));
            }
            message = incoming.next() => {
                let Some(Ok(message)) = message else {
                    conn.close(close::NORMAL, "");
                    break;
                };
                last_heard = Instant::now();
                if !handle(&conn, &pipeline, &principal, message).await {
                    break;
                }
            }
        }
    }
    conn.closed.cancel();
    drop(registration);
    let _ = writer.await;
}

/// Handles one client message; false when the connection should end.
async fn handle(
    conn: &Arc<Conn>,
    pipeline: &Arc<ChatPipeline>,
    principal: &Principal,
    message: Message,
) -> bool {
    let text = match message {
        Message::Text(t) => t,
        Message::Binary(_) => {
            return conn
                .send_error(
                    None,
                    &Error::InvalidRequest(
                        "binary frames are not supported; send JSON text".into(),
                    ),
                )
                .await;
        }
        Message::Close(_) => {
            conn.close(close::NORMAL, "");
            return false;
        }
        Message::Ping(_) | Message::Pong(_) => return true,
    };
    match frames::parse(text.as_str(), conn.settings.max_message_bytes) {
        Ok(ClientFrame::Chat(request)) => start_chat(conn, pipeline, principal, *request).await,
        Ok(ClientFrame::Cancel { request_id }) => {
            // Cancelling a chat that already ended is not an error: the two may cross on the wire.
            if let Some(token) = conn
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&request_id)
            {
                token.cancel();
            }
            true
        }
        Ok(ClientFrame::Ping { request_id }) => {
            conn.send(frames::pong(request_id.as_deref(), &conn.id))
                .await
        }
        Err(e) => conn.send_error(e.request_id.as_deref(), &e.error).await,
    }
}

async fn start_chat(
    conn: &Arc<Conn>,
    pipeline: &Arc<ChatPipeline>,
    principal: &Principal,
    request: ChatRequest,
) -> bool {
    let request = match request.validate(pipeline.limits(), || uuid::Uuid::new_v4().to_string()) {
        Ok(r) => r,
        Err(e) => return conn.send_error(None, &e).await,
    };
    let request_id = request.id().to_owned();
    let cancel = conn.closed.child_token();
    if let Err(e) = conn.admit(&request_id, &cancel) {
        return conn.send_error(Some(&request_id), &e).await;
    }
    let (conn, pipeline, principal) = (conn.clone(), pipeline.clone(), principal.clone());
    // In the session's span, so each chat joins the upgrade's trace.
    let task = async move {
        chat(&conn, &pipeline, &principal, request, &request_id, &cancel).await;
        conn.finish(&request_id);
    };
    tokio::spawn(task.in_current_span());
    true
}

/// Streams one chat's events to the client until it ends, is cancelled, or the connection closes.
async fn chat(
    conn: &Conn,
    pipeline: &ChatPipeline,
    principal: &Principal,
    request: ChatRequest,
    request_id: &str,
    cancel: &CancellationToken,
) {
    let started = std::time::Instant::now();
    let mut events = tokio::select! {
        () = cancel.cancelled() => return send_cancelled(conn, request_id).await,
        started = pipeline.start(principal, Route::WebSocket, request, started) => match started {
            Ok(events) => events,
            Err(e) => {
                conn.send_error(Some(request_id), &e).await;
                return;
            }
        },
    };
    loop {
        let event = tokio::select! {
            biased;
            () = cancel.cancelled() => {
                // Dropping the stream aborts the upstream call.
                drop(events);
                return send_cancelled(conn, request_id).await;
            }
            event = events.next() => event,
        };
        let Some(event) = event else { return };
        let terminal = event.is_terminal();
        let Ok(text) = serde_json::to_string(&event) else {
            return;
        };
        if !conn.send(text).await || terminal {
            return;
        }
    }
}

async fn send_cancelled(conn: &Conn, request_id: &str) {
    if !conn.closed.is_cancelled() {
        conn.send_error(Some(request_id), &Error::Cancelled).await;
    }
}

/// Moves queued frames to the socket. When the connection ends it sends the close frame, giving a
/// client that stopped reading a moment before the socket is dropped.
async fn write<S: Sink<Message> + Unpin>(
    mut sink: S,
    mut queue: mpsc::Receiver<Message>,
    conn: Arc<Conn>,
) {
    loop {
        tokio::select! {
            biased;
            () = conn.closed.cancelled() => break,
            frame = queue.recv() => {
                let Some(frame) = frame else { break };
                tokio::select! {
                    sent = sink.send(frame) => if sent.is_err() {
                        conn.closed.cancel();
                        break;
                    },
                    () = conn.closed.cancelled() => break,
                }
            }
        }
    }
    let (code, reason) = conn
        .close_reason
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or((close::NORMAL, ""));
    let close = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::test_support::{alice, mock_pipeline};
    use futures::channel::mpsc as fmpsc;

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_pinged_then_closed_after_the_idle_timeout() {
        let (sink, mut sent) = fmpsc::unbounded::<Message>();
        let (_client, incoming) = fmpsc::unbounded::<Result<Message, std::convert::Infallible>>();
        let settings = WsSettings {
            ping_interval_secs: 30,
            idle_timeout_secs: 90,
            ..WsSettings::default()
        };
        let started = Instant::now();
        let connections = LocalConnections::new(Duration::from_secs(1));
        run(
            sink,
            incoming,
            Arc::new(mock_pipeline()),
            alice(),
            settings,
            &connections,
        )
        .await;
        assert_eq!(started.elapsed(), Duration::from_secs(90));
        let mut frames = Vec::new();
        while let Ok(frame) = sent.try_recv() {
            frames.push(frame);
        }
        assert_eq!(
            frames
                .iter()
                .filter(|f| matches!(f, Message::Ping(_)))
                .count(),
            2
        );
        match frames.last() {
            Some(Message::Close(Some(c))) => assert_eq!(c.code, close::GOING_AWAY),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn frames_from_a_channel_drive_a_whole_chat() {
        let (sink, mut sent) = fmpsc::unbounded::<Message>();
        let (client, incoming) = fmpsc::unbounded::<Result<Message, std::convert::Infallible>>();
        let connections = LocalConnections::new(Duration::from_secs(1));
        let registry = connections.clone();
        let session = tokio::spawn(async move {
            run(
                sink,
                incoming,
                Arc::new(mock_pipeline()),
                alice(),
                WsSettings::default(),
                &registry,
            )
            .await;
        });
        let chat = r#"{"action":"chat","request_id":"r1","message":"hello"}"#;
        client
            .unbounded_send(Ok(Message::Text(chat.into())))
            .unwrap();
        let mut kinds = Vec::new();
        while kinds.last() != Some(&"done".to_owned()) {
            if let Some(Message::Text(t)) = sent.next().await {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                assert_eq!(v["request_id"], "r1");
                kinds.push(v["type"].as_str().unwrap().to_owned());
            }
        }
        assert_eq!(kinds.first().map(String::as_str), Some("start"));
        assert_eq!(connections.len(), 1);
        drop(client);
        session.await.unwrap();
        assert!(
            connections.is_empty(),
            "the session unregisters when it ends"
        );
        assert!(matches!(sent.next().await, Some(Message::Close(_))));
    }
}
