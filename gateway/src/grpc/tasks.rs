//! `nagare.v1.TaskService`: `POST` and `GET /v1/tasks` over gRPC. The same submission checks,
//! the same owner-only reads (anyone else's task is NOT_FOUND, as a missing one is).

use std::sync::Arc;

use nagare_proto::v1 as pb;
use nagare_proto::v1::task_service_server::TaskService;
use tonic::{Request, Response, Status};

use crate::app::App;
use crate::chat::ChatRequest;
use crate::error::Error;
use crate::grpc::auth::authenticate;
use crate::grpc::status;
use crate::tasks::{DeliveryStatus, Destinations, TaskRecord, TaskStatus, Tasks};

pub struct TaskApi {
    app: Arc<App>,
}

impl TaskApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    fn tasks(&self) -> Result<&Tasks, Status> {
        self.app.tasks().map_err(failed)
    }
}

fn failed(e: Error) -> Status {
    status::from_error(&e, None)
}

fn status_of(s: TaskStatus) -> pb::TaskStatus {
    match s {
        TaskStatus::Queued => pb::TaskStatus::Queued,
        TaskStatus::Running => pb::TaskStatus::Running,
        TaskStatus::Succeeded => pb::TaskStatus::Succeeded,
        TaskStatus::Failed => pb::TaskStatus::Failed,
    }
}

/// `pending`, `delivered`, `failed`, or empty before the task finishes.
fn delivery_name(d: Option<DeliveryStatus>) -> String {
    d.map_or("", DeliveryStatus::as_str).to_owned()
}

impl From<&TaskRecord> for pb::Task {
    fn from(r: &TaskRecord) -> Self {
        Self {
            task_id: r.task_id.clone(),
            status: status_of(r.status).into(),
            attempts: r.attempts,
            created_at: r.created_at,
            updated_at: r.updated_at,
            result: r.result.clone().map(Into::into),
            error: r.error.as_ref().map(|e| pb::TaskError {
                code: e.code.as_str().to_owned(),
                message: e.message.clone(),
                retryable: e.retryable,
            }),
            callback: r.callback_url.as_ref().map(|url| pb::TaskCallback {
                url: url.clone(),
                delivery: delivery_name(r.delivery),
                attempts: r.delivery_attempts,
            }),
            connection: r.connection_id.as_ref().map(|id| pb::TaskConnection {
                connection_id: id.clone(),
                delivery: delivery_name(r.connection_delivery),
            }),
        }
    }
}

#[tonic::async_trait]
impl TaskService for TaskApi {
    async fn submit(
        &self,
        request: Request<pb::SubmitTaskRequest>,
    ) -> Result<Response<pb::SubmitTaskReply>, Status> {
        let principal = authenticate(&self.app, request.metadata())
            .await
            .map_err(failed)?;
        let tasks = self.tasks()?;
        let r = request.into_inner();
        let limit = self.app.body_limit;
        if prost::Message::encoded_len(&r) > limit {
            return Err(failed(Error::PayloadTooLarge { limit }));
        }
        let chat = r
            .chat
            .ok_or_else(|| failed(Error::InvalidRequest("chat: required".into())))?;
        let chat = ChatRequest::try_from(chat).map_err(failed)?;
        let task_id = tasks
            .submit(
                &self.app.pipeline,
                &principal,
                chat,
                Destinations {
                    callback_url: r.callback_url,
                    connection_id: r.connection_id,
                },
            )
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::SubmitTaskReply {
            task_id,
            status: pb::TaskStatus::Queued.into(),
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let principal = authenticate(&self.app, request.metadata())
            .await
            .map_err(failed)?;
        let record = self
            .tasks()?
            .get(&principal, &request.into_inner().task_id)
            .await
            .map_err(failed)?;
        Ok(Response::new((&record).into()))
    }
}
