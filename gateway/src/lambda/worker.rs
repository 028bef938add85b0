//! `nagare-worker`: the Lambda function behind the task queue's SQS event source. Each record is
//! one task, run by the same [`Worker`] as in `nagare serve`; records that must come back (a
//! retry after its backoff, a store failure) are reported as batch item failures
//! (`ReportBatchItemFailures`), so Lambda deletes only the others.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use futures::future::join_all;

use crate::tasks::{Handled, Message, Worker};

/// Runs every record of `event` at once; the ones left for later are the batch's failures.
pub async fn handle_batch(worker: &Worker, event: SqsEvent) -> SqsBatchResponse {
    let runs = event.records.into_iter().map(|record| async move {
        let id = record.message_id.clone().unwrap_or_default();
        let (Some(task_id), Some(receipt)) = (record.body, record.receipt_handle) else {
            tracing::warn!(message_id = %id, "an SQS record without a body or receipt handle");
            return Some(id);
        };
        let receive_count = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        let group = record
            .attributes
            .get("MessageGroupId")
            .cloned()
            .unwrap_or_default();
        let message = Message {
            task_id,
            receipt,
            receive_count,
            group,
        };
        match worker.handle(message).await {
            Handled::Done => None,
            Handled::Later => Some(id),
        }
    });
    let mut response = SqsBatchResponse::default();
    for failed in join_all(runs).await.into_iter().flatten() {
        response.add_failure(failed);
    }
    response
}
