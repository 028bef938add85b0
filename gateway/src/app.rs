//! The transport-neutral core of a running gateway: what the HTTP, WebSocket, gRPC and Lambda
//! adapters each take. Built once at start-up by [`crate::wiring`]; adapters only read it.

use std::collections::BTreeMap;
use std::sync::Arc;

use nagare_authorizer::Verifier;
use nagare_cache::{MetricsSnapshot, ResponseCache};
use prometheus_client::registry::Registry;

use crate::error::Error;
use crate::knowledge::KnowledgeBases;
use crate::lifecycle::Lifecycle;
use crate::pipeline::ChatPipeline;
use crate::provider::{Breakers, CircuitState};
use crate::store::{ConversationStore, Database};
use crate::sweep::Sweep;
use crate::tasks::Tasks;
use crate::tcp::ConnectionCap;
use crate::telemetry::{LiveState, Metrics};
use crate::uploads::Uploads;
use crate::web::Site;
use crate::ws::{LocalConnections, WsSettings};

/// Everything a request may need, shared by every transport.
pub struct App {
    pub pipeline: Arc<ChatPipeline>,
    pub verifier: Arc<Verifier>,
    /// The scope a token needs for the chat routes.
    pub chat_scope: String,
    /// The largest request body (REST) or message (gRPC) accepted.
    pub body_limit: usize,
    /// How `/v1/ws` sessions run.
    pub websocket: WsSettings,
    /// The conversation store, when memory is on.
    pub conversations: Option<Arc<dyn ConversationStore>>,
    /// `/v1/tasks`; `None` when tasks are off.
    pub tasks: Option<Tasks>,
    /// `/v1/uploads`; `None` when uploads are off.
    pub uploads: Option<Arc<Uploads>>,
    /// `/v1/knowledge-bases` on the embedded store; `None` when off or on DynamoDB.
    pub knowledge: Option<KnowledgeBases>,
    /// What `nagare serve` collects past its time, and how often (`None`: never).
    pub sweep: Sweep,
    pub sweep_every: Option<std::time::Duration>,
    /// The open `/v1/ws` sockets of this process, by connection id, for tasks that deliver to
    /// them.
    pub connections: Arc<LocalConnections>,
    /// Request counts and the WebSocket gauge; `None` when metrics are off.
    pub metrics: Option<Metrics>,
    /// What `GET /metrics` encodes.
    pub registry: Option<Registry>,
    pub health: Arc<Health>,
    /// Draining and the end of the grace period, shared with the pipeline.
    pub lifecycle: Arc<Lifecycle>,
    /// Client connections open on every listener of this process, and their cap.
    pub connection_cap: Arc<ConnectionCap>,
    /// The browser app at `/`; `None` when `web.enabled = false` and on Lambda (a bucket serves it).
    pub web: Option<Arc<Site>>,
}

impl App {
    /// The conversation store, or `not_found` when memory is off.
    pub fn conversations(&self) -> Result<&dyn ConversationStore, Error> {
        self.conversations.as_deref().ok_or_else(|| {
            Error::NotFound("conversation memory is not enabled on this server".into())
        })
    }

    /// The uploads, or `not_found` when they are off.
    pub fn uploads(&self) -> Result<&Uploads, Error> {
        self.uploads
            .as_deref()
            .ok_or_else(|| Error::NotFound("uploads are not enabled on this server".into()))
    }

    /// The embedded knowledge bases, or `not_found` when they are off.
    pub fn knowledge(&self) -> Result<&KnowledgeBases, Error> {
        self.knowledge
            .as_ref()
            .ok_or_else(|| Error::NotFound("knowledge bases are not enabled on this server".into()))
    }

    /// The tasks, or `not_found` when they are off.
    pub fn tasks(&self) -> Result<&Tasks, Error> {
        self.tasks
            .as_ref()
            .ok_or_else(|| Error::NotFound("tasks are not enabled on this server".into()))
    }
}

/// What readiness and the metrics report of the running gateway: whether it still takes work,
/// its provider, its model circuits and its cache.
pub struct Health {
    lifecycle: Arc<Lifecycle>,
    provider: &'static str,
    breakers: Arc<Breakers>,
    cache: Option<Arc<ResponseCache>>,
    connections: Arc<ConnectionCap>,
    /// The embedded database, whose failing writes make the server unready.
    database: Option<Database>,
}

/// Why the server is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unready {
    ShuttingDown,
    /// A store fails (a full disk, say): the reason, for the operator.
    StoreFailing(String),
}

impl Health {
    pub fn new(
        lifecycle: Arc<Lifecycle>,
        provider: &'static str,
        breakers: Arc<Breakers>,
        cache: Option<Arc<ResponseCache>>,
        connections: Arc<ConnectionCap>,
    ) -> Self {
        Self {
            lifecycle,
            provider,
            breakers,
            cache,
            connections,
            database: None,
        }
    }

    /// Reports `database`'s failing writes in readiness.
    pub fn with_database(mut self, database: Option<Database>) -> Self {
        self.database = database;
        self
    }

    /// Why load balancers should send no new work here: shutdown has begun, or a store is
    /// failing. `None` when ready.
    pub fn unready(&self) -> Option<Unready> {
        if self.lifecycle.is_draining() {
            return Some(Unready::ShuttingDown);
        }
        let failing = self.database.as_ref().and_then(Database::failing);
        failing.map(Unready::StoreFailing)
    }

    /// The model provider's name.
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// Every model circuit that has seen a call.
    pub fn circuit_states(&self) -> BTreeMap<String, CircuitState> {
        self.breakers.states()
    }
}

impl LiveState for Health {
    fn cache(&self) -> Option<MetricsSnapshot> {
        self.cache.as_ref().map(|c| c.snapshot())
    }

    fn circuits(&self) -> Vec<(String, i64)> {
        self.circuit_states()
            .into_iter()
            .map(|(model, state)| (model, state.level()))
            .collect()
    }

    fn connections(&self) -> (u64, u64) {
        let open = self.connections.open_now();
        (open as u64, self.connections.refused())
    }
}

/// A router-test app: the given pipeline and verifier, defaults elsewhere, nothing optional on.
#[cfg(test)]
pub(crate) fn test_app(pipeline: ChatPipeline, verifier: Verifier) -> Arc<App> {
    let websocket = WsSettings::default();
    let lifecycle = Lifecycle::new();
    let connection_cap = ConnectionCap::new(100, None);
    let health = Health::new(
        lifecycle.clone(),
        "mock",
        Arc::new(Breakers::off()),
        None,
        connection_cap.clone(),
    );
    Arc::new(App {
        pipeline: Arc::new(pipeline.with_lifecycle(lifecycle.clone())),
        verifier: Arc::new(verifier),
        chat_scope: "chat".into(),
        body_limit: 256 * 1024,
        connections: LocalConnections::new(std::time::Duration::from_millis(
            websocket.slow_consumer_timeout_ms,
        )),
        websocket,
        conversations: None,
        tasks: None,
        uploads: None,
        knowledge: None,
        sweep: Sweep::default(),
        sweep_every: None,
        metrics: None,
        registry: None,
        health: Arc::new(health),
        lifecycle,
        connection_cap,
        web: Site::new(
            &crate::web::WebSettings::default(),
            crate::web::Features::default(),
        )
        .ok()
        .map(Arc::new),
    })
}
