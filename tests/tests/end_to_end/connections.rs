#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Connection hygiene over real sockets: a flood of idle sockets, a slowloris head, a body that
//! never finishes, an idle keep-alive and a stalled HTTP/2 handshake are each closed by the
//! server; connections over the cap are closed at once and counted; while all that goes on,
//! another client's chat is answered. Also the cap on one user's WebSockets, and a WebSocket
//! that outlives its token.

use std::sync::Arc;
use std::time::Duration;

use nagare_authorizer::dev::{self, DevClaims};
use nagare_gateway::provider::{MockProvider, MockSettings};
use nagare_tests::harness::DEV_SECRET;
use nagare_tests::ws_client::{self, next, send};
use nagare_tests::{Gateway, authed_client, dev_token};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CAP: usize = 24;

async fn guarded_gateway() -> Gateway {
    Gateway::builder()
        .model(Arc::new(MockProvider::new(MockSettings::unpaced())))
        .models("mock", &[])
        .config(|c| {
            c.metrics.enabled = true;
            c.connections.max_connections = CAP;
            c.connections.http.head = Duration::from_secs(1);
            c.connections.http.body = Duration::from_secs(1);
            c.connections.http.idle = Duration::from_secs(1);
            c.grpc.handshake_timeout_secs = 1;
            c.grpc.idle_timeout_secs = 1;
        })
        .start()
        .await
        .unwrap()
}

/// Reads until the server closes the socket (EOF or reset); panics if it stays open 10 s.
async fn closed_by_server(tcp: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the server left the socket open");
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_and_another_client_is_still_served() {
    let gw = guarded_gateway().await;
    // A flood of silent sockets, one short of the cap: they send nothing at all.
    let mut flood = Vec::new();
    for _ in 0..CAP - 1 {
        flood.push(TcpStream::connect(gw.addr).await.unwrap());
    }
    // Meanwhile another client's chat is answered.
    let client = authed_client(&dev_token("bob", &["chat"]));
    let answer = client
        .post(gw.url("/v1/chat"))
        .json(&json!({"message": "still there?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // Over the cap, a connection is closed as soon as it is accepted.
    let mut over = Vec::new();
    for _ in 0..3 {
        over.push(TcpStream::connect(gw.addr).await.unwrap());
    }
    let mut refused = 0;
    for tcp in &mut over {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut byte)).await;
        if matches!(read, Ok(Ok(0) | Err(_))) {
            refused += 1;
        }
    }
    assert!(
        refused >= 1,
        "no connection over the cap was closed at once"
    );
    // The flood's sockets are closed by the server after the head timeout.
    for tcp in &mut flood {
        closed_by_server(tcp).await;
    }
    // With the flood gone, the refusals are on the metrics page.
    let metrics = gw.metrics().await;
    let refused_total: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("nagare_connections_refused_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no refusal counter in\n{metrics}"));
    assert!(refused_total >= refused as u64);
    assert!(metrics.contains("nagare_connections_open "));
}

#[tokio::test]
async fn a_head_sent_a_line_at_a_time_is_cut_off_while_still_arriving() {
    let gw = guarded_gateway().await;
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    // One header line every 200 ms, for far longer than the 1 s head timeout.
    let mut cut = false;
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if tcp
            .write_all(format!("x-drip-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            cut = true;
            break;
        }
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), tcp.read(&mut byte)).await
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "a head dripped for 10 s was never cut off");
}

#[tokio::test]
async fn a_body_that_never_finishes_is_answered_and_the_connection_closed() {
    let gw = guarded_gateway().await;
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"message\"",
        dev_token("alice", &["chat"])
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    // The body stops there, 90 bytes short.
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut response)).await;
    assert!(read.is_ok(), "the connection was still open after 10 s");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("not received within"), "{text}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let gw = guarded_gateway().await;
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Kept alive, then nothing: the server closes it.
    closed_by_server(&mut tcp).await;
}

#[tokio::test]
async fn grpc_sockets_that_never_finish_the_handshake_are_closed() {
    let gw = guarded_gateway().await;
    let mut silent = TcpStream::connect(gw.grpc_addr).await.unwrap();
    let mut half = TcpStream::connect(gw.grpc_addr).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n\r\n").await.unwrap();
    closed_by_server(&mut silent).await;
    closed_by_server(&mut half).await;
}

#[tokio::test]
async fn one_user_may_open_only_so_many_websockets() {
    let gw = Gateway::builder()
        .model(Arc::new(MockProvider::new(MockSettings::unpaced())))
        .models("mock", &[])
        .config(|c| c.websocket.max_per_principal = 2)
        .start()
        .await
        .unwrap();
    let url = |sub: &str| format!("ws://{}/v1/ws?token={}", gw.addr, dev_token(sub, &["chat"]));
    let first = ws_client::connect(&url("alice")).await;
    let _second = ws_client::connect(&url("alice")).await;
    ws_client::assert_refused(&url("alice"), 429).await;
    // Someone else is not affected, and a closed socket frees its seat.
    let _bob = ws_client::connect(&url("bob")).await;
    drop(first);
    let reopened = nagare_tests::eventually(Duration::from_secs(5), || async {
        tokio_tungstenite::connect_async(url("alice")).await.is_ok()
    })
    .await;
    assert!(reopened, "the closed socket's seat was never freed");
}

fn token_for(sub: &str, ttl: Duration) -> String {
    let claims = DevClaims {
        sub: sub.into(),
        tenant: None,
        scopes: vec!["chat".into()],
        ttl,
    };
    dev::mint(DEV_SECRET, &claims).unwrap()
}

#[tokio::test]
async fn a_websocket_is_closed_with_4401_when_its_token_expires_unless_renewed() {
    let gw = Gateway::builder()
        .model(Arc::new(MockProvider::new(MockSettings::unpaced())))
        .models("mock", &[])
        .start()
        .await
        .unwrap();
    let url = |token: &str| format!("ws://{}/v1/ws?token={token}", gw.addr);

    // Not renewed: closed with 4401 once the token expires.
    let mut lapsing = ws_client::connect(&url(&token_for("alice", Duration::from_secs(2)))).await;
    // Renewed in time with a fresh token for the same user: still open after the first expiry.
    let mut renewed = ws_client::connect(&url(&token_for("alice", Duration::from_secs(2)))).await;
    let fresh = token_for("alice", Duration::from_secs(600));
    send(
        &mut renewed,
        json!({"action": "auth", "token": fresh, "request_id": "a1"}),
    )
    .await;
    let answer = next(&mut renewed).await;
    assert_eq!(answer["type"], "auth", "{answer}");
    assert_eq!(answer["request_id"], "a1");
    // Another user's token does not renew it.
    let mallory = token_for("mallory", Duration::from_secs(600));
    send(&mut renewed, json!({"action": "auth", "token": mallory})).await;
    assert_eq!(next(&mut renewed).await["code"], "forbidden");

    let close = ws_client::close_frame(&mut lapsing).await;
    let close = close.unwrap();
    assert_eq!(u16::from(close.code), 4401);
    assert_eq!(close.reason.as_str(), "token expired");

    send(&mut renewed, json!({"action": "ping", "request_id": "p1"})).await;
    assert_eq!(next(&mut renewed).await["type"], "pong");
}
