#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The response cache through a running gateway and the fake Bedrock: hits make no upstream
//! call, tenants never share, every input that shapes the answer changes the key, only complete
//! answers are stored, identical requests in flight share one upstream stream, and the DynamoDB
//! tier is shared by two gateways and outlives one.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use nagare_cache::{CacheSettings, DynamoCache, MetricsSnapshot, Mode, RedisCache, SharedCache};
use nagare_gateway::app::Health;
use nagare_gateway::telemetry::LiveState;
use nagare_tests::redis_server::RedisServer;
use nagare_tests::ws_client::{self, joined_text, send, until_done};
use nagare_tests::{
    FakeBedrock, Gateway, authed_client, bedrock_provider, dev_token, moto, tenant_token,
};
use serde_json::{Value, json};

/// The cache's counters, as the gateway's health reads them.
struct Counters(Arc<Health>);

impl Counters {
    fn snapshot(&self) -> MetricsSnapshot {
        self.0.cache().unwrap()
    }
}

/// A gateway with memory (SQLite) and the cache, on `shared` as its shared tier when given.
async fn gateway_with(
    fake: &FakeBedrock,
    settings: CacheSettings,
    shared: Option<Arc<dyn SharedCache>>,
) -> (Gateway, Counters) {
    let mut builder = Gateway::builder()
        .model(Arc::new(bedrock_provider(&fake.url())))
        .models("fake", &["fake.slow", "fake.midstream-error", "fake.other"])
        .config(|c| {
            c.memory.enabled = true;
            c.cache = settings;
        });
    if let Some(tier) = shared {
        builder = builder.wiring(|w| w.with_shared_cache(tier));
    }
    let gw = builder.start().await.unwrap();
    let counters = Counters(gw.app.health.clone());
    (gw, counters)
}

async fn gateway(fake: &FakeBedrock) -> (Gateway, Counters) {
    gateway_with(fake, CacheSettings::default(), None).await
}

async fn chat_as(gw: &Gateway, sub: &str, scopes: &[&str], body: Value) -> (u16, Value) {
    let r = authed_client(&dev_token(sub, scopes))
        .post(gw.url("/v1/chat"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn chat(gw: &Gateway, body: Value) -> Value {
    let (status, reply) = chat_as(gw, "alice", &["chat"], body).await;
    assert_eq!(status, 200, "{reply}");
    reply
}

/// A chat as alice with a `Cache-Control` header.
async fn chat_with_cache_control(gw: &Gateway, directive: &str, body: Value) -> Value {
    authed_client(&dev_token("alice", &["chat"]))
        .post(gw.url("/v1/chat"))
        .header("cache-control", directive)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_repeated_prompt_is_replayed_on_every_transport_without_a_model_call() {
    let fake = FakeBedrock::start().await.unwrap();
    let (gw, cache) = gateway(&fake).await;
    let first = chat(&gw, json!({"message": "What are your opening hours?"})).await;
    assert_eq!(first["cached"], false);
    assert!(first.get("billed_usage").is_none());
    let second = chat(&gw, json!({"message": "What are your opening hours?"})).await;
    assert_eq!(fake.calls(), 1, "the hit made no upstream call");
    assert_eq!(second["cached"], true);
    assert_eq!(second["message"], first["message"]);
    assert_eq!(
        second["usage"], first["usage"],
        "the original usage is reported"
    );
    assert_eq!(
        second["billed_usage"],
        json!({"input_tokens": 0, "output_tokens": 0})
    );
    // Each chat is still its own conversation.
    assert_ne!(second["conversation_id"], first["conversation_id"]);

    // SSE: a normal stream, start and done marked cached.
    let body = authed_client(&dev_token("alice", &["chat"]))
        .post(gw.url("/v1/chat/stream"))
        .json(&json!({"message": "What are your opening hours?"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events[0]["type"], "start");
    assert_eq!(events[0]["cached"], true);
    let text: String = events.iter().filter_map(|e| e["text"].as_str()).collect();
    assert_eq!(json!(text), first["message"]["content"]);
    assert!(
        events.iter().filter(|e| e["type"] == "delta").count() > 1,
        "the original deltas"
    );
    assert_eq!(events.last().unwrap()["cached"], true);

    // WebSocket.
    let url = format!(
        "ws://{}/v1/ws?token={}",
        gw.addr,
        dev_token("alice", &["chat"])
    );
    let mut ws = ws_client::connect(&url).await;
    send(
        &mut ws,
        json!({"action": "chat", "request_id": "w1", "message": "What are your opening hours?"}),
    )
    .await;
    let frames = until_done(&mut ws, "w1").await;
    assert_eq!(frames[0]["cached"], true);
    assert_eq!(
        json!(joined_text(&frames, "w1")),
        first["message"]["content"]
    );
    assert_eq!(fake.calls(), 1);
    let s = cache.snapshot();
    assert_eq!((s.hits_l1, s.misses, s.stores), (3, 1, 1));
    assert_eq!(
        s.output_tokens_saved,
        3 * first["usage"]["output_tokens"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn tenants_never_share_and_the_global_scope_needs_its_grant() {
    let fake = FakeBedrock::start().await.unwrap();
    let (gw, _) = gateway(&fake).await;
    let ask = json!({"message": "refund policy?"});
    chat_as(&gw, "alice", &["chat"], ask.clone()).await;
    let (_, bob) = chat_as(&gw, "bob", &["chat"], ask.clone()).await;
    assert_eq!(bob["cached"], false, "alice's answer is not bob's");
    assert_eq!(fake.calls(), 2);

    let global = json!({"message": "refund policy?", "cache_scope": "global"});
    let (status, body) = chat_as(&gw, "carol", &["chat"], global.clone()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (_, a) = chat_as(&gw, "alice", &["chat", "cache:global"], global.clone()).await;
    let (_, d) = chat_as(&gw, "dave", &["chat", "cache:global"], global).await;
    assert_eq!(
        (a["cached"].clone(), d["cached"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(fake.calls(), 3);

    // A tenant that happens to be called "global" keeps to itself: it neither reads the shared
    // answer nor writes one the shared scope would serve.
    let named_global = authed_client(&tenant_token("mallory", Some("global"), &["chat"]));
    let reply = gw.post_chat(&named_global, &ask).await.unwrap().body;
    assert_eq!(reply["cached"], false, "{reply}");
    assert_eq!(fake.calls(), 4);
    let other = json!({"message": "delivery times?"});
    gw.post_chat(&named_global, &other).await.unwrap();
    let shared = json!({"message": "delivery times?", "cache_scope": "global"});
    let (_, e) = chat_as(&gw, "erin", &["chat", "cache:global"], shared).await;
    assert_eq!(
        e["cached"], false,
        "not the answer the tenant named global wrote"
    );
    assert_eq!(fake.calls(), 6);
}

#[tokio::test]
async fn every_input_that_shapes_the_answer_changes_the_key_and_formatting_does_not() {
    let fake = FakeBedrock::start().await.unwrap();
    let (gw, _) = gateway(&fake).await;
    let base = json!({"message": "hi", "system": "be brief", "inference": {"temperature": 0.5, "max_tokens": 50}});
    chat(&gw, base.clone()).await;
    let variants = [
        json!({"message": "hi", "model": "fake.other", "system": "be brief", "inference": {"temperature": 0.5, "max_tokens": 50}}),
        json!({"message": "hi", "system": "be verbose", "inference": {"temperature": 0.5, "max_tokens": 50}}),
        json!({"message": "hi", "inference": {"temperature": 0.5, "max_tokens": 50}}),
        json!({"message": "hi", "system": "be brief", "inference": {"temperature": 0.7, "max_tokens": 50}}),
        json!({"message": "hi", "system": "be brief", "inference": {"temperature": 0.5, "max_tokens": 51}}),
        json!({"message": "hi!", "system": "be brief", "inference": {"temperature": 0.5, "max_tokens": 50}}),
    ];
    for (i, v) in variants.iter().enumerate() {
        assert_eq!(chat(&gw, v.clone()).await["cached"], false, "variant {i}");
        assert_eq!(fake.calls(), 2 + i as u64);
    }
    // Same request, other field order and spacing: a hit.
    let raw = r#"{ "inference" : { "max_tokens":50, "temperature":0.5 },"system":"be brief",   "message":"hi" }"#;
    let r = authed_client(&dev_token("alice", &["chat"]))
        .post(gw.url("/v1/chat"))
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["cached"], true);
    assert_eq!(fake.calls(), 1 + variants.len() as u64);
}

#[tokio::test]
async fn failed_cancelled_bypassed_and_multi_turn_answers_are_not_stored() {
    let fake = FakeBedrock::start().await.unwrap();
    let (gw, cache) = gateway(&fake).await;
    let client = authed_client(&dev_token("alice", &["chat"]));

    for _ in 0..2 {
        let (status, _) = chat_as(
            &gw,
            "alice",
            &["chat"],
            json!({"message": "x", "model": "fake.midstream-error"}),
        )
        .await;
        assert_eq!(status, 502);
    }
    assert_eq!(fake.calls(), 2, "an error is never replayed");

    let slow = json!({"message": "slow one", "model": "fake.slow"});
    let aborted_before = fake.aborted();
    let mut body = client
        .post(gw.url("/v1/chat/stream"))
        .json(&slow)
        .send()
        .await
        .unwrap()
        .bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    let aborted = fake
        .wait_for(Duration::from_secs(10), |f| {
            f.aborted() == aborted_before + 1
        })
        .await;
    assert!(aborted, "cancelling aborts upstream");
    let again = chat(&gw, slow).await;
    assert_eq!(again["cached"], false, "a cancelled stream is not stored");

    let before = fake.calls();
    chat(&gw, json!({"message": "fresh", "cache": "bypass"})).await;
    chat(&gw, json!({"message": "fresh"})).await;
    assert_eq!(fake.calls(), before + 2, "bypass neither reads nor writes");
    let r = chat_with_cache_control(&gw, "no-store", json!({"message": "nostore"})).await;
    assert_eq!(r["cached"], false);
    assert_eq!(
        chat(&gw, json!({"message": "nostore"})).await["cached"],
        false,
        "no-store wrote nothing"
    );
    let r = chat_with_cache_control(&gw, "no-cache", json!({"message": "nostore"})).await;
    assert_eq!(r["cached"], false, "no-cache does not read");
    assert_eq!(
        chat(&gw, json!({"message": "fresh", "cache": "refresh"})).await["cached"],
        false
    );
    assert_eq!(
        chat(&gw, json!({"message": "fresh"})).await["cached"],
        true,
        "refresh wrote"
    );

    // Continuing a conversation is multi-turn: not cached by default.
    let first = chat(&gw, json!({"message": "one"})).await;
    let id = first["conversation_id"].clone();
    let a = chat(&gw, json!({"message": "two", "conversation_id": id})).await;
    assert_eq!(a["cached"], false);
    assert!(cache.snapshot().stores >= 3);
}

#[tokio::test]
async fn fifty_identical_requests_make_one_upstream_call_and_get_the_same_full_text() {
    let fake = FakeBedrock::start().await.unwrap();
    let (gw, cache) = gateway(&fake).await;
    let body = json!({"message": "popular question", "model": "fake.slow"});
    let replies = futures::future::join_all((0..50).map(|_| chat(&gw, body.clone()))).await;
    assert_eq!(fake.calls(), 1);
    let text = replies[0]["message"]["content"].as_str().unwrap();
    assert_eq!(
        text.split_whitespace().count(),
        40,
        "the whole answer: {text}"
    );
    for r in &replies {
        assert_eq!(r["message"]["content"], text);
    }
    let s = cache.snapshot();
    assert_eq!(s.coalesced + s.hits_l1, 49, "{s:?}");
    assert_eq!(replies.iter().filter(|r| r["cached"] == false).count(), 1);
}

#[tokio::test]
async fn a_joiner_gets_every_delta_from_the_beginning_as_they_arrive() {
    let fake = FakeBedrock::start().await.unwrap();
    let (gw, cache) = gateway(&fake).await;
    let url = format!(
        "ws://{}/v1/ws?token={}",
        gw.addr,
        dev_token("alice", &["chat"])
    );
    let (mut first, mut second) = (
        ws_client::connect(&url).await,
        ws_client::connect(&url).await,
    );
    let ask = |id: &str| json!({"action": "chat", "request_id": id, "message": "long answer", "model": "fake.slow"});
    send(&mut first, ask("a")).await;
    // Wait until a few deltas have gone by, then join.
    let mut early = Vec::new();
    for _ in 0..6 {
        early.push(ws_client::next(&mut first).await);
    }
    send(&mut second, ask("b")).await;
    // The joiner's deltas flow while the one upstream stream is still going.
    let mut late = vec![
        ws_client::next(&mut second).await,
        ws_client::next(&mut second).await,
    ];
    assert_eq!(late[1]["type"], "delta");
    assert_eq!(fake.completed(), 0, "the joiner did not wait for the end");
    late.extend(until_done(&mut second, "b").await);
    early.extend(until_done(&mut first, "a").await);
    assert_eq!(joined_text(&late, "b"), joined_text(&early, "a"));
    assert_eq!(late.last().unwrap()["type"], "done");
    assert_eq!(fake.calls(), 1);
    assert_eq!(cache.snapshot().coalesced, 1);
}

#[tokio::test]
async fn policy_modes_per_tenant_and_route() {
    let fake = FakeBedrock::start().await.unwrap();
    let settings = CacheSettings {
        tenants: [("reader".to_owned(), Mode::ReadOnly)].into(),
        routes: [("chat_stream".to_owned(), Mode::Off)].into(),
        ..CacheSettings::default()
    };
    let (gw, _) = gateway_with(&fake, settings, None).await;
    let ask = json!({"message": "q"});
    let (_, r) = chat_as(&gw, "reader", &["chat"], ask.clone()).await;
    let (_, r2) = chat_as(&gw, "reader", &["chat"], ask.clone()).await;
    assert_eq!(
        (r["cached"].clone(), r2["cached"].clone()),
        (json!(false), json!(false)),
        "read-only never writes"
    );
    chat(&gw, ask.clone()).await;
    let sse = authed_client(&dev_token("alice", &["chat"]))
        .post(gw.url("/v1/chat/stream"))
        .json(&ask)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        sse.contains(r#""cached":false"#),
        "the stream route has the cache off"
    );
    assert_eq!(fake.calls(), 4);
}

/// Two gateways on one shared tier: the second hits what the first stored, and a third, started
/// after the first is gone (an empty L1), hits it too, then from its own L1.
async fn shared_tier_outlives_a_gateway(fake: &FakeBedrock, tier: Arc<dyn SharedCache>) {
    let (one, _) = gateway_with(fake, CacheSettings::default(), Some(tier.clone())).await;
    let (two, two_cache) = gateway_with(fake, CacheSettings::default(), Some(tier.clone())).await;
    let ask = json!({"message": "shared question"});
    assert_eq!(chat(&one, ask.clone()).await["cached"], false);
    assert_eq!(chat(&two, ask.clone()).await["cached"], true);
    assert_eq!(two_cache.snapshot().hits_l2, 1);
    drop(one);
    let (three, three_cache) = gateway_with(fake, CacheSettings::default(), Some(tier)).await;
    assert_eq!(chat(&three, ask.clone()).await["cached"], true);
    assert_eq!(three_cache.snapshot().hits_l2, 1);
    assert_eq!(chat(&three, ask).await["cached"], true);
    assert_eq!(three_cache.snapshot().hits_l1, 1, "the L2 hit filled L1");
    assert_eq!(fake.calls(), 1);
}

#[tokio::test]
async fn the_dynamodb_tier_is_shared_by_two_gateways_and_outlives_one() {
    let fake = FakeBedrock::start().await.unwrap();
    let client = moto::dynamodb();
    let table = moto::tables(&client).await.unwrap().cache;
    shared_tier_outlives_a_gateway(&fake, Arc::new(DynamoCache::new(client, &table))).await;
}

#[tokio::test]
async fn the_redis_tier_is_shared_by_two_gateways_and_outlives_one() {
    let fake = FakeBedrock::start().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let tier = RedisCache::connect(&redis.url()).await.unwrap();
    shared_tier_outlives_a_gateway(&fake, Arc::new(tier)).await;
}

#[tokio::test]
async fn a_broken_shared_tier_costs_a_model_call_not_an_error() {
    let fake = FakeBedrock::start().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let tier: Arc<dyn SharedCache> = Arc::new(RedisCache::connect(&redis.url()).await.unwrap());
    let (gw, cache) = gateway_with(&fake, CacheSettings::default(), Some(tier)).await;
    redis.stop().await.unwrap();
    let ask = json!({"message": "still answered"});
    assert_eq!(chat(&gw, ask.clone()).await["cached"], false);
    assert_eq!(chat(&gw, ask).await["cached"], true, "L1 still works");
    assert!(cache.snapshot().l2_errors >= 1);
}

#[tokio::test]
async fn entries_expire_in_both_tiers() {
    let fake = FakeBedrock::start().await.unwrap();
    let client = moto::dynamodb();
    let table = moto::tables(&client).await.unwrap().cache;
    let settings = CacheSettings {
        ttl_secs: 1,
        ..CacheSettings::default()
    };
    let shared: Option<Arc<dyn SharedCache>> = Some(Arc::new(DynamoCache::new(client, &table)));
    let (gw, _) = gateway_with(&fake, settings, shared).await;
    let ask = json!({"message": "short-lived"});
    chat(&gw, ask.clone()).await;
    assert_eq!(chat(&gw, ask.clone()).await["cached"], true);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        chat(&gw, ask).await["cached"],
        false,
        "expired in L1 and L2"
    );
    assert_eq!(fake.calls(), 2);
}
