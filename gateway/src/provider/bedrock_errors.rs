//! Bedrock's errors, from the initial response or from inside the event stream, mapped onto the
//! error table.

use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::converse::ConverseError;
use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamError;
use aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError;

use crate::error::Error;

/// The Bedrock error code (`ThrottlingException`, ...) of a modeled error.
pub trait BedrockErrorCode {
    fn bedrock_code(&self) -> Option<&str>;
}

impl BedrockErrorCode for ConverseStreamError {
    fn bedrock_code(&self) -> Option<&str> {
        self.code()
    }
}

impl BedrockErrorCode for ConverseError {
    fn bedrock_code(&self) -> Option<&str> {
        self.code()
    }
}

/// In-stream exceptions carry their type in the frame's `:exception-type` header, which the SDK
/// turns into a variant but not into error metadata, so the code comes from the variant.
impl BedrockErrorCode for ConverseStreamOutputError {
    fn bedrock_code(&self) -> Option<&str> {
        Some(match self {
            Self::InternalServerException(_) => "InternalServerException",
            Self::ModelStreamErrorException(_) => "ModelStreamErrorException",
            Self::ValidationException(_) => "ValidationException",
            Self::ThrottlingException(_) => "ThrottlingException",
            Self::ServiceUnavailableException(_) => "ServiceUnavailableException",
            other => return other.code(),
        })
    }
}

/// Maps any Bedrock SDK error onto the error table. Service errors are classified by their
/// code, so the initial response and in-stream exceptions share one mapping.
pub fn map_sdk_error<E, R>(err: SdkError<E, R>) -> Error
where
    E: BedrockErrorCode + ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::TimeoutError(_) => {
            Error::UpstreamTimeout("Bedrock did not answer in time".into())
        }
        SdkError::DispatchFailure(failure) => {
            if failure.is_timeout() {
                Error::UpstreamTimeout("connecting to Bedrock timed out".into())
            } else {
                Error::UpstreamUnavailable(format!("could not reach Bedrock: {}", describe(&err)))
            }
        }
        SdkError::ConstructionFailure(_) => {
            Error::Internal(format!("building the Bedrock request: {}", describe(&err)))
        }
        SdkError::ResponseError(_) => Error::UpstreamError {
            message: format!("unreadable Bedrock response: {}", describe(&err)),
            retryable: true,
        },
        SdkError::ServiceError(service) => {
            let e = service.err();
            classify(
                e.bedrock_code().unwrap_or("Unknown"),
                e.message().unwrap_or(""),
            )
        }
        _ => Error::UpstreamError {
            message: describe(&err),
            retryable: false,
        },
    }
}

/// The error table row of a Bedrock error code (`ThrottlingException`, ...).
pub fn classify(code: &str, message: &str) -> Error {
    let detail = if message.is_empty() {
        code.to_owned()
    } else {
        format!("{code}: {message}")
    };
    match code {
        "ThrottlingException" | "ServiceQuotaExceededException" | "TooManyRequestsException" => {
            Error::UpstreamThrottled {
                message: detail,
                retry_after: None,
            }
        }
        "ServiceUnavailableException" | "ModelNotReadyException" => {
            Error::UpstreamUnavailable(detail)
        }
        "ModelTimeoutException" => Error::UpstreamTimeout(detail),
        // The caller's input broke a model constraint (for example a prompt over the context window).
        "ValidationException" => {
            Error::InvalidRequest(format!("the model rejected the request: {detail}"))
        }
        "InternalServerException" | "ModelStreamErrorException" => Error::UpstreamError {
            message: detail,
            retryable: true,
        },
        // AccessDenied, ResourceNotFound, ModelError and anything new: the gateway's setup or the
        // model is at fault, and sending the same request again will not help.
        _ => Error::UpstreamError {
            message: detail,
            retryable: false,
        },
    }
}

fn describe(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_table() {
        let rows = [
            ("ThrottlingException", "upstream_throttled", true),
            ("ServiceUnavailableException", "upstream_unavailable", true),
            ("ModelNotReadyException", "upstream_unavailable", true),
            ("ModelTimeoutException", "upstream_timeout", true),
            ("ValidationException", "invalid_request", false),
            ("ModelStreamErrorException", "upstream_error", true),
            ("InternalServerException", "upstream_error", true),
            ("AccessDeniedException", "upstream_error", false),
            ("SomethingNew", "upstream_error", false),
        ];
        for (code, want, retryable) in rows {
            let err = classify(code, "m");
            assert_eq!(err.code().as_str(), want, "{code}");
            assert_eq!(err.retryable(), retryable, "{code}");
        }
    }
}
