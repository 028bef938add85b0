//! Nagare's test infrastructure: wire-level fakes of the services Nagare talks to, harnesses that
//! start Nagare in-process, and the load generator. The end-to-end tests live in `tests/tests/`.

pub mod delta_clock;
pub mod fake_agent_runtime;
pub mod fake_apigw;
pub mod fake_bedrock;
pub mod fake_collector;
pub mod fake_converse;
pub mod fake_embed;
pub mod fake_issuer;
pub mod fake_lambda;
pub mod fake_oauth;
pub mod harness;
pub mod load;
pub mod load_grpc;
pub mod load_ws;
pub mod moto;
pub mod redis_server;
pub mod samples;
pub mod serve;
pub mod served;
pub mod stamped;
pub mod temp;
pub mod wait;
pub mod ws_client;

pub use fake_bedrock::FakeBedrock;
pub use fake_issuer::{FakeIssuer, TestKey};
pub use fake_lambda::FakeLambdaRuntime;
pub use harness::{
    Gateway, GatewayBuilder, authed_client, bedrock_provider, dev_token, put_bytes, sse_events,
    tenant_token, test_sdk_config,
};
pub use temp::TempDir;
pub use wait::eventually;

/// The Python of the test venv (`tests/.venv`, made by `tests/run.sh`), or `NAGARE_TEST_PYTHON`.
pub fn python() -> std::path::PathBuf {
    std::env::var_os("NAGARE_TEST_PYTHON").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
        std::path::PathBuf::from,
    )
}

/// Runs `tests/python/{script}` with `args` in the test venv and reads what it printed as JSON;
/// a script that fails fails the test with its stderr.
pub async fn python_json(script: &str, args: &[&str]) -> serde_json::Value {
    let python = python();
    let missing = format!("cannot run {}; {INSTALL_PYTHON}", python.display());
    let failed = format!("is the venv current? {INSTALL_PYTHON}");
    script_json(
        python.as_os_str(),
        "python",
        script,
        args,
        &missing,
        &failed,
    )
    .await
}

/// Runs `tests/js/{script}` with `args` in Node.js and reads what it printed as JSON; a script
/// that fails fails the test with its stderr.
pub async fn node_json(script: &str, args: &[&str]) -> serde_json::Value {
    let missing = "node is missing: run tests/run.sh (Debian: apt-get install nodejs npm)";
    let failed = "are tests/node_modules current? npm ci --prefix tests";
    script_json("node".as_ref(), "js", script, args, missing, failed).await
}

/// Runs `tests/{dir}/{script}` with `program`: its stdout as JSON, or a panic that says why.
async fn script_json(
    program: &std::ffi::OsStr,
    dir: &str,
    script: &str,
    args: &[&str],
    missing: &str,
    failed: &str,
) -> serde_json::Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(dir)
        .join(script);
    let output = tokio::process::Command::new(program)
        .arg(&script)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{missing} ({e})"));
    assert!(
        output.status.success(),
        "{} failed ({failed}):\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{} printed no JSON ({e}):\n{}",
            script.display(),
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// What to do when the test venv is missing a package.
pub const INSTALL_PYTHON: &str = "run tests/run.sh once, or: python3 -m venv tests/.venv && \
                                  tests/.venv/bin/pip install -r tests/requirements.txt";
