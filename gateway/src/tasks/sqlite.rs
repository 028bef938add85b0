//! Task records in the embedded SQLite database, so they survive a restart of `nagare serve`.
//! Their queue is beside them, in `sqlite_queue.rs`.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::{DeliveryStatus, TaskRecord, TaskStatus, TaskStore, read_stored, stored_json};
use crate::chat::ChatReply;
use crate::error::{Error, ErrorBody};
use crate::store::{Database, unix_now_ms};

/// Task records in SQLite.
#[derive(Clone)]
pub struct SqliteTaskStore {
    db: Database,
}

impl SqliteTaskStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

fn error_json(error: &ErrorBody) -> String {
    serde_json::to_string(error).unwrap_or_default()
}

fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRecord> {
    let status: String = row.get(5)?;
    let error: Option<String> = row.get(8)?;
    let delivery: Option<String> = row.get(10)?;
    let connection_delivery: Option<String> = row.get(13)?;
    let task_id: String = row.get(0)?;
    let request: String = row.get(4)?;
    let result: Option<String> = row.get(7)?;
    // An unreadable field fails the read, naming the task, rather than passing on a guess.
    let unreadable = |column: usize, e: Error| {
        rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e))
    };
    Ok(TaskRecord {
        request: read_stored(&task_id, "request", &request).map_err(|e| unreadable(4, e))?,
        result: result
            .map(|r| read_stored(&task_id, "result", &r))
            .transpose()
            .map_err(|e| unreadable(7, e))?,
        task_id,
        sub: row.get(1)?,
        tenant: row.get(2)?,
        scopes: row.get(3)?,
        status: TaskStatus::parse(&status).unwrap_or(TaskStatus::Failed),
        attempts: row.get(6)?,
        error: error.and_then(|e| serde_json::from_str(&e).ok()),
        callback_url: row.get(9)?,
        delivery: delivery.as_deref().and_then(DeliveryStatus::parse),
        delivery_attempts: row.get(11)?,
        connection_id: row.get(12)?,
        connection_delivery: connection_delivery
            .as_deref()
            .and_then(DeliveryStatus::parse),
        created_at: row.get(14)?,
        updated_at: row.get(15)?,
    })
}

fn update(
    db: &Connection,
    sql: &str,
    task_id: &str,
    values: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<()> {
    let mut all: Vec<&dyn rusqlite::ToSql> = vec![&task_id];
    let now = unix_now_ms();
    all.push(&now);
    all.extend_from_slice(values);
    db.execute(sql, all.as_slice())?;
    Ok(())
}

#[async_trait]
impl TaskStore for SqliteTaskStore {
    async fn create(&self, record: &TaskRecord) -> Result<(), Error> {
        let r = record.clone();
        self.db
            .with(move |db| {
                db.execute(
                    "INSERT INTO tasks (task_id, sub, tenant, scopes, request, status, attempts,
                     result, error, callback_url, delivery, delivery_attempts, connection_id,
                     connection_delivery, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                    params![
                        r.task_id,
                        r.sub,
                        r.tenant,
                        r.scopes,
                        stored_json(&r.request),
                        r.status.as_str(),
                        r.attempts,
                        r.result.as_ref().map(stored_json),
                        r.error.as_ref().map(error_json),
                        r.callback_url,
                        r.delivery.map(DeliveryStatus::as_str),
                        r.delivery_attempts,
                        r.connection_id,
                        r.connection_delivery.map(DeliveryStatus::as_str),
                        r.created_at,
                        r.updated_at,
                    ],
                )?;
                Ok(())
            })
            .await
    }

    async fn get(&self, task_id: &str) -> Result<Option<TaskRecord>, Error> {
        let id = task_id.to_owned();
        self.db
            .with(move |db| {
                db.query_row(
                    "SELECT task_id, sub, tenant, scopes, request, status, attempts, result, error,
                     callback_url, delivery, delivery_attempts, connection_id, connection_delivery,
                     created_at, updated_at
                     FROM tasks WHERE task_id = ?1",
                    [&id],
                    read,
                )
                .optional()
            })
            .await
    }

    async fn started(&self, task_id: &str, attempt: u32) -> Result<(), Error> {
        let id = task_id.to_owned();
        self.db
            .with(move |db| {
                update(
                    db,
                    "UPDATE tasks SET status = 'running', updated_at = ?2, attempts = ?3
                     WHERE task_id = ?1 AND status IN ('queued', 'running')",
                    &id,
                    &[&attempt],
                )
            })
            .await
    }

    async fn retrying(&self, task_id: &str, error: &ErrorBody) -> Result<(), Error> {
        let (id, error) = (task_id.to_owned(), error_json(error));
        self.db
            .with(move |db| {
                update(
                    db,
                    "UPDATE tasks SET status = 'queued', updated_at = ?2, error = ?3
                     WHERE task_id = ?1 AND status IN ('queued', 'running')",
                    &id,
                    &[&error],
                )
            })
            .await
    }

    async fn put_back(&self, task_id: &str, attempts: u32) -> Result<(), Error> {
        let id = task_id.to_owned();
        self.db
            .with(move |db| {
                update(
                    db,
                    "UPDATE tasks SET status = 'queued', updated_at = ?2, attempts = ?3
                     WHERE task_id = ?1 AND status IN ('queued', 'running')",
                    &id,
                    &[&attempts],
                )
            })
            .await
    }

    async fn finished(
        &self,
        task_id: &str,
        outcome: Result<&ChatReply, &ErrorBody>,
    ) -> Result<(), Error> {
        let id = task_id.to_owned();
        let (status, result, error) = match outcome {
            Ok(result) => (TaskStatus::Succeeded, Some(stored_json(result)), None),
            Err(e) => (TaskStatus::Failed, None, Some(error_json(e))),
        };
        self.db
            .with(move |db| {
                // A task finishes once: a late duplicate run cannot overwrite the first outcome.
                update(
                    db,
                    "UPDATE tasks SET status = ?3, updated_at = ?2, result = ?4, error = ?5,
                     delivery = CASE WHEN callback_url IS NULL THEN NULL ELSE 'pending' END,
                     connection_delivery =
                         CASE WHEN connection_id IS NULL THEN NULL ELSE 'pending' END
                     WHERE task_id = ?1 AND status IN ('queued', 'running')",
                    &id,
                    &[&status.as_str(), &result, &error],
                )
            })
            .await
    }

    async fn delivered(
        &self,
        task_id: &str,
        delivery: DeliveryStatus,
        attempts: u32,
    ) -> Result<(), Error> {
        let id = task_id.to_owned();
        self.db
            .with(move |db| {
                update(
                    db,
                    "UPDATE tasks SET delivery = ?3, delivery_attempts = delivery_attempts + ?4,
                     updated_at = ?2 WHERE task_id = ?1",
                    &id,
                    &[&delivery.as_str(), &attempts],
                )
            })
            .await
    }

    async fn pushed(&self, task_id: &str, delivery: DeliveryStatus) -> Result<(), Error> {
        let id = task_id.to_owned();
        self.db
            .with(move |db| {
                update(
                    db,
                    "UPDATE tasks SET connection_delivery = ?3, updated_at = ?2 WHERE task_id = ?1",
                    &id,
                    &[&delivery.as_str()],
                )
            })
            .await
    }
}
