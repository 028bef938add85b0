//! End to end over real sockets: an HTTP client → Nagare (port 0) → the real Bedrock SDK → the fake
//! Bedrock (port 0), with the fake's counters proving what happened upstream.

// Test helpers outside #[test] functions may panic too: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use nagare_tests::{FakeBedrock, Gateway, bedrock_provider, sse_events};
use serde_json::{Value, json};

const MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const FAKES: &[&str] = &[
    "fake.slow",
    "fake.throttle-1",
    "fake.midstream-error",
    "fake.stall",
];

async fn setup() -> (FakeBedrock, Gateway) {
    let fake = FakeBedrock::start().await.unwrap();
    // Without the retry layer: these tests read `start` before a stalled model's first token.
    let gateway = Gateway::builder()
        .bare_model(Arc::new(bedrock_provider(&fake.url())))
        .models(MODEL, FAKES)
        .start()
        .await
        .unwrap();
    (fake, gateway)
}

async fn sse(gateway: &Gateway, body: Value) -> Vec<Value> {
    let (status, events) = gateway.stream_chat(&gateway.client(), &body).await;
    assert_eq!(status, 200);
    events
}

#[tokio::test]
async fn unary_chat_through_bedrock() {
    let (fake, gateway) = setup().await;
    let response = gateway
        .client()
        .post(gateway.url("/v1/chat"))
        .json(&json!({ "message": "hello", "system": "terse" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let v: Value = response.json().await.unwrap();
    assert_eq!(v["message"]["content"], "Hello from fake Bedrock");
    assert_eq!(v["model"], MODEL);
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["output_tokens"], 4);
    assert_eq!(fake.calls(), 1);
    assert_eq!(fake.last_request().unwrap()["system"][0]["text"], "terse");
}

#[tokio::test]
async fn sse_chat_through_bedrock_streams_in_order() {
    let (fake, gateway) = setup().await;
    let events = sse(
        &gateway,
        json!({ "message": "hello", "request_id": "sse-1" }),
    )
    .await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["start", "delta", "delta", "delta", "delta", "done"]);
    assert!(events.iter().all(|e| e["request_id"] == "sse-1"));
    assert_eq!(events[5]["usage"]["output_tokens"], 4);
    assert_eq!(fake.calls(), 1);
}

#[tokio::test]
async fn upstream_errors_reach_the_client_in_the_table_form() {
    let (_fake, gateway) = setup().await;
    let client = gateway.client();
    let response = client
        .post(gateway.url("/v1/chat/stream"))
        .json(&json!({ "message": "hi", "model": "fake.throttle-1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let v: Value = response.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_throttled");
    assert_eq!(v["error"]["retryable"], true);

    let events = sse(
        &gateway,
        json!({ "message": "hi", "model": "fake.midstream-error" }),
    )
    .await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["start", "delta", "delta", "error"]);
    assert_eq!(events[3]["code"], "upstream_error");
    assert_eq!(events[3]["retryable"], true);

    let response = client
        .post(gateway.url("/v1/chat"))
        .json(&json!({ "message": "hi", "model": "not.configured" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_upstream_stream() {
    let (fake, gateway) = setup().await;
    let response = gateway
        .client()
        .post(gateway.url("/v1/chat/stream"))
        .json(&json!({ "message": "hi", "model": "fake.slow" }))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut buf = String::new();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let chunk = body.next().await.unwrap().unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        seen.extend(sse_events(&mut buf));
    }
    assert_eq!(seen[0]["type"], "start");
    drop(body);
    assert!(
        fake.wait_for(Duration::from_secs(10), |f| f.aborted() == 1)
            .await,
        "the upstream stream was not dropped"
    );
    assert_eq!(fake.completed(), 0);
}

#[tokio::test]
async fn a_stalled_model_is_cancelled_when_the_client_leaves() {
    let (fake, gateway) = setup().await;
    let request = gateway
        .client()
        .post(gateway.url("/v1/chat/stream"))
        .json(&json!({ "message": "hi", "model": "fake.stall" }))
        .send();
    let response = request.await.unwrap();
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(
        std::str::from_utf8(&first)
            .unwrap()
            .contains("\"type\":\"start\"")
    );
    drop(body);
    assert!(
        fake.wait_for(Duration::from_secs(10), |f| f.aborted() == 1)
            .await
    );
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_stream_finish() {
    let (fake, mut gateway) = setup().await;
    let url = gateway.url("/v1/chat/stream");
    let client = gateway.client();
    let in_flight = tokio::spawn(async move {
        let response = client
            .post(url)
            .json(&json!({ "message": "hi", "model": "fake.slow" }))
            .send()
            .await
            .unwrap();
        let mut buf = response.text().await.unwrap();
        sse_events(&mut buf)
    });
    assert!(
        fake.wait_for(Duration::from_secs(10), |f| f.calls() == 1)
            .await
    );
    gateway.shutdown();
    let events = in_flight.await.unwrap();
    assert_eq!(events.last().unwrap()["type"], "done", "{events:?}");
    assert_eq!(events.len(), 42);
    gateway.stopped.take().unwrap().await.unwrap();
    // Once stopped, the port no longer accepts connections.
    let refused = gateway.client().get(gateway.url("/healthz")).send().await;
    assert!(refused.is_err());
}
