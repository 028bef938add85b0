//! Error responses: `{"error":{"code","message","retryable","retry_after_ms"?},"request_id"}`
//! with the error table's status and, when known, `Retry-After`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{Error, ErrorBody};
use crate::http::with_request_id;

/// A handler's result as its response: the error's body under a new request id.
pub(crate) fn respond(result: Result<Response, Error>) -> Response {
    result.unwrap_or_else(|e| ApiError::new(&e, uuid::Uuid::new_v4().to_string()).into_response())
}

/// An error on its way to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    pub body: ErrorBody,
    pub request_id: String,
}

impl ApiError {
    pub fn new(error: &Error, request_id: impl Into<String>) -> Self {
        Self::from_body(error.body(), request_id)
    }

    pub fn from_body(body: ErrorBody, request_id: impl Into<String>) -> Self {
        Self {
            body,
            request_id: request_id.into(),
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: &'a ErrorBody,
    request_id: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.body.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (
            status,
            Json(Envelope {
                error: &self.body,
                request_id: &self.request_id,
            }),
        )
            .into_response();
        // For the request metrics and the server span.
        response.extensions_mut().insert(self.body.code);
        if let Some(ms) = self.body.retry_after_ms {
            // Retry-After counts whole seconds; round up so a client never retries early.
            let secs = ms.div_ceil(1000).max(1);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        with_request_id(response, &self.request_id)
    }
}
