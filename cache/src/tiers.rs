//! The tiers: L1 in process (moka, bounded by bytes, with TTL and time-to-idle) and an optional
//! shared L2, read through. An L2 hit fills L1. A failing L2 is logged and counted, never fatal:
//! the worst a broken cache may do is cost a model call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use moka::future::Cache;
use moka::notification::RemovalCause;
use serde::Deserialize;

use crate::{
    CacheError, CacheKey, CacheMetrics, CachedResponse, MetricsSnapshot, Mode, Price, ROUTES,
};

/// `[cache]`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    pub enabled: bool,
    /// The mode of single-turn requests (no `conversation_id`).
    pub mode: Mode,
    /// The mode of requests that continue a conversation.
    pub multi_turn_mode: Mode,
    /// Route name (`chat`, `chat_stream`, `websocket`, `lambda_websocket`) → mode.
    pub routes: BTreeMap<String, Mode>,
    /// Tenant → mode; wins over the route's.
    pub tenants: BTreeMap<String, Mode>,
    /// The shared tier: `none`, `dynamodb` or `redis`.
    pub shared: SharedKind,
    /// The DynamoDB table of the shared tier (PK `key`, TTL attribute `ttl`).
    pub table: String,
    /// The Redis of the shared tier, e.g. `redis://127.0.0.1:6379` (`rediss://` for TLS).
    pub redis_url: String,
    /// L1's bound: the bytes of the answers it holds.
    pub l1_max_bytes: u64,
    /// How long an answer may be served, in both tiers.
    pub ttl_secs: u64,
    /// L1 drops an answer nobody asked for in this long.
    pub tti_secs: u64,
    /// Longer answers are not stored.
    pub max_entry_bytes: usize,
    /// Model id → price, to estimate the money saved.
    pub prices: BTreeMap<String, Price>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: Mode::ReadWrite,
            multi_turn_mode: Mode::Off,
            routes: BTreeMap::new(),
            tenants: BTreeMap::new(),
            shared: SharedKind::None,
            table: "nagare-cache".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            l1_max_bytes: 64 * 1024 * 1024,
            ttl_secs: 3600,
            tti_secs: 600,
            max_entry_bytes: 256 * 1024,
            prices: BTreeMap::new(),
        }
    }
}

impl CacheSettings {
    /// Checks the values the cache cannot run with; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(route) = self.routes.keys().find(|r| !ROUTES.contains(&r.as_str())) {
            return Err(format!(
                "cache.routes.{route}: unknown route; use one of {}",
                ROUTES.join(", ")
            ));
        }
        if self.ttl_secs == 0 || self.l1_max_bytes == 0 {
            return Err("cache: ttl_secs and l1_max_bytes must be at least 1".into());
        }
        Ok(())
    }
}

/// Which shared tier, if any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SharedKind {
    #[default]
    None,
    Dynamodb,
    Redis,
}

impl CacheSettings {
    /// The mode for a request on `route` by `tenant`.
    pub fn mode_for(&self, route: &str, tenant: &str, multi_turn: bool) -> Mode {
        if !self.enabled {
            return Mode::Off;
        }
        if multi_turn {
            return self.multi_turn_mode;
        }
        self.tenants
            .get(tenant)
            .or_else(|| self.routes.get(route))
            .copied()
            .unwrap_or(self.mode)
    }
}

/// A tier shared by every instance (DynamoDB), which outlives any one of them.
#[async_trait]
pub trait SharedCache: Send + Sync {
    fn name(&self) -> &'static str;
    async fn get(&self, key: &CacheKey) -> Result<Option<CachedResponse>, CacheError>;
    async fn put(
        &self,
        key: &CacheKey,
        value: &CachedResponse,
        ttl: Duration,
    ) -> Result<(), CacheError>;
}

/// Where a hit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    L1,
    L2,
}

/// The two tiers and their counters.
pub struct ResponseCache {
    l1: Cache<CacheKey, Arc<CachedResponse>>,
    l2: Option<Arc<dyn SharedCache>>,
    settings: CacheSettings,
    metrics: Arc<CacheMetrics>,
}

impl ResponseCache {
    pub fn new(settings: CacheSettings, l2: Option<Arc<dyn SharedCache>>) -> Self {
        let metrics = Arc::new(CacheMetrics::default());
        let evictions = metrics.clone();
        let l1 = Cache::builder()
            .weigher(|_key, value: &Arc<CachedResponse>| {
                u32::try_from(value.weight()).unwrap_or(u32::MAX)
            })
            .max_capacity(settings.l1_max_bytes)
            .time_to_live(Duration::from_secs(settings.ttl_secs.max(1)))
            .time_to_idle(Duration::from_secs(settings.tti_secs.max(1)))
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size {
                    evictions.evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        Self {
            l1,
            l2,
            settings,
            metrics,
        }
    }

    /// The answer for `key`, from L1 or else L2. Counts the hit or the miss.
    pub async fn get(&self, key: &CacheKey) -> Option<(Arc<CachedResponse>, Tier)> {
        if let Some(hit) = self.l1.get(key).await {
            self.metrics.hits_l1.fetch_add(1, Ordering::Relaxed);
            return Some((hit, Tier::L1));
        }
        if let Some(l2) = &self.l2 {
            match l2.get(key).await {
                Ok(Some(found)) => {
                    let found = Arc::new(found);
                    self.l1.insert(*key, found.clone()).await;
                    self.metrics.hits_l2.fetch_add(1, Ordering::Relaxed);
                    return Some((found, Tier::L2));
                }
                Ok(None) => {}
                Err(e) => self.l2_failed(&e),
            }
        }
        self.metrics.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Stores a complete answer in both tiers; too large an answer is not stored.
    pub async fn put(&self, key: &CacheKey, value: CachedResponse) {
        if value.text.len() > self.settings.max_entry_bytes {
            self.metrics.too_large.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let value = Arc::new(value);
        self.l1.insert(*key, value.clone()).await;
        if let Some(l2) = &self.l2 {
            let ttl = Duration::from_secs(self.settings.ttl_secs);
            if let Err(e) = l2.put(key, &value, ttl).await {
                self.l2_failed(&e);
            }
        }
        self.metrics.stores.fetch_add(1, Ordering::Relaxed);
    }

    fn l2_failed(&self, e: &CacheError) {
        self.metrics.l2_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %e, "shared cache tier failed; serving without it");
    }

    /// Counts the tokens and money a hit saved.
    pub fn saved(&self, response: &CachedResponse) {
        self.metrics.saved(
            &self.settings.prices,
            &response.model,
            response.input_tokens,
            response.output_tokens,
        );
    }

    pub fn metrics(&self) -> &CacheMetrics {
        &self.metrics
    }

    /// The counters, with L1's current size.
    pub fn snapshot(&self) -> MetricsSnapshot {
        self.metrics
            .snapshot(self.l1.weighted_size(), self.l1.entry_count())
    }

    /// Runs L1's pending housekeeping (evictions, expiry), for tests and reports.
    pub async fn run_pending_tasks(&self) {
        self.l1.run_pending_tasks().await;
    }

    pub fn l2_name(&self) -> Option<&'static str> {
        self.l2.as_ref().map(|l2| l2.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_beats_route_beats_default_and_multi_turn_is_separate() {
        let settings = CacheSettings {
            routes: BTreeMap::from([("websocket".into(), Mode::ReadOnly)]),
            tenants: BTreeMap::from([("acme".into(), Mode::Off)]),
            ..CacheSettings::default()
        };
        assert_eq!(settings.mode_for("chat", "x", false), Mode::ReadWrite);
        assert_eq!(settings.mode_for("websocket", "x", false), Mode::ReadOnly);
        assert_eq!(settings.mode_for("websocket", "acme", false), Mode::Off);
        assert_eq!(settings.mode_for("chat", "x", true), Mode::Off);
        let off = CacheSettings {
            enabled: false,
            ..CacheSettings::default()
        };
        assert_eq!(off.mode_for("chat", "x", false), Mode::Off);
    }

    fn answer(text: &str) -> CachedResponse {
        CachedResponse {
            model: "m1".into(),
            text: text.into(),
            breaks: Vec::new(),
            parts: String::new(),
            stop_reason: "end_turn".into(),
            input_tokens: 1000,
            output_tokens: 500,
            created_at_ms: 0,
        }
    }

    #[tokio::test]
    async fn l1_is_bounded_by_bytes_and_counts_what_it_does() {
        let settings = CacheSettings {
            l1_max_bytes: 20_000,
            max_entry_bytes: 8_000,
            prices: BTreeMap::from([(
                "m1".into(),
                Price {
                    input_per_1k: 0.25,
                    output_per_1k: 1.25,
                    ..Price::default()
                },
            )]),
            ..CacheSettings::default()
        };
        let cache = ResponseCache::new(settings, None);
        let k = |n: u8| CacheKey([n; 32]);
        assert!(cache.get(&k(0)).await.is_none());
        cache.put(&k(0), answer(&"x".repeat(9_000))).await;
        assert!(cache.get(&k(0)).await.is_none(), "over the entry limit");
        for n in 1..=10 {
            cache.put(&k(n), answer(&"y".repeat(5_000))).await;
        }
        cache.run_pending_tasks().await;
        let s = cache.snapshot();
        assert!(s.l1_bytes <= 20_000, "{s:?}");
        assert!(s.evictions >= 6, "{s:?}");
        assert_eq!((s.misses, s.too_large, s.stores), (2, 1, 10));
        // moka admits by frequency (TinyLFU), so which entries survive is its choice.
        let mut found = None;
        for n in 1..=10 {
            if let Some(hit) = cache.get(&k(n)).await {
                found = Some(hit);
                break;
            }
        }
        let (hit, tier) = found.expect("some entries survive");
        assert_eq!(tier, Tier::L1);
        cache.saved(&hit);
        let s = cache.snapshot();
        assert_eq!(
            (s.hits_l1, s.input_tokens_saved, s.output_tokens_saved),
            (1, 1000, 500)
        );
        assert!((s.cost_saved_usd - 0.875).abs() < 1e-9, "{s:?}");
    }
}
