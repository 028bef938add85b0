//! The real `nagare-http` and `nagare-stream` binaries under the fake Lambda Runtime API, with
//! API Gateway HTTP API (payload 2.0) events, which Function URLs send too: the self-hosted
//! router answers, tokens are checked against an OIDC issuer's JWKS, tasks go to SQS (moto), and
//! `nagare-stream` sends `/v1/chat/stream` as the model generates it, in streaming mode. The
//! OpenAI and Anthropic dialects answer on both, the Anthropic one with the token as `x-api-key`
//! (its routes are left to the function's own verification, see deploy/template.yaml).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use nagare_tests::fake_lambda::{Outcome, workspace_binary};
use nagare_tests::{FakeIssuer, FakeLambdaRuntime, TempDir, TestKey, moto};
use serde_json::{Value, json};
use tokio::process::Child;

struct Function {
    runtime: FakeLambdaRuntime,
    _child: Child,
    _issuer: FakeIssuer,
    _data: TempDir,
    token: String,
    queue_url: String,
}

impl Function {
    /// Runs `binary` as Lambda would, configured the way deploy/template.yaml configures it,
    /// with the mock model paced at `tokens_per_second`.
    async fn start(binary: &str, tokens_per_second: u32) -> Self {
        let key = TestKey::new("k1", "rsa-1", Algorithm::RS256).unwrap();
        let issuer = FakeIssuer::start(&[&key]).await.unwrap();
        let runtime = FakeLambdaRuntime::start().await.unwrap();
        let sqs = moto::sqs();
        let (queue_url, _) = moto::task_queues(&sqs, 4).await.unwrap();
        let data = TempDir::new(binary).unwrap();
        let issuers = format!(
            r#"[{{issuer = "{}", audiences = ["app"]}}]"#,
            issuer.issuer()
        );
        let child = tokio::process::Command::new(workspace_binary(binary).unwrap())
            .env_clear()
            .envs(runtime.env(binary))
            .env("AWS_ACCESS_KEY_ID", "AKIDNAGARETEST")
            .env("AWS_SECRET_ACCESS_KEY", "nagare-test-secret")
            .env("AWS_ENDPOINT_URL_SQS", moto::url())
            .env("NAGARE__AUTH__ISSUERS", issuers)
            .env("NAGARE__SERVER__DATA_DIR", data.path())
            .env("NAGARE__PROVIDER__MOCK__TTFT_MS", "0")
            .env(
                "NAGARE__PROVIDER__MOCK__TOKENS_PER_SECOND",
                tokens_per_second.to_string(),
            )
            .env("NAGARE__TASKS__QUEUE", "sqs")
            .env("NAGARE__TASKS__QUEUE_URL", &queue_url)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let token = issuer.token(&key, "alice", "chat");
        Self {
            runtime,
            _child: child,
            _issuer: issuer,
            _data: data,
            token,
            queue_url,
        }
    }

    /// An HTTP API (payload 2.0) event.
    fn event(&self, method: &str, path: &str, body: Option<Value>, authed: bool) -> Value {
        let mut headers = json!({"content-type": "application/json", "host": "api.example.com"});
        if authed {
            headers["authorization"] = json!(format!("Bearer {}", self.token));
        }
        json!({
            "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
            "headers": headers,
            "requestContext": {
                "accountId": "123456789012", "apiId": "api", "domainName": "api.example.com",
                "domainPrefix": "api", "requestId": "apigw-1", "routeKey": "$default",
                "stage": "$default", "time": "27/Nov/2026:10:00:00 +0000", "timeEpoch": 0,
                "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                         "sourceIp": "203.0.113.7", "userAgent": "test"},
            },
            "body": body.map(|b| b.to_string()),
            "isBase64Encoded": false,
        })
    }

    /// An event for the Anthropic routes: the token as `x-api-key`, as the Anthropic SDK sends it.
    fn api_key_event(&self, path: &str, body: Value) -> Value {
        let mut event = self.event("POST", path, Some(body), false);
        event["headers"]["x-api-key"] = json!(self.token);
        event
    }

    async fn call(&self, event: Value) -> Outcome {
        self.runtime.invoke(event).await;
        self.runtime
            .result(Duration::from_secs(30))
            .await
            .expect("the function did not answer")
            .outcome
    }

    /// A buffered answer: (status, JSON body).
    async fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u64, Value) {
        match self.call(self.event(method, path, body, true)).await {
            Outcome::Response(r) => {
                let body = r["body"].as_str().unwrap_or("null");
                (
                    r["statusCode"].as_u64().unwrap(),
                    serde_json::from_str(body).unwrap(),
                )
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn the_http_function_serves_chat_tasks_and_conversations() {
    let f = Function::start("nagare-http", 0).await;

    let (status, reply) = f
        .request("POST", "/v1/chat", Some(json!({"message": "hello"})))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert!(!reply["message"]["content"].as_str().unwrap().is_empty());
    let conversation = reply["conversation_id"].as_str().unwrap().to_owned();

    let (status, list) = f.request("GET", "/v1/conversations", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["conversations"][0]["conversation_id"], conversation);

    let (status, accepted) = f
        .request("POST", "/v1/tasks", Some(json!({"message": "later"})))
        .await;
    assert_eq!(status, 202, "{accepted}");
    // Queued in SQS for nagare-worker; this function runs no tasks.
    let received = moto::sqs()
        .receive_message()
        .queue_url(&f.queue_url)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    let bodies: Vec<_> = received
        .messages()
        .iter()
        .filter_map(|m| m.body())
        .collect();
    assert_eq!(bodies, [accepted["task_id"].as_str().unwrap()]);

    // No token: the error table's 401, from the function itself.
    let refused = f
        .call(f.event("POST", "/v1/chat", Some(json!({"message": "x"})), false))
        .await;
    let Outcome::Response(r) = refused else {
        panic!("{refused:?}")
    };
    assert_eq!(r["statusCode"], 401);
    let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");

    let (status, completion) = f
        .request(
            "POST",
            "/v1/chat/completions",
            Some(json!({"model": "mock", "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await;
    assert_eq!(status, 200, "{completion}");
    assert_eq!(completion["object"], "chat.completion");
    let ask =
        json!({"model": "mock", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]});
    let Outcome::Response(r) = f.call(f.api_key_event("/v1/messages", ask.clone())).await else {
        panic!("expected a buffered response")
    };
    assert_eq!(r["statusCode"], 200, "{r}");
    let message: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(message["type"], "message");
    // Without a key, the function refuses in Anthropic's shape.
    let Outcome::Response(r) = f
        .call(f.event("POST", "/v1/messages", Some(ask), false))
        .await
    else {
        panic!("expected a buffered response")
    };
    assert_eq!(r["statusCode"], 401);
    let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
}

#[tokio::test]
async fn the_stream_function_sends_each_event_as_it_is_generated() {
    // 20 tokens at 20 per second: the model takes about a second to finish.
    let f = Function::start("nagare-stream", 20).await;
    let body = json!({"message": "hello", "inference": {"max_tokens": 20}});
    let outcome = f
        .call(f.event("POST", "/v1/chat/stream", Some(body), true))
        .await;
    let Outcome::Streamed { prelude, body } = outcome else {
        panic!("expected a streamed response, got {outcome:?}")
    };
    assert_eq!(prelude["statusCode"], 200, "{prelude}");
    assert_eq!(prelude["headers"]["content-type"], "text/event-stream");
    let text: String = body.iter().map(|(_, piece)| piece.as_str()).collect();
    assert!(text.starts_with("event: start"), "{text}");
    assert!(text.contains("event: done"), "{text}");
    // Deltas arrived in pieces of their own, spread over the generation: the first long before
    // the last (the model paces 20 tokens at 50 ms each), not in one buffered body.
    let deltas: Vec<Duration> = body
        .iter()
        .filter(|(_, piece)| piece.contains("event: delta"))
        .map(|(at, _)| *at)
        .collect();
    assert!(deltas.len() >= 5, "{} pieces with deltas", deltas.len());
    let spread = *deltas.last().unwrap() - deltas[0];
    assert!(
        spread >= Duration::from_millis(400),
        "every delta arrived within {spread:?}: the body was buffered"
    );
}

#[tokio::test]
async fn the_stream_function_streams_both_dialects() {
    let f = Function::start("nagare-stream", 0).await;
    let ask = json!({"model": "mock", "max_tokens": 8, "stream": true,
                     "messages": [{"role": "user", "content": "hello"}]});
    let streamed = |outcome: Outcome| {
        let Outcome::Streamed { prelude, body } = outcome else {
            panic!("expected a streamed response, got {outcome:?}")
        };
        assert_eq!(prelude["statusCode"], 200, "{prelude}");
        body.into_iter().map(|(_, piece)| piece).collect::<String>()
    };
    let text = streamed(f.call(f.api_key_event("/v1/messages", ask.clone())).await);
    assert!(text.starts_with("event: message_start"), "{text}");
    assert!(
        text.trim_end()
            .ends_with(r#"data: {"type":"message_stop"}"#),
        "{text}"
    );
    let text = streamed(
        f.call(f.event("POST", "/v1/chat/completions", Some(ask), true))
            .await,
    );
    assert!(text.contains("chat.completion.chunk"), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
}
