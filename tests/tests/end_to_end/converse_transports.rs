#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Converse contract on every transport of `nagare serve`, on the embedded mock: a tool
//! loop over `/v1/ws` and over gRPC, prompt caching priced on the second turn, and a guardrail
//! that ends the chat the same way everywhere and is counted. The fake-Bedrock side of the same
//! features is in `converse.rs`.

use std::sync::Arc;

use nagare_cache::Price;
use nagare_gateway::pipeline::GuardrailRule;
use nagare_gateway::provider::{
    Guardrail, GuardrailTrace, MockProvider, MockSettings, StreamProcessingMode,
};
use nagare_proto::v1 as pb;
use nagare_proto::v1::chat_event::Event;
use nagare_proto::v1::chat_service_client::ChatServiceClient;
use nagare_tests::ws_client::{self, send, until_done};
use nagare_tests::{Gateway, dev_token};
use serde_json::{Value, json};
use tonic::Request;

fn weather_tool() -> Value {
    json!({"name": "get_weather",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}})
}

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

async fn gateway() -> Gateway {
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

fn ws_url(gw: &Gateway, sub: &str) -> String {
    format!("ws://{}/v1/ws?token={}", gw.addr, dev_token(sub, &["chat"]))
}

#[tokio::test]
async fn a_tool_loop_over_the_websocket_with_cache_reads_on_the_second_turn() {
    let gw = gateway().await;
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
    assert!(line("cache_write").unwrap() > 0.0);

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
    let gw = gateway().await;
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
    // Another tenant has no guardrail: the same words are answered.
    let bob = nagare_tests::authed_client(&dev_token("bob", &["chat"]));
    let reply = gw.post_chat(&bob, &blocked).await.unwrap();
    assert_eq!(reply.body["stop_reason"], "end_turn");

    let metrics = gw.metrics().await;
    let interventions: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("nagare_guardrail_interventions_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(interventions, 4.0, "{metrics}");
}

#[tokio::test]
async fn a_tool_loop_over_grpc_carries_blocks_both_ways() {
    let gw = gateway().await;
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
        message: "get_weather in Kyoto".into(),
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
    assert_eq!(
        serde_json::from_str::<Value>(&call.input_json).unwrap(),
        json!({"city": "Kyoto"})
    );
    let fragments: String = events
        .iter()
        .filter_map(|e| match e {
            Event::ToolCallDelta(d) => Some(d.input.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(fragments, call.input_json);

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
    assert_eq!(
        reply.message.unwrap().content,
        r#"The tool returned: {"c":12}."#
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
