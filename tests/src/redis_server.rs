//! A `redis-server` of the test's own (Debian package `redis-server`, installed by
//! `tests/run.sh`), on a Unix socket in a fresh directory so tests never share one or race for a
//! port. It is killed when the handle is dropped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub struct RedisServer {
    dir: PathBuf,
    child: Child,
}

impl RedisServer {
    pub async fn start() -> anyhow::Result<Self> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nagare-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start redis-server ({e}); run tests/run.sh once, or: apt-get install redis-server"
                )
            })?;
        for _ in 0..500 {
            if socket.exists() {
                return Ok(Self { dir, child });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        anyhow::bail!("redis-server did not open {}", socket.display())
    }

    /// Kills the server and waits until it is gone.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// The URL of its socket.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.dir.join("redis.sock").display())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
