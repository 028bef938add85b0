//! The pipeline's answer written as Anthropic's objects: one `message`, or the events of a stream
//! (`message_start`, `ping`, `content_block_start`/`_delta`/`_stop` per block, `message_delta`
//! with the stop reason and usage, `message_stop`).
//!
//! Anthropic streams one block at a time, while Bedrock may interleave the input of parallel
//! tool calls. The block that starts first streams live; a block that speaks while another is
//! open waits, and streams whole once the open one ends (at its complete call, or, for text and
//! reasoning, as soon as another block speaks: Bedrock never interleaves those).

use std::collections::BTreeMap;

use axum::body::Bytes;
use serde_json::{Value, json};

use crate::chat::{Block, ChatEvent, ChatReply, Usage};
use crate::http::dialect::Dialect;

/// Anthropic's stop reason for a Bedrock stop reason.
pub fn stop_reason(bedrock: &str) -> &'static str {
    match bedrock {
        "tool_use" => "tool_use",
        "max_tokens" => "max_tokens",
        "stop_sequence" => "stop_sequence",
        "model_context_window_exceeded" => "model_context_window_exceeded",
        "guardrail_intervened" | "content_filtered" => "refusal",
        _ => "end_turn",
    }
}

pub fn usage(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": u.cache_write_input_tokens,
        "cache_read_input_tokens": u.cache_read_input_tokens,
    })
}

fn content_block(block: &Block) -> Option<Value> {
    Some(match block {
        Block::Text { text } => json!({"type": "text", "text": text}),
        Block::ToolUse { id, name, input } => {
            json!({"type": "tool_use", "id": id, "name": name, "input": input})
        }
        Block::Reasoning { text, signature } => {
            json!({"type": "thinking", "thinking": text, "signature": signature.as_deref().unwrap_or_default()})
        }
        Block::RedactedReasoning { data } => json!({"type": "redacted_thinking", "data": data}),
        _ => return None,
    })
}

/// The unary `message`.
pub fn message(id: &str, reply: ChatReply) -> Value {
    let blocks = reply
        .message
        .blocks
        .unwrap_or_else(|| vec![Block::text(reply.message.content)]);
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": blocks.iter().filter_map(content_block).collect::<Vec<_>>(),
        "stop_reason": stop_reason(&reply.stop_reason),
        "stop_sequence": null,
        "usage": usage(&reply.usage),
    })
}

/// What one pipeline event says about one block.
enum Piece {
    Start(Value),
    Delta(Value),
    End,
}

/// A block that waits for the open one to end.
#[derive(Default)]
struct Waiting {
    pieces: Vec<Piece>,
}

/// The block streaming now: its pipeline index, Anthropic's index, and whether it is a tool call.
struct Open {
    block: u32,
    index: usize,
    tool: bool,
}

/// Writes a chat's events as Anthropic's: `(event name, data)`.
pub struct Events {
    id: String,
    open: Option<Open>,
    next_index: usize,
    /// Blocks started so far, by pipeline index.
    started: Vec<u32>,
    waiting: BTreeMap<u32, Waiting>,
    out: Vec<(&'static str, Value)>,
}

impl Events {
    pub fn new(id: String) -> Self {
        Self {
            id,
            open: None,
            next_index: 0,
            started: Vec::new(),
            waiting: BTreeMap::new(),
            out: Vec::new(),
        }
    }

    /// The events `event` becomes.
    pub fn of(&mut self, event: ChatEvent) -> Vec<(&'static str, Value)> {
        match event {
            ChatEvent::Start { model, .. } => {
                let message = json!({
                    "id": self.id, "type": "message", "role": "assistant", "content": [],
                    "model": model, "stop_reason": null, "stop_sequence": null,
                    "usage": usage(&Usage::default()),
                });
                self.out.push((
                    "message_start",
                    json!({"type": "message_start", "message": message}),
                ));
                self.out.push(("ping", json!({"type": "ping"})));
            }
            ChatEvent::Delta { index, text, .. } => {
                self.start(index, || json!({"type": "text", "text": ""}));
                self.piece(
                    index,
                    Piece::Delta(json!({"type": "text_delta", "text": text})),
                );
            }
            ChatEvent::Reasoning {
                index,
                text,
                signature,
                redacted,
                ..
            } => {
                if let Some(data) = redacted {
                    self.start(index, || json!({"type": "redacted_thinking", "data": data}));
                    self.piece(index, Piece::End);
                } else {
                    self.start(index, || json!({"type": "thinking", "thinking": ""}));
                    if let Some(text) = text {
                        let delta = json!({"type": "thinking_delta", "thinking": text});
                        self.piece(index, Piece::Delta(delta));
                    }
                    if let Some(signature) = signature {
                        let delta = json!({"type": "signature_delta", "signature": signature});
                        self.piece(index, Piece::Delta(delta));
                    }
                }
            }
            ChatEvent::ToolCallStart {
                index, id, name, ..
            } => {
                self.start(
                    index,
                    || json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                );
            }
            ChatEvent::ToolCallDelta { index, input, .. } => {
                let delta = json!({"type": "input_json_delta", "partial_json": input});
                self.piece(index, Piece::Delta(delta));
            }
            ChatEvent::ToolCall { index, .. } => self.piece(index, Piece::End),
            ChatEvent::Done {
                stop_reason: stop,
                usage: u,
                ..
            } => {
                self.finish();
                self.out.push((
                    "message_delta",
                    json!({"type": "message_delta",
                        "delta": {"stop_reason": stop_reason(&stop), "stop_sequence": null},
                        "usage": usage(&u)}),
                ));
                self.out
                    .push(("message_stop", json!({"type": "message_stop"})));
            }
            ChatEvent::Error { error, .. } => {
                self.out
                    .push(("error", Dialect::Anthropic.error_object(&error)));
            }
            ChatEvent::Sources { .. } => {}
        }
        std::mem::take(&mut self.out)
    }

    /// The event-stream lines `event` becomes.
    pub fn lines(&mut self, event: ChatEvent) -> Vec<Bytes> {
        self.of(event)
            .into_iter()
            .map(|(name, data)| Bytes::from(format!("event: {name}\ndata: {data}\n\n")))
            .collect()
    }

    /// Starts block `block` unless it has started.
    fn start(&mut self, block: u32, content: impl FnOnce() -> Value) {
        if !self.started.contains(&block) {
            self.started.push(block);
            self.piece(block, Piece::Start(content()));
        }
    }

    fn piece(&mut self, block: u32, piece: Piece) {
        match &self.open {
            None => {
                let tool = matches!(&piece, Piece::Start(v) if v["type"] == "tool_use");
                self.open = Some(Open {
                    block,
                    index: self.next_index,
                    tool,
                });
                self.next_index += 1;
                self.emit(piece);
            }
            Some(open) if open.block == block => self.emit(piece),
            Some(open) if !open.tool => {
                // Text and reasoning end when another block speaks.
                self.close();
                self.flush();
                self.piece(block, piece);
            }
            _ => self.waiting.entry(block).or_default().pieces.push(piece),
        }
    }

    /// Writes `piece` of the open block.
    fn emit(&mut self, piece: Piece) {
        let Some(open) = &self.open else { return };
        let index = open.index;
        match piece {
            Piece::Start(block) => self.out.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": index, "content_block": block}),
            )),
            Piece::Delta(delta) => self.out.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": delta}),
            )),
            Piece::End => {
                self.close();
                self.flush();
            }
        }
    }

    fn close(&mut self) {
        if let Some(open) = self.open.take() {
            self.out.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": open.index}),
            ));
        }
    }

    /// Streams the waiting blocks, in order, until one is still open.
    fn flush(&mut self) {
        while self.open.is_none() {
            let Some((block, waiting)) = self.waiting.pop_first() else {
                return;
            };
            for piece in waiting.pieces {
                self.piece(block, piece);
            }
        }
    }

    /// The answer is complete: every block ends.
    fn finish(&mut self) {
        self.close();
        while let Some((block, waiting)) = self.waiting.pop_first() {
            for piece in waiting.pieces {
                self.piece(block, piece);
            }
            self.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn interleaved_tool_input_streams_one_block_at_a_time() {
        let rid: Arc<str> = "r".into();
        let start = |index, id: &str| ChatEvent::ToolCallStart {
            request_id: rid.clone(),
            index,
            id: id.into(),
            name: "f".into(),
        };
        let delta = |index, input: &str| ChatEvent::ToolCallDelta {
            request_id: rid.clone(),
            index,
            input: input.into(),
        };
        let call = |index| ChatEvent::ToolCall {
            request_id: rid.clone(),
            index,
            id: String::new(),
            name: "f".into(),
            input: json!({}),
        };
        let mut events = Events::new("msg_r".into());
        let written: Vec<(&str, Value)> = [
            ChatEvent::Reasoning {
                request_id: rid.clone(),
                index: 0,
                text: Some("hm".into()),
                signature: None,
                redacted: None,
            },
            start(1, "a"),
            start(2, "b"),
            delta(2, "{\"z\":"),
            delta(1, "{\"c\":"),
            delta(2, "1}"),
            call(2),
            delta(1, "2}"),
            call(1),
        ]
        .into_iter()
        .flat_map(|e| events.of(e))
        .collect();
        let summary: Vec<String> = written
            .iter()
            .map(|(name, v)| format!("{name}:{}", v["index"]))
            .collect();
        assert_eq!(
            summary,
            [
                "content_block_start:0",
                "content_block_delta:0",
                "content_block_stop:0",
                "content_block_start:1",
                "content_block_delta:1",
                "content_block_delta:1",
                "content_block_stop:1",
                "content_block_start:2",
                "content_block_delta:2",
                "content_block_delta:2",
                "content_block_stop:2",
            ]
        );
        assert_eq!(written[3].1["content_block"]["id"], "a");
        assert_eq!(written[5].1["delta"]["partial_json"], "2}");
        assert_eq!(written[8].1["delta"]["partial_json"], "{\"z\":");
    }
}
