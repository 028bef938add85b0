//! Every HTTP request's server span (continuing the caller's `traceparent`) and its count and
//! latency by route and error code; and `GET /metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::app::App;
use crate::error::{Error, ErrorCode};
use crate::http::error::ApiError;
use crate::telemetry::{self, CONTENT_TYPE, Metrics};

/// When the request reached the router, before authentication and the body: where a chat's
/// latency and gateway overhead start.
#[derive(Debug, Clone, Copy)]
pub struct Arrived(pub Instant);

/// Wraps every route. The route label is the matched pattern (`/v1/conversations/{id}`), never
/// the raw path, so ids cannot grow the label set.
pub async fn observe(
    State(metrics): State<Option<Metrics>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    request.extensions_mut().insert(Arrived(started));
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let span = telemetry::http_span(request.method(), &route, request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    let code = response
        .extensions()
        .get::<ErrorCode>()
        .map_or("ok", |c| c.as_str());
    if !span.is_disabled() {
        // As i64: OpenTelemetry has no unsigned integers.
        span.record(
            "http.response.status_code",
            i64::from(response.status().as_u16()),
        );
        if code != "ok" {
            telemetry::record_error(&span, code);
        }
    }
    if let Some(metrics) = &metrics {
        metrics.request("http", &route, code, started.elapsed());
    }
    response
}

/// `GET /metrics`: the Prometheus text format.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let Some(registry) = &app.registry else {
        let error =
            Error::NotFound("metrics are off on this server (metrics.enabled = false)".into());
        return ApiError::new(&error, uuid::Uuid::new_v4().to_string()).into_response();
    };
    // The queue's depth lives in its store: read it now, so the scrape sees it current.
    if let (Some(metrics), Some(tasks)) = (&app.metrics, &app.tasks) {
        match tasks.queue.depth().await {
            Ok(depth) => {
                metrics.queue_depth(
                    tasks.queue.name(),
                    depth.waiting,
                    depth.in_flight,
                    depth.dead,
                );
            }
            Err(e) => tracing::warn!(error = %e, "reading the task queue's depth"),
        }
    }
    let mut response = Metrics::encode(registry).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}
