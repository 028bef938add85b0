//! `POST /v1/uploads` (declare a file: 201 with where to PUT it), `PUT` to the URL it answers
//! (the bytes, checked against the declaration; no bearer token, the URL is signed), and
//! `GET /v1/uploads/{id}` (its state, for its owner only; anyone else gets 404).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use nagare_authorizer::Principal;
use serde::Deserialize;

use crate::app::App;
use crate::chat::parse_json;
use crate::error::Error;
use crate::http::error::respond;
use crate::uploads::{Declaration, MAX_DOCUMENT_BYTES, UploadInfo};

/// `POST /v1/uploads`: `{filename, content_type, size, sha256}`.
pub async fn declare(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(
        async {
            let uploads = app.uploads()?;
            let body = body.map_err(|e| read_failure(&e, app.body_limit))?;
            let declared: Declaration = parse_json(&body)?;
            let ticket = uploads
                .declare(&principal, declared, &origin(&headers))
                .await?;
            Ok((StatusCode::CREATED, Json(ticket)).into_response())
        }
        .await,
    )
}

/// The signed query of an upload URL.
#[derive(Deserialize)]
pub struct Signed {
    expires: u64,
    signature: String,
}

/// `PUT /v1/uploads/{id}/content?expires=…&signature=…`: the bytes.
pub async fn put_content(
    State(app): State<Arc<App>>,
    Path(upload_id): Path<String>,
    query: Result<Query<Signed>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(
        async {
            let uploads = app.uploads()?;
            let Query(signed) = query.map_err(|_| {
                Error::Forbidden("an upload URL carries its expires and signature".into())
            })?;
            let body = body.map_err(|e| read_failure(&e, MAX_DOCUMENT_BYTES as usize))?;
            let info = uploads
                .receive(&upload_id, signed.expires, &signed.signature, body)
                .await?;
            Ok(Json(info).into_response())
        }
        .await,
    )
}

/// `GET /v1/uploads/{id}`.
pub async fn get(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
    Path(upload_id): Path<String>,
) -> Response {
    respond(
        async {
            let record = app.uploads()?.owned(&principal, &upload_id).await?;
            Ok(Json(UploadInfo::from(&record)).into_response())
        }
        .await,
    )
}

fn read_failure(e: &BytesRejection, limit: usize) -> Error {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::PayloadTooLarge { limit }
    } else {
        Error::InvalidRequest(e.body_text())
    }
}

/// The scheme and host the client reached us at: where a self-hosted upload URL points unless
/// `uploads.public_url` says otherwise.
fn origin(headers: &HeaderMap) -> String {
    let value = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let scheme = match value("x-forwarded-proto") {
        Some("https") => "https",
        _ => "http",
    };
    let host = value(header::HOST.as_str()).unwrap_or("localhost");
    format!("{scheme}://{host}")
}
