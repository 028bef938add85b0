//! The cap on open connections, shared by every listener of a process: kept below the
//! open-file limit, so that a flood of idle sockets leaves descriptors for the database, the
//! model's connections and the clients already served.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Descriptors kept back from the open-file limit for everything that is not a client socket
/// (the database, the model's connections, logs): a quarter of it, at most this many.
const RESERVED_DESCRIPTORS: u64 = 1024;

/// Open connections, and those refused for being over the cap.
#[derive(Debug)]
pub struct ConnectionCap {
    max: usize,
    open: AtomicUsize,
    refused: AtomicU64,
    closed: Notify,
}

impl ConnectionCap {
    /// A cap of `max`, lowered to fit under `file_limit` (the soft open-file limit) with room to
    /// spare.
    pub fn new(max: usize, file_limit: Option<u64>) -> Arc<Self> {
        let fits = file_limit
            .map(|l| l - (l / 4).min(RESERVED_DESCRIPTORS))
            .map_or(usize::MAX, |n| {
                usize::try_from(n.max(1)).unwrap_or(usize::MAX)
            });
        if max > fits {
            tracing::warn!(
                max_connections = max,
                lowered_to = fits,
                "server.max_connections leaves too few of the open-file limit's descriptors; lowering it"
            );
        }
        Arc::new(Self {
            max: max.min(fits),
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            closed: Notify::new(),
        })
    }

    /// The cap in force.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for one more connection, or `None` (and one more refusal counted) at the cap.
    pub fn open(self: &Arc<Self>) -> Option<Slot> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        match taken {
            Ok(_) => Some(Slot(self.clone())),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Connections open now.
    pub fn open_now(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Connections refused since start-up.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Resolves when no connection is open.
    pub async fn closed(&self) {
        loop {
            let notified = self.closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open_now() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One open connection under the cap; dropping it (when the socket closes) frees the slot.
#[derive(Debug)]
pub struct Slot(Arc<ConnectionCap>);

impl Drop for Slot {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.closed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_cap_is_refused_and_counted_until_a_slot_frees() {
        let cap = ConnectionCap::new(2, None);
        let (a, _b) = (cap.open().unwrap(), cap.open().unwrap());
        assert!(cap.open().is_none());
        assert_eq!((cap.open_now(), cap.refused()), (2, 1));
        drop(a);
        assert!(cap.open().is_some());
    }

    #[test]
    fn the_cap_stays_under_the_file_limit() {
        assert_eq!(ConnectionCap::new(30_000, Some(20_000)).max(), 18_976);
        assert_eq!(ConnectionCap::new(10_000, Some(1024)).max(), 768);
        assert_eq!(ConnectionCap::new(100, Some(4096)).max(), 100);
    }
}
