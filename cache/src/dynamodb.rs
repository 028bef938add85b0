//! The shared tier in DynamoDB: one item per key (PK `key`, the hex digest) holding the answer
//! as JSON, with a `ttl` attribute so DynamoDB deletes expired entries. TTL deletion lags (up to
//! days), so a read checks the expiry itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::{CacheError, CacheKey, CachedResponse, SharedCache};

/// DynamoDB items are at most 400 KB; larger answers stay in L1 only.
const MAX_ITEM_BYTES: usize = 350 * 1024;

pub struct DynamoCache {
    client: Client,
    table: String,
}

impl DynamoCache {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

fn fail(e: impl std::error::Error) -> CacheError {
    CacheError {
        tier: "dynamodb",
        message: DisplayErrorContext(&e).to_string(),
    }
}

#[async_trait]
impl SharedCache for DynamoCache {
    fn name(&self) -> &'static str {
        "dynamodb"
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<CachedResponse>, CacheError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("key", AttributeValue::S(key.to_string()))
            .send()
            .await
            .map_err(fail)?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let live = item
            .get("ttl")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|ttl| ttl > now_secs());
        let body = item.get("response").and_then(|v| v.as_s().ok());
        match (live, body) {
            (true, Some(body)) => serde_json::from_str(body)
                .map(Some)
                .map_err(|e| CacheError {
                    tier: "dynamodb",
                    message: format!("unreadable entry {key}: {e}"),
                }),
            _ => Ok(None),
        }
    }

    async fn put(
        &self,
        key: &CacheKey,
        value: &CachedResponse,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let body = serde_json::to_string(value).map_err(|e| CacheError {
            tier: "dynamodb",
            message: e.to_string(),
        })?;
        if body.len() > MAX_ITEM_BYTES {
            return Ok(());
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .item("key", AttributeValue::S(key.to_string()))
            .item("response", AttributeValue::S(body))
            .item("model", AttributeValue::S(value.model.clone()))
            .item(
                "created_at",
                AttributeValue::N(value.created_at_ms.to_string()),
            )
            .item(
                "ttl",
                AttributeValue::N((now_secs() + ttl.as_secs()).to_string()),
            )
            .send()
            .await
            .map_err(fail)?;
        Ok(())
    }
}
