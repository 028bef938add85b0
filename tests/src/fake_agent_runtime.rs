//! A fake Amazon Bedrock Agent Runtime speaking the real REST JSON protocol of `Retrieve`
//! (`POST /knowledgebases/{id}/retrieve`), so the real aws-sdk-bedrockagentruntime can be pointed
//! at it with `endpoint_url`. moto has no backend for it.
//!
//! A knowledge base is a list of chunks a test loads ([`FakeAgentRuntime::load`]); a retrieval
//! ranks them by the question's words they contain, applies the request's metadata `filter`
//! (`equals`, `in`, `andAll`, `orAll`), and pages its answer [`PAGE`] results at a time with
//! `nextToken`. Scenarios are chosen by knowledge-base id:
//!
//! | knowledge-base id | behaviour |
//! |---|---|
//! | one a test loaded | its chunks, ranked and paged |
//! | `KBTHROTTLE1`, `KBTHROTTLE2`, … (`KBTHROTTLE` and N) | the first N calls get 429 `ThrottlingException`, then an empty answer |
//! | `KBDEPENDENCY` | 424 `DependencyFailedException` |
//! | `KBINTERNAL` | 500 `InternalServerException` |
//! | `KBVALIDATION` | 400 `ValidationException` |
//! | `KBGUARDRAIL` | `guardrailAction` `INTERVENED` and no results |
//! | `KBSTALL` | an answer after 30 s |
//! | anything else | 404 `ResourceNotFoundException` |
//!
//! Every request is recorded, with its knowledge-base id, for tests to read.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::serve::StopOnDrop;

/// Results per page: small, so a retrieval of a few passages needs `nextToken`.
pub const PAGE: usize = 2;

/// One chunk of a fake knowledge base.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub text: String,
    /// `s3://…` of its document.
    pub uri: String,
    /// Its metadata attributes (Bedrock adds `x-amz-bedrock-kb-source-uri` and
    /// `x-amz-bedrock-kb-chunk-id` itself).
    pub metadata: Value,
}

#[derive(Default)]
struct Shared {
    bases: Mutex<HashMap<String, Vec<Chunk>>>,
    calls: Mutex<HashMap<String, u64>>,
    requests: Mutex<Vec<(String, Value)>>,
}

/// A running fake; it stops when dropped.
pub struct FakeAgentRuntime {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: StopOnDrop,
}

impl FakeAgentRuntime {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/knowledgebases/{id}/retrieve", post(retrieve))
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

    /// Makes `id` a knowledge base of `chunks`.
    pub fn load(&self, id: &str, chunks: Vec<Chunk>) {
        let mut bases = self.shared.bases.lock().unwrap_or_else(|p| p.into_inner());
        bases.insert(id.to_owned(), chunks);
    }

    /// Every request so far, as `(knowledge-base id, JSON body)`.
    pub fn requests(&self) -> Vec<(String, Value)> {
        let requests = self.shared.requests.lock();
        requests.unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many requests named `id`.
    pub fn calls(&self, id: &str) -> u64 {
        let calls = self.shared.calls.lock().unwrap_or_else(|p| p.into_inner());
        calls.get(id).copied().unwrap_or_default()
    }
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        [
            ("x-amzn-errortype", kind),
            ("content-type", "application/json"),
        ],
        json!({ "message": message }).to_string(),
    )
        .into_response()
}

async fn retrieve(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let Ok(request) = serde_json::from_str::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "ValidationException", "not JSON");
    };
    shared
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((id.clone(), request.clone()));
    let call = {
        let mut calls = shared.calls.lock().unwrap_or_else(|p| p.into_inner());
        let n = calls.entry(id.clone()).or_default();
        *n += 1;
        *n
    };
    if let Some(n) = id
        .strip_prefix("KBTHROTTLE")
        .and_then(|n| n.parse::<u64>().ok())
    {
        if call <= n {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "ThrottlingException",
                "Rate exceeded",
            );
        }
        return answer(Vec::new(), None, "NONE");
    }
    match id.as_str() {
        "KBDEPENDENCY" => {
            return error(
                StatusCode::FAILED_DEPENDENCY,
                "DependencyFailedException",
                "The vector store is not reachable",
            );
        }
        "KBINTERNAL" => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerException",
                "Internal error",
            );
        }
        "KBVALIDATION" => {
            return error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                "1 validation error detected",
            );
        }
        "KBGUARDRAIL" => return answer(Vec::new(), None, "INTERVENED"),
        "KBSTALL" => {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            return answer(Vec::new(), None, "NONE");
        }
        _ => {}
    }
    let chunks = shared
        .bases
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .cloned();
    let Some(chunks) = chunks else {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("Knowledge base {id} not found"),
        );
    };
    let Some(query) = request["retrievalQuery"]["text"].as_str() else {
        return error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "retrievalQuery.text is required",
        );
    };
    let search = &request["retrievalConfiguration"]["vectorSearchConfiguration"];
    let wanted = search["numberOfResults"].as_u64().unwrap_or(5) as usize;
    let filter = &search["filter"];
    let words: Vec<String> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
        .map(str::to_lowercase)
        .collect();
    let mut ranked: Vec<(f64, usize, &Chunk)> = chunks
        .iter()
        .enumerate()
        .filter(|(_, c)| filter.is_null() || matches(filter, &c.metadata))
        .map(|(i, c)| {
            let text = c.text.to_lowercase();
            let hits = words.iter().filter(|w| text.contains(w.as_str())).count();
            (hits as f64 / words.len().max(1) as f64, i, c)
        })
        .filter(|(score, ..)| *score > 0.0)
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked.truncate(wanted);
    let start: usize = request["nextToken"]
        .as_str()
        .and_then(|t| t.strip_prefix("page-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let page: Vec<Value> = ranked
        .iter()
        .skip(start)
        .take(PAGE)
        .map(|(score, i, c)| {
            let mut metadata = c.metadata.clone();
            metadata["x-amz-bedrock-kb-source-uri"] = json!(c.uri);
            metadata["x-amz-bedrock-kb-chunk-id"] = json!(format!("{id}-chunk-{i}"));
            json!({
                "content": {"type": "TEXT", "text": c.text},
                "location": {"type": "S3", "s3Location": {"uri": c.uri}},
                "metadata": metadata,
                "score": score,
            })
        })
        .collect();
    let next = (start + PAGE < ranked.len()).then(|| format!("page-{}", start + PAGE));
    answer(page, next, "NONE")
}

fn answer(results: Vec<Value>, next: Option<String>, guardrail: &str) -> Response {
    let mut body = json!({ "retrievalResults": results, "guardrailAction": guardrail });
    if let Some(next) = next {
        body["nextToken"] = json!(next);
    }
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Whether `metadata` passes a `RetrievalFilter`.
fn matches(filter: &Value, metadata: &Value) -> bool {
    if let Some(all) = filter["andAll"].as_array() {
        return all.iter().all(|f| matches(f, metadata));
    }
    if let Some(any) = filter["orAll"].as_array() {
        return any.iter().any(|f| matches(f, metadata));
    }
    if let Some(eq) = filter.get("equals") {
        return metadata.get(eq["key"].as_str().unwrap_or_default()) == Some(&eq["value"]);
    }
    if let Some(within) = filter.get("in") {
        let value = metadata.get(within["key"].as_str().unwrap_or_default());
        return within["value"]
            .as_array()
            .is_some_and(|list| value.is_some_and(|v| list.contains(v)));
    }
    false
}
