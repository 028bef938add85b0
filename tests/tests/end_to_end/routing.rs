#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Model routing through a gateway to the fake Bedrock: a request without a model is routed by
//! its task hint, its tenant, and the length of its prompt; the reply names the model that served,
//! and the fake saw a call to that model; a tenant's allow-list refuses other models.

use std::sync::Arc;

use nagare_gateway::pipeline::{ModelCatalog, RoutingSettings};
use nagare_tests::{FakeBedrock, Gateway, authed_client, bedrock_provider, tenant_token};
use serde_json::{Value, json};

async fn gateway(fake: &FakeBedrock) -> Gateway {
    let mut routing = RoutingSettings {
        enabled: true,
        small: "fast".into(),
        large: "smart".into(),
        long_prompt_tokens: 50,
        ..RoutingSettings::default()
    };
    routing.tasks.insert("code".into(), "fake.coder".into());
    routing.tenants.insert("acme".into(), "smart".into());
    routing
        .tenant_allow
        .insert("locked".into(), ["fast".to_owned()].into());
    let models = ModelCatalog {
        default: "fast".into(),
        aliases: [("fast", "fake.small"), ("smart", "fake.large")]
            .map(|(a, m)| (a.to_owned(), m.to_owned()))
            .into(),
        allow: ["fake.coder".to_owned()].into(),
        routing,
        ..ModelCatalog::default()
    };
    Gateway::builder()
        .model(Arc::new(bedrock_provider(&fake.url())))
        .config(|c| c.models = models)
        .start()
        .await
        .unwrap()
}

fn in_tenant(tenant: &str) -> reqwest::Client {
    authed_client(&tenant_token("someone", Some(tenant), &["chat"]))
}

/// The status and the model the reply (or error) names.
async fn served(gw: &Gateway, tenant: &str, body: Value) -> (u16, Value) {
    let answer = gw.post_chat(&in_tenant(tenant), &body).await.unwrap();
    (answer.status, answer.body)
}

#[tokio::test]
async fn requests_without_a_model_go_where_the_rules_say() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake).await;
    let cases = [
        ("t", json!({"message": "hi"}), "fake.small"),
        ("t", json!({"message": "why ".repeat(60)}), "fake.large"),
        ("t", json!({"message": "hi", "task": "code"}), "fake.coder"),
        ("acme", json!({"message": "hi"}), "fake.large"),
        (
            "acme",
            json!({"message": "hi", "model": "fast"}),
            "fake.small",
        ),
    ];
    for (tenant, body, expected) in cases {
        let before = fake.calls_to(expected);
        let (status, reply) = served(&gw, tenant, body.clone()).await;
        assert_eq!(status, 200, "{body}: {reply}");
        assert_eq!(reply["model"], expected, "{body}");
        assert_eq!(fake.calls_to(expected), before + 1, "{body}");
    }
    let calls = fake.calls();

    let (status, reply) = served(&gw, "locked", json!({"message": "hi", "model": "smart"})).await;
    assert_eq!(
        (status, reply["error"]["code"].clone()),
        (403, json!("forbidden"))
    );
    let (status, _) = served(&gw, "locked", json!({"message": "hi", "model": "fast"})).await;
    assert_eq!(status, 200);
    let (status, reply) = served(&gw, "t", json!({"message": "hi", "task": "no spaces"})).await;
    assert_eq!(
        (status, reply["error"]["code"].clone()),
        (400, json!("invalid_request"))
    );
    assert_eq!(fake.calls(), calls + 1);
}
