//! `nagare-authorizer`: the API Gateway REQUEST authorizer Lambda function (WebSocket `$connect`
//! and REST routes). Configured like `nagare serve`, through `NAGARE__AUTH__*` variables.

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequestTypeRequest;
use lambda_runtime::{LambdaEvent, service_fn};
use nagare_authorizer::Verifier;
use nagare_authorizer::lambda::authorize;
use nagare_gateway::config::{self, Overrides, ProcessEnv};
use nagare_gateway::telemetry;
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let _telemetry = telemetry::init_lambda();
    let config = config::load(None, &ProcessEnv, &Overrides::default())?;
    // Built once per instance: the JWKS cache lives across warm invocations.
    let verifier = Arc::new(Verifier::new(&config.auth, None)?);
    let scope = Arc::new(config.auth.chat_scope);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayCustomAuthorizerRequestTypeRequest>| {
            let (verifier, scope) = (verifier.clone(), scope.clone());
            let span = tracing::info_span!(
                "invocation",
                aws_request_id = %event.context.request_id,
                apigw_request_id = event.payload.request_context.request_id.as_deref()
            );
            async move {
                authorize(&verifier, &scope, &event.payload)
                    .instrument(span)
                    .await
            }
        },
    ))
    .await
}
