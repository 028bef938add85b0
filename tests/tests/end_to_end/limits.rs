#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Limits through a running gateway: request and token rates per principal with `Retry-After`,
//! reservations settled with the real usage, the daily budget, per-tenant overrides, the cap on
//! upstream streams under 200 concurrent requests, and one limit shared by two gateways through
//! DynamoDB (moto's server). The limits' clock is pinned, so no window ends mid-test.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use nagare_cache::CacheSettings;
use nagare_gateway::Error;
use nagare_gateway::limits::{Counters, DynamoCounters, LocalCounters, Quota, RateLimitSettings};
use nagare_gateway::provider::{
    MockProvider, MockSettings, ModelProvider, ProviderRequest, ProviderStream,
};
use nagare_tests::{
    FakeBedrock, Gateway, GatewayBuilder, authed_client, bedrock_provider, dev_token, moto,
    tenant_token,
};
use serde_json::{Value, json};

/// Ten minutes past a minute and a day boundary: far from the end of either window.
const PINNED_NOW: u64 = 1_795_000_000 - 1_795_000_000 % 86_400 + 3_600 + 5;

/// The limits of a test gateway: its settings, where it counts, and its pinned time.
struct Limited {
    settings: RateLimitSettings,
    counters: Arc<dyn Counters>,
    now: u64,
}

fn limits(settings: RateLimitSettings, counters: Arc<dyn Counters>) -> Limited {
    Limited {
        settings,
        counters,
        now: PINNED_NOW,
    }
}

fn off() -> RateLimitSettings {
    RateLimitSettings {
        requests_per_minute: 0,
        tokens_per_minute: 0,
        tokens_per_day: 0,
        ..RateLimitSettings::default()
    }
}

fn limited(builder: GatewayBuilder, limits: Limited) -> GatewayBuilder {
    let Limited {
        settings,
        counters,
        now,
    } = limits;
    builder
        .config(|c| c.rate_limits = settings)
        .wiring(move |w| {
            w.with_limit_counters(counters)
                .with_clock(Arc::new(move || now))
        })
}

async fn gateway(provider: Arc<dyn ModelProvider>, model: &str, limits: Limited) -> Gateway {
    let builder = Gateway::builder().model(provider).models(model, &[]);
    limited(builder, limits).start().await.unwrap()
}

async fn fake_gateway(fake: &FakeBedrock, limits: Limited) -> Gateway {
    gateway(Arc::new(bedrock_provider(&fake.url())), "fake", limits).await
}

/// Sends a chat as `client`; the status, the `Retry-After` header and the body.
async fn chat(gw: &Gateway, client: &reqwest::Client, body: Value) -> (u16, Option<u64>, Value) {
    let answer = gw.post_chat(client, &body).await.unwrap();
    (answer.status, answer.retry_after, answer.body)
}

fn hi() -> Value {
    json!({"message": "hi"})
}

fn as_user(sub: &str) -> reqwest::Client {
    authed_client(&dev_token(sub, &["chat"]))
}

fn in_tenant(sub: &str, tenant: &str) -> reqwest::Client {
    authed_client(&tenant_token(sub, Some(tenant), &["chat"]))
}

#[tokio::test]
async fn the_request_rate_refuses_with_retry_after_and_per_tenant_overrides() {
    let fake = FakeBedrock::start().await.unwrap();
    let mut settings = RateLimitSettings {
        requests_per_minute: 3,
        ..off()
    };
    settings.tenants.insert(
        "vip".into(),
        Quota {
            requests_per_minute: Some(10),
            ..Quota::default()
        },
    );
    let gw = fake_gateway(&fake, limits(settings, Arc::new(LocalCounters::default()))).await;
    let alice = as_user("alice");
    for _ in 0..3 {
        assert_eq!(chat(&gw, &alice, hi()).await.0, 200);
    }
    let (status, retry_after, body) = chat(&gw, &alice, hi()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["retryable"], true);
    // The window ends 55 s after the pinned time.
    assert_eq!(retry_after, Some(55));
    assert_eq!(fake.calls(), 3);

    // Another principal has its own count; a tenant's override raises its limit.
    assert_eq!(chat(&gw, &as_user("bob"), hi()).await.0, 200);
    let vip = in_tenant("carol", "vip");
    for _ in 0..10 {
        assert_eq!(chat(&gw, &vip, hi()).await.0, 200);
    }
    assert_eq!(chat(&gw, &vip, hi()).await.0, 429);
}

#[tokio::test]
async fn token_reservations_are_settled_with_the_real_usage() {
    let fake = FakeBedrock::start().await.unwrap();
    let settings = RateLimitSettings {
        tokens_per_minute: 1_000,
        ..off()
    };
    let gw = fake_gateway(&fake, limits(settings, Arc::new(LocalCounters::default()))).await;
    let alice = as_user("alice");
    let big = json!({"message": "hi", "inference": {"max_tokens": 900}});

    // More than the whole minute's budget can never be admitted: a client error, not a wait.
    let too_big = json!({"message": "hi", "inference": {"max_tokens": 2000}});
    let (status, _, body) = chat(&gw, &alice, too_big).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_request"))
    );

    // 901 tokens are reserved, and the fake uses 5, so the reservation shrinks to 5 before
    // `done`: a second 901-token request fits (unsettled, the two would need 1,802).
    assert_eq!(chat(&gw, &alice, big.clone()).await.0, 200);
    assert_eq!(chat(&gw, &alice, big).await.0, 200);
    // 10 used; 991 more would make 1,001.
    let over = json!({"message": "hi", "inference": {"max_tokens": 990}});
    let (status, retry_after, _) = chat(&gw, &alice, over).await;
    assert_eq!((status, retry_after), (429, Some(55)));
    assert_eq!(fake.calls(), 2);
}

#[tokio::test]
async fn the_daily_budget_holds_across_minutes() {
    let fake = FakeBedrock::start().await.unwrap();
    let settings = RateLimitSettings {
        tokens_per_day: 25,
        reserve_output_tokens: 5,
        ..off()
    };
    let counters: Arc<dyn Counters> = Arc::new(LocalCounters::default());
    let gw = fake_gateway(&fake, limits(settings.clone(), counters.clone())).await;
    let alice = as_user("alice");
    // Each chat reserves 6 tokens (1 estimated for "hi", 5 for the output) and really uses 5
    // (1 in, 4 out, as the fake reports). Settled, four chats use 20; a fifth would need 26.
    let mut served = 0;
    for _ in 0..10 {
        let (status, retry_after, body) = chat(&gw, &alice, hi()).await;
        if status == 429 {
            assert_eq!(body["error"]["code"], "rate_limited");
            // Until the end of the UTC day.
            assert_eq!(retry_after, Some(86_400 - 3_605));
            break;
        }
        assert_eq!(status, 200, "{body}");
        served += 1;
    }
    assert_eq!(served, 4);
    // A new minute does not help: the day's window is the same.
    let later = Limited {
        now: PINNED_NOW + 600,
        ..limits(settings, counters)
    };
    let gw2 = fake_gateway(&fake, later).await;
    assert_eq!(chat(&gw2, &alice, hi()).await.0, 429);
}

/// A mock model that counts its streams in flight and remembers the most at once.
struct Counting {
    inner: MockProvider,
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl ModelProvider for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }

    fn recognizes(&self, model_id: &str) -> bool {
        self.inner.recognizes(model_id)
    }

    async fn converse_stream(&self, request: ProviderRequest) -> Result<ProviderStream, Error> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(n, Ordering::SeqCst);
        let guard = InFlight(self.now.clone());
        let stream = self.inner.converse_stream(request).await?;
        Ok(stream
            .map(move |event| {
                let _held = &guard;
                event
            })
            .boxed())
    }
}

#[tokio::test]
async fn the_upstream_cap_holds_under_200_concurrent_requests() {
    let most = Arc::new(AtomicUsize::new(0));
    let provider = Counting {
        // 20 tokens at 1,000 tokens/s: about 20 ms a stream.
        inner: MockProvider::new(MockSettings {
            ttft_ms: 0,
            tokens_per_second: 1_000,
        }),
        now: Arc::new(AtomicUsize::new(0)),
        most: most.clone(),
    };
    let settings = RateLimitSettings {
        max_concurrent_upstream: 4,
        concurrency_wait_ms: 60_000,
        ..off()
    };
    let counters = Arc::new(LocalCounters::default());
    let gw = gateway(Arc::new(provider), "mock", limits(settings, counters)).await;
    let alice = as_user("alice");
    let body = json!({"message": "hi", "inference": {"max_tokens": 20}});
    let results =
        futures::future::join_all((0..200).map(|_| chat(&gw, &alice, body.clone()))).await;
    assert!(results.iter().all(|(status, _, _)| *status == 200));
    let most = most.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&most),
        "{most} streams were in flight at once"
    );

    // With no time to wait, a request that finds every slot taken is refused.
    let settings = RateLimitSettings {
        max_concurrent_upstream: 1,
        concurrency_wait_ms: 0,
        ..off()
    };
    let slow = Arc::new(MockProvider::new(MockSettings::default()));
    let gw = gateway(
        slow,
        "mock.slow",
        limits(settings, Arc::new(LocalCounters::default())),
    )
    .await;
    let short = json!({"message": "hi", "inference": {"max_tokens": 2}});
    let results = futures::future::join_all((0..5).map(|_| chat(&gw, &alice, short.clone()))).await;
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert!(!refused.is_empty(), "{results:?}");
    assert!(
        refused
            .iter()
            .all(|r| r.2["error"]["code"] == "rate_limited")
    );
    assert_eq!(
        results.iter().filter(|r| r.0 == 200).count() + refused.len(),
        5
    );
}

#[tokio::test]
async fn two_gateways_share_one_limit_through_dynamodb() {
    let fake = FakeBedrock::start().await.unwrap();
    let client = moto::dynamodb();
    let tables = moto::tables(&client).await.unwrap();
    let settings = RateLimitSettings {
        requests_per_minute: 4,
        ..off()
    };
    let shared =
        || -> Arc<dyn Counters> { Arc::new(DynamoCounters::new(client.clone(), &tables.limits)) };
    let one = fake_gateway(&fake, limits(settings.clone(), shared())).await;
    let two = fake_gateway(&fake, limits(settings, shared())).await;
    let alice = as_user("alice");
    let mut statuses = Vec::new();
    for i in 0..6 {
        let gw = if i % 2 == 0 { &one } else { &two };
        statuses.push(chat(gw, &alice, hi()).await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    assert_eq!(fake.calls(), 4);
}

#[tokio::test]
async fn a_cache_hit_reserves_no_tokens() {
    let fake = FakeBedrock::start().await.unwrap();
    let settings = RateLimitSettings {
        tokens_per_minute: 995,
        ..off()
    };
    let builder = Gateway::builder()
        .model(Arc::new(bedrock_provider(&fake.url())))
        .models("fake", &[])
        .config(|c| c.cache = CacheSettings::default());
    let gw = limited(
        builder,
        limits(settings, Arc::new(LocalCounters::default())),
    )
    .start()
    .await
    .unwrap();
    let alice = as_user("alice");
    // 991 reserved, 5 used. The same request again would need 5 + 991 = 996 if it reserved.
    let body = json!({"message": "hi", "inference": {"max_tokens": 990}});
    assert_eq!(chat(&gw, &alice, body.clone()).await.0, 200);
    let (status, _, reply) = chat(&gw, &alice, body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["cached"], true);
    assert_eq!(fake.calls(), 1);
}

/// Submits `n` tasks as `client` and waits until each has finished; returns their records.
async fn run_tasks(gw: &Gateway, client: &reqwest::Client, n: usize, body: Value) -> Vec<Value> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(gw.submit_task(client, &body).await);
    }
    let mut done = Vec::new();
    for id in ids {
        let path = format!("/v1/tasks/{id}");
        let finished = nagare_tests::eventually(std::time::Duration::from_secs(60), || async {
            let status = gw.get_json(client, &path).await.1["status"].clone();
            status == "succeeded" || status == "failed"
        })
        .await;
        let (_, task) = gw.get_json(client, &path).await;
        assert!(finished, "task {id} never finished: {task}");
        done.push(task);
    }
    done
}

/// How many chats the metrics count on `route` with `code`.
async fn chats_counted(gw: &Gateway, route: &str, code: &str) -> u64 {
    gw.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("nagare_chats_total{"))
        .filter(|l| {
            l.contains(&format!("route=\"{route}\"")) && l.contains(&format!("code=\"{code}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn tasks_refused_by_the_request_rate_wait_for_it_and_all_succeed() {
    // The limits' clock is real time moved to 5 s before the end of a minute, read when the
    // tasks go in: three fit in this minute, the others wait out the few seconds left, without
    // using an attempt.
    let offset = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clock = {
        let offset = offset.clone();
        Arc::new(move || nagare_gateway::store::unix_now() + offset.load(Ordering::SeqCst))
    };
    let gw = Gateway::builder()
        .model(Arc::new(MockProvider::new(MockSettings::unpaced())))
        .models("mock", &[])
        .config(|c| {
            c.rate_limits = RateLimitSettings {
                requests_per_minute: 3,
                ..off()
            };
            c.tasks.enabled = true;
            c.tasks.workers = 1;
            c.metrics.enabled = true;
        })
        .wiring(move |w| w.with_clock(clock))
        .start()
        .await
        .unwrap();
    let now = nagare_gateway::store::unix_now();
    offset.store((55 + 60 - now % 60) % 60, Ordering::SeqCst);
    let client = authed_client(&dev_token("alice", &["chat"]));
    let tasks = run_tasks(&gw, &client, 5, json!({"message": "hi"})).await;
    for task in &tasks {
        assert_eq!(task["status"], "succeeded", "{task}");
        assert_eq!(task["attempts"], 1, "a refusal is not an attempt: {task}");
    }
    let refused = chats_counted(&gw, "task", "rate_limited").await;
    assert!(
        refused >= 2,
        "five tasks at three a minute: {refused} refusals"
    );
}

#[tokio::test]
async fn tasks_refused_by_the_upstream_cap_wait_for_a_slot_and_all_succeed() {
    let paced = MockSettings {
        ttft_ms: 0,
        tokens_per_second: 50,
    };
    let gw = Gateway::builder()
        .model(Arc::new(MockProvider::new(paced)))
        .models("mock", &[])
        .config(|c| {
            c.rate_limits = RateLimitSettings {
                max_concurrent_upstream: 1,
                concurrency_wait_ms: 50,
                ..off()
            };
            c.tasks.enabled = true;
            c.tasks.workers = 3;
            c.metrics.enabled = true;
        })
        .start()
        .await
        .unwrap();
    let client = authed_client(&dev_token("alice", &["chat"]));
    let body = json!({"message": "a long enough answer to hold the one slot for a while"});
    let tasks = run_tasks(&gw, &client, 4, body).await;
    for task in &tasks {
        assert_eq!(task["status"], "succeeded", "{task}");
        assert_eq!(task["attempts"], 1, "{task}");
    }
    assert!(chats_counted(&gw, "task", "rate_limited").await >= 1);
}

#[tokio::test]
async fn a_task_that_could_never_fit_the_token_limit_is_refused_at_submission() {
    let gw = Gateway::builder()
        .model(Arc::new(MockProvider::new(MockSettings::unpaced())))
        .models("mock", &[])
        .config(|c| {
            c.rate_limits = RateLimitSettings {
                tokens_per_minute: 500,
                ..off()
            };
            c.tasks.enabled = true;
        })
        .start()
        .await
        .unwrap();
    let client = authed_client(&dev_token("alice", &["chat"]));
    let response = client
        .post(gw.url("/v1/tasks"))
        .json(&json!({"message": "hi", "inference": {"max_tokens": 1000}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than the limit"),
        "{body}"
    );
}

#[tokio::test]
async fn one_users_stalled_chats_leave_upstream_slots_for_everyone_else() {
    // Four slots, two per principal (the default share, half). Without the retry layer, a
    // stalled model holds its slot for as long as the client waits.
    let gw = Gateway::builder()
        .bare_model(Arc::new(MockProvider::new(MockSettings::unpaced())))
        .models("mock", &[])
        .config(|c| {
            c.rate_limits = RateLimitSettings {
                max_concurrent_upstream: 4,
                concurrency_wait_ms: 300,
                ..off()
            };
        })
        .start()
        .await
        .unwrap();
    let alice = authed_client(&dev_token("alice", &["chat"]));
    let (tx, mut statuses) = tokio::sync::mpsc::unbounded_channel();
    let stalled: Vec<_> = (0..6)
        .map(|_| {
            let (alice, url, tx) = (alice.clone(), gw.url("/v1/chat"), tx.clone());
            tokio::spawn(async move {
                let body = json!({"message": "hi", "model": "mock.stall"});
                if let Ok(r) = alice.post(url).json(&body).send().await {
                    let _ = tx.send(r.status().as_u16());
                }
            })
        })
        .collect();
    // Alice gets her share; her other four are refused once the wait is over.
    for _ in 0..4 {
        assert_eq!(statuses.recv().await, Some(429));
    }
    // Bob is served while her two stalled chats still hold their slots.
    let bob = authed_client(&dev_token("bob", &["chat"]));
    let (status, _, body) = chat(&gw, &bob, json!({"message": "hi"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        statuses.try_recv().is_err(),
        "alice's two stalled chats are still waiting"
    );
    for s in stalled {
        s.abort();
    }
}
