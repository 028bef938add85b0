//! The one streaming pipeline every transport is a sink of: admission, limits, routing, history,
//! the response cache and the model call, yielding one stream of [`ChatEvent`]s per chat.
//!
//! [`ChatEvent`]: crate::chat::ChatEvent

mod attachments;
mod cache;
mod chat_pipeline;
mod contract;
mod embeddings;
mod estimate;
mod event_stream;
mod flight;
mod in_progress;
mod kept;
mod knowledge;
mod memory;
mod models;
mod observe;
mod upstream;

pub use cache::{ChatCache, GLOBAL_SCOPE};
pub use chat_pipeline::{Admitted, ChatPipeline, PipelineOptions};
pub use contract::{GuardrailRule, PromptCacheSettings, check_guardrails};
pub use embeddings::{EmbedAsk, Embedded, EmbeddingSettings, vector_base64};
pub use estimate::{estimate_request_tokens, estimate_tokens};
pub use flight::Upstream;
pub use knowledge::{Grounder, RetrievalPolicy};
pub use memory::{Memory, MemorySettings};
pub use models::{ModelCatalog, RoutingSettings, Why};
pub use observe::ChatStream;

/// Test fixtures shared by the unit tests of the pipeline, the HTTP router and WebSocket sessions.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use super::{ChatPipeline, ModelCatalog, PipelineOptions};
    use crate::provider::{MockProvider, MockSettings};

    pub use crate::chat::test_support::alice;

    /// A pipeline on the unpaced mock, defaulting to model `mock`.
    pub fn mock_pipeline() -> ChatPipeline {
        let models = ModelCatalog {
            default: "mock".into(),
            ..Default::default()
        };
        let provider = Arc::new(MockProvider::new(MockSettings::unpaced()));
        ChatPipeline::new(provider, models, PipelineOptions::default())
    }
}
