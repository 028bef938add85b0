//! Upload records in the embedded SQLite database.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};

use super::Database;
use crate::error::Error;
use crate::store::{UploadRecord, UploadStore};

/// Upload records in the SQLite database.
#[derive(Clone)]
pub struct SqliteUploadStore {
    db: Database,
}

impl SqliteUploadStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

const COLUMNS: &str =
    "upload_id, tenant, sub, filename, content_type, size, sha256, created_at, expires_at, stored";

fn record(row: &Row<'_>) -> rusqlite::Result<UploadRecord> {
    Ok(UploadRecord {
        upload_id: row.get(0)?,
        tenant: row.get(1)?,
        sub: row.get(2)?,
        filename: row.get(3)?,
        content_type: row.get(4)?,
        size: row.get(5)?,
        sha256: row.get(6)?,
        created_at: row.get(7)?,
        expires_at: row.get(8)?,
        stored: row.get(9)?,
    })
}

#[async_trait]
impl UploadStore for SqliteUploadStore {
    async fn create(&self, r: &UploadRecord) -> Result<(), Error> {
        let r = r.clone();
        self.db
            .with(move |db| {
                db.execute(
                    &format!("INSERT INTO uploads ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                    params![
                        r.upload_id,
                        r.tenant,
                        r.sub,
                        r.filename,
                        r.content_type,
                        r.size,
                        r.sha256,
                        r.created_at,
                        r.expires_at,
                        r.stored
                    ],
                )
                .map(drop)
            })
            .await
    }

    async fn get(&self, upload_id: &str) -> Result<Option<UploadRecord>, Error> {
        let id = upload_id.to_owned();
        self.db
            .with(move |db| {
                db.query_row(
                    &format!("SELECT {COLUMNS} FROM uploads WHERE upload_id = ?1"),
                    [id],
                    record,
                )
                .optional()
            })
            .await
    }

    async fn mark_stored(&self, upload_id: &str) -> Result<bool, Error> {
        let id = upload_id.to_owned();
        self.db
            .with(move |db| {
                db.execute(
                    "UPDATE uploads SET stored = 1 WHERE upload_id = ?1 AND stored = 0",
                    [id],
                )
                .map(|n| n == 1)
            })
            .await
    }

    async fn expired(&self, now: u64, limit: usize) -> Result<Vec<UploadRecord>, Error> {
        self.db
            .with(move |db| {
                let mut query = db.prepare(&format!(
                    "SELECT {COLUMNS} FROM uploads WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2"
                ))?;
                query
                    .query_map(params![now, limit as i64], record)?
                    .collect()
            })
            .await
    }

    async fn delete(&self, upload_id: &str) -> Result<(), Error> {
        let id = upload_id.to_owned();
        self.db
            .with(move |db| {
                db.execute("DELETE FROM uploads WHERE upload_id = ?1", [id])
                    .map(drop)
            })
            .await
    }
}
