//! `POST /v1/tasks` (a chat to run later: 202 with its id) and `GET /v1/tasks/{id}` (its status
//! and result, for its submitter only; anyone else gets 404, as for a missing task).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use nagare_authorizer::Principal;
use serde_json::{Value, json};

use crate::chat::{parse_chat_request, parse_json};
use crate::error::Error;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::tasks::{TaskRecord, Tasks};

fn tasks(state: &AppState) -> Result<&Tasks, Error> {
    state
        .tasks
        .as_deref()
        .ok_or_else(|| Error::NotFound("tasks are not enabled on this server".into()))
}

fn respond(result: Result<Response, Error>, request_id: &str) -> Response {
    result.unwrap_or_else(|e| ApiError::new(&e, request_id).into_response())
}

/// `POST /v1/tasks`: a chat request, plus an optional `callback_url`.
pub async fn submit(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    respond(submit_task(&state, &principal, body).await, &request_id)
}

async fn submit_task(
    state: &AppState,
    principal: &Principal,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let tasks = tasks(state)?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge {
                limit: state.body_limit,
            }
        } else {
            Error::InvalidRequest(e.body_text())
        }
    })?;
    let mut fields: serde_json::Map<String, Value> = parse_json(&body)?;
    let callback_url = match fields.remove("callback_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(url)) => Some(url),
        Some(_) => {
            return Err(Error::InvalidRequest(
                "callback_url: must be a string".into(),
            ));
        }
    };
    // The rest is a chat request.
    let rest = serde_json::to_vec(&fields).map_err(|e| Error::Internal(e.to_string()))?;
    let request = parse_chat_request(&rest)?;
    let limits = state.pipeline.limits();
    let task_id = tasks
        .submit(principal, request, callback_url, limits)
        .await?;
    let mut response = (
        StatusCode::ACCEPTED,
        Json(json!({ "task_id": task_id, "status": "queued" })),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/tasks/{task_id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /v1/tasks/{id}`.
pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(task_id): Path<String>,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let result = async {
        let record = tasks(&state)?.get(&principal, &task_id).await?;
        Ok(Json(view(&record)).into_response())
    }
    .await;
    respond(result, &request_id)
}

/// A task as its submitter sees it.
pub fn view(record: &TaskRecord) -> Value {
    let mut v = record.outcome();
    v["attempts"] = json!(record.attempts);
    v["created_at"] = json!(record.created_at);
    v["updated_at"] = json!(record.updated_at);
    if let Some(url) = &record.callback_url {
        v["callback"] = json!({
            "url": url,
            "delivery": record.delivery.map(|d| d.as_str()),
            "attempts": record.delivery_attempts,
        });
    }
    v
}
