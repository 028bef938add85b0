//! `nagare-load`: drive load at a Nagare endpoint (or any JSON POST endpoint) and print a report.

use std::time::Duration;

use clap::Parser;
use nagare_tests::load::{self, LoadSpec, Mode};

#[derive(Parser)]
#[command(
    name = "nagare-load",
    about = "HTTP load generator for Nagare benchmarks"
)]
struct Args {
    /// Target, e.g. http://127.0.0.1:8080/v1/chat
    #[arg(long)]
    url: http::Uri,
    /// JSON request body.
    #[arg(long, default_value = r#"{"message":"hello"}"#)]
    body: String,
    /// Extra header, `name: value`; repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds of warm-up, not measured.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Fixed request rate (open loop); without it, a closed loop.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, value_enum, default_value = "unary")]
    mode: Mode,
    /// The model's interval between tokens, to report each delta's lateness against it.
    #[arg(long)]
    delta_interval_ms: Option<f64>,
    /// Closed loop: spread the connections' first requests evenly over this many seconds
    /// (default: one delta interval). Keep it within the warm-up, so every connection is running
    /// when measuring starts.
    #[arg(long)]
    ramp_seconds: Option<f64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Thousands of WebSocket connections need thousands of descriptors: take the hard limit.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("could not raise the open-file limit: {e}");
    }
    let headers = args
        .headers
        .iter()
        .map(|h| {
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("header {h:?} is not `name: value`"))?;
            Ok((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = load::run(LoadSpec {
        url: args.url,
        body: args.body.into(),
        headers,
        connections: args.connections.max(1),
        duration: Duration::from_secs_f64(args.seconds),
        warmup: Duration::from_secs_f64(args.warmup),
        rate: args.rate,
        mode: args.mode,
        delta_interval: args
            .delta_interval_ms
            .map(|ms| Duration::from_secs_f64(ms / 1000.0)),
        ramp: args.ramp_seconds.map(Duration::from_secs_f64),
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let l = &report.latency_ms;
        println!(
            "{} requests in {:.1} s: {:.0} req/s; latency ms p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}",
            report.requests,
            report.seconds,
            report.requests_per_second,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max
        );
        if let Some(f) = &report.first_delta_ms {
            println!("first delta ms p50 {:.3} p99 {:.3}", f.p50, f.p99);
        }
        if let Some(l) = &report.delta_lateness_ms {
            println!(
                "delta lateness ms p50 {:.3} p99 {:.3} max {:.3}",
                l.p50, l.p99, l.max
            );
        }
        if let Some(l) = &report.delta_socket_lateness_ms {
            println!(
                "delta lateness at the socket ms p50 {:.3} p99 {:.3} max {:.3}",
                l.p50, l.p99, l.max
            );
        }
        if let Some(l) = &report.sleeper_lateness_ms {
            println!(
                "a 1 ms sleeper woke late by ms p50 {:.3} p99 {:.3} max {:.3}",
                l.p50, l.p99, l.max
            );
        }
        if let Some(g) = &report.inter_delta_ms {
            println!(
                "between deltas ms p50 {:.3} p99 {:.3} max {:.3}",
                g.p50, g.p99, g.max
            );
        }
        if !report.errors.is_empty() {
            println!("errors: {:?}", report.errors);
        }
    }
    Ok(())
}
