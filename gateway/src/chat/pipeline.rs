//! The one streaming pipeline. Every transport validates its input into a [`ChatRequest`], calls
//! [`ChatPipeline::start`] and forwards the [`ChatStream`] it gets to its own sink.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use nagare_authorizer::Principal;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{Instrument, field};

use crate::chat::cache::{CacheAsk, Delivery};
use crate::chat::memory::{Recall, Recorder};
use crate::chat::{
    ChatCache, ChatEvent, ChatRequest, Memory, ModelCatalog, RequestLimits, Route, Usage,
};
use crate::error::Error;
use crate::provider::{
    Message, ModelProvider, ProviderEvent, ProviderRequest, ProviderStream, Role, incomplete_stream,
};
use crate::store::{ConversationStore, Turn};

/// The events of one chat. Dropping it cancels the upstream model call.
pub type ChatStream = ReceiverStream<ChatEvent>;

/// Knobs of the pipeline, from the config.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub limits: RequestLimits,
    /// Events buffered between the model and a slow client before the model is paused.
    pub channel_capacity: usize,
    /// Put prompt text in the logs. Off by default: prompts may hold personal data.
    pub log_prompts: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            limits: RequestLimits::default(),
            channel_capacity: 64,
            log_prompts: false,
        }
    }
}

/// request → route → (limits: its seam below) → history → cache → model → events.
pub struct ChatPipeline {
    provider: Arc<dyn ModelProvider>,
    models: ModelCatalog,
    options: PipelineOptions,
    memory: Option<Memory>,
    cache: Option<ChatCache>,
}

impl ChatPipeline {
    pub fn new(
        provider: Arc<dyn ModelProvider>,
        models: ModelCatalog,
        options: PipelineOptions,
    ) -> Self {
        Self {
            provider,
            models,
            options,
            memory: None,
            cache: None,
        }
    }

    /// Serves repeated requests from `cache`.
    pub fn with_cache(mut self, cache: ChatCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The response cache, when it is on.
    pub fn cache(&self) -> Option<&ChatCache> {
        self.cache.as_ref()
    }

    /// Keeps conversations in `memory`.
    pub fn with_memory(mut self, memory: Memory) -> Self {
        self.memory = Some(memory);
        self
    }

    /// The conversation store, when memory is on.
    pub fn conversations(&self) -> Option<&Arc<dyn ConversationStore>> {
        self.memory.as_ref().map(Memory::store)
    }

    /// The limits transports validate requests against.
    pub fn limits(&self) -> &RequestLimits {
        &self.options.limits
    }

    /// The provider's name, for logs and readiness.
    pub fn provider_name(&self) -> &'static str {
        self.provider.name()
    }

    /// Starts a chat. Failures before the model accepted the request (unknown model, throttled,
    /// unreachable) are returned here so a transport can still answer with an HTTP status;
    /// everything after is an event in the stream, which always ends with `done` or `error`.
    pub async fn start(
        &self,
        principal: &Principal,
        route: Route,
        request: ChatRequest,
        started: Instant,
    ) -> Result<ChatStream, Error> {
        let request_id: Arc<str> = Arc::from(request.id());
        let span = tracing::info_span!(
            "chat",
            request_id = %request_id,
            tenant = %principal.tenant,
            model = field::Empty
        );

        // The transport verified `principal` before it got here.
        // Seam, limits: per-principal and global limits admit or refuse the request here.
        let model_id = self
            .models
            .resolve(request.model.as_deref(), self.provider.as_ref())?;
        span.record("model", model_id.as_str());

        let (history, recorder) = match &self.memory {
            None if request.conversation_id.is_some() => {
                return Err(Error::InvalidRequest(
                    "conversation_id: conversation memory is not enabled on this server".into(),
                ));
            }
            None => (Vec::new(), None),
            Some(memory) => match memory.recall(principal, &request, &model_id).await? {
                Recall::Replay {
                    conversation_id,
                    answer,
                } => {
                    span.in_scope(|| {
                        tracing::info!("retried request: replaying the stored answer")
                    });
                    return Ok(replay(
                        request_id,
                        conversation_id,
                        model_id,
                        answer,
                        started,
                    ));
                }
                Recall::Continue { history, recorder } => (history, Some(recorder)),
            },
        };
        if self.options.log_prompts {
            span.in_scope(
                || tracing::info!(prompt = %request.message, system = ?request.system, "prompt"),
            );
        }
        let ask = CacheAsk {
            mode: request.cache,
            scope: request.cache_scope,
            multi_turn: request.conversation_id.is_some(),
        };
        let provider_request = ProviderRequest {
            model_id: model_id.clone(),
            system: request.system,
            messages: history
                .into_iter()
                .chain([Message {
                    role: Role::User,
                    content: request.message,
                }])
                .collect(),
            inference: request.inference,
        };

        let plan = match &self.cache {
            Some(cache) => cache.plan(principal, route, ask, &provider_request)?,
            None => None,
        };
        if let (Some(cache), Some(plan)) = (&self.cache, plan) {
            let delivery = Delivery {
                request_id,
                model: model_id,
                recorder,
                started,
            };
            let upstream = self.provider.converse_stream(provider_request);
            return cache
                .serve(plan, delivery, upstream)
                .instrument(span.clone())
                .await
                .inspect_err(|e| span.in_scope(|| log_failure(e, started)));
        }
        let upstream = match self
            .provider
            .converse_stream(provider_request)
            .instrument(span.clone())
            .await
        {
            Ok(upstream) => upstream,
            Err(e) => {
                span.in_scope(|| log_failure(&e, started));
                return Err(e);
            }
        };

        let (tx, rx) = mpsc::channel(self.options.channel_capacity);
        let start = ChatEvent::Start {
            request_id: request_id.clone(),
            conversation_id: recorder.as_ref().map(|r| r.conversation_id().to_owned()),
            model: model_id,
            cached: false,
        };
        let finish = Finish {
            request_id,
            started,
            recorder,
        };
        tokio::spawn(forward(upstream, tx, start, finish).instrument(span));
        Ok(ReceiverStream::new(rx))
    }
}

/// A stored answer, replayed as a stream for a retried request id: no model call.
fn replay(
    request_id: Arc<str>,
    conversation_id: String,
    model: String,
    answer: Turn,
    started: Instant,
) -> ChatStream {
    let events = [
        ChatEvent::Start {
            request_id: request_id.clone(),
            conversation_id: Some(conversation_id),
            model,
            cached: false,
        },
        ChatEvent::Delta {
            request_id: request_id.clone(),
            text: answer.content,
        },
        ChatEvent::Done {
            request_id,
            stop_reason: answer.stop_reason.unwrap_or_else(|| "end_turn".into()),
            usage: answer.usage.unwrap_or_default(),
            latency_ms: started.elapsed().as_millis() as u64,
            cached: false,
            billed_usage: None,
        },
    ];
    let (tx, rx) = mpsc::channel(events.len());
    for event in events {
        let _ = tx.try_send(event);
    }
    ReceiverStream::new(rx)
}

/// What the producer needs once the stream ends.
struct Finish {
    request_id: Arc<str>,
    started: Instant,
    /// Records the exchange in the conversation, when memory is on.
    recorder: Option<Recorder>,
}

/// Moves model events to the client's channel until the stream completes, fails, or the client
/// goes away, in which case returning drops `upstream` and so aborts the model call.
async fn forward(
    mut upstream: ProviderStream,
    tx: mpsc::Sender<ChatEvent>,
    start: ChatEvent,
    finish: Finish,
) {
    let Finish {
        request_id,
        started,
        recorder,
    } = finish;
    if tx.send(start).await.is_err() {
        return log_cancelled(started);
    }
    let mut stop_reason = None;
    let mut usage: Option<Usage> = None;
    // The answer is kept only when it will be recorded.
    let mut answer = recorder.as_ref().map(|_| String::new());
    loop {
        let next = tokio::select! {
            biased;
            () = tx.closed() => return log_cancelled(started),
            next = upstream.next() => next,
        };
        match next {
            Some(Ok(ProviderEvent::Delta(text))) => {
                if let Some(answer) = &mut answer {
                    answer.push_str(&text);
                }
                let delta = ChatEvent::Delta {
                    request_id: request_id.clone(),
                    text,
                };
                if tx.send(delta).await.is_err() {
                    return log_cancelled(started);
                }
            }
            Some(Ok(ProviderEvent::Stop { stop_reason: r })) => stop_reason = Some(r),
            Some(Ok(ProviderEvent::Usage(u))) => usage = Some(u),
            Some(Err(e)) => return fail(&tx, request_id, e, started).await,
            None => break,
        }
    }
    let (Some(stop_reason), Some(usage)) = (stop_reason, usage) else {
        return fail(&tx, request_id, incomplete_stream(), started).await;
    };
    // Seam, completion: cache store and usage metrics hook in here.
    if let (Some(recorder), Some(answer)) = (&recorder, answer) {
        // The answer reached the client, but a `done` would claim it is in the conversation.
        if let Err(e) = recorder.record(answer, usage, &stop_reason).await {
            return fail(&tx, request_id, e, started).await;
        }
    }
    let latency_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        outcome = "done",
        stop_reason = %stop_reason,
        input_tokens = usage.input_tokens,
        output_tokens = usage.output_tokens,
        latency_ms,
        "chat finished"
    );
    let done = ChatEvent::Done {
        request_id,
        stop_reason,
        usage,
        latency_ms,
        cached: false,
        billed_usage: None,
    };
    let _ = tx.send(done).await;
}

async fn fail(tx: &mpsc::Sender<ChatEvent>, request_id: Arc<str>, error: Error, started: Instant) {
    log_failure(&error, started);
    let _ = tx
        .send(ChatEvent::Error {
            request_id,
            error: error.body(),
        })
        .await;
}

fn log_failure(error: &Error, started: Instant) {
    tracing::warn!(
        outcome = "error",
        code = error.code().as_str(),
        error = %error,
        latency_ms = started.elapsed().as_millis() as u64,
        "chat failed"
    );
}

fn log_cancelled(started: Instant) {
    tracing::info!(
        outcome = "cancelled",
        latency_ms = started.elapsed().as_millis() as u64,
        "chat cancelled by the client; upstream stream dropped"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::test_support::{alice, mock_pipeline};

    fn request(body: &str) -> ChatRequest {
        crate::chat::parse_chat_request(body.as_bytes())
            .unwrap()
            .validate(&RequestLimits::default(), || "rid".into())
            .unwrap()
    }

    async fn events(body: &str) -> Vec<ChatEvent> {
        mock_pipeline()
            .start(&alice(), Route::Chat, request(body), Instant::now())
            .await
            .unwrap()
            .collect()
            .await
    }

    #[tokio::test]
    async fn events_come_in_order_and_end_with_done() {
        let events = events(r#"{"message":"hello"}"#).await;
        assert!(matches!(&events[0], ChatEvent::Start { model, .. } if model == "mock"));
        let deltas = events.iter().filter(|e| e.kind() == "delta").count();
        assert!(deltas >= 2);
        assert_eq!(events.len(), deltas + 2);
        match events.last() {
            Some(ChatEvent::Done { usage, .. }) => assert_eq!(usage.output_tokens, deltas as u64),
            other => panic!("last event {other:?}"),
        }
    }

    #[tokio::test]
    async fn midstream_failure_ends_with_one_error_event() {
        let events = events(r#"{"message":"hello","model":"mock.error-midstream"}"#).await;
        let kinds: Vec<_> = events.iter().map(ChatEvent::kind).collect();
        assert_eq!(kinds, ["start", "delta", "delta", "delta", "error"]);
    }

    #[tokio::test]
    async fn failures_before_the_first_event_are_returned() {
        let p = mock_pipeline();
        let err = p
            .start(
                &alice(),
                Route::Chat,
                request(r#"{"message":"x","model":"mock.throttle-1"}"#),
                Instant::now(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code().as_str(), "upstream_throttled");
        let err = p
            .start(
                &alice(),
                Route::Chat,
                request(r#"{"message":"x","model":"nope"}"#),
                Instant::now(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code().as_str(), "invalid_request");
        let err = p
            .start(
                &alice(),
                Route::Chat,
                request(r#"{"message":"x","conversation_id":"c1"}"#),
                Instant::now(),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("conversation_id"));
    }
}
