//! `nagare chat`: a small WebSocket client that prints a chat's deltas as they arrive. It speaks
//! the same frames a browser does, so it doubles as a live check of a deployment.

use std::io::Write;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Connects to `url` (`ws://host:port/v1/ws`, or `wss://` with the system's trusted roots;
/// `SSL_CERT_FILE` names another bundle), sends one chat, writes the deltas to `out` and
/// returns the conversation id and the `done` event, or the error frame's message.
pub async fn chat(
    url: &str,
    token: &str,
    message: &str,
    model: Option<&str>,
    conversation: Option<&str>,
    out: &mut impl Write,
) -> Result<(Option<String>, Value), String> {
    let mut request = url
        .into_client_request()
        .map_err(|e| format!("{url}: {e}"))?;
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| "the token is not a valid header value".to_owned())?;
    request.headers_mut().insert("authorization", bearer);
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(r) => format!("{url}: HTTP {}", r.status()),
            other => format!("{url}: {other}"),
        })?;
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut frame = json!({"action": "chat", "request_id": request_id, "message": message});
    if let Some(m) = model {
        frame["model"] = json!(m);
    }
    if let Some(c) = conversation {
        frame["conversation_id"] = json!(c);
    }
    let mut conversation_id = None;
    ws.send(Message::text(frame.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    while let Some(incoming) = ws.next().await {
        let Message::Text(text) = incoming.map_err(|e| e.to_string())? else {
            continue;
        };
        let event: Value = serde_json::from_str(text.as_str()).map_err(|e| e.to_string())?;
        if event["request_id"] != request_id.as_str() {
            continue;
        }
        match event["type"].as_str() {
            Some("start") => {
                conversation_id = event["conversation_id"].as_str().map(str::to_owned);
            }
            Some("delta") => {
                let _ = write!(out, "{}", event["text"].as_str().unwrap_or_default());
                let _ = out.flush();
            }
            Some("done") => {
                let _ = ws.close(None).await;
                return Ok((conversation_id, event));
            }
            Some("error") => {
                return Err(format!(
                    "{}: {}",
                    event["code"].as_str().unwrap_or("error"),
                    event["message"].as_str().unwrap_or_default()
                ));
            }
            _ => {}
        }
    }
    Err("the connection closed before the chat finished".into())
}
