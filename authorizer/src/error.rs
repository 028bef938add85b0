//! Why a token was refused. Every variant but two is a 401; a missing scope is a 403, and an
//! issuer whose keys cannot be fetched is a 503 (the token may be fine; we cannot tell yet).

/// A failed verification, with a reason safe to show the client (no token contents).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token was presented")]
    MissingToken,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token algorithm {0} is not allowed for this issuer")]
    AlgorithmNotAllowed(String),
    #[error("token issuer is not trusted")]
    UnknownIssuer,
    #[error("token signing key is unknown")]
    UnknownKey,
    #[error("token signing key does not match the token: {0}")]
    KeyMismatch(String),
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("token_use must be {0}")]
    WrongTokenUse(String),
    #[error("token lacks the required claim {0}")]
    MissingClaim(&'static str),
    #[error("token lacks the required scope {0}")]
    MissingScope(String),
    #[error("the issuer's signing keys could not be fetched: {0}")]
    KeysUnavailable(String),
}

/// How a transport should answer an [`AuthError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// 401 / UNAUTHENTICATED.
    Unauthenticated,
    /// 403 / PERMISSION_DENIED.
    Forbidden,
    /// 503 / UNAVAILABLE: retry later.
    Unavailable,
}

impl AuthError {
    pub fn failure(&self) -> AuthFailure {
        match self {
            Self::MissingScope(_) => AuthFailure::Forbidden,
            Self::KeysUnavailable(_) => AuthFailure::Unavailable,
            _ => AuthFailure::Unauthenticated,
        }
    }

    /// A low-cardinality label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Malformed(_) => "malformed",
            Self::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            Self::UnknownIssuer => "unknown_issuer",
            Self::UnknownKey => "unknown_key",
            Self::KeyMismatch(_) => "key_mismatch",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongAudience => "wrong_audience",
            Self::WrongTokenUse(_) => "wrong_token_use",
            Self::MissingClaim(_) => "missing_claim",
            Self::MissingScope(_) => "missing_scope",
            Self::KeysUnavailable(_) => "keys_unavailable",
        }
    }
}

/// A configuration that cannot work, found at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("auth: {0}")]
pub struct AuthConfigError(pub String);
