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
    check_attachments(
        (0..)
            .zip(messages)
            .map(|(i, m)| (format!("messages[{i}].content"), m.content.as_slice())),
    )
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
            Block::Image { .. } => role == Role::User,
            Block::Document { name, .. } => {
                if let Some(name) = name {
                    check_document_name(&format!("{field}[{i}].name"), name)?;
                }
                role == Role::User
            }
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

/// Bedrock's limits on the attachments of one request, over every message it sends.
pub const MAX_IMAGES: usize = 20;
pub const MAX_DOCUMENTS: usize = 5;
/// Bedrock's limit on a document's name.
const MAX_DOCUMENT_NAME_CHARS: usize = 200;

/// The attachments of the messages one request sends, against Bedrock's rules: at most
/// [`MAX_IMAGES`] images and [`MAX_DOCUMENTS`] documents, and a text block beside each document.
/// `messages` are `(field, blocks)`.
pub fn check_attachments<'a>(
    messages: impl IntoIterator<Item = (String, &'a [Block])>,
) -> Result<(), Error> {
    let (mut images, mut documents) = (0, 0);
    for (field, blocks) in messages {
        let mut has_document = false;
        for block in blocks {
            match block {
                Block::Image { .. } => images += 1,
                Block::Document { .. } => {
                    documents += 1;
                    has_document = true;
                }
                _ => {}
            }
        }
        if images > MAX_IMAGES {
            return Err(invalid(
                &field,
                &format!("a request holds at most {MAX_IMAGES} images"),
            ));
        }
        if documents > MAX_DOCUMENTS {
            return Err(invalid(
                &field,
                &format!("a request holds at most {MAX_DOCUMENTS} documents"),
            ));
        }
        if has_document && !blocks.iter().any(|b| matches!(b, Block::Text { .. })) {
            return Err(invalid(
                &field,
                "a message with a document needs a text block too (what to do with it)",
            ));
        }
    }
    Ok(())
}

/// Bedrock's rule for a document's name: letters, digits, single spaces, hyphens, parentheses
/// and square brackets, at most 200 characters. [`document_name`] makes one from a file name.
fn check_document_name(field: &str, name: &str) -> Result<(), Error> {
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, ' ' | '-' | '(' | ')' | '[' | ']');
    if name.trim().is_empty()
        || name.chars().count() > MAX_DOCUMENT_NAME_CHARS
        || !name.chars().all(allowed)
        || name.contains("  ")
    {
        return Err(invalid(
            field,
            "a document name is 1 to 200 letters, digits, single spaces, hyphens, parentheses \
             and square brackets",
        ));
    }
    Ok(())
}

/// A document name Bedrock accepts, made from a file name: its extension dropped, anything
/// else Bedrock refuses turned into a space, runs of spaces made one; `document` when nothing
/// is left.
pub fn document_name(filename: &str) -> String {
    let stem = match filename.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => filename,
    };
    let mut name = String::new();
    for c in stem.chars() {
        let c = if c.is_alphanumeric() || matches!(c, '-' | '(' | ')' | '[' | ']') {
            c
        } else {
            ' '
        };
        if c == ' ' && (name.is_empty() || name.ends_with(' ')) {
            continue;
        }
        name.push(c);
        if name.chars().count() == MAX_DOCUMENT_NAME_CHARS {
            break;
        }
    }
    let name = name.trim_end();
    if name.is_empty() {
        "document".into()
    } else {
        name.into()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{DocumentFormat, Source};

    fn image() -> Block {
        Block::Image {
            format: None,
            source: Source::Upload("up".into()),
        }
    }

    fn document() -> Block {
        Block::Document {
            format: Some(DocumentFormat::Txt),
            name: None,
            source: Source::Upload("up".into()),
        }
    }

    #[test]
    fn attachments_are_held_to_bedrocks_counts_and_need_text_beside_a_document() {
        let twenty: Vec<Block> = std::iter::repeat_with(image).take(20).collect();
        check_attachments([("content".to_string(), twenty.as_slice())]).unwrap();
        let mut more = twenty.clone();
        more.push(image());
        let err = check_attachments([("content".to_string(), more.as_slice())]).unwrap_err();
        assert!(err.to_string().contains("at most 20 images"), "{err}");
        // Counted over every message sent, not one at a time.
        let first = [image(), image()];
        let err = check_attachments([
            ("messages[0].content".to_string(), &first[..]),
            ("messages[2].content".to_string(), &twenty[..]),
        ])
        .unwrap_err();
        assert!(err.to_string().starts_with("messages[2].content"), "{err}");
        let six: Vec<Block> = std::iter::repeat_with(document)
            .take(6)
            .chain([Block::text("sum up")])
            .collect();
        let err = check_attachments([("content".to_string(), six.as_slice())]).unwrap_err();
        assert!(err.to_string().contains("at most 5 documents"), "{err}");
        let alone = [document()];
        let err = check_attachments([("content".to_string(), &alone[..])]).unwrap_err();
        assert!(err.to_string().contains("needs a text block"), "{err}");
    }

    #[test]
    fn attachments_are_for_user_messages_and_names_follow_bedrocks_rule() {
        let err = check_blocks("messages[1].content", Role::Assistant, &[image()]).unwrap_err();
        assert!(
            err.to_string().contains("not allowed in a assistant"),
            "{err}"
        );
        let named = |name: &str| Block::Document {
            format: None,
            name: Some(name.into()),
            source: Source::Upload("up".into()),
        };
        check_blocks("content", Role::User, &[named("Q3 report (final)")]).unwrap();
        for bad in ["contract.pdf", "a  b", "", "x/y"] {
            let err = check_blocks("content", Role::User, &[named(bad)]).unwrap_err();
            assert!(err.to_string().contains("content[0].name"), "{bad}: {err}");
        }
        assert_eq!(
            document_name("Q3 report_final.v2.pdf"),
            "Q3 report final v2"
        );
        assert_eq!(document_name("contract.pdf"), "contract");
        assert_eq!(document_name("..."), "document");
        assert_eq!(document_name(&"x".repeat(300)).len(), 200);
    }
}
