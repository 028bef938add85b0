//! `nagare serve`: build everything from the config once, bind, serve until a signal.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use nagare_authorizer::{Verifier, dev};
use nagare_cache::{DynamoCache, RedisCache, ResponseCache, SharedCache, SharedKind};
use tokio::net::TcpListener;

use crate::chat::{ChatCache, ChatPipeline, Memory};
use crate::config::{Config, ProviderKind};
use crate::error::Error;
use crate::error::StartupError;
use crate::grpc;
use crate::http::{self, AppState};
use crate::limits::{Counters, DynamoCounters, Limits, LocalCounters, SharedKind as LimitsShared};
use crate::provider::{BedrockProvider, Breakers, MockProvider, ModelProvider, ResilientProvider};
use crate::store::{
    self, ConnectionStore, ConversationStore, Database, DynamoConnectionStore,
    DynamoConversationStore, SqliteConnectionStore, SqliteConversationStore, StoreKind, TableNames,
};
use crate::tasks::{
    Callbacks, ConnectionDelivery, DynamoTaskStore, QueueKind, SqliteQueue, SqliteTaskStore,
    SqsQueue, TaskQueue, TaskStore, Tasks, Worker,
};
use crate::telemetry::{Metrics, NoRecorder, Recorder};

/// Builds the provider the config names, with retries and timeouts around it, failing fast when
/// it cannot work.
pub async fn build_provider(
    config: &Config,
    recorder: Arc<dyn Recorder>,
) -> Result<Arc<dyn ModelProvider>, StartupError> {
    let provider: Arc<dyn ModelProvider> = match config.provider {
        ProviderKind::Mock => {
            tracing::info!(
                ttft_ms = config.mock.ttft_ms,
                tokens_per_second = config.mock.tokens_per_second,
                "model provider: mock (embedded, deterministic; use --provider bedrock for Amazon Bedrock)"
            );
            Arc::new(MockProvider::new(config.mock))
        }
        ProviderKind::Bedrock => {
            let provider = BedrockProvider::from_environment(&config.bedrock).await?;
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
    };
    let upstream = &config.upstream;
    tracing::info!(
        max_attempts = upstream.max_attempts,
        first_token_timeout_ms = upstream.first_token_timeout_ms,
        idle_timeout_ms = upstream.idle_timeout_ms,
        "model calls: retried before the first token, timed out when silent"
    );
    Ok(Arc::new(
        ResilientProvider::new(provider, upstream.clone()).with_recorder(recorder),
    ))
}

/// Builds the pipeline and checks that the default model routes somewhere.
pub fn build_pipeline(
    config: &Config,
    provider: Arc<dyn ModelProvider>,
    stores: &Stores,
    recorder: Arc<dyn Recorder>,
) -> Result<ChatPipeline, StartupError> {
    config
        .models
        .resolve(None, provider.as_ref())
        .map_err(|e| StartupError::Config(format!("models.default: {e}")))?;
    let mut pipeline = ChatPipeline::new(provider, config.models.clone(), config.pipeline.clone())
        .with_breakers(Breakers::new(config.upstream.breaker.clone()))
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
    let limits = Limits::new(rate.clone(), stores.limit_counters.clone());
    pipeline = pipeline.with_limits(limits);
    if config.cache.enabled {
        let cache = ResponseCache::new(config.cache.clone(), stores.shared_cache.clone());
        tracing::info!(
            l1_max_bytes = config.cache.l1_max_bytes,
            shared = cache.l2_name().unwrap_or("none"),
            "response cache: on"
        );
        pipeline = pipeline.with_cache(ChatCache::new(Arc::new(cache), config.cache.clone()));
    } else {
        tracing::info!("response cache: off (cache.enabled = false)");
    }
    Ok(pipeline)
}

/// The durable stores, all on the backend `[store]` names.
pub struct Stores {
    pub connections: Arc<dyn ConnectionStore>,
    pub conversations: Arc<dyn ConversationStore>,
    /// The cache's shared tier, when `cache.shared` names one.
    pub shared_cache: Option<Arc<dyn SharedCache>>,
    /// Where `[rate_limits]` counts: this process, or DynamoDB.
    pub limit_counters: Arc<dyn Counters>,
    /// The embedded database, when `[store]` uses it.
    pub sqlite: Option<Database>,
}

/// Opens the stores the config names: the SQLite file in the data dir, or DynamoDB tables.
pub async fn build_stores(config: &Config) -> Result<Stores, StartupError> {
    // AWS config is loaded only when a table is used: the default SQLite setup must not wait on
    // AWS config lookups.
    let dynamodb = if config.store.kind == StoreKind::Dynamodb
        || config.cache.shared == SharedKind::Dynamodb
        || config.rate_limits.shared == LimitsShared::Dynamodb
    {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Some(aws_sdk_dynamodb::Client::new(&sdk))
    } else {
        None
    };
    let shared_cache: Option<Arc<dyn SharedCache>> = match (&dynamodb, config.cache.shared) {
        (Some(client), SharedKind::Dynamodb) => Some(Arc::new(DynamoCache::new(
            client.clone(),
            &config.cache.table,
        ))),
        (_, SharedKind::Redis) => {
            let redis = RedisCache::connect(&config.cache.redis_url)
                .await
                .map_err(|e| StartupError::Backend(format!("cache.redis_url: {e}")))?;
            Some(Arc::new(redis))
        }
        _ => None,
    };
    let limit_counters: Arc<dyn Counters> = match (&dynamodb, config.rate_limits.shared) {
        (Some(client), LimitsShared::Dynamodb) => {
            tracing::info!(
                table = config.rate_limits.table,
                "rate limits: shared in dynamodb"
            );
            Arc::new(DynamoCounters::new(
                client.clone(),
                &config.rate_limits.table,
            ))
        }
        _ => Arc::new(LocalCounters::default()),
    };
    let store = &config.store;
    Ok(match (store.kind, dynamodb) {
        (StoreKind::Dynamodb, Some(client)) => {
            tracing::info!(
                conversations = store.conversations_table,
                connections = store.connections_table,
                "conversations and connections: dynamodb"
            );
            Stores {
                connections: Arc::new(DynamoConnectionStore::new(
                    client.clone(),
                    &store.connections_table,
                )),
                conversations: Arc::new(DynamoConversationStore::new(
                    client,
                    &store.conversations_table,
                )),
                shared_cache,
                limit_counters,
                sqlite: None,
            }
        }
        _ => {
            std::fs::create_dir_all(&config.data_dir).map_err(|source| StartupError::Io {
                context: format!("creating {}", config.data_dir.display()),
                source,
            })?;
            let path = config.data_dir.join("nagare.db");
            let db = Database::open(&path)
                .map_err(|e| StartupError::Backend(format!("{}: {e}", path.display())))?;
            tracing::info!(path = %path.display(), "conversations and connections: sqlite");
            Stores {
                connections: Arc::new(SqliteConnectionStore::new(db.clone())),
                conversations: Arc::new(SqliteConversationStore::new(db.clone())),
                shared_cache,
                limit_counters,
                sqlite: Some(db),
            }
        }
    })
}

/// The DynamoDB tables the config names (`[store]`, `[cache]`, `[rate_limits]`, `[tasks]`).
pub fn table_names(config: &Config) -> TableNames {
    TableNames {
        connections: config.store.connections_table.clone(),
        conversations: config.store.conversations_table.clone(),
        cache: config.cache.table.clone(),
        limits: config.rate_limits.table.clone(),
        tasks: config.tasks.table.clone(),
    }
}

/// `nagare create-tables`: creates the DynamoDB tables the config names (`[store]`, `[cache]`,
/// `[rate_limits]`, `[tasks]`); true for each one created.
pub async fn create_tables(config: &Config) -> Result<Vec<(String, bool)>, Error> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let names = table_names(config);
    let created = store::create_tables(&aws_sdk_dynamodb::Client::new(&sdk), &names).await?;
    Ok([
        names.connections,
        names.conversations,
        names.cache,
        names.limits,
        names.tasks,
    ]
    .into_iter()
    .map(|t| {
        let new = created.contains(&t);
        (t, new)
    })
    .collect())
}

/// The task store (DynamoDB when `[store]` uses it, else SQLite), the queue (`tasks.queue`: the
/// embedded one in SQLite, or SQS), and the callback signer.
/// `connections` delivers results to WebSocket connections, where this process can reach any.
pub async fn build_tasks(
    config: &Config,
    sqlite: Option<Database>,
    connections: Option<Arc<ConnectionDelivery>>,
) -> Result<Tasks, StartupError> {
    let settings = config.tasks.clone();
    let open_sqlite = || match &sqlite {
        Some(db) => Ok(db.clone()),
        None => {
            let path = config.data_dir.join("nagare.db");
            Database::open(&path)
                .map_err(|e| StartupError::Backend(format!("{}: {e}", path.display())))
        }
    };
    let aws = if config.store.kind == StoreKind::Dynamodb || settings.queue == QueueKind::Sqs {
        Some(aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await)
    } else {
        None
    };
    let store: Arc<dyn TaskStore> = match &aws {
        Some(sdk) if config.store.kind == StoreKind::Dynamodb => Arc::new(DynamoTaskStore::new(
            aws_sdk_dynamodb::Client::new(sdk),
            &settings.table,
            settings.retention_days * 24 * 60 * 60,
        )),
        _ => Arc::new(SqliteTaskStore::new(open_sqlite()?)),
    };
    let queue: Arc<dyn TaskQueue> = match (&aws, settings.queue) {
        (Some(sdk), QueueKind::Sqs) => {
            let url = settings.queue_url.clone().ok_or_else(|| {
                StartupError::Config("tasks.queue_url: required with tasks.queue = \"sqs\"".into())
            })?;
            Arc::new(SqsQueue::new(
                aws_sdk_sqs::Client::new(sdk),
                url,
                settings.dead_letter_queue_url.clone(),
            ))
        }
        // One more receive than attempts: the worker sees the message once more and fails the
        // task for good, instead of leaving it `running` in the dead letters.
        _ => Arc::new(SqliteQueue::new(open_sqlite()?, settings.max_attempts + 1)),
    };
    let secret = match &settings.callback_secret {
        Some(secret) => secret.clone(),
        None => {
            let path = config.data_dir.join(CALLBACK_SECRET_FILE);
            dev::load_or_create_text_secret(&path).map_err(|source| StartupError::Io {
                context: format!("reading or creating {}", path.display()),
                source,
            })?
        }
    };
    let dev_mode = config.auth.issuers.is_empty();
    tracing::info!(
        workers = settings.workers,
        queue = queue.name(),
        max_attempts = settings.max_attempts,
        "tasks: on"
    );
    Ok(Tasks {
        store,
        queue,
        callbacks: Arc::new(Callbacks::new(secret.into_bytes(), &settings, dev_mode)),
        connections,
        settings,
    })
}

/// Where the callback signing key lives in the data dir when `tasks.callback_secret` is unset.
pub const CALLBACK_SECRET_FILE: &str = "callback-secret";

/// Builds the token verifier: the configured issuers, or dev mode with the secret in the data dir.
pub fn build_verifier(config: &Config) -> Result<Arc<Verifier>, StartupError> {
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

/// Runs `nagare serve` until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    raise_open_file_limit();
    let metrics = Metrics::new(&config.metrics, config.cache.prices.clone());
    let recorder: Arc<dyn Recorder> = if config.metrics.enabled {
        Arc::new(metrics.clone())
    } else {
        tracing::info!("metrics: off (metrics.enabled = false)");
        Arc::new(NoRecorder)
    };
    let provider = build_provider(&config, recorder.clone()).await?;
    let stores = build_stores(&config).await?;
    let pipeline = Arc::new(build_pipeline(&config, provider, &stores, recorder)?);
    let verifier = build_verifier(&config)?;
    let mut state = AppState::new(
        pipeline,
        verifier,
        config.auth.chat_scope.clone(),
        config.body_limit,
    )
    .with_ws(config.websocket.clone());
    if config.metrics.enabled {
        state = state.with_metrics(metrics);
    }
    let tasks = if config.tasks.enabled {
        // Results go to the sockets of this process (`connection_id` from a `/v1/ws` pong).
        let sockets = state.connections.clone();
        let delivery = ConnectionDelivery::new(sockets.clone(), sockets, 0);
        Some(build_tasks(&config, stores.sqlite.clone(), Some(Arc::new(delivery))).await?)
    } else {
        tracing::info!("tasks: off (tasks.enabled = false)");
        None
    };
    if let Some(tasks) = &tasks {
        state = state.with_tasks(tasks.clone());
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartupError::Io {
            context: format!("binding {} (server.listen / --listen)", config.listen),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartupError::Io {
        context: "reading the bound address".into(),
        source,
    })?;
    tracing::info!("listening on http://{addr}");
    let grpc = match config.grpc_listen {
        Some(addr) => Some(bind_grpc(addr, &state, &config).await?),
        None => {
            tracing::info!("gRPC: off (grpc.enabled = false)");
            None
        }
    };
    // One signal stops both servers.
    let stopping = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let stopping = stopping.clone();
        async move {
            shutdown.await;
            stopping.cancel();
        }
    });
    // Workers stop taking tasks at the signal; a task they were running comes back after its
    // visibility timeout, to this process after a restart or to another one.
    let workers =
        tasks.map(|tasks| Worker::new(tasks, state.pipeline.clone()).spawn(stopping.clone()));
    let ready = state.ready.clone();
    let http_stopping = stopping.clone();
    let http = http::serve(
        listener,
        http::router(state),
        async move {
            http_stopping.cancelled().await;
            ready.store(false, Ordering::Relaxed);
        },
        config.shutdown_grace,
    );
    let grpc = async {
        if let Some((listener, routes, health)) = grpc {
            let stopped = stopping.cancelled();
            grpc::serve(
                listener,
                routes,
                health,
                &config.grpc,
                stopped,
                config.shutdown_grace,
            )
            .await;
        }
    };
    let (served, ()) = tokio::join!(http, grpc);
    for worker in workers.into_iter().flatten() {
        let _ = worker.await;
    }
    served.map_err(|source| StartupError::Io {
        context: "serving HTTP".into(),
        source,
    })
}

/// Binds the gRPC listener and builds its services.
async fn bind_grpc(
    addr: std::net::SocketAddr,
    state: &AppState,
    config: &Config,
) -> Result<
    (
        TcpListener,
        grpc::GrpcRoutes,
        tonic_health::server::HealthReporter,
    ),
    StartupError,
> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Io {
            context: format!("binding {addr} (grpc.listen / --grpc-listen)"),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| StartupError::Io {
        context: "reading the bound gRPC address".into(),
        source,
    })?;
    let (routes, health) = grpc::routes(state.clone(), &config.grpc)
        .map_err(|e| StartupError::Config(format!("gRPC reflection: {e}")))?;
    tracing::info!("listening on grpc://{bound}");
    Ok((listener, routes, health))
}

/// Every WebSocket is a descriptor: raise the soft open-file limit to the hard one.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received");
}
