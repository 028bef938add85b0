//! Builders that start Nagare in-process on a free port, wired to a fake upstream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use nagare_gateway::chat::{ChatPipeline, ModelCatalog, PipelineOptions};
use nagare_gateway::http::{self, AppState};
use nagare_gateway::provider::{BedrockProvider, BedrockSettings, ModelProvider};

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

/// A running gateway; it stops when dropped or on [`Gateway::shutdown`].
pub struct Gateway {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Resolves when the server has returned from its graceful shutdown.
    pub stopped: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Starts `nagare serve`'s router on `127.0.0.1:0` with `provider`; every model id the
    /// provider recognises or `allow` lists can be requested.
    pub async fn start(
        provider: Arc<dyn ModelProvider>,
        default_model: &str,
        allow: &[&str],
    ) -> anyhow::Result<Self> {
        let models = ModelCatalog {
            default: default_model.to_owned(),
            aliases: Default::default(),
            allow: allow
                .iter()
                .map(|s| (*s).to_owned())
                .chain([default_model.to_owned()])
                .collect(),
        };
        let pipeline = Arc::new(ChatPipeline::new(
            provider,
            models,
            PipelineOptions::default(),
        ));
        let state = AppState::new(pipeline, 256 * 1024);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = http::router(state.clone());
        let ready = state.ready.clone();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop_rx.await;
                ready.store(false, std::sync::atomic::Ordering::Relaxed);
            };
            let _ = http::serve(listener, app, shutdown, SHUTDOWN_GRACE).await;
        });
        Ok(Self {
            addr,
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
}
