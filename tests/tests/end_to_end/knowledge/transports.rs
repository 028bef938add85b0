#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A knowledge-base chat's sources and citations on every transport of `nagare serve`: unary
//! REST, WebSocket, gRPC streamed and unary, and a task.

use std::time::Duration;

use nagare_proto::v1 as pb;
use nagare_proto::v1::chat_event::Event;
use nagare_proto::v1::chat_service_client::ChatServiceClient;
use nagare_tests::dev_token;
use nagare_tests::ws_client::{self, send, until_done};
use serde_json::{Value, json};
use tonic::Request;

use super::chat::{CALLBACK_QUESTION, assert_cited_answer, docs_gateway, documents};

#[tokio::test]
async fn every_transport_carries_the_sources_and_the_citations() {
    let (gw, alice) = docs_gateway().await;
    let kb = json!({"name": "docs", "results": 3});

    // Unary REST.
    let answer = gw
        .post_chat(
            &alice,
            &json!({"message": CALLBACK_QUESTION, "knowledge_base": kb, "cache": "bypass"}),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let unary_sources = answer.body["sources"].as_array().unwrap().clone();
    assert!(documents(&unary_sources).iter().any(|d| d == "tasks"));
    assert_eq!(answer.body["citations"], json!([1]));
    assert!(
        answer.body["message"]["content"]
            .as_str()
            .unwrap()
            .contains("[1]")
    );

    // WebSocket.
    let url = format!(
        "ws://{}/v1/ws?token={}",
        gw.addr,
        dev_token("alice", &["chat"])
    );
    let mut ws = ws_client::connect(&url).await;
    send(
        &mut ws,
        json!({"action": "chat", "request_id": "w1", "message": CALLBACK_QUESTION,
               "knowledge_base": kb, "cache": "bypass"}),
    )
    .await;
    let frames = until_done(&mut ws, "w1").await;
    assert_eq!(assert_cited_answer(&frames, "tasks"), unary_sources);

    // gRPC, streamed and unary.
    let mut client = ChatServiceClient::connect(gw.grpc_url()).await.unwrap();
    let request = || {
        let mut request = Request::new(pb::ChatRequest {
            message: CALLBACK_QUESTION.into(),
            cache: pb::CacheMode::Bypass as i32,
            knowledge_base: Some(pb::KnowledgeBase {
                name: "docs".into(),
                results: Some(3),
                filter_json: None,
                scope: pb::KnowledgeScope::Tenant as i32,
            }),
            ..Default::default()
        });
        let token = format!("Bearer {}", dev_token("alice", &["chat"]));
        request
            .metadata_mut()
            .insert("authorization", token.parse().unwrap());
        request
    };
    let mut stream = client
        .converse_stream(request())
        .await
        .unwrap()
        .into_inner();
    let mut order = Vec::new();
    let (mut grpc_sources, mut citations) = (Vec::new(), Vec::new());
    while let Some(message) = stream.message().await.unwrap() {
        match message.event.unwrap() {
            Event::Start(_) => order.push("start"),
            Event::Sources(s) => {
                order.push("sources");
                grpc_sources.extend(s.sources);
            }
            Event::Delta(_) => order.push("delta"),
            Event::Done(done) => {
                order.push("done");
                citations = done.citations;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(&order[..3], ["start", "sources", "delta"], "{order:?}");
    assert_eq!(citations, [1]);
    let ids: Vec<&str> = grpc_sources.iter().map(|s| s.id.as_str()).collect();
    let unary_ids: Vec<&str> = unary_sources
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, unary_ids);
    let reply = client.converse(request()).await.unwrap().into_inner();
    assert_eq!(reply.citations, [1]);
    assert_eq!(reply.sources.len(), unary_sources.len());
    assert_eq!(reply.sources[0].title, unary_sources[0]["title"]);

    // A task.
    let id = gw
        .submit_task(
            &alice,
            &json!({"message": CALLBACK_QUESTION, "knowledge_base": kb, "cache": "bypass"}),
        )
        .await;
    let mut task = Value::Null;
    for _ in 0..600 {
        task = gw.get_json(&alice, &format!("/v1/tasks/{id}")).await.1;
        if task["status"] == "succeeded" || task["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["result"]["sources"], json!(unary_sources));
    assert_eq!(task["result"]["citations"], json!([1]));
}
