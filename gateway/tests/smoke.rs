//! Spawns the real `nagare` binary as a user would and talks to it over HTTP, WebSocket and gRPC.

// Test helpers outside #[test] functions may panic too: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nagare_proto::v1::chat_service_client::ChatServiceClient;

const BIN: &str = env!("CARGO_BIN_EXE_nagare");

/// A `Command` with no AWS settings from the developer's machine, and the instance metadata
/// service off so nothing probes the network.
fn nagare(home: &PathBuf) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", home.join("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("aws-credentials"));
    cmd
}

fn temp_home(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nagare-smoke-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The address after `prefix` in a log line.
fn address_after(line: &str, prefix: &str) -> Option<String> {
    let rest = line.split(prefix).nth(1)?;
    Some(
        rest.chars()
            .take_while(|c| *c != '"' && !c.is_whitespace())
            .collect(),
    )
}

/// Starts `cmd` (a `nagare serve` command) with both listeners on port 0 and returns it with the
/// HTTP and gRPC addresses from its `listening on` lines and every line it printed before.
fn serve(mut cmd: Command) -> (Child, String, String, Vec<String>) {
    let mut child = cmd
        .args(["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut http = None;
    loop {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let status = child.wait();
            panic!("nagare printed no `listening on` lines: {lines:?}, {status:?}");
        };
        if let Some(addr) = address_after(&line, "listening on http://") {
            http = Some(addr);
        }
        let grpc = address_after(&line, "listening on grpc://");
        lines.push(line);
        if let (Some(http), Some(grpc)) = (&http, grpc) {
            return (child, http.clone(), grpc, lines);
        }
    }
}

#[tokio::test]
async fn serve_answers_chat_with_a_minted_token_and_stops_on_sigterm() {
    let home = temp_home("serve");
    let data_dir = home.join("data");
    let mut cmd = nagare(&home);
    cmd.arg("serve").arg("--data-dir").arg(&data_dir);
    let (mut child, addr, grpc_addr, lines) = serve(cmd);
    assert!(
        lines.iter().any(|l| l.contains("model provider: mock")),
        "startup should say the mock serves: {lines:?}"
    );
    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let chat = |token: Option<String>| {
        let mut req = client
            .post(format!("http://{addr}/v1/chat"))
            .header("content-type", "application/json")
            .body(r#"{"message":"hello","inference":{"max_tokens":8}}"#);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };

    let refused = chat(None).await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().contains_key("www-authenticate"));
    let v: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unauthorized");

    let minted = nagare(&home)
        .args(["token", "--sub", "alice", "--ttl", "5m", "--data-dir"])
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    let reply = chat(Some(token.clone())).await.unwrap();
    assert_eq!(reply.status(), 200);
    let v: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(v["usage"]["output_tokens"], 8);
    assert_eq!(v["stop_reason"], "max_tokens");

    // `nagare chat` streams the same answer over the WebSocket, as a browser would get it.
    let ws_url = format!("ws://{addr}/v1/ws");
    let streamed = nagare(&home)
        .args(["chat", "hello", "--url", &ws_url])
        .env("NAGARE_TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        streamed.status.success(),
        "{}",
        String::from_utf8_lossy(&streamed.stderr)
    );
    assert!(String::from_utf8_lossy(&streamed.stdout).starts_with("You said: hello."));
    assert!(String::from_utf8_lossy(&streamed.stderr).contains("end_turn"));
    let refused = nagare(&home)
        .args(["chat", "hello", "--url", &ws_url, "--token", "bad"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));

    // The same token works over gRPC.
    let mut grpc = ChatServiceClient::connect(format!("http://{grpc_addr}"))
        .await
        .unwrap();
    let mut request = tonic::Request::new(nagare_proto::v1::ChatRequest {
        message: "hello".into(),
        ..Default::default()
    });
    let bearer = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", bearer);
    let reply = grpc.converse(request).await.unwrap().into_inner();
    assert!(
        reply
            .message
            .unwrap()
            .content
            .starts_with("You said: hello.")
    );

    // A token from another data dir (another secret) is refused.
    let other = nagare(&home)
        .args(["token", "--sub", "mallory", "--data-dir"])
        .arg(home.join("other-data"))
        .output()
        .unwrap();
    let other = String::from_utf8(other.stdout).unwrap().trim().to_owned();
    assert_eq!(chat(Some(other)).await.unwrap().status(), 401);

    // With the secret file deleted under a running server, `nagare token` writes no new one
    // unasked: the server kept the old secret and would refuse what it signs.
    std::fs::remove_file(data_dir.join("dev-jwt-secret")).unwrap();
    let mint = || {
        let mut command = nagare(&home);
        command
            .args(["token", "--sub", "alice", "--data-dir"])
            .arg(&data_dir);
        command
    };
    let refused = mint().output().unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Restart the server"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!data_dir.join("dev-jwt-secret").exists());
    let forced = mint().arg("--new-secret").output().unwrap();
    assert!(forced.status.success());
    let forced = String::from_utf8(forced.stdout).unwrap().trim().to_owned();
    assert_eq!(
        chat(Some(forced)).await.unwrap().status(),
        401,
        "as the guard warned"
    );
    assert_eq!(chat(Some(token.clone())).await.unwrap().status(), 200);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    let _ = std::fs::remove_dir_all(home);
}

#[test]
fn token_rejects_bad_arguments() {
    let home = temp_home("token-args");
    for args in [
        &["token", "--sub", ""][..],
        &["token", "--sub", "a", "--ttl", "forever"][..],
    ] {
        let out = nagare(&home)
            .args(args)
            .arg("--data-dir")
            .arg(home.join("d"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
    let _ = std::fs::remove_dir_all(home);
}

#[test]
fn dev_mode_refuses_a_public_address() {
    let home = temp_home("public");
    let out = nagare(&home)
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(home.join("d"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dev_allow_non_loopback"));
    let _ = std::fs::remove_dir_all(home);
}

fn fails_fast(extra_env: &[(&str, &str)], expect: &str) {
    let home = temp_home(&expect.replace(' ', "-"));
    let mut cmd = nagare(&home);
    cmd.envs(extra_env.iter().copied()).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--provider",
        "bedrock",
    ]);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should have failed: {stderr}");
    assert!(
        stderr.contains(expect),
        "stderr should mention {expect:?}: {stderr}"
    );
    let _ = std::fs::remove_dir_all(home);
}

#[test]
fn bedrock_without_a_region_fails_fast() {
    fails_fast(&[], "AWS_REGION");
}

#[test]
fn bedrock_without_credentials_fails_fast() {
    fails_fast(&[("AWS_REGION", "us-east-1")], "no AWS credentials");
}

#[test]
fn a_bad_config_key_is_named() {
    let home = temp_home("badkey");
    let out = nagare(&home)
        .env("NAGARE__SERVER__LISTN", "x")
        .args(["serve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listn"));
    let _ = std::fs::remove_dir_all(home);
}
