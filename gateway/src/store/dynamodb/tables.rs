//! The DynamoDB tables the code uses, declared once: `nagare create-tables` makes them for local
//! and test use, and the deploy test checks that `deploy/template.yaml` declares the same keys,
//! index and TTL, so the template and the code cannot drift apart.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};

use super::{BLOB_INDEX, OWNER_INDEX, fail};
use crate::error::Error;

/// The names of the tables, from the config.
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
    /// Upload records.
    pub uploads: String,
}

/// A key attribute's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    String,
    Number,
}

impl KeyKind {
    /// DynamoDB's letter for it, as in `AttributeType: S`.
    pub fn letter(self) -> &'static str {
        match self {
            Self::String => "S",
            Self::Number => "N",
        }
    }

    fn scalar(self) -> ScalarAttributeType {
        match self {
            Self::String => ScalarAttributeType::S,
            Self::Number => ScalarAttributeType::N,
        }
    }
}

/// A key attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub name: &'static str,
    pub kind: KeyKind,
}

const fn string_key(name: &'static str) -> Key {
    Key {
        name,
        kind: KeyKind::String,
    }
}

/// One table: on-demand, with its keys, its global indexes (all attributes projected),
/// and the TTL attribute of items that expire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub name: String,
    pub partition: Key,
    pub sort: Option<Key>,
    /// `(index name, partition, sort)` of each.
    pub indexes: Vec<(&'static str, Key, Key)>,
    pub ttl: Option<&'static str>,
}

/// Every table, as the stores use it.
pub fn table_specs(names: &TableNames) -> Vec<TableSpec> {
    // Connection records, cache entries, counters, tasks and uploads expire (`$disconnect` is
    // best effort; answers age; windows end; tasks are kept for `tasks.retention_days`; an
    // upload id lasts `uploads.ttl_secs`). Conversations are kept until their owner deletes
    // them, or their exchanges pass `memory.retention_days` when it is set.
    let keyed = |name: &String, key: &'static str| TableSpec {
        name: name.clone(),
        partition: string_key(key),
        sort: None,
        indexes: Vec::new(),
        ttl: Some("ttl"),
    };
    vec![
        keyed(&names.connections, "connection_id"),
        TableSpec {
            name: names.conversations.clone(),
            partition: string_key("conversation_id"),
            sort: Some(string_key("sk")),
            indexes: vec![
                (
                    OWNER_INDEX,
                    string_key("owner"),
                    Key {
                        name: "updated_at",
                        kind: KeyKind::Number,
                    },
                ),
                // Only blob-reference items carry `blob`: which conversations name a blob.
                (BLOB_INDEX, string_key("blob"), string_key("sk")),
            ],
            ttl: Some("ttl"),
        },
        keyed(&names.cache, "key"),
        keyed(&names.limits, "key"),
        keyed(&names.tasks, "task_id"),
        keyed(&names.uploads, "upload_id"),
    ]
}

/// Creates the tables if they do not exist, with their keys, index and TTL. Safe to run again.
/// Returns the tables it created.
pub async fn create_tables(client: &Client, names: &TableNames) -> Result<Vec<String>, Error> {
    let mut created = Vec::new();
    for spec in table_specs(names) {
        if create(client, &spec).await? {
            created.push(spec.name.clone());
        }
        if let Some(attribute) = spec.ttl {
            enable_ttl(client, &spec.name, attribute).await?;
        }
    }
    Ok(created)
}

async fn create(client: &Client, spec: &TableSpec) -> Result<bool, Error> {
    let key = |key: &Key, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(key.name)
            .key_type(kind)
            .build()
            .map_err(fail)
    };
    let mut attributes = vec![spec.partition];
    let mut request = client
        .create_table()
        .table_name(&spec.name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(&spec.partition, KeyType::Hash)?);
    if let Some(sort) = &spec.sort {
        attributes.push(*sort);
        request = request.key_schema(key(sort, KeyType::Range)?);
    }
    for (name, partition, sort) in &spec.indexes {
        for attribute in [*partition, *sort] {
            if !attributes.contains(&attribute) {
                attributes.push(attribute);
            }
        }
        let index = GlobalSecondaryIndex::builder()
            .index_name(*name)
            .key_schema(key(partition, KeyType::Hash)?)
            .key_schema(key(sort, KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build()
            .map_err(fail)?;
        request = request.global_secondary_indexes(index);
    }
    for attribute in attributes {
        let definition = AttributeDefinition::builder()
            .attribute_name(attribute.name)
            .attribute_type(attribute.kind.scalar())
            .build()
            .map_err(fail)?;
        request = request.attribute_definitions(definition);
    }
    created_now(request.send().await)
}

async fn enable_ttl(client: &Client, table: &str, attribute: &str) -> Result<(), Error> {
    let ttl = TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name(attribute)
        .build()
        .map_err(fail)?;
    match client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(ttl)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        // Already enabled: DynamoDB refuses to enable it twice.
        Err(e) if e.code() == Some("ValidationException") => Ok(()),
        Err(e) => Err(fail(e)),
    }
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
