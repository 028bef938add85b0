#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The gRPC facade through a tonic client: unary and streaming chat over the real Bedrock SDK
//! against the fake, deadlines and cancellation reaching the upstream, authentication, bad
//! requests, the error table in statuses and trailers, conversations, health and reflection.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use nagare_proto::v1 as pb;
use nagare_proto::v1::chat_event::Event;
use nagare_proto::v1::chat_service_client::ChatServiceClient;
use nagare_proto::v1::conversation_service_client::ConversationServiceClient;
use nagare_tests::{FakeBedrock, Gateway, bedrock_provider, dev_token};
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};

async fn gateway(fake: &FakeBedrock) -> Gateway {
    Gateway::start(
        Arc::new(bedrock_provider(&fake.url())),
        "fake",
        &["fake.slow", "fake.throttle-9", "fake.midstream-error"],
    )
    .await
    .unwrap()
}

async fn channel(gw: &Gateway) -> Channel {
    Channel::from_shared(gw.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn chat_client(gw: &Gateway) -> ChatServiceClient<Channel> {
    ChatServiceClient::connect(gw.grpc_url()).await.unwrap()
}

/// `message` with `authorization: Bearer <a chat token for sub>`.
fn as_user<T>(sub: &str, message: T) -> Request<T> {
    with_token(&dev_token(sub, &["chat"]), message)
}

fn with_token<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

fn ask(text: &str) -> pb::ChatRequest {
    pb::ChatRequest {
        message: text.into(),
        ..Default::default()
    }
}

fn ask_model(text: &str, model: &str) -> pb::ChatRequest {
    pb::ChatRequest {
        model: Some(model.into()),
        ..ask(text)
    }
}

fn trailer<'a>(status: &'a Status, key: &str) -> Option<&'a str> {
    status.metadata().get(key).and_then(|v| v.to_str().ok())
}

/// Reads the stream to its end: the messages, and the status if it ended with one.
async fn drain(mut stream: Streaming<pb::ChatEvent>) -> (Vec<Event>, Option<Status>) {
    let mut events = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(m)) => events.push(m.event.unwrap()),
            Ok(None) => return (events, None),
            Err(status) => return (events, Some(status)),
        }
    }
}

/// Starts a stream that the server accepts, and reads it to its end.
async fn stream_chat(
    client: &mut ChatServiceClient<Channel>,
    request: Request<pb::ChatRequest>,
) -> (Vec<Event>, Option<Status>) {
    let stream = client.converse_stream(request).await.unwrap().into_inner();
    drain(stream).await
}

/// The `start` event, which must come first.
fn start_of(events: &[Event]) -> &pb::Start {
    match events.first() {
        Some(Event::Start(start)) => start,
        _ => panic!("the first event is not start: {events:?}"),
    }
}

fn text_of(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Delta(d) => Some(d.text.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn converse_and_converse_stream_give_the_same_answer() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake).await;
    let mut client = chat_client(&gw).await;

    let response = client
        .converse(as_user("alice", ask("hello")))
        .await
        .unwrap();
    let header_id = response.metadata().get("x-request-id").cloned();
    let reply = response.into_inner();
    assert_eq!(reply.message.as_ref().unwrap().role, "assistant");
    assert_eq!(reply.message.unwrap().content, "Hello from fake Bedrock");
    assert_eq!(reply.model, "fake");
    assert_eq!(reply.stop_reason, "end_turn");
    assert!(reply.usage.unwrap().output_tokens > 0);
    assert!(!reply.cached);
    assert_eq!(header_id.unwrap().to_str().unwrap(), reply.request_id);

    let request = pb::ChatRequest {
        request_id: Some("grpc-r1".into()),
        ..ask("hello")
    };
    let (events, status) = stream_chat(&mut client, as_user("alice", request)).await;
    assert!(status.is_none(), "{status:?}");
    let start = start_of(&events);
    assert_eq!(
        (start.request_id.as_str(), start.model.as_str()),
        ("grpc-r1", "fake")
    );
    let Some(Event::Done(done)) = events.last() else {
        panic!("last event is not done: {events:?}");
    };
    assert_eq!(done.request_id, "grpc-r1");
    assert!(done.usage.unwrap().output_tokens > 0);
    assert!(events.len() > 3, "{events:?}");
    assert_eq!(text_of(&events), "Hello from fake Bedrock");
    assert_eq!(fake.calls(), 2);
}

#[tokio::test]
async fn a_deadline_mid_stream_is_deadline_exceeded_and_drops_the_upstream_stream() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake).await;
    let mut client = chat_client(&gw).await;

    // fake.slow sends 40 deltas 50 ms apart: two seconds, four times the deadline.
    let mut request = as_user("alice", ask_model("hello", "fake.slow"));
    request.set_timeout(Duration::from_millis(500));
    let (events, status) = stream_chat(&mut client, request).await;
    let status = status.expect("the stream ended without a status");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        trailer(&status, "nagare-error-code"),
        Some("upstream_timeout")
    );
    assert!(
        matches!(events.first(), Some(Event::Start(_))),
        "{events:?}"
    );
    assert!(!text_of(&events).is_empty(), "no delta before the deadline");
    assert!(!events.iter().any(|e| matches!(e, Event::Done(_))));
    assert!(
        fake.wait_for(Duration::from_secs(10), |f| f.aborted() == 1)
            .await,
        "the fake Bedrock did not see the stream dropped"
    );

    // Unary calls are bounded the same way. tonic's client runs its own timer for the same
    // deadline, so which side reports first is a race: the server's DEADLINE_EXCEEDED or the
    // client's local CANCELLED "Timeout expired". Either way the upstream stream must go.
    let mut request = as_user("alice", ask_model("hello", "fake.slow"));
    request.set_timeout(Duration::from_millis(300));
    let status = client.converse(request).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert!(
        fake.wait_for(Duration::from_secs(10), |f| f.aborted() == 2)
            .await
    );
    assert_eq!(fake.completed(), 0);
}

#[tokio::test]
async fn a_client_cancel_drops_the_upstream_stream() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake).await;
    let mut client = chat_client(&gw).await;
    let mut stream = client
        .converse_stream(as_user("alice", ask_model("hello", "fake.slow")))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(first.event, Some(Event::Start(_))));
    let second = stream.message().await.unwrap().unwrap();
    assert!(matches!(second.event, Some(Event::Delta(_))));
    // Dropping the response stream resets the HTTP/2 stream: a gRPC cancel.
    drop(stream);
    assert!(
        fake.wait_for(Duration::from_secs(10), |f| f.aborted() == 1)
            .await,
        "the fake Bedrock did not see the stream dropped"
    );
    assert_eq!(fake.completed(), 0);
    // The connection is still good for the next call.
    let reply = client.converse(as_user("alice", ask("again"))).await;
    assert_eq!(reply.unwrap().into_inner().model, "fake");
}

#[tokio::test]
async fn calls_without_a_valid_token_are_refused_before_the_model() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake).await;
    let mut chat = chat_client(&gw).await;
    let mut conversations = ConversationServiceClient::connect(gw.grpc_url())
        .await
        .unwrap();

    let status = chat.converse(Request::new(ask("hi"))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(trailer(&status, "nagare-error-code"), Some("unauthorized"));
    let status = chat
        .converse_stream(with_token("not.a.jwt", ask("hi")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let no_scope = dev_token("alice", &["profile"]);
    let status = chat
        .converse(with_token(&no_scope, ask("hi")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(trailer(&status, "nagare-error-code"), Some("forbidden"));
    let list = pb::ListConversationsRequest::default();
    let status = conversations.list(Request::new(list)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(fake.calls(), 0);
}

#[tokio::test]
async fn bad_requests_are_invalid_argument_with_the_field_named() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake).await;
    let mut client = chat_client(&gw).await;

    let cases = [
        (ask("  "), "invalid_request", "message"),
        (
            pb::ChatRequest {
                cache: 7,
                ..ask("hi")
            },
            "invalid_request",
            "cache: unknown value 7",
        ),
        (
            pb::ChatRequest {
                inference: Some(pb::Inference {
                    temperature: Some(5.0),
                    ..Default::default()
                }),
                ..ask("hi")
            },
            "invalid_request",
            "inference.temperature",
        ),
        (
            pb::ChatRequest {
                request_id: Some("x".repeat(500)),
                ..ask("hi")
            },
            "invalid_request",
            "request_id",
        ),
        // Over the REST body limit (256 KiB in the test gateway) but under gRPC's message limit.
        (ask(&"a".repeat(300 * 1024)), "payload_too_large", "limit"),
    ];
    for (request, code, needle) in cases {
        let status = client
            .converse(as_user("alice", request))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(trailer(&status, "nagare-error-code"), Some(code));
        assert!(status.message().contains(needle), "{needle}: {status:?}");
    }

    let mut request = as_user("alice", ask("hi"));
    request
        .metadata_mut()
        .insert("grpc-timeout", "soon".parse().unwrap());
    let status = client.converse(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("grpc-timeout"), "{status:?}");

    // Over grpc.max_message_bytes (4 MiB): tonic refuses it while decoding.
    let huge = ask(&"a".repeat(5 * 1024 * 1024));
    let status = client.converse(as_user("alice", huge)).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    assert_eq!(fake.calls(), 0);
    let reply = client.converse(as_user("alice", ask("fine"))).await;
    assert!(reply.is_ok(), "{reply:?}");
}

#[tokio::test]
async fn upstream_failures_carry_the_error_table_code_and_retry_hint() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake).await;
    let mut client = chat_client(&gw).await;

    let status = client
        .converse(as_user("alice", ask_model("hi", "fake.throttle-9")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        trailer(&status, "nagare-error-code"),
        Some("upstream_throttled")
    );
    assert_eq!(trailer(&status, "nagare-retryable"), Some("true"));
    assert!(trailer(&status, "x-request-id").is_some());

    // A failure after the first deltas ends the stream with the status instead of `done`.
    let (events, status) = stream_chat(
        &mut client,
        as_user("alice", ask_model("hi", "fake.midstream-error")),
    )
    .await;
    let status = status.expect("no status after the failure");
    let code = trailer(&status, "nagare-error-code").unwrap();
    assert!(code.starts_with("upstream_"), "{status:?}");
    assert_ne!(status.code(), Code::Ok);
    assert!(!text_of(&events).is_empty());
    assert!(!events.iter().any(|e| matches!(e, Event::Done(_))));
}

#[tokio::test]
async fn conversations_are_listed_read_and_deleted_by_their_owner_only() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = Gateway::builder()
        .model(Arc::new(bedrock_provider(&fake.url())))
        .models("fake", &[])
        .config(|c| c.memory.enabled = true)
        .start()
        .await
        .unwrap();
    let mut chat = chat_client(&gw).await;
    let mut conversations = ConversationServiceClient::connect(gw.grpc_url())
        .await
        .unwrap();

    let first = chat.converse(as_user("alice", ask("hello"))).await.unwrap();
    let id = first.into_inner().conversation_id.unwrap();
    let next = pb::ChatRequest {
        conversation_id: Some(id.clone()),
        ..ask("and then?")
    };
    let (events, status) = stream_chat(&mut chat, as_user("alice", next)).await;
    assert!(status.is_none(), "{status:?}");
    let start = start_of(&events).conversation_id.as_deref();
    assert_eq!(start, Some(id.as_str()));

    let list = pb::ListConversationsRequest::default();
    let listed = conversations
        .list(as_user("alice", list))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.conversations.len(), 1);
    assert_eq!(listed.conversations[0].conversation_id, id);
    assert_eq!(listed.conversations[0].exchanges, 2);
    assert_eq!(listed.next_page_token, "");

    let get = |sub: &str, page_size: u32, page_token: &str| {
        as_user(
            sub,
            pb::GetConversationRequest {
                conversation_id: id.clone(),
                page_size,
                page_token: page_token.into(),
            },
        )
    };
    let page = conversations.get(get("alice", 3, "")).await.unwrap();
    let page = page.into_inner();
    let roles: Vec<&str> = page.turns.iter().map(|t| t.role.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
    assert_eq!(page.turns[0].content, "hello");
    assert!(page.turns[1].usage.is_some());
    let rest = conversations
        .get(get("alice", 3, &page.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.turns.len(), 1);
    assert_eq!(rest.turns[0].role, "assistant");

    let status = conversations.get(get("bob", 0, "")).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = conversations.get(get("alice", 500, "")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("page_size"), "{status:?}");
    let status = conversations.get(get("alice", 0, "%%%")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let bad_id = pb::DeleteConversationRequest {
        conversation_id: "../etc".into(),
    };
    let status = conversations
        .delete(as_user("alice", bad_id))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let delete = || pb::DeleteConversationRequest {
        conversation_id: id.clone(),
    };
    let status = conversations
        .delete(as_user("bob", delete()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    conversations
        .delete(as_user("alice", delete()))
        .await
        .unwrap();
    let status = conversations.get(get("alice", 0, "")).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn without_memory_the_conversation_service_is_not_found() {
    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake).await;
    let mut conversations = ConversationServiceClient::connect(gw.grpc_url())
        .await
        .unwrap();
    let list = pb::ListConversationsRequest::default();
    let status = conversations
        .list(as_user("alice", list))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("memory"), "{status:?}");
}

#[tokio::test]
async fn health_is_serving_until_shutdown_begins() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

    let fake = FakeBedrock::start().await.unwrap();
    let mut gw = gateway(&fake).await;
    let mut health = HealthClient::new(channel(&gw).await);
    let check = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    for service in ["", "nagare.v1.ChatService", "nagare.v1.ConversationService"] {
        let status = health
            .check(check(service))
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health.check(check("nagare.v1.Nope")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // No token needed: load balancers and Kubernetes probes send none.
    let mut watch = health.watch(check("")).await.unwrap().into_inner();
    let serving = |m: Option<HealthCheckResponse>| m.map(|m| m.status);
    assert_eq!(
        serving(watch.message().await.unwrap()),
        Some(ServingStatus::Serving as i32)
    );
    gw.shutdown();
    assert_eq!(
        serving(watch.message().await.unwrap()),
        Some(ServingStatus::NotServing as i32)
    );
    // Then the stream ends, so it does not hold the graceful shutdown open.
    assert_eq!(watch.message().await.unwrap(), None);
    gw.stopped.take().unwrap().await.unwrap();
}

#[tokio::test]
async fn reflection_lists_and_describes_the_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

    let fake = FakeBedrock::start().await.unwrap();
    let gw = gateway(&fake).await;
    let mut reflection = ServerReflectionClient::new(channel(&gw).await);
    let ask = |message: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    };
    let requests = futures::stream::iter([
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol(
            "nagare.v1.ChatService".into(),
        )),
    ]);
    let responses: Vec<ServerReflectionResponse> = reflection
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner()
        .map(Result::unwrap)
        .collect()
        .await;
    let Some(MessageResponse::ListServicesResponse(list)) = &responses[0].message_response else {
        panic!("{responses:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "nagare.v1.ChatService",
        "nagare.v1.ConversationService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let Some(MessageResponse::FileDescriptorResponse(files)) = &responses[1].message_response
    else {
        panic!("{responses:?}");
    };
    let described = files
        .file_descriptor_proto
        .iter()
        .any(|f| String::from_utf8_lossy(f).contains("ConverseStream"));
    assert!(described, "no file descriptor names ConverseStream");
}

/// The frames a raw HTTP/2 client reads: `(type, flags, payload)`, or `None` at end of stream.
async fn read_frame(tcp: &mut tokio::net::TcpStream) -> Option<(u8, u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; 9];
    tcp.read_exact(&mut header).await.ok()?;
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.ok()?;
    Some((header[3], header[4], payload))
}

#[tokio::test]
async fn the_stream_limit_is_advertised_and_silent_connections_are_closed() {
    use nagare_gateway::grpc::GrpcSettings;
    use tokio::io::AsyncWriteExt;

    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const MAX_CONCURRENT_STREAMS: u16 = 0x3;

    let fake = FakeBedrock::start().await.unwrap();
    let gw = Gateway::builder()
        .model(Arc::new(bedrock_provider(&fake.url())))
        .models("fake", &[])
        .config(|c| {
            c.grpc = GrpcSettings {
                max_concurrent_streams: 3,
                keepalive_interval_secs: 1,
                keepalive_timeout_secs: 1,
                ..c.grpc.clone()
            };
        })
        .start()
        .await
        .unwrap();
    let addr = gw.grpc_addr;

    // A client that opens HTTP/2 and then never answers anything, pings included.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let session = async {
        let mut advertised = None;
        let mut pinged = false;
        while let Some((kind, flags, payload)) = read_frame(&mut tcp).await {
            if kind == SETTINGS && flags & 1 == 0 {
                advertised = payload
                    .chunks_exact(6)
                    .find(|p| u16::from_be_bytes([p[0], p[1]]) == MAX_CONCURRENT_STREAMS)
                    .map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]));
            }
            pinged |= kind == PING && flags & 1 == 0;
        }
        (advertised, pinged)
    };
    // Only a guard against a hang: the server pings after 1 s and gives up 1 s later.
    let (advertised, pinged) = tokio::time::timeout(Duration::from_secs(60), session)
        .await
        .expect("the server kept a silent connection open");
    assert_eq!(advertised, Some(3));
    assert!(
        pinged,
        "the server closed the connection without pinging it"
    );
}
