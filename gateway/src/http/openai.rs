//! The OpenAI Chat Completions dialect, a transport of the one pipeline: `POST
//! /v1/chat/completions` (one `chat.completion`, or `chat.completion.chunk`s as `data:` lines
//! ending with `data: [DONE]`) and `GET /v1/models`. The request is read into a [`ChatRequest`]
//! (the stateless form: the client sends the conversation) and the pipeline's events are written
//! back as OpenAI's objects; errors take OpenAI's shape.
//!
//! This first step carries text: system and developer messages become the system prompt, user
//! and assistant messages the conversation. Tools, images, response formats and reasoning are
//! refused with a 400 that names them, as are parameters Nagare cannot honour (`n` above 1,
//! `logprobs`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use nagare_authorizer::Principal;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::chat::{
    Block, ChatEvent, ChatReply, ChatRequest, InferenceParams, Message, Role, Route, Usage,
};
use crate::error::{Error, ErrorBody, ErrorCode};
use crate::http::chat::{begin, read_body};
use crate::http::sse::event_stream;
use crate::http::{Arrived, with_request_id};

/// A Chat Completions request, as far as this step reads it; every other field is looked at by
/// name ([`check_other`]).
#[derive(Deserialize)]
struct Completion {
    model: Option<String>,
    messages: Vec<Said>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    stop: Option<Stop>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// One message of `messages`.
#[derive(Deserialize)]
struct Said {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Map<String, Value>>),
}

/// Fields that change nothing Nagare does, accepted and ignored.
const IGNORED: &[&str] = &[
    "user",
    "metadata",
    "store",
    "seed",
    "service_tier",
    "parallel_tool_calls",
    "presence_penalty",
    "frequency_penalty",
];

fn bad(param: &str, why: &str) -> Error {
    Error::InvalidRequest(format!("{param}: {why}"))
}

/// Refuses what this step cannot honour, by name; accepts what changes nothing.
fn check_other(other: &Map<String, Value>) -> Result<(), Error> {
    for (name, value) in other {
        if IGNORED.contains(&name.as_str()) || value.is_null() {
            continue;
        }
        let why = match name.as_str() {
            "n" if value.as_u64() == Some(1) => continue,
            "n" => "only one choice is generated (n = 1)",
            "logprobs" if value == &Value::Bool(false) => continue,
            "logprobs" | "top_logprobs" => "log probabilities are not available",
            "tools" | "tool_choice" | "functions" | "function_call" => {
                "tools are not supported on this route yet; use /v1/chat"
            }
            "response_format" | "reasoning_effort" | "modalities" | "audio" | "prediction" => {
                "not supported on this route yet; use /v1/chat"
            }
            _ => "unknown parameter",
        };
        return Err(bad(name, why));
    }
    Ok(())
}

impl Completion {
    /// The request as the pipeline's, and whether usage is wanted in the stream.
    fn into_request(self) -> Result<(ChatRequest, bool), Error> {
        check_other(&self.other)?;
        let mut system = Vec::new();
        let mut messages = Vec::new();
        for (i, said) in self.messages.into_iter().enumerate() {
            let field = format!("messages[{i}]");
            if let Some(name) = said.other.keys().find(|k| k.as_str() != "name") {
                return Err(bad(
                    &format!("{field}.{name}"),
                    "not supported on this route yet",
                ));
            }
            let text = text_of(&field, said.content)?;
            let role = match said.role.as_str() {
                "system" | "developer" => {
                    system.push(text);
                    continue;
                }
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "tool" | "function" => {
                    return Err(bad(
                        &format!("{field}.role"),
                        "tool results are not supported on this route yet",
                    ));
                }
                other => {
                    return Err(bad(
                        &format!("{field}.role"),
                        &format!("unknown role '{other}'"),
                    ));
                }
            };
            messages.push(Message {
                role,
                content: vec![Block::text(text)],
            });
        }
        let include_usage = self.stream_options.is_some_and(|o| o.include_usage);
        let stop = self.stop.map(|s| match s {
            Stop::One(s) => vec![s],
            Stop::Many(s) => s,
        });
        let request = ChatRequest {
            messages: Some(messages),
            model: self.model,
            system: (!system.is_empty()).then(|| system.join("\n\n")),
            inference: InferenceParams {
                max_tokens: self.max_completion_tokens.or(self.max_tokens),
                temperature: self.temperature,
                top_p: self.top_p,
                stop,
            },
            ..ChatRequest::default()
        };
        Ok((request, include_usage))
    }
}

/// A message's text: a string, or text parts joined.
fn text_of(field: &str, content: Option<Content>) -> Result<String, Error> {
    match content {
        None => Err(bad(&format!("{field}.content"), "required")),
        Some(Content::Text(text)) => Ok(text),
        Some(Content::Parts(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    (kind, _) => {
                        return Err(bad(
                            &format!("{field}.content[{j}]"),
                            &format!(
                                "{} parts are not supported on this route yet",
                                kind.unwrap_or("untyped")
                            ),
                        ));
                    }
                }
            }
            Ok(text)
        }
    }
}

/// OpenAI's finish reason for a Bedrock stop reason.
fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop",
    }
}

fn usage(u: &Usage) -> Value {
    let prompt = u.input_tokens + u.cache_read_input_tokens + u.cache_write_input_tokens;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": u.output_tokens,
        "total_tokens": prompt + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_input_tokens},
    })
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// OpenAI's error object for an error of the table: `type` by class, `code` Nagare's.
fn error_object(body: &ErrorBody) -> Value {
    let kind = match body.code {
        ErrorCode::InvalidRequest | ErrorCode::PayloadTooLarge | ErrorCode::NotFound => {
            "invalid_request_error"
        }
        ErrorCode::Unauthorized => "authentication_error",
        ErrorCode::Forbidden => "permission_error",
        ErrorCode::RateLimited | ErrorCode::UpstreamThrottled => "rate_limit_error",
        _ => "api_error",
    };
    let param = body
        .message
        .split_once(':')
        .map(|(p, _)| p)
        .filter(|p| !p.contains(' ') && !p.is_empty());
    json!({"error": {"message": body.message, "type": kind, "param": param, "code": body.code.as_str()}})
}

fn error_response(body: &ErrorBody, request_id: &str) -> Response {
    let status =
        StatusCode::from_u16(body.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(error_object(body))).into_response();
    if let Some(after) = body.retry_after_ms {
        let secs = after.div_ceil(1000).max(1);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    response.extensions_mut().insert(body.code);
    with_request_id(response, request_id)
}

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
    let include_usage = read.as_ref().is_ok_and(|(_, u)| *u);
    let request = read.map(|(r, _)| r);
    let started = begin(
        &app,
        &principal,
        Route::ChatCompletions,
        arrived,
        &headers,
        request,
    )
    .await;
    let (request_id, events) = match started {
        Ok(started) => started,
        Err(e) => return error_response(&e.body, &e.request_id),
    };
    let id = format!("chatcmpl-{request_id}");
    let created = unix_seconds();
    if !stream {
        return match ChatReply::collect(events).await {
            Ok(reply) => {
                let object = json!({
                    "id": id,
                    "object": "chat.completion",
                    "created": created,
                    "model": reply.model,
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": reply.message.content, "refusal": null},
                        "finish_reason": finish_reason(&reply.stop_reason),
                        "logprobs": null,
                    }],
                    "usage": usage(&reply.usage),
                });
                with_request_id(Json(object).into_response(), &request_id)
            }
            Err(body) => error_response(&body, &request_id),
        };
    }
    let mut model = String::new();
    let chunk = move |model: &str, delta: Value, finish: Option<&str>| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        })
    };
    let lines = events
        .flat_map(move |event| {
            let mut out: Vec<Value> = Vec::new();
            match event {
                ChatEvent::Start { model: m, .. } => {
                    model = m;
                    out.push(chunk(
                        &model,
                        json!({"role": "assistant", "content": ""}),
                        None,
                    ));
                }
                ChatEvent::Delta { text, .. } => {
                    out.push(chunk(&model, json!({"content": text}), None))
                }
                ChatEvent::Done {
                    stop_reason,
                    usage: u,
                    ..
                } => {
                    out.push(chunk(&model, json!({}), Some(finish_reason(&stop_reason))));
                    if include_usage {
                        let mut last = chunk(&model, json!({}), None);
                        last["choices"] = json!([]);
                        last["usage"] = usage(&u);
                        out.push(last);
                    }
                }
                ChatEvent::Error { error, .. } => out.push(error_object(&error)),
                _ => {}
            }
            futures::stream::iter(out)
        })
        .map(|value| Ok::<_, std::convert::Infallible>(Bytes::from(format!("data: {value}\n\n"))))
        .chain(futures::stream::once(async {
            Ok(Bytes::from_static(b"data: [DONE]\n\n"))
        }));
    event_stream(Body::from_stream(lines), &request_id)
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
        .map(|id| json!({"id": id, "object": "model", "created": created, "owned_by": "nagare"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}
