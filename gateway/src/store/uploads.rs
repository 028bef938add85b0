//! Upload records: who declared which file, and whether its bytes have arrived. The bytes are in
//! the blob store under the declared SHA-256; the record is the caller's handle on them until it
//! expires.

use async_trait::async_trait;
use nagare_authorizer::Principal;

use crate::error::Error;

/// One upload, written by `POST /v1/uploads`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    pub upload_id: String,
    /// The owner: only this tenant and subject may name the upload.
    pub tenant: String,
    pub sub: String,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    /// The declared SHA-256, hex: the bytes must match it, and are stored under it.
    pub sha256: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    /// Seconds since the Unix epoch; a sweep (or DynamoDB's TTL) removes the record after it.
    pub expires_at: u64,
    /// The bytes arrived, matched and are in the blob store.
    pub stored: bool,
}

impl UploadRecord {
    /// Whether `principal` owns it.
    pub fn is_owned_by(&self, principal: &Principal) -> bool {
        self.tenant == principal.tenant && self.sub == principal.sub
    }
}

/// Where upload records live: the SQLite file, or DynamoDB.
#[async_trait]
pub trait UploadStore: Send + Sync {
    async fn create(&self, record: &UploadRecord) -> Result<(), Error>;

    /// The record, expired or not (the caller decides), or `None`.
    async fn get(&self, upload_id: &str) -> Result<Option<UploadRecord>, Error>;

    /// Marks the bytes arrived, once: `false` when they had already.
    async fn mark_stored(&self, upload_id: &str) -> Result<bool, Error>;

    /// Records that expired at or before `now` (seconds), at most `limit`, for the sweep.
    async fn expired(&self, now: u64, limit: usize) -> Result<Vec<UploadRecord>, Error>;

    async fn delete(&self, upload_id: &str) -> Result<(), Error>;
}
