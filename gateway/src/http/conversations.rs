//! `GET /v1/conversations`, `GET /v1/conversations/{id}` and `DELETE /v1/conversations/{id}`:
//! the caller's own conversations. Someone else's conversation answers 404, as a missing one does.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use nagare_authorizer::Principal;
use serde_json::json;

use crate::error::Error;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::store::{ConversationStore, valid_conversation_id};

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

/// `?limit=&page_token=`, checked.
fn paging(query: &HashMap<String, String>) -> Result<(usize, Option<&str>), Error> {
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                Error::InvalidRequest(format!("limit: must be a number from 1 to {MAX_LIMIT}"))
            })?,
    };
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

fn store(state: &AppState) -> Result<&dyn ConversationStore, Error> {
    state
        .pipeline
        .conversations()
        .map(|s| s.as_ref())
        .ok_or_else(|| Error::NotFound("conversation memory is not enabled on this server".into()))
}

fn checked_id(id: &str) -> Result<(), Error> {
    if valid_conversation_id(id) {
        Ok(())
    } else {
        Err(Error::InvalidRequest(
            "conversation id: not an id this server issued".into(),
        ))
    }
}

fn respond(result: Result<Response, Error>) -> Response {
    result.unwrap_or_else(|e| ApiError::new(&e, uuid::Uuid::new_v4().to_string()).into_response())
}

/// `GET /v1/conversations`: the caller's conversations, most recently updated first.
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    respond(
        async {
            let (limit, page) = paging(&query)?;
            let page = store(&state)?.list(&principal.sub, limit, page).await?;
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
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    respond(
        async {
            checked_id(&id)?;
            let (limit, page) = paging(&query)?;
            let page = store(&state)?
                .turns(&principal.sub, &id, limit, page)
                .await?
                .ok_or_else(|| Error::NotFound("conversation not found".into()))?;
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
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    respond(
        async {
            checked_id(&id)?;
            if store(&state)?.delete(&principal.sub, &id).await? {
                Ok(StatusCode::NO_CONTENT.into_response())
            } else {
                Err(Error::NotFound("conversation not found".into()))
            }
        }
        .await,
    )
}
