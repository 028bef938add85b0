//! A fake OAuth 2.0 authorization server in the shape of Cognito's hosted UI: `GET
//! /oauth2/authorize` signs the user in at once (no page) and redirects back with a code, and
//! `POST /oauth2/token` trades the code for tokens, checking PKCE (S256), and renews them with
//! the refresh token. The access tokens are signed by a [`FakeIssuer`]'s key, so a gateway that
//! trusts that issuer takes them. It counts codes and renewals for the tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::fake_issuer::{FakeIssuer, TestKey};
use crate::serve::StopOnDrop;

/// The client id the fake knows.
pub const CLIENT_ID: &str = "web-app";

struct Grant {
    challenge: String,
    redirect_uri: String,
    scope: String,
}

struct Shared {
    issuer: String,
    key: TestKey,
    sub: String,
    ttl_secs: u64,
    codes: Mutex<HashMap<String, Grant>>,
    refresh: Mutex<HashMap<String, String>>,
    redeemed: AtomicU64,
    renewed: AtomicU64,
    minted: AtomicU64,
}

impl Shared {
    /// A fresh code or refresh token: unguessable enough for a test.
    fn secret(&self) -> String {
        let n = self.minted.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Sha256::digest(format!("{n}:{nanos}").as_bytes())
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// A running authorization server; it stops when dropped.
pub struct FakeOAuth {
    url: String,
    shared: Arc<Shared>,
    _stop: StopOnDrop,
}

impl FakeOAuth {
    /// Signs `sub` in, with access tokens from `issuer` (audience `app`) that live `ttl_secs`.
    pub async fn start(
        issuer: &FakeIssuer,
        key: TestKey,
        sub: &str,
        ttl_secs: u64,
    ) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            issuer: issuer.issuer(),
            key,
            sub: sub.to_owned(),
            ttl_secs,
            codes: Mutex::default(),
            refresh: Mutex::default(),
            redeemed: AtomicU64::new(0),
            renewed: AtomicU64::new(0),
            minted: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/oauth2/authorize", get(authorize))
            .route("/oauth2/token", post(token))
            .with_state(shared.clone());
        let (addr, stop) = crate::serve::spawn(app).await?;
        Ok(Self {
            url: format!("http://{addr}"),
            shared,
            _stop: stop,
        })
    }

    pub fn authorize_url(&self) -> String {
        format!("{}/oauth2/authorize", self.url)
    }

    pub fn token_url(&self) -> String {
        format!("{}/oauth2/token", self.url)
    }

    /// Codes traded for tokens.
    pub fn redeemed(&self) -> u64 {
        self.shared.redeemed.load(Ordering::SeqCst)
    }

    /// Tokens renewed with a refresh token.
    pub fn renewed(&self) -> u64 {
        self.shared.renewed.load(Ordering::SeqCst)
    }
}

type Params = HashMap<String, String>;

fn refuse(error: &str, why: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
        Json(json!({"error": error, "error_description": why})),
    )
        .into_response()
}

async fn authorize(State(shared): State<Arc<Shared>>, Query(q): Query<Params>) -> Response {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    if get("response_type") != "code" || get("client_id") != CLIENT_ID {
        return refuse(
            "unauthorized_client",
            "response_type code and a known client_id",
        );
    }
    if get("code_challenge_method") != "S256" || get("code_challenge").len() != 43 {
        return refuse("invalid_request", "PKCE with S256 is required");
    }
    let code = shared.secret();
    shared
        .codes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            code.clone(),
            Grant {
                challenge: get("code_challenge"),
                redirect_uri: get("redirect_uri"),
                scope: get("scope"),
            },
        );
    let back = format!(
        "{}?code={code}&state={}",
        get("redirect_uri"),
        urlencode(&get("state"))
    );
    Redirect::to(&back).into_response()
}

async fn token(State(shared): State<Arc<Shared>>, Form(form): Form<Params>) -> Response {
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    if get("client_id") != CLIENT_ID {
        return refuse("invalid_client", "unknown client");
    }
    let scope = match get("grant_type").as_str() {
        "authorization_code" => {
            let grant = shared
                .codes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&get("code"));
            let Some(grant) = grant else {
                return refuse("invalid_grant", "unknown or used code");
            };
            let verified = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(Sha256::digest(get("code_verifier").as_bytes()));
            if verified != grant.challenge || get("redirect_uri") != grant.redirect_uri {
                return refuse(
                    "invalid_grant",
                    "the code verifier or redirect_uri does not match",
                );
            }
            shared.redeemed.fetch_add(1, Ordering::SeqCst);
            grant.scope
        }
        "refresh_token" => {
            let scope = shared
                .refresh
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&get("refresh_token"))
                .cloned();
            let Some(scope) = scope else {
                return refuse("invalid_grant", "unknown refresh token");
            };
            shared.renewed.fetch_add(1, Ordering::SeqCst);
            scope
        }
        _ => {
            return refuse(
                "unsupported_grant_type",
                "authorization_code or refresh_token",
            );
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let access = shared.key.sign(&json!({
        "iss": shared.issuer, "aud": "app", "sub": shared.sub, "iat": now,
        "exp": now + shared.ttl_secs, "scope": scope,
    }));
    let refresh = shared.secret();
    shared
        .refresh
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(refresh.clone(), scope);
    (
        // Cognito's token endpoint answers browsers of any origin.
        [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
        Json(json!({
            "access_token": access, "refresh_token": refresh, "token_type": "Bearer",
            "expires_in": shared.ttl_secs,
        })),
    )
        .into_response()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
