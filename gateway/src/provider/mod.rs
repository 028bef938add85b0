//! Model providers: one object-safe trait, the real Amazon Bedrock client and the embedded mock.

mod bedrock;
mod bedrock_embed;
mod bedrock_errors;
mod breaker;
mod converse;
mod extras;
mod family;
mod guardrail_trace;
mod mock;
mod mock_agent;
mod mock_attachments;
mod mock_embed;
mod mock_text;
mod resilient;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::chat::{
    Grounding, InferenceParams, Message, Part, Reasoning, ResponseFormat, Tool, ToolChoice, Usage,
};
use crate::error::Error;

pub use bedrock::{BedrockProvider, BedrockSettings};
pub use bedrock_embed::embedding_dimensions;
pub use breaker::{BreakerSettings, Breakers, CircuitState};
pub use extras::{CachePoints, CacheTtl, Guardrail, GuardrailTrace, StreamProcessingMode};
pub use family::Family;
pub use mock::{MockProvider, MockSettings};
pub use resilient::{ResilientProvider, UpstreamSettings};

/// The final request to a model, after routing and history: what the cache key hashes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderRequest {
    pub model_id: String,
    pub system: Option<String>,
    pub messages: Vec<Message>,
    pub inference: InferenceParams,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub reasoning: Option<Reasoning>,
    pub response_format: Option<ResponseFormat>,
    /// Prompt-cache points the gateway places.
    pub cache_points: Option<CachePoints>,
    /// The guardrail the operator attached to this route and tenant.
    pub guardrail: Option<Guardrail>,
    /// A knowledge-base chat's passages, which the model answers from and cites.
    pub grounding: Option<Grounding>,
}

/// What a model stream yields. A stream is complete only once it has yielded both
/// [`ProviderEvent::Stop`] and [`ProviderEvent::Usage`] (Bedrock's `messageStop`, then `metadata`).
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderEvent {
    /// A piece of a content block.
    Part(Part),
    /// Content block `index` is complete (Bedrock's `contentBlockStop`).
    BlockStop(u32),
    Stop {
        stop_reason: String,
    },
    Usage(Usage),
    /// A guardrail's assessment, summarized (policy, kind and action; never the matched text).
    Guardrail(Vec<String>),
}

impl ProviderRequest {
    /// The cache points to send with this request, if its model takes them.
    pub fn cache_points(&self) -> Option<&CachePoints> {
        self.cache_points
            .as_ref()
            .filter(|p| p.apply_to(&self.model_id))
    }
}

impl ProviderEvent {
    /// Text for the first block: all a text-only answer is.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Part(Part::Text {
            index: 0,
            text: text.into(),
        })
    }
}

/// A model's answer as a stream; dropping it aborts the upstream call.
pub type ProviderStream = BoxStream<'static, Result<ProviderEvent, Error>>;

/// A whole (non-streamed) answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    pub stop_reason: String,
    pub usage: Usage,
}

/// One text to turn into a vector.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedRequest {
    pub model_id: String,
    pub text: String,
    /// The vector's length; `None` for the model's default.
    pub dimensions: Option<u32>,
}

/// A text's vector, and the tokens the model counted in the text.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    pub vector: Vec<f32>,
    pub input_tokens: u64,
}

/// A source of model completions.
#[async_trait]
pub trait ModelProvider: Send + Sync + 'static {
    /// Short name for logs and `/readyz`: `mock`, `bedrock`.
    fn name(&self) -> &'static str;

    /// Whether this provider serves `model_id` without it being configured.
    fn recognizes(&self, _model_id: &str) -> bool {
        false
    }

    /// Starts a streamed completion. Errors before the first event are returned here;
    /// later ones arrive in the stream.
    async fn converse_stream(&self, request: ProviderRequest) -> Result<ProviderStream, Error>;

    /// A whole completion. The default collects [`ModelProvider::converse_stream`].
    async fn converse(&self, request: ProviderRequest) -> Result<Completion, Error> {
        collect(self.converse_stream(request).await?).await
    }

    /// An embedding of one text. The default: this provider makes none.
    async fn embed(&self, request: EmbedRequest) -> Result<Embedding, Error> {
        Err(Error::InvalidRequest(format!(
            "model: {} makes no embeddings on provider {}",
            request.model_id,
            self.name()
        )))
    }
}

/// Drains a stream into a [`Completion`], failing if it ends before `Stop` and `Usage`.
pub async fn collect(mut stream: ProviderStream) -> Result<Completion, Error> {
    let mut text = String::new();
    let mut stop_reason = None;
    let mut usage = None;
    while let Some(event) = stream.next().await {
        match event? {
            ProviderEvent::Part(Part::Text { text: t, .. }) => text.push_str(&t),
            ProviderEvent::Part(_) | ProviderEvent::BlockStop(_) | ProviderEvent::Guardrail(_) => {}
            ProviderEvent::Stop { stop_reason: r } => stop_reason = Some(r),
            ProviderEvent::Usage(u) => usage = Some(u),
        }
    }
    match (stop_reason, usage) {
        (Some(stop_reason), Some(usage)) => Ok(Completion {
            text,
            stop_reason,
            usage,
        }),
        _ => Err(incomplete_stream()),
    }
}

/// The error for a stream that ended without `messageStop` and `metadata`.
pub fn incomplete_stream() -> Error {
    Error::UpstreamError {
        message: "the model stream ended before it was complete".into(),
        retryable: true,
    }
}
