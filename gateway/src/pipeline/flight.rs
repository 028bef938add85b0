//! How a model stream reaches the requests that wait for it. A request that cannot share its
//! answer (not cacheable, or a refresh) reads the model itself: its producer is the work of its
//! own [`EventStream`], run by the reader's task. Cacheable requests go through a flight: a
//! producer task reads the model and pushes pieces into it (and stores the complete answer), and
//! each request reading it turns pieces into its own events, again as its stream's work. Either
//! way the exchange is recorded in the conversation before `done`, and when every reader has gone
//! the upstream stream is dropped, which aborts the model call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use nagare_cache::{CacheKey, CachedResponse, Flight, Flights, ResponseCache, Subscription};
use tracing::{Instrument, Span};

use crate::chat::{
    Answer, ChatEvent, Part, Reference, ToolCalls, Usage, batches, cited, joined_text,
};
use crate::error::{Error, ErrorBody};
use crate::pipeline::memory::Recorder;
use crate::provider::{ProviderEvent, ProviderStream, incomplete_stream};
use crate::store::unix_now_ms;
use crate::telemetry;

use crate::pipeline::event_stream::{EventSender, EventStream};
use crate::pipeline::kept::Kept;

/// What moves from a flight's producer to each request in it.
#[derive(Debug, Clone)]
pub enum Piece {
    /// The model that serves the flight (a fallback, perhaps): always the first piece.
    Started {
        model: String,
    },
    Part(Part),
    Done {
        stop_reason: String,
        usage: Usage,
        /// How long the model call took, from its start to its last event.
        upstream_time: Duration,
    },
    Failed(ErrorBody),
}

/// Everything a request's stream needs to speak for it.
pub struct Delivery {
    pub request_id: Arc<str>,
    /// The conversation named in `start`.
    pub conversation_id: Option<String>,
    /// The model named in `start` and recorded: the one that served.
    pub model: String,
    /// Records the exchange before `done`, when memory is on.
    pub recorder: Option<Recorder>,
    pub started: Instant,
    /// Events buffered for a slow client before its delivery pauses.
    pub capacity: usize,
    /// A knowledge-base chat's sources, sent after `start`; its `done` lists those cited.
    pub sources: Option<Arc<[Reference]>>,
}

impl Delivery {
    /// The answer is kept as it streams: to record it, or to find its citations.
    fn keeps_answer(&self) -> Option<Answer> {
        (self.recorder.is_some() || self.sources.is_some()).then(Answer::default)
    }
}

/// Where a producer stores the complete answer.
pub struct Store {
    pub cache: Arc<ResponseCache>,
    pub key: CacheKey,
    pub write: bool,
    /// Set when the flight is registered there, to land it when done.
    pub flights: Option<Arc<Flights<Piece>>>,
}

/// A model stream that has begun, and the model it comes from.
pub struct Upstream {
    pub stream: ProviderStream,
    pub model: String,
    /// When the call began (before retries and fallbacks), to time it.
    pub opened_at: Instant,
    /// The trace's model-call span, ended when the stream is.
    pub span: Span,
}

/// Starts the upstream call for a request that shares with no one: its stream's work is the
/// producer.
pub async fn solo<F>(mut delivery: Delivery, upstream: F) -> Result<EventStream, Error>
where
    F: Future<Output = Result<Upstream, Error>>,
{
    let upstream = upstream.await?;
    delivery.model.clone_from(&upstream.model);
    let (producer, stream) = Producer::new(upstream, None, delivery.started);
    Ok(EventStream::new(delivery.capacity, move |tx| {
        let output = Output::Direct {
            tx,
            answer: delivery.keeps_answer(),
            delivery,
        };
        producer.run(stream, output)
    }))
}

/// Runs the producer of `flight` in the background.
pub fn spawn_producer(
    upstream: Upstream,
    flight: Arc<Flight<Piece>>,
    d: &Delivery,
    store: Option<Store>,
) {
    let (producer, stream) = Producer::new(upstream, store, d.started);
    tokio::spawn(
        producer
            .run(stream, Output::Flight(flight))
            .in_current_span(),
    );
}

/// Where a producer's stream goes. One lives per chat, inside its producer, so the size
/// difference between the variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum Output {
    /// Pieces for everyone reading the flight.
    Flight(Arc<Flight<Piece>>),
    /// One request's events.
    Direct {
        tx: EventSender,
        delivery: Delivery,
        /// The answer so far, kept when it will be recorded.
        answer: Option<Answer>,
    },
}

impl Output {
    /// Resolves when no one reads any more. A direct reader runs the producer itself, so it
    /// leaves by dropping it (see [`Cancelled`]), never while it runs.
    async fn abandoned(&self) {
        match self {
            Self::Flight(flight) => flight.abandoned().await,
            Self::Direct { .. } => std::future::pending().await,
        }
    }

    async fn start(&self, model: &str) {
        match self {
            Self::Flight(flight) => flight.push(Piece::Started {
                model: model.to_owned(),
            }),
            Self::Direct { tx, delivery, .. } => open(tx, delivery, false).await,
        }
    }

    async fn part(&mut self, part: Part) {
        match self {
            Self::Flight(flight) => flight.push(Piece::Part(part)),
            Self::Direct {
                tx,
                delivery,
                answer,
            } => {
                if let Some(answer) = answer {
                    answer.push(&part);
                }
                tx.send(ChatEvent::of_part(delivery.request_id.clone(), part))
                    .await;
            }
        }
    }

    async fn done(&mut self, stop_reason: String, usage: Usage, upstream_time: Duration) {
        match self {
            Self::Flight(flight) => {
                flight.push(Piece::Done {
                    stop_reason,
                    usage,
                    upstream_time,
                });
                flight.finish();
            }
            Self::Direct {
                tx,
                delivery,
                answer,
            } => {
                let ended = Ended {
                    stop_reason,
                    usage,
                    cached: false,
                    upstream_time: Some(upstream_time),
                };
                let done = finish(delivery, answer.take(), ended).await;
                tx.send(done).await;
            }
        }
    }

    async fn failed(&self, error: ErrorBody) {
        match self {
            Self::Flight(flight) => {
                flight.push(Piece::Failed(error));
                flight.finish();
            }
            Self::Direct { tx, delivery, .. } => {
                let event = ChatEvent::Error {
                    request_id: delivery.request_id.clone(),
                    error,
                };
                tx.send(event).await;
            }
        }
    }
}

/// Moves one upstream stream into a flight, and stores the complete answer.
struct Producer {
    store: Option<Store>,
    model: String,
    started: Instant,
    opened_at: Instant,
    span: Span,
}

impl Producer {
    fn new(upstream: Upstream, store: Option<Store>, started: Instant) -> (Self, ProviderStream) {
        let producer = Self {
            store,
            model: upstream.model,
            started,
            opened_at: upstream.opened_at,
            span: upstream.span,
        };
        (producer, upstream.stream)
    }

    async fn run(self, mut upstream: ProviderStream, mut output: Output) {
        let keep = self.store.as_ref().is_some_and(|s| s.write);
        let mut kept = keep.then(|| Kept::new(&self.model, unix_now_ms()));
        let mut tools = ToolCalls::default();
        let cancelled = Cancelled(Some(self.started));
        let (mut stop_reason, mut usage) = (None, None);
        let mut assessment = Vec::new();
        output.start(&self.model).await;
        loop {
            let next = tokio::select! {
                biased;
                () = output.abandoned() => break,
                next = upstream.next() => next,
            };
            // A block's end completes a tool call, or fails the chat if its input is not JSON;
            // a stream that ends without closing a call ends it.
            let ended = next.is_none();
            let stopped = match next {
                Some(Ok(ProviderEvent::Part(part))) => {
                    tools.follow(&part);
                    if let Some(kept) = &mut kept {
                        kept.push(&part);
                    }
                    output.part(part).await;
                    continue;
                }
                Some(Ok(ProviderEvent::BlockStop(index))) => vec![index],
                Some(Ok(ProviderEvent::Stop { stop_reason: r })) => {
                    stop_reason = Some(r);
                    continue;
                }
                Some(Ok(ProviderEvent::Usage(u))) => {
                    usage = Some(u);
                    continue;
                }
                Some(Ok(ProviderEvent::Guardrail(summary))) => {
                    assessment = summary;
                    continue;
                }
                Some(Err(e)) => {
                    cancelled.disarm();
                    return self.fail(&output, &e).await;
                }
                None => tools.unfinished(),
            };
            for index in stopped {
                match tools.stop(index) {
                    Ok(Some(call)) => {
                        if let Some(kept) = &mut kept {
                            kept.push(&call);
                        }
                        output.part(call).await;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        cancelled.disarm();
                        return self.fail(&output, &e).await;
                    }
                }
            }
            if ended {
                cancelled.disarm();
                let (Some(stop_reason), Some(usage)) = (stop_reason, usage) else {
                    return self.fail(&output, &incomplete_stream()).await;
                };
                let ended = (stop_reason, usage, assessment);
                return self.complete(output, kept, ended).await;
            }
        }
        // Everyone left: dropping `upstream` aborts the model call, and `cancelled` says so.
        self.land(&output);
    }

    async fn complete(
        &self,
        mut output: Output,
        kept: Option<Kept>,
        (stop_reason, usage, assessment): (String, Usage, Vec<String>),
    ) {
        tracing::info!(
            outcome = "done",
            stop_reason = %stop_reason,
            input_tokens = usage.input_tokens,
            output_tokens = usage.output_tokens,
            latency_ms = self.started.elapsed().as_millis() as u64,
            "chat finished"
        );
        let upstream_time = self.opened_at.elapsed();
        telemetry::model_call_done(&self.span, &self.model, &usage, &stop_reason);
        output.done(stop_reason.clone(), usage, upstream_time).await;
        // An intervention is the guardrail's verdict on this request, not an answer to keep.
        let intervened = stop_reason == GUARDRAIL_INTERVENED;
        if intervened {
            tracing::warn!(
                model = %self.model,
                assessment = ?assessment,
                "a guardrail intervened"
            );
        }
        if let (Some(store), Some(kept), false) = (self.store.as_ref(), kept, intervened) {
            store
                .cache
                .put(&store.key, kept.finish(stop_reason, usage))
                .await;
        }
        self.land(&output);
    }

    async fn fail(&self, output: &Output, e: &Error) {
        log_failure(e, self.started);
        telemetry::record_error(&self.span, e.code().as_str());
        output.failed(e.body()).await;
        self.land(output);
    }

    fn land(&self, output: &Output) {
        if let (
            Some(Store {
                flights: Some(flights),
                key,
                ..
            }),
            Output::Flight(flight),
        ) = (&self.store, output)
        {
            flights.land(key, flight);
        }
    }
}

/// Bedrock's stop reason when a guardrail blocked the prompt or the answer.
pub const GUARDRAIL_INTERVENED: &str = "guardrail_intervened";

/// Logs a chat whose readers left before the model finished, when its producer ends or is dropped
/// mid-stream (a direct reader leaves that way), unless disarmed by the model's last event.
struct Cancelled(Option<Instant>);

impl Cancelled {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Cancelled {
    fn drop(&mut self) {
        if let Some(started) = self.0 {
            tracing::info!(
                outcome = "cancelled",
                latency_ms = started.elapsed().as_millis() as u64,
                "chat cancelled by the client; upstream stream dropped"
            );
        }
    }
}

pub fn log_failure(error: &Error, started: Instant) {
    tracing::warn!(
        outcome = "error",
        code = error.code().as_str(),
        error = %error,
        latency_ms = started.elapsed().as_millis() as u64,
        "chat failed"
    );
}

/// A request's own view of a flight: its events, its exchange recorded before its `done`. A
/// reader that drops the stream unsubscribes, which lets the producer stop if no one else reads.
pub fn deliver(mut sub: Subscription<Piece>, mut d: Delivery, cached: bool) -> EventStream {
    EventStream::new(d.capacity, move |tx| async move {
        let mut answer = d.keeps_answer();
        let mut started = false;
        loop {
            let piece = sub.next().await;
            // `start` names the model that serves the flight, which its first piece says.
            if !started {
                started = true;
                if let Some(Piece::Started { model }) = &piece {
                    d.model.clone_from(model);
                }
                open(&tx, &d, cached).await;
            }
            let event = match piece {
                Some(Piece::Started { .. }) => continue,
                Some(Piece::Part(part)) => {
                    if let Some(answer) = &mut answer {
                        answer.push(&part);
                    }
                    ChatEvent::of_part(d.request_id.clone(), part)
                }
                Some(Piece::Done {
                    stop_reason,
                    usage,
                    upstream_time,
                }) => {
                    drop(sub);
                    let ended = Ended {
                        stop_reason,
                        usage,
                        cached,
                        // A follower made no call of its own.
                        upstream_time: (!cached).then_some(upstream_time),
                    };
                    tx.send(finish(&d, answer.take(), ended).await).await;
                    return;
                }
                Some(Piece::Failed(error)) => ChatEvent::Error {
                    request_id: d.request_id.clone(),
                    error,
                },
                None => return,
            };
            let terminal = event.is_terminal();
            tx.send(event).await;
            if terminal {
                return;
            }
        }
    })
}

/// A stored answer, streamed at once as its original parts: a cache hit (`cached`), or the
/// answer of a retried request id.
pub fn replay(
    answer: Arc<CachedResponse>,
    parts: Vec<Part>,
    mut d: Delivery,
    cached: bool,
) -> EventStream {
    EventStream::new(d.capacity, move |tx| async move {
        // The model that wrote the answer, which a fallback may have been.
        d.model.clone_from(&answer.model);
        open(&tx, &d, cached).await;
        let mut recorded = d.keeps_answer();
        for part in parts {
            if let Some(recorded) = &mut recorded {
                recorded.push(&part);
            }
            tx.send(ChatEvent::of_part(d.request_id.clone(), part))
                .await;
        }
        let ended = Ended {
            stop_reason: answer.stop_reason.clone(),
            usage: Usage::new(answer.input_tokens, answer.output_tokens),
            cached,
            upstream_time: None,
        };
        tx.send(finish(&d, recorded, ended).await).await;
    })
}

/// A request's first events: `start`, then its sources when it has any.
async fn open(tx: &EventSender, d: &Delivery, cached: bool) {
    let start = ChatEvent::Start {
        request_id: d.request_id.clone(),
        conversation_id: d.conversation_id.clone(),
        model: d.model.clone(),
        cached,
    };
    tx.send(start).await;
    for batch in batches(d.sources.as_deref().unwrap_or_default()) {
        let sources = ChatEvent::Sources {
            request_id: d.request_id.clone(),
            sources: batch.to_vec(),
        };
        tx.send(sources).await;
    }
}

/// How a chat's answer ended, for its `done`.
struct Ended {
    stop_reason: String,
    usage: Usage,
    cached: bool,
    upstream_time: Option<Duration>,
}

/// Records the exchange (when memory is on) and builds the final event: a `done` only once the
/// exchange is saved. A `cached` answer cost nothing: its `billed_usage` is zero while `usage`
/// reports what the model originally used.
async fn finish(d: &Delivery, answer: Option<Answer>, ended: Ended) -> ChatEvent {
    let Ended {
        stop_reason,
        usage,
        cached,
        upstream_time,
    } = ended;
    let blocks = answer.map(Answer::into_blocks).unwrap_or_default();
    let citations = d
        .sources
        .as_ref()
        .map(|sources| cited(&joined_text(&blocks), sources.len()));
    if let Some(recorder) = &d.recorder
        && let Err(e) = recorder
            .record(&d.model, blocks, usage, &stop_reason, d.sources.as_deref())
            .instrument(crate::trace_span!("history.append"))
            .await
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
        citations,
        upstream_time,
    }
}
