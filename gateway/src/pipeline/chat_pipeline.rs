//! The one streaming pipeline. Every transport parses its input into a [`ChatRequest`], has the
//! pipeline admit it ([`ChatPipeline::admit`] checks every field), starts the [`Admitted`] chat and
//! forwards the [`ChatStream`] it gets to its own sink.

use std::sync::Arc;
use std::time::Instant;

use nagare_authorizer::Principal;
use nagare_cache::CachedResponse;
use tracing::Instrument;

use crate::chat::{
    ChatRequest, Message, RequestLimits, Role, Route, check_reasoning, check_tool_results,
    joined_text, parts_of_blocks,
};
use crate::error::Error;
use crate::lifecycle::{InFlight, Lifecycle};
use crate::limits::Limits;
use crate::pipeline::attachments;
use crate::pipeline::cache::CacheAsk;
use crate::pipeline::contract::{GuardrailRule, PromptCacheSettings, guardrail_for};
use crate::pipeline::embeddings::{EmbedAsk, Embedded, Embedder, EmbeddingSettings};
use crate::pipeline::estimate::estimate_prompt_tokens;
use crate::pipeline::event_stream::EventStream;
use crate::pipeline::flight::{self, Delivery, Upstream, log_failure};
use crate::pipeline::knowledge::{self, Grounder};
use crate::pipeline::memory::Recall;
use crate::pipeline::observe::{Deadline, Watch};
use crate::pipeline::upstream;
use crate::pipeline::{ChatCache, ChatStream, Memory, ModelCatalog, estimate_tokens};
use crate::provider::{Breakers, Family, ModelProvider, ProviderRequest};
use crate::store::Turn;
use crate::telemetry::{NoRecorder, Recorder};
use crate::uploads::Attach;

/// Knobs of the pipeline, from the config.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub limits: RequestLimits,
    /// Events buffered between the model and a slow client before the model is paused.
    pub channel_capacity: usize,
    /// Put prompt text in the logs. Off by default: prompts may hold personal data.
    pub log_prompts: bool,
    /// Automatic prompt-cache points.
    pub prompt_cache: PromptCacheSettings,
    /// Guardrails by route and tenant.
    pub guardrails: Vec<GuardrailRule>,
    /// `/v1/embeddings`.
    pub embeddings: EmbeddingSettings,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            limits: RequestLimits::default(),
            channel_capacity: 64,
            log_prompts: false,
            prompt_cache: PromptCacheSettings::default(),
            guardrails: Vec::new(),
            embeddings: EmbeddingSettings::default(),
        }
    }
}

/// A chat request the pipeline has checked, with who asked, on which route and when.
/// Only [`ChatPipeline::admit`] makes one, so [`ChatPipeline::start`] never sees an unchecked
/// request.
#[derive(Debug)]
pub struct Admitted {
    request: ChatRequest,
    principal: Principal,
    route: Route,
    started: Instant,
    in_flight: InFlight,
}

impl Admitted {
    /// The request id (the client's, or the one admission gave it).
    pub fn request_id(&self) -> &str {
        self.request.id()
    }

    /// The checked request.
    pub fn request(&self) -> &ChatRequest {
        &self.request
    }

    /// The checked request, to keep for later (a task, a hand-off to another function); it is
    /// admitted again when it runs.
    pub fn into_request(self) -> ChatRequest {
        self.request
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
    lifecycle: Arc<Lifecycle>,
    attach: Option<Attach>,
    knowledge: Option<Grounder>,
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
            lifecycle: Lifecycle::new(),
            attach: None,
            knowledge: None,
        }
    }

    /// Answers chats that name a knowledge base from the passages `grounder` finds; without it
    /// they are refused.
    pub fn with_knowledge(mut self, grounder: Grounder) -> Self {
        self.knowledge = Some(grounder);
        self
    }

    /// Embeds texts for `principal` (`/v1/embeddings`) under its limits, through the cache.
    pub async fn embed(
        &self,
        principal: &Principal,
        route: Route,
        ask: EmbedAsk,
    ) -> Result<Embedded, Error> {
        let embedder = Embedder {
            provider: self.provider.as_ref(),
            settings: &self.options.embeddings,
            cache: self.cache.as_ref(),
            limits: self.limits.as_deref(),
        };
        embedder
            .embed(principal, route, ask)
            .instrument(crate::trace_span!("embed"))
            .await
    }

    /// The embedding model and the other names it answers to.
    pub fn embedding_names(&self) -> Vec<String> {
        let e = &self.options.embeddings;
        std::iter::once(e.model.clone())
            .chain(e.aliases.iter().cloned())
            .collect()
    }

    /// The model names (aliases and model ids) `tenant` may ask for.
    pub fn model_names(&self, tenant: &str) -> Vec<String> {
        self.models.names_for(tenant)
    }

    /// Takes images and documents, resolving them with `attach`; without it they are refused.
    pub fn with_attachments(mut self, attach: Attach) -> Self {
        self.attach = Some(attach);
        self
    }

    /// Refuses new chats once `lifecycle` drains, and ends the ones still streaming when its
    /// grace period is over.
    pub fn with_lifecycle(mut self, lifecycle: Arc<Lifecycle>) -> Self {
        self.lifecycle = lifecycle;
        self
    }

    /// Reports every chat to `recorder` (metrics).
    pub fn with_recorder(mut self, recorder: Arc<dyn Recorder>) -> Self {
        self.recorder = recorder;
        self
    }

    /// Skips models whose circuit `breakers` has opened, for their fallbacks.
    pub fn with_breakers(mut self, breakers: Arc<Breakers>) -> Self {
        self.breakers = breakers;
        self
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

    /// Checks every field of `request` against the request limits and gives it its request id
    /// (the client's, or a new one): the only way to a chat [`ChatPipeline::start`] accepts.
    /// `started` is when the request arrived, for its latency.
    pub fn admit(
        &self,
        request: ChatRequest,
        principal: &Principal,
        route: Route,
        started: Instant,
    ) -> Result<Admitted, Error> {
        if self.lifecycle.is_draining() {
            return Err(Error::shutting_down());
        }
        let request =
            request.validate(&self.options.limits, || uuid::Uuid::new_v4().to_string())?;
        request.check_transcript(self.records(route))?;
        Ok(Admitted {
            request,
            principal: principal.clone(),
            route,
            started,
            in_flight: self.lifecycle.chat(),
        })
    }

    /// Whether chats on `route` whose client sends the whole conversation are recorded.
    fn records(&self, route: Route) -> bool {
        route.is_dialect() && self.memory.as_ref().is_some_and(Memory::records_dialects)
    }

    /// Checks now what [`ChatPipeline::start`] would refuse later whatever the wait, for work
    /// that runs later (a task): a conversation the caller does not own (or memory off), and a
    /// request larger than the caller's token limits allow in a whole window. A task that would
    /// fail so is refused at submission instead.
    pub async fn check_ahead(&self, chat: &Admitted) -> Result<(), Error> {
        if let Some(limits) = &self.limits {
            // The history is not read yet: the new message is a lower bound of the prompt.
            let request = &chat.request;
            let turns = request.sent_history().iter().map(|m| m.content.as_slice());
            let new_turn = request.new_turn();
            let prompt = estimate_prompt_tokens(
                request.system.as_deref(),
                turns.chain(std::iter::once(new_turn.as_slice())),
            );
            limits.fits(&chat.principal, prompt, request.inference.max_tokens)?;
        }
        if chat.request.knowledge_base.is_some() && self.knowledge.is_none() {
            return Err(knowledge::off());
        }
        let Some(id) = &chat.request.conversation_id else {
            return Ok(());
        };
        match &self.memory {
            None => Err(memory_off()),
            Some(memory) => memory.check_owner(&chat.principal, id).await,
        }
    }

    /// Starts an admitted chat. Failures before the model accepted the request (unknown model,
    /// throttled, unreachable) are returned here so a transport can still answer with an HTTP
    /// status; everything after is an event in the stream, which always ends with `done` or
    /// `error`.
    pub async fn start(&self, chat: Admitted) -> Result<ChatStream, Error> {
        let Admitted {
            request,
            principal,
            route,
            started,
            in_flight,
        } = chat;
        let principal = &principal;
        let asked = request.model.as_deref().unwrap_or(&self.models.default);
        let watch = Watch::new(
            self.recorder.clone(),
            route,
            &principal.tenant,
            asked,
            started,
        );
        let request_id: Arc<str> = Arc::from(request.id());
        let over = self.lifecycle.over();
        let events = tokio::select! {
            events = self.events(principal, route, request, started) => events,
            () = over.cancelled() => Err(Error::shutting_down()),
        };
        match events {
            Ok(events) => {
                let deadline = Deadline {
                    request_id,
                    over: Box::pin(over.cancelled_owned()),
                    _in_flight: in_flight,
                };
                Ok(ChatStream::watched(events, watch, deadline))
            }
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
        // The transport verified `principal` before it got here.
        if let Some(limits) = &self.limits {
            let span = crate::trace_span!("limits.admit");
            limits.admit(principal).instrument(span).await?;
        }
        let (name, why) = self.models.pick(&request, &principal.tenant)?;
        let model_id = self.models.resolve(Some(name), self.provider.as_ref())?;
        if let Some(reasoning) = &request.reasoning
            && Family::of(&model_id).checks_reasoning()
        {
            check_reasoning(reasoning, &request.inference, request.tool_choice.as_ref())?;
        }
        let chain = self.models.chain(Some(name), &model_id);
        // Made once the model is known (nothing above runs inside it): recording a field later
        // costs the JSON logs a re-parse of all the span's fields.
        let span = tracing::info_span!(
            "chat",
            request_id = %request_id,
            tenant = %principal.tenant,
            model = model_id.as_str(),
        );
        span.in_scope(|| tracing::debug!(routed_by = ?why, "model chosen"));

        let mut new_turn = request.new_turn();
        let attach = self.attach.as_ref();
        attachments::new_turn(attach, principal, &request, &mut new_turn).await?;
        let (mut history, recorder) = match &self.memory {
            None if request.conversation_id.is_some() => return Err(memory_off()),
            // The client keeps the conversation: nothing to recall, and nothing to record unless
            // the operator records this route.
            memory if request.messages.is_some() => {
                let mut sent = request.sent_history().to_vec();
                attachments::sent_history(attach, principal, &mut sent).await?;
                let recorder = match memory {
                    Some(memory) if self.records(route) => {
                        Some(memory.transcript(principal, &request, &new_turn).await?)
                    }
                    _ => None,
                };
                (sent, recorder)
            }
            None => {
                check_tool_results("content", &[], &new_turn)?;
                (Vec::new(), None)
            }
            Some(memory) => match memory
                .recall(principal, &request, &new_turn, &model_id)
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
        if recorder.is_some() && request.messages.is_none() {
            attachments::recalled(attach, &mut history, &new_turn).await?;
        }
        let grounder = self.knowledge.as_ref();
        let named = request.knowledge_base.as_ref();
        let grounding = knowledge::ground(grounder, principal, route, named, &history, &new_turn)
            .instrument(span.clone())
            .await?;
        let sources = grounding.as_ref().map(|g| g.sources().into());
        if self.options.log_prompts {
            span.in_scope(
                || tracing::info!(prompt = %joined_text(&new_turn), system = ?request.system, "prompt"),
            );
        }
        let ask = CacheAsk {
            mode: request.cache,
            scope: request.cache_scope,
            multi_turn: request.conversation_id.is_some(),
        };
        let new_turn = Message {
            role: Role::User,
            content: new_turn,
        };
        let options = &self.options;
        let cache_points = options
            .prompt_cache
            .points(history.len(), request.prompt_cache);
        let guardrail = guardrail_for(&options.guardrails, route, &principal.tenant).cloned();
        let provider_request = ProviderRequest {
            model_id: model_id.clone(),
            system: request.system,
            messages: history.into_iter().chain([new_turn]).collect(),
            inference: request.inference,
            tools: request.tools,
            tool_choice: request.tool_choice,
            reasoning: request.reasoning,
            response_format: request.response_format,
            cache_points,
            guardrail,
            grounding,
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
            sources,
        };
        // Runs only when the model is called: a cache hit, or a request joining another's
        // flight, reserves no tokens and takes no upstream slot.
        let upstream = async {
            let (provider, breakers) = (self.provider.as_ref(), self.breakers.as_ref());
            let Some(limits) = &self.limits else {
                return upstream::open(provider, breakers, provider_request, &chain, None).await;
            };
            let turns = provider_request
                .messages
                .iter()
                .map(|m| m.content.as_slice());
            let passages = provider_request.grounding.as_ref();
            let passages = passages.map_or(0, |g| estimate_tokens(&g.prompt()) as u64);
            let input =
                estimate_prompt_tokens(provider_request.system.as_deref(), turns) + passages;
            let max_tokens = provider_request.inference.max_tokens;
            let reservation = limits
                .reserve(principal, input, max_tokens)
                .instrument(crate::trace_span!("limits.reserve"))
                .await?;
            let opened = match limits.upstream_slot(principal).await {
                Ok(slot) => {
                    upstream::open(provider, breakers, provider_request, &chain, slot).await
                }
                Err(e) => Err(e),
            };
            match opened {
                Ok(upstream) => Ok(Upstream {
                    stream: reservation.settle_on_usage(upstream.stream),
                    ..upstream
                }),
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

/// A chat names a conversation on a server that keeps none.
fn memory_off() -> Error {
    Error::InvalidRequest(
        "conversation_id: conversation memory is not enabled on this server".into(),
    )
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
    let parts = parts_of_blocks(&answer.blocks());
    let sources = answer.sources.map(Into::into);
    let stored = CachedResponse {
        model: model.clone(),
        breaks: Vec::new(),
        parts: String::new(),
        stop_reason: answer.stop_reason.unwrap_or_else(|| "end_turn".into()),
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        created_at_ms: answer.created_at,
        text: String::new(),
    };
    let delivery = Delivery {
        request_id,
        conversation_id: Some(conversation_id),
        model,
        recorder: None,
        started,
        capacity,
        sources,
    };
    flight::replay(Arc::new(stored), parts, delivery, false)
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::chat::ChatEvent;
    use crate::pipeline::test_support::{alice, mock_pipeline};

    fn admit(pipeline: &ChatPipeline, body: &str) -> Result<Admitted, Error> {
        let request = crate::chat::parse_chat_request(body.as_bytes())?;
        pipeline.admit(request, &alice(), Route::Chat, Instant::now())
    }

    async fn start(pipeline: &ChatPipeline, body: &str) -> Result<ChatStream, Error> {
        pipeline.start(admit(pipeline, body)?).await
    }

    async fn events(body: &str) -> Vec<ChatEvent> {
        start(&mock_pipeline(), body).await.unwrap().collect().await
    }

    #[test]
    fn admission_checks_the_request_and_gives_it_an_id() {
        let p = mock_pipeline();
        let admitted = admit(&p, r#"{"message":"hello"}"#).unwrap();
        assert!(!admitted.request_id().is_empty());
        let kept = admit(&p, r#"{"message":"hello","request_id":"r-1"}"#).unwrap();
        assert_eq!(kept.request_id(), "r-1");
        let err = admit(&p, r#"{"message":"hi","inference":{"max_tokens":0}}"#).unwrap_err();
        assert!(err.to_string().contains("inference.max_tokens"), "{err}");
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
        let err = start(&p, r#"{"message":"x","model":"mock.throttle-1"}"#)
            .await
            .err()
            .unwrap();
        assert_eq!(err.code().as_str(), "upstream_throttled");
        let err = start(&p, r#"{"message":"x","model":"nope"}"#)
            .await
            .err()
            .unwrap();
        assert_eq!(err.code().as_str(), "invalid_request");
        let err = start(&p, r#"{"message":"x","conversation_id":"c1"}"#)
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("conversation_id"));
    }
}
