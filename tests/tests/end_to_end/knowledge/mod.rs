#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Knowledge bases end to end. `routes`: the embedded store through the REST API of a running
//! gateway, with Nagare's own `docs/` as the corpus; `chat` and `transports`: chats that answer
//! from it; `bedrock`: Amazon Bedrock Knowledge Bases through the fake Agent Runtime. The
//! helpers below put and query documents.

mod bedrock;
mod chat;
mod routes;
mod transports;

use std::sync::Arc;

use nagare_gateway::provider::{MockProvider, MockSettings};
use nagare_tests::Gateway;
use serde_json::{Value, json};

async fn gateway() -> Gateway {
    let mock = Arc::new(MockProvider::new(MockSettings::unpaced()));
    Gateway::start(mock, "mock", &[]).await.unwrap()
}

async fn put(
    gw: &Gateway,
    client: &reqwest::Client,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let response = client
        .put(gw.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

async fn post(gw: &Gateway, client: &reqwest::Client, path: &str, body: Value) -> (u16, Value) {
    let response = client.post(gw.url(path)).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// The document ids of the passages retrieved for `question`, best first.
async fn ask(gw: &Gateway, client: &reqwest::Client, question: &str) -> Vec<String> {
    let (status, found) = post(
        gw,
        client,
        "/v1/knowledge-bases/docs/retrieve",
        json!({"question": question, "results": 3}),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    found["passages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["document_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The text of `docs/{id}.md`.
fn nagare_page(id: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../docs/{id}.md"));
    std::fs::read_to_string(path).unwrap()
}

/// Every page of `docs/`, as `(id, text)`.
fn nagare_docs() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let mut pages: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "md"))
        .map(|e| {
            let id = e.path().file_stem().unwrap().to_string_lossy().into_owned();
            (id, std::fs::read_to_string(e.path()).unwrap())
        })
        .collect();
    pages.sort();
    pages
}

/// Puts every page of `docs/` into the caller's knowledge base `docs` (which must exist), each
/// with its path as its uri; the pages.
async fn put_docs(gw: &Gateway, client: &reqwest::Client) -> Vec<(String, String)> {
    let pages = nagare_docs();
    assert!(pages.len() > 10);
    for (id, text) in &pages {
        let (status, info) = put(
            gw,
            client,
            &format!("/v1/knowledge-bases/docs/documents/{id}?uri=docs/{id}.md"),
            "text/markdown",
            text.clone(),
        )
        .await;
        assert_eq!(status, 200, "{id}: {info}");
        assert!(info["passages"].as_u64().unwrap() >= 1, "{info}");
    }
    pages
}
