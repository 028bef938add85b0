//! Authentication of HTTP requests: a bearer token verified by the shared [`Verifier`], and the
//! chat scope. 401 carries `WWW-Authenticate: Bearer …` (RFC 6750) and the usual error JSON.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nagare_authorizer::{AuthError, AuthFailure, token};
use tracing::Instrument;

use crate::app::App;
use crate::error::Error;
use crate::http::dialect::Dialect;
use crate::http::error::ApiError;
use crate::http::header_request_id;

/// Verifies the caller and puts its [`nagare_authorizer::Principal`] into the request's extensions.
pub async fn require_chat_scope(
    State(app): State<Arc<App>>,
    mut request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let value = |name| headers.get(name).and_then(|v| v.to_str().ok());
    // A browser cannot set headers on a WebSocket, so the upgrade alone also takes a token from
    // the query string or the subprotocols. Anywhere else those are refused: query strings end up
    // in proxy and access logs, and the docs promise the subprotocol only on the upgrade.
    let upgrade = headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let query_token = request
        .uri()
        .query()
        .filter(|_| upgrade)
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    // The Anthropic SDK sends its API key, here the token, as `x-api-key`.
    let found = token::find(
        value(header::AUTHORIZATION),
        value(header::SEC_WEBSOCKET_PROTOCOL).filter(|_| upgrade),
        query_token,
    )
    .or_else(|| {
        let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        key.map(str::trim).filter(|t| !t.is_empty())
    });
    let result = match found {
        None => Err(AuthError::MissingToken),
        Some(raw) => {
            app.verifier
                .verify_for(raw, &app.chat_scope)
                .instrument(crate::trace_span!("auth"))
                .await
        }
    };
    match result {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => refuse(&e, headers, Dialect::of_path(request.uri().path())),
    }
}

/// The refusal, in the route's dialect when it speaks one.
fn refuse(e: &AuthError, headers: &axum::http::HeaderMap, dialect: Option<Dialect>) -> Response {
    tracing::info!(reason = e.kind(), "request refused by authentication");
    let request_id = header_request_id(headers).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let challenge = match e.failure() {
        AuthFailure::Unauthenticated if *e == AuthError::MissingToken => {
            Some(r#"Bearer realm="nagare""#)
        }
        AuthFailure::Unauthenticated => Some(r#"Bearer realm="nagare", error="invalid_token""#),
        AuthFailure::Forbidden => Some(r#"Bearer realm="nagare", error="insufficient_scope""#),
        AuthFailure::Unavailable => None,
    };
    let error = ApiError::new(&Error::from(e), request_id);
    let mut response = match dialect {
        Some(dialect) => dialect.error_response(&error.body, &error.request_id),
        None => error.into_response(),
    };
    if let Some(challenge) = challenge.map(HeaderValue::from_static) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
    }
    response
}
