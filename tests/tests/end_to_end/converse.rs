#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Converse contract through a running gateway and the real Bedrock SDK against the fake
//! Bedrock: tool loops kept in memory, parallel calls, reasoning with its signature, structured
//! output, the response cache replaying a tool call, and every bad input of the contract. The
//! fake records each request, so the tests assert the exact Converse request Nagare sent.

use std::sync::Arc;

use nagare_tests::fake_converse::{REDACTED, SIGNATURE, TOOL_INPUT, time_tool, weather_tool};
use nagare_tests::{FakeBedrock, Gateway, bedrock_provider};
use serde_json::{Value, json};

const FAKES: &[&str] = &[
    "fake.tools",
    "fake.parallel-tools",
    "fake.reasoning",
    "fake.redacted",
    "fake.bad-tool-json",
    "fake.json",
    "anthropic.claude-3-haiku-20240307-v1:0",
];

async fn gateway(fake: &FakeBedrock, cache: bool) -> Gateway {
    Gateway::builder()
        .model(Arc::new(bedrock_provider(&fake.url())))
        .models("fake.tools", FAKES)
        .config(|c| {
            c.memory.enabled = true;
            c.cache.enabled = cache;
        })
        .start()
        .await
        .unwrap()
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

#[tokio::test]
async fn a_tool_loop_streams_calls_and_keeps_four_turns_in_order() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake, false).await;
    let alice = gw.client();

    // Turn 1: the model answers with text, then a tool call whose input arrives in fragments.
    let (status, events) = gw
        .stream_chat(
            &alice,
            &json!({"message": "Weather in Paris?", "tools": [weather_tool()],
                    "tool_choice": {"type": "auto"}}),
        )
        .await;
    assert_eq!(status, 200);
    let k = kinds(&events);
    assert_eq!(k[0], "start");
    assert_eq!(k.last(), Some(&"done"), "{events:?}");
    let text: String = of_type(&events, "delta")
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Let me check.");
    assert!(
        of_type(&events, "delta")
            .iter()
            .all(|e| e.get("index").is_none()),
        "block 0"
    );
    let start = of_type(&events, "tool_call_start");
    assert_eq!(start.len(), 1);
    assert_eq!(
        (start[0]["index"].clone(), start[0]["name"].clone()),
        (json!(1), json!("get_weather"))
    );
    let fragments: String = of_type(&events, "tool_call_delta")
        .iter()
        .map(|e| e["input"].as_str().unwrap())
        .collect();
    assert_eq!(fragments, TOOL_INPUT);
    let call = of_type(&events, "tool_call");
    assert_eq!(call.len(), 1);
    let expected: Value = serde_json::from_str(TOOL_INPUT).unwrap();
    assert_eq!(call[0]["input"], expected);
    assert_eq!(call[0]["input"]["note"], "café ☕");
    assert_eq!(call[0]["id"], "tooluse_fake_1");
    let done = events.last().unwrap();
    assert_eq!(done["stop_reason"], "tool_use");
    let conversation = events[0]["conversation_id"].as_str().unwrap().to_owned();

    // What Nagare sent Bedrock: the tool's spec and the choice.
    let sent = fake.last_request().unwrap();
    assert_eq!(
        sent["toolConfig"]["tools"][0]["toolSpec"]["name"],
        "get_weather"
    );
    assert_eq!(
        sent["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["required"],
        json!(["city"])
    );
    assert_eq!(sent["toolConfig"]["toolChoice"], json!({"auto": {}}));

    // Turn 2: only the tool result; the gateway supplies the rest from memory.
    let answer = gw
        .post_chat(
            &alice,
            &json!({"conversation_id": conversation, "tools": [weather_tool()],
                    "content": [{"type": "tool_result", "tool_use_id": "tooluse_fake_1",
                                 "content": [{"json": {"celsius": 21}}]}]}),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.body["message"]["content"],
        "The tool said: {\"celsius\":21}"
    );
    assert!(
        answer.body["message"].get("blocks").is_none(),
        "a text answer has no blocks"
    );
    let sent = fake.last_request().unwrap();
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[1]["content"][0]["text"], "Let me check.");
    assert_eq!(
        messages[1]["content"][1]["toolUse"]["toolUseId"],
        "tooluse_fake_1"
    );
    assert_eq!(messages[1]["content"][1]["toolUse"]["input"], expected);
    assert_eq!(
        messages[2]["content"][0]["toolResult"]["toolUseId"],
        "tooluse_fake_1"
    );
    assert_eq!(
        messages[2]["content"][0]["toolResult"]["content"][0]["json"]["celsius"],
        21
    );

    // History holds the four turns, in order, with their blocks.
    let (status, page) = gw
        .get_json(&alice, &format!("/v1/conversations/{conversation}"))
        .await;
    assert_eq!(status, 200);
    let turns = page["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 4);
    assert_eq!(turns[0]["content"], "Weather in Paris?");
    assert_eq!(turns[1]["blocks"][1]["type"], "tool_use");
    assert_eq!(turns[1]["blocks"][1]["input"], expected);
    assert_eq!(turns[2]["blocks"][0]["type"], "tool_result");
    assert_eq!(turns[3]["content"], "The tool said: {\"celsius\":21}");

    // A result for a call that is not open is refused, and nothing is written.
    let wrong = gw
        .post_chat(
            &alice,
            &json!({"conversation_id": conversation,
                    "content": [{"type": "tool_result", "tool_use_id": "tooluse_nope", "content": "x"}]}),
        )
        .await
        .unwrap();
    assert_eq!(wrong.status, 400);
    let why = wrong.body["error"]["message"].as_str().unwrap();
    assert!(why.contains("not an open tool call"), "{why}");
    let (_, page) = gw
        .get_json(&alice, &format!("/v1/conversations/{conversation}"))
        .await;
    assert_eq!(page["turns"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn parallel_calls_stay_apart_with_interleaved_fragments() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake, false).await;
    let (_, events) = gw
        .stream_chat(
            &gw.client(),
            &json!({"message": "Weather and time?", "model": "fake.parallel-tools",
                    "tools": [weather_tool(), time_tool()]}),
        )
        .await;
    let deltas: Vec<u64> = of_type(&events, "tool_call_delta")
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(deltas, [0, 1, 0, 1, 0], "fragments arrive interleaved");
    let calls = of_type(&events, "tool_call");
    assert_eq!(calls.len(), 2);
    // Block 1 ended first.
    assert_eq!(calls[0]["index"], 1);
    assert_eq!(calls[0]["input"], json!({"zone": "Asia/Tokyo"}));
    assert_eq!(calls[1]["index"], 0);
    assert_eq!(calls[1]["input"], json!({"city": "Paris"}));

    // The unary reply lists both calls as blocks, in index order.
    let reply = gw
        .post_chat(
            &gw.client(),
            &json!({"message": "Again?", "model": "fake.parallel-tools",
                    "tools": [weather_tool(), time_tool()]}),
        )
        .await
        .unwrap();
    let blocks = reply.body["message"]["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0]["name"], "get_weather");
    assert_eq!(blocks[1]["name"], "get_time");
    assert_eq!(reply.body["stop_reason"], "tool_use");
}

#[tokio::test]
async fn a_reasoning_loop_sends_the_signature_back() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake, false).await;
    let alice = gw.client();
    let (_, events) = gw
        .stream_chat(
            &alice,
            &json!({"message": "Think, then check the weather", "model": "fake.reasoning",
                    "tools": [weather_tool()], "reasoning": {"budget_tokens": 2048}}),
        )
        .await;
    let reasoning = of_type(&events, "reasoning");
    let text: String = reasoning
        .iter()
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert_eq!(text, "Let me think about it.");
    assert_eq!(reasoning.last().unwrap()["signature"], SIGNATURE);
    assert_eq!(of_type(&events, "tool_call")[0]["index"], 1);
    // Reasoning on a model the gateway does not know how to ask: no thinking field is sent.
    let sent = fake.last_request().unwrap();
    assert!(sent.get("additionalModelRequestFields").is_none(), "{sent}");

    let conversation = events[0]["conversation_id"].as_str().unwrap();
    let reply = gw
        .post_chat(
            &alice,
            &json!({"conversation_id": conversation, "model": "fake.reasoning",
                    "tools": [weather_tool()], "reasoning": {"budget_tokens": 2048},
                    "content": [{"type": "tool_result", "tool_use_id": "tooluse_fake_r", "content": "sunny"}]}),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let sent = fake.last_request().unwrap();
    let answer = &sent["messages"][1]["content"];
    assert_eq!(
        answer[0]["reasoningContent"]["reasoningText"]["text"],
        "Let me think about it."
    );
    assert_eq!(
        answer[0]["reasoningContent"]["reasoningText"]["signature"],
        SIGNATURE
    );
    assert_eq!(answer[1]["toolUse"]["toolUseId"], "tooluse_fake_r");
    let blocks = reply.body["message"]["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "reasoning");
    assert_eq!(blocks[1]["text"], "Done thinking.");
}

#[tokio::test]
async fn claude_gets_its_thinking_field_and_redacted_reasoning_goes_back_as_it_came() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake, false).await;
    let claude = "anthropic.claude-3-haiku-20240307-v1:0";
    let reply = gw
        .post_chat(
            &gw.client(),
            &json!({"message": "hi", "model": claude, "reasoning": {"effort": "medium"},
                    "inference": {"max_tokens": 8000}}),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let sent = fake.last_request().unwrap();
    assert_eq!(
        sent["additionalModelRequestFields"],
        json!({"thinking": {"type": "enabled", "budget_tokens": 4096}})
    );

    let (_, events) = gw
        .stream_chat(
            &gw.client(),
            &json!({"message": "secret", "model": "fake.redacted"}),
        )
        .await;
    assert_eq!(of_type(&events, "reasoning")[0]["redacted"], REDACTED);
    let conversation = events[0]["conversation_id"].as_str().unwrap();
    gw.post_chat(
        &gw.client(),
        &json!({"message": "more", "model": "fake.redacted", "conversation_id": conversation}),
    )
    .await
    .unwrap();
    let sent = fake.last_request().unwrap();
    assert_eq!(
        sent["messages"][1]["content"][0]["reasoningContent"]["redactedContent"],
        REDACTED
    );
}

#[tokio::test]
async fn structured_output_and_the_stateless_form() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake, false).await;
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]});
    let reply = gw
        .post_chat(
            &gw.client(),
            &json!({"message": "The answer?", "model": "fake.json",
                    "response_format": {"type": "json_schema", "name": "reply", "schema": schema}}),
        )
        .await
        .unwrap();
    let answer: Value =
        serde_json::from_str(reply.body["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(answer["answer"], "42");
    let sent = fake.last_request().unwrap();
    let format = &sent["outputConfig"]["textFormat"];
    assert_eq!(format["type"], "json_schema");
    let sent_schema: Value = serde_json::from_str(
        format["structure"]["jsonSchema"]["schema"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(sent_schema, schema);
    assert_eq!(format["structure"]["jsonSchema"]["name"], "reply");

    // The client keeps the history: all of it goes to the model, nothing is remembered.
    let reply = gw
        .post_chat(
            &gw.client(),
            &json!({"model": "fake.tools", "tools": [weather_tool()], "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Oslo"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "cold"}]}
            ]}),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.get("conversation_id").is_none());
    assert_eq!(reply.body["message"]["content"], "The tool said: cold");
    let sent = fake.last_request().unwrap();
    assert_eq!(sent["messages"].as_array().unwrap().len(), 3);
    assert_eq!(
        sent["messages"][1]["content"][0]["toolUse"]["input"]["city"],
        "Oslo"
    );
}

#[tokio::test]
async fn tool_input_that_is_not_json_fails_the_chat_and_records_nothing() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake, false).await;
    let (_, events) = gw
        .stream_chat(
            &gw.client(),
            &json!({"message": "go", "model": "fake.bad-tool-json", "tools": [weather_tool()]}),
        )
        .await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "error");
    assert_eq!(last["code"], "upstream_error");
    assert_eq!(last["retryable"], false);
    let conversation = events[0]["conversation_id"].as_str().unwrap();
    let (status, _) = gw
        .get_json(&gw.client(), &format!("/v1/conversations/{conversation}"))
        .await;
    assert_eq!(status, 404, "nothing was recorded");
}

#[tokio::test]
async fn a_cache_hit_replays_a_tool_call_exactly() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake, true).await;
    let ask = json!({"message": "Weather in Paris?", "tools": [weather_tool()]});
    let (_, first) = gw.stream_chat(&gw.client(), &ask).await;
    let (_, second) = gw.stream_chat(&gw.client(), &ask).await;
    assert_eq!(fake.calls(), 1, "the second answer came from the cache");
    assert_eq!(second[0]["cached"], true);
    let strip = |events: &[Value]| -> Vec<Value> {
        events[1..events.len() - 1]
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e.as_object_mut().unwrap().remove("request_id");
                e
            })
            .collect()
    };
    assert_eq!(
        strip(&first),
        strip(&second),
        "the same events, in the same order"
    );
    assert_eq!(second.last().unwrap()["stop_reason"], "tool_use");

    // Another tool list is another question.
    let other = json!({"message": "Weather in Paris?", "tools": [weather_tool(), time_tool()]});
    gw.stream_chat(&gw.client(), &other).await;
    assert_eq!(fake.calls(), 2);
    let reordered = json!({"message": "Weather in Paris?", "tools": [time_tool(), weather_tool()]});
    gw.stream_chat(&gw.client(), &reordered).await;
    assert_eq!(fake.calls(), 3, "tool order is part of the key");
}

#[tokio::test]
async fn bad_contract_input_is_refused_before_the_model_is_called() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = Gateway::builder()
        .model(Arc::new(bedrock_provider(&fake.url())))
        .models("fake.tools", FAKES)
        .config(|c| {
            c.memory.enabled = true;
            c.pipeline.limits.max_tools = 2;
        })
        .start()
        .await
        .unwrap();
    let schema = json!({"type": "object"});
    let claude = "anthropic.claude-3-haiku-20240307-v1:0";
    let cases = [
        (
            json!({"message": "x", "tools": [{"name": "has space", "input_schema": schema}]}),
            "tools[0].name",
        ),
        (
            json!({"message": "x", "tools": [{"name": &"x".repeat(65), "input_schema": schema}]}),
            "tools[0].name",
        ),
        (
            json!({"message": "x", "tools": [{"name": "a", "input_schema": schema}, {"name": "a", "input_schema": schema}]}),
            "named twice",
        ),
        (
            json!({"message": "x", "tools": [{"name": "a", "input_schema": "object"}]}),
            "input_schema",
        ),
        (
            json!({"message": "x", "tools": [{"name": "a", "input_schema": schema}], "tool_choice": {"type": "tool", "name": "b"}}),
            "tool_choice",
        ),
        (
            json!({"message": "x", "tools": [
            {"name": "a", "input_schema": schema}, {"name": "b", "input_schema": schema}, {"name": "c", "input_schema": schema}]}),
            "at most 2",
        ),
        (
            json!({"message": "x", "model": claude, "reasoning": {"budget_tokens": 2048}, "inference": {"temperature": 0.5}}),
            "temperature",
        ),
        (
            json!({"message": "x", "model": claude, "reasoning": {"budget_tokens": 2048}, "inference": {"max_tokens": 1024}}),
            "max_tokens",
        ),
        (
            json!({"content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}]}),
            "not an open tool call",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "conversation_id": "c1"}),
            "conversation_id",
        ),
        (json!({"content": []}), "content"),
        (
            json!({"message": "x", "response_format": {"type": "json_schema", "schema": []}}),
            "schema",
        ),
    ];
    for (body, field) in cases {
        let answer = gw.post_chat(&gw.client(), &body).await.unwrap();
        assert_eq!(answer.status, 400, "{body}: {}", answer.body);
        assert_eq!(answer.body["error"]["code"], "invalid_request");
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(field),
            "{body}: {message:?} should name {field}"
        );
    }
    assert_eq!(fake.calls(), 0);
}
