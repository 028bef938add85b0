//! A WebSocket test client speaking Nagare's frames, for `/v1/ws` and the API Gateway emulator
//! alike. Helpers panic with a message: in a test, a panic is a failure that says what went wrong.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects, panicking if the server refuses.
pub async fn connect(url: &str) -> Ws {
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => ws,
        Err(e) => panic!("cannot connect to {url}: {e}"),
    }
}

/// Asserts that the server refuses the upgrade with `status`.
pub async fn assert_refused(url: &str, status: u16) {
    match tokio_tungstenite::connect_async(url).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), status, "{url}");
        }
        Err(e) => panic!("expected HTTP {status} before the upgrade, got {e}"),
        Ok(_) => panic!("expected HTTP {status} before the upgrade, but it was accepted"),
    }
}

pub async fn send(ws: &mut Ws, frame: Value) {
    if let Err(e) = ws.send(Message::text(frame.to_string())).await {
        panic!("sending {frame}: {e}");
    }
}

/// The next JSON frame, skipping pings; panics after 30 s.
pub async fn next(ws: &mut Ws) -> Value {
    loop {
        let message = match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Err(_) => panic!("no frame within 30 s"),
            Ok(None) => panic!("the connection ended"),
            Ok(Some(Err(e))) => panic!("the connection failed: {e}"),
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Text(t) => match serde_json::from_str(t.as_str()) {
                Ok(v) => return v,
                Err(e) => panic!("not JSON: {t}: {e}"),
            },
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// The close frame the server sends next, skipping any other frame; panics if none comes within
/// 10 s.
pub async fn close_frame(ws: &mut Ws) -> Option<tungstenite::protocol::CloseFrame> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame,
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    }
}

/// Frames until the terminal event of `request_id`.
pub async fn until_done(ws: &mut Ws, request_id: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let f = next(ws).await;
        let done = f["request_id"] == request_id && (f["type"] == "done" || f["type"] == "error");
        frames.push(f);
        if done {
            return frames;
        }
    }
}

/// The text of the `delta` frames of `request_id`, joined.
pub fn joined_text(frames: &[Value], request_id: &str) -> String {
    frames
        .iter()
        .filter(|f| f["type"] == "delta" && f["request_id"] == request_id)
        .filter_map(|f| f["text"].as_str())
        .collect()
}
