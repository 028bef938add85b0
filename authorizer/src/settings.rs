//! `[auth]`: which issuers are trusted and how their tokens are checked.

use std::str::FromStr;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::error::AuthConfigError;

/// Verification settings shared by `nagare serve` and the Lambda authorizer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Trusted OIDC / Cognito issuers. Empty means dev mode (HS256 with a local secret).
    pub issuers: Vec<IssuerSettings>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
    /// The scope a token needs to chat.
    pub chat_scope: String,
    /// An unknown `kid` refetches an issuer's JWKS at most this often.
    pub jwks_refetch_interval_secs: u64,
    /// How long fetched keys are trusted before they are fetched again.
    pub jwks_ttl_secs: u64,
    /// Dev mode listens on loopback only unless this is true.
    pub dev_allow_non_loopback: bool,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            leeway_secs: 60,
            chat_scope: "chat".into(),
            jwks_refetch_interval_secs: 10,
            jwks_ttl_secs: 3600,
            dev_allow_non_loopback: false,
        }
    }
}

/// One trusted issuer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    /// The exact `iss` value, e.g. `https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC`.
    pub issuer: String,
    /// Defaults to `{issuer}/.well-known/jwks.json`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Accepted `aud` values, or `client_id` values for Cognito access tokens. Required.
    pub audiences: Vec<String>,
    /// Cognito's `token_use` (`access` or `id`), checked when set.
    #[serde(default)]
    pub token_use: Option<String>,
    /// Allowed signature algorithms; asymmetric only.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// The claim naming the caller's tenant; `sub` is the tenant when it is absent.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into()]
}

fn default_tenant_claim() -> String {
    "tenant".into()
}

fn default_groups_claim() -> String {
    "cognito:groups".into()
}

impl IssuerSettings {
    /// The JWKS location, which must be https unless it is on this machine.
    pub fn jwks_url(&self) -> Result<String, AuthConfigError> {
        let url = self.jwks_url.clone().unwrap_or_else(|| {
            format!(
                "{}/.well-known/jwks.json",
                self.issuer.trim_end_matches('/')
            )
        });
        let loopback = [
            "http://127.",
            "http://localhost:",
            "http://localhost/",
            "http://[::1]",
        ]
        .iter()
        .any(|p| url.starts_with(p));
        if url.starts_with("https://") || loopback {
            Ok(url)
        } else {
            Err(AuthConfigError(format!(
                "issuer {}: JWKS URL {url} must use https (plain http only on loopback)",
                self.issuer
            )))
        }
    }

    /// The allowed algorithms, refusing symmetric ones: a JWKS issuer publishes public keys, and
    /// accepting HS256 would let anyone sign with the public key as the HMAC secret.
    pub fn algorithms(&self) -> Result<Vec<Algorithm>, AuthConfigError> {
        if self.algorithms.is_empty() {
            return Err(AuthConfigError(format!(
                "issuer {}: algorithms is empty",
                self.issuer
            )));
        }
        self.algorithms
            .iter()
            .map(|name| {
                let alg = Algorithm::from_str(name).map_err(|_| {
                    AuthConfigError(format!("issuer {}: unknown algorithm {name}", self.issuer))
                })?;
                if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                    return Err(AuthConfigError(format!(
                        "issuer {}: {name} is symmetric; JWKS issuers use RS*, PS*, ES* or EdDSA",
                        self.issuer
                    )));
                }
                Ok(alg)
            })
            .collect()
    }

    pub fn validate(&self) -> Result<(), AuthConfigError> {
        if self.issuer.trim().is_empty() {
            return Err(AuthConfigError("an issuer has an empty `issuer`".into()));
        }
        if self.audiences.is_empty() {
            return Err(AuthConfigError(format!(
                "issuer {}: audiences is empty; list the app client ids or audiences to accept",
                self.issuer
            )));
        }
        self.jwks_url()?;
        self.algorithms()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(url: Option<&str>, algs: &[&str]) -> IssuerSettings {
        IssuerSettings {
            issuer: "https://idp.example.com".into(),
            jwks_url: url.map(str::to_owned),
            audiences: vec!["app".into()],
            token_use: None,
            algorithms: algs.iter().map(|s| (*s).to_owned()).collect(),
            tenant_claim: default_tenant_claim(),
            groups_claim: default_groups_claim(),
        }
    }

    #[test]
    fn issuer_checks() {
        assert_eq!(
            issuer(None, &["RS256"]).jwks_url().unwrap(),
            "https://idp.example.com/.well-known/jwks.json"
        );
        assert!(
            issuer(Some("http://127.0.0.1:9/jwks"), &["ES256"])
                .validate()
                .is_ok()
        );
        assert!(
            issuer(Some("http://idp.example.com/jwks"), &["RS256"])
                .validate()
                .is_err()
        );
        assert!(issuer(None, &["HS256"]).validate().is_err());
        assert!(issuer(None, &["none"]).validate().is_err());
        assert!(issuer(None, &[]).validate().is_err());
        let mut no_aud = issuer(None, &["RS256"]);
        no_aud.audiences.clear();
        assert!(no_aud.validate().is_err());
    }
}
