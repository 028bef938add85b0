#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Converse contract on the transports of `nagare serve` besides REST and SSE (those are in
//! `converse.rs`): a tool loop through the fake Bedrock over `/v1/ws` and over gRPC, a guardrail
//! that ends the chat the same way on every transport and is counted, and the embedded mock's
//! own tool and prompt-cache scenarios, priced in metrics.

use std::sync::Arc;

use nagare_cache::Price;
use nagare_gateway::pipeline::GuardrailRule;
use nagare_gateway::provider::{
    Guardrail, GuardrailTrace, MockProvider, MockSettings, StreamProcessingMode,
};
use nagare_proto::v1 as pb;
use nagare_proto::v1::chat_event::Event;
use nagare_proto::v1::chat_service_client::ChatServiceClient;
use nagare_tests::fake_converse::{TOOL_INPUT, weather_tool};
use nagare_tests::ws_client::{self, send, until_done};
use nagare_tests::{FakeBedrock, Gateway, bedrock_provider, dev_token};
use serde_json::{Value, json};
use tonic::Request;

fn guardrail() -> GuardrailRule {
    GuardrailRule {
        guardrail: Guardrail {
            identifier: "gr-test".into(),
            version: "3".into(),
            trace: GuardrailTrace::Enabled,
            stream_processing_mode: StreamProcessingMode::Sync,
        },
        routes: Vec::new(),
        tenants: vec!["alice".into()],
    }
}

/// A gateway on the mock, with prompt caching, prices and a guardrail for alice's tenant.
async fn mock_gateway() -> Gateway {
    Gateway::builder()
        .model(Arc::new(MockProvider::new(MockSettings::unpaced())))
        .models("mock", &[])
        .config(|c| {
            c.memory.enabled = true;
            c.metrics.enabled = true;
            c.pipeline.prompt_cache.enabled = true;
            c.pipeline.guardrails = vec![guardrail()];
            c.cache.prices.insert(
                "mock".into(),
                Price {
                    input_per_1k: 1.0,
                    output_per_1k: 2.0,
                    cache_read_per_1k: Some(0.1),
                    cache_write_per_1k: None,
                },
            );
        })
        .start()
        .await
        .unwrap()
}

/// A gateway on the fake Bedrock, answering with `model`, with a guardrail for alice's tenant.
async fn fake_gateway(fake: &FakeBedrock, model: &str) -> Gateway {
    Gateway::builder()
        .model(Arc::new(bedrock_provider(&fake.url())))
        .models(model, &[])
        .config(|c| {
            c.memory.enabled = true;
            c.metrics.enabled = true;
            c.pipeline.guardrails = vec![guardrail()];
        })
        .start()
        .await
        .unwrap()
}

fn ws_url(gw: &Gateway, sub: &str) -> String {
    format!("ws://{}/v1/ws?token={}", gw.addr, dev_token(sub, &["chat"]))
}

#[tokio::test]
async fn a_tool_loop_over_the_websocket_keeps_four_turns() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = fake_gateway(&fake, "fake.tools").await;
    let mut ws = ws_client::connect(&ws_url(&gw, "dave")).await;
    let ask = json!({"action": "chat", "request_id": "w1", "message": "Weather?", "tools": [weather_tool()]});
    send(&mut ws, ask).await;
    let frames = until_done(&mut ws, "w1").await;
    assert_eq!(
        frames.last().unwrap()["stop_reason"],
        "tool_use",
        "{frames:?}"
    );
    let call = frames.iter().find(|f| f["type"] == "tool_call").unwrap();
    assert_eq!(
        call["input"],
        serde_json::from_str::<Value>(TOOL_INPUT).unwrap()
    );
    let conversation = frames[0]["conversation_id"].as_str().unwrap().to_owned();
    send(
        &mut ws,
        json!({"action": "chat", "request_id": "w2", "conversation_id": conversation,
               "tools": [weather_tool()],
               "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "21 C"}]}),
    )
    .await;
    let frames = until_done(&mut ws, "w2").await;
    assert_eq!(ws_client::joined_text(&frames, "w2"), "The tool said: 21 C");
    let sent = fake.last_request().unwrap();
    assert_eq!(
        sent["messages"][1]["content"][1]["toolUse"]["toolUseId"],
        "tooluse_fake_1"
    );
    assert_eq!(
        sent["messages"][2]["content"][0]["toolResult"]["content"][0]["text"],
        "21 C"
    );
    let dave = nagare_tests::authed_client(&dev_token("dave", &["chat"]));
    let (_, page) = gw
        .get_json(&dave, &format!("/v1/conversations/{conversation}"))
        .await;
    assert_eq!(page["turns"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn the_mock_s_tool_loop_reads_its_prompt_cache_on_the_second_turn_priced() {
    let gw = mock_gateway().await;
    let mut ws = ws_client::connect(&ws_url(&gw, "alice")).await;
    send(
        &mut ws,
        json!({"action": "chat", "request_id": "a1", "system": "You are a weather bot.",
               "message": "Use get_weather for Paris", "tools": [weather_tool()]}),
    )
    .await;
    let frames = until_done(&mut ws, "a1").await;
    let call = frames.iter().find(|f| f["type"] == "tool_call").unwrap();
    assert_eq!(call["name"], "get_weather");
    assert_eq!(
        call["input"],
        json!({"city": "Paris"}),
        "required fields filled from the message"
    );
    let done = frames.last().unwrap();
    assert_eq!(done["stop_reason"], "tool_use");
    assert!(
        done["usage"]["cache_write_input_tokens"].as_u64().unwrap() > 0,
        "{done}"
    );
    let conversation = frames[0]["conversation_id"].as_str().unwrap().to_owned();

    send(
        &mut ws,
        json!({"action": "chat", "request_id": "a2", "conversation_id": conversation,
               "system": "You are a weather bot.", "tools": [weather_tool()],
               "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "18 C"}]}),
    )
    .await;
    let frames = until_done(&mut ws, "a2").await;
    let done = frames.last().unwrap();
    assert_eq!(done["type"], "done", "{frames:?}");
    assert_eq!(
        ws_client::joined_text(&frames, "a2"),
        "The tool returned: 18 C."
    );
    let read = done["usage"]["cache_read_input_tokens"].as_u64().unwrap();
    assert!(read > 0, "the first turn's prefix is read back: {done}");

    // Metrics count the cache tokens apart and price them apart.
    let metrics = gw.metrics().await;
    let line = |direction: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("nagare_tokens_total{")
                    && l.contains(&format!("direction=\"{direction}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
    };
    assert_eq!(line("cache_read"), Some(read as f64));
    let write = line("cache_write").unwrap();
    assert!(write > 0.0);
    // Priced apart: read at its own price, write at 1.25 times input.
    let (input, output) = (line("input").unwrap(), line("output").unwrap());
    let expected = (input * 1.0 + output * 2.0 + read as f64 * 0.1 + write * 1.25) / 1000.0;
    let cost: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("nagare_cost_usd_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!((cost - expected).abs() < 1e-9, "{cost} != {expected}");

    // A request may turn prompt caching off: no cache tokens at all.
    send(
        &mut ws,
        json!({"action": "chat", "request_id": "a3", "message": "plain", "prompt_cache": false}),
    )
    .await;
    let frames = until_done(&mut ws, "a3").await;
    let usage = &frames.last().unwrap()["usage"];
    assert!(
        usage.get("cache_read_input_tokens").is_none()
            && usage.get("cache_write_input_tokens").is_none(),
        "{usage}"
    );
}

#[tokio::test]
async fn a_guardrail_ends_the_chat_on_every_transport_and_is_counted() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = fake_gateway(&fake, "fake.guardrail").await;
    let blocked = json!({"message": "tell me the forbidden thing"});
    // REST, SSE and the WebSocket.
    let reply = gw.post_chat(&gw.client(), &blocked).await.unwrap();
    assert_eq!(reply.body["stop_reason"], "guardrail_intervened");
    let (_, events) = gw.stream_chat(&gw.client(), &blocked).await;
    assert_eq!(
        events.last().unwrap()["stop_reason"],
        "guardrail_intervened"
    );
    let mut ws = ws_client::connect(&ws_url(&gw, "alice")).await;
    send(
        &mut ws,
        json!({"action": "chat", "request_id": "g1", "message": "forbidden"}),
    )
    .await;
    let frames = until_done(&mut ws, "g1").await;
    assert_eq!(
        frames.last().unwrap()["stop_reason"],
        "guardrail_intervened"
    );
    // gRPC.
    let mut client = ChatServiceClient::connect(gw.grpc_url()).await.unwrap();
    let mut request = Request::new(pb::ChatRequest {
        message: "forbidden".into(),
        ..Default::default()
    });
    let token = format!("Bearer {}", dev_token("alice", &["chat"]));
    request
        .metadata_mut()
        .insert("authorization", token.parse().unwrap());
    let mut stream = client.converse_stream(request).await.unwrap().into_inner();
    let mut last = None;
    while let Some(message) = stream.message().await.unwrap() {
        last = message.event;
    }
    match last {
        Some(Event::Done(done)) => assert_eq!(done.stop_reason, "guardrail_intervened"),
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.calls(), 4);
    let sent = fake.requests();
    assert!(
        sent.iter()
            .all(|r| r["guardrailConfig"]["guardrailIdentifier"] == "gr-test")
    );
    // Another tenant has no guardrail: none is sent.
    let bob = nagare_tests::authed_client(&dev_token("bob", &["chat"]));
    gw.post_chat(&bob, &blocked).await.unwrap();
    assert!(
        fake.last_request()
            .unwrap()
            .get("guardrailConfig")
            .is_none()
    );

    let metrics = gw.metrics().await;
    let interventions: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("nagare_guardrail_interventions_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    // Bob's chat stopped so too (the fake always says so): the metric counts what Bedrock said.
    assert_eq!(interventions, 5.0, "{metrics}");
}

#[tokio::test]
async fn a_tool_loop_over_grpc_carries_blocks_both_ways() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = fake_gateway(&fake, "fake.tools").await;
    let mut client = ChatServiceClient::connect(gw.grpc_url()).await.unwrap();
    let authed = |message: pb::ChatRequest| {
        let mut request = Request::new(message);
        let token = format!("Bearer {}", dev_token("carol", &["chat"]));
        request
            .metadata_mut()
            .insert("authorization", token.parse().unwrap());
        request
    };
    let tool = pb::Tool {
        name: "get_weather".into(),
        description: None,
        input_schema_json: weather_tool()["input_schema"].to_string(),
        strict: None,
    };
    let first = pb::ChatRequest {
        message: "Weather in Kyoto?".into(),
        tools: vec![tool.clone()],
        ..Default::default()
    };
    let mut stream = client
        .converse_stream(authed(first))
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        events.extend(message.event);
    }
    let Some(Event::Start(start)) = events.first() else {
        panic!("{events:?}")
    };
    let conversation = start.conversation_id.clone().unwrap();
    let call = events
        .iter()
        .find_map(|e| match e {
            Event::ToolCall(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap();
    let expected: Value = serde_json::from_str(TOOL_INPUT).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&call.input_json).unwrap(),
        expected
    );
    let fragments: String = events
        .iter()
        .filter_map(|e| match e {
            Event::ToolCallDelta(d) => Some(d.input.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(fragments, TOOL_INPUT);

    let result = pb::ContentBlock {
        block: Some(pb::content_block::Block::ToolResult(pb::ToolResult {
            tool_use_id: call.id.clone(),
            content: vec![pb::ToolResultContent {
                content: Some(pb::tool_result_content::Content::Json(r#"{"c":12}"#.into())),
            }],
            status: Some("success".into()),
        })),
    };
    let second = pb::ChatRequest {
        conversation_id: Some(conversation),
        content: vec![result],
        tools: vec![tool],
        ..Default::default()
    };
    let reply = client.converse(authed(second)).await.unwrap().into_inner();
    assert_eq!(reply.message.unwrap().content, r#"The tool said: {"c":12}"#);
    let sent = fake.last_request().unwrap();
    assert_eq!(sent["messages"].as_array().unwrap().len(), 3);
    assert_eq!(
        sent["messages"][2]["content"][0]["toolResult"]["status"],
        "success"
    );

    // A tool result's JSON that does not parse names its field.
    let bad = pb::ChatRequest {
        content: vec![pb::ContentBlock {
            block: Some(pb::content_block::Block::ToolUse(pb::ToolUse {
                id: "t".into(),
                name: "n".into(),
                input_json: "{".into(),
            })),
        }],
        ..Default::default()
    };
    let status = client.converse(authed(bad)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("content[0].input_json"),
        "{}",
        status.message()
    );
}
