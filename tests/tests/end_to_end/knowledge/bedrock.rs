#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Chats that answer from Amazon Bedrock Knowledge Bases: the real aws-sdk-bedrockagentruntime
//! against the fake Agent Runtime. The request's shape (query, number of results, search type,
//! filter), pagination with `nextToken`, which tenants may use which knowledge base, throttling
//! retried, and each Bedrock error on its row of the error table.

use std::sync::Arc;

use nagare_gateway::knowledge::BedrockBase;
use nagare_gateway::provider::{MockProvider, MockSettings};
use nagare_tests::fake_agent_runtime::{Chunk, FakeAgentRuntime, PAGE};
use nagare_tests::{Gateway, authed_client, tenant_token};
use serde_json::{Value, json};

fn base(name: &str, id: &str, tenants: &[&str]) -> BedrockBase {
    BedrockBase {
        name: name.into(),
        id: id.into(),
        tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
        search_type: None,
    }
}

/// The handbook: leave, carry-over, expenses and travel, with metadata to filter on.
fn handbook() -> Vec<Chunk> {
    let chunk = |text: &str, doc: &str, team: &str, year: u32| Chunk {
        text: text.into(),
        uri: format!("s3://handbook-bucket/{doc}.md"),
        metadata: json!({"title": format!("The {doc} policy"), "team": team, "year": year}),
    };
    vec![
        chunk(
            "Everyone gets 30 days of paid leave a year.",
            "leave",
            "hr",
            2026,
        ),
        chunk(
            "Up to 5 unused days of leave carry over to the next year.",
            "leave",
            "hr",
            2026,
        ),
        chunk(
            "Leave requests go to your manager two weeks ahead.",
            "leave",
            "hr",
            2025,
        ),
        chunk(
            "Expenses are paid within 10 working days of a claim.",
            "expenses",
            "finance",
            2026,
        ),
        chunk(
            "Travel of more than 3 days needs leave approval too.",
            "travel",
            "finance",
            2026,
        ),
        chunk(
            "Parental leave is 16 weeks at full pay.",
            "parental",
            "hr",
            2026,
        ),
    ]
}

async fn gateway(fake: &FakeAgentRuntime) -> Gateway {
    let url = fake.url();
    Gateway::builder()
        .model(Arc::new(MockProvider::new(MockSettings::unpaced())))
        .models("mock", &[])
        .config(move |c| {
            c.knowledge.retrieve_retries = 2;
            c.knowledge.retrieve_timeout_ms = 300;
            c.knowledge.bedrock.endpoint_url = Some(url);
            c.knowledge.bedrock.bases = vec![
                BedrockBase {
                    search_type: Some("HYBRID".into()),
                    ..base("handbook", "KBHANDBOOK1", &["acme"])
                },
                base("shared", "KBSHARED1", &["*"]),
                base("busy", "KBTHROTTLE2", &["*"]),
                base("swamped", "KBTHROTTLE9", &["*"]),
                base("gone", "KBGONE", &["*"]),
                base("broken", "KBDEPENDENCY", &["*"]),
                base("failing", "KBINTERNAL", &["*"]),
                base("refusing", "KBVALIDATION", &["*"]),
                base("guarded", "KBGUARDRAIL", &["*"]),
                base("stalled", "KBSTALL", &["*"]),
            ];
        })
        .start()
        .await
        .unwrap()
}

fn acme() -> reqwest::Client {
    authed_client(&tenant_token("alice", Some("acme"), &["chat"]))
}

fn ask(kb: Value) -> Value {
    json!({"message": "How many days of leave carry over?", "knowledge_base": kb})
}

#[tokio::test]
async fn a_chat_retrieves_through_bedrock_paging_until_it_has_its_results() {
    let fake = FakeAgentRuntime::start().await.unwrap();
    fake.load("KBHANDBOOK1", handbook());
    let gw = gateway(&fake).await;
    let answer = gw
        .post_chat(&acme(), &ask(json!({"name": "handbook", "results": 5})))
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let sources = answer.body["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 5, "{sources:?}");
    let best = &sources[0];
    assert_eq!(best["id"], "KBHANDBOOK1-chunk-1", "{best}");
    assert_eq!(best["title"], "The leave policy");
    assert_eq!(best["uri"], "s3://handbook-bucket/leave.md");
    assert_eq!(
        answer.body["message"]["content"],
        "According to The leave policy [1]: Up to 5 unused days of leave carry over to the next year."
    );
    assert_eq!(answer.body["citations"], json!([1]));

    // Three pages of two: the first without a token, then with each token the fake gave.
    let sent = fake.requests();
    assert_eq!(sent.len(), 5usize.div_ceil(PAGE), "{sent:?}");
    let (id, first) = &sent[0];
    assert_eq!(id, "KBHANDBOOK1");
    assert_eq!(
        first["retrievalQuery"]["text"],
        "How many days of leave carry over?"
    );
    let search = &first["retrievalConfiguration"]["vectorSearchConfiguration"];
    assert_eq!(search["numberOfResults"], 5);
    assert_eq!(search["overrideSearchType"], "HYBRID");
    assert!(search.get("filter").is_none());
    assert!(first.get("nextToken").is_none());
    assert_eq!(sent[1].1["nextToken"], "page-2");
    assert_eq!(sent[2].1["nextToken"], "page-4");
}

#[tokio::test]
async fn filters_reach_bedrock_in_its_shape() {
    let fake = FakeAgentRuntime::start().await.unwrap();
    fake.load("KBHANDBOOK1", handbook());
    let gw = gateway(&fake).await;
    let answer = gw
        .post_chat(
            &acme(),
            &ask(json!({"name": "handbook", "results": 5, "filter": {"team": "hr"}})),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let filter =
        &fake.requests()[0].1["retrievalConfiguration"]["vectorSearchConfiguration"]["filter"];
    assert_eq!(filter, &json!({"equals": {"key": "team", "value": "hr"}}));
    let titles: Vec<&str> = answer.body["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["title"].as_str().unwrap())
        .collect();
    assert!(
        titles
            .iter()
            .all(|t| *t == "The leave policy" || *t == "The parental policy"),
        "{titles:?}"
    );

    let answer = gw
        .post_chat(
            &acme(),
            &ask(json!({"name": "handbook", "filter": {"team": "hr", "year": [2025]}})),
        )
        .await
        .unwrap();
    let sent = fake.requests();
    let filter =
        &sent.last().unwrap().1["retrievalConfiguration"]["vectorSearchConfiguration"]["filter"];
    assert_eq!(
        filter,
        &json!({"andAll": [
            {"equals": {"key": "team", "value": "hr"}},
            {"in": {"key": "year", "value": [2025]}}
        ]})
    );
    let sources = answer.body["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1, "{sources:?}");
    assert_eq!(sources[0]["id"], "KBHANDBOOK1-chunk-2");
}

#[tokio::test]
async fn only_the_listed_tenants_may_use_a_knowledge_base() {
    let fake = FakeAgentRuntime::start().await.unwrap();
    fake.load("KBHANDBOOK1", handbook());
    fake.load("KBSHARED1", handbook());
    let gw = gateway(&fake).await;
    let globex = authed_client(&tenant_token("bob", Some("globex"), &["chat"]));
    let answer = gw
        .post_chat(&globex, &ask(json!({"name": "handbook"})))
        .await
        .unwrap();
    assert_eq!(answer.status, 404, "{}", answer.body);
    assert_eq!(
        answer.body["error"]["message"],
        "no knowledge base handbook"
    );
    assert_eq!(fake.calls("KBHANDBOOK1"), 0, "Bedrock was never asked");
    // `*` lets every tenant in; a name Bedrock does not map goes to the embedded store, where
    // globex has no such knowledge base.
    let answer = gw
        .post_chat(&globex, &ask(json!({"name": "shared"})))
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        fake.calls("KBSHARED1"),
        5usize.div_ceil(PAGE) as u64,
        "five results, paged"
    );
    let answer = gw
        .post_chat(&globex, &ask(json!({"name": "elsewhere"})))
        .await
        .unwrap();
    assert_eq!(answer.status, 404, "{}", answer.body);
}

#[tokio::test]
async fn throttling_is_retried_and_each_bedrock_error_has_its_row() {
    let fake = FakeAgentRuntime::start().await.unwrap();
    let gw = gateway(&fake).await;
    let client = acme();
    // Two throttled calls, then an answer (with nothing in it): three calls in all.
    let answer = gw
        .post_chat(&client, &ask(json!({"name": "busy"})))
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(fake.calls("KBTHROTTLE2"), 3);
    assert_eq!(
        answer.body["message"]["content"],
        "I found nothing about that in the knowledge base."
    );
    let cases = [
        ("swamped", "KBTHROTTLE9", 503, "upstream_throttled", 3),
        ("failing", "KBINTERNAL", 503, "upstream_unavailable", 3),
        ("gone", "KBGONE", 404, "not_found", 1),
        ("broken", "KBDEPENDENCY", 502, "upstream_error", 1),
        ("refusing", "KBVALIDATION", 400, "invalid_request", 1),
        // Each attempt given up after the retrieval timeout, then tried again.
        ("stalled", "KBSTALL", 504, "upstream_timeout", 3),
    ];
    for (name, id, status, code, calls) in cases {
        let answer = gw
            .post_chat(&client, &ask(json!({"name": name})))
            .await
            .unwrap();
        assert_eq!(answer.status, status, "{name}: {}", answer.body);
        assert_eq!(
            answer.body["error"]["code"], code,
            "{name}: {}",
            answer.body
        );
        assert_eq!(fake.calls(id), calls, "{name}");
    }
    // A guardrail that intervened in the retrieval leaves the model nothing to answer from.
    let (status, events) = gw
        .stream_chat(&client, &ask(json!({"name": "guarded"})))
        .await;
    assert_eq!(status, 200);
    assert!(events.iter().all(|e| e["type"] != "sources"));
    assert_eq!(events.last().unwrap()["citations"], json!([]));
}
