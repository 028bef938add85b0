//! A Chat Completions request read into the pipeline's [`ChatRequest`], in its stateless form:
//! its messages ([`super::messages`]), tools and the choice among them, the response format,
//! reasoning and sampling. Parameters Nagare cannot honour are refused by name; those that
//! change nothing are accepted.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::chat::{
    ChatRequest, Effort, InferenceParams, Message, Reasoning, ResponseFormat, Tool, ToolChoice,
};
use crate::error::Error;
use crate::http::dialect::{bad, choose_none};
use crate::http::openai::messages::{Said, conversation};

/// A Chat Completions request; fields it does not name are looked at by name ([`check_other`]).
#[derive(Deserialize)]
pub struct Completion {
    model: Option<String>,
    messages: Vec<Said>,
    #[serde(default)]
    pub stream: bool,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    stop: Option<OneOrMany>,
    #[serde(default)]
    tools: Vec<FunctionTool>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    response_format: Option<Value>,
    reasoning_effort: Option<String>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct FunctionTool {
    #[serde(rename = "type")]
    kind: String,
    function: Option<Function>,
}

#[derive(Deserialize)]
struct Function {
    name: String,
    description: Option<String>,
    parameters: Option<Value>,
    strict: Option<bool>,
}

/// Fields that change nothing Nagare does, accepted and ignored.
const IGNORED: &[&str] = &[
    "user",
    "metadata",
    "store",
    "seed",
    "service_tier",
    "presence_penalty",
    "frequency_penalty",
    "prompt_cache_key",
    "safety_identifier",
];

/// What a request asks for beyond the pipeline's request: usage in the stream.
pub struct Asked {
    pub include_usage: bool,
}

impl Completion {
    /// The request as the pipeline's.
    pub fn into_request(self) -> Result<(ChatRequest, Asked), Error> {
        check_other(&self.other)?;
        let (system, messages) = conversation(self.messages)?;
        let tools = self
            .tools
            .into_iter()
            .enumerate()
            .map(|(i, t)| t.into_tool(i))
            .collect::<Result<Vec<_>, _>>()?;
        if self.parallel_tool_calls == Some(false) && !tools.is_empty() {
            return Err(bad(
                "parallel_tool_calls",
                "cannot be turned off: the model may call several tools at once",
            ));
        }
        let (tools, tool_choice) = choose(tools, self.tool_choice.as_ref(), &messages)?;
        let stop = self.stop.map(|s| match s {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(s) => s,
        });
        let request = ChatRequest {
            messages: Some(messages),
            model: self.model,
            system: (!system.is_empty()).then(|| system.join("\n\n")),
            inference: InferenceParams {
                max_tokens: self.max_completion_tokens.or(self.max_tokens),
                temperature: self.temperature,
                top_p: self.top_p,
                stop,
            },
            tools,
            tool_choice,
            reasoning: self
                .reasoning_effort
                .as_deref()
                .map(effort)
                .transpose()?
                .flatten(),
            response_format: self
                .response_format
                .map(response_format)
                .transpose()?
                .flatten(),
            ..ChatRequest::default()
        };
        let asked = Asked {
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
        };
        Ok((request, asked))
    }
}

/// Refuses what Nagare cannot honour, by name; accepts what changes nothing.
fn check_other(other: &Map<String, Value>) -> Result<(), Error> {
    for (name, value) in other {
        if IGNORED.contains(&name.as_str()) || value.is_null() {
            continue;
        }
        let why = match name.as_str() {
            "n" if value.as_u64() == Some(1) => continue,
            "n" => "only one choice is generated (n = 1)",
            "logprobs" if value == &Value::Bool(false) => continue,
            "logprobs" | "top_logprobs" => "log probabilities are not available",
            "logit_bias" => "token biases are not available",
            "functions" | "function_call" => "deprecated: use tools and tool_choice",
            "modalities" | "audio" => "only text is generated",
            "prediction" | "web_search_options" | "verbosity" => "not available on this gateway",
            _ => "unknown parameter",
        };
        return Err(bad(name, why));
    }
    Ok(())
}

impl FunctionTool {
    fn into_tool(self, i: usize) -> Result<Tool, Error> {
        let field = format!("tools[{i}]");
        if self.kind != "function" {
            return Err(bad(
                &format!("{field}.type"),
                "only function tools are supported",
            ));
        }
        let f = self
            .function
            .ok_or_else(|| bad(&format!("{field}.function"), "required"))?;
        Ok(Tool {
            name: f.name,
            description: f.description,
            input_schema: f
                .parameters
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            strict: f.strict,
        })
    }
}

/// The tools and the choice among them (`none`: [`choose_none`]).
fn choose(
    tools: Vec<Tool>,
    choice: Option<&Value>,
    messages: &[Message],
) -> Result<(Vec<Tool>, Option<ToolChoice>), Error> {
    let refuse = || {
        bad(
            "tool_choice",
            "must be none, auto, required or {\"type\":\"function\",\"function\":{\"name\":…}}",
        )
    };
    let choice = match choice {
        None => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(ToolChoice::Auto),
            "required" => Some(ToolChoice::Any),
            "none" => return Ok(choose_none(tools, messages)),
            _ => return Err(refuse()),
        },
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(refuse)?;
            Some(ToolChoice::Tool { name: name.into() })
        }
        Some(_) => return Err(refuse()),
    };
    if choice.is_some() && tools.is_empty() {
        return Err(bad("tool_choice", "needs tools"));
    }
    Ok((tools, choice))
}

/// `reasoning_effort`: `none` asks for no reasoning.
fn effort(level: &str) -> Result<Option<Reasoning>, Error> {
    let effort = match level {
        "none" => return Ok(None),
        "minimal" | "low" => Effort::Low,
        "medium" => Effort::Medium,
        "high" | "xhigh" => Effort::High,
        _ => {
            return Err(bad(
                "reasoning_effort",
                "must be none, minimal, low, medium or high",
            ));
        }
    };
    Ok(Some(Reasoning {
        budget_tokens: None,
        effort: Some(effort),
    }))
}

/// `response_format`: `text` asks for nothing, `json_object` for any JSON object.
fn response_format(format: Value) -> Result<Option<ResponseFormat>, Error> {
    let refuse = |why: &str| bad("response_format", why);
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(ResponseFormat::JsonSchema {
            name: "answer".into(),
            description: None,
            schema: json!({"type": "object"}),
        })),
        Some("json_schema") => {
            let spec = format
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or_else(|| refuse("json_schema must be an object"))?;
            let schema = spec
                .get("schema")
                .cloned()
                .ok_or_else(|| bad("response_format.json_schema.schema", "required"))?;
            Ok(Some(ResponseFormat::JsonSchema {
                name: spec
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("answer")
                    .to_owned(),
                description: spec
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                schema,
            }))
        }
        _ => Err(refuse("type must be text, json_object or json_schema")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Block, Source};

    fn read(body: Value) -> Result<ChatRequest, Error> {
        let completion: Completion = serde_json::from_value(body).unwrap();
        completion.into_request().map(|(r, _)| r)
    }

    fn refused(body: Value) -> String {
        match read(body) {
            Err(e) => e.to_string(),
            Ok(r) => panic!("accepted: {r:?}"),
        }
    }

    #[test]
    fn a_tool_loop_becomes_alternating_blocks_with_results_first() {
        let request = read(json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "weather in Paris and Rome?"},
                {"role": "assistant", "content": null,
                 "thinking_blocks": [{"type": "thinking", "thinking": "hm", "signature": "s"}],
                 "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "21 C"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "25 C"}]},
                {"role": "user", "content": "thanks"},
                {"role": "developer", "content": "in French"},
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
            "tool_choice": "auto",
            "reasoning_effort": "low",
        }))
        .unwrap();
        assert_eq!(request.system.as_deref(), Some("be brief\n\nin French"));
        let messages = request.messages.unwrap();
        assert_eq!(messages.len(), 3);
        assert!(matches!(
            &messages[1].content[..],
            [
                Block::Reasoning { .. },
                Block::ToolUse { .. },
                Block::ToolUse { .. }
            ]
        ));
        assert!(matches!(
            &messages[2].content[..],
            [
                Block::ToolResult { .. },
                Block::ToolResult { .. },
                Block::Text { .. }
            ]
        ));
        assert_eq!(request.tool_choice, Some(ToolChoice::Auto));
        assert_eq!(request.reasoning.unwrap().effort, Some(Effort::Low));
    }

    #[test]
    fn tool_choice_none_leaves_the_tools_out_unless_the_conversation_used_them() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let r = read(json!({"messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": "none"})).unwrap();
        assert!(r.tools.is_empty());
        let r = read(json!({"messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": "required"})).unwrap();
        assert_eq!(r.tool_choice, Some(ToolChoice::Any));
        assert_eq!(r.tools[0].input_schema["type"], "object");
    }

    #[test]
    fn what_cannot_be_honoured_is_named() {
        let user = json!([{"role": "user", "content": "x"}]);
        let cases = [
            (json!({"messages": user, "n": 2}), "n:"),
            (json!({"messages": user, "logprobs": true}), "logprobs"),
            (json!({"messages": user, "functions": []}), "functions"),
            (
                json!({"messages": user, "reasoning_effort": "max"}),
                "reasoning_effort",
            ),
            (
                json!({"messages": user, "response_format": {"type": "yaml"}}),
                "response_format",
            ),
            (
                json!({"messages": user, "tool_choice": "required"}),
                "tool_choice",
            ),
            (
                json!({"messages": user, "tools": [{"type": "custom", "custom": {}}]}),
                "tools[0].type",
            ),
            (
                json!({"messages": user, "tools": [{"type": "function", "function": {"name": "f"}}], "parallel_tool_calls": false}),
                "parallel_tool_calls",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}),
                "messages[0].content[0].image_url.url",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "assistant", "content": "a", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{"}}]}]}),
                "arguments",
            ),
            (
                json!({"messages": [{"role": "tool", "content": "r"}]}),
                "tool_call_id",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x", "audio": {}}]}),
                "messages[0].audio",
            ),
        ];
        for (body, named) in cases {
            let e = refused(body.clone());
            assert!(e.contains(named), "{body}: {e}");
        }
    }

    #[test]
    fn json_formats_become_schemas_and_images_attachments() {
        let r = read(json!({
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is it?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"upload_id": "upl_1"}},
                {"type": "file", "file": {"file_id": "upl_2"}}]}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": true}},
        }))
        .unwrap();
        let blocks = &r.messages.as_ref().unwrap()[0].content;
        assert!(matches!(
            &blocks[1],
            Block::Image {
                source: Source::Inline(_),
                ..
            }
        ));
        assert!(
            matches!(&blocks[2], Block::Image { source: Source::Upload(id), .. } if id == "upl_1")
        );
        assert!(matches!(
            &blocks[3],
            Block::Document {
                source: Source::Upload(_),
                ..
            }
        ));
        assert!(
            matches!(r.response_format, Some(ResponseFormat::JsonSchema { ref name, .. }) if name == "w")
        );
        let r = read(json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}})).unwrap();
        assert!(r.response_format.is_some());
    }
}
