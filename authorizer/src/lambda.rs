//! The API Gateway Lambda authorizer (REQUEST type), for the WebSocket `$connect` route and for
//! REST routes. A bad or missing token is API Gateway's 401 (the function fails with exactly
//! `Unauthorized`); a valid token without the needed scope gets a Deny policy, which is a 403.

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerPolicy, ApiGatewayCustomAuthorizerRequestTypeRequest,
    ApiGatewayCustomAuthorizerResponse,
};
use aws_lambda_events::iam::{IamPolicyEffect, IamPolicyStatement};
use serde::{Deserialize, Serialize};

use crate::{AuthError, AuthFailure, Principal, Verifier, token};

/// Passed to the integration as `$context.authorizer.*` (all values strings, as API Gateway requires).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizerContext {
    pub sub: String,
    pub tenant: String,
    /// Space-separated.
    pub scopes: String,
}

/// Why the authorizer failed the invocation.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizerError {
    /// API Gateway answers 401 only when the error message is exactly `Unauthorized`.
    #[error("Unauthorized")]
    Unauthorized,
    /// The issuer's keys could not be fetched: API Gateway answers 500 and the client may retry.
    #[error("authorizer unavailable: {0}")]
    Unavailable(String),
}

impl From<AuthorizerError> for lambda_runtime::Diagnostic {
    fn from(e: AuthorizerError) -> Self {
        let error_type = match e {
            AuthorizerError::Unauthorized => "Unauthorized",
            AuthorizerError::Unavailable(_) => "Unavailable",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.into(),
            error_message: e.to_string(),
        }
    }
}

/// The response for one authorizer event.
pub type AuthorizerResponse = ApiGatewayCustomAuthorizerResponse<AuthorizerContext>;

/// Context values are kept well under API Gateway's limits.
const MAX_SCOPES_CHARS: usize = 4096;

/// Verifies the token of `event` and returns the IAM policy for it.
pub async fn authorize(
    verifier: &Verifier,
    required_scope: &str,
    event: &ApiGatewayCustomAuthorizerRequestTypeRequest,
) -> Result<AuthorizerResponse, AuthorizerError> {
    let header = |name: &str| event.headers.get(name).and_then(|v| v.to_str().ok());
    // Query strings end up in access logs: a token there is accepted only on the WebSocket
    // `$connect`, where a browser has no other way to send it.
    let connect = event
        .method_arn
        .as_deref()
        .is_some_and(|arn| arn.ends_with("/$connect"));
    let found = token::find(
        header("authorization"),
        header("sec-websocket-protocol"),
        event
            .query_string_parameters
            .first("token")
            .filter(|_| connect),
    );
    let Some(raw) = found else {
        tracing::info!(reason = "missing_token", "authorizer: unauthorized");
        return Err(AuthorizerError::Unauthorized);
    };
    let principal = match verifier.verify(raw).await {
        Ok(p) => p,
        Err(e) => return Err(refuse(&e)),
    };
    let resource = event.method_arn.clone().unwrap_or_default();
    let effect = if principal.has_scope(required_scope) {
        IamPolicyEffect::Allow
    } else {
        tracing::info!(
            reason = "missing_scope",
            scope = required_scope,
            "authorizer: deny"
        );
        IamPolicyEffect::Deny
    };
    Ok(policy(&principal, effect, resource))
}

fn refuse(e: &AuthError) -> AuthorizerError {
    tracing::info!(reason = e.kind(), "authorizer: unauthorized");
    match e.failure() {
        AuthFailure::Unavailable => AuthorizerError::Unavailable(e.to_string()),
        AuthFailure::Unauthenticated | AuthFailure::Forbidden => AuthorizerError::Unauthorized,
    }
}

fn policy(principal: &Principal, effect: IamPolicyEffect, resource: String) -> AuthorizerResponse {
    let mut statement = IamPolicyStatement::default();
    statement.action = vec!["execute-api:Invoke".into()];
    statement.effect = effect;
    statement.resource = vec![resource];
    let mut document = ApiGatewayCustomAuthorizerPolicy::default();
    document.version = Some("2012-10-17".into());
    document.statement = vec![statement];
    let mut scopes = principal.scopes.join(" ");
    if scopes.len() > MAX_SCOPES_CHARS {
        let cut = scopes[..MAX_SCOPES_CHARS].rfind(' ').unwrap_or(0);
        scopes.truncate(cut);
    }
    let mut response = AuthorizerResponse::default();
    response.principal_id = Some(principal.sub.clone());
    response.policy_document = document;
    response.context = AuthorizerContext {
        sub: principal.sub.clone(),
        tenant: principal.tenant.clone(),
        scopes,
    };
    response
}
