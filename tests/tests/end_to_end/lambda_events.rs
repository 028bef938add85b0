#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Lambda handlers on real-shaped events (`tests/fixtures/lambda/`, in the shapes AWS
//! documents): the WebSocket function's `$connect` (with the authorizer's context), a `chat`
//! message, the asynchronous generation it hands off and `$disconnect`; the HTTP function's
//! router on an HTTP API payload 2.0 request; and the worker on an SQS batch whose records carry
//! real receipts, one of which must come back.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use nagare_gateway::lambda::{AsyncInvoker, LambdaWsSettings, WsFunction, handle_batch};
use nagare_gateway::provider::{MockProvider, MockSettings};
use nagare_gateway::push::{ConnectionPusher, PushError};
use nagare_gateway::store::{ConnectionStore, Database, SqliteConnectionStore};
use nagare_gateway::tasks::QueueKind;
use nagare_gateway::ws::WsSettings;
use nagare_tests::{Gateway, TempDir, dev_token, moto};
use serde_json::{Value, json};
use tower::ServiceExt;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/lambda")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn event(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

/// The frames posted to connections, as (endpoint, connection id, frame).
#[derive(Default)]
struct Posted(Mutex<Vec<(String, String, Value)>>);

#[async_trait]
impl ConnectionPusher for Posted {
    async fn post(
        &self,
        endpoint: &str,
        connection_id: &str,
        frame: Bytes,
    ) -> Result<(), PushError> {
        let frame = serde_json::from_slice(&frame).unwrap();
        self.0
            .lock()
            .unwrap()
            .push((endpoint.into(), connection_id.into(), frame));
        Ok(())
    }
}

/// The payloads handed to asynchronous invocations.
#[derive(Default)]
struct Invoked(Mutex<Vec<Value>>);

#[async_trait]
impl AsyncInvoker for Invoked {
    async fn invoke_async(&self, payload: Vec<u8>) -> Result<(), nagare_gateway::Error> {
        let payload = serde_json::from_slice(&payload).unwrap();
        self.0.lock().unwrap().push(payload);
        Ok(())
    }
}

#[tokio::test]
async fn the_websocket_function_handles_connect_message_generation_and_disconnect() {
    let (app, dir) = Gateway::builder()
        .model(Arc::new(MockProvider::new(MockSettings::unpaced())))
        .models("mock", &[])
        .app()
        .await
        .unwrap();
    let store = Arc::new(SqliteConnectionStore::new(
        Database::open(&dir.path().join("connections.db"), 0).unwrap(),
    ));
    let (posted, invoked) = (Arc::new(Posted::default()), Arc::new(Invoked::default()));
    let function = WsFunction {
        app,
        store: store.clone(),
        pusher: posted.clone(),
        invoker: invoked.clone(),
        settings: LambdaWsSettings {
            coalesce_ms: 0,
            ..LambdaWsSettings::default()
        },
        websocket: WsSettings::default(),
    };
    let connection = "Cq3Zte2HjoECJ9A=";
    let status = |v: Value| v["statusCode"].as_i64().unwrap();

    // $connect: the authorizer's context names who the connection's chats run as.
    let connected = function
        .handle(event("apigw-websocket-connect.json"))
        .await
        .unwrap();
    assert_eq!(status(connected), 200);
    let record = store.get(connection).await.unwrap().unwrap();
    assert_eq!(
        (record.sub.as_str(), record.tenant.as_str()),
        ("alice", "acme")
    );
    assert_eq!(record.scopes, "chat");
    assert_eq!(record.stage, "prod");

    // A chat frame: admitted and handed to an asynchronous invocation, nothing posted yet.
    let message = function
        .handle(event("apigw-websocket-message.json"))
        .await
        .unwrap();
    assert_eq!(status(message), 200);
    assert!(posted.0.lock().unwrap().is_empty());
    let job = invoked.0.lock().unwrap().pop().expect("a generation job");
    assert_eq!(job["nagare_generate"]["request"]["request_id"], "r-1");
    assert_eq!(job["nagare_generate"]["tenant"], "acme");

    // The generation streams start, deltas and done to the connection's Management API.
    assert_eq!(function.handle(job).await.unwrap(), Value::Null);
    let frames = posted.0.lock().unwrap().clone();
    let endpoint = "https://w5x7k2m9qa.execute-api.eu-west-1.amazonaws.com/prod";
    assert!(
        frames
            .iter()
            .all(|(e, c, _)| e == endpoint && c == connection)
    );
    let kinds: Vec<&str> = frames
        .iter()
        .map(|(_, _, f)| f["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"start"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"done"), "{kinds:?}");
    assert!(kinds.contains(&"delta"));

    // $disconnect forgets the connection.
    let gone = function
        .handle(event("apigw-websocket-disconnect.json"))
        .await
        .unwrap();
    assert_eq!(status(gone), 200);
    assert!(store.get(connection).await.unwrap().is_none());
}

/// An HTTP API payload 2.0 request, as lambda_http reads it, for the router.
fn http_request(token: &str) -> http::Request<Body> {
    let raw = fixture("apigw-http-v2-request.json").replace("{{TOKEN}}", token);
    let lambda: lambda_http::request::LambdaRequest = serde_json::from_str(&raw).unwrap();
    let request: lambda_http::Request = lambda.into();
    request.map(|body| Body::from(body.to_vec()))
}

#[tokio::test]
async fn the_http_function_answers_an_http_api_v2_event() {
    let (wiring, _dir) = Gateway::builder()
        .model(Arc::new(MockProvider::new(MockSettings::unpaced())))
        .models("mock", &[])
        .into_wiring();
    let router = wiring.http_router().await.unwrap();

    let response = router
        .clone()
        .oneshot(http_request(&dev_token("alice", &["chat"])))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "fixture-http-1");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let reply: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply["model"], "mock");
    assert_eq!(reply["usage"]["output_tokens"], 8);
    assert_eq!(reply["stop_reason"], "max_tokens");

    // The router checks the token itself, behind API Gateway's JWT authorizer too.
    let refused = router.oneshot(http_request("not-a-token")).await.unwrap();
    assert_eq!(refused.status(), 401);
}

#[tokio::test]
async fn the_worker_reports_the_records_that_must_come_back() {
    let sqs = moto::sqs();
    let (queue_url, _) = moto::task_queues(&sqs, 4).await.unwrap();
    // As deploy/ configures the functions: tasks queued in SQS (on moto's server here).
    let lambda_builder = || {
        let queue_url = queue_url.clone();
        Gateway::builder()
            .model(Arc::new(MockProvider::new(MockSettings::unpaced())))
            .models("mock", &["mock.throttle-1"])
            .config(move |c| {
                c.tasks.enabled = true;
                c.tasks.queue = QueueKind::Sqs;
                c.tasks.queue_url = Some(queue_url);
                c.tasks.callback_secret = Some("fixture-secret".into());
            })
            .wiring(|w| w.with_sdk_config(moto::sdk_config()))
    };
    // Both functions on one data dir: the task records are in its SQLite file.
    let shared = TempDir::new("lambda-tasks").unwrap();
    let on_shared = |builder: nagare_tests::GatewayBuilder| {
        let dir = shared.path().to_owned();
        builder.config(move |c| c.data_dir = dir)
    };
    let (http, _) = on_shared(lambda_builder()).into_wiring();
    let router = http.http_router().await.unwrap();
    let (worker, _) = on_shared(lambda_builder()).into_wiring();
    let worker = worker.worker().await.unwrap();

    let token = dev_token("alice", &["chat"]);
    let submit = |body: Value| {
        let router = router.clone();
        let request = http::Request::post("/v1/tasks")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        async move {
            let response = router.oneshot(request).await.unwrap();
            assert_eq!(response.status(), 202);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let v: Value = serde_json::from_slice(&body).unwrap();
            v["task_id"].as_str().unwrap().to_owned()
        }
    };
    let ok = submit(json!({"message": "hi"})).await;
    let throttled = submit(json!({"message": "hi", "model": "mock.throttle-1"})).await;

    // The records as SQS hands them to the function, with the queue's real receipts.
    let mut receipts = std::collections::BTreeMap::new();
    while receipts.len() < 2 {
        let got = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        for m in got.messages.unwrap_or_default() {
            receipts.insert(m.body.unwrap(), m.receipt_handle.unwrap());
        }
    }
    let raw = fixture("sqs-batch.json")
        .replace("{{TASK_1}}", &ok)
        .replace("{{RECEIPT_1}}", &receipts[&ok])
        .replace("{{TASK_2}}", &throttled)
        .replace("{{RECEIPT_2}}", &receipts[&throttled]);
    let batch: aws_lambda_events::event::sqs::SqsEvent = serde_json::from_str(&raw).unwrap();
    let response = serde_json::to_value(handle_batch(&worker, batch).await).unwrap();
    assert_eq!(
        response,
        json!({"batchItemFailures": [{"itemIdentifier": "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"}]})
    );

    let read = |id: String| {
        let router = router.clone();
        let request = http::Request::get(format!("/v1/tasks/{id}"))
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        async move {
            let response = router.oneshot(request).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<Value>(&body).unwrap()
        }
    };
    assert_eq!(read(ok).await["status"], "succeeded");
    let later = read(throttled).await;
    assert_eq!(later["status"], "queued", "{later}");
    assert_eq!(later["error"]["code"], "upstream_throttled");
}
