//! Verifies a JWT into a [`Principal`] against the configured issuers.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::dev::{DEV_AUDIENCE, DEV_ISSUER};
use crate::error::{AuthConfigError, AuthError};
use crate::jwks::{JwksCache, JwksClient, VerifyKey};
use crate::principal::Principal;
use crate::settings::AuthSettings;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

enum Keys {
    Jwks(JwksCache),
    Secret(DecodingKey),
}

struct Issuer {
    iss: String,
    audiences: Vec<String>,
    token_use: Option<String>,
    algorithms: Vec<Algorithm>,
    tenant_claim: String,
    groups_claim: String,
    keys: Keys,
    /// Whether its subjects and tenants keep their bare names (the first issuer only).
    bare: bool,
}

/// What every qualified identity starts with; a first issuer's subject that happens to start so
/// is qualified too, so no bare name can spell a qualified one.
const QUALIFIED: &str = "iss:";

/// An identity (subject or tenant) of `issuer`, whole: `iss:{length of issuer}:{issuer}/{id}`.
/// The first configured issuer's identities stay bare (`sub` alone), so data owned before a
/// second issuer was added keeps its owner; every other issuer's are qualified, so two issuers'
/// "alice" are two principals, in ownership, limits and the cache's tenant scope.
pub fn qualified(issuer: &str, id: &str) -> String {
    format!("{QUALIFIED}{}:{issuer}/{id}", issuer.len())
}

/// Checks tokens. Cheap to share: hold it in an `Arc`.
pub struct Verifier {
    issuers: Vec<Issuer>,
    leeway: u64,
    /// Tokens already verified: a client sends the same token with every request, and checking
    /// its signature and claims again cost a tenth of a chat's CPU on the unpaced mock.
    verified: moka::future::Cache<String, Verified>,
}

/// A token's verdict, kept while it stays true: until the token expires, and, for a JWKS key,
/// only while the key that verified it is still the one the issuer's set holds (a refetched set
/// replaces every key, so a retired key's tokens are checked again, and refused).
#[derive(Clone)]
struct Verified {
    principal: Principal,
    key: Option<KeyUsed>,
}

/// The JWKS key that verified a token: which issuer's, which `kid`, and the key itself.
#[derive(Clone)]
struct KeyUsed {
    issuer: usize,
    kid: String,
    key: Arc<VerifyKey>,
}

/// What [`Verifier::verified`] may hold, counting each token's bytes and [`VERDICT_BYTES`] for
/// what it says: about fifteen thousand typical tokens.
const VERIFIED_BYTES: u64 = 8 * 1024 * 1024;
const VERDICT_BYTES: usize = 256;

#[derive(Deserialize)]
struct UnverifiedIssuer {
    iss: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn iter(&self) -> impl Iterator<Item = &str> {
        let slice: &[String] = match self {
            Self::One(s) => std::slice::from_ref(s),
            Self::Many(v) => v,
        };
        slice.iter().map(String::as_str)
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    // Required; optional here so its absence gets a clear error rather than a JSON one.
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    aud: Option<OneOrMany>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    token_use: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<OneOrMany>,
    #[serde(flatten)]
    extra: serde_json::Map<String, Value>,
}

impl Verifier {
    /// Builds the verifier. With no issuers configured, `dev_secret` makes it accept dev-mode
    /// HS256 tokens; without one either, nothing could ever be verified, which is a config error.
    pub fn new(
        settings: &AuthSettings,
        dev_secret: Option<&[u8]>,
    ) -> Result<Self, AuthConfigError> {
        let http = JwksClient::default();
        let mut issuers = Vec::new();
        for (i, s) in settings.issuers.iter().enumerate() {
            s.validate()?;
            issuers.push(Issuer {
                bare: i == 0,
                iss: s.issuer.clone(),
                audiences: s.audiences.clone(),
                token_use: s.token_use.clone(),
                algorithms: s.algorithms()?,
                tenant_claim: s.tenant_claim.clone(),
                groups_claim: s.groups_claim.clone(),
                keys: Keys::Jwks(JwksCache::new(
                    s.jwks_url()?,
                    http.clone(),
                    Duration::from_secs(settings.jwks_ttl_secs.max(1)),
                    Duration::from_secs(settings.jwks_refetch_interval_secs),
                )),
            });
        }
        if issuers.is_empty() {
            let secret = dev_secret.ok_or_else(|| {
                AuthConfigError("no issuers are configured and there is no dev secret".into())
            })?;
            issuers.push(Issuer {
                bare: true,
                iss: DEV_ISSUER.into(),
                audiences: vec![DEV_AUDIENCE.into()],
                token_use: None,
                algorithms: vec![Algorithm::HS256],
                tenant_claim: "tenant".into(),
                groups_claim: "groups".into(),
                keys: Keys::Secret(DecodingKey::from_secret(secret)),
            });
        }
        Ok(Self {
            issuers,
            leeway: settings.leeway_secs,
            verified: moka::future::Cache::builder()
                .weigher(|token: &String, _: &Verified| {
                    u32::try_from(token.len() + VERDICT_BYTES).unwrap_or(u32::MAX)
                })
                .max_capacity(VERIFIED_BYTES)
                .build(),
        })
    }

    /// True when the verifier trusts only the local dev secret.
    pub fn is_dev(&self) -> bool {
        self.issuers
            .iter()
            .all(|i| matches!(i.keys, Keys::Secret(_)))
    }

    /// JWKS fetches so far, over all issuers.
    pub fn jwks_fetches(&self) -> u64 {
        self.issuers
            .iter()
            .map(|i| match &i.keys {
                Keys::Jwks(c) => c.fetches(),
                Keys::Secret(_) => 0,
            })
            .sum()
    }

    /// Verifies `token`, and that it grants `scope`: who it speaks for.
    pub async fn verify_for(&self, token: &str, scope: &str) -> Result<Principal, AuthError> {
        let principal = self.verify(token).await?;
        principal.require_scope(scope)?;
        Ok(principal)
    }

    /// Verifies `token` and returns who it speaks for.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if let Some(known) = self.verified.get(token).await {
            if self.still_valid(&known).await {
                return Ok(known.principal);
            }
            self.verified.invalidate(token).await;
        }
        let (principal, key) = self.verify_uncached(token).await?;
        let verdict = Verified {
            principal: principal.clone(),
            key,
        };
        self.verified.insert(token.to_owned(), verdict).await;
        Ok(principal)
    }

    /// Whether a kept verdict still holds: the token has not expired, and its key is still the
    /// issuer's.
    async fn still_valid(&self, known: &Verified) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // jsonwebtoken's own test: a token is expired once `exp` is more than the leeway ago.
        if known.principal.expires_at.saturating_add(self.leeway) < now {
            return false;
        }
        let Some(used) = &known.key else {
            return true;
        };
        match self.issuers.get(used.issuer).map(|i| &i.keys) {
            Some(Keys::Jwks(cache)) => cache
                .cached(&used.kid)
                .await
                .is_some_and(|current| Arc::ptr_eq(&current, &used.key)),
            _ => false,
        }
    }

    /// The whole check: signature, issuer, algorithm and claims; also the JWKS key used.
    async fn verify_uncached(
        &self,
        token: &str,
    ) -> Result<(Principal, Option<KeyUsed>), AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed(format!(
                "longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        if token.split('.').count() != 3 {
            return Err(AuthError::Malformed(
                "expected three dot-separated segments".into(),
            ));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        // The issuer picks the keys, so `iss` is read before the signature is checked; it is
        // checked again, signed, by the validation below.
        let unverified: UnverifiedIssuer = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|e| AuthError::Malformed(e.to_string()))?;
        let iss = unverified.iss.ok_or(AuthError::MissingClaim("iss"))?;
        let index = self
            .issuers
            .iter()
            .position(|i| i.iss == iss)
            .ok_or(AuthError::UnknownIssuer)?;
        let issuer = &self.issuers[index];
        if !issuer.algorithms.contains(&header.alg) {
            return Err(AuthError::AlgorithmNotAllowed(format!("{:?}", header.alg)));
        }
        let mut jwk_key = None;
        let key = match &issuer.keys {
            Keys::Secret(key) => key,
            Keys::Jwks(cache) => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or_else(|| AuthError::Malformed("no kid in the header".into()))?;
                let used = jwk_key.insert(KeyUsed {
                    issuer: index,
                    kid: kid.to_owned(),
                    key: cache.key(kid).await?,
                });
                if used.key.alg.is_some_and(|alg| alg != header.alg) {
                    return Err(AuthError::KeyMismatch(format!(
                        "the key is for {:?}, the token says {:?}",
                        used.key.alg, header.alg
                    )));
                }
                &used.key.key
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&issuer.iss]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| map_jwt_error(e.kind()))?
            .claims;
        Ok((issuer.principal(claims, self.leeway)?, jwk_key))
    }
}

impl Issuer {
    /// A subject or tenant of this issuer as the gateway keys it: see [`qualified`].
    fn whole(&self, id: String) -> String {
        if self.bare && !id.starts_with(QUALIFIED) {
            id
        } else {
            qualified(&self.iss, &id)
        }
    }

    fn principal(&self, claims: Claims, leeway: u64) -> Result<Principal, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let expires_at = claims.exp.ok_or(AuthError::MissingClaim("exp"))?;
        if claims.iat.is_some_and(|iat| iat > now + leeway) {
            return Err(AuthError::NotYetValid);
        }
        let audience_ok = match (&claims.aud, &claims.client_id) {
            (Some(aud), _) => aud.iter().any(|a| self.audiences.iter().any(|x| x == a)),
            // Cognito access tokens carry the app client in `client_id` instead of `aud`.
            (None, Some(client)) => self.audiences.iter().any(|x| x == client),
            (None, None) => return Err(AuthError::MissingClaim("aud")),
        };
        if !audience_ok {
            return Err(AuthError::WrongAudience);
        }
        if let Some(wanted) = &self.token_use
            && claims.token_use.as_deref() != Some(wanted.as_str())
        {
            return Err(AuthError::WrongTokenUse(wanted.clone()));
        }
        let sub = claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::MissingClaim("sub"))?;
        let mut scopes: Vec<String> = claims
            .scope
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if let Some(scp) = &claims.scp {
            scopes.extend(
                scp.iter()
                    .flat_map(str::split_whitespace)
                    .map(str::to_owned),
            );
        }
        let tenant = match claims.extra.get(&self.tenant_claim) {
            Some(Value::String(t)) if !t.is_empty() => t.clone(),
            _ => sub.clone(),
        };
        let groups = match claims.extra.get(&self.groups_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        Ok(Principal {
            sub: self.whole(sub),
            tenant: self.whole(tenant),
            scopes,
            groups,
            expires_at,
        })
    }
}

fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidIssuer => AuthError::UnknownIssuer,
        ErrorKind::MissingRequiredClaim(name) => match name.as_str() {
            "exp" => AuthError::MissingClaim("exp"),
            "iss" => AuthError::MissingClaim("iss"),
            _ => AuthError::Malformed(format!("missing claim {name}")),
        },
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey => {
            AuthError::KeyMismatch("the key cannot verify this token's algorithm".into())
        }
        ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidToken => AuthError::Malformed(format!("{kind:?}")),
        _ => AuthError::BadSignature,
    }
}
