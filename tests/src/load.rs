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

/// What the response is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Read the whole body; latency is time to the last byte.
    Unary,
    /// Server-sent events; also records the time to the first `delta` event.
    Sse,
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
#[derive(Debug, Clone, Serialize)]
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
}

struct Recorder {
    latency: Histogram<u64>,
    first_delta: Histogram<u64>,
    inter_delta: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    ok: u64,
}

impl Recorder {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latency: Histogram::new_with_bounds(1, 600_000_000, 3)?,
            first_delta: Histogram::new_with_bounds(1, 600_000_000, 3)?,
            inter_delta: Histogram::new_with_bounds(1, 600_000_000, 3)?,
            errors: BTreeMap::new(),
            ok: 0,
        })
    }

    fn merge(&mut self, other: Recorder) -> anyhow::Result<()> {
        self.latency.add(&other.latency)?;
        self.first_delta.add(&other.first_delta)?;
        self.inter_delta.add(&other.inter_delta)?;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.ok += other.ok;
        Ok(())
    }
}

/// Runs `spec` and reports.
pub async fn run(spec: LoadSpec) -> anyhow::Result<Report> {
    let addr = resolve(&spec.url).await?;
    let spec = Arc::new(spec);
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..spec.connections {
        let (spec, next) = (spec.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            worker(addr, spec, start, next).await
        }));
    }
    let mut total = Recorder::new()?;
    for w in workers {
        total.merge(w.await??)?;
    }
    let seconds = spec.duration.as_secs_f64();
    let requests = total.ok + total.errors.values().sum::<u64>();
    Ok(Report {
        requests,
        errors: total.errors,
        seconds,
        requests_per_second: requests as f64 / seconds,
        latency_ms: percentiles(&total.latency),
        first_delta_ms: (spec.mode == Mode::Sse).then(|| percentiles(&total.first_delta)),
        inter_delta_ms: (spec.mode == Mode::Sse && !total.inter_delta.is_empty())
            .then(|| percentiles(&total.inter_delta)),
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
    let mut sender: Option<Sender> = None;
    loop {
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
        let outcome = match sender.as_mut() {
            Some(s) => one_request(s, &spec, scheduled).await,
            None => match connect(addr).await {
                Ok(s) => one_request(sender.insert(s), &spec, scheduled).await,
                Err(e) => Err(format!("connect: {e}")),
            },
        };
        let counted = scheduled >= measure_from;
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
            }
            Ok(_) => {}
            Err(code) => {
                sender = None;
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

/// What one successful request measured.
struct Timing {
    latency: Duration,
    first_delta: Option<Duration>,
    delta_gaps: Vec<Duration>,
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
    let mut req = Request::post(path)
        .header(
            "host",
            spec.url.authority().map_or("localhost", |a| a.as_str()),
        )
        .header("content-type", "application/json");
    for (k, v) in &spec.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(Full::new(spec.body.clone()))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let mut body = response.into_body();
    let mut first_delta = None;
    let mut last_delta: Option<Instant> = None;
    let mut delta_gaps = Vec::new();
    let mut seen = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        if let Some(data) = frame.data_ref() {
            if spec.mode == Mode::Sse && contains(data, b"event: delta") {
                let now = Instant::now();
                match last_delta {
                    Some(prev) => delta_gaps.push(now - prev),
                    None => first_delta = Some(now - scheduled),
                }
                last_delta = Some(now);
            }
            if !status.is_success() || spec.mode == Mode::Sse {
                seen.extend_from_slice(data);
            }
        }
    }
    let latency = scheduled.elapsed();
    if !status.is_success() {
        return Err(error_code(&seen).unwrap_or_else(|| format!("http_{}", status.as_u16())));
    }
    if spec.mode == Mode::Sse && contains(&seen, b"event: error") {
        return Err(error_code(&seen).unwrap_or_else(|| "sse_error".into()));
    }
    Ok(Timing {
        latency,
        first_delta,
        delta_gaps,
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
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
