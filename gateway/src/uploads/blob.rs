//! Attachment bytes, content-addressed: a blob's name is its SHA-256 (hex), so the same file
//! uploaded twice, by anyone, is stored once. Who may read a blob is decided before it is
//! named here (an upload of the caller's, or a conversation the caller owns): the store itself
//! only keeps bytes. Files under the data dir self-hosted; S3 on AWS.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Error;
use crate::store::store_error;

/// Where attachment bytes live.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Stores `bytes` as `sha256` (which the caller has checked). Storing a blob that is already
    /// there only makes it newly written, for [`BlobStore::older_than`].
    async fn put(&self, sha256: &str, bytes: Bytes) -> Result<(), Error>;

    /// The blob's bytes, or `None` when there is no such blob.
    async fn get(&self, sha256: &str) -> Result<Option<Bytes>, Error>;

    /// Removes the blob; removing one that is not there is a no-op.
    async fn delete(&self, sha256: &str) -> Result<(), Error>;

    /// Blobs last written before `cutoff`, at most `limit`: what the sweep considers.
    async fn older_than(&self, cutoff: SystemTime, limit: usize) -> Result<Vec<String>, Error>;

    /// Where a client PUTs an upload's bytes straight into the store (S3: a presigned URL), or
    /// `None` when they go through Nagare's own signed URL.
    async fn direct_put(&self, _put: &DirectPut<'_>) -> Result<Option<PutTarget>, Error> {
        Ok(None)
    }

    /// The bytes a client PUT straight into the store for `upload_id`, once they have arrived.
    async fn incoming(&self, _upload_id: &str) -> Result<Option<Bytes>, Error> {
        Ok(None)
    }

    /// Removes what a client PUT for `upload_id` (checked and kept as a blob, or refused).
    async fn drop_incoming(&self, _upload_id: &str) -> Result<(), Error> {
        Ok(())
    }
}

/// What a direct PUT must carry: the store holds the client to it.
pub struct DirectPut<'a> {
    pub upload_id: &'a str,
    pub content_type: &'a str,
    pub size: u64,
    pub sha256: &'a str,
    pub expires_in: std::time::Duration,
}

/// A URL to PUT bytes to, and the headers the PUT must send.
#[derive(Debug, Clone)]
pub struct PutTarget {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

/// A SHA-256 in hex: the only names a blob store takes, so no name can climb out of its
/// directory or prefix.
pub fn is_sha256_hex(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub(super) fn check_name(sha256: &str) -> Result<(), Error> {
    if is_sha256_hex(sha256) {
        Ok(())
    } else {
        Err(Error::Internal(format!("not a blob name: {sha256:?}")))
    }
}

/// Blobs as files: `{root}/{first two hex digits}/{sha256}`, written to a temporary file and
/// renamed into place, so a reader never sees half a blob.
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    /// Blobs under `root` (created, private, on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.root.join(&sha256[..2]).join(sha256)
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn put(&self, sha256: &str, bytes: Bytes) -> Result<(), Error> {
        check_name(sha256)?;
        let path = self.path(sha256);
        tokio::task::spawn_blocking(move || write_once(&path, &bytes))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| store_error("blob", e))
    }

    async fn get(&self, sha256: &str) -> Result<Option<Bytes>, Error> {
        check_name(sha256)?;
        match tokio::fs::read(self.path(sha256)).await {
            Ok(bytes) => Ok(Some(bytes.into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(store_error("blob", e)),
        }
    }

    async fn delete(&self, sha256: &str) -> Result<(), Error> {
        check_name(sha256)?;
        match tokio::fs::remove_file(self.path(sha256)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(store_error("blob", e)),
            _ => Ok(()),
        }
    }

    async fn older_than(&self, cutoff: SystemTime, limit: usize) -> Result<Vec<String>, Error> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || list_older(&root, cutoff, limit))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| store_error("blob", e))
    }
}

fn list_older(root: &Path, cutoff: SystemTime, limit: usize) -> std::io::Result<Vec<String>> {
    let mut found = Vec::new();
    let dirs = match std::fs::read_dir(root) {
        Ok(dirs) => dirs,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for dir in dirs {
        for file in std::fs::read_dir(dir?.path())? {
            let file = file?;
            let name = file.file_name().to_string_lossy().into_owned();
            // Temporary files of writes in progress are not blobs yet.
            if !is_sha256_hex(&name) || file.metadata()?.modified()? >= cutoff {
                continue;
            }
            found.push(name);
            if found.len() == limit {
                return Ok(found);
            }
        }
    }
    Ok(found)
}

fn write_once(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if path.exists() {
        // Stored again: the sweep reads "last written" from the time.
        return std::fs::File::options()
            .write(true)
            .open(path)?
            .set_modified(SystemTime::now());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    nagare_authorizer::dev::create_private_dir(dir)?;
    let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        // Two writers of one blob write the same bytes: the second rename replaces the first's
        // file with an identical one.
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blobs_are_stored_once_read_back_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::new(dir.path().join("blobs"));
        let name = "ab".repeat(32);
        assert_eq!(store.get(&name).await.unwrap(), None);
        store.put(&name, Bytes::from_static(b"one")).await.unwrap();
        store.put(&name, Bytes::from_static(b"one")).await.unwrap();
        assert_eq!(store.get(&name).await.unwrap().unwrap().as_ref(), b"one");
        let files = std::fs::read_dir(dir.path().join("blobs/ab"))
            .unwrap()
            .count();
        assert_eq!(files, 1, "no temporary file is left behind");
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        assert_eq!(
            store.older_than(later, 10).await.unwrap(),
            vec![name.clone()]
        );
        assert!(
            store
                .older_than(SystemTime::UNIX_EPOCH, 10)
                .await
                .unwrap()
                .is_empty()
        );
        store.delete(&name).await.unwrap();
        store.delete(&name).await.unwrap();
        assert_eq!(store.get(&name).await.unwrap(), None);
        for bad in ["../../etc/passwd", "AB", &"g".repeat(64)] {
            assert!(store.get(bad).await.is_err(), "{bad}");
        }
    }
}
