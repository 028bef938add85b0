//! Collecting what Nagare keeps once it is no longer wanted: exchanges past
//! `memory.retention_days`, upload records past their expiry (with any bytes PUT for them and
//! never used), and blobs that neither a live upload nor a conversation names. A blob must also
//! be older than [`GRACE`]: a chat's inline bytes are stored before its exchange is recorded, and
//! a new upload's bytes before a chat names them. DynamoDB's TTL and S3's lifecycle rules do the
//! same on AWS, where the Lambda functions run no sweep.

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
    pub exchanges: u64,
    pub uploads: usize,
    pub blobs: usize,
}

/// What the sweep collects, each part when it is configured.
#[derive(Clone, Default)]
pub struct Sweep {
    /// Conversations, which also name blobs.
    pub conversations: Option<Arc<dyn ConversationStore>>,
    /// How long an exchange is kept; `None`: for ever.
    pub retention: Option<Duration>,
    /// Upload records and the blob store, when uploads are on.
    pub uploads: Option<(Arc<dyn UploadStore>, Arc<dyn BlobStore>)>,
}

impl Sweep {
    /// One sweep as of `now` (a test passes a later time instead of waiting).
    pub async fn run(&self, now: SystemTime) -> Result<Swept, Error> {
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut swept = Swept::default();
        // Conversations first: the blobs of the exchanges they drop go in the same sweep.
        if let (Some(conversations), Some(retention)) = (&self.conversations, self.retention) {
            let cutoff = since_epoch.saturating_sub(retention).as_millis() as u64;
            swept.exchanges = conversations.expire(cutoff).await?;
        }
        let Some((records, blobs)) = &self.uploads else {
            return Ok(swept);
        };
        let secs = since_epoch.as_secs();
        for record in records.expired(secs, BATCH).await? {
            blobs.drop_incoming(&record.upload_id).await?;
            records.delete(&record.upload_id).await?;
            swept.uploads += 1;
        }
        let cutoff = now.checked_sub(GRACE).unwrap_or(UNIX_EPOCH);
        for sha256 in blobs.older_than(cutoff, BATCH).await? {
            if records.names_blob(&sha256, secs).await? {
                continue;
            }
            if let Some(conversations) = &self.conversations
                && conversations.names_blob(&sha256).await?
            {
                continue;
            }
            blobs.delete(&sha256).await?;
            swept.blobs += 1;
        }
        Ok(swept)
    }

    /// Whether there is anything to sweep.
    pub fn has_work(&self) -> bool {
        self.retention.is_some() || self.uploads.is_some()
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
                        exchanges = swept.exchanges,
                        uploads = swept.uploads,
                        blobs = swept.blobs,
                        "swept"
                    ),
                    Err(e) => tracing::warn!(error = %e, "the sweep failed; next time"),
                }
            }
        })
    }
}
