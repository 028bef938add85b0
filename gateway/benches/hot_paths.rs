//! Micro-benchmarks of the per-request hot paths. Run: `cargo bench -p nagare-gateway --bench hot_paths`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use aws_smithy_eventstream::frame::{read_message_from, write_message_to};
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use criterion::{Criterion, criterion_group, criterion_main};
use futures::StreamExt;
use nagare_authorizer::Principal;
use nagare_gateway::chat::{ChatEvent, ChatReply, Part, RequestLimits, Route, parse_chat_request};
use nagare_gateway::error::Error;
use nagare_gateway::limits::{Limits, LocalCounters, RateLimitSettings};
use nagare_gateway::pipeline::{ChatPipeline, ModelCatalog, PipelineOptions, RoutingSettings};
use nagare_gateway::provider::{MockProvider, MockSettings};

const BODY_UNNAMED: &[u8] =
    br#"{"message":"What is the capital of Japan?","inference":{"max_tokens":256}}"#;

const BODY: &[u8] = br#"{"message":"What is the capital of Japan, and why did it move there?","request_id":"bench-1",
"model":"fast","system":"Answer briefly.","inference":{"max_tokens":256,"temperature":0.2,"stop":["END"]}}"#;

fn delta_frame() -> Vec<u8> {
    let headers = vec![
        Header::new(":message-type", HeaderValue::String("event".into())),
        Header::new(
            ":event-type",
            HeaderValue::String("contentBlockDelta".into()),
        ),
        Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ),
    ];
    let payload = r#"{"contentBlockIndex":0,"delta":{"text":" Tokyo"}}"#;
    let mut out = Vec::new();
    write_message_to(&Message::new_from_parts(headers, payload), &mut out).unwrap();
    out
}

fn bench(c: &mut Criterion) {
    let limits = RequestLimits::default();
    c.bench_function("request: parse + validate", |b| {
        b.iter(|| {
            parse_chat_request(BODY)
                .unwrap()
                .validate(&limits, || "gen".into())
                .unwrap()
        })
    });

    // The new events next to a text delta: each is one serialization of a small struct.
    let id: Arc<str> = Arc::from("bench-1");
    let events = [
        (
            "delta",
            Part::Text {
                index: 0,
                text: " Tokyo".into(),
            },
        ),
        (
            "reasoning",
            Part::Reasoning {
                index: 0,
                text: " Tokyo".into(),
            },
        ),
        (
            "tool_call_delta",
            Part::ToolInput {
                index: 1,
                json: r#"ty":"To"#.into(),
            },
        ),
        (
            "tool_call",
            Part::ToolCall {
                index: 1,
                id: "tooluse_abc123".into(),
                name: "get_weather".into(),
                input: serde_json::json!({"city": "Tokyo", "days": 3}),
            },
        ),
    ];
    for (name, part) in events {
        let event = ChatEvent::of_part(id.clone(), part);
        c.bench_function(
            &format!("event: {name} to JSON (SSE data / WebSocket frame)"),
            |b| b.iter(|| serde_json::to_string(&event).unwrap()),
        );
    }
    let error = Error::UpstreamThrottled {
        message: "slow down".into(),
        retry_after: None,
    };
    c.bench_function("event: error body to JSON", |b| {
        b.iter(|| serde_json::to_string(&error.body()).unwrap())
    });

    let frame = delta_frame();
    c.bench_function(
        "Bedrock event-stream frame decode (contentBlockDelta)",
        |b| b.iter(|| read_message_from(frame.as_slice()).unwrap()),
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let pipeline = ChatPipeline::new(
        Arc::new(MockProvider::new(MockSettings::unpaced())),
        ModelCatalog {
            default: "mock".into(),
            ..Default::default()
        },
        PipelineOptions::default(),
    );
    let principal = Principal {
        sub: "bench".into(),
        tenant: "bench".into(),
        scopes: vec!["chat".into()],
        groups: vec![],
        expires_at: u64::MAX,
    };
    let hello = || {
        let request = parse_chat_request(br#"{"message":"hello"}"#).unwrap();
        pipeline
            .admit(request, &principal, Route::Chat, Instant::now())
            .unwrap()
    };
    // Routing and every limit check a request meets before the model is called, with the
    // rules and limits on: pick, resolve, chain, the request rate, the token reservation (two
    // windows) and its settlement.
    let mut routing = RoutingSettings {
        enabled: true,
        ..RoutingSettings::default()
    };
    routing.tenants.insert("other".into(), "smart".into());
    let catalog = ModelCatalog {
        default: "fast".into(),
        aliases: [("fast", "mock"), ("smart", "mock.slow")]
            .map(|(a, m)| (a.to_owned(), m.to_owned()))
            .into(),
        fallbacks: [("fast".to_owned(), vec!["smart".to_owned()])].into(),
        routing,
        ..ModelCatalog::default()
    };
    let quotas = Limits::new(
        RateLimitSettings {
            requests_per_minute: u64::MAX / 2,
            tokens_per_minute: u64::MAX / 2,
            tokens_per_day: u64::MAX / 2,
            ..RateLimitSettings::default()
        },
        Arc::new(LocalCounters::default()),
    );
    let mock = MockProvider::new(MockSettings::unpaced());
    let routed = parse_chat_request(BODY_UNNAMED)
        .unwrap()
        .validate(&limits, || "r".into())
        .unwrap();
    c.bench_function(
        "routing + limit checks (rules, fallbacks, request rate, token reservation and settlement)",
        |b| {
            b.to_async(&rt).iter(|| async {
                let (name, _) = catalog.pick(&routed, &principal.tenant).unwrap();
                let model = catalog.resolve(Some(name), &mock).unwrap();
                let chain = catalog.chain(Some(name), &model);
                quotas.admit(&principal).await.unwrap();
                let reservation = quotas.reserve(&principal, 20, Some(256)).await.unwrap();
                reservation.settle(120).await;
                chain
            })
        },
    );

    c.bench_function(
        "pipeline: unary chat on the unpaced mock (about 30 deltas)",
        |b| {
            b.to_async(&rt).iter(|| async {
                let stream = pipeline.start(hello()).await.unwrap();
                ChatReply::collect(stream).await.unwrap()
            })
        },
    );
    c.bench_function(
        "pipeline: streamed chat on the unpaced mock, events counted",
        |b| {
            b.to_async(&rt)
                .iter(|| async { pipeline.start(hello()).await.unwrap().count().await })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
