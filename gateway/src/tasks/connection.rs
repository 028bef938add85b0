//! Delivery of a finished task to its submitter's WebSocket connection, as the events of a chat:
//! `start`, `delta` (the answer, split to fit API Gateway's frames), `done`; or one `error`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nagare_authorizer::Principal;
use tokio::time::Instant;

use super::{TaskRecord, TaskStatus};
use crate::chat::{Block, ChatEvent, batches, parts_of_blocks};
use crate::error::Error;
use crate::push::{self, Coalescer, ConnectionDirectory, ConnectionPusher, PushError};

/// Finds connections and pushes to them.
pub struct ConnectionDelivery {
    directory: Arc<dyn ConnectionDirectory>,
    pusher: Arc<dyn ConnectionPusher>,
    /// Retries of a throttled post.
    post_retries: u32,
}

impl ConnectionDelivery {
    pub fn new(
        directory: Arc<dyn ConnectionDirectory>,
        pusher: Arc<dyn ConnectionPusher>,
        post_retries: u32,
    ) -> Self {
        Self {
            directory,
            pusher,
            post_retries,
        }
    }

    /// At submit: `connection_id` must name an open connection of the caller's. Someone else's
    /// is refused as a missing one is, so ids cannot be probed.
    pub async fn vet(&self, principal: &Principal, connection_id: &str) -> Result<(), Error> {
        if connection_id.is_empty() || connection_id.len() > 128 {
            return Err(Error::InvalidRequest(
                "connection_id: 1 to 128 characters".into(),
            ));
        }
        match self.directory.find(connection_id).await? {
            Some(c) if c.opened_by(&principal.sub, &principal.tenant) => Ok(()),
            _ => Err(Error::InvalidRequest(format!(
                "connection_id: no open WebSocket connection of yours has the id '{connection_id}'"
            ))),
        }
    }

    /// Pushes the outcome of the finished `record` to its connection; true when every frame was
    /// accepted. A connection that closed, or now belongs to someone else, gets nothing.
    pub async fn deliver(&self, record: &TaskRecord) -> bool {
        let Some(connection_id) = record.connection_id.as_deref() else {
            return true;
        };
        let target = match self.directory.find(connection_id).await {
            Ok(Some(t)) if t.opened_by(&record.sub, &record.tenant) => t,
            Ok(_) => {
                tracing::info!("the task's connection is closed; nothing to push");
                return false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "looking up the task's connection failed");
                return false;
            }
        };
        for frame in frames(record) {
            let posted = push::post_with_retries(
                self.pusher.as_ref(),
                &target.endpoint,
                connection_id,
                Bytes::from(frame),
                self.post_retries,
            )
            .await;
            if let Err(e) = posted {
                let gone = matches!(e, PushError::Gone);
                tracing::info!(error = %e, gone, "pushing a task's outcome failed");
                return false;
            }
        }
        true
    }
}

/// The frames of a finished task, in order.
fn frames(record: &TaskRecord) -> Vec<String> {
    let reply = match record.status {
        TaskStatus::Succeeded => record.result.clone(),
        _ => None,
    };
    let Some(reply) = reply else {
        let error = record
            .error
            .clone()
            .unwrap_or_else(|| Error::Internal("the task has no outcome".into()).body());
        let event = ChatEvent::Error {
            request_id: record.request.id().into(),
            error,
        };
        return vec![serde_json::to_string(&event).unwrap_or_default()];
    };
    let request_id: Arc<str> = reply.request_id.as_str().into();
    let blocks = match reply.message.blocks {
        Some(blocks) => blocks,
        None => vec![Block::text(reply.message.content)],
    };
    let start = ChatEvent::Start {
        request_id: request_id.clone(),
        conversation_id: reply.conversation_id,
        model: reply.model,
        cached: reply.cached,
    };
    let sources: Vec<ChatEvent> = batches(reply.sources.as_deref().unwrap_or_default())
        .into_iter()
        .map(|batch| ChatEvent::Sources {
            request_id: request_id.clone(),
            sources: batch.to_vec(),
        })
        .collect();
    let id = request_id.clone();
    let answer = parts_of_blocks(&blocks)
        .into_iter()
        .map(move |part| ChatEvent::of_part(id.clone(), part));
    let events = std::iter::once(start)
        .chain(sources)
        .chain(answer)
        .chain([ChatEvent::Done {
            request_id,
            stop_reason: reply.stop_reason,
            usage: reply.usage,
            latency_ms: reply.latency_ms,
            cached: reply.cached,
            billed_usage: reply.billed_usage,
            citations: reply.citations,
            upstream_time: None,
        }]);
    // The coalescer splits a long answer into deltas that each fit one API Gateway frame.
    let mut coalescer = Coalescer::new(Duration::ZERO);
    let now = Instant::now();
    events
        .flat_map(|event| coalescer.push(&event, now))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{ReplyMessage, Usage};
    use crate::push::MAX_POST_BYTES;

    fn record(status: TaskStatus) -> TaskRecord {
        TaskRecord {
            task_id: "t1".into(),
            sub: "alice".into(),
            tenant: "default".into(),
            scopes: "chat".into(),
            request: crate::chat::parse_chat_request(br#"{"message":"hi","request_id":"r1"}"#)
                .unwrap(),
            status,
            attempts: 1,
            result: None,
            error: None,
            callback_url: None,
            delivery: None,
            delivery_attempts: 0,
            connection_id: Some("c1".into()),
            connection_delivery: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn kinds(frames: &[String]) -> Vec<String> {
        frames
            .iter()
            .map(|f| {
                let v: serde_json::Value = serde_json::from_str(f).unwrap();
                v["type"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    #[test]
    fn a_long_answer_is_split_into_deltas_that_fit_a_frame() {
        let content = "é\"".repeat(30_000);
        let reply = crate::chat::ChatReply {
            request_id: "r1".into(),
            conversation_id: Some("c9".into()),
            model: "mock".into(),
            message: ReplyMessage {
                role: "assistant".into(),
                content: content.clone(),
                blocks: None,
            },
            stop_reason: "end_turn".into(),
            usage: Usage::new(1, 2),
            latency_ms: 3,
            cached: false,
            billed_usage: None,
            sources: None,
            citations: None,
        };
        let mut r = record(TaskStatus::Succeeded);
        r.result = Some(reply);
        let frames = frames(&r);
        let kinds = kinds(&frames);
        assert_eq!(kinds.first().map(String::as_str), Some("start"));
        assert_eq!(kinds.last().map(String::as_str), Some("done"));
        assert!(kinds.len() > 4, "{kinds:?}");
        assert!(frames.iter().all(|f| f.len() <= MAX_POST_BYTES));
        let text: String = frames
            .iter()
            .filter_map(|f| {
                let v: serde_json::Value = serde_json::from_str(f).unwrap();
                assert_eq!(v["request_id"], "r1");
                v["text"].as_str().map(str::to_owned)
            })
            .collect();
        assert_eq!(text, content);
    }

    #[test]
    fn a_failed_task_is_one_error_frame_with_its_request_id() {
        let mut r = record(TaskStatus::Failed);
        r.error = Some(Error::UpstreamUnavailable("down".into()).body());
        let frames = frames(&r);
        assert_eq!(kinds(&frames), ["error"]);
        let v: serde_json::Value = serde_json::from_str(&frames[0]).unwrap();
        assert_eq!(v["request_id"], "r1");
        assert_eq!(v["code"], "upstream_unavailable");
    }
}
