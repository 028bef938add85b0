//! The WebSocket side of the load generator: chats over `/v1/ws`, and idle connections held open
//! to measure what each costs the server.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::delta_clock::{DeltaClock, Timing};
use crate::load::LoadSpec;
use crate::stamped::Stamped;

pub type WsConn = WebSocketStream<Stamped>;

/// Opens a WebSocket to `spec.url`, sending `spec.headers` (the token) with the upgrade.
pub async fn open(addr: SocketAddr, spec: &LoadSpec) -> Result<WsConn, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let stream = Stamped::new(stream).map_err(|e| format!("SO_TIMESTAMPNS: {e}"))?;
    let mut request = spec
        .url
        .to_string()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    for (k, v) in &spec.headers {
        let name = http::HeaderName::try_from(k.as_str()).map_err(|e| e.to_string())?;
        let value = http::HeaderValue::try_from(v.as_str()).map_err(|e| e.to_string())?;
        request.headers_mut().insert(name, value);
    }
    // Small buffers, so ten thousand idle clients do not need gigabytes. tungstenite zero-fills
    // the read buffer's free space before every read (5% of the client's CPU with 4 KiB), so it is
    // sized near one delta frame, about 100 bytes; larger frames take more reads.
    let config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    Ok(ws)
}

/// One chat: sends `spec.body` as a `chat` frame and reads until its `done` or `error`. Fails with
/// `delta_count_mismatch` unless every delta arrived (`usage.output_tokens` of them).
pub async fn chat(
    ws: &mut WsConn,
    spec: &LoadSpec,
    scheduled: Instant,
    request_id: &str,
) -> Result<Timing, String> {
    let mut frame: Value = serde_json::from_slice(&spec.body).map_err(|e| format!("body: {e}"))?;
    frame["action"] = Value::from("chat");
    frame["request_id"] = Value::from(request_id);
    ws.send(Message::text(frame.to_string()))
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut clock = DeltaClock::new(scheduled, spec.delta_interval);
    loop {
        let message = ws
            .next()
            .await
            .ok_or_else(|| "closed".to_owned())?
            .map_err(|e| format!("read: {e}"))?;
        let Message::Text(text) = message else {
            continue;
        };
        let event: Frame =
            serde_json::from_str(text.as_str()).map_err(|e| format!("frame: {e}"))?;
        if event.request_id != Some(request_id) {
            continue;
        }
        match event.kind {
            "delta" => clock.arrived_at(1, ws.get_ref().received()),
            "done" => {
                if event.usage.map(|u| u.output_tokens) != Some(u64::from(clock.count())) {
                    return Err("delta_count_mismatch".into());
                }
                return Ok(clock.finish());
            }
            "error" => return Err(event.code.unwrap_or("error").to_owned()),
            _ => {}
        }
    }
}

/// The fields of a server frame the load generator looks at, borrowed from the text: at tens of
/// thousands of frames a second, the client's own parsing must stay cheap.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default)]
    request_id: Option<&'a str>,
    #[serde(default)]
    code: Option<&'a str>,
    #[serde(default)]
    usage: Option<FrameUsage>,
}

#[derive(Deserialize)]
struct FrameUsage {
    output_tokens: u64,
}

/// Opens `spec.connections` connections, holds them idle for `spec.duration`, and returns how
/// many opened and the errors of those that did not.
pub async fn hold_idle(
    addr: SocketAddr,
    spec: &LoadSpec,
) -> (u64, std::collections::BTreeMap<String, u64>) {
    let mut open_conns = Vec::with_capacity(spec.connections);
    let mut errors = std::collections::BTreeMap::new();
    // Open in batches so the listen backlog is not overrun.
    for batch in (0..spec.connections).collect::<Vec<_>>().chunks(256) {
        let opened = futures::future::join_all(batch.iter().map(|_| open(addr, spec))).await;
        for result in opened {
            match result {
                Ok(ws) => open_conns.push(ws),
                Err(e) => *errors.entry(e).or_default() += 1,
            }
        }
    }
    let opened = open_conns.len() as u64;
    println_ready(opened);
    tokio::time::sleep(spec.duration).await;
    for mut ws in open_conns {
        let _ = tokio::time::timeout(Duration::from_millis(100), ws.close(None)).await;
    }
    (opened, errors)
}

/// Tells a script watching stderr that the connections are up, so it can measure the server.
fn println_ready(opened: u64) {
    eprintln!("idle connections open: {opened}");
}
