//! Pushing frames to a WebSocket connection by its id, from outside the code that serves it: on
//! AWS through the API Gateway Management API; on `nagare serve` into the socket's own queue
//! (the WebSocket module's registry of local sockets implements these traits).
//! Coalescing deltas into fewer pushes lives here too, because every push is a billed message.

mod apigw;
mod coalesce;
mod stored;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use apigw::ApiGatewayPusher;
pub use coalesce::{Coalescer, MAX_POST_BYTES};
pub use stored::{StoredConnections, management_endpoint};

use crate::error::Error;

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

/// Posts one frame; LimitExceeded and retryable failures are retried `retries` times with
/// doubling backoff from 50 ms.
pub async fn post_with_retries(
    pusher: &dyn ConnectionPusher,
    endpoint: &str,
    connection_id: &str,
    frame: Bytes,
    retries: u32,
) -> Result<(), PushError> {
    let mut backoff = Duration::from_millis(50);
    let mut attempt = 0;
    loop {
        match pusher.post(endpoint, connection_id, frame.clone()).await {
            Err(
                PushError::Throttled
                | PushError::Failed {
                    retryable: true, ..
                },
            ) if attempt < retries => {
                attempt += 1;
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            other => return other,
        }
    }
}

/// An open connection, as someone pushing to it needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionTarget {
    /// Who opened it.
    pub sub: String,
    pub tenant: String,
    /// The Management API base to post to; empty for a socket of this process.
    pub endpoint: String,
}

impl ConnectionTarget {
    /// True when `sub` of `tenant` opened it.
    pub fn opened_by(&self, sub: &str, tenant: &str) -> bool {
        self.sub == sub && self.tenant == tenant
    }
}

/// Finds open connections by id: the connection store on AWS, the sockets of `nagare serve`.
#[async_trait]
pub trait ConnectionDirectory: Send + Sync {
    async fn find(&self, connection_id: &str) -> Result<Option<ConnectionTarget>, Error>;
}
