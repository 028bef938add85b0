//! The axum HTTP server: REST and SSE chat, health and readiness.

mod anthropic;
mod auth;
mod chat;
mod conversations;
mod dialect;
mod error;
mod knowledge;
mod observe;
mod openai;
mod sse;
mod tasks;
mod uploads;
mod web;

pub use observe::Arrived;
#[cfg(test)]
mod tests;
mod ws;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::{App, Unready};
use crate::error::Error;
use crate::tcp::{self, ConnectionCap, Timeouts};

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
    let knowledge_limit = app
        .knowledge
        .as_ref()
        .map_or(body_limit, |kb| kb.max_document_bytes);
    Router::new()
        .route("/v1/chat", post(chat::unary))
        .route("/v1/chat/stream", post(chat::stream))
        .route("/v1/chat/completions", post(openai::completions))
        .route("/v1/models", get(openai::models))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1/ws", get(ws::upgrade))
        .route("/v1/tasks", post(tasks::submit))
        .route("/v1/tasks/{id}", get(tasks::get))
        .route(
            "/v1/knowledge-bases",
            post(knowledge::create).get(knowledge::list),
        )
        .route("/v1/knowledge-bases/{name}", delete(knowledge::delete))
        .route(
            "/v1/knowledge-bases/{name}/documents",
            get(knowledge::documents),
        )
        .route(
            "/v1/knowledge-bases/{name}/documents/{id}",
            put(knowledge::put_document)
                .delete(knowledge::delete_document)
                // A document's own limit, not a chat's.
                .layer(DefaultBodyLimit::max(knowledge_limit)),
        )
        .route(
            "/v1/knowledge-bases/{name}/retrieve",
            post(knowledge::retrieve),
        )
        .route("/v1/uploads", post(uploads::declare))
        .route("/v1/uploads/{id}", get(uploads::get))
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
        // Signed, like a presigned S3 URL: no bearer token, and the bytes' own limit.
        .route(
            "/v1/uploads/{id}/content",
            put(uploads::put_content).layer(DefaultBodyLimit::max(
                crate::uploads::MAX_DOCUMENT_BYTES as usize,
            )),
        )
        .route("/", get(web::index))
        .route("/config.json", get(web::config))
        .route("/assets/{version}/{*path}", get(web::asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(observe::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
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

/// Ready until shutdown begins or a store fails (a full disk, say; the body says why). The body
/// names the provider and every model circuit that has seen a call (`closed`, `open`,
/// `half_open`); an open circuit does not make the server unready, since fallbacks and probes
/// still serve.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let provider = app.health.provider();
    let circuits: serde_json::Map<String, serde_json::Value> = app
        .health
        .circuit_states()
        .into_iter()
        .map(|(model, c)| (model, c.as_str().into()))
        .collect();
    let body =
        |status: &str| json!({ "status": status, "provider": provider, "circuits": circuits });
    match app.health.unready() {
        None => Json(body("ready")).into_response(),
        Some(Unready::ShuttingDown) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(body("shutting_down"))).into_response()
        }
        Some(Unready::StoreFailing(reason)) => {
            let mut body = body("store_failing");
            body["reason"] = reason.into();
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        &Error::NotFound("no such route".into()),
        uuid::Uuid::new_v4().to_string(),
    )
}

/// A route that exists, asked with a method it does not take. axum adds the `Allow` header.
async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        &Error::MethodNotAllowed(format!("this route does not take {method}")),
        uuid::Uuid::new_v4().to_string(),
    )
}

/// Serves `app` on `listener`, with the cap and timeouts of [`tcp::serve`], until `stop` is
/// cancelled.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    cap: Arc<ConnectionCap>,
    timeouts: Timeouts,
    stop: CancellationToken,
) {
    tcp::serve(listener, tcp::http_builder(), app, cap, timeouts, stop).await;
}
