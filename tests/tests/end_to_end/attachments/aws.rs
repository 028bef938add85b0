#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Attachments as on AWS: upload records in DynamoDB and bytes in S3, both on moto's server;
//! presigned PUTs straight to the bucket, checked when first used, and the sweep of blobs no
//! conversation in DynamoDB names.

use std::sync::Arc;

use nagare_gateway::store::StoreKind;
use nagare_gateway::uploads::BlobKind;
use nagare_tests::fake_converse::attachments;
use nagare_tests::samples::{png, sha256_hex};
use nagare_tests::{
    FakeBedrock, Gateway, authed_client, bedrock_provider, dev_token, moto, put_bytes,
};
use serde_json::json;

use super::ask_about;

/// A gateway as on AWS: records in DynamoDB and bytes in S3, both on moto's server.
async fn aws_gateway(fake: &FakeBedrock) -> (Gateway, aws_sdk_s3::Client, String) {
    let tables = moto::tables(&moto::dynamodb()).await.unwrap();
    let s3 = moto::s3();
    let bucket = moto::bucket(&s3).await.unwrap();
    let in_bucket = bucket.clone();
    let gw = Gateway::builder()
        .model(Arc::new(bedrock_provider(&fake.url())))
        .models("fake.model", &[])
        .config(move |c| {
            c.store.kind = StoreKind::Dynamodb;
            c.store.connections_table = tables.connections;
            c.store.conversations_table = tables.conversations;
            c.memory.enabled = true;
            c.uploads.table = tables.uploads;
            c.uploads.store = BlobKind::S3;
            c.uploads.bucket = in_bucket;
            c.uploads.prefix = "chat/".into();
            c.uploads.s3_force_path_style = true;
        })
        .wiring(|w| w.with_sdk_config(moto::sdk_config()))
        .start()
        .await
        .unwrap();
    (gw, s3, bucket)
}

async fn exists(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> bool {
    s3.head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .is_ok()
}

#[tokio::test]
async fn on_aws_the_bytes_go_straight_to_s3_by_a_presigned_put_and_are_checked_before_use() {
    let fake = FakeBedrock::start().await.unwrap();
    let (gw, s3, bucket) = aws_gateway(&fake).await;
    let alice = authed_client(&dev_token("alice", &["chat"]));
    let picture = png(300, 200, 4);
    let (status, ticket) = gw
        .declare_upload(&alice, "photo.png", "image/png", &picture)
        .await;
    assert_eq!(status, 201, "{ticket}");
    let url = ticket["put_url"].as_str().unwrap();
    let id = ticket["upload_id"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/{bucket}/chat/incoming/{id}?", moto::url())),
        "{url}"
    );
    assert!(url.contains("X-Amz-Signature="), "{url}");
    // Straight to S3, with the headers the URL signed; never through the gateway.
    let signed: Vec<&String> = ticket["put_headers"].as_object().unwrap().keys().collect();
    assert_eq!(
        signed,
        ["content-length", "content-type", "x-amz-checksum-sha256"]
    );
    let (status, answer) = put_bytes(&ticket, picture.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert!(exists(&s3, &bucket, &format!("chat/incoming/{id}")).await);

    let answer = gw.post_chat(&alice, &ask_about(id)).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        attachments(&fake.last_request().unwrap()),
        vec![("png".to_owned(), picture.clone())]
    );
    // Checked, then kept under its hash; the incoming object is gone.
    let blob = format!("chat/blobs/{}", sha256_hex(&picture));
    assert!(exists(&s3, &bucket, &blob).await);
    assert!(!exists(&s3, &bucket, &format!("chat/incoming/{id}")).await);
    let (_, view) = gw.get_json(&alice, &format!("/v1/uploads/{id}")).await;
    assert_eq!(view["status"], "stored", "{view}");
    // The next turn of the conversation (in DynamoDB) loads the picture from S3 again.
    let mut next = json!({"message": "And its colours?"});
    next["conversation_id"] = answer.body["conversation_id"].clone();
    assert_eq!(gw.post_chat(&alice, &next).await.unwrap().status, 200);
    assert_eq!(
        attachments(&fake.last_request().unwrap()),
        vec![("png".to_owned(), picture.clone())]
    );

    // Bytes S3 took (their SHA-256 is the declared one) but that are not a whole PNG are
    // refused when first used, and removed.
    let cut = picture[..picture.len() - 4].to_vec();
    let (_, ticket) = gw
        .declare_upload(&alice, "cut.png", "image/png", &cut)
        .await;
    assert_eq!(put_bytes(&ticket, cut.clone()).await.0, 200);
    let cut_id = ticket["upload_id"].as_str().unwrap();
    let answer = gw.post_chat(&alice, &ask_about(cut_id)).await.unwrap();
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("truncated"),
        "{}",
        answer.body
    );
    assert!(!exists(&s3, &bucket, &format!("chat/incoming/{cut_id}")).await);
    assert!(!exists(&s3, &bucket, &format!("chat/blobs/{}", sha256_hex(&cut))).await);
}

#[tokio::test]
async fn on_aws_the_sweep_collects_blobs_no_conversation_in_dynamodb_names() {
    use std::time::{Duration, SystemTime};

    let fake = FakeBedrock::start().await.unwrap();
    let (gw, s3, bucket) = aws_gateway(&fake).await;
    let alice = authed_client(&dev_token("alice", &["chat"]));
    let (named, unused) = (png(30, 30, 1), png(30, 30, 2));
    let direct_upload = |picture: Vec<u8>| {
        let (gw, alice) = (&gw, &alice);
        async move {
            let (_, ticket) = gw
                .declare_upload(alice, "p.png", "image/png", &picture)
                .await;
            assert_eq!(put_bytes(&ticket, picture).await.0, 200);
            ticket["upload_id"].as_str().unwrap().to_owned()
        }
    };
    let id = direct_upload(named.clone()).await;
    let answer = gw.post_chat(&alice, &ask_about(&id)).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let conversation = answer.body["conversation_id"].as_str().unwrap().to_owned();
    let unused_id = direct_upload(unused.clone()).await;
    // Looked at once, so its bytes are checked and kept as a blob.
    let (status, _) = gw
        .get_json(&alice, &format!("/v1/uploads/{unused_id}"))
        .await;
    assert_eq!(status, 200);
    let blob = |bytes: &[u8]| format!("chat/blobs/{}", sha256_hex(bytes));

    let later = SystemTime::now() + Duration::from_secs(2 * 24 * 3600);
    let swept = gw.app.sweep.run(later).await.unwrap();
    assert_eq!((swept.uploads, swept.blobs), (2, 1), "{swept:?}");
    assert!(
        exists(&s3, &bucket, &blob(&named)).await,
        "named by the conversation"
    );
    assert!(!exists(&s3, &bucket, &blob(&unused)).await);
    let response = alice
        .delete(gw.url(&format!("/v1/conversations/{conversation}")))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let swept = gw.app.sweep.run(later).await.unwrap();
    assert_eq!(swept.blobs, 1);
    assert!(!exists(&s3, &bucket, &blob(&named)).await);
}
