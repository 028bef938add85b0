//! The operator's side of the Converse contract: `[prompt_cache]` (automatic cache points) and
//! `[[guardrails]]` (a Bedrock guardrail by route and tenant). A client can turn prompt caching
//! off for its request; it can never turn a guardrail off.

use serde::{Deserialize, Serialize};

use crate::chat::Route;
use crate::provider::{CachePoints, CacheTtl, Guardrail};

/// `[prompt_cache]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromptCacheSettings {
    pub enabled: bool,
    /// `5m` or `1h`.
    pub ttl: CacheTtl,
    /// Parts of the model ids that support prompt caching on Bedrock.
    pub models: Vec<String>,
}

impl Default for PromptCacheSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            ttl: CacheTtl::FiveMinutes,
            models: ["anthropic.claude", "amazon.nova", "mock"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl PromptCacheSettings {
    /// The cache points of a request whose first `history` messages came from memory (or the
    /// client); `None` when prompt caching is off for it. They are sent only to the models
    /// listed (see [`CachePoints::apply_to`]), whichever of a fallback chain answers.
    pub fn points(&self, history: usize, asked: Option<bool>) -> Option<CachePoints> {
        (self.enabled && asked != Some(false)).then(|| CachePoints {
            ttl: self.ttl,
            after_message: history.checked_sub(1),
            models: self.models.clone().into(),
        })
    }
}

/// One `[[guardrails]]` entry: the guardrail, and where it applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailRule {
    #[serde(flatten)]
    pub guardrail: Guardrail,
    /// Routes it applies to (the names of [`crate::chat::Route`]); all when empty.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Tenants it applies to; all when empty.
    #[serde(default)]
    pub tenants: Vec<String>,
}

/// The guardrail of the first rule that matches `route` and `tenant`.
pub fn guardrail_for<'a>(
    rules: &'a [GuardrailRule],
    route: Route,
    tenant: &str,
) -> Option<&'a Guardrail> {
    rules
        .iter()
        .find(|r| route.covered_by(&r.routes, &r.tenants, tenant))
        .map(|r| &r.guardrail)
}

/// Checks the rules a gateway cannot run with; the error names the key.
pub fn check_guardrails(rules: &[GuardrailRule]) -> Result<(), String> {
    for (i, r) in rules.iter().enumerate() {
        if r.guardrail.identifier.trim().is_empty() || r.guardrail.version.trim().is_empty() {
            return Err(format!(
                "guardrails[{i}]: identifier and version are required"
            ));
        }
        if let Some(bad) = Route::unknown(&r.routes) {
            return Err(format!("guardrails[{i}].routes: unknown route '{bad}'"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{GuardrailTrace, StreamProcessingMode};

    fn rule(id: &str, routes: &[&str], tenants: &[&str]) -> GuardrailRule {
        GuardrailRule {
            guardrail: Guardrail {
                identifier: id.into(),
                version: "1".into(),
                trace: GuardrailTrace::Enabled,
                stream_processing_mode: StreamProcessingMode::Sync,
            },
            routes: routes.iter().map(|s| s.to_string()).collect(),
            tenants: tenants.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let rules = [
            rule("acme-ws", &["websocket"], &["acme"]),
            rule("all", &[], &[]),
        ];
        let id =
            |route, tenant| guardrail_for(&rules, route, tenant).map(|g| g.identifier.as_str());
        assert_eq!(id(Route::WebSocket, "acme"), Some("acme-ws"));
        assert_eq!(id(Route::Chat, "acme"), Some("all"));
        assert_eq!(id(Route::WebSocket, "other"), Some("all"));
        assert_eq!(guardrail_for(&rules[..1], Route::Chat, "acme"), None);
        check_guardrails(&rules).unwrap();
        assert!(
            check_guardrails(&[rule("x", &["nope"], &[])])
                .unwrap_err()
                .contains("nope")
        );
    }

    #[test]
    fn cache_points_follow_the_settings_and_the_request() {
        let on = PromptCacheSettings {
            enabled: true,
            ..Default::default()
        };
        let points = on.points(4, None).unwrap();
        assert_eq!(points.after_message, Some(3));
        assert!(points.apply_to("us.anthropic.claude-sonnet-4"));
        assert!(
            !points.apply_to("meta.llama3"),
            "a fallback that does not cache gets none"
        );
        assert_eq!(on.points(0, None).unwrap().after_message, None);
        assert_eq!(on.points(2, Some(false)), None);
        assert_eq!(PromptCacheSettings::default().points(2, None), None);
    }
}
