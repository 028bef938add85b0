//! `nagare-http`: the Lambda function behind the HTTP API (`/v1/chat`, `/v1/tasks`,
//! `/v1/conversations`), serving `nagare serve`'s router. Responses are buffered, as API Gateway
//! requires; `nagare-stream` serves the same routes with streamed responses.

use nagare_gateway::config::{self, Overrides, ProcessEnv};
use nagare_gateway::telemetry;
use nagare_gateway::wiring::Wiring;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let _telemetry = telemetry::init_lambda();
    let config = config::load(None, &ProcessEnv, &Overrides::default())?;
    let router = Wiring::new(config).http_router().await?;
    lambda_http::run(router).await
}
