#![allow(clippy::unwrap_used, clippy::expect_used)]
//! One suite, two conversation stores: SQLite (embedded) and DynamoDB (moto's server, through
//! the real SDK): ordering, ownership, idempotent retries, concurrent appends, pagination,
//! deletion, unicode, large content and bad page tokens.

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use nagare_gateway::chat::{Block, Reference, Role, ToolResultContent, ToolStatus, Usage};
use nagare_gateway::store::{
    Appended, ConversationStore, Database, DynamoConversationStore, Exchange, MAX_TURN_BYTES,
    SqliteConversationStore, Stored,
};
use nagare_tests::fake_lambda::workspace_binary;
use nagare_tests::moto;

fn exchange(request_id: &str, user: &str, assistant: &str) -> Exchange {
    Exchange {
        request_id: request_id.into(),
        user: user.into(),
        assistant: assistant.into(),
        usage: Usage::new(3, 5),
        stop_reason: "end_turn".into(),
        model: "m1".into(),
    }
}

async fn suite(store: Arc<dyn ConversationStore>) {
    // Ordering over 100 exchanges, read back whole and page by page.
    for i in 1..=100u64 {
        let x = exchange(&format!("r{i}"), &format!("q{i}"), &format!("a{i}"));
        assert_eq!(
            store
                .append("alice", "c1", "first", &x, 1000 + i)
                .await
                .unwrap(),
            Appended::New(i)
        );
    }
    let (meta, turns) = store.history("alice", "c1").await.unwrap().unwrap();
    assert_eq!(
        (
            meta.exchanges,
            meta.title.as_str(),
            meta.created_at,
            meta.updated_at
        ),
        (100, "first", 1001, 1100)
    );
    assert_eq!(turns.len(), 200);
    // Newest first, a page of whole exchanges at a time, each page oldest first.
    let page = store
        .recent("alice", "c1", None, 16)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.len(), 32);
    assert_eq!((page[0].exchange, page[0].role), (85, Role::User));
    assert_eq!((page[31].exchange, page[31].role), (100, Role::Assistant));
    let older = store
        .recent("alice", "c1", Some(85), 16)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((older[0].exchange, older[31].exchange), (69, 84));
    let first = store
        .recent("alice", "c1", Some(3), 16)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.len(), 4, "exchanges 1 and 2");
    assert!(store.recent("bob", "c1", None, 16).await.unwrap().is_none());
    let (user, answer) = store
        .exchange_of("alice", "c1", "r7")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (user.content.as_str(), answer.content.as_str()),
        ("q7", "a7")
    );
    assert!(
        store
            .exchange_of("alice", "c1", "r999")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .exchange_of("bob", "c1", "r7")
            .await
            .unwrap()
            .is_none()
    );
    for (i, pair) in turns.chunks(2).enumerate() {
        let n = i as u64 + 1;
        assert_eq!(
            (pair[0].exchange, pair[0].role, pair[0].content.clone()),
            (n, Role::User, format!("q{n}"))
        );
        assert_eq!(
            (pair[1].exchange, pair[1].role, pair[1].content.clone()),
            (n, Role::Assistant, format!("a{n}"))
        );
        assert_eq!(pair[0].usage, None);
        assert_eq!(pair[1].usage.unwrap().output_tokens, 5);
        assert_eq!(pair[1].stop_reason.as_deref(), Some("end_turn"));
    }
    let mut paged = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = store
            .turns("alice", "c1", 7, token.as_deref())
            .await
            .unwrap()
            .unwrap();
        assert!(page.items.len() <= 7);
        paged.extend(page.items);
        match page.next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(paged, turns);

    // A retried request id changes nothing and says where it went.
    let retry = exchange("r7", "q7 again", "a7 again");
    assert_eq!(
        store
            .append("alice", "c1", "x", &retry, 2000)
            .await
            .unwrap(),
        Appended::Duplicate(7)
    );
    assert_eq!(
        store
            .history("alice", "c1")
            .await
            .unwrap()
            .unwrap()
            .0
            .exchanges,
        100
    );

    // Ownership: bob sees nothing of alice's, and cannot write into it or delete it.
    assert!(store.history("bob", "c1").await.unwrap().is_none());
    assert!(store.turns("bob", "c1", 10, None).await.unwrap().is_none());
    let e = store
        .append("bob", "c1", "x", &exchange("b1", "hi", "yo"), 2000)
        .await
        .unwrap_err();
    assert_eq!(e.code().as_str(), "not_found");
    assert!(!store.delete("bob", "c1").await.unwrap());
    assert!(store.history("alice", "c1").await.unwrap().is_some());

    // Concurrent appends to one conversation: all land, whole, at distinct numbers.
    let racers = (0..10).map(|i| {
        let store = store.clone();
        async move {
            let x = exchange(&format!("race{i}"), &format!("rq{i}"), &format!("ra{i}"));
            store
                .append("alice", "c2", "race", &x, 3000 + i)
                .await
                .unwrap()
        }
    });
    let mut numbers: Vec<u64> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(|a| match a {
            Appended::New(n) => n,
            other => panic!("{other:?}"),
        })
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=10).collect::<Vec<_>>());
    let (_, turns) = store.history("alice", "c2").await.unwrap().unwrap();
    for pair in turns.chunks(2) {
        // Each exchange's two turns belong to the same request: nothing interleaved.
        assert_eq!(pair[0].request_id, pair[1].request_id);
        assert_eq!(
            pair[0].content.replace("rq", ""),
            pair[1].content.replace("ra", "")
        );
    }

    // Unicode and large content survive unchanged; too large is refused before any write.
    let big = "語".repeat(MAX_TURN_BYTES / 3 - 10);
    let text = "emoji 🎉, RTL שלום, NUL-free \u{7f} and \"quotes\"\n";
    store
        .append("alice", "c3", "unicode", &exchange("u1", text, &big), 4000)
        .await
        .unwrap();
    let (_, turns) = store.history("alice", "c3").await.unwrap().unwrap();
    assert_eq!(
        (turns[0].content.as_str(), turns[1].content.len()),
        (text, big.len())
    );
    let huge = "x".repeat(MAX_TURN_BYTES + 1);
    let e = store
        .append("alice", "c4", "huge", &exchange("h1", &huge, "a"), 4000)
        .await
        .unwrap_err();
    assert_eq!(e.code().as_str(), "payload_too_large");
    assert!(store.history("alice", "c4").await.unwrap().is_none());

    // Listing: own conversations only, most recently updated first, paginated.
    store
        .append("bob", "b1", "bob's", &exchange("b1", "hi", "yo"), 5000)
        .await
        .unwrap();
    let mut listed = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = store.list("alice", 2, token.as_deref()).await.unwrap();
        listed.extend(page.items.into_iter().map(|m| m.conversation_id));
        match page.next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(listed, ["c3", "c2", "c1"]);
    for bad in ["garbage", "eyJ1Ijo1fQ"] {
        let e = store.list("alice", 2, Some(bad)).await.unwrap_err();
        assert_eq!(e.code().as_str(), "invalid_request");
        let e = store.turns("alice", "c1", 2, Some(bad)).await.unwrap_err();
        assert_eq!(e.code().as_str(), "invalid_request");
    }

    // Blocks come back as they went in; text-only messages stay text.
    let call = vec![
        Block::Reasoning {
            text: "hm".into(),
            signature: Some("sig".into()),
        },
        Block::ToolUse {
            id: "t1".into(),
            name: "get_weather".into(),
            input: serde_json::json!({"city": "東京", "n": [1, 2.5]}),
        },
    ];
    let result = vec![Block::ToolResult {
        tool_use_id: "t1".into(),
        content: vec![ToolResultContent::Json(serde_json::json!({"c": 21}))],
        status: Some(ToolStatus::Success),
    }];
    for (request_id, user, answer) in [
        ("b1", vec![Block::text("weather?")], call.clone()),
        ("b2", result.clone(), vec![Block::text("21 C")]),
    ] {
        let x = Exchange {
            request_id: request_id.into(),
            user: Stored::of(&user),
            assistant: Stored::of(&answer),
            ..exchange(request_id, "", "")
        };
        store
            .append("alice", "blocks", "b", &x, 7000)
            .await
            .unwrap();
    }
    let (_, turns) = store.history("alice", "blocks").await.unwrap().unwrap();
    assert_eq!(turns[0].blocks, None);
    assert_eq!(turns[1].blocks.as_deref(), Some(&call[..]));
    assert_eq!(turns[1].content, "", "no text in a tool call");
    assert_eq!(turns[2].blocks.as_deref(), Some(&result[..]));
    assert_eq!(turns[3].blocks(), [Block::text("21 C")]);

    // A knowledge-base answer keeps its sources; its question has none.
    let sources = vec![Reference {
        n: 1,
        id: "leave#1".into(),
        title: "Leave — 休暇".into(),
        uri: Some("https://intranet.example/leave".into()),
        score: 4.25,
        snippet: "Up to 5 unused days carry over.".into(),
    }];
    let x = Exchange {
        assistant: Stored::of(&[Block::text("Five [1].")]).with_sources(Some(&sources)),
        ..exchange("k1", "carry-over?", "")
    };
    store.append("alice", "kb", "k", &x, 7100).await.unwrap();
    let (_, turns) = store.history("alice", "kb").await.unwrap().unwrap();
    assert_eq!(turns[0].sources, None);
    assert_eq!(turns[1].sources.as_deref(), Some(&sources[..]));
    assert_eq!(turns[1].content, "Five [1].");

    // Deletion removes everything; the id can then start afresh.
    assert!(store.delete("alice", "c1").await.unwrap());
    assert!(store.history("alice", "c1").await.unwrap().is_none());
    assert!(!store.delete("alice", "c1").await.unwrap());
    let x = exchange("r1", "again", "fresh");
    assert_eq!(
        store.append("alice", "c1", "new", &x, 6000).await.unwrap(),
        Appended::New(1)
    );
    let (_, turns) = store.history("alice", "c1").await.unwrap().unwrap();
    assert_eq!(turns.len(), 2);
}

#[tokio::test]
async fn sqlite_conversations_keep_the_contract() {
    suite(Arc::new(SqliteConversationStore::new(
        Database::in_memory().unwrap(),
    )))
    .await;
}

#[tokio::test]
async fn dynamodb_conversations_keep_the_contract() {
    let client = moto::dynamodb();
    let tables = moto::tables(&client).await.unwrap();
    suite(Arc::new(DynamoConversationStore::new(
        client,
        tables.conversations,
    )))
    .await;
}

#[tokio::test]
async fn nagare_create_tables_creates_once_then_reports_existing() {
    let suffix = format!(
        "{}-{}",
        std::process::id(),
        nagare_gateway::store::unix_now_ms()
    );
    let (connections, conversations, cache, limits, tasks, uploads) = (
        format!("conn-{suffix}"),
        format!("conv-{suffix}"),
        format!("cache-{suffix}"),
        format!("limits-{suffix}"),
        format!("tasks-{suffix}"),
        format!("uploads-{suffix}"),
    );
    let run = || {
        std::process::Command::new(workspace_binary("nagare").unwrap())
            .arg("create-tables")
            .env_clear()
            .env("AWS_ENDPOINT_URL_DYNAMODB", moto::url())
            .env("AWS_ACCESS_KEY_ID", "AKIDNAGARETEST")
            .env("AWS_SECRET_ACCESS_KEY", "nagare-test-secret")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NAGARE__STORE__CONNECTIONS_TABLE", &connections)
            .env("NAGARE__STORE__CONVERSATIONS_TABLE", &conversations)
            .env("NAGARE__CACHE__TABLE", &cache)
            .env("NAGARE__RATE_LIMITS__TABLE", &limits)
            .env("NAGARE__TASKS__TABLE", &tasks)
            .env("NAGARE__UPLOADS__TABLE", &uploads)
            .output()
            .unwrap()
    };
    let first = run();
    assert!(first.status.success(), "{first:?}");
    assert_eq!(
        String::from_utf8_lossy(&first.stdout),
        format!(
            "{connections}: created\n{conversations}: created\n{cache}: created\n{limits}: created\n{tasks}: created\n{uploads}: created\n"
        )
    );
    let second = run();
    assert_eq!(
        String::from_utf8_lossy(&second.stdout),
        format!(
            "{connections}: exists\n{conversations}: exists\n{cache}: exists\n{limits}: exists\n{tasks}: exists\n{uploads}: exists\n"
        )
    );
    let table = moto::dynamodb()
        .describe_table()
        .table_name(&conversations)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    assert_eq!(
        table.global_secondary_indexes()[0].index_name(),
        Some("owner-updated")
    );
}

#[tokio::test]
async fn sqlite_exchanges_past_their_retention_are_deleted_with_what_they_name() {
    let store = SqliteConversationStore::new(Database::in_memory().unwrap());
    let sha = "ab".repeat(32);
    let mut named = exchange("r1", "q1", "a1");
    named.user.blobs = vec![sha.clone()];
    // Exchanges written at 1000, 2000 and 3000 ms; another conversation's at 1500.
    store
        .append("alice", "c1", "t", &named, 1000)
        .await
        .unwrap();
    for (i, at) in [(2, 2000), (3, 3000)] {
        let x = exchange(&format!("r{i}"), &format!("q{i}"), &format!("a{i}"));
        store.append("alice", "c1", "t", &x, at).await.unwrap();
    }
    store
        .append("alice", "c2", "t", &exchange("s1", "q", "a"), 1500)
        .await
        .unwrap();
    assert!(store.names_blob(&sha).await.unwrap());
    assert_eq!(store.expire(2500).await.unwrap(), 3);
    let (meta, turns) = store.history("alice", "c1").await.unwrap().unwrap();
    assert_eq!(meta.exchanges, 3, "numbering goes on");
    assert_eq!(turns.iter().map(|t| t.exchange).collect::<Vec<_>>(), [3, 3]);
    assert!(
        store.history("alice", "c2").await.unwrap().is_none(),
        "emptied, so gone"
    );
    assert!(
        !store.names_blob(&sha).await.unwrap(),
        "its reference went with its turn"
    );
    assert_eq!(store.expire(2500).await.unwrap(), 0);
}

#[tokio::test]
async fn dynamodb_items_carry_their_retention_as_a_ttl() {
    let client = moto::dynamodb();
    let tables = moto::tables(&client).await.unwrap();
    let day = std::time::Duration::from_secs(24 * 3600);
    let store = DynamoConversationStore::new(client.clone(), &tables.conversations)
        .with_retention(Some(day));
    store
        .append("alice", "c1", "t", &exchange("r1", "q", "a"), 10_000)
        .await
        .unwrap();
    store
        .append("alice", "c1", "t", &exchange("r2", "q", "a"), 20_000)
        .await
        .unwrap();
    let items = client
        .query()
        .table_name(&tables.conversations)
        .key_condition_expression("conversation_id = :id")
        .expression_attribute_values(":id", AttributeValue::S("c1".into()))
        .send()
        .await
        .unwrap()
        .items
        .unwrap();
    let ttl_of = |sk: &str| {
        let item = items
            .iter()
            .find(|i| i["sk"].as_s().unwrap() == sk)
            .unwrap();
        item["ttl"].as_n().unwrap().parse::<u64>().unwrap()
    };
    assert_eq!(ttl_of("T#00000001#0"), 10 + day.as_secs());
    assert_eq!(ttl_of("R#r1"), 10 + day.as_secs());
    assert_eq!(ttl_of("T#00000002#1"), 20 + day.as_secs());
    assert_eq!(
        ttl_of("META"),
        20 + day.as_secs(),
        "the conversation lasts as its newest"
    );
}
