#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Interoperability: Python's grpcio (C core, not tonic) streams a chat from the gRPC facade,
//! with generated stubs and with nothing but server reflection (v1alpha), as grpcurl would.

use std::sync::Arc;

use nagare_tests::{FakeBedrock, Gateway, bedrock_provider, dev_token};
use serde_json::Value;

#[tokio::test]
async fn python_grpcio_streams_a_chat() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = Gateway::start(Arc::new(bedrock_provider(&fake.url())), "fake", &[])
        .await
        .unwrap();
    let python = nagare_tests::python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/grpc_chat.py");
    let protos = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let output = tokio::process::Command::new(&python)
        .arg(script)
        .arg(gw.grpc_addr.to_string())
        .arg(dev_token("alice", &["chat"]))
        .arg(protos)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; {}",
                python.display(),
                nagare_tests::INSTALL_PYTHON
            )
        });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "grpc_chat.py failed (are grpcio and grpcio-tools in the venv? {}):\n{stderr}",
        nagare_tests::INSTALL_PYTHON
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"start"), "{lines:?}");
    let done = kinds.iter().position(|k| *k == "done").unwrap();
    assert!(kinds[1..done].iter().all(|k| *k == "delta"), "{kinds:?}");
    assert!(done > 1, "no deltas: {kinds:?}");
    let streamed: String = lines[1..done]
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, "Hello from fake Bedrock");
    assert!(lines[..=done].iter().all(|l| l["request_id"] == "py-1"));
    assert!(lines[done]["output_tokens"].as_u64().unwrap() > 0);
    let reply = &lines[done + 1];
    assert_eq!(reply["content"], "Hello from fake Bedrock");
    assert_eq!(reply["model"], "fake");
    let refused = &lines[done + 2];
    assert_eq!(refused["code"], "UNAUTHENTICATED");
    assert_eq!(refused["error_code"], "unauthorized");
    let reflected = &lines[done + 3];
    assert_eq!(reflected["text"], "Hello from fake Bedrock");
    let services = reflected["services"].as_array().unwrap();
    assert!(
        services.contains(&"nagare.v1.ChatService".into()),
        "{services:?}"
    );
    assert!(
        services.contains(&"grpc.health.v1.Health".into()),
        "{services:?}"
    );
    assert_eq!(fake.calls(), 3);
}
