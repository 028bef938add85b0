//! The connections of the API Gateway deployment, found through the connection store that
//! `$connect` writes: who opened each, and the Management API endpoint that reaches it.

use std::sync::Arc;

use async_trait::async_trait;

use super::{ConnectionDirectory, ConnectionTarget};
use crate::error::Error;
use crate::lambda::LambdaWsSettings;
use crate::store::ConnectionStore;

/// API Gateway connections, by their stored records.
pub struct StoredConnections {
    store: Arc<dyn ConnectionStore>,
    settings: LambdaWsSettings,
}

impl StoredConnections {
    /// `settings` gives the Management API endpoint of a record's domain and stage.
    pub fn new(store: Arc<dyn ConnectionStore>, settings: LambdaWsSettings) -> Self {
        Self { store, settings }
    }
}

#[async_trait]
impl ConnectionDirectory for StoredConnections {
    async fn find(&self, connection_id: &str) -> Result<Option<ConnectionTarget>, Error> {
        Ok(self
            .store
            .get(connection_id)
            .await?
            .map(|r| ConnectionTarget {
                endpoint: self.settings.endpoint(&r.domain, &r.stage),
                sub: r.sub,
                tenant: r.tenant,
            }))
    }
}
