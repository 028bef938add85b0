#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Anthropic dialect driven by the official `anthropic` Python SDK
//! (`tests/python/anthropic_messages.py`), its token sent as `x-api-key`: unary and streamed
//! messages, parallel tool calls assembled from `input_json_delta`s one block at a time, a tool
//! loop, signed thinking sent back, an image, prompt caching by `cache_control`, the token count,
//! and errors as the SDK's exception types with Anthropic's error types.

use std::sync::Arc;

use nagare_tests::fake_converse::{CACHED_TOKENS, SIGNATURE, cache_points};
use nagare_tests::{FakeBedrock, Gateway, bedrock_provider, dev_token};
use serde_json::{Value, json};

#[tokio::test]
async fn the_anthropic_sdk_streams_tools_thinking_images_and_cache_and_sees_its_own_errors() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = Gateway::builder()
        .model(Arc::new(bedrock_provider(&fake.url())))
        .models(
            "fake",
            &[
                "fake.parallel-tools",
                "fake.reasoning",
                "fake.cache",
                "fake.throttle-9",
            ],
        )
        .config(|c| {
            c.pipeline.prompt_cache.enabled = true;
            c.pipeline.prompt_cache.models = vec!["fake.cache".into()];
        })
        .start()
        .await
        .unwrap();
    let limited = Gateway::builder()
        .model(Arc::new(bedrock_provider(&fake.url())))
        .models("fake", &[])
        .config(|c| c.rate_limits.requests_per_minute = 1)
        .start()
        .await
        .unwrap();
    let token = dev_token("alice", &["chat"]);
    let seen = nagare_tests::python_json(
        "anthropic_messages.py",
        &[&gw.url(""), &token, &limited.url("")],
    )
    .await;
    let requests = fake.requests();

    let unary = &seen["unary"];
    assert!(unary["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        (&unary["type"], &unary["role"], &unary["model"]),
        (&json!("message"), &json!("assistant"), &json!("fake"))
    );
    assert!(!unary["text"].as_str().unwrap().is_empty());
    assert_eq!(unary["stop_reason"], "end_turn");
    assert!(unary["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(requests[0]["system"][0]["text"], "Answer briefly.");
    assert_eq!(
        requests[0]["messages"][2]["content"][0]["text"],
        "And in computing?"
    );

    let stream = &seen["stream"];
    assert_eq!(stream["text"], stream["final"]);
    assert!(!stream["text"].as_str().unwrap().is_empty());
    assert_eq!(stream["stop_reason"], "end_turn");
    assert!(stream["usage"]["output_tokens"].as_u64().unwrap() > 0);

    let parallel = &seen["parallel"];
    assert_eq!(parallel["stop_reason"], "tool_use");
    assert_eq!(
        parallel["calls"],
        json!([
            {"id": "tooluse_fake_a", "name": "get_weather", "input": {"city": "Paris"}},
            {"id": "tooluse_fake_b", "name": "get_time", "input": {"zone": "Asia/Tokyo"}},
        ])
    );
    // Bedrock interleaved the two inputs; Anthropic's stream has one block open at a time.
    assert_eq!(
        parallel["order"],
        json!([
            ["content_block_start", 0],
            ["content_block_stop", 0],
            ["content_block_start", 1],
            ["content_block_stop", 1]
        ])
    );
    assert_eq!(seen["loop"], "The tool said: sunny; 09:00");

    let thinking = &seen["thinking"];
    assert_eq!(
        thinking["deltas"],
        json!(["input_json_delta", "signature_delta", "thinking_delta"])
    );
    assert_eq!(
        thinking["blocks"][0],
        json!({"type": "thinking", "thinking": "Let me think about it.", "signature": SIGNATURE})
    );
    assert_eq!(thinking["blocks"][1]["input"], json!({"city": "Paris"}));
    assert_eq!(thinking["stop_reason"], "tool_use");
    // The fake refuses unsigned reasoning: this answer proves the signature came back.
    assert_eq!(seen["after_thinking"][1]["text"], "Done thinking.");

    assert!(!seen["image"].as_str().unwrap().is_empty());
    let image = requests
        .iter()
        .find_map(|r| r["messages"][0]["content"][0].get("image"))
        .expect("the image reached Bedrock");
    assert_eq!(image["format"], "png");

    let cache = seen["cache"].as_array().unwrap();
    assert_eq!(cache[0]["cache_creation_input_tokens"], CACHED_TOKENS);
    assert_eq!(cache[1]["cache_read_input_tokens"], CACHED_TOKENS);
    assert_eq!(seen["uncached"]["cache_creation_input_tokens"], 0);
    assert_eq!(seen["uncached"]["cache_read_input_tokens"], 0);
    let points: Vec<usize> = requests
        .iter()
        .filter(|r| {
            r["system"][0]["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("You are"))
        })
        .map(cache_points)
        .collect();
    assert_eq!(points.len(), 3);
    assert!(points[0] > 0 && points[1] > 0, "{points:?}");
    assert_eq!(points[2], 0, "no cache_control, no cache point");

    assert!(seen["count"].as_u64().unwrap() > 10, "{}", seen["count"]);

    let class = |v: &Value| (v["class"].clone(), v["status"].clone(), v["type"].clone());
    assert_eq!(
        class(&seen["bad_request"]),
        (
            json!("BadRequestError"),
            json!(400),
            json!("invalid_request_error")
        )
    );
    assert_eq!(
        class(&seen["auth"]),
        (
            json!("AuthenticationError"),
            json!(401),
            json!("authentication_error")
        )
    );
    assert_eq!(
        class(&seen["overloaded"]),
        (
            json!("ServiceUnavailableError"),
            json!(503),
            json!("overloaded_error")
        )
    );
    let limited = seen["limited"].as_array().unwrap();
    assert_eq!(limited[0], Value::Null, "the first request is allowed");
    assert_eq!(
        class(&limited[1]),
        (
            json!("RateLimitError"),
            json!(429),
            json!("rate_limit_error")
        )
    );
    assert!(
        limited[1]["retry_after"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
}
