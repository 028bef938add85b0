//! `lambda-coldstart`: runs a Lambda binary under the fake Runtime API and measures its cold
//! start (exec → first response posted) and peak RSS, the figures that size a function's memory.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use jsonwebtoken::Algorithm;
use nagare_tests::fake_lambda::Outcome;
use nagare_tests::{FakeIssuer, FakeLambdaRuntime, TestKey};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "lambda-coldstart",
    about = "Cold start and peak RSS of a Nagare Lambda binary"
)]
struct Args {
    /// Which function: `authorizer`, `ws`, `http`, `stream`, `combine-results` or `extract-text`.
    #[arg(long)]
    function: String,
    /// The binary, e.g. target/release/nagare-authorizer.
    #[arg(long)]
    binary: PathBuf,
    #[arg(long, default_value_t = 10)]
    runs: usize,
}

const CONNECT: &str = include_str!("../../../authorizer/tests/fixtures/websocket-connect.json");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Kept alive for the whole run: the authorizer fetches its keys from it.
    let key = TestKey::new("k1", "rsa-1", Algorithm::RS256)?;
    let issuer = FakeIssuer::start(&[&key]).await?;
    let scratch = std::env::temp_dir().join(format!("nagare-coldstart-{}", std::process::id()));
    let token = issuer.token(&key, "bench", "chat");
    let issuers = (
        "NAGARE__AUTH__ISSUERS".to_owned(),
        format!(
            r#"[{{issuer = "{}", audiences = ["app"]}}]"#,
            issuer.issuer()
        ),
    );
    let aws = [
        ("AWS_ACCESS_KEY_ID".to_owned(), "bench".to_owned()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), "bench".to_owned()),
    ];
    // The HTTP functions answer `POST /v1/chat` (or `/stream`) on the unpaced mock; tasks are off,
    // since no SQS is here.
    let http = |path: &str| {
        let event = json!({
            "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
            "headers": {"content-type": "application/json", "authorization": format!("Bearer {token}")},
            "requestContext": {"http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
                               "accountId": "1", "apiId": "a", "requestId": "r", "stage": "$default", "timeEpoch": 0},
            "body": r#"{"message":"hello"}"#, "isBase64Encoded": false,
        });
        let env: Vec<(String, String)> = [
            ("NAGARE__PROVIDER__MOCK__TTFT_MS", "0"),
            ("NAGARE__PROVIDER__MOCK__TOKENS_PER_SECOND", "0"),
            ("NAGARE__TASKS__ENABLED", "false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .chain([issuers.clone()])
        .chain(aws.clone())
        .collect();
        (event, env)
    };
    let (event, env) = match args.function.as_str() {
        "authorizer" => {
            let event: Value = serde_json::from_str(&CONNECT.replace("{{TOKEN}}", &token))?;
            (event, vec![issuers.clone()])
        }
        // `$connect` as API Gateway sends it after the authorizer allowed it. The connection is
        // stored in SQLite in a fresh data dir (no AWS here), so the figure includes creating
        // the database.
        "ws" => (
            json!({
                "requestContext": {
                    "routeKey": "$connect", "eventType": "CONNECT", "stage": "prod",
                    "domainName": "abc.execute-api.us-east-1.amazonaws.com",
                    "connectionId": "cold=", "connectedAt": 0, "requestTimeEpoch": 0,
                    "identity": {"sourceIp": "127.0.0.1"},
                    "authorizer": {"principalId": "bench", "sub": "bench", "tenant": "bench", "scopes": "chat"},
                },
                "isBase64Encoded": false,
            }),
            aws.to_vec(),
        ),
        "http" => http("/v1/chat"),
        "stream" => http("/v1/chat/stream"),
        "combine-results" => (
            json!([{"sentiment": "Positive: pleased."}, {"keywords": "refund\ndelivery"}]),
            Vec::new(),
        ),
        // With no S3 here, the first answer is the refusal of an input that names no document:
        // the figure covers start-up and the S3 client, not a read.
        "extract-text" => (json!({"path": "none"}), aws.to_vec()),
        other => anyhow::bail!(
            "unknown function {other:?}; known: authorizer, ws, http, stream, combine-results, extract-text"
        ),
    };
    let name = format!("nagare-{}", args.function);

    let mut starts = Vec::new();
    let mut peak_kb = 0;
    for run in 0..args.runs {
        let data_dir = scratch.join(run.to_string());
        let runtime = FakeLambdaRuntime::start().await?;
        runtime.invoke(event.clone()).await;
        let t0 = Instant::now();
        let mut child = tokio::process::Command::new(&args.binary)
            .env_clear()
            .envs(runtime.env(&name))
            .envs(env.iter().cloned())
            .env("NAGARE__SERVER__DATA_DIR", &data_dir)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", args.binary.display()))?;
        let done = runtime
            .result(Duration::from_secs(30))
            .await
            .context("no response in 30 s")?;
        let mut elapsed = t0.elapsed();
        if let Outcome::Streamed { body, .. } = &done.outcome {
            // A stream's first response is its prelude (status and headers); the body follows,
            // timed from the prelude.
            let streaming = body.last().map_or(Duration::ZERO, |(at, _)| *at);
            elapsed = elapsed.saturating_sub(streaming);
        }
        let answered = match (&done.outcome, args.function.as_str()) {
            (Outcome::Response(r), "authorizer") => {
                r["policyDocument"]["Statement"][0]["Effect"] == "Allow"
            }
            (Outcome::Response(r), "ws" | "http") => r["statusCode"] == 200,
            (Outcome::Streamed { prelude, body }, "stream") => {
                prelude["statusCode"] == 200 && body.iter().any(|(_, b)| b.contains("event: done"))
            }
            (Outcome::Response(r), "combine-results") => r["sentiment"]["label"] == "positive",
            (Outcome::Error { body, .. }, "extract-text") => body["errorType"] == "InvalidInput",
            _ => false,
        };
        anyhow::ensure!(answered, "unexpected outcome {:?}", done.outcome);
        if let Some(pid) = child.id() {
            peak_kb = peak_kb.max(vm_hwm_kb(pid).unwrap_or(0));
        }
        child.kill().await?;
        starts.push(elapsed.as_secs_f64() * 1000.0);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    starts.sort_by(f64::total_cmp);
    let report = json!({
        "function": args.function,
        "runs": starts.len(),
        "cold_start_ms": { "p50": starts[starts.len() / 2], "min": starts[0], "max": starts[starts.len() - 1] },
        "peak_rss_mb": peak_kb as f64 / 1024.0,
        "jwks_fetches": issuer.fetches(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The high-water mark of resident memory (`VmHWM`) of a live process, in KiB.
fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
