//! An issuer's signing keys, fetched from its JWKS URL and cached. An unknown `kid` refetches the
//! set (key rotation), at most once per refetch interval so a flood of made-up `kid`s cannot turn
//! into a flood of requests to the issuer. A refetch replaces the whole set: keys that left it
//! stop verifying.

use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::Mutex;

use crate::error::AuthError;

/// A key ready to verify with, and what its JWK says it may be used for.
pub struct VerifyKey {
    pub key: DecodingKey,
    /// The JWK's `alg`, when it names one.
    pub alg: Option<Algorithm>,
}

/// The HTTP client of JWKS fetches, shared by every issuer and built at the first fetch: building
/// one loads the system's TLS roots (milliseconds and megabytes), which a process that never
/// fetches keys, such as a Lambda function that verifies no tokens, should not pay for at start.
#[derive(Clone, Default)]
pub struct JwksClient(Arc<OnceLock<Result<reqwest::Client, String>>>);

impl JwksClient {
    fn get(&self) -> Result<&reqwest::Client, String> {
        self.0
            .get_or_init(|| {
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .map_err(|e| format!("building the JWKS HTTP client: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// One issuer's key cache.
pub struct JwksCache {
    url: String,
    http: JwksClient,
    keys: moka::future::Cache<String, Arc<VerifyKey>>,
    refetch_interval: Duration,
    last_fetch: Mutex<Option<Instant>>,
    fetches: std::sync::atomic::AtomicU64,
}

impl JwksCache {
    pub fn new(url: String, http: JwksClient, ttl: Duration, refetch_interval: Duration) -> Self {
        Self {
            url,
            http,
            keys: moka::future::Cache::builder()
                .max_capacity(1024)
                .time_to_live(ttl)
                .build(),
            refetch_interval,
            last_fetch: Mutex::new(None),
            fetches: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many times the JWKS has been fetched.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The key for `kid` if the cached set holds it; never fetches.
    pub async fn cached(&self, kid: &str) -> Option<Arc<VerifyKey>> {
        self.keys.get(kid).await
    }

    /// The key for `kid`, fetching the set when the key is not cached and the refetch interval
    /// allows it.
    pub async fn key(&self, kid: &str) -> Result<Arc<VerifyKey>, AuthError> {
        if let Some(key) = self.keys.get(kid).await {
            return Ok(key);
        }
        // One fetch at a time; whoever waited re-checks the cache the winner filled.
        let mut last = self.last_fetch.lock().await;
        if let Some(key) = self.keys.get(kid).await {
            return Ok(key);
        }
        if last.is_some_and(|at| at.elapsed() < self.refetch_interval) {
            return Err(AuthError::UnknownKey);
        }
        *last = Some(Instant::now());
        let set = self.fetch().await?;
        self.keys.invalidate_all();
        for jwk in &set.keys {
            match (jwk.common.key_id.clone(), to_verify_key(jwk)) {
                (Some(id), Some(key)) => self.keys.insert(id, Arc::new(key)).await,
                _ => {
                    tracing::debug!(url = %self.url, "skipping a JWK without kid or with an unusable key")
                }
            }
        }
        self.keys.get(kid).await.ok_or(AuthError::UnknownKey)
    }

    async fn fetch(&self) -> Result<JwkSet, AuthError> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let unavailable =
            |e: reqwest::Error| AuthError::KeysUnavailable(format!("{}: {e}", self.url));
        let client = self
            .http
            .get()
            .map_err(|e| AuthError::KeysUnavailable(format!("{}: {e}", self.url)))?;
        let response = client
            .get(&self.url)
            .send()
            .await
            .map_err(unavailable)?
            .error_for_status()
            .map_err(unavailable)?;
        let set = response.json::<JwkSet>().await.map_err(unavailable)?;
        tracing::info!(url = %self.url, keys = set.keys.len(), "fetched JWKS");
        Ok(set)
    }
}

/// A verification key from a JWK, or `None` for keys that must not sign tokens.
fn to_verify_key(jwk: &Jwk) -> Option<VerifyKey> {
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let alg = match jwk.common.key_algorithm {
        // A JWK `alg` that is not a signature algorithm (RSA-OAEP, ...) makes the key unusable.
        Some(a) => Some(Algorithm::from_str(&a.to_string()).ok()?),
        None => None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyKey { key, alg })
}
