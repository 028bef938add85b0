//! Running a fake: every fake is an axum app on a free loopback port that stops when its handle
//! is dropped.

use std::net::SocketAddr;

use axum::Router;
use axum::serve::ListenerExt;

/// Stops the server when dropped.
pub struct StopOnDrop {
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Serves `app` on `127.0.0.1:0` with TCP_NODELAY (fakes write many small frames, which Nagle's
/// algorithm would hold back), returning the address and the handle that keeps it running.
pub async fn spawn(app: Router) -> anyhow::Result<(SocketAddr, StopOnDrop)> {
    spawn_on(tokio::net::TcpListener::bind("127.0.0.1:0").await?, app)
}

/// [`spawn`] on a bound listener, for a fake that must know its address before it serves.
pub fn spawn_on(
    listener: tokio::net::TcpListener,
    app: Router,
) -> anyhow::Result<(SocketAddr, StopOnDrop)> {
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok((addr, StopOnDrop { _stop: stop }))
}

/// Polls `check` every 10 ms until it holds or `limit` passes; true if it held. Fakes count
/// things after they answer, so a test waits for a count rather than reading it at once.
pub async fn wait_until(limit: std::time::Duration, check: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    check()
}
