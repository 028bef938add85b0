//! The events of one chat, in order: `start`, any number of `delta`, then exactly one `done` or
//! `error`. The same JSON is a WebSocket frame, an SSE `data:` line and a gRPC message.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::ErrorBody;

/// Token counts as the model reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// One event of a chat stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatEvent {
    Start {
        request_id: Arc<str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        conversation_id: Option<String>,
        model: String,
        cached: bool,
    },
    Delta {
        request_id: Arc<str>,
        text: String,
    },
    Done {
        request_id: Arc<str>,
        stop_reason: String,
        /// What the model used to produce the answer (for a cached answer: originally).
        usage: Usage,
        latency_ms: u64,
        cached: bool,
        /// Set on cached answers: what this request cost, which is nothing.
        #[serde(skip_serializing_if = "Option::is_none")]
        billed_usage: Option<Usage>,

        /// How long this request's model call took, for the gateway-overhead metric; `None`
        /// when it made none (a cache hit, a replay). Never on the wire.
        #[serde(skip)]
        upstream_time: Option<std::time::Duration>,
    },
    Error {
        request_id: Arc<str>,
        #[serde(flatten)]
        error: ErrorBody,
    },
}

impl ChatEvent {
    /// The `type` tag, also the SSE `event:` name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Start { .. } => "start",
            Self::Delta { .. } => "delta",
            Self::Done { .. } => "done",
            Self::Error { .. } => "error",
        }
    }

    /// The request this event belongs to.
    pub fn request_id(&self) -> &str {
        match self {
            Self::Start { request_id, .. }
            | Self::Delta { request_id, .. }
            | Self::Done { request_id, .. }
            | Self::Error { request_id, .. } => request_id,
        }
    }

    /// True for `done` and `error`: nothing follows them.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Done { .. } | Self::Error { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn wire_shapes_match_design() {
        let id: Arc<str> = Arc::from("r1");
        let start = ChatEvent::Start {
            request_id: id.clone(),
            conversation_id: None,
            model: "m".into(),
            cached: false,
        };
        assert_eq!(
            serde_json::to_string(&start).unwrap(),
            r#"{"type":"start","request_id":"r1","model":"m","cached":false}"#
        );
        let done = ChatEvent::Done {
            request_id: id.clone(),
            stop_reason: "end_turn".into(),
            usage: Usage {
                input_tokens: 12,
                output_tokens: 40,
            },
            latency_ms: 812,
            cached: false,
            billed_usage: None,
            // Internal: never serialized.
            upstream_time: Some(std::time::Duration::from_millis(800)),
        };
        assert_eq!(
            serde_json::to_string(&done).unwrap(),
            r#"{"type":"done","request_id":"r1","stop_reason":"end_turn","usage":{"input_tokens":12,"output_tokens":40},"latency_ms":812,"cached":false}"#
        );
        let err = ChatEvent::Error {
            request_id: id,
            error: Error::UpstreamThrottled {
                message: "slow".into(),
                retry_after: Some(std::time::Duration::from_millis(500)),
            }
            .body(),
        };
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"type":"error","request_id":"r1","code":"upstream_throttled","message":"the model is throttling requests: slow","retryable":true,"retry_after_ms":500}"#
        );
    }
}
