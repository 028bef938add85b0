#![allow(clippy::unwrap_used, clippy::expect_used)]
//! One contract, two connection stores: SQLite (embedded) and DynamoDB (moto's server, through
//! the real SDK).

use std::sync::Arc;

use nagare_gateway::store::{
    AdmitRefusal, ChatState, ConnectionRecord, ConnectionStore, Database, DynamoConnectionStore,
    SqliteConnectionStore, create_tables, unix_now,
};
use nagare_tests::moto;

fn record(id: &str, ttl: u64) -> ConnectionRecord {
    ConnectionRecord {
        connection_id: id.into(),
        sub: "alice".into(),
        tenant: "acme".into(),
        scopes: "chat".into(),
        domain: "abc.execute-api.us-east-1.amazonaws.com".into(),
        stage: "prod".into(),
        connected_at: unix_now(),
        ttl,
    }
}

/// One user's seats: at most `max` live connections, given back on disconnect.
async fn seats(store: &dyn ConnectionStore) {
    let live = unix_now() + 3600;
    let opened: Vec<ConnectionRecord> = (0..3).map(|i| record(&format!("s{i}"), live)).collect();
    for r in &opened[..2] {
        assert!(store.seat(r, 2).await.unwrap());
        store.put(r).await.unwrap();
    }
    // Taking a seat twice for one connection is one seat.
    assert!(store.seat(&opened[0], 2).await.unwrap());
    assert!(
        !store.seat(&opened[2], 2).await.unwrap(),
        "a third connection over a cap of 2"
    );
    let mut bob = record("b0", live);
    bob.sub = "bob".into();
    assert!(
        store.seat(&bob, 2).await.unwrap(),
        "another user has seats of their own"
    );
    // One closes: its seat is free again.
    store.delete("s0").await.unwrap();
    store.unseat(&opened[0]).await.unwrap();
    assert!(store.seat(&opened[2], 2).await.unwrap());
    // A connection that expired without $disconnect holds no seat.
    let mut lapsed = record("s9", unix_now() + 1);
    lapsed.sub = "carol".into();
    assert!(store.seat(&lapsed, 1).await.unwrap());
    store.put(&lapsed).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let mut next = record("s10", live);
    next.sub = "carol".into();
    assert!(
        store.seat(&next, 1).await.unwrap(),
        "the lapsed connection's seat is free"
    );
}

async fn contract(store: Arc<dyn ConnectionStore>) {
    seats(store.as_ref()).await;
    let live = unix_now() + 3600;
    let c1 = record("c1", live);
    store.put(&c1).await.unwrap();
    assert_eq!(store.get("c1").await.unwrap(), Some(c1));
    assert_eq!(store.get("unknown").await.unwrap(), None);

    // Admission: duplicates and chats over the limit are refused.
    assert_eq!(store.admit("c1", "r1", 2).await.unwrap(), Ok(()));
    assert_eq!(
        store.admit("c1", "r1", 2).await.unwrap(),
        Err(AdmitRefusal::Duplicate)
    );
    assert_eq!(store.admit("c1", "r2", 2).await.unwrap(), Ok(()));
    assert_eq!(
        store.admit("c1", "r3", 2).await.unwrap(),
        Err(AdmitRefusal::AtLimit { max: 2 })
    );
    assert_eq!(
        store.admit("unknown", "r1", 2).await.unwrap(),
        Err(AdmitRefusal::UnknownConnection)
    );

    // Cancellation is seen by the streaming side, for that chat only.
    assert_eq!(
        store.chat_state("c1", "r1").await.unwrap(),
        ChatState::Active
    );
    assert!(store.cancel("c1", "r1").await.unwrap());
    assert!(!store.cancel("c1", "not-in-flight").await.unwrap());
    assert_eq!(
        store.chat_state("c1", "r1").await.unwrap(),
        ChatState::Cancelled
    );
    assert_eq!(
        store.chat_state("c1", "r2").await.unwrap(),
        ChatState::Active
    );
    assert_eq!(store.chat_state("c1", "r9").await.unwrap(), ChatState::Gone);

    // Finishing frees the slot.
    store.finish("c1", "r1").await.unwrap();
    assert_eq!(store.chat_state("c1", "r1").await.unwrap(), ChatState::Gone);
    assert_eq!(store.admit("c1", "r3", 2).await.unwrap(), Ok(()));

    // Deleting the connection ends its chats; a late finish does not bring it back.
    store.delete("c1").await.unwrap();
    assert_eq!(store.get("c1").await.unwrap(), None);
    assert_eq!(store.chat_state("c1", "r2").await.unwrap(), ChatState::Gone);
    store.finish("c1", "r2").await.unwrap();
    assert_eq!(store.get("c1").await.unwrap(), None);
    store.delete("c1").await.unwrap();

    // An expired record is as good as gone, even before anything deletes it.
    store.put(&record("c2", unix_now() - 1)).await.unwrap();
    assert_eq!(store.get("c2").await.unwrap(), None);
    assert_eq!(
        store.admit("c2", "r1", 8).await.unwrap(),
        Err(AdmitRefusal::UnknownConnection)
    );

    // Admission is atomic: of 20 concurrent chats, exactly the limit get in.
    store.put(&record("c3", live)).await.unwrap();
    let attempts = (0..20).map(|i| {
        let store = store.clone();
        async move { store.admit("c3", &format!("r{i}"), 8).await.unwrap() }
    });
    let results = futures::future::join_all(attempts).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        8,
        "{results:?}"
    );
}

#[tokio::test]
async fn sqlite_store_keeps_the_contract() {
    contract(Arc::new(SqliteConnectionStore::new(
        Database::in_memory().unwrap(),
    )))
    .await;
}

#[tokio::test]
async fn sqlite_store_survives_a_reopen() {
    let dir = std::env::temp_dir().join(format!("nagare-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("nagare.db");
    let record = record("c1", unix_now() + 60);
    SqliteConnectionStore::new(Database::open(&path, 0).unwrap())
        .put(&record)
        .await
        .unwrap();
    let reopened = SqliteConnectionStore::new(Database::open(&path, 0).unwrap());
    assert_eq!(reopened.get("c1").await.unwrap(), Some(record));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn dynamodb_store_keeps_the_contract() {
    let client = moto::dynamodb();
    let tables = moto::tables(&client).await.unwrap();
    contract(Arc::new(DynamoConnectionStore::new(
        client,
        tables.connections,
    )))
    .await;
}

#[tokio::test]
async fn creating_the_tables_twice_is_harmless() {
    let client = moto::dynamodb();
    let tables = moto::tables(&client).await.unwrap();
    assert!(create_tables(&client, &tables).await.unwrap().is_empty());
}

#[tokio::test]
async fn dynamodb_store_reports_a_missing_table_as_unavailable_without_details() {
    let store = DynamoConnectionStore::new(moto::dynamodb(), "no-such-table");
    let err = store.get("c1").await.unwrap_err();
    assert_eq!(err.code().as_str(), "unavailable");
    assert!(err.retryable());
    assert!(!err.public_message().contains("no-such-table"), "{err}");
}
