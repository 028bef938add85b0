//! Builders that start Nagare in-process on a free port, wired to a fake upstream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use nagare_authorizer::dev::{self, DevClaims};
use nagare_authorizer::{AuthSettings, Verifier};
use nagare_gateway::chat::{ChatPipeline, ModelCatalog, PipelineOptions};
use nagare_gateway::grpc::{self, GrpcSettings};
use nagare_gateway::http::{self, AppState};
use nagare_gateway::provider::{BedrockProvider, BedrockSettings, ModelProvider};
use nagare_gateway::telemetry::Metrics;
use nagare_gateway::ws::WsSettings;

/// The dev-mode secret of test gateways.
pub const DEV_SECRET: &[u8] = b"nagare-tests-dev-secret-32-bytes";

/// A dev-mode token for `sub`, valid for ten minutes.
pub fn dev_token(sub: &str, scopes: &[&str]) -> String {
    tenant_token(sub, None, scopes)
}

/// A dev-mode token for `sub` in `tenant` (without one, the tenant is the sub).
pub fn tenant_token(sub: &str, tenant: Option<&str>, scopes: &[&str]) -> String {
    let claims = DevClaims {
        sub: sub.to_owned(),
        tenant: tenant.map(str::to_owned),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ttl: Duration::from_secs(600),
    };
    // Signing with an HMAC key cannot fail.
    dev::mint(DEV_SECRET, &claims).unwrap_or_default()
}

/// A client that sends `Authorization: Bearer {token}` on every request.
pub fn authed_client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")) {
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap_or_default()
}

/// How long a test gateway lets in-flight requests finish after [`Gateway::shutdown`].
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// An AWS config with fixed test credentials: requests are really signed, nothing reaches AWS.
pub fn test_sdk_config() -> SdkConfig {
    SdkConfig::builder()
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKIDNAGARETEST",
            "nagare-test-secret",
            None,
            None,
            "nagare-tests",
        )))
        .behavior_version(BehaviorVersion::latest())
        .build()
}

/// The real Bedrock provider pointed at `endpoint` (a fake's URL).
pub fn bedrock_provider(endpoint: &str) -> BedrockProvider {
    let settings = BedrockSettings {
        endpoint_url: Some(endpoint.to_owned()),
        ..BedrockSettings::default()
    };
    BedrockProvider::new(&test_sdk_config(), &settings)
}

/// A pipeline over `provider` that routes to `default_model`, or to any model id the provider
/// recognises or `allow` lists.
pub fn test_pipeline(
    provider: Arc<dyn ModelProvider>,
    default_model: &str,
    allow: &[&str],
) -> ChatPipeline {
    let models = ModelCatalog {
        default: default_model.to_owned(),
        aliases: Default::default(),
        allow: allow
            .iter()
            .map(|s| (*s).to_owned())
            .chain([default_model.to_owned()])
            .collect(),
        ..ModelCatalog::default()
    };
    ChatPipeline::new(provider, models, PipelineOptions::default())
}

/// The answer to one `POST /v1/chat`.
pub struct ChatAnswer {
    pub status: u16,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
    pub body: serde_json::Value,
}

/// A running gateway, REST and gRPC; it stops when dropped or on [`Gateway::shutdown`].
pub struct Gateway {
    pub addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Resolves when both servers have returned from their graceful shutdown.
    pub stopped: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Starts `nagare serve`'s router on `127.0.0.1:0` with `provider` and dev-mode auth
    /// ([`dev_token`] mints tokens for it); every model id the provider recognises or `allow`
    /// lists can be requested.
    pub async fn start(
        provider: Arc<dyn ModelProvider>,
        default_model: &str,
        allow: &[&str],
    ) -> anyhow::Result<Self> {
        let verifier = Verifier::new(&AuthSettings::default(), Some(DEV_SECRET))?;
        Self::start_with(provider, default_model, allow, verifier).await
    }

    /// [`Gateway::start`] with a verifier of the test's own.
    pub async fn start_with(
        provider: Arc<dyn ModelProvider>,
        default_model: &str,
        allow: &[&str],
        verifier: Verifier,
    ) -> anyhow::Result<Self> {
        Self::start_full(
            provider,
            default_model,
            allow,
            verifier,
            WsSettings::default(),
        )
        .await
    }

    /// [`Gateway::start_with`] and WebSocket settings of the test's own.
    pub async fn start_full(
        provider: Arc<dyn ModelProvider>,
        default_model: &str,
        allow: &[&str],
        verifier: Verifier,
        ws: WsSettings,
    ) -> anyhow::Result<Self> {
        let pipeline = Arc::new(test_pipeline(provider, default_model, allow));
        Self::start_pipeline(pipeline, verifier, ws).await
    }

    /// [`Gateway::start_pipeline`] with dev-mode auth and default WebSocket settings.
    pub async fn serving(pipeline: ChatPipeline) -> anyhow::Result<Self> {
        let verifier = Verifier::new(&AuthSettings::default(), Some(DEV_SECRET))?;
        Self::start_pipeline(Arc::new(pipeline), verifier, WsSettings::default()).await
    }

    /// [`Gateway::serving`] with `GET /metrics` and request counts in `metrics` (give the
    /// pipeline the same `metrics` as its recorder to count chats too).
    pub async fn serving_metrics(pipeline: ChatPipeline, metrics: Metrics) -> anyhow::Result<Self> {
        let verifier = Verifier::new(&AuthSettings::default(), Some(DEV_SECRET))?;
        let state = AppState::new(Arc::new(pipeline), Arc::new(verifier), "chat", 256 * 1024)
            .with_metrics(metrics);
        Self::start_state(state).await
    }

    /// Starts the router and the gRPC services around a pipeline of the test's own (with
    /// memory, say).
    pub async fn start_pipeline(
        pipeline: Arc<ChatPipeline>,
        verifier: Verifier,
        ws: WsSettings,
    ) -> anyhow::Result<Self> {
        let state = AppState::new(pipeline, Arc::new(verifier), "chat", 256 * 1024).with_ws(ws);
        Self::start_state(state).await
    }

    /// Starts the router and the gRPC services around `state`, built by the test.
    pub async fn start_state(state: AppState) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let grpc_addr = grpc_listener.local_addr()?;
        let grpc_settings = GrpcSettings::default();
        let (routes, health) = grpc::routes(state.clone(), &grpc_settings)?;
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = http::router(state.clone());
        let ready = state.ready.clone();
        let task = tokio::spawn(async move {
            let (stopping, _) = tokio::sync::watch::channel(false);
            let http_stopped = wait_for_true(stopping.subscribe());
            let grpc_stopped = wait_for_true(stopping.subscribe());
            let http_shutdown = async move {
                http_stopped.await;
                ready.store(false, std::sync::atomic::Ordering::Relaxed);
            };
            let signal = async move {
                let _ = stop_rx.await;
                let _ = stopping.send(true);
            };
            let http = http::serve(listener, app, http_shutdown, SHUTDOWN_GRACE);
            let grpc = grpc::serve(
                grpc_listener,
                routes,
                health,
                &grpc_settings,
                grpc_stopped,
                SHUTDOWN_GRACE,
            );
            let _ = tokio::join!(signal, http, grpc);
        });
        Ok(Self {
            addr,
            grpc_addr,
            state,
            stop: Some(stop),
            stopped: Some(task),
        })
    }

    /// Begins a graceful shutdown, as SIGTERM does for `nagare serve`.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends `body` to `POST /v1/chat` as `client`.
    pub async fn post_chat(
        &self,
        client: &reqwest::Client,
        body: &serde_json::Value,
    ) -> anyhow::Result<ChatAnswer> {
        let response = client.post(self.url("/v1/chat")).json(body).send().await?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let body = response.json().await?;
        Ok(ChatAnswer {
            status,
            retry_after,
            body,
        })
    }

    /// The gRPC endpoint, for `tonic::transport::Channel` and other clients.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// An HTTP client that sends a dev token for `alice` with the `chat` scope.
    pub fn client(&self) -> reqwest::Client {
        authed_client(&dev_token("alice", &["chat"]))
    }
}

/// Resolves once the watched flag is true (or its sender is gone).
async fn wait_for_true(mut flag: tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|stop| *stop).await;
}
