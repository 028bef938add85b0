//! What the pipeline tells the metrics: one record per chat, one note per upstream retry. The
//! `Recorder` trait is the seam: `nagare serve` counts into Prometheus families, the Lambda
//! functions write CloudWatch Embedded Metric Format lines, tests count into memory.

use std::collections::HashSet;
use std::sync::RwLock;
use std::time::Duration;

use crate::chat::{Route, Usage};
use crate::error::ErrorCode;

/// How a chat ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `done` reached the client.
    Done,
    /// An `error` event, or a failure before the stream began.
    Failed(ErrorCode),
    /// The client left before the end.
    Cancelled,
}

impl Outcome {
    /// The `code` label: `ok`, `cancelled` or the error table's code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Done => "ok",
            Self::Failed(code) => code.as_str(),
            Self::Cancelled => "cancelled",
        }
    }
}

/// One chat, as the client saw it.
#[derive(Debug, Clone)]
pub struct ChatRecord<'a> {
    pub route: Route,
    /// The model that served, or the one asked for when none did.
    pub model: &'a str,
    pub tenant: &'a str,
    pub outcome: Outcome,
    /// Answered from the response cache: no model call.
    pub cached: bool,
    /// From the request's arrival to its last event.
    pub total: Duration,
    /// From the request's arrival to its first delta.
    pub first_delta: Option<Duration>,
    /// From the upstream call's start to the model's last event; `None` when no model was called
    /// for this request (a cache hit, a replayed retry, a failure before the call).
    pub upstream: Option<Duration>,
    /// What the model used; zero for a cached answer, which cost nothing.
    pub usage: Usage,
    /// A guardrail blocked the prompt or the answer (stop reason `guardrail_intervened`).
    pub guardrail_intervened: bool,
}

impl ChatRecord<'_> {
    /// What Nagare added to the model's time: total minus upstream, when a model was called.
    pub fn overhead(&self) -> Option<Duration> {
        self.upstream.map(|u| self.total.saturating_sub(u))
    }
}

/// Where the pipeline's numbers go.
pub trait Recorder: Send + Sync + 'static {
    fn chat(&self, record: &ChatRecord<'_>);
    /// A model call was retried (before its first token).
    fn retry(&self, model: &str);
}

/// Records nothing: metrics off.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRecorder;

impl Recorder for NoRecorder {
    fn chat(&self, _: &ChatRecord<'_>) {}
    fn retry(&self, _: &str) {}
}

/// Label value used once a bounded label set is full.
pub const OTHER: &str = "other";

/// A label whose values come from callers (tenants, model ids): the first `cap` distinct values
/// get their own series, later ones share [`OTHER`], so no client can grow the metrics without
/// bound.
#[derive(Debug)]
pub struct BoundedLabel {
    cap: usize,
    seen: RwLock<HashSet<String>>,
}

impl BoundedLabel {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            seen: RwLock::new(HashSet::new()),
        }
    }

    pub fn get<'a>(&self, value: &'a str) -> &'a str {
        if self
            .seen
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(value)
        {
            return value;
        }
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        if seen.contains(value) {
            return value;
        }
        if seen.len() < self.cap {
            seen.insert(value.to_owned());
            return value;
        }
        OTHER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_label_keeps_the_first_values_and_folds_the_rest() {
        let label = BoundedLabel::new(2);
        assert_eq!(label.get("a"), "a");
        assert_eq!(label.get("b"), "b");
        assert_eq!(label.get("c"), OTHER);
        assert_eq!(label.get("a"), "a");
        assert_eq!(BoundedLabel::new(0).get("a"), OTHER);
    }

    #[test]
    fn overhead_is_total_minus_upstream_and_needs_an_upstream() {
        let mut record = ChatRecord {
            route: Route::Chat,
            model: "m",
            tenant: "t",
            outcome: Outcome::Done,
            guardrail_intervened: false,
            cached: false,
            total: Duration::from_millis(50),
            first_delta: None,
            upstream: Some(Duration::from_millis(48)),
            usage: Usage::default(),
        };
        assert_eq!(record.overhead(), Some(Duration::from_millis(2)));
        record.upstream = None;
        assert_eq!(record.overhead(), None);
        assert_eq!(
            Outcome::Failed(ErrorCode::RateLimited).code(),
            "rate_limited"
        );
    }
}
