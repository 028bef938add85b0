//! Asynchronous tasks on the embedded queue: submit → 202 → a worker runs the chat against the
//! fake Bedrock (real SDK) → `succeeded`, with a signed callback that Python's `hmac` verifies
//! the way the README tells receivers to. Also: owner-only reads, bad input, a receiver that is
//! down or flaky, retryable and final failures, a worker killed mid-task, redelivery of a
//! finished task, and queued tasks surviving a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use nagare_gateway::pipeline::ChatPipeline;
use nagare_gateway::store::Database;
use nagare_gateway::tasks::{
    Callbacks, DynamoTaskStore, SIGNATURE_HEADER, SqliteQueue, SqliteTaskStore, SqsQueue,
    TaskQueue, TaskSettings, TaskStore, Tasks, Worker,
};
use nagare_tests::harness::{Gateway, authed_client, dev_token};
use nagare_tests::serve::{StopOnDrop, spawn};
use nagare_tests::{FakeBedrock, INSTALL_PYTHON, bedrock_provider, eventually, moto, python};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "test-callback-secret";

/// What the callback receiver got: (signature header, body).
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A callback receiver answering with the statuses in `answers` in turn (then 200).
struct Receiver {
    url: String,
    received: Received,
    _stop: StopOnDrop,
}

impl Receiver {
    async fn start(answers: Vec<u16>) -> Self {
        let received = Received::default();
        let answers = Arc::new(Mutex::new(answers));
        let app = Router::new()
            .route(
                "/hook",
                post(
                    |State((received, answers)): State<(Received, Arc<Mutex<Vec<u16>>>)>,
                     headers: HeaderMap,
                     body: axum::body::Bytes| async move {
                        let signature = headers
                            .get(SIGNATURE_HEADER)
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default();
                        received.lock().unwrap().push((signature, body.to_vec()));
                        let mut answers = answers.lock().unwrap();
                        let status = if answers.is_empty() {
                            200
                        } else {
                            answers.remove(0)
                        };
                        StatusCode::from_u16(status).unwrap()
                    },
                ),
            )
            .with_state((received.clone(), answers));
        let (addr, stop) = spawn(app).await.unwrap();
        Self {
            url: format!("http://{addr}/hook"),
            received,
            _stop: stop,
        }
    }

    fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

struct Setup {
    gw: Gateway,
    fake: FakeBedrock,
    tasks: Tasks,
    pipeline: Arc<ChatPipeline>,
    /// Stops the workers a test starts itself.
    workers: CancellationToken,
}

fn settings() -> TaskSettings {
    TaskSettings {
        workers: 2,
        visibility_timeout_secs: 2,
        callback_attempts: 3,
        callback_secret: Some(SECRET.into()),
        ..TaskSettings::default()
    }
}

/// Where the tasks of a test live.
enum Backend {
    Sqlite(Database),
    /// DynamoDB task records and an SQS queue, on moto's server.
    Aws,
}

async fn tasks_on(backend: Backend, settings: TaskSettings) -> Tasks {
    let callbacks = Callbacks::new(SECRET.as_bytes().to_vec(), &settings, true)
        .with_backoff(Duration::from_millis(20));
    let (store, queue): (Arc<dyn TaskStore>, Arc<dyn TaskQueue>) = match backend {
        Backend::Sqlite(db) => (
            Arc::new(SqliteTaskStore::new(db.clone())),
            Arc::new(SqliteQueue::new(db, settings.max_attempts + 1)),
        ),
        Backend::Aws => {
            let dynamodb = moto::dynamodb();
            let table = moto::tables(&dynamodb).await.unwrap().tasks;
            let sqs = moto::sqs();
            let (queue, dlq) = moto::task_queues(&sqs, settings.max_attempts + 1)
                .await
                .unwrap();
            (
                Arc::new(DynamoTaskStore::new(dynamodb, table, 3600)),
                Arc::new(SqsQueue::new(sqs, queue, Some(dlq)).with_wait_secs(1)),
            )
        }
    };
    Tasks {
        store,
        queue,
        callbacks: Arc::new(callbacks),
        connections: None,
        settings,
    }
}

impl Setup {
    async fn start(backend: Backend, settings: TaskSettings, run_workers: bool) -> Self {
        let fake = FakeBedrock::start().await.unwrap();
        let tasks = tasks_on(backend, settings).await;
        // The gateway runs its own workers, or none when the test runs them itself.
        let served = if run_workers {
            tasks.clone()
        } else {
            Tasks {
                settings: TaskSettings {
                    workers: 0,
                    ..tasks.settings.clone()
                },
                ..tasks.clone()
            }
        };
        let gw = Gateway::builder()
            .model(Arc::new(bedrock_provider(&fake.url())))
            .models(
                "fake",
                &[
                    "fake.slow",
                    "fake.throttle-1",
                    "fake.validation",
                    "fake.tools",
                ],
            )
            .config(|c| c.metrics.enabled = true)
            .wiring(move |w| w.with_tasks(served))
            .start()
            .await
            .unwrap();
        let pipeline = gw.app.pipeline.clone();
        Self {
            gw,
            fake,
            tasks,
            pipeline,
            workers: CancellationToken::new(),
        }
    }

    async fn default() -> Self {
        Self::start(
            Backend::Sqlite(Database::in_memory().unwrap()),
            settings(),
            true,
        )
        .await
    }

    async fn submit(&self, client: &reqwest::Client, body: Value) -> (u16, Value) {
        let response = client
            .post(self.gw.url("/v1/tasks"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn task(&self, client: &reqwest::Client, id: &str) -> (u16, Value) {
        let response = client
            .get(self.gw.url(&format!("/v1/tasks/{id}")))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Submits `body` and waits until the task is finished and its callback settled.
    async fn run(&self, client: &reqwest::Client, body: Value) -> Value {
        let (status, accepted) = self.submit(client, body).await;
        assert_eq!(status, 202, "{accepted}");
        self.until(client, accepted["task_id"].as_str().unwrap(), delivered)
            .await
    }

    /// Polls the task until `done(task)`, for at most 30 s.
    async fn until(
        &self,
        client: &reqwest::Client,
        id: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        for _ in 0..600 {
            let (status, task) = self.task(client, id).await;
            assert_eq!(status, 200, "{task}");
            if done(&task) {
                return task;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "task {id} never got there: {:?}",
            self.task(client, id).await
        );
    }
}

fn alice() -> reqwest::Client {
    authed_client(&dev_token("alice", &["chat"]))
}

fn finished(task: &Value) -> bool {
    task["status"] == "succeeded" || task["status"] == "failed"
}

fn delivered(task: &Value) -> bool {
    finished(task) && task["callback"]["delivery"] != "pending"
}

/// Verifies a callback with the README's Python snippet (tests/python/verify_callback.py).
fn python_verifies(signature: &str, body: &[u8], secret: &str) -> bool {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/verify_callback.py");
    let mut child = std::process::Command::new(python())
        .args([script, secret, signature])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}; {INSTALL_PYTHON}", python().display()));
    child.stdin.take().unwrap().write_all(body).unwrap();
    child.wait_with_output().unwrap().status.success()
}

#[tokio::test]
async fn a_task_result_carries_the_answer_s_tool_call() {
    let s = Setup::default().await;
    let client = alice();
    let tool = json!({"name": "get_weather", "input_schema": {"type": "object"}});
    let (status, accepted) = s
        .submit(
            &client,
            json!({"message": "Weather?", "model": "fake.tools", "tools": [tool]}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let task = s
        .until(&client, accepted["task_id"].as_str().unwrap(), finished)
        .await;
    assert_eq!(task["status"], "succeeded", "{task}");
    let result = &task["result"];
    assert_eq!(result["stop_reason"], "tool_use");
    assert_eq!(result["message"]["content"], "Let me check.");
    let call = &result["message"]["blocks"][1];
    assert_eq!(call["type"], "tool_use");
    assert_eq!(
        call["input"],
        serde_json::from_str::<Value>(nagare_tests::fake_converse::TOOL_INPUT).unwrap()
    );
}

#[tokio::test]
async fn a_task_succeeds_and_its_signed_callback_arrives_once() {
    let s = Setup::default().await;
    let receiver = Receiver::start(vec![]).await;
    let client = alice();
    let (status, accepted) = s
        .submit(
            &client,
            json!({"message": "summarize", "callback_url": receiver.url}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "queued");
    let id = accepted["task_id"].as_str().unwrap();
    let task = s.until(&client, id, delivered).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["attempts"], 1);
    assert_eq!(task["result"]["model"], "fake");
    assert!(
        !task["result"]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert_eq!(task["callback"]["delivery"], "delivered");
    assert_eq!(task["callback"]["attempts"], 1);
    assert_eq!(s.fake.calls_to("fake"), 1);

    assert_eq!(receiver.count(), 1);
    let (signature, body) = receiver.received.lock().unwrap()[0].clone();
    let posted: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(posted["task_id"], id);
    assert_eq!(posted["status"], "succeeded");
    assert_eq!(posted["result"], task["result"]);
    assert!(python_verifies(&signature, &body, SECRET));
    assert!(!python_verifies(&signature, &body, "another secret"));
    let mut tampered = body.clone();
    tampered.push(b' ');
    assert!(!python_verifies(&signature, &tampered, SECRET));

    // Only its submitter sees it.
    let bob = authed_client(&dev_token("bob", &["chat"]));
    assert_eq!(s.task(&bob, id).await.0, 404);
    assert_eq!(s.task(&client, "no-such-task").await.0, 404);
    assert_eq!(s.task(&client, &"x".repeat(200)).await.0, 400);

    // A redelivered finished task is acknowledged without a second model call or callback.
    s.tasks.queue.send(id, "").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.fake.calls_to("fake"), 1);
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn bad_submissions_are_refused_at_once() {
    let s = Setup::default().await;
    let client = alice();
    for (body, needle) in [
        (
            json!({"message": "x", "callback_url": "http://10.0.0.1/hook"}),
            "must be https",
        ),
        (
            json!({"message": "x", "callback_url": "https://169.254.169.254/latest"}),
            "private, loopback",
        ),
        (
            json!({"message": "x", "callback_url": "https://[::1]/hook"}),
            "private, loopback",
        ),
        (
            json!({"message": "x", "callback_url": "gopher://example.com/"}),
            "not allowed",
        ),
        (json!({"message": "x", "callback_url": 7}), "callback_url"),
        (json!({"callback_url": "https://example.com/"}), "message"),
        (json!({"message": "x", "surprise": true}), "surprise"),
        (json!(["not", "an", "object"]), "invalid"),
    ] {
        let (status, error) = s.submit(&client, body.clone()).await;
        assert_eq!(status, 400, "{body}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
    }
    let stranger = authed_client("not-a-token");
    assert_eq!(s.submit(&stranger, json!({"message": "x"})).await.0, 401);
    assert_eq!(s.fake.calls_to("fake"), 0);
}

#[tokio::test]
async fn a_receiver_that_is_down_leaves_the_task_succeeded_with_delivery_failed() {
    let s = Setup::default().await;
    let client = alice();
    // A port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let task = s
        .run(&client, json!({"message": "x", "callback_url": url}))
        .await;
    assert_eq!(task["status"], "succeeded");
    assert_eq!(task["callback"]["delivery"], "failed");
    assert_eq!(task["callback"]["attempts"], 3);

    // A flaky receiver: a 503, then 200.
    let receiver = Receiver::start(vec![503]).await;
    let task = s
        .run(
            &client,
            json!({"message": "y", "callback_url": receiver.url}),
        )
        .await;
    assert_eq!(task["callback"]["delivery"], "delivered");
    assert_eq!(task["callback"]["attempts"], 2);
    assert_eq!(receiver.count(), 2);

    // A receiver that refuses (400) is not retried.
    let refusing = Receiver::start(vec![400]).await;
    let task = s
        .run(
            &client,
            json!({"message": "z", "callback_url": refusing.url}),
        )
        .await;
    assert_eq!(task["callback"]["delivery"], "failed");
    assert_eq!(refusing.count(), 1);
}

#[tokio::test]
async fn a_retryable_failure_runs_again_and_a_final_one_fails_the_task() {
    let s = Setup::default().await;
    let client = alice();
    // Throttled once, then fine: a second run, after a backoff.
    let (_, accepted) = s
        .submit(&client, json!({"message": "x", "model": "fake.throttle-1"}))
        .await;
    let task = s
        .until(&client, accepted["task_id"].as_str().unwrap(), finished)
        .await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["attempts"], 2);
    assert_eq!(s.fake.calls_to("fake.throttle-1"), 2);

    // The model refuses the request: not retryable, failed with the error table's code.
    let receiver = Receiver::start(vec![]).await;
    let body = json!({"message": "x", "model": "fake.validation", "callback_url": receiver.url});
    let task = s.run(&client, body).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["attempts"], 1);
    assert_eq!(task["error"]["code"], "invalid_request");
    let posted: Value = serde_json::from_slice(&receiver.received.lock().unwrap()[0].1).unwrap();
    assert_eq!(posted["status"], "failed");
    assert_eq!(posted["error"]["code"], "invalid_request");
}

#[tokio::test]
async fn a_poison_message_is_failed_after_max_attempts_and_dead_lettered() {
    let db = Database::in_memory().unwrap();
    let s = Setup::start(Backend::Sqlite(db.clone()), settings(), false).await;
    // A message whose task has no record: dropped, no model call.
    s.tasks.queue.send("ghost", "").await.unwrap();
    // A task whose worker "dies" every time: received max_attempts times, never finished.
    let client = alice();
    let (_, accepted) = s.submit(&client, json!({"message": "x"})).await;
    let id = accepted["task_id"].as_str().unwrap().to_owned();
    let queue = SqliteQueue::new(db, s.tasks.settings.max_attempts + 1);
    for _ in 0..s.tasks.settings.max_attempts {
        let got = loop {
            let got = queue.receive(10, 0).await.unwrap();
            if got.iter().any(|m| m.task_id == id) {
                break got;
            }
        };
        assert!(got.iter().any(|m| m.task_id == id));
    }
    // Now a real worker: it sees the message once more, and fails the task for good.
    Worker::new(s.tasks.clone(), s.pipeline.clone()).spawn(s.workers.clone());
    let task = s.until(&client, &id, finished).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert!(
        task["error"]["message"]
            .as_str()
            .unwrap()
            .contains("internal")
    );
    assert_eq!(s.fake.calls_to("fake"), 0);
}

#[tokio::test]
async fn a_worker_stopped_mid_task_puts_it_back_for_another_which_completes_it_once() {
    let s = Setup::start(
        Backend::Sqlite(Database::in_memory().unwrap()),
        // Long enough that only a put-back can show it to the next worker in time.
        TaskSettings {
            visibility_timeout_secs: 300,
            ..settings()
        },
        false,
    )
    .await;
    let receiver = Receiver::start(vec![]).await;
    let client = alice();
    let first = CancellationToken::new();
    Worker::new(s.tasks.clone(), s.pipeline.clone()).spawn(first.clone());
    let (_, accepted) = s
        .submit(
            &client,
            json!({"message": "x", "model": "fake.slow", "callback_url": receiver.url}),
        )
        .await;
    let id = accepted["task_id"].as_str().unwrap();
    s.until(&client, id, |t| t["status"] == "running").await;
    // The first worker is stopped mid-generation (a shutdown): its model stream is dropped and
    // the task put back, visible at once, the attempt not counted.
    first.cancel();
    let task = s.until(&client, id, |t| t["status"] == "queued").await;
    assert_eq!(task["attempts"], 0, "{task}");
    Worker::new(s.tasks.clone(), s.pipeline.clone()).spawn(s.workers.clone());
    let task = s.until(&client, id, delivered).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["attempts"], 1, "the stopped run did not count");
    assert_eq!(s.fake.calls_to("fake.slow"), 2);
    assert_eq!(receiver.count(), 1, "one callback");
}

#[tokio::test]
async fn queued_tasks_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("nagare-tasks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("nagare.db");
    let client = alice();
    let id = {
        // No workers: the task stays queued when this "process" stops.
        let s = Setup::start(
            Backend::Sqlite(Database::open(&path, 0).unwrap()),
            settings(),
            false,
        )
        .await;
        let (status, accepted) = s.submit(&client, json!({"message": "x"})).await;
        assert_eq!(status, 202);
        let metrics = reqwest::get(s.gw.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains(r#"nagare_task_queue_messages{queue="sqlite",state="waiting"} 1"#),
            "{metrics}"
        );
        accepted["task_id"].as_str().unwrap().to_owned()
    };
    let s = Setup::start(Backend::Sqlite(reopen(&path).await), settings(), true).await;
    let task = s.until(&client, &id, finished).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(s.fake.calls_to("fake"), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Opens the database again once the previous handle's thread has let go of it.
async fn reopen(path: &Path) -> Database {
    tokio::time::sleep(Duration::from_millis(100)).await;
    Database::open(path, 0).unwrap()
}

#[tokio::test]
async fn tasks_run_on_sqs_and_dynamodb_with_the_same_guarantees() {
    // moto answers one request at a time, so a call can wait behind another worker's long poll:
    // one worker, and a visibility timeout that such waits cannot outlast.
    let settings = TaskSettings {
        workers: 1,
        visibility_timeout_secs: 10,
        ..settings()
    };
    let s = Setup::start(Backend::Aws, settings, true).await;
    let receiver = Receiver::start(vec![503]).await;
    let client = alice();
    let (status, accepted) = s
        .submit(
            &client,
            json!({"message": "on aws", "callback_url": receiver.url}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["task_id"].as_str().unwrap();
    let task = s.until(&client, id, delivered).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["callback"]["delivery"], "delivered");
    assert_eq!(task["callback"]["attempts"], 2);
    let (signature, body) = receiver.received.lock().unwrap()[1].clone();
    assert!(python_verifies(&signature, &body, SECRET));
    assert_eq!(
        s.task(&authed_client(&dev_token("bob", &["chat"])), id)
            .await
            .0,
        404
    );

    // Throttled once: the message comes back after its backoff, on SQS too.
    let (_, accepted) = s
        .submit(&client, json!({"message": "x", "model": "fake.throttle-1"}))
        .await;
    let task = s
        .until(&client, accepted["task_id"].as_str().unwrap(), finished)
        .await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["attempts"], 2);

    // A finished task redelivered: acknowledged, no second call.
    let calls = s.fake.calls_to("fake");
    s.tasks.queue.send(id, "").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(s.fake.calls_to("fake"), calls);
    let depth = s.tasks.queue.depth().await.unwrap();
    assert_eq!((depth.waiting, depth.in_flight), (0, 0), "{depth:?}");
}

#[tokio::test]
async fn the_sqs_queue_hides_extends_deletes_and_dead_letters() {
    let sqs = moto::sqs();
    let (url, dlq) = moto::task_queues(&sqs, 2).await.unwrap();
    let q = SqsQueue::new(sqs, url, Some(dlq)).with_wait_secs(0);
    q.send("t1", "").await.unwrap();
    let first = q.receive(10, 60).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].task_id.as_str(), first[0].receive_count),
        ("t1", 1)
    );
    assert!(q.receive(10, 60).await.unwrap().is_empty(), "hidden");
    assert_eq!(q.depth().await.unwrap().in_flight, 1);
    q.extend(&first[0].receipt, 0).await.unwrap();
    let second = q.receive(10, 0).await.unwrap();
    assert_eq!(second[0].receive_count, 2);
    // Received twice with maxReceiveCount 2: the next receive moves it to the dead letters.
    assert!(q.receive(10, 60).await.unwrap().is_empty());
    assert_eq!(q.depth().await.unwrap().dead, 1);

    q.send("t2", "").await.unwrap();
    let got = q.receive(10, 60).await.unwrap();
    q.delete(&got[0].receipt).await.unwrap();
    let depth = q.depth().await.unwrap();
    assert_eq!((depth.waiting, depth.in_flight), (0, 0), "{depth:?}");
}

/// The `nagare-worker` binary under the Lambda Runtime API, configured only through the
/// environment as on AWS: a batch of two SQS records, one that succeeds and one throttled (left
/// for later), answered with the throttled one as the batch's only item failure.
#[tokio::test]
async fn the_nagare_worker_binary_reports_what_must_come_back() {
    use nagare_gateway::tasks::{TaskRecord, TaskStatus};
    use nagare_tests::FakeLambdaRuntime;
    use nagare_tests::fake_lambda::{Invocation, Outcome, workspace_binary};

    let dynamodb = moto::dynamodb();
    let tables = moto::tables(&dynamodb).await.unwrap();
    let table = tables.tasks.clone();
    let sqs = moto::sqs();
    let (queue_url, _) = moto::task_queues(&sqs, 4).await.unwrap();
    let store = DynamoTaskStore::new(dynamodb, &table, 3600);
    let queue = SqsQueue::new(sqs, &queue_url, None).with_wait_secs(1);
    let now = nagare_gateway::store::unix_now_ms();
    for (id, model) in [("task-ok", "mock"), ("task-throttled", "mock.throttle-1")] {
        let record = TaskRecord {
            task_id: id.into(),
            sub: "alice".into(),
            tenant: "alice".into(),
            scopes: "chat".into(),
            request: serde_json::from_value(json!({"message": "hi", "model": model})).unwrap(),
            status: TaskStatus::Queued,
            attempts: 0,
            result: None,
            error: None,
            callback_url: None,
            delivery: None,
            delivery_attempts: 0,
            connection_id: None,
            connection_delivery: None,
            created_at: now,
            updated_at: now,
        };
        store.create(&record).await.unwrap();
        queue.send(id, "").await.unwrap();
    }
    let mut messages = Vec::new();
    while messages.len() < 2 {
        messages.extend(queue.receive(10, 60).await.unwrap());
    }
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({
                "messageId": format!("m-{}", m.task_id),
                "receiptHandle": m.receipt,
                "body": m.task_id,
                "attributes": {"ApproximateReceiveCount": m.receive_count.to_string()},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:tasks",
                "awsRegion": "us-east-1",
            })
        })
        .collect();

    let runtime = FakeLambdaRuntime::start().await.unwrap();
    let mut child = tokio::process::Command::new(workspace_binary("nagare-worker").unwrap())
        .env_clear()
        .envs(runtime.env("nagare-worker"))
        .env("AWS_ACCESS_KEY_ID", "AKIDNAGARETEST")
        .env("AWS_SECRET_ACCESS_KEY", "nagare-test-secret")
        .env("AWS_ENDPOINT_URL_DYNAMODB", moto::url())
        .env("AWS_ENDPOINT_URL_SQS", moto::url())
        .env("NAGARE__STORE__KIND", "dynamodb")
        .env("NAGARE__STORE__CONVERSATIONS_TABLE", &tables.conversations)
        .env("NAGARE__STORE__CONNECTIONS_TABLE", &tables.connections)
        .env("NAGARE__TASKS__TABLE", &table)
        .env("NAGARE__TASKS__QUEUE", "sqs")
        .env("NAGARE__TASKS__QUEUE_URL", &queue_url)
        .env("NAGARE__TASKS__CALLBACK_SECRET", SECRET)
        .env("NAGARE__UPSTREAM__MAX_ATTEMPTS", "1")
        .env("NAGARE__PROVIDER__MOCK__TTFT_MS", "0")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    runtime.invoke(json!({ "Records": records })).await;
    let response = match runtime
        .result(Duration::from_secs(60))
        .await
        .expect("no answer")
    {
        Invocation {
            outcome: Outcome::Response(r),
            ..
        } => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        response,
        json!({"batchItemFailures": [{"itemIdentifier": "m-task-throttled"}]})
    );
    let ok = store.get("task-ok").await.unwrap().unwrap();
    assert_eq!(ok.status, TaskStatus::Succeeded, "{ok:?}");
    assert_eq!(ok.result.unwrap().model, "mock");
    let throttled = store.get("task-throttled").await.unwrap().unwrap();
    assert_eq!(throttled.status, TaskStatus::Queued);
    assert_eq!(throttled.error.unwrap().code.as_str(), "upstream_throttled");
    child.kill().await.unwrap();
}

/// `message` as `sub`, with a dev token.
fn as_user<T>(sub: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let token = format!("Bearer {}", dev_token(sub, &["chat"]));
    request
        .metadata_mut()
        .insert("authorization", token.parse().unwrap());
    request
}

#[tokio::test]
async fn task_service_submits_and_reads_over_grpc() {
    use nagare_proto::v1 as pb;
    use nagare_proto::v1::task_service_client::TaskServiceClient;

    let s = Setup::default().await;
    let mut client = TaskServiceClient::connect(s.gw.grpc_url()).await.unwrap();
    let submit = |callback_url: Option<&str>| pb::SubmitTaskRequest {
        chat: Some(pb::ChatRequest {
            message: "over grpc".into(),
            ..Default::default()
        }),
        callback_url: callback_url.map(str::to_owned),
        connection_id: None,
    };
    let accepted = client
        .submit(as_user("alice", submit(None)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(accepted.status(), pb::TaskStatus::Queued);
    let get = |id: &str| pb::GetTaskRequest {
        task_id: id.to_owned(),
    };
    let mut task = pb::Task::default();
    for _ in 0..600 {
        task = client
            .get(as_user("alice", get(&accepted.task_id)))
            .await
            .unwrap()
            .into_inner();
        if task.status() == pb::TaskStatus::Succeeded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(task.status(), pb::TaskStatus::Succeeded, "{task:?}");
    let result = task.result.unwrap();
    assert_eq!(result.model, "fake");
    assert_eq!(result.request_id, accepted.task_id);
    assert!(!result.message.unwrap().content.is_empty());

    let foreign = client
        .get(as_user("bob", get(&accepted.task_id)))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), tonic::Code::NotFound);
    let bad = client
        .submit(as_user("alice", submit(Some("http://10.1.2.3/hook"))))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("callback_url"), "{}", bad.message());
    let unauthenticated = client
        .submit(tonic::Request::new(submit(None)))
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn a_task_naming_a_conversation_the_caller_does_not_own_is_refused_at_submit() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = Gateway::builder()
        .model(Arc::new(bedrock_provider(&fake.url())))
        .models("fake", &[])
        .config(|c| {
            c.memory.enabled = true;
            c.tasks = TaskSettings {
                workers: 1,
                ..settings()
            };
        })
        .start()
        .await
        .unwrap();
    let (alice, bob) = (alice(), authed_client(&dev_token("bob", &["chat"])));
    let started = gw
        .post_chat(&alice, &json!({"message": "hi"}))
        .await
        .unwrap();
    let conversation = started.body["conversation_id"].as_str().unwrap();
    let submit = |client: &reqwest::Client, body: Value| {
        let request = client.post(gw.url("/v1/tasks")).json(&body).send();
        async move {
            let response = request.await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };

    // Bob names Alice's conversation: 404 at submission, as a chat naming it gets; nothing runs.
    let calls = fake.calls();
    let (status, refused) = submit(
        &bob,
        json!({"message": "x", "conversation_id": conversation}),
    )
    .await;
    assert_eq!(status, 404, "{refused}");
    assert_eq!(refused["error"]["code"], "not_found");
    // A made-up conversation is missing in the same words.
    let (status, _) = submit(
        &bob,
        json!({"message": "x", "conversation_id": "7d3f2c1a-9b8e-4d5c-a6f7-0e1d2c3b4a59"}),
    )
    .await;
    assert_eq!(status, 404);

    // Alice may continue it in a task, which then runs.
    let (status, accepted) = submit(
        &alice,
        json!({"message": "and then?", "conversation_id": conversation}),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["task_id"].as_str().unwrap();
    let path = format!("/v1/tasks/{id}");
    let done = eventually(Duration::from_secs(30), || async {
        gw.get_json(&alice, &path).await.1["status"] == "succeeded"
    })
    .await;
    assert!(done, "alice's task did not succeed");
    assert_eq!(
        fake.calls(),
        calls + 1,
        "only alice's task reached the model"
    );
}

#[tokio::test]
async fn one_users_backlog_does_not_hold_another_users_task_back() {
    let one_worker = TaskSettings {
        workers: 1,
        ..settings()
    };
    let s = Setup::start(
        Backend::Sqlite(Database::in_memory().unwrap()),
        one_worker,
        false,
    )
    .await;
    let receiver = Receiver::start(vec![]).await;
    let (alice, bob) = (
        authed_client(&dev_token("alice", &["chat"])),
        authed_client(&dev_token("bob", &["chat"])),
    );
    let body = json!({"message": "x", "callback_url": receiver.url});
    for _ in 0..8 {
        assert_eq!(s.submit(&alice, body.clone()).await.0, 202);
    }
    let (_, accepted) = s.submit(&bob, body).await;
    let bobs = accepted["task_id"].as_str().unwrap().to_owned();
    // One worker, started after all nine are queued: it takes the two users in turn.
    Worker::new(s.tasks.clone(), s.pipeline.clone()).spawn(s.workers.clone());
    assert!(eventually(Duration::from_secs(30), || async { receiver.count() == 9 }).await);
    let order: Vec<String> = receiver
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|(_, body)| {
            serde_json::from_slice::<Value>(body).unwrap()["task_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let place = order.iter().position(|id| *id == bobs).unwrap();
    assert_eq!(
        place, 1,
        "bob's task ran second, after alice's first: {order:?}"
    );
}
