//! The stream a transport reads, watched on its way out: the first delta's time, how it ended,
//! the tokens it used. One [`ChatRecord`] goes to the recorder when the chat ends, or when the
//! client drops the stream early (cancelled).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tracing::Span;

use crate::chat::{ChatEvent, Route, Usage};
use crate::error::ErrorCode;
use crate::pipeline::event_stream::EventStream;
use crate::telemetry::{ChatRecord, Outcome, Recorder};

/// The events of one chat, in order. Dropping it cancels the upstream model call.
pub struct ChatStream {
    events: EventStream,
    watch: Option<Watch>,
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
        });
    }
}

impl ChatStream {
    pub(crate) fn watched(events: EventStream, mut watch: Watch) -> Self {
        watch.span = crate::trace_span!("delivery");
        Self {
            events,
            watch: Some(watch),
        }
    }

    fn see(&mut self, event: Option<&ChatEvent>) {
        let Some(watch) = &mut self.watch else {
            return;
        };
        match event {
            Some(ChatEvent::Start { model, .. }) => watch.model.clone_from(model),
            Some(ChatEvent::Delta { .. }) => {
                if watch.first_delta.is_none() {
                    watch.first_delta = Some(watch.started.elapsed());
                }
            }
            Some(ChatEvent::Done {
                usage,
                cached,
                billed_usage,
                upstream_time,
                ..
            }) => {
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
        let event = ready!(self.events.poll_next_unpin(cx));
        if self.watch.is_some() {
            self.see(event.as_ref());
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
