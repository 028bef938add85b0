//! The one error table (DESIGN.md): every failure a client can see is an [`Error`], and
//! [`ErrorCode`] gives it the same code, HTTP status and retry hint on every transport.

use std::time::Duration;

/// Everything that can end a request, classified by [`Error::code`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request contradicts what is already there (an upload whose bytes have arrived).
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Duration,
    },
    #[error("the model is throttling requests: {message}")]
    UpstreamThrottled {
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("the model service is unavailable: {0}")]
    UpstreamUnavailable(String),
    #[error("the model did not answer in time: {0}")]
    UpstreamTimeout(String),
    #[error("the model failed: {message}")]
    UpstreamError { message: String, retryable: bool },
    #[error("the request was cancelled")]
    Cancelled,
    /// This server cannot take the request now (it is shutting down, or its store is failing);
    /// the same request may succeed here later or on another instance.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

/// A Lambda function's failure carries the error table's code as its type.
impl From<Error> for lambda_runtime::Diagnostic {
    fn from(e: Error) -> Self {
        Self {
            error_type: e.code().as_str().into(),
            error_message: e.to_string(),
        }
    }
}

/// A refused token, as the client sees it on every transport.
impl From<&nagare_authorizer::AuthError> for Error {
    fn from(e: &nagare_authorizer::AuthError) -> Self {
        use nagare_authorizer::AuthFailure;
        match e.failure() {
            AuthFailure::Unauthenticated => Self::Unauthorized(e.to_string()),
            AuthFailure::Forbidden => Self::Forbidden(e.to_string()),
            AuthFailure::Unavailable => Self::UpstreamUnavailable(e.to_string()),
        }
    }
}

/// The stable, low-cardinality code of an error: the `code` field of every error body and frame,
/// and the label of error metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    RateLimited,
    UpstreamThrottled,
    UpstreamUnavailable,
    UpstreamTimeout,
    UpstreamError,
    Cancelled,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub const ALL: [Self; 15] = [
        Self::InvalidRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::Conflict,
        Self::PayloadTooLarge,
        Self::RateLimited,
        Self::UpstreamThrottled,
        Self::UpstreamUnavailable,
        Self::UpstreamTimeout,
        Self::UpstreamError,
        Self::Cancelled,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The code named `wire` (as [`Self::as_str`] writes it).
    pub fn from_wire(wire: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == wire)
    }

    /// The wire name, e.g. `upstream_throttled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimited => "rate_limited",
            Self::UpstreamThrottled => "upstream_throttled",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamError => "upstream_error",
            Self::Cancelled => "cancelled",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status of the error table. 499 is nginx's "client closed request".
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict => 409,
            Self::PayloadTooLarge => 413,
            Self::RateLimited => 429,
            Self::UpstreamThrottled | Self::UpstreamUnavailable | Self::Unavailable => 503,
            Self::UpstreamTimeout => 504,
            Self::UpstreamError => 502,
            Self::Cancelled => 499,
            Self::Internal => 500,
        }
    }

    /// The gRPC status code of the error table.
    pub fn grpc_code(self) -> tonic::Code {
        use tonic::Code;
        match self {
            Self::InvalidRequest | Self::PayloadTooLarge => Code::InvalidArgument,
            Self::Unauthorized => Code::Unauthenticated,
            Self::Forbidden => Code::PermissionDenied,
            Self::NotFound => Code::NotFound,
            Self::MethodNotAllowed => Code::Unimplemented,
            Self::Conflict => Code::AlreadyExists,
            Self::RateLimited => Code::ResourceExhausted,
            Self::UpstreamThrottled | Self::UpstreamUnavailable | Self::Unavailable => {
                Code::Unavailable
            }
            Self::UpstreamTimeout => Code::DeadlineExceeded,
            Self::UpstreamError | Self::Internal => Code::Internal,
            Self::Cancelled => Code::Cancelled,
        }
    }

    /// Server errors whose details stay in the log (CONVENTIONS.md §9).
    pub fn is_server_fault(self) -> bool {
        matches!(self, Self::Internal)
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = String::deserialize(d)?;
        Self::from_wire(&wire)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code {wire}")))
    }
}

impl Error {
    /// The row of the error table this error belongs to.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidRequest(_) => ErrorCode::InvalidRequest,
            Self::Unauthorized(_) => ErrorCode::Unauthorized,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::UpstreamThrottled { .. } => ErrorCode::UpstreamThrottled,
            Self::UpstreamUnavailable(_) => ErrorCode::UpstreamUnavailable,
            Self::UpstreamTimeout(_) => ErrorCode::UpstreamTimeout,
            Self::UpstreamError { .. } => ErrorCode::UpstreamError,
            Self::Cancelled => ErrorCode::Cancelled,
            Self::Unavailable { .. } => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// A request this server will not start, or a stream it will not finish, because it is
    /// shutting down: retry, and another instance (or this one, restarted) takes it.
    pub fn shutting_down() -> Self {
        Self::Unavailable {
            message: "the server is shutting down; retry".into(),
            retry_after: Some(Duration::from_secs(1)),
        }
    }

    /// Whether the same request may succeed if sent again later.
    pub fn retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. }
            | Self::UpstreamThrottled { .. }
            | Self::UpstreamUnavailable(_)
            | Self::UpstreamTimeout(_)
            | Self::Unavailable { .. } => true,
            Self::UpstreamError { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// How long a client should wait before retrying, when we know.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            Self::UpstreamThrottled { retry_after, .. } | Self::Unavailable { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// The message a client may see. Internal details are replaced by a generic text;
    /// the caller logs the full error.
    pub fn public_message(&self) -> String {
        if self.code().is_server_fault() {
            "internal error".to_owned()
        } else {
            self.to_string()
        }
    }

    /// The wire form shared by REST error bodies, SSE/WebSocket `error` events and task results.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code(),
            message: self.public_message(),
            retryable: self.retryable(),
            retry_after_ms: self.retry_after().map(|d| d.as_millis() as u64),
        }
    }
}

/// `{"code","message","retryable","retry_after_ms"?}` — the error object of every transport.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    pub retryable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// Why `nagare serve` (or a Lambda function) could not start; printed once and fatal.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("config: {0}")]
    Config(String),
    #[error("{0}")]
    Provider(String),
    /// A configured store or other backend cannot be used.
    #[error("{0}")]
    Backend(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_match_design() {
        let rows = [
            (
                Error::InvalidRequest("x".into()),
                "invalid_request",
                400,
                false,
            ),
            (
                Error::PayloadTooLarge { limit: 1 },
                "payload_too_large",
                413,
                false,
            ),
            (
                Error::RateLimited {
                    message: "x".into(),
                    retry_after: Duration::from_millis(1500),
                },
                "rate_limited",
                429,
                true,
            ),
            (
                Error::UpstreamThrottled {
                    message: "x".into(),
                    retry_after: None,
                },
                "upstream_throttled",
                503,
                true,
            ),
            (
                Error::UpstreamTimeout("x".into()),
                "upstream_timeout",
                504,
                true,
            ),
            (
                Error::UpstreamError {
                    message: "x".into(),
                    retryable: false,
                },
                "upstream_error",
                502,
                false,
            ),
            (Error::Cancelled, "cancelled", 499, false),
            (
                Error::MethodNotAllowed("x".into()),
                "method_not_allowed",
                405,
                false,
            ),
            (Error::Conflict("x".into()), "conflict", 409, false),
            (Error::shutting_down(), "unavailable", 503, true),
            (
                Error::Internal("db password=x".into()),
                "internal",
                500,
                false,
            ),
        ];
        for (err, code, status, retryable) in rows {
            assert_eq!(err.code().as_str(), code);
            assert_eq!(err.code().http_status(), status, "{code}");
            assert_eq!(err.retryable(), retryable, "{code}");
        }
    }

    #[test]
    fn grpc_codes_follow_the_table() {
        use tonic::Code;
        let rows = [
            (ErrorCode::InvalidRequest, Code::InvalidArgument),
            (ErrorCode::Unauthorized, Code::Unauthenticated),
            (ErrorCode::Forbidden, Code::PermissionDenied),
            (ErrorCode::NotFound, Code::NotFound),
            (ErrorCode::MethodNotAllowed, Code::Unimplemented),
            (ErrorCode::Conflict, Code::AlreadyExists),
            (ErrorCode::PayloadTooLarge, Code::InvalidArgument),
            (ErrorCode::RateLimited, Code::ResourceExhausted),
            (ErrorCode::UpstreamThrottled, Code::Unavailable),
            (ErrorCode::UpstreamUnavailable, Code::Unavailable),
            (ErrorCode::UpstreamTimeout, Code::DeadlineExceeded),
            (ErrorCode::UpstreamError, Code::Internal),
            (ErrorCode::Cancelled, Code::Cancelled),
            (ErrorCode::Unavailable, Code::Unavailable),
            (ErrorCode::Internal, Code::Internal),
        ];
        for (code, grpc) in rows {
            assert_eq!(code.grpc_code(), grpc, "{}", code.as_str());
        }
    }

    #[test]
    fn internal_details_never_reach_the_client() {
        let body = Error::Internal("db password=hunter2".into()).body();
        assert_eq!(body.message, "internal error");
        let json = serde_json::to_string(&body).unwrap_or_default();
        assert!(!json.contains("hunter2"));
    }

    #[test]
    fn retry_hint_is_in_milliseconds() {
        let body = Error::RateLimited {
            message: "slow down".into(),
            retry_after: Duration::from_millis(1500),
        }
        .body();
        assert_eq!(body.retry_after_ms, Some(1500));
    }
}
