//! The events of one chat, in order: `start`, the answer's blocks as they are generated (`delta`
//! for text, `reasoning`, `tool_call_start`, `tool_call_delta` and `tool_call`), then exactly one
//! `done` or `error`. A chat that answers from a knowledge base sends its `sources` right after
//! `start`, and its `done` lists the ones the answer cited. The same JSON is a WebSocket frame, an SSE `data:` line and a task's event;
//! gRPC has a message for each.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::chat::answer::Part;
use crate::chat::sources::Reference;
use crate::error::ErrorBody;

/// Token counts as the model reported them. `input_tokens` excludes the prompt-cache reads and
/// writes, which are priced apart and reported only when there are any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_read_input_tokens: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_input_tokens: u64,
}

impl Usage {
    /// Plain input and output counts, with no prompt-cache use.
    pub fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Self {
            input_tokens,
            output_tokens,
            ..Self::default()
        }
    }
}

impl Usage {
    /// Every token the model processed, prompt-cache reads and writes included: what the
    /// token limits count.
    pub fn total(&self) -> u64 {
        self.input_tokens
            + self.output_tokens
            + self.cache_read_input_tokens
            + self.cache_write_input_tokens
    }
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
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
    /// The passages a knowledge-base answer is built on, numbered as it cites them; sent before
    /// the first delta, in several events when one would not fit an API Gateway frame.
    Sources {
        request_id: Arc<str>,
        sources: Vec<Reference>,
    },
    /// Text. `index` is the block's, left out when 0: a text-only answer looks as it always did.
    Delta {
        request_id: Arc<str>,
        #[serde(default, skip_serializing_if = "is_zero")]
        index: u32,
        text: String,
    },
    /// Reasoning: text as it is generated, then its signature; or redacted (encrypted) content.
    Reasoning {
        request_id: Arc<str>,
        index: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        redacted: Option<String>,
    },
    /// A tool call begins.
    ToolCallStart {
        request_id: Arc<str>,
        index: u32,
        id: String,
        name: String,
    },
    /// A fragment of the call's input as JSON text; the fragments of one index concatenate.
    ToolCallDelta {
        request_id: Arc<str>,
        index: u32,
        input: String,
    },
    /// The call complete, with its parsed input.
    ToolCall {
        request_id: Arc<str>,
        index: u32,
        id: String,
        name: String,
        input: serde_json::Value,
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
        /// On knowledge-base answers: the numbers of the sources the answer cited.
        #[serde(skip_serializing_if = "Option::is_none")]
        citations: Option<Vec<u32>>,

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
            Self::Sources { .. } => "sources",
            Self::Delta { .. } => "delta",
            Self::Reasoning { .. } => "reasoning",
            Self::ToolCallStart { .. } => "tool_call_start",
            Self::ToolCallDelta { .. } => "tool_call_delta",
            Self::ToolCall { .. } => "tool_call",
            Self::Done { .. } => "done",
            Self::Error { .. } => "error",
        }
    }

    /// The request this event belongs to.
    pub fn request_id(&self) -> &str {
        match self {
            Self::Start { request_id, .. }
            | Self::Sources { request_id, .. }
            | Self::Delta { request_id, .. }
            | Self::Reasoning { request_id, .. }
            | Self::ToolCallStart { request_id, .. }
            | Self::ToolCallDelta { request_id, .. }
            | Self::ToolCall { request_id, .. }
            | Self::Done { request_id, .. }
            | Self::Error { request_id, .. } => request_id,
        }
    }

    /// The event of one part of the answer.
    pub fn of_part(request_id: Arc<str>, part: Part) -> Self {
        match part {
            Part::Text { index, text } => Self::Delta {
                request_id,
                index,
                text,
            },
            Part::Reasoning { index, text } => {
                Self::reasoning(request_id, index, Some(text), None, None)
            }
            Part::Signature { index, signature } => {
                Self::reasoning(request_id, index, None, Some(signature), None)
            }
            Part::Redacted { index, data } => {
                Self::reasoning(request_id, index, None, None, Some(data))
            }
            Part::ToolStart { index, id, name } => Self::ToolCallStart {
                request_id,
                index,
                id,
                name,
            },
            Part::ToolInput { index, json } => Self::ToolCallDelta {
                request_id,
                index,
                input: json,
            },
            Part::ToolCall {
                index,
                id,
                name,
                input,
            } => Self::ToolCall {
                request_id,
                index,
                id,
                name,
                input,
            },
        }
    }

    /// The part of the answer a content event carries (the way back from
    /// [`ChatEvent::of_part`]); `None` for any other event.
    pub fn into_part(self) -> Option<Part> {
        Some(match self {
            Self::Delta { index, text, .. } => Part::Text { index, text },
            Self::Reasoning {
                index,
                text: Some(text),
                ..
            } => Part::Reasoning { index, text },
            Self::Reasoning {
                index,
                signature: Some(signature),
                ..
            } => Part::Signature { index, signature },
            Self::Reasoning {
                index,
                redacted: Some(data),
                ..
            } => Part::Redacted { index, data },
            Self::ToolCallStart {
                index, id, name, ..
            } => Part::ToolStart { index, id, name },
            Self::ToolCallDelta { index, input, .. } => Part::ToolInput { index, json: input },
            Self::ToolCall {
                index,
                id,
                name,
                input,
                ..
            } => Part::ToolCall {
                index,
                id,
                name,
                input,
            },
            _ => return None,
        })
    }

    fn reasoning(
        request_id: Arc<str>,
        index: u32,
        text: Option<String>,
        signature: Option<String>,
        redacted: Option<String>,
    ) -> Self {
        Self::Reasoning {
            request_id,
            index,
            text,
            signature,
            redacted,
        }
    }

    /// True for the answer's own events: everything but `start`, `sources`, `done` and `error`.
    pub fn is_content(&self) -> bool {
        !matches!(self, Self::Start { .. } | Self::Sources { .. }) && !self.is_terminal()
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
            usage: Usage::new(12, 40),
            latency_ms: 812,
            cached: false,
            billed_usage: None,
            citations: None,
            // Internal: never serialized.
            upstream_time: Some(std::time::Duration::from_millis(800)),
        };
        assert_eq!(
            serde_json::to_string(&done).unwrap(),
            r#"{"type":"done","request_id":"r1","stop_reason":"end_turn","usage":{"input_tokens":12,"output_tokens":40},"latency_ms":812,"cached":false}"#
        );
        let text = ChatEvent::of_part(
            id.clone(),
            Part::Text {
                index: 0,
                text: "hi".into(),
            },
        );
        assert_eq!(
            serde_json::to_string(&text).unwrap(),
            r#"{"type":"delta","request_id":"r1","text":"hi"}"#,
            "a text-only answer's deltas are what they always were"
        );
        let call = ChatEvent::of_part(
            id.clone(),
            Part::ToolInput {
                index: 2,
                json: "{\"a\":".into(),
            },
        );
        assert_eq!(
            serde_json::to_string(&call).unwrap(),
            r#"{"type":"tool_call_delta","request_id":"r1","index":2,"input":"{\"a\":"}"#
        );
        let sig = ChatEvent::of_part(
            id.clone(),
            Part::Signature {
                index: 0,
                signature: "s".into(),
            },
        );
        assert_eq!(
            serde_json::to_string(&sig).unwrap(),
            r#"{"type":"reasoning","request_id":"r1","index":0,"signature":"s"}"#
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
