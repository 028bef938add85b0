//! Upload records in DynamoDB: one item per upload (PK `upload_id`), removed by the table's TTL
//! once the upload has expired.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{Item, fail, is_condition_failure, n, number, s, string};
use crate::error::Error;
use crate::store::{UploadRecord, UploadStore};

/// Upload records in a DynamoDB table.
#[derive(Clone)]
pub struct DynamoUploadStore {
    client: Client,
    table: String,
}

impl DynamoUploadStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn key(upload_id: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([("upload_id".into(), s(upload_id))])
    }
}

fn record(item: &Item) -> UploadRecord {
    UploadRecord {
        upload_id: string(item, "upload_id"),
        tenant: string(item, "tenant"),
        sub: string(item, "sub"),
        filename: string(item, "filename"),
        content_type: string(item, "content_type"),
        size: number(item, "size").unwrap_or_default(),
        sha256: string(item, "sha256"),
        created_at: number(item, "created_at").unwrap_or_default(),
        expires_at: number(item, "expires_at").unwrap_or_default(),
        stored: item
            .get("stored")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
    }
}

#[async_trait]
impl UploadStore for DynamoUploadStore {
    async fn create(&self, r: &UploadRecord) -> Result<(), Error> {
        let item = HashMap::from([
            ("upload_id".to_owned(), s(&r.upload_id)),
            ("tenant".to_owned(), s(&r.tenant)),
            ("sub".to_owned(), s(&r.sub)),
            ("filename".to_owned(), s(&r.filename)),
            ("content_type".to_owned(), s(&r.content_type)),
            ("size".to_owned(), n(r.size)),
            ("sha256".to_owned(), s(&r.sha256)),
            ("created_at".to_owned(), n(r.created_at)),
            ("expires_at".to_owned(), n(r.expires_at)),
            ("stored".to_owned(), AttributeValue::Bool(r.stored)),
            // DynamoDB's TTL removes the record once nobody may name it.
            ("ttl".to_owned(), n(r.expires_at)),
        ]);
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(upload_id)")
            .send()
            .await
            .map(drop)
            .map_err(fail)
    }

    async fn get(&self, upload_id: &str) -> Result<Option<UploadRecord>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(upload_id)))
            // The PUT that stored the bytes must be seen by the chat that follows it.
            .consistent_read(true)
            .send()
            .await
            .map_err(fail)?;
        Ok(out.item.as_ref().map(record))
    }

    async fn mark_stored(&self, upload_id: &str) -> Result<bool, Error> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(upload_id)))
            // `stored` is one of DynamoDB's reserved words.
            .update_expression("SET #stored = :t")
            .condition_expression("attribute_exists(upload_id) AND #stored = :f")
            .expression_attribute_names("#stored", "stored")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .expression_attribute_values(":f", AttributeValue::Bool(false))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(fail(e)),
        }
    }

    async fn expired(&self, now: u64, limit: usize) -> Result<Vec<UploadRecord>, Error> {
        // A scan: the sweep runs rarely, and TTL deletes most expired records first.
        let mut found = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("expires_at <= :now")
                .expression_attribute_values(":now", n(now))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(fail)?;
            found.extend(out.items().iter().map(record));
            start = out.last_evaluated_key;
            if start.is_none() || found.len() >= limit {
                found.truncate(limit);
                return Ok(found);
            }
        }
    }

    async fn delete(&self, upload_id: &str) -> Result<(), Error> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(upload_id)))
            .send()
            .await
            .map(drop)
            .map_err(fail)
    }
}
