#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What attachments leave behind, collected: upload URLs and ids that expire, the sweep of
//! expired uploads and of blobs nothing names (with a clock the test sets), and exchanges past
//! their retention taking their blobs with them.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use nagare_gateway::provider::{MockProvider, MockSettings};
use nagare_tests::fake_converse::attachments;
use nagare_tests::samples::{png, sha256_hex};
use nagare_tests::{FakeBedrock, Gateway, authed_client, bedrock_provider, dev_token, put_bytes};
use serde_json::json;

use super::{ask_about, blobs, fake_gateway};

#[tokio::test]
async fn an_upload_url_expires_and_an_expired_upload_cannot_be_named() {
    let gw = Gateway::builder()
        .model(Arc::new(MockProvider::new(MockSettings::unpaced())))
        .models("mock", &[])
        .config(|c| c.uploads.ttl_secs = 2)
        .start()
        .await
        .unwrap();
    let alice = authed_client(&dev_token("alice", &["chat"]));
    let picture = png(4, 4, 0);
    let (_, ticket) = gw
        .declare_upload(&alice, "a.png", "image/png", &picture)
        .await;
    let stored = gw.upload(&alice, "b.png", "image/png", &picture).await;
    // Upload expiry is in whole seconds: past the second after the last one it covers.
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let (status, answer) = put_bytes(&ticket, picture.clone()).await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{answer}"
    );
    let answer = gw.post_chat(&alice, &ask_about(&stored)).await.unwrap();
    assert_eq!(answer.status, 404, "{}", answer.body);
}

#[tokio::test]
async fn the_sweep_collects_expired_uploads_and_blobs_nothing_names_and_keeps_the_rest() {
    use std::time::{Duration, SystemTime};

    let fake = FakeBedrock::start().await.unwrap();
    let gw = fake_gateway(&fake, true).await;
    let alice = authed_client(&dev_token("alice", &["chat"]));
    let (kept, unused, inline) = (png(20, 20, 1), png(20, 20, 2), png(20, 20, 3));
    let id = gw.upload(&alice, "kept.png", "image/png", &kept).await;
    let answer = gw.post_chat(&alice, &ask_about(&id)).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let conversation = answer.body["conversation_id"].as_str().unwrap().to_owned();
    gw.upload(&alice, "unused.png", "image/png", &unused).await;
    gw.declare_upload(&alice, "never.png", "image/png", &unused)
        .await;
    let stateless = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "this?"},
        {"type": "image", "source": {"bytes": BASE64.encode(&inline)}}]}]});
    assert_eq!(gw.post_chat(&alice, &stateless).await.unwrap().status, 200);
    let names = |gw: &Gateway| {
        let mut names: Vec<String> = blobs(gw)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&gw).len(), 3);

    let sweep = &gw.app.sweep;
    assert_eq!(gw.app.sweep_every, Some(Duration::from_secs(3600)));
    // Now: every upload is live, and every blob within its grace period.
    let swept = sweep.run(SystemTime::now()).await.unwrap();
    assert_eq!((swept.uploads, swept.blobs), (0, 0));
    // Two days on (a clock the test sets): the three upload records have expired; the blob the
    // conversation names stays, the unused and the stateless chat's ones go.
    let later = SystemTime::now() + Duration::from_secs(2 * 24 * 3600);
    let swept = sweep.run(later).await.unwrap();
    assert_eq!((swept.uploads, swept.blobs), (3, 2));
    assert_eq!(names(&gw), [sha256_hex(&kept)]);
    let (status, _) = gw.get_json(&alice, &format!("/v1/uploads/{id}")).await;
    assert_eq!(status, 404, "an expired upload is gone");
    // The conversation still has its picture.
    let next = json!({"message": "and again?", "conversation_id": conversation});
    assert_eq!(gw.post_chat(&alice, &next).await.unwrap().status, 200);
    assert_eq!(
        attachments(&fake.last_request().unwrap()),
        vec![("png".to_owned(), kept)]
    );
    // Deleting the conversation drops its reference; the next sweep collects the blob.
    let response = alice
        .delete(gw.url(&format!("/v1/conversations/{conversation}")))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let swept = sweep.run(later).await.unwrap();
    assert_eq!((swept.uploads, swept.blobs), (0, 1));
    assert!(blobs(&gw).is_empty());
}

#[tokio::test]
async fn exchanges_past_the_retention_go_and_take_their_blobs_with_them() {
    use std::time::{Duration, SystemTime};

    let fake = FakeBedrock::start().await.unwrap();
    let gw = Gateway::builder()
        .model(Arc::new(bedrock_provider(&fake.url())))
        .models("fake.model", &[])
        .config(|c| {
            c.memory.enabled = true;
            c.memory.retention_days = 1;
        })
        .start()
        .await
        .unwrap();
    let alice = authed_client(&dev_token("alice", &["chat"]));
    let picture = png(12, 12, 6);
    let id = gw.upload(&alice, "p.png", "image/png", &picture).await;
    let answer = gw.post_chat(&alice, &ask_about(&id)).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let conversation = answer.body["conversation_id"].as_str().unwrap().to_owned();
    let sweep = &gw.app.sweep;
    // Twelve hours on, the exchange is within its day.
    let soon = SystemTime::now() + Duration::from_secs(12 * 3600);
    let swept = sweep.run(soon).await.unwrap();
    assert_eq!(swept.exchanges, 0);
    let (status, _) = gw
        .get_json(&alice, &format!("/v1/conversations/{conversation}"))
        .await;
    assert_eq!(status, 200);
    // Two days on: the exchange, then its conversation, then (its upload expired too) the blob.
    let later = SystemTime::now() + Duration::from_secs(2 * 24 * 3600);
    let swept = sweep.run(later).await.unwrap();
    assert_eq!((swept.exchanges, swept.uploads, swept.blobs), (1, 1, 1));
    let (status, _) = gw
        .get_json(&alice, &format!("/v1/conversations/{conversation}"))
        .await;
    assert_eq!(status, 404, "a conversation with no exchange left is gone");
    assert!(blobs(&gw).is_empty());
}
