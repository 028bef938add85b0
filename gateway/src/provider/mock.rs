//! The embedded model: deterministic, paced like a real one, with failure scenarios chosen by
//! model id so every error path of every transport is reachable without AWS.
//!
//! | model id | behaviour |
//! |---|---|
//! | `mock` | a reply derived from the prompt, paced by `[provider.mock]` |
//! | `mock.slow` | 800 ms to the first token, then 15 tokens/s |
//! | `mock.long` | about 1,500 words |
//! | `mock.throttle-N` | the first N calls are throttled, later ones succeed |
//! | `mock.error-midstream` | three deltas, then an `upstream_error` |
//! | `mock.stall` | never produces a token |
//!
//! Any of them answers tools, tool results, reasoning and response formats as
//! [`mock_agent`](crate::provider::mock_agent) describes.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use sha2::{Digest, Sha256};
use tokio::time::Sleep;

use crate::chat::{Part, Usage};
use crate::error::Error;
use crate::provider::mock_agent::{self, BLOCKED_ASSESSMENT, BLOCKED_MESSAGE, Ending, fragments};
use crate::provider::mock_text::estimate_tokens;
use crate::provider::mock_text::{default_word_count, input_tokens, reply_tokens};
use crate::provider::{
    EmbedRequest, Embedding, ModelProvider, ProviderEvent, ProviderRequest, ProviderStream,
};

/// Pacing of the plain `mock` model; zero means as fast as possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockSettings {
    pub ttft_ms: u64,
    pub tokens_per_second: u64,
}

impl Default for MockSettings {
    fn default() -> Self {
        Self {
            ttft_ms: 200,
            tokens_per_second: 50,
        }
    }
}

impl MockSettings {
    /// No pacing at all: for benchmarks and tests.
    pub fn unpaced() -> Self {
        Self {
            ttft_ms: 0,
            tokens_per_second: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Normal,
    Slow,
    Long,
    Throttle(u64),
    ErrorMidstream,
    Stall,
}

impl Scenario {
    fn parse(model_id: &str) -> Option<Self> {
        match model_id {
            "mock" => Some(Self::Normal),
            "mock.slow" => Some(Self::Slow),
            "mock.long" => Some(Self::Long),
            "mock.error-midstream" => Some(Self::ErrorMidstream),
            "mock.stall" => Some(Self::Stall),
            other => other
                .strip_prefix("mock.throttle-")
                .and_then(|n| n.parse().ok())
                .map(Self::Throttle),
        }
    }
}

/// The embedded mock model provider.
#[derive(Debug, Default)]
pub struct MockProvider {
    settings: MockSettings,
    calls: Mutex<HashMap<String, u64>>,
    /// Prompt prefixes cached at a cache point, as Bedrock keeps them.
    cached_prefixes: Mutex<HashSet<[u8; 32]>>,
}

impl MockProvider {
    pub fn new(settings: MockSettings) -> Self {
        Self {
            settings,
            calls: Mutex::default(),
            cached_prefixes: Mutex::default(),
        }
    }

    /// Prompt-cache tokens (read, written) for `request`, as Bedrock counts them: each cache
    /// point ends a prefix (the tools, then the system prompt, then the history); the longest
    /// prefix an earlier request wrote is read, and the rest up to the last point is written.
    fn prompt_cache(&self, request: &ProviderRequest) -> (u64, u64) {
        let Some(points) = request.cache_points() else {
            return (0, 0);
        };
        let history = points.after_message.map_or(0, |i| i + 1);
        let history = &request.messages[..history.min(request.messages.len())];
        let prefixes = [
            serde_json::json!({ "tools": request.tools }),
            serde_json::json!({ "tools": request.tools, "system": request.system }),
            serde_json::json!({ "tools": request.tools, "system": request.system, "messages": history }),
        ]
        .map(|p| p.to_string());
        let mut seen = self
            .cached_prefixes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut read = 0;
        for prefix in &prefixes {
            let digest: [u8; 32] = Sha256::digest(prefix.as_bytes()).into();
            if !seen.insert(digest) {
                read = estimate_tokens(prefix);
            }
        }
        let whole = prefixes.last().map_or(0, |p| estimate_tokens(p));
        (read, whole.saturating_sub(read))
    }

    /// Counts a call to `model_id` and returns how many there have been, this one included.
    fn count_call(&self, model_id: &str) -> u64 {
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let n = calls.entry(model_id.to_owned()).or_default();
        *n += 1;
        *n
    }
}

struct Plan {
    events: Vec<ProviderEvent>,
    /// A guardrail's assessment, sent with the usage.
    assessment: Option<Vec<String>>,
    stop_reason: &'static str,
    usage: Usage,
    ttft: Duration,
    gap: Duration,
    fail_after: Option<usize>,
    stall: bool,
}

#[async_trait]
impl ModelProvider for MockProvider {
    fn name(&self) -> &'static str {
        "mock"
    }

    fn recognizes(&self, model_id: &str) -> bool {
        Scenario::parse(model_id).is_some()
    }

    async fn embed(&self, request: EmbedRequest) -> Result<Embedding, Error> {
        Ok(crate::provider::mock_embed::embed(&request))
    }

    async fn converse_stream(&self, request: ProviderRequest) -> Result<ProviderStream, Error> {
        let scenario = Scenario::parse(&request.model_id).ok_or_else(|| {
            Error::InvalidRequest(format!("model: unknown model '{}'", request.model_id))
        })?;
        let call = self.count_call(&request.model_id);
        if let Scenario::Throttle(n) = scenario
            && call <= n
        {
            return Err(Error::UpstreamThrottled {
                message: format!("mock throttle {call} of {n}"),
                retry_after: Some(Duration::from_millis(100)),
            });
        }
        let mut plan = self.plan(scenario, &request)?;
        let (read, write) = self.prompt_cache(&request);
        let usage = &mut plan.usage;
        usage.input_tokens = usage.input_tokens.saturating_sub(read + write).max(1);
        usage.cache_read_input_tokens = read;
        usage.cache_write_input_tokens = write;
        Ok(play(plan))
    }
}

impl MockProvider {
    fn plan(&self, scenario: Scenario, request: &ProviderRequest) -> Result<Plan, Error> {
        let agent = mock_agent::plan(request)?;
        let words = match scenario {
            Scenario::Long => 1500,
            _ => default_word_count(request),
        };
        // One token past `max_tokens` tells a reply cut short from one that ended there.
        let limit = request
            .inference
            .max_tokens
            .map_or(usize::MAX, |n| (n as usize).saturating_add(1));
        let blocked = matches!(agent.ending, Ending::Blocked);
        let (tokens, stop_reason) = match agent.ending {
            Ending::ToolUse => (Vec::new(), "tool_use"),
            Ending::Blocked => (fragments(BLOCKED_MESSAGE), "guardrail_intervened"),
            Ending::Fixed(text) => cut(fragments(&text), request),
            Ending::Text => cut(reply_tokens(request, words, limit), request),
        };
        let mut events = agent.events;
        let blocks_before = !events.is_empty();
        let output_tokens = events.len() + tokens.len();
        let index = agent.text_index;
        let had_text = !tokens.is_empty();
        events.extend(
            tokens
                .into_iter()
                .map(|text| ProviderEvent::Part(Part::Text { index, text })),
        );
        if blocks_before && had_text {
            events.push(ProviderEvent::BlockStop(index));
        }
        let (ttft_ms, tps) = match scenario {
            Scenario::Slow => (800, 15),
            _ => (self.settings.ttft_ms, self.settings.tokens_per_second),
        };
        Ok(Plan {
            assessment: blocked.then(|| vec![BLOCKED_ASSESSMENT.to_owned()]),
            usage: Usage::new(input_tokens(request), output_tokens as u64),
            events,
            stop_reason,
            ttft: Duration::from_millis(ttft_ms),
            gap: match tps {
                0 => Duration::ZERO,
                n => Duration::from_micros(1_000_000 / n),
            },
            fail_after: (scenario == Scenario::ErrorMidstream).then_some(3),
            stall: scenario == Scenario::Stall,
        })
    }
}

/// Applies `max_tokens` and stop sequences the way a model does.
fn cut(tokens: Vec<String>, request: &ProviderRequest) -> (Vec<String>, &'static str) {
    let max = request
        .inference
        .max_tokens
        .map_or(usize::MAX, |n| n as usize);
    let stops = request.inference.stop.as_deref().unwrap_or_default();
    let mut text = String::new();
    let mut out = Vec::new();
    for token in tokens {
        if out.len() == max {
            return (out, "max_tokens");
        }
        text.push_str(&token);
        out.push(token);
        if let Some(at) = stops.iter().filter_map(|s| text.find(s.as_str())).min() {
            // The stop sequence may span tokens: keep exactly the text before it.
            return (truncate_tokens(out, at), "stop_sequence");
        }
    }
    (out, "end_turn")
}

/// The shortest prefix of `tokens` holding the first `len` bytes of their concatenation.
fn truncate_tokens(tokens: Vec<String>, len: usize) -> Vec<String> {
    let mut kept = Vec::new();
    let mut total = 0;
    for token in tokens {
        if total + token.len() <= len {
            total += token.len();
            kept.push(token);
        } else {
            if total < len {
                kept.push(token[..len - total].to_owned());
            }
            break;
        }
    }
    kept
}

fn play(plan: Plan) -> ProviderStream {
    Box::pin(Playback {
        start: tokio::time::Instant::now(),
        events: plan.events.into_iter(),
        sent: 0,
        timer: None,
        tail: [
            plan.assessment.map(ProviderEvent::Guardrail),
            Some(ProviderEvent::Stop {
                stop_reason: plan.stop_reason.to_owned(),
            }),
            Some(ProviderEvent::Usage(plan.usage)),
        ],
        ttft: plan.ttft,
        gap: plan.gap,
        fail_after: plan.fail_after,
        stall: plan.stall,
    })
}

/// The mock's answer as a model stream: token i is due at a fixed time from the start, so timer
/// lateness never accumulates and a client can tell how late each delta reached it (the
/// benchmarks' per-delta latency). Written out by hand rather than from stream combinators: at
/// thousands of concurrent streams the mock should cost little next to the gateway it drives.
struct Playback {
    start: tokio::time::Instant,
    events: std::vec::IntoIter<ProviderEvent>,
    /// Deltas yielded so far.
    sent: usize,
    /// One timer, re-armed for each due time; none while nothing waits.
    timer: Option<Pin<Box<Sleep>>>,
    /// A guardrail's assessment, the stop reason and usage, after the last delta.
    tail: [Option<ProviderEvent>; 3],
    ttft: Duration,
    gap: Duration,
    fail_after: Option<usize>,
    stall: bool,
}

impl Playback {
    /// When the next delta is due.
    fn due(&self) -> tokio::time::Instant {
        self.start + self.ttft + self.gap * self.sent as u32
    }

    /// Ready once `due` has passed.
    fn wait(&mut self, due: tokio::time::Instant, cx: &mut Context<'_>) -> Poll<()> {
        if due <= self.start {
            return Poll::Ready(());
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if timer.deadline() != due {
            timer.as_mut().reset(due);
        }
        timer.as_mut().poll(cx)
    }
}

impl Stream for Playback {
    type Item = Result<ProviderEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.stall {
            // Its time to first token, then never a token, and never a wake-up.
            ready!(this.wait(this.start + this.ttft, cx));
            return Poll::Pending;
        }
        if this.events.len() > 0 {
            ready!(this.wait(this.due(), cx));
            if this.fail_after == Some(this.sent) {
                // Nothing follows an error, as with a real model stream.
                this.events = Default::default();
                this.tail = [None, None, None];
                return Poll::Ready(Some(Err(Error::UpstreamError {
                    message: "the mock model failed mid-stream".into(),
                    retryable: false,
                })));
            }
            this.sent += 1;
            return Poll::Ready(this.events.next().map(Ok));
        }
        Poll::Ready(this.tail.iter_mut().find_map(Option::take).map(Ok))
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::chat::InferenceParams;
    use crate::chat::{Message, Role};

    fn req(model: &str, text: &str, inference: InferenceParams) -> ProviderRequest {
        ProviderRequest {
            model_id: model.into(),
            messages: vec![Message::text(Role::User, text)],
            inference,
            ..Default::default()
        }
    }

    fn provider() -> MockProvider {
        MockProvider::new(MockSettings::unpaced())
    }

    #[tokio::test]
    async fn reply_is_complete_and_counted() {
        let c = provider()
            .converse(req("mock", "hello there", InferenceParams::default()))
            .await
            .unwrap();
        assert!(c.text.starts_with("You said: hello there."));
        assert_eq!(c.stop_reason, "end_turn");
        assert_eq!(c.usage.input_tokens, 3);
        assert!(c.usage.output_tokens > 16);
    }

    #[tokio::test]
    async fn max_tokens_and_stop_sequences_cut_the_reply() {
        let p = provider();
        let short = InferenceParams {
            max_tokens: Some(2),
            ..Default::default()
        };
        let c = p.converse(req("mock", "hello", short)).await.unwrap();
        assert_eq!(
            (c.text.as_str(), c.stop_reason.as_str()),
            ("You said", "max_tokens")
        );
        assert_eq!(c.usage.output_tokens, 2);
        let stop = InferenceParams {
            stop: Some(vec!["id: he".into()]),
            ..Default::default()
        };
        let c = p.converse(req("mock", "hello", stop)).await.unwrap();
        assert_eq!(
            (c.text.as_str(), c.stop_reason.as_str()),
            ("You sa", "stop_sequence")
        );
    }

    #[tokio::test]
    async fn throttle_n_throttles_the_first_n_calls() {
        let p = provider();
        for _ in 0..2 {
            let err = p
                .converse(req("mock.throttle-2", "x", InferenceParams::default()))
                .await
                .unwrap_err();
            assert_eq!(err.code().as_str(), "upstream_throttled");
        }
        p.converse(req("mock.throttle-2", "x", InferenceParams::default()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn error_midstream_ends_the_stream_after_three_deltas() {
        let mut s = provider()
            .converse_stream(req("mock.error-midstream", "x", InferenceParams::default()))
            .await
            .unwrap();
        let mut deltas = 0;
        let mut last = None;
        while let Some(item) = s.next().await {
            match item {
                Ok(ProviderEvent::Part(_)) => deltas += 1,
                other => last = Some(other),
            }
        }
        assert_eq!(deltas, 3);
        assert!(matches!(last, Some(Err(Error::UpstreamError { .. }))));
    }

    #[tokio::test(start_paused = true)]
    async fn stall_never_yields_and_unknown_models_are_rejected() {
        let p = provider();
        let mut s = p
            .converse_stream(req("mock.stall", "x", InferenceParams::default()))
            .await
            .unwrap();
        let waited = tokio::time::timeout(Duration::from_secs(3600), s.next()).await;
        assert!(waited.is_err(), "stall produced an event");
        assert!(!p.recognizes("mock.nope"));
        assert!(p.recognizes("mock.throttle-3"));
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_follows_settings() {
        let p = MockProvider::new(MockSettings {
            ttft_ms: 100,
            tokens_per_second: 10,
        });
        let start = tokio::time::Instant::now();
        let c = p
            .converse(req("mock", "hello", InferenceParams::default()))
            .await
            .unwrap();
        // Paused time advances exactly by the sleeps: ttft plus one gap per later token.
        let expected = Duration::from_millis(100 + 100 * (c.usage.output_tokens - 1));
        assert_eq!(start.elapsed(), expected);
    }
}
