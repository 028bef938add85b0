//! `nagare-worker`: the Lambda function that runs tasks from the SQS queue (event source with
//! `ReportBatchItemFailures`). Configured through `NAGARE__*` variables, like `nagare serve`.

use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use nagare_gateway::config::{self, Overrides, ProcessEnv};
use nagare_gateway::wiring::Wiring;
use nagare_gateway::{lambda, telemetry};
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let _telemetry = telemetry::init_lambda();
    let config = config::load(None, &ProcessEnv, &Overrides::default())?;
    let worker = Arc::new(Wiring::new(config).worker().await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let worker = worker.clone();
        let span = tracing::info_span!("invocation", aws_request_id = %event.context.request_id);
        async move {
            Ok::<_, lambda_runtime::Error>(
                lambda::handle_batch(&worker, event.payload)
                    .instrument(span)
                    .await,
            )
        }
    }))
    .await
}
