//! Observability end to end: the `nagare serve` binary exports its spans to a stand-in OTLP
//! collector (continuing the caller's `traceparent` on HTTP, gRPC and the WebSocket upgrade, with
//! the GenAI attributes on the model call); `/metrics` parses as Prometheus text (with the
//! reference parser, Python's prometheus_client) and its counts move as chats happen.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nagare_gateway::provider::{MockProvider, MockSettings, UpstreamSettings};
use nagare_gateway::telemetry::MetricsSettings;
use nagare_proto::v1 as pb;
use nagare_proto::v1::chat_service_client::ChatServiceClient;
use nagare_tests::fake_collector::{CollectedSpan, FakeCollector};
use nagare_tests::harness::{Gateway, authed_client, dev_token, tenant_token};
use nagare_tests::served::Served;
use nagare_tests::ws_client::{self, until_done};
use nagare_tests::{INSTALL_PYTHON, python};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn traceparent(trace_id: &str, span_id: &str) -> String {
    format!("00-{trace_id}-{span_id}-01")
}

fn named<'a>(spans: &'a [CollectedSpan], name: &str) -> &'a CollectedSpan {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name:?} in {:#?}", names(spans)))
}

fn names(spans: &[CollectedSpan]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}

// Multi-threaded: the collector must keep serving while this thread waits for the server to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_in_the_callers_trace_with_genai_attributes() {
    let collector = FakeCollector::start().await.unwrap();
    let served = Served::start(&[
        ("NAGARE__TRACES__OTLP_ENDPOINT", &collector.url()),
        ("NAGARE__PROVIDER__MOCK__TTFT_MS", "0"),
        ("NAGARE__PROVIDER__MOCK__TOKENS_PER_SECOND", "0"),
    ]);
    let client = reqwest::Client::new();
    let (http_trace, http_parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let (grpc_trace, grpc_parent) = ("5bf92f3577b34da6a3ce929d0e0e4737", "10f067aa0ba902b8");
    let (ws_trace, ws_parent) = ("6bf92f3577b34da6a3ce929d0e0e4738", "20f067aa0ba902b9");
    let (fail_trace, fail_parent) = ("7bf92f3577b34da6a3ce929d0e0e4739", "30f067aa0ba902ba");

    let chat = |trace: &str, parent: &str, body: Value| {
        client
            .post(format!("{}/v1/chat", served.http))
            .bearer_auth(&served.token)
            .header("traceparent", traceparent(trace, parent))
            .json(&body)
            .send()
    };
    let ok = chat(http_trace, http_parent, json!({"message": "hello"}))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let failed = chat(
        fail_trace,
        fail_parent,
        json!({"message": "x", "model": "mock.error-midstream"}),
    )
    .await
    .unwrap();
    assert_eq!(failed.status(), 502);

    let mut grpc = ChatServiceClient::connect(served.grpc.clone())
        .await
        .unwrap();
    let mut request = tonic::Request::new(pb::ChatRequest {
        message: "hello over grpc".into(),
        ..Default::default()
    });
    let metadata = request.metadata_mut();
    metadata.insert(
        "authorization",
        format!("Bearer {}", served.token).parse().unwrap(),
    );
    metadata.insert(
        "traceparent",
        traceparent(grpc_trace, grpc_parent).parse().unwrap(),
    );
    let mut stream = grpc.converse_stream(request).await.unwrap().into_inner();
    while stream.message().await.unwrap().is_some() {}

    let mut upgrade = format!("ws://{}/v1/ws", served.http.trim_start_matches("http://"))
        .into_client_request()
        .unwrap();
    let headers = upgrade.headers_mut();
    headers.insert(
        "authorization",
        format!("Bearer {}", served.token).parse().unwrap(),
    );
    headers.insert(
        "traceparent",
        traceparent(ws_trace, ws_parent).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(upgrade).await.unwrap();
    ws_client::send(
        &mut ws,
        json!({"action": "chat", "request_id": "w1", "message": "hi"}),
    )
    .await;
    let frames = until_done(&mut ws, "w1").await;
    assert_eq!(frames.last().unwrap()["type"], "done", "{frames:?}");
    drop(ws);

    // The batch exporter has not sent anything yet (its delay is 5 s); shutdown must flush it.
    // SIGTERM, then a clean exit: spans still batched must be flushed on the way out.
    served.terminate();
    let exit = served.wait();
    assert!(exit.success(), "nagare serve exited with {exit}");

    let spans = collector.trace(http_trace);
    let server = named(&spans, "POST /v1/chat");
    assert_eq!(
        server.parent_span_id, http_parent,
        "the caller's span is the parent"
    );
    assert_eq!(server.kind, 2, "SpanKind SERVER");
    assert_eq!(server.attributes["http.route"], "/v1/chat");
    assert_eq!(server.attributes["http.response.status_code"], 200);
    assert_eq!(server.service, "nagare");
    for name in [
        "auth",
        "limits.admit",
        "history.load",
        "cache.lookup",
        "delivery",
        "history.append",
    ] {
        let span = named(&spans, name);
        assert!(!span.parent_span_id.is_empty(), "{name} has a parent");
    }
    let model = named(&spans, "chat mock");
    assert_eq!(model.kind, 3, "SpanKind CLIENT");
    let a = &model.attributes;
    assert_eq!(a["gen_ai.operation.name"], "chat");
    assert_eq!(a["gen_ai.system"], "mock");
    assert_eq!(a["gen_ai.request.model"], "mock");
    assert_eq!(a["gen_ai.response.model"], "mock");
    assert!(
        a["gen_ai.usage.input_tokens"].as_i64().unwrap() > 0,
        "{a:?}"
    );
    assert!(
        a["gen_ai.usage.output_tokens"].as_i64().unwrap() > 0,
        "{a:?}"
    );
    assert_eq!(a["gen_ai.response.finish_reasons"], json!(["end_turn"]));
    // Every span of the request is in the one trace, none is a stray root.
    assert!(
        spans.iter().all(|s| !s.parent_span_id.is_empty()),
        "{:#?}",
        names(&spans)
    );

    let spans = collector.trace(fail_trace);
    let model = named(&spans, "chat mock.error-midstream");
    assert_eq!(model.status_code, 2, "STATUS_CODE_ERROR");
    assert_eq!(model.attributes["error.type"], "upstream_error");
    assert_eq!(
        named(&spans, "POST /v1/chat").attributes["error.type"],
        "upstream_error"
    );

    let spans = collector.trace(grpc_trace);
    let server = named(&spans, "nagare.v1.ChatService/ConverseStream");
    assert_eq!(server.parent_span_id, grpc_parent);
    assert_eq!(server.attributes["rpc.system"], "grpc");
    named(&spans, "chat mock");

    let spans = collector.trace(ws_trace);
    assert_eq!(named(&spans, "GET /v1/ws").parent_span_id, ws_parent);
    named(&spans, "websocket.session");
    named(&spans, "chat mock");

    // A request's prompt never becomes an attribute.
    let all = collector.spans();
    let text = format!("{all:?}");
    assert!(
        !text.contains("hello over grpc"),
        "a prompt leaked into a span"
    );
}

/// Every sample of a scrape: `{name: [(labels, value), ...]}`.
type Samples = BTreeMap<String, Vec<(BTreeMap<String, String>, f64)>>;

/// The `/metrics` text parsed by the reference parser.
async fn scrape(gw: &Gateway) -> Samples {
    let response = reqwest::get(gw.url("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/parse_metrics.py");
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}; {INSTALL_PYTHON}", python().display()));
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of the series `name` whose labels include `labels`; 0 when absent.
fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .get(name)
        .into_iter()
        .flatten()
        .filter(|(l, _)| {
            labels
                .iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_what_happened() {
    let settings = MetricsSettings {
        max_tenants: 1,
        ..MetricsSettings::default()
    };
    // Retries, circuit breakers and the cache as `nagare serve` has them, with short backoffs.
    let gw = Gateway::builder()
        .model(Arc::new(MockProvider::new(MockSettings::unpaced())))
        .models("mock", &[])
        .config(|c| {
            c.metrics = settings;
            c.cache.enabled = true;
            c.upstream = UpstreamSettings {
                backoff_base_ms: 1,
                backoff_max_ms: 1,
                ..UpstreamSettings::default()
            };
        })
        .start()
        .await
        .unwrap();
    let alice = authed_client(&dev_token("alice", &["chat"]));
    let before = scrape(&gw).await;
    let chat = json!({"message": "what is nagare?"});

    let first = gw.post_chat(&alice, &chat).await.unwrap();
    assert_eq!(first.status, 200);
    let again = gw.post_chat(&alice, &chat).await.unwrap();
    assert_eq!(again.body["cached"], true);
    let retried = json!({"message": "x", "model": "mock.throttle-1"});
    assert_eq!(gw.post_chat(&alice, &retried).await.unwrap().status, 200);
    let stranger = authed_client("not-a-token");
    assert_eq!(gw.post_chat(&stranger, &chat).await.unwrap().status, 401);
    // A second tenant, over max_tenants = 1: counted as `other`.
    let bob = authed_client(&tenant_token("bob", Some("bobco"), &["chat"]));
    let bobs = gw
        .post_chat(&bob, &json!({"message": "bob here"}))
        .await
        .unwrap();
    assert_eq!(bobs.status, 200);
    let ws = ws_client::connect(&format!(
        "ws://{}/v1/ws?token={}",
        gw.addr,
        dev_token("carol", &["chat"])
    ))
    .await;

    let after = scrape(&gw).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let route = [("transport", "http"), ("route", "/v1/chat")];
    assert_eq!(
        moved(
            "nagare_requests_total",
            &[route[0], route[1], ("code", "ok")]
        ),
        4.0
    );
    assert_eq!(
        moved(
            "nagare_requests_total",
            &[route[0], route[1], ("code", "unauthorized")]
        ),
        1.0
    );
    assert_eq!(moved("nagare_request_duration_seconds_count", &route), 5.0);
    let chats = [("route", "chat"), ("code", "ok")];
    assert_eq!(moved("nagare_chats_total", &chats), 4.0);
    assert_eq!(
        moved("nagare_chats_total", &[("model", "mock.throttle-1")]),
        1.0
    );
    assert_eq!(
        moved(
            "nagare_upstream_retries_total",
            &[("model", "mock.throttle-1")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "nagare_time_to_first_delta_seconds_count",
            &[("route", "chat")]
        ),
        4.0
    );
    // The cache hit called no model: three chats have an overhead, four a latency.
    assert_eq!(
        moved(
            "nagare_gateway_overhead_seconds_count",
            &[("route", "chat")]
        ),
        3.0
    );
    assert_eq!(
        moved("nagare_chat_duration_seconds_count", &[("route", "chat")]),
        4.0
    );
    assert_eq!(moved("nagare_cache_hits_total", &[("tier", "l1")]), 1.0);
    let used = first.body["usage"]["output_tokens"].as_f64().unwrap();
    assert!(used > 0.0);
    assert_eq!(
        moved(
            "nagare_cache_tokens_saved_total",
            &[("direction", "output")]
        ),
        used
    );
    // alice's tokens: the first answer and the retried one; the hit cost nothing.
    let alice_out = moved(
        "nagare_tokens_total",
        &[("direction", "output"), ("tenant", "alice")],
    );
    assert!(alice_out > used, "{alice_out} vs {used}");
    assert!(moved("nagare_tokens_total", &[("tenant", "other")]) > 0.0);
    assert_eq!(moved("nagare_tokens_total", &[("tenant", "bobco")]), 0.0);
    assert_eq!(value(&after, "nagare_websocket_connections", &[]), 1.0);
    assert_eq!(
        value(&after, "nagare_circuit_state", &[("model", "mock")]),
        0.0
    );
    assert!(
        after["nagare_circuit_state"]
            .iter()
            .any(|(l, _)| l["model"] == "mock")
    );

    drop(ws);
    let mut closed = false;
    for _ in 0..100 {
        if value(&scrape(&gw).await, "nagare_websocket_connections", &[]) == 0.0 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed, "the gauge comes down when the connection closes");
}
