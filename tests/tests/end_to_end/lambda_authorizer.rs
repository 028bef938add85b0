//! The real `nagare-authorizer` binary run by a fake Lambda Runtime API, as Lambda runs it:
//! real-shaped events in, IAM policies (or `Unauthorized`) out, the JWKS cache kept warm.

// Test helpers outside #[test] functions may panic too: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use nagare_tests::fake_lambda::{Outcome, workspace_binary};
use nagare_tests::{FakeIssuer, FakeLambdaRuntime, TestKey};
use serde_json::Value;

const CONNECT: &str = include_str!("../../../authorizer/tests/fixtures/websocket-connect.json");

fn connect_event(token: &str) -> Value {
    serde_json::from_str(&CONNECT.replace("{{TOKEN}}", token)).unwrap()
}

#[tokio::test]
async fn the_authorizer_binary_answers_through_the_runtime_api() {
    let key = TestKey::new("k1", "rsa-1", Algorithm::RS256).unwrap();
    let issuer = FakeIssuer::start(&[&key]).await.unwrap();
    let runtime = FakeLambdaRuntime::start().await.unwrap();
    let issuers = format!(
        r#"[{{issuer = "{}", audiences = ["app"]}}]"#,
        issuer.issuer()
    );
    let mut child = tokio::process::Command::new(workspace_binary("nagare-authorizer").unwrap())
        .env_clear()
        .envs(runtime.env("nagare-authorizer"))
        .env("NAGARE__AUTH__ISSUERS", issuers)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let good = issuer.token(&key, "alice", "chat");
    let no_scope = issuer.token(&key, "bob", "");

    let cases = [
        (connect_event(&good), "Allow"),
        (connect_event("not-a-token"), "Unauthorized"),
        (connect_event(&no_scope), "Deny"),
        (connect_event(&good), "Allow"),
    ];
    for (event, expected) in cases {
        let id = runtime.invoke(event).await;
        let done = runtime
            .result(Duration::from_secs(30))
            .await
            .expect("the function did not answer");
        assert_eq!(done.request_id, id);
        match (&done.outcome, expected) {
            (Outcome::Response(policy), effect) => {
                assert_eq!(
                    policy["policyDocument"]["Statement"][0]["Effect"], effect,
                    "{policy}"
                );
                assert!(policy["principalId"].is_string());
            }
            (Outcome::Error { body, .. }, "Unauthorized") => {
                assert_eq!(body["errorMessage"], "Unauthorized")
            }
            (other, _) => panic!("expected {expected}, got {other:?}"),
        }
    }
    assert_eq!(
        issuer.fetches(),
        1,
        "the JWKS cache lives across warm invocations"
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn without_issuers_the_authorizer_fails_to_start_and_says_why() {
    let runtime = FakeLambdaRuntime::start().await.unwrap();
    let out = tokio::process::Command::new(workspace_binary("nagare-authorizer").unwrap())
        .env_clear()
        .envs(runtime.env("nagare-authorizer"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("no issuers"), "{all}");
}
