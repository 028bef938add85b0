//! The Anthropic Messages dialect, a transport of the one pipeline: `POST /v1/messages` (one
//! `message`, or its events as `event:`/`data:` lines) and `POST /v1/messages/count_tokens`
//! (the gateway's estimate). The request is read into a [`crate::chat::ChatRequest`] (the
//! stateless form, [`request`]) and the pipeline's events are written back as Anthropic's
//! ([`reply`]); errors take Anthropic's shape. The token comes as `x-api-key` or a bearer.

mod blocks;
mod reply;
mod request;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use nagare_authorizer::Principal;
use serde_json::json;

use crate::app::App;
use crate::chat::Route;
use crate::error::Error;
use crate::http::chat::read_body;
use crate::http::dialect::Dialect;
use crate::http::{Arrived, with_request_id};
use crate::pipeline::estimate_request_tokens;
use reply::{Events, message};
use request::MessagesRequest;

fn read(
    app: &App,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<MessagesRequest, Error> {
    let bytes = read_body(app, headers, body)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::InvalidRequest(format!("the body is not a messages request: {e}")))
}

/// `POST /v1/messages`.
pub async fn messages(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
    Extension(Arrived(arrived)): Extension<Arrived>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (stream, request) = match read(&app, &headers, body) {
        Ok(r) => (r.stream, r.into_request()),
        Err(e) => (false, Err(e)),
    };
    let route = Route::Messages;
    let started = Dialect::begin(&app, &principal, route, arrived, &headers, request).await;
    let whole = |request_id: &str, reply| message(&format!("msg_{request_id}"), reply);
    let writer = |request_id: &str| {
        let mut events = Events::new(format!("msg_{request_id}"));
        move |event| events.lines(event)
    };
    Dialect::Anthropic
        .answer(started, stream, whole, writer)
        .await
}

/// `POST /v1/messages/count_tokens`: the gateway's estimate of the prompt's tokens (about three
/// bytes to a token, erring high), not the model's tokenizer; the `nagare-token-count: estimate`
/// header says so.
pub async fn count_tokens(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let counted = read(&app, &headers, body).and_then(MessagesRequest::into_request);
    match counted {
        Ok(request) => {
            let tokens = estimate_request_tokens(&request);
            let mut response = Json(json!({"input_tokens": tokens})).into_response();
            response
                .headers_mut()
                .insert("nagare-token-count", HeaderValue::from_static("estimate"));
            with_request_id(response, &request_id)
        }
        Err(e) => Dialect::Anthropic.error_response(&e.body(), &request_id),
    }
}
