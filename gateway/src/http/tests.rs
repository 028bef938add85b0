//! Router tests through `tower::ServiceExt::oneshot`: the whole HTTP surface without a socket.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use nagare_authorizer::dev::{self, DevClaims};
use nagare_authorizer::{AuthSettings, Verifier};
use serde_json::Value;
use tower::ServiceExt;

use super::router;
use crate::app::{App, test_app};
use crate::pipeline::test_support::mock_pipeline;

const SECRET: &[u8] = b"router-test-secret-of-32-bytes!!";

fn state() -> Arc<App> {
    let verifier = Verifier::new(&AuthSettings::default(), Some(SECRET)).unwrap();
    test_app(mock_pipeline(), verifier)
}

fn token(scopes: &[&str]) -> String {
    let claims = DevClaims {
        sub: "alice".into(),
        tenant: None,
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ttl: Duration::from_secs(600),
    };
    dev::mint(SECRET, &claims).unwrap()
}

async fn send(
    app: &Arc<App>,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut req =
        Request::post(path).header("authorization", format!("Bearer {}", token(&["chat"])));
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let response = router(app.clone())
        .oneshot(req.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn post_json(
    app: &Arc<App>,
    path: &str,
    body: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    send(app, path, Some("application/json"), body.to_owned()).await
}

/// `(event name, JSON data)` of each SSE event in a complete body.
fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            (name, serde_json::from_str(&data).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn chat_replies_with_text_usage_and_stop_reason() {
    let (status, headers, body) = post_json(
        &state(),
        "/v1/chat",
        r#"{"message":"hello","request_id":"r1"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["x-request-id"], "r1");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["request_id"], "r1");
    assert_eq!(v["model"], "mock");
    assert_eq!(v["message"]["role"], "assistant");
    assert!(
        v["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("You said: hello.")
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 0);
    assert_eq!(v["cached"], false);
}

#[tokio::test]
async fn stream_sends_start_deltas_done_in_order() {
    let (status, headers, body) =
        post_json(&state(), "/v1/chat/stream", r#"{"message":"hello"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse_events(&body);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"start"));
    assert_eq!(names.last(), Some(&"done"));
    assert!(names[1..names.len() - 1].iter().all(|n| *n == "delta"));
    assert!(names.len() >= 4, "{names:?}");
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["request_id"], events[0].1["request_id"]);
    }
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["text"].as_str())
        .collect();
    let (_, _, unary) = post_json(&state(), "/v1/chat", r#"{"message":"hello"}"#).await;
    let unary: Value = serde_json::from_str(&unary).unwrap();
    assert_eq!(text, unary["message"]["content"].as_str().unwrap());
}

#[tokio::test]
async fn bad_input_gets_the_documented_error() {
    let s = state();
    let big = format!(r#"{{"message":"{}"}}"#, "x".repeat(300 * 1024));
    let cases: Vec<(Option<&str>, String, u16, &str, &str)> = vec![
        (
            Some("application/json"),
            r#"{}"#.into(),
            400,
            "invalid_request",
            "message",
        ),
        (
            Some("application/json"),
            r#"{"message":""}"#.into(),
            400,
            "invalid_request",
            "message",
        ),
        (
            Some("application/json"),
            r#"{"message":"   "}"#.into(),
            400,
            "invalid_request",
            "message",
        ),
        (
            Some("application/json"),
            r#"{"message":"#.into(),
            400,
            "invalid_request",
            "JSON",
        ),
        (
            Some("application/json"),
            r#"{"message":["a"]}"#.into(),
            400,
            "invalid_request",
            "message",
        ),
        (
            Some("application/json"),
            r#"{"message":"hi","prompt":"x"}"#.into(),
            400,
            "invalid_request",
            "prompt",
        ),
        (
            Some("application/json"),
            r#"{"message":"hi","model":"nope"}"#.into(),
            400,
            "invalid_request",
            "nope",
        ),
        (
            Some("application/json"),
            r#"{"message":"hi","inference":{"max_tokens":0}}"#.into(),
            400,
            "invalid_request",
            "max_tokens",
        ),
        (
            Some("application/json"),
            r#"{"message":"hi","inference":{"temperature":2}}"#.into(),
            400,
            "invalid_request",
            "temperature",
        ),
        (
            Some("application/json"),
            r#"{"message":"hi","inference":{"top_p":1.01}}"#.into(),
            400,
            "invalid_request",
            "top_p",
        ),
        (
            Some("application/json"),
            r#"{"message":"hi","inference":{"stop":"x"}}"#.into(),
            400,
            "invalid_request",
            "stop",
        ),
        (
            Some("text/plain"),
            r#"{"message":"hi"}"#.into(),
            400,
            "invalid_request",
            "content-type",
        ),
        (
            Some("application/json"),
            big,
            413,
            "payload_too_large",
            "limit",
        ),
    ];
    for path in ["/v1/chat", "/v1/chat/stream"] {
        for (ct, body, status, code, needle) in &cases {
            let (got, headers, text) = send(&s, path, *ct, body.clone()).await;
            let preview: String = body.chars().take(60).collect();
            assert_eq!(got.as_u16(), *status, "{path} {preview}: {text}");
            assert!(
                headers["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("application/json")
            );
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["error"]["code"], *code, "{preview}");
            assert_eq!(v["error"]["retryable"], false);
            assert!(
                v["error"]["message"].as_str().unwrap().contains(needle),
                "{preview}: {text}"
            );
            assert!(v["request_id"].as_str().is_some_and(|id| !id.is_empty()));
        }
    }
}

#[tokio::test]
async fn curl_default_form_content_type_carries_json() {
    // `curl -d '{...}'` sends application/x-www-form-urlencoded: the JSON body is still read.
    let s = state();
    let form = Some("application/x-www-form-urlencoded");
    let (status, _, text) = send(&s, "/v1/chat", form, r#"{"message":"hi"}"#).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    // A real form body is still not JSON: the same clear 400 as any other bad body.
    let (status, _, text) = send(&s, "/v1/chat", form, "message=hi").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "invalid_request");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("JSON"),
        "{text}"
    );
}

#[tokio::test]
async fn upstream_failures_map_to_the_error_table() {
    let s = state();
    let (status, headers, body) = post_json(
        &s,
        "/v1/chat",
        r#"{"message":"x","model":"mock.throttle-5"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "1");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "upstream_throttled");
    assert_eq!(v["error"]["retryable"], true);
    assert_eq!(v["error"]["retry_after_ms"], 100);

    let (status, _, body) = post_json(
        &s,
        "/v1/chat",
        r#"{"message":"x","model":"mock.error-midstream"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");

    let (status, _, body) = post_json(
        &s,
        "/v1/chat/stream",
        r#"{"message":"x","model":"mock.error-midstream"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let events = sse_events(&body);
    let last = &events.last().unwrap().1;
    assert_eq!(last["type"], "error");
    assert_eq!(last["code"], "upstream_error");
    assert_eq!(events.iter().filter(|(n, _)| n == "error").count(), 1);
}

#[tokio::test]
async fn health_readiness_and_unknown_routes() {
    let s = state();
    let get = |path: &'static str| {
        let s = s.clone();
        async move {
            let r = router(s)
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            r.status()
        }
    };
    assert_eq!(get("/healthz").await, StatusCode::OK);
    assert_eq!(get("/readyz").await, StatusCode::OK);
    assert_eq!(get("/nope").await, StatusCode::NOT_FOUND);
    s.lifecycle.drain();
    assert_eq!(get("/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get("/healthz").await, StatusCode::OK);
}

#[tokio::test]
async fn a_known_route_with_the_wrong_method_is_405_with_an_error_body() {
    let r = router(state())
        .oneshot(Request::get("/v1/chat").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "POST");
    let body = r.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("GET"));
}

#[tokio::test]
async fn request_id_comes_from_body_then_header_then_is_generated() {
    let s = state();
    let req = Request::post("/v1/chat")
        .header("authorization", format!("Bearer {}", token(&["chat"])))
        .header("x-request-id", "from-header")
        .body(Body::from(r#"{"message":"hi"}"#))
        .unwrap();
    let r = router(s.clone()).oneshot(req).await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "from-header");
    let (_, headers, _) = post_json(&s, "/v1/chat", r#"{"message":"hi"}"#).await;
    assert_eq!(headers["x-request-id"].len(), 36);
}

#[tokio::test]
async fn chat_needs_a_valid_token_with_the_chat_scope() {
    let s = state();
    let body = r#"{"message":"hi"}"#;
    let cases: [(Option<String>, u16, &str, Option<&str>); 5] = [
        (None, 401, "unauthorized", Some(r#"Bearer realm="nagare""#)),
        (
            Some("Bearer not-a-jwt".into()),
            401,
            "unauthorized",
            Some("invalid_token"),
        ),
        (
            Some("Basic YWxpY2U6eA==".into()),
            401,
            "unauthorized",
            Some("Bearer"),
        ),
        (
            Some(format!("Bearer {}", token(&["other"]))),
            403,
            "forbidden",
            Some("insufficient_scope"),
        ),
        (Some(format!("Bearer {}", token(&["chat"]))), 200, "", None),
    ];
    for path in ["/v1/chat", "/v1/chat/stream"] {
        for (auth, status, code, challenge) in &cases {
            let mut req = Request::post(path).header("content-type", "application/json");
            if let Some(a) = auth {
                req = req.header("authorization", a.as_str());
            }
            let r = router(s.clone())
                .oneshot(req.body(Body::from(body)).unwrap())
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), *status, "{path} {auth:?}");
            if let Some(c) = challenge {
                let got = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
                assert!(got.contains(c), "{got}");
            }
            if !code.is_empty() {
                let bytes = r.into_body().collect().await.unwrap().to_bytes();
                let v: Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(v["error"]["code"], *code);
            }
        }
    }
    // A token in the query string is only for the WebSocket upgrade: it would end up in logs.
    let uri = format!("/v1/chat?token={}", token(&["chat"]));
    let req = Request::post(uri).body(Body::from(body)).unwrap();
    assert_eq!(
        router(s.clone()).oneshot(req).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // So is a token among the WebSocket subprotocols.
    let req = Request::post("/v1/chat")
        .header(
            "sec-websocket-protocol",
            format!("nagare.v1, bearer.{}", token(&["chat"])),
        )
        .body(Body::from(body))
        .unwrap();
    assert_eq!(
        router(s).oneshot(req).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}
