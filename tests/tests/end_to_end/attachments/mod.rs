#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Images and documents: uploaded (declared, then PUT to a signed URL) and named in chats on
//! every transport, or sent inline on REST and gRPC; what the fake Bedrock received is compared
//! byte for byte with what was uploaded. Every bad upload and every broken rule is refused with
//! a message naming the rule, and leaves nothing behind. What is kept, and for how long, is in
//! `lifecycle`; the AWS path (S3 and DynamoDB on moto) in `aws`.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use nagare_gateway::provider::{MockProvider, MockSettings};
use nagare_proto::v1 as pb;
use nagare_proto::v1::chat_service_client::ChatServiceClient;
use nagare_proto::v1::task_service_client::TaskServiceClient;
use nagare_tests::fake_converse::attachments;
use nagare_tests::samples::{pdf, png, sha256_hex};
use nagare_tests::ws_client::{self, send, until_done};
use nagare_tests::{FakeBedrock, Gateway, authed_client, bedrock_provider, dev_token, put_bytes};
use serde_json::{Value, json};
use tonic::Request;

mod aws;
mod lifecycle;

async fn fake_gateway(fake: &FakeBedrock, memory: bool) -> Gateway {
    Gateway::builder()
        .model(Arc::new(bedrock_provider(&fake.url())))
        .models("fake.model", &[])
        .config(|c| {
            c.memory.enabled = memory;
            c.cache.enabled = true;
            c.tasks.enabled = true;
            c.tasks.workers = 1;
        })
        .start()
        .await
        .unwrap()
}

async fn mock_gateway() -> Gateway {
    Gateway::builder()
        .model(Arc::new(MockProvider::new(MockSettings::unpaced())))
        .models("mock", &[])
        .start()
        .await
        .unwrap()
}

fn ask_about(upload_id: &str) -> Value {
    json!({"content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image", "source": {"upload_id": upload_id}}
    ], "cache": "bypass"})
}

/// A gRPC message with `token` as its bearer.
fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let bearer = format!("Bearer {token}");
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    request
}

/// A text block and an image block of `format` ("": its own) from `source`, in protobuf.
fn grpc_image(text: &str, format: &str, source: pb::attachment::Source) -> Vec<pb::ContentBlock> {
    use pb::content_block::Block;
    let image = pb::Attachment {
        format: format.into(),
        source: Some(source),
        ..Default::default()
    };
    [Block::Text(text.into()), Block::Image(image)]
        .into_iter()
        .map(|block| pb::ContentBlock { block: Some(block) })
        .collect()
}

/// The files under the gateway's blob store.
fn blobs(gw: &Gateway) -> Vec<std::path::PathBuf> {
    let root = gw.data_dir().join("blobs");
    let Ok(dirs) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    dirs.flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .map(|f| f.path())
        .collect()
}

#[tokio::test]
async fn an_uploaded_image_reaches_bedrock_byte_for_byte_on_every_transport() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = fake_gateway(&fake, false).await;
    let token = dev_token("alice", &["chat"]);
    let alice = authed_client(&token);
    let picture = png(64, 48, 7);
    let id = gw.upload(&alice, "cat.png", "image/png", &picture).await;
    let received = |fake: &FakeBedrock| attachments(&fake.last_request().unwrap());

    // REST
    let answer = gw.post_chat(&alice, &ask_about(&id)).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(received(&fake), vec![("png".to_owned(), picture.clone())]);
    // SSE
    let (status, events) = gw.stream_chat(&alice, &ask_about(&id)).await;
    assert_eq!(status, 200);
    assert_eq!(events.last().unwrap()["type"], "done", "{events:?}");
    assert_eq!(received(&fake), vec![("png".to_owned(), picture.clone())]);
    // WebSocket
    let mut ws = ws_client::connect(&format!("ws://{}/v1/ws?token={token}", gw.addr)).await;
    let mut frame = ask_about(&id);
    frame["action"] = "chat".into();
    frame["request_id"] = "w1".into();
    send(&mut ws, frame).await;
    let frames = until_done(&mut ws, "w1").await;
    assert_eq!(frames.last().unwrap()["type"], "done", "{frames:?}");
    assert_eq!(received(&fake), vec![("png".to_owned(), picture.clone())]);
    // gRPC
    let mut client = ChatServiceClient::connect(gw.grpc_url()).await.unwrap();
    let source = pb::attachment::Source::UploadId(id.clone());
    let request = authed(
        pb::ChatRequest {
            content: grpc_image("What is this?", "", source),
            ..Default::default()
        },
        &token,
    );
    let reply = client.converse(request).await.unwrap().into_inner();
    assert_eq!(reply.stop_reason, "end_turn");
    assert_eq!(received(&fake), vec![("png".to_owned(), picture.clone())]);
    // gRPC also carries the bytes themselves, in a bytes field.
    let other = png(10, 10, 9);
    let source = pb::attachment::Source::Bytes(other.clone());
    let request = authed(
        pb::ChatRequest {
            content: grpc_image("And this?", "png", source),
            ..Default::default()
        },
        &token,
    );
    client.converse(request).await.unwrap();
    assert_eq!(received(&fake), vec![("png".to_owned(), other)]);
    // A task
    let calls = fake.calls();
    let task = gw.submit_task(&alice, &ask_about(&id)).await;
    let done = nagare_tests::eventually(std::time::Duration::from_secs(10), || async {
        let (_, view) = gw.get_json(&alice, &format!("/v1/tasks/{task}")).await;
        view["status"] == "succeeded"
    })
    .await;
    assert!(done, "the task did not succeed");
    assert_eq!(fake.calls(), calls + 1);
    assert_eq!(received(&fake), vec![("png".to_owned(), picture)]);
}

#[tokio::test]
async fn inline_bytes_are_checked_and_kept_like_an_upload_on_rest_and_refused_in_frames_and_tasks()
{
    let fake = FakeBedrock::start().await.unwrap();
    let gw = fake_gateway(&fake, false).await;
    let token = dev_token("alice", &["chat"]);
    let alice = authed_client(&token);
    let picture = png(8, 8, 1);
    let inline = json!({"content": [
        {"type": "text", "text": "And this?"},
        {"type": "image", "source": {"bytes": BASE64.encode(&picture)}}
    ]});
    let answer = gw.post_chat(&alice, &inline).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        attachments(&fake.last_request().unwrap()),
        vec![("png".to_owned(), picture.clone())]
    );
    // Kept under its hash, as history would name it.
    let kept = blobs(&gw);
    assert_eq!(kept.len(), 1);
    assert!(kept[0].ends_with(sha256_hex(&picture)));
    // Declared the wrong format: refused before Bedrock.
    let mut wrong = inline.clone();
    wrong["content"][1]["format"] = "jpeg".into();
    let calls = fake.calls();
    let answer = gw.post_chat(&alice, &wrong).await.unwrap();
    assert_eq!(answer.status, 400);
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("content[1]") && message.contains("png image, not the declared jpeg"),
        "{message}"
    );
    // Frames and task records stay small.
    let mut ws = ws_client::connect(&format!("ws://{}/v1/ws?token={token}", gw.addr)).await;
    let mut frame = inline.clone();
    frame["action"] = "chat".into();
    frame["request_id"] = "w1".into();
    send(&mut ws, frame).await;
    let refused = ws_client::next(&mut ws).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("takes attachments by upload_id"),
        "{refused}"
    );
    let response = alice
        .post(gw.url("/v1/tasks"))
        .json(&inline)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // And over gRPC's TaskService, which queues the same way.
    let mut tasks = TaskServiceClient::connect(gw.grpc_url()).await.unwrap();
    let source = pb::attachment::Source::Bytes(picture.clone());
    let request = authed(
        pb::SubmitTaskRequest {
            chat: Some(pb::ChatRequest {
                content: grpc_image("And this?", "", source),
                ..Default::default()
            }),
            ..Default::default()
        },
        &token,
    );
    let refused = tasks.submit(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("upload_id"), "{refused:?}");
    assert_eq!(fake.calls(), calls, "nothing refused reached Bedrock");
}

#[tokio::test]
async fn the_mock_describes_the_pages_and_pixels_it_was_sent() {
    let gw = mock_gateway().await;
    let alice = authed_client(&dev_token("alice", &["chat"]));
    let contract = pdf(3, "This agreement is made between");
    let picture = png(640, 480, 2);
    let doc = gw
        .upload(
            &alice,
            "Q3 contract_final.pdf",
            "application/pdf",
            &contract,
        )
        .await;
    let img = gw.upload(&alice, "scan.png", "image/png", &picture).await;
    let body = json!({"content": [
        {"type": "text", "text": "Summarize both"},
        {"type": "document", "source": {"upload_id": doc}},
        {"type": "image", "source": {"upload_id": img}}
    ]});
    let answer = gw.post_chat(&alice, &body).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let said = answer.body["message"]["content"].as_str().unwrap();
    let expected = format!(
        "I see a pdf document named 'Q3 contract final', {} bytes, sha256 {}, 3 pages. \
         I see a png image, {} bytes, sha256 {}, 640×480 pixels. You asked: Summarize both.",
        contract.len(),
        &sha256_hex(&contract)[..12],
        picture.len(),
        &sha256_hex(&picture)[..12],
    );
    assert_eq!(said, expected);
}

#[tokio::test]
async fn bad_uploads_are_refused_by_rule_and_leave_nothing_behind() {
    let gw = mock_gateway().await;
    let alice = authed_client(&dev_token("alice", &["chat"]));
    let picture = png(16, 16, 3);
    let declare = |body: Value| {
        let alice = alice.clone();
        let url = gw.url("/v1/uploads");
        async move {
            let r = alice.post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let sha = sha256_hex(&picture);
    let refusals = [
        (
            json!({"filename": "a.png", "content_type": "image/png", "size": 0, "sha256": sha}),
            "size: an image is 1 to 3750000 bytes",
        ),
        (
            json!({"filename": "a.png", "content_type": "image/png", "size": 5_000_000_000u64, "sha256": sha}),
            "size: an image is 1 to 3750000 bytes",
        ),
        (
            json!({"filename": "a.zip", "content_type": "application/zip", "size": 10, "sha256": sha}),
            "content_type: 'application/zip' is not one of",
        ),
        (
            json!({"filename": "a.png", "content_type": "image/png", "size": 10, "sha256": "abc"}),
            "sha256: must be 64 hex digits",
        ),
        (
            json!({"filename": "", "content_type": "image/png", "size": 10, "sha256": sha}),
            "filename: must be 1 to 255",
        ),
    ];
    for (body, rule) in refusals {
        let (status, answer) = declare(body).await;
        assert_eq!(status, 400, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(rule), "{message}");
    }

    // Bytes that do not match what was declared.
    let truncated = picture[..picture.len() - 5].to_vec();
    let too_wide = png(9000, 1, 0);
    let cases: [(&[u8], &[u8], &str, &str); 4] = [
        (&picture, &picture[1..], "image/png", "the body is"),
        (&picture, &png(16, 16, 4), "image/png", "SHA-256 is"),
        (
            &truncated,
            &truncated,
            "image/png",
            "the png is truncated or malformed",
        ),
        (&too_wide, &too_wide, "image/png", "at most 8000 px a side"),
    ];
    for (declared, sent, content_type, rule) in cases {
        let (status, ticket) = gw
            .declare_upload(&alice, "x.png", content_type, declared)
            .await;
        assert_eq!(status, 201, "{ticket}");
        let (status, answer) = put_bytes(&ticket, sent.to_vec()).await;
        assert_eq!(status, 400, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(rule), "{rule}: {message}");
    }
    let (_, ticket) = gw
        .declare_upload(&alice, "x.jpg", "image/jpeg", &picture)
        .await;
    let (status, answer) = put_bytes(&ticket, picture.clone()).await;
    assert_eq!(status, 400);
    assert_eq!(
        answer["error"]["message"],
        "the bytes are a png image, not the declared jpeg image"
    );
    assert!(blobs(&gw).is_empty(), "refused bytes are not kept");
    // An upload that has not received its bytes cannot be chatted about.
    let (_, pending) = gw
        .declare_upload(&alice, "p.png", "image/png", &picture)
        .await;
    let answer = gw
        .post_chat(&alice, &ask_about(pending["upload_id"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(answer.status, 400);
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has no bytes yet"),
        "{}",
        answer.body
    );

    // The URL is the upload's only: a forged signature, and a second PUT.
    let (status, _) = put_bytes(&pending, picture.clone()).await;
    assert_eq!(status, 200);
    let (status, answer) = put_bytes(&pending, picture.clone()).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "conflict");
    let mut forged = pending.clone();
    forged["put_url"] = pending["put_url"]
        .as_str()
        .unwrap()
        .replace("expires=", "expires=9")
        .into();
    let (status, answer) = put_bytes(&forged, picture.clone()).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(blobs(&gw).len(), 1);
}

#[tokio::test]
async fn uploads_belong_to_their_owner_and_the_same_bytes_are_stored_once() {
    let gw = mock_gateway().await;
    let alice = authed_client(&dev_token("alice", &["chat"]));
    let bob = authed_client(&dev_token("bob", &["chat"]));
    let picture = png(32, 32, 9);
    let mine = gw.upload(&alice, "me.png", "image/png", &picture).await;
    let (status, view) = gw.get_json(&alice, &format!("/v1/uploads/{mine}")).await;
    assert_eq!(status, 200);
    assert_eq!(view["sha256"], sha256_hex(&picture));
    assert_eq!(view["status"], "stored");
    let (status, _) = gw.get_json(&bob, &format!("/v1/uploads/{mine}")).await;
    assert_eq!(status, 404);
    let answer = gw.post_chat(&bob, &ask_about(&mine)).await.unwrap();
    assert_eq!(answer.status, 404, "{}", answer.body);
    // Bob's own copy of the same file is his upload, and the same single blob.
    let his = gw.upload(&bob, "same.png", "image/png", &picture).await;
    assert_ne!(his, mine);
    assert_eq!(
        gw.post_chat(&bob, &ask_about(&his)).await.unwrap().status,
        200
    );
    assert_eq!(blobs(&gw).len(), 1);
    // A client cannot name content by its hash: that is no proof of having it.
    let by_hash = json!({"content": [
        {"type": "text", "text": "this?"},
        {"type": "image", "source": {"sha256": sha256_hex(&picture), "size": picture.len()}}
    ]});
    let answer = gw.post_chat(&bob, &by_hash).await.unwrap();
    assert_eq!(answer.status, 400, "{}", answer.body);
}

#[tokio::test]
async fn bedrocks_rules_are_enforced_at_the_edge_with_the_rule_named() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = fake_gateway(&fake, false).await;
    let alice = authed_client(&dev_token("alice", &["chat"]));
    let picture = png(4, 4, 5);
    let image = gw.upload(&alice, "a.png", "image/png", &picture).await;
    let text = gw
        .upload(&alice, "notes.txt", "text/plain", b"some notes")
        .await;
    let img = json!({"type": "image", "source": {"upload_id": image}});
    let doc = json!({"type": "document", "source": {"upload_id": text}});
    let ask = json!({"type": "text", "text": "look"});
    let mut twenty_one = vec![ask.clone()];
    twenty_one.extend(std::iter::repeat_n(img.clone(), 21));
    let mut six = vec![ask.clone()];
    six.extend(std::iter::repeat_n(doc.clone(), 6));
    let cases = [
        (json!({"content": twenty_one}), "at most 20 images"),
        (json!({"content": six}), "at most 5 documents"),
        (json!({"content": [doc.clone()]}), "needs a text block"),
        (
            json!({"messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [img.clone()]},
                {"role": "user", "content": "and?"}]}),
            "not allowed in a assistant message",
        ),
        (
            json!({"content": [ask.clone(), {"type": "document", "name": "a.txt", "source": {"upload_id": text}}]}),
            "a document name is",
        ),
        (
            json!({"content": [ask.clone(), {"type": "document", "source": {"upload_id": image}}]}),
            "a document block needs a document; upload holds a png image",
        ),
        (
            json!({"content": [ask.clone(), {"type": "image", "source": {"upload_id": "up_nope"}}]}),
            "no upload up_nope",
        ),
    ];
    for (body, rule) in cases {
        let answer = gw.post_chat(&alice, &body).await.unwrap();
        assert!(
            answer.status == 400 || answer.status == 404,
            "{}",
            answer.body
        );
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(rule), "{rule}: {message}");
    }
    assert_eq!(fake.calls(), 0, "the edge refused them all");
    // Within the rules Bedrock (the fake, which checks them too) takes it, and a document
    // gets a name Bedrock accepts from its file name.
    let mut twenty = vec![ask.clone(), doc.clone()];
    twenty.extend(std::iter::repeat_n(img, 20));
    let answer = gw
        .post_chat(&alice, &json!({"content": twenty}))
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let sent = fake.last_request().unwrap();
    assert_eq!(
        sent["messages"][0]["content"][1]["document"]["name"],
        "notes"
    );
    assert_eq!(attachments(&sent).len(), 21);
}

#[tokio::test]
async fn a_conversation_keeps_references_not_bytes_and_the_same_picture_hits_the_cache() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = fake_gateway(&fake, true).await;
    let alice = authed_client(&dev_token("alice", &["chat"]));
    let pictures: Vec<Vec<u8>> = (0..3).map(|i| png(200, 150, i)).collect();
    let mut conversation = Value::Null;
    for picture in &pictures {
        let id = gw.upload(&alice, "p.png", "image/png", picture).await;
        let mut body = ask_about(&id);
        body["conversation_id"] = conversation.clone();
        let answer = gw.post_chat(&alice, &body).await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        conversation = answer.body["conversation_id"].clone();
    }
    // The third turn sent Bedrock all three pictures again, loaded from the blob store.
    let sent = attachments(&fake.last_request().unwrap());
    let expected: Vec<(String, Vec<u8>)> =
        pictures.iter().map(|p| ("png".into(), p.clone())).collect();
    assert_eq!(sent, expected);
    // A fourth turn brings the conversation to twenty pictures, each sent again.
    let mut more = vec![json!({"type": "text", "text": "and these?"})];
    let mut all = pictures.clone();
    for seed in 10..27 {
        let picture = png(40, 40, seed);
        let id = gw.upload(&alice, "m.png", "image/png", &picture).await;
        more.push(json!({"type": "image", "source": {"upload_id": id}}));
        all.push(picture);
    }
    let body = json!({"content": more, "conversation_id": conversation, "cache": "bypass"});
    let answer = gw.post_chat(&alice, &body).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let sent: Vec<Vec<u8>> = attachments(&fake.last_request().unwrap())
        .into_iter()
        .map(|(_, bytes)| bytes)
        .collect();
    assert_eq!(sent, all);
    // What the conversation keeps names each picture by hash, and stays small.
    let (status, page) = gw
        .get_json(
            &alice,
            &format!("/v1/conversations/{}", conversation.as_str().unwrap()),
        )
        .await;
    assert_eq!(status, 200);
    let text = page.to_string();
    assert!(text.contains(&sha256_hex(&pictures[0])), "{text}");
    assert!(text.contains(&sha256_hex(&all[19])), "{text}");
    // Twenty pictures, about 350 KB of bytes, kept as under 10 KB of references and text.
    assert!(text.len() < 10_000, "{} bytes: {text}", text.len());
    let each_picture = pictures[0].len();
    assert!(
        each_picture > 80_000,
        "the pictures are large: {each_picture}"
    );

    // The same picture asked about the same way, through a different upload, is a cache hit.
    let first = gw
        .upload(&alice, "one.png", "image/png", &pictures[0])
        .await;
    let second = gw
        .upload(&alice, "two.png", "image/png", &pictures[0])
        .await;
    let ask = |id: &str| {
        json!({"content": [
        {"type": "text", "text": "Describe it"},
        {"type": "image", "source": {"upload_id": id}}]})
    };
    let calls = fake.calls();
    let a = gw.post_chat(&alice, &ask(&first)).await.unwrap();
    let b = gw.post_chat(&alice, &ask(&second)).await.unwrap();
    assert_eq!(a.body["cached"], false, "{}", a.body);
    assert_eq!(b.body["cached"], true, "{}", b.body);
    assert_eq!(fake.calls(), calls + 1);
}
