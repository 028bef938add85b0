//! The unary REST reply, built by draining the same event stream every other transport sends.

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::chat::{Answer, Block, ChatEvent, Reference, Usage, is_plain_text, joined_text};
use crate::error::{Error, ErrorBody};

/// `{"request_id","conversation_id","model","message":{"role","content","blocks"?},"stop_reason","usage","latency_ms","cached","sources"?,"citations"?}`
/// Deserialized too: a task stores its reply as this JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatReply {
    pub request_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    pub model: String,
    pub message: ReplyMessage,
    pub stop_reason: String,
    pub usage: Usage,
    pub latency_ms: u64,
    pub cached: bool,
    /// On cached answers: zero, since no model was called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billed_usage: Option<Usage>,
    /// On knowledge-base answers: the passages it was given, numbered as it cites them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<Reference>>,
    /// On knowledge-base answers: the numbers of the sources it cited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub citations: Option<Vec<u32>>,
}

/// The assistant's message in a [`ChatReply`]: its text, and every block when it is more than
/// text (tool calls, reasoning), so a text-only answer reads as it always did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyMessage {
    pub role: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<Vec<Block>>,
}

impl ChatReply {
    /// Drains `stream`; an `error` event becomes the `Err`.
    pub async fn collect(stream: impl Stream<Item = ChatEvent>) -> Result<Self, ErrorBody> {
        let mut stream = std::pin::pin!(stream);
        let mut reply = ChatReply {
            request_id: String::new(),
            conversation_id: None,
            model: String::new(),
            message: ReplyMessage {
                role: "assistant".into(),
                content: String::new(),
                blocks: None,
            },
            stop_reason: String::new(),
            usage: Usage::default(),
            latency_ms: 0,
            cached: false,
            billed_usage: None,
            sources: None,
            citations: None,
        };
        let mut answer = Answer::default();
        while let Some(event) = stream.next().await {
            if event.is_content() {
                answer.extend(event.into_part());
                continue;
            }
            match event {
                ChatEvent::Start {
                    request_id,
                    conversation_id,
                    model,
                    ..
                } => {
                    reply.request_id = request_id.to_string();
                    reply.conversation_id = conversation_id;
                    reply.model = model;
                }
                ChatEvent::Sources { sources, .. } => {
                    reply.sources.get_or_insert_default().extend(sources);
                }
                ChatEvent::Done {
                    stop_reason,
                    usage,
                    latency_ms,
                    cached,
                    billed_usage,
                    citations,
                    ..
                } => {
                    reply.citations = citations;
                    reply.stop_reason = stop_reason;
                    reply.usage = usage;
                    reply.latency_ms = latency_ms;
                    reply.cached = cached;
                    reply.billed_usage = billed_usage;
                    let blocks = std::mem::take(&mut answer).into_blocks();
                    reply.message.content = joined_text(&blocks);
                    if !blocks.is_empty() && !is_plain_text(&blocks) {
                        reply.message.blocks = Some(blocks);
                    }
                    return Ok(reply);
                }
                ChatEvent::Error { error, .. } => return Err(error),
                _ => {}
            }
        }
        Err(Error::Internal("chat stream ended without done".into()).body())
    }
}
