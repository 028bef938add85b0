//! Blobs in S3, on AWS: `{prefix}blobs/{sha256}`. Clients PUT an upload's bytes straight to S3
//! with a presigned URL (`{prefix}incoming/{upload_id}`), so they never pass through API Gateway
//! or Lambda; the URL signs the size, the type and the SHA-256, so S3 refuses other bytes. The
//! gateway checks them again (and sniffs them) before it copies them to their blob.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use base64::Engine;
use bytes::Bytes;

use crate::error::Error;
use crate::store::store_error;
use crate::uploads::blob::{BlobStore, DirectPut, PutTarget, check_name};
use crate::uploads::unhex;

/// Blobs in one S3 bucket, under a prefix.
pub struct S3BlobStore {
    client: Client,
    bucket: String,
    prefix: String,
}

impl S3BlobStore {
    pub fn new(client: Client, bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    fn blob_key(&self, sha256: &str) -> String {
        format!("{}blobs/{sha256}", self.prefix)
    }

    fn incoming_key(&self, upload_id: &str) -> String {
        format!("{}incoming/{upload_id}", self.prefix)
    }

    async fn read(&self, key: &str) -> Result<Option<Bytes>, Error> {
        let object = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(object) => object,
            Err(e) if matches!(e.code(), Some("NoSuchKey" | "NotFound")) => return Ok(None),
            Err(e) => return Err(fail(e)),
        };
        let bytes = object.body.collect().await.map_err(fail)?;
        Ok(Some(bytes.into_bytes()))
    }

    async fn remove(&self, key: &str) -> Result<(), Error> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(drop)
            .map_err(fail)
    }
}

fn fail(e: impl std::error::Error) -> Error {
    store_error("s3", aws_sdk_s3::error::DisplayErrorContext(&e))
}

/// An upload id is `up_` and hex: nothing else may name an incoming key.
fn check_upload_id(upload_id: &str) -> Result<(), Error> {
    let hex = upload_id.strip_prefix("up_").unwrap_or_default();
    if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(Error::NotFound(format!("no upload {upload_id}")))
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn put(&self, sha256: &str, bytes: Bytes) -> Result<(), Error> {
        check_name(sha256)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.blob_key(sha256))
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map(drop)
            .map_err(fail)
    }

    async fn get(&self, sha256: &str) -> Result<Option<Bytes>, Error> {
        check_name(sha256)?;
        self.read(&self.blob_key(sha256)).await
    }

    async fn delete(&self, sha256: &str) -> Result<(), Error> {
        check_name(sha256)?;
        self.remove(&self.blob_key(sha256)).await
    }

    async fn older_than(&self, cutoff: SystemTime, limit: usize) -> Result<Vec<String>, Error> {
        let prefix = self.blob_key("");
        let mut found = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for object in page.map_err(fail)?.contents() {
                let written = object
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok());
                let name = object.key().and_then(|k| k.strip_prefix(&prefix));
                if let (Some(name), Some(written)) = (name, written)
                    && written < cutoff
                {
                    found.push(name.to_owned());
                    if found.len() == limit {
                        return Ok(found);
                    }
                }
            }
        }
        Ok(found)
    }

    async fn direct_put(&self, put: &DirectPut<'_>) -> Result<Option<PutTarget>, Error> {
        check_upload_id(put.upload_id)?;
        // The declaration was checked to be hex.
        let digest = unhex(put.sha256)
            .ok_or_else(|| Error::Internal("a declared SHA-256 is not hex".into()))?;
        let presigning = PresigningConfig::expires_in(put.expires_in.max(Duration::from_secs(1)))
            .map_err(|e| Error::Internal(e.to_string()))?;
        let presigned = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.incoming_key(put.upload_id))
            .content_type(put.content_type)
            .content_length(put.size as i64)
            .checksum_sha256(base64::engine::general_purpose::STANDARD.encode(digest))
            .presigned(presigning)
            .await
            .map_err(fail)?;
        Ok(Some(PutTarget {
            url: presigned.uri().to_owned(),
            headers: presigned
                .headers()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }))
    }

    async fn incoming(&self, upload_id: &str) -> Result<Option<Bytes>, Error> {
        check_upload_id(upload_id)?;
        self.read(&self.incoming_key(upload_id)).await
    }

    async fn drop_incoming(&self, upload_id: &str) -> Result<(), Error> {
        check_upload_id(upload_id)?;
        self.remove(&self.incoming_key(upload_id)).await
    }
}
