//! Asynchronous tasks: a chat submitted with `POST /v1/tasks`, answered 202 at once, run later by
//! a worker, and read with `GET /v1/tasks/{id}` or received as a signed callback.
//!
//! Two outside dependencies, two traits: [`TaskStore`] keeps the task records, [`TaskQueue`]
//! carries task ids to workers with SQS's semantics (a received message stays hidden for a
//! visibility timeout and comes back if not deleted; one received too often is dead-lettered).

mod callback;
mod connection;
mod dynamodb;
mod sqlite;
mod sqlite_queue;
mod sqs;
mod worker;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use nagare_authorizer::Principal;
use serde::{Deserialize, Serialize};

pub use callback::{Callbacks, SIGNATURE_HEADER, check_callback_url, sign};
pub use connection::ConnectionDelivery;
pub use dynamodb::DynamoTaskStore;
pub use sqlite::SqliteTaskStore;
pub use sqlite_queue::SqliteQueue;
pub use sqs::SqsQueue;
pub use worker::{Handled, Worker};

use crate::chat::{ChatReply, ChatRequest, Route};
use crate::error::{Error, ErrorBody};
use crate::pipeline::ChatPipeline;
use crate::store::unix_now_ms;

/// `[tasks]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskSettings {
    /// Serve `/v1/tasks` and run workers.
    pub enabled: bool,
    /// Tasks one `nagare serve` runs at once; 0 runs none here (another process, or the worker
    /// function, runs them).
    pub workers: usize,
    /// How long a received task stays hidden from other workers; extended while it runs.
    pub visibility_timeout_secs: u64,
    /// Runs of one task before it is failed for good (a worker that dies counts as a run).
    pub max_attempts: u32,
    /// The HMAC-SHA256 key of callback signatures. Unset: a random key kept in the data dir
    /// (`callback-secret`).
    pub callback_secret: Option<String>,
    /// Callback posts tried before the delivery is marked failed.
    pub callback_attempts: u32,
    pub callback_timeout_ms: u64,
    /// Hosts whose callbacks may resolve to private or loopback addresses (an internal service).
    pub callback_allow_hosts: Vec<String>,
    /// Where tasks wait: the embedded queue in SQLite, or SQS.
    pub queue: QueueKind,
    /// The SQS queue, with `queue = "sqs"`; its redrive policy's `maxReceiveCount` should be
    /// `max_attempts + 1`.
    pub queue_url: Option<String>,
    /// Its dead-letter queue, for the depth metric.
    pub dead_letter_queue_url: Option<String>,
    /// The DynamoDB table of task records, when `[store] kind = "dynamodb"`.
    pub table: String,
    /// Days a task record is kept after its last change (DynamoDB TTL).
    pub retention_days: u64,
}

/// Where tasks wait.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    #[default]
    Sqlite,
    Sqs,
}

impl Default for TaskSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            workers: 4,
            visibility_timeout_secs: 300,
            max_attempts: 3,
            callback_secret: None,
            callback_attempts: 5,
            callback_timeout_ms: 10_000,
            callback_allow_hosts: Vec::new(),
            queue: QueueKind::Sqlite,
            queue_url: None,
            dead_letter_queue_url: None,
            table: "nagare-tasks".into(),
            retention_days: 7,
        }
    }
}

impl TaskSettings {
    /// Checks the values tasks cannot run with; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0
            || self.visibility_timeout_secs == 0
            || self.callback_attempts == 0
        {
            return Err(
                "tasks: max_attempts, visibility_timeout_secs and callback_attempts must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Queued, Self::Running, Self::Succeeded, Self::Failed]
            .into_iter()
            .find(|t| t.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// How the callback went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    /// How a finished delivery went.
    pub fn settled(delivered: bool) -> Self {
        if delivered {
            Self::Delivered
        } else {
            Self::Failed
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// One task, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub task_id: String,
    /// Who submitted it: only they may read it, and it runs as them.
    pub sub: String,
    pub tenant: String,
    /// The submitter's scopes, space-separated, for the pipeline's checks when it runs.
    pub scopes: String,
    /// The chat request as admitted at submission (its request id is the task id unless the
    /// submitter gave one); it is admitted again when it runs.
    pub request: ChatRequest,
    pub status: TaskStatus,
    /// Runs so far.
    pub attempts: u32,
    /// The chat reply, once succeeded.
    pub result: Option<ChatReply>,
    /// Why it failed, or why the last run failed while it waits for another.
    pub error: Option<ErrorBody>,
    pub callback_url: Option<String>,
    pub delivery: Option<DeliveryStatus>,
    pub delivery_attempts: u32,
    /// The submitter's WebSocket connection that receives the outcome as chat events.
    pub connection_id: Option<String>,
    pub connection_delivery: Option<DeliveryStatus>,
    /// Milliseconds since the epoch.
    pub created_at: u64,
    pub updated_at: u64,
}

impl TaskRecord {
    /// The principal the task runs as.
    pub fn principal(&self) -> Principal {
        Principal {
            sub: self.sub.clone(),
            tenant: self.tenant.clone(),
            scopes: self.scopes.split(' ').map(str::to_owned).collect(),
            groups: Vec::new(),
            expires_at: u64::MAX,
        }
    }

    pub fn owned_by(&self, principal: &Principal) -> bool {
        self.sub == principal.sub && self.tenant == principal.tenant
    }

    /// `{task_id, status, result | error}`: what a callback receives, and the core of what
    /// `GET /v1/tasks/{id}` shows.
    pub fn outcome(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "task_id": self.task_id, "status": self.status.as_str() });
        if let Some(result) = &self.result {
            v["result"] = serde_json::json!(result);
        }
        if let Some(error) = &self.error {
            v["error"] = serde_json::json!(error);
        }
        v
    }
}

/// A task's request or reply as its store keeps it: JSON text.
pub(crate) fn stored_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// A task's request or reply read back from its store; text that is not one is a store failure,
/// named by the task and the field.
pub(crate) fn read_stored<T: serde::de::DeserializeOwned>(
    task_id: &str,
    field: &str,
    json: &str,
) -> Result<T, Error> {
    serde_json::from_str(json).map_err(|e| {
        Error::Internal(format!(
            "task {task_id}: its stored {field} is unreadable: {e}"
        ))
    })
}

/// Task records.
#[async_trait]
pub trait TaskStore: Send + Sync {
    async fn create(&self, record: &TaskRecord) -> Result<(), Error>;
    async fn get(&self, task_id: &str) -> Result<Option<TaskRecord>, Error>;
    /// A run begins: `running`, with its attempt number.
    async fn started(&self, task_id: &str, attempt: u32) -> Result<(), Error>;
    /// A run failed and the task waits for another: back to `queued`, keeping the error.
    async fn retrying(&self, task_id: &str, error: &ErrorBody) -> Result<(), Error>;
    /// A run that must not count (our own limits refused it, or the server is shutting down):
    /// back to `queued`, with `attempts` as it was before the run.
    async fn put_back(&self, task_id: &str, attempts: u32) -> Result<(), Error>;
    /// The task is done for good: `result` (succeeded) or `error` (failed).
    async fn finished(
        &self,
        task_id: &str,
        outcome: Result<&ChatReply, &ErrorBody>,
    ) -> Result<(), Error>;
    async fn delivered(
        &self,
        task_id: &str,
        delivery: DeliveryStatus,
        attempts: u32,
    ) -> Result<(), Error>;
    /// How the push of the outcome to `connection_id` went.
    async fn pushed(&self, task_id: &str, delivery: DeliveryStatus) -> Result<(), Error>;
}

/// A received task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub task_id: String,
    /// Deletes or extends this receipt of the message.
    pub receipt: String,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
    /// Its fairness group: the submitting principal's [`Principal::key`].
    pub group: String,
}

/// Carries task ids to workers, at least once.
#[async_trait]
pub trait TaskQueue: Send + Sync {
    fn name(&self) -> &'static str;
    /// Queues `task_id` in fairness `group` (its principal): receivers take groups in turn, so
    /// one principal's backlog does not hold everyone else's tasks back.
    async fn send(&self, task_id: &str, group: &str) -> Result<(), Error>;
    /// Up to `max` messages, each hidden from other receivers for `visibility_secs`; waits a
    /// while (long polling) when there are none, then may return nothing.
    async fn receive(&self, max: usize, visibility_secs: u64) -> Result<Vec<Message>, Error>;
    /// Keeps the message hidden for `visibility_secs` from now.
    async fn extend(&self, receipt: &str, visibility_secs: u64) -> Result<(), Error>;
    /// Returns a received message to the queue, to be received again after `delay_secs` as if
    /// this receipt had never happened: it does not bring the message nearer the dead letters.
    async fn put_back(&self, message: &Message, delay_secs: u64) -> Result<(), Error>;
    /// The message is done with.
    async fn delete(&self, receipt: &str) -> Result<(), Error>;
    /// How many messages wait, are being worked on, and were dead-lettered.
    async fn depth(&self) -> Result<QueueDepth, Error>;
}

/// A queue's messages by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Ready to be received.
    pub waiting: u64,
    /// Received and hidden: being worked on, or waiting out a backoff.
    pub in_flight: u64,
    pub dead: u64,
}

/// What the HTTP and gRPC layers need of tasks.
#[derive(Clone)]
pub struct Tasks {
    pub store: Arc<dyn TaskStore>,
    pub queue: Arc<dyn TaskQueue>,
    pub callbacks: Arc<Callbacks>,
    /// Delivery to WebSocket connections; `None` where this process can reach none.
    pub connections: Option<Arc<ConnectionDelivery>>,
    pub settings: TaskSettings,
}

/// Where a task's outcome goes besides its record: the task fields of a `POST /v1/tasks` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Destinations {
    pub callback_url: Option<String>,
    /// One of the submitter's own WebSocket connections.
    pub connection_id: Option<String>,
}

impl Destinations {
    /// The keys of a task body that are not the chat request's.
    pub const FIELDS: &'static [&'static str] = &["callback_url", "connection_id"];
}

impl Tasks {
    /// Has `pipeline` admit `request` and checks its conversation and the destinations now (a bad
    /// one is refused at submission, not failed later), then records the task and queues it.
    /// Returns its id.
    pub async fn submit(
        &self,
        pipeline: &ChatPipeline,
        principal: &Principal,
        mut request: ChatRequest,
        to: Destinations,
    ) -> Result<String, Error> {
        // A task's record keeps its request: bytes go to /v1/uploads, not into the record.
        request.check_no_inline_bytes("a task")?;
        let task_id = uuid::Uuid::new_v4().to_string();
        request.request_id.get_or_insert_with(|| task_id.clone());
        let chat = pipeline.admit(request, principal, Route::Task, Instant::now())?;
        pipeline.check_ahead(&chat).await?;
        let request = chat.into_request();
        if let Some(url) = &to.callback_url {
            self.callbacks.vet(url).await?;
        }
        if let Some(connection_id) = &to.connection_id {
            self.connections
                .as_ref()
                .ok_or_else(|| {
                    Error::InvalidRequest(
                        "connection_id: this server delivers to no WebSocket connections".into(),
                    )
                })?
                .vet(principal, connection_id)
                .await?;
        }
        let now = unix_now_ms();
        let record = TaskRecord {
            task_id: task_id.clone(),
            sub: principal.sub.clone(),
            tenant: principal.tenant.clone(),
            scopes: principal.scopes.join(" "),
            request,
            status: TaskStatus::Queued,
            attempts: 0,
            result: None,
            error: None,
            callback_url: to.callback_url,
            delivery: None,
            delivery_attempts: 0,
            connection_id: to.connection_id,
            connection_delivery: None,
            created_at: now,
            updated_at: now,
        };
        self.store.create(&record).await?;
        self.queue.send(&task_id, &principal.key()).await?;
        Ok(task_id)
    }

    /// The caller's own task; anyone else's is `not_found`, as a missing one is.
    pub async fn get(&self, principal: &Principal, task_id: &str) -> Result<TaskRecord, Error> {
        if task_id.is_empty() || task_id.len() > 128 {
            return Err(Error::InvalidRequest("task id: 1 to 128 characters".into()));
        }
        self.store
            .get(task_id)
            .await?
            .filter(|r| r.owned_by(principal))
            .ok_or_else(|| Error::NotFound(format!("no task {task_id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for s in [
            TaskStatus::Queued,
            TaskStatus::Running,
            TaskStatus::Succeeded,
            TaskStatus::Failed,
        ] {
            assert_eq!(TaskStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(TaskStatus::parse("done"), None);
        assert!(TaskStatus::Failed.is_terminal() && !TaskStatus::Running.is_terminal());
    }
}
