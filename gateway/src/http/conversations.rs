//! `GET /v1/conversations`, `GET /v1/conversations/{id}` and `DELETE /v1/conversations/{id}`:
//! the caller's own conversations. Someone else's conversation answers 404, as a missing one does.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use nagare_authorizer::Principal;
use serde_json::json;

use crate::app::App;
use crate::error::Error;
use crate::http::error::respond;
use crate::store::{check_conversation_id, not_found, page_size};

/// `?limit=&page_token=`, checked.
fn paging(query: &HashMap<String, String>) -> Result<(usize, Option<&str>), Error> {
    // Anything but a number is out of range too.
    let limit = query
        .get("limit")
        .map(|raw| raw.parse::<usize>().unwrap_or(0));
    let limit = page_size("limit", limit)?;
    if let Some(unknown) = query
        .keys()
        .find(|k| !["limit", "page_token"].contains(&k.as_str()))
    {
        return Err(Error::InvalidRequest(format!(
            "unknown query parameter '{unknown}'; use limit and page_token"
        )));
    }
    Ok((limit, query.get("page_token").map(String::as_str)))
}

/// `GET /v1/conversations`: the caller's conversations, most recently updated first.
pub async fn list(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    respond(
        async {
            let (limit, page) = paging(&query)?;
            let page = app
                .conversations()?
                .list(&principal.sub, limit, page)
                .await?;
            Ok(Json(json!({
                "conversations": page.items,
                "next_page_token": page.next,
            }))
            .into_response())
        }
        .await,
    )
}

/// `GET /v1/conversations/{id}`: a page of its turns, oldest first.
pub async fn get(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    respond(
        async {
            check_conversation_id(&id)?;
            let (limit, page) = paging(&query)?;
            let page = app
                .conversations()?
                .turns(&principal.sub, &id, limit, page)
                .await?
                .ok_or_else(not_found)?;
            Ok(Json(json!({
                "conversation_id": id,
                "turns": page.items,
                "next_page_token": page.next,
            }))
            .into_response())
        }
        .await,
    )
}

/// `DELETE /v1/conversations/{id}`: 204, or 404 if it is not the caller's.
pub async fn delete(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    respond(
        async {
            check_conversation_id(&id)?;
            if app.conversations()?.delete(&principal.sub, &id).await? {
                Ok(StatusCode::NO_CONTENT.into_response())
            } else {
                Err(not_found())
            }
        }
        .await,
    )
}
