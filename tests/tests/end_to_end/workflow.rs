//! The Step Functions task functions: `nagare-extract-text` reading documents from S3 (moto's
//! server, through the real SDK), and both binaries under the fake Lambda Runtime API, where a
//! failure must reach Step Functions under the error name the state machines retry and catch.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use nagare_gateway::workflow::{Extractor, WorkflowSettings};
use nagare_tests::fake_lambda::{Outcome, workspace_binary};
use nagare_tests::{FakeLambdaRuntime, moto};
use serde_json::{Value, json};

async fn bucket_with(objects: &[(&str, &str, &[u8])]) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let s3 = moto::s3();
    let bucket = format!(
        "docs-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    for (key, content_type, body) in objects {
        s3.put_object()
            .bucket(&bucket)
            .key(*key)
            .content_type(*content_type)
            .body(ByteStream::from(body.to_vec()))
            .send()
            .await
            .unwrap();
    }
    bucket
}

#[tokio::test]
async fn documents_in_s3_become_text_or_a_named_refusal() {
    let report = "<html><body><h1>Q3</h1><p>Revenue rose &amp; costs fell.</p>\
                  <script>track()</script></body></html>";
    let long = "語".repeat(50);
    let bucket = bucket_with(&[
        ("q3.html", "text/html; charset=utf-8", report.as_bytes()),
        ("notes.md", "application/octet-stream", long.as_bytes()),
        ("scan.pdf", "application/pdf", b"%PDF-1.7 ..."),
    ])
    .await;
    let settings = WorkflowSettings {
        max_text_chars: 40,
        ..WorkflowSettings::default()
    };
    let extractor = Extractor::new(moto::s3(), settings.clone());
    let doc = |key: &str| json!({"bucket": bucket, "key": key});

    let html = extractor.handle(doc("q3.html")).await.unwrap();
    assert_eq!(html.extracted_text, "Q3\nRevenue rose & costs fell.");
    assert!(!html.truncated);
    // Output in the shape the state machine's next prompt reads (`$.extractedText`).
    let out = serde_json::to_value(&html).unwrap();
    assert_eq!(out["extractedText"], html.extracted_text);

    let cut = extractor.handle(doc("notes.md")).await.unwrap();
    assert_eq!((cut.chars, cut.truncated), (40, true));

    let refusal = |e: nagare_gateway::workflow::StepError| e.name();
    assert_eq!(
        refusal(extractor.handle(doc("scan.pdf")).await.unwrap_err()),
        "UnsupportedDocument"
    );
    assert_eq!(
        refusal(extractor.handle(doc("missing.txt")).await.unwrap_err()),
        "DocumentNotFound"
    );
    assert_eq!(
        refusal(
            extractor
                .handle(json!({"bucket": bucket}))
                .await
                .unwrap_err()
        ),
        "InvalidInput"
    );
    let small = Extractor::new(
        moto::s3(),
        WorkflowSettings {
            max_document_bytes: 16,
            ..settings
        },
    );
    assert_eq!(
        refusal(small.handle(doc("q3.html")).await.unwrap_err()),
        "DocumentTooLarge"
    );
}

/// Runs `binary` under the fake runtime and returns what each event got.
async fn run(binary: &str, events: Vec<Value>) -> Vec<Outcome> {
    let runtime = FakeLambdaRuntime::start().await.unwrap();
    let _child = tokio::process::Command::new(workspace_binary(binary).unwrap())
        .env_clear()
        .envs(runtime.env(binary))
        .env("AWS_ACCESS_KEY_ID", "AKIDNAGARETEST")
        .env("AWS_SECRET_ACCESS_KEY", "nagare-test-secret")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut outcomes = Vec::new();
    for event in events {
        runtime.invoke(event).await;
        let done = runtime.result(Duration::from_secs(30)).await;
        outcomes.push(done.expect("the function did not answer").outcome);
    }
    outcomes
}

/// The error name Step Functions matches: the `errorType` of the error the function posted.
fn error_type(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Error { body, .. } => body["errorType"].as_str().unwrap(),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_binaries_answer_step_functions_with_named_errors() {
    let branches = json!([
        {"sentiment": "Positive: the customer is pleased."},
        {"keywords": "1. refund\n2. delivery\n- Refund"},
    ]);
    let combined = run(
        "nagare-combine-results",
        vec![branches, json!({"not": "an array"})],
    )
    .await;
    assert_eq!(
        combined[0],
        Outcome::Response(json!({
            "sentiment": {"label": "positive", "text": "Positive: the customer is pleased."},
            "keywords": ["refund", "delivery"],
        }))
    );
    assert_eq!(error_type(&combined[1]), "InvalidInput");

    let extracted = run("nagare-extract-text", vec![json!({"path": "s3://x/y"})]).await;
    assert_eq!(error_type(&extracted[0]), "InvalidInput");
}

#[tokio::test]
async fn the_sweep_function_runs_on_its_schedule_against_dynamodb_and_s3() {
    let tables = moto::tables(&moto::dynamodb()).await.unwrap();
    let bucket = moto::bucket(&moto::s3()).await.unwrap();
    let runtime = FakeLambdaRuntime::start().await.unwrap();
    let _child = tokio::process::Command::new(workspace_binary("nagare-sweep").unwrap())
        .env_clear()
        .envs(runtime.env("nagare-sweep"))
        .env("AWS_ACCESS_KEY_ID", "AKIDNAGARETEST")
        .env("AWS_SECRET_ACCESS_KEY", "nagare-test-secret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", moto::url())
        .env(
            "NAGARE__AUTH__ISSUERS",
            "[{issuer = \"https://issuer.example\", audiences = [\"nagare\"]}]",
        )
        .env("NAGARE__SERVER__DATA_DIR", "/tmp")
        .env("NAGARE__STORE__KIND", "dynamodb")
        .env("NAGARE__STORE__CONVERSATIONS_TABLE", &tables.conversations)
        .env("NAGARE__STORE__CONNECTIONS_TABLE", &tables.connections)
        .env("NAGARE__UPLOADS__TABLE", &tables.uploads)
        .env("NAGARE__UPLOADS__STORE", "s3")
        .env("NAGARE__UPLOADS__BUCKET", &bucket)
        .env("NAGARE__UPLOADS__S3_FORCE_PATH_STYLE", "true")
        .env("NAGARE__TASKS__ENABLED", "false")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // What EventBridge sends on a schedule.
    runtime
        .invoke(json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}))
        .await;
    let done = runtime.result(Duration::from_secs(30)).await;
    assert_eq!(
        done.expect("the function did not answer").outcome,
        Outcome::Response(json!({"exchanges": 0, "uploads": 0, "blobs": 0}))
    );
}
