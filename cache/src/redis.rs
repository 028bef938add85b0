//! The shared tier in Redis (or ElastiCache): `SET key value EX ttl` and `GET`, through a
//! connection manager that reconnects by itself. Keys are `nagare:cache:{hex digest}`.

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::{CacheError, CacheKey, CachedResponse, SharedCache};

pub struct RedisCache {
    connection: ConnectionManager,
}

fn fail(e: impl std::fmt::Display) -> CacheError {
    CacheError {
        tier: "redis",
        message: e.to_string(),
    }
}

fn redis_key(key: &CacheKey) -> String {
    format!("nagare:cache:{key}")
}

impl RedisCache {
    /// Connects to `url` (`redis://host:port/db`, `rediss://` for TLS, `redis+unix:///path`).
    pub async fn connect(url: &str) -> Result<Self, CacheError> {
        let client = redis::Client::open(url).map_err(fail)?;
        let connection = ConnectionManager::new(client).await.map_err(fail)?;
        Ok(Self { connection })
    }
}

#[async_trait]
impl SharedCache for RedisCache {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<CachedResponse>, CacheError> {
        let mut c = self.connection.clone();
        let found: Option<String> = c.get(redis_key(key)).await.map_err(fail)?;
        found
            .map(|body| serde_json::from_str(&body).map_err(fail))
            .transpose()
    }

    async fn put(
        &self,
        key: &CacheKey,
        value: &CachedResponse,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let body = serde_json::to_string(value).map_err(fail)?;
        let mut c = self.connection.clone();
        c.set_ex::<_, _, ()>(redis_key(key), body, ttl.as_secs().max(1))
            .await
            .map_err(fail)
    }
}
