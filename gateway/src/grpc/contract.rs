//! The Converse contract's messages in protobuf: content blocks, tools, the tool choice,
//! reasoning and the response format, to and from the chat types. JSON values travel as JSON
//! text; text that does not parse is `invalid_request` naming its field.

use nagare_proto::v1 as pb;
use serde_json::Value;

use crate::chat::{
    Block, Effort, Message, Reasoning, ResponseFormat, Role, Source, Tool, ToolChoice,
    ToolResultContent, ToolStatus,
};
use crate::error::Error;

/// A request's blocks; `field` names them in errors.
pub fn blocks_from_pb(field: &str, blocks: Vec<pb::ContentBlock>) -> Result<Vec<Block>, Error> {
    use pb::content_block::Block as B;
    (0..)
        .zip(blocks)
        .map(|(i, b)| {
            let at = format!("{field}[{i}]");
            Ok(match b.block {
                None => return Err(invalid(&at, "names no block")),
                Some(B::Text(text)) => Block::Text { text },
                Some(B::ToolUse(u)) => Block::ToolUse {
                    id: u.id,
                    name: u.name,
                    input: json(&format!("{at}.input_json"), &u.input_json)?,
                },
                Some(B::ToolResult(r)) => Block::ToolResult {
                    tool_use_id: r.tool_use_id,
                    content: result_content(&at, r.content)?,
                    status: match r.status.as_deref() {
                        None => None,
                        Some("success") => Some(ToolStatus::Success),
                        Some("error") => Some(ToolStatus::Error),
                        Some(_) => {
                            return Err(invalid(&format!("{at}.status"), "success or error"));
                        }
                    },
                },
                Some(B::Reasoning(r)) => Block::Reasoning {
                    text: r.text,
                    signature: r.signature,
                },
                Some(B::RedactedReasoning(data)) => Block::RedactedReasoning { data },
                Some(B::Image(a)) => Block::Image {
                    format: format(&at, &a.format)?,
                    source: source(&at, a.source, a.size)?,
                },
                Some(B::Document(a)) => Block::Document {
                    format: format(&at, &a.format)?,
                    name: (!a.name.is_empty()).then_some(a.name),
                    source: source(&at, a.source, a.size)?,
                },
            })
        })
        .collect()
}

/// An attachment's format by its Bedrock name; empty leaves it to the upload or the bytes.
fn format<F: serde::de::DeserializeOwned>(at: &str, name: &str) -> Result<Option<F>, Error> {
    if name.is_empty() {
        return Ok(None);
    }
    serde_json::from_value(Value::String(name.into()))
        .map(Some)
        .map_err(|_| {
            invalid(
                &format!("{at}.format"),
                &format!("'{name}' is not a format"),
            )
        })
}

fn source(at: &str, source: Option<pb::attachment::Source>, size: u64) -> Result<Source, Error> {
    use pb::attachment::Source as S;
    match source {
        Some(S::UploadId(id)) => Ok(Source::Upload(id)),
        Some(S::Bytes(bytes)) => Ok(Source::Inline(bytes.into())),
        Some(S::Sha256(sha256)) => Ok(Source::Stored {
            sha256,
            size,
            bytes: None,
        }),
        None => Err(invalid(
            &format!("{at}.source"),
            "names an upload_id or carries bytes",
        )),
    }
}

fn attachment_to_pb(format: Option<&str>, name: Option<&str>, source: &Source) -> pb::Attachment {
    use pb::attachment::Source as S;
    let (source, size) = match source {
        Source::Upload(id) => (S::UploadId(id.clone()), 0),
        Source::Inline(bytes) => (S::Bytes(bytes.to_vec()), bytes.len() as u64),
        Source::Stored { sha256, size, .. } => (S::Sha256(sha256.clone()), *size),
    };
    pb::Attachment {
        format: format.unwrap_or_default().into(),
        name: name.unwrap_or_default().into(),
        source: Some(source),
        size,
    }
}

fn result_content(
    at: &str,
    content: Vec<pb::ToolResultContent>,
) -> Result<Vec<ToolResultContent>, Error> {
    use pb::tool_result_content::Content as C;
    (0..)
        .zip(content)
        .map(|(j, c)| match c.content {
            Some(C::Text(text)) => Ok(ToolResultContent::Text(text)),
            Some(C::Json(text)) => Ok(ToolResultContent::Json(json(
                &format!("{at}.content[{j}].json"),
                &text,
            )?)),
            None => Err(invalid(&format!("{at}.content[{j}]"), "names no content")),
        })
        .collect()
}

/// A block as protobuf.
pub fn block_to_pb(block: &Block) -> pb::ContentBlock {
    use pb::content_block::Block as B;
    let block = match block {
        Block::Text { text } => B::Text(text.clone()),
        Block::ToolUse { id, name, input } => B::ToolUse(pb::ToolUse {
            id: id.clone(),
            name: name.clone(),
            input_json: input.to_string(),
        }),
        Block::ToolResult {
            tool_use_id,
            content,
            status,
        } => B::ToolResult(pb::ToolResult {
            tool_use_id: tool_use_id.clone(),
            content: content
                .iter()
                .map(|c| pb::ToolResultContent {
                    content: Some(match c {
                        ToolResultContent::Text(t) => {
                            pb::tool_result_content::Content::Text(t.clone())
                        }
                        ToolResultContent::Json(v) => {
                            pb::tool_result_content::Content::Json(v.to_string())
                        }
                    }),
                })
                .collect(),
            status: status.map(|s| match s {
                ToolStatus::Success => "success".into(),
                ToolStatus::Error => "error".into(),
            }),
        }),
        Block::Reasoning { text, signature } => B::Reasoning(pb::ReasoningBlock {
            text: text.clone(),
            signature: signature.clone(),
        }),
        Block::RedactedReasoning { data } => B::RedactedReasoning(data.clone()),
        Block::Image { format, source } => {
            B::Image(attachment_to_pb(format.map(|f| f.as_str()), None, source))
        }
        Block::Document {
            format,
            name,
            source,
        } => B::Document(attachment_to_pb(
            format.map(|f| f.as_str()),
            name.as_deref(),
            source,
        )),
    };
    pb::ContentBlock { block: Some(block) }
}

/// The stateless form's messages.
pub fn messages_from_pb(messages: Vec<pb::Message>) -> Result<Vec<Message>, Error> {
    (0..)
        .zip(messages)
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                _ => return Err(invalid(&format!("messages[{i}].role"), "user or assistant")),
            };
            let content = if m.blocks.is_empty() {
                vec![Block::Text { text: m.content }]
            } else {
                blocks_from_pb(&format!("messages[{i}].blocks"), m.blocks)?
            };
            Ok(Message { role, content })
        })
        .collect()
}

pub fn tools_from_pb(tools: Vec<pb::Tool>) -> Result<Vec<Tool>, Error> {
    (0..)
        .zip(tools)
        .map(|(i, t)| {
            Ok(Tool {
                name: t.name,
                description: t.description,
                input_schema: json(
                    &format!("tools[{i}].input_schema_json"),
                    &t.input_schema_json,
                )?,
                strict: t.strict,
            })
        })
        .collect()
}

pub fn tool_choice_from_pb(choice: Option<pb::ToolChoice>) -> Result<Option<ToolChoice>, Error> {
    use pb::tool_choice::Choice;
    Ok(match choice.map(|c| c.choice) {
        None => None,
        Some(Some(Choice::Auto(_))) => Some(ToolChoice::Auto),
        Some(Some(Choice::Any(_))) => Some(ToolChoice::Any),
        Some(Some(Choice::Tool(name))) => Some(ToolChoice::Tool { name }),
        Some(None) => return Err(invalid("tool_choice", "names no choice")),
    })
}

pub fn reasoning_from_pb(reasoning: Option<pb::Reasoning>) -> Result<Option<Reasoning>, Error> {
    let Some(r) = reasoning else {
        return Ok(None);
    };
    let effort = match r.effort.as_deref() {
        None => None,
        Some("low") => Some(Effort::Low),
        Some("medium") => Some(Effort::Medium),
        Some("high") => Some(Effort::High),
        Some(_) => return Err(invalid("reasoning.effort", "low, medium or high")),
    };
    Ok(Some(Reasoning {
        budget_tokens: r.budget_tokens,
        effort,
    }))
}

pub fn format_from_pb(format: Option<pb::ResponseFormat>) -> Result<Option<ResponseFormat>, Error> {
    format
        .map(|f| {
            Ok(ResponseFormat::JsonSchema {
                name: f.name.unwrap_or_else(|| "answer".into()),
                description: f.description,
                schema: json("response_format.schema_json", &f.schema_json)?,
            })
        })
        .transpose()
}

fn json(field: &str, text: &str) -> Result<Value, Error> {
    serde_json::from_str(text).map_err(|e| invalid(field, &format!("not JSON: {e}")))
}

fn invalid(field: &str, why: &str) -> Error {
    Error::InvalidRequest(format!("{field}: {why}"))
}
