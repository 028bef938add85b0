#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Retries and timeouts of model calls, through a gateway to the fake Bedrock over the real SDK:
//! the fake's counters show how many calls were made and which streams were dropped.

use std::sync::Arc;
use std::time::Duration;

use nagare_gateway::provider::{ResilientProvider, UpstreamSettings};
use nagare_tests::{FakeBedrock, Gateway, bedrock_provider};
use serde_json::{Value, json};

async fn gateway(fake: &FakeBedrock, settings: UpstreamSettings) -> Gateway {
    let provider = ResilientProvider::new(Arc::new(bedrock_provider(&fake.url())), settings);
    let models = [
        "fake.throttle-2",
        "fake.throttle-100",
        "fake.unavailable",
        "fake.validation",
        "fake.midstream-error",
        "fake.stall",
    ];
    Gateway::start(Arc::new(provider), "fake", &models)
        .await
        .unwrap()
}

/// Quick backoff, so the tests do not wait on it.
fn quick() -> UpstreamSettings {
    UpstreamSettings {
        backoff_base_ms: 5,
        backoff_max_ms: 20,
        ..UpstreamSettings::default()
    }
}

async fn chat(gw: &Gateway, path: &str, model: &str) -> (u16, String) {
    let response = gw
        .client()
        .post(gw.url(path))
        .json(&json!({"message": "hi", "model": model}))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn code(body: &str) -> Value {
    serde_json::from_str::<Value>(body).unwrap()["error"]["code"].clone()
}

#[tokio::test]
async fn throttled_twice_then_served_makes_exactly_three_calls() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake, quick()).await;
    let (status, body) = chat(&gw, "/v1/chat", "fake.throttle-2").await;
    assert_eq!(status, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["message"]["content"], "Hello from fake Bedrock");
    assert_eq!(fake.calls(), 3);
}

#[tokio::test]
async fn transient_failures_stop_after_max_attempts_and_client_errors_are_not_retried() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake, quick()).await;
    let (status, body) = chat(&gw, "/v1/chat", "fake.throttle-100").await;
    assert_eq!((status, code(&body)), (503, json!("upstream_throttled")));
    assert_eq!(fake.calls(), 3);
    let (status, body) = chat(&gw, "/v1/chat", "fake.unavailable").await;
    assert_eq!((status, code(&body)), (503, json!("upstream_unavailable")));
    assert_eq!(fake.calls(), 6);
    let (status, body) = chat(&gw, "/v1/chat", "fake.validation").await;
    assert_eq!((status, code(&body)), (400, json!("invalid_request")));
    assert_eq!(fake.calls(), 7);

    let one_try = UpstreamSettings {
        max_attempts: 1,
        ..quick()
    };
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake, one_try).await;
    let (status, _) = chat(&gw, "/v1/chat", "fake.throttle-2").await;
    assert_eq!(status, 503);
    assert_eq!(fake.calls(), 1);
}

#[tokio::test]
async fn a_failure_after_deltas_is_not_retried() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake, quick()).await;
    let (status, body) = chat(&gw, "/v1/chat/stream", "fake.midstream-error").await;
    assert_eq!(status, 200);
    assert!(body.contains("event: delta"), "{body}");
    assert!(body.contains("event: error"), "{body}");
    assert!(!body.contains("event: done"), "{body}");
    assert_eq!(fake.calls(), 1);
}

#[tokio::test]
async fn a_silent_model_times_out_and_its_streams_are_dropped() {
    let fake = FakeBedrock::start().await.unwrap();
    let settings = UpstreamSettings {
        max_attempts: 2,
        first_token_timeout_ms: 300,
        ..quick()
    };
    let gw = gateway(&fake, settings).await;
    let (status, body) = chat(&gw, "/v1/chat", "fake.stall").await;
    assert_eq!((status, code(&body)), (504, json!("upstream_timeout")));
    assert_eq!(fake.calls(), 2);
    assert!(
        fake.wait_for(Duration::from_secs(10), |f| f.aborted() == 2)
            .await,
        "the fake did not see both silent streams dropped"
    );
}
