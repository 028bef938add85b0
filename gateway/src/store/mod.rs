//! Durable state behind one trait per concern: WebSocket connections (the API Gateway path) and
//! conversations (memory). DynamoDB serves AWS; one SQLite file serves a laptop.

mod connections;
mod conversations;
pub(crate) mod dynamodb;
mod page;
mod sqlite;
mod uploads;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use connections::{
    AdmitRefusal, ChatState, ConnectionRecord, ConnectionStore, connection_principal,
};
pub use conversations::{
    Appended, ConversationMeta, ConversationStore, Exchange, MAX_TURN_BYTES, Page, Stored, Turn,
    check_conversation_id, not_found, page_size, parse_blocks, parse_sources,
    valid_conversation_id,
};
pub use dynamodb::{
    DynamoConnectionStore, DynamoConversationStore, DynamoUploadStore, Key, KeyKind, TableNames,
    TableSpec, create_tables, table_specs,
};
pub(crate) use dynamodb::{fail as dynamodb_failure, is_condition_failure, n as dynamodb_number};
pub use sqlite::{
    Database, SqliteConnectionStore, SqliteConversationStore, SqliteKnowledge, SqliteUploadStore,
};
pub use uploads::{UploadRecord, UploadStore};

use crate::error::Error;

/// `[store]` settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    pub kind: StoreKind,
    /// The DynamoDB table of WebSocket connections (PK `connection_id`, TTL attribute `ttl`).
    pub connections_table: String,
    /// The DynamoDB table of conversations (PK `conversation_id`, SK `sk`, GSI `owner-updated`).
    pub conversations_table: String,
    /// The most the SQLite file may grow to, in bytes (0: no cap). Past it, writes fail as on a
    /// full disk: `503 unavailable`, and `/readyz` says why.
    pub sqlite_max_bytes: u64,
    /// How often `nagare serve` sweeps what is kept past its time (exchanges past
    /// `memory.retention_days`, expired uploads, blobs nothing names); 0: never.
    pub sweep_interval_secs: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            kind: StoreKind::Sqlite,
            connections_table: "nagare-connections".into(),
            conversations_table: "nagare-conversations".into(),
            sqlite_max_bytes: 0,
            sweep_interval_secs: 3600,
        }
    }
}

/// Which backend holds durable state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A SQLite file in the data dir.
    #[default]
    Sqlite,
    Dynamodb,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Milliseconds since the Unix epoch: conversation timestamps, fine enough to order by.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

pub(crate) fn store_error(backend: &str, e: impl std::fmt::Display) -> Error {
    // The full error goes to the log; the client sees only that the store failed. A store that
    // fails (a full disk, a throttled or unreachable table) is this server being unavailable,
    // which a retry, here or on another instance, may get past.
    tracing::warn!(backend, error = %e, "store failed");
    Error::Unavailable {
        message: format!("the {backend} store failed; retry"),
        retry_after: Some(std::time::Duration::from_secs(1)),
    }
}
