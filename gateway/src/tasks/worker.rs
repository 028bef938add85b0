//! The worker: receives task ids from the queue, runs each chat through the pipeline, records the
//! outcome, delivers the callback, and only then deletes the message. A worker that dies at any
//! point leaves the message to reappear after its visibility timeout; the task record makes the
//! next run idempotent (a finished task is not run again, only its pending callback is retried).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{DeliveryStatus, Message, TaskRecord, Tasks};
use crate::chat::{ChatReply, Route};
use crate::error::{Error, ErrorBody, ErrorCode};
use crate::pipeline::ChatPipeline;

/// Whether a run was refused by this gateway's own limits (rate, tokens, the upstream cap)
/// rather than failed: such a run waits for the limit and goes again, and is no attempt. (A
/// failing store is a failure like any other: it counts, so a store that stays down fails the
/// task in the end instead of holding it forever.)
fn refused_by_our_limits(error: &ErrorBody) -> bool {
    error.code == ErrorCode::RateLimited
}

/// What became of a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Finished with and deleted.
    Done,
    /// Left in the queue, to be received again when its visibility timeout ends.
    Later,
}

/// Runs tasks until cancelled.
pub struct Worker {
    tasks: Tasks,
    pipeline: Arc<ChatPipeline>,
    /// Cancelled at shutdown: the running task is put back at once, its attempt not counted.
    stop: CancellationToken,
}

impl Worker {
    pub fn new(tasks: Tasks, pipeline: Arc<ChatPipeline>) -> Self {
        Self {
            tasks,
            pipeline,
            stop: CancellationToken::new(),
        }
    }

    /// Spawns `tasks.settings.workers` loops; when `stop` is cancelled they take no more work,
    /// put back the tasks they run (visible again at once, the attempt not counted) and end.
    pub fn spawn(mut self, stop: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        self.stop = stop;
        let worker = Arc::new(self);
        (0..worker.tasks.settings.workers)
            .map(|_| {
                let worker = worker.clone();
                tokio::spawn(async move { worker.run().await })
            })
            .collect()
    }

    async fn run(&self) {
        let visibility = self.tasks.settings.visibility_timeout_secs;
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            let receive = self.tasks.queue.receive(1, visibility);
            tokio::pin!(receive);
            let received = tokio::select! {
                received = &mut receive => received,
                () = self.stop.cancelled() => {
                    // A receive under way may already have taken a message, which dropping it
                    // would hide for the visibility timeout: let it finish, and put that back.
                    for message in receive.await.unwrap_or_default() {
                        if let Err(e) = self.tasks.queue.put_back(&message, 0).await {
                            tracing::warn!(error = %e, "putting back a task at shutdown failed");
                        }
                    }
                    return;
                }
            };
            match received {
                Ok(messages) => {
                    for message in messages {
                        self.handle(message).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "receiving tasks failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// One received message, start to finish: [`Handled::Done`] once it is deleted from the
    /// queue, [`Handled::Later`] when it stays to come back (a retry, or a store failure).
    pub async fn handle(&self, message: Message) -> Handled {
        let span = tracing::info_span!("task", task_id = %message.task_id, attempt = message.receive_count);
        match tracing::Instrument::instrument(self.handle_in_span(message), span).await {
            Ok(handled) => handled,
            Err(e) => {
                tracing::warn!(error = %e, "task handling failed; it will come back");
                Handled::Later
            }
        }
    }

    async fn handle_in_span(&self, message: Message) -> Result<Handled, Error> {
        let store = &self.tasks.store;
        let Some(record) = store.get(&message.task_id).await? else {
            tracing::warn!("no record for a queued task; dropping the message");
            self.tasks.queue.delete(&message.receipt).await?;
            return Ok(Handled::Done);
        };
        if record.status.is_terminal() {
            // A redelivery after the outcome was recorded: no second model call.
            self.deliver(&message, &record).await?;
            self.tasks.queue.delete(&message.receipt).await?;
            return Ok(Handled::Done);
        }
        // The record counts attempts: a put-back run does not count, a worker that died does.
        let max = self.tasks.settings.max_attempts;
        let attempt = record.attempts + 1;
        if attempt > max || message.receive_count > max {
            let error = Error::Internal(format!(
                "the task was started {max} times and never finished"
            ));
            return self.finish(&message, Err(error.body())).await;
        }
        store.started(&record.task_id, attempt).await?;
        let run = tokio::select! {
            run = self.keep_hidden(&message, self.run_chat(&record)) => run,
            // Dropping the run cancels its chat.
            () = self.stop.cancelled() => Err(Error::shutting_down().body()),
        };
        match run {
            Ok(reply) => self.finish(&message, Ok(reply)).await,
            Err(e) if self.stop.is_cancelled() || refused_by_our_limits(&e) => {
                // At shutdown, visible again at once for another worker; otherwise after the
                // wait the limit asked for.
                let delay = if self.stop.is_cancelled() {
                    0
                } else {
                    e.retry_after_ms.map_or(1, |ms| ms.div_ceil(1000).max(1))
                };
                tracing::info!(
                    code = e.code.as_str(),
                    delay_secs = delay,
                    "task put back; the attempt does not count"
                );
                store.put_back(&record.task_id, record.attempts).await?;
                self.tasks.queue.put_back(&message, delay).await?;
                Ok(Handled::Later)
            }
            Err(e) if e.retryable && attempt < max => {
                tracing::info!(
                    code = e.code.as_str(),
                    "task run failed; it will be retried"
                );
                store.retrying(&record.task_id, &e).await?;
                // Back in the queue after a backoff that grows with each attempt.
                let backoff = 2u64.saturating_pow(attempt).min(60);
                self.tasks.queue.extend(&message.receipt, backoff).await?;
                Ok(Handled::Later)
            }
            Err(e) => self.finish(&message, Err(e)).await,
        }
    }

    /// The chat of `record`, run as its submitter.
    async fn run_chat(&self, record: &TaskRecord) -> Result<ChatReply, ErrorBody> {
        // Submission gave the request the task id when it had none; a record written by
        // another producer may not have.
        let mut request = record.request.clone();
        request
            .request_id
            .get_or_insert_with(|| record.task_id.clone());
        let chat = self
            .pipeline
            .admit(request, &record.principal(), Route::Task, Instant::now())
            .map_err(|e| e.body())?;
        let events = self.pipeline.start(chat).await.map_err(|e| e.body())?;
        ChatReply::collect(events).await
    }

    /// Runs `work`, extending the message's visibility every half timeout so no other worker
    /// takes it while it runs.
    async fn keep_hidden<T>(&self, message: &Message, work: impl Future<Output = T>) -> T {
        let visibility = self.tasks.settings.visibility_timeout_secs;
        let every = Duration::from_secs(visibility.max(2) / 2);
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                () = tokio::time::sleep(every) => {
                    if let Err(e) = self.tasks.queue.extend(&message.receipt, visibility).await {
                        tracing::warn!(error = %e, "extending a task's visibility failed");
                    }
                }
            }
        }
    }

    /// Records the outcome, delivers it, deletes the message.
    async fn finish(
        &self,
        message: &Message,
        outcome: Result<ChatReply, ErrorBody>,
    ) -> Result<Handled, Error> {
        let store = &self.tasks.store;
        store.finished(&message.task_id, outcome.as_ref()).await?;
        if let Some(record) = store.get(&message.task_id).await? {
            tracing::info!(status = record.status.as_str(), "task finished");
            self.deliver(message, &record).await?;
        }
        self.tasks.queue.delete(&message.receipt).await?;
        Ok(Handled::Done)
    }

    /// Delivers a finished task wherever it is still pending: first to its WebSocket
    /// connection, where someone may be waiting, then to its callback.
    async fn deliver(&self, message: &Message, record: &TaskRecord) -> Result<(), Error> {
        self.push(message, record).await?;
        self.call_back(message, record).await
    }

    async fn push(&self, message: &Message, record: &TaskRecord) -> Result<(), Error> {
        if record.connection_delivery != Some(DeliveryStatus::Pending) {
            return Ok(());
        }
        let pushed = match &self.tasks.connections {
            Some(connections) => self.keep_hidden(message, connections.deliver(record)).await,
            None => {
                tracing::warn!("a task names a connection, but this worker reaches none");
                false
            }
        };
        let status = DeliveryStatus::settled(pushed);
        self.tasks.store.pushed(&record.task_id, status).await
    }

    async fn call_back(&self, message: &Message, record: &TaskRecord) -> Result<(), Error> {
        let (Some(url), Some(DeliveryStatus::Pending)) = (&record.callback_url, record.delivery)
        else {
            return Ok(());
        };
        let body = serde_json::to_vec(&record.outcome()).unwrap_or_default();
        let (delivered, attempts) = self
            .keep_hidden(
                message,
                self.tasks.callbacks.deliver(&record.task_id, url, &body),
            )
            .await;
        let status = DeliveryStatus::settled(delivered);
        self.tasks
            .store
            .delivered(&record.task_id, status, attempts)
            .await
    }
}
