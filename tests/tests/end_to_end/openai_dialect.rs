#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The OpenAI dialect driven by the official `openai` Python SDK (`tests/python/openai_chat.py`):
//! a unary and a streamed completion (the second served by the response cache), the models list,
//! refusals the SDK raises as `BadRequestError`, a bad token as `AuthenticationError` and the
//! per-user limit as `RateLimitError` with `Retry-After`; then the agent features
//! (`tests/python/openai_agent.py`): parallel tool calls the SDK assembles from interleaved
//! deltas, a tool loop, an image, structured output and reasoning sent back signed.

use std::sync::Arc;

use nagare_gateway::config::Config;
use nagare_tests::fake_converse::SIGNATURE;
use nagare_tests::{FakeBedrock, Gateway, bedrock_provider, dev_token};
use serde_json::{Value, json};

/// A gateway on `fake`, default model `fake`, also allowing `allow`, its config changed by `change`.
async fn gateway(fake: &FakeBedrock, allow: &[&str], change: impl FnOnce(&mut Config)) -> Gateway {
    Gateway::builder()
        .model(Arc::new(bedrock_provider(&fake.url())))
        .models("fake", allow)
        .config(change)
        .start()
        .await
        .unwrap()
}

/// Runs `script` with the gateway's `/v1` and a token for alice.
async fn sdk(gw: &Gateway, script: &str) -> Value {
    let token = dev_token("alice", &["chat"]);
    nagare_tests::python_json(script, &[&gw.url("/v1"), &token]).await
}

#[tokio::test]
async fn the_openai_sdk_chats_streams_lists_models_and_sees_its_own_errors() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake, &[], |c| {
        c.cache.enabled = true;
        c.rate_limits.requests_per_minute = 3;
    })
    .await;
    let seen = sdk(&gw, "openai_chat.py").await;

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

    assert_eq!(
        seen["models"],
        json!([
            "fast",
            "smart",
            "fake",
            "amazon.titan-embed-text-v2:0",
            "embed"
        ])
    );
    assert_eq!(
        seen["n2"],
        json!({"status": 400, "param": "n", "type": "invalid_request_error"})
    );
    assert_eq!(seen["logprobs"]["param"], "logprobs");
    // The pipeline's own check, named in OpenAI's terms.
    assert_eq!(seen["too_long"]["param"], "max_completion_tokens");
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

#[tokio::test]
async fn the_openai_sdk_assembles_parallel_calls_and_sends_images_schemas_and_reasoning() {
    let fake = FakeBedrock::start().await.unwrap();
    let allow = ["fake.parallel-tools", "fake.json", "fake.reasoning"];
    let gw = gateway(&fake, &allow, |_| {}).await;
    let seen = sdk(&gw, "openai_agent.py").await;

    let parallel = &seen["parallel"];
    assert_eq!(parallel["finish_reason"], "tool_calls");
    assert_eq!(
        parallel["calls"],
        json!([
            {"id": "tooluse_fake_a", "name": "get_weather", "arguments": r#"{"city":"Paris"}"#},
            {"id": "tooluse_fake_b", "name": "get_time", "arguments": r#"{"zone":"Asia/Tokyo"}"#},
        ])
    );
    // Each call's first delta names it; its argument fragments then interleave as Bedrock sent them.
    let order = parallel["order"].as_array().unwrap();
    let indexes: Vec<u64> = order.iter().map(|d| d["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, [0, 1, 0, 1, 0, 1, 0]);
    assert_eq!(order[0]["id"], "tooluse_fake_a");
    assert_eq!(order[1]["id"], "tooluse_fake_b");
    assert!(order[2..].iter().all(|d| d["id"].is_null()));

    // The loop's second request: the calls and their results, as Bedrock takes them.
    assert_eq!(seen["loop"], "The tool said: sunny; 09:00");
    let requests = fake.requests();
    let second = &requests[1]["messages"];
    assert_eq!(
        second[1]["content"][0]["toolUse"]["input"],
        json!({"city": "Paris"})
    );
    assert_eq!(
        second[2]["content"][1]["toolResult"]["toolUseId"],
        "tooluse_fake_b"
    );

    assert!(!seen["image"].as_str().unwrap().is_empty());
    let image = &requests[2]["messages"][0]["content"][1]["image"];
    assert_eq!(image["format"], "png", "{}", requests[2]);
    assert!(
        image["source"]["bytes"]
            .as_str()
            .is_some_and(|b| !b.is_empty())
    );

    assert_eq!(seen["parsed"], json!({"answer": "42"}));
    let format = &requests[3]["outputConfig"]["textFormat"];
    assert!(format.to_string().contains("answer"), "{}", requests[3]);

    let reasoning = &seen["reasoning"];
    assert_eq!(reasoning["reasoning_content"], "Let me think about it.");
    assert_eq!(reasoning["thinking_blocks"][0]["signature"], SIGNATURE);
    assert_eq!(reasoning["finish_reason"], "tool_calls");
    // The fake refuses reasoning that comes back unsigned: this answer proves it came back whole.
    assert_eq!(seen["after_tools"], "Done thinking.");
    assert_eq!(seen["streamed_reasoning"], "Let me think about it.");
    assert_eq!(seen["streamed_thinking"][0]["signature"], SIGNATURE);
    let sent = &requests[5]["messages"][1]["content"][0]["reasoningContent"]["reasoningText"];
    assert_eq!(sent["signature"], SIGNATURE);

    assert_eq!(seen["url_image"], "messages[0].content[0].image_url.url");
    assert_eq!(fake.calls(), 6, "the refused URL image never went up");
}

#[tokio::test]
async fn the_openai_sdk_embeds_through_titan_with_the_cache_and_token_limits() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake, &[], |c| {
        c.cache.enabled = true;
        c.rate_limits.tokens_per_minute = 40;
    })
    .await;
    let seen = sdk(&gw, "openai_embeddings.py").await;

    let first = &seen["first"];
    assert_eq!(first["model"], "amazon.titan-embed-text-v2:0");
    assert_eq!(first["lengths"], json!([256, 256, 256]));
    assert_eq!(first["indexes"], json!([0, 1, 2]));
    let (similar, unrelated) = (
        first["similar"].as_f64().unwrap(),
        first["unrelated"].as_f64().unwrap(),
    );
    assert!(similar > unrelated + 0.2, "{similar} vs {unrelated}");
    // Titan's count (the fake counts words): 6 + 7 + 5.
    assert_eq!(
        first["usage"],
        json!({"prompt_tokens": 18, "total_tokens": 18})
    );
    let requests = fake.requests();
    assert_eq!(
        requests[0],
        json!({"inputText": "How do I reset my password?", "dimensions": 256, "normalize": true})
    );

    // The repeat was the cache's: the same vector, no call, no tokens counted.
    assert_eq!(seen["again"], json!({"same": true, "cached": "1"}));
    assert_eq!(fake.calls(), 3, "{requests:?}");

    assert_eq!(seen["dimensions"]["param"], "dimensions");
    assert!(
        seen["dimensions"]["message"]
            .as_str()
            .unwrap()
            .contains("256, 512, 1024")
    );
    assert_eq!(seen["model"]["param"], "model");
    assert_eq!(seen["empty"]["param"], "input");
    // 40 words estimate past the 40 tokens a minute allows: it could never run.
    assert_eq!(seen["too_big"]["status"], 400);
    assert!(
        seen["too_big"]["message"]
            .as_str()
            .unwrap()
            .contains("tokens")
    );
    // 18 used, then an estimate of 29 more: past the minute's 40.
    assert_eq!(seen["limited"]["status"], 429);
    assert_eq!(fake.calls(), 3, "refused requests never went up");
    let models = seen["models"].as_array().unwrap();
    assert!(models.contains(&json!("embed")), "{models:?}");
}

#[tokio::test]
async fn the_vercel_ai_sdk_streams_a_chat_and_parallel_tool_calls() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake, &["fake.parallel-tools"], |_| {}).await;
    let token = dev_token("alice", &["chat"]);
    let seen = nagare_tests::node_json("vercel_chat.mjs", &[&gw.url("/v1"), &token]).await;
    let chat = &seen["chat"];
    assert_eq!(chat["text"], "Hello from fake Bedrock");
    assert_eq!(
        chat["pieces"], 4,
        "one piece per delta: streamed, not buffered"
    );
    assert_eq!(chat["finishReason"], "stop");
    assert_eq!(chat["outputTokens"], 4);
    assert!(chat["inputTokens"].as_u64().unwrap() > 0);
    assert_eq!(
        seen["tools"],
        json!({"finishReason": "tool-calls", "calls": [
            {"id": "tooluse_fake_a", "name": "get_weather", "input": {"city": "Paris"}},
            {"id": "tooluse_fake_b", "name": "get_time", "input": {"zone": "Asia/Tokyo"}},
        ]})
    );
}

#[tokio::test]
async fn an_operator_may_record_the_dialects_chats_as_conversations() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake, &[], |c| {
        c.memory.enabled = true;
        c.memory.record_dialects = true;
    })
    .await;
    let seen = sdk(&gw, "openai_memory.py").await;
    let conversation = seen["first"]
        .as_str()
        .expect("the first answer names a conversation");
    assert_eq!(seen["second"], conversation);
    assert_eq!(seen["streamed"], conversation);
    assert_eq!(seen["streamed_text"], "Hello from fake Bedrock");
    assert_eq!(seen["not_mine"], 404);
    // Each request recorded its new message and answer, once: not the history it resent.
    let (status, page) = gw
        .get_json(&gw.client(), &format!("/v1/conversations/{conversation}"))
        .await;
    assert_eq!(status, 200, "{page}");
    let turns: Vec<&str> = page["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        turns,
        [
            "What is a stream?",
            "Hello from fake Bedrock",
            "And in computing?",
            "Hello from fake Bedrock",
            "Thanks",
            "Hello from fake Bedrock"
        ]
    );
    // The model saw what the client sent, system prompt and all.
    let last = fake.last_request().unwrap();
    assert_eq!(last["system"][0]["text"], "Be brief.");
    assert_eq!(last["messages"].as_array().unwrap().len(), 5);

    // By default the dialects record nothing, even with memory on.
    let quiet = gateway(&fake, &[], |c| c.memory.enabled = true).await;
    let response = quiet
        .client()
        .post(quiet.url("/v1/chat/completions"))
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("nagare-conversation-id").is_none());
    let (_, list) = quiet.get_json(&quiet.client(), "/v1/conversations").await;
    assert_eq!(list["conversations"], json!([]), "{list}");
    // Nor may a client name a conversation there.
    let refused = quiet
        .client()
        .post(quiet.url("/v1/chat/completions"))
        .header("nagare-conversation-id", conversation)
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
}
