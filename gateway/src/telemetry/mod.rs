//! What operators see: logs (`tracing` to stdout, JSON when stdout is not a terminal, filtered by
//! `RUST_LOG`), traces (OpenTelemetry over OTLP, when configured) and metrics (Prometheus on
//! `nagare serve`, Embedded Metric Format lines in Lambda).

mod emf;
mod json_log;
mod metrics;
mod record;
mod traces;

use std::io::IsTerminal;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

pub use emf::Emf;
pub use metrics::{CONTENT_TYPE, LiveState, Metrics, MetricsSettings, WebSocketGuard};
pub use record::{BoundedLabel, ChatRecord, NoRecorder, OTHER, Outcome, Recorder};
pub use traces::{
    SPAN_TARGET, TraceSettings, grpc_span, http_span, model_call_done, model_call_span,
    record_error, traces_on,
};

use crate::error::StartupError;
use json_log::{JsonFields, JsonLine};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON unless stdout is a terminal.
    #[default]
    Auto,
    Json,
    Text,
}

/// Keeps logging and tracing alive; dropping it flushes both. Drop it while the Tokio runtime
/// is still running: the last spans leave over a channel that lives there.
pub struct Telemetry {
    _logs: WorkerGuard,
    traces: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("flushing traces: {e}");
        }
    }
}

/// Installs logging for `nagare serve`, and trace export when `traces.otlp_endpoint` is set.
/// Call it inside the Tokio runtime (`Runtime::enter`): the exporter's channel lives there.
pub fn init(format: LogFormat, traces: &TraceSettings) -> Result<Telemetry, StartupError> {
    let provider = match &traces.otlp_endpoint {
        Some(endpoint) => Some(traces::tracer_provider(traces, endpoint)?),
        None => None,
    };
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let (writer, guard) = log_writer();
    let logs = if json {
        json_logs(writer, false)
    } else {
        tracing_subscriber::fmt::layer().with_writer(writer).boxed()
    };
    let otel = provider.as_ref().map(|p| {
        // The request's spans, and the gateway's own spans and events (as span events).
        let wanted = Targets::new()
            .with_target(SPAN_TARGET, Level::INFO)
            .with_target("nagare_gateway", Level::INFO);
        traces::layer(p).with_filter(wanted)
    });
    // `try_init` fails only if a subscriber is already set (tests); that one keeps working.
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(log_filter()))
        .with(otel)
        .try_init();
    if let Some(endpoint) = &traces.otlp_endpoint {
        traces::turn_on();
        tracing::info!(endpoint = %endpoint, sample_ratio = traces.sample_ratio, "traces: exported over OTLP/gRPC");
    }
    Ok(Telemetry {
        _logs: guard,
        traces: provider,
    })
}

/// Installs JSON logging for a Lambda function. Each line lists every open span's fields, so a
/// line logged deep in a chat still carries the invocation's Lambda and API Gateway request ids.
pub fn init_lambda() -> Telemetry {
    let (writer, guard) = log_writer();
    let _ = tracing_subscriber::registry()
        .with(json_logs(writer, true).with_filter(log_filter()))
        .try_init();
    Telemetry {
        _logs: guard,
        traces: None,
    }
}

/// A writer thread keeps log formatting and I/O off the request path; lossless, so a burst slows
/// requests down instead of dropping lines.
fn log_writer() -> (NonBlocking, WorkerGuard) {
    tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stdout())
}

fn json_logs(writer: NonBlocking, span_list: bool) -> Box<dyn Layer<Registry> + Send + Sync> {
    tracing_subscriber::fmt::layer()
        .event_format(JsonLine { span_list })
        .fmt_fields(JsonFields)
        .with_writer(writer)
        .boxed()
}

/// `RUST_LOG` (default `info`) for the logs. Trace-only spans never reach the logs, whatever
/// it says.
fn log_filter() -> EnvFilter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match format!("{SPAN_TARGET}=off").parse() {
        Ok(off) => filter.add_directive(off),
        Err(_) => filter,
    }
}
