//! WebSocket connections in the embedded SQLite database.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::Database;
use crate::error::Error;
use crate::store::{AdmitRefusal, ChatState, ConnectionRecord, ConnectionStore, unix_now};

/// Connections in the SQLite database.
#[derive(Clone)]
pub struct SqliteConnectionStore {
    db: Database,
}

impl SqliteConnectionStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

/// The connection, if it exists and has not expired.
fn live(db: &Connection, connection_id: &str) -> rusqlite::Result<Option<ConnectionRecord>> {
    db.query_row(
        "SELECT connection_id, sub, tenant, scopes, domain, stage, connected_at, ttl
         FROM connections WHERE connection_id = ?1 AND ttl > ?2",
        params![connection_id, unix_now()],
        |row| {
            Ok(ConnectionRecord {
                connection_id: row.get(0)?,
                sub: row.get(1)?,
                tenant: row.get(2)?,
                scopes: row.get(3)?,
                domain: row.get(4)?,
                stage: row.get(5)?,
                connected_at: row.get(6)?,
                ttl: row.get(7)?,
            })
        },
    )
    .optional()
}

#[async_trait]
impl ConnectionStore for SqliteConnectionStore {
    async fn put(&self, record: &ConnectionRecord) -> Result<(), Error> {
        let r = record.clone();
        self.db
            .with(move |db| {
                let tx = db.savepoint()?;
                // Expired records are swept here, standing in for DynamoDB's TTL.
                tx.execute("DELETE FROM connections WHERE ttl <= ?1", [unix_now()])?;
                tx.execute(
                    "DELETE FROM connections WHERE connection_id = ?1",
                    [&r.connection_id],
                )?;
                tx.execute(
                    "INSERT INTO connections
                 (connection_id, sub, tenant, scopes, domain, stage, connected_at, ttl)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        r.connection_id,
                        r.sub,
                        r.tenant,
                        r.scopes,
                        r.domain,
                        r.stage,
                        r.connected_at,
                        r.ttl
                    ],
                )?;
                tx.commit()
            })
            .await
    }

    async fn get(&self, connection_id: &str) -> Result<Option<ConnectionRecord>, Error> {
        let id = connection_id.to_owned();
        self.db.with(move |db| live(db, &id)).await
    }

    /// The seats are the live records themselves: a principal holds one per live connection
    /// other than this one.
    async fn seat(&self, record: &ConnectionRecord, max: usize) -> Result<bool, Error> {
        let r = record.clone();
        self.db
            .with(move |db| {
                let open: i64 = db.query_row(
                    "SELECT COUNT(*) FROM connections
                     WHERE sub = ?1 AND tenant = ?2 AND ttl > ?3 AND connection_id != ?4",
                    params![r.sub, r.tenant, unix_now(), r.connection_id],
                    |row| row.get(0),
                )?;
                Ok(usize::try_from(open).unwrap_or(usize::MAX) < max)
            })
            .await
    }

    /// Deleting the record gave the seat back.
    async fn unseat(&self, _record: &ConnectionRecord) -> Result<(), Error> {
        Ok(())
    }

    async fn delete(&self, connection_id: &str) -> Result<(), Error> {
        let id = connection_id.to_owned();
        self.db
            .with(move |db| {
                db.execute("DELETE FROM connections WHERE connection_id = ?1", [id])
                    .map(drop)
            })
            .await
    }

    async fn admit(
        &self,
        connection_id: &str,
        request_id: &str,
        max_inflight: usize,
    ) -> Result<Result<(), AdmitRefusal>, Error> {
        let (id, rid) = (connection_id.to_owned(), request_id.to_owned());
        self.db
            .with(move |db| {
                let tx = db.savepoint()?;
                if live(&tx, &id)?.is_none() {
                    return Ok(Err(AdmitRefusal::UnknownConnection));
                }
                let ids: Vec<String> = tx
                    .prepare("SELECT request_id FROM connection_chats WHERE connection_id = ?1")?
                    .query_map([&id], |row| row.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                if ids.contains(&rid) {
                    return Ok(Err(AdmitRefusal::Duplicate));
                }
                if ids.len() >= max_inflight {
                    return Ok(Err(AdmitRefusal::AtLimit { max: max_inflight }));
                }
                tx.execute(
                    "INSERT INTO connection_chats (connection_id, request_id) VALUES (?1, ?2)",
                    params![id, rid],
                )?;
                tx.commit()?;
                Ok(Ok(()))
            })
            .await
    }

    async fn cancel(&self, connection_id: &str, request_id: &str) -> Result<bool, Error> {
        let (id, rid) = (connection_id.to_owned(), request_id.to_owned());
        self.db
            .with(move |db| {
                db.execute(
                    "UPDATE connection_chats SET cancelled = 1
                 WHERE connection_id = ?1 AND request_id = ?2",
                    params![id, rid],
                )
                .map(|n| n > 0)
            })
            .await
    }

    async fn chat_state(&self, connection_id: &str, request_id: &str) -> Result<ChatState, Error> {
        let (id, rid) = (connection_id.to_owned(), request_id.to_owned());
        self.db
            .with(move |db| {
                if live(db, &id)?.is_none() {
                    return Ok(ChatState::Gone);
                }
                let cancelled: Option<bool> = db
                    .query_row(
                        "SELECT cancelled FROM connection_chats
                     WHERE connection_id = ?1 AND request_id = ?2",
                        params![id, rid],
                        |row| row.get(0),
                    )
                    .optional()?;
                Ok(match cancelled {
                    Some(true) => ChatState::Cancelled,
                    Some(false) => ChatState::Active,
                    // Not in flight: someone finished it; nothing is left to stream for.
                    None => ChatState::Gone,
                })
            })
            .await
    }

    async fn finish(&self, connection_id: &str, request_id: &str) -> Result<(), Error> {
        let (id, rid) = (connection_id.to_owned(), request_id.to_owned());
        self.db
            .with(move |db| {
                db.execute(
                    "DELETE FROM connection_chats WHERE connection_id = ?1 AND request_id = ?2",
                    params![id, rid],
                )
                .map(drop)
            })
            .await
    }
}
