//! `memory-bench`: the cost of conversation memory per chat on the embedded SQLite store: load a
//! conversation's history and append one exchange, as the pipeline does around every model call.
//! Prints percentiles of the pair, in microseconds.

use std::time::Instant;

use clap::Parser;
use hdrhistogram::Histogram;
use nagare_gateway::chat::Usage;
use nagare_gateway::store::{ConversationStore, Database, Exchange, SqliteConversationStore};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "memory-bench",
    about = "History load + append latency on SQLite"
)]
struct Args {
    /// Exchanges (user + assistant turns) already in each conversation.
    #[arg(long, default_value_t = 50)]
    exchanges: u64,
    /// Conversations measured, each once per round.
    #[arg(long, default_value_t = 200)]
    conversations: u64,
    #[arg(long, default_value_t = 5)]
    rounds: u64,
    /// Bytes of text per turn.
    #[arg(long, default_value_t = 400)]
    turn_bytes: usize,
}

fn exchange(request_id: String, bytes: usize) -> Exchange {
    Exchange {
        request_id,
        user: "q".repeat(bytes).into(),
        assistant: "a".repeat(bytes).into(),
        usage: Usage::new(100, 100),
        stop_reason: "end_turn".into(),
        model: "bench".into(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("nagare-memory-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = SqliteConversationStore::new(Database::open(&dir.join("nagare.db"), 0)?);
    for c in 0..args.conversations {
        for e in 0..args.exchanges {
            let x = exchange(format!("seed-{e}"), args.turn_bytes);
            store
                .append("bench", &format!("c{c}"), "bench", &x, e)
                .await?;
        }
    }
    let mut micros = Histogram::<u64>::new(3)?;
    for round in 0..args.rounds {
        for c in 0..args.conversations {
            let id = format!("c{c}");
            let start = Instant::now();
            let history = store.history("bench", &id).await?;
            anyhow::ensure!(history.is_some(), "conversation {id} is missing");
            let x = exchange(format!("r{round}"), args.turn_bytes);
            store.append("bench", &id, "bench", &x, 0).await?;
            micros.record(start.elapsed().as_micros() as u64)?;
        }
    }
    std::fs::remove_dir_all(&dir)?;
    let report = json!({
        "exchanges": args.exchanges,
        "samples": micros.len(),
        "micros": {
            "p50": micros.value_at_quantile(0.5),
            "p99": micros.value_at_quantile(0.99),
            "p999": micros.value_at_quantile(0.999),
            "max": micros.max(),
        }
    });
    println!("{report}");
    Ok(())
}
