//! The task queue on Amazon SQS: long polling, the visibility timeout extended while a task runs,
//! and a dead-letter queue (the queue's redrive policy, `maxReceiveCount`) for messages received
//! too often. deploy/ creates the queues; `nagare` only uses them.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};

use super::{Message, QueueDepth, TaskQueue};
use crate::error::Error;
use crate::store::store_error;

/// SQS allows at most 12 hours of visibility and 10 messages per receive.
const MAX_VISIBILITY_SECS: u64 = 12 * 60 * 60;
const MAX_BATCH: usize = 10;
/// SQS's longest message delay.
const MAX_DELAY_SECS: u64 = 900;

fn fail(e: impl std::error::Error) -> Error {
    store_error("sqs", aws_sdk_sqs::error::DisplayErrorContext(&e))
}

/// A task queue on SQS.
#[derive(Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
    /// The dead-letter queue, for its depth.
    dead_letter_url: Option<String>,
    /// Long-polling wait of one receive, at most 20 s.
    wait_secs: i32,
}

impl SqsQueue {
    pub fn new(client: Client, url: impl Into<String>, dead_letter_url: Option<String>) -> Self {
        Self {
            client,
            url: url.into(),
            dead_letter_url,
            wait_secs: 20,
        }
    }

    /// Shortens the long-polling wait (tests).
    pub fn with_wait_secs(mut self, secs: i32) -> Self {
        self.wait_secs = secs.clamp(0, 20);
        self
    }

    async fn count(&self, url: &str, names: &[QueueAttributeName]) -> Result<u64, Error> {
        let mut request = self.client.get_queue_attributes().queue_url(url);
        for name in names {
            request = request.attribute_names(name.clone());
        }
        let attributes = request.send().await.map_err(fail)?;
        let attributes = attributes.attributes();
        Ok(names
            .iter()
            .filter_map(|n| attributes.and_then(|a| a.get(n)))
            .filter_map(|v| v.parse::<u64>().ok())
            .sum())
    }

    /// Sends `task_id` in message group `group_id` (empty: none), after `delay_secs` (at most
    /// SQS's 15 minutes).
    async fn send_in(&self, task_id: &str, group_id: &str, delay_secs: u64) -> Result<(), Error> {
        let mut send = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(task_id);
        if !group_id.is_empty() {
            send = send.message_group_id(group_id);
        }
        if delay_secs > 0 {
            send = send.delay_seconds(delay_secs.min(MAX_DELAY_SECS) as i32);
        }
        send.send().await.map_err(fail)?;
        Ok(())
    }
}

fn visibility(secs: u64) -> i32 {
    secs.min(MAX_VISIBILITY_SECS) as i32
}

/// An SQS message group id for a fairness group: a hash, since a principal's key may be longer
/// than SQS's 128 characters or hold characters it refuses.
fn group_id(group: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(group.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[async_trait]
impl TaskQueue for SqsQueue {
    fn name(&self) -> &'static str {
        "sqs"
    }

    /// The group is the message group id of an SQS fair queue, which keeps one group's
    /// backlog from delaying the others' messages (a standard queue with groups; consumers need
    /// nothing more).
    async fn send(&self, task_id: &str, group: &str) -> Result<(), Error> {
        self.send_in(task_id, &group_id(group), 0).await
    }

    async fn receive(&self, max: usize, visibility_secs: u64) -> Result<Vec<Message>, Error> {
        let received = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .visibility_timeout(visibility(visibility_secs))
            .wait_time_seconds(self.wait_secs)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .send()
            .await
            .map_err(fail)?;
        Ok(received
            .messages()
            .iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                let group = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                    .cloned()
                    .unwrap_or_default();
                Some(Message {
                    task_id: m.body()?.to_owned(),
                    receipt: m.receipt_handle()?.to_owned(),
                    receive_count,
                    group,
                })
            })
            .collect())
    }

    async fn extend(&self, receipt: &str, visibility_secs: u64) -> Result<(), Error> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(visibility(visibility_secs))
            .send()
            .await
            .map_err(fail)?;
        Ok(())
    }

    /// SQS cannot take back a receive: the task goes back as a new message (delayed at most
    /// SQS's 15 minutes), then the received one is deleted. A failure in between leaves both,
    /// and the task record makes the second run a no-op.
    async fn put_back(&self, message: &Message, delay_secs: u64) -> Result<(), Error> {
        self.send_in(&message.task_id, &message.group, delay_secs)
            .await?;
        self.delete(&message.receipt).await
    }

    async fn delete(&self, receipt: &str) -> Result<(), Error> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(fail)?;
        Ok(())
    }

    async fn depth(&self) -> Result<QueueDepth, Error> {
        let waiting = self
            .count(
                &self.url,
                &[QueueAttributeName::ApproximateNumberOfMessages],
            )
            .await?;
        let in_flight = self
            .count(
                &self.url,
                &[
                    QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                    QueueAttributeName::ApproximateNumberOfMessagesDelayed,
                ],
            )
            .await?;
        let dead = match &self.dead_letter_url {
            Some(url) => {
                self.count(url, &[QueueAttributeName::ApproximateNumberOfMessages])
                    .await?
            }
            None => 0,
        };
        Ok(QueueDepth {
            waiting,
            in_flight,
            dead,
        })
    }
}
