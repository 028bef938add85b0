#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Retries, timeouts, fallbacks and circuit breakers of model calls, through a gateway to the
//! fake Bedrock over the real SDK: the fake's counters show how many calls were made and which
//! streams were dropped.

use std::sync::Arc;
use std::time::Duration;

use nagare_gateway::pipeline::ModelCatalog;
use nagare_gateway::provider::{BreakerSettings, UpstreamSettings};
use nagare_tests::{FakeBedrock, Gateway, bedrock_provider};
use serde_json::{Value, json};

/// A gateway with `settings` for its model calls, and no circuit breakers.
async fn gateway(fake: &FakeBedrock, settings: UpstreamSettings) -> Gateway {
    let models = [
        "fake.throttle-2",
        "fake.throttle-100",
        "fake.unavailable",
        "fake.validation",
        "fake.midstream-error",
        "fake.stall",
    ];
    Gateway::builder()
        .model(Arc::new(bedrock_provider(&fake.url())))
        .models("fake", &models)
        .config(|c| {
            c.upstream = UpstreamSettings {
                breaker: c.upstream.breaker.clone(),
                ..settings
            };
        })
        .start()
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

/// A gateway whose `primary` falls back to `fake`, with breakers as given and one attempt per
/// model, so every call is counted once.
async fn fallback_gateway(fake: &FakeBedrock, primary: &str, breaker: BreakerSettings) -> Gateway {
    let models = ModelCatalog {
        default: primary.into(),
        aliases: [("smart".to_owned(), primary.to_owned())].into(),
        allow: ["fake".to_owned()].into(),
        fallbacks: [("smart".to_owned(), vec!["fake".to_owned()])].into(),
        ..ModelCatalog::default()
    };
    Gateway::builder()
        .model(Arc::new(bedrock_provider(&fake.url())))
        .config(|c| {
            c.models = models;
            c.upstream = UpstreamSettings {
                max_attempts: 1,
                breaker,
                ..quick()
            };
        })
        .start()
        .await
        .unwrap()
}

async fn circuit(gw: &Gateway, model: &str) -> Value {
    let ready: Value = reqwest::get(gw.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ready["circuits"][model].clone()
}

/// The model a chat was served by, from its `start`.
async fn served_by(gw: &Gateway) -> String {
    let (status, body) = chat(gw, "/v1/chat", "smart").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["model"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_fallback_serves_when_the_model_fails_and_start_names_it() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = fallback_gateway(&fake, "fake.unavailable", BreakerSettings::default()).await;
    assert_eq!(served_by(&gw).await, "fake");
    assert_eq!(fake.calls(), 2);
    // The stream's `start` names the fallback too.
    let response = gw
        .client()
        .post(gw.url("/v1/chat/stream"))
        .json(&json!({"message": "hi", "model": "smart"}))
        .send()
        .await
        .unwrap();
    let body = response.text().await.unwrap();
    assert!(
        body.contains(r#""type":"start""#) && body.contains(r#""model":"fake""#),
        "{body}"
    );
    assert_eq!(circuit(&gw, "fake.unavailable").await, "closed");

    // A request error is not the model's fault: no fallback, and the answer is the error.
    let gw = fallback_gateway(&fake, "fake.validation", BreakerSettings::default()).await;
    let (status, _) = chat(&gw, "/v1/chat", "smart").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_breaker_opens_skips_the_model_and_recovers_after_a_probe() {
    let fake = FakeBedrock::start().await.unwrap();
    let breaker = BreakerSettings {
        consecutive_failures: 2,
        failure_rate: 0.0,
        window: 10,
        open_ms: 200,
    };
    // The first three calls to fake.throttle-3 are throttled; the fourth succeeds.
    let gw = fallback_gateway(&fake, "fake.throttle-3", breaker).await;
    for _ in 0..2 {
        assert_eq!(served_by(&gw).await, "fake");
    }
    assert_eq!(fake.calls(), 4);
    assert_eq!(circuit(&gw, "fake.throttle-3").await, "open");
    // Open: the model is not called at all.
    assert_eq!(served_by(&gw).await, "fake");
    assert_eq!(fake.calls(), 5);

    // After the cool-down one probe goes out; it is throttled (call 3), so the circuit reopens.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(served_by(&gw).await, "fake");
    assert_eq!(fake.calls(), 7);
    assert_eq!(circuit(&gw, "fake.throttle-3").await, "open");
    // The next probe succeeds (call 4): the model serves again and the circuit closes.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(served_by(&gw).await, "fake.throttle-3");
    assert_eq!(fake.calls(), 8);
    assert_eq!(circuit(&gw, "fake.throttle-3").await, "closed");
}
