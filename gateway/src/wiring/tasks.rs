//! The tasks of the app: their store, their queue and the callback signer, and how a finished
//! task reaches a WebSocket connection on AWS.

use std::sync::Arc;

use nagare_authorizer::dev;

use super::{CALLBACK_SECRET_FILE, Stores, Wiring};
use crate::error::StartupError;
use crate::push::{ApiGatewayPusher, StoredConnections};
use crate::store::StoreKind;
use crate::tasks::{
    Callbacks, ConnectionDelivery, DynamoTaskStore, QueueKind, SqliteQueue, SqliteTaskStore,
    SqsQueue, TaskQueue, TaskStore, Tasks,
};

impl Wiring {
    /// The task store (DynamoDB when `[store]` uses it, else SQLite), the queue (`tasks.queue`:
    /// the embedded one in SQLite, or SQS), and the callback signer. `delivery` reaches
    /// WebSocket connections.
    pub(super) async fn tasks(
        &mut self,
        stores: &Stores,
        delivery: Arc<ConnectionDelivery>,
    ) -> Result<Tasks, StartupError> {
        let config = self.config.clone();
        let settings = config.tasks.clone();
        let aws = if config.store.kind == StoreKind::Dynamodb || settings.queue == QueueKind::Sqs {
            Some(self.sdk().await)
        } else {
            None
        };
        let store: Arc<dyn TaskStore> = match &aws {
            Some(sdk) if config.store.kind == StoreKind::Dynamodb => {
                Arc::new(DynamoTaskStore::new(
                    aws_sdk_dynamodb::Client::new(sdk),
                    &settings.table,
                    settings.retention_days * 24 * 60 * 60,
                ))
            }
            _ => Arc::new(SqliteTaskStore::new(stores.sqlite(&config)?)),
        };
        let queue: Arc<dyn TaskQueue> = match (&aws, settings.queue) {
            (Some(sdk), QueueKind::Sqs) => {
                let url = settings.queue_url.clone().ok_or_else(|| {
                    StartupError::Config(
                        "tasks.queue_url: required with tasks.queue = \"sqs\"".into(),
                    )
                })?;
                Arc::new(SqsQueue::new(
                    aws_sdk_sqs::Client::new(sdk),
                    url,
                    settings.dead_letter_queue_url.clone(),
                ))
            }
            // One more receive than attempts: the worker sees the message once more and fails
            // the task for good, instead of leaving it `running` in the dead letters.
            _ => Arc::new(SqliteQueue::new(
                stores.sqlite(&config)?,
                settings.max_attempts + 1,
            )),
        };
        let secret = match &settings.callback_secret {
            Some(secret) => secret.clone(),
            None => {
                let path = config.data_dir.join(CALLBACK_SECRET_FILE);
                dev::load_or_create_text_secret(&path).map_err(|source| StartupError::Io {
                    context: format!("reading or creating {}", path.display()),
                    source,
                })?
            }
        };
        let dev_mode = config.auth.issuers.is_empty();
        tracing::info!(
            workers = settings.workers,
            queue = queue.name(),
            max_attempts = settings.max_attempts,
            "tasks: on"
        );
        Ok(Tasks {
            store,
            queue,
            callbacks: Arc::new(Callbacks::new(secret.into_bytes(), &settings, dev_mode)),
            connections: Some(delivery),
            settings,
        })
    }

    /// Delivery to the connections of the API Gateway WebSocket API: a record of the connections
    /// table says who opened one and where its Management API is.
    pub(super) async fn stored_delivery(&mut self, stores: &Stores) -> ConnectionDelivery {
        let directory = StoredConnections::new(
            stores.connections.clone(),
            self.config.lambda.management_endpoint.clone(),
        );
        let pusher = ApiGatewayPusher::new(self.sdk().await);
        ConnectionDelivery::new(
            Arc::new(directory),
            Arc::new(pusher),
            self.config.lambda.post_retries,
        )
    }
}
