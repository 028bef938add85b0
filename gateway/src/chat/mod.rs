//! The chat domain: the request, its validation, the events, and the one streaming pipeline
//! every transport is a sink of.

mod event;
mod models;
mod pipeline;
mod reply;
mod request;

pub use event::{ChatEvent, Usage};
pub use models::ModelCatalog;
pub use pipeline::{ChatPipeline, ChatStream, PipelineOptions};
pub use reply::ChatReply;
pub use request::{
    CacheMode, ChatRequest, InferenceParams, RequestLimits, parse_chat_request, parse_json,
};
