//! What the cache did: hits by tier, misses, coalesced joins, stores, evictions, and the tokens
//! and money it saved, priced from a configurable table.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// A model's price, in US dollars per 1,000 tokens. Prompt-cache reads and writes have their
/// own prices; when not given, Bedrock's usual ratios to the input price (a tenth to read, a
/// quarter more to write).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_1k: f64,
    pub output_per_1k: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_per_1k: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_1k: Option<f64>,
}

impl Price {
    /// What `input`, `output`, cache-read and cache-write tokens cost, in US dollars.
    pub fn cost(&self, input: u64, output: u64, cache_read: u64, cache_write: u64) -> f64 {
        let read = self.cache_read_per_1k.unwrap_or(self.input_per_1k * 0.1);
        let write = self.cache_write_per_1k.unwrap_or(self.input_per_1k * 1.25);
        (input as f64 * self.input_per_1k
            + output as f64 * self.output_per_1k
            + cache_read as f64 * read
            + cache_write as f64 * write)
            / 1000.0
    }
}

/// Counters, updated lock-free.
#[derive(Debug, Default)]
pub struct CacheMetrics {
    pub hits_l1: AtomicU64,
    pub hits_l2: AtomicU64,
    pub misses: AtomicU64,
    /// Requests that joined an identical one already in flight instead of calling the model.
    pub coalesced: AtomicU64,
    pub stores: AtomicU64,
    /// Answers not stored because they were larger than the entry limit.
    pub too_large: AtomicU64,
    /// L1 entries evicted to stay under the byte bound.
    pub evictions: AtomicU64,
    pub l2_errors: AtomicU64,
    pub input_tokens_saved: AtomicU64,
    pub output_tokens_saved: AtomicU64,
    /// Millionths of a dollar.
    pub cost_saved_micro_usd: AtomicU64,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MetricsSnapshot {
    pub hits_l1: u64,
    pub hits_l2: u64,
    pub misses: u64,
    pub coalesced: u64,
    pub stores: u64,
    pub too_large: u64,
    pub evictions: u64,
    pub l2_errors: u64,
    pub l1_bytes: u64,
    pub l1_entries: u64,
    pub input_tokens_saved: u64,
    pub output_tokens_saved: u64,
    pub cost_saved_usd: f64,
}

impl CacheMetrics {
    /// Counts an answer served without a model call.
    pub fn saved(&self, prices: &BTreeMap<String, Price>, model: &str, input: u64, output: u64) {
        self.input_tokens_saved.fetch_add(input, Ordering::Relaxed);
        self.output_tokens_saved
            .fetch_add(output, Ordering::Relaxed);
        if let Some(p) = prices.get(model) {
            let usd = p.cost(input, output, 0, 0);
            self.cost_saved_micro_usd
                .fetch_add((usd * 1e6).round() as u64, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self, l1_bytes: u64, l1_entries: u64) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            hits_l1: get(&self.hits_l1),
            hits_l2: get(&self.hits_l2),
            misses: get(&self.misses),
            coalesced: get(&self.coalesced),
            stores: get(&self.stores),
            too_large: get(&self.too_large),
            evictions: get(&self.evictions),
            l2_errors: get(&self.l2_errors),
            l1_bytes,
            l1_entries,
            input_tokens_saved: get(&self.input_tokens_saved),
            output_tokens_saved: get(&self.output_tokens_saved),
            cost_saved_usd: get(&self.cost_saved_micro_usd) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_tokens_have_prices_of_their_own() {
        let p = Price {
            input_per_1k: 3.0,
            output_per_1k: 15.0,
            ..Price::default()
        };
        // 1,000 of each: input 3, output 15, read a tenth of input, write a quarter more.
        assert!((p.cost(1000, 1000, 1000, 1000) - (3.0 + 15.0 + 0.3 + 3.75)).abs() < 1e-9);
        let given = Price {
            cache_read_per_1k: Some(1.0),
            cache_write_per_1k: Some(2.0),
            ..p
        };
        assert!((given.cost(0, 0, 1000, 1000) - 3.0).abs() < 1e-9);
    }
}
