//! The chat request every transport accepts, and its validation.

use serde::{Deserialize, Serialize};

use crate::chat::attachment::Source;
use crate::chat::content::Block;
use crate::chat::options::{Reasoning, ResponseFormat, Tool, ToolChoice, check_options};
use crate::chat::sources::KnowledgeAsk;
use crate::chat::turns::{check_attachments, check_blocks, check_conversation};
use crate::chat::{Message, Role, parse_json};
use crate::error::Error;

/// A chat request as it arrives on the wire (REST body, WebSocket `chat` frame, gRPC message).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// The new user message as text: the shorthand for `content: [{"type":"text",…}]`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The new user message as blocks: text and tool results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Vec<Block>>,
    /// The stateless form: the whole conversation, ending with the new user message. Nothing is
    /// remembered; not with `conversation_id` (but on the dialect routes, when the operator has
    /// them recorded: [`crate::pipeline::MemorySettings::record_dialects`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
    #[serde(default)]
    pub conversation_id: Option<String>,
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub inference: InferenceParams,
    #[serde(default)]
    pub cache: CacheMode,
    /// `global` shares the cached answer with every tenant (needs the `cache:global` scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_scope: Option<CacheScope>,
    /// What kind of work this is (`code`, `summarize`, ...): a hint for model routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Reasoning>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// `false` turns the gateway's automatic prompt-cache points off for this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_cache: Option<bool>,
    /// Answer from this knowledge base, citing its passages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knowledge_base: Option<KnowledgeAsk>,
}

/// Sampling parameters, passed to the model as given; `None` means the model's default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceParams {
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub stop: Option<Vec<String>>,
}

/// How a request may use the response cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    #[default]
    Default,
    Bypass,
    Refresh,
}

/// Whose cache a request reads and writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    /// The caller's tenant (or `sub`): never shared across tenants.
    #[default]
    Tenant,
    /// Shared FAQ answers, for every tenant.
    Global,
}

/// Bounds on what a request may ask for; from `[limits]` in the config.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    pub max_tokens: u32,
    pub max_stop_sequences: usize,
    pub max_stop_chars: usize,
    pub max_tools: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_tokens: 8192,
            max_stop_sequences: 8,
            max_stop_chars: 256,
            max_tools: 64,
        }
    }
}

const MAX_ID_CHARS: usize = 128;
const MAX_MODEL_CHARS: usize = 256;

/// Parses a JSON body, naming the offending field in the error.
pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, Error> {
    parse_json(body)
}

impl ChatRequest {
    /// Checks every field against the limits and returns the request with a `request_id`
    /// (the client's, or `fallback_id`).
    pub fn validate(
        mut self,
        limits: &RequestLimits,
        fallback_id: impl FnOnce() -> String,
    ) -> Result<Self, Error> {
        self.check_turns()?;
        match &self.request_id {
            Some(id) => check_id("request_id", id)?,
            None => self.request_id = Some(fallback_id()),
        }
        if let Some(id) = &self.conversation_id {
            check_id("conversation_id", id)?;
        }
        if let Some(model) = &self.model
            && (model.trim().is_empty() || model.len() > MAX_MODEL_CHARS)
        {
            return Err(invalid(
                "model",
                &format!("must be 1 to {MAX_MODEL_CHARS} characters"),
            ));
        }
        if let Some(task) = &self.task {
            check_id("task", task)?;
        }
        self.inference.validate(limits)?;
        if let Some(ask) = &self.knowledge_base {
            ask.check()?;
        }
        check_options(
            &self.tools,
            self.tool_choice.as_ref(),
            self.reasoning.as_ref(),
            self.response_format.as_ref(),
            limits.max_tools,
        )?;
        Ok(self)
    }

    /// Exactly one of `message`, `content` and `messages`, each well formed.
    fn check_turns(&self) -> Result<(), Error> {
        let given = [
            !self.message.is_empty(),
            self.content.is_some(),
            self.messages.is_some(),
        ];
        match given.iter().filter(|g| **g).count() {
            0 => return Err(invalid("message", "must be non-empty text")),
            1 => {}
            _ => {
                return Err(invalid(
                    "message",
                    "send one of message, content and messages",
                ));
            }
        }
        if !self.message.is_empty() && self.message.trim().is_empty() {
            return Err(invalid("message", "must be non-empty text"));
        }
        if let Some(content) = &self.content {
            check_blocks("content", Role::User, content)?;
            check_attachments([("content".to_string(), content.as_slice())])?;
        }
        match &self.messages {
            Some(messages) => check_conversation(messages),
            None => Ok(()),
        }
    }

    /// Refuses `conversation_id` beside `messages`, unless the route records such chats.
    pub fn check_transcript(&self, recorded: bool) -> Result<(), Error> {
        if self.messages.is_some() && self.conversation_id.is_some() && !recorded {
            return Err(invalid(
                "messages",
                "not with conversation_id: the conversation is either yours or the gateway's",
            ));
        }
        Ok(())
    }

    /// Refuses attachment bytes carried in the request, for transports that keep their frames
    /// or records small (`transport` names it): those take attachments by `upload_id` only.
    pub fn check_no_inline_bytes(&self, transport: &str) -> Result<(), Error> {
        let sent = self.content.iter().map(|c| ("content".to_string(), c));
        let messages = self.messages.iter().flatten().enumerate();
        let sent =
            sent.chain(messages.map(|(i, m)| (format!("messages[{i}].content"), &m.content)));
        for (field, blocks) in sent {
            for (i, block) in blocks.iter().enumerate() {
                if let Block::Image { source, .. } | Block::Document { source, .. } = block
                    && matches!(source, Source::Inline(_))
                {
                    return Err(invalid(
                        &format!("{field}[{i}].source"),
                        &format!(
                            "{transport} takes attachments by upload_id: POST /v1/uploads first"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The new user message as blocks, whichever form it came in.
    pub fn new_turn(&self) -> Vec<Block> {
        if let Some(content) = &self.content {
            content.clone()
        } else if let Some(last) = self.messages.as_ref().and_then(|m| m.last()) {
            last.content.clone()
        } else {
            vec![Block::text(self.message.clone())]
        }
    }

    /// The earlier messages of the stateless form (empty otherwise).
    pub fn sent_history(&self) -> &[Message] {
        match &self.messages {
            Some(m) => &m[..m.len().saturating_sub(1)],
            None => &[],
        }
    }

    /// The request id; always set after [`ChatRequest::validate`].
    pub fn id(&self) -> &str {
        self.request_id.as_deref().unwrap_or_default()
    }
}

impl InferenceParams {
    fn validate(&self, limits: &RequestLimits) -> Result<(), Error> {
        if let Some(n) = self.max_tokens
            && !(1..=limits.max_tokens).contains(&n)
        {
            return Err(invalid(
                "inference.max_tokens",
                &format!("must be between 1 and {}", limits.max_tokens),
            ));
        }
        for (name, value) in [
            ("inference.temperature", self.temperature),
            ("inference.top_p", self.top_p),
        ] {
            if let Some(v) = value
                && !(0.0..=1.0).contains(&v)
            {
                return Err(invalid(name, "must be between 0 and 1"));
            }
        }
        if let Some(stop) = &self.stop {
            if stop.len() > limits.max_stop_sequences {
                return Err(invalid(
                    "inference.stop",
                    &format!("at most {} sequences", limits.max_stop_sequences),
                ));
            }
            if stop
                .iter()
                .any(|s| s.is_empty() || s.chars().count() > limits.max_stop_chars)
            {
                return Err(invalid(
                    "inference.stop",
                    &format!(
                        "each sequence must be 1 to {} characters",
                        limits.max_stop_chars
                    ),
                ));
            }
        }
        Ok(())
    }
}

pub(super) fn check_id(field: &str, id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            &format!("must be 1 to {MAX_ID_CHARS} characters of A-Z a-z 0-9 - _ . :"),
        ))
    }
}

pub(super) fn invalid(field: &str, why: &str) -> Error {
    Error::InvalidRequest(format!("{field}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::joined_text;

    fn check(body: &str) -> Result<ChatRequest, Error> {
        parse_chat_request(body.as_bytes())?.validate(&RequestLimits::default(), || "gen".into())
    }

    fn message_of(body: &str) -> String {
        match check(body) {
            Err(Error::InvalidRequest(m)) => m,
            other => panic!("expected invalid_request for {body}, got {other:?}"),
        }
    }

    #[test]
    fn minimal_request_gets_a_generated_id() {
        let req = check(r#"{"message":"hello"}"#).unwrap();
        assert_eq!(req.message, "hello");
        assert_eq!(req.id(), "gen");
        assert_eq!(req.cache, CacheMode::Default);
    }

    #[test]
    fn full_request_is_accepted() {
        let req = check(
            r#"{"message":"hi","request_id":"r-1","conversation_id":"c1","model":"fast",
                "system":"be brief","cache":"bypass",
                "inference":{"max_tokens":64,"temperature":0.2,"top_p":0.9,"stop":["END"]}}"#,
        )
        .unwrap();
        assert_eq!(req.id(), "r-1");
        assert_eq!(req.inference.max_tokens, Some(64));
        assert_eq!(req.cache, CacheMode::Bypass);
    }

    #[test]
    fn bad_inputs_name_the_field() {
        let cases = [
            (r#"{}"#, "message"),
            (r#"{"message":""}"#, "message"),
            (r#"{"message":" \n\t "}"#, "message"),
            (r#"{"message":42}"#, "message"),
            (r#"{"message":"hi","extra":1}"#, "extra"),
            (
                r#"{"message":"hi","inference":{"max_tokens":0}}"#,
                "max_tokens",
            ),
            (
                r#"{"message":"hi","inference":{"max_tokens":-1}}"#,
                "max_tokens",
            ),
            (
                r#"{"message":"hi","inference":{"max_tokens":999999}}"#,
                "max_tokens",
            ),
            (
                r#"{"message":"hi","inference":{"temperature":1.5}}"#,
                "temperature",
            ),
            (r#"{"message":"hi","inference":{"top_p":-0.1}}"#, "top_p"),
            (r#"{"message":"hi","inference":{"stop":[""]}}"#, "stop"),
            (
                r#"{"message":"hi","inference":{"stop":["a","b","c","d","e","f","g","h","i"]}}"#,
                "stop",
            ),
            (r#"{"message":"hi","inference":{"seed":1}}"#, "seed"),
            (r#"{"message":"hi","request_id":"has space"}"#, "request_id"),
            (
                r#"{"message":"hi","conversation_id":""}"#,
                "conversation_id",
            ),
            (r#"{"message":"hi","model":""}"#, "model"),
            (r#"{"message":"hi","cache":"sometimes"}"#, "cache"),
            (r#"{"content":[]}"#, "content"),
            (
                r#"{"content":[{"type":"text","text":" "}]}"#,
                "content[0].text",
            ),
            (r#"{"content":[{"type":"image"}]}"#, "content[0]"),
            (
                r#"{"content":[{"type":"text","text":"x","extra":1}]}"#,
                "extra",
            ),
            (
                r#"{"content":[{"type":"tool_use","id":"t","name":"n","input":{}}]}"#,
                "content[0]",
            ),
            (
                r#"{"message":"hi","content":[{"type":"text","text":"x"}]}"#,
                "one of",
            ),
            (r#"{"messages":[]}"#, "messages"),
            (
                r#"{"messages":[{"role":"assistant","content":"x"}]}"#,
                "messages",
            ),
            (
                r#"{"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}"#,
                "messages[1].role",
            ),
            (
                r#"{"messages":[{"role":"user","content":"a"},
                  {"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"n","input":{}}]},
                  {"role":"user","content":[{"type":"tool_result","tool_use_id":"t9","content":"x"}]}]}"#,
                "not an open tool call",
            ),
            (
                r#"{"messages":[{"role":"user","content":"a"},
                  {"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"n","input":{}}]},
                  {"role":"user","content":"no results"}]}"#,
                "t1",
            ),
            (
                r#"{"message":"hi","tools":[{"name":"a b","input_schema":{}}]}"#,
                "tools[0].name",
            ),
            (
                r#"{"message":"hi","tool_choice":{"type":"tool","name":"x"},"tools":[{"name":"y","input_schema":{}}]}"#,
                "tool_choice",
            ),
            (
                r#"{"message":"hi","response_format":{"type":"json_schema","schema":3}}"#,
                "schema",
            ),
            (
                r#"{"message":"hi","reasoning":{"budget_tokens":5}}"#,
                "reasoning",
            ),
        ];
        for (body, field) in cases {
            let msg = message_of(body);
            assert!(msg.contains(field), "{body}: {msg:?} should name {field}");
        }
    }

    #[test]
    fn the_new_turn_comes_from_whichever_form_was_sent() {
        let req = check(
            r#"{"messages":[{"role":"user","content":"a"},
              {"role":"assistant","content":[{"type":"reasoning","text":"r","signature":"s"},
                {"type":"tool_use","id":"t1","name":"n","input":{"q":1}}]},
              {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]}]}"#,
        )
        .unwrap();
        assert_eq!(req.sent_history().len(), 2);
        assert!(matches!(&req.new_turn()[..], [Block::ToolResult { .. }]));
        let req = check(r#"{"content":[{"type":"text","text":"hi"},{"type":"text","text":"!"}]}"#)
            .unwrap();
        assert_eq!(joined_text(&req.new_turn()), "hi!");
        assert_eq!(
            check(r#"{"message":"x"}"#).unwrap().new_turn(),
            [Block::text("x")]
        );
    }

    #[test]
    fn a_transcript_names_a_conversation_only_where_it_is_recorded() {
        let req = check(r#"{"messages":[{"role":"user","content":"a"}],"conversation_id":"c1"}"#)
            .unwrap();
        let refused = req.check_transcript(false).unwrap_err().to_string();
        assert!(refused.contains("conversation_id"), "{refused}");
        assert!(req.check_transcript(true).is_ok());
    }

    #[test]
    fn malformed_json_is_invalid_request() {
        for body in ["", "{", "[1,2]", "null", "{\"message\":\"hi\"", "\u{0}"] {
            let msg = message_of(body);
            assert!(msg.contains("JSON") || msg.contains("invalid"), "{msg}");
        }
    }
}
