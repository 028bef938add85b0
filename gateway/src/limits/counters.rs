//! Counters that limits are kept in: fixed windows, added to atomically against a ceiling.
//! One trait, an in-process implementation, and DynamoDB's (shared by every replica).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::Error;

/// A set of named counters, each living until its window ends.
#[async_trait]
pub trait Counters: Send + Sync + 'static {
    /// Adds `amount` to `key` unless the total would exceed `limit`; true if it was added.
    /// The counter may be forgotten after `expires_at` (Unix seconds).
    async fn try_add(
        &self,
        key: &str,
        amount: u64,
        limit: u64,
        expires_at: u64,
    ) -> Result<bool, Error>;

    /// Takes `amount` back from `key` (a reservation that was not used), never below zero.
    async fn give_back(&self, key: &str, amount: u64) -> Result<(), Error>;
}

/// Counters in this process's memory: exact, but each replica counts alone.
#[derive(Default)]
pub struct LocalCounters {
    counts: Mutex<HashMap<String, (u64, u64)>>,
}

/// Expired windows are swept once the map holds this many counters.
const SWEEP_AT: usize = 10_000;

#[async_trait]
impl Counters for LocalCounters {
    async fn try_add(
        &self,
        key: &str,
        amount: u64,
        limit: u64,
        expires_at: u64,
    ) -> Result<bool, Error> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.len() >= SWEEP_AT && !counts.contains_key(key) {
            let now = crate::store::unix_now();
            counts.retain(|_, (_, expires)| *expires > now);
        }
        let (count, _) = counts.entry(key.to_owned()).or_insert((0, expires_at));
        if count.saturating_add(amount) > limit {
            return Ok(false);
        }
        *count += amount;
        Ok(true)
    }

    async fn give_back(&self, key: &str, amount: u64) -> Result<(), Error> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((count, _)) = counts.get_mut(key) {
            *count = count.saturating_sub(amount);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn adds_up_to_the_limit_and_gives_back() {
        let c = LocalCounters::default();
        assert!(c.try_add("k", 6, 10, u64::MAX).await.unwrap());
        assert!(!c.try_add("k", 5, 10, u64::MAX).await.unwrap());
        assert!(c.try_add("k", 4, 10, u64::MAX).await.unwrap());
        c.give_back("k", 7).await.unwrap();
        assert!(c.try_add("k", 7, 10, u64::MAX).await.unwrap());
        c.give_back("k", 100).await.unwrap();
        assert!(c.try_add("k", 10, 10, u64::MAX).await.unwrap());
        assert!(c.try_add("other", 10, 10, u64::MAX).await.unwrap());
    }

    #[tokio::test]
    async fn expired_windows_are_swept() {
        let c = LocalCounters::default();
        for i in 0..SWEEP_AT {
            c.try_add(&format!("old{i}"), 1, 1, 1).await.unwrap();
        }
        c.try_add("new", 1, 1, u64::MAX).await.unwrap();
        assert_eq!(c.counts.lock().unwrap().len(), 1);
    }
}
