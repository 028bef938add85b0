#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Conversation memory through a running gateway, on both backends: the model sees earlier turns,
//! the REST API lists and pages them, other users get 404, retries are idempotent, failed and
//! cancelled chats leave history valid, and history is trimmed to the context budget.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use nagare_gateway::chat::Usage;
use nagare_gateway::error::Error;
use nagare_gateway::pipeline::MemorySettings;
use nagare_gateway::store::{
    Appended, ConversationMeta, ConversationStore, Database, DynamoConversationStore, Exchange,
    Page, SqliteConversationStore, Turn,
};
use nagare_tests::{FakeBedrock, Gateway, authed_client, bedrock_provider, dev_token, moto};
use serde_json::{Value, json};

async fn gateway(
    fake: &FakeBedrock,
    store: Arc<dyn ConversationStore>,
    settings: MemorySettings,
) -> Gateway {
    Gateway::builder()
        .model(Arc::new(bedrock_provider(&fake.url())))
        .models("fake", &["fake.slow", "fake.midstream-error"])
        .config(|c| c.memory = settings)
        .wiring(|w| w.with_conversations(store))
        .start()
        .await
        .unwrap()
}

fn client(sub: &str) -> reqwest::Client {
    authed_client(&dev_token(sub, &["chat"]))
}

async fn chat(gw: &Gateway, who: &reqwest::Client, body: Value) -> (u16, Value) {
    let answer = gw.post_chat(who, &body).await.unwrap();
    (answer.status, answer.body)
}

async fn get(gw: &Gateway, who: &reqwest::Client, path: &str) -> (u16, Value) {
    let r = who.get(gw.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The messages the model received last, as (role, text).
fn sent_to_model(fake: &FakeBedrock) -> Vec<(String, String)> {
    fake.last_request().unwrap()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"][0]["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn scenario(store: Arc<dyn ConversationStore>) {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake, store, MemorySettings::default()).await;
    let (alice, bob) = (client("alice"), client("bob"));

    // A chat without conversation_id starts one.
    let (status, first) = chat(&gw, &alice, json!({"message": "one", "request_id": "q1"})).await;
    assert_eq!(status, 200, "{first}");
    let id = first["conversation_id"].as_str().unwrap().to_owned();
    let answer = first["message"]["content"].as_str().unwrap().to_owned();
    assert_eq!(answer, "Hello from fake Bedrock");

    // Two more: the model receives every earlier turn, in order.
    for (i, text) in [(2, "two"), (3, "three")] {
        let body = json!({"message": text, "conversation_id": id, "request_id": format!("q{i}")});
        let (status, reply) = chat(&gw, &alice, body).await;
        assert_eq!(
            (status, reply["conversation_id"].as_str()),
            (200, Some(id.as_str()))
        );
    }
    let expected: Vec<(String, String)> = [
        ("user", "one"),
        ("assistant", answer.as_str()),
        ("user", "two"),
        ("assistant", answer.as_str()),
        ("user", "three"),
    ]
    .iter()
    .map(|(r, t)| ((*r).to_owned(), (*t).to_owned()))
    .collect();
    assert_eq!(sent_to_model(&fake), expected);

    // Six turns in order through the REST API, and paged.
    let (status, conv) = get(&gw, &alice, &format!("/v1/conversations/{id}")).await;
    assert_eq!(status, 200, "{conv}");
    let turns = conv["turns"].as_array().unwrap();
    let seen: Vec<(&str, &str)> = turns
        .iter()
        .map(|t| (t["role"].as_str().unwrap(), t["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("user", "one"),
            ("assistant", answer.as_str()),
            ("user", "two"),
            ("assistant", answer.as_str()),
            ("user", "three"),
            ("assistant", answer.as_str())
        ]
    );
    assert_eq!(turns[1]["usage"]["output_tokens"], 4);
    assert!(conv["next_page_token"].is_null());
    let (_, page1) = get(&gw, &alice, &format!("/v1/conversations/{id}?limit=4")).await;
    let token = page1["next_page_token"].as_str().unwrap();
    let (_, page2) = get(
        &gw,
        &alice,
        &format!("/v1/conversations/{id}?limit=4&page_token={token}"),
    )
    .await;
    assert_eq!(page1["turns"].as_array().unwrap().len(), 4);
    assert_eq!(page2["turns"].as_array().unwrap().len(), 2);
    assert_eq!(page2["turns"][1]["content"], answer);

    // Bob cannot read, extend or delete it, and cannot tell it exists.
    let (status, body) = get(&gw, &bob, &format!("/v1/conversations/{id}")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let calls = fake.calls();
    let (status, _) = chat(
        &gw,
        &bob,
        json!({"message": "mine now", "conversation_id": id}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        fake.calls(),
        calls,
        "a refused chat never reaches the model"
    );
    let r = bob
        .delete(gw.url(&format!("/v1/conversations/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (_, bobs) = get(&gw, &bob, "/v1/conversations").await;
    assert_eq!(bobs["conversations"], json!([]));

    // A retried request id is answered from history: same answer, no model call, no new turn.
    let calls = fake.calls();
    let (status, again) = chat(
        &gw,
        &alice,
        json!({"message": "two", "conversation_id": id, "request_id": "q2"}),
    )
    .await;
    assert_eq!(
        (status, again["message"]["content"].as_str()),
        (200, Some(answer.as_str()))
    );
    let r = alice
        .post(gw.url("/v1/chat"))
        .header("idempotency-key", "q3")
        .json(&json!({"message": "three", "conversation_id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(fake.calls(), calls);
    let (status, _) = chat(
        &gw,
        &alice,
        json!({"message": "not two", "conversation_id": id, "request_id": "q2"}),
    )
    .await;
    assert_eq!(
        status, 400,
        "a reused request id with another message is a mistake"
    );

    // A failed chat and a cancelled one write nothing: history still alternates, six turns.
    let (status, failed) = chat(
        &gw,
        &alice,
        json!({"message": "boom", "conversation_id": id, "model": "fake.midstream-error"}),
    )
    .await;
    assert_eq!(status, 502, "{failed}");
    let stream = alice
        .post(gw.url("/v1/chat/stream"))
        .json(&json!({"message": "slow", "conversation_id": id, "model": "fake.slow"}))
        .send()
        .await
        .unwrap();
    let mut body = stream.bytes_stream();
    let first_bytes = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first_bytes).contains("start"));
    drop(body);
    assert!(
        fake.wait_for(Duration::from_secs(10), |f| f.aborted() == 1)
            .await
    );
    let (_, conv) = get(&gw, &alice, &format!("/v1/conversations/{id}")).await;
    assert_eq!(conv["turns"].as_array().unwrap().len(), 6);

    // Listing: newest first; bad paging and ids are 400s.
    let (_, second) = chat(&gw, &alice, json!({"message": "another topic"})).await;
    let (_, list) = get(&gw, &alice, "/v1/conversations?limit=1").await;
    assert_eq!(
        list["conversations"][0]["conversation_id"],
        second["conversation_id"]
    );
    assert_eq!(list["conversations"][0]["title"], "another topic");
    let token = list["next_page_token"].as_str().unwrap();
    let (_, list2) = get(
        &gw,
        &alice,
        &format!("/v1/conversations?limit=1&page_token={token}"),
    )
    .await;
    assert_eq!(list2["conversations"][0]["conversation_id"], json!(id));
    assert_eq!(list2["conversations"][0]["exchanges"], 3);
    for path in [
        "/v1/conversations?limit=0",
        "/v1/conversations?limit=abc",
        "/v1/conversations?page_token=%21",
        "/v1/conversations?color=red",
        "/v1/conversations/not%20an%20id",
    ] {
        let (status, body) = get(&gw, &alice, path).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_request")),
            "{path}"
        );
    }
    let (status, _) = chat(
        &gw,
        &alice,
        json!({"message": "x", "conversation_id": "no such id"}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = chat(
        &gw,
        &alice,
        json!({"message": "x", "conversation_id": "00000000-0000-0000-0000-000000000000"}),
    )
    .await;
    assert_eq!(status, 404);

    // Deletion.
    let r = alice
        .delete(gw.url(&format!("/v1/conversations/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, _) = get(&gw, &alice, &format!("/v1/conversations/{id}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn memory_on_sqlite() {
    scenario(Arc::new(SqliteConversationStore::new(
        Database::in_memory().unwrap(),
    )))
    .await;
}

#[tokio::test]
async fn memory_on_dynamodb() {
    let client = moto::dynamodb();
    let tables = moto::tables(&client).await.unwrap();
    scenario(Arc::new(DynamoConversationStore::new(
        client,
        tables.conversations,
    )))
    .await;
}

#[tokio::test]
async fn history_is_trimmed_oldest_first_to_the_context_budget() {
    let fake = FakeBedrock::start().await.unwrap();
    let store = Arc::new(SqliteConversationStore::new(Database::in_memory().unwrap()));
    // Each exchange here costs about 100 tokens (300 bytes of question, a short answer); the
    // budget leaves room for the new message, max_tokens 100, and two earlier exchanges.
    let settings = MemorySettings {
        context_tokens: 100 + 100 + 2 * 110 + 50,
        ..MemorySettings::default()
    };
    let gw = gateway(&fake, store, settings).await;
    let alice = client("alice");
    let mut id = Value::Null;
    for i in 0..5 {
        let message = format!("{i}{}", "q".repeat(299));
        let (status, reply) = chat(
            &gw,
            &alice,
            json!({"message": message, "conversation_id": id, "inference": {"max_tokens": 100}}),
        )
        .await;
        assert_eq!(status, 200, "{reply}");
        id = reply["conversation_id"].clone();
    }
    let sent = sent_to_model(&fake);
    assert_eq!(
        sent.len(),
        5,
        "two earlier exchanges and the new message: {sent:?}"
    );
    assert!(sent[0].1.starts_with('2') && sent[2].1.starts_with('3') && sent[4].1.starts_with('4'));
}

#[tokio::test]
async fn concurrent_retries_of_one_request_id_make_one_model_call() {
    let fake = FakeBedrock::start().await.unwrap();
    let store = Arc::new(SqliteConversationStore::new(Database::in_memory().unwrap()));
    let gw = gateway(&fake, store, MemorySettings::default()).await;
    let alice = client("alice");
    let (status, first) = chat(&gw, &alice, json!({"message": "hello"})).await;
    assert_eq!(status, 200, "{first}");
    let conversation = first["conversation_id"].as_str().unwrap().to_owned();
    let before = fake.calls();

    // Six sends of one retried request at once, to a slow model: one call, one answer for all.
    let body = json!({"message": "and then?", "model": "fake.slow", "conversation_id": conversation,
                      "request_id": "same"});
    let replies = futures::future::join_all((0..6).map(|_| chat(&gw, &alice, body.clone()))).await;
    assert_eq!(fake.calls(), before + 1, "one model call for six sends");
    let answers: Vec<&Value> = replies
        .iter()
        .map(|(_, r)| &r["message"]["content"])
        .collect();
    for (status, reply) in &replies {
        assert_eq!(*status, 200, "{reply}");
    }
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    let (_, history) = get(&gw, &alice, &format!("/v1/conversations/{conversation}")).await;
    assert_eq!(history["turns"].as_array().unwrap().len(), 4, "{history}");
}

#[tokio::test]
async fn a_retried_first_message_lands_in_the_conversation_it_started() {
    let fake = FakeBedrock::start().await.unwrap();
    let store = Arc::new(SqliteConversationStore::new(Database::in_memory().unwrap()));
    let gw = gateway(&fake, store, MemorySettings::default()).await;
    let (alice, bob) = (client("alice"), client("bob"));
    let body = json!({"message": "hello", "request_id": "first-1"});
    let (status, first) = chat(&gw, &alice, body.clone()).await;
    assert_eq!(status, 200, "{first}");
    let calls = fake.calls();

    // The same first message again: the same conversation, the stored answer, no model call.
    let (status, again) = chat(&gw, &alice, body.clone()).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["conversation_id"], first["conversation_id"]);
    assert_eq!(again["message"]["content"], first["message"]["content"]);
    assert_eq!(fake.calls(), calls);
    let (_, listed) = get(&gw, &alice, "/v1/conversations").await;
    assert_eq!(
        listed["conversations"].as_array().unwrap().len(),
        1,
        "{listed}"
    );

    // Another message under the same request id is the client's mistake, as in a conversation.
    let (status, reused) = chat(
        &gw,
        &alice,
        json!({"message": "other", "request_id": "first-1"}),
    )
    .await;
    assert_eq!(status, 400, "{reused}");
    // Someone else's request id is theirs: Bob starts a conversation of his own.
    let (status, his) = chat(&gw, &bob, body).await;
    assert_eq!(status, 200, "{his}");
    assert_ne!(his["conversation_id"], first["conversation_id"]);
    assert_eq!(fake.calls(), calls + 1);
}

#[tokio::test]
async fn a_full_database_is_a_retryable_unavailable_and_readiness_says_why() {
    // The database may not grow past 160 KiB: the schema fits, a few long exchanges do not,
    // and then every write fails as on a full disk.
    let gw = Gateway::builder()
        .model(Arc::new(nagare_gateway::provider::MockProvider::new(
            nagare_gateway::provider::MockSettings::unpaced(),
        )))
        .models("mock", &[])
        .config(|c| {
            c.memory.enabled = true;
            c.store.sqlite_max_bytes = 160 * 1024;
        })
        .start()
        .await
        .unwrap();
    let alice = client("alice");
    let long = "a long prompt to fill the disk ".repeat(700);
    let mut failed = None;
    for _ in 0..40 {
        let (status, body) = chat(&gw, &alice, json!({ "message": long })).await;
        if status != 200 {
            failed = Some((status, body));
            break;
        }
    }
    let (status, body) = failed.expect("forty long exchanges fit in 160 KiB");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert_eq!(body["error"]["retryable"], true);
    let ready = alice.get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "store_failing", "{ready}");
    assert!(
        ready["reason"].as_str().unwrap().contains("full"),
        "{ready}"
    );
}

/// The SQLite store, counting what a chat reads of it.
struct Counted {
    inner: SqliteConversationStore,
    turns_read: std::sync::atomic::AtomicUsize,
    whole_reads: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl ConversationStore for Counted {
    async fn history(
        &self,
        owner: &str,
        id: &str,
    ) -> Result<Option<(ConversationMeta, Vec<Turn>)>, Error> {
        self.whole_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.history(owner, id).await
    }
    async fn recent(
        &self,
        owner: &str,
        id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Option<Vec<Turn>>, Error> {
        let turns = self.inner.recent(owner, id, before, limit).await?;
        let read = turns.as_ref().map_or(0, Vec::len);
        self.turns_read.fetch_add(read, Ordering::SeqCst);
        Ok(turns)
    }
    async fn exchange_of(
        &self,
        owner: &str,
        id: &str,
        request_id: &str,
    ) -> Result<Option<(Turn, Turn)>, Error> {
        self.inner.exchange_of(owner, id, request_id).await
    }
    async fn append(
        &self,
        owner: &str,
        id: &str,
        title: &str,
        exchange: &Exchange,
        now: u64,
    ) -> Result<Appended, Error> {
        self.inner.append(owner, id, title, exchange, now).await
    }
    async fn list(
        &self,
        owner: &str,
        limit: usize,
        page: Option<&str>,
    ) -> Result<Page<ConversationMeta>, Error> {
        self.inner.list(owner, limit, page).await
    }
    async fn turns(
        &self,
        owner: &str,
        id: &str,
        limit: usize,
        page: Option<&str>,
    ) -> Result<Option<Page<Turn>>, Error> {
        self.inner.turns(owner, id, limit, page).await
    }
    async fn delete(&self, owner: &str, id: &str) -> Result<bool, Error> {
        self.inner.delete(owner, id).await
    }
}

#[tokio::test]
async fn a_thousand_turn_conversation_reads_what_its_budget_needs_not_its_length() {
    let store = Arc::new(Counted {
        inner: SqliteConversationStore::new(Database::in_memory().unwrap()),
        turns_read: Default::default(),
        whole_reads: Default::default(),
    });
    let words = "word ".repeat(60); // 300 bytes: 100 tokens a turn by the gateway's estimate
    for i in 1..=500u64 {
        let x = Exchange {
            request_id: format!("old{i}"),
            user: format!("q{i} {words}").into(),
            assistant: format!("a{i} {words}").into(),
            usage: Usage::new(1, 1),
            stop_reason: "end_turn".into(),
            model: "fake".into(),
        };
        store.append("alice", "long", "long", &x, i).await.unwrap();
    }
    let fake = FakeBedrock::start().await.unwrap();
    let settings = MemorySettings {
        context_tokens: 3_000,
        ..MemorySettings::default()
    };
    let gw = gateway(&fake, store.clone(), settings).await;
    let alice = client("alice");
    let body = json!({"message": "and now?", "conversation_id": "long",
                      "inference": {"max_tokens": 100}});
    let (status, answer) = chat(&gw, &alice, body).await;
    assert_eq!(status, 200, "{answer}");
    // The budget holds about 14 exchanges: one page of 16 is read, of 500.
    let read = store.turns_read.load(Ordering::SeqCst);
    assert_eq!(read, 32, "turns read");
    assert_eq!(store.whole_reads.load(Ordering::SeqCst), 0);
    let sent = fake.last_request().unwrap();
    let messages = sent["messages"].as_array().unwrap();
    assert!(
        messages.len() < 32 && messages.len() > 20,
        "{}",
        messages.len()
    );
    assert!(
        messages[messages.len() - 2]["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("a500")
    );
    // A retry of a request answered long ago is still found, by its id, and replayed.
    let retry = json!({"message": "q3 ".to_owned() + &words, "conversation_id": "long",
                       "request_id": "old3"});
    let calls = fake.calls();
    let (status, answer) = chat(&gw, &alice, retry).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("a3 "),
        "{answer}"
    );
    assert_eq!(fake.calls(), calls, "a replay calls no model");
}
