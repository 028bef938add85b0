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
use crate::tasks::{Destinations, TaskRecord, Tasks};

fn tasks(state: &AppState) -> Result<&Tasks, Error> {
    state
        .tasks
        .as_deref()
        .ok_or_else(|| Error::NotFound("tasks are not enabled on this server".into()))
}

fn respond(result: Result<Response, Error>, request_id: &str) -> Response {
    result.unwrap_or_else(|e| ApiError::new(&e, request_id).into_response())
}

/// `POST /v1/tasks`: a chat request, plus an optional `callback_url` and `connection_id`.
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
    let to = Destinations {
        callback_url: optional_string(&mut fields, "callback_url")?,
        connection_id: optional_string(&mut fields, "connection_id")?,
    };
    // The rest is a chat request.
    let rest = serde_json::to_vec(&fields).map_err(|e| Error::Internal(e.to_string()))?;
    let request = parse_chat_request(&rest)?;
    let limits = state.pipeline.limits();
    let task_id = tasks.submit(principal, request, to, limits).await?;
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

/// Takes `name` out of the body: absent, null or a string.
fn optional_string(
    fields: &mut serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<String>, Error> {
    match fields.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::InvalidRequest(format!("{name}: must be a string"))),
    }
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
    if let Some(id) = &record.connection_id {
        v["connection"] = json!({
            "connection_id": id,
            "delivery": record.connection_delivery.map(|d| d.as_str()),
        });
    }
    v
}
