//! Task records in DynamoDB: one item per task (PK `task_id`, TTL attribute `ttl`). Status
//! changes are conditional writes, so a late duplicate run cannot overwrite a finished task.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{DeliveryStatus, TaskRecord, TaskStatus, TaskStore, read_stored, stored_json};
use crate::chat::ChatReply;
use crate::error::{Error, ErrorBody};
use crate::store::dynamodb::{Item, fail, is_condition_failure, n, number, s, string};
use crate::store::unix_now_ms;

/// Task records in a DynamoDB table.
#[derive(Clone)]
pub struct DynamoTaskStore {
    client: Client,
    table: String,
    /// How long a record is kept after its last change.
    retention_secs: u64,
}

impl DynamoTaskStore {
    pub fn new(client: Client, table: impl Into<String>, retention_secs: u64) -> Self {
        Self {
            client,
            table: table.into(),
            retention_secs,
        }
    }

    fn ttl(&self) -> AttributeValue {
        n(unix_now_ms() / 1000 + self.retention_secs)
    }

    /// Sets `sets` (a SET expression's assignments, `:now` and `:ttl` provided) on an unfinished
    /// task; a finished or missing one is left alone.
    async fn update_open(
        &self,
        task_id: &str,
        sets: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<(), Error> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("task_id", s(task_id))
            .update_expression(format!("SET {sets}, updated_at = :now, #ttl = :ttl"))
            .condition_expression("#status IN (:queued, :running)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":now", n(unix_now_ms()))
            .expression_attribute_values(":ttl", self.ttl())
            .expression_attribute_values(":queued", s(TaskStatus::Queued.as_str()))
            .expression_attribute_values(":running", s(TaskStatus::Running.as_str()));
        for (name, value) in values {
            request = request.expression_attribute_values(name, value);
        }
        // Every other attribute goes by an alias (some are reserved words), declared only when
        // used, as DynamoDB requires.
        for name in ["attempts", "result", "error", "delivery"] {
            if sets.contains(&format!("#{name} ")) {
                request = request.expression_attribute_names(format!("#{name}"), name);
            }
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(fail(e)),
        }
    }
}

fn error_json(error: &ErrorBody) -> AttributeValue {
    s(&serde_json::to_string(error).unwrap_or_default())
}

fn optional(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

fn record(item: &Item) -> Result<TaskRecord, Error> {
    let task_id = string(item, "task_id");
    Ok(TaskRecord {
        request: read_stored(&task_id, "request", &string(item, "request"))?,
        result: optional(item, "result")
            .map(|r| read_stored(&task_id, "result", &r))
            .transpose()?,
        task_id,
        sub: string(item, "sub"),
        tenant: string(item, "tenant"),
        scopes: string(item, "scopes"),
        status: TaskStatus::parse(&string(item, "status")).unwrap_or(TaskStatus::Failed),
        attempts: number(item, "attempts").unwrap_or(0) as u32,
        error: optional(item, "error").and_then(|e| serde_json::from_str(&e).ok()),
        callback_url: optional(item, "callback_url"),
        delivery: optional(item, "delivery")
            .as_deref()
            .and_then(DeliveryStatus::parse),
        delivery_attempts: number(item, "delivery_attempts").unwrap_or(0) as u32,
        connection_id: optional(item, "connection_id"),
        connection_delivery: optional(item, "connection_delivery")
            .as_deref()
            .and_then(DeliveryStatus::parse),
        created_at: number(item, "created_at").unwrap_or(0),
        updated_at: number(item, "updated_at").unwrap_or(0),
    })
}

#[async_trait]
impl TaskStore for DynamoTaskStore {
    async fn create(&self, r: &TaskRecord) -> Result<(), Error> {
        let mut item: Item = HashMap::from([
            ("task_id".into(), s(&r.task_id)),
            ("sub".into(), s(&r.sub)),
            ("tenant".into(), s(&r.tenant)),
            ("scopes".into(), s(&r.scopes)),
            ("request".into(), s(&stored_json(&r.request))),
            ("status".into(), s(r.status.as_str())),
            ("attempts".into(), n(u64::from(r.attempts))),
            (
                "delivery_attempts".into(),
                n(u64::from(r.delivery_attempts)),
            ),
            ("created_at".into(), n(r.created_at)),
            ("updated_at".into(), n(r.updated_at)),
            ("ttl".into(), self.ttl()),
        ]);
        if let Some(url) = &r.callback_url {
            item.insert("callback_url".into(), s(url));
        }
        if let Some(id) = &r.connection_id {
            item.insert("connection_id".into(), s(id));
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(task_id)")
            .send()
            .await
            .map_err(fail)?;
        Ok(())
    }

    async fn get(&self, task_id: &str) -> Result<Option<TaskRecord>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("task_id", s(task_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(fail)?;
        out.item.as_ref().map(record).transpose()
    }

    async fn started(&self, task_id: &str, attempt: u32) -> Result<(), Error> {
        self.update_open(
            task_id,
            "#status = :to, #attempts = :attempt",
            vec![
                (":to", s(TaskStatus::Running.as_str())),
                (":attempt", n(u64::from(attempt))),
            ],
        )
        .await
    }

    async fn retrying(&self, task_id: &str, error: &ErrorBody) -> Result<(), Error> {
        self.update_open(
            task_id,
            "#status = :to, #error = :error",
            vec![
                (":to", s(TaskStatus::Queued.as_str())),
                (":error", error_json(error)),
            ],
        )
        .await
    }

    async fn put_back(&self, task_id: &str, attempts: u32) -> Result<(), Error> {
        self.update_open(
            task_id,
            "#status = :to, #attempts = :attempt",
            vec![
                (":to", s(TaskStatus::Queued.as_str())),
                (":attempt", n(u64::from(attempts))),
            ],
        )
        .await
    }

    async fn finished(
        &self,
        task_id: &str,
        outcome: Result<&ChatReply, &ErrorBody>,
    ) -> Result<(), Error> {
        let (callback, connection) = match self.get(task_id).await? {
            Some(r) => (r.callback_url.is_some(), r.connection_id.is_some()),
            None => (false, false),
        };
        let (status, field, value) = match &outcome {
            Ok(result) => (TaskStatus::Succeeded, "#result", s(&stored_json(result))),
            Err(e) => (TaskStatus::Failed, "#error", error_json(e)),
        };
        let mut sets = format!("#status = :to, {field} = :value");
        let mut values = vec![(":to", s(status.as_str())), (":value", value)];
        let pending = s(DeliveryStatus::Pending.as_str());
        if callback {
            sets.push_str(", #delivery = :delivery");
            values.push((":delivery", pending.clone()));
        }
        if connection {
            sets.push_str(", connection_delivery = :pushed");
            values.push((":pushed", pending));
        }
        self.update_open(task_id, &sets, values).await
    }

    async fn delivered(
        &self,
        task_id: &str,
        delivery: DeliveryStatus,
        attempts: u32,
    ) -> Result<(), Error> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("task_id", s(task_id))
            .update_expression(
                "SET delivery = :delivery, updated_at = :now \
                 ADD delivery_attempts :attempts",
            )
            .condition_expression("attribute_exists(task_id)")
            .expression_attribute_values(":delivery", s(delivery.as_str()))
            .expression_attribute_values(":now", n(unix_now_ms()))
            .expression_attribute_values(":attempts", n(u64::from(attempts)))
            .send()
            .await
            .map_err(fail)?;
        Ok(())
    }

    async fn pushed(&self, task_id: &str, delivery: DeliveryStatus) -> Result<(), Error> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("task_id", s(task_id))
            .update_expression("SET connection_delivery = :delivery, updated_at = :now")
            .condition_expression("attribute_exists(task_id)")
            .expression_attribute_values(":delivery", s(delivery.as_str()))
            .expression_attribute_values(":now", n(unix_now_ms()))
            .send()
            .await
            .map_err(fail)?;
        Ok(())
    }
}
