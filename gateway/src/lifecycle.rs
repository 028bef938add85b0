//! Shutdown as every part of a running gateway sees it, in two steps. At the signal the gateway
//! starts *draining*: readiness turns 503, no new chat is admitted, task workers put back what
//! they run, and WebSocket sessions close once their chats end. When the grace period is *over*,
//! every chat still streaming ends with a retryable `unavailable` error event, so each transport
//! closes it properly (an SSE end, a gRPC status, a WebSocket close 1001) instead of cutting it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Where the gateway is in its life, and the chats it still has in flight.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: CancellationToken,
    over: CancellationToken,
    in_flight: Tally,
}

/// A count of things in flight (chats, connections) that can be waited on until it is zero.
#[derive(Debug, Default)]
pub struct Tally {
    n: AtomicUsize,
    zero: Notify,
}

impl Tally {
    pub fn get(&self) -> usize {
        self.n.load(Ordering::SeqCst)
    }

    pub fn add(&self) {
        self.n.fetch_add(1, Ordering::SeqCst);
    }

    /// Adds one unless `max` are counted already; says whether it did.
    pub fn add_below(&self, max: usize) -> bool {
        self.n
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    pub fn remove(&self) {
        if self.n.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.zero.notify_waiters();
        }
    }

    /// Resolves when the count is zero.
    pub async fn zero(&self) {
        loop {
            let notified = self.zero.notified();
            tokio::pin!(notified);
            // Registered before the check, so a decrement in between still wakes it.
            notified.as_mut().enable();
            if self.get() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Lifecycle {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The signal came: take no new work.
    pub fn drain(&self) {
        self.draining.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Resolves once draining has begun.
    pub async fn draining(&self) {
        self.draining.cancelled().await;
    }

    /// The grace period is over: end what still runs. Implies draining.
    pub fn end_grace(&self) {
        self.draining.cancel();
        self.over.cancel();
    }

    /// A token cancelled when the grace period is over, for streams that must end then.
    pub fn over(&self) -> CancellationToken {
        self.over.clone()
    }

    /// Counts one chat in flight until the guard is dropped.
    pub fn chat(self: &Arc<Self>) -> InFlight {
        self.in_flight.add();
        InFlight(self.clone())
    }

    /// Chats in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.get()
    }

    /// Resolves when no chat is in flight.
    pub async fn quiet(&self) {
        self.in_flight.zero().await;
    }
}

/// One chat in flight; see [`Lifecycle::chat`].
#[derive(Debug)]
pub struct InFlight(Arc<Lifecycle>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.remove();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn quiet_waits_for_the_last_chat() {
        let life = Lifecycle::new();
        let (a, b) = (life.chat(), life.chat());
        let quiet = tokio::spawn({
            let life = life.clone();
            async move { life.quiet().await }
        });
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!quiet.is_finished(), "one chat is still in flight");
        drop(b);
        quiet.await.unwrap();
        assert_eq!(life.in_flight(), 0);
    }

    #[test]
    fn the_end_of_grace_implies_draining() {
        let life = Lifecycle::new();
        assert!(!life.is_draining());
        life.end_grace();
        assert!(life.is_draining() && life.over().is_cancelled());
    }
}
