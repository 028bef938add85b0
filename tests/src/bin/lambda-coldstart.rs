//! `lambda-coldstart`: runs a Lambda binary under the fake Runtime API and measures its cold
//! start (exec → first response posted) and peak RSS, the figures that size a function's memory.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    /// Which function: `authorizer` or `ws`.
    #[arg(long)]
    function: String,
    /// The binary, e.g. target/release/nagare-authorizer or target/release/nagare-ws.
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
    let (event, env) = match args.function.as_str() {
        "authorizer" => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            let token = key.sign(&json!({"iss": issuer.issuer(), "aud": "app", "sub": "bench", "exp": now + 3600, "scope": "chat"}));
            let event: Value = serde_json::from_str(&CONNECT.replace("{{TOKEN}}", &token))?;
            let issuers = format!(
                r#"[{{issuer = "{}", audiences = ["app"]}}]"#,
                issuer.issuer()
            );
            (event, vec![("NAGARE__AUTH__ISSUERS".to_owned(), issuers)])
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
            vec![
                ("AWS_ACCESS_KEY_ID".to_owned(), "bench".to_owned()),
                ("AWS_SECRET_ACCESS_KEY".to_owned(), "bench".to_owned()),
            ],
        ),
        other => anyhow::bail!("unknown function {other:?}; known: authorizer, ws"),
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
        let elapsed = t0.elapsed();
        // The authorizer answers with a policy; `nagare-ws` with status 200 once it stored the
        // connection.
        let answered = match &done.outcome {
            Outcome::Response(r) if args.function == "ws" => r["statusCode"] == 200,
            Outcome::Response(r) => r["policyDocument"]["Statement"][0]["Effect"] == "Allow",
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
