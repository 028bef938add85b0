//! What every listener does with a TCP connection before HTTP sees it: a cap on open connections
//! (so a flood cannot use up the file descriptors every other client needs), and timeouts for
//! a connection that sends its request head or HTTP/2 handshake too slowly, a request body that
//! never finishes, and a connection with nothing in flight. hyper's own timers cover none of
//! this for HTTP/2, and time an idle HTTP/1 keep-alive with the header timeout; so each
//! connection's [`Activity`] is watched here instead.

mod activity;
mod cap;
mod service;

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use activity::{Activity, Tracked, Verdict};
pub use cap::{ConnectionCap, Slot};
pub use service::{Served, TimedBody};

/// `[server]`'s connection settings, for every listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Open connections over every listener; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// The REST/WebSocket listener's timeouts; gRPC has its own head (handshake) and idle
    /// timeouts, and this body timeout.
    pub http: Timeouts,
}

/// The timeouts of one listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From accepting a connection, or from the first byte of a later request, until its
    /// whole head (HTTP/1) or the HTTP/2 handshake has arrived.
    pub head: Duration,
    /// From a request's head until its whole body has arrived.
    pub body: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle: Duration,
}

/// How long a connection asked to close gracefully (idle, or shutting down) may take before it
/// is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Serves `service` on every connection `listener` accepts until `stop` is cancelled; then asks
/// every open connection to close once its requests are done. Connections over `cap` are closed
/// as soon as they are accepted. Returns when the listener has stopped accepting; the
/// connections' own tasks finish on their own (see [`ConnectionCap::closed`]).
pub async fn serve<S>(
    listener: TcpListener,
    builder: auto::Builder<TokioExecutor>,
    service: S,
    cap: Arc<ConnectionCap>,
    timeouts: Timeouts,
    stop: CancellationToken,
) where
    S: Served,
{
    let builder = Arc::new(builder);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of descriptors, usually: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let Some(slot) = cap.open() else {
            // Dropping the socket closes it: the cheapest refusal there is.
            continue;
        };
        // Deltas are small writes; Nagle's algorithm would hold each one back until the
        // client's delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let activity = Activity::new(Instant::now());
        let io = Tracked::new(tcp, activity.clone(), slot);
        let service = service::Counted::new(service.clone(), activity.clone(), timeouts.body);
        tokio::spawn(connection(
            builder.clone(),
            io,
            service,
            activity,
            timeouts,
            stop.clone(),
        ));
    }
}

/// Runs one connection until it ends, times out, or is closed at shutdown.
async fn connection<S: Served>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    io: Tracked,
    service: service::Counted<S>,
    activity: Arc<Activity>,
    timeouts: Timeouts,
    stop: CancellationToken,
) {
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let wake = match (activity.verdict(now, &timeouts), closing) {
            (Verdict::Drop(why), _) => {
                tracing::debug!(why, "dropping a connection");
                return;
            }
            (Verdict::Close, None) => {
                conn.as_mut().graceful_shutdown();
                closing = Some(now + CLOSE_GRACE);
                continue;
            }
            (_, Some(deadline)) if now >= deadline => return,
            (Verdict::Close, Some(deadline)) => deadline,
            (Verdict::Wait(at), Some(deadline)) => at.min(deadline),
            (Verdict::Wait(at), None) => at,
        };
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(wake) => {}
            () = stop.cancelled(), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(Instant::now() + CLOSE_GRACE);
            }
        }
    }
}

/// A builder for HTTP/1 and HTTP/2 on one port, with hyper's own header timer off: the
/// connection's [`Activity`] times the head instead, and keeps idle keep-alive apart from it.
pub fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    builder
}
