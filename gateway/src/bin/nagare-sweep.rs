//! `nagare-sweep`: the Lambda function, run on a schedule, that collects what Nagare keeps past
//! its time on AWS: blobs in the uploads bucket that no conversation names and no live upload
//! can (DynamoDB's TTL already takes expired exchanges and upload records). Configured through
//! `NAGARE__*` variables, like `nagare serve`.

use std::time::SystemTime;

use lambda_runtime::{LambdaEvent, service_fn};
use nagare_gateway::config::{self, Overrides, ProcessEnv};
use nagare_gateway::telemetry;
use nagare_gateway::wiring::Wiring;
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let _telemetry = telemetry::init_lambda();
    let config = config::load(None, &ProcessEnv, &Overrides::default())?;
    let sweep = Wiring::new(config).sweep().await?;
    lambda_runtime::run(service_fn(move |_: LambdaEvent<Value>| {
        let sweep = sweep.clone();
        async move {
            let swept = sweep.run(SystemTime::now()).await?;
            tracing::info!(
                exchanges = swept.exchanges,
                uploads = swept.uploads,
                blobs = swept.blobs,
                "swept"
            );
            Ok::<_, lambda_runtime::Error>(json!({
                "exchanges": swept.exchanges,
                "uploads": swept.uploads,
                "blobs": swept.blobs,
            }))
        }
    }))
    .await
}
