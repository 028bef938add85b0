//! The stream a transport reads, watched on its way out: the first delta's time, how it ended,
//! the tokens it used. One [`ChatRecord`] goes to the recorder when the chat ends, or when the
//! client drops the stream early (cancelled).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tracing::Span;

use crate::chat::{ChatEvent, Route, Usage};
use crate::error::{Error, ErrorCode};
use crate::lifecycle::InFlight;
use crate::pipeline::event_stream::EventStream;
use crate::pipeline::flight::GUARDRAIL_INTERVENED;
use crate::telemetry::{ChatRecord, Outcome, Recorder};

/// The events of one chat, in order. Dropping it cancels the upstream model call.
pub struct ChatStream {
    /// `None` once the end of the shutdown grace period has cut the chat short.
    events: Option<EventStream>,
    watch: Option<Watch>,
    deadline: Option<Deadline>,
}

/// What ends a chat when the server's grace period is over, and the chat's place in the count
/// of chats in flight that shutdown waits on.
pub(crate) struct Deadline {
    pub request_id: std::sync::Arc<str>,
    pub over: Pin<Box<WaitForCancellationFutureOwned>>,
    pub _in_flight: InFlight,
}

/// What is known of a chat while it streams.
pub(crate) struct Watch {
    pub recorder: Arc<dyn Recorder>,
    pub route: Route,
    pub tenant: String,
    /// The model asked for, until `start` names the one that serves.
    pub model: String,
    pub started: Instant,
    first_delta: Option<Duration>,
    guardrail_intervened: bool,
    /// The trace's delivery span: from the first event ready to the last one taken.
    span: Span,
}

impl Watch {
    pub fn new(
        recorder: Arc<dyn Recorder>,
        route: Route,
        tenant: &str,
        model: &str,
        started: Instant,
    ) -> Self {
        Self {
            recorder,
            route,
            tenant: tenant.to_owned(),
            model: model.to_owned(),
            started,
            first_delta: None,
            guardrail_intervened: false,
            span: Span::none(),
        }
    }

    /// Records a chat that failed before its stream began.
    pub fn failed(self, code: ErrorCode) {
        self.end(Outcome::Failed(code), false, None, Usage::default());
    }

    fn end(self, outcome: Outcome, cached: bool, upstream: Option<Duration>, usage: Usage) {
        self.recorder.chat(&ChatRecord {
            route: self.route,
            model: &self.model,
            tenant: &self.tenant,
            outcome,
            cached,
            total: self.started.elapsed(),
            first_delta: self.first_delta,
            upstream,
            usage,
            guardrail_intervened: self.guardrail_intervened,
        });
    }
}

impl ChatStream {
    pub(crate) fn watched(events: EventStream, mut watch: Watch, deadline: Deadline) -> Self {
        watch.span = crate::trace_span!("delivery");
        Self {
            events: Some(events),
            watch: Some(watch),
            deadline: Some(deadline),
        }
    }

    fn see(&mut self, event: Option<&ChatEvent>) {
        let Some(watch) = &mut self.watch else {
            return;
        };
        match event {
            Some(ChatEvent::Start { model, .. }) => watch.model.clone_from(model),
            Some(e) if e.is_content() => {
                if watch.first_delta.is_none() {
                    watch.first_delta = Some(watch.started.elapsed());
                }
            }
            Some(ChatEvent::Done {
                usage,
                cached,
                billed_usage,
                upstream_time,
                stop_reason,
                ..
            }) => {
                watch.guardrail_intervened = stop_reason == GUARDRAIL_INTERVENED;
                // A cached answer is billed nothing: its tokens are the cache's savings.
                let used = billed_usage.unwrap_or(*usage);
                let (cached, upstream) = (*cached, *upstream_time);
                if let Some(w) = self.watch.take() {
                    w.end(Outcome::Done, cached, upstream, used);
                }
            }
            Some(ChatEvent::Error { error, .. }) => {
                let code = error.code;
                if let Some(w) = self.watch.take() {
                    w.end(Outcome::Failed(code), false, None, Usage::default());
                }
            }
            Some(_) => {}
            // The stream ended without its terminal event: the pipeline broke its promise.
            None => {
                if let Some(w) = self.watch.take() {
                    w.end(
                        Outcome::Failed(ErrorCode::Internal),
                        false,
                        None,
                        Usage::default(),
                    );
                }
            }
        }
    }
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("watched", &self.watch.is_some())
            .finish_non_exhaustive()
    }
}

impl Stream for ChatStream {
    type Item = ChatEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ChatEvent>> {
        let this = &mut *self;
        let Some(events) = &mut this.events else {
            return Poll::Ready(None);
        };
        let mut cut = None;
        if let Some(d) = &mut this.deadline
            && d.over.as_mut().poll(cx).is_ready()
        {
            cut = Some(d.request_id.clone());
        }
        let event = match cut {
            // Dropping the events aborts the model call; the client gets a last event.
            Some(request_id) => {
                this.events = None;
                Some(ChatEvent::Error {
                    request_id,
                    error: Error::shutting_down().body(),
                })
            }
            None => ready!(events.poll_next_unpin(cx)),
        };
        if event.as_ref().is_none_or(ChatEvent::is_terminal) {
            // No longer in flight: shutdown need not wait for the transport to write it.
            this.deadline = None;
        }
        if this.watch.is_some() {
            this.see(event.as_ref());
        }
        Poll::Ready(event)
    }
}

impl Drop for ChatStream {
    fn drop(&mut self) {
        if let Some(watch) = self.watch.take() {
            watch.end(Outcome::Cancelled, false, None, Usage::default());
        }
    }
}
