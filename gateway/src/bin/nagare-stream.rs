//! `nagare-stream`: the Lambda function behind a Function URL in `RESPONSE_STREAM` mode, serving
//! `nagare serve`'s router with responses streamed as they are written, so `/v1/chat/stream`
//! delivers each SSE event as the model generates it.

use nagare_gateway::config::{self, Overrides, ProcessEnv};
use nagare_gateway::telemetry;
use nagare_gateway::wiring::Wiring;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let _telemetry = telemetry::init_lambda();
    let config = config::load(None, &ProcessEnv, &Overrides::default())?;
    let router = Wiring::new(config).http_router().await?;
    lambda_http::run_with_streaming_response(router).await
}
