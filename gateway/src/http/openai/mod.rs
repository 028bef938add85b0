//! The OpenAI dialect, a transport of the one pipeline: `POST /v1/chat/completions` (one
//! `chat.completion`, or `chat.completion.chunk`s as `data:` lines ending with `data: [DONE]`),
//! `GET /v1/models` and `POST /v1/embeddings` ([`embeddings`]). A completion request is read
//! into a [`crate::chat::ChatRequest`] (the stateless form: the client sends the conversation,
//! [`request`]) and the pipeline's events are written back as OpenAI's objects ([`reply`]);
//! errors take OpenAI's shape.

mod embeddings;
mod messages;
mod reply;
mod request;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use nagare_authorizer::Principal;
use serde_json::{Value, json};

use crate::app::App;
use crate::chat::Route;
use crate::error::Error;
use crate::http::Arrived;
use crate::http::chat::read_body;
use crate::http::dialect::{Dialect, unix_seconds};
use reply::{Chunks, completion};
use request::Completion;

pub use embeddings::embeddings;

/// `POST /v1/chat/completions`.
pub async fn completions(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
    Extension(Arrived(arrived)): Extension<Arrived>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let read = read_body(&app, &headers, body).and_then(|bytes| {
        serde_json::from_slice::<Completion>(&bytes).map_err(|e| {
            Error::InvalidRequest(format!("the body is not a chat completion request: {e}"))
        })
    });
    let (stream, read) = match read {
        Ok(c) => (c.stream, c.into_request()),
        Err(e) => (false, Err(e)),
    };
    let include_usage = read.as_ref().is_ok_and(|(_, asked)| asked.include_usage);
    let request = read.map(|(r, _)| r);
    let route = Route::ChatCompletions;
    let started = Dialect::begin(&app, &principal, route, arrived, &headers, request).await;
    let created = unix_seconds();
    let whole =
        |request_id: &str, reply| completion(&format!("chatcmpl-{request_id}"), created, reply);
    let writer = |request_id: &str| {
        let mut chunks = Chunks::new(format!("chatcmpl-{request_id}"), created, include_usage);
        move |event| chunks.lines(event)
    };
    Dialect::OpenAi.answer(started, stream, whole, writer).await
}

/// `GET /v1/models`: the aliases and allowed models this caller may ask for.
pub async fn models(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
) -> Response {
    let created = unix_seconds();
    let data: Vec<Value> = app
        .pipeline
        .model_names(&principal.tenant)
        .into_iter()
        .map(|id| (id, "chat"))
        .chain(app.pipeline.embedding_names().into_iter().map(|id| (id, "embedding")))
        // `kind` is Nagare's own: which route takes the model (the browser app lists chat ones).
        .map(|(id, kind)| json!({"id": id, "object": "model", "created": created, "owned_by": "nagare", "kind": kind}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}
