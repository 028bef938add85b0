//! The axum HTTP server: REST and SSE chat, health and readiness.

mod auth;
mod chat;
mod conversations;
mod error;
mod observe;
mod tasks;

pub use observe::Arrived;
#[cfg(test)]
mod tests;
mod ws;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use nagare_authorizer::Verifier;
use serde_json::json;
use tokio::net::TcpListener;

use crate::chat::ChatPipeline;
use crate::error::Error;
use crate::push::LocalConnections;
use crate::store::ConversationStore;
use crate::tasks::Tasks;
use crate::telemetry::Metrics;
use crate::ws::WsSettings;
use prometheus_client::registry::Registry;

pub use error::ApiError;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pipeline: Arc<ChatPipeline>,
    pub verifier: Arc<Verifier>,
    /// The scope a token needs for the chat routes.
    pub chat_scope: Arc<str>,
    pub body_limit: usize,
    /// False once shutdown has begun, so load balancers stop sending new work.
    pub ready: Arc<AtomicBool>,
    pub ws: WsSettings,
    /// Request counts and the WebSocket gauge; `None` when metrics are off.
    pub metrics: Option<Metrics>,
    /// What `GET /metrics` encodes.
    pub registry: Option<Arc<Registry>>,
    /// `/v1/tasks`; `None` when tasks are off. Behind an `Arc`: the state is cloned per request.
    pub tasks: Option<Arc<Tasks>>,
    /// The open `/v1/ws` sockets, by connection id, for tasks that deliver to them.
    pub connections: Arc<LocalConnections>,
}

impl AppState {
    pub fn new(
        pipeline: Arc<ChatPipeline>,
        verifier: Arc<Verifier>,
        chat_scope: impl Into<String>,
        body_limit: usize,
    ) -> Self {
        Self {
            pipeline,
            verifier,
            chat_scope: Arc::from(chat_scope.into()),
            body_limit,
            ready: Arc::new(AtomicBool::new(true)),
            ws: WsSettings::default(),
            metrics: None,
            registry: None,
            tasks: None,
            connections: LocalConnections::new(Duration::from_millis(
                WsSettings::default().slow_consumer_timeout_ms,
            )),
        }
    }

    /// The conversation store, or `not_found` when memory is off.
    pub fn conversations(&self) -> Result<&dyn ConversationStore, Error> {
        self.pipeline
            .conversations()
            .map(|s| s.as_ref())
            .ok_or_else(|| {
                Error::NotFound("conversation memory is not enabled on this server".into())
            })
    }

    /// Counts requests into `metrics` and serves them, with the pipeline's, on `GET /metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.registry = Some(Arc::new(metrics.registry(self.pipeline.clone())));
        self.metrics = Some(metrics);
        self
    }

    /// Serves `/v1/tasks` from `tasks`.
    pub fn with_tasks(mut self, tasks: Tasks) -> Self {
        self.tasks = Some(Arc::new(tasks));
        self
    }

    /// Replaces the WebSocket settings (and the socket registry, which waits on a full queue as
    /// long as a session does).
    pub fn with_ws(mut self, ws: WsSettings) -> Self {
        self.connections =
            LocalConnections::new(Duration::from_millis(ws.slow_consumer_timeout_ms));
        self.ws = ws;
        self
    }
}

/// The client's `x-request-id`, when it is a sane id (1 to 128 visible ASCII characters).
pub(crate) fn header_request_id(headers: &HeaderMap) -> Option<String> {
    headers.get("x-request-id").and_then(header_id)
}

/// A header value usable as an id: 1 to 128 visible ASCII characters.
pub(crate) fn header_id(value: &HeaderValue) -> Option<String> {
    value
        .to_str()
        .ok()
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
}

/// Echoes the request id to the client in `x-request-id`.
pub(crate) fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// All routes.
pub fn router(state: AppState) -> Router {
    let body_limit = state.body_limit;
    Router::new()
        .route("/v1/chat", post(chat::unary))
        .route("/v1/chat/stream", post(chat::stream))
        .route("/v1/ws", get(ws::upgrade))
        .route("/v1/tasks", post(tasks::submit))
        .route("/v1/tasks/{id}", get(tasks::get))
        .route("/v1/conversations", get(conversations::list))
        .route(
            "/v1/conversations/{id}",
            get(conversations::get).delete(conversations::delete),
        )
        .layer(DefaultBodyLimit::max(body_limit))
        // Authentication runs before the body is read: strangers cannot make us parse JSON.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_chat_scope,
        ))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(observe::metrics))
        .fallback(not_found)
        // Given only the metrics: this runs on every request, and the whole state is more to clone.
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            observe::observe,
        ))
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready until shutdown begins. The body names the provider and every model circuit that has
/// seen a call (`closed`, `open`, `half_open`); an open circuit does not make the server unready,
/// since fallbacks and probes still serve.
async fn readyz(State(state): State<AppState>) -> Response {
    let provider = state.pipeline.provider_name();
    let circuits: serde_json::Map<String, serde_json::Value> = state
        .pipeline
        .circuits()
        .into_iter()
        .map(|(model, c)| (model, c.as_str().into()))
        .collect();
    if state.ready.load(Ordering::Relaxed) {
        let body = json!({ "status": "ready", "provider": provider, "circuits": circuits });
        Json(body).into_response()
    } else {
        let body = json!({ "status": "shutting_down", "provider": provider, "circuits": circuits });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        &Error::NotFound("no such route".into()),
        uuid::Uuid::new_v4().to_string(),
    )
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests and streams
/// finish for at most `grace` before returning.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (began_tx, began_rx) = tokio::sync::oneshot::channel::<()>();
    // Streams are many small writes; without TCP_NODELAY, Nagle's algorithm holds each one back
    // until the client's delayed ACK (40 ms on Linux) arrives.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = began_tx.send(());
    });
    let server = std::future::IntoFuture::into_future(server);
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        _ = began_rx => {}
    }
    tracing::info!(
        grace_secs = grace.as_secs_f64(),
        "shutting down; letting in-flight requests finish"
    );
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!("shutdown grace period over; closing the remaining connections");
            Ok(())
        }
    }
}
