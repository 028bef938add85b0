//! `GET /metrics`: Prometheus families for requests, chats, latency, time to first delta, gateway
//! overhead, tokens and cost by model and tenant, upstream retries, open WebSocket connections;
//! and, read at scrape time, the response cache's counters and every model circuit's state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nagare_cache::{MetricsSnapshot, Price};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Deserialize;

use crate::chat::Usage;
use crate::telemetry::record::{BoundedLabel, ChatRecord, Recorder};

/// The Prometheus text format's content type.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// `[metrics]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Serve `GET /metrics`.
    pub enabled: bool,
    /// Tenants with their own token and cost series; later ones are counted as `other`.
    pub max_tenants: usize,
    /// Model ids with their own series; later ones are counted as `other`.
    pub max_models: usize,
    /// The CloudWatch namespace of the Lambda functions' Embedded Metric Format lines.
    pub emf_namespace: String,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_tenants: 100,
            max_models: 50,
            emf_namespace: "Nagare".into(),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    transport: &'static str,
    route: String,
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EdgeLabels {
    transport: &'static str,
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChatLabels {
    route: &'static str,
    model: String,
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteModelLabels {
    route: &'static str,
    model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    direction: &'static str,
    model: String,
    tenant: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UsageLabels {
    model: String,
    tenant: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: &'static str,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds from 0.5 ms to about 33 s: request latency and time to first delta.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// Seconds from 25 µs to about 0.8 s: what the gateway adds is small, and must be seen to be.
fn overhead_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_025, 2.0, 16))
}

/// Every family `nagare serve` exports. Cloning is cheap and shares the counts.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Families>,
}

#[derive(Debug)]
struct Families {
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<EdgeLabels>,
    chats: Family<ChatLabels, Counter>,
    chat_seconds: Histograms<RouteLabels>,
    first_delta_seconds: Histograms<RouteLabels>,
    overhead_seconds: Histograms<RouteLabels>,
    tokens: Family<TokenLabels, Counter>,
    cost_usd: Family<UsageLabels, Counter<f64>>,
    retries: Family<ModelLabels, Counter>,
    guardrail_interventions: Family<RouteModelLabels, Counter>,
    websockets: Gauge,
    queue: Family<QueueLabels, Gauge>,
    tenants: BoundedLabel,
    models: BoundedLabel,
    prices: BTreeMap<String, Price>,
}

impl Metrics {
    /// `prices` (the cache's `[cache.prices]`) turn tokens into the cost series.
    pub fn new(settings: &MetricsSettings, prices: BTreeMap<String, Price>) -> Self {
        Self {
            inner: Arc::new(Families {
                requests: Family::default(),
                request_seconds: Family::new_with_constructor(latency_histogram),
                chats: Family::default(),
                chat_seconds: Family::new_with_constructor(latency_histogram),
                first_delta_seconds: Family::new_with_constructor(latency_histogram),
                overhead_seconds: Family::new_with_constructor(overhead_histogram),
                tokens: Family::default(),
                cost_usd: Family::default(),
                retries: Family::default(),
                guardrail_interventions: Family::default(),
                websockets: Gauge::default(),
                queue: Family::default(),
                tenants: BoundedLabel::new(settings.max_tenants),
                models: BoundedLabel::new(settings.max_models),
                prices,
            }),
        }
    }

    /// One request at the edge (an HTTP request, a gRPC call), with its error code or `ok`.
    /// `route` must come from a fixed set: a matched route pattern or a known method.
    pub fn request(
        &self,
        transport: &'static str,
        route: &str,
        code: &'static str,
        took: Duration,
    ) {
        let m = &self.inner;
        m.requests
            .get_or_create(&RequestLabels {
                transport,
                route: route.to_owned(),
                code,
            })
            .inc();
        m.request_seconds
            .get_or_create(&EdgeLabels {
                transport,
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// The task queue's depth, read just before a scrape.
    pub fn queue_depth(&self, queue: &'static str, waiting: u64, in_flight: u64, dead: u64) {
        for (state, n) in [
            ("waiting", waiting),
            ("in_flight", in_flight),
            ("dead", dead),
        ] {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            self.inner
                .queue
                .get_or_create(&QueueLabels { queue, state })
                .set(n);
        }
    }

    /// Counts an open WebSocket connection until the guard is dropped.
    pub fn websocket_open(&self) -> WebSocketGuard {
        self.inner.websockets.inc();
        WebSocketGuard(self.inner.websockets.clone())
    }

    /// The registry to encode: every family, and `live`'s cache and circuits read at scrape
    /// time.
    pub fn registry(&self, live: Arc<dyn LiveState>) -> Registry {
        let m = &self.inner;
        let mut r = Registry::with_prefix("nagare");
        r.register(
            "requests",
            "Requests at the edge by transport, route and error code (ok when none)",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time to answer a request at the edge (for a stream: to its headers)",
            m.request_seconds.clone(),
        );
        r.register(
            "chats",
            "Chats by route, serving model and outcome code (ok, cancelled or an error code)",
            m.chats.clone(),
        );
        r.register(
            "chat_duration_seconds",
            "Time from a chat's arrival to its last event",
            m.chat_seconds.clone(),
        );
        r.register(
            "time_to_first_delta_seconds",
            "Time from a chat's arrival to its first delta",
            m.first_delta_seconds.clone(),
        );
        r.register(
            "gateway_overhead_seconds",
            "Per chat that called a model: total time minus the model call's time",
            m.overhead_seconds.clone(),
        );
        r.register(
            "tokens",
            "Tokens the models used, by direction (input, output, cache_read, cache_write), model and tenant",
            m.tokens.clone(),
        );
        r.register(
            "cost_usd",
            "Estimated model cost in US dollars from [cache.prices], by model and tenant",
            m.cost_usd.clone(),
        );
        r.register(
            "guardrail_interventions",
            "Chats a guardrail ended (stop reason guardrail_intervened), by route and model",
            m.guardrail_interventions.clone(),
        );
        r.register(
            "upstream_retries",
            "Model calls retried before their first token, by model",
            m.retries.clone(),
        );
        r.register(
            "websocket_connections",
            "Open WebSocket connections",
            m.websockets.clone(),
        );
        r.register(
            "task_queue_messages",
            "Task queue messages by state: waiting, in_flight (being run or backing off), dead",
            m.queue.clone(),
        );
        r.register_collector(Box::new(PipelineState(live)));
        r
    }

    /// The Prometheus text exposition of `registry`.
    pub fn encode(registry: &Registry) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, registry);
        text
    }
}

impl Recorder for Metrics {
    fn chat(&self, r: &ChatRecord<'_>) {
        let m = &self.inner;
        let model = m.models.get(r.model).to_owned();
        let route = RouteLabels {
            route: r.route.name(),
        };
        m.chats
            .get_or_create(&ChatLabels {
                route: route.route,
                model: model.clone(),
                code: r.outcome.code(),
            })
            .inc();
        m.chat_seconds
            .get_or_create(&route)
            .observe(r.total.as_secs_f64());
        if r.guardrail_intervened {
            m.guardrail_interventions
                .get_or_create(&RouteModelLabels {
                    route: route.route,
                    model: model.clone(),
                })
                .inc();
        }
        if let Some(t) = r.first_delta {
            m.first_delta_seconds
                .get_or_create(&route)
                .observe(t.as_secs_f64());
        }
        if let Some(t) = r.overhead() {
            m.overhead_seconds
                .get_or_create(&route)
                .observe(t.as_secs_f64());
        }
        let u = r.usage;
        if u == Usage::default() {
            return;
        }
        let tenant = m.tenants.get(r.tenant).to_owned();
        let counts = [
            ("input", u.input_tokens),
            ("output", u.output_tokens),
            ("cache_read", u.cache_read_input_tokens),
            ("cache_write", u.cache_write_input_tokens),
        ];
        for (direction, n) in counts.into_iter().filter(|(_, n)| *n > 0) {
            m.tokens
                .get_or_create(&TokenLabels {
                    direction,
                    model: model.clone(),
                    tenant: tenant.clone(),
                })
                .inc_by(n);
        }
        if let Some(p) = m.prices.get(r.model) {
            let usd = p.cost(
                u.input_tokens,
                u.output_tokens,
                u.cache_read_input_tokens,
                u.cache_write_input_tokens,
            );
            m.cost_usd
                .get_or_create(&UsageLabels { model, tenant })
                .inc_by(usd);
        }
    }

    fn retry(&self, model: &str) {
        let m = &self.inner;
        m.retries
            .get_or_create(&ModelLabels {
                model: m.models.get(model).to_owned(),
            })
            .inc();
    }
}

/// Decrements the open WebSocket gauge when dropped.
#[derive(Debug)]
pub struct WebSocketGuard(Gauge);

impl Drop for WebSocketGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What a scrape reads from the running gateway: its own state, read at each scrape rather than
/// copied into the registry on every change.
pub trait LiveState: Send + Sync {
    /// The response cache's counters, when the cache is on.
    fn cache(&self) -> Option<MetricsSnapshot>;
    /// Each model circuit that has seen a call, with its level: 0 closed, 1 half-open, 2 open.
    fn circuits(&self) -> Vec<(String, i64)>;
    /// Client connections open now, and those refused at the cap since start-up.
    fn connections(&self) -> (u64, u64);
}

/// The collector that reads a [`LiveState`].
struct PipelineState(Arc<dyn LiveState>);

impl std::fmt::Debug for PipelineState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PipelineState")
    }
}

impl Collector for PipelineState {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut encoder;
        if let Some(s) = self.0.cache() {
            let hits = [("l1", s.hits_l1), ("l2", s.hits_l2)];
            let saved = [
                ("input", s.input_tokens_saved),
                ("output", s.output_tokens_saved),
            ];
            labeled(
                e,
                "cache_hits",
                "Chats answered from the response cache",
                "tier",
                &hits,
                ConstCounter::new,
            )?;
            plain(
                e,
                "cache_misses",
                "Cacheable chats not found in the cache",
                ConstCounter::new(s.misses),
            )?;
            plain(
                e,
                "cache_coalesced",
                "Chats that joined an identical one in flight instead of calling the model",
                ConstCounter::new(s.coalesced),
            )?;
            labeled(
                e,
                "cache_tokens_saved",
                "Tokens not sent to a model thanks to the cache",
                "direction",
                &saved,
                ConstCounter::new,
            )?;
            plain(
                e,
                "cache_cost_saved_usd",
                "Estimated model cost the cache saved, from [cache.prices]",
                ConstCounter::new(s.cost_saved_usd),
            )?;
            plain(
                e,
                "cache_l1_bytes",
                "Bytes held by the in-process cache tier",
                ConstGauge::new(s.l1_bytes as i64),
            )?;
        }
        let (open, refused) = self.0.connections();
        plain(
            e,
            "connections_open",
            "Client connections open on every listener (upgraded WebSockets included)",
            ConstGauge::new(i64::try_from(open).unwrap_or(i64::MAX)),
        )?;
        plain(
            e,
            "connections_refused",
            "Connections closed at once because server.max_connections were open",
            ConstCounter::new(refused),
        )?;
        let circuits = self.0.circuits();
        let circuits: Vec<(&str, i64)> = circuits.iter().map(|(m, l)| (m.as_str(), *l)).collect();
        labeled(
            e,
            "circuit_state",
            "Each model's circuit: 0 closed, 1 half-open, 2 open",
            "model",
            &circuits,
            ConstGauge::new,
        )
    }
}

/// One unlabeled series read at scrape time.
fn plain(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> std::fmt::Result {
    metric.encode(e.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// One family with a single label, read at scrape time; nothing when `series` is empty.
fn labeled<V: Copy, M: EncodeMetric>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    key: &str,
    series: &[(&str, V)],
    metric: fn(V) -> M,
) -> std::fmt::Result {
    let Some((_, first)) = series.first() else {
        return Ok(());
    };
    let mut family = e.encode_descriptor(name, help, None, metric(*first).metric_type())?;
    for (value, v) in series {
        metric(*v).encode(family.encode_family(&[(key, *value)])?)?;
    }
    Ok(())
}
