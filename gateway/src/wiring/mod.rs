//! Start-up wiring: `nagare serve`, every Lambda function and the test harness build what they
//! run on here, from a [`Config`], once. One AWS SDK config, loaded only when a configured backend
//! needs it, serves every AWS client (one credentials cache, one connection pool).

mod ingest;
mod lambda;
mod stores;
mod tasks;
mod uploads;

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use nagare_authorizer::{Verifier, dev};
use nagare_cache::{ResponseCache, SharedCache, SharedKind};

use crate::app::{App, Health};
use crate::config::{Config, ProviderKind};
use crate::error::{Error, StartupError};
use crate::knowledge::{BedrockRetriever, KnowledgeBases, Retriever};
use crate::lifecycle::Lifecycle;
use crate::limits::{Clock, Counters, Limits, SharedKind as LimitsShared};
use crate::pipeline::{ChatCache, ChatPipeline, Memory};
use crate::provider::{BedrockProvider, Breakers, MockProvider, ModelProvider, ResilientProvider};
use crate::store::{self, ConversationStore, StoreKind, TableNames};
use crate::sweep::Sweep;
use crate::tasks::{ConnectionDelivery, Tasks};
use crate::tcp::ConnectionCap;
use crate::telemetry::{Emf, Metrics, NoRecorder, Recorder};
use crate::uploads::Attach;
use crate::web::{Features, Site};
use crate::ws::LocalConnections;

pub use ingest::{Ingested, ingest};
pub use stores::{DATABASE_FILE, Stores};

/// Where the callback signing key lives in the data dir when `tasks.callback_secret` is unset.
pub const CALLBACK_SECRET_FILE: &str = "callback-secret";

/// Builds the gateway from a config. A test may put in its own implementation of an outside
/// dependency (a fake, or a store it also reads); everything else is built as in production.
pub struct Wiring {
    config: Config,
    sdk: Option<SdkConfig>,
    model: Option<Model>,
    verifier: Option<Verifier>,
    recorder: Option<Arc<dyn Recorder>>,
    conversations: Option<Arc<dyn ConversationStore>>,
    shared_cache: Option<Arc<dyn SharedCache>>,
    limit_counters: Option<Arc<dyn Counters>>,
    clock: Option<Clock>,
    tasks: Option<Tasks>,
}

/// A model put in by a test.
enum Model {
    /// Wrapped in the configured retries and timeouts, as the configured one is.
    Wrapped(Arc<dyn ModelProvider>),
    /// Called as it is.
    Bare(Arc<dyn ModelProvider>),
}

/// Where the app runs, which decides how its numbers are reported and how a task reaches a
/// WebSocket connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Host {
    /// `nagare serve`: Prometheus metrics; tasks deliver into this process's sockets.
    Serve,
    /// A Lambda function: Embedded Metric Format lines; tasks deliver through the Management API.
    Lambda,
}

impl Wiring {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            sdk: None,
            model: None,
            verifier: None,
            recorder: None,
            conversations: None,
            shared_cache: None,
            limit_counters: None,
            clock: None,
            tasks: None,
        }
    }

    /// The AWS config every AWS client uses, instead of the standard chain's.
    pub fn with_sdk_config(mut self, sdk: SdkConfig) -> Self {
        self.sdk = Some(sdk);
        self
    }

    /// The model, instead of the one `provider` names; it is still wrapped in the configured
    /// retries, timeouts and circuit breakers.
    pub fn with_model(mut self, model: Arc<dyn ModelProvider>) -> Self {
        self.model = Some(Model::Wrapped(model));
        self
    }

    /// The model, called as it is: no retries, timeouts or circuit metrics around it. For tests
    /// of the layers above, which see each model event as it comes (the retry layer holds a
    /// stream back until its first event, so that it can still retry).
    pub fn with_bare_model(mut self, model: Arc<dyn ModelProvider>) -> Self {
        self.model = Some(Model::Bare(model));
        self
    }

    /// The token verifier, instead of the configured issuers or the dev secret.
    pub fn with_verifier(mut self, verifier: Verifier) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// Where the pipeline's numbers go, instead of Prometheus (`nagare serve`) or Embedded
    /// Metric Format lines (Lambda).
    pub fn with_recorder(mut self, recorder: Arc<dyn Recorder>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// The conversation store, instead of the one `[store]` names.
    pub fn with_conversations(mut self, store: Arc<dyn ConversationStore>) -> Self {
        self.conversations = Some(store);
        self
    }

    /// The cache's shared tier, instead of the one `cache.shared` names.
    pub fn with_shared_cache(mut self, tier: Arc<dyn SharedCache>) -> Self {
        self.shared_cache = Some(tier);
        self
    }

    /// Where `[rate_limits]` count, instead of the one `rate_limits.shared` names.
    pub fn with_limit_counters(mut self, counters: Arc<dyn Counters>) -> Self {
        self.limit_counters = Some(counters);
        self
    }

    /// The time the rate limits' windows are read from, instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The tasks (store, queue, callbacks), instead of the ones `[tasks]` names.
    pub fn with_tasks(mut self, tasks: Tasks) -> Self {
        self.tasks = Some(tasks);
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The shared AWS config, loaded from the standard chain on first use: the default SQLite
    /// setup never waits on AWS config lookups.
    async fn sdk(&mut self) -> SdkConfig {
        match &self.sdk {
            Some(sdk) => sdk.clone(),
            None => {
                let loaded = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                self.sdk = Some(loaded.clone());
                loaded
            }
        }
    }

    /// Retrieval for chats: Bedrock Knowledge Bases for the names `[knowledge.bedrock]` maps,
    /// the embedded store for the others; `None` when there is neither.
    async fn retriever(
        &mut self,
        config: &Config,
        embedded: Option<&KnowledgeBases>,
    ) -> Option<Arc<dyn Retriever>> {
        let embedded = embedded.map(|kb| kb.retriever.clone());
        let bedrock = &config.knowledge.bedrock;
        if bedrock.bases.is_empty() {
            return embedded;
        }
        let sdk = self.sdk().await;
        tracing::info!(
            knowledge_bases = bedrock.bases.len(),
            "knowledge: Bedrock Knowledge Bases"
        );
        Some(Arc::new(BedrockRetriever::new(&sdk, bedrock, embedded)))
    }

    /// The app `nagare serve` runs: every transport's core, with Prometheus metrics and tasks
    /// delivered to this process's WebSocket sessions.
    pub async fn serve_app(mut self) -> Result<Arc<App>, StartupError> {
        let (app, _) = self.build(Host::Serve).await?;
        Ok(Arc::new(app))
    }

    /// Builds the app and the stores it was built on.
    async fn build(&mut self, host: Host) -> Result<(App, Stores), StartupError> {
        let config = self.config.clone();
        let metrics = (host == Host::Serve && config.metrics.enabled)
            .then(|| Metrics::new(&config.metrics, config.cache.prices.clone()));
        let recorder: Arc<dyn Recorder> = match (self.recorder.take(), &metrics, host) {
            (Some(recorder), _, _) => recorder,
            (None, Some(metrics), _) => Arc::new(metrics.clone()),
            (None, None, Host::Lambda) if config.metrics.enabled => {
                // Lambda: metrics as Embedded Metric Format lines on stdout, which CloudWatch
                // Logs reads.
                Arc::new(Emf::new(&config.metrics.emf_namespace, std::io::stdout()))
            }
            (None, None, _) => {
                tracing::info!("metrics: off (metrics.enabled = false)");
                Arc::new(NoRecorder)
            }
        };
        let provider = match self.model.take() {
            Some(Model::Bare(model)) => model,
            Some(Model::Wrapped(model)) => resilient(&config, model, recorder.clone()),
            None => resilient(&config, self.model().await?, recorder.clone()),
        };
        let mut stores = if needs_dynamodb(&config) {
            let sdk = self.sdk().await;
            Stores::open(&config, Some(&sdk)).await?
        } else {
            Stores::open(&config, None).await?
        };
        if let Some(store) = self.conversations.take() {
            stores.conversations = store;
        }
        if let Some(tier) = self.shared_cache.take() {
            stores.shared_cache = Some(tier);
        }
        if let Some(counters) = self.limit_counters.take() {
            stores.limit_counters = counters;
        }
        let breakers = Arc::new(Breakers::new(config.upstream.breaker.clone()));
        let cache = config.cache.enabled.then(|| {
            Arc::new(ResponseCache::new(
                config.cache.clone(),
                stores.shared_cache.clone(),
            ))
        });
        let mut limits = Limits::new(config.rate_limits.clone(), stores.limit_counters.clone());
        if let Some(clock) = self.clock.take() {
            limits = limits.with_clock(clock);
        }
        let lifecycle = Lifecycle::new();
        let uploads = self.uploads(&stores).await?;
        let pipeline = pipeline(
            &config,
            provider.clone(),
            &stores,
            limits,
            breakers.clone(),
            cache.clone(),
            recorder,
        )?
        .with_lifecycle(lifecycle.clone());
        let pipeline = match &uploads {
            Some(uploads) => pipeline.with_attachments(Attach::new(uploads.clone())),
            None => pipeline,
        };
        let knowledge = uploads::knowledge(&config, &stores);
        let pipeline = match self.retriever(&config, knowledge.as_ref()).await {
            Some(retriever) => pipeline.with_knowledge(uploads::grounder(&config, retriever)),
            None => pipeline,
        };
        // The open `/v1/ws` sockets of this process; a Lambda function has none.
        let connections = LocalConnections::new(Duration::from_millis(
            config.websocket.slow_consumer_timeout_ms,
        ));
        let tasks = if let Some(tasks) = self.tasks.take() {
            Some(tasks)
        } else if config.tasks.enabled {
            let delivery = match host {
                Host::Serve => ConnectionDelivery::new(connections.clone(), connections.clone(), 0),
                Host::Lambda => self.stored_delivery(&stores).await,
            };
            Some(self.tasks(&stores, Arc::new(delivery)).await?)
        } else {
            tracing::info!("tasks: off (tasks.enabled = false)");
            None
        };
        let file_limit = rlimit::getrlimit(rlimit::Resource::NOFILE)
            .ok()
            .map(|(soft, _)| soft);
        let connection_cap = ConnectionCap::new(config.connections.max_connections, file_limit);
        let health = Health::new(
            lifecycle.clone(),
            provider.name(),
            breakers,
            cache,
            connection_cap.clone(),
        )
        .with_database(stores.database().cloned());
        let health = Arc::new(health);
        let registry = metrics.as_ref().map(|m| m.registry(health.clone()));
        let verifier = match self.verifier.take() {
            Some(verifier) => Arc::new(verifier),
            None => verifier(&config)?,
        };
        let web = match (host, config.web.enabled) {
            (Host::Serve, true) => {
                let features = Features {
                    conversations: config.memory.enabled,
                    uploads: uploads.is_some(),
                    knowledge_bases: knowledge.is_some(),
                };
                let site = Site::new(&config.web, features).map_err(StartupError::Config)?;
                Some(Arc::new(site))
            }
            _ => None,
        };
        let app = App {
            pipeline: Arc::new(pipeline),
            verifier,
            chat_scope: config.auth.chat_scope.clone(),
            body_limit: config.body_limit,
            websocket: config.websocket.clone(),
            conversations: config.memory.enabled.then(|| stores.conversations.clone()),
            tasks,
            sweep: Sweep {
                conversations: Some(stores.conversations.clone()),
                retention: config.memory.retention(),
                uploads: uploads.as_ref().map(|u| u.parts()),
            },
            sweep_every: (config.store.sweep_interval_secs > 0)
                .then(|| Duration::from_secs(config.store.sweep_interval_secs)),
            knowledge,
            uploads,
            connections,
            metrics,
            registry,
            health,
            lifecycle,
            connection_cap,
            web,
        };
        Ok((app, stores))
    }

    /// The model the config names, before retries wrap it.
    async fn model(&mut self) -> Result<Arc<dyn ModelProvider>, StartupError> {
        let config = self.config.clone();
        Ok(match config.provider {
            ProviderKind::Mock => {
                tracing::info!(
                    ttft_ms = config.mock.ttft_ms,
                    tokens_per_second = config.mock.tokens_per_second,
                    "model provider: mock (embedded, deterministic; use --provider bedrock for Amazon Bedrock)"
                );
                Arc::new(MockProvider::new(config.mock))
            }
            ProviderKind::Bedrock => {
                let sdk = self.sdk().await;
                let provider = BedrockProvider::checked(&sdk, &config.bedrock).await?;
                tracing::info!(
                    endpoint = config
                        .bedrock
                        .endpoint_url
                        .as_deref()
                        .unwrap_or("regional default"),
                    "model provider: bedrock (Amazon Bedrock ConverseStream)"
                );
                Arc::new(provider)
            }
        })
    }
}

/// Whether any configured backend lives in DynamoDB.
fn needs_dynamodb(config: &Config) -> bool {
    config.store.kind == StoreKind::Dynamodb
        || config.cache.shared == SharedKind::Dynamodb
        || config.rate_limits.shared == LimitsShared::Dynamodb
}

/// `model` with the configured retries and timeouts around it.
fn resilient(
    config: &Config,
    model: Arc<dyn ModelProvider>,
    recorder: Arc<dyn Recorder>,
) -> Arc<dyn ModelProvider> {
    let upstream = &config.upstream;
    tracing::info!(
        max_attempts = upstream.max_attempts,
        first_token_timeout_ms = upstream.first_token_timeout_ms,
        idle_timeout_ms = upstream.idle_timeout_ms,
        "model calls: retried before the first token, timed out when silent"
    );
    Arc::new(ResilientProvider::new(model, upstream.clone()).with_recorder(recorder))
}

/// The pipeline, after checking that the default model routes somewhere.
fn pipeline(
    config: &Config,
    provider: Arc<dyn ModelProvider>,
    stores: &Stores,
    limits: Limits,
    breakers: Arc<Breakers>,
    cache: Option<Arc<ResponseCache>>,
    recorder: Arc<dyn Recorder>,
) -> Result<ChatPipeline, StartupError> {
    config
        .models
        .resolve(None, provider.as_ref())
        .map_err(|e| StartupError::Config(format!("models.default: {e}")))?;
    let mut pipeline = ChatPipeline::new(provider, config.models.clone(), config.pipeline.clone())
        .with_breakers(breakers)
        .with_recorder(recorder);
    if config.memory.enabled {
        let memory = Memory::new(stores.conversations.clone(), config.memory.clone());
        pipeline = pipeline.with_memory(memory);
    } else {
        tracing::info!("conversation memory: off (memory.enabled = false)");
    }
    let rate = &config.rate_limits;
    tracing::info!(
        requests_per_minute = rate.requests_per_minute,
        tokens_per_minute = rate.tokens_per_minute,
        tokens_per_day = rate.tokens_per_day,
        max_concurrent_upstream = rate.max_concurrent_upstream,
        "rate limits per principal (0: none)"
    );
    pipeline = pipeline.with_limits(limits);
    match cache {
        Some(cache) => {
            tracing::info!(
                l1_max_bytes = config.cache.l1_max_bytes,
                shared = cache.l2_name().unwrap_or("none"),
                "response cache: on"
            );
            pipeline = pipeline.with_cache(ChatCache::new(cache, config.cache.clone()));
        }
        None => tracing::info!("response cache: off (cache.enabled = false)"),
    }
    Ok(pipeline)
}

/// The token verifier: the configured issuers, or dev mode with the secret in the data dir.
fn verifier(config: &Config) -> Result<Arc<Verifier>, StartupError> {
    let dev_secret = if config.auth.issuers.is_empty() {
        let secret =
            dev::load_or_create_secret(&config.data_dir).map_err(|source| StartupError::Io {
                context: format!(
                    "reading or creating {}",
                    dev::secret_path(&config.data_dir).display()
                ),
                source,
            })?;
        tracing::info!(
            secret = %dev::secret_path(&config.data_dir).display(),
            "auth: dev mode (HS256); mint a token with `nagare token --sub alice --data-dir {}`",
            config.data_dir.display()
        );
        Some(secret)
    } else {
        let issuers: Vec<&str> = config
            .auth
            .issuers
            .iter()
            .map(|i| i.issuer.as_str())
            .collect();
        tracing::info!(?issuers, "auth: JWT from the configured issuers (JWKS)");
        None
    };
    let verifier = Verifier::new(&config.auth, dev_secret.as_deref())
        .map_err(|e| StartupError::Config(e.to_string()))?;
    Ok(Arc::new(verifier))
}

/// The dev secret `nagare token` signs with, for a server on `data_dir`. A data dir that holds a
/// server's database but no secret gets no new one unless `new_secret`: a server running on it
/// kept the secret it read at start (the file was deleted since), and would refuse every token
/// signed with a new one.
pub fn token_secret(data_dir: &std::path::Path, new_secret: bool) -> Result<Vec<u8>, String> {
    let secret = dev::secret_path(data_dir);
    let database = data_dir.join(DATABASE_FILE);
    if !new_secret && !secret.exists() && database.exists() {
        return Err(format!(
            "{} is missing, but {} is there: a server running on this data dir kept the secret it \
             read at start and would refuse a token signed with a new one. Restart the server \
             (it writes a new secret), then run nagare token again; or pass --new-secret to \
             write one now",
            secret.display(),
            database.display()
        ));
    }
    dev::load_or_create_secret(data_dir)
        .map_err(|e| format!("dev secret in {}: {e}", data_dir.display()))
}

/// The DynamoDB tables the config names (`[store]`, `[cache]`, `[rate_limits]`, `[tasks]`).
pub fn table_names(config: &Config) -> TableNames {
    TableNames {
        connections: config.store.connections_table.clone(),
        conversations: config.store.conversations_table.clone(),
        cache: config.cache.table.clone(),
        limits: config.rate_limits.table.clone(),
        tasks: config.tasks.table.clone(),
        uploads: config.uploads.table.clone(),
    }
}

/// `nagare create-tables`: creates the DynamoDB tables the config names; true for each one
/// created.
pub async fn create_tables(config: &Config) -> Result<Vec<(String, bool)>, Error> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let names = table_names(config);
    let created = store::create_tables(&aws_sdk_dynamodb::Client::new(&sdk), &names).await?;
    Ok(store::table_specs(&names)
        .into_iter()
        .map(|spec| {
            let new = created.contains(&spec.name);
            (spec.name, new)
        })
        .collect())
}
