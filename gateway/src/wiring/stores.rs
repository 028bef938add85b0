//! The durable stores, all on the backend `[store]` names, and the shared tiers of the cache and
//! the rate limits.

use std::sync::Arc;

use aws_config::SdkConfig;
use nagare_cache::{DynamoCache, RedisCache, SharedCache, SharedKind};

use crate::config::Config;
use crate::error::StartupError;
use crate::limits::{Counters, DynamoCounters, LocalCounters, SharedKind as LimitsShared};
use crate::store::{
    ConnectionStore, ConversationStore, Database, DynamoConnectionStore, DynamoConversationStore,
    DynamoUploadStore, SqliteConnectionStore, SqliteConversationStore, SqliteUploadStore,
    StoreKind, UploadStore,
};

/// The stores the app is built on.
pub struct Stores {
    pub connections: Arc<dyn ConnectionStore>,
    pub conversations: Arc<dyn ConversationStore>,
    /// The cache's shared tier, when `cache.shared` names one.
    pub shared_cache: Option<Arc<dyn SharedCache>>,
    /// Where `[rate_limits]` counts: this process, or DynamoDB.
    pub limit_counters: Arc<dyn Counters>,
    /// Upload records, in the store's backend.
    pub uploads: Option<Arc<dyn UploadStore>>,
    /// The embedded database, when `[store]` uses it.
    sqlite: Option<Database>,
}

impl Stores {
    /// Opens the stores the config names: the SQLite file in the data dir, or DynamoDB tables
    /// through `sdk` (given whenever a table is named).
    pub async fn open(config: &Config, sdk: Option<&SdkConfig>) -> Result<Self, StartupError> {
        let dynamodb = sdk.map(aws_sdk_dynamodb::Client::new);
        let shared_cache: Option<Arc<dyn SharedCache>> = match (&dynamodb, config.cache.shared) {
            (Some(client), SharedKind::Dynamodb) => Some(Arc::new(DynamoCache::new(
                client.clone(),
                &config.cache.table,
            ))),
            (_, SharedKind::Redis) => {
                let redis = RedisCache::connect(&config.cache.redis_url)
                    .await
                    .map_err(|e| StartupError::Backend(format!("cache.redis_url: {e}")))?;
                Some(Arc::new(redis))
            }
            _ => None,
        };
        let limit_counters: Arc<dyn Counters> = match (&dynamodb, config.rate_limits.shared) {
            (Some(client), LimitsShared::Dynamodb) => {
                tracing::info!(
                    table = config.rate_limits.table,
                    "rate limits: shared in dynamodb"
                );
                Arc::new(DynamoCounters::new(
                    client.clone(),
                    &config.rate_limits.table,
                ))
            }
            _ => Arc::new(LocalCounters::default()),
        };
        let store = &config.store;
        Ok(match (store.kind, dynamodb) {
            (StoreKind::Dynamodb, Some(client)) => {
                tracing::info!(
                    conversations = store.conversations_table,
                    connections = store.connections_table,
                    "conversations and connections: dynamodb"
                );
                Stores {
                    connections: Arc::new(DynamoConnectionStore::new(
                        client.clone(),
                        &store.connections_table,
                    )),
                    conversations: Arc::new(
                        DynamoConversationStore::new(client.clone(), &store.conversations_table)
                            .with_retention(config.memory.retention()),
                    ),
                    shared_cache,
                    limit_counters,
                    uploads: Some(Arc::new(DynamoUploadStore::new(
                        client,
                        &config.uploads.table,
                    ))),
                    sqlite: None,
                }
            }
            _ => {
                let db = open_sqlite(config)?;
                tracing::info!(
                    path = %config.data_dir.join(DATABASE_FILE).display(),
                    "conversations and connections: sqlite"
                );
                Stores {
                    connections: Arc::new(SqliteConnectionStore::new(db.clone())),
                    conversations: Arc::new(SqliteConversationStore::new(db.clone())),
                    shared_cache,
                    limit_counters,
                    uploads: Some(Arc::new(SqliteUploadStore::new(db.clone()))),
                    sqlite: Some(db),
                }
            }
        })
    }

    /// The embedded database, when the stores use it.
    pub fn database(&self) -> Option<&Database> {
        self.sqlite.as_ref()
    }

    /// The embedded database: the stores' own, or the data dir's opened for the task queue.
    pub fn sqlite(&self, config: &Config) -> Result<Database, StartupError> {
        match &self.sqlite {
            Some(db) => Ok(db.clone()),
            None => open_sqlite(config),
        }
    }
}

/// The embedded database's file in the data dir.
pub const DATABASE_FILE: &str = "nagare.db";

fn open_sqlite(config: &Config) -> Result<Database, StartupError> {
    nagare_authorizer::dev::create_private_dir(&config.data_dir).map_err(|source| {
        StartupError::Io {
            context: format!("creating {}", config.data_dir.display()),
            source,
        }
    })?;
    let path = config.data_dir.join(DATABASE_FILE);
    Database::open(&path, config.store.sqlite_max_bytes)
        .map_err(|e| StartupError::Backend(format!("{}: {e}", path.display())))
}
