//! The JWT verifier against a local JWKS issuer: algorithms, claims, rotation, the refetch
//! penalty box, and a table of attacks, each refused by `nagare serve` with 401 and no panic.

// Test helpers outside #[test] functions may panic too: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::KeyAlgorithm;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use nagare_authorizer::{AuthError, AuthSettings, IssuerSettings, Verifier};
use nagare_gateway::provider::{MockProvider, MockSettings};
use nagare_tests::fake_issuer::fixture_pem;
use nagare_tests::{FakeIssuer, Gateway, TestKey, authed_client};
use serde_json::{Value, json};

const ALL_ALGS: &[&str] = &["RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"];

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(issuer: &FakeIssuer) -> Value {
    json!({
        "iss": issuer.issuer(), "aud": "app", "sub": "alice", "tenant": "acme",
        "iat": now(), "exp": now() + 600, "scope": "chat profile",
        "cognito:groups": ["admins"],
    })
}

fn with(mut base: Value, patch: Value) -> Value {
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

fn verifier(settings: Vec<IssuerSettings>, refetch_secs: u64) -> Verifier {
    let auth = AuthSettings {
        issuers: settings,
        jwks_refetch_interval_secs: refetch_secs,
        ..AuthSettings::default()
    };
    Verifier::new(&auth, None).unwrap()
}

/// A gateway on the unpaced mock that trusts what `verifier` trusts.
async fn mock_gateway(verifier: Verifier) -> Gateway {
    let provider = Arc::new(MockProvider::new(MockSettings::unpaced()));
    Gateway::builder()
        .model(provider)
        .models("mock", &[])
        .verifier(verifier)
        .start()
        .await
        .unwrap()
}

/// `POST /v1/chat` with `token` as the bearer credential.
async fn chat_as(gateway: &Gateway, token: &str) -> reqwest::Result<reqwest::Response> {
    authed_client(token)
        .post(gateway.url("/v1/chat"))
        .json(&json!({"message": "hi"}))
        .send()
        .await
}

fn key(kid: &str, pem: &str, alg: Algorithm) -> TestKey {
    TestKey::new(kid, pem, alg).unwrap()
}

#[tokio::test]
async fn every_supported_algorithm_verifies_into_a_principal() {
    let keys = [
        key("rs256", "rsa-1", Algorithm::RS256),
        key("rs384", "rsa-2", Algorithm::RS384),
        key("rs512", "rsa-1", Algorithm::RS512),
        key("es256", "ec256", Algorithm::ES256),
        key("es384", "ec384", Algorithm::ES384),
        key("eddsa", "ed25519", Algorithm::EdDSA),
    ];
    let issuer = FakeIssuer::start(&keys.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    let v = verifier(vec![issuer.settings(ALL_ALGS)], 10);
    for k in &keys {
        let p = v
            .verify(&k.sign(&claims(&issuer)))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", k.kid));
        assert_eq!(p.sub, "alice");
        assert_eq!(p.tenant, "acme");
        assert_eq!(p.scopes, ["chat", "profile"]);
        assert_eq!(p.groups, ["admins"]);
    }
    assert_eq!(issuer.fetches(), 1, "keys are cached after the first fetch");
}

#[tokio::test]
async fn cognito_access_tokens_use_client_id_and_token_use() {
    let k = key("k1", "rsa-1", Algorithm::RS256);
    let issuer = FakeIssuer::start(&[&k]).await.unwrap();
    let mut settings = issuer.settings(&["RS256"]);
    settings.token_use = Some("access".into());
    let v = verifier(vec![settings], 10);
    let access = with(
        claims(&issuer),
        json!({"aud": null, "client_id": "app", "token_use": "access", "tenant": null}),
    );
    let p = v.verify(&k.sign(&access)).await.unwrap();
    assert_eq!(
        p.tenant, "alice",
        "without a tenant claim the tenant is the sub"
    );
    let id_token = with(claims(&issuer), json!({"token_use": "id"}));
    assert_eq!(
        v.verify(&k.sign(&id_token)).await,
        Err(AuthError::WrongTokenUse("access".into()))
    );
    let other_client = with(access, json!({"client_id": "someone-else"}));
    assert_eq!(
        v.verify(&k.sign(&other_client)).await,
        Err(AuthError::WrongAudience)
    );
}

/// Every attack: (name, token, the reason it must be refused).
async fn attacks(issuer: &FakeIssuer, k: &TestKey) -> Vec<(&'static str, String, AuthError)> {
    let base = claims(issuer);
    let good = k.sign(&base);
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let parts: Vec<&str> = good.split('.').collect();

    let none_token = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&base)
    );
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(k.kid.clone());
    let hs_with_public_key = jsonwebtoken::encode(
        &hs_header,
        &base,
        &EncodingKey::from_secret(fixture_pem("rsa-1.pub").as_bytes()),
    )
    .unwrap();
    let tampered_payload = format!(
        "{}.{}.{}",
        parts[0],
        b64(&with(base.clone(), json!({"sub": "admin"}))),
        parts[2]
    );
    let mut sig: Vec<char> = parts[2].chars().collect();
    sig[10] = if sig[10] == 'A' { 'B' } else { 'A' };
    let tampered_signature = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        sig.into_iter().collect::<String>()
    );
    let no_kid = k.sign_with(&Header::new(Algorithm::RS256), &base);
    let mut unknown = Header::new(Algorithm::RS256);
    unknown.kid = Some("not-a-key".into());
    let unknown_kid = k.sign_with(&unknown, &base);
    // Cut to a whole number of base64 quanta, so it decodes and fails as a signature.
    let keep = parts[2].len() - parts[2].len() % 4 - 16;
    let truncated = format!("{}.{}.{}", parts[0], parts[1], &parts[2][..keep]);
    // The same RSA key, published with alg RS384, used to sign an RS256 token.
    let mismatched = key("k-384", "rsa-1", Algorithm::RS256);

    vec![
        ("alg none", none_token, AuthError::Malformed(String::new())),
        (
            "HS256 signed with the RSA public key",
            hs_with_public_key,
            AuthError::AlgorithmNotAllowed("HS256".into()),
        ),
        (
            "expired",
            k.sign(&with(base.clone(), json!({"exp": now() - 3600}))),
            AuthError::Expired,
        ),
        (
            "nbf in the future",
            k.sign(&with(base.clone(), json!({"nbf": now() + 3600}))),
            AuthError::NotYetValid,
        ),
        (
            "iat in the future",
            k.sign(&with(base.clone(), json!({"iat": now() + 3600}))),
            AuthError::NotYetValid,
        ),
        (
            "wrong iss",
            k.sign(&with(
                base.clone(),
                json!({"iss": "https://evil.example.com"}),
            )),
            AuthError::UnknownIssuer,
        ),
        (
            "no iss",
            k.sign(&with(base.clone(), json!({"iss": null}))),
            AuthError::MissingClaim("iss"),
        ),
        (
            "wrong aud",
            k.sign(&with(base.clone(), json!({"aud": "other-app"}))),
            AuthError::WrongAudience,
        ),
        (
            "wrong client_id",
            k.sign(&with(
                base.clone(),
                json!({"aud": null, "client_id": "other"}),
            )),
            AuthError::WrongAudience,
        ),
        (
            "no exp",
            k.sign(&with(base.clone(), json!({"exp": null}))),
            AuthError::MissingClaim("exp"),
        ),
        (
            "no sub",
            k.sign(&with(base.clone(), json!({"sub": null}))),
            AuthError::MissingClaim("sub"),
        ),
        (
            "tampered payload",
            tampered_payload,
            AuthError::BadSignature,
        ),
        (
            "tampered signature",
            tampered_signature,
            AuthError::BadSignature,
        ),
        ("missing kid", no_kid, AuthError::Malformed(String::new())),
        ("unknown kid", unknown_kid, AuthError::UnknownKey),
        ("truncated", truncated, AuthError::BadSignature),
        (
            "two segments",
            format!("{}.{}", parts[0], parts[1]),
            AuthError::Malformed(String::new()),
        ),
        (
            "10 KB of garbage",
            "x".repeat(10 * 1024),
            AuthError::Malformed(String::new()),
        ),
        (
            "non-base64url segments",
            "a$b.c%d.e^f".to_owned(),
            AuthError::Malformed(String::new()),
        ),
        ("empty", String::new(), AuthError::Malformed(String::new())),
        (
            "JWK alg differs from the header",
            mismatched.sign(&base),
            AuthError::KeyMismatch(String::new()),
        ),
    ]
}

#[tokio::test]
async fn attacks_are_refused_for_the_right_reason_and_with_401() {
    let k = key("k1", "rsa-1", Algorithm::RS256);
    let mismatched = key("k-384", "rsa-1", Algorithm::RS256).published_as(KeyAlgorithm::RS384);
    let issuer = FakeIssuer::start(&[&k, &mismatched]).await.unwrap();
    let settings = vec![issuer.settings(&["RS256", "RS384"])];
    let direct = verifier(settings.clone(), 3600);
    let gateway = mock_gateway(verifier(settings, 3600)).await;
    let good = k.sign(&claims(&issuer));
    assert!(
        direct.verify(&good).await.is_ok(),
        "the untampered token is accepted"
    );

    for (name, token, expected) in attacks(&issuer, &k).await {
        let got = direct.verify(&token).await;
        let err = got.expect_err(name);
        assert_eq!(
            std::mem::discriminant(&err),
            std::mem::discriminant(&expected),
            "{name}: refused, but for {err:?} instead of {expected:?}"
        );
        if let (AuthError::MissingClaim(a), AuthError::MissingClaim(b)) = (&err, &expected) {
            assert_eq!(a, b, "{name}");
        }
        let response = chat_as(&gateway, &token)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(response.status(), 401, "{name}");
        let v: Value = response.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unauthorized", "{name}");
    }
    let ok = chat_as(&gateway, &good).await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn a_rotated_key_is_accepted_after_one_refetch_and_a_retired_one_is_not() {
    let k1 = key("k1", "rsa-1", Algorithm::RS256);
    let k2 = key("k2", "rsa-2", Algorithm::RS256);
    let issuer = FakeIssuer::start(&[&k1]).await.unwrap();
    let v = verifier(vec![issuer.settings(&["RS256"])], 0);
    let (t1, t2) = (k1.sign(&claims(&issuer)), k2.sign(&claims(&issuer)));
    v.verify(&t1).await.unwrap();
    assert_eq!(issuer.fetches(), 1);
    issuer.set_keys(&[&k2]);
    v.verify(&t2).await.unwrap();
    assert_eq!(issuer.fetches(), 2, "the new kid cost exactly one refetch");
    v.verify(&t2).await.unwrap();
    assert_eq!(issuer.fetches(), 2);
    assert_eq!(
        v.verify(&t1).await,
        Err(AuthError::UnknownKey),
        "k1 left the set"
    );
}

#[tokio::test]
async fn a_verified_token_is_refused_once_it_expires() {
    // Verified tokens are kept (a client sends the same one with every request): the verdict
    // must not outlive `exp`.
    let k = key("k1", "rsa-1", Algorithm::RS256);
    let issuer = FakeIssuer::start(&[&k]).await.unwrap();
    let auth = AuthSettings {
        issuers: vec![issuer.settings(&["RS256"])],
        leeway_secs: 0,
        ..AuthSettings::default()
    };
    let v = Verifier::new(&auth, None).unwrap();
    let exp = now() + 1;
    let token = k.sign(&with(claims(&issuer), json!({ "exp": exp })));
    assert_eq!(v.verify(&token).await.unwrap().expires_at, exp);
    assert_eq!(v.verify(&token).await.unwrap().expires_at, exp);
    while now() <= exp {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(v.verify(&token).await, Err(AuthError::Expired));
    assert_eq!(issuer.fetches(), 1);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_at_most_once_per_interval() {
    let k = key("k1", "rsa-1", Algorithm::RS256);
    let issuer = FakeIssuer::start(&[&k]).await.unwrap();
    let v = Arc::new(verifier(vec![issuer.settings(&["RS256"])], 10));
    let base = claims(&issuer);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(format!("made-up-{i}"));
        let token = k.sign_with(&header, &base);
        let v = v.clone();
        tasks.push(tokio::spawn(async move { v.verify(&token).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Err(AuthError::UnknownKey));
    }
    assert_eq!(
        issuer.fetches(),
        1,
        "100 unknown kids, concurrently, cost one fetch"
    );
    assert_eq!(v.jwks_fetches(), 1);
    // The real key still works without another fetch.
    v.verify(&k.sign(&base)).await.unwrap();
    assert_eq!(issuer.fetches(), 1);
}

#[tokio::test]
async fn an_unreachable_issuer_is_unavailable_not_unauthorized() {
    let k = key("k1", "rsa-1", Algorithm::RS256);
    let issuer = FakeIssuer::start(&[&k]).await.unwrap();
    let settings = issuer.settings(&["RS256"]);
    let token = k.sign(&claims(&issuer));
    drop(issuer);
    let v = verifier(vec![settings.clone()], 10);
    assert!(matches!(
        v.verify(&token).await,
        Err(AuthError::KeysUnavailable(_))
    ));
    let gateway = mock_gateway(verifier(vec![settings], 10)).await;
    let r = chat_as(&gateway, &token).await.unwrap();
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn a_jwk_not_meant_for_signatures_is_never_used() {
    let mut enc = key("enc", "rsa-2", Algorithm::RS256);
    enc.jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Encryption);
    let sig = key("sig", "rsa-1", Algorithm::RS256);
    let issuer = FakeIssuer::start(&[&enc, &sig]).await.unwrap();
    let v = verifier(vec![issuer.settings(&["RS256"])], 3600);
    assert_eq!(
        v.verify(&enc.sign(&claims(&issuer))).await,
        Err(AuthError::UnknownKey)
    );
    assert!(v.verify(&sig.sign(&claims(&issuer))).await.is_ok());
}

#[tokio::test]
async fn two_issuers_with_the_same_sub_are_two_principals() {
    let (ka, kb) = (
        key("a", "rsa-1", Algorithm::RS256),
        key("b", "rsa-2", Algorithm::RS256),
    );
    let (a, b) = (
        FakeIssuer::start(&[&ka]).await.unwrap(),
        FakeIssuer::start(&[&kb]).await.unwrap(),
    );
    let v = verifier(vec![a.settings(&["RS256"]), b.settings(&["RS256"])], 10);
    // Both say sub "alice", tenant "acme".
    let (token_a, token_b) = (ka.sign(&claims(&a)), kb.sign(&claims(&b)));
    // The first issuer's names stay bare, so its existing data keeps its owner; the second's
    // are qualified with the issuer.
    let pa = v.verify(&token_a).await.unwrap();
    assert_eq!((pa.sub.as_str(), pa.tenant.as_str()), ("alice", "acme"));
    let pb = v.verify(&token_b).await.unwrap();
    assert_eq!(pb.sub, nagare_authorizer::qualified(&b.issuer(), "alice"));
    assert_eq!(pb.tenant, nagare_authorizer::qualified(&b.issuer(), "acme"));
    // A first issuer's sub that looks qualified is qualified too: no bare name spells another.
    let forged = ka.sign(&with(claims(&a), json!({"sub": pb.sub.clone()})));
    assert_ne!(v.verify(&forged).await.unwrap().sub, pb.sub);

    let gw = Gateway::builder()
        .model(Arc::new(MockProvider::new(MockSettings::unpaced())))
        .models("mock", &[])
        .verifier(v)
        .config(|c| {
            c.memory.enabled = true;
            c.cache.enabled = true;
            c.tasks.enabled = true;
        })
        .start()
        .await
        .unwrap();
    let (alice_a, alice_b) = (authed_client(&token_a), authed_client(&token_b));
    let ask = |client: reqwest::Client, body: Value| {
        let url = gw.url("/v1/chat");
        async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    // A's conversation is not B's.
    let first = ask(alice_a.clone(), json!({"message": "remember me"})).await;
    let conversation = first["conversation_id"].as_str().unwrap().to_owned();
    let url = gw.url(&format!("/v1/conversations/{conversation}"));
    assert_eq!(alice_b.get(&url).send().await.unwrap().status(), 404);
    assert_eq!(alice_a.get(&url).send().await.unwrap().status(), 200);
    let (_, listed) = gw.get_json(&alice_b, "/v1/conversations").await;
    assert_eq!(
        listed["conversations"].as_array().unwrap().len(),
        0,
        "{listed}"
    );

    // A's cached answer is not served to B, though both name tenant "acme".
    let question = json!({"message": "what is the capital of France?"});
    assert_eq!(
        ask(alice_a.clone(), question.clone()).await["cached"],
        false
    );
    assert_eq!(ask(alice_a.clone(), question.clone()).await["cached"], true);
    assert_eq!(ask(alice_b.clone(), question).await["cached"], false);

    // A's task is not B's.
    let task = format!(
        "/v1/tasks/{}",
        gw.submit_task(&alice_a, &json!({"message": "later"})).await
    );
    assert_eq!(gw.get_json(&alice_b, &task).await.0, 404);
    assert_eq!(gw.get_json(&alice_a, &task).await.0, 200);
}
