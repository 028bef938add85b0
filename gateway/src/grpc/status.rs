//! Failures as gRPC statuses: the error table's gRPC code and public message, and in the
//! trailers `nagare-error-code` (the table's code), `nagare-retryable`, the request id, and for
//! retryable errors with a known wait `grpc-retry-pushback-ms` (the hint gRPC's own retry policy
//! honours).

use tonic::Status;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::error::{Error, ErrorBody};

/// The status of `body`, for the call `request_id` (when one is known yet).
pub fn from_body(body: &ErrorBody, request_id: Option<&str>) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert(
        "nagare-error-code",
        MetadataValue::from_static(body.code.as_str()),
    );
    metadata.insert(
        "nagare-retryable",
        MetadataValue::from_static(if body.retryable { "true" } else { "false" }),
    );
    if let Some(ms) = body.retry_after_ms.filter(|_| body.retryable) {
        metadata.insert("grpc-retry-pushback-ms", MetadataValue::from(ms));
    }
    if let Some(id) = request_id.and_then(|id| MetadataValue::try_from(id).ok()) {
        metadata.insert("x-request-id", id);
    }
    Status::with_metadata(body.code.grpc_code(), body.message.clone(), metadata)
}

/// The status of `error`, logged first when it is the server's fault (the client sees only
/// "internal error").
pub fn from_error(error: &Error, request_id: Option<&str>) -> Status {
    if error.code().is_server_fault() {
        tracing::error!(error = %error, "gRPC call failed");
    }
    from_body(&error.body(), request_id)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rate_limits_carry_a_retry_hint_in_the_trailers() {
        let limited = Error::RateLimited {
            message: "slow down".into(),
            retry_after: Duration::from_millis(1500),
        };
        let status = from_error(&limited, Some("r1"));
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.message(), "slow down");
        let get = |k| status.metadata().get(k).and_then(|v| v.to_str().ok());
        assert_eq!(get("grpc-retry-pushback-ms"), Some("1500"));
        assert_eq!(get("nagare-error-code"), Some("rate_limited"));
        assert_eq!(get("nagare-retryable"), Some("true"));
        assert_eq!(get("x-request-id"), Some("r1"));
    }

    #[test]
    fn internal_details_stay_in_the_log() {
        let status = from_error(&Error::Internal("password=hunter2".into()), None);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), "internal error");
        assert!(status.metadata().get("grpc-retry-pushback-ms").is_none());
    }
}
