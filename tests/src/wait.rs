//! Waiting for something to become true, with a limit, instead of sleeping a guessed time.

use std::future::Future;
use std::time::Duration;

/// Polls `check` every 20 ms until it is true (→ true) or `limit` passes (→ false).
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
