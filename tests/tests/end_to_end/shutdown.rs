#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Shutdown keeps every promise, over real sockets: at the signal readiness turns 503 while the
//! listeners still answer, new chats are refused with a retryable `unavailable`, and each chat
//! still streaming when the grace period ends gets an `unavailable` error and a proper end on
//! its transport (a WebSocket `error` frame and close 1001, an SSE `error` event, a gRPC
//! UNAVAILABLE status). A running task is put back at once, its attempt not counted.

use std::sync::Arc;
use std::time::Duration;

use nagare_gateway::provider::{MockProvider, MockSettings};
use nagare_proto::v1 as pb;
use nagare_proto::v1::chat_service_client::ChatServiceClient;
use nagare_tests::ws_client::{self, next, send};
use nagare_tests::{Gateway, authed_client, dev_token, eventually};
use serde_json::{Value, json};

/// Long answers (`mock.long`, about 1,500 words) paced slowly enough to outlast any grace.
async fn slow_gateway(grace: Duration, tasks: bool) -> Gateway {
    let paced = MockSettings {
        ttft_ms: 0,
        tokens_per_second: 20,
    };
    Gateway::builder()
        .bare_model(Arc::new(MockProvider::new(paced)))
        .models("mock", &[])
        .config(move |c| {
            c.shutdown_grace = grace;
            c.tasks.enabled = tasks;
            c.tasks.workers = 1;
        })
        .start()
        .await
        .unwrap()
}

/// The `data:` JSON of each complete SSE event in `buf`.
fn sse_events(buf: &str) -> Vec<Value> {
    buf.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter_map(|data| serde_json::from_str(data).ok())
        .collect()
}

#[tokio::test]
async fn at_the_end_of_the_grace_period_every_transport_ends_its_chats_properly() {
    let mut gw = slow_gateway(Duration::from_secs(2), false).await;
    let token = dev_token("alice", &["chat"]);
    let client = authed_client(&token);
    let long = json!({"message": "tell me everything", "model": "mock.long"});

    // A WebSocket chat, with its first delta in.
    let mut ws = ws_client::connect(&format!("ws://{}/v1/ws?token={token}", gw.addr)).await;
    let mut chat = long.clone();
    chat["action"] = "chat".into();
    chat["request_id"] = "w1".into();
    send(&mut ws, chat).await;
    while next(&mut ws).await["type"] != "delta" {}

    // An SSE chat, with its first bytes in.
    let mut sse = client
        .post(gw.url("/v1/chat/stream"))
        .json(&long)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let mut sse_text = String::from_utf8(sse.chunk().await.unwrap().unwrap().to_vec()).unwrap();

    // A gRPC stream, with its first event in.
    let mut grpc = ChatServiceClient::connect(gw.grpc_url()).await.unwrap();
    let mut request = tonic::Request::new(pb::ChatRequest {
        message: "tell me everything".into(),
        model: Some("mock.long".into()),
        ..Default::default()
    });
    let bearer = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", bearer);
    let mut stream = grpc.converse_stream(request).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_some());

    gw.shutdown();

    // Draining: the listener still answers; readiness is 503; a new chat is refused, retryably.
    let ready = eventually(Duration::from_secs(5), || async {
        let r = client.get(gw.url("/readyz")).send().await;
        r.is_ok_and(|r| r.status() == 503)
    })
    .await;
    assert!(ready, "readiness never turned 503 while draining");
    let refused = client
        .post(gw.url("/v1/chat"))
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert_eq!(body["error"]["retryable"], true);

    // The WebSocket chat ends with an `unavailable` error, then the server closes with 1001.
    let last = loop {
        let frame = next(&mut ws).await;
        if frame["type"] == "error" || frame["type"] == "done" {
            break frame;
        }
    };
    assert_eq!(last["request_id"], "w1");
    assert_eq!(last["code"], "unavailable", "{last}");
    assert_eq!(last["retryable"], true);
    let close = ws_client::close_frame(&mut ws).await;
    assert_eq!(u16::from(close.unwrap().code), 1001);

    // SSE: an `error` event with the same code, then the body ends.
    while let Some(chunk) = sse.chunk().await.unwrap() {
        sse_text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let events = sse_events(&sse_text);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "error", "{last}");
    assert_eq!(last["code"], "unavailable");

    // gRPC: UNAVAILABLE, with the error table's code in the trailers.
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(
        status.metadata().get("nagare-error-code").unwrap(),
        "unavailable"
    );

    // Then the server stops, and the port is closed.
    let stopped = gw.stopped.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the server did not stop")
        .unwrap();
    assert!(client.get(gw.url("/healthz")).send().await.is_err());
}

#[tokio::test]
async fn a_websocket_with_nothing_in_flight_is_closed_with_1001_at_once() {
    let mut gw = slow_gateway(Duration::from_secs(30), false).await;
    let token = dev_token("alice", &["chat"]);
    let mut ws = ws_client::connect(&format!("ws://{}/v1/ws?token={token}", gw.addr)).await;
    send(&mut ws, json!({"action": "ping"})).await;
    assert_eq!(next(&mut ws).await["type"], "pong");
    gw.shutdown();
    let close = ws_client::close_frame(&mut ws).await;
    assert_eq!(u16::from(close.unwrap().code), 1001);
    // Nothing was in flight, so the server stops long before its 30 s grace.
    let stopped = gw.stopped.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the server waited for nothing")
        .unwrap();
}

#[tokio::test]
async fn a_running_task_is_put_back_at_once_without_using_an_attempt() {
    let mut gw = slow_gateway(Duration::from_secs(30), true).await;
    let client = authed_client(&dev_token("alice", &["chat"]));
    let body = json!({"message": "tell me everything", "model": "mock.long"});
    let id = gw.submit_task(&client, &body).await;
    let path = format!("/v1/tasks/{id}");
    let running = eventually(Duration::from_secs(10), || async {
        gw.get_json(&client, &path).await.1["status"] == "running"
    })
    .await;
    assert!(running, "the task never started");
    gw.shutdown();
    let stopped = gw.stopped.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the server did not stop: a running task held it for its grace")
        .unwrap();
    let tasks = gw.app.tasks().unwrap();
    let record = tasks.store.get(&id).await.unwrap().unwrap();
    assert_eq!(record.status.as_str(), "queued");
    assert_eq!(record.attempts, 0, "the interrupted run is not an attempt");
    let depth = tasks.queue.depth().await.unwrap();
    assert_eq!(depth.waiting, 1, "visible again at once: {depth:?}");
}

#[tokio::test]
async fn sigterm_to_the_binary_ends_a_websocket_chat_properly_and_exits_cleanly() {
    let served = nagare_tests::served::Served::start(&[
        ("NAGARE__SERVER__SHUTDOWN_GRACE_SECS", "1"),
        ("NAGARE__PROVIDER__MOCK__TTFT_MS", "0"),
        ("NAGARE__PROVIDER__MOCK__TOKENS_PER_SECOND", "20"),
    ]);
    let ws_url = format!(
        "{}/v1/ws?token={}",
        served.http.replacen("http://", "ws://", 1),
        served.token
    );
    let mut ws = ws_client::connect(&ws_url).await;
    send(
        &mut ws,
        json!({"action": "chat", "request_id": "s1", "message": "go on", "model": "mock.long"}),
    )
    .await;
    while next(&mut ws).await["type"] != "delta" {}
    served.terminate();
    // Readiness turns 503 while the chat still streams.
    let client = reqwest::Client::new();
    let ready = eventually(Duration::from_secs(5), || async {
        let r = client.get(format!("{}/readyz", served.http)).send().await;
        r.is_ok_and(|r| r.status() == 503)
    })
    .await;
    assert!(ready, "readiness never turned 503 after SIGTERM");
    let last = loop {
        let frame = next(&mut ws).await;
        if frame["type"] == "error" || frame["type"] == "done" {
            break frame;
        }
    };
    assert_eq!(last["code"], "unavailable", "{last}");
    let close = ws_client::close_frame(&mut ws).await;
    assert_eq!(u16::from(close.unwrap().code), 1001);
    let exit = tokio::task::spawn_blocking(move || served.wait())
        .await
        .unwrap();
    assert!(exit.success(), "nagare serve exited with {exit}");
}
