//! Verifying RS256 and ES256 tokens with a cached key: the per-request cost of authentication.
//! Run: `cargo bench -p nagare-authorizer --bench verify`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use nagare_authorizer::{AuthSettings, IssuerSettings, Verifier};
use serde_json::json;

const RSA: &str = include_str!("../../tests/fixtures/jwt/rsa-1.pem");
const EC: &str = include_str!("../../tests/fixtures/jwt/ec256.pem");

fn signed(kid: &str, alg: Algorithm, key: &EncodingKey, iss: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"iss": iss, "aud": "app", "sub": "bench", "exp": now + 3600, "iat": now, "scope": "chat"});
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn jwk(kid: &str, alg: Algorithm, key: &EncodingKey) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
    jwk.common.key_id = Some(kid.into());
    jwk
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rsa = EncodingKey::from_rsa_pem(RSA.as_bytes()).unwrap();
    let ec = EncodingKey::from_ec_pem(EC.as_bytes()).unwrap();
    let set = JwkSet {
        keys: vec![
            jwk("rs", Algorithm::RS256, &rsa),
            jwk("es", Algorithm::ES256, &ec),
        ],
    };
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let iss = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || async move { axum::Json(set) }),
    );
    rt.spawn(async move { axum::serve(listener, app).await });
    let settings = AuthSettings {
        issuers: vec![IssuerSettings {
            issuer: iss.clone(),
            jwks_url: None,
            audiences: vec!["app".into()],
            token_use: None,
            algorithms: vec!["RS256".into(), "ES256".into()],
            tenant_claim: "tenant".into(),
            groups_claim: "cognito:groups".into(),
        }],
        ..AuthSettings::default()
    };
    let verifier = Verifier::new(&settings, None).unwrap();
    let tokens = [
        (
            "verify RS256 (cached key)",
            signed("rs", Algorithm::RS256, &rsa, &iss),
        ),
        (
            "verify ES256 (cached key)",
            signed("es", Algorithm::ES256, &ec, &iss),
        ),
    ];
    for (name, token) in &tokens {
        // The first verification fetches and caches the key; the benchmark measures the rest.
        rt.block_on(verifier.verify(token)).unwrap();
        c.bench_function(name, |b| b.to_async(&rt).iter(|| verifier.verify(token)));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
