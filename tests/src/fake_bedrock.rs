//! A fake Amazon Bedrock Runtime speaking the real wire protocol: `POST /model/{id}/converse`
//! (JSON) and `POST /model/{id}/converse-stream` (`application/vnd.amazon.eventstream` frames),
//! so the real aws-sdk-bedrockruntime can be pointed at it with `endpoint_url`.
//!
//! Scenarios are chosen by model id:
//!
//! | model id | behaviour |
//! |---|---|
//! | anything else | four text deltas, `messageStop`, `metadata` |
//! | `fake.slow` | 50 ms between deltas, 40 deltas |
//! | `fake.long` | 2,000 deltas |
//! | `fake.markdown` | [`crate::samples::MARKDOWN`] in 7-byte deltas, 10 ms apart |
//! | `fake.huge` | four deltas of 20,000 characters each, with quotes and newlines to escape |
//! | `fake.throttle-N` | the first N calls get 429 `ThrottlingException` |
//! | `fake.unavailable` | 503 `ServiceUnavailableException` |
//! | `fake.validation` | 400 `ValidationException` |
//! | `fake.midstream-error` | two deltas, then an in-stream `modelStreamErrorException` |
//! | `fake.no-metadata` | deltas and `messageStop`, but the stream ends without `metadata` |
//! | `fake.stall` | `messageStart`, then nothing until the client goes away |
//!
//! `POST /model/{id}/invoke` serves Titan Text Embeddings v2 ([`crate::fake_embed`]).
//!
//! Whatever the model, a request whose images or documents break Bedrock's rules (formats,
//! counts, roles, a document's name and its text block) gets 400 `ValidationException`, as
//! Bedrock answers it ([`crate::fake_converse::attachment_violation`]).
//!
//! The Converse contract's scenarios ([`crate::fake_converse`]) write every frame in two HTTP
//! chunks, split mid-frame (inside a multi-byte character when the frame has one), as a real
//! connection may deliver them:
//!
//! | model id | behaviour |
//! |---|---|
//! | `fake.tools` | text, then a `get_weather` call whose input is split inside strings, escapes and a `\u` escape; once the last message holds its result, an answer that quotes it |
//! | `fake.parallel-tools` | two calls whose input fragments interleave |
//! | `fake.reasoning` | reasoning text, its signature, then text (or a tool call with tools) |
//! | `fake.redacted` | redacted reasoning, then text |
//! | `fake.cache` | usage with a prompt-cache write on the first call with cache points, reads after |
//! | `fake.guardrail` | some text, then `guardrail_intervened` with a guardrail trace |
//! | `fake.bad-tool-json` | a tool call whose input is not JSON |
//! | `fake.json` | a JSON answer |

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::serve::StopOnDrop;

/// Ten characters, two of which JSON escapes: `fake.huge` repeats it.
pub const HUGE_DELTA: &str = "ab\"cd\nefgh";

/// Counters a test reads to prove what happened upstream.
#[derive(Debug, Default)]
pub struct Counters {
    /// Every request, streaming or not, including the ones answered with an error.
    pub calls: AtomicU64,
    /// Streams written to the end.
    pub completed: AtomicU64,
    /// Streams whose client went away before the end.
    pub aborted: AtomicU64,
}

#[derive(Default)]
struct Shared {
    counters: Counters,
    per_model: Mutex<HashMap<String, u64>>,
    requests: Mutex<Vec<Value>>,
}

/// A running fake; it stops when dropped.
pub struct FakeBedrock {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: StopOnDrop,
}

/// The largest request the fake reads.
const FAKE_BODY_LIMIT: usize = 160 << 20;

impl FakeBedrock {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/model/{model}/converse", post(converse))
            .route("/model/{model}/converse-stream", post(converse_stream))
            .route("/model/{model}/invoke", post(invoke))
            // Twenty images of 3.75 MB, base64 in JSON, and five documents fit (axum's default
            // is 2 MB).
            .layer(axum::extract::DefaultBodyLimit::max(FAKE_BODY_LIMIT))
            .with_state(shared.clone());
        let (addr, stop) = crate::serve::spawn(app).await?;
        Ok(Self {
            addr,
            shared,
            _stop: stop,
        })
    }

    /// `http://127.0.0.1:PORT`, for `endpoint_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    pub fn calls(&self) -> u64 {
        self.shared.counters.calls.load(Ordering::SeqCst)
    }

    pub fn completed(&self) -> u64 {
        self.shared.counters.completed.load(Ordering::SeqCst)
    }

    pub fn aborted(&self) -> u64 {
        self.shared.counters.aborted.load(Ordering::SeqCst)
    }

    /// Calls made to `model` so far.
    pub fn calls_to(&self, model: &str) -> u64 {
        let per_model = self.shared.per_model.lock();
        let per_model = per_model.unwrap_or_else(|p| p.into_inner());
        per_model.get(model).copied().unwrap_or(0)
    }

    /// The JSON body of the latest request, to check what the SDK sent.
    pub fn last_request(&self) -> Option<Value> {
        self.requests().pop()
    }

    /// Every request's JSON body, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits up to `limit` for `check` to hold; counters move after the response is written.
    pub async fn wait_for(&self, limit: Duration, check: impl Fn(&Self) -> bool) -> bool {
        crate::serve::wait_until(limit, || check(self)).await
    }
}

/// What a model id asks the fake to do.
enum Plan {
    Fail(StatusCode, &'static str),
    /// These frames after `messageStart`, each written in two chunks; or the error Bedrock
    /// would answer with.
    Script(crate::fake_converse::Scripted),
    Stream {
        deltas: Vec<String>,
        gap: Duration,
        fail_after: Option<usize>,
        metadata: bool,
        stall: bool,
    },
}

impl Shared {
    /// Counts and keeps a request; returns its JSON and which call to `model` it is.
    fn record(&self, model: &str, body: &Bytes) -> (Value, u64) {
        self.counters.calls.fetch_add(1, Ordering::SeqCst);
        let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request.clone());
        let mut per_model = self.per_model.lock().unwrap_or_else(|p| p.into_inner());
        let n = per_model.entry(model.to_owned()).or_default();
        *n += 1;
        (request, *n)
    }

    fn plan(&self, model: &str, body: &Bytes) -> Plan {
        let (request, call) = self.record(model, body);
        let words = |n: usize| (0..n).map(|i| format!(" w{i}")).collect::<Vec<_>>();
        let plain = |deltas: Vec<String>| Plan::Stream {
            deltas,
            gap: Duration::ZERO,
            fail_after: None,
            metadata: true,
            stall: false,
        };
        if let Some(n) = model
            .strip_prefix("fake.throttle-")
            .and_then(|n| n.parse::<u64>().ok())
            && call <= n
        {
            return Plan::Fail(StatusCode::TOO_MANY_REQUESTS, "ThrottlingException");
        }
        if let Some(reason) = crate::fake_converse::attachment_violation(&request) {
            tracing::warn!(reason, "fake bedrock: refusing the attachments");
            return Plan::Fail(StatusCode::BAD_REQUEST, "ValidationException");
        }
        if let Some(frames) = crate::fake_converse::script(model, &request, call) {
            return Plan::Script(frames);
        }
        match model {
            "fake.unavailable" => Plan::Fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException",
            ),
            "fake.validation" => Plan::Fail(StatusCode::BAD_REQUEST, "ValidationException"),
            "fake.slow" => Plan::Stream {
                deltas: words(40),
                gap: Duration::from_millis(50),
                fail_after: None,
                metadata: true,
                stall: false,
            },
            "fake.long" => plain(words(2000)),
            "fake.markdown" => Plan::Stream {
                deltas: crate::samples::markdown_deltas(),
                gap: Duration::from_millis(10),
                fail_after: None,
                metadata: true,
                stall: false,
            },
            "fake.huge" => plain(vec![HUGE_DELTA.repeat(2_000); 4]),
            "fake.midstream-error" => Plan::Stream {
                deltas: words(4),
                gap: Duration::ZERO,
                fail_after: Some(2),
                metadata: true,
                stall: false,
            },
            "fake.no-metadata" => Plan::Stream {
                deltas: words(3),
                gap: Duration::ZERO,
                fail_after: None,
                metadata: false,
                stall: false,
            },
            "fake.stall" => Plan::Stream {
                deltas: Vec::new(),
                gap: Duration::ZERO,
                fail_after: None,
                metadata: false,
                stall: true,
            },
            _ => plain(
                ["Hello", " from", " fake", " Bedrock"]
                    .map(String::from)
                    .to_vec(),
            ),
        }
    }
}

fn input_tokens(request: &Value) -> u64 {
    let chars: usize = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["content"].as_array().into_iter().flatten())
        .filter_map(|c| c["text"].as_str())
        .map(|t| t.chars().count())
        .sum();
    (chars as u64).div_ceil(4).max(1)
}

fn error_response(status: StatusCode, error_type: &str) -> Response {
    (
        status,
        [
            (
                "x-amzn-errortype",
                format!("{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            ),
            ("content-type", "application/json".to_owned()),
        ],
        json!({ "message": format!("fake {error_type}") }).to_string(),
    )
        .into_response()
}

/// `InvokeModel`: Titan Text Embeddings v2 ([`crate::fake_embed`]).
async fn invoke(
    State(shared): State<Arc<Shared>>,
    Path(model): Path<String>,
    body: Bytes,
) -> Response {
    let (request, _) = shared.record(&model, &body);
    match crate::fake_embed::answer(&model, &request) {
        Ok(reply) => {
            shared.counters.completed.fetch_add(1, Ordering::SeqCst);
            (
                [(header::CONTENT_TYPE, "application/json")],
                reply.to_string(),
            )
                .into_response()
        }
        Err(kind) => error_response(StatusCode::BAD_REQUEST, kind),
    }
}

async fn converse(
    State(shared): State<Arc<Shared>>,
    Path(model): Path<String>,
    body: Bytes,
) -> Response {
    let (deltas, metadata) = match shared.plan(&model, &body) {
        Plan::Fail(status, kind) => return error_response(status, kind),
        Plan::Script(_) => return error_response(StatusCode::BAD_REQUEST, "ValidationException"),
        Plan::Stream {
            deltas, metadata, ..
        } => (deltas, metadata),
    };
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let text: String = deltas.concat();
    let mut reply = json!({
        "output": { "message": { "role": "assistant", "content": [{ "text": text }] } },
        "stopReason": "end_turn",
        "metrics": { "latencyMs": 1 },
    });
    if metadata {
        let (i, o) = (input_tokens(&request), deltas.len() as u64);
        reply["usage"] = json!({ "inputTokens": i, "outputTokens": o, "totalTokens": i + o });
    }
    shared.counters.completed.fetch_add(1, Ordering::SeqCst);
    (
        [(header::CONTENT_TYPE, "application/json")],
        reply.to_string(),
    )
        .into_response()
}

async fn converse_stream(
    State(shared): State<Arc<Shared>>,
    Path(model): Path<String>,
    body: Bytes,
) -> Response {
    let (deltas, gap, fail_after, metadata, stall) = match shared.plan(&model, &body) {
        Plan::Fail(status, kind) => return error_response(status, kind),
        Plan::Script(Ok(frames)) => return scripted(shared, frames),
        Plan::Script(Err(kind)) => return error_response(StatusCode::BAD_REQUEST, kind),
        Plan::Stream {
            deltas,
            gap,
            fail_after,
            metadata,
            stall,
        } => (deltas, gap, fail_after, metadata, stall),
    };
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let output = deltas.len() as u64;
        // Bedrock sends no contentBlockStart for text blocks, only for tool use.
        let frames = vec![event("messageStart", json!({ "role": "assistant" }))];
        let finished = write_stream(&tx, frames, deltas, gap, fail_after, stall).await;
        let finished = finished
            && send(
                &tx,
                event("contentBlockStop", json!({ "contentBlockIndex": 0 })),
            )
            .await
            && send(
                &tx,
                event("messageStop", json!({ "stopReason": "end_turn" })),
            )
            .await
            && (!metadata || {
                let i = input_tokens(&request);
                let usage =
                    json!({ "inputTokens": i, "outputTokens": output, "totalTokens": i + output });
                send(
                    &tx,
                    event(
                        "metadata",
                        json!({ "usage": usage, "metrics": { "latencyMs": 1 } }),
                    ),
                )
                .await
            });
        let counter = if finished {
            &shared.counters.completed
        } else {
            &shared.counters.aborted
        };
        counter.fetch_add(1, Ordering::SeqCst);
    });
    (
        [
            (header::CONTENT_TYPE, "application/vnd.amazon.eventstream"),
            (
                header::HeaderName::from_static("x-amzn-requestid"),
                "fake-request-id",
            ),
        ],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response()
}

/// Streams `frames` after `messageStart`, each frame in two chunks: cut inside a character's
/// UTF-8 bytes when it has any, as a real connection may deliver it.
fn scripted(shared: Arc<Shared>, frames: Vec<Bytes>) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut finished = send(&tx, event("messageStart", json!({ "role": "assistant" }))).await;
        for frame in frames {
            // Inside a multi-byte character of the payload when it has one (the payload ends
            // four bytes before the frame, at its checksum), else in the middle.
            let payload = &frame[..frame.len().saturating_sub(4)];
            let at = payload
                .iter()
                .rposition(|b| b & 0xC0 == 0x80)
                .unwrap_or(frame.len() / 2);
            let (a, b) = frame.split_at(at);
            finished = finished
                && send(&tx, Bytes::copy_from_slice(a)).await
                && send(&tx, Bytes::copy_from_slice(b)).await;
        }
        let counter = if finished {
            &shared.counters.completed
        } else {
            &shared.counters.aborted
        };
        counter.fetch_add(1, Ordering::SeqCst);
    });
    (
        [(header::CONTENT_TYPE, "application/vnd.amazon.eventstream")],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response()
}

/// Writes the opening frames and the deltas; false if the client went away or an exception ended
/// the stream (which counts as finished for the fake: it wrote everything it meant to).
async fn write_stream(
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    opening: Vec<Bytes>,
    deltas: Vec<String>,
    gap: Duration,
    fail_after: Option<usize>,
    stall: bool,
) -> bool {
    for frame in opening {
        if !send(tx, frame).await {
            return false;
        }
    }
    if stall {
        tx.closed().await;
        return false;
    }
    for (i, text) in deltas.into_iter().enumerate() {
        if fail_after == Some(i) {
            let _ = send(
                tx,
                exception("modelStreamErrorException", "fake mid-stream failure"),
            )
            .await;
            return false;
        }
        if i > 0 && !gap.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(gap) => {}
                () = tx.closed() => return false,
            }
        }
        let delta = json!({ "contentBlockIndex": 0, "delta": { "text": text } });
        if !send(tx, event("contentBlockDelta", delta)).await {
            return false;
        }
    }
    true
}

async fn send(tx: &mpsc::Sender<Result<Bytes, std::io::Error>>, frame: Bytes) -> bool {
    tx.send(Ok(frame)).await.is_ok()
}

/// One event-stream frame of type `event`.
pub fn event(event_type: &'static str, payload: Value) -> Bytes {
    frame(
        vec![
            Header::new(":message-type", HeaderValue::String("event".into())),
            Header::new(":event-type", HeaderValue::String(event_type.into())),
            Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ),
        ],
        payload,
    )
}

/// One event-stream frame carrying a modeled exception.
pub fn exception(exception_type: &'static str, message: &str) -> Bytes {
    frame(
        vec![
            Header::new(":message-type", HeaderValue::String("exception".into())),
            Header::new(
                ":exception-type",
                HeaderValue::String(exception_type.into()),
            ),
            Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ),
        ],
        json!({ "message": message }),
    )
}

fn frame(headers: Vec<Header>, payload: Value) -> Bytes {
    let message = Message::new_from_parts(headers, payload.to_string());
    let mut out = Vec::new();
    // Encoding fails only for frames over 16 MB, which this fake never writes.
    if let Err(e) = write_message_to(&message, &mut out) {
        tracing::error!(error = %e, "encoding an event-stream frame");
    }
    Bytes::from(out)
}
