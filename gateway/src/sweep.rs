//! Collecting what Nagare keeps once it is no longer wanted: exchanges past
//! `memory.retention_days`, upload records past their expiry (with any bytes PUT for them and
//! never used), and blobs no conversation names that no live upload can name either. A blob is
//! written (again) whenever an upload or a chat stores its bytes, so one last written more than
//! an upload's lifetime plus [`GRACE`] ago is named by no live upload; the grace covers a chat's
//! inline bytes, stored before its exchange is recorded. On AWS, DynamoDB's TTL takes exchanges
//! and upload records, and the `nagare-sweep` function runs this for the blobs.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::store::ConversationStore;
use crate::uploads::UploadParts;

/// How much older than an upload's lifetime a blob must be before the sweep may collect it.
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
    pub uploads: Option<UploadParts>,
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
        let Some(UploadParts {
            records,
            blobs,
            ttl,
        }) = &self.uploads
        else {
            return Ok(swept);
        };
        for record in records.expired(since_epoch.as_secs(), BATCH).await? {
            blobs.drop_incoming(&record.upload_id).await?;
            records.delete(&record.upload_id).await?;
            swept.uploads += 1;
        }
        let cutoff = now.checked_sub(*ttl + GRACE).unwrap_or(UNIX_EPOCH);
        for sha256 in blobs.older_than(cutoff, BATCH).await? {
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
