//! The asynchronous invocation that streams one chat to an API Gateway connection: deltas are
//! coalesced into posts, throttled posts are retried, and the chat stops, aborting the upstream
//! model call, when the client cancels it, disconnects, or a post answers 410 Gone.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use nagare_authorizer::Principal;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::WsFunction;
use super::ws::Target;
use crate::chat::{ChatRequest, Route};
use crate::error::Error;
use crate::push::{self, Coalescer, PushError};
use crate::store::{ChatState, connection_principal};
use crate::ws::frames;

/// One admitted chat, handed from the `chat` route to an asynchronous invocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateJob {
    pub connection_id: String,
    /// The Management API endpoint of the connection.
    pub endpoint: String,
    /// Who the chat runs as: the connection record's verified subject.
    pub sub: String,
    pub tenant: String,
    pub scopes: String,
    /// Admitted by the `chat` route, with its request id filled in.
    pub request: ChatRequest,
}

impl GenerateJob {
    fn principal(&self) -> Principal {
        connection_principal(&self.sub, &self.tenant, &self.scopes)
    }
}

/// Streams the chat, then frees its slot on the connection.
pub(super) async fn run(f: &WsFunction, job: GenerateJob) {
    let started = std::time::Instant::now();
    let target = Target {
        endpoint: job.endpoint.clone(),
        connection_id: &job.connection_id,
    };
    let request_id = job.request.id().to_owned();
    match stream(f, &job, &target, started).await {
        Err(PushError::Gone) => {
            // The client left without a `$disconnect` we have seen yet: forget it now.
            let _ = f.store.delete(&job.connection_id).await;
        }
        Err(e) => tracing::info!(error = %e, "stopped streaming: the connection failed"),
        Ok(()) => {}
    }
    let _ = f.store.finish(&job.connection_id, &request_id).await;
}

async fn stream(
    f: &WsFunction,
    job: &GenerateJob,
    target: &Target<'_>,
    started: std::time::Instant,
) -> Result<(), PushError> {
    let request_id = job.request.id();
    // Admitted again: the job crossed a process boundary as plain data.
    let chat = f.app.pipeline.admit(
        job.request.clone(),
        &job.principal(),
        Route::LambdaWebSocket,
        started,
    );
    let begun = match chat {
        Ok(chat) => f.app.pipeline.start(chat).await,
        Err(e) => Err(e),
    };
    let mut events = match begun {
        Ok(events) => events,
        Err(e) => return post(f, target, frames::error(Some(request_id), &e).into()).await,
    };
    let mut coalescer = Coalescer::new(Duration::from_millis(f.settings.coalesce_ms));
    let mut poll = tokio::time::interval(Duration::from_millis(f.settings.cancel_poll_ms.max(10)));
    poll.tick().await;
    loop {
        let due = coalescer.due();
        let frames = tokio::select! {
            biased;
            event = events.next() => match event {
                Some(event) => coalescer.push(&event, Instant::now()),
                None => return Ok(()),
            },
            () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                coalescer.flush()
            }
            _ = poll.tick() => match f.store.chat_state(&job.connection_id, request_id).await {
                // A store hiccup is not a reason to stop a paying stream; the next poll retries.
                Ok(ChatState::Active) | Err(_) => continue,
                Ok(ChatState::Cancelled) => {
                    // Dropping the stream aborts the upstream call.
                    drop(events);
                    let mut last = coalescer.flush();
                    last.push(frames::error(Some(request_id), &Error::Cancelled));
                    for frame in last {
                        post(f, target, frame.into()).await?;
                    }
                    return Ok(());
                }
                Ok(ChatState::Gone) => return Ok(()),
            },
        };
        for frame in frames {
            post(f, target, frame.into()).await?;
        }
    }
}

/// Posts one frame, retrying throttled and 5xx posts.
pub(super) async fn post(
    f: &WsFunction,
    target: &Target<'_>,
    frame: Bytes,
) -> Result<(), PushError> {
    push::post_with_retries(
        f.pusher.as_ref(),
        &target.endpoint,
        target.connection_id,
        frame,
        f.settings.post_retries,
    )
    .await
}
