//! The chat domain: the request, its validation, the events, and the one streaming pipeline
//! every transport is a sink of.

mod cache;
mod event;
mod event_stream;
mod flight;
mod memory;
mod models;
mod observe;
mod pipeline;
mod reply;
mod request;
mod upstream;

pub use cache::{ChatCache, GLOBAL_SCOPE, Route};
pub use event::{ChatEvent, Usage};
pub use flight::Upstream;
pub use memory::{Memory, MemorySettings, estimate_tokens};
pub use models::{ModelCatalog, RoutingSettings, Why};
pub use observe::ChatStream;
pub use pipeline::{ChatPipeline, PipelineOptions};
pub use reply::{ChatReply, ReplyMessage};
pub use request::{
    CacheMode, CacheScope, ChatRequest, InferenceParams, RequestLimits, parse_chat_request,
    parse_json,
};

/// Test fixtures shared by the unit tests of the pipeline, the HTTP router and WebSocket sessions.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use nagare_authorizer::Principal;

    use super::{ChatPipeline, ModelCatalog, PipelineOptions};
    use crate::provider::{MockProvider, MockSettings};

    /// A pipeline on the unpaced mock, defaulting to model `mock`.
    pub fn mock_pipeline() -> ChatPipeline {
        let models = ModelCatalog {
            default: "mock".into(),
            ..Default::default()
        };
        let provider = Arc::new(MockProvider::new(MockSettings::unpaced()));
        ChatPipeline::new(provider, models, PipelineOptions::default())
    }

    /// A caller with the chat scope.
    pub fn alice() -> Principal {
        Principal {
            sub: "alice".into(),
            tenant: "alice".into(),
            scopes: vec!["chat".into()],
            groups: vec![],
            expires_at: u64::MAX,
        }
    }
}
