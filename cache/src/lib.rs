//! Nagare's response cache. FAQ-style prompts repeat, and paying the model again for the same
//! answer is waste; the cache cuts that cost without ever serving one tenant's answer to another.
//!
//! - [`key`]: the exact-match key, a SHA-256 over a canonical encoding of the final model request
//!   and the cache scope.
//! - [`ResponseCache`]: L1 in process (moka, bounded by bytes, TTL and time-to-idle) and an
//!   optional shared L2 ([`SharedCache`]: DynamoDB or Redis), read through, an L2 hit filling L1.
//! - [`Flights`]: identical requests in flight share one upstream stream; each joiner receives
//!   every piece from the beginning, as it arrives.

mod dynamodb;
mod entry;
mod flight;
pub mod key;
mod metrics;
mod policy;
mod redis;
mod tiers;

pub use dynamodb::DynamoCache;
pub use entry::CachedResponse;
pub use flight::{Flight, Flights, Joined, Subscription};
pub use key::{CacheKey, KeyContent, KeyInput};
pub use metrics::{CacheMetrics, MetricsSnapshot, Price};
pub use policy::{Mode, ROUTES};
pub use redis::RedisCache;
pub use tiers::{CacheSettings, ResponseCache, SharedCache, SharedKind, Tier};

/// A shared tier failed. The cache never fails a request: callers log it and carry on.
#[derive(Debug, thiserror::Error)]
#[error("{tier} cache: {message}")]
pub struct CacheError {
    pub tier: &'static str,
    pub message: String,
}
