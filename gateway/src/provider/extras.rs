//! What the gateway adds to a model request on its own, never the client: prompt-cache points
//! and a guardrail. Neither is part of the answer's cache key for the response cache except the
//! guardrail, which can change the answer.

use serde::{Deserialize, Serialize};

/// How long Bedrock keeps a cached prefix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheTtl {
    #[default]
    #[serde(rename = "5m")]
    FiveMinutes,
    #[serde(rename = "1h")]
    OneHour,
}

/// Where Bedrock cache points go in one request: after the system prompt and after the tools
/// when there are any, and after message `after_message` (the last one recalled from history);
/// only when the model called is one of `models` (parts of model ids), since a fallback model may
/// not support prompt caching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePoints {
    pub ttl: CacheTtl,
    pub after_message: Option<usize>,
    pub models: std::sync::Arc<[String]>,
}

impl CachePoints {
    pub fn apply_to(&self, model_id: &str) -> bool {
        self.models.iter().any(|m| model_id.contains(m.as_str()))
    }
}

/// A Bedrock guardrail applied to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guardrail {
    pub identifier: String,
    pub version: String,
    /// `enabled`, `disabled` or `enabled_full`: what the trace (and so the log) holds.
    #[serde(default)]
    pub trace: GuardrailTrace,
    /// `sync` checks each chunk before it is sent; `async` sends first and checks alongside.
    #[serde(default)]
    pub stream_processing_mode: StreamProcessingMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardrailTrace {
    #[default]
    Enabled,
    Disabled,
    EnabledFull,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamProcessingMode {
    #[default]
    Sync,
    Async,
}
