//! A small HTTP load generator: closed loop (N connections, each sending back to back) or open
//! loop (a fixed request rate, latency measured from each request's scheduled start so queueing
//! behind a slow server is counted: coordinated omission corrected).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::delta_clock::{DeltaClock, Timing};

/// What the response is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Read the whole body; latency is time to the last byte.
    Unary,
    /// `GET` the URL (no body), read as `unary`: e.g. `/healthz`, the HTTP floor.
    Get,
    /// Server-sent events; also records the time to the first `delta` event.
    Sse,
    /// Chats over a WebSocket (`ws://…/v1/ws`), one at a time per connection.
    Ws,
    /// WebSocket connections opened and held idle for the run; nothing is sent.
    WsIdle,
    /// gRPC `ChatService.Converse` (`--url http://HOST:GRPC_PORT`); `--body` is the REST JSON.
    GrpcUnary,
    /// gRPC `ChatService.ConverseStream`, timing every delta.
    GrpcStream,
}

impl Mode {
    fn streams(self) -> bool {
        matches!(self, Self::Sse | Self::Ws | Self::GrpcStream)
    }
}

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub url: Uri,
    pub body: Bytes,
    pub headers: Vec<(String, String)>,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Requests per second for an open loop; `None` for a closed loop.
    pub rate: Option<f64>,
    pub mode: Mode,
    /// The model's pace (e.g. 20 ms for 50 tokens/s, with a mock that keeps an exact schedule):
    /// each delta's lateness against that schedule, placed by the stream's least delayed delta,
    /// is reported (see [`DeltaClock`]).
    pub delta_interval: Option<Duration>,
    /// Closed loop: the connections' first requests are spread evenly over this long. `None`
    /// spreads them over one delta interval, so the streams' tokens are out of step but the
    /// streams all begin together; spreading over one whole stream's length staggers the starts
    /// too, as chats arriving independently are.
    pub ramp: Option<Duration>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// What a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub requests: u64,
    pub errors: BTreeMap<String, u64>,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub latency_ms: Percentiles,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_delta_ms: Option<Percentiles>,
    /// Gaps between consecutive chunks carrying deltas, within one stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inter_delta_ms: Option<Percentiles>,
    /// How late each delta arrived against the model's schedule (see [`LoadSpec::delta_interval`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta_lateness_ms: Option<Percentiles>,
    /// The same lateness at the client's socket: by the kernel's receive time of each delta,
    /// without the client's own delay in reading it (WebSocket only; see [`crate::stamped`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta_socket_lateness_ms: Option<Percentiles>,
    /// With `delta_lateness_ms`: how late a thread of the load generator that sleeps 1 ms at a
    /// time woke, over the same measured window (see [`sleeper`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sleeper_lateness_ms: Option<Percentiles>,
    /// Deltas read over the whole run, warm-up included: what a server's CPU over the whole run
    /// is divided by for its cost per delta.
    #[serde(skip_serializing_if = "is_zero")]
    pub deltas_received: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

struct Recorder {
    latency: Histogram<u64>,
    first_delta: Histogram<u64>,
    inter_delta: Histogram<u64>,
    lateness: Histogram<u64>,
    socket_lateness: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    ok: u64,
    /// Over the whole run, warm-up included.
    deltas: u64,
}

impl Recorder {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latency: histogram()?,
            first_delta: histogram()?,
            inter_delta: histogram()?,
            lateness: histogram()?,
            socket_lateness: histogram()?,
            errors: BTreeMap::new(),
            ok: 0,
            deltas: 0,
        })
    }

    fn merge(&mut self, other: Recorder) -> anyhow::Result<()> {
        self.latency.add(&other.latency)?;
        self.first_delta.add(&other.first_delta)?;
        self.inter_delta.add(&other.inter_delta)?;
        self.lateness.add(&other.lateness)?;
        self.socket_lateness.add(&other.socket_lateness)?;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.ok += other.ok;
        self.deltas += other.deltas;
        Ok(())
    }
}

/// A histogram of microseconds, from 1 µs to 10 minutes.
fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

/// Runs `spec` and reports.
pub async fn run(spec: LoadSpec) -> anyhow::Result<Report> {
    let addr = resolve(&spec.url).await?;
    if spec.mode == Mode::WsIdle {
        let (opened, errors) = crate::load_ws::hold_idle(addr, &spec).await;
        return Ok(Report {
            requests: opened,
            errors,
            seconds: spec.duration.as_secs_f64(),
            ..Report::default()
        });
    }
    let spec = Arc::new(spec);
    let start = Instant::now();
    let measured = start.into_std() + spec.warmup;
    let probe = spec
        .delta_interval
        .map(|_| sleeper(measured, measured + spec.duration));
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for i in 0..spec.connections {
        let (spec, next) = (spec.clone(), next.clone());
        // Spread the closed-loop workers' first requests, so a thousand streams do not emit
        // every token in the same instant (no real traffic is in lockstep).
        let offset = match (spec.rate, spec.ramp.or(spec.delta_interval)) {
            (None, Some(ramp)) => ramp.mul_f64(i as f64 / spec.connections as f64),
            _ => Duration::ZERO,
        };
        workers.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            worker(addr, spec, start, next).await
        }));
    }
    let mut total = Recorder::new()?;
    for w in workers {
        total.merge(w.await??)?;
    }
    let sleeper = probe
        .map(|p| {
            p.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the sleeper thread panicked")))
        })
        .transpose()?;
    let seconds = spec.duration.as_secs_f64();
    let requests = total.ok + total.errors.values().sum::<u64>();
    Ok(Report {
        requests,
        errors: total.errors,
        seconds,
        requests_per_second: requests as f64 / seconds,
        latency_ms: percentiles(&total.latency),
        first_delta_ms: spec.mode.streams().then(|| percentiles(&total.first_delta)),
        inter_delta_ms: (spec.mode.streams() && !total.inter_delta.is_empty())
            .then(|| percentiles(&total.inter_delta)),
        delta_lateness_ms: (!total.lateness.is_empty()).then(|| percentiles(&total.lateness)),
        delta_socket_lateness_ms: (!total.socket_lateness.is_empty())
            .then(|| percentiles(&total.socket_lateness)),
        sleeper_lateness_ms: sleeper.as_ref().map(percentiles),
        deltas_received: total.deltas,
    })
}

/// A thread that sleeps 1 ms at a time from `from` to `until` and records how late it woke each
/// time, in microseconds. A delta meets this machine's scheduling delay at least twice: when the
/// model's timer wakes the server, and when its bytes wake the client. On the idle development
/// machine it woke late by p99 0.17 ms; on cores shared with a busy server and client, measured in
/// the same window, it shows how much of a delta's lateness the machine adds.
fn sleeper(
    from: std::time::Instant,
    until: std::time::Instant,
) -> std::thread::JoinHandle<anyhow::Result<Histogram<u64>>> {
    std::thread::spawn(move || {
        let mut late = histogram()?;
        let nap = Duration::from_millis(1);
        std::thread::sleep(from.saturating_duration_since(std::time::Instant::now()));
        loop {
            let before = std::time::Instant::now();
            if before >= until {
                return Ok(late);
            }
            std::thread::sleep(nap);
            late.saturating_record(micros(before.elapsed().saturating_sub(nap)));
        }
    })
}

async fn resolve(url: &Uri) -> anyhow::Result<SocketAddr> {
    let host = url.host().context("the URL needs a host")?;
    let port = url.port_u16().unwrap_or(80);
    tokio::net::lookup_host((host, port))
        .await?
        .next()
        .context("the host did not resolve")
}

/// How late a timer may fire before a worker counts as behind schedule.
const TIMER_SLACK: Duration = Duration::from_millis(2);

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One worker's connection.
enum Conn {
    Http(Sender),
    Ws(Box<crate::load_ws::WsConn>),
    Grpc(Box<crate::load_grpc::GrpcConn>),
}

async fn open(addr: SocketAddr, spec: &LoadSpec) -> Result<Conn, String> {
    match spec.mode {
        Mode::Ws | Mode::WsIdle => crate::load_ws::open(addr, spec)
            .await
            .map(|ws| Conn::Ws(Box::new(ws))),
        Mode::Unary | Mode::Get | Mode::Sse => connect(addr)
            .await
            .map(Conn::Http)
            .map_err(|e| format!("connect: {e}")),
        Mode::GrpcUnary | Mode::GrpcStream => crate::load_grpc::open(addr, spec)
            .await
            .map(|c| Conn::Grpc(Box::new(c))),
    }
}

async fn request(
    conn: &mut Conn,
    spec: &LoadSpec,
    scheduled: Instant,
    seq: u64,
) -> Result<Timing, String> {
    match conn {
        Conn::Http(sender) => one_request(sender, spec, scheduled).await,
        Conn::Ws(ws) => crate::load_ws::chat(ws, spec, scheduled, &format!("load-{seq}")).await,
        Conn::Grpc(grpc) if spec.mode == Mode::GrpcStream => {
            crate::load_grpc::converse_stream(grpc, spec, scheduled).await
        }
        Conn::Grpc(grpc) => crate::load_grpc::converse(grpc, spec, scheduled).await,
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn worker(
    addr: SocketAddr,
    spec: Arc<LoadSpec>,
    start: Instant,
    next: Arc<AtomicU64>,
) -> anyhow::Result<Recorder> {
    let mut rec = Recorder::new()?;
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let mut conn: Option<Conn> = None;
    let mut seq = 0u64;
    loop {
        seq += 1;
        let scheduled = match spec.rate {
            Some(rate) => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let at = start + Duration::from_secs_f64(i as f64 / rate);
                if at >= end {
                    break;
                }
                tokio::time::sleep_until(at).await;
                // tokio's timer wakes up to a millisecond late. That lateness is the load
                // generator's, not the server's, so a worker on schedule measures from when it
                // actually sends; one that is behind measures from the schedule, which is what
                // counts the time a request spent queued (coordinated omission).
                let now = Instant::now();
                if now.duration_since(at) <= TIMER_SLACK {
                    now
                } else {
                    at
                }
            }
            None => {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                now
            }
        };
        let outcome = match conn.as_mut() {
            Some(c) => request(c, &spec, scheduled, seq).await,
            None => match open(addr, &spec).await {
                Ok(c) => request(conn.insert(c), &spec, scheduled, seq).await,
                Err(e) => Err(e),
            },
        };
        let counted = scheduled >= measure_from;
        if let Ok(timing) = &outcome {
            rec.deltas += u64::from(timing.deltas);
        }
        match outcome {
            Ok(timing) if counted => {
                rec.ok += 1;
                rec.latency.saturating_record(micros(timing.latency));
                if let Some(fd) = timing.first_delta {
                    rec.first_delta.saturating_record(micros(fd));
                }
                for gap in timing.delta_gaps {
                    rec.inter_delta.saturating_record(micros(gap));
                }
                for late in timing.delta_lateness {
                    rec.lateness.saturating_record(micros(late));
                }
                for late in timing.delta_socket_lateness {
                    rec.socket_lateness.saturating_record(micros(late));
                }
            }
            Ok(_) => {}
            Err(code) => {
                conn = None;
                if counted {
                    *rec.errors.entry(code).or_default() += 1;
                }
            }
        }
    }
    Ok(rec)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Sends one request; `Err` holds the error code (the gateway's, or `http_NNN`, or a transport error).
async fn one_request(
    sender: &mut Sender,
    spec: &LoadSpec,
    scheduled: Instant,
) -> Result<Timing, String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let path = spec.url.path_and_query().map_or("/", |p| p.as_str());
    let get = spec.mode == Mode::Get;
    let mut req = Request::builder()
        .method(if get { "GET" } else { "POST" })
        .uri(path)
        .header(
            "host",
            spec.url.authority().map_or("localhost", |a| a.as_str()),
        )
        .header("content-type", "application/json");
    for (k, v) in &spec.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let body = if get { Bytes::new() } else { spec.body.clone() };
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let response = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let mut body = response.into_body();
    let mut clock = DeltaClock::new(scheduled, spec.delta_interval);
    let mut seen = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        if let Some(data) = frame.data_ref() {
            if spec.mode == Mode::Sse {
                clock.arrived(occurrences(data, b"event: delta"));
            }
            if !status.is_success() || spec.mode == Mode::Sse {
                seen.extend_from_slice(data);
            }
        }
    }
    if !status.is_success() {
        return Err(error_code(&seen).unwrap_or_else(|| format!("http_{}", status.as_u16())));
    }
    if spec.mode == Mode::Sse && contains(&seen, b"event: error") {
        return Err(error_code(&seen).unwrap_or_else(|| "sse_error".into()));
    }
    Ok(clock.finish())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    occurrences(haystack, needle) > 0
}

fn occurrences(haystack: &[u8], needle: &[u8]) -> u32 {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count() as u32
}

/// The `"code":"..."` of an error body or event.
fn error_code(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let rest = &text[text.find("\"code\":\"")? + 8..];
    Some(rest[..rest.find('"')?].to_owned())
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |v: u64| v as f64 / 1000.0;
    Percentiles {
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
        mean: h.mean() / 1000.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_read_from_bodies_and_events() {
        let body = br#"{"error":{"code":"rate_limited","message":"x"}}"#;
        assert_eq!(error_code(body).as_deref(), Some("rate_limited"));
        assert_eq!(error_code(b"plain text"), None);
        assert!(contains(b"event: delta\ndata: {}", b"event: delta"));
    }
}
