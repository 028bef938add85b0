//! A chat's events as the pipeline hands them to a transport, with the work that makes them.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::chat::ChatEvent;

type Work = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The events of one chat, and the work that produces them: reading the model stream, a flight,
/// or a stored answer. The work is not a task of its own: the reader's task polls it whenever it
/// asks for an event and none is waiting. That saves a task wake-up per delta, which at a
/// thousand concurrent streams is a large share of the server's CPU (see README, Benchmarks).
/// The work still runs ahead of a slow reader by up to the channel's capacity.
///
/// The work holds the only sender, so the stream ends when the work does. Dropping the stream
/// drops the work, which aborts the model call or leaves the flight.
pub struct EventStream {
    events: mpsc::Receiver<ChatEvent>,
    work: Option<Work>,
}

impl EventStream {
    /// A channel of `capacity` events, and the stream reading it while `work(sender)` fills it.
    /// The work runs in the caller's span.
    pub fn new<F>(capacity: usize, work: impl FnOnce(mpsc::Sender<ChatEvent>) -> F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        Self {
            events: rx,
            work: Some(Box::pin(work(tx).in_current_span())),
        }
    }
}

impl Stream for EventStream {
    type Item = ChatEvent;

    // The channel is read with `try_recv`, which leaves no waker: only this task fills it, and it
    // polls the work whenever the channel is empty, so a wake-up per event would only make the
    // task run once more for nothing.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ChatEvent>> {
        let this = &mut *self;
        if let Some(event) = take(&mut this.events) {
            return Poll::Ready(event);
        }
        if let Some(work) = &mut this.work
            && work.as_mut().poll(cx).is_ready()
        {
            // Its sender is dropped with it, so the channel ends once drained.
            this.work = None;
        }
        // Empty and the work pending: it is waiting for the model (or for a reader of the
        // flight), which will wake this task.
        take(&mut this.events).map_or(Poll::Pending, Poll::Ready)
    }
}

/// The next event, `Some(None)` once the channel has ended, or `None` while it is empty.
fn take(events: &mut mpsc::Receiver<ChatEvent>) -> Option<Option<ChatEvent>> {
    match events.try_recv() {
        Ok(event) => Some(Some(event)),
        Err(mpsc::error::TryRecvError::Disconnected) => Some(None),
        Err(mpsc::error::TryRecvError::Empty) => None,
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("working", &self.work.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use futures::StreamExt;

    use super::*;
    use crate::chat::Usage;

    fn delta(text: &str) -> ChatEvent {
        ChatEvent::Delta {
            request_id: Arc::from("r"),
            text: text.into(),
        }
    }

    fn texts(events: &[ChatEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                ChatEvent::Delta { text, .. } => text.clone(),
                other => other.kind().to_owned(),
            })
            .collect()
    }

    #[tokio::test]
    async fn more_events_than_the_channel_holds_arrive_in_order_then_the_stream_ends() {
        let stream = EventStream::new(2, |tx| async move {
            for i in 0..10 {
                tx.send(delta(&i.to_string())).await.unwrap();
            }
            tx.send(ChatEvent::Done {
                request_id: Arc::from("r"),
                stop_reason: "end_turn".into(),
                usage: Usage::default(),
                latency_ms: 0,
                cached: false,
                billed_usage: None,
                upstream_time: None,
            })
            .await
            .unwrap();
        });
        let events: Vec<ChatEvent> = stream.collect().await;
        let expected: Vec<String> = (0..10)
            .map(|i| i.to_string())
            .chain(["done".into()])
            .collect();
        assert_eq!(texts(&events), expected);
    }

    #[tokio::test]
    async fn dropping_the_stream_drops_the_work() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = Flag(dropped.clone());
        let mut stream = EventStream::new(4, |tx| async move {
            let _flag = flag;
            tx.send(delta("a")).await.unwrap();
            std::future::pending::<()>().await;
        });
        assert_eq!(texts(&[stream.next().await.unwrap()]), ["a"]);
        assert!(!dropped.load(Ordering::SeqCst), "the work is still going");
        drop(stream);
        assert!(dropped.load(Ordering::SeqCst));
    }
}
