//! Test gateways started in-process on free ports, built from a [`Config`] through the same
//! wiring and serve loop as `nagare serve`; a test puts in only its fakes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use nagare_authorizer::dev::{self, DevClaims};
use nagare_authorizer::{AuthSettings, Verifier};
use nagare_gateway::app::App;
use nagare_gateway::config::{self, Config, Overrides};
use nagare_gateway::provider::{BedrockProvider, BedrockSettings, BreakerSettings, ModelProvider};
use nagare_gateway::serve::{self, Listeners, ServeSettings};
use nagare_gateway::wiring::Wiring;

use crate::temp::TempDir;

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

/// The configuration test gateways start from: `nagare serve`'s defaults, with what a test does
/// not ask for turned off (memory, cache, tasks, metrics, rate limits, retries and circuit
/// breakers), the data in `data_dir`, and every listener on a free loopback port.
pub fn test_config(data_dir: &std::path::Path) -> anyhow::Result<Config> {
    let flags = Overrides {
        listen: Some("127.0.0.1:0".into()),
        grpc_listen: Some("127.0.0.1:0".into()),
        provider: None,
        data_dir: Some(data_dir.to_owned()),
    };
    let mut c = config::load(None, &std::collections::BTreeMap::new(), &flags)?;
    c.shutdown_grace = SHUTDOWN_GRACE;
    c.memory.enabled = false;
    c.cache.enabled = false;
    c.tasks.enabled = false;
    c.metrics.enabled = false;
    c.rate_limits.requests_per_minute = 0;
    c.rate_limits.tokens_per_minute = 0;
    c.rate_limits.tokens_per_day = 0;
    // Tests open many sockets with one token; the cap has tests of its own.
    c.websocket.max_per_principal = 10_000;
    c.upstream.max_attempts = 1;
    c.upstream.breaker = BreakerSettings {
        consecutive_failures: 0,
        failure_rate: 0.0,
        ..BreakerSettings::default()
    };
    Ok(c)
}

type Injection = Box<dyn FnOnce(Wiring) -> Wiring + Send>;

/// Builds a test gateway: [`test_config`], changed by the test, and the test's fakes.
pub struct GatewayBuilder {
    config: Config,
    injections: Vec<Injection>,
    dir: TempDir,
}

impl GatewayBuilder {
    /// The model (a fake Bedrock behind the real provider, a paced mock, a test's own), instead
    /// of the configured one; the configured retries and timeouts still wrap it.
    pub fn model(self, model: Arc<dyn ModelProvider>) -> Self {
        self.wiring(move |w| w.with_model(model))
    }

    /// The model, called as it is, without the retry layer (which holds a stream back until
    /// its first event): for tests of what a client sees before the first token.
    pub fn bare_model(self, model: Arc<dyn ModelProvider>) -> Self {
        self.wiring(move |w| w.with_bare_model(model))
    }

    /// Routes to `default`, or to any model id the provider recognises or `allow` lists.
    pub fn models(mut self, default: &str, allow: &[&str]) -> Self {
        self.config.models.default = default.to_owned();
        self.config.models.allow = allow
            .iter()
            .map(|s| (*s).to_owned())
            .chain([default.to_owned()])
            .collect();
        self
    }

    /// Verifies tokens with `verifier` instead of the dev secret [`DEV_SECRET`].
    pub fn verifier(self, verifier: Verifier) -> Self {
        self.wiring(move |w| w.with_verifier(verifier))
    }

    /// Changes the configuration.
    pub fn config(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(&mut self.config);
        self
    }

    /// Puts a fake into the wiring (a store the test also reads, a pinned clock, ...).
    pub fn wiring(mut self, inject: impl FnOnce(Wiring) -> Wiring + Send + 'static) -> Self {
        self.injections.push(Box::new(inject));
        self
    }

    /// The data dir of the gateway (the dev secret, the SQLite file).
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Builds the app without serving it (for a Lambda adapter under test); the directory holds
    /// its data.
    pub async fn app(mut self) -> anyhow::Result<(Arc<App>, TempDir)> {
        let app = self.wire().serve_app().await?;
        Ok((app, self.dir))
    }

    /// The wiring itself, for a Lambda function's build (`ws_function`, `http_router`,
    /// `worker`); the directory holds its data.
    pub fn into_wiring(mut self) -> (Wiring, TempDir) {
        let wiring = self.wire();
        (wiring, self.dir)
    }

    /// The wiring of the config, with the test AWS credentials, dev-mode auth and the test's
    /// fakes.
    fn wire(&mut self) -> Wiring {
        let mut wiring = Wiring::new(self.config.clone())
            .with_sdk_config(test_sdk_config())
            .with_verifier(dev_verifier());
        for inject in self.injections.drain(..) {
            wiring = inject(wiring);
        }
        wiring
    }

    /// Binds `127.0.0.1:0` for REST and gRPC and serves the app as `nagare serve` does.
    pub async fn start(mut self) -> anyhow::Result<Gateway> {
        let wiring = self.wire();
        let listeners = Listeners::bind(&self.config).await?;
        let addr = listeners.http.local_addr()?;
        let grpc_addr = match &listeners.grpc {
            Some(grpc) => grpc.local_addr()?,
            None => anyhow::bail!("test gateways serve gRPC: keep grpc.enabled"),
        };
        let app = wiring.serve_app().await?;
        let settings = ServeSettings::from_config(&self.config);
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stop_rx.await;
        };
        let served = tokio::spawn(serve::serve(listeners, app.clone(), settings, shutdown));
        let stopped = tokio::spawn(async move {
            if let Ok(Err(e)) = served.await {
                tracing::warn!(error = %e, "test gateway stopped with an error");
            }
        });
        Ok(Gateway {
            addr,
            grpc_addr,
            app,
            stop: Some(stop),
            stopped: Some(stopped),
            dir: self.dir,
        })
    }
}

/// Dev-mode auth on [`DEV_SECRET`], which [`dev_token`] signs with.
fn dev_verifier() -> Verifier {
    // The settings are the defaults and the secret is long enough: this cannot fail.
    Verifier::new(&AuthSettings::default(), Some(DEV_SECRET)).unwrap_or_else(|e| {
        panic!("the dev verifier of test gateways: {e}");
    })
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
    /// What the gateway serves, for a test that reads its stores or its health.
    pub app: Arc<App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Resolves when both servers have returned from their graceful shutdown.
    pub stopped: Option<tokio::task::JoinHandle<()>>,
    dir: TempDir,
}

impl Gateway {
    /// A test gateway to configure, with dev-mode auth ([`dev_token`] mints tokens for it).
    pub fn builder() -> GatewayBuilder {
        let dir = TempDir::new("gateway").unwrap_or_else(|e| panic!("a temp dir: {e}"));
        let config = test_config(dir.path()).unwrap_or_else(|e| panic!("test config: {e}"));
        GatewayBuilder {
            config,
            injections: Vec::new(),
            dir,
        }
    }

    /// The common case: `provider` as the model, routing to `default_model` or any model id the
    /// provider recognises or `allow` lists.
    pub async fn start(
        provider: Arc<dyn ModelProvider>,
        default_model: &str,
        allow: &[&str],
    ) -> anyhow::Result<Self> {
        Self::builder()
            .model(provider)
            .models(default_model, allow)
            .start()
            .await
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

    /// The gateway's data dir (its SQLite file, its blobs).
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
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

    /// Sends `body` to `POST /v1/chat/stream` as `client`: the status and every event's data.
    pub async fn stream_chat(
        &self,
        client: &reqwest::Client,
        body: &serde_json::Value,
    ) -> (u16, Vec<serde_json::Value>) {
        let response = client
            .post(self.url("/v1/chat/stream"))
            .json(body)
            .send()
            .await;
        let response = response.unwrap_or_else(|e| panic!("POST /v1/chat/stream: {e}"));
        let status = response.status().as_u16();
        let mut text = response.text().await.unwrap_or_default();
        (status, sse_events(&mut text))
    }

    /// Submits `body` to `POST /v1/tasks` as `client`; panics unless it is accepted. The task
    /// id.
    pub async fn submit_task(&self, client: &reqwest::Client, body: &serde_json::Value) -> String {
        let response = client.post(self.url("/v1/tasks")).json(body).send().await;
        let accepted: serde_json::Value = match response {
            Ok(r) if r.status() == 202 => r.json().await.unwrap_or_default(),
            Ok(r) => panic!(
                "task refused: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ),
            Err(e) => panic!("POST /v1/tasks: {e}"),
        };
        match accepted["task_id"].as_str() {
            Some(id) => id.to_owned(),
            None => panic!("no task_id in {accepted}"),
        }
    }

    /// `GET path` as `client`: the status and the JSON body (null when there is none).
    /// Declares `bytes` as `filename` of `content_type` (`POST /v1/uploads`) as `client`: the
    /// status and the answer.
    pub async fn declare_upload(
        &self,
        client: &reqwest::Client,
        filename: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> (u16, serde_json::Value) {
        let declaration = serde_json::json!({
            "filename": filename,
            "content_type": content_type,
            "size": bytes.len(),
            "sha256": crate::samples::sha256_hex(bytes),
        });
        let response = client
            .post(self.url("/v1/uploads"))
            .json(&declaration)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /v1/uploads: {e}"));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    /// Declares `bytes` and PUTs them to the URL the gateway answers; panics unless both
    /// succeed. The upload id.
    pub async fn upload(
        &self,
        client: &reqwest::Client,
        filename: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> String {
        let (status, ticket) = self
            .declare_upload(client, filename, content_type, bytes)
            .await;
        assert_eq!(status, 201, "{ticket}");
        let (status, stored) = put_bytes(&ticket, bytes.to_vec()).await;
        assert_eq!(status, 200, "{stored}");
        assert_eq!(stored["status"], "stored", "{stored}");
        ticket["upload_id"].as_str().unwrap_or_default().to_owned()
    }

    pub async fn get_json(&self, client: &reqwest::Client, path: &str) -> (u16, serde_json::Value) {
        match client.get(self.url(path)).send().await {
            Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or_default()),
            Err(e) => panic!("GET {path}: {e}"),
        }
    }

    /// The gRPC endpoint, for `tonic::transport::Channel` and other clients.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// An HTTP client that sends a dev token for `alice` with the `chat` scope.
    /// The `GET /metrics` text (no token needed).
    pub async fn metrics(&self) -> String {
        let response = reqwest::get(self.url("/metrics")).await;
        match response {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => panic!("GET /metrics: {e}"),
        }
    }

    pub fn client(&self) -> reqwest::Client {
        authed_client(&dev_token("alice", &["chat"]))
    }
}

/// Parses complete SSE events out of `buf` (their `data:` as JSON), leaving any partial event.
pub fn sse_events(buf: &mut String) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let block: String = buf.drain(..end + 2).collect();
        let data: String = block
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        if !data.is_empty() {
            match serde_json::from_str(&data) {
                Ok(v) => out.push(v),
                Err(e) => panic!("an SSE event that is not JSON ({e}): {data}"),
            }
        }
    }
    out
}

/// PUTs `bytes` to an upload's `put_url` with its `put_headers` and no token (the URL is
/// signed), as a client does, whether it points at the gateway or at S3: the status and the
/// answer (null when it is not JSON, as S3's is not).
pub async fn put_bytes(ticket: &serde_json::Value, bytes: Vec<u8>) -> (u16, serde_json::Value) {
    let url = ticket["put_url"].as_str().unwrap_or_default();
    let mut put = reqwest::Client::new().put(url).body(bytes);
    for (name, value) in ticket["put_headers"].as_object().into_iter().flatten() {
        put = put.header(name, value.as_str().unwrap_or_default());
    }
    let response = put
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}
