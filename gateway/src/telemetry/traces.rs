//! Traces: OpenTelemetry spans over OTLP/gRPC, off unless `[traces] otlp_endpoint` is set.
//!
//! The request's spans (the server span of each HTTP request or gRPC call, then auth, limits,
//! history, cache, the model call and delivery) use the target [`SPAN_TARGET`], which only the
//! OpenTelemetry layer listens to. With traces off no layer does, so each of those spans costs a
//! cached interest check and nothing else, and they never reach the logs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Array, StringValue, Value};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde::Deserialize;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::chat::Usage;
use crate::error::StartupError;

/// The target of spans that exist for traces only.
pub const SPAN_TARGET: &str = "nagare_span";

/// Set once trace export is installed. Until then the trace-only spans are not even built: no
/// layer listens to them, but the span registry would still allocate and free each one.
static TRACES_ON: AtomicBool = AtomicBool::new(false);

/// Whether spans are being exported.
pub fn traces_on() -> bool {
    TRACES_ON.load(Ordering::Relaxed)
}

pub(super) fn turn_on() {
    TRACES_ON.store(true, Ordering::Relaxed);
}

/// A trace-only span named `$name`, or a disabled span when traces are off.
#[macro_export]
macro_rules! trace_span {
    ($name:literal $(, $($fields:tt)*)?) => {
        if $crate::telemetry::traces_on() {
            tracing::info_span!(target: $crate::telemetry::SPAN_TARGET, $name $(, $($fields)*)?)
        } else {
            tracing::Span::none()
        }
    };
}

/// `[traces]` settings.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceSettings {
    /// An OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`. Unset: no traces.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// The share of new traces kept; a caller's `traceparent` decides for its own.
    pub sample_ratio: f64,
    /// Longest wait for the collector per batch.
    pub export_timeout_ms: u64,
}

impl Default for TraceSettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "nagare".into(),
            sample_ratio: 1.0,
            export_timeout_ms: 10_000,
        }
    }
}

impl TraceSettings {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err("traces.sample_ratio: must be between 0 and 1".into());
        }
        if let Some(endpoint) = &self.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(format!(
                "traces.otlp_endpoint: '{endpoint}' is not an http:// or https:// URL, e.g. http://127.0.0.1:4317"
            ));
        }
        Ok(())
    }
}

/// Builds the span exporter. Must run inside a Tokio runtime: the gRPC channel lives on it.
pub fn tracer_provider(
    settings: &TraceSettings,
    endpoint: &str,
) -> Result<SdkTracerProvider, StartupError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_millis(settings.export_timeout_ms))
        .build()
        .map_err(|e| StartupError::Config(format!("traces.otlp_endpoint: {e}")))?;
    let root = Sampler::TraceIdRatioBased(settings.sample_ratio);
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(root)))
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build())
}

/// The layer that turns spans into OpenTelemetry spans.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("nagare"))
}

/// `traceparent` and `tracestate` from HTTP headers or gRPC metadata.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Makes `span` a child of the caller's trace when the headers carry a W3C `traceparent`.
fn continue_trace(span: &Span, headers: &HeaderMap) {
    if span.is_disabled() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    // Fails only when the span is not an OpenTelemetry span, which `is_disabled` ruled out.
    let _ = span.set_parent(parent);
}

/// The server span of one HTTP request (also a WebSocket upgrade). `route` is the matched
/// pattern, never the raw path, so ids stay out of span names.
pub fn http_span(method: &http::Method, route: &str, headers: &HeaderMap) -> Span {
    if !traces_on() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    continue_trace(&span, headers);
    span
}

/// The server span of one gRPC call; `method` is a known `/package.Service/Method` path.
pub fn grpc_span(method: &str, headers: &HeaderMap) -> Span {
    if !traces_on() {
        return Span::none();
    }
    let (service, name) = method
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((method, ""));
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "request",
        otel.name = method.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = name,
        rpc.grpc.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    continue_trace(&span, headers);
    span
}

/// The span of one model call, with the GenAI semantic conventions' request attributes.
/// `provider` is the provider's name (`bedrock`, `mock`).
pub fn model_call_span(provider: &str, model: &str, max_tokens: Option<u32>) -> Span {
    if !traces_on() {
        return Span::none();
    }
    let system = match provider {
        "bedrock" => "aws.bedrock",
        other => other,
    };
    tracing::info_span!(
        target: SPAN_TARGET,
        "model",
        otel.name = %format_args!("chat {model}"),
        otel.kind = "client",
        gen_ai.operation.name = "chat",
        gen_ai.system = system,
        gen_ai.request.model = model,
        gen_ai.request.max_tokens = max_tokens.map(i64::from),
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Completes a model call's span with the response attributes.
pub fn model_call_done(span: &Span, model: &str, usage: &Usage, stop_reason: &str) {
    if span.is_disabled() {
        return;
    }
    span.record("gen_ai.response.model", model);
    // As i64: OpenTelemetry has no unsigned integers.
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    span.record("gen_ai.usage.input_tokens", count(usage.input_tokens));
    span.record("gen_ai.usage.output_tokens", count(usage.output_tokens));
    // An array attribute, which `tracing` fields cannot express.
    let reasons = Array::String(vec![StringValue::from(stop_reason.to_owned())]);
    span.set_attribute("gen_ai.response.finish_reasons", Value::Array(reasons));
}

/// Marks a span failed with the error table's `code`.
pub fn record_error(span: &Span, code: &str) {
    span.record("error.type", code);
    span.record("otel.status_code", "ERROR");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        assert!(TraceSettings::default().validate().is_ok());
        let bad_ratio = TraceSettings {
            sample_ratio: 1.5,
            ..TraceSettings::default()
        };
        assert!(bad_ratio.validate().unwrap_err().contains("sample_ratio"));
        let bad_url = TraceSettings {
            otlp_endpoint: Some("127.0.0.1:4317".into()),
            ..TraceSettings::default()
        };
        assert!(bad_url.validate().unwrap_err().contains("http://"));
    }
}
