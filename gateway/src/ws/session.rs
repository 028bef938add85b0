//! One WebSocket connection on `nagare serve`: many concurrent chats interleaved by `request_id`,
//! cancel frames, keepalive, an idle timeout, and bounded outbound buffering. Generic over
//! `Sink`/`Stream` so unit tests drive it with channels.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes};
use futures::{Sink, Stream, StreamExt};
use nagare_authorizer::{Principal, Verifier};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::chat::{ChatRequest, Route};
use crate::error::Error;
use crate::lifecycle::Lifecycle;
use crate::pipeline::{Admitted, ChatPipeline};
use crate::store::unix_now;
use crate::ws::LocalConnections;
use crate::ws::close::{self, read_failure};
use crate::ws::frames::{self, ClientFrame};
use crate::ws::writer::{Streaming, write};

/// `[websocket]` settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WsSettings {
    /// Chats in flight on one connection; more get `rate_limited`.
    pub max_inflight: usize,
    /// Largest client message; larger ones get `payload_too_large` (API Gateway's limit is 128 KiB).
    pub max_message_bytes: usize,
    /// Frames queued for a client before senders wait.
    pub outbound_frames: usize,
    /// How long the socket may refuse a frame, or a sender wait for room in the queue, before
    /// the client is closed with 1013.
    pub slow_consumer_timeout_ms: u64,
    pub ping_interval_secs: u64,
    /// A connection with no message from the client for this long is closed (API Gateway: 10 min).
    pub idle_timeout_secs: u64,
    /// Open sockets of one principal (issuer, tenant and subject) on this process; one more is
    /// refused at the upgrade with 429.
    pub max_per_principal: usize,
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
            max_per_principal: 16,
        }
    }
}

impl WsSettings {
    /// Checks the values a session cannot run with; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_inflight == 0 || self.outbound_frames == 0 || self.max_per_principal == 0 {
            return Err(
                "websocket: max_inflight, outbound_frames and max_per_principal must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}

/// What the session's writer sends, in the order queued: a frame, or a chat whose events it
/// streams from then on. Both are boxed to keep the queue's slots small: tokio allocates them 32
/// at a time for every connection, idle or not, and the hot path (deltas) does not queue.
pub enum Outbound {
    Frame(Box<Message>),
    Chat(Box<Streaming>),
}

impl Outbound {
    /// A text frame: an event, a `pong`, an error, a task's result.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Self::Frame(Box::new(Message::Text(text.into())))
    }
}

/// What every task of one connection shares.
pub(super) struct Conn {
    /// The id a task names to deliver here; the client reads it in `pong`.
    id: Arc<str>,
    out: mpsc::Sender<Outbound>,
    /// Cancelled when the connection ends for any reason.
    pub(super) closed: CancellationToken,
    pub(super) close_reason: Mutex<Option<(u16, &'static str)>>,
    /// Chats in flight by request id, with the sender that cancels each; taken once used.
    inflight: Mutex<HashMap<String, Option<oneshot::Sender<()>>>>,
    pub(super) settings: WsSettings,
    /// When the connection's token expires, Unix seconds (0: never); an `auth` frame moves it.
    expires_at: AtomicU64,
}

impl Conn {
    /// Ends the connection; the first reason given is the one the client sees.
    fn close(&self, code: u16, reason: &'static str) {
        let mut slot = self.close_reason.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert((code, reason));
        self.closed.cancel();
    }

    /// Queues `item` for the writer; false if the connection is over. A client that leaves the
    /// queue full for longer than the slow-consumer timeout is closed, so memory per connection
    /// stays bounded.
    async fn queue(&self, item: Outbound) -> bool {
        if self.closed.is_cancelled() {
            return false;
        }
        // Usually there is room, and no timer is needed.
        let item = match self.out.try_send(item) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(item)) => item,
        };
        let wait = Duration::from_millis(self.settings.slow_consumer_timeout_ms);
        match tokio::time::timeout(wait, self.out.send(item)).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                self.too_slow();
                false
            }
        }
    }

    async fn send(&self, text: String) -> bool {
        self.queue(Outbound::text(text)).await
    }

    async fn send_error(&self, request_id: Option<&str>, error: &Error) -> bool {
        self.send(frames::error(request_id, error)).await
    }

    pub(super) fn too_slow(&self) {
        tracing::info!("websocket client too slow; closing");
        self.close(close::TRY_AGAIN_LATER, "client too slow");
    }

    fn inflight(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<oneshot::Sender<()>>>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a chat, unless its id is already in flight or the connection is at its limit.
    /// The receiver resolves when the client cancels the chat or the connection ends.
    fn admit(&self, request_id: &str) -> Result<oneshot::Receiver<()>, Error> {
        let mut inflight = self.inflight();
        if inflight.contains_key(request_id) {
            return Err(frames::duplicate_chat(request_id));
        }
        if inflight.len() >= self.settings.max_inflight {
            return Err(frames::too_many_chats(self.settings.max_inflight));
        }
        let (cancel, cancelled) = oneshot::channel();
        inflight.insert(request_id.to_owned(), Some(cancel));
        Ok(cancelled)
    }

    /// Cancelling a chat that already ended is not an error: the two may cross on the wire.
    fn cancel(&self, request_id: &str) {
        if let Some(cancel) = self.inflight().get_mut(request_id).and_then(Option::take) {
            let _ = cancel.send(());
        }
    }

    pub(super) fn finish(&self, request_id: &str) {
        self.inflight().remove(request_id);
    }
}

/// How often a draining session looks whether its last chat has ended.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// What a session needs of the server around it.
pub struct Server<'a> {
    /// This process's sockets, where the session registers for task deliveries.
    pub connections: &'a Arc<LocalConnections>,
    pub lifecycle: &'a Lifecycle,
    /// Verifies the tokens of `auth` frames, which must grant this scope; `None` refuses them.
    pub reauth: Option<(&'a Verifier, &'a str)>,
}

/// Runs one connection until the client leaves, the connection idles out, it is closed for
/// being too slow, or the server drains and its last chat has ended (close 1001). Every chat
/// still in flight is cancelled, which aborts its upstream stream.
pub async fn run<S, R, E>(
    sink: S,
    mut incoming: R,
    pipeline: Arc<ChatPipeline>,
    principal: Principal,
    settings: WsSettings,
    server: Server<'_>,
) where
    S: Sink<Message> + Unpin + Send + 'static,
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: std::error::Error + 'static,
{
    let (out, out_rx) = mpsc::channel(settings.outbound_frames.max(1));
    // Registered while the session runs, so tasks can deliver into the same bounded queue.
    let registration = server.connections.register(&principal, out.clone());
    let conn = Arc::new(Conn {
        id: registration.id().clone(),
        out,
        closed: CancellationToken::new(),
        close_reason: Mutex::new(None),
        inflight: Mutex::new(HashMap::new()),
        settings: settings.clone(),
        expires_at: AtomicU64::new(principal.expires_at),
    });
    let writer = tokio::spawn(write(sink, out_rx, conn.clone()));
    let idle_timeout = Duration::from_secs(settings.idle_timeout_secs);
    let mut ping = tokio::time::interval(Duration::from_secs(settings.ping_interval_secs.max(1)));
    ping.tick().await;
    let mut last_heard = Instant::now();
    let mut drain_poll: Option<tokio::time::Interval> = None;
    loop {
        tokio::select! {
            () = conn.closed.cancelled() => break,
            () = token_expiry(&conn) => {
                conn.close(close::TOKEN_EXPIRED, "token expired");
                break;
            }
            () = server.lifecycle.draining(), if drain_poll.is_none() => {
                drain_poll = Some(tokio::time::interval(DRAIN_POLL));
            }
            Some(_) = async { Some(drain_poll.as_mut()?.tick().await) }, if drain_poll.is_some() => {
                if conn.inflight().is_empty() {
                    conn.close(close::GOING_AWAY, "server shutting down");
                    break;
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() >= idle_timeout {
                    conn.close(close::GOING_AWAY, "idle timeout");
                    break;
                }
                // A full queue already means the client is behind; skipping a ping is fine.
                let _ = conn.out.try_send(Outbound::Frame(Box::new(Message::Ping(Default::default()))));
            }
            message = incoming.next() => {
                let message = match message {
                    Some(Ok(message)) => message,
                    Some(Err(e)) => {
                        let (code, reason) = read_failure(&e);
                        conn.close(code, reason);
                        break;
                    }
                    None => {
                        conn.close(close::NORMAL, "");
                        break;
                    }
                };
                last_heard = Instant::now();
                if !handle(&conn, &pipeline, &principal, &server, message).await {
                    break;
                }
            }
        }
    }
    conn.closed.cancel();
    // Chats still starting see their cancel sender dropped and stop.
    conn.inflight().clear();
    drop(registration);
    let _ = writer.await;
}

/// Resolves when the connection's token expires (never, for a principal without expiry).
async fn token_expiry(conn: &Conn) {
    let expires_at = conn.expires_at.load(Ordering::Relaxed);
    if expires_at == 0 {
        return std::future::pending().await;
    }
    let left = expires_at.saturating_sub(unix_now());
    tokio::time::sleep(Duration::from_secs(left)).await;
}

/// An `auth` frame: a fresh token for the same principal moves the connection's expiry.
/// Anything else is an error frame, and the old expiry stands.
async fn reauthenticate(
    conn: &Conn,
    principal: &Principal,
    server: &Server<'_>,
    request_id: Option<&str>,
    token: &str,
) -> bool {
    let Some((verifier, scope)) = server.reauth else {
        let e = Error::InvalidRequest("action: auth is not enabled on this server".into());
        return conn.send_error(request_id, &e).await;
    };
    match verifier.verify_for(token, scope).await {
        Ok(p) if p.sub == principal.sub && p.tenant == principal.tenant => {
            conn.expires_at.store(p.expires_at, Ordering::Relaxed);
            conn.send(frames::authed(request_id, p.expires_at)).await
        }
        Ok(_) => {
            let e = Error::Forbidden(
                "the token is for another principal than the one this connection opened with"
                    .into(),
            );
            conn.send_error(request_id, &e).await
        }
        Err(e) => conn.send_error(request_id, &Error::from(&e)).await,
    }
}

/// Handles one client message; false when the connection should end.
async fn handle(
    conn: &Arc<Conn>,
    pipeline: &Arc<ChatPipeline>,
    principal: &Principal,
    server: &Server<'_>,
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
            conn.cancel(&request_id);
            true
        }
        Ok(ClientFrame::Ping { request_id }) => {
            conn.send(frames::pong(request_id.as_deref(), &conn.id))
                .await
        }
        Ok(ClientFrame::Auth { request_id, token }) => {
            reauthenticate(conn, principal, server, request_id.as_deref(), &token).await
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
    let started = std::time::Instant::now();
    let chat = match pipeline.admit(request, principal, Route::WebSocket, started) {
        Ok(chat) => chat,
        Err(e) => return conn.send_error(None, &e).await,
    };
    let request_id = chat.request_id().to_owned();
    let cancelled = match conn.admit(&request_id) {
        Ok(cancelled) => cancelled,
        Err(e) => return conn.send_error(Some(&request_id), &e).await,
    };
    let (conn, pipeline) = (conn.clone(), pipeline.clone());
    // In the session's span, so each chat joins the upgrade's trace.
    let task = async move {
        begin(&conn, &pipeline, chat, request_id, cancelled).await;
    };
    tokio::spawn(task.in_current_span());
    true
}

/// Starts one chat (limits, history, the model call) and hands its events to the writer. This
/// part runs in a task of its own, so a chat that is slow to start holds up no other.
async fn begin(
    conn: &Arc<Conn>,
    pipeline: &ChatPipeline,
    chat: Admitted,
    request_id: String,
    mut cancelled: oneshot::Receiver<()>,
) {
    let begun = tokio::select! {
        _ = &mut cancelled => None,
        begun = pipeline.start(chat) => Some(begun),
    };
    let events = match begun {
        Some(Ok(events)) => events,
        failed => {
            conn.finish(&request_id);
            // Nothing is sent once the connection is closed.
            let error = match failed {
                Some(Err(e)) => e,
                _ => Error::Cancelled,
            };
            conn.send_error(Some(&request_id), &error).await;
            return;
        }
    };
    let chat = Streaming::new(request_id.into(), events, cancelled);
    // If the connection is over, the chat is dropped here, which aborts its upstream call.
    conn.queue(Outbound::Chat(Box::new(chat))).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::test_support::{alice, mock_pipeline};
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
            Server {
                connections: &connections,
                lifecycle: &Lifecycle::default(),
                reauth: None,
            },
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
                Server {
                    connections: &registry,
                    lifecycle: &Lifecycle::default(),
                    reauth: None,
                },
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
