//! A local OIDC issuer: serves `/.well-known/jwks.json` on a free loopback port, counts fetches,
//! rotates keys on demand, and signs tokens with the fixture keys in `tests/fixtures/jwt/`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use nagare_authorizer::IssuerSettings;
use serde_json::Value;

use crate::serve::StopOnDrop;

/// The fixture key files, by name.
pub fn fixture_pem(name: &str) -> &'static str {
    match name {
        "rsa-1" => include_str!("../fixtures/jwt/rsa-1.pem"),
        "rsa-2" => include_str!("../fixtures/jwt/rsa-2.pem"),
        "rsa-1.pub" => include_str!("../fixtures/jwt/rsa-1.pub.pem"),
        "ec256" => include_str!("../fixtures/jwt/ec256.pem"),
        "ec384" => include_str!("../fixtures/jwt/ec384.pem"),
        "ed25519" => include_str!("../fixtures/jwt/ed25519.pem"),
        other => panic!("no fixture key {other}"),
    }
}

/// A signing key with its `kid` and public JWK.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    pub jwk: Jwk,
}

impl TestKey {
    /// `pem` names a fixture (`rsa-1`, `ec256`, ...); `alg` must suit it.
    pub fn new(kid: &str, pem: &str, alg: Algorithm) -> anyhow::Result<Self> {
        let bytes = fixture_pem(pem).as_bytes();
        let encoding = match alg {
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 => {
                EncodingKey::from_rsa_pem(bytes)?
            }
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(bytes)?,
            Algorithm::EdDSA => EncodingKey::from_ed_pem(bytes)?,
            other => anyhow::bail!("{other:?} is not an asymmetric algorithm"),
        };
        let mut jwk = Jwk::from_encoding_key(&encoding, alg)?;
        jwk.common.key_id = Some(kid.to_owned());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Ok(Self {
            kid: kid.to_owned(),
            alg,
            encoding,
            jwk,
        })
    }

    /// The same key published with another `alg` in its JWK.
    pub fn published_as(mut self, alg: KeyAlgorithm) -> Self {
        self.jwk.common.key_algorithm = Some(alg);
        self
    }

    /// Signs `claims` with this key, `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap_or_default()
    }

    /// Signs with a header of the caller's choosing (another `kid`, none at all).
    pub fn sign_with(&self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &self.encoding).unwrap_or_default()
    }
}

#[derive(Default)]
struct Shared {
    keys: RwLock<Vec<Jwk>>,
    fetches: AtomicU64,
}

/// A running issuer; it stops when dropped.
pub struct FakeIssuer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: StopOnDrop,
}

impl FakeIssuer {
    pub async fn start(keys: &[&TestKey]) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/.well-known/jwks.json", get(jwks))
            .with_state(shared.clone());
        let (addr, stop) = crate::serve::spawn(app).await?;
        let issuer = Self {
            addr,
            shared,
            _stop: stop,
        };
        issuer.set_keys(keys);
        Ok(issuer)
    }

    /// The `iss` value, `http://127.0.0.1:PORT`; its JWKS is at the default path.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the published key set (rotation).
    pub fn set_keys(&self, keys: &[&TestKey]) {
        let jwks: Vec<Jwk> = keys.iter().map(|k| k.jwk.clone()).collect();
        *self.shared.keys.write().unwrap_or_else(|p| p.into_inner()) = jwks;
    }

    pub fn fetches(&self) -> u64 {
        self.shared.fetches.load(Ordering::SeqCst)
    }

    /// A token of `sub` with `scope`, signed by `key`, from this issuer for audience `app`,
    /// valid for ten minutes.
    pub fn token(&self, key: &TestKey, sub: &str, scope: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        key.sign(&serde_json::json!({
            "iss": self.issuer(), "aud": "app", "sub": sub, "exp": now + 600, "scope": scope,
        }))
    }

    /// Settings that trust this issuer for audience `app`.
    pub fn settings(&self, algorithms: &[&str]) -> IssuerSettings {
        IssuerSettings {
            issuer: self.issuer(),
            jwks_url: None,
            audiences: vec!["app".into()],
            token_use: None,
            algorithms: algorithms.iter().map(|s| (*s).to_owned()).collect(),
            tenant_claim: "tenant".into(),
            groups_claim: "cognito:groups".into(),
        }
    }
}

async fn jwks(State(shared): State<Arc<Shared>>) -> axum::Json<JwkSet> {
    shared.fetches.fetch_add(1, Ordering::SeqCst);
    let keys = shared
        .keys
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    axum::Json(JwkSet { keys })
}
