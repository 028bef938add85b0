//! An answer as it streams, in parts, and the assistant message the parts make. Every block has
//! its index (Bedrock's `contentBlockIndex`): parallel tool calls stream interleaved, and only the
//! index tells their fragments apart, so nothing here ever merges two indices.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chat::content::Block;
use crate::error::Error;

/// One piece of a streamed answer, as the model provider yields it, a flight shares it and the
/// response cache keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "p", rename_all = "snake_case")]
pub enum Part {
    Text {
        index: u32,
        text: String,
    },
    Reasoning {
        index: u32,
        text: String,
    },
    Signature {
        index: u32,
        signature: String,
    },
    /// Encrypted reasoning, base64.
    Redacted {
        index: u32,
        data: String,
    },
    ToolStart {
        index: u32,
        id: String,
        name: String,
    },
    /// A fragment of the tool input's JSON text: cut anywhere, even inside a string or a
    /// character's UTF-8 sequence split across two Bedrock events is whole here (it is a `String`).
    ToolInput {
        index: u32,
        json: String,
    },
    /// The tool call complete, its input parsed: made by the gateway at the block's end.
    ToolCall {
        index: u32,
        id: String,
        name: String,
        input: Value,
    },
}

impl Part {
    /// True for a text part of block 0: all a text-only answer is made of.
    pub fn is_plain_text(&self) -> bool {
        matches!(self, Self::Text { index: 0, .. })
    }
}

/// Tool calls whose input is still arriving, completed at their block's end.
#[derive(Debug, Default)]
pub struct ToolCalls {
    open: Vec<OpenCall>,
}

/// A tool call whose block has not ended: its input so far.
#[derive(Debug)]
struct OpenCall {
    index: u32,
    id: String,
    name: String,
    json: String,
}

impl ToolCalls {
    /// Follows `part`: a tool call's start and its input fragments.
    pub fn follow(&mut self, part: &Part) {
        match part {
            Part::ToolStart { index, id, name } => self.open.push(OpenCall {
                index: *index,
                id: id.clone(),
                name: name.clone(),
                json: String::new(),
            }),
            Part::ToolInput { index, json } => {
                if let Some(open) = self.open.iter_mut().find(|o| o.index == *index) {
                    open.json.push_str(json);
                }
            }
            _ => {}
        }
    }

    /// Block `index` ended: its tool call, parsed, if it was one. Input that is not JSON is the
    /// model's failure, and retrying the same request would not fix it.
    pub fn stop(&mut self, index: u32) -> Result<Option<Part>, Error> {
        let Some(at) = self.open.iter().position(|o| o.index == index) else {
            return Ok(None);
        };
        let OpenCall {
            index,
            id,
            name,
            json,
        } = self.open.remove(at);
        // A tool without parameters may stream no input at all.
        let text = if json.trim().is_empty() { "{}" } else { &json };
        match serde_json::from_str::<Value>(text) {
            Ok(input) => Ok(Some(Part::ToolCall {
                index,
                id,
                name,
                input,
            })),
            Err(e) => Err(Error::UpstreamError {
                message: format!("the model's input for tool '{name}' is not valid JSON: {e}"),
                retryable: false,
            }),
        }
    }

    /// The calls whose block never ended, in index order, for a stream that ended without
    /// closing them.
    pub fn unfinished(&self) -> Vec<u32> {
        let mut open: Vec<u32> = self.open.iter().map(|o| o.index).collect();
        open.sort_unstable();
        open
    }
}

/// The assistant message the parts of an answer make, block by block in index order.
#[derive(Debug, Default, Clone)]
pub struct Answer {
    blocks: Vec<(u32, Block)>,
}

impl Answer {
    /// Adds `part` to its block. Tool input fragments are skipped: the complete call
    /// ([`Part::ToolCall`]) carries the parsed input.
    pub fn push(&mut self, part: &Part) {
        match part {
            Part::Text { index, text } => match self.block(*index, || Block::text("")) {
                Block::Text { text: t } => t.push_str(text),
                _ => tracing::debug!(index, "text for a block of another kind"),
            },
            Part::Reasoning { index, text } => match self.block(*index, empty_reasoning) {
                Block::Reasoning { text: t, .. } => t.push_str(text),
                _ => tracing::debug!(index, "reasoning for a block of another kind"),
            },
            Part::Signature { index, signature } => match self.block(*index, empty_reasoning) {
                Block::Reasoning { signature: s, .. } => {
                    s.get_or_insert_default().push_str(signature);
                }
                _ => tracing::debug!(index, "signature for a block of another kind"),
            },
            Part::Redacted { index, data } => {
                let block = self.block(*index, || Block::RedactedReasoning {
                    data: String::new(),
                });
                if let Block::RedactedReasoning { data: d } = block {
                    d.push_str(data);
                }
            }
            Part::ToolCall {
                index,
                id,
                name,
                input,
            } => {
                *self.block(*index, empty_reasoning) = Block::ToolUse {
                    id: id.clone(),
                    name: name.clone(),
                    input: input.clone(),
                };
            }
            Part::ToolStart { .. } | Part::ToolInput { .. } => {}
        }
    }

    /// Adds every part of `parts`.
    pub fn extend(&mut self, parts: impl IntoIterator<Item = Part>) {
        for part in parts {
            self.push(&part);
        }
    }

    fn block(&mut self, index: u32, new: impl FnOnce() -> Block) -> &mut Block {
        let at = match self.blocks.iter().position(|(i, _)| *i == index) {
            Some(at) => at,
            None => {
                self.blocks.push((index, new()));
                self.blocks.len() - 1
            }
        };
        &mut self.blocks[at].1
    }

    /// The message's blocks in index order. A block with nothing in it (an empty text block)
    /// is left out: Bedrock refuses blank text in history.
    pub fn into_blocks(mut self) -> Vec<Block> {
        self.blocks.sort_by_key(|(i, _)| *i);
        self.blocks
            .into_iter()
            .map(|(_, b)| b)
            .filter(|b| !matches!(b, Block::Text { text } if text.is_empty()))
            .collect()
    }
}

/// The parts that stream `blocks` again, as a stored answer is replayed: each block whole, a tool
/// call as its start, its input in one fragment, and the complete call.
pub fn parts_of_blocks(blocks: &[Block]) -> Vec<Part> {
    let mut parts = Vec::with_capacity(blocks.len());
    for (index, block) in (0u32..).zip(blocks) {
        match block {
            Block::Text { text } => parts.push(Part::Text {
                index,
                text: text.clone(),
            }),
            Block::Reasoning { text, signature } => {
                parts.push(Part::Reasoning {
                    index,
                    text: text.clone(),
                });
                parts.extend(
                    signature
                        .clone()
                        .map(|signature| Part::Signature { index, signature }),
                );
            }
            Block::RedactedReasoning { data } => parts.push(Part::Redacted {
                index,
                data: data.clone(),
            }),
            // Only a user's message holds attachments; an answer never does.
            Block::Image { .. } | Block::Document { .. } => {}
            Block::ToolUse { id, name, input } => {
                parts.push(Part::ToolStart {
                    index,
                    id: id.clone(),
                    name: name.clone(),
                });
                parts.push(Part::ToolInput {
                    index,
                    json: input.to_string(),
                });
                parts.push(Part::ToolCall {
                    index,
                    id: id.clone(),
                    name: name.clone(),
                    input: input.clone(),
                });
            }
            // Never in an answer.
            Block::ToolResult { .. } => {}
        }
    }
    parts
}

fn empty_reasoning() -> Block {
    Block::Reasoning {
        text: String::new(),
        signature: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn input(index: u32, json: &str) -> Part {
        Part::ToolInput {
            index,
            json: json.into(),
        }
    }

    #[test]
    fn interleaved_tool_calls_are_assembled_apart() {
        let mut calls = ToolCalls::default();
        let parts = [
            Part::ToolStart {
                index: 1,
                id: "a".into(),
                name: "weather".into(),
            },
            Part::ToolStart {
                index: 2,
                id: "b".into(),
                name: "time".into(),
            },
            input(1, r#"{"city":"Pa"#),
            input(2, r#"{"zone":"東"#),
            input(1, r#"ris \"x\""}"#),
            input(2, r#"京"}"#),
        ];
        parts.iter().for_each(|p| calls.follow(p));
        assert_eq!(calls.unfinished(), [1, 2]);
        let b = calls.stop(2).unwrap().unwrap();
        let a = calls.stop(1).unwrap().unwrap();
        assert_eq!(
            a,
            Part::ToolCall {
                index: 1,
                id: "a".into(),
                name: "weather".into(),
                input: json!({"city":"Paris \"x\""})
            }
        );
        assert!(matches!(&b, Part::ToolCall { input, .. } if *input == json!({"zone":"東京"})));
        assert_eq!(calls.stop(0).unwrap(), None, "a text block is no tool call");

        let mut answer = Answer::default();
        for p in [
            Part::Text {
                index: 0,
                text: "Let me ".into(),
            },
            b,
            Part::Text {
                index: 0,
                text: "check.".into(),
            },
            a,
        ] {
            answer.push(&p);
        }
        let blocks = answer.into_blocks();
        assert_eq!(blocks[0], Block::text("Let me check."));
        assert!(matches!(&blocks[1], Block::ToolUse { id, .. } if id == "a"));
        assert!(matches!(&blocks[2], Block::ToolUse { id, .. } if id == "b"));
    }

    #[test]
    fn bad_tool_input_is_an_upstream_error_that_is_not_retried() {
        let mut calls = ToolCalls::default();
        calls.follow(&Part::ToolStart {
            index: 0,
            id: "a".into(),
            name: "t".into(),
        });
        calls.follow(&input(0, r#"{"city":"#));
        let err = calls.stop(0).unwrap_err();
        assert_eq!(err.code().as_str(), "upstream_error");
        assert!(!err.retryable());
        // No input at all is an empty object.
        calls.follow(&Part::ToolStart {
            index: 1,
            id: "b".into(),
            name: "t".into(),
        });
        let empty = calls.stop(1).unwrap().unwrap();
        assert!(matches!(empty, Part::ToolCall { input, .. } if input == json!({})));
    }

    #[test]
    fn reasoning_keeps_its_signature_and_redacted_content() {
        let mut answer = Answer::default();
        for p in [
            Part::Reasoning {
                index: 0,
                text: "Think".into(),
            },
            Part::Reasoning {
                index: 0,
                text: "ing".into(),
            },
            Part::Signature {
                index: 0,
                signature: "sig".into(),
            },
            Part::Redacted {
                index: 1,
                data: "AAEC".into(),
            },
            Part::Text {
                index: 2,
                text: "Hi".into(),
            },
        ] {
            answer.push(&p);
        }
        assert_eq!(
            answer.into_blocks(),
            [
                Block::Reasoning {
                    text: "Thinking".into(),
                    signature: Some("sig".into())
                },
                Block::RedactedReasoning {
                    data: "AAEC".into()
                },
                Block::text("Hi"),
            ]
        );
    }
}
