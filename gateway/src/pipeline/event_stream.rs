//! A chat's events as the pipeline hands them to a transport, with the work that makes them.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures::Stream;
use tracing::Instrument;

use crate::chat::ChatEvent;

type Work = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The events of one chat, and the work that produces them: reading the model stream, a flight,
/// or a stored answer. The work is not a task of its own: the reader's task polls it whenever it
/// asks for an event and none is waiting. That saves a task wake-up per delta, which at a
/// thousand concurrent streams is a large share of the server's CPU (see README, Benchmarks).
/// The work still runs ahead of a slow reader by up to `capacity` events.
///
/// Between the two is a plain queue, with no wakers: only this task fills it, and it polls the
/// work whenever the queue is empty, so a full queue needs no wake-up to resume and an event
/// needs none to be read. The stream ends when the work does. Dropping the stream drops the
/// work, which aborts the model call or leaves the flight.
pub struct EventStream {
    queue: Arc<Queue>,
    work: Option<Work>,
}

struct Queue {
    events: Mutex<VecDeque<ChatEvent>>,
    capacity: usize,
}

impl Queue {
    fn events(&self) -> MutexGuard<'_, VecDeque<ChatEvent>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where a stream's work puts its events.
pub struct EventSender(Arc<Queue>);

impl EventSender {
    /// Queues `event`, waiting while the queue is full. The reader cannot be gone: dropping the
    /// stream drops the work that holds this sender.
    pub async fn send(&self, event: ChatEvent) {
        let mut event = Some(event);
        std::future::poll_fn(|_| {
            let mut events = self.0.events();
            if events.len() >= self.0.capacity {
                // Resumed when the reader has taken them all (see `EventStream::poll_next`).
                return Poll::Pending;
            }
            events.extend(event.take());
            Poll::Ready(())
        })
        .await;
    }
}

impl EventStream {
    /// A queue of `capacity` events, and the stream reading it while `work(sender)` fills it.
    /// The work runs in the caller's span.
    pub fn new<F>(capacity: usize, work: impl FnOnce(EventSender) -> F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let queue = Arc::new(Queue {
            events: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
        });
        let sender = EventSender(queue.clone());
        Self {
            queue,
            work: Some(Box::pin(work(sender).in_current_span())),
        }
    }
}

impl Stream for EventStream {
    type Item = ChatEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ChatEvent>> {
        let this = &mut *self;
        if let Some(event) = this.queue.events().pop_front() {
            return Poll::Ready(Some(event));
        }
        if let Some(work) = &mut this.work
            && work.as_mut().poll(cx).is_ready()
        {
            this.work = None;
        }
        match this.queue.events().pop_front() {
            Some(event) => Poll::Ready(Some(event)),
            None if this.work.is_none() => Poll::Ready(None),
            // Empty and the work pending: it waits for the model (or a flight), which will wake
            // this task.
            None => Poll::Pending,
        }
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
            index: 0,
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
                tx.send(delta(&i.to_string())).await;
            }
            tx.send(ChatEvent::Done {
                request_id: Arc::from("r"),
                stop_reason: "end_turn".into(),
                usage: Usage::default(),
                latency_ms: 0,
                cached: false,
                billed_usage: None,
                citations: None,
                upstream_time: None,
            })
            .await;
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
            tx.send(delta("a")).await;
            std::future::pending::<()>().await;
        });
        assert_eq!(texts(&[stream.next().await.unwrap()]), ["a"]);
        assert!(!dropped.load(Ordering::SeqCst), "the work is still going");
        drop(stream);
        assert!(dropped.load(Ordering::SeqCst));
    }
}
