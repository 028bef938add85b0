//! Content blocks: what a message is made of once it is more than a string (Bedrock Converse's
//! `ContentBlock`): text, a model's tool call, the client's tool result, and the model's
//! reasoning with its signature. History keeps them as they were, so a second turn sends Bedrock
//! exactly what the first one answered.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::chat::attachment::{DocumentFormat, ImageFormat, Source};

/// One block of a message. On the wire: `{"type":"text","text":"…"}`, `{"type":"tool_use",…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Block {
    Text {
        text: String,
    },
    /// A tool the model called: only in assistant messages.
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    /// What the client's tool returned for a call: only in user messages.
    ToolResult {
        tool_use_id: String,
        #[serde(deserialize_with = "result_content")]
        content: Vec<ToolResultContent>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<ToolStatus>,
    },
    /// The model's reasoning; the signature proves to the model, on the next turn, that the
    /// reasoning is its own, and Bedrock refuses a tool loop whose reasoning comes back without it.
    Reasoning {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
    /// Reasoning the model's provider encrypted: returned as it came, base64.
    RedactedReasoning {
        data: String,
    },
    /// An image: only in user messages. `format` may be left to the upload's or the bytes'.
    Image {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        format: Option<ImageFormat>,
        source: Source,
    },
    /// A document: only in user messages, beside a text block that asks about it. `name`
    /// defaults to the upload's file name.
    Document {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        format: Option<DocumentFormat>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        source: Source,
    },
}

/// One piece of a tool result: `{"text":"…"}` or `{"json":{…}}`. A plain string is accepted as
/// the whole content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ToolResultContent {
    Text(String),
    Json(Value),
}

/// Whether the tool succeeded; Bedrock tells the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolStatus {
    Success,
    Error,
}

fn result_content<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ToolResultContent>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        List(Vec<ToolResultContent>),
    }
    // Untagged buffers its input, so name the shapes in the error.
    match Either::deserialize(d) {
        Ok(Either::Text(text)) => Ok(vec![ToolResultContent::Text(text)]),
        Ok(Either::List(list)) => Ok(list),
        Err(_) => Err(serde::de::Error::custom(
            "must be a string or a list of {\"text\":…} or {\"json\":…}",
        )),
    }
}

impl Block {
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text { text: text.into() }
    }

    /// An image or a document.
    pub fn is_attachment(&self) -> bool {
        matches!(self, Self::Image { .. } | Self::Document { .. })
    }

    /// The bytes of the block's content, for token estimates: its text or reasoning, a tool's
    /// name and input or its result (JSON as serialized); an image as the most a model spends on
    /// one (about 1,600 tokens), a document as its size.
    pub fn estimate_len(&self) -> usize {
        match self {
            Self::Image { .. } => IMAGE_ESTIMATE_LEN,
            Self::Document { source, .. } => source.size().unwrap_or(0) as usize,
            Self::Text { text } | Self::Reasoning { text, .. } => text.len(),
            Self::RedactedReasoning { data } => data.len(),
            Self::ToolUse { name, input, .. } => name.len() + json_len(input),
            Self::ToolResult { content, .. } => content
                .iter()
                .map(|c| match c {
                    ToolResultContent::Text(t) => t.len(),
                    ToolResultContent::Json(v) => json_len(v),
                })
                .sum(),
        }
    }
}

/// An image's share of the token estimate, in bytes of text (four to a token).
const IMAGE_ESTIMATE_LEN: usize = 1_600 * 4;

fn json_len(value: &Value) -> usize {
    serde_json::to_string(value).map_or(0, |s| s.len())
}

/// The text blocks of `blocks`, joined: what a text-only client reads as the message.
pub fn joined_text(blocks: &[Block]) -> String {
    let mut out = String::new();
    for block in blocks {
        if let Block::Text { text } = block {
            out.push_str(text);
        }
    }
    out
}

/// True when `blocks` is exactly one text block: a message a text-only client could have sent.
pub fn is_plain_text(blocks: &[Block]) -> bool {
    matches!(blocks, [Block::Text { .. }])
}

/// The ids of the tool calls in `blocks`, in order.
pub fn tool_use_ids(blocks: &[Block]) -> impl Iterator<Item = &str> {
    blocks.iter().filter_map(|b| match b {
        Block::ToolUse { id, .. } => Some(id.as_str()),
        _ => None,
    })
}

/// The ids the tool results in `blocks` answer, in order.
pub fn tool_result_ids(blocks: &[Block]) -> impl Iterator<Item = &str> {
    blocks.iter().filter_map(|b| match b {
        Block::ToolResult { tool_use_id, .. } => Some(tool_use_id.as_str()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_read_and_write_their_wire_shapes() {
        let json = r#"[{"type":"text","text":"hi"},
            {"type":"tool_result","tool_use_id":"t1","content":"21 C"},
            {"type":"tool_result","tool_use_id":"t2","content":[{"json":{"a":1}}],"status":"error"},
            {"type":"reasoning","text":"hm","signature":"sig"}]"#;
        let blocks: Vec<Block> = serde_json::from_str(json).unwrap();
        assert_eq!(
            blocks[1],
            Block::ToolResult {
                tool_use_id: "t1".into(),
                content: vec![ToolResultContent::Text("21 C".into())],
                status: None
            }
        );
        let back = serde_json::to_string(&blocks[2]).unwrap();
        assert_eq!(
            back,
            r#"{"type":"tool_result","tool_use_id":"t2","content":[{"json":{"a":1}}],"status":"error"}"#
        );
        assert_eq!(tool_result_ids(&blocks).collect::<Vec<_>>(), ["t1", "t2"]);
        let bad = serde_json::from_str::<Vec<Block>>(
            r#"[{"type":"tool_result","tool_use_id":"t","content":5}]"#,
        )
        .unwrap_err();
        assert!(bad.to_string().contains("string or a list"), "{bad}");
    }
}
