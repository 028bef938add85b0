#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The OpenAI dialect driven by the official `openai` Python SDK (`tests/python/openai_chat.py`):
//! a unary and a streamed completion (the second served by the response cache), the models list,
//! refusals the SDK raises as `BadRequestError`, a bad token as `AuthenticationError` and the
//! per-user limit as `RateLimitError` with `Retry-After`.

use std::sync::Arc;

use nagare_tests::{FakeBedrock, Gateway, bedrock_provider, dev_token};
use serde_json::{Value, json};

#[tokio::test]
async fn the_openai_sdk_chats_streams_lists_models_and_sees_its_own_errors() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = Gateway::builder()
        .model(Arc::new(bedrock_provider(&fake.url())))
        .models("fake", &[])
        .config(|c| {
            c.cache.enabled = true;
            c.rate_limits.requests_per_minute = 3;
        })
        .start()
        .await
        .unwrap();
    let python = nagare_tests::python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/openai_chat.py");
    let output = tokio::process::Command::new(&python)
        .arg(script)
        .arg(gw.url("/v1"))
        .arg(dev_token("alice", &["chat"]))
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; {}",
                python.display(),
                nagare_tests::INSTALL_PYTHON
            )
        });
    assert!(
        output.status.success(),
        "openai_chat.py failed (is openai in the venv? {}):\n{}",
        nagare_tests::INSTALL_PYTHON,
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();

    let unary = &seen["unary"];
    assert_eq!(unary["object"], "chat.completion");
    assert!(unary["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(unary["model"], "fake");
    assert_eq!(unary["role"], "assistant");
    assert_eq!(unary["finish_reason"], "stop");
    let content = unary["content"].as_str().unwrap();
    assert!(!content.is_empty());
    let usage = &unary["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    // What reached Bedrock: the developer message as the system prompt, the conversation as sent.
    let sent = &fake.requests()[0];
    assert_eq!(sent["system"][0]["text"], "Answer briefly.");
    let texts: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "What is a stream?",
            "Water that flows.",
            "And in computing?"
        ]
    );
    assert_eq!(sent["inferenceConfig"]["maxTokens"], 64);

    let stream = &seen["stream"];
    assert_eq!(
        stream["content"], content,
        "the SDK assembled the same answer"
    );
    assert_eq!(stream["role"], "assistant");
    assert_eq!(stream["finish_reason"], "stop");
    assert!(stream["chunks"].as_u64().unwrap() >= 3);
    assert_eq!(stream["usage"]["total_tokens"], usage["total_tokens"]);

    assert_eq!(seen["models"], json!(["fast", "smart", "fake"]));
    assert_eq!(
        seen["n2"],
        json!({"status": 400, "param": "n", "type": "invalid_request_error"})
    );
    assert_eq!(seen["tools"]["param"], "tools");
    assert_eq!(seen["auth"], 401);
    let limited: Vec<&Value> = seen["limited"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l.is_object())
        .collect();
    assert!(!limited.is_empty(), "{}", seen["limited"]);
    for l in limited {
        assert_eq!(l["status"], 429);
        assert_eq!(l["type"], "rate_limit_error");
        assert!(
            l["retry_after"]
                .as_str()
                .is_some_and(|s| s.parse::<u64>().unwrap() >= 1)
        );
    }
    // The streamed request was the cached unary answer; of the limited loop, one call went up.
    assert_eq!(fake.calls(), 2, "{:?}", fake.requests().len());
}
