//! `nagare serve`: bind, build the app, serve HTTP and gRPC and run the task workers until a
//! signal. [`serve`] takes listeners already bound, so tests bind `127.0.0.1:0` and run the same
//! loop as the binary.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;
use crate::error::StartupError;
use crate::grpc::{self, GrpcSettings};
use crate::http;
use crate::tasks::Worker;
use crate::tcp::Timeouts;
use crate::wiring::Wiring;

/// The sockets `nagare serve` answers on.
pub struct Listeners {
    pub http: TcpListener,
    /// `None` when gRPC is off.
    pub grpc: Option<TcpListener>,
}

impl Listeners {
    /// Binds `server.listen` and, when gRPC is on, `grpc.listen`.
    pub async fn bind(config: &Config) -> Result<Self, StartupError> {
        let http = bind(config.listen, "server.listen / --listen").await?;
        let grpc = match config.grpc_listen {
            Some(addr) => Some(bind(addr, "grpc.listen / --grpc-listen").await?),
            None => None,
        };
        Ok(Self { http, grpc })
    }
}

async fn bind(addr: SocketAddr, key: &str) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Io {
            context: format!("binding {addr} ({key})"),
            source,
        })
}

/// How the servers behave, beside the app they serve.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub grpc: GrpcSettings,
    /// How long in-flight chats may finish after the signal.
    pub shutdown_grace: Duration,
    /// The REST listener's connection timeouts (the cap is the app's).
    pub http: Timeouts,
}

impl ServeSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            grpc: config.grpc.clone(),
            shutdown_grace: config.shutdown_grace,
            http: config.connections.http,
        }
    }
}

/// How long, once every chat has ended, connections get to write their last bytes and close.
const LAST_WRITES: Duration = Duration::from_secs(2);

/// Runs `nagare serve` until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    raise_open_file_limit();
    let settings = ServeSettings::from_config(&config);
    // Built before binding: a configuration or backend problem fails start-up before any port
    // is taken.
    let app = Wiring::new(config.clone()).serve_app().await?;
    let listeners = Listeners::bind(&config).await?;
    serve(listeners, app, settings, shutdown).await
}

/// Serves `app` on `listeners` and runs its task workers until `shutdown` resolves. Then the
/// gateway drains (see [`crate::lifecycle`]): readiness turns 503 while the listeners still
/// answer, no new chat starts, the workers put their tasks back, and the chats in flight get the
/// grace period to finish; those that do not end with a retryable error. Then the listeners
/// close.
pub async fn serve(
    listeners: Listeners,
    app: Arc<App>,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    let addr = local_addr(&listeners.http)?;
    tracing::info!("listening on http://{addr}");
    if let Some(site) = &app.web {
        tracing::info!(
            gzipped_bytes = site.transferred(),
            "browser app at http://{addr}/ (dev mode: `nagare token --sub <you> --link http://{addr}` prints a sign-in link)"
        );
    }
    let grpc = match listeners.grpc {
        Some(listener) => {
            let addr = local_addr(&listener)?;
            let (routes, health) = grpc::routes(app.clone(), &settings.grpc)
                .map_err(|e| StartupError::Config(format!("gRPC reflection: {e}")))?;
            tracing::info!("listening on grpc://{addr}");
            Some((listener, routes, health))
        }
        None => {
            tracing::info!("gRPC: off (grpc.enabled = false)");
            None
        }
    };
    // The workers stop taking tasks at the signal, and put back the ones they run; the sweep
    // stops with them.
    let workers_stop = CancellationToken::new();
    let workers = app
        .tasks
        .clone()
        .map(|tasks| Worker::new(tasks, app.pipeline.clone()).spawn(workers_stop.clone()));
    // What is kept past its time, collected while the server runs.
    let sweep = match app.sweep_every {
        Some(every) if app.sweep.has_work() => {
            Some(app.sweep.clone().spawn(every, workers_stop.clone()))
        }
        _ => None,
    };
    // Cancelled when the listeners are to close, after draining.
    let stop = CancellationToken::new();
    let cap = app.connection_cap.clone();
    let http = http::serve(
        listeners.http,
        http::router(app.clone()),
        cap.clone(),
        settings.http,
        stop.clone(),
    );
    let grpc = async {
        if let Some((listener, routes, health)) = grpc {
            let timeouts = settings.grpc.timeouts(settings.http.body);
            let lifecycle = app.lifecycle.clone();
            grpc::serve(
                listener,
                routes,
                health,
                &settings.grpc,
                (cap.clone(), timeouts),
                async move { lifecycle.draining().await },
                stop.clone(),
            )
            .await;
        }
    };
    let lifecycle = app.lifecycle.clone();
    let control = async {
        shutdown.await;
        lifecycle.drain();
        tracing::info!(
            grace_secs = settings.shutdown_grace.as_secs_f64(),
            in_flight = lifecycle.in_flight(),
            "shutting down: draining; chats in flight may finish"
        );
        workers_stop.cancel();
        let drained = within(settings.shutdown_grace, async {
            for worker in workers.into_iter().flatten().chain(sweep) {
                let _ = worker.await;
            }
            lifecycle.quiet().await;
        })
        .await;
        if !drained {
            tracing::warn!(
                in_flight = lifecycle.in_flight(),
                "shutdown grace period over; ending the chats still in flight"
            );
            lifecycle.end_grace();
            within(LAST_WRITES, lifecycle.quiet()).await;
        }
        stop.cancel();
        if !within(LAST_WRITES, cap.closed()).await {
            tracing::warn!(
                open = cap.open_now(),
                "connections still open at exit; dropping them"
            );
        }
    };
    tokio::join!(http, grpc, control);
    Ok(())
}

/// Waits for `future`, at most `limit`; says whether it finished.
async fn within(limit: Duration, future: impl Future<Output = ()>) -> bool {
    tokio::time::timeout(limit, future).await.is_ok()
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, StartupError> {
    listener.local_addr().map_err(|source| StartupError::Io {
        context: "reading a bound address".into(),
        source,
    })
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
