//! The chat contract every transport speaks: the request and its validation, the messages, the
//! events of one chat and the unary reply. Plain types: the pipeline that produces the events
//! lives in [`crate::pipeline`], and nothing here imports it.

mod answer;
mod attachment;
mod content;
mod event;
mod json;
mod message;
mod options;
mod reply;
mod request;
mod route;
mod sources;
mod turns;

pub use answer::{Answer, Part, ToolCalls, parts_of_blocks};
pub use attachment::{CONTENT_TYPES, DocumentFormat, Format, ImageFormat, Source};
pub use content::{
    Block, ToolResultContent, ToolStatus, is_plain_text, joined_text, tool_result_ids, tool_use_ids,
};
pub use event::{ChatEvent, Usage};
pub use json::{parse_json, parse_json_hiding};
pub use message::{Message, Role};
pub use options::{
    Effort, MIN_REASONING_BUDGET, Reasoning, ResponseFormat, Tool, ToolChoice, check_reasoning,
};
pub use reply::{ChatReply, ReplyMessage};
pub use request::{
    CacheMode, CacheScope, ChatRequest, InferenceParams, RequestLimits, parse_chat_request,
};
pub use route::Route;
pub use sources::{
    DEFAULT_RESULTS, Filter, FilterValue, Found, Grounding, GroundingPassage, KnowledgeAsk,
    KnowledgeScope, MAX_RESULTS, MAX_SOURCES_EVENT_BYTES, Reference, batches, check_name, cited,
};
pub use turns::{MAX_DOCUMENTS, MAX_IMAGES, check_tool_results, document_name};

/// Test fixtures shared by the unit tests of the pipeline, the HTTP router and WebSocket sessions.
#[cfg(test)]
pub(crate) mod test_support {
    use nagare_authorizer::Principal;

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
