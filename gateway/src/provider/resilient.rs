//! Upstream resilience around any [`ModelProvider`]: retries with exponential backoff and full
//! jitter for failures before the first token, a first-token timeout, and an idle timeout that
//! aborts a stream that has gone quiet. Nothing is retried once a token has been produced: by then
//! the client may have it, and a retry would repeat or contradict it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::{Stream, StreamExt, stream};
use tokio::time::{Instant, Sleep};

use crate::error::Error;
use crate::provider::{
    BreakerSettings, EmbedRequest, Embedding, ModelProvider, ProviderEvent, ProviderRequest,
    ProviderStream,
};
use crate::telemetry::{NoRecorder, Recorder};

/// `[upstream]` settings.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    /// Calls per request, the first included; 1 turns retries off.
    pub max_attempts: u32,
    /// Backoff before retry n is uniform in 0..=min(backoff_max_ms, backoff_base_ms · 2^(n-1)),
    /// and never shorter than the upstream's own retry hint.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// No retry starts later than this after the first call.
    pub retry_budget_ms: u64,
    /// A call with no first event after this long fails as `upstream_timeout` (and is retried).
    pub first_token_timeout_ms: u64,
    /// A stream with no event for this long is aborted as `upstream_timeout`.
    pub idle_timeout_ms: u64,
    /// A call, retries included, that has not finished streaming after this long is aborted as
    /// `upstream_timeout`.
    pub total_timeout_ms: u64,
    /// When a model is skipped for its fallbacks.
    pub breaker: BreakerSettings,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff_base_ms: 100,
            backoff_max_ms: 2_000,
            retry_budget_ms: 10_000,
            first_token_timeout_ms: 60_000,
            idle_timeout_ms: 60_000,
            total_timeout_ms: 600_000,
            breaker: BreakerSettings::default(),
        }
    }
}

impl UpstreamSettings {
    /// Checks the values model calls cannot run with; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 || self.first_token_timeout_ms == 0 || self.idle_timeout_ms == 0 {
            return Err(
                "upstream: max_attempts, first_token_timeout_ms and idle_timeout_ms must be at least 1"
                    .into(),
            );
        }
        if !(0.0..=1.0).contains(&self.breaker.failure_rate) {
            return Err("upstream.breaker.failure_rate: must be between 0 and 1".into());
        }
        Ok(())
    }
}

/// A provider that retries and times out the one it wraps.
pub struct ResilientProvider {
    inner: Arc<dyn ModelProvider>,
    settings: UpstreamSettings,
    recorder: Arc<dyn Recorder>,
}

impl ResilientProvider {
    pub fn new(inner: Arc<dyn ModelProvider>, settings: UpstreamSettings) -> Self {
        Self {
            inner,
            settings,
            recorder: Arc::new(NoRecorder),
        }
    }

    /// Counts every retry in `recorder`.
    pub fn with_recorder(mut self, recorder: Arc<dyn Recorder>) -> Self {
        self.recorder = recorder;
        self
    }

    /// One call, up to its first event: the stream with that event put back in front.
    async fn attempt(&self, request: ProviderRequest) -> Result<ProviderStream, Error> {
        let first_token = Duration::from_millis(self.settings.first_token_timeout_ms);
        let call = async {
            let mut stream = self.inner.converse_stream(request).await?;
            match stream.next().await {
                Some(Err(e)) => Err(e),
                Some(Ok(first)) => Ok(stream::once(async { Ok(first) }).chain(stream).boxed()),
                // An empty stream is incomplete; the pipeline says so.
                None => Ok(stream),
            }
        };
        tokio::time::timeout(first_token, call)
            .await
            .unwrap_or_else(|_| {
                Err(Error::UpstreamTimeout(format!(
                    "no first token within {} ms",
                    first_token.as_millis()
                )))
            })
    }

    /// How long to wait before attempt `next` (2, 3, ...) after `error`.
    fn backoff(&self, next: u32, error: &Error) -> Duration {
        let ceiling = self
            .settings
            .backoff_base_ms
            .saturating_mul(1 << (next - 2).min(20))
            .min(self.settings.backoff_max_ms);
        // Full jitter: spreads the retries of many clients that failed together.
        let random = getrandom::u64().unwrap_or(u64::MAX / 2);
        let jittered = Duration::from_millis(random % (ceiling + 1));
        jittered.max(error.retry_after().unwrap_or_default())
    }
}

/// The failures worth another call: the upstream's, when it says they are transient.
fn retryable(error: &Error) -> bool {
    error.retryable() && !matches!(error, Error::RateLimited { .. })
}

#[async_trait]
impl ModelProvider for ResilientProvider {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn recognizes(&self, model_id: &str) -> bool {
        self.inner.recognizes(model_id)
    }

    async fn converse_stream(&self, request: ProviderRequest) -> Result<ProviderStream, Error> {
        let total = Duration::from_millis(self.settings.total_timeout_ms);
        let ends = Instant::now() + total;
        tokio::time::timeout_at(ends, self.open(request))
            .await
            .unwrap_or_else(|_| Err(total_timeout(total)))
            .map(|stream| {
                let idle = Duration::from_millis(self.settings.idle_timeout_ms);
                timeouts(stream, idle, ends, total)
            })
    }

    /// Embeds with the same retries; each call has the first-token timeout, all of them the
    /// total one.
    async fn embed(&self, request: EmbedRequest) -> Result<Embedding, Error> {
        let total = Duration::from_millis(self.settings.total_timeout_ms);
        let each = Duration::from_millis(self.settings.first_token_timeout_ms);
        let call = || async {
            tokio::time::timeout(each, self.inner.embed(request.clone()))
                .await
                .unwrap_or_else(|_| {
                    Err(Error::UpstreamTimeout(format!(
                        "no embedding within {} ms",
                        each.as_millis()
                    )))
                })
        };
        tokio::time::timeout(total, self.retrying(&request.model_id, call))
            .await
            .unwrap_or_else(|_| Err(total_timeout(total)))
    }
}

fn total_timeout(total: Duration) -> Error {
    Error::UpstreamTimeout(format!(
        "the model did not finish within {} ms",
        total.as_millis()
    ))
}

impl ResilientProvider {
    /// Calls until a stream has begun, retrying as the settings allow.
    async fn open(&self, request: ProviderRequest) -> Result<ProviderStream, Error> {
        self.retrying(&request.model_id, || self.attempt(request.clone()))
            .await
    }

    /// Runs `call` until it succeeds, retrying what is retryable as the settings allow.
    async fn retrying<T, F, Fut>(&self, model_id: &str, mut call: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let budget_ends = Instant::now() + Duration::from_millis(self.settings.retry_budget_ms);
        let mut attempt = 1;
        loop {
            let error = match call().await {
                Ok(done) => return Ok(done),
                Err(e) => e,
            };
            if attempt >= self.settings.max_attempts || !retryable(&error) {
                return Err(error);
            }
            attempt += 1;
            let wait = self.backoff(attempt, &error);
            if Instant::now() + wait > budget_ends {
                return Err(error);
            }
            tracing::info!(
                model = %model_id,
                attempt,
                wait_ms = wait.as_millis() as u64,
                code = error.code().as_str(),
                "retrying the model call"
            );
            self.recorder.retry(model_id);
            tokio::time::sleep(wait).await;
        }
    }
}

/// Ends `stream` with `upstream_timeout` if it yields nothing for `idle`, or is still going at
/// `ends`; dropping the inner stream aborts the upstream call.
fn timeouts(
    stream: ProviderStream,
    idle: Duration,
    ends: Instant,
    total: Duration,
) -> ProviderStream {
    let now = Instant::now();
    Box::pin(Watched {
        inner: Some(stream),
        timer: Box::pin(tokio::time::sleep_until((now + idle).min(ends))),
        last: now,
        idle,
        ends,
        total,
    })
}

/// A stream with an idle and a total deadline. One timer serves both: it is re-armed only when
/// it fires, from the time of the last event, so a stream of many quick events does not touch
/// the timer wheel once per event.
struct Watched {
    inner: Option<ProviderStream>,
    timer: Pin<Box<Sleep>>,
    last: Instant,
    idle: Duration,
    ends: Instant,
    total: Duration,
}

impl Stream for Watched {
    type Item = Result<ProviderEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        // A stream whose events are always ready never lets the timer fire: check the end here.
        let now = Instant::now();
        if now >= this.ends {
            this.inner = None;
            return Poll::Ready(Some(Err(total_timeout(this.total))));
        }
        match inner.poll_next_unpin(cx) {
            Poll::Ready(Some(item)) => {
                this.last = now;
                return Poll::Ready(Some(item));
            }
            Poll::Ready(None) => {
                this.inner = None;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        while this.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let error = if now >= this.ends {
                total_timeout(this.total)
            } else if now >= this.last + this.idle {
                Error::UpstreamTimeout(format!(
                    "the model sent nothing for {} ms",
                    this.idle.as_millis()
                ))
            } else {
                let due = (this.last + this.idle).min(this.ends);
                this.timer.as_mut().reset(due);
                continue;
            };
            this.inner = None;
            return Poll::Ready(Some(Err(error)));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::provider::ProviderEvent;

    /// What one call of [`Scripted`] does.
    enum Call {
        Fail(Error),
        /// The stream's items, with `None` for "never yields again".
        Stream(Vec<Option<Result<ProviderEvent, Error>>>),
    }

    /// Plays one [`Call`] per call, and counts the calls.
    struct Scripted {
        calls: Mutex<Vec<Call>>,
        made: AtomicU32,
    }

    impl Scripted {
        fn new(calls: Vec<Call>) -> Arc<Self> {
            Arc::new(Self {
                calls: Mutex::new(calls.into_iter().rev().collect()),
                made: AtomicU32::new(0),
            })
        }
    }

    #[async_trait]
    impl ModelProvider for Scripted {
        fn name(&self) -> &'static str {
            "scripted"
        }

        async fn converse_stream(&self, _: ProviderRequest) -> Result<ProviderStream, Error> {
            self.made.fetch_add(1, Ordering::SeqCst);
            match self
                .calls
                .lock()
                .unwrap()
                .pop()
                .expect("an unscripted call")
            {
                Call::Fail(e) => Err(e),
                Call::Stream(items) => Ok(stream::iter(items)
                    .then(|item| async move {
                        match item {
                            Some(item) => item,
                            None => futures::future::pending().await,
                        }
                    })
                    .boxed()),
            }
        }
    }

    fn throttled() -> Error {
        Error::UpstreamThrottled {
            message: "slow down".into(),
            retry_after: None,
        }
    }

    fn answer() -> Call {
        Call::Stream(vec![
            Some(Ok(ProviderEvent::text("hi"))),
            Some(Ok(ProviderEvent::Stop {
                stop_reason: "end_turn".into(),
            })),
        ])
    }

    fn request() -> ProviderRequest {
        ProviderRequest {
            model_id: "m".into(),
            ..Default::default()
        }
    }

    fn resilient(inner: &Arc<Scripted>, settings: UpstreamSettings) -> ResilientProvider {
        ResilientProvider::new(inner.clone(), settings)
    }

    async fn texts(stream: ProviderStream) -> Vec<Result<ProviderEvent, String>> {
        stream
            .map(|item| item.map_err(|e| e.code().as_str().to_owned()))
            .collect()
            .await
    }

    #[tokio::test(start_paused = true)]
    async fn throttled_twice_then_served_takes_three_calls() {
        let inner = Scripted::new(vec![
            Call::Fail(throttled()),
            Call::Fail(throttled()),
            answer(),
        ]);
        let p = resilient(&inner, UpstreamSettings::default());
        let stream = p.converse_stream(request()).await.unwrap();
        let events = texts(stream).await;
        assert_eq!(events[0], Ok(ProviderEvent::text("hi")));
        assert_eq!(inner.made.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_and_the_budget_bound_the_retries() {
        let forever = || (0..5).map(|_| Call::Fail(throttled())).collect::<Vec<_>>();
        let inner = Scripted::new(forever());
        let p = resilient(&inner, UpstreamSettings::default());
        let err = p.converse_stream(request()).await.err().unwrap();
        assert_eq!(err.code().as_str(), "upstream_throttled");
        assert_eq!(inner.made.load(Ordering::SeqCst), 3);

        // A hint longer than the budget: no retry at all.
        let hinted = Error::UpstreamThrottled {
            message: "later".into(),
            retry_after: Some(Duration::from_secs(60)),
        };
        let inner = Scripted::new(vec![Call::Fail(hinted)]);
        let p = resilient(&inner, UpstreamSettings::default());
        let started = Instant::now();
        assert!(p.converse_stream(request()).await.is_err());
        assert_eq!(inner.made.load(Ordering::SeqCst), 1);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_waits_at_least_the_upstream_hint() {
        let hinted = Error::UpstreamThrottled {
            message: "later".into(),
            retry_after: Some(Duration::from_millis(700)),
        };
        let inner = Scripted::new(vec![Call::Fail(hinted), answer()]);
        let p = resilient(&inner, UpstreamSettings::default());
        let started = Instant::now();
        assert!(p.converse_stream(request()).await.is_ok());
        assert!(started.elapsed() >= Duration::from_millis(700));
        assert_eq!(inner.made.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn client_errors_are_not_retried() {
        let inner = Scripted::new(vec![Call::Fail(Error::InvalidRequest("no".into()))]);
        let p = resilient(&inner, UpstreamSettings::default());
        let err = p.converse_stream(request()).await.err().unwrap();
        assert_eq!(err.code().as_str(), "invalid_request");
        assert_eq!(inner.made.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_before_the_first_token_is_retried_but_not_after_it() {
        let early = Call::Stream(vec![Some(Err(throttled()))]);
        let inner = Scripted::new(vec![early, answer()]);
        let p = resilient(&inner, UpstreamSettings::default());
        assert!(p.converse_stream(request()).await.is_ok());
        assert_eq!(inner.made.load(Ordering::SeqCst), 2);

        let late = Call::Stream(vec![
            Some(Ok(ProviderEvent::text("half"))),
            Some(Err(throttled())),
        ]);
        let inner = Scripted::new(vec![late]);
        let p = resilient(&inner, UpstreamSettings::default());
        let events = texts(p.converse_stream(request()).await.unwrap()).await;
        assert_eq!(
            events,
            [
                Ok(ProviderEvent::text("half")),
                Err("upstream_throttled".into())
            ]
        );
        assert_eq!(inner.made.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn silence_times_out_before_and_after_the_first_token() {
        let settings = UpstreamSettings {
            max_attempts: 2,
            first_token_timeout_ms: 1_000,
            idle_timeout_ms: 500,
            ..UpstreamSettings::default()
        };
        let stall = || Call::Stream(vec![None]);
        let inner = Scripted::new(vec![stall(), stall()]);
        let p = resilient(&inner, settings.clone());
        let err = p.converse_stream(request()).await.err().unwrap();
        assert_eq!(err.code().as_str(), "upstream_timeout");
        assert_eq!(inner.made.load(Ordering::SeqCst), 2);

        let stalls_later = Call::Stream(vec![Some(Ok(ProviderEvent::text("a"))), None]);
        let inner = Scripted::new(vec![stalls_later]);
        let p = resilient(&inner, settings.clone());
        let events = texts(p.converse_stream(request()).await.unwrap()).await;
        assert_eq!(
            events,
            [Ok(ProviderEvent::text("a")), Err("upstream_timeout".into())]
        );

        // A stream that keeps talking is still cut off at the total timeout.
        let chatty = (0..100)
            .map(|_| Some(Ok(ProviderEvent::text("x"))))
            .collect();
        let inner = Scripted::new(vec![Call::Stream(chatty)]);
        let total = UpstreamSettings {
            total_timeout_ms: 1_000,
            ..settings.clone()
        };
        let p = resilient(&inner, total);
        let started = Instant::now();
        let stream = p.converse_stream(request()).await.unwrap();
        let paced = stream.then(|item| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            item
        });
        let events: Vec<_> = paced.collect().await;
        assert!(
            matches!(events.last(), Some(Err(Error::UpstreamTimeout(m))) if m.contains("finish"))
        );
        assert!(events.len() < 100);
        assert!(started.elapsed() <= Duration::from_millis(1_200));
        let stalls_later = Call::Stream(vec![Some(Ok(ProviderEvent::text("a"))), None]);
        let inner = Scripted::new(vec![stalls_later]);
        let p = resilient(&inner, settings);
        let events = texts(p.converse_stream(request()).await.unwrap()).await;
        assert_eq!(
            events,
            [Ok(ProviderEvent::text("a")), Err("upstream_timeout".into())]
        );
    }
}
