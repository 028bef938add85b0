//! The cap on open connections, shared by every listener of a process: kept below the
//! open-file limit, so that a flood of idle sockets leaves descriptors for the database, the
//! model's connections and the clients already served.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::lifecycle::Tally;

/// Descriptors kept back from the open-file limit for everything that is not a client socket
/// (the database, the model's connections, logs): a quarter of it, at most this many.
const RESERVED_DESCRIPTORS: u64 = 1024;

/// Open connections, and those refused for being over the cap.
#[derive(Debug)]
pub struct ConnectionCap {
    max: usize,
    open: Tally,
    refused: AtomicU64,
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
            open: Tally::default(),
            refused: AtomicU64::new(0),
        })
    }

    /// The cap in force.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for one more connection, or `None` (and one more refusal counted) at the cap.
    pub fn open(self: &Arc<Self>) -> Option<Slot> {
        if self.open.add_below(self.max) {
            Some(Slot(self.clone()))
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Connections open now.
    pub fn open_now(&self) -> usize {
        self.open.get()
    }

    /// Connections refused since start-up.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Resolves when no connection is open.
    pub async fn closed(&self) {
        self.open.zero().await;
    }
}

/// One open connection under the cap; dropping it (when the socket closes) frees the slot.
#[derive(Debug)]
pub struct Slot(Arc<ConnectionCap>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.remove();
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
