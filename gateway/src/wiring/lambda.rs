//! The Lambda functions of the AWS deployment, each built from the config once per instance on
//! the same wiring as `nagare serve`. Tasks there are queued in SQS and delivered to connections
//! of the WebSocket API through its Management API.

use std::sync::Arc;

use axum::Router;

use super::{Host, Wiring};
use crate::app::App;
use crate::error::StartupError;
use crate::lambda::{LambdaInvoker, WsFunction};
use crate::push::ApiGatewayPusher;
use crate::store::ConnectionStore;
use crate::sweep::Sweep;
use crate::tasks::{QueueKind, Worker};

impl Wiring {
    /// `nagare-ws`. `this_function` is `AWS_LAMBDA_FUNCTION_NAME`, the default target of the
    /// asynchronous hand-off of each chat.
    pub async fn ws_function(
        mut self,
        this_function: Option<String>,
    ) -> Result<WsFunction, StartupError> {
        let function = self
            .config
            .lambda
            .function_name
            .clone()
            .or(this_function)
            .ok_or_else(|| {
                StartupError::Config(
                    "lambda.function_name: unset, and AWS_LAMBDA_FUNCTION_NAME is not set either"
                        .into(),
                )
            })?;
        let (app, connections) = self.lambda_app(false).await?;
        let sdk = self.sdk().await;
        Ok(WsFunction {
            app,
            store: connections,
            pusher: Arc::new(ApiGatewayPusher::new(sdk.clone())),
            invoker: Arc::new(LambdaInvoker::new(
                aws_sdk_lambda::Client::new(&sdk),
                function,
            )),
            settings: self.config.lambda.clone(),
            websocket: self.config.websocket.clone(),
        })
    }

    /// `nagare-http` and `nagare-stream`: `nagare serve`'s router. Tasks are queued in SQS for
    /// `nagare-worker`, which runs them; these functions never do.
    pub async fn http_router(mut self) -> Result<Router, StartupError> {
        let with_tasks = self.config.tasks.enabled;
        let (app, _) = self.lambda_app(with_tasks).await?;
        Ok(crate::http::router(app))
    }

    /// `nagare-worker`: runs the queued tasks.
    pub async fn worker(mut self) -> Result<Worker, StartupError> {
        if self.config.tasks.callback_secret.is_none() {
            return Err(StartupError::Config(
                "tasks.callback_secret: required in Lambda, which has no data dir to keep a generated key".into(),
            ));
        }
        let (app, _) = self.lambda_app(true).await?;
        let tasks = app.tasks.clone().ok_or_else(|| {
            StartupError::Config("tasks.enabled: the worker function needs tasks on".into())
        })?;
        Ok(Worker::new(tasks, app.pipeline.clone()))
    }

    /// `nagare-sweep`: what is kept past its time, collected on a schedule.
    pub async fn sweep(mut self) -> Result<Sweep, StartupError> {
        let (app, _) = self.lambda_app(false).await?;
        Ok(app.sweep.clone())
    }

    /// The app as a Lambda function has it, with tasks (in SQS) when `with_tasks`; and the
    /// connection store.
    async fn lambda_app(
        &mut self,
        with_tasks: bool,
    ) -> Result<(Arc<App>, Arc<dyn ConnectionStore>), StartupError> {
        if with_tasks && self.config.tasks.queue != QueueKind::Sqs {
            return Err(StartupError::Config(
                "tasks.queue: Lambda functions queue tasks in SQS; set tasks.queue = \"sqs\" and tasks.queue_url".into(),
            ));
        }
        self.config.tasks.enabled = with_tasks;
        let (app, stores) = self.build(Host::Lambda).await?;
        Ok((Arc::new(app), stores.connections))
    }
}
