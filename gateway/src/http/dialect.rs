//! What the OpenAI and Anthropic dialects share: their error responses (each API's own body,
//! mapped here from the one error table, with its status and `Retry-After`), the time their
//! objects are stamped with, and attachments sent as base64 with a media type.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::StreamExt;
use serde_json::{Value, json};

use std::time::Instant;

use nagare_authorizer::Principal;

use crate::app::App;
use crate::chat::{
    Block, CONTENT_TYPES, ChatEvent, ChatReply, ChatRequest, Format, Message, Route, Source, Tool,
    ToolChoice,
};
use crate::error::{Error, ErrorBody, ErrorCode};
use crate::http::error::ApiError;
use crate::http::sse::event_stream;
use crate::http::with_request_id;
use crate::pipeline::ChatStream;

/// An API Nagare speaks besides its own, on the routes that speak it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

impl Dialect {
    /// The dialect of a route, by its path; `None` for Nagare's own routes.
    pub fn of_path(path: &str) -> Option<Self> {
        if path.starts_with("/v1/messages") {
            Some(Self::Anthropic)
        } else if ["/v1/chat/completions", "/v1/models", "/v1/embeddings"].contains(&path) {
            Some(Self::OpenAi)
        } else {
            None
        }
    }

    /// The error as this API writes it: OpenAI's `{"error":{"message","type","param","code"}}`
    /// (`code` Nagare's), Anthropic's `{"type":"error","error":{"type","message"}}`.
    pub fn error_object(self, body: &ErrorBody) -> Value {
        use ErrorCode as C;
        match self {
            Self::OpenAi => {
                let kind = match body.code {
                    C::InvalidRequest | C::PayloadTooLarge | C::NotFound => "invalid_request_error",
                    C::Unauthorized => "authentication_error",
                    C::Forbidden => "permission_error",
                    C::RateLimited | C::UpstreamThrottled => "rate_limit_error",
                    _ => "api_error",
                };
                json!({"error": {
                    "message": body.message,
                    "type": kind,
                    "param": param_of(&body.message).map(openai_name),
                    "code": body.code.as_str(),
                }})
            }
            Self::Anthropic => {
                let kind = match body.code {
                    C::InvalidRequest => "invalid_request_error",
                    C::PayloadTooLarge => "request_too_large",
                    C::NotFound => "not_found_error",
                    C::Unauthorized => "authentication_error",
                    C::Forbidden => "permission_error",
                    C::RateLimited => "rate_limit_error",
                    C::UpstreamThrottled | C::UpstreamUnavailable => "overloaded_error",
                    _ => "api_error",
                };
                json!({"type": "error", "error": {"type": kind, "message": body.message}})
            }
        }
    }

    /// The error as this API's response, with the table's status and `Retry-After`.
    pub fn error_response(self, error: &ErrorBody, request_id: &str) -> Response {
        error_response(error, self.error_object(error), request_id)
    }

    /// Starts a chat a dialect route has read (or failed to read), in the conversation the
    /// request's [`CONVERSATION_HEADER`] names, if any.
    pub async fn begin(
        app: &App,
        principal: &Principal,
        route: Route,
        arrived: Instant,
        headers: &HeaderMap,
        request: Result<ChatRequest, Error>,
    ) -> Result<(String, ChatStream), ApiError> {
        let request = request.map(|mut r| {
            r.conversation_id = conversation_of(headers);
            r
        });
        crate::http::chat::begin(app, principal, route, arrived, headers, request).await
    }

    /// Answers a chat as this API does: the reply `whole` makes of it, or, `stream`ed, the
    /// event-stream lines of the writer `writer` makes from the request id; a refusal or a
    /// failure before the first byte in this API's error shape.
    pub async fn answer<S>(
        self,
        started: Result<(String, ChatStream), ApiError>,
        stream: bool,
        whole: impl FnOnce(&str, ChatReply) -> Value,
        writer: impl FnOnce(&str) -> S,
    ) -> Response
    where
        S: FnMut(ChatEvent) -> Vec<Bytes> + Send + 'static,
    {
        let (request_id, events) = match started {
            Ok(started) => started,
            Err(e) => return self.error_response(&e.body, &e.request_id),
        };
        if !stream {
            return match ChatReply::collect(events).await {
                Ok(reply) => {
                    let conversation = reply.conversation_id.clone();
                    let body = Json(whole(&request_id, reply)).into_response();
                    with_conversation(with_request_id(body, &request_id), conversation)
                }
                Err(body) => self.error_response(&body, &request_id),
            };
        }
        // The first event (`start`) names the conversation, if the chat is recorded in one.
        let mut events = events.peekable();
        let conversation = match std::pin::Pin::new(&mut events).peek().await {
            Some(ChatEvent::Start {
                conversation_id, ..
            }) => conversation_id.clone(),
            _ => None,
        };
        let mut write = writer(&request_id);
        let lines = events
            .flat_map(move |event| futures::stream::iter(write(event)))
            .map(Ok::<_, std::convert::Infallible>);
        let response = event_stream(Body::from_stream(lines), &request_id);
        with_conversation(response, conversation)
    }
}

/// The header that names the conversation a dialect chat is recorded in, when the operator
/// records them: sent back with every recorded answer, and by the client to continue one.
pub const CONVERSATION_HEADER: &str = "nagare-conversation-id";

/// The conversation a dialect request continues, from [`CONVERSATION_HEADER`].
fn conversation_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CONVERSATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn with_conversation(mut response: Response, conversation: Option<String>) -> Response {
    if let Some(value) = conversation.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(CONVERSATION_HEADER, value);
    }
    response
}

/// OpenAI's name for a field the pipeline's checks name in its own request's terms.
fn openai_name(param: &str) -> &str {
    match param {
        "inference.max_tokens" => "max_completion_tokens",
        "reasoning" => "reasoning_effort",
        other => other.strip_prefix("inference.").unwrap_or(other),
    }
}

/// `body`, a dialect's rendering of the error `error`, with the table's status and `Retry-After`.
fn error_response(error: &ErrorBody, body: Value, request_id: &str) -> Response {
    let status =
        StatusCode::from_u16(error.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(body)).into_response();
    if let Some(ms) = error.retry_after_ms {
        // Whole seconds, rounded up, so a client never retries early.
        let secs = ms.div_ceil(1000).max(1);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    // For the request metrics and the server span.
    response.extensions_mut().insert(error.code);
    with_request_id(response, request_id)
}

/// The parameter an error of the table names (`"tools[0].name: ..."` names `tools[0].name`).
pub fn param_of(message: &str) -> Option<&str> {
    message
        .split_once(':')
        .map(|(p, _)| p)
        .filter(|p| !p.is_empty() && !p.contains(' '))
}

pub fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn bad(param: &str, why: &str) -> Error {
    Error::InvalidRequest(format!("{param}: {why}"))
}

/// An image or a document sent as base64 with its media type; `name` is a document's.
pub fn attachment(
    field: &str,
    media_type: &str,
    data: &str,
    name: Option<String>,
) -> Result<Block, Error> {
    let format = Format::of_content_type(media_type).ok_or_else(|| {
        bad(
            field,
            &format!("media type '{media_type}' is not one of {CONTENT_TYPES}"),
        )
    })?;
    let bytes = BASE64
        .decode(data.trim())
        .map_err(|e| bad(field, &format!("the data is not base64: {e}")))?;
    let source = Source::Inline(bytes.into());
    Ok(match format {
        Format::Image(format) => Block::Image {
            format: Some(format),
            source,
        },
        Format::Document(format) => Block::Document {
            format: Some(format),
            name,
            source,
        },
    })
}

/// What `tool_choice: none` leaves of `tools`. Bedrock has no `none`: the tools are left out,
/// unless the conversation already used them (Bedrock then needs their definitions), when the
/// model keeps its own choice.
pub fn choose_none(tools: Vec<Tool>, messages: &[Message]) -> (Vec<Tool>, Option<ToolChoice>) {
    let used = messages
        .iter()
        .flat_map(|m| &m.content)
        .any(|b| matches!(b, Block::ToolUse { .. } | Block::ToolResult { .. }));
    (if used { tools } else { Vec::new() }, None)
}

/// A `data:<media type>;base64,<data>` URL's media type and data.
pub fn data_url<'a>(field: &str, url: &'a str) -> Result<(&'a str, &'a str), Error> {
    let refuse = || {
        bad(
            field,
            "must be a data URL (data:<media type>;base64,<data>) or an upload_id: the gateway \
             fetches no URLs",
        )
    };
    let rest = url.strip_prefix("data:").ok_or_else(refuse)?;
    let (head, data) = rest.split_once(',').ok_or_else(refuse)?;
    let media_type = head.strip_suffix(";base64").ok_or_else(refuse)?;
    Ok((media_type, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_become_attachments_and_anything_else_is_named() {
        let (mime, data) = data_url("u", "data:image/png;base64,iVBORw0=").unwrap();
        let block = attachment("u", mime, data, None).unwrap();
        assert!(matches!(block, Block::Image { .. }));
        for url in [
            "https://example.com/cat.png",
            "data:image/png,rawbytes",
            "data:image/png;base64",
        ] {
            let e = data_url("messages[0].content[1]", url).unwrap_err();
            assert!(e.to_string().contains("messages[0].content[1]"), "{e}");
        }
        let e = attachment("f", "audio/wav", "AAAA", None).unwrap_err();
        assert!(e.to_string().contains("audio/wav"), "{e}");
        let e = attachment("f", "image/png", "not base64!", None).unwrap_err();
        assert!(e.to_string().contains("base64"), "{e}");
        let doc = attachment("f", "application/pdf", "JVBERi0=", Some("a".into())).unwrap();
        assert!(matches!(doc, Block::Document { name: Some(_), .. }));
    }

    #[test]
    fn the_param_is_the_field_an_error_names() {
        assert_eq!(param_of("tools[0].name: bad"), Some("tools[0].name"));
        assert_eq!(param_of("the body is not JSON: x"), None);
    }
}
