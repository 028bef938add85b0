//! Attachments. A client declares a file (`POST /v1/uploads`: name, type, size, SHA-256) and
//! gets a URL to PUT its bytes to; the bytes must match the declaration and be what they claim
//! to be, or nothing is kept. Chats then name the upload in an image or document block, and the
//! pipeline ([`Attach`]) loads the bytes for the model. The bytes live in a content-addressed
//! [`BlobStore`]; history keeps only their SHA-256.

mod attach;
pub mod blob;
mod put_url;
mod s3;
pub(crate) mod sniff;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nagare_authorizer::Principal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use attach::{Attach, detach};
pub use blob::{BlobStore, DirectPut, FsBlobStore, PutTarget, is_sha256_hex};
pub use put_url::PutUrls;
pub use s3::S3BlobStore;

use crate::chat::{CONTENT_TYPES, Format};
use crate::error::Error;
use crate::store::{UploadRecord, UploadStore, unix_now, unix_now_ms};

/// Bedrock's limits on one attachment.
pub const MAX_IMAGE_BYTES: u64 = 3_750_000;
pub const MAX_DOCUMENT_BYTES: u64 = 4_500_000;
pub const MAX_IMAGE_SIDE: u32 = 8_000;
const MAX_FILENAME_CHARS: usize = 255;

/// `[uploads]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadSettings {
    /// `/v1/uploads`, and image and document blocks in chats.
    pub enabled: bool,
    /// How long an upload id may be named (and its URL used) after it is declared. What a
    /// conversation keeps does not expire with it.
    pub ttl_secs: u64,
    /// Where the URL handed out for the PUT points, self-hosted: `https://chat.example.com`.
    /// Unset, the address the client used (its `Host` header).
    pub public_url: Option<String>,
    /// Where the bytes live: files under the data dir, or S3.
    pub store: BlobKind,
    /// The S3 bucket (`store = "s3"`), and the prefix of its keys.
    pub bucket: String,
    pub prefix: String,
    /// Path-style S3 URLs (`http://host/bucket/key`), for S3-compatible servers on an address.
    pub s3_force_path_style: bool,
    /// The DynamoDB table of upload records, when `[store]` is DynamoDB (PK `upload_id`, TTL
    /// attribute `ttl`).
    pub table: String,
}

/// Where attachment bytes live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    /// `{data_dir}/blobs/`.
    #[default]
    Filesystem,
    S3,
}

impl Default for UploadSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl_secs: 24 * 3600,
            public_url: None,
            store: BlobKind::Filesystem,
            bucket: String::new(),
            prefix: String::new(),
            s3_force_path_style: false,
            table: "nagare-uploads".into(),
        }
    }
}

impl UploadSettings {
    /// Checks the values uploads cannot run with; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.ttl_secs == 0 {
            return Err("uploads.ttl_secs: must be at least 1".into());
        }
        if self.store == BlobKind::S3 && self.bucket.trim().is_empty() {
            return Err("uploads.bucket: store = \"s3\" needs a bucket".into());
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err("uploads.public_url: must start with http:// or https://".into());
        }
        Ok(())
    }
}

/// What a client declares before it sends the bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
}

/// The answer to a declaration: where to PUT the bytes, with which headers, until when.
#[derive(Debug, Clone, Serialize)]
pub struct Ticket {
    pub upload_id: String,
    pub put_url: String,
    /// Headers the PUT must send as given (a presigned S3 URL signs them); empty self-hosted.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub put_headers: BTreeMap<String, String>,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
}

/// An upload as its owner sees it (`GET /v1/uploads/{id}`, and the PUT's answer).
#[derive(Debug, Clone, Serialize)]
pub struct UploadInfo {
    pub upload_id: String,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
    /// `pending` until the bytes arrive, then `stored`.
    pub status: &'static str,
    pub expires_at: u64,
}

impl From<&UploadRecord> for UploadInfo {
    fn from(r: &UploadRecord) -> Self {
        Self {
            upload_id: r.upload_id.clone(),
            filename: r.filename.clone(),
            content_type: r.content_type.clone(),
            size: r.size,
            sha256: r.sha256.clone(),
            status: if r.stored { "stored" } else { "pending" },
            expires_at: r.expires_at,
        }
    }
}

/// The upload records, the blob store and an upload's lifetime.
#[derive(Clone)]
pub struct UploadParts {
    pub records: Arc<dyn UploadStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub ttl: Duration,
}

/// Uploads and the bytes behind them.
pub struct Uploads {
    records: Arc<dyn UploadStore>,
    blobs: Arc<dyn BlobStore>,
    urls: PutUrls,
    ttl: Duration,
}

impl Uploads {
    pub fn new(
        records: Arc<dyn UploadStore>,
        blobs: Arc<dyn BlobStore>,
        urls: PutUrls,
        settings: &UploadSettings,
    ) -> Self {
        Self {
            records,
            blobs,
            urls,
            ttl: Duration::from_secs(settings.ttl_secs),
        }
    }

    /// What the sweep needs of uploads.
    pub fn parts(&self) -> UploadParts {
        UploadParts {
            records: self.records.clone(),
            blobs: self.blobs.clone(),
            ttl: self.ttl,
        }
    }

    /// The blob store, for the pipeline's [`Attach`].
    pub fn blobs(&self) -> Arc<dyn BlobStore> {
        self.blobs.clone()
    }

    /// Records `declared` for `principal` and answers where to PUT its bytes. `origin` is the
    /// scheme and host the client reached us at, for a self-hosted URL.
    pub async fn declare(
        &self,
        principal: &Principal,
        declared: Declaration,
        origin: &str,
    ) -> Result<Ticket, Error> {
        let format = check_declaration(&declared)?;
        let upload_id = format!("up_{}", uuid::Uuid::new_v4().simple());
        let expires_at = unix_now() + self.ttl.as_secs();
        let record = UploadRecord {
            upload_id: upload_id.clone(),
            tenant: principal.tenant.clone(),
            sub: principal.sub.clone(),
            filename: declared.filename,
            content_type: declared.content_type,
            size: declared.size,
            sha256: declared.sha256.to_ascii_lowercase(),
            created_at: unix_now_ms(),
            expires_at,
            stored: false,
        };
        let direct = DirectPut {
            upload_id: &upload_id,
            content_type: &record.content_type,
            size: record.size,
            sha256: &record.sha256,
            expires_in: self.ttl,
        };
        let target = match self.blobs.direct_put(&direct).await? {
            Some(target) => target,
            None => PutTarget {
                url: self.urls.url(origin, &upload_id, expires_at),
                headers: Vec::new(),
            },
        };
        self.records.create(&record).await?;
        tracing::info!(
            upload_id,
            format = format.as_str(),
            size = record.size,
            "upload declared"
        );
        Ok(Ticket {
            put_url: target.url,
            put_headers: target.headers.into_iter().collect(),
            upload_id,
            expires_at,
        })
    }

    /// Takes the PUT of an upload's bytes through its self-hosted URL: the URL's signature and
    /// expiry, then the bytes against the declaration. Refused bytes leave nothing behind; the
    /// client may PUT again while the URL lasts.
    pub async fn receive(
        &self,
        upload_id: &str,
        expires: u64,
        signature: &str,
        body: Bytes,
    ) -> Result<UploadInfo, Error> {
        self.urls.verify(upload_id, expires, signature)?;
        if expires <= unix_now() {
            return Err(Error::Forbidden("this upload URL has expired".into()));
        }
        let record = self
            .records
            .get(upload_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no upload {upload_id}")))?;
        if record.stored {
            return Err(already_stored(upload_id));
        }
        check_bytes(&record, &body)?;
        self.blobs.put(&record.sha256, body).await?;
        if !self.records.mark_stored(upload_id).await? {
            return Err(already_stored(upload_id));
        }
        tracing::info!(upload_id, size = record.size, "upload stored");
        Ok(UploadInfo::from(&UploadRecord {
            stored: true,
            ..record
        }))
    }

    /// The caller's upload; another principal's, or one that expired, is not found. Bytes PUT
    /// straight into the store (S3) are checked here, the first time the upload is looked at
    /// after they arrive: kept as its blob, or refused with the rule they break and removed.
    pub async fn owned(
        &self,
        principal: &Principal,
        upload_id: &str,
    ) -> Result<UploadRecord, Error> {
        let record = match self.records.get(upload_id).await? {
            Some(r) if r.is_owned_by(principal) && r.expires_at > unix_now() => r,
            _ => return Err(Error::NotFound(format!("no upload {upload_id}"))),
        };
        if record.stored {
            return Ok(record);
        }
        let Some(bytes) = self.blobs.incoming(upload_id).await? else {
            return Ok(record);
        };
        if let Err(refused) = check_bytes(&record, &bytes) {
            self.blobs.drop_incoming(upload_id).await?;
            tracing::info!(upload_id, error = %refused, "upload refused");
            return Err(refused);
        }
        self.blobs.put(&record.sha256, bytes).await?;
        self.blobs.drop_incoming(upload_id).await?;
        // Another request may have settled it first; either way its bytes are kept.
        self.records.mark_stored(upload_id).await?;
        tracing::info!(upload_id, size = record.size, "upload stored");
        Ok(UploadRecord {
            stored: true,
            ..record
        })
    }
}

fn already_stored(upload_id: &str) -> Error {
    Error::Conflict(format!(
        "upload {upload_id} already holds its bytes; declare a new upload for other bytes"
    ))
}

/// A declaration's fields, each against its rule; the format its content type names.
fn check_declaration(d: &Declaration) -> Result<Format, Error> {
    let invalid = |field: &str, rule: String| Error::InvalidRequest(format!("{field}: {rule}"));
    if d.filename.trim().is_empty()
        || d.filename.chars().count() > MAX_FILENAME_CHARS
        || d.filename.chars().any(char::is_control)
    {
        return Err(invalid(
            "filename",
            format!("must be 1 to {MAX_FILENAME_CHARS} characters, none of them control"),
        ));
    }
    let format = Format::of_content_type(&d.content_type).ok_or_else(|| {
        invalid(
            "content_type",
            format!("'{}' is not one of {CONTENT_TYPES}", d.content_type),
        )
    })?;
    let max = max_bytes(format);
    if d.size == 0 || d.size > max {
        return Err(invalid(
            "size",
            format!("{} is 1 to {max} bytes (Bedrock's limit)", format.a_kind()),
        ));
    }
    if !is_sha256_hex(&d.sha256.to_ascii_lowercase()) {
        return Err(invalid("sha256", "must be 64 hex digits".into()));
    }
    Ok(format)
}

/// The most bytes one attachment of `format` may have.
pub fn max_bytes(format: Format) -> u64 {
    match format {
        Format::Image(_) => MAX_IMAGE_BYTES,
        Format::Document(_) => MAX_DOCUMENT_BYTES,
    }
}

/// The bytes against their declaration: size, SHA-256, then what they are.
fn check_bytes(record: &UploadRecord, body: &[u8]) -> Result<(), Error> {
    if body.len() as u64 != record.size {
        return Err(Error::InvalidRequest(format!(
            "the body is {} bytes, not the declared {}",
            body.len(),
            record.size
        )));
    }
    let sha256 = hex(&Sha256::digest(body));
    if sha256 != record.sha256 {
        return Err(Error::InvalidRequest(format!(
            "the bytes' SHA-256 is {sha256}, not the declared {}",
            record.sha256
        )));
    }
    let declared = Format::of_content_type(&record.content_type)
        .ok_or_else(|| Error::Internal("a stored declaration names no format".into()))?;
    checked(body, declared).map(drop)
}

/// `bytes` sniffed against `declared`, with an image's size against Bedrock's limit.
pub fn checked(bytes: &[u8], declared: Format) -> Result<sniff::Sniffed, Error> {
    let found = sniff::check(bytes, declared).map_err(Error::InvalidRequest)?;
    if let Some((w, h)) = found.dimensions
        && (w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE)
    {
        return Err(Error::InvalidRequest(format!(
            "an image is at most {MAX_IMAGE_SIDE} px a side (Bedrock's limit); this one is {w}×{h}"
        )));
    }
    Ok(found)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of hex `text`, or `None` when it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
