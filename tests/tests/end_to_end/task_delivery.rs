//! A task's result delivered to its submitter's own `/v1/ws` socket on `nagare serve`: the
//! client learns its connection id from `pong`, submits with it, and receives `start`, `delta`
//! and `done` (or one `error`) while `GET /v1/tasks/{id}` records the delivery. Someone else's
//! or an unknown connection is refused at submit; a socket closed before the task finishes fails
//! the delivery, never the task.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use nagare_gateway::push::MAX_POST_BYTES;
use nagare_gateway::tasks::TaskSettings;
use nagare_tests::harness::{Gateway, authed_client, dev_token};
use nagare_tests::ws_client::{self, Ws, joined_text, next, send, until_done};
use nagare_tests::{FakeBedrock, bedrock_provider};
use serde_json::{Value, json};

struct Setup {
    gw: Gateway,
    fake: FakeBedrock,
}

impl Setup {
    /// A gateway wired as `nagare serve` is, tasks on: results go to the sockets of the same
    /// process, and its own two workers run the tasks.
    async fn start() -> Self {
        let fake = FakeBedrock::start().await.unwrap();
        let gw = Gateway::builder()
            .model(Arc::new(bedrock_provider(&fake.url())))
            .models("fake", &["fake.slow", "fake.validation", "fake.huge"])
            .config(|c| {
                c.tasks = TaskSettings {
                    workers: 2,
                    ..TaskSettings::default()
                };
            })
            .start()
            .await
            .unwrap();
        Self { gw, fake }
    }

    /// A socket of `sub`, and its connection id as `pong` tells it.
    async fn connect(&self, sub: &str) -> (Ws, String) {
        let url = format!(
            "ws://{}/v1/ws?token={}",
            self.gw.addr,
            dev_token(sub, &["chat"])
        );
        let mut ws = ws_client::connect(&url).await;
        send(&mut ws, json!({"action": "ping", "request_id": "p"})).await;
        let pong = next(&mut ws).await;
        assert_eq!(pong["type"], "pong", "{pong}");
        let id = pong["connection_id"].as_str().unwrap().to_owned();
        (ws, id)
    }

    async fn submit(&self, sub: &str, body: Value) -> (u16, Value) {
        let response = authed_client(&dev_token(sub, &["chat"]))
            .post(self.gw.url("/v1/tasks"))
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// Polls alice's task until its push to the connection is settled.
    async fn settled(&self, task_id: &str) -> Value {
        let client = authed_client(&dev_token("alice", &["chat"]));
        for _ in 0..600 {
            let task: Value = client
                .get(self.gw.url(&format!("/v1/tasks/{task_id}")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let delivery = &task["connection"]["delivery"];
            if delivery == "delivered" || delivery == "failed" {
                return task;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the push of task {task_id} never settled");
    }
}

#[tokio::test]
async fn a_finished_task_streams_to_the_submitters_socket() {
    let s = Setup::start().await;
    let (mut ws, connection_id) = s.connect("alice").await;
    let (status, accepted) = s
        .submit(
            "alice",
            json!({"message": "tell me", "connection_id": connection_id}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let task_id = accepted["task_id"].as_str().unwrap();

    // The chat's request id is the task id, since the submitter gave none.
    let frames = until_done(&mut ws, task_id).await;
    assert_eq!(frames.first().unwrap()["type"], "start", "{frames:?}");
    assert_eq!(frames.last().unwrap()["type"], "done", "{frames:?}");
    let task = s.settled(task_id).await;
    assert_eq!(task["status"], "succeeded");
    assert_eq!(
        task["connection"],
        json!({"connection_id": connection_id, "delivery": "delivered"})
    );
    assert_eq!(
        joined_text(&frames, task_id),
        task["result"]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(s.fake.calls(), 1);

    // A failed task is one error frame with the error table's code.
    let (_, accepted) = s
        .submit(
            "alice",
            json!({"message": "x", "model": "fake.validation", "request_id": "mine",
                   "connection_id": connection_id}),
        )
        .await;
    let frames = until_done(&mut ws, "mine").await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "error");
    assert_eq!(frames[0]["code"], "invalid_request", "{}", frames[0]);
    let task = s.settled(accepted["task_id"].as_str().unwrap()).await;
    assert_eq!(task["status"], "failed");
    assert_eq!(task["connection"]["delivery"], "delivered");
}

#[tokio::test]
async fn a_long_answer_arrives_whole_in_frames_that_fit_api_gateway() {
    let s = Setup::start().await;
    let (mut ws, connection_id) = s.connect("alice").await;
    let (_, accepted) = s
        .submit(
            "alice",
            json!({"message": "x", "model": "fake.huge", "connection_id": connection_id}),
        )
        .await;
    let task_id = accepted["task_id"].as_str().unwrap();
    let frames = until_done(&mut ws, task_id).await;
    let task = s.settled(task_id).await;
    let content = task["result"]["message"]["content"].as_str().unwrap();
    assert!(content.len() > 2 * 32_000, "{}", content.len());
    assert_eq!(joined_text(&frames, task_id), content);
    let largest = frames.iter().map(|f| f.to_string().len()).max().unwrap();
    assert!(largest <= MAX_POST_BYTES, "{largest}");
}

#[tokio::test]
async fn only_an_open_connection_of_the_submitters_own_is_accepted() {
    let s = Setup::start().await;
    let (_bobs, bobs_id) = s.connect("bob").await;
    for (connection_id, what) in [
        (json!(bobs_id), "someone else's"),
        (json!("no-such-connection"), "unknown"),
        (json!(""), "empty"),
        (json!(7), "not a string"),
    ] {
        let (status, body) = s
            .submit(
                "alice",
                json!({"message": "x", "connection_id": connection_id}),
            )
            .await;
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{what}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("connection_id:"),
            "{what}: {body}"
        );
    }
    assert_eq!(s.fake.calls(), 0, "a refused task never runs");
}

#[tokio::test]
async fn a_socket_closed_before_the_task_ends_fails_the_delivery_not_the_task() {
    let s = Setup::start().await;
    let (ws, connection_id) = s.connect("alice").await;
    let (_, accepted) = s
        .submit(
            "alice",
            json!({"message": "x", "model": "fake.slow", "connection_id": connection_id}),
        )
        .await;
    drop(ws);
    let task = s.settled(accepted["task_id"].as_str().unwrap()).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["connection"]["delivery"], "failed", "{task}");
}
