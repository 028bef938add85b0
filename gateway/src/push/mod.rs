//! Pushing frames to a WebSocket connection that this process does not hold: on AWS, through
//! the API Gateway Management API. Coalescing deltas into fewer pushes lives here too, because
//! every push is a billed message.

mod apigw;
mod coalesce;

use async_trait::async_trait;
use bytes::Bytes;

pub use apigw::ApiGatewayPusher;
pub use coalesce::{Coalescer, MAX_POST_BYTES};

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The connection is closed (410 Gone): stop working for it.
    #[error("the connection is gone")]
    Gone,
    /// Too many pushes (429 LimitExceeded): retry after a pause.
    #[error("push rate limit exceeded")]
    Throttled,
    /// Anything else; `retryable` when it may work on a second try (5xx, timeouts).
    #[error("push failed: {message}")]
    Failed { message: String, retryable: bool },
}

/// Sends text frames to connections by id.
#[async_trait]
pub trait ConnectionPusher: Send + Sync {
    /// Sends one frame. `endpoint` is the Management API base, `https://{domain}/{stage}`.
    async fn post(
        &self,
        endpoint: &str,
        connection_id: &str,
        frame: Bytes,
    ) -> Result<(), PushError>;
}
