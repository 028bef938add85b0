//! The Lambda adapters of the AWS deployment: the WebSocket handler `nagare-ws` (routes
//! `$connect`, `$disconnect`, `chat`, `cancel`, `ping`, `$default`) and the generation it hands
//! each chat to, and the task worker's batch handler. The HTTP functions serve the router of
//! [`crate::http`] as it is. Each function is built by [`crate::wiring`].

mod generate;
mod invoke;
mod worker;
mod ws;

pub use generate::GenerateJob;
pub use invoke::{AsyncInvoker, LambdaInvoker};
pub use worker::handle_batch;
pub use ws::WsFunction;

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
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
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
    /// Checks the values the function cannot run with; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.coalesce_ms > 10_000 {
            return Err("lambda.coalesce_ms: must be at most 10000".into());
        }
        if self.connection_ttl_secs == 0 {
            return Err("lambda.connection_ttl_secs: must be at least 1".into());
        }
        Ok(())
    }
}

impl LambdaWsSettings {
    /// The Management API endpoint of a connection.
    pub fn endpoint(&self, domain: &str, stage: &str) -> String {
        crate::push::management_endpoint(self.management_endpoint.as_deref(), domain, stage)
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
