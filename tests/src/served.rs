//! `nagare serve` as a child process on ports it picked, with a token for it; killed when
//! dropped. For tests of the binary itself: its signals, its exit, what it prints.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};

use crate::TempDir;
use crate::fake_lambda::workspace_binary;

/// A running `nagare serve`.
pub struct Served {
    child: Child,
    /// `http://127.0.0.1:<port>`
    pub http: String,
    /// `http://127.0.0.1:<port>`, for tonic.
    pub grpc: String,
    /// A dev token for `alice` with the `chat` scope.
    pub token: String,
    dir: TempDir,
}

impl Served {
    /// Starts the workspace's `nagare serve` with `env` on `127.0.0.1:0`, and waits until it
    /// listens. Panics (failing the test) if it cannot.
    pub fn start(env: &[(&str, &str)]) -> Self {
        let dir = TempDir::new("served").unwrap_or_else(|e| panic!("a temp dir: {e}"));
        let binary = workspace_binary("nagare").unwrap_or_else(|e| panic!("{e}"));
        let mut child = Command::new(&binary)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let Some(stdout) = child.stdout.take() else {
            panic!("no stdout from nagare serve");
        };
        let (mut http, mut grpc) = (None, None);
        let mut lines = BufReader::new(stdout).lines();
        while http.is_none() || grpc.is_none() {
            let Some(Ok(line)) = lines.next() else {
                panic!("nagare serve exited before listening");
            };
            let after = |prefix: &str| {
                line.split(prefix).nth(1).map(|rest| {
                    rest.chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect::<String>()
                })
            };
            if let Some(addr) = after("listening on http://") {
                http = Some(format!("http://{addr}"));
            }
            if let Some(addr) = after("listening on grpc://") {
                grpc = Some(format!("http://{addr}"));
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let mut served = Self {
            child,
            http: http.unwrap_or_default(),
            grpc: grpc.unwrap_or_default(),
            token: String::new(),
            dir,
        };
        served.token = served.mint(&["--sub", "alice"]);
        served
    }

    /// What `nagare token --data-dir <its dir> {args}` prints: a token, or with `--link` a
    /// sign-in link.
    pub fn mint(&self, args: &[&str]) -> String {
        let binary = workspace_binary("nagare").unwrap_or_else(|e| panic!("{e}"));
        let out = Command::new(&binary)
            .arg("token")
            .args(args)
            .arg("--data-dir")
            .arg(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("nagare token: {e}"));
        assert!(out.status.success(), "nagare token {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Sends SIGTERM, as a deploy or `docker stop` does.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub fn wait(mut self) -> ExitStatus {
        self.child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for nagare serve: {e}"))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
