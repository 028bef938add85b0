//! The messages a request sends, and what each may hold: blocks by role, user and assistant in
//! turn, and tool results that answer exactly the calls before them. Bedrock refuses anything
//! else; refusing it here names the field.

use crate::chat::content::{Block, tool_result_ids, tool_use_ids};
use crate::chat::request::{check_id, invalid};
use crate::chat::{Message, Role};
use crate::error::Error;

/// The stateless form's whole conversation: user and assistant in turn, ending with the user,
/// each message's blocks allowed for its role, each tool result answering the call before it.
pub(super) fn check_conversation(messages: &[Message]) -> Result<(), Error> {
    if messages.last().map(|m| m.role) != Some(Role::User) {
        return Err(invalid("messages", "must end with a user message"));
    }
    let mut previous: Option<&Message> = None;
    for (i, m) in messages.iter().enumerate() {
        let expected = if i % 2 == 0 {
            Role::User
        } else {
            Role::Assistant
        };
        if m.role != expected {
            return Err(invalid(
                &format!("messages[{i}].role"),
                "messages alternate user and assistant, starting with user",
            ));
        }
        check_blocks(&format!("messages[{i}].content"), m.role, &m.content)?;
        if m.role == Role::User {
            let open = previous.map(|p| p.content.as_slice()).unwrap_or_default();
            check_tool_results(&format!("messages[{i}].content"), open, &m.content)?;
        }
        previous = Some(m);
    }
    Ok(())
}

/// Blocks a message of `role` may hold: none empty, user blocks text and tool results,
/// assistant blocks text, tool calls and reasoning.
pub(super) fn check_blocks(field: &str, role: Role, blocks: &[Block]) -> Result<(), Error> {
    if blocks.is_empty() {
        return Err(invalid(field, "must hold at least one block"));
    }
    for (i, block) in blocks.iter().enumerate() {
        let allowed = match block {
            Block::Text { text } if text.trim().is_empty() => {
                return Err(invalid(
                    &format!("{field}[{i}].text"),
                    "must be non-empty text",
                ));
            }
            Block::Text { .. } => true,
            Block::ToolResult { tool_use_id, .. } => {
                check_id(&format!("{field}[{i}].tool_use_id"), tool_use_id)?;
                role == Role::User
            }
            Block::ToolUse { id, input, .. } => {
                check_id(&format!("{field}[{i}].id"), id)?;
                if !input.is_object() {
                    return Err(invalid(
                        &format!("{field}[{i}].input"),
                        "must be a JSON object",
                    ));
                }
                role == Role::Assistant
            }
            Block::Reasoning { .. } | Block::RedactedReasoning { .. } => role == Role::Assistant,
        };
        if !allowed {
            return Err(invalid(
                &format!("{field}[{i}]"),
                &format!("this block is not allowed in a {role:?} message").to_lowercase(),
            ));
        }
    }
    Ok(())
}

/// Every tool result in `new` answers a tool call in `answered` (the assistant message before
/// it), and every call there gets its result: Bedrock refuses a conversation otherwise.
pub fn check_tool_results(field: &str, answered: &[Block], new: &[Block]) -> Result<(), Error> {
    let calls: Vec<&str> = tool_use_ids(answered).collect();
    let results: Vec<&str> = tool_result_ids(new).collect();
    if let Some(unknown) = results.iter().find(|id| !calls.contains(id)) {
        return Err(invalid(
            &format!("{field}.tool_use_id"),
            &format!("'{unknown}' is not an open tool call of this conversation"),
        ));
    }
    let missing: Vec<&str> = calls
        .iter()
        .copied()
        .filter(|id| !results.contains(id))
        .collect();
    if !missing.is_empty() {
        return Err(invalid(
            field,
            &format!(
                "the last answer called tools; send a tool_result for each of: {}",
                missing.join(", ")
            ),
        ));
    }
    Ok(())
}
