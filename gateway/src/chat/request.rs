//! The chat request every transport accepts, and its validation.

use serde::{Deserialize, Serialize};

use crate::chat::parse_json;
use crate::error::Error;

/// A chat request as it arrives on the wire (REST body, WebSocket `chat` frame, gRPC message).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    pub message: String,
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
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_tokens: 8192,
            max_stop_sequences: 8,
            max_stop_chars: 256,
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
        if self.message.trim().is_empty() {
            return Err(invalid("message", "must be non-empty text"));
        }
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
        Ok(self)
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

fn check_id(field: &str, id: &str) -> Result<(), Error> {
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

fn invalid(field: &str, why: &str) -> Error {
    Error::InvalidRequest(format!("{field}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ];
        for (body, field) in cases {
            let msg = message_of(body);
            assert!(msg.contains(field), "{body}: {msg:?} should name {field}");
        }
    }

    #[test]
    fn malformed_json_is_invalid_request() {
        for body in ["", "{", "[1,2]", "null", "{\"message\":\"hi\"", "\u{0}"] {
            let msg = message_of(body);
            assert!(msg.contains("JSON") || msg.contains("invalid"), "{msg}");
        }
    }
}
