//! The one streaming pipeline. Every transport validates its input into a [`ChatRequest`], calls
//! [`ChatPipeline::start`] and forwards the [`ChatStream`] it gets to its own sink.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use nagare_authorizer::Principal;
use nagare_cache::{CachedResponse, MetricsSnapshot};
use tracing::{Instrument, field};

use crate::chat::cache::CacheAsk;
use crate::chat::event_stream::EventStream;
use crate::chat::flight::{self, Delivery, log_failure};
use crate::chat::memory::Recall;
use crate::chat::observe::Watch;
use crate::chat::upstream;
use crate::chat::{
    ChatCache, ChatRequest, ChatStream, Memory, ModelCatalog, RequestLimits, Route, estimate_tokens,
};
use crate::error::Error;
use crate::limits::Limits;
use crate::provider::{Breakers, CircuitState, Message, ModelProvider, ProviderRequest, Role};
use crate::store::{ConversationStore, Turn};
use crate::telemetry::{NoRecorder, Recorder};

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

/// request → limits → route → history → cache → model → events.
pub struct ChatPipeline {
    provider: Arc<dyn ModelProvider>,
    models: ModelCatalog,
    options: PipelineOptions,
    memory: Option<Memory>,
    cache: Option<ChatCache>,
    limits: Option<Arc<Limits>>,
    breakers: Arc<Breakers>,
    recorder: Arc<dyn Recorder>,
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
            limits: None,
            breakers: Arc::new(Breakers::off()),
            recorder: Arc::new(NoRecorder),
        }
    }

    /// Reports every chat to `recorder` (metrics).
    pub fn with_recorder(mut self, recorder: Arc<dyn Recorder>) -> Self {
        self.recorder = recorder;
        self
    }

    /// The response cache's counters, when the cache is on.
    pub fn cache_snapshot(&self) -> Option<MetricsSnapshot> {
        self.cache.as_ref().map(ChatCache::snapshot)
    }

    /// Skips models whose circuit `breakers` has opened, for their fallbacks.
    pub fn with_breakers(mut self, breakers: Breakers) -> Self {
        self.breakers = Arc::new(breakers);
        self
    }

    /// Every model's circuit, for readiness.
    pub fn circuits(&self) -> BTreeMap<String, CircuitState> {
        self.breakers.states()
    }

    /// Holds every principal to `limits`.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = Some(Arc::new(limits));
        self
    }

    /// Serves repeated requests from `cache`.
    pub fn with_cache(mut self, cache: ChatCache) -> Self {
        self.cache = Some(cache);
        self
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
        let asked = request.model.as_deref().unwrap_or(&self.models.default);
        let watch = Watch::new(
            self.recorder.clone(),
            route,
            &principal.tenant,
            asked,
            started,
        );
        match self.events(principal, route, request, started).await {
            Ok(events) => Ok(ChatStream::watched(events, watch)),
            Err(e) => {
                watch.failed(e.code());
                Err(e)
            }
        }
    }

    async fn events(
        &self,
        principal: &Principal,
        route: Route,
        request: ChatRequest,
        started: Instant,
    ) -> Result<EventStream, Error> {
        let request_id: Arc<str> = Arc::from(request.id());
        let span = tracing::info_span!(
            "chat",
            request_id = %request_id,
            tenant = %principal.tenant,
            model = field::Empty
        );

        // The transport verified `principal` before it got here.
        if let Some(limits) = &self.limits {
            let span = crate::trace_span!("limits.admit");
            limits.admit(principal).instrument(span).await?;
        }
        let (name, why) = self.models.pick(&request, &principal.tenant)?;
        let model_id = self.models.resolve(Some(name), self.provider.as_ref())?;
        let chain = self.models.chain(Some(name), &model_id);
        span.record("model", model_id.as_str());
        span.in_scope(|| tracing::debug!(routed_by = ?why, "model chosen"));

        let (history, recorder) = match &self.memory {
            None if request.conversation_id.is_some() => {
                return Err(Error::InvalidRequest(
                    "conversation_id: conversation memory is not enabled on this server".into(),
                ));
            }
            None => (Vec::new(), None),
            Some(memory) => match memory
                .recall(principal, &request, &model_id)
                .instrument(crate::trace_span!("history.load"))
                .await?
            {
                Recall::Replay {
                    conversation_id,
                    answer,
                } => {
                    span.in_scope(|| {
                        tracing::info!("retried request: replaying the stored answer")
                    });
                    return Ok(replay_turn(
                        request_id,
                        conversation_id,
                        model_id,
                        answer,
                        started,
                        self.options.channel_capacity,
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
        let delivery = Delivery {
            request_id,
            conversation_id: recorder.as_ref().map(|r| r.conversation_id().to_owned()),
            model: model_id,
            recorder,
            started,
            capacity: self.options.channel_capacity,
        };
        // Runs only when the model is called: a cache hit, or a request joining another's
        // flight, reserves no tokens and takes no upstream slot.
        let upstream = async {
            let (provider, breakers) = (self.provider.as_ref(), self.breakers.as_ref());
            let Some(limits) = &self.limits else {
                return upstream::open(provider, breakers, provider_request, &chain, None).await;
            };
            let input = estimate_prompt_tokens(&provider_request);
            let max_tokens = provider_request.inference.max_tokens;
            let reservation = limits
                .reserve(principal, input, max_tokens)
                .instrument(crate::trace_span!("limits.reserve"))
                .await?;
            let opened = match limits.upstream_slot().await {
                Ok(slot) => {
                    upstream::open(provider, breakers, provider_request, &chain, slot).await
                }
                Err(e) => Err(e),
            };
            match opened {
                Ok(upstream) => Ok(reservation.settle_on_usage(upstream)),
                Err(e) => {
                    // Nothing reached the model, so nothing was used.
                    reservation.settle(0).await;
                    Err(e)
                }
            }
        };
        // The stream's work, and a flight's producer task, made here inherit the span.
        let events = async {
            match (&self.cache, plan) {
                (Some(cache), Some(plan)) => cache.serve(plan, delivery, upstream).await,
                _ => flight::solo(delivery, upstream).await,
            }
        }
        .instrument(span.clone())
        .await;
        events.inspect_err(|e| span.in_scope(|| log_failure(e, started)))
    }
}

/// The prompt's tokens as the limits count them before the model has: system and messages.
fn estimate_prompt_tokens(request: &ProviderRequest) -> u64 {
    let system = request.system.as_deref().map_or(0, estimate_tokens);
    let messages: usize = request
        .messages
        .iter()
        .map(|m| estimate_tokens(&m.content))
        .sum();
    (system + messages) as u64
}

/// The stored answer of a retried request id, as a stream: no model call, nothing recorded.
fn replay_turn(
    request_id: Arc<str>,
    conversation_id: String,
    model: String,
    answer: Turn,
    started: Instant,
    capacity: usize,
) -> EventStream {
    let usage = answer.usage.unwrap_or_default();
    let stored = CachedResponse {
        model: model.clone(),
        breaks: Vec::new(),
        stop_reason: answer.stop_reason.unwrap_or_else(|| "end_turn".into()),
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        created_at_ms: answer.created_at,
        text: answer.content,
    };
    let delivery = Delivery {
        request_id,
        conversation_id: Some(conversation_id),
        model,
        recorder: None,
        started,
        capacity,
    };
    flight::replay(Arc::new(stored), delivery, false)
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::chat::ChatEvent;
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
