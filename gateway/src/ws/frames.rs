//! The WebSocket frame protocol, shared by `nagare serve` and the API Gateway WebSocket API.
//! Client → server frames are JSON objects routed by `action` (`chat`, `cancel`, `ping`); server →
//! client frames are the chat events, `pong`, and `error` for frames that could not be handled.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::chat::{ChatRequest, parse_json, parse_json_hiding};
use crate::error::{Error, ErrorBody};

/// A parsed client frame.
#[derive(Debug, Clone)]
pub enum ClientFrame {
    Chat(Box<ChatRequest>),
    Cancel {
        request_id: String,
    },
    Ping {
        request_id: Option<String>,
    },
    /// A fresh token for the connection's principal, before the one it opened with expires.
    Auth {
        request_id: Option<String>,
        token: String,
    },
}

/// A frame that could not be parsed, with the request id when the frame carried one, so the
/// client can match the error to what it sent.
#[derive(Debug)]
pub struct FrameError {
    pub request_id: Option<String>,
    pub error: Error,
}

/// What every client frame starts with: its action, and the request id it is about. Other fields
/// are left for the action's own type.
#[derive(Deserialize)]
struct FrameHead {
    action: Option<String>,
    request_id: Option<String>,
}

/// A `cancel` frame: the chat's request id and nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelFrame {
    request_id: Option<String>,
}

/// An `auth` frame: a new token, and the optional request id its answer echoes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFrame {
    request_id: Option<String>,
    token: String,
}

/// Parses one text frame. `max_bytes` is the message size limit (API Gateway's is 128 KiB).
/// The head is read first, then the frame again as its action's type with `action` hidden, so
/// errors name the field at fault.
pub fn parse(text: &str, max_bytes: usize) -> Result<ClientFrame, FrameError> {
    let fail = |request_id: Option<String>, error: Error| FrameError { request_id, error };
    if text.len() > max_bytes {
        return Err(fail(None, Error::PayloadTooLarge { limit: max_bytes }));
    }
    if !text.trim_start().starts_with('{') {
        let error = match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => Error::InvalidRequest("a frame must be a JSON object".into()),
            Err(e) => Error::InvalidRequest(format!("invalid JSON frame: {e}")),
        };
        return Err(fail(None, error));
    }
    let head: FrameHead = parse_json(text.as_bytes()).map_err(|e| fail(None, e))?;
    let request_id = head.request_id;
    let Some(action) = head.action else {
        return Err(fail(
            request_id,
            Error::InvalidRequest("action: missing; use chat, cancel, ping or auth".into()),
        ));
    };
    let body = text.as_bytes();
    match action.as_str() {
        "chat" => parse_json_hiding::<ChatRequest>(body, &["action"])
            .and_then(|r| {
                // Frames stay small (API Gateway's stop at 32 KB): bytes go to /v1/uploads.
                r.check_no_inline_bytes("a WebSocket chat")?;
                Ok(ClientFrame::Chat(Box::new(r)))
            })
            .map_err(|e| fail(request_id, e)),
        "cancel" => match parse_json_hiding::<CancelFrame>(body, &["action"]) {
            Ok(CancelFrame {
                request_id: Some(id),
            }) => Ok(ClientFrame::Cancel { request_id: id }),
            Ok(CancelFrame { request_id: None }) => Err(fail(
                None,
                Error::InvalidRequest(
                    "request_id: missing; cancel needs the chat's request_id".into(),
                ),
            )),
            Err(e) => Err(fail(request_id, e)),
        },
        "ping" => Ok(ClientFrame::Ping { request_id }),
        "auth" => parse_json_hiding::<AuthFrame>(body, &["action"])
            .map(|f| ClientFrame::Auth {
                request_id: f.request_id,
                token: f.token,
            })
            .map_err(|e| fail(request_id, e)),
        other => Err(fail(
            request_id,
            Error::InvalidRequest(format!(
                "action: unknown action '{other}'; use chat, cancel, ping or auth"
            )),
        )),
    }
}

/// A chat frame reused a request id that is still streaming on the connection.
pub fn duplicate_chat(request_id: &str) -> Error {
    Error::InvalidRequest(format!(
        "request_id: '{request_id}' is already in flight on this connection"
    ))
}

/// The connection has as many chats in flight as it may.
pub fn too_many_chats(max: usize) -> Error {
    Error::RateLimited {
        message: format!("at most {max} chats may be in flight on one connection"),
        retry_after: Duration::from_secs(1),
    }
}

/// `{"type":"pong","request_id"?,"connection_id"}`: the connection id is how a client learns
/// where a task may deliver its result.
#[derive(Debug, Serialize)]
struct Pong<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    connection_id: &'a str,
}

/// `{"type":"error","request_id"?, "code", "message", "retryable", ...}`
#[derive(Debug, Serialize)]
struct ErrorFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(flatten)]
    error: ErrorBody,
}

/// The client actions, as API Gateway routes them (`$request.body.action`): each is a route of
/// the WebSocket API in `deploy/template.yaml`.
pub const ACTIONS: [&str; 3] = ["chat", "cancel", "ping"];

/// The text of a `pong` frame.
pub fn pong(request_id: Option<&str>, connection_id: &str) -> String {
    serde_json::to_string(&Pong {
        kind: "pong",
        request_id,
        connection_id,
    })
    .unwrap_or_default()
}

/// `{"type":"auth","request_id"?,"expires_at"}`: the connection now lasts until the new
/// token's expiry (Unix seconds).
#[derive(Debug, Serialize)]
struct Authed<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    expires_at: u64,
}

/// The text of an `auth` frame's answer.
pub fn authed(request_id: Option<&str>, expires_at: u64) -> String {
    serde_json::to_string(&Authed {
        kind: "auth",
        request_id,
        expires_at,
    })
    .unwrap_or_default()
}

/// The text of an `error` frame.
pub fn error(request_id: Option<&str>, error: &Error) -> String {
    serde_json::to_string(&ErrorFrame {
        kind: "error",
        request_id,
        error: error.body(),
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> (Option<String>, String, String) {
        let e = parse(text, 1024).expect_err(text);
        (
            e.request_id,
            e.error.code().as_str().to_owned(),
            e.error.to_string(),
        )
    }

    #[test]
    fn good_frames_parse() {
        match parse(
            r#"{"action":"chat","message":"hi","request_id":"r1","inference":{"max_tokens":5}}"#,
            1024,
        ) {
            Ok(ClientFrame::Chat(r)) => {
                assert_eq!(r.message, "hi");
                assert_eq!(r.request_id.as_deref(), Some("r1"));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(parse(r#"{"action":"cancel","request_id":"r1"}"#, 1024), Ok(ClientFrame::Cancel { request_id }) if request_id == "r1")
        );
        assert!(matches!(
            parse(r#"{"action":"ping"}"#, 1024),
            Ok(ClientFrame::Ping { request_id: None })
        ));
        assert!(matches!(
            parse(r#"{"action":"auth","token":"t","request_id":"a1"}"#, 1024),
            Ok(ClientFrame::Auth { request_id: Some(id), token }) if id == "a1" && token == "t"
        ));
        assert!(
            err(r#"{"action":"auth"}"#)
                .2
                .contains("missing field `token`")
        );
    }

    #[test]
    fn bad_frames_say_what_is_wrong() {
        let cases = [
            ("not json", None, "invalid_request", "JSON"),
            ("[1]", None, "invalid_request", "object"),
            (r#"{"message":"hi"}"#, None, "invalid_request", "action"),
            (r#"{"action":5}"#, None, "invalid_request", "action"),
            (
                r#"{"action":"dance","request_id":"r9"}"#,
                Some("r9"),
                "invalid_request",
                "dance",
            ),
            (
                r#"{"action":"chat","request_id":"r2","message":7}"#,
                Some("r2"),
                "invalid_request",
                "message",
            ),
            (
                r#"{"action":"chat","message":"x","bogus":1}"#,
                None,
                "invalid_request",
                "bogus",
            ),
            (
                r#"{"action":"cancel"}"#,
                None,
                "invalid_request",
                "request_id",
            ),
        ];
        for (text, id, code, needle) in cases {
            let (got_id, got_code, message) = err(text);
            assert_eq!(got_id.as_deref(), id, "{text}");
            assert_eq!(got_code, code, "{text}");
            assert!(message.contains(needle), "{text}: {message}");
        }
        let big = format!(r#"{{"action":"chat","message":"{}"}}"#, "x".repeat(2000));
        assert_eq!(err(&big).1, "payload_too_large");
    }

    #[test]
    fn frames_name_what_is_wrong_inside_them() {
        let (id, _, message) = err(
            r#"{"action":"chat","request_id":"r3","message":"x","inference":{"max_tokens":-1}}"#,
        );
        assert_eq!(id.as_deref(), Some("r3"));
        assert!(message.starts_with("inference.max_tokens:"), "{message}");
        let (id, _, message) = err(r#"{"action":"cancel","request_id":"r4","also":1}"#);
        assert_eq!(id.as_deref(), Some("r4"));
        assert!(message.contains("also"), "{message}");
        let (_, _, message) = err(r#"{"action":"ping","action":"chat","message":"x"}"#);
        assert!(message.contains("duplicate field `action`"), "{message}");
        let (_, _, message) = err(r#"{"action":"ping"} {"action":"chat"}"#);
        assert!(message.contains("JSON"), "{message}");
    }

    #[test]
    fn server_frames() {
        assert_eq!(
            pong(Some("p1"), "c1"),
            r#"{"type":"pong","request_id":"p1","connection_id":"c1"}"#
        );
        assert_eq!(pong(None, "c1"), r#"{"type":"pong","connection_id":"c1"}"#);
        let e = error(None, &Error::InvalidRequest("nope".into()));
        assert_eq!(
            e,
            r#"{"type":"error","code":"invalid_request","message":"nope","retryable":false}"#
        );
    }
}
