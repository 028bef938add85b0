//! `PostToConnection` with the real aws-sdk-apigatewaymanagement. The
//! endpoint differs per API and stage, so a client is built per endpoint and kept.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::config::http::HttpResponse;
use aws_sdk_apigatewaymanagement::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_smithy_types::retry::RetryConfig;
use bytes::Bytes;

use super::{ConnectionPusher, PushError};

/// Pushes through the API Gateway Management API.
pub struct ApiGatewayPusher {
    sdk: aws_config::SdkConfig,
    clients: Mutex<HashMap<String, Client>>,
}

impl ApiGatewayPusher {
    pub fn new(sdk: aws_config::SdkConfig) -> Self {
        Self {
            sdk,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, endpoint: &str) -> Client {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(endpoint.to_owned())
            .or_insert_with(|| {
                let config = aws_sdk_apigatewaymanagement::config::Builder::from(&self.sdk)
                    .endpoint_url(endpoint)
                    // The caller retries LimitExceeded with its own backoff and knows when to
                    // give up; SDK retries underneath would multiply the attempts.
                    .retry_config(RetryConfig::disabled())
                    .build();
                Client::from_conf(config)
            })
            .clone()
    }
}

fn classify<E>(e: SdkError<E, HttpResponse>) -> PushError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match e.code() {
        Some("GoneException") => return PushError::Gone,
        Some("LimitExceededException") => return PushError::Throttled,
        _ => {}
    }
    // Timeouts, dropped connections and 5xx may work on a second try; 4xx (403, too large) not.
    let retryable = matches!(e, SdkError::TimeoutError(_) | SdkError::DispatchFailure(_))
        || e.raw_response()
            .is_some_and(|r| r.status().is_server_error());
    PushError::Failed {
        message: DisplayErrorContext(&e).to_string(),
        retryable,
    }
}

#[async_trait]
impl ConnectionPusher for ApiGatewayPusher {
    async fn post(
        &self,
        endpoint: &str,
        connection_id: &str,
        frame: Bytes,
    ) -> Result<(), PushError> {
        self.client(endpoint)
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(frame))
            .send()
            .await
            .map(drop)
            .map_err(classify)
    }
}
