//! Authentication of gRPC calls: `authorization: Bearer <JWT>` metadata, verified by the same
//! [`nagare_authorizer::Verifier`] as every other transport, and the chat scope.

use nagare_authorizer::{AuthError, Principal, token};
use tonic::metadata::MetadataMap;
use tracing::Instrument;

use crate::app::App;
use crate::error::Error;

/// The caller, or the error table's `unauthorized` / `forbidden` / `upstream_unavailable`.
pub async fn authenticate(app: &App, metadata: &MetadataMap) -> Result<Principal, Error> {
    let authorization = metadata.get("authorization").and_then(|v| v.to_str().ok());
    let result = match token::find(authorization, None, None) {
        None => Err(AuthError::MissingToken),
        Some(raw) => {
            app.verifier
                .verify_for(raw, &app.chat_scope)
                .instrument(crate::trace_span!("auth"))
                .await
        }
    };
    result.map_err(|e| {
        tracing::info!(reason = e.kind(), "gRPC call refused by authentication");
        Error::from(&e)
    })
}
