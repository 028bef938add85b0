#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What operators add to the Converse contract, through the fake Bedrock: automatic prompt-cache
//! points (where they go, the cache reads reported, the opt-out) and a guardrail (the exact
//! `guardrailConfig`, route scoping, never cached).

use std::sync::Arc;

use nagare_tests::fake_converse::{cache_points, weather_tool};
use nagare_tests::{FakeBedrock, Gateway, bedrock_provider};
use serde_json::json;

#[tokio::test]
async fn automatic_cache_points_sit_after_system_tools_and_history_and_reads_are_reported() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = Gateway::builder()
        .model(Arc::new(bedrock_provider(&fake.url())))
        .models("fake.cache", &[])
        .config(|c| {
            c.memory.enabled = true;
            c.pipeline.prompt_cache.enabled = true;
            c.pipeline.prompt_cache.ttl = nagare_gateway::provider::CacheTtl::OneHour;
            c.pipeline.prompt_cache.models = vec!["fake.cache".into()];
        })
        .start()
        .await
        .unwrap();
    let ask = json!({"message": "first", "system": "A long, stable system prompt.", "tools": [weather_tool()]});
    let (_, events) = gw.stream_chat(&gw.client(), &ask).await;
    let done = events.last().unwrap();
    assert_eq!(done["usage"]["cache_write_input_tokens"], 1000);
    let sent = fake.last_request().unwrap();
    let point = json!({"cachePoint": {"type": "default", "ttl": "1h"}});
    assert_eq!(sent["system"][1], point, "after the system prompt");
    assert_eq!(sent["toolConfig"]["tools"][1], point, "after the tools");
    assert_eq!(cache_points(&sent), 2, "no history yet");

    let conversation = events[0]["conversation_id"].as_str().unwrap();
    let next = json!({"message": "second", "conversation_id": conversation,
                      "system": "A long, stable system prompt.", "tools": [weather_tool()]});
    let (_, events) = gw.stream_chat(&gw.client(), &next).await;
    let usage = &events.last().unwrap()["usage"];
    assert_eq!(usage["cache_read_input_tokens"], 1000);
    assert!(usage.get("cache_write_input_tokens").is_none());
    let sent = fake.last_request().unwrap();
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(
        messages[1]["content"].as_array().unwrap().last().unwrap(),
        &point,
        "after the recalled history"
    );
    assert_eq!(cache_points(&sent), 3, "within Bedrock's four");

    // Turned off by the request: no cache point is sent.
    let off = json!({"message": "third", "system": "x", "prompt_cache": false});
    gw.stream_chat(&gw.client(), &off).await;
    assert_eq!(cache_points(&fake.last_request().unwrap()), 0);
}

#[tokio::test]
async fn an_operator_guardrail_is_sent_ends_the_chat_and_is_never_cached() {
    use nagare_gateway::pipeline::GuardrailRule;
    use nagare_gateway::provider::{Guardrail, GuardrailTrace, StreamProcessingMode};
    let fake = FakeBedrock::start().await.unwrap();
    let gw = Gateway::builder()
        .model(Arc::new(bedrock_provider(&fake.url())))
        .models("fake.guardrail", &[])
        .config(|c| {
            c.cache.enabled = true;
            c.pipeline.guardrails = vec![GuardrailRule {
                guardrail: Guardrail {
                    identifier: "gr-abc".into(),
                    version: "2".into(),
                    trace: GuardrailTrace::EnabledFull,
                    stream_processing_mode: StreamProcessingMode::Async,
                },
                routes: vec!["chat_stream".into()],
                tenants: Vec::new(),
            }];
        })
        .start()
        .await
        .unwrap();
    let ask = json!({"message": "something forbidden"});
    for _ in 0..2 {
        let (_, events) = gw.stream_chat(&gw.client(), &ask).await;
        let done = events.last().unwrap();
        assert_eq!(done["type"], "done");
        assert_eq!(done["stop_reason"], "guardrail_intervened");
    }
    assert_eq!(fake.calls(), 2, "an intervention is not cached");
    let sent = fake.last_request().unwrap();
    assert_eq!(
        sent["guardrailConfig"],
        json!({"guardrailIdentifier": "gr-abc", "guardrailVersion": "2",
               "trace": "enabled_full", "streamProcessingMode": "async"})
    );
    // The rule names one route: the unary route is not guarded.
    gw.post_chat(&gw.client(), &ask).await.unwrap();
    assert!(
        fake.last_request()
            .unwrap()
            .get("guardrailConfig")
            .is_none()
    );
}
