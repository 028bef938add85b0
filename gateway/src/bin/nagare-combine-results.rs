//! `nagare-combine-results`: the parallel analysis's last Step Functions task (the sentiment and
//! keyword branches → one result).

use lambda_runtime::{LambdaEvent, service_fn};
use nagare_gateway::config::{self, Overrides, ProcessEnv};
use nagare_gateway::{telemetry, workflow};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let _telemetry = telemetry::init_lambda();
    let config = config::load(None, &ProcessEnv, &Overrides::default())?;
    let settings = config.workflow;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let result = workflow::combine(event.payload, &settings);
        async move { result }
    }))
    .await
}
