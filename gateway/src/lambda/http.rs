//! The HTTP functions of the AWS deployment: `nagare serve`'s own router (REST chat, SSE, tasks,
//! conversations, health) behind API Gateway's HTTP API (`nagare-http`, buffered) and behind a
//! Lambda Function URL in `RESPONSE_STREAM` mode (`nagare-stream`, where `/v1/chat/stream` sends
//! each event as it is generated). The routes, checks and error table are the self-hosted ones.

use axum::Router;

use crate::config::Config;
use crate::error::StartupError;
use crate::http::{self, AppState};
use crate::server;

/// Builds the router from the config, once per Lambda instance. Tasks are queued in SQS for
/// `nagare-worker`, which runs them; this function never does.
pub async fn build_router(config: &Config) -> Result<Router, StartupError> {
    let (pipeline, stores) = super::build_pipeline(config).await?;
    let verifier = server::build_verifier(config)?;
    let mut state = AppState::new(
        pipeline,
        verifier,
        config.auth.chat_scope.clone(),
        config.body_limit,
    );
    if config.tasks.enabled {
        state = state.with_tasks(super::build_tasks(config, &stores).await?);
    }
    Ok(http::router(state))
}
