//! `nagare.v1.ChatService`: `Converse` (the whole answer) and `ConverseStream` (start, deltas,
//! done), both over the one pipeline. `grpc-timeout` bounds the whole call; when it passes, or the
//! client cancels, the pipeline's stream is dropped, which aborts the upstream model stream.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use nagare_proto::v1 as pb;
use nagare_proto::v1::chat_service_server::ChatService;
use tokio::time::{Instant, Sleep};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::app::App;
use crate::chat::{
    CacheMode, CacheScope, ChatEvent, ChatReply, ChatRequest, InferenceParams, KnowledgeAsk,
    KnowledgeScope, Reference, Route, Usage,
};
use crate::error::Error;
use crate::grpc::auth::authenticate;
use crate::grpc::deadline::deadline;
use crate::grpc::{contract, status};
use crate::pipeline::ChatStream;

pub struct ChatApi {
    app: Arc<App>,
}

/// A chat the pipeline has accepted.
struct Started {
    request_id: String,
    events: ChatStream,
    deadline: Option<Instant>,
}

impl ChatApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    /// Reads the deadline, authenticates, validates and starts the chat, all within the deadline.
    async fn start(&self, request: Request<pb::ChatRequest>) -> Result<Started, Status> {
        let started = std::time::Instant::now();
        let deadline = deadline(request.metadata(), Instant::now())
            .map_err(|e| status::from_error(&e, None))?;
        let (metadata, _, message) = request.into_parts();
        let client_id = message.request_id.clone();
        let work = async {
            let principal = authenticate(&self.app, &metadata)
                .await
                .map_err(|e| status::from_error(&e, client_id.as_deref()))?;
            let chat = self
                .chat_request(message)
                .and_then(|r| self.app.pipeline.admit(r, &principal, Route::Grpc, started))
                .map_err(|e| status::from_error(&e, client_id.as_deref()))?;
            let request_id = chat.request_id().to_owned();
            let events = self
                .app
                .pipeline
                .start(chat)
                .await
                .map_err(|e| status::from_error(&e, Some(&request_id)))?;
            Ok(Started {
                request_id,
                events,
                deadline,
            })
        };
        within(deadline, client_id.as_deref(), work).await
    }

    /// The wire message as a [`ChatRequest`], held to the REST body limit.
    fn chat_request(&self, message: pb::ChatRequest) -> Result<ChatRequest, Error> {
        let limit = self.app.body_limit;
        if prost::Message::encoded_len(&message) > limit {
            return Err(Error::PayloadTooLarge { limit });
        }
        ChatRequest::try_from(message)
    }
}

#[tonic::async_trait]
impl ChatService for ChatApi {
    async fn converse(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<pb::ChatReply>, Status> {
        let Started {
            request_id,
            events,
            deadline,
        } = self.start(request).await?;
        let collect = async {
            ChatReply::collect(events)
                .await
                .map_err(|body| status::from_body(&body, Some(&request_id)))
        };
        let reply = within(deadline, Some(&request_id), collect).await?;
        Ok(with_request_id(Response::new(reply.into()), &request_id))
    }

    type ConverseStreamStream = Events;

    async fn converse_stream(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<Events>, Status> {
        let Started {
            request_id,
            events,
            deadline,
        } = self.start(request).await?;
        let events = Events {
            inner: Some(events),
            deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
            request_id: request_id.clone(),
        };
        Ok(with_request_id(Response::new(events), &request_id))
    }
}

fn with_request_id<T>(mut response: Response<T>, request_id: &str) -> Response<T> {
    if let Ok(v) = MetadataValue::try_from(request_id) {
        response.metadata_mut().insert("x-request-id", v);
    }
    response
}

/// `work`, or DEADLINE_EXCEEDED if `deadline` passes first (dropping `work` and what it holds).
async fn within<T>(
    deadline: Option<Instant>,
    request_id: Option<&str>,
    work: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match deadline {
        None => work.await,
        Some(at) => tokio::time::timeout_at(at, work)
            .await
            .unwrap_or_else(|_| Err(deadline_exceeded(request_id))),
    }
}

fn deadline_exceeded(request_id: Option<&str>) -> Status {
    tracing::debug!("gRPC deadline passed; the upstream stream is dropped");
    status::from_error(
        &Error::UpstreamTimeout("the call's deadline (grpc-timeout) passed".into()),
        request_id,
    )
}

/// The stream of `ConverseStream`: the pipeline's events as messages, an `error` event as the
/// final status, and DEADLINE_EXCEEDED when the deadline passes first.
pub struct Events {
    /// `None` once the stream is over; dropping it aborts the upstream model stream.
    inner: Option<ChatStream>,
    deadline: Option<Pin<Box<Sleep>>>,
    request_id: String,
}

impl Stream for Events {
    type Item = Result<pb::ChatEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(next) = inner.poll_next_unpin(cx) {
            let item = match next {
                Some(event) => {
                    if event.is_terminal() {
                        this.inner = None;
                    }
                    message(event, &this.request_id)
                }
                None => {
                    // The pipeline always ends a chat with `done` or `error`.
                    this.inner = None;
                    Err(status::from_error(
                        &Error::Internal("the chat stream ended without done or error".into()),
                        Some(&this.request_id),
                    ))
                }
            };
            return Poll::Ready(Some(item));
        }
        if let Some(sleep) = this.deadline.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            this.inner = None;
            return Poll::Ready(Some(Err(deadline_exceeded(Some(&this.request_id)))));
        }
        Poll::Pending
    }
}

/// One pipeline event as a stream message, or the status that ends the stream.
fn message(event: ChatEvent, request_id: &str) -> Result<pb::ChatEvent, Status> {
    use pb::chat_event::Event;
    let event = match event {
        ChatEvent::Start {
            request_id,
            conversation_id,
            model,
            cached,
        } => Event::Start(pb::Start {
            request_id: request_id.to_string(),
            conversation_id,
            model,
            cached,
        }),
        ChatEvent::Delta {
            request_id,
            index,
            text,
        } => Event::Delta(pb::Delta {
            request_id: request_id.to_string(),
            text,
            index,
        }),
        ChatEvent::Reasoning {
            request_id,
            index,
            text,
            signature,
            redacted,
        } => Event::Reasoning(pb::ReasoningDelta {
            request_id: request_id.to_string(),
            index,
            text,
            signature,
            redacted,
        }),
        ChatEvent::ToolCallStart {
            request_id,
            index,
            id,
            name,
        } => Event::ToolCallStart(pb::ToolCallStart {
            request_id: request_id.to_string(),
            index,
            id,
            name,
        }),
        ChatEvent::ToolCallDelta {
            request_id,
            index,
            input,
        } => Event::ToolCallDelta(pb::ToolCallDelta {
            request_id: request_id.to_string(),
            index,
            input,
        }),
        ChatEvent::ToolCall {
            request_id,
            index,
            id,
            name,
            input,
        } => Event::ToolCall(pb::ToolCall {
            request_id: request_id.to_string(),
            index,
            id,
            name,
            input_json: input.to_string(),
        }),
        ChatEvent::Done {
            request_id,
            stop_reason,
            usage,
            latency_ms,
            cached,
            billed_usage,
            citations,
            ..
        } => Event::Done(pb::Done {
            request_id: request_id.to_string(),
            stop_reason,
            usage: Some(usage.into()),
            latency_ms,
            cached,
            billed_usage: billed_usage.map(Into::into),
            citations: citations.unwrap_or_default(),
        }),
        ChatEvent::Sources {
            request_id,
            sources,
        } => Event::Sources(pb::Sources {
            request_id: request_id.to_string(),
            sources: sources.into_iter().map(Into::into).collect(),
        }),
        ChatEvent::Error { error, .. } => return Err(status::from_body(&error, Some(request_id))),
    };
    Ok(pb::ChatEvent { event: Some(event) })
}

impl From<Usage> for pb::Usage {
    fn from(u: Usage) -> Self {
        Self {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cache_read_input_tokens: u.cache_read_input_tokens,
            cache_write_input_tokens: u.cache_write_input_tokens,
        }
    }
}

impl From<ChatReply> for pb::ChatReply {
    fn from(r: ChatReply) -> Self {
        Self {
            request_id: r.request_id,
            conversation_id: r.conversation_id,
            model: r.model,
            message: Some(pb::Message {
                role: r.message.role,
                content: r.message.content,
                blocks: r
                    .message
                    .blocks
                    .iter()
                    .flatten()
                    .map(contract::block_to_pb)
                    .collect(),
            }),
            stop_reason: r.stop_reason,
            usage: Some(r.usage.into()),
            latency_ms: r.latency_ms,
            cached: r.cached,
            billed_usage: r.billed_usage.map(Into::into),
            sources: r.sources.into_iter().flatten().map(Into::into).collect(),
            citations: r.citations.unwrap_or_default(),
        }
    }
}

impl From<Reference> for pb::Source {
    fn from(r: Reference) -> Self {
        Self {
            n: r.n,
            id: r.id,
            title: r.title,
            uri: r.uri,
            score: r.score,
            snippet: r.snippet,
        }
    }
}

impl TryFrom<pb::ChatRequest> for ChatRequest {
    type Error = Error;

    /// Field for field; enum numbers this server does not know are `invalid_request`.
    fn try_from(m: pb::ChatRequest) -> Result<Self, Error> {
        let cache = match pb::CacheMode::try_from(m.cache) {
            Ok(pb::CacheMode::Default) => CacheMode::Default,
            Ok(pb::CacheMode::Bypass) => CacheMode::Bypass,
            Ok(pb::CacheMode::Refresh) => CacheMode::Refresh,
            Err(_) => return Err(unknown_enum("cache", m.cache)),
        };
        // TENANT is proto3's default, indistinguishable from unset; both mean the tenant scope.
        let cache_scope = match pb::CacheScope::try_from(m.cache_scope) {
            Ok(pb::CacheScope::Tenant) => None,
            Ok(pb::CacheScope::Global) => Some(CacheScope::Global),
            Err(_) => return Err(unknown_enum("cache_scope", m.cache_scope)),
        };
        let inference = m.inference.unwrap_or_default();
        let content =
            (!m.content.is_empty()).then(|| contract::blocks_from_pb("content", m.content));
        let messages = (!m.messages.is_empty()).then(|| contract::messages_from_pb(m.messages));
        Ok(Self {
            message: m.message,
            content: content.transpose()?,
            messages: messages.transpose()?,
            tools: contract::tools_from_pb(m.tools)?,
            tool_choice: contract::tool_choice_from_pb(m.tool_choice)?,
            reasoning: contract::reasoning_from_pb(m.reasoning)?,
            response_format: contract::format_from_pb(m.response_format)?,
            prompt_cache: m.prompt_cache,
            conversation_id: m.conversation_id,
            request_id: m.request_id,
            model: m.model,
            system: m.system,
            inference: InferenceParams {
                max_tokens: inference.max_tokens,
                temperature: inference.temperature,
                top_p: inference.top_p,
                stop: (!inference.stop.is_empty()).then_some(inference.stop),
            },
            cache,
            cache_scope,
            task: m.task,
            knowledge_base: m.knowledge_base.map(knowledge_from_pb).transpose()?,
        })
    }
}

fn knowledge_from_pb(kb: pb::KnowledgeBase) -> Result<KnowledgeAsk, Error> {
    let filter = kb
        .filter_json
        .map(|json| {
            serde_json::from_str(&json).map_err(|e| {
                Error::InvalidRequest(format!(
                    "knowledge_base.filter_json: not a filter object: {e}"
                ))
            })
        })
        .transpose()?;
    let scope = match pb::KnowledgeScope::try_from(kb.scope) {
        Ok(pb::KnowledgeScope::Tenant) => KnowledgeScope::Tenant,
        Ok(pb::KnowledgeScope::Global) => KnowledgeScope::Global,
        Err(_) => return Err(unknown_enum("knowledge_base.scope", kb.scope)),
    };
    Ok(KnowledgeAsk {
        name: kb.name,
        results: kb.results,
        filter,
        scope,
    })
}

fn unknown_enum(field: &str, value: i32) -> Error {
    Error::InvalidRequest(format!("{field}: unknown value {value}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_past_the_deadline_is_deadline_exceeded() {
        let at = Instant::now() + Duration::from_millis(100);
        let never = std::future::pending::<Result<(), Status>>();
        let status = within(Some(at), Some("r1"), never).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        let code = status.metadata().get("nagare-error-code").unwrap();
        assert_eq!(code.to_str().unwrap(), "upstream_timeout");
        assert_eq!(Instant::now(), at);
        let quick = async { Ok::<_, Status>(7) };
        assert_eq!(within(Some(at), None, quick).await.unwrap(), 7);
    }

    #[test]
    fn unknown_enum_numbers_are_invalid_requests() {
        let message = pb::ChatRequest {
            message: "hi".into(),
            cache_scope: 9,
            ..Default::default()
        };
        let err = ChatRequest::try_from(message).unwrap_err();
        assert_eq!(err.to_string(), "cache_scope: unknown value 9");
        let global = pb::ChatRequest {
            message: "hi".into(),
            cache: pb::CacheMode::Refresh as i32,
            cache_scope: pb::CacheScope::Global as i32,
            inference: Some(pb::Inference {
                stop: vec!["END".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let request = ChatRequest::try_from(global).unwrap();
        assert_eq!(request.cache, CacheMode::Refresh);
        assert_eq!(request.cache_scope, Some(CacheScope::Global));
        assert_eq!(request.inference.stop, Some(vec!["END".to_owned()]));
    }
}
