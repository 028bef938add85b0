//! An API Gateway WebSocket API on loopback, for the Lambda path end to end. It does what the
//! real service does around the functions, with real-shaped events:
//! - `GET /{stage}` accepts a WebSocket: runs the REQUEST authorizer (401/403 before the
//!   upgrade), invokes `$connect` (non-2xx refuses the connection), then routes every frame by
//!   `$request.body.action` (`chat`, `cancel`, `ping`, else `$default`) and invokes the function,
//!   cutting it off after the integration timeout with API Gateway's timeout message; closing
//!   invokes `$disconnect`.
//! - `POST|GET|DELETE /{stage}/@connections/{id}` is the Management API: 410 GoneException for
//!   unknown ids, and LimitExceededException (429) on demand.
//! - `POST /2015-03-31/functions/{name}/invocations` is Lambda's Invoke API, so the function's
//!   real SDK client can hand work to an asynchronous (`Event`) invocation.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequestTypeRequest;
use aws_lambda_events::iam::IamPolicyEffect;
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use nagare_authorizer::lambda::AuthorizerResponse;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::serve::StopOnDrop;

/// The function behind every route: a route event or an async payload in, its result out.
pub type Function = Arc<dyn Fn(Value) -> BoxFuture<'static, Result<Value, String>> + Send + Sync>;
/// The REQUEST authorizer on `$connect`; `Err("Unauthorized")` is a 401.
pub type Authorizer = Arc<
    dyn Fn(
            ApiGatewayCustomAuthorizerRequestTypeRequest,
        ) -> BoxFuture<'static, Result<AuthorizerResponse, String>>
        + Send
        + Sync,
>;

/// What the emulator saw, for tests to assert on.
#[derive(Debug, Default)]
pub struct Counters {
    pub connects: AtomicU64,
    pub disconnects: AtomicU64,
    /// Route invocations for client frames.
    pub messages: AtomicU64,
    /// Successful `PostToConnection` calls.
    pub posts: AtomicU64,
    /// Largest body posted, in bytes.
    pub largest_post: AtomicU64,
    /// Posts answered 410 because the connection was unknown or closed.
    pub gone: AtomicU64,
    /// Posts answered 429 LimitExceeded.
    pub throttled: AtomicU64,
    /// Async (`Event`) invocations through the Invoke API.
    pub async_invokes: AtomicU64,
    /// Route invocations that outlived the integration timeout.
    pub integration_timeouts: AtomicU64,
}

enum Outgoing {
    Text(String),
    Close,
    /// Drop the socket without invoking `$disconnect` (which API Gateway does not guarantee).
    Vanish,
}

struct Inner {
    stage: String,
    domain: String,
    function: OnceLock<Function>,
    authorizer: Authorizer,
    integration_timeout: Duration,
    connections: Mutex<HashMap<String, mpsc::UnboundedSender<Outgoing>>>,
    /// The next this-many posts are answered 429.
    throttle_next: AtomicU64,
    counters: Counters,
    next_id: AtomicU64,
}

/// A running emulator; it stops when dropped.
pub struct ApiGatewayEmulator {
    addr: SocketAddr,
    inner: Arc<Inner>,
    _stop: StopOnDrop,
}

impl ApiGatewayEmulator {
    /// Starts the emulator; the function is attached with [`ApiGatewayEmulator::attach`] once it
    /// is built, since it needs the emulator's URLs.
    pub async fn start(
        stage: &str,
        authorizer: Authorizer,
        integration_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            stage: stage.to_owned(),
            domain: addr.to_string(),
            function: OnceLock::new(),
            authorizer,
            integration_timeout,
            connections: Mutex::new(HashMap::new()),
            throttle_next: AtomicU64::new(0),
            counters: Counters::default(),
            next_id: AtomicU64::new(1),
        });
        let app = Router::new()
            .route("/{stage}", get(upgrade))
            .route(
                "/{stage}/@connections/{id}",
                post(post_to_connection)
                    .get(get_connection)
                    .delete(delete_connection),
            )
            .route("/2015-03-31/functions/{name}/invocations", post(invoke))
            .with_state(inner.clone());
        let (addr, stop) = crate::serve::spawn_on(listener, app)?;
        Ok(Self {
            addr,
            inner,
            _stop: stop,
        })
    }

    pub fn attach(&self, function: Function) {
        let _ = self.inner.function.set(function);
    }

    /// The WebSocket URL clients connect to.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/{}", self.addr, self.inner.stage)
    }

    /// The Management API endpoint, as a template for `lambda.management_endpoint`.
    pub fn management_endpoint(&self) -> String {
        "http://{domain}/{stage}".into()
    }

    /// The Lambda API endpoint (for the function's Invoke client).
    pub fn lambda_endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    pub fn count(&self, counter: impl Fn(&Counters) -> &AtomicU64) -> u64 {
        counter(&self.inner.counters).load(Ordering::Relaxed)
    }

    /// Answers the next `n` posts with 429 LimitExceededException.
    pub fn throttle_next_posts(&self, n: u64) {
        self.inner.throttle_next.store(n, Ordering::Relaxed);
    }

    /// Drops a connection without the `$disconnect` invocation, as a lost one looks.
    pub fn vanish(&self, connection_id: &str) {
        if let Some(tx) = lock(&self.inner.connections).get(connection_id) {
            let _ = tx.send(Outgoing::Vanish);
        }
    }

    /// Connection ids currently open.
    pub fn open_connections(&self) -> Vec<String> {
        lock(&self.inner.connections).keys().cloned().collect()
    }

    /// Waits until `check` holds, up to `limit`.
    pub async fn wait_for(&self, limit: Duration, check: impl Fn(&Self) -> bool) -> bool {
        crate::serve::wait_until(limit, || check(self)).await
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

impl Inner {
    fn function(&self) -> Option<Function> {
        self.function.get().cloned()
    }

    fn new_id(&self) -> String {
        // Real ids look like "L0SM9cOFvHcCIhw=": base64, with '=' that the SDK must escape.
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        base64::engine::general_purpose::STANDARD.encode(format!("conn-{n:05}"))
    }

    /// A route event shaped like API Gateway's Lambda proxy event for WebSocket APIs.
    fn event(
        &self,
        route: &str,
        event_type: &str,
        connection_id: &str,
        authorizer: &Value,
        body: Option<(String, bool)>,
    ) -> Value {
        let now = epoch_ms();
        let mut event = json!({
            "requestContext": {
                "routeKey": route,
                "eventType": event_type,
                "extendedRequestId": format!("ext-{now}"),
                "requestTime": now.to_string(),
                "messageDirection": "IN",
                "stage": self.stage,
                "connectedAt": now,
                "requestTimeEpoch": now,
                "identity": { "sourceIp": "127.0.0.1" },
                "requestId": format!("req-{}", self.next_id.fetch_add(1, Ordering::Relaxed)),
                "domainName": self.domain,
                "connectionId": connection_id,
                "apiId": "emulator",
                "authorizer": authorizer,
            },
            "isBase64Encoded": false,
        });
        if let Some((body, base64)) = body {
            event["body"] = Value::String(body);
            event["isBase64Encoded"] = Value::Bool(base64);
        }
        if event_type == "MESSAGE" {
            event["requestContext"]["messageId"] = Value::String(format!("msg-{now}"));
        }
        event
    }
}

async fn upgrade(
    State(inner): State<Arc<Inner>>,
    Path(stage): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if stage != inner.stage {
        return StatusCode::FORBIDDEN.into_response();
    }
    let Some(function) = inner.function() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    // The authorizer event, as API Gateway builds it for a REQUEST authorizer on $connect.
    let auth_event = json!({
        "type": "REQUEST",
        "methodArn": format!("arn:aws:execute-api:us-east-1:123456789012:emulator/{stage}/$connect"),
        "headers": headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), Value::String(v.to_str().ok()?.to_owned()))))
            .collect::<serde_json::Map<_, _>>(),
        "queryStringParameters": query,
        "requestContext": { "routeKey": "$connect", "eventType": "CONNECT", "stage": stage },
    });
    let Ok(auth_event) = serde_json::from_value(auth_event) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let policy = match (inner.authorizer)(auth_event).await {
        Ok(policy) => policy,
        Err(e) if e == "Unauthorized" => return StatusCode::UNAUTHORIZED.into_response(),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let allowed = policy
        .policy_document
        .statement
        .iter()
        .all(|s| s.effect == IamPolicyEffect::Allow);
    if !allowed {
        return StatusCode::FORBIDDEN.into_response();
    }
    let mut authorizer = serde_json::to_value(&policy.context).unwrap_or_default();
    authorizer["principalId"] = Value::from(policy.principal_id.clone().unwrap_or_default());

    let connection_id = inner.new_id();
    let connect = inner.event("$connect", "CONNECT", &connection_id, &authorizer, None);
    let status = function(connect)
        .await
        .ok()
        .and_then(|r| r["statusCode"].as_u64())
        .unwrap_or(500);
    if !(200..300).contains(&status) {
        return StatusCode::from_u16(u16::try_from(status).unwrap_or(500))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response();
    }
    inner.counters.connects.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::unbounded_channel();
    lock(&inner.connections).insert(connection_id.clone(), tx);
    ws.on_upgrade(move |socket| connection(socket, inner, function, connection_id, authorizer, rx))
}

async fn connection(
    socket: WebSocket,
    inner: Arc<Inner>,
    function: Function,
    connection_id: String,
    authorizer: Value,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
) {
    let (mut sink, mut incoming) = socket.split();
    loop {
        tokio::select! {
            out = outgoing.recv() => match out {
                Some(Outgoing::Text(text)) => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(Outgoing::Close) | None => {
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
                Some(Outgoing::Vanish) => {
                    lock(&inner.connections).remove(&connection_id);
                    return;
                }
            },
            message = incoming.next() => {
                let body = match message {
                    Some(Ok(Message::Text(t))) => (t.as_str().to_owned(), false),
                    Some(Ok(Message::Binary(b))) => {
                        (base64::engine::general_purpose::STANDARD.encode(&b), true)
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                };
                let route = route_key(&body);
                let event = inner.event(&route, "MESSAGE", &connection_id, &authorizer, Some(body));
                inner.counters.messages.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(invoke_route(inner.clone(), function.clone(), connection_id.clone(), event));
            }
        }
    }
    lock(&inner.connections).remove(&connection_id);
    let disconnect = inner.event(
        "$disconnect",
        "DISCONNECT",
        &connection_id,
        &authorizer,
        None,
    );
    let _ = function(disconnect).await;
    inner.counters.disconnects.fetch_add(1, Ordering::Relaxed);
}

/// `$request.body.action`, when it names a route; else `$default`.
fn route_key((body, base64): &(String, bool)) -> String {
    if *base64 {
        return "$default".into();
    }
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("action").and_then(Value::as_str).map(str::to_owned))
        .filter(|a| ["chat", "cancel", "ping"].contains(&a.as_str()))
        .unwrap_or_else(|| "$default".into())
}

/// A route invocation, cut off after the integration timeout as API Gateway does: the client
/// gets the timeout message (the function itself keeps running).
async fn invoke_route(inner: Arc<Inner>, function: Function, connection_id: String, event: Value) {
    let request_id = event["requestContext"]["requestId"].clone();
    if tokio::time::timeout(inner.integration_timeout, function(event))
        .await
        .is_err()
    {
        inner
            .counters
            .integration_timeouts
            .fetch_add(1, Ordering::Relaxed);
        let message = json!({
            "message": "Endpoint request timed out",
            "connectionId": connection_id,
            "requestId": request_id,
        });
        if let Some(tx) = lock(&inner.connections).get(&connection_id) {
            let _ = tx.send(Outgoing::Text(message.to_string()));
        }
    }
}

fn aws_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        [
            ("x-amzn-errortype", kind),
            ("content-type", "application/json"),
        ],
        json!({ "message": message }).to_string(),
    )
        .into_response()
}

fn gone() -> Response {
    aws_error(StatusCode::GONE, "GoneException", "the connection is gone")
}

async fn post_to_connection(
    State(inner): State<Arc<Inner>>,
    Path((stage, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let throttle = inner
        .throttle_next
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    if throttle.is_ok() {
        inner.counters.throttled.fetch_add(1, Ordering::Relaxed);
        return aws_error(
            StatusCode::TOO_MANY_REQUESTS,
            "LimitExceededException",
            "slow down",
        );
    }
    if body.len() > 128 * 1024 {
        return aws_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLargeException",
            "too large",
        );
    }
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return aws_error(StatusCode::BAD_REQUEST, "BadRequestException", "not UTF-8");
    };
    // Counted before the frame is handed over, so a test that has read the frame sees the count.
    let len = body.len() as u64;
    let sent = stage == inner.stage
        && lock(&inner.connections).get(&id).is_some_and(|tx| {
            inner.counters.posts.fetch_add(1, Ordering::Relaxed);
            inner
                .counters
                .largest_post
                .fetch_max(len, Ordering::Relaxed);
            let sent = tx.send(Outgoing::Text(text)).is_ok();
            if !sent {
                inner.counters.posts.fetch_sub(1, Ordering::Relaxed);
            }
            sent
        });
    if !sent {
        inner.counters.gone.fetch_add(1, Ordering::Relaxed);
        return gone();
    }
    StatusCode::OK.into_response()
}

async fn get_connection(
    State(inner): State<Arc<Inner>>,
    Path((_stage, id)): Path<(String, String)>,
) -> Response {
    if !lock(&inner.connections).contains_key(&id) {
        return gone();
    }
    let now = "2026-01-01T00:00:00Z";
    axum::Json(json!({
        "connectedAt": now,
        "lastActiveAt": now,
        "identity": { "sourceIp": "127.0.0.1", "userAgent": "emulator" },
    }))
    .into_response()
}

async fn delete_connection(
    State(inner): State<Arc<Inner>>,
    Path((_stage, id)): Path<(String, String)>,
) -> Response {
    match lock(&inner.connections).get(&id) {
        Some(tx) => {
            let _ = tx.send(Outgoing::Close);
            StatusCode::NO_CONTENT.into_response()
        }
        None => gone(),
    }
}

async fn invoke(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(function) = inner.function() else {
        return aws_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            "no function",
        );
    };
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return aws_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            "bad JSON",
        );
    };
    let kind = headers
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("RequestResponse");
    if kind == "Event" {
        inner.counters.async_invokes.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(function(payload));
        return StatusCode::ACCEPTED.into_response();
    }
    match function(payload).await {
        Ok(result) => axum::Json(result).into_response(),
        Err(e) => (
            StatusCode::OK,
            [("x-amz-function-error", "Unhandled")],
            json!({ "errorMessage": e }).to_string(),
        )
            .into_response(),
    }
}
