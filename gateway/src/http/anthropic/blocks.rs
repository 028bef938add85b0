//! The content blocks of a Messages request as the pipeline's: text, image, document, tool_use,
//! tool_result, thinking and redacted_thinking map one to one, and every `cache_control` on the
//! way is noted ([`CacheMarks`]).

use serde_json::{Map, Value};

use crate::chat::{Block, DocumentFormat, Source, ToolResultContent, ToolStatus, document_name};
use crate::error::Error;
use crate::http::dialect::{attachment, bad};

/// Whether a `cache_control` was seen.
#[derive(Default)]
pub struct CacheMarks(pub bool);

impl CacheMarks {
    /// Takes a block's `cache_control`, which must be `{"type":"ephemeral"}` (with a `ttl`).
    pub fn take(&mut self, field: &str, block: &mut Map<String, Value>) -> Result<(), Error> {
        if let Some(control) = block.remove("cache_control") {
            if control.is_null() {
                return Ok(());
            }
            if control.get("type").and_then(Value::as_str) != Some("ephemeral") {
                return Err(bad(
                    &format!("{field}.cache_control.type"),
                    "must be ephemeral",
                ));
            }
            self.0 = true;
        }
        Ok(())
    }
}

pub fn string(field: &str, block: &Map<String, Value>, key: &str) -> Result<String, Error> {
    block
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| bad(&format!("{field}.{key}"), "must be a string"))
}

/// The keys each block type may carry besides `type`, `cache_control` and `citations` (which
/// changes nothing in a request).
fn known_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "text" => &["text"],
        "image" => &["source"],
        "document" => &["source", "title", "context"],
        "tool_use" => &["id", "name", "input"],
        "tool_result" => &["tool_use_id", "content", "is_error"],
        "thinking" => &["thinking", "signature"],
        "redacted_thinking" => &["data"],
        _ => &[],
    }
}

/// One content block; a key its type does not have is refused by name.
pub fn block(
    field: &str,
    mut b: Map<String, Value>,
    cache: &mut CacheMarks,
) -> Result<Block, Error> {
    cache.take(field, &mut b)?;
    b.remove("citations");
    let kind = b.get("type").and_then(Value::as_str).unwrap_or_default();
    if let Some(key) = b
        .keys()
        .find(|k| *k != "type" && !known_keys(kind).contains(&k.as_str()))
        && !known_keys(kind).is_empty()
    {
        return Err(bad(&format!("{field}.{key}"), "unknown field"));
    }
    Ok(match kind {
        "text" => Block::text(string(field, &b, "text")?),
        "image" | "document" => {
            let name = b
                .get("title")
                .and_then(Value::as_str)
                .map(document_name)
                .or_else(|| (kind == "document").then(|| "document".to_owned()));
            attachment_block(field, &b, name)?
        }
        "tool_use" => Block::ToolUse {
            id: string(field, &b, "id")?,
            name: string(field, &b, "name")?,
            input: b.get("input").cloned().unwrap_or(Value::Null),
        },
        "tool_result" => tool_result(field, b, cache)?,
        "thinking" => Block::Reasoning {
            text: string(field, &b, "thinking")?,
            signature: b
                .get("signature")
                .and_then(Value::as_str)
                .map(str::to_owned),
        },
        "redacted_thinking" => Block::RedactedReasoning {
            data: string(field, &b, "data")?,
        },
        other => {
            return Err(bad(
                &format!("{field}.type"),
                &format!("'{other}' blocks are not supported"),
            ));
        }
    })
}

/// An image or document's `source`: `base64` or `text` data, or a `file` (an upload of yours).
fn attachment_block(
    field: &str,
    b: &Map<String, Value>,
    name: Option<String>,
) -> Result<Block, Error> {
    let field = format!("{field}.source");
    let source = b
        .get("source")
        .and_then(Value::as_object)
        .ok_or_else(|| bad(&field, "must be an object"))?;
    let image = b.get("type").and_then(Value::as_str) == Some("image");
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media_type = string(&field, source, "media_type")?;
            let block = attachment(&field, &media_type, &string(&field, source, "data")?, name)?;
            if image != matches!(block, Block::Image { .. }) {
                return Err(bad(
                    &format!("{field}.media_type"),
                    "does not match the block's type",
                ));
            }
            Ok(block)
        }
        Some("text") if !image => {
            let data = string(&field, source, "data")?;
            Ok(Block::Document {
                format: Some(DocumentFormat::Txt),
                name,
                source: Source::Inline(data.into_bytes().into()),
            })
        }
        Some("file") => {
            let id = string(&field, source, "file_id")?;
            Ok(if image {
                Block::Image {
                    format: None,
                    source: Source::Upload(id),
                }
            } else {
                Block::Document {
                    format: None,
                    name,
                    source: Source::Upload(id),
                }
            })
        }
        _ => Err(bad(
            &format!("{field}.type"),
            "must be base64, text (documents) or file: the gateway fetches no URLs",
        )),
    }
}

fn tool_result(field: &str, b: Map<String, Value>, cache: &mut CacheMarks) -> Result<Block, Error> {
    let content = match b.get("content") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => vec![ToolResultContent::Text(text.clone())],
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            for (k, part) in parts.iter().enumerate() {
                let field = format!("{field}.content[{k}]");
                let mut part = part.as_object().cloned().unwrap_or_default();
                cache.take(&field, &mut part)?;
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        out.push(ToolResultContent::Text(string(&field, &part, "text")?))
                    }
                    _ => {
                        return Err(bad(
                            &format!("{field}.type"),
                            "tool results hold text only on this gateway",
                        ));
                    }
                }
            }
            out
        }
        Some(_) => {
            return Err(bad(
                &format!("{field}.content"),
                "must be a string or a list",
            ));
        }
    };
    Ok(Block::ToolResult {
        tool_use_id: string(field, &b, "tool_use_id")?,
        content,
        status: (b.get("is_error") == Some(&Value::Bool(true))).then_some(ToolStatus::Error),
    })
}
