//! Durable state behind one trait per concern. Connections are the first: the API Gateway
//! WebSocket handlers keep each connection's owner and its chats in flight here, because every
//! frame arrives in a different Lambda invocation. DynamoDB serves AWS; SQLite serves a laptop.

mod dynamodb;
mod sqlite;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

pub use dynamodb::DynamoConnectionStore;
pub use sqlite::SqliteConnectionStore;

use crate::error::Error;

/// `[store]` settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    pub kind: StoreKind,
    /// The DynamoDB table of WebSocket connections (PK `connection_id`, TTL attribute `ttl`).
    pub connections_table: String,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            kind: StoreKind::Sqlite,
            connections_table: "nagare-connections".into(),
        }
    }
}

/// Which backend holds durable state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A SQLite file in the data dir.
    #[default]
    Sqlite,
    Dynamodb,
}

/// One WebSocket connection on API Gateway, written on `$connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    pub connection_id: String,
    /// The authorizer's verified subject; every chat on the connection runs as this user.
    pub sub: String,
    pub tenant: String,
    /// Space-separated scopes of the token the connection was opened with.
    pub scopes: String,
    /// `requestContext.domainName` and `.stage`: where the Management API for it lives.
    pub domain: String,
    pub stage: String,
    /// Seconds since the Unix epoch.
    pub connected_at: u64,
    /// When the record expires, seconds since the Unix epoch. `$disconnect` is best effort, so
    /// every record carries one (API Gateway closes connections after 2 h anyway).
    pub ttl: u64,
}

/// Where one chat stands, as seen by the invocation streaming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatState {
    Active,
    /// A `cancel` frame asked to stop it.
    Cancelled,
    /// The connection is gone (`$disconnect`, or its record expired).
    Gone,
}

/// Why a chat could not be admitted on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmitRefusal {
    /// No such connection (it closed, or `$connect` never stored it).
    UnknownConnection,
    /// The request id is already in flight on the connection.
    Duplicate,
    /// The connection has `max` chats in flight.
    AtLimit { max: usize },
}

/// The WebSocket connections of the API Gateway deployment.
#[async_trait]
pub trait ConnectionStore: Send + Sync {
    /// Stores (or replaces) a connection.
    async fn put(&self, record: &ConnectionRecord) -> Result<(), Error>;
    /// The connection, unless it is unknown or expired.
    async fn get(&self, connection_id: &str) -> Result<Option<ConnectionRecord>, Error>;
    /// Forgets a connection and its chats. Deleting an unknown connection is not an error.
    async fn delete(&self, connection_id: &str) -> Result<(), Error>;
    /// Marks a chat as in flight, atomically refusing duplicates and chats over `max_inflight`.
    async fn admit(
        &self,
        connection_id: &str,
        request_id: &str,
        max_inflight: usize,
    ) -> Result<Result<(), AdmitRefusal>, Error>;
    /// Asks the invocation streaming `request_id` to stop. Returns false when no such chat is in
    /// flight (it may have just ended: a cancel and a `done` can cross on the wire).
    async fn cancel(&self, connection_id: &str, request_id: &str) -> Result<bool, Error>;
    /// Polled by the streaming invocation.
    async fn chat_state(&self, connection_id: &str, request_id: &str) -> Result<ChatState, Error>;
    /// The chat ended; its slot is free again.
    async fn finish(&self, connection_id: &str, request_id: &str) -> Result<(), Error>;
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

fn store_error(backend: &str, e: impl std::fmt::Display) -> Error {
    // The full error goes to the log; the client sees only that the store failed.
    tracing::warn!(backend, error = %e, "connection store failed");
    Error::Internal(format!("{backend} connection store failed"))
}
