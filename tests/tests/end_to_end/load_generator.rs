//! The load generator against an in-process gateway: it counts successes, first deltas and errors
//! by code. Tiny runs, to keep the benchmark tooling working; no figure is asserted.

// Test helpers outside #[test] functions may panic too: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use nagare_gateway::provider::{MockProvider, MockSettings};
use nagare_tests::load::{self, LoadSpec, Mode};
use nagare_tests::{Gateway, dev_token};

async fn gateway() -> Gateway {
    Gateway::start(
        Arc::new(MockProvider::new(MockSettings::unpaced())),
        "mock",
        &[],
    )
    .await
    .unwrap()
}

fn spec(gw: &Gateway, path: &str, body: &str, mode: Mode, rate: Option<f64>) -> LoadSpec {
    LoadSpec {
        url: gw.url(path).parse().unwrap(),
        body: body.to_owned().into(),
        headers: vec![(
            "authorization".into(),
            format!("Bearer {}", dev_token("load", &["chat"])),
        )],
        connections: 4,
        duration: Duration::from_millis(300),
        warmup: Duration::from_millis(50),
        rate,
        mode,
        delta_interval: Some(Duration::from_millis(1)),
        ramp: None,
    }
}

#[tokio::test]
async fn closed_loop_counts_requests_and_first_deltas() {
    let gw = gateway().await;
    let report = load::run(spec(
        &gw,
        "/v1/chat/stream",
        r#"{"message":"hi"}"#,
        Mode::Sse,
        None,
    ))
    .await
    .unwrap();
    assert!(report.requests > 0);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    // Every stream carries several deltas, warm-up included in the count.
    assert!(report.deltas_received > report.requests, "{report:?}");
    let first = report.first_delta_ms.unwrap();
    assert!(first.p50 > 0.0 && first.p50 <= report.latency_ms.max);
    let gaps = report
        .inter_delta_ms
        .expect("paced deltas have gaps between them");
    assert!(gaps.max <= report.latency_ms.max);
    // With a delta interval, each delta's lateness and the sleeper beside them are reported.
    assert!(report.delta_lateness_ms.is_some());
    let sleeper = report.sleeper_lateness_ms.expect("the sleeper ran");
    assert!(sleeper.max > 0.0, "the sleeper recorded its wake-ups");
}

#[tokio::test]
async fn open_loop_sends_at_the_rate_and_reports_error_codes() {
    let gw = gateway().await;
    let body = r#"{"message":"hi","model":"mock.throttle-1000000"}"#;
    let report = load::run(spec(&gw, "/v1/chat", body, Mode::Unary, Some(200.0)))
        .await
        .unwrap();
    // 200 req/s for 0.3 s: about 60 requests, all throttled by the mock.
    assert!((40..=80).contains(&report.requests), "{}", report.requests);
    assert_eq!(
        report.errors.get("upstream_throttled"),
        Some(&report.requests)
    );
}

#[tokio::test]
async fn websocket_chats_and_idle_connections() {
    let gw = gateway().await;
    let url = format!("ws://{}/v1/ws", gw.addr);
    let mut chats = spec(
        &gw,
        "/",
        r#"{"message":"hi","inference":{"max_tokens":20}}"#,
        Mode::Ws,
        None,
    );
    chats.url = url.parse().unwrap();
    let report = load::run(chats.clone()).await.unwrap();
    assert!(report.requests > 0);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.inter_delta_ms.is_some());

    let mut idle = chats;
    idle.mode = Mode::WsIdle;
    idle.connections = 20;
    let report = load::run(idle).await.unwrap();
    assert_eq!(report.requests, 20, "{:?}", report.errors);

    let mut unauthenticated = spec(&gw, "/", "{}", Mode::WsIdle, None);
    unauthenticated.url = url.parse().unwrap();
    unauthenticated.headers.clear();
    let report = load::run(unauthenticated).await.unwrap();
    assert_eq!(report.requests, 0);
    assert_eq!(report.errors.values().sum::<u64>(), 4);
}

#[tokio::test]
async fn grpc_unary_and_streaming_chats() {
    let gw = gateway().await;
    let body = r#"{"message":"hi","inference":{"max_tokens":20},"cache":"bypass"}"#;
    let mut unary = spec(&gw, "/", body, Mode::GrpcUnary, None);
    unary.url = gw.grpc_url().parse().unwrap();
    let report = load::run(unary.clone()).await.unwrap();
    assert!(report.requests > 0);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.first_delta_ms.is_none());

    let mut stream = unary.clone();
    stream.mode = Mode::GrpcStream;
    let report = load::run(stream).await.unwrap();
    assert!(report.requests > 0);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let first = report.first_delta_ms.unwrap();
    assert!(first.p50 > 0.0 && first.p50 <= report.latency_ms.max);

    let mut unauthenticated = unary;
    unauthenticated.headers.clear();
    let report = load::run(unauthenticated).await.unwrap();
    assert_eq!(report.errors.get("unauthorized"), Some(&report.requests));
}

#[tokio::test]
async fn get_mode_reads_the_health_check() {
    let gw = gateway().await;
    let health = load::run(spec(&gw, "/healthz", "", Mode::Get, None))
        .await
        .unwrap();
    assert!(health.requests > 0);
    assert!(health.errors.is_empty(), "{:?}", health.errors);
    assert_eq!(health.deltas_received, 0, "a unary response has no deltas");
}
