//! The API Gateway WebSocket path end to end: a real WebSocket into the emulator, the Lambda
//! authorizer on `$connect`, the `nagare-ws` handler invoked with real-shaped events, chats
//! handed to asynchronous invocations through the real aws-sdk-lambda, every frame pushed with
//! the real aws-sdk-apigatewaymanagement, connection records in DynamoDB (moto's server), and
//! the model behind the real Bedrock SDK (the fake Bedrock).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use futures::{FutureExt, SinkExt, StreamExt};
use nagare_authorizer::lambda::authorize;
use nagare_authorizer::{AuthSettings, Verifier};
use nagare_gateway::knowledge::BedrockBase;
use nagare_gateway::lambda::{LambdaInvoker, LambdaWsSettings, WsFunction};
use nagare_gateway::push::{ApiGatewayPusher, MAX_POST_BYTES};
use nagare_gateway::store::{DynamoConnectionStore, unix_now};
use nagare_gateway::telemetry::Emf;
use nagare_gateway::ws::WsSettings;
use nagare_tests::fake_agent_runtime::{Chunk, FakeAgentRuntime};
use nagare_tests::fake_apigw::{ApiGatewayEmulator, Authorizer, Function};
use nagare_tests::fake_bedrock::HUGE_DELTA;
use nagare_tests::fake_converse::TOOL_INPUT;
use nagare_tests::fake_lambda::{Invocation, Outcome, workspace_binary};
use nagare_tests::harness::DEV_SECRET;
use nagare_tests::ws_client::{self, Ws, joined_text, next, send, until_done};
use nagare_tests::{
    FakeBedrock, FakeLambdaRuntime, Gateway, INSTALL_PYTHON, TempDir, bedrock_provider, dev_token,
    eventually, moto, python, test_sdk_config,
};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;

const STAGE: &str = "test";

struct Aws {
    emulator: ApiGatewayEmulator,
    /// What the function's metrics wrote: Embedded Metric Format lines.
    emf: Lines,
    bedrock: FakeBedrock,
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
    /// The function's app, for a test that uploads through it.
    app: Arc<nagare_gateway::app::App>,
    _data: TempDir,
}

impl Aws {
    /// Everything up, with `integration_timeout` on route invocations (API Gateway's is 29 s).
    async fn start(integration_timeout: Duration, websocket: WsSettings) -> Self {
        Self::configured(integration_timeout, websocket, |_| {}).await
    }

    /// [`Aws::start`], with the function's config changed by `change`.
    async fn configured(
        integration_timeout: Duration,
        websocket: WsSettings,
        change: impl FnOnce(&mut nagare_gateway::config::Config) + Send + 'static,
    ) -> Self {
        let verifier = Arc::new(Verifier::new(&AuthSettings::default(), Some(DEV_SECRET)).unwrap());
        let authorizer: Authorizer = Arc::new(move |event| {
            let verifier = verifier.clone();
            async move {
                authorize(&verifier, "chat", &event)
                    .await
                    .map_err(|e| e.to_string())
            }
            .boxed()
        });
        let emulator = ApiGatewayEmulator::start(STAGE, authorizer, integration_timeout)
            .await
            .unwrap();
        let bedrock = FakeBedrock::start().await.unwrap();
        let dynamodb = moto::dynamodb();
        let table = moto::tables(&dynamodb).await.unwrap().connections;

        let sdk = test_sdk_config();
        let lambda = aws_sdk_lambda::Client::from_conf(
            aws_sdk_lambda::config::Builder::from(&sdk)
                .endpoint_url(emulator.lambda_endpoint())
                .build(),
        );
        let emf = Lines::default();
        let recorder = Arc::new(Emf::new("Nagare", emf.clone()));
        let (app, data) = Gateway::builder()
            // Without the retry layer: a stalled chat's `start` is read before its first token.
            .bare_model(Arc::new(bedrock_provider(&bedrock.url())))
            .models(
                "fake",
                &["fake.slow", "fake.stall", "fake.huge", "fake.tools"],
            )
            .wiring(move |w| w.with_recorder(recorder))
            .config(change)
            .app()
            .await
            .unwrap();
        let function = Arc::new(WsFunction {
            app: app.clone(),
            store: Arc::new(DynamoConnectionStore::new(dynamodb.clone(), &table)),
            pusher: Arc::new(ApiGatewayPusher::new(sdk)),
            invoker: Arc::new(LambdaInvoker::new(lambda, "nagare-ws")),
            settings: LambdaWsSettings {
                management_endpoint: Some(emulator.management_endpoint()),
                coalesce_ms: 200,
                cancel_poll_ms: 50,
                ..LambdaWsSettings::default()
            },
            websocket,
        });
        let handler: Function = Arc::new(move |event| {
            let function = function.clone();
            async move { function.handle(event).await.map_err(|e| e.to_string()) }.boxed()
        });
        emulator.attach(handler);
        Self {
            emulator,
            emf,
            bedrock,
            dynamodb,
            table,
            app,
            _data: data,
        }
    }

    async fn default() -> Self {
        Self::start(Duration::from_secs(29), WsSettings::default()).await
    }

    fn url(&self, token: Option<&str>) -> String {
        match token {
            Some(t) => format!("{}?token={t}", self.emulator.ws_url()),
            None => self.emulator.ws_url(),
        }
    }

    async fn connect(&self) -> (Ws, String) {
        let before = self.emulator.open_connections();
        let ws = ws_client::connect(&self.url(Some(&dev_token("alice", &["chat"])))).await;
        let id = self
            .emulator
            .open_connections()
            .into_iter()
            .find(|id| !before.contains(id))
            .unwrap();
        (ws, id)
    }

    async fn item(&self, connection_id: &str) -> Option<HashMap<String, AttributeValue>> {
        self.dynamodb
            .get_item()
            .table_name(&self.table)
            .key("connection_id", AttributeValue::S(connection_id.into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
    }

    /// Waits until the connection's item is gone or has no chat in flight.
    async fn wait_for_item(
        &self,
        connection_id: &str,
        want: fn(Option<&HashMap<String, AttributeValue>>) -> bool,
    ) -> bool {
        eventually(Duration::from_secs(5), || async {
            want(self.item(connection_id).await.as_ref())
        })
        .await
    }
}

/// Sends the chat frame `{"message": "hi"}` to `model` as `request_id`.
/// A writer the test reads back.
#[derive(Clone, Default)]
struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The EMF documents in `text`, each checked against the EMF specification by
/// tests/python/check_emf.py.
fn emf_documents(text: &[u8]) -> Vec<Value> {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/check_emf.py");
    let mut child = std::process::Command::new(python())
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}; {INSTALL_PYTHON}", python().display()));
    child.stdin.take().unwrap().write_all(text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not valid EMF: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(text)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn send_chat(ws: &mut Ws, model: &str, request_id: &str) {
    let frame =
        json!({"action": "chat", "message": "hi", "model": model, "request_id": request_id});
    send(ws, frame).await;
}

/// Sends a two-second chat `r1` and waits for its `start`.
async fn start_slow_chat(ws: &mut Ws) {
    send_chat(ws, "fake.slow", "r1").await;
    assert_eq!(next(ws).await["type"], "start");
}

fn no_chats_in_flight(item: Option<&HashMap<String, AttributeValue>>) -> bool {
    item.is_some_and(|i| !i.contains_key("inflight"))
}

fn deleted(item: Option<&HashMap<String, AttributeValue>>) -> bool {
    item.is_none()
}

fn words(n: usize) -> String {
    (0..n).map(|i| format!(" w{i}")).collect()
}

#[tokio::test]
async fn connect_runs_the_authorizer_and_stores_the_connection() {
    let aws = Aws::default().await;
    ws_client::assert_refused(&aws.url(None), 401).await;
    ws_client::assert_refused(&aws.url(Some("garbage")), 401).await;
    ws_client::assert_refused(&aws.url(Some(&dev_token("alice", &["profile"]))), 403).await;
    assert_eq!(aws.emulator.count(|c| &c.connects), 0);

    let (_ws, id) = aws.connect().await;
    let item = aws.item(&id).await.expect("the connection record");
    assert_eq!(item["sub"].as_s().unwrap(), "alice");
    assert_eq!(item["stage"].as_s().unwrap(), STAGE);
    assert!(item["domain"].as_s().unwrap().starts_with("127.0.0.1:"));
    let ttl: u64 = item["ttl"].as_n().unwrap().parse().unwrap();
    assert!(ttl > unix_now() + 3600 && ttl <= unix_now() + 7200, "{ttl}");
}

#[tokio::test]
async fn a_chat_frame_names_an_upload_and_bedrock_gets_its_bytes() {
    use nagare_gateway::uploads::Declaration;
    use nagare_tests::samples::{png, sha256_hex};

    let aws = Aws::default().await;
    let picture = png(40, 30, 8);
    let alice = nagare_authorizer::Principal {
        sub: "alice".into(),
        tenant: "alice".into(),
        scopes: vec!["chat".into()],
        groups: Vec::new(),
        expires_at: u64::MAX,
    };
    let uploads = aws.app.uploads.as_ref().unwrap();
    let declared = Declaration {
        filename: "p.png".into(),
        content_type: "image/png".into(),
        size: picture.len() as u64,
        sha256: sha256_hex(&picture),
    };
    let ticket = uploads
        .declare(&alice, declared, "http://127.0.0.1")
        .await
        .unwrap();
    let query = ticket.put_url.split_once('?').unwrap().1;
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    let expires: u64 = param("expires").parse().unwrap();
    uploads
        .receive(
            &ticket.upload_id,
            expires,
            &param("signature"),
            picture.clone().into(),
        )
        .await
        .unwrap();

    let (mut ws, _) = aws.connect().await;
    send(
        &mut ws,
        json!({"action": "chat", "request_id": "r1", "model": "fake", "content": [
            {"type": "text", "text": "what is it?"},
            {"type": "image", "source": {"upload_id": ticket.upload_id}}]}),
    )
    .await;
    let frames = until_done(&mut ws, "r1").await;
    assert_eq!(frames.last().unwrap()["type"], "done", "{frames:?}");
    let sent = aws.bedrock.last_request().unwrap();
    assert_eq!(
        nagare_tests::fake_converse::attachments(&sent),
        vec![("png".to_owned(), picture)]
    );
}

#[tokio::test]
async fn a_chat_streams_through_an_async_invocation_with_coalesced_posts() {
    let aws = Aws::default().await;
    let (mut ws, id) = aws.connect().await;
    send_chat(&mut ws, "fake.slow", "r1").await;
    let frames = until_done(&mut ws, "r1").await;

    assert_eq!(frames[0]["type"], "start");
    assert_eq!(frames.last().unwrap()["type"], "done", "{frames:?}");
    assert_eq!(joined_text(&frames, "r1"), words(40));
    let deltas: Vec<&Value> = frames.iter().filter(|f| f["type"] == "delta").collect();
    // The first delta is posted alone, at once; later ones are merged (40 arrive at 50 ms
    // intervals, posts go at most every 200 ms).
    assert_eq!(deltas[0]["text"], " w0");
    assert!(
        deltas.len() >= 3 && deltas.len() < 20,
        "{} delta posts",
        deltas.len()
    );
    assert_eq!(aws.emulator.count(|c| &c.posts), frames.len() as u64);
    assert_eq!(aws.emulator.count(|c| &c.async_invokes), 1);
    assert_eq!(aws.bedrock.completed(), 1);
    assert!(
        aws.wait_for_item(&id, no_chats_in_flight).await,
        "the chat's slot was not freed"
    );
}

#[tokio::test]
async fn many_long_sources_reach_the_connection_in_frames_under_32_kb() {
    let kb = FakeAgentRuntime::start().await.unwrap();
    // Twenty sources with long titles and uris: together several times one frame.
    let chunks = (0..20)
        .map(|i| Chunk {
            text: format!("Leave rule {i}: {}", "every leave day counts. ".repeat(40)),
            uri: format!("s3://handbook/{}/{i}.md", "section/".repeat(250)),
            metadata: json!({"title": format!("Leave {i} {}", "é".repeat(300))}),
        })
        .collect();
    kb.load("KBHANDBOOK1", chunks);
    let url = kb.url();
    let aws = Aws::configured(Duration::from_secs(29), WsSettings::default(), move |c| {
        c.knowledge.bedrock.endpoint_url = Some(url);
        c.knowledge.bedrock.bases = vec![BedrockBase {
            name: "handbook".into(),
            id: "KBHANDBOOK1".into(),
            tenants: vec!["*".into()],
            search_type: None,
        }];
    })
    .await;
    let (mut ws, _) = aws.connect().await;
    send(
        &mut ws,
        json!({"action": "chat", "request_id": "k1", "message": "leave day rules",
               "knowledge_base": {"name": "handbook", "results": 20}}),
    )
    .await;
    let frames = until_done(&mut ws, "k1").await;
    let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    let batches = kinds.iter().filter(|k| **k == "sources").count();
    assert!(batches > 1, "{kinds:?}");
    assert_eq!(
        &kinds[..=batches],
        ["start"]
            .into_iter()
            .chain(vec!["sources"; batches])
            .collect::<Vec<_>>()
    );
    let numbers: Vec<u64> = frames
        .iter()
        .filter(|f| f["type"] == "sources")
        .flat_map(|f| f["sources"].as_array().unwrap().clone())
        .map(|s| s["n"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (1..=20).collect::<Vec<_>>());
    // The fake model's answer cites nothing; it was given every passage.
    assert_eq!(frames.last().unwrap()["citations"], json!([]));
    let sent = aws.bedrock.last_request().unwrap();
    let system = sent["system"][0]["text"].as_str().unwrap();
    assert!(system.contains("<passage n=\"20\""), "{system}");
    let largest = aws.emulator.count(|c| &c.largest_post);
    assert!(largest <= 32 * 1024, "a post of {largest} bytes");
}

#[tokio::test]
async fn a_tool_loop_reaches_the_connection_in_coalesced_fragments_and_whole_calls() {
    let aws = Aws::default().await;
    let (mut ws, _) = aws.connect().await;
    let tool = json!({"name": "get_weather", "input_schema": {"type": "object"}});
    let frame = json!({"action": "chat", "message": "Weather?", "model": "fake.tools",
                       "request_id": "t1", "tools": [tool]});
    send(&mut ws, frame).await;
    let frames = until_done(&mut ws, "t1").await;
    assert_eq!(
        frames.last().unwrap()["stop_reason"],
        "tool_use",
        "{frames:?}"
    );
    let fragments: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "tool_call_delta")
        .collect();
    let input: String = fragments
        .iter()
        .map(|f| f["input"].as_str().unwrap())
        .collect();
    assert_eq!(input, TOOL_INPUT);
    assert!(fragments.iter().all(|f| f["index"] == 1));
    let call = frames.iter().find(|f| f["type"] == "tool_call").unwrap();
    assert_eq!(
        call["input"],
        serde_json::from_str::<Value>(TOOL_INPUT).unwrap()
    );
    assert_eq!(call["name"], "get_weather");
    // Fragments after the first are merged into fewer posts.
    let sent = nagare_tests::fake_converse::TOOL_FRAGMENTS_SENT;
    assert!(
        fragments.len() < sent,
        "{} posts for {sent} fragments",
        fragments.len()
    );

    // The loop's second turn, in the stateless form (this stack keeps no memory): the whole
    // conversation, blocks and all, crosses the asynchronous invocation to the model.
    let answer = json!([{"type": "text", "text": "Let me check."},
                        {"type": "tool_use", "id": call["id"], "name": "get_weather", "input": call["input"]}]);
    let result = json!([{"type": "tool_result", "tool_use_id": call["id"], "content": "21 C"}]);
    let frame = json!({"action": "chat", "model": "fake.tools", "request_id": "t2", "tools": [tool],
                       "messages": [{"role": "user", "content": "Weather?"},
                                    {"role": "assistant", "content": answer},
                                    {"role": "user", "content": result}]});
    send(&mut ws, frame).await;
    let frames = until_done(&mut ws, "t2").await;
    assert_eq!(
        joined_text(&frames, "t2"),
        "The tool said: 21 C",
        "{frames:?}"
    );
    let sent = aws.bedrock.last_request().unwrap();
    assert_eq!(
        sent["messages"][1]["content"][1]["toolUse"]["input"],
        call["input"]
    );
    assert_eq!(
        sent["messages"][2]["content"][0]["toolResult"]["toolUseId"],
        call["id"]
    );
}

#[tokio::test]
async fn a_generation_longer_than_the_integration_timeout_streams_to_the_end() {
    // fake.slow takes 2 s; the route integration gives up after 300 ms, as API Gateway's does
    // after 29 s. The chat route returns at once, so the client never sees the timeout message.
    let aws = Aws::start(Duration::from_millis(300), WsSettings::default()).await;
    let (mut ws, _) = aws.connect().await;
    send_chat(&mut ws, "fake.slow", "long").await;
    let frames = until_done(&mut ws, "long").await;
    assert!(
        frames
            .iter()
            .all(|f| f.get("message") != Some(&json!("Endpoint request timed out")))
    );
    assert_eq!(frames.last().unwrap()["type"], "done");
    assert_eq!(joined_text(&frames, "long"), words(40));
    assert_eq!(aws.emulator.count(|c| &c.integration_timeouts), 0);
}

#[tokio::test]
async fn a_cancel_frame_from_another_invocation_aborts_the_upstream_stream() {
    let aws = Aws::default().await;
    let (mut ws, id) = aws.connect().await;
    start_slow_chat(&mut ws).await;
    assert_eq!(next(&mut ws).await["type"], "delta");
    send(&mut ws, json!({"action": "cancel", "request_id": "r1"})).await;
    let frames = until_done(&mut ws, "r1").await;
    let last = frames.last().unwrap();
    assert_eq!(last["code"], "cancelled", "{frames:?}");
    assert!(
        aws.bedrock
            .wait_for(Duration::from_secs(10), |b| b.aborted() == 1)
            .await
    );
    assert_eq!(aws.bedrock.completed(), 0);
    assert!(joined_text(&frames, "r1").len() < words(40).len());
    assert!(aws.wait_for_item(&id, no_chats_in_flight).await);
}

#[tokio::test]
async fn closing_the_socket_mid_stream_aborts_the_upstream_and_forgets_the_connection() {
    let aws = Aws::default().await;
    let (mut ws, id) = aws.connect().await;
    start_slow_chat(&mut ws).await;
    ws.close(None).await.unwrap();
    drop(ws);
    assert!(
        aws.emulator
            .wait_for(Duration::from_secs(10), |e| e.count(|c| &c.disconnects)
                == 1)
            .await
    );
    assert!(
        aws.bedrock
            .wait_for(Duration::from_secs(10), |b| b.aborted() == 1)
            .await
    );
    assert_eq!(aws.bedrock.completed(), 0);
    assert!(aws.wait_for_item(&id, deleted).await);
}

#[tokio::test]
async fn a_410_gone_cancels_the_upstream_and_deletes_the_record_without_a_disconnect() {
    let aws = Aws::default().await;
    let (mut ws, id) = aws.connect().await;
    start_slow_chat(&mut ws).await;
    aws.emulator.vanish(&id);
    assert!(
        aws.bedrock
            .wait_for(Duration::from_secs(10), |b| b.aborted() == 1)
            .await
    );
    assert!(aws.emulator.count(|c| &c.gone) >= 1);
    assert_eq!(aws.emulator.count(|c| &c.disconnects), 0);
    assert!(aws.wait_for_item(&id, deleted).await);
}

#[tokio::test]
async fn throttled_posts_are_retried_and_nothing_is_lost() {
    let aws = Aws::default().await;
    let (mut ws, _) = aws.connect().await;
    aws.emulator.throttle_next_posts(3);
    send_chat(&mut ws, "fake", "r1").await;
    let frames = until_done(&mut ws, "r1").await;
    assert_eq!(frames.first().unwrap()["type"], "start");
    assert_eq!(frames.last().unwrap()["type"], "done");
    assert!(!joined_text(&frames, "r1").is_empty());
    assert_eq!(aws.emulator.count(|c| &c.throttled), 3);
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_ping_gets_pong() {
    let aws = Aws::default().await;
    let (mut ws, connection_id) = aws.connect().await;
    let error_of = |f: &Value| {
        (
            f["type"].clone(),
            f["code"].clone(),
            f["request_id"].clone(),
        )
    };

    ws.send(Message::text("not json")).await.unwrap();
    assert_eq!(
        error_of(&next(&mut ws).await),
        (json!("error"), json!("invalid_request"), Value::Null)
    );
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    let f = next(&mut ws).await;
    assert!(f["message"].as_str().unwrap().contains("binary"), "{f}");
    send(&mut ws, json!({"action": "dance", "request_id": "x1"})).await;
    assert_eq!(
        error_of(&next(&mut ws).await),
        (json!("error"), json!("invalid_request"), json!("x1"))
    );
    send(&mut ws, json!({"action": "chat", "request_id": "x2"})).await;
    let f = next(&mut ws).await;
    assert_eq!(
        error_of(&f),
        (json!("error"), json!("invalid_request"), json!("x2"))
    );
    assert!(f["message"].as_str().unwrap().contains("message"), "{f}");
    let big = json!({"action": "chat", "message": "x".repeat(130 * 1024)});
    send(&mut ws, big).await;
    assert_eq!(next(&mut ws).await["code"], "payload_too_large");

    send(&mut ws, json!({"action": "ping", "request_id": "p1"})).await;
    assert_eq!(
        next(&mut ws).await,
        json!({"type": "pong", "request_id": "p1", "connection_id": connection_id})
    );
    // Still usable.
    send_chat(&mut ws, "fake", "ok").await;
    assert_eq!(
        until_done(&mut ws, "ok").await.last().unwrap()["type"],
        "done"
    );
}

#[tokio::test]
async fn one_users_open_connections_are_capped_in_the_connection_store() {
    let websocket = WsSettings {
        max_per_principal: 2,
        ..WsSettings::default()
    };
    let aws = Aws::start(Duration::from_secs(29), websocket).await;
    let (first, _) = aws.connect().await;
    let _second = aws.connect().await;
    let alice = aws.url(Some(&dev_token("alice", &["chat"])));
    ws_client::assert_refused(&alice, 429).await;
    // Another user is not affected; a closed connection ($disconnect) frees its seat.
    let _bob = ws_client::connect(&aws.url(Some(&dev_token("bob", &["chat"])))).await;
    drop(first);
    let reopened = eventually(Duration::from_secs(5), || async {
        tokio_tungstenite::connect_async(&alice).await.is_ok()
    })
    .await;
    assert!(
        reopened,
        "the closed connection's seat was never given back"
    );
}

#[tokio::test]
async fn the_per_connection_limit_and_duplicate_ids_hold_across_invocations() {
    let websocket = WsSettings {
        max_inflight: 2,
        ..WsSettings::default()
    };
    let aws = Aws::start(Duration::from_secs(29), websocket).await;
    let (mut ws, _) = aws.connect().await;
    for id in ["a", "b"] {
        send_chat(&mut ws, "fake.stall", id).await;
    }
    // Both are admitted once their `start` frames arrive.
    for _ in 0..2 {
        assert_eq!(next(&mut ws).await["type"], "start");
    }
    send_chat(&mut ws, "fake", "a").await;
    let f = next(&mut ws).await;
    assert_eq!(
        (f["code"].clone(), f["request_id"].clone()),
        (json!("invalid_request"), json!("a")),
        "{f}"
    );
    send_chat(&mut ws, "fake", "c").await;
    let f = next(&mut ws).await;
    assert_eq!(
        (f["code"].clone(), f["retryable"].clone()),
        (json!("rate_limited"), json!(true)),
        "{f}"
    );
    // Cancelling frees a slot.
    send(&mut ws, json!({"action": "cancel", "request_id": "a"})).await;
    assert_eq!(next(&mut ws).await["code"], "cancelled");
    let mut admitted = false;
    for _ in 0..100 {
        send_chat(&mut ws, "fake", "d").await;
        let f = next(&mut ws).await;
        if f["type"] == "start" {
            admitted = true;
            break;
        }
        assert_eq!(f["code"], "rate_limited", "{f}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted, "the cancelled chat's slot was never freed");
}

#[tokio::test]
async fn the_management_api_answers_the_real_sdk() {
    let aws = Aws::default().await;
    let (mut ws, id) = aws.connect().await;
    let client = aws_sdk_apigatewaymanagement::Client::from_conf(
        aws_sdk_apigatewaymanagement::config::Builder::from(&test_sdk_config())
            .endpoint_url(format!(
                "http://{}/{STAGE}",
                aws.emulator
                    .ws_url()
                    .trim_start_matches("ws://")
                    .split('/')
                    .next()
                    .unwrap()
            ))
            .build(),
    );
    let info = client
        .get_connection()
        .connection_id(&id)
        .send()
        .await
        .unwrap();
    assert!(info.connected_at().is_some());
    client
        .post_to_connection()
        .connection_id(&id)
        .data(aws_sdk_apigatewaymanagement::primitives::Blob::new(
            r#"{"type":"pong"}"#,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await, json!({"type": "pong"}));
    let unknown = client
        .post_to_connection()
        .connection_id("nope")
        .data(aws_sdk_apigatewaymanagement::primitives::Blob::new("x"))
        .send()
        .await
        .unwrap_err();
    assert!(unknown.as_service_error().unwrap().is_gone_exception());
    client
        .delete_connection()
        .connection_id(&id)
        .send()
        .await
        .unwrap();
    assert!(matches!(
        ws.next().await,
        Some(Ok(Message::Close(_))) | None
    ));
    assert!(aws.wait_for_item(&id, deleted).await);
}

#[tokio::test]
async fn every_post_fits_a_websocket_frame() {
    let aws = Aws::default().await;
    let (mut ws, _) = aws.connect().await;
    // fake.huge: 80,000 characters in four deltas, which merged would far exceed one frame.
    send_chat(&mut ws, "fake.huge", "r1").await;
    let frames = until_done(&mut ws, "r1").await;
    assert_eq!(joined_text(&frames, "r1"), HUGE_DELTA.repeat(8_000));
    let largest = aws.emulator.count(|c| &c.largest_post);
    assert!(
        largest <= MAX_POST_BYTES as u64 && largest > 20_000,
        "{largest}"
    );
    assert!(frames.len() > 5, "{}", frames.len());
}

#[tokio::test]
async fn every_chat_leaves_one_valid_emf_line() {
    let aws = Aws::default().await;
    let (mut ws, _) = aws.connect().await;
    send_chat(&mut ws, "fake", "m1").await;
    let frames = until_done(&mut ws, "m1").await;
    let done = frames.last().unwrap();
    assert_eq!(done["type"], "done");
    let documents = emf_documents(&aws.emf.0.lock().unwrap());
    assert_eq!(documents.len(), 1, "{documents:?}");
    let line = &documents[0];
    assert_eq!(line["Route"], "lambda_websocket");
    assert_eq!(line["Code"], "ok");
    assert_eq!(line["Model"], "fake");
    assert_eq!(line["Tenant"], "alice");
    assert_eq!(line["Chats"], 1);
    assert_eq!(line["OutputTokens"], done["usage"]["output_tokens"]);
    assert!(line["GatewayOverhead"].as_f64().unwrap() >= 0.0);
    assert!(line["TimeToFirstDelta"].as_f64().unwrap() <= line["Latency"].as_f64().unwrap());
    // The tenant is a property, never a dimension: dimensions are bounded.
    assert!(!line["_aws"].to_string().contains("Tenant"));

    send_chat(&mut ws, "fake.unknown-model", "m2").await;
    let frames = until_done(&mut ws, "m2").await;
    assert_eq!(frames.last().unwrap()["type"], "error");
    let documents = emf_documents(&aws.emf.0.lock().unwrap());
    assert_eq!(documents.len(), 2);
    assert_eq!(documents[1]["Code"], frames.last().unwrap()["code"]);
}

/// The `nagare-ws` binary under the Lambda Runtime API, configured only through the environment
/// as on AWS: `$connect` stores the connection in DynamoDB, `$disconnect` deletes it, and a
/// `$connect` without the authorizer's subject is refused.
#[tokio::test]
async fn the_nagare_ws_binary_serves_connect_and_disconnect() {
    let dynamodb = moto::dynamodb();
    let table = moto::tables(&dynamodb).await.unwrap().connections;
    let runtime = FakeLambdaRuntime::start().await.unwrap();
    let mut child = tokio::process::Command::new(workspace_binary("nagare-ws").unwrap())
        .env_clear()
        .envs(runtime.env("nagare-ws"))
        .env("AWS_ACCESS_KEY_ID", "AKIDNAGARETEST")
        .env("AWS_SECRET_ACCESS_KEY", "nagare-test-secret")
        .env("AWS_ENDPOINT_URL_DYNAMODB", moto::url())
        .env("NAGARE__STORE__KIND", "dynamodb")
        .env("NAGARE__STORE__CONNECTIONS_TABLE", &table)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let event = |route: &str, authorizer: Value| {
        json!({
            "requestContext": {
                "routeKey": route, "eventType": "CONNECT", "stage": "prod",
                "domainName": "abc.execute-api.us-east-1.amazonaws.com",
                "connectionId": "bin-conn=", "connectedAt": 0, "requestTimeEpoch": 0,
                "requestId": "apigw-request-1",
                "identity": {"sourceIp": "127.0.0.1"}, "authorizer": authorizer,
            },
            "isBase64Encoded": false,
        })
    };
    let invoke = async |event: Value| {
        runtime.invoke(event).await;
        match runtime
            .result(Duration::from_secs(30))
            .await
            .expect("no answer")
        {
            Invocation {
                outcome: Outcome::Response(r),
                request_id,
            } => (r["statusCode"].clone(), request_id),
            other => panic!("{other:?}"),
        }
    };
    let status = async |event: Value| invoke(event).await.0;

    let (refused, lambda_request_id) = invoke(event("$connect", json!({"principalId": "x"}))).await;
    assert_eq!(refused, 403);
    // The refusal's log line carries both request ids, from the invocation's span.
    let mut logs = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), logs.next_line())
            .await
            .expect("no log line within 10 s")
            .unwrap()
            .expect("stdout closed");
        if line.contains("without an authorizer subject") {
            break serde_json::from_str::<Value>(&line).unwrap();
        }
    };
    let invocation = &line["span"];
    assert_eq!(
        invocation["aws_request_id"],
        lambda_request_id.as_str(),
        "{line}"
    );
    assert_eq!(invocation["apigw_request_id"], "apigw-request-1", "{line}");
    tokio::spawn(async move { while let Ok(Some(_)) = logs.next_line().await {} });
    let context =
        json!({"principalId": "alice", "sub": "alice", "tenant": "acme", "scopes": "chat"});
    assert_eq!(status(event("$connect", context.clone())).await, 200);
    let item = dynamodb
        .get_item()
        .table_name(&table)
        .key("connection_id", AttributeValue::S("bin-conn=".into()))
        .send()
        .await
        .unwrap()
        .item
        .expect("the record");
    assert_eq!(item["tenant"].as_s().unwrap(), "acme");
    assert_eq!(
        item["domain"].as_s().unwrap(),
        "abc.execute-api.us-east-1.amazonaws.com"
    );
    assert_eq!(status(event("$disconnect", context)).await, 200);
    let gone = dynamodb
        .get_item()
        .table_name(&table)
        .key("connection_id", AttributeValue::S("bin-conn=".into()))
        .send()
        .await
        .unwrap()
        .item;
    assert!(gone.is_none());
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_task_result_reaches_the_connection_through_the_management_api() {
    use nagare_gateway::chat::parse_chat_request;
    use nagare_gateway::push::StoredConnections;
    use nagare_gateway::tasks::{
        Callbacks, ConnectionDelivery, DeliveryStatus, Destinations, DynamoTaskStore, Handled,
        SqsQueue, TaskSettings, TaskStatus, Tasks, Worker,
    };

    let aws = Aws::default().await;
    let (mut ws, connection_id) = aws.connect().await;
    // As `nagare-worker` builds it: task records and the queue on moto, the connection found in
    // the table `$connect` wrote, frames posted through the real Management API client.
    let tasks_table = moto::tables(&aws.dynamodb).await.unwrap().tasks;
    let sqs = moto::sqs();
    let (queue_url, _) = moto::task_queues(&sqs, 4).await.unwrap();
    let settings = TaskSettings::default();
    let lambda = LambdaWsSettings {
        management_endpoint: Some(aws.emulator.management_endpoint()),
        ..LambdaWsSettings::default()
    };
    let connections = Arc::new(DynamoConnectionStore::new(aws.dynamodb.clone(), &aws.table));
    let tasks = Tasks {
        store: Arc::new(DynamoTaskStore::new(
            aws.dynamodb.clone(),
            tasks_table,
            3600,
        )),
        queue: Arc::new(SqsQueue::new(sqs, queue_url, None).with_wait_secs(1)),
        callbacks: Arc::new(Callbacks::new(b"secret".to_vec(), &settings, true)),
        connections: Some(Arc::new(ConnectionDelivery::new(
            Arc::new(StoredConnections::new(
                connections,
                lambda.management_endpoint.clone(),
            )),
            Arc::new(ApiGatewayPusher::new(test_sdk_config())),
            3,
        ))),
        settings,
    };
    let (app, _data) = Gateway::builder()
        .model(Arc::new(bedrock_provider(&aws.bedrock.url())))
        .models("fake", &["fake.huge"])
        .app()
        .await
        .unwrap();
    let worker = Worker::new(tasks.clone(), app.pipeline.clone());
    let verifier = Verifier::new(&AuthSettings::default(), Some(DEV_SECRET)).unwrap();
    let run = |principal, body: Value| {
        let (tasks, worker, app) = (&tasks, &worker, &app);
        let connection_id = connection_id.clone();
        async move {
            let request = parse_chat_request(body.to_string().as_bytes()).unwrap();
            let to = Destinations {
                callback_url: None,
                connection_id: Some(connection_id),
            };
            let task_id = tasks.submit(&app.pipeline, &principal, request, to).await?;
            let message = tasks.queue.receive(1, 60).await.unwrap().pop().unwrap();
            assert_eq!(worker.handle(message).await, Handled::Done);
            Ok::<_, nagare_gateway::Error>(tasks.store.get(&task_id).await.unwrap().unwrap())
        }
    };
    let alice = verifier
        .verify(&dev_token("alice", &["chat"]))
        .await
        .unwrap();

    // A long answer, with one throttled post on the way: every frame fits, nothing is lost.
    aws.emulator.throttle_next_posts(1);
    let body = json!({"message": "x", "model": "fake.huge", "request_id": "t1"});
    let record = run(alice.clone(), body).await.unwrap();
    let frames = until_done(&mut ws, "t1").await;
    assert_eq!(frames.first().unwrap()["type"], "start");
    assert_eq!(frames.last().unwrap()["type"], "done");
    let reply = record.result.unwrap();
    assert_eq!(joined_text(&frames, "t1"), reply.message.content);
    assert_eq!(record.connection_delivery, Some(DeliveryStatus::Delivered));
    assert_eq!(aws.emulator.count(|c| &c.throttled), 1);
    assert!(aws.emulator.count(|c| &c.largest_post) <= MAX_POST_BYTES as u64);

    // Someone else's connection is refused at submit.
    let bob = verifier.verify(&dev_token("bob", &["chat"])).await.unwrap();
    let refused = run(bob, json!({"message": "x"})).await.unwrap_err();
    assert_eq!(refused.code(), nagare_gateway::ErrorCode::InvalidRequest);

    // A connection lost without `$disconnect`: 410 fails the delivery, not the task.
    aws.emulator.vanish(&connection_id);
    let record = run(alice, json!({"message": "x"})).await.unwrap();
    assert_eq!(record.status, TaskStatus::Succeeded);
    assert_eq!(record.connection_delivery, Some(DeliveryStatus::Failed));
    assert!(aws.emulator.count(|c| &c.gone) >= 1);
}
