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
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde_json::json;
use tokio::net::TcpListener;

use crate::app::App;
use crate::error::Error;

pub use error::ApiError;

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
pub fn router(app: Arc<App>) -> Router {
    let body_limit = app.body_limit;
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
            app.clone(),
            auth::require_chat_scope,
        ))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(observe::metrics))
        .fallback(not_found)
        // Given only the metrics: this runs on every request, and the whole state is more to clone.
        .layer(middleware::from_fn_with_state(
            app.metrics.clone(),
            observe::observe,
        ))
        .with_state(app)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready until shutdown begins. The body names the provider and every model circuit that has
/// seen a call (`closed`, `open`, `half_open`); an open circuit does not make the server unready,
/// since fallbacks and probes still serve.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let provider = app.health.provider();
    let circuits: serde_json::Map<String, serde_json::Value> = app
        .health
        .circuit_states()
        .into_iter()
        .map(|(model, c)| (model, c.as_str().into()))
        .collect();
    if app.health.is_ready() {
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
