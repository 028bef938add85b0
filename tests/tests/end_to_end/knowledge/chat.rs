#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Chats that answer from a knowledge base of the embedded store, with Nagare's own `docs/` as the
//! corpus: `sources` before the first delta and `citations` in `done`, a follow-up retrieved with
//! its conversation, sources kept in history, the cache keyed on the passages, the passages
//! reaching Bedrock, defaults, and every bad input. The helpers serve `transports` too.

use std::sync::Arc;

use nagare_gateway::provider::{MockProvider, MockSettings};
use nagare_tests::{
    FakeBedrock, Gateway, authed_client, bedrock_provider, dev_token, tenant_token,
};
use serde_json::{Value, json};

use super::{post, put, put_docs};

pub(super) const CALLBACK_QUESTION: &str = "How do I verify the signature of a task callback?";

/// A gateway on the mock with memory, the cache and tasks on, and alice's knowledge base `docs`
/// holding `docs/`.
pub(super) async fn docs_gateway() -> (Gateway, reqwest::Client) {
    docs_gateway_with(|_| {}).await
}

/// [`docs_gateway`], its config changed by `change`.
async fn docs_gateway_with(
    change: impl FnOnce(&mut nagare_gateway::config::Config) + Send + 'static,
) -> (Gateway, reqwest::Client) {
    let gw = Gateway::builder()
        .model(Arc::new(MockProvider::new(MockSettings::unpaced())))
        .models("mock", &[])
        .config(|c| {
            c.memory.enabled = true;
            c.cache.enabled = true;
            c.tasks.enabled = true;
            change(c);
        })
        .start()
        .await
        .unwrap();
    let alice = authed_client(&dev_token("alice", &["chat"]));
    load_docs(&gw, &alice).await;
    (gw, alice)
}

async fn load_docs(gw: &Gateway, client: &reqwest::Client) {
    let (status, created) = post(gw, client, "/v1/knowledge-bases", json!({"name": "docs"})).await;
    assert_eq!(status, 201, "{created}");
    put_docs(gw, client).await;
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn sources(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["type"] == "sources")
        .flat_map(|e| e["sources"].as_array().unwrap().clone())
        .collect()
}

fn text(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "delta")
        .map(|e| e["text"].as_str().unwrap())
        .collect()
}

/// The documents of `sources`, in order (a passage id is `{document}#{n}`).
pub(super) fn documents(sources: &[Value]) -> Vec<String> {
    sources
        .iter()
        .map(|s| {
            s["id"]
                .as_str()
                .unwrap()
                .split('#')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Checks one streamed knowledge-base answer: `start`, its sources, then the answer, then `done`
/// citing sources that exist; `page` among the first three. Its sources.
pub(super) fn assert_cited_answer(events: &[Value], page: &str) -> Vec<Value> {
    let kinds = kinds(events);
    assert_eq!(kinds[0], "start", "{kinds:?}");
    assert_eq!(kinds[1], "sources", "{kinds:?}");
    let last_sources = kinds.iter().rposition(|k| *k == "sources").unwrap();
    let first_delta = kinds.iter().position(|k| *k == "delta").unwrap();
    assert!(last_sources < first_delta, "{kinds:?}");
    assert_eq!(*kinds.last().unwrap(), "done", "{kinds:?}");
    let sources = sources(events);
    let numbers: Vec<u64> = sources.iter().map(|s| s["n"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (1..=sources.len() as u64).collect::<Vec<_>>());
    assert!(
        documents(&sources).iter().take(3).any(|d| d == page),
        "{page} not in the top 3 of {:?}",
        documents(&sources)
    );
    for source in &sources {
        assert!(!source["snippet"].as_str().unwrap().is_empty(), "{source}");
        assert!(source["uri"].as_str().unwrap().starts_with("docs/"));
    }
    let answer = text(events);
    let first = &sources[0];
    assert_eq!(
        answer.split(" [1]").next().unwrap(),
        format!("According to {}", first["title"].as_str().unwrap()),
        "the mock answers from passage 1 and cites it: {answer}"
    );
    let done = events.last().unwrap();
    let citations = done["citations"].as_array().unwrap();
    assert_eq!(citations, &[json!(1)], "{done}");
    sources
}

#[tokio::test]
async fn a_chat_gets_its_sources_before_the_answer_and_a_follow_up_is_retrieved_with_its_conversation()
 {
    let (gw, alice) = docs_gateway().await;
    let ask =
        json!({"message": CALLBACK_QUESTION, "knowledge_base": {"name": "docs", "results": 4}});
    let (status, events) = gw.stream_chat(&alice, &ask).await;
    assert_eq!(status, 200, "{events:?}");
    let first = assert_cited_answer(&events, "tasks");
    assert_eq!(first.len(), 4);
    let conversation = events[0]["conversation_id"].as_str().unwrap().to_owned();

    // A follow-up that alone finds something else is retrieved with the question before it.
    let follow_up = "And what if it does not match?";
    let (_, alone) = post(
        &gw,
        &alice,
        "/v1/knowledge-bases/docs/retrieve",
        json!({"question": follow_up, "results": 3}),
    )
    .await;
    let alone: Vec<String> = documents(alone["passages"].as_array().unwrap())
        .into_iter()
        .collect();
    assert_ne!(
        alone.first().map(String::as_str),
        Some("tasks"),
        "{alone:?}"
    );
    let (_, events) = gw
        .stream_chat(
            &alice,
            &json!({"message": follow_up, "conversation_id": conversation,
                    "knowledge_base": {"name": "docs", "results": 3}}),
        )
        .await;
    let second = assert_cited_answer(&events, "tasks");
    assert_eq!(documents(&second)[0], "tasks", "{second:?}");

    // History keeps each answer's sources, as they were sent.
    let (_, page) = gw
        .get_json(&alice, &format!("/v1/conversations/{conversation}"))
        .await;
    let turns = page["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 4);
    assert_eq!(turns[1]["sources"], json!(first));
    assert_eq!(turns[3]["sources"], json!(second));
    assert!(turns[0].get("sources").is_none(), "a question has none");

    // A retried request id replays the stored answer with its sources.
    let request_id = events[0]["request_id"].as_str().unwrap();
    let (_, replayed) = gw
        .stream_chat(
            &alice,
            &json!({"message": follow_up, "conversation_id": conversation, "request_id": request_id,
                    "knowledge_base": {"name": "docs", "results": 3}}),
        )
        .await;
    assert_eq!(sources(&replayed), second);
    assert_eq!(turns.len(), 4);
}

#[tokio::test]
async fn the_cache_answers_a_repeated_question_until_a_document_it_was_built_on_changes() {
    let (gw, alice) = docs_gateway().await;
    let ask =
        json!({"message": CALLBACK_QUESTION, "knowledge_base": {"name": "docs", "results": 3}});
    let (_, fresh) = gw.stream_chat(&alice, &ask).await;
    let fresh_sources = assert_cited_answer(&fresh, "tasks");
    assert_eq!(fresh[0]["cached"], false);
    let (_, hit) = gw.stream_chat(&alice, &ask).await;
    assert_eq!(hit[0]["cached"], true, "{hit:?}");
    assert_eq!(sources(&hit), fresh_sources, "a hit shows the same sources");
    assert_eq!(hit.last().unwrap()["citations"], json!([1]));

    // The same question without the knowledge base is another request.
    let (_, plain) = gw
        .stream_chat(&alice, &json!({"message": CALLBACK_QUESTION}))
        .await;
    assert_eq!(plain[0]["cached"], false);
    assert!(sources(&plain).is_empty());
    assert!(plain.last().unwrap().get("citations").is_none());

    // Re-putting a cited document with other text invalidates the answer built on it.
    let cited = &fresh_sources[0];
    let document = cited["id"].as_str().unwrap().split('#').next().unwrap();
    let original = super::nagare_page(document);
    let changed = original.replace("signature", "signature (HMAC-SHA256)");
    let path = format!("/v1/knowledge-bases/docs/documents/{document}?uri=docs/{document}.md");
    assert_eq!(
        put(&gw, &alice, &path, "text/markdown", changed).await.0,
        200
    );
    let (_, after) = gw.stream_chat(&alice, &ask).await;
    assert_eq!(after[0]["cached"], false, "{after:?}");
    assert_cited_answer(&after, "tasks");
    // Putting back the same text makes the first answer current again.
    assert_eq!(
        put(&gw, &alice, &path, "text/markdown", original).await.0,
        200
    );
    let (_, again) = gw.stream_chat(&alice, &ask).await;
    assert_eq!(again[0]["cached"], true);
}

#[tokio::test]
async fn filters_narrow_the_sources_and_nothing_found_is_said_so() {
    let (gw, alice) = docs_gateway().await;
    let (_, events) = gw
        .stream_chat(
            &alice,
            &json!({"message": "How do deadlines work?",
                    "knowledge_base": {"name": "docs", "results": 5,
                                       "filter": {"document_id": ["grpc", "websocket"]}}}),
        )
        .await;
    let found = documents(&sources(&events));
    assert!(!found.is_empty());
    assert!(
        found.iter().all(|d| d == "grpc" || d == "websocket"),
        "{found:?}"
    );

    let (status, events) = gw
        .stream_chat(
            &alice,
            &json!({"message": "xyzzy plugh qwertyuiop",
                    "knowledge_base": {"name": "docs"}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(kinds(&events)[1], "delta", "no sources: no sources event");
    assert_eq!(
        text(&events),
        "I found nothing about that in the knowledge base."
    );
    assert_eq!(events.last().unwrap()["citations"], json!([]));
}

#[tokio::test]
async fn bad_knowledge_base_requests_get_their_error_row_and_other_tenants_see_nothing() {
    let (gw, alice) = docs_gateway().await;
    let chat = |kb: Value| json!({"message": "How do deadlines work?", "knowledge_base": kb});
    let cases = [
        (json!({"name": "nope"}), 404, "no knowledge base nope"),
        (json!({"name": "../docs"}), 400, "knowledge_base.name"),
        (
            json!({"name": "docs", "results": 0}),
            400,
            "knowledge_base.results",
        ),
        (
            json!({"name": "docs", "results": 21}),
            400,
            "knowledge_base.results",
        ),
        (
            json!({"name": "docs", "filter": {}}),
            400,
            "knowledge_base.filter",
        ),
        (
            json!({"name": "docs", "filter": {"a": {"b": 1}}}),
            400,
            "knowledge_base.filter.a",
        ),
        (
            json!({"name": "docs", "filter": {"year": 2026}}),
            400,
            "document_id only",
        ),
        (json!({"name": "docs", "top_k": 3}), 400, "top_k"),
        (json!("docs"), 400, "knowledge_base"),
    ];
    for (kb, status, says) in cases {
        let answer = gw.post_chat(&alice, &chat(kb.clone())).await.unwrap();
        assert_eq!(answer.status, status, "{kb}: {}", answer.body);
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{kb}: {message}");
    }
    // FTS5 syntax in a question is text.
    for hostile in [
        r#"say "hi"#,
        "NEAR(a b)",
        "dead*",
        "-x AND y",
        "text:deadline",
    ] {
        let answer = gw
            .post_chat(
                &alice,
                &json!({"message": hostile, "knowledge_base": {"name": "docs"}}),
            )
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{hostile}: {}", answer.body);
    }
    // Another tenant naming alice's knowledge base gets what an unknown one gets, everywhere.
    let bob = authed_client(&tenant_token("bob", Some("globex"), &["chat"]));
    let answer = gw
        .post_chat(&bob, &chat(json!({"name": "docs"})))
        .await
        .unwrap();
    assert_eq!(answer.status, 404, "{}", answer.body);
    assert_eq!(answer.body["error"]["message"], "no knowledge base docs");
    let (status, events) = gw.stream_chat(&bob, &chat(json!({"name": "docs"}))).await;
    assert_eq!(status, 404, "{events:?}");
    let (status, _) = gw
        .stream_chat(
            &alice,
            &json!({"message": "x", "knowledge_base": {"name": "docs"}, "model": "mock",
                    "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(status, 400, "message and messages together stay refused");
}

#[tokio::test]
async fn the_passages_reach_bedrock_after_the_system_prompt_and_its_cache_point() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = Gateway::builder()
        .model(Arc::new(bedrock_provider(&fake.url())))
        .models("fake.cache", &[])
        .config(|c| {
            c.pipeline.prompt_cache.enabled = true;
            c.pipeline.prompt_cache.models = vec!["fake.cache".into()];
        })
        .start()
        .await
        .unwrap();
    let alice = authed_client(&dev_token("alice", &["chat"]));
    load_docs(&gw, &alice).await;
    let (status, events) = gw
        .stream_chat(
            &alice,
            &json!({"message": CALLBACK_QUESTION, "system": "You are the Nagare helpdesk.",
                    "knowledge_base": {"name": "docs", "results": 2}}),
        )
        .await;
    assert_eq!(status, 200, "{events:?}");
    let sources = sources(&events);
    assert_eq!(sources.len(), 2);
    let sent = fake.last_request().unwrap();
    let system = sent["system"].as_array().unwrap();
    assert_eq!(system.len(), 3, "{system:?}");
    assert_eq!(system[0]["text"], "You are the Nagare helpdesk.");
    assert!(system[1].get("cachePoint").is_some(), "{system:?}");
    let grounding = system[2]["text"].as_str().unwrap();
    assert!(grounding.contains("[1]"), "{grounding}");
    assert!(grounding.contains("<passage n=\"2\""), "{grounding}");
    let title = sources[0]["title"].as_str().unwrap();
    assert!(
        grounding.contains(&format!("<passage n=\"1\" title=\"{title}\"")),
        "{grounding}"
    );
    assert_eq!(
        sent["messages"].as_array().unwrap().len(),
        1,
        "the passages ride in the system prompt, not in the user's turn"
    );
}

#[tokio::test]
async fn a_route_and_tenant_default_answers_chats_that_name_no_knowledge_base() {
    let (gw, alice) = docs_gateway_with(|c| {
        c.knowledge.defaults = vec![nagare_gateway::knowledge::KnowledgeDefault {
            name: "docs".into(),
            results: Some(2),
            scope: Default::default(),
            routes: vec!["chat_stream".into()],
            tenants: vec!["alice".into()],
        }];
    })
    .await;
    let ask = json!({"message": CALLBACK_QUESTION});
    let (_, events) = gw.stream_chat(&alice, &ask).await;
    assert_eq!(
        sources(&events).len(),
        2,
        "the default applies on chat_stream"
    );
    assert_eq!(events.last().unwrap()["citations"], json!([1]));
    // Another route, another tenant: no default.
    let answer = gw.post_chat(&alice, &ask).await.unwrap();
    assert!(answer.body.get("sources").is_none(), "{}", answer.body);
    let bob = authed_client(&dev_token("bob", &["chat"]));
    let (_, events) = gw.stream_chat(&bob, &ask).await;
    assert!(sources(&events).is_empty());
    // A chat that names one gets the one it names.
    let (_, events) = gw
        .stream_chat(
            &alice,
            &json!({"message": CALLBACK_QUESTION, "knowledge_base": {"name": "docs", "results": 4}}),
        )
        .await;
    assert_eq!(sources(&events).len(), 4);
}
