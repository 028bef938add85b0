//! `nagare-ws`: the Lambda function behind every route of the API Gateway WebSocket API, and the
//! asynchronous invocations that stream chats. Configured through `NAGARE__*` variables.

use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use nagare_gateway::config::{self, Overrides, ProcessEnv};
use nagare_gateway::wiring::Wiring;
use nagare_gateway::{lambda, telemetry};
use serde_json::Value;
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let _telemetry = telemetry::init_lambda();
    let config = config::load(None, &ProcessEnv, &Overrides::default())?;
    let this_function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok();
    let function = Arc::new(Wiring::new(config).ws_function(this_function).await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let function = function.clone();
        let span = lambda::invocation_span(&event.context.request_id, &event.payload);
        async move { function.handle(event.payload).instrument(span).await }
    }))
    .await
}
