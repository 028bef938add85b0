//! Limits per principal and per process: requests per minute, tokens per minute and per day
//! (reserved up front from the prompt and `max_tokens`, settled with the real usage), and a cap
//! on upstream streams in flight. Exceeding one is `rate_limited` with a retry hint.
//!
//! Windows are fixed (the current minute, the current UTC day) so that a shared counter is one
//! atomic conditional write in DynamoDB; a burst may straddle two minutes.

mod counters;
mod dynamodb;
mod slots;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use nagare_authorizer::Principal;
use serde::Deserialize;

use crate::error::Error;
use crate::provider::{ProviderEvent, ProviderStream};
use crate::store::unix_now;

pub use counters::{Counters, LocalCounters};
pub use dynamodb::DynamoCounters;
pub use slots::{Slot, Slots};

/// `[rate_limits]` settings. A limit of 0 is no limit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Per principal (tenant and sub).
    pub requests_per_minute: u64,
    /// Input and output tokens per principal.
    pub tokens_per_minute: u64,
    /// Input and output tokens per principal per UTC day.
    pub tokens_per_day: u64,
    /// Output tokens reserved for a request that sets no `max_tokens`.
    pub reserve_output_tokens: u64,
    /// Upstream model streams in flight in this process (like Lambda reserved concurrency).
    pub max_concurrent_upstream: usize,
    /// Of those, the most one principal may hold, so its stalled chats leave room for others;
    /// 0: half of `max_concurrent_upstream`, rounded up.
    pub max_concurrent_upstream_per_principal: usize,
    /// How long a request may wait for one of those before it is refused.
    pub concurrency_wait_ms: u64,
    /// Overrides for a tenant; they win over `scopes`.
    pub tenants: BTreeMap<String, Quota>,
    /// Overrides for principals holding a scope (the first listed scope that matches).
    pub scopes: BTreeMap<String, Quota>,
    /// Where counters live: `local` (this process) or `dynamodb` (shared by every replica).
    pub shared: SharedKind,
    pub table: String,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            requests_per_minute: 600,
            tokens_per_minute: 200_000,
            tokens_per_day: 0,
            reserve_output_tokens: 1_024,
            max_concurrent_upstream: 0,
            max_concurrent_upstream_per_principal: 0,
            concurrency_wait_ms: 5_000,
            tenants: BTreeMap::new(),
            scopes: BTreeMap::new(),
            shared: SharedKind::Local,
            table: "nagare-limits".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SharedKind {
    #[default]
    Local,
    Dynamodb,
}

/// One principal's limits; an unset field keeps the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
}

/// The limits that apply to one principal.
struct Applied {
    requests_per_minute: u64,
    tokens_per_minute: u64,
    tokens_per_day: u64,
}

/// The limits of one gateway.
pub struct Limits {
    settings: RateLimitSettings,
    counters: Arc<dyn Counters>,
    upstream: Option<Arc<Slots>>,
    clock: Clock,
}

/// Unix seconds now; tests pin it so that no window ends mid-test.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

const MINUTE: u64 = 60;
const DAY: u64 = 86_400;

/// A window of `length` seconds: its number and when it ends.
fn window(now: u64, length: u64) -> (u64, u64) {
    let n = now / length;
    (n, (n + 1) * length)
}

impl Limits {
    pub fn new(settings: RateLimitSettings, counters: Arc<dyn Counters>) -> Self {
        let max = settings.max_concurrent_upstream;
        let share = match settings.max_concurrent_upstream_per_principal {
            0 => max.div_ceil(2),
            n => n,
        };
        let upstream = (max > 0).then(|| Slots::new(max, share));
        Self {
            settings,
            counters,
            upstream,
            clock: Arc::new(unix_now),
        }
    }

    /// Reads the time from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The principal's limits: the tenant's override, else the first matching scope's, else the
    /// defaults, field by field.
    fn quota(&self, p: &Principal) -> Applied {
        let s = &self.settings;
        let over = s
            .tenants
            .get(&p.tenant)
            .or_else(|| p.scopes.iter().find_map(|scope| s.scopes.get(scope)))
            .copied()
            .unwrap_or_default();
        Applied {
            requests_per_minute: over.requests_per_minute.unwrap_or(s.requests_per_minute),
            tokens_per_minute: over.tokens_per_minute.unwrap_or(s.tokens_per_minute),
            tokens_per_day: over.tokens_per_day.unwrap_or(s.tokens_per_day),
        }
    }

    /// Counts one request against the principal's request rate.
    pub async fn admit(&self, p: &Principal) -> Result<(), Error> {
        let limit = self.quota(p).requests_per_minute;
        if limit == 0 {
            return Ok(());
        }
        let now = (self.clock)();
        let (n, ends) = window(now, MINUTE);
        let key = format!("r/{}/{n}", p.key());
        if self.add(&key, 1, limit, ends).await {
            Ok(())
        } else {
            Err(refused(
                format!("more than {limit} requests per minute"),
                ends - now,
            ))
        }
    }

    /// The tokens a request may use (its prompt's estimate and its `max_tokens`, or
    /// `reserve_output_tokens`), or `invalid_request` when that is more than one of the
    /// principal's token limits allows in a whole window: such a request could never run, however
    /// long it waited. Counts nothing, so work that runs later is checked with it up front.
    pub fn fits(
        &self,
        p: &Principal,
        input_tokens: u64,
        max_tokens: Option<u32>,
    ) -> Result<u64, Error> {
        let quota = self.quota(p);
        let output = max_tokens.map_or(self.settings.reserve_output_tokens, u64::from);
        let tokens = input_tokens + output;
        let windows = [
            ("minute", quota.tokens_per_minute),
            ("day", quota.tokens_per_day),
        ];
        for (name, limit) in windows {
            if limit != 0 && tokens > limit {
                return Err(Error::InvalidRequest(format!(
                    "this request may use {tokens} tokens, more than the limit of {limit} per \
                     {name}; lower inference.max_tokens or shorten the prompt"
                )));
            }
        }
        Ok(tokens)
    }

    /// Reserves the tokens a request may use (its prompt's estimate and its `max_tokens`, or
    /// `reserve_output_tokens`) against the token rate and the daily budget.
    pub async fn reserve(
        &self,
        p: &Principal,
        input_tokens: u64,
        max_tokens: Option<u32>,
    ) -> Result<Reservation, Error> {
        let tokens = self.fits(p, input_tokens, max_tokens)?;
        let quota = self.quota(p);
        let now = (self.clock)();
        let windows = [
            ("minute", quota.tokens_per_minute, MINUTE, "t"),
            ("day", quota.tokens_per_day, DAY, "d"),
        ];
        let mut taken: Vec<(String, u64)> = Vec::new();
        for (name, limit, length, tag) in windows {
            if limit == 0 {
                continue;
            }
            let (n, ends) = window(now, length);
            let key = format!("{tag}/{}/{n}", p.key());
            if !self.add(&key, tokens, limit, ends).await {
                self.undo(&taken, tokens).await;
                return Err(refused(
                    format!("more than {limit} tokens per {name}"),
                    ends - now,
                ));
            }
            taken.push((key, ends));
        }
        Ok(Reservation(Arc::new(Reserved {
            counters: self.counters.clone(),
            keys: taken,
            tokens,
            settled: AtomicBool::new(false),
        })))
    }

    /// A slot for one upstream stream of `p`, waiting at most `concurrency_wait_ms`; hold it
    /// for as long as the stream runs. `None` when there is no cap.
    pub async fn upstream_slot(&self, p: &Principal) -> Result<Option<Slot>, Error> {
        let Some(slots) = &self.upstream else {
            return Ok(None);
        };
        let wait = Duration::from_millis(self.settings.concurrency_wait_ms);
        match slots.acquire(&p.key(), wait).await {
            Some(slot) => Ok(Some(slot)),
            None => Err(refused(
                format!(
                    "all {} model streams you may use are busy",
                    self.settings.max_concurrent_upstream
                ),
                1,
            )),
        }
    }

    /// Adds to a counter; a counter store that fails lets the request through (and says so in
    /// the log): an outage of the limits table must not become an outage of the gateway.
    async fn add(&self, key: &str, amount: u64, limit: u64, ends: u64) -> bool {
        match self.counters.try_add(key, amount, limit, ends).await {
            Ok(added) => added,
            Err(e) => {
                tracing::error!(error = %e, "limit counters unavailable; admitting the request");
                true
            }
        }
    }

    async fn undo(&self, taken: &[(String, u64)], amount: u64) {
        for (key, _) in taken {
            if let Err(e) = self.counters.give_back(key, amount).await {
                tracing::warn!(error = %e, "could not return a token reservation");
            }
        }
    }
}

fn refused(what: String, retry_after_secs: u64) -> Error {
    Error::RateLimited {
        message: format!("rate limited: {what}"),
        retry_after: Duration::from_secs(retry_after_secs.max(1)),
    }
}

/// Tokens reserved for one request. [`Reservation::settle`] trues it up with the real usage; a
/// reservation never settled (a cancelled or failed stream, whose real usage is unknown) stays
/// counted in full.
#[derive(Clone)]
pub struct Reservation(Arc<Reserved>);

struct Reserved {
    counters: Arc<dyn Counters>,
    /// The counters it was added to, and when their windows end.
    keys: Vec<(String, u64)>,
    tokens: u64,
    settled: AtomicBool,
}

impl Reservation {
    /// Replaces the reservation with the `used` tokens; only the first call counts. Failures
    /// are logged: the reservation then stays as it was.
    pub async fn settle(&self, used: u64) {
        let r = &self.0;
        if r.settled.swap(true, Ordering::SeqCst) || used == r.tokens {
            return;
        }
        for (key, ends) in &r.keys {
            let result = if used < r.tokens {
                r.counters.give_back(key, r.tokens - used).await
            } else {
                // The prompt estimate was low: count what was really used.
                r.counters
                    .try_add(key, used - r.tokens, u64::MAX, *ends)
                    .await
                    .map(|_| ())
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "could not settle a token reservation");
            }
        }
    }

    /// Settles this reservation when `stream` reports its usage (Bedrock's `metadata`, before
    /// the chat's `done`). A stream that ends without it keeps the reservation in full.
    pub fn settle_on_usage(self, stream: ProviderStream) -> ProviderStream {
        if self.0.keys.is_empty() {
            // No token limit applies: nothing to settle, so no cost per event.
            return stream;
        }
        stream
            .then(move |event| {
                let used = match &event {
                    Ok(ProviderEvent::Usage(u)) => Some(u.total()),
                    _ => None,
                };
                let reservation = used.map(|_| self.clone());
                async move {
                    if let (Some(reservation), Some(used)) = (reservation, used) {
                        reservation.settle(used).await;
                    }
                    event
                }
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(tenant: &str, sub: &str) -> Principal {
        Principal {
            sub: sub.into(),
            tenant: tenant.into(),
            scopes: vec!["chat".into()],
            groups: vec![],
            expires_at: u64::MAX,
        }
    }

    #[tokio::test]
    async fn principals_never_share_a_counter_by_spelling() {
        let settings = RateLimitSettings {
            requests_per_minute: 1,
            ..RateLimitSettings::default()
        };
        let limits = Limits::new(settings, Arc::new(LocalCounters::default()))
            .with_clock(Arc::new(|| 1_000_000));
        limits.admit(&principal("a/b", "c")).await.unwrap();
        limits.admit(&principal("a", "b/c")).await.unwrap();
        let again = limits.admit(&principal("a", "b/c")).await.unwrap_err();
        assert_eq!(again.code().as_str(), "rate_limited");
        assert_eq!(again.retry_after(), Some(Duration::from_secs(20)));
    }
}
