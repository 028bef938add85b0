//! The connections of the API Gateway deployment, found through the connection store that
//! `$connect` writes: who opened each, and the Management API endpoint that reaches it.

use std::sync::Arc;

use async_trait::async_trait;

use super::{ConnectionDirectory, ConnectionTarget};
use crate::error::Error;
use crate::store::ConnectionStore;

/// API Gateway connections, by their stored records.
pub struct StoredConnections {
    store: Arc<dyn ConnectionStore>,
    /// The Management API URL template (see [`management_endpoint`]).
    endpoint: Option<String>,
}

impl StoredConnections {
    /// `endpoint` is the Management API URL template (`lambda.management_endpoint`).
    pub fn new(store: Arc<dyn ConnectionStore>, endpoint: Option<String>) -> Self {
        Self { store, endpoint }
    }
}

/// The Management API endpoint of a connection opened on `domain` and `stage`. A `template` may
/// name `{domain}` and `{stage}`; without one it is `https://{domain}/{stage}`, right for the
/// default execute-api domain.
pub fn management_endpoint(template: Option<&str>, domain: &str, stage: &str) -> String {
    match template {
        Some(template) => template
            .replace("{domain}", domain)
            .replace("{stage}", stage),
        None => format!("https://{domain}/{stage}"),
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
                endpoint: management_endpoint(self.endpoint.as_deref(), &r.domain, &r.stage),
                sub: r.sub,
                tenant: r.tenant,
            }))
    }
}
