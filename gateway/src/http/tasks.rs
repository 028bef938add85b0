//! `POST /v1/tasks` (a chat to run later: 202 with its id) and `GET /v1/tasks/{id}` (its status
//! and result, for its submitter only; anyone else gets 404, as for a missing task).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use nagare_authorizer::Principal;
use serde_json::{Value, json};

use crate::app::App;
use crate::chat::{ChatRequest, parse_json, parse_json_hiding};
use crate::error::Error;
use crate::http::error::ApiError;
use crate::tasks::{Destinations, TaskRecord};

fn respond(result: Result<Response, Error>, request_id: &str) -> Response {
    result.unwrap_or_else(|e| ApiError::new(&e, request_id).into_response())
}

/// `POST /v1/tasks`: a chat request, plus an optional `callback_url` and `connection_id`.
pub async fn submit(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    respond(submit_task(&app, &principal, body).await, &request_id)
}

async fn submit_task(
    app: &App,
    principal: &Principal,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let tasks = app.tasks()?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge {
                limit: app.body_limit,
            }
        } else {
            Error::InvalidRequest(e.body_text())
        }
    })?;
    // The task's own fields, then the rest of the same object as a chat request.
    let to: Destinations = parse_json(&body)?;
    let request: ChatRequest = parse_json_hiding(&body, Destinations::FIELDS)?;
    let task_id = tasks.submit(&app.pipeline, principal, request, to).await?;
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
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
    Path(task_id): Path<String>,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let result = async {
        let record = app.tasks()?.get(&principal, &task_id).await?;
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
