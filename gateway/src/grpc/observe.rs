//! Every gRPC call's server span (continuing the caller's `traceparent`) and its count and time
//! to headers by method and code. A failure before the first message is a trailers-only response,
//! so its code is in the headers; a stream's later failure is counted with the chats.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tower::Service;
use tracing::Instrument;

use crate::error::ErrorCode;
use crate::telemetry::{self, Metrics};

/// The methods served, so an unknown path cannot grow the label set.
const METHODS: [&str; 7] = [
    "/nagare.v1.ChatService/Converse",
    "/nagare.v1.ChatService/ConverseStream",
    "/nagare.v1.ConversationService/List",
    "/nagare.v1.ConversationService/Get",
    "/nagare.v1.ConversationService/Delete",
    "/nagare.v1.TaskService/Submit",
    "/nagare.v1.TaskService/Get",
];

/// gRPC status codes by number, as labels.
const GRPC_CODES: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
];

/// `inner`, observed.
#[derive(Clone)]
pub struct Observed<S> {
    pub(crate) inner: S,
    pub(crate) metrics: Option<Metrics>,
}

/// The `method` label: a served method, health and reflection by service, or `other`.
fn method_label(path: &str) -> &'static str {
    if let Some(m) = METHODS.iter().find(|m| **m == path) {
        return m;
    }
    if path.starts_with("/grpc.health.") {
        "grpc.health"
    } else if path.starts_with("/grpc.reflection.") {
        "grpc.reflection"
    } else {
        "other"
    }
}

/// The error table's code from `nagare-error-code`, else the gRPC status's name, else `ok`.
fn code_label(headers: &http::HeaderMap) -> &'static str {
    let value = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(code) = value("nagare-error-code").and_then(ErrorCode::from_wire) {
        return code.as_str();
    }
    value("grpc-status")
        .and_then(|s| s.parse::<usize>().ok())
        .and_then(|n| GRPC_CODES.get(n).copied())
        .unwrap_or("ok")
}

impl<S, B, R> Service<http::Request<B>> for Observed<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let method = method_label(request.uri().path());
        let span = telemetry::grpc_span(method, request.headers());
        let call = span.in_scope(|| self.inner.call(request));
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let response = call.instrument(span.clone()).await?;
            let code = code_label(response.headers());
            if code != "ok" {
                telemetry::record_error(&span, code);
            }
            if let Some(metrics) = metrics {
                metrics.request("grpc", method, code, started.elapsed());
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_fixed_sets() {
        assert_eq!(
            method_label("/nagare.v1.ChatService/Converse"),
            "/nagare.v1.ChatService/Converse"
        );
        assert_eq!(method_label("/grpc.health.v1.Health/Check"), "grpc.health");
        assert_eq!(method_label("/evil/x?id=1"), "other");
        let mut headers = http::HeaderMap::new();
        assert_eq!(code_label(&headers), "ok");
        headers.insert("grpc-status", "12".parse().unwrap());
        assert_eq!(code_label(&headers), "unimplemented");
        headers.insert("nagare-error-code", "rate_limited".parse().unwrap());
        assert_eq!(code_label(&headers), "rate_limited");
        headers.insert("nagare-error-code", "made_up".parse().unwrap());
        assert_eq!(code_label(&headers), "unimplemented");
    }
}
