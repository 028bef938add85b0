//! The pipeline's answer written as OpenAI's objects: one `chat.completion`, or the
//! `chat.completion.chunk`s of a stream.
//!
//! Tool calls are numbered among themselves (`index` 0, 1, …, whatever their block's index) and
//! stream as OpenAI does: a first delta with the call's `id`, `type` and `function.name`, then
//! `function.arguments` fragments as the model wrote them, the fragments of parallel calls
//! interleaved. Reasoning, which Chat Completions has no field for, goes where LiteLLM and
//! DeepSeek put it: `reasoning_content` (text) and `thinking_blocks` (with the signature a
//! client sends back in a tool loop).

use axum::body::Bytes;
use serde_json::{Value, json};

use crate::chat::{Block, ChatEvent, ChatReply, Usage, joined_text};
use crate::http::dialect::Dialect;

/// OpenAI's finish reason for a Bedrock stop reason.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop",
    }
}

/// OpenAI's usage: prompt tokens include the prompt-cache reads and writes, reads also counted
/// as `cached_tokens`.
pub fn usage(u: &Usage) -> Value {
    let prompt = u.input_tokens + u.cache_read_input_tokens + u.cache_write_input_tokens;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": u.output_tokens,
        "total_tokens": prompt + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_input_tokens},
    })
}

/// The unary `chat.completion`.
pub fn completion(id: &str, created: u64, reply: ChatReply) -> Value {
    let blocks = reply
        .message
        .blocks
        .unwrap_or_else(|| vec![Block::text(reply.message.content)]);
    let mut message = json!({"role": "assistant", "refusal": null});
    let text = joined_text(&blocks);
    let calls: Vec<Value> = blocks
        .iter()
        .filter_map(|b| match b {
            Block::ToolUse { id, name, input } => Some(tool_call(id, name, input)),
            _ => None,
        })
        .collect();
    message["content"] = if text.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        text.into()
    };
    if !calls.is_empty() {
        message["tool_calls"] = calls.into();
    }
    let thinking: Vec<Value> = blocks.iter().filter_map(thinking_block).collect();
    if !thinking.is_empty() {
        let reasoning: String = blocks
            .iter()
            .filter_map(|b| match b {
                Block::Reasoning { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        message["reasoning_content"] = reasoning.into();
        message["thinking_blocks"] = thinking.into();
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": reply.model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(&reply.stop_reason),
            "logprobs": null,
        }],
        "usage": usage(&reply.usage),
    })
}

fn tool_call(id: &str, name: &str, input: &Value) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}})
}

fn thinking_block(block: &Block) -> Option<Value> {
    match block {
        Block::Reasoning { text, signature } => {
            Some(json!({"type": "thinking", "thinking": text, "signature": signature}))
        }
        Block::RedactedReasoning { data } => {
            Some(json!({"type": "redacted_thinking", "data": data}))
        }
        _ => None,
    }
}

/// Writes a chat's events as chunks.
pub struct Chunks {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    /// The block index of each tool call so far, in order: a call's OpenAI `index` is its place.
    calls: Vec<u32>,
    /// The reasoning text of the block being generated, for its `thinking_blocks` entry.
    reasoning: String,
    /// A chunk's JSON up to its `delta`, once the model is known: text deltas, most of a
    /// stream, are written after it without building a JSON tree.
    head: String,
}

impl Chunks {
    pub fn new(id: String, created: u64, include_usage: bool) -> Self {
        Self {
            id,
            created,
            model: String::new(),
            include_usage,
            calls: Vec::new(),
            reasoning: String::new(),
            head: String::new(),
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        })
    }

    fn call_index(&self, block: u32) -> usize {
        self.calls
            .iter()
            .position(|b| *b == block)
            .unwrap_or(self.calls.len())
    }

    /// The `data:` lines `event` becomes, `data: [DONE]` after the last (`done` or `error`).
    pub fn lines(&mut self, event: ChatEvent) -> Vec<Bytes> {
        if let ChatEvent::Delta { text, .. } = &event
            && !self.head.is_empty()
        {
            let text = Value::from(text.as_str());
            let line = format!(
                "data: {}{{\"content\":{text}}},\"finish_reason\":null,\"logprobs\":null}}]}}\n\n",
                self.head
            );
            return vec![Bytes::from(line)];
        }
        let last = matches!(event, ChatEvent::Done { .. } | ChatEvent::Error { .. });
        let mut lines: Vec<Bytes> = self
            .of(event)
            .into_iter()
            .map(|value| Bytes::from(format!("data: {value}\n\n")))
            .collect();
        if last {
            lines.push(Bytes::from_static(b"data: [DONE]\n\n"));
        }
        lines
    }

    /// The chunks (or the error object) `event` becomes; none for events OpenAI has no word for.
    pub fn of(&mut self, event: ChatEvent) -> Vec<Value> {
        let delta = match event {
            ChatEvent::Start { model, .. } => {
                self.head = format!(
                    "{{\"id\":{},\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":{},\
                     \"choices\":[{{\"index\":0,\"delta\":",
                    Value::from(self.id.as_str()),
                    self.created,
                    Value::from(model.as_str()),
                );
                self.model = model;
                json!({"role": "assistant", "content": ""})
            }
            ChatEvent::Delta { text, .. } => json!({"content": text}),
            ChatEvent::Reasoning {
                text,
                signature,
                redacted,
                ..
            } => {
                if let Some(text) = text {
                    self.reasoning.push_str(&text);
                    json!({"reasoning_content": text})
                } else if let Some(signature) = signature {
                    let thinking = std::mem::take(&mut self.reasoning);
                    let block = Block::Reasoning {
                        text: thinking,
                        signature: Some(signature),
                    };
                    json!({"thinking_blocks": [thinking_block(&block)]})
                } else if let Some(data) = redacted {
                    json!({"thinking_blocks": [{"type": "redacted_thinking", "data": data}]})
                } else {
                    return Vec::new();
                }
            }
            ChatEvent::ToolCallStart {
                index, id, name, ..
            } => {
                let at = self.call_index(index);
                if at == self.calls.len() {
                    self.calls.push(index);
                }
                json!({"tool_calls": [{"index": at, "id": id, "type": "function",
                    "function": {"name": name, "arguments": ""}}]})
            }
            ChatEvent::ToolCallDelta { index, input, .. } => {
                json!({"tool_calls": [{"index": self.call_index(index),
                    "function": {"arguments": input}}]})
            }
            ChatEvent::Done {
                stop_reason,
                usage: u,
                ..
            } => {
                let mut out = vec![self.chunk(json!({}), Some(finish_reason(&stop_reason)))];
                if self.include_usage {
                    let mut last = self.chunk(json!({}), None);
                    last["choices"] = json!([]);
                    last["usage"] = usage(&u);
                    out.push(last);
                }
                return out;
            }
            ChatEvent::Error { error, .. } => return vec![Dialect::OpenAi.error_object(&error)],
            ChatEvent::Sources { .. } | ChatEvent::ToolCall { .. } => return Vec::new(),
        };
        vec![self.chunk(delta, None)]
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn parallel_calls_are_numbered_among_themselves_and_interleave() {
        let rid: Arc<str> = "r".into();
        let mut chunks = Chunks::new("chatcmpl-r".into(), 1, false);
        let events = [
            ChatEvent::Delta {
                request_id: rid.clone(),
                index: 0,
                text: "Let me look.".into(),
            },
            ChatEvent::ToolCallStart {
                request_id: rid.clone(),
                index: 1,
                id: "a".into(),
                name: "f".into(),
            },
            ChatEvent::ToolCallStart {
                request_id: rid.clone(),
                index: 2,
                id: "b".into(),
                name: "g".into(),
            },
            ChatEvent::ToolCallDelta {
                request_id: rid.clone(),
                index: 2,
                input: "{\"x\"".into(),
            },
            ChatEvent::ToolCallDelta {
                request_id: rid.clone(),
                index: 1,
                input: "{}".into(),
            },
            ChatEvent::ToolCall {
                request_id: rid.clone(),
                index: 1,
                id: "a".into(),
                name: "f".into(),
                input: json!({}),
            },
        ];
        let deltas: Vec<Value> = events
            .into_iter()
            .flat_map(|e| chunks.of(e))
            .map(|c| c["choices"][0]["delta"].clone())
            .collect();
        assert_eq!(deltas.len(), 5, "the complete call adds nothing");
        assert_eq!(deltas[1]["tool_calls"][0]["index"], 0);
        assert_eq!(deltas[1]["tool_calls"][0]["function"]["name"], "f");
        assert_eq!(deltas[2]["tool_calls"][0]["index"], 1);
        assert_eq!(
            deltas[3]["tool_calls"][0],
            json!({"index": 1, "function": {"arguments": "{\"x\""}})
        );
        assert_eq!(deltas[4]["tool_calls"][0]["index"], 0);
    }

    #[test]
    fn text_deltas_written_straight_are_the_chunks_of_the_tree() {
        let rid: Arc<str> = "r".into();
        let start = || ChatEvent::Start {
            request_id: rid.clone(),
            conversation_id: None,
            model: "m \"q\"".into(),
            cached: false,
        };
        let delta = || ChatEvent::Delta {
            request_id: rid.clone(),
            index: 0,
            text: "caf\u{e9} \"quoted\"\n".into(),
        };
        let mut straight = Chunks::new("chatcmpl-r".into(), 7, false);
        straight.lines(start());
        let line = straight.lines(delta()).remove(0);
        let line = std::str::from_utf8(&line).unwrap();
        let json = line.strip_prefix("data: ").unwrap().trim_end();
        let mut tree = Chunks::new("chatcmpl-r".into(), 7, false);
        tree.of(start());
        assert_eq!(
            serde_json::from_str::<Value>(json).unwrap(),
            tree.of(delta()).remove(0)
        );
    }

    #[test]
    fn a_tool_answer_has_null_content_and_its_reasoning_beside() {
        let reply: ChatReply = serde_json::from_value(json!({
            "request_id": "r", "model": "m", "stop_reason": "tool_use", "latency_ms": 1, "cached": false,
            "usage": {"input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": 2},
            "message": {"role": "assistant", "content": "", "blocks": [
                {"type": "reasoning", "text": "hm", "signature": "s"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
        }))
        .unwrap();
        let c = completion("chatcmpl-r", 1, reply);
        let message = &c["choices"][0]["message"];
        assert_eq!(message["content"], Value::Null);
        assert_eq!(
            message["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(message["reasoning_content"], "hm");
        assert_eq!(message["thinking_blocks"][0]["signature"], "s");
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(c["usage"]["prompt_tokens"], 5);
        assert_eq!(c["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
    }
}
