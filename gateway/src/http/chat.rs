//! `POST /v1/chat` (one JSON reply) and `POST /v1/chat/stream` (server-sent events): two sinks of
//! the same pipeline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use nagare_authorizer::Principal;

use crate::app::App;
use crate::chat::{CacheMode, ChatReply, ChatRequest, Route, parse_chat_request};
use crate::error::Error;
use crate::http::error::ApiError;
use crate::http::sse::{SseBody, event_stream};
use crate::http::{Arrived, header_id, header_request_id, with_request_id};
use crate::pipeline::ChatStream;

/// `POST /v1/chat`: the whole reply as one JSON object.
pub async fn unary(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
    Extension(Arrived(arrived)): Extension<Arrived>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let chat = start(&app, &principal, Route::Chat, arrived, &headers, body).await;
    let (request_id, stream) = match chat {
        Ok(started) => started,
        Err(e) => return e.into_response(),
    };
    match ChatReply::collect(stream).await {
        Ok(reply) => with_request_id(Json(reply).into_response(), &request_id),
        Err(body) => ApiError::from_body(body, request_id).into_response(),
    }
}

/// `POST /v1/chat/stream`: `text/event-stream`, one SSE event per [`ChatEvent`], `event:` = its type.
/// Failures before the model starts are plain JSON errors with their HTTP status.
pub async fn stream(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
    Extension(Arrived(arrived)): Extension<Arrived>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = start(&app, &principal, Route::ChatStream, arrived, &headers, body).await;
    let (request_id, events) = match started {
        Ok(started) => started,
        Err(e) => return e.into_response(),
    };
    let body = Body::new(SseBody::new(events, Duration::from_secs(15)));
    event_stream(body, &request_id)
}

/// Reads the body, has the pipeline admit it and starts the chat; returns the request id and
/// the events.
async fn start(
    app: &App,
    principal: &Principal,
    route: Route,
    started: Instant,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(String, ChatStream), ApiError> {
    let request = read_request(app, headers, body);
    begin(app, principal, route, started, headers, request).await
}

/// Has the pipeline admit a request a route has read (or failed to) and starts the chat; returns
/// the request id and the events. The `x-request-id` header names a request that has none.
pub(super) async fn begin(
    app: &App,
    principal: &Principal,
    route: Route,
    started: Instant,
    headers: &HeaderMap,
    request: Result<ChatRequest, Error>,
) -> Result<(String, ChatStream), ApiError> {
    let header_id = header_request_id(headers);
    let reject = |e: Error, request_id: Option<&str>| {
        tracing::debug!(code = e.code().as_str(), error = %e, "rejected chat request");
        let request_id = request_id
            .map(str::to_owned)
            .or_else(|| header_id.clone())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        ApiError::new(&e, request_id)
    };
    let mut request = request.map_err(|e| reject(e, None))?;
    if request.request_id.is_none() {
        request.request_id.clone_from(&header_id);
    }
    let chat = app
        .pipeline
        .admit(request, principal, route, started)
        .map_err(|e| reject(e, None))?;
    let request_id = chat.request_id().to_owned();
    match app.pipeline.start(chat).await {
        Ok(events) => Ok((request_id, events)),
        Err(e) => Err(reject(e, Some(&request_id))),
    }
}

/// The body's bytes, once its content type is JSON's and it fits the limit.
pub(super) fn read_body(
    app: &App,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, Error> {
    check_content_type(headers)?;
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge {
                limit: app.body_limit,
            }
        } else {
            Error::InvalidRequest(format!("could not read the body: {rejection}"))
        }
    })
}

/// The body as a chat request, with the `Idempotency-Key` and `Cache-Control` headers applied.
fn read_request(
    app: &App,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<ChatRequest, Error> {
    let body = read_body(app, headers, body)?;
    let key = idempotency_key(headers)?;
    let mut request = parse_chat_request(&body)?;
    match (&request.request_id, key) {
        (Some(id), Some(key)) if *id != key => {
            return Err(Error::InvalidRequest(
                "Idempotency-Key and request_id differ; send one, or the same value".into(),
            ));
        }
        (None, Some(key)) => request.request_id = Some(key),
        _ => {}
    }
    if request.cache == CacheMode::Default {
        request.cache = cache_control(headers);
    }
    Ok(request)
}

/// `Cache-Control: no-store` means no cache at all (bypass); `no-cache` means do not serve a
/// stored answer, but store the fresh one (refresh). The body's `cache` field wins over both.
pub(super) fn cache_control(headers: &HeaderMap) -> CacheMode {
    let directives: Vec<String> = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .collect();
    if directives.iter().any(|d| d == "no-store") {
        CacheMode::Bypass
    } else if directives.iter().any(|d| d == "no-cache") {
        CacheMode::Refresh
    } else {
        CacheMode::Default
    }
}

/// The `Idempotency-Key` header, which stands for the body's `request_id`: a retried chat in a
/// conversation gets its stored answer instead of a second exchange.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Error> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    header_id(value).map(Some).ok_or_else(|| {
        Error::InvalidRequest("Idempotency-Key: must be 1 to 128 visible ASCII characters".into())
    })
}

/// Accepts JSON, no content type at all, or curl's default `application/x-www-form-urlencoded`
/// (`curl -d '{...}'` sends JSON with it; the body must still be JSON). Anything else is a client
/// mistake worth naming. Accepting a form type opens no cross-site hole: every route needs a
/// bearer token in a header, which a cross-site form cannot send.
pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<(), Error> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let mime = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    let mime_lower = mime.to_ascii_lowercase();
    let json = mime_lower == "application/json"
        || mime_lower.ends_with("+json")
        || mime_lower == "application/x-www-form-urlencoded";
    if json {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "content-type must be application/json, not '{mime}'"
        )))
    }
}
