//! The gRPC facade (`nagare.v1`): the same pipeline as every other transport, for internal
//! services that want typed, streaming, deadline-aware calls. Also `grpc.health.v1`, whose status
//! follows readiness, and server reflection (v1 and v1alpha) for grpcurl, Postman and Evans.

mod auth;
mod chat;
mod contract;
mod conversations;
mod deadline;
mod observe;
mod status;
mod tasks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use nagare_proto::v1::chat_service_server::ChatServiceServer;
use nagare_proto::v1::conversation_service_server::ConversationServiceServer;
use nagare_proto::v1::task_service_server::TaskServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::app::App;
use crate::tcp::{self, ConnectionCap, Timeouts};

/// Every gRPC route, each call traced and counted.
pub type GrpcRoutes = observe::Observed<Routes>;

/// `[grpc]` settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcSettings {
    /// Serve gRPC at all.
    pub enabled: bool,
    /// Address to listen on; `--grpc-listen` overrides it.
    pub listen: String,
    /// Largest message a client may send, on the wire. A chat request is also held to
    /// `server.body_limit_bytes`, as on REST.
    pub max_message_bytes: usize,
    /// Concurrent calls on one HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// Ping idle connections this often, and drop them if the ping is not answered in
    /// `keepalive_timeout_secs`: a vanished client must not hold its calls open.
    pub keepalive_interval_secs: u64,
    pub keepalive_timeout_secs: u64,
    /// How long a new connection may take to send the HTTP/2 preface and its SETTINGS.
    pub handshake_timeout_secs: u64,
    /// A connection with no call in flight for this long is closed with GOAWAY (clients
    /// reconnect on their next call).
    pub idle_timeout_secs: u64,
}

impl Default for GrpcSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:50051".into(),
            max_message_bytes: 4 * 1024 * 1024,
            max_concurrent_streams: 200,
            keepalive_interval_secs: 30,
            keepalive_timeout_secs: 10,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 600,
        }
    }
}

impl GrpcSettings {
    /// Checks the values a server cannot run with; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_message_bytes < 1024 || self.max_concurrent_streams == 0 {
            return Err(
                "grpc: max_message_bytes must be at least 1024 and max_concurrent_streams at least 1"
                    .into(),
            );
        }
        if self.handshake_timeout_secs == 0 || self.idle_timeout_secs == 0 {
            return Err(
                "grpc: handshake_timeout_secs and idle_timeout_secs must be at least 1".into(),
            );
        }
        Ok(())
    }

    /// This listener's connection timeouts; the body timeout is the server's.
    pub fn timeouts(&self, body: Duration) -> Timeouts {
        Timeouts {
            head: Duration::from_secs(self.handshake_timeout_secs),
            body,
            idle: Duration::from_secs(self.idle_timeout_secs),
        }
    }
}

/// The services nagare.v1 serves by name, for health.
const SERVICES: &[&str] = &[
    "nagare.v1.ChatService",
    "nagare.v1.ConversationService",
    "nagare.v1.TaskService",
];

/// Every gRPC service, ready to serve, and the health reporter that [`serve`] updates.
pub fn routes(
    app: Arc<App>,
    settings: &GrpcSettings,
) -> Result<(GrpcRoutes, HealthReporter), tonic_reflection::server::Error> {
    let metrics = app.metrics.clone();
    let limit = settings.max_message_bytes;
    let chat =
        ChatServiceServer::new(chat::ChatApi::new(app.clone())).max_decoding_message_size(limit);
    let conversations =
        ConversationServiceServer::new(conversations::ConversationApi::new(app.clone()))
            .max_decoding_message_size(limit);
    let tasks = TaskServiceServer::new(tasks::TaskApi::new(app)).max_decoding_message_size(limit);
    let (reporter, health) = tonic_health::server::health_reporter();
    // v1 and the older v1alpha: grpcurl asks for v1 first, many tools only speak v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(nagare_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let routes = Routes::new(chat)
        .add_service(conversations)
        .add_service(tasks)
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .prepare();
    let routes = observe::Observed {
        inner: routes,
        metrics,
    };
    Ok((routes, reporter))
}

/// Sets the health of the whole server (`""`) and of every nagare.v1 service.
async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    for service in [""].iter().chain(SERVICES) {
        reporter.set_service_status(*service, status).await;
    }
}

/// Serves `routes` on `listener` until `stop` is cancelled. Health turns NOT_SERVING when
/// `draining` resolves, while calls are still answered.
///
/// The HTTP/2 connections are ours rather than `tonic::transport::Server`'s because tonic's
/// server answers an expired `grpc-timeout` with CANCELLED and bounds only the time to the
/// response headers; here the services enforce the deadline over the whole call, streams
/// included, and answer DEADLINE_EXCEEDED. Our connections also get the cap and timeouts of
/// [`tcp::serve`].
pub async fn serve(
    listener: TcpListener,
    routes: GrpcRoutes,
    mut health: HealthReporter,
    settings: &GrpcSettings,
    connections: (Arc<ConnectionCap>, Timeouts),
    draining: impl Future<Output = ()> + Send,
    stop: CancellationToken,
) {
    set_health(&health, ServingStatus::Serving).await;
    let mut builder = auto::Builder::new(TokioExecutor::new()).http2_only();
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_concurrent_streams)
        .keep_alive_interval(Duration::from_secs(settings.keepalive_interval_secs))
        .keep_alive_timeout(Duration::from_secs(settings.keepalive_timeout_secs));
    let (cap, timeouts) = connections;
    // The listener stops after health has let go of its `Watch` streams.
    let closing = CancellationToken::new();
    let served = tcp::serve(listener, builder, routes, cap, timeouts, closing.clone());
    let health_follows = async {
        draining.await;
        set_health(&health, ServingStatus::NotServing).await;
        stop.cancelled().await;
        // Health `Watch` streams never end on their own, so they would hold their connections
        // open. Forgetting the statuses ends them, after they have seen NOT_SERVING.
        for service in [""].iter().chain(SERVICES) {
            health.clear_service_status(service).await;
        }
        closing.cancel();
    };
    tokio::join!(served, health_follows);
}
