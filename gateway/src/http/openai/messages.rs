//! The messages of a Chat Completions request as the pipeline's: the system prompt, and user and
//! assistant messages in turn.
//!
//! - system and developer messages, wherever they are, join into the system prompt;
//! - an assistant message's `tool_calls` become tool-use blocks (their `arguments` parsed), its
//!   `thinking_blocks` (as they came back from this gateway) reasoning blocks;
//! - `tool` messages become tool results in the user turn they belong to, and messages of one
//!   role in a row merge, since Bedrock takes user and assistant strictly in turn;
//! - `image_url` parts take a data URL or an `upload_id`, `file` parts a `file_id` (an upload) or
//!   `file_data`; the gateway fetches no URL.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::chat::{Block, Message, Role, Source, ToolResultContent};
use crate::error::Error;
use crate::http::dialect::{attachment, bad, data_url};

/// One message of `messages`.
#[derive(Deserialize)]
pub struct Said {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    tool_calls: Vec<ToolCall>,
    tool_call_id: Option<String>,
    #[serde(default)]
    thinking_blocks: Vec<Value>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Map<String, Value>>),
}

#[derive(Deserialize)]
struct ToolCall {
    id: String,
    function: FunctionCall,
}

#[derive(Deserialize)]
struct FunctionCall {
    name: String,
    arguments: String,
}

/// Message fields that change nothing: a participant's name, an answer's refusal, and reasoning
/// text without its signature (the model would refuse it back).
const IGNORED_IN_MESSAGE: &[&str] = &["name", "refusal", "reasoning_content", "annotations"];

/// The system prompt and the user/assistant conversation of `messages`.
pub fn conversation(said: Vec<Said>) -> Result<(Vec<String>, Vec<Message>), Error> {
    let mut system = Vec::new();
    let mut messages: Vec<Message> = Vec::new();
    for (i, said) in said.into_iter().enumerate() {
        let field = format!("messages[{i}]");
        if let Some(name) = said
            .other
            .keys()
            .find(|k| !IGNORED_IN_MESSAGE.contains(&k.as_str()))
        {
            return Err(bad(&format!("{field}.{name}"), "unknown field"));
        }
        let (role, blocks) = match said.role.as_str() {
            "system" | "developer" => {
                let parts = parts(&field, said.content)?;
                system.push(only_text(&field, parts)?);
                continue;
            }
            "user" => (
                Role::User,
                user_blocks(&field, parts(&field, said.content)?)?,
            ),
            "assistant" => (Role::Assistant, assistant_blocks(&field, said)?),
            "tool" => {
                let id = said
                    .tool_call_id
                    .ok_or_else(|| bad(&format!("{field}.tool_call_id"), "required"))?;
                let text = only_text(&field, parts(&field, said.content)?)?;
                let result = Block::ToolResult {
                    tool_use_id: id,
                    content: vec![ToolResultContent::Text(text)],
                    status: None,
                };
                (Role::User, vec![result])
            }
            "function" => {
                return Err(bad(
                    &format!("{field}.role"),
                    "deprecated: use tool messages",
                ));
            }
            other => {
                return Err(bad(
                    &format!("{field}.role"),
                    &format!("unknown role '{other}'"),
                ));
            }
        };
        match messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => messages.push(Message {
                role,
                content: blocks,
            }),
        }
    }
    // A tool result goes before any text of the same turn, as Bedrock wants it.
    for m in &mut messages {
        m.content
            .sort_by_key(|b| !matches!(b, Block::ToolResult { .. }));
    }
    Ok((system, messages))
}

/// The parts of a message's content: a string is one text part. Missing content is none.
fn parts(field: &str, content: Option<Content>) -> Result<Vec<Map<String, Value>>, Error> {
    Ok(match content {
        None => Vec::new(),
        Some(Content::Text(text)) => {
            let mut part = Map::new();
            part.insert("type".into(), "text".into());
            part.insert("text".into(), text.into());
            vec![part]
        }
        Some(Content::Parts(parts)) if parts.is_empty() => {
            return Err(bad(&format!("{field}.content"), "must not be empty"));
        }
        Some(Content::Parts(parts)) => parts,
    })
}

/// The text of parts that may only be text.
fn only_text(field: &str, parts: Vec<Map<String, Value>>) -> Result<String, Error> {
    let mut text = String::new();
    for (j, part) in parts.into_iter().enumerate() {
        match text_part(&format!("{field}.content[{j}]"), &part)? {
            Some(t) => text.push_str(t),
            None => {
                return Err(bad(
                    &format!("{field}.content[{j}]"),
                    "only text parts are allowed here",
                ));
            }
        }
    }
    Ok(text)
}

/// A text part's text; `None` for another type.
fn text_part<'a>(field: &str, part: &'a Map<String, Value>) -> Result<Option<&'a str>, Error> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => part
            .get("text")
            .and_then(Value::as_str)
            .map(Some)
            .ok_or_else(|| bad(&format!("{field}.text"), "must be a string")),
        Some(_) => Ok(None),
        None => Err(bad(&format!("{field}.type"), "required")),
    }
}

fn user_blocks(field: &str, parts: Vec<Map<String, Value>>) -> Result<Vec<Block>, Error> {
    if parts.is_empty() {
        return Err(bad(&format!("{field}.content"), "required"));
    }
    let mut blocks = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let field = format!("{field}.content[{j}]");
        if let Some(text) = text_part(&field, part)? {
            blocks.push(Block::text(text));
            continue;
        }
        let inner = |key: &str| {
            part.get(key)
                .and_then(Value::as_object)
                .ok_or_else(|| bad(&format!("{field}.{key}"), "must be an object"))
        };
        let block = match part.get("type").and_then(Value::as_str) {
            Some("image_url") => {
                let image = inner("image_url")?;
                if let Some(id) = image.get("upload_id").and_then(Value::as_str) {
                    Block::Image {
                        format: None,
                        source: Source::Upload(id.to_owned()),
                    }
                } else {
                    let url = image.get("url").and_then(Value::as_str).unwrap_or_default();
                    let field = format!("{field}.image_url.url");
                    let (media_type, data) = data_url(&field, url)?;
                    let block = attachment(&field, media_type, data, None)?;
                    if !matches!(block, Block::Image { .. }) {
                        return Err(bad(&field, "is not an image; send documents as file parts"));
                    }
                    block
                }
            }
            Some("file") => file_block(&field, inner("file")?)?,
            other => {
                return Err(bad(
                    &format!("{field}.type"),
                    &format!(
                        "'{}' parts are not supported: send text, image_url or file",
                        other.unwrap_or_default()
                    ),
                ));
            }
        };
        blocks.push(block);
    }
    Ok(blocks)
}

/// A `file` part: an upload by `file_id`, or `file_data` as a data URL with its `filename`.
fn file_block(field: &str, file: &Map<String, Value>) -> Result<Block, Error> {
    let name = file
        .get("filename")
        .and_then(Value::as_str)
        .map(crate::chat::document_name);
    if let Some(id) = file.get("file_id").and_then(Value::as_str) {
        return Ok(Block::Document {
            format: None,
            name,
            source: Source::Upload(id.to_owned()),
        });
    }
    let field = format!("{field}.file.file_data");
    let url = file
        .get("file_data")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(&field, "send file_id (an upload) or file_data"))?;
    let (media_type, data) = data_url(&field, url)?;
    attachment(
        &field,
        media_type,
        data,
        Some(name.unwrap_or_else(|| "document".into())),
    )
}

/// An assistant message's blocks: its reasoning as it came back, its text, its tool calls.
fn assistant_blocks(field: &str, said: Said) -> Result<Vec<Block>, Error> {
    let mut blocks = Vec::new();
    for (j, thinking) in said.thinking_blocks.into_iter().enumerate() {
        let field = format!("{field}.thinking_blocks[{j}]");
        let text = |key: &str| thinking.get(key).and_then(Value::as_str).map(str::to_owned);
        let block = match thinking.get("type").and_then(Value::as_str) {
            Some("thinking") => Block::Reasoning {
                text: text("thinking").unwrap_or_default(),
                signature: text("signature"),
            },
            Some("redacted_thinking") => Block::RedactedReasoning {
                data: text("data").ok_or_else(|| bad(&format!("{field}.data"), "required"))?,
            },
            _ => {
                return Err(bad(
                    &format!("{field}.type"),
                    "must be thinking or redacted_thinking",
                ));
            }
        };
        blocks.push(block);
    }
    for (j, part) in parts(field, said.content)?.iter().enumerate() {
        let field = format!("{field}.content[{j}]");
        match part.get("type").and_then(Value::as_str) {
            Some("refusal") => {}
            _ => match text_part(&field, part)? {
                Some(text) if !text.is_empty() => blocks.push(Block::text(text)),
                Some(_) => {}
                None => return Err(bad(&field, "assistant messages hold text parts only")),
            },
        }
    }
    for (j, call) in said.tool_calls.into_iter().enumerate() {
        let field = format!("{field}.tool_calls[{j}].function.arguments");
        let input: Value = serde_json::from_str(&call.function.arguments)
            .map_err(|e| bad(&field, &format!("is not JSON: {e}")))?;
        blocks.push(Block::ToolUse {
            id: call.id,
            name: call.function.name,
            input,
        });
    }
    if blocks.is_empty() {
        return Err(bad(
            &format!("{field}.content"),
            "required without tool_calls",
        ));
    }
    Ok(blocks)
}
