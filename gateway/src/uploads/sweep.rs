//! Collecting what attachments leave behind: upload records past their expiry (with any bytes
//! PUT for them and never used), and blobs that neither a live upload nor a conversation names.
//! A blob must also be older than [`GRACE`]: a chat's inline bytes are stored before its
//! exchange is recorded, and a new upload's bytes before a chat names them.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::store::{ConversationStore, UploadStore};
use crate::uploads::BlobStore;

/// How old a blob must be before the sweep may collect it.
pub const GRACE: Duration = Duration::from_secs(3600);
/// The most records, and blobs, one sweep looks at.
const BATCH: usize = 1000;

/// One sweep's work, for the log and the tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub uploads: usize,
    pub blobs: usize,
}

/// Collects expired uploads and unnamed blobs.
#[derive(Clone)]
pub struct Sweep {
    pub(super) records: Arc<dyn UploadStore>,
    pub(super) blobs: Arc<dyn BlobStore>,
    /// Where conversations name blobs; `None`: none do.
    pub(super) conversations: Option<Arc<dyn ConversationStore>>,
}

impl Sweep {
    /// One sweep as of `now` (a test passes a later time instead of waiting).
    pub async fn run(&self, now: SystemTime) -> Result<Swept, Error> {
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut swept = Swept::default();
        for record in self.records.expired(secs, BATCH).await? {
            self.blobs.drop_incoming(&record.upload_id).await?;
            self.records.delete(&record.upload_id).await?;
            swept.uploads += 1;
        }
        let cutoff = now.checked_sub(GRACE).unwrap_or(UNIX_EPOCH);
        for sha256 in self.blobs.older_than(cutoff, BATCH).await? {
            if self.records.names_blob(&sha256, secs).await? {
                continue;
            }
            if let Some(conversations) = &self.conversations
                && conversations.names_blob(&sha256).await?
            {
                continue;
            }
            self.blobs.delete(&sha256).await?;
            swept.blobs += 1;
        }
        Ok(swept)
    }

    /// Sweeps every `every` until `stop`; a failed sweep is logged and tried again next time.
    pub fn spawn(self, every: Duration, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                match self.run(SystemTime::now()).await {
                    Ok(swept) if swept == Swept::default() => {}
                    Ok(swept) => tracing::info!(
                        uploads = swept.uploads,
                        blobs = swept.blobs,
                        "uploads swept"
                    ),
                    Err(e) => tracing::warn!(error = %e, "the uploads sweep failed; next time"),
                }
            }
        })
    }
}
