//! Limit counters in a DynamoDB table (PK `key`, TTL `ttl`), shared by every replica and Lambda
//! instance: each addition is one conditional `UpdateItem`.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::error::Error;
use crate::limits::Counters;
use crate::store::{dynamodb_failure, dynamodb_number as n, is_condition_failure};

pub struct DynamoCounters {
    client: Client,
    table: String,
}

impl DynamoCounters {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl Counters for DynamoCounters {
    async fn try_add(
        &self,
        key: &str,
        amount: u64,
        limit: u64,
        expires_at: u64,
    ) -> Result<bool, Error> {
        if amount > limit {
            return Ok(false);
        }
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("key", AttributeValue::S(key.to_owned()))
            // The window's end plus a day: DynamoDB deletes expired items lazily.
            .update_expression("ADD #count :amount SET #ttl = if_not_exists(#ttl, :ttl)")
            .condition_expression("attribute_not_exists(#count) OR #count <= :room")
            .expression_attribute_names("#count", "count")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":amount", n(amount))
            .expression_attribute_values(":room", n(limit - amount))
            .expression_attribute_values(":ttl", n(expires_at + 86_400));
        match update.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(dynamodb_failure(e)),
        }
    }

    async fn give_back(&self, key: &str, amount: u64) -> Result<(), Error> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("key", AttributeValue::S(key.to_owned()))
            .update_expression("ADD #count :minus")
            // Never below zero, and never re-create a counter that has expired.
            .condition_expression("#count >= :amount")
            .expression_attribute_names("#count", "count")
            .expression_attribute_values(":minus", AttributeValue::N(format!("-{amount}")))
            .expression_attribute_values(":amount", n(amount));
        match update.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(dynamodb_failure(e)),
        }
    }
}
