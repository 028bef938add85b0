//! The DynamoDB stores, and the command that creates their tables for local and test use
//! (deploy/ creates them on AWS).

mod connections;
mod conversations;

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};

pub use connections::DynamoConnectionStore;
pub use conversations::DynamoConversationStore;

use super::store_error;
use crate::error::Error;

pub(crate) type Item = HashMap<String, AttributeValue>;

/// The GSI that lists a user's conversations, newest first (only `META` items carry `owner`).
pub const OWNER_INDEX: &str = "owner-updated";

/// A DynamoDB failure as the store error of the error table.
pub(crate) fn fail(e: impl std::error::Error) -> Error {
    store_error("dynamodb", aws_sdk_dynamodb::error::DisplayErrorContext(&e))
}

/// True when a conditional write's condition did not hold.
pub(crate) fn is_condition_failure<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

pub(crate) fn string(item: &Item, name: &str) -> String {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default()
}

pub(crate) fn number(item: &Item, name: &str) -> Option<u64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

fn set_contains(item: &Item, name: &str, value: &str) -> bool {
    item.get(name)
        .and_then(|v| v.as_ss().ok())
        .is_some_and(|set| set.iter().any(|s| s == value))
}

pub(crate) fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

pub(crate) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The tables to create.
#[derive(Debug, Clone)]
pub struct TableNames {
    pub connections: String,
    pub conversations: String,
    /// The response cache's shared tier.
    pub cache: String,
    /// The shared counters of `[rate_limits]`.
    pub limits: String,
    /// Task records.
    pub tasks: String,
}

/// Creates the tables if they do not exist, with their keys, index and TTL. Safe to run again.
pub async fn create_tables(client: &Client, names: &TableNames) -> Result<Vec<String>, Error> {
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(fail)
    };
    let attr = |name: &str, kind: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .map_err(fail)
    };
    let mut created = Vec::new();
    let connections = client
        .create_table()
        .table_name(&names.connections)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("connection_id", ScalarAttributeType::S)?)
        .key_schema(key("connection_id", KeyType::Hash)?);
    if created_now(connections.send().await)? {
        created.push(names.connections.clone());
    }
    let owner_index = GlobalSecondaryIndex::builder()
        .index_name(OWNER_INDEX)
        .key_schema(key("owner", KeyType::Hash)?)
        .key_schema(key("updated_at", KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .map_err(fail)?;
    let conversations = client
        .create_table()
        .table_name(&names.conversations)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("conversation_id", ScalarAttributeType::S)?)
        .attribute_definitions(attr("sk", ScalarAttributeType::S)?)
        .attribute_definitions(attr("owner", ScalarAttributeType::S)?)
        .attribute_definitions(attr("updated_at", ScalarAttributeType::N)?)
        .key_schema(key("conversation_id", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .global_secondary_indexes(owner_index);
    if created_now(conversations.send().await)? {
        created.push(names.conversations.clone());
    }
    // The cache, the limit counters and the tasks: one string key each.
    for (table, key_name) in [
        (&names.cache, "key"),
        (&names.limits, "key"),
        (&names.tasks, "task_id"),
    ] {
        let keyed = client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr(key_name, ScalarAttributeType::S)?)
            .key_schema(key(key_name, KeyType::Hash)?);
        if created_now(keyed.send().await)? {
            created.push(table.clone());
        }
    }
    // Connection records, cache entries, counters and tasks expire (`$disconnect` is best
    // effort; answers age; windows end; tasks are kept for `tasks.retention_days`).
    for table in [
        &names.connections,
        &names.cache,
        &names.limits,
        &names.tasks,
    ] {
        let ttl = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name("ttl")
            .build()
            .map_err(fail)?;
        match client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(ttl)
            .send()
            .await
        {
            Ok(_) => {}
            // Already enabled: DynamoDB refuses to enable it twice.
            Err(e) if e.code() == Some("ValidationException") => {}
            Err(e) => return Err(fail(e)),
        }
    }
    Ok(created)
}

/// True if the table was created, false if it existed.
fn created_now<T, E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    result: Result<T, SdkError<E, R>>,
) -> Result<bool, Error> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("ResourceInUseException") => Ok(false),
        Err(e) => Err(fail(e)),
    }
}
