//! `kb-bench`: the embedded knowledge-base store under a realistic load. Fills a knowledge base
//! with generated Markdown documents until it holds `--chunks` passages, through the same path a
//! `PUT` takes (extraction, chunking, one transaction per document), and reports the ingestion
//! throughput; then times `--queries` retrievals of a few words each and reports their
//! percentiles. Prints one JSON object. With `--database` the store is kept, for a gateway to
//! serve chats from it (`tests/bench.sh` does).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use hdrhistogram::Histogram;
use nagare_gateway::knowledge::{KnowledgeBases, Scope, SentDocument};
use nagare_gateway::store::{Database, SqliteKnowledge};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "kb-bench",
    about = "Ingestion and retrieval on the embedded knowledge base"
)]
struct Args {
    /// Passages to fill the knowledge base with (at least).
    #[arg(long, default_value_t = 100_000)]
    chunks: u64,
    /// Retrievals timed.
    #[arg(long, default_value_t = 2_000)]
    queries: u64,
    /// Passages each retrieval returns.
    #[arg(long, default_value_t = 5)]
    results: usize,
    /// Paragraphs per document (each about 50 words).
    #[arg(long, default_value_t = 40)]
    paragraphs: usize,
    /// The SQLite database to fill (kept); a temporary one by default.
    #[arg(long)]
    database: Option<PathBuf>,
    #[arg(long, default_value = "bench")]
    tenant: String,
    #[arg(long, default_value = "bench")]
    kb: String,
}

/// A deterministic generator (SplitMix64): the same corpus and queries on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A vocabulary of pronounceable words, used with a Zipf-like skew: a few words are common, most
/// are rare, as in prose.
struct Words(Vec<String>);

impl Words {
    fn new(n: usize, rng: &mut Rng) -> Self {
        const SYLLABLES: [&str; 24] = [
            "ka", "to", "ri", "ne", "mo", "sa", "lu", "vi", "de", "po", "ga", "shi", "ten", "ro",
            "mi", "ba", "zu", "fe", "ko", "na", "ru", "te", "yo", "pa",
        ];
        let mut words = std::collections::BTreeSet::new();
        while words.len() < n {
            let len = 2 + rng.below(3);
            let word: String = (0..len)
                .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
                .collect();
            words.insert(word);
        }
        let mut words: Vec<String> = words.into_iter().collect();
        // Shuffled, so rank and spelling are unrelated.
        for i in (1..words.len()).rev() {
            words.swap(i, rng.below(i + 1));
        }
        Self(words)
    }

    /// A word by skewed rank: the square of a uniform draw favours low ranks.
    fn pick(&self, rng: &mut Rng) -> &str {
        let u = rng.below(1 << 20) as f64 / f64::from(1 << 20);
        &self.0[((u * u) * self.0.len() as f64) as usize]
    }
}

fn document(words: &Words, rng: &mut Rng, paragraphs: usize) -> String {
    let mut text = format!("# {} {}\n\n", words.pick(rng), words.pick(rng));
    for p in 0..paragraphs {
        if p % 8 == 7 {
            text.push_str(&format!("## {} {}\n\n", words.pick(rng), words.pick(rng)));
        }
        for s in 0..5 {
            let n = 8 + rng.below(5);
            let sentence: Vec<&str> = (0..n).map(|_| words.pick(rng)).collect();
            text.push_str(&sentence.join(" "));
            text.push_str(if s == 4 { ".\n\n" } else { ". " });
        }
    }
    text
}

fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    json!({
        "p50": h.value_at_quantile(0.5),
        "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99),
        "max": h.max(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let temp = std::env::temp_dir().join(format!("nagare-kb-bench-{}", std::process::id()));
    let path = match &args.database {
        Some(path) => path.clone(),
        None => {
            std::fs::create_dir_all(&temp)?;
            temp.join("nagare.db")
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let store = Arc::new(SqliteKnowledge::new(Database::open(&path, 0)?));
    let kb = KnowledgeBases {
        store: store.clone(),
        retriever: store,
        max_document_bytes: 16 << 20,
    };
    let now = nagare_gateway::store::unix_now_ms();
    kb.store.create(&args.tenant, &args.kb, now).await?;
    let scope = Scope {
        tenant: &args.tenant,
        name: &args.kb,
    };

    let mut rng = Rng(7);
    let words = Words::new(30_000, &mut rng);
    let (mut bytes, mut passages, mut documents) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    while passages < args.chunks {
        let text = document(&words, &mut rng, args.paragraphs);
        let id = format!("doc-{documents}");
        let sent = SentDocument {
            document_id: &id,
            title: None,
            uri: None,
            content_type: "text/markdown",
            body: text.as_bytes(),
        };
        let info = kb.put(scope, sent, now).await?;
        bytes += text.len() as u64;
        passages += u64::from(info.passages);
        documents += 1;
    }
    let ingest_secs = started.elapsed().as_secs_f64();

    let mut micros = Histogram::<u64>::new(3)?;
    let mut found = 0usize;
    for _ in 0..args.queries {
        let n = 2 + rng.below(4);
        let question: Vec<&str> = (0..n).map(|_| words.pick(&mut rng)).collect();
        let question = format!("what about {}?", question.join(" "));
        let start = Instant::now();
        let passages = kb.retrieve(scope, &question, args.results, None).await?;
        micros.record(start.elapsed().as_micros() as u64)?;
        found += passages.len();
    }
    if args.database.is_none() {
        std::fs::remove_dir_all(&temp)?;
    }
    let report = json!({
        "documents": documents,
        "passages": passages,
        "bytes": bytes,
        "ingest_seconds": ingest_secs,
        "ingest_mb_per_s": bytes as f64 / 1e6 / ingest_secs,
        "passages_per_s": passages as f64 / ingest_secs,
        "queries": args.queries,
        "results": args.results,
        "mean_found": found as f64 / args.queries.max(1) as f64,
        "retrieve_micros": percentiles(&micros),
    });
    println!("{report}");
    Ok(())
}
