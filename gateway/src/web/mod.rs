//! The browser chat app that `nagare serve` serves at `/` ([`assets`]), its `[web]` settings, and
//! the headers that lock the page down.
//!
//! The page learns where to talk from `config.json`, beside `index.html`: on `nagare serve` the
//! server's own origin, on AWS the stack's API URLs (`nagare web export` writes the files for a
//! bucket). Its Content-Security-Policy lets it load its own files only, connect to those origins
//! only, and (with Trusted Types) never turn a string into HTML or script: model text can only
//! ever become text.

pub mod assets;
mod export;

use axum::http::HeaderValue;
use serde::{Deserialize, Serialize};

pub use assets::{Asset, Assets};
pub use export::export;

/// What the app routes serve, built once at start.
#[derive(Debug)]
pub struct Site {
    pub assets: Assets,
    pub config: Asset,
    pub csp: HeaderValue,
}

impl Site {
    pub fn new(settings: &WebSettings, features: Features) -> Result<Self, String> {
        let csp = HeaderValue::try_from(settings.content_security_policy())
            .map_err(|e| format!("web: the content security policy: {e}"))?;
        Ok(Self {
            assets: Assets::embedded(),
            config: Asset {
                path: "config.json",
                content_type: "application/json",
                body: settings.page_config(features).to_string().into(),
                gzip: None,
            },
            csp,
        })
    }

    /// Bytes a first visit transfers with gzip.
    pub fn transferred(&self) -> usize {
        self.assets.transferred() + self.config.transferred()
    }
}

/// `[web]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSettings {
    /// Serve the app at `/`.
    pub enabled: bool,
    /// Where the page sends REST calls (`https://abc.execute-api.us-east-1.amazonaws.com`);
    /// empty: the page's own origin.
    pub api_url: String,
    /// The WebSocket URL (`wss://abc.execute-api.us-east-1.amazonaws.com/prod`); empty: the
    /// page's own origin's `/v1/ws`.
    pub ws_url: String,
    /// How the WebSocket upgrade carries the token: `protocol` (the `bearer.<jwt>` subprotocol,
    /// kept out of URLs and logs) or `query` (`?token=`, which API Gateway's authorizer reads).
    pub ws_token: WsToken,
    /// Sign-in with an OpenID Connect provider (Cognito), by the authorization-code flow with
    /// PKCE; unset, the page takes a pasted token or a `nagare token --link` link.
    pub oidc: Option<OidcSettings>,
}

impl Default for WebSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            api_url: String::new(),
            ws_url: String::new(),
            ws_token: WsToken::Protocol,
            oidc: None,
        }
    }
}

/// What the server behind the page offers besides chat, so the page shows only controls that work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Features {
    /// Conversation memory: the list of conversations, and reload.
    pub conversations: bool,
    /// `/v1/uploads`: the Attach button.
    pub uploads: bool,
    /// `/v1/knowledge-bases` (the embedded store): the knowledge-base picker.
    pub knowledge_bases: bool,
}

/// How the WebSocket upgrade carries the token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WsToken {
    #[default]
    Protocol,
    Query,
}

/// `[web.oidc]`: a public client (no secret) of the issuer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    pub client_id: String,
    /// `https://auth.example.com/oauth2/authorize` (Cognito's hosted UI).
    pub authorize_url: String,
    /// `https://auth.example.com/oauth2/token`.
    pub token_url: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// What the user sees on the button: `Sign in with {name}`.
    #[serde(default = "default_provider_name")]
    pub name: String,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into()]
}

fn default_provider_name() -> String {
    "your organisation".into()
}

impl WebSettings {
    /// Checks the values the page cannot run with; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        origin("web.api_url", &self.api_url, &["http", "https"])?;
        origin("web.ws_url", &self.ws_url, &["ws", "wss"])?;
        if let Some(oidc) = &self.oidc {
            if oidc.client_id.trim().is_empty() {
                return Err("web.oidc.client_id: must not be empty".into());
            }
            origin(
                "web.oidc.authorize_url",
                &oidc.authorize_url,
                &["https", "http"],
            )?
            .ok_or("web.oidc.authorize_url: must not be empty")?;
            origin("web.oidc.token_url", &oidc.token_url, &["https", "http"])?
                .ok_or("web.oidc.token_url: must not be empty")?;
            if !oidc.scopes.iter().any(|s| s == "openid") {
                return Err("web.oidc.scopes: must include openid".into());
            }
        }
        Ok(())
    }

    /// What the page reads from `config.json`.
    pub fn page_config(&self, features: Features) -> serde_json::Value {
        serde_json::json!({
            "api_url": self.api_url.trim_end_matches('/'),
            "ws_url": self.ws_url,
            "ws_token": self.ws_token,
            "oidc": self.oidc,
            "features": features,
        })
    }

    /// The page's Content-Security-Policy: its own files, and connections to its own origin and
    /// the configured ones only.
    pub fn content_security_policy(&self) -> String {
        self.policy(true)
    }

    /// The policy as a `<meta>` element can carry it, for a bucket that sends no headers:
    /// browsers ignore `frame-ancestors` there (a CDN's response headers can add it).
    pub fn meta_policy(&self) -> String {
        self.policy(false)
    }

    fn policy(&self, frame_ancestors: bool) -> String {
        let mut connect = vec!["'self'".to_owned()];
        let configured = [
            ("web.api_url", &self.api_url, &["http", "https"][..]),
            ("web.ws_url", &self.ws_url, &["ws", "wss"][..]),
        ];
        let token_url = self.oidc.as_ref().map(|o| &o.token_url);
        for (key, url, schemes) in configured
            .into_iter()
            .chain(token_url.map(|u| ("web.oidc.token_url", u, &["https", "http"][..])))
        {
            if let Ok(Some(origin)) = origin(key, url, schemes)
                && !connect.contains(&origin)
            {
                connect.push(origin);
            }
        }
        if !self.api_url.is_empty() {
            // Uploads PUT to the bucket's presigned URLs on AWS.
            connect.push("https://*.amazonaws.com".into());
        }
        format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; \
             connect-src {}; manifest-src 'self'; base-uri 'none'; form-action 'none'; \
             {}require-trusted-types-for 'script'; trusted-types 'none'",
            connect.join(" "),
            if frame_ancestors {
                "frame-ancestors 'none'; "
            } else {
                ""
            }
        )
    }
}

/// The origin (`scheme://host[:port]`) of `url`, one of `schemes`; `None` when empty.
fn origin(key: &str, url: &str, schemes: &[&str]) -> Result<Option<String>, String> {
    if url.is_empty() {
        return Ok(None);
    }
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("{key}: '{url}' is not a URL: {e}"))?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(format!(
            "{key}: must start with {}://",
            schemes.join(":// or ")
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("{key}: must not have a query or a fragment"));
    }
    Ok(Some(parsed.origin().ascii_serialization()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oidc() -> OidcSettings {
        OidcSettings {
            client_id: "abc".into(),
            authorize_url: "https://auth.example.com/oauth2/authorize".into(),
            token_url: "https://auth.example.com/oauth2/token".into(),
            scopes: default_scopes(),
            name: default_provider_name(),
        }
    }

    #[test]
    fn the_default_policy_allows_the_own_origin_only() {
        let csp = WebSettings::default().content_security_policy();
        assert!(csp.contains("connect-src 'self';"), "{csp}");
        assert!(csp.contains("script-src 'self';"));
        assert!(csp.contains("require-trusted-types-for 'script'"));
        assert!(!csp.contains("unsafe"));
    }

    #[test]
    fn configured_origins_join_the_policy() {
        let settings = WebSettings {
            api_url: "https://api.example.com/".into(),
            ws_url: "wss://ws.example.com/prod".into(),
            oidc: Some(oidc()),
            ..WebSettings::default()
        };
        settings.validate().unwrap_or_else(|e| panic!("{e}"));
        let csp = settings.content_security_policy();
        assert!(
            csp.contains(
                "connect-src 'self' https://api.example.com wss://ws.example.com https://auth.example.com https://*.amazonaws.com;"
            ),
            "{csp}"
        );
        assert_eq!(
            settings.page_config(Features::default())["api_url"],
            "https://api.example.com"
        );
    }

    #[test]
    fn bad_urls_are_named() {
        let bad = |change: fn(&mut WebSettings)| {
            let mut s = WebSettings::default();
            change(&mut s);
            s.validate().err().unwrap_or_default()
        };
        assert!(
            bad(|s| s.ws_url = "https://x".into()).starts_with("web.ws_url: must start with ws://")
        );
        assert!(bad(|s| s.api_url = "nope".into()).starts_with("web.api_url: 'nope' is not a URL"));
        assert!(bad(|s| s.api_url = "https://x/?a=1".into()).contains("query"));
        assert!(
            bad(|s| s.oidc = Some(OidcSettings {
                client_id: String::new(),
                ..oidc()
            }))
            .starts_with("web.oidc.client_id")
        );
        assert!(
            bad(|s| s.oidc = Some(OidcSettings {
                scopes: vec!["email".into()],
                ..oidc()
            }))
            .starts_with("web.oidc.scopes")
        );
    }
}
