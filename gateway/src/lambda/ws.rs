//! The `nagare-ws` function: one handler for every route of the API Gateway WebSocket API, and
//! for the asynchronous invocations that stream chats. Every frame arrives in its own
//! invocation, so what a connection needs to remember lives in the [`ConnectionStore`].

use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use bytes::Bytes;
use serde_json::Value;

use super::generate::{self, GenerateJob};
use super::{AsyncInvoker, LambdaWsSettings};
use crate::app::App;
use crate::chat::{ChatRequest, Route};
use crate::error::Error;
use crate::push::ConnectionPusher;
use crate::store::{AdmitRefusal, ConnectionRecord, ConnectionStore, unix_now};
use crate::ws::WsSettings;
use crate::ws::frames::{self, ClientFrame};

/// The key of an invocation payload that carries a [`GenerateJob`] instead of a route event.
const JOB_KEY: &str = "nagare_generate";

/// Everything the handler uses, built once per Lambda instance.
pub struct WsFunction {
    pub app: Arc<App>,
    pub store: Arc<dyn ConnectionStore>,
    pub pusher: Arc<dyn ConnectionPusher>,
    pub invoker: Arc<dyn AsyncInvoker>,
    pub settings: LambdaWsSettings,
    /// Per-connection limits, shared with `nagare serve`'s `/v1/ws`.
    pub websocket: WsSettings,
}

/// Where a connection's frames go.
pub(super) struct Target<'a> {
    pub endpoint: String,
    pub connection_id: &'a str,
}

impl WsFunction {
    /// Handles one invocation: a route event from API Gateway, or a generation job.
    pub async fn handle(&self, event: Value) -> Result<Value, Error> {
        if let Some(job) = event.get(JOB_KEY) {
            let job: GenerateJob = serde_json::from_value(job.clone())
                .map_err(|e| Error::InvalidRequest(format!("{JOB_KEY}: {e}")))?;
            generate::run(self, job).await;
            return Ok(Value::Null);
        }
        let event: ApiGatewayWebsocketProxyRequest = serde_json::from_value(event)
            .map_err(|e| Error::InvalidRequest(format!("not a WebSocket route event: {e}")))?;
        let status = self.route(event).await;
        let mut response = ApiGatewayProxyResponse::default();
        response.status_code = i64::from(status);
        serde_json::to_value(response).map_err(|e| Error::Internal(e.to_string()))
    }

    /// The HTTP status for API Gateway; for `$connect`, anything but 2xx refuses the connection.
    async fn route(&self, event: ApiGatewayWebsocketProxyRequest) -> u16 {
        let ctx = &event.request_context;
        let Some(connection_id) = ctx.connection_id.as_deref() else {
            tracing::warn!("route event without a connection id");
            return 400;
        };
        let domain = ctx.domain_name.as_deref().unwrap_or_default();
        let stage = ctx.stage.as_deref().unwrap_or_default();
        match ctx.route_key.as_deref().unwrap_or_default() {
            "$connect" => self.connect(&event, connection_id, domain, stage).await,
            "$disconnect" => self.disconnect(connection_id).await,
            _ => {
                let target = Target {
                    endpoint: self.settings.endpoint(domain, stage),
                    connection_id,
                };
                self.message(&event, &target).await;
                // Replies go out as posts; the route's own response is not sent to the client.
                200
            }
        }
    }

    async fn connect(
        &self,
        event: &ApiGatewayWebsocketProxyRequest,
        connection_id: &str,
        domain: &str,
        stage: &str,
    ) -> u16 {
        let field = |name: &str| {
            event
                .request_context
                .authorizer
                .fields
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let sub = field("sub");
        if sub.is_empty() {
            // Without the authorizer's verified subject there is no one to run chats as.
            tracing::warn!("$connect without an authorizer subject; is the authorizer attached?");
            return 403;
        }
        let now = unix_now();
        let record = ConnectionRecord {
            connection_id: connection_id.to_owned(),
            tenant: Some(field("tenant"))
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| sub.clone()),
            sub,
            scopes: field("scopes"),
            domain: domain.to_owned(),
            stage: stage.to_owned(),
            connected_at: now,
            ttl: now + self.settings.connection_ttl_secs,
        };
        // One user's open connections are capped here as on `nagare serve`; API Gateway
        // answers the client's upgrade with this status.
        match self
            .store
            .seat(&record, self.websocket.max_per_principal)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!("$connect refused: the user has too many open connections");
                return 429;
            }
            Err(_) => return 500,
        }
        match self.store.put(&record).await {
            Ok(()) => 200,
            Err(_) => {
                let _ = self.store.unseat(&record).await;
                500
            }
        }
    }

    /// Forgets the connection and gives its seat back.
    async fn disconnect(&self, connection_id: &str) -> u16 {
        let record = self.store.get(connection_id).await.ok().flatten();
        if self.store.delete(connection_id).await.is_err() {
            return 500;
        }
        if let Some(record) = record
            && self.store.unseat(&record).await.is_err()
        {
            // The seat expires with the connection's record anyway.
            tracing::warn!("could not give a closed connection's seat back");
        }
        200
    }

    /// A client frame: errors go back to the client as `error` frames.
    async fn message(&self, event: &ApiGatewayWebsocketProxyRequest, target: &Target<'_>) {
        let body = event.body.as_deref().unwrap_or_default();
        if event.is_base64_encoded {
            let e = Error::InvalidRequest("binary frames are not supported; send JSON text".into());
            return self.send(target, frames::error(None, &e)).await;
        }
        match frames::parse(body, self.websocket.max_message_bytes) {
            Ok(ClientFrame::Ping { request_id }) => {
                self.send(
                    target,
                    frames::pong(request_id.as_deref(), target.connection_id),
                )
                .await;
            }
            Ok(ClientFrame::Auth { request_id, .. }) => {
                // API Gateway authorizes once, at $connect, and ends every connection within
                // 2 hours; there is no token to renew.
                let e = Error::InvalidRequest(
                    "action: auth is not needed on API Gateway connections, which the \
                     authorizer checks at $connect"
                        .into(),
                );
                self.send(target, frames::error(request_id.as_deref(), &e))
                    .await;
            }
            Ok(ClientFrame::Cancel { request_id }) => {
                // A cancel that crosses the chat's `done` on the wire is not an error.
                let _ = self.store.cancel(target.connection_id, &request_id).await;
            }
            Ok(ClientFrame::Chat(request)) => {
                if let Err((id, e)) = self.chat(target, *request).await {
                    self.send(target, frames::error(id.as_deref(), &e)).await;
                }
            }
            Err(e) => {
                let frame = frames::error(e.request_id.as_deref(), &e.error);
                self.send(target, frame).await;
            }
        }
    }

    /// Admits a chat and hands it to an asynchronous invocation.
    async fn chat(
        &self,
        target: &Target<'_>,
        request: ChatRequest,
    ) -> Result<(), (Option<String>, Error)> {
        let client_id = request.request_id.clone();
        let record = self
            .store
            .get(target.connection_id)
            .await
            .map_err(|e| (client_id.clone(), e))?
            .ok_or_else(|| (client_id.clone(), unknown_connection()))?;
        let principal = record.principal();
        let chat = self
            .app
            .pipeline
            .admit(request, &principal, Route::LambdaWebSocket, Instant::now())
            .map_err(|e| (client_id, e))?;
        let request_id = chat.request_id().to_owned();
        let fail = |e: Error| (Some(request_id.clone()), e);
        let max = self.websocket.max_inflight;
        match self
            .store
            .admit(target.connection_id, &request_id, max)
            .await
            .map_err(fail)?
        {
            Ok(()) => {}
            Err(AdmitRefusal::UnknownConnection) => return Err(fail(unknown_connection())),
            Err(AdmitRefusal::Duplicate) => return Err(fail(frames::duplicate_chat(&request_id))),
            Err(AdmitRefusal::AtLimit { max }) => return Err(fail(frames::too_many_chats(max))),
        }
        let job = GenerateJob {
            connection_id: target.connection_id.to_owned(),
            endpoint: target.endpoint.clone(),
            sub: record.sub,
            tenant: record.tenant,
            scopes: record.scopes,
            request: chat.into_request(),
        };
        let payload = serde_json::to_vec(&serde_json::json!({ JOB_KEY: job }))
            .map_err(|e| fail(Error::Internal(e.to_string())))?;
        if let Err(e) = self.invoker.invoke_async(payload).await {
            let _ = self.store.finish(target.connection_id, &request_id).await;
            return Err(fail(e));
        }
        Ok(())
    }

    /// Posts one frame, retrying throttling; a failure is logged, as there is no one to tell.
    pub(super) async fn send(&self, target: &Target<'_>, frame: String) {
        if let Err(e) = generate::post(self, target, Bytes::from(frame)).await {
            tracing::info!(error = %e, "could not post to the connection");
        }
    }
}

fn unknown_connection() -> Error {
    Error::Unauthorized("this connection is not registered (it may have expired); reconnect".into())
}
