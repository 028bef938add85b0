//! `nagare-extract-text`: the document pipeline's first Step Functions task (a document in S3 →
//! its text). Errors carry the names the state machine retries and catches by.

use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use nagare_gateway::config::{self, Overrides, ProcessEnv};
use nagare_gateway::telemetry;
use nagare_gateway::workflow::Extractor;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let _telemetry = telemetry::init_lambda();
    let config = config::load(None, &ProcessEnv, &Overrides::default())?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let extractor = Arc::new(Extractor::new(
        aws_sdk_s3::Client::new(&sdk),
        config.workflow,
    ));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let extractor = extractor.clone();
        async move { extractor.handle(event.payload).await }
    }))
    .await
}
