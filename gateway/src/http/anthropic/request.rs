//! A Messages request read into the pipeline's [`ChatRequest`], in its stateless form.
//!
//! Content blocks map one to one onto the pipeline's ([`super::blocks`]); messages of one role
//! in a row merge, as Bedrock
//! takes user and assistant strictly in turn. `cache_control` anywhere asks for prompt caching,
//! which the gateway places where Claude's clients put it (after the tools, the system prompt
//! and the conversation so far); a request without it asks for none.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::chat::{
    Block, ChatRequest, InferenceParams, Message, Reasoning, Role, Tool, ToolChoice,
};
use crate::error::Error;
use crate::http::anthropic::blocks::{CacheMarks, block, string};
use crate::http::dialect::{bad, choose_none};

/// A Messages request; fields it does not name are looked at by name ([`check_other`]).
#[derive(Deserialize)]
pub struct MessagesRequest {
    model: Option<String>,
    messages: Vec<Said>,
    max_tokens: Option<u32>,
    system: Option<System>,
    #[serde(default)]
    pub stream: bool,
    temperature: Option<f32>,
    top_p: Option<f32>,
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    tools: Vec<Map<String, Value>>,
    tool_choice: Option<Map<String, Value>>,
    thinking: Option<Map<String, Value>>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

#[derive(Deserialize)]
struct Said {
    role: String,
    content: Content,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Blocks(Vec<Map<String, Value>>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum System {
    Text(String),
    Blocks(Vec<Map<String, Value>>),
}

/// Fields that change nothing Nagare does, accepted and ignored.
const IGNORED: &[&str] = &["metadata", "service_tier", "container"];

impl MessagesRequest {
    /// The request as the pipeline's.
    pub fn into_request(self) -> Result<ChatRequest, Error> {
        check_other(&self.other)?;
        let mut cache = CacheMarks::default();
        let system = self
            .system
            .map(|s| system_text(s, &mut cache))
            .transpose()?;
        let messages = conversation(self.messages, &mut cache)?;
        let tools = self
            .tools
            .into_iter()
            .enumerate()
            .map(|(i, t)| tool(i, t, &mut cache))
            .collect::<Result<Vec<_>, _>>()?;
        let (tools, tool_choice) = choose(tools, self.tool_choice, &messages)?;
        Ok(ChatRequest {
            messages: Some(messages),
            model: self.model,
            system,
            inference: InferenceParams {
                max_tokens: self.max_tokens,
                temperature: self.temperature,
                top_p: self.top_p,
                stop: self.stop_sequences,
            },
            tools,
            tool_choice,
            reasoning: self.thinking.map(thinking).transpose()?.flatten(),
            // Unmarked, the client asked for no prompt caching; marked, the operator's points.
            prompt_cache: (!cache.0).then_some(false),
            ..ChatRequest::default()
        })
    }
}

fn check_other(other: &Map<String, Value>) -> Result<(), Error> {
    for (name, value) in other {
        if IGNORED.contains(&name.as_str()) || value.is_null() {
            continue;
        }
        let why = match name.as_str() {
            "top_k" => "top_k is not available through Bedrock Converse",
            "mcp_servers" => "MCP servers are not available on this gateway",
            _ => "unknown parameter",
        };
        return Err(bad(name, why));
    }
    Ok(())
}

fn system_text(system: System, cache: &mut CacheMarks) -> Result<String, Error> {
    match system {
        System::Text(text) => Ok(text),
        System::Blocks(blocks) => {
            let mut texts = Vec::new();
            for (i, mut block) in blocks.into_iter().enumerate() {
                let field = format!("system[{i}]");
                cache.take(&field, &mut block)?;
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(string(&field, &block, "text")?),
                    _ => return Err(bad(&format!("{field}.type"), "must be text")),
                }
            }
            Ok(texts.join("\n\n"))
        }
    }
}

fn conversation(said: Vec<Said>, cache: &mut CacheMarks) -> Result<Vec<Message>, Error> {
    let mut messages: Vec<Message> = Vec::new();
    for (i, said) in said.into_iter().enumerate() {
        let field = format!("messages[{i}]");
        let role = match said.role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(bad(
                    &format!("{field}.role"),
                    &format!("must be user or assistant, not '{other}'"),
                ));
            }
        };
        let blocks = match said.content {
            Content::Text(text) => vec![Block::text(text)],
            Content::Blocks(blocks) => blocks
                .into_iter()
                .enumerate()
                .map(|(j, b)| block(&format!("{field}.content[{j}]"), b, cache))
                .collect::<Result<Vec<_>, _>>()?,
        };
        match messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => messages.push(Message {
                role,
                content: blocks,
            }),
        }
    }
    Ok(messages)
}

/// A client tool: `{name, description, input_schema}`. Anthropic's server tools (web search,
/// code execution, ...) run at Anthropic, not on Bedrock.
fn tool(i: usize, mut t: Map<String, Value>, cache: &mut CacheMarks) -> Result<Tool, Error> {
    let field = format!("tools[{i}]");
    cache.take(&field, &mut t)?;
    if let Some(kind) = t.get("type").and_then(Value::as_str)
        && kind != "custom"
    {
        return Err(bad(
            &format!("{field}.type"),
            &format!("'{kind}' is a server tool, which Bedrock does not run"),
        ));
    }
    Ok(Tool {
        name: string(&field, &t, "name")?,
        description: t
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        input_schema: t
            .get("input_schema")
            .cloned()
            .ok_or_else(|| bad(&format!("{field}.input_schema"), "required"))?,
        strict: t.get("strict").and_then(Value::as_bool),
    })
}

/// The tools and the choice among them (`none`: [`choose_none`]).
fn choose(
    tools: Vec<Tool>,
    choice: Option<Map<String, Value>>,
    messages: &[Message],
) -> Result<(Vec<Tool>, Option<ToolChoice>), Error> {
    let Some(choice) = choice else {
        return Ok((tools, None));
    };
    if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
        return Err(bad(
            "tool_choice.disable_parallel_tool_use",
            "cannot be honoured: the model may call several tools at once",
        ));
    }
    let choice = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => ToolChoice::Auto,
        Some("any") => ToolChoice::Any,
        Some("tool") => ToolChoice::Tool {
            name: string("tool_choice", &choice, "name")?,
        },
        Some("none") => return Ok(choose_none(tools, messages)),
        _ => return Err(bad("tool_choice.type", "must be auto, any, tool or none")),
    };
    Ok((tools, Some(choice)))
}

/// `thinking`: `enabled` with a budget, `adaptive` (a medium effort), or `disabled`.
fn thinking(t: Map<String, Value>) -> Result<Option<Reasoning>, Error> {
    match t.get("type").and_then(Value::as_str) {
        Some("disabled") => Ok(None),
        Some("enabled") => {
            let budget = t
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .and_then(|b| u32::try_from(b).ok())
                .ok_or_else(|| bad("thinking.budget_tokens", "required"))?;
            Ok(Some(Reasoning {
                budget_tokens: Some(budget),
                effort: None,
            }))
        }
        Some("adaptive") => Ok(Some(Reasoning {
            budget_tokens: None,
            effort: Some(crate::chat::Effort::Medium),
        })),
        _ => Err(bad(
            "thinking.type",
            "must be enabled, adaptive or disabled",
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::chat::{Source, ToolStatus};

    fn read(body: Value) -> Result<ChatRequest, Error> {
        serde_json::from_value::<MessagesRequest>(body)
            .unwrap()
            .into_request()
    }

    #[test]
    fn a_tool_loop_with_thinking_reads_block_for_block() {
        let r = read(json!({
            "model": "m", "max_tokens": 2048,
            "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"c": "P"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "21"}], "is_error": true}]},
                {"role": "user", "content": "and?"},
            ],
            "tools": [{"name": "w", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "auto"},
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "metadata": {"user_id": "u1"},
        }))
        .unwrap();
        assert_eq!(r.system.as_deref(), Some("be brief"));
        assert_eq!(r.prompt_cache, None, "marked: the operator's points");
        let m = r.messages.unwrap();
        assert_eq!(m.len(), 3);
        assert!(matches!(
            &m[2].content[..],
            [
                Block::ToolResult {
                    status: Some(ToolStatus::Error),
                    ..
                },
                Block::Text { .. }
            ]
        ));
        assert_eq!(r.reasoning.unwrap().budget_tokens, Some(1024));
        let r =
            read(json!({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})).unwrap();
        assert_eq!(r.prompt_cache, Some(false), "unmarked: no prompt caching");
    }

    #[test]
    fn what_cannot_be_honoured_is_named() {
        let user = json!([{"role": "user", "content": "x"}]);
        let cases = [
            (json!({"messages": user, "top_k": 5}), "top_k"),
            (
                json!({"messages": user, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"messages": user, "tool_choice": {"type": "auto", "disable_parallel_tool_use": true}}),
                "disable_parallel_tool_use",
            ),
            (
                json!({"messages": user, "thinking": {"type": "on"}}),
                "thinking.type",
            ),
            (
                json!({"messages": [{"role": "system", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x"}}]}]}),
                "messages[0].content[0].source.type",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}]}]}),
                "media_type",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image"}]}]}]}),
                "content[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {"type": "forever"}}]}]}),
                "cache_control.type",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "colour": "red"}]}]}),
                "content[0].colour",
            ),
        ];
        for (body, named) in cases {
            let e = read(body.clone()).unwrap_err().to_string();
            assert!(e.contains(named), "{body}: {e}");
        }
    }

    #[test]
    fn documents_take_base64_text_and_uploads() {
        let r = read(json!({"messages": [{"role": "user", "content": [
            {"type": "document", "title": "notes.txt", "source": {"type": "text", "media_type": "text/plain", "data": "hello"}},
            {"type": "document", "source": {"type": "file", "file_id": "upl_1"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "text", "text": "compare"}]}]}))
        .unwrap();
        let blocks = &r.messages.unwrap()[0].content;
        assert!(
            matches!(&blocks[0], Block::Document { name: Some(n), source: Source::Inline(_), .. } if n.starts_with("notes"))
        );
        assert!(matches!(
            &blocks[1],
            Block::Document {
                source: Source::Upload(_),
                ..
            }
        ));
        assert!(matches!(&blocks[2], Block::Image { .. }));
    }
}
