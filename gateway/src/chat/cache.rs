//! The response cache in the pipeline. A cacheable request is keyed on the final model request
//! (history included) and its scope. A hit is replayed as a normal stream with `cached: true`.
//! A miss joins an identical request already in flight, or leads a new flight: one producer
//! moves the model's stream into the flight, and every request in it gets its own delivery task,
//! which turns pieces into that request's events and records its exchange. A complete answer is
//! stored; a failed, cancelled or oversized one is not.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use nagare_authorizer::Principal;
use nagare_cache::key::{KeyInput, key};
use nagare_cache::{
    CacheKey, CacheSettings, CachedResponse, Flight, Flights, Joined, Mode, ResponseCache,
    Subscription,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use crate::chat::memory::Recorder;
use crate::chat::{CacheMode, CacheScope, ChatEvent, ChatStream, Usage};
use crate::error::{Error, ErrorBody};
use crate::provider::{ProviderEvent, ProviderRequest, ProviderStream, Role, incomplete_stream};
use crate::store::unix_now_ms;

/// The token scope that lets a request read and write the `global` cache scope.
pub const GLOBAL_SCOPE: &str = "cache:global";

/// Which transport a request came in on; the cache mode can differ per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/chat`
    Chat,
    /// `POST /v1/chat/stream`
    ChatStream,
    /// `GET /v1/ws`
    WebSocket,
    /// The API Gateway WebSocket API (`nagare-ws`).
    LambdaWebSocket,
}

impl Route {
    pub fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::ChatStream => "chat_stream",
            Self::WebSocket => "websocket",
            Self::LambdaWebSocket => "lambda_websocket",
        }
    }
}

/// What moves from a flight's producer to each request in it.
#[derive(Debug, Clone)]
pub enum Piece {
    Delta(String),
    Done { stop_reason: String, usage: Usage },
    Failed(ErrorBody),
}

/// The cache and the flights in progress.
pub struct ChatCache {
    cache: Arc<ResponseCache>,
    flights: Arc<Flights<Piece>>,
    settings: CacheSettings,
}

/// What a request asks of the cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheAsk {
    pub mode: CacheMode,
    pub scope: Option<CacheScope>,
    /// It continues a conversation.
    pub multi_turn: bool,
}

/// What the cache may do for one request.
pub struct Plan {
    key: CacheKey,
    read: bool,
    write: bool,
}

/// Everything a delivery task needs to speak for one request.
pub struct Delivery {
    pub request_id: Arc<str>,
    pub model: String,
    pub recorder: Option<Recorder>,
    pub started: Instant,
}

impl ChatCache {
    pub fn new(cache: Arc<ResponseCache>, settings: CacheSettings) -> Self {
        Self {
            cache,
            flights: Arc::new(Flights::default()),
            settings,
        }
    }

    pub fn cache(&self) -> &Arc<ResponseCache> {
        &self.cache
    }

    /// Flights in progress (for tests and reports).
    pub fn flights_in_progress(&self) -> usize {
        self.flights.len()
    }

    /// Decides how `request` may use the cache; `None` when it may not at all.
    pub fn plan(
        &self,
        principal: &Principal,
        route: Route,
        ask: CacheAsk,
        model_request: &ProviderRequest,
    ) -> Result<Option<Plan>, Error> {
        let scope = match ask.scope.unwrap_or_default() {
            CacheScope::Tenant => principal.tenant.as_str(),
            CacheScope::Global if principal.has_scope(GLOBAL_SCOPE) => "global",
            CacheScope::Global => {
                return Err(Error::Forbidden(format!(
                    "cache_scope: global needs the {GLOBAL_SCOPE} scope"
                )));
            }
        };
        let mode = self
            .settings
            .mode_for(route.name(), &principal.tenant, ask.multi_turn);
        let (read, write) = match ask.mode {
            CacheMode::Default => (mode.reads(), mode.writes()),
            CacheMode::Refresh => (false, mode.writes()),
            CacheMode::Bypass => (false, false),
        };
        if mode == Mode::Off || !(read || write) {
            return Ok(None);
        }
        Ok(Some(Plan {
            key: key_of(scope, model_request),
            read,
            write,
        }))
    }

    /// Serves `plan` from the cache or a flight, or starts the upstream call with `upstream`.
    pub async fn serve<F>(
        &self,
        plan: Plan,
        delivery: Delivery,
        upstream: F,
    ) -> Result<ChatStream, Error>
    where
        F: Future<Output = Result<ProviderStream, Error>>,
    {
        if plan.read
            && let Some((hit, _tier)) = self.cache.get(&plan.key).await
        {
            self.cache.saved(&hit);
            return Ok(replay(hit, delivery));
        }
        // Only a request that may read the cache may share another's answer.
        let (flight, subscription, registered) = if plan.read {
            match self.flights.join(plan.key) {
                Joined::Follower(sub) => {
                    self.cache
                        .metrics()
                        .coalesced
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Ok(deliver(sub, delivery, true));
                }
                Joined::Leader(flight, sub) => (flight, sub, true),
            }
        } else {
            // A refresh must not share another request's answer: it flies alone.
            let (flight, sub) = Flight::lead();
            (flight, sub, false)
        };
        let upstream = match upstream.await {
            Ok(upstream) => upstream,
            Err(e) => {
                if registered {
                    // Followers that joined meanwhile get the same failure.
                    flight.push(Piece::Failed(e.body()));
                    flight.finish();
                    self.flights.land(&plan.key, &flight);
                }
                return Err(e);
            }
        };
        let producer = Producer {
            cache: self.cache.clone(),
            flights: registered.then(|| self.flights.clone()),
            key: plan.key,
            write: plan.write,
            model: delivery.model.clone(),
            started: delivery.started,
        };
        tokio::spawn(producer.run(upstream, flight).in_current_span());
        Ok(deliver(subscription, delivery, false))
    }
}

/// The key of a model request in `scope`.
fn key_of(scope: &str, r: &ProviderRequest) -> CacheKey {
    let messages: Vec<(&str, &str)> = r
        .messages
        .iter()
        .map(|m| {
            let role = match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            (role, m.content.as_str())
        })
        .collect();
    key(&KeyInput {
        scope,
        model_id: &r.model_id,
        system: r.system.as_deref(),
        messages: &messages,
        max_tokens: r.inference.max_tokens,
        temperature: r.inference.temperature,
        top_p: r.inference.top_p,
        stop: r.inference.stop.as_deref().unwrap_or_default(),
    })
}

/// Moves one upstream stream into a flight, and stores the complete answer.
struct Producer {
    cache: Arc<ResponseCache>,
    /// Set when the flight is registered and must be landed when done.
    flights: Option<Arc<Flights<Piece>>>,
    key: CacheKey,
    write: bool,
    model: String,
    started: Instant,
}

impl Producer {
    async fn run(self, mut upstream: ProviderStream, flight: Arc<Flight<Piece>>) {
        let mut answer = CachedResponse {
            model: self.model.clone(),
            text: String::new(),
            breaks: Vec::new(),
            stop_reason: String::new(),
            input_tokens: 0,
            output_tokens: 0,
            created_at_ms: unix_now_ms(),
        };
        let (mut stop_reason, mut usage) = (None, None);
        loop {
            let next = tokio::select! {
                biased;
                () = flight.abandoned() => {
                    // Everyone left: dropping `upstream` aborts the model call.
                    tracing::info!(
                        outcome = "cancelled",
                        latency_ms = self.started.elapsed().as_millis() as u64,
                        "chat cancelled by every client; upstream stream dropped"
                    );
                    return self.land(&flight);
                }
                next = upstream.next() => next,
            };
            match next {
                Some(Ok(ProviderEvent::Delta(text))) => {
                    answer.push_delta(&text);
                    flight.push(Piece::Delta(text));
                }
                Some(Ok(ProviderEvent::Stop { stop_reason: r })) => stop_reason = Some(r),
                Some(Ok(ProviderEvent::Usage(u))) => usage = Some(u),
                Some(Err(e)) => return self.fail(&flight, &e),
                None => break,
            }
        }
        let (Some(stop_reason), Some(usage)) = (stop_reason, usage) else {
            return self.fail(&flight, &incomplete_stream());
        };
        tracing::info!(
            outcome = "done",
            stop_reason = %stop_reason,
            input_tokens = usage.input_tokens,
            output_tokens = usage.output_tokens,
            latency_ms = self.started.elapsed().as_millis() as u64,
            "chat finished"
        );
        flight.push(Piece::Done {
            stop_reason: stop_reason.clone(),
            usage,
        });
        flight.finish();
        if self.write {
            answer.stop_reason = stop_reason;
            answer.input_tokens = usage.input_tokens;
            answer.output_tokens = usage.output_tokens;
            self.cache.put(&self.key, answer).await;
        }
        self.land(&flight);
    }

    fn fail(&self, flight: &Arc<Flight<Piece>>, e: &Error) {
        tracing::warn!(outcome = "error", code = e.code().as_str(), error = %e, "chat failed");
        flight.push(Piece::Failed(e.body()));
        flight.finish();
        self.land(flight);
    }

    fn land(&self, flight: &Arc<Flight<Piece>>) {
        if let Some(flights) = &self.flights {
            flights.land(&self.key, flight);
        }
    }
}

/// A request's own view of a flight: its events, its exchange recorded before its `done`.
fn deliver(mut sub: Subscription<Piece>, d: Delivery, cached: bool) -> ChatStream {
    let (tx, rx) = mpsc::channel(64);
    let task = async move {
        let mut answer = d.recorder.as_ref().map(|_| String::new());
        if tx.send(start_event(&d, cached)).await.is_err() {
            return;
        }
        loop {
            let piece = tokio::select! {
                biased;
                // The client left: unsubscribing lets the producer stop if no one else reads.
                () = tx.closed() => return,
                piece = sub.next() => piece,
            };
            let event = match piece {
                Some(Piece::Delta(text)) => {
                    if let Some(answer) = &mut answer {
                        answer.push_str(&text);
                    }
                    ChatEvent::Delta {
                        request_id: d.request_id.clone(),
                        text,
                    }
                }
                Some(Piece::Done { stop_reason, usage }) => {
                    drop(sub);
                    let done = finish(&d, answer.take(), stop_reason, usage, cached).await;
                    let _ = tx.send(done).await;
                    return;
                }
                Some(Piece::Failed(error)) => ChatEvent::Error {
                    request_id: d.request_id.clone(),
                    error,
                },
                None => return,
            };
            let terminal = event.is_terminal();
            if tx.send(event).await.is_err() || terminal {
                return;
            }
        }
    };
    tokio::spawn(task.in_current_span());
    ReceiverStream::new(rx)
}

/// A stored answer, replayed at once as the original deltas.
fn replay(hit: Arc<CachedResponse>, d: Delivery) -> ChatStream {
    let (tx, rx) = mpsc::channel(64);
    let task = async move {
        if tx.send(start_event(&d, true)).await.is_err() {
            return;
        }
        for text in hit.deltas() {
            let delta = ChatEvent::Delta {
                request_id: d.request_id.clone(),
                text: text.to_owned(),
            };
            if tx.send(delta).await.is_err() {
                return;
            }
        }
        let usage = Usage {
            input_tokens: hit.input_tokens,
            output_tokens: hit.output_tokens,
        };
        let answer = d.recorder.as_ref().map(|_| hit.text.clone());
        let done = finish(&d, answer, hit.stop_reason.clone(), usage, true).await;
        let _ = tx.send(done).await;
    };
    tokio::spawn(task.in_current_span());
    ReceiverStream::new(rx)
}

fn start_event(d: &Delivery, cached: bool) -> ChatEvent {
    ChatEvent::Start {
        request_id: d.request_id.clone(),
        conversation_id: d.recorder.as_ref().map(|r| r.conversation_id().to_owned()),
        model: d.model.clone(),
        cached,
    }
}

/// Records the exchange (when memory is on) and builds the final event. A `cached` answer cost
/// nothing: its `billed_usage` is zero while `usage` reports what the model originally used.
async fn finish(
    d: &Delivery,
    answer: Option<String>,
    stop_reason: String,
    usage: Usage,
    cached: bool,
) -> ChatEvent {
    if let (Some(recorder), Some(answer)) = (&d.recorder, answer)
        && let Err(e) = recorder.record(answer, usage, &stop_reason).await
    {
        return ChatEvent::Error {
            request_id: d.request_id.clone(),
            error: e.body(),
        };
    }
    ChatEvent::Done {
        request_id: d.request_id.clone(),
        stop_reason,
        usage,
        latency_ms: d.started.elapsed().as_millis() as u64,
        cached,
        billed_usage: cached.then_some(Usage::default()),
    }
}
