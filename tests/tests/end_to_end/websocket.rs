//! `GET /v1/ws` on a real socket with tokio-tungstenite: authentication at the upgrade, ordered
//! streaming, concurrent chats, cancellation reaching the upstream, bad frames, the in-flight
//! limit, and a client too slow to read.

// Test helpers outside #[test] functions may panic too: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use nagare_gateway::Error;
use nagare_gateway::provider::{
    MockProvider, MockSettings, ModelProvider, ProviderEvent, ProviderRequest, ProviderStream,
};
use nagare_gateway::ws::WsSettings;
use nagare_tests::ws_client::{self, Ws, next, send, until_done};
use nagare_tests::{FakeBedrock, Gateway, bedrock_provider, dev_token, eventually};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn mock_gateway() -> Gateway {
    let paced = MockSettings {
        ttft_ms: 0,
        tokens_per_second: 500,
    };
    // Without the retry layer: these tests read `start` before a stalled model's first token.
    Gateway::builder()
        .bare_model(Arc::new(MockProvider::new(paced)))
        .models("mock", &[])
        .start()
        .await
        .unwrap()
}

async fn connect(gw: &Gateway) -> Ws {
    let url = format!(
        "ws://{}/v1/ws?token={}",
        gw.addr,
        dev_token("alice", &["chat"])
    );
    ws_client::connect(&url).await
}

#[tokio::test]
async fn the_upgrade_needs_a_token() {
    let gw = mock_gateway().await;
    ws_client::assert_refused(&format!("ws://{}/v1/ws", gw.addr), 401).await;
    ws_client::assert_refused(&format!("ws://{}/v1/ws?token=garbage", gw.addr), 401).await;
    let no_scope = format!(
        "ws://{}/v1/ws?token={}",
        gw.addr,
        dev_token("alice", &["profile"])
    );
    ws_client::assert_refused(&no_scope, 403).await;
}

#[tokio::test]
async fn a_token_in_the_subprotocol_works_and_the_server_picks_nagare_v1() {
    let gw = mock_gateway().await;
    let mut request = format!("ws://{}/v1/ws", gw.addr)
        .into_client_request()
        .unwrap();
    let protocols = format!("nagare.v1, bearer.{}", dev_token("alice", &["chat"]));
    request
        .headers_mut()
        .insert("sec-websocket-protocol", protocols.parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "nagare.v1");
    send(&mut ws, json!({"action": "ping", "request_id": "p1"})).await;
    let pong = next(&mut ws).await;
    assert_eq!(pong["type"], "pong");
    assert_eq!(pong["request_id"], "p1");
    // The id a task names to deliver its result here.
    assert_eq!(pong["connection_id"].as_str().unwrap().len(), 36, "{pong}");
}

#[tokio::test]
async fn a_chat_streams_in_order_and_matches_the_rest_answer() {
    let gw = mock_gateway().await;
    let mut ws = connect(&gw).await;
    send(
        &mut ws,
        json!({"action": "chat", "request_id": "c1", "message": "hello"}),
    )
    .await;
    let frames = until_done(&mut ws, "c1").await;
    let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"start"));
    assert_eq!(kinds.last(), Some(&"done"));
    assert!(kinds[1..kinds.len() - 1].iter().all(|k| *k == "delta") && kinds.len() > 3);
    let text: String = frames.iter().filter_map(|f| f["text"].as_str()).collect();
    let rest: Value = gw
        .client()
        .post(gw.url("/v1/chat"))
        .json(&json!({"message": "hello"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(text, rest["message"]["content"].as_str().unwrap());
}

#[tokio::test]
async fn concurrent_chats_on_one_connection_each_arrive_whole_and_in_order() {
    let gw = mock_gateway().await;
    let mut ws = connect(&gw).await;
    // mock.slow waits 800 ms before its first token, so both chats are in flight together.
    for (id, message) in [("a", "first question"), ("b", "second question")] {
        send(&mut ws, json!({"action": "chat", "request_id": id, "message": message, "model": "mock.slow", "inference": {"max_tokens": 6}})).await;
    }
    let mut by_id: HashMap<String, Vec<Value>> = HashMap::new();
    let mut order = Vec::new();
    while by_id
        .values()
        .filter(|v| v.last().is_some_and(|f| f["type"] == "done"))
        .count()
        < 2
    {
        let f = next(&mut ws).await;
        order.push(format!(
            "{}:{}",
            f["request_id"].as_str().unwrap(),
            f["type"].as_str().unwrap()
        ));
        by_id
            .entry(f["request_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(f);
    }
    let first_done = order.iter().position(|o| o.ends_with(":done")).unwrap();
    assert!(
        order[..first_done].contains(&"a:start".into())
            && order[..first_done].contains(&"b:start".into()),
        "{order:?}"
    );
    for (id, frames) in &by_id {
        let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "start", "delta", "delta", "delta", "delta", "delta", "delta", "done"
            ],
            "{id}"
        );
    }
    let text = |id: &str| {
        by_id[id]
            .iter()
            .filter_map(|f| f["text"].as_str())
            .collect::<String>()
    };
    assert!(text("a").contains("first") && text("b").contains("second"));
}

#[tokio::test]
async fn cancel_and_disconnect_abort_the_upstream_stream() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = Gateway::start(Arc::new(bedrock_provider(&fake.url())), "fake.slow", &[])
        .await
        .unwrap();
    let mut ws = connect(&gw).await;
    send(
        &mut ws,
        json!({"action": "chat", "request_id": "x", "message": "hi"}),
    )
    .await;
    assert_eq!(next(&mut ws).await["type"], "start");
    assert_eq!(next(&mut ws).await["type"], "delta");
    send(&mut ws, json!({"action": "cancel", "request_id": "x"})).await;
    let frames = until_done(&mut ws, "x").await;
    let last = frames.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["code"].as_str()),
        (Some("error"), Some("cancelled"))
    );
    assert!(
        fake.wait_for(Duration::from_secs(10), |f| f.aborted() == 1)
            .await,
        "cancel did not reach the upstream"
    );
    // Cancelling again, or an unknown id, is harmless and the connection stays usable.
    send(&mut ws, json!({"action": "cancel", "request_id": "x"})).await;
    send(&mut ws, json!({"action": "ping"})).await;
    assert_eq!(next(&mut ws).await["type"], "pong");

    send(
        &mut ws,
        json!({"action": "chat", "request_id": "y", "message": "hi"}),
    )
    .await;
    assert_eq!(next(&mut ws).await["type"], "start");
    drop(ws);
    assert!(
        fake.wait_for(Duration::from_secs(10), |f| f.aborted() == 2)
            .await,
        "closing the socket did not reach the upstream"
    );
    assert_eq!(fake.completed(), 0);
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_connection_stays_usable() {
    let gw = mock_gateway().await;
    let mut ws = connect(&gw).await;
    let big = json!({"action": "chat", "message": "x".repeat(129 * 1024)}).to_string();
    let cases: Vec<(Message, &str, &str)> = vec![
        (Message::text("this is not json"), "invalid_request", "JSON"),
        (
            Message::binary(vec![1u8, 2, 3]),
            "invalid_request",
            "binary",
        ),
        (
            Message::text(r#"{"action":"dance"}"#),
            "invalid_request",
            "dance",
        ),
        (
            Message::text(r#"{"message":"no action"}"#),
            "invalid_request",
            "action",
        ),
        (
            Message::text(r#"{"action":"chat"}"#),
            "invalid_request",
            "message",
        ),
        (
            Message::text(r#"{"action":"chat","message":"  "}"#),
            "invalid_request",
            "message",
        ),
        (
            Message::text(r#"{"action":"chat","message":"hi","model":"nope"}"#),
            "invalid_request",
            "nope",
        ),
        (
            Message::text(r#"{"action":"cancel"}"#),
            "invalid_request",
            "request_id",
        ),
        (Message::text(big), "payload_too_large", "limit"),
    ];
    for (frame, code, needle) in cases {
        ws.send(frame).await.unwrap();
        let reply = next(&mut ws).await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], code, "{reply}");
        assert!(
            reply["message"].as_str().unwrap().contains(needle),
            "{reply}"
        );
    }
    send(
        &mut ws,
        json!({"action": "chat", "request_id": "ok", "message": "still here?"}),
    )
    .await;
    assert_eq!(
        until_done(&mut ws, "ok").await.last().unwrap()["type"],
        "done"
    );
}

#[tokio::test]
async fn more_chats_than_the_per_connection_limit_are_rate_limited() {
    let gw = mock_gateway().await;
    let mut ws = connect(&gw).await;
    for i in 0..8 {
        send(&mut ws, json!({"action": "chat", "request_id": format!("s{i}"), "message": "hi", "model": "mock.stall"})).await;
    }
    for _ in 0..8 {
        assert_eq!(next(&mut ws).await["type"], "start");
    }
    send(
        &mut ws,
        json!({"action": "chat", "request_id": "s0", "message": "dup", "model": "mock.stall"}),
    )
    .await;
    let dup = next(&mut ws).await;
    assert_eq!(
        (dup["code"].as_str(), dup["request_id"].as_str()),
        (Some("invalid_request"), Some("s0"))
    );
    send(
        &mut ws,
        json!({"action": "chat", "request_id": "s8", "message": "one too many"}),
    )
    .await;
    let refused = next(&mut ws).await;
    assert_eq!(refused["code"], "rate_limited");
    assert_eq!(refused["request_id"], "s8");
    assert_eq!(refused["retryable"], true);
    // Cancelling one frees a slot.
    send(&mut ws, json!({"action": "cancel", "request_id": "s3"})).await;
    assert_eq!(
        until_done(&mut ws, "s3").await.last().unwrap()["code"],
        "cancelled"
    );
    send(
        &mut ws,
        json!({"action": "chat", "request_id": "s9", "message": "now there is room"}),
    )
    .await;
    assert_eq!(
        until_done(&mut ws, "s9").await.last().unwrap()["type"],
        "done"
    );
}

/// A model that never stops talking, in big deltas, and counts how often its stream is dropped.
struct Firehose {
    dropped: Arc<AtomicU64>,
}

struct DropCounter(Arc<AtomicU64>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl ModelProvider for Firehose {
    fn name(&self) -> &'static str {
        "firehose"
    }

    fn recognizes(&self, _: &str) -> bool {
        true
    }

    async fn converse_stream(&self, _: ProviderRequest) -> Result<ProviderStream, Error> {
        let guard = DropCounter(self.dropped.clone());
        let chunk = "x".repeat(4096);
        Ok(futures::stream::repeat_with(move || {
            let _alive = &guard;
            Ok(ProviderEvent::text(chunk.clone()))
        })
        .boxed())
    }
}

#[tokio::test]
async fn a_client_that_does_not_read_is_closed_and_its_upstream_cancelled() {
    let dropped = Arc::new(AtomicU64::new(0));
    let settings = WsSettings {
        outbound_frames: 8,
        slow_consumer_timeout_ms: 200,
        ..WsSettings::default()
    };
    let provider = Arc::new(Firehose {
        dropped: dropped.clone(),
    });
    let gw = Gateway::builder()
        .model(provider)
        .models("any", &[])
        .config(|c| c.websocket = settings)
        .start()
        .await
        .unwrap();
    let mut ws = connect(&gw).await;
    send(
        &mut ws,
        json!({"action": "chat", "request_id": "flood", "message": "talk forever"}),
    )
    .await;
    // Never read: socket buffers fill, the outbound queue fills, and the server gives up.
    let cancelled = eventually(Duration::from_secs(30), || async {
        dropped.load(Ordering::SeqCst) > 0
    })
    .await;
    assert!(cancelled, "the endless upstream was never cancelled");
    // Draining what was buffered ends in a close (1013) or a reset, never in more data forever.
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(frame) = ws.next().await {
            match frame {
                Ok(Message::Close(Some(close))) => return Some(u16::from(close.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the connection stayed open");
    assert!(
        ended.is_none_or(|code| code == 1013),
        "closed with {ended:?}"
    );
}

/// A WebSocket to `/v1/ws` opened by hand, so that a test can write frames no client library
/// would send.
async fn raw_socket(gw: &Gateway) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let request = format!(
        "GET /v1/ws?token={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        dev_token("alice", &["chat"]),
        gw.addr
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    // The 101 response ends with an empty line; nothing else comes before the client speaks.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

/// A client frame with a payload under 126 bytes, masked unless `masked` is false.
fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let len = u8::try_from(payload.len()).unwrap();
    let mut out = vec![first, if masked { 0x80 | len } else { len }];
    if masked {
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Writes `bytes` and returns the code of the close frame the server answers with.
async fn close_code_after(gw: &Gateway, bytes: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = raw_socket(gw).await;
    tcp.write_all(bytes).await.unwrap();
    let read = async {
        loop {
            let mut header = [0u8; 2];
            tcp.read_exact(&mut header).await.unwrap();
            let mut payload = vec![0u8; usize::from(header[1] & 0x7f)];
            tcp.read_exact(&mut payload).await.unwrap();
            // Skip anything before the close frame (a ping, say).
            if header[0] & 0x0f == 0x8 {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no close frame within 10 s")
}

#[tokio::test]
async fn broken_frames_close_with_the_rfc_6455_code() {
    let gw = mock_gateway().await;
    // A text frame whose payload is not UTF-8: 1007.
    assert_eq!(
        close_code_after(&gw, &frame(0x81, &[0xff, 0xfe], true)).await,
        1007
    );
    // An unmasked client frame, reserved bits set, a continuation with nothing to continue: 1002.
    assert_eq!(
        close_code_after(&gw, &frame(0x81, b"hi", false)).await,
        1002
    );
    assert_eq!(close_code_after(&gw, &frame(0xc1, b"hi", true)).await, 1002);
    assert_eq!(close_code_after(&gw, &frame(0x80, b"hi", true)).await, 1002);
    // A client that closes properly gets its close echoed (RFC 6455, 5.5.1).
    let goodbye = frame(0x88, &1000u16.to_be_bytes(), true);
    assert_eq!(close_code_after(&gw, &goodbye).await, 1000);
}
