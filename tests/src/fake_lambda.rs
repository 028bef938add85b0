//! A fake AWS Lambda Runtime API (`/2018-06-01/runtime/...`), so a Lambda binary built with
//! lambda_runtime runs on this machine exactly as it does in Lambda: it long-polls
//! `invocation/next`, handles the event, and posts a response or an error.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::{Mutex, Notify, mpsc};

use crate::serve::StopOnDrop;

/// What the function answered to one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Response(Value),
    /// `Lambda-Runtime-Function-Error-Type` and the error body.
    Error {
        error_type: String,
        body: Value,
    },
    /// The function failed during initialisation.
    InitError(Value),
    /// A streamed response (`Lambda-Runtime-Function-Response-Mode: streaming`, as a Function
    /// URL in `RESPONSE_STREAM` mode receives it): the prelude with the status and headers, then
    /// the body as it arrived, each piece with its time since the prelude.
    Streamed {
        prelude: Value,
        body: Vec<(Duration, String)>,
    },
}

/// One finished invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub request_id: String,
    pub outcome: Outcome,
}

struct Shared {
    queue: Mutex<VecDeque<(String, Value)>>,
    queued: Notify,
    results: mpsc::UnboundedSender<Invocation>,
    next_id: AtomicU64,
}

/// A running fake runtime; it stops when dropped.
pub struct FakeLambdaRuntime {
    addr: SocketAddr,
    shared: Arc<Shared>,
    results: Mutex<mpsc::UnboundedReceiver<Invocation>>,
    _stop: StopOnDrop,
}

impl FakeLambdaRuntime {
    pub async fn start() -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            queued: Notify::new(),
            results: tx,
            next_id: AtomicU64::new(1),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let (addr, stop) = crate::serve::spawn(app).await?;
        Ok(Self {
            addr,
            shared,
            results: Mutex::new(rx),
            _stop: stop,
        })
    }

    /// Queues an event; returns its request id.
    pub async fn invoke(&self, event: Value) -> String {
        let id = format!(
            "req-{}",
            self.shared.next_id.fetch_add(1, Ordering::Relaxed)
        );
        self.shared
            .queue
            .lock()
            .await
            .push_back((id.clone(), event));
        self.shared.queued.notify_one();
        id
    }

    /// The next finished invocation, or `None` after `limit`.
    pub async fn result(&self, limit: Duration) -> Option<Invocation> {
        tokio::time::timeout(limit, self.results.lock().await.recv())
            .await
            .ok()
            .flatten()
    }

    /// The environment Lambda gives a function, pointing it at this runtime.
    pub fn env(&self, function_name: &str) -> Vec<(String, String)> {
        [
            ("AWS_LAMBDA_RUNTIME_API", self.addr.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", function_name.to_owned()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_owned()),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{function_name}"),
            ),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME",
                "2026/01/01/[$LATEST]0123456789abcdef".to_owned(),
            ),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// Long-polls like the real API: answers when an event is queued.
async fn next(State(shared): State<Arc<Shared>>) -> Response {
    loop {
        let notified = shared.queued.notified();
        if let Some((id, event)) = shared.queue.lock().await.pop_front() {
            let deadline = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                + Duration::from_secs(30);
            let headers = [
                ("lambda-runtime-aws-request-id", id),
                (
                    "lambda-runtime-deadline-ms",
                    deadline.as_millis().to_string(),
                ),
                (
                    "lambda-runtime-invoked-function-arn",
                    "arn:aws:lambda:us-east-1:123456789012:function:nagare".to_owned(),
                ),
                (
                    "lambda-runtime-trace-id",
                    "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1".to_owned(),
                ),
                ("content-type", "application/json".to_owned()),
            ];
            return (headers, event.to_string()).into_response();
        }
        notified.await;
    }
}

fn json(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> StatusCode {
    let streaming = headers
        .get("lambda-runtime-function-response-mode")
        .is_some_and(|v| v == "streaming");
    let outcome = if streaming {
        streamed(body).await
    } else {
        match body.collect().await {
            Ok(body) => Outcome::Response(json(&body.to_bytes())),
            Err(_) => return StatusCode::BAD_REQUEST,
        }
    };
    let _ = shared.results.send(Invocation {
        request_id: id,
        outcome,
    });
    StatusCode::ACCEPTED
}

/// Reads a streamed response: a JSON prelude, eight NUL bytes, then the body, piece by piece.
async fn streamed(mut body: Body) -> Outcome {
    const DELIMITER: &[u8] = &[0; 8];
    let mut head = Vec::new();
    let mut prelude = None;
    let mut pieces = Vec::new();
    let mut since = Instant::now();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue; // trailers (an error in mid-stream) end the body
        };
        let rest = if prelude.is_none() {
            head.extend_from_slice(&data);
            let Some(at) = head.windows(8).position(|w| w == DELIMITER) else {
                continue;
            };
            prelude = Some(json(&Bytes::copy_from_slice(&head[..at])));
            since = Instant::now();
            head.split_off(at + DELIMITER.len())
        } else {
            data.to_vec()
        };
        if !rest.is_empty() {
            pieces.push((since.elapsed(), String::from_utf8_lossy(&rest).into_owned()));
        }
    }
    Outcome::Streamed {
        prelude: prelude.unwrap_or(Value::Null),
        body: pieces,
    }
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let error_type = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let _ = shared.results.send(Invocation {
        request_id: id,
        outcome: Outcome::Error {
            error_type,
            body: json(&body),
        },
    });
    StatusCode::ACCEPTED
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    let _ = shared.results.send(Invocation {
        request_id: String::new(),
        outcome: Outcome::InitError(json(&body)),
    });
    StatusCode::ACCEPTED
}

/// The path of a binary built in this workspace's target directory next to the running test
/// (`target/<profile>/<name>`). `cargo test --workspace` builds every binary first.
pub fn workspace_binary(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .ok_or_else(|| {
            anyhow::anyhow!("cannot tell the target directory from {}", exe.display())
        })?;
    let path = profile_dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build it with `cargo build --bin {name}` (tests/run.sh builds every binary)",
        path.display()
    );
    Ok(path)
}
