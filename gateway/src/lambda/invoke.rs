//! Handing a chat to an asynchronous invocation. A WebSocket route's integration times out
//! after 29 s, so the `chat` route only admits the chat and returns; the generation runs in an
//! `Event` invocation, which may last as long as the function's own timeout (up to 15 min).

use async_trait::async_trait;
use aws_sdk_lambda::Client;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;

use crate::error::Error;

/// Starts a function invocation without waiting for it.
#[async_trait]
pub trait AsyncInvoker: Send + Sync {
    async fn invoke_async(&self, payload: Vec<u8>) -> Result<(), Error>;
}

/// `Invoke` with `InvocationType=Event`, through the real aws-sdk-lambda.
pub struct LambdaInvoker {
    client: Client,
    function: String,
}

impl LambdaInvoker {
    pub fn new(client: Client, function: impl Into<String>) -> Self {
        Self {
            client,
            function: function.into(),
        }
    }
}

#[async_trait]
impl AsyncInvoker for LambdaInvoker {
    async fn invoke_async(&self, payload: Vec<u8>) -> Result<(), Error> {
        self.client
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(payload))
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(
                    error = %aws_sdk_lambda::error::DisplayErrorContext(&e),
                    "async invoke failed"
                );
                Error::Internal("could not start the generation".into())
            })?;
        Ok(())
    }
}
