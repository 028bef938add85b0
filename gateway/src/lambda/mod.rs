//! Lambda functions of the AWS deployment that are more than a thin `main`: the WebSocket
//! handler `nagare-ws` (routes `$connect`, `$disconnect`, `chat`, `cancel`, `ping`, `$default`)
//! and the generation it hands each chat to, the task worker, and the HTTP API.

mod generate;
mod http;
mod invoke;
mod worker;
mod ws;

pub use generate::GenerateJob;
pub use http::build_router;
pub use invoke::{AsyncInvoker, LambdaInvoker};
pub use worker::{build_worker, handle_batch};
pub use ws::WsFunction;

use std::sync::Arc;

use crate::chat::ChatPipeline;
use crate::config::Config;
use crate::error::StartupError;
use crate::push::{ApiGatewayPusher, StoredConnections};
use crate::server::{self, Stores};
use crate::tasks::{ConnectionDelivery, QueueKind, Tasks};
use crate::telemetry::{Emf, NoRecorder, Recorder};

/// Builds the WebSocket function from the config, once per Lambda instance. `this_function` is
/// `AWS_LAMBDA_FUNCTION_NAME`, the default target of the asynchronous hand-off.
pub async fn build(
    config: &Config,
    this_function: Option<String>,
) -> Result<WsFunction, StartupError> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let function = config
        .lambda
        .function_name
        .clone()
        .or(this_function)
        .ok_or_else(|| {
            StartupError::Config(
                "lambda.function_name: unset, and AWS_LAMBDA_FUNCTION_NAME is not set either"
                    .into(),
            )
        })?;
    let (pipeline, stores) = build_pipeline(config).await?;
    Ok(WsFunction {
        pipeline,
        store: stores.connections,
        pusher: Arc::new(ApiGatewayPusher::new(sdk.clone())),
        invoker: Arc::new(LambdaInvoker::new(
            aws_sdk_lambda::Client::new(&sdk),
            function,
        )),
        settings: config.lambda.clone(),
        websocket: config.websocket.clone(),
    })
}

/// The pipeline and stores of a Lambda function, with its metrics as Embedded Metric Format lines
/// on stdout, which CloudWatch Logs reads.
async fn build_pipeline(config: &Config) -> Result<(Arc<ChatPipeline>, Stores), StartupError> {
    let recorder: Arc<dyn Recorder> = if config.metrics.enabled {
        Arc::new(Emf::new(&config.metrics.emf_namespace, std::io::stdout()))
    } else {
        Arc::new(NoRecorder)
    };
    let provider = server::build_provider(config, recorder.clone()).await?;
    let stores = server::build_stores(config).await?;
    let pipeline = server::build_pipeline(config, provider, &stores, recorder)?;
    Ok((Arc::new(pipeline), stores))
}

/// Tasks as the Lambda functions have them: queued in SQS, and delivered to connections of the
/// WebSocket API (a record of the connections table says who opened one and where its
/// Management API is).
async fn build_tasks(config: &Config, stores: &Stores) -> Result<Tasks, StartupError> {
    if config.tasks.queue != QueueKind::Sqs {
        return Err(StartupError::Config(
            "tasks.queue: Lambda functions queue tasks in SQS; set tasks.queue = \"sqs\" and tasks.queue_url".into(),
        ));
    }
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let delivery = ConnectionDelivery::new(
        Arc::new(StoredConnections::new(
            stores.connections.clone(),
            config.lambda.clone(),
        )),
        Arc::new(ApiGatewayPusher::new(sdk)),
        config.lambda.post_retries,
    );
    server::build_tasks(config, stores.sqlite.clone(), Some(Arc::new(delivery))).await
}

/// The span of one invocation: every log line inside it carries the Lambda request id and, for
/// an API Gateway event, API Gateway's request id.
pub fn invocation_span(lambda_request_id: &str, event: &serde_json::Value) -> tracing::Span {
    let apigw = event
        .pointer("/requestContext/requestId")
        .and_then(serde_json::Value::as_str);
    tracing::info_span!(
        "invocation",
        aws_request_id = lambda_request_id,
        apigw_request_id = apigw
    )
}

/// `[lambda]` settings of the WebSocket function.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LambdaWsSettings {
    /// The Management API base URL. `{domain}` and `{stage}` are filled in from the event;
    /// unset means `https://{domain}/{stage}`, right for the default execute-api domain.
    pub management_endpoint: Option<String>,
    /// After the first delta, deltas are merged into at most one post per this interval.
    pub coalesce_ms: u64,
    /// How often a streaming invocation reads the connection store for `cancel` and `$disconnect`.
    pub cancel_poll_ms: u64,
    /// Lifetime of a connection record (API Gateway closes connections after 2 h).
    pub connection_ttl_secs: u64,
    /// Retries of a post answered with LimitExceeded or a 5xx, with doubling backoff from 50 ms.
    pub post_retries: u32,
    /// The function a chat is handed to asynchronously; unset means this function
    /// (`AWS_LAMBDA_FUNCTION_NAME`).
    pub function_name: Option<String>,
}

impl Default for LambdaWsSettings {
    fn default() -> Self {
        Self {
            management_endpoint: None,
            coalesce_ms: 50,
            cancel_poll_ms: 500,
            connection_ttl_secs: 2 * 60 * 60,
            post_retries: 5,
            function_name: None,
        }
    }
}

impl LambdaWsSettings {
    /// The Management API endpoint of a connection.
    pub fn endpoint(&self, domain: &str, stage: &str) -> String {
        match &self.management_endpoint {
            Some(template) => template
                .replace("{domain}", domain)
                .replace("{stage}", stage),
            None => format!("https://{domain}/{stage}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_management_endpoint_comes_from_the_event_unless_overridden() {
        let mut settings = LambdaWsSettings::default();
        assert_eq!(
            settings.endpoint("abc.execute-api.eu-west-1.amazonaws.com", "prod"),
            "https://abc.execute-api.eu-west-1.amazonaws.com/prod"
        );
        settings.management_endpoint = Some("http://{domain}/ws/{stage}".into());
        assert_eq!(
            settings.endpoint("127.0.0.1:9000", "dev"),
            "http://127.0.0.1:9000/ws/dev"
        );
    }
}
