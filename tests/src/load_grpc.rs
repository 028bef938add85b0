//! gRPC load for the load generator: `ChatService.Converse` and `ConverseStream` through a tonic
//! client, one HTTP/2 connection per worker.

use std::net::SocketAddr;

use nagare_proto::v1 as pb;
use nagare_proto::v1::chat_event::Event;
use nagare_proto::v1::chat_service_client::ChatServiceClient;
use serde::Deserialize;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::delta_clock::{DeltaClock, Timing};
use crate::load::LoadSpec;

/// One worker's client, and the request it sends, built once from `--body`.
pub struct GrpcConn {
    client: ChatServiceClient<Channel>,
    message: pb::ChatRequest,
}

pub async fn open(addr: SocketAddr, spec: &LoadSpec) -> Result<GrpcConn, String> {
    let message = chat_request(&spec.body)?;
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("endpoint: {e}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    Ok(GrpcConn {
        client: ChatServiceClient::new(channel),
        message,
    })
}

/// `Converse`: latency is the time to the whole reply.
pub async fn converse(
    conn: &mut GrpcConn,
    spec: &LoadSpec,
    scheduled: Instant,
) -> Result<Timing, String> {
    let request = with_headers(conn.message.clone(), spec)?;
    conn.client.converse(request).await.map_err(code_of)?;
    Ok(DeltaClock::new(scheduled, None).finish())
}

/// `ConverseStream`: times every delta; fails with `delta_count_mismatch` unless every one
/// arrived (`usage.output_tokens` of them).
pub async fn converse_stream(
    conn: &mut GrpcConn,
    spec: &LoadSpec,
    scheduled: Instant,
) -> Result<Timing, String> {
    let request = with_headers(conn.message.clone(), spec)?;
    let mut stream = conn
        .client
        .converse_stream(request)
        .await
        .map_err(code_of)?
        .into_inner();
    let mut clock = DeltaClock::new(scheduled, spec.delta_interval);
    loop {
        match stream
            .message()
            .await
            .map_err(code_of)?
            .and_then(|m| m.event)
        {
            Some(Event::Delta(_)) => clock.arrived(1),
            Some(Event::Done(done)) => {
                let output = done.usage.map(|u| u.output_tokens);
                if output != Some(u64::from(clock.count())) {
                    return Err("delta_count_mismatch".into());
                }
                return Ok(clock.finish());
            }
            // The load runs text chats: start, and nothing else it times.
            Some(_) => {}
            None => return Err("ended_without_done".into()),
        }
    }
}

/// The gateway's error code from the trailers, else the gRPC code.
fn code_of(status: Status) -> String {
    match status
        .metadata()
        .get("nagare-error-code")
        .and_then(|v| v.to_str().ok())
    {
        Some(code) => code.to_owned(),
        None => format!("grpc_{:?}", status.code()),
    }
}

fn with_headers<T>(message: T, spec: &LoadSpec) -> Result<Request<T>, String> {
    let mut request = Request::new(message);
    for (name, value) in &spec.headers {
        let name = tonic::metadata::MetadataKey::from_bytes(name.to_lowercase().as_bytes())
            .map_err(|e| format!("header {name}: {e}"))?;
        let value = value.parse().map_err(|e| format!("header value: {e}"))?;
        request.metadata_mut().insert(name, value);
    }
    Ok(request)
}

/// The REST body's fields that a load run sets, as the gRPC message.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    message: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    inference: Option<BodyInference>,
    #[serde(default)]
    cache: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BodyInference {
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
}

fn chat_request(body: &[u8]) -> Result<pb::ChatRequest, String> {
    let body: Body = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
    let cache = match body.cache.as_deref() {
        None | Some("default") => pb::CacheMode::Default,
        Some("bypass") => pb::CacheMode::Bypass,
        Some("refresh") => pb::CacheMode::Refresh,
        Some(other) => return Err(format!("body: unknown cache mode {other:?}")),
    };
    Ok(pb::ChatRequest {
        message: body.message,
        model: body.model,
        system: body.system,
        inference: body.inference.map(|i| pb::Inference {
            max_tokens: i.max_tokens,
            temperature: i.temperature,
            top_p: i.top_p,
            stop: Vec::new(),
        }),
        cache: cache as i32,
        ..Default::default()
    })
}
